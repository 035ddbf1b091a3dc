"""The data factory: layout, determinism, resume, refusal of foreign folders, write failures, evaluation."""
import errno
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.factory import generate as factory
from core.factory.evaluate import evaluate_factory
from core.factory.generate import FactoryError, GenerateRequest, depth_from_png, generate_dataset, identity_seed
from core.factory.pointcloud import PointCloud, write_ply
from core.fileio import read_indexed_png, read_rgb, write_indexed_png
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import NUM_CLASSES, SEED_RANGES, HeadParams, ProceduralHead
from core.project import default_label_set
from core.semantic import SemanticBranch
from project_support import project_on

SIZE = 16


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project on a tiny random backbone with an (untrained, seeded) semantic branch."""
    generator = TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=SIZE), 0)
    torch.manual_seed(3)
    branch = SemanticBranch.for_generator(generator, NUM_CLASSES)
    return project_on(tmp_path_factory.mktemp("factory") / "project", generator, branch=branch, step=5)


def request_for(project, out, **changes):
    # The tiny random backbone is a faint fog (opacity ~0.25-0.5): a threshold inside that range
    # keeps part of every view as foreground and part as background.
    base = GenerateRequest(project=project, out=out, identities=2, views=2, size=SIZE, pointclouds=True,
                           device="cpu", alpha_threshold=0.3)
    return replace(base, **changes)


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "dataset"
    result = generate_dataset(request_for(project, out))
    assert result.identities_done == 2 and not result.stopped and result.manifest["complete"]
    return out


# ---------------------------------------------------------------------------- layout
def test_layout_of_a_dataset(reference):
    names = files_of(reference)
    for index in range(2):
        for view in range(2):
            stem = f"{index:06d}_{view:02d}.png"
            assert f"images/{stem}" in names and f"labels/{stem}" in names and f"depth/{stem}" in names
        assert f"pointclouds/{index:06d}.ply" in names
    assert not [name for name in names if name.endswith(".tmp")]
    assert read_rgb(reference / "images/000001_01.png").shape == (SIZE, SIZE, 3)
    labels, palette = read_indexed_png(reference / "labels/000001_01.png")
    assert labels.shape == (SIZE, SIZE) and labels.max() < NUM_CLASSES
    assert np.array_equal(palette[:NUM_CLASSES], default_label_set().palette())
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["identities_done"] == 2 and manifest["request"]["views"] == 2
    assert manifest["backbone"]["content_hash"] and manifest["semantic_branch"]["sha256"]
    cameras = json.loads((reference / "cameras.json").read_text())
    record = cameras["images"]["000001_01"]
    assert record["seed"] in SEED_RANGES["evaluate"] and record["identity"] == 1 and len(record["label"]) == 25
    assert -45 <= record["yaw"] <= 45 and -20 <= record["pitch"] <= 20
    assert json.loads((reference / "labels.json").read_text()) == default_label_set().to_json()
    # depth: 16-bit, background 0, foreground within the rays' depth range
    import cv2
    raw = cv2.imread(str(reference / "depth/000000_00.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (SIZE, SIZE)
    depth = depth_from_png(raw, cameras["depth_scale"])
    assert np.all((depth[raw > 0] > 2.0) & (depth[raw > 0] < 3.5))


def test_point_cloud_files_read_back_with_numpy(reference):
    data = max((p.read_bytes() for p in (reference / "pointclouds").glob("*.ply")), key=len)
    header, body = data.split(b"end_header\n", 1)
    count = int([line for line in header.decode().splitlines() if line.startswith("element vertex")][0].split()[2])
    vertices = np.frombuffer(body, np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3), ("label", "u1")]), count)
    assert len(body) == 16 * count and count > 0
    assert np.isfinite(vertices["xyz"]).all() and vertices["label"].max() < NUM_CLASSES
    # the points sit in front of the cameras, around the head (within the tri-plane box)
    assert np.abs(vertices["xyz"]).max() < 1.0


def test_identities_and_cameras_are_functions_of_the_seed(project, tmp_path):
    first = request_for(project, tmp_path / "a")
    other = request_for(project, tmp_path / "b", seed=1)
    assert identity_seed(first, 0) == SEED_RANGES["evaluate"].start
    assert identity_seed(other, 0) != identity_seed(first, 0)
    assert not np.allclose(factory.view_angles(first, 0), factory.view_angles(other, 0))
    assert np.array_equal(factory.view_angles(first, 1), factory.view_angles(request_for(project, tmp_path, identities=9), 1))


# ---------------------------------------------------------------------------- determinism and resume
def test_same_request_gives_the_same_files(project, reference, tmp_path):
    generate_dataset(request_for(project, tmp_path / "again"))
    assert files_of(tmp_path / "again") == files_of(reference)


def test_worker_processes_write_the_same_files(project, reference, tmp_path):
    result = generate_dataset(request_for(project, tmp_path / "workers", identities=3, workers=2))
    assert result.identities_done == 3 and result.manifest["complete"]
    written = files_of(tmp_path / "workers")
    for name, data in files_of(reference).items():
        if name.startswith(("images", "labels", "depth", "pointclouds")):
            assert written[name] == data, name
    assert sorted(name for name in written if name.startswith("images")) == [
        f"images/{index:06d}_{view:02d}.png" for index in range(3) for view in range(2)]

    # Stopped after the first identity is written, no more are started (at most 2 x workers are).
    out, calls = tmp_path / "workers-stopped", []
    stopped = generate_dataset(request_for(project, out, identities=6, workers=2),
                               should_stop=lambda: len(calls.append(1) or calls) > 1)
    assert stopped.stopped and 1 <= stopped.identities_done <= 4
    generate_dataset(request_for(project, out, identities=6, workers=2, resume=True))
    resumed = files_of(out)
    assert all(resumed[name] == data for name, data in written.items() if name.startswith(("images", "pointclouds")))
    assert len([name for name in resumed if name.startswith("labels/")]) == 12


def test_stop_and_resume_give_the_same_files(project, reference, tmp_path):
    out = tmp_path / "stopped"
    calls = []
    result = generate_dataset(request_for(project, out), should_stop=lambda: len(calls.append(1) or calls) > 1)
    assert result.stopped and result.identities_done == 1
    with pytest.raises(FactoryError, match="--resume"):
        generate_dataset(request_for(project, out))
    resumed = generate_dataset(request_for(project, out, resume=True))
    assert resumed.identities_done == 2 and resumed.samples_written == 2
    assert files_of(out) == files_of(reference)


def test_interrupt_mid_identity_then_resume(project, reference, tmp_path, monkeypatch):
    """Ctrl-C while identity 1's files are being written: a half-written identity is not done."""
    out = tmp_path / "interrupted"
    real_write_ply = factory.write_ply

    def interrupted(path, *args, **kwargs):
        if path.name == "000001.ply":
            (path.parent / ".000001.ply.abc.tmp").write_bytes(b"half")  # what a kill can leave
            raise KeyboardInterrupt
        real_write_ply(path, *args, **kwargs)

    monkeypatch.setattr(factory, "write_ply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(request_for(project, out))
    assert json.loads((out / "manifest.json").read_text())["identities_done"] == 1
    (out / "images/000001_00.png").write_bytes(b"garbage from before the crash")
    monkeypatch.setattr(factory, "write_ply", real_write_ply)
    generate_dataset(request_for(project, out, resume=True))
    assert files_of(out) == files_of(reference)


def test_full_disk_is_reported_and_resumable(project, reference, tmp_path, monkeypatch):
    out = tmp_path / "full"
    real_write_png = factory.write_png

    def full_disk(path, image):
        if path.name == "000001_01.png" and path.parent.name == "depth":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write_png(path, image)

    monkeypatch.setattr(factory, "write_png", full_disk)
    with pytest.raises(FactoryError, match=r"No space left on device.*1 of 2 identities are complete.*--resume"):
        generate_dataset(request_for(project, out))
    assert json.loads((out / "manifest.json").read_text())["identities_done"] == 1
    monkeypatch.setattr(factory, "write_png", real_write_png)
    generate_dataset(request_for(project, out, resume=True))
    assert files_of(out) == files_of(reference)


# ---------------------------------------------------------------------------- refusals
def test_foreign_or_unrelated_folders_are_refused_unless_overwrite(project, reference, tmp_path):
    out = tmp_path / "foreign"
    generate_dataset(request_for(project, out, identities=1))
    with pytest.raises(FactoryError, match="another request"):
        generate_dataset(request_for(project, out, identities=1, seed=4, resume=True))
    with pytest.raises(FactoryError, match="different point_labels"):  # resuming must not mix labelling methods
        generate_dataset(request_for(project, out, identities=1, point_labels="pixels", resume=True))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["backbone"]["content_hash"] = "somebody-else"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FactoryError, match="another backbone"):
        generate_dataset(request_for(project, out, identities=1, resume=True))
    (out / "notes.txt").write_text("mine")
    generate_dataset(request_for(project, out, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes only the factory's files
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(FactoryError, match="not empty"):
        generate_dataset(request_for(project, unrelated))


def test_unwritable_output_and_bad_requests(project, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(FactoryError, match="cannot write to"):
        generate_dataset(request_for(project, blocker / "dataset"))
    for changes, message in [({"identities": 0}, "--n"), ({"views": 0}, "--views"), ({"size": 4}, "--size"),
                             ({"yaw_range": (30, -30)}, "--yaw-range"), ({"voxel_size": -1.0}, "--voxel-size"),
                             ({"point_labels": "guess"}, "--point-labels")]:
        with pytest.raises(FactoryError, match=message):
            generate_dataset(request_for(project, tmp_path / "bad", **changes))
    with pytest.raises(FactoryError, match="no trained semantic branch"):
        generate_dataset(request_for(_project_without_branch(project, tmp_path), tmp_path / "bad"))


def _project_without_branch(project: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "nobranch"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("semantic", "*.lock", ".lock"))
    return copy


def test_command_line(project, tmp_path, capsys):
    out = tmp_path / "cli"
    arguments = ["generate", "--project", str(project), "--n", "1", "--views", "2", "--size", str(SIZE),
                 "--out", str(out), "--yaw-range=-10,10", "--device", "cpu"]
    assert main(arguments) == 0
    assert "1/1 identities" in capsys.readouterr().out
    assert main(arguments + ["--seed", "2"]) == 2
    assert "another request" in capsys.readouterr().err
    assert main(["evaluate", "factory", "--dataset", str(out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert 0 <= figures["miou"] <= 1 and figures["images"] == 2


# ---------------------------------------------------------------------------- evaluation
def test_evaluation_of_procedural_ground_truth_is_perfect(project, reference, tmp_path):
    """Labels and clouds replaced by the procedural truth of the recorded seeds and cameras score 1:
    the evaluation looks up the right identity and camera for every file."""
    import shutil

    out = tmp_path / "truth"
    shutil.copytree(reference, out)
    cameras = json.loads((out / "cameras.json").read_text())["images"]
    palette = default_label_set().palette()
    for index in range(2):
        head = ProceduralHead(HeadParams.from_seed(cameras[f"{index:06d}_00"]["seed"]))
        points, labels = [], []
        for view in range(2):
            name = f"{index:06d}_{view:02d}"
            buffers = head.render(np.asarray(cameras[name]["label"], np.float32), SIZE)
            write_indexed_png(out / "labels" / f"{name}.png", buffers["labels"].astype(np.uint8), palette)
            from core.factory.pointcloud import backproject
            valid = buffers["alpha"] > 0.5
            points.append(backproject(buffers["depth"], cameras[name]["label"], valid))
            labels.append(buffers["labels"][valid])
        points, labels = np.concatenate(points), np.concatenate(labels)
        write_ply(out / "pointclouds" / f"{index:06d}.ply", PointCloud(points, np.zeros_like(points), labels))
    figures = evaluate_factory(out)
    assert figures["miou"] == pytest.approx(1.0) and figures["pixel_accuracy"] == pytest.approx(1.0)
    assert figures["point_accuracy"] > 0.99 and figures["points_near_surface"] == 1.0
    # ...while the random branch's own labels are far from it
    assert evaluate_factory(reference)["miou"] < 0.5


# ---------------------------------------------------------------------------- empty-space skipping
def test_culled_renders_match_the_backbone_renderer():
    """On the shipped backbone (real empty space around a head) the culled render decodes a fraction
    of the samples and gives the same image, opacity, depth and samples as generator.render."""
    from core.backbone import load_backbone
    from core.generator.culling import RAY_OPACITY_TOLERANCE, occupancy_grid, render_culled
    from core.factory.views import expand_identity

    backbone = load_backbone("default")
    generator = backbone.generator
    identity = backbone.identity_from_seed(SEED_RANGES["evaluate"].start + 11)
    cameras = torch.stack([backbone.camera(-40, 10).label(), backbone.camera(25, -15).label()])
    batch = expand_identity(identity, 2)
    with torch.no_grad():
        exact = generator.render(batch, cameras, 32, deterministic=True, return_samples=True)
        fast, renderer = render_culled(generator, batch, cameras, 32, occupancy_grid(generator, identity))
    assert renderer.decoded < 0.6 * renderer.total
    alpha_exact, alpha_fast = exact.samples["weights"].sum(2), fast.samples["weights"].sum(2)
    assert (alpha_exact - alpha_fast).abs().max() < 1e-3
    # The coarse densities agree to the last bits, not bit for bit (other batches, other BLAS
    # blocking), and on a sharp surface EG3D's deterministic importance sampler can turn that into
    # a fine sample one interval away: a handful of rays differ, all others agree closely.
    rays_apart = lambda difference: difference.reshape(2, 32 * 32, -1).abs().amax(-1)  # noqa: E731
    image_apart = rays_apart((exact.image - fast.image).permute(0, 2, 3, 1))
    assert (image_apart > 1e-2).float().mean() < 0.005 and image_apart.mean() < 1e-3
    foreground = (alpha_exact > 0.5).reshape(2, -1)
    depth_apart = rays_apart(exact.depth - fast.depth)
    assert foreground.any() and (depth_apart[foreground] > 1e-3).float().mean() < 0.01
    # Rays more opaque than the tolerance are rendered; fainter ones may come back empty.
    visible = alpha_exact[..., 0] > RAY_OPACITY_TOLERANCE
    samples_apart = rays_apart(exact.samples["depths"] - fast.samples["depths"])[visible]
    assert (samples_apart > 1e-3).float().mean() < 0.01


def test_culled_renders_on_a_generator_with_super_resolution():
    from core.generator.culling import occupancy_grid, render_culled
    from core.factory.views import expand_identity
    from core.backbone import Backbone

    generator = TriPlaneGenerator.from_config(tiny_config(superresolution=True), 0)
    backbone = Backbone(generator, "tiny-sr", "h")
    identity = backbone.identity_from_seed(3)
    cameras = backbone.camera(10, 5).label()[None]
    with torch.no_grad():
        exact = generator.render(identity, cameras, 16, deterministic=True, return_samples=True)
        fast, _ = render_culled(generator, expand_identity(identity, 1), cameras, 16, occupancy_grid(generator, identity))
    assert fast.image.shape == exact.image.shape == (1, 3, 128, 128)
    assert (exact.image - fast.image).abs().max() < 1e-2


# ---------------------------------------------------------------------------- reading and export
def test_factory_dataset_items_match_the_files(reference):
    import cv2
    from torch.utils.data import DataLoader

    from core.factory import FactoryDataset

    dataset = FactoryDataset(reference, pointclouds=True)
    assert len(dataset) == 4 and dataset.class_names[:2] == ["background", "head"]
    cameras = json.loads((reference / "cameras.json").read_text())
    item = dataset[3]
    assert item["name"] == "000001_01" and item["identity"] == 1
    assert item["image"].shape == (3, SIZE, SIZE) and 0 <= item["image"].min() and item["image"].max() <= 1
    assert np.array_equal(item["image"].mul(255).round().byte().permute(1, 2, 0).numpy(),
                          read_rgb(reference / "images/000001_01.png"))
    assert np.array_equal(item["label"].numpy(), read_indexed_png(reference / "labels/000001_01.png")[0])
    assert np.allclose(item["camera"].numpy(), cameras["images"]["000001_01"]["label"])
    assert item["seed"] == cameras["images"]["000001_01"]["seed"]
    raw = cv2.imread(str(reference / "depth/000001_01.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(np.isnan(item["depth"].numpy()), raw == 0)
    assert len(item["points"]) == len(item["point_labels"]) > 0
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=FactoryDataset.collate)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["label"].dtype == torch.int64
    assert batch["camera"].shape == (4, 25) and len(batch["points"]) == 4 and batch["name"][0] == "000000_00"
    small = FactoryDataset(reference, size=8)
    assert small[0]["image"].shape == (3, 8, 8) and "depth" not in small[0]


def test_factory_dataset_reads_only_finished_identities(reference, tmp_path):
    import shutil

    from core.factory import DatasetError, FactoryDataset

    partial = tmp_path / "partial"
    shutil.copytree(reference, partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["identities_done"] = 1
    (partial / "manifest.json").write_text(json.dumps(manifest))
    assert [r.name for r in FactoryDataset(partial).records] == ["000000_00", "000000_01"]
    (partial / "depth" / "000000_01.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="000000_01.png"):
        FactoryDataset(partial)[1]


def test_coco_export_reads_back_with_pycocotools(reference, tmp_path):
    from pycocotools.coco import COCO

    from core.factory.export import export_dataset

    result = export_dataset(reference, tmp_path / "coco", "coco", val_identities=1)
    assert result.images == {"train": 2, "val": 2} and result.annotations > 0
    seen = set()
    for split in ("train", "val"):
        coco = COCO(str(tmp_path / "coco" / "annotations" / f"{split}.json"))
        assert {c["id"] for c in coco.loadCats(coco.getCatIds())} == set(range(1, NUM_CLASSES))
        for image in coco.loadImgs(coco.getImgIds()):
            assert (tmp_path / "coco" / "images" / image["file_name"]).exists()
            labels = read_indexed_png(reference / "labels" / image["file_name"])[0]
            rebuilt = np.zeros_like(labels)
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                mask = coco.annToMask(annotation).astype(bool)
                assert not rebuilt[mask].any()  # parts do not overlap
                rebuilt[mask] = annotation["category_id"]
            assert np.array_equal(rebuilt, labels) and len(image["camera_label"]) == 25
            seen.add((split, image["file_name"][:6]))
    assert {identity for split, identity in seen if split == "val"} == {"000001"}
    assert {identity for split, identity in seen if split == "train"} == {"000000"}


def test_mmseg_export_layout(reference, tmp_path):
    import cv2

    from core.factory.export import export_dataset

    export_dataset(reference, tmp_path / "mm", "mmseg")
    metainfo = json.loads((tmp_path / "mm" / "metainfo.json").read_text())
    assert metainfo["classes"][0] == "background" and len(metainfo["palette"]) == len(metainfo["classes"])
    assert metainfo["palette"][1] == list(default_label_set().by_id(1).colour)
    annotation = cv2.imread(str(tmp_path / "mm/ann_dir/train/000001_01.png"), cv2.IMREAD_UNCHANGED)
    assert annotation.ndim == 2 and np.array_equal(annotation, read_indexed_png(reference / "labels/000001_01.png")[0])
    assert np.array_equal(read_rgb(tmp_path / "mm/img_dir/train/000001_01.png"), read_rgb(reference / "images/000001_01.png"))


def test_export_command_refuses_clearly_and_leaves_nothing_half_written(reference, tmp_path, capsys, monkeypatch):
    from core.factory import export as export_module

    out = tmp_path / "x"
    assert main(["export", "--dataset", str(reference), "--format", "coco", "--out", str(out)]) == 0
    assert "4 train images" in capsys.readouterr().out
    assert main(["export", "--dataset", str(reference), "--format", "coco", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--dataset", str(reference), "--format", "mmseg", "--out", str(tmp_path / "y"),
                 "--val-identities", "2"]) == 2
    assert "--val-identities must be between 0 and 1" in capsys.readouterr().err
    assert main(["export", "--dataset", str(tmp_path / "nowhere"), "--format", "mmseg", "--out", str(tmp_path / "z")]) == 2

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_png", full_disk)
    assert main(["export", "--dataset", str(reference), "--format", "mmseg", "--out", str(tmp_path / "w")]) == 2
    assert "No space left" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


# ---------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_here():
    """One local Ray instance for the module's Ray tests (starting one takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is the 'cluster' extra (part of 'test')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=128 * 2**20)
    yield ray
    ray.shutdown()


def test_ray_workers_write_the_same_files_and_resume_across_engines(project, reference, tmp_path, ray_here):
    out = tmp_path / "on-ray"
    result = generate_dataset(request_for(project, out, cluster="ray", workers=2))
    assert result.identities_done == 2 and files_of(out) == files_of(reference)
    # start locally, stop after one identity, finish on Ray
    mixed = tmp_path / "local-then-ray"
    calls = []
    stopped = generate_dataset(request_for(project, mixed), progress=lambda state: calls.append(state.identities_done),
                               should_stop=lambda: max(calls, default=0) >= 1)
    assert stopped.stopped and stopped.identities_done == 1
    generate_dataset(request_for(project, mixed, cluster="ray", workers=2, resume=True))
    assert files_of(mixed) == files_of(reference)
    # and back: a Ray run that counted one identity done, finished locally
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(manifest, identities_done=1, complete=False)))
    (out / "images" / "000001_00.png").unlink()
    generate_dataset(request_for(project, out, resume=True))
    assert files_of(out) == files_of(reference)


def _writer_processes() -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"_IdentityWriter" in status.read_bytes():
                pids.append(int(status.parent.name))
        except OSError:
            pass
    return pids


def test_a_killed_ray_worker_is_retried_without_half_written_files(project, tmp_path, ray_here):
    import os
    import signal

    local, on_ray = tmp_path / "local", tmp_path / "ray"
    generate_dataset(request_for(project, local, identities=6, pointclouds=False))
    killed = []

    def kill_one_worker(state):
        if state.identities_done >= 1 and not killed:
            pids = _writer_processes()
            assert pids, "no Ray writer process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = generate_dataset(request_for(project, on_ray, identities=6, pointclouds=False, cluster="ray", workers=2),
                              progress=kill_one_worker)
    assert killed and result.identities_done == 6 and not result.stopped
    assert files_of(on_ray) == files_of(local)


def test_cluster_arguments_are_checked(project, tmp_path):
    with pytest.raises(FactoryError, match="--address names a Ray cluster"):
        generate_dataset(request_for(project, tmp_path / "x", address="head:6379"))
    with pytest.raises(FactoryError, match="--cluster must be one of"):
        generate_dataset(request_for(project, tmp_path / "x", cluster="slurm"))


def test_shards_are_a_partition_of_the_same_files(project, reference, tmp_path):
    from core.factory import FactoryDataset

    shards = [tmp_path / f"shard{k}" for k in range(2)]
    for k, folder in enumerate(shards):
        result = generate_dataset(request_for(project, folder, shard=(k, 2)))
        assert result.identities_done == result.identities_total == 1 and not result.stopped
        assert json.loads((folder / "manifest.json").read_text())["shard"] == [k, 2]
    union = {}
    for folder in shards:
        union.update({name: data for name, data in files_of(folder).items() if name != "manifest.json"})
    expected = {name: data for name, data in files_of(reference).items() if name != "manifest.json"}
    assert union == expected
    assert [r.identity for r in FactoryDataset(shards[1]).records] == [1, 1]
    assert evaluate_factory(shards)["miou"] == evaluate_factory(reference)["miou"]
    assert evaluate_factory(shards)["identities"] == 2
    with pytest.raises(FactoryError, match="shard"):
        generate_dataset(request_for(project, shards[0], shard=(1, 2), resume=True))
    with pytest.raises(FactoryError, match="--shard K/N needs"):
        generate_dataset(request_for(project, tmp_path / "bad", shard=(2, 2)))


def test_without_ray_the_message_says_how_to_install_it(project, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(FactoryError, match=r'pip install -e "\.\[cluster\]"'):
        generate_dataset(request_for(project, tmp_path / "x", cluster="ray"))
