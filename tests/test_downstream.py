"""Downstream evaluation: segmenter, PointNet, dataset reader, test-set seeds, `evaluate downstream --quick`."""
import json

import numpy as np
import pytest
import torch

from core.downstream.dataset import read_pairs, read_point_clouds
from core.factory.dataset import DatasetError, read_class_names
from core.downstream.pointnet import PointNetSettings, point_figures, train_pointnet
from core.downstream.sources import GENERATION_SEED_START, generation_seeds, simulated_annotations
from core.downstream.testsets import (INDIVIDUAL_SEEDS, POINT_CLOUD_SEEDS, VIDEO_SEEDS, individual_test_set,
                                      orbit_views, procedural_point_cloud)
from core.downstream.training import (SegmenterSettings, _augmented_batch, predict, segmentation_figures,
                                      train_segmenter)
from core.fileio import write_indexed_png, write_png
from core.procedural import LABEL_IDS, label_palette, mirror_label_ids, purpose_of_seed, seeds_for


def colour_coded_pairs(count=4, size=24, classes=4, seed=0):
    """Images whose pixel colour says the class: blocks of random classes, one colour per class."""
    rng = np.random.default_rng(seed)
    colours = np.array([[20, 20, 20], [230, 40, 40], [40, 230, 40], [40, 40, 230]], np.uint8)[:classes]
    blocks = rng.integers(0, classes, (count, size // 6, size // 6))
    labels = blocks.repeat(6, 1).repeat(6, 2).astype(np.uint8)
    return colours[labels], labels


def test_segmenter_overfits_a_tiny_batch():
    torch.set_num_threads(1)
    images, labels = colour_coded_pairs()
    result = train_segmenter(images, labels, 4, SegmenterSettings(steps=40, batch_size=4, width=8, learning_rate=1e-2,
                                                                  jitter=0.0))
    losses = [loss for _, loss in result.history]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])
    figures = segmentation_figures(predict(result.model, images), labels, ["a", "b", "c", "d"])
    assert figures["pixel_accuracy"] > 0.9


def test_training_stops_when_asked():
    images, labels = colour_coded_pairs(count=2, size=16)
    calls = []
    result = train_segmenter(images, labels, 4, SegmenterSettings(steps=50, batch_size=2, width=8),
                             should_stop=lambda: len(calls) >= 3, progress=calls.append)
    assert result.stopped and result.steps == 3


def test_flip_augmentation_mirrors_the_image_and_swaps_left_and_right():
    image = np.zeros((1, 8, 8, 3), np.uint8)
    image[0, :, :4] = 255
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, :, :4] = LABEL_IDS["left_eye"]
    labels[0, 0, 0] = 255  # unpainted stays unpainted
    settings = SegmenterSettings(batch_size=16, flip_table=mirror_label_ids(), jitter=0.0)
    batch_images, batch_labels = _augmented_batch(image, labels, settings, np.random.default_rng(0))
    flipped = batch_images[:, 0, 0, 0] < 0.5  # the white half moved to the right
    assert flipped.any() and (~flipped).any()
    assert (batch_labels[flipped][:, :, 4:] == LABEL_IDS["right_eye"]).sum() == flipped.sum() * 8 * 4 - flipped.sum()
    assert (batch_labels[flipped][:, 0, 7] == 255).all()
    assert (batch_labels[~flipped][:, 1, :4] == LABEL_IDS["left_eye"]).all()


def test_pointnet_learns_a_split_of_space():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    clouds = []
    for _ in range(3):
        points = rng.uniform(-0.4, 0.4, (512, 3)).astype(np.float32)
        clouds.append((points, (points[:, 0] > 0).astype(np.uint8)))
    model, _ = train_pointnet(clouds, 2, PointNetSettings(steps=80, batch_size=3, points_per_cloud=256, learning_rate=1e-2))
    test_points = rng.uniform(-0.4, 0.4, (400, 3)).astype(np.float32)
    figures = point_figures(model, [test_points], [(test_points[:, 0] > 0).astype(np.uint8)], ["left", "right"])
    assert figures["pixel_accuracy"] > 0.85 and figures["miou_truth_classes"] >= figures["miou"] - 1e-9


# ---------------------------------------------------------------------------- seeds
def test_test_set_seeds_are_evaluate_seeds_no_one_else_uses():
    ranges = [INDIVIDUAL_SEEDS, VIDEO_SEEDS, POINT_CLOUD_SEEDS]
    for index, seeds in enumerate(ranges):
        assert purpose_of_seed(seeds.start) == "evaluate" and purpose_of_seed(seeds.stop - 1) == "evaluate"
        for other in ranges[index + 1:]:
            assert not set(seeds) & set(other)
    # Every other evaluation takes the first seeds of the range (seeds_for('evaluate', n)).
    others = set(seeds_for("evaluate", 100_000))
    assert not others & set(INDIVIDUAL_SEEDS) and not others & set(VIDEO_SEEDS) and not others & set(POINT_CLOUD_SEEDS)
    generated = generation_seeds(1000)
    assert generated[0] == GENERATION_SEED_START and {purpose_of_seed(s) for s in generated} == {"fit"}
    assert {purpose_of_seed(int(a.identity)) for a in simulated_annotations(4, 16)} == {"annotate"}


def test_test_images_are_on_black_video_is_an_orbit_and_clouds_carry_true_labels():
    views = orbit_views(61)
    assert len(views) == 61 and np.all(np.diff([yaw for yaw, _ in views]) > 0)
    test = individual_test_set(2, resolution=16)
    assert (test.images[test.labels == 0] == 0).all()  # on black, as every generator image
    points, labels = procedural_point_cloud(POINT_CLOUD_SEEDS.start, [(0.0, 0.0)], resolution=24)
    assert len(points) == len(labels) > 50
    assert np.linalg.norm(points, axis=1).max() < 0.45 and labels.min() > 0  # on the head, never background


# ---------------------------------------------------------------------------- dataset reader
def write_ply_bytes(path, points, colours, labels):
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar label\nend_header\n")
    rows = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                        ("blue", "u1"), ("label", "u1")])
    for axis, name in enumerate("xyz"):
        rows[name] = points[:, axis]
    for axis, name in enumerate(("red", "green", "blue")):
        rows[name] = colours[:, axis]
    rows["label"] = labels
    path.write_bytes(header.encode() + rows.tobytes())


def tiny_dataset(folder, count=3, size=16):
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "pointclouds").mkdir()
    cameras = []
    for index in range(count):
        write_png(folder / "images" / f"{index:04d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        write_indexed_png(folder / "labels" / f"{index:04d}.png", np.full((size, size), index, np.uint8), label_palette())
        cameras.append({"file": f"images/{index:04d}.png", "seed": 900_000 + index, "yaw": 0.0, "pitch": 0.0,
                        "label": list(np.arange(25, dtype=float) + index)})
    (folder / "cameras.json").write_text(json.dumps({"images": cameras}))
    (folder / "labels.json").write_text(json.dumps({"labels": [{"id": 0, "name": "background"}, {"id": 1, "name": "head"},
                                                               {"id": 2, "name": "left_ear"}]}))
    (folder / "manifest.json").write_text(json.dumps({"seeds": [900_000, 900_001, 900_002]}))
    write_ply_bytes(folder / "pointclouds" / "000000.ply", rng.uniform(-0.3, 0.3, (5, 3)).astype(np.float32),
                    np.full((5, 3), 7, np.uint8), np.array([0, 1, 2, 1, 0], np.uint8))


def test_reader_reads_a_dataset_in_the_documented_layout(tmp_path):
    tiny_dataset(tmp_path)
    pairs = read_pairs(tmp_path, resolution=8)
    assert pairs.images.shape == (3, 8, 8, 3) and pairs.labels.shape == (3, 8, 8)
    assert [int(pairs.labels[i].max()) for i in range(3)] == [0, 1, 2]
    assert list(pairs.seeds) == [900_000, 900_001, 900_002]
    assert pairs.camera_labels[2, 0] == 2.0
    assert read_class_names(tmp_path) == ["background", "head", "left_ear"]
    points, labels = read_point_clouds(tmp_path)
    assert len(points) == 1 and points[0].shape == (5, 3) and list(labels[0]) == [0, 1, 2, 1, 0]


def test_reader_names_the_missing_file(tmp_path):
    tiny_dataset(tmp_path)
    (tmp_path / "labels" / "0001.png").unlink()
    with pytest.raises(DatasetError, match="0001.png"):
        read_pairs(tmp_path)
    with pytest.raises(DatasetError, match="no PNG images"):
        read_pairs(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- command line
def tiny_backbone_file(folder):
    """A tiny random generator with the default's conventions: the pipeline runs in seconds."""
    from core.checkpoint.studio_format import save_generator
    from core.fitting.config import tiny_fit_config
    from core.generator.triplane import TriPlaneGenerator

    path = folder / "tiny.safetensors"
    save_generator(TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=32, neural_resolution=16), 0), path)
    return str(path)


def test_evaluate_downstream_quick_prints_every_figure(capsys, tmp_path):
    from core.cli import main

    torch.set_num_threads(1)
    arguments = ["evaluate", "downstream", "--quick", "--json", "--work", str(tmp_path / "work"),
                 "--backbone", tiny_backbone_file(tmp_path)]
    assert main(arguments) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results["main"]) == {"datasetnerf", "datasetgan", "annotations_only"}
    for result in [*results["main"].values(), *results["pairs_scale"], *results["annotations_scale"]]:
        for test in ("individual", "video"):
            assert 0.0 <= result[test]["pixel_accuracy"] <= 1.0 and "miou" in result[test]
    assert [r["pairs"] for r in results["pairs_scale"]] == [4, 4, 8, 8]
    assert [(r["arm"], r["annotations"]) for r in results["annotations_scale"]] == [
        ("datasetnerf", 3), ("annotations_only", 3), ("datasetnerf", 6), ("annotations_only", 6)]
    assert [r["clouds"] for r in results["pointclouds"]["results"]] == [1, 2]
    assert results["test_sets"]["individual"]["images"] == 4 and "timings_s" in results
    assert "skipped" in results["label_quality"]  # in-process identities are 'fit' seeds: not held out
    # A second run over the same work folder re-reads every finished result.
    assert main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["main"] == results["main"]
