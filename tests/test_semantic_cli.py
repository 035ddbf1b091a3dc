"""train-semantic and evaluate labels on a tiny backbone: checkpoints, resume, signals, bad annotations,
the evaluation's figures, and the consistency metric itself against the procedural truth."""
import json
import os
import signal

import numpy as np
import pytest

from core.camera import Camera
from core.checkpoint.studio_format import save_generator
from core.cli import main
from core.fitting.config import tiny_fit_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import seeds_for
from core.project import BackboneRef, Project
from core.project.simulate import simulate_annotations
from core.semantic.checkpoint import list_checkpoints, load_branch, read_branch_metadata
from core.semantic.cli import TRAINING_LOG, _ProgressBars
from core.semantic.evaluation import (
    LABEL_VIEWS,
    LabelledDepth,
    ProceduralLabeller,
    SurfaceOracleLabeller,
    evaluate_labels,
    pairwise_consistency,
)

RESOLUTION = 16
VIEWS = [(-30.0, 0.0), (0.0, 0.0), (30.0, 0.0)]


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    save_generator(TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=16, neural_resolution=RESOLUTION), 0),
                   path)
    return path


@pytest.fixture
def project(tmp_path, backbone_file):
    """A project of 1 annotation identity x 3 views painted by the simulated annotator."""
    folder = tmp_path / "project"
    with Project.create(folder, BackboneRef.for_file(backbone_file, folder)) as created:
        simulate_annotations(created, created.load_backbone(), seeds_for("annotate", 1), VIEWS, RESOLUTION)
    return folder


def train(project, *options):
    return main(["train-semantic", "--project", str(project), "--threads", "1", *options])


def steps_in(directory):
    return [step for step, _ in list_checkpoints(directory)]


def test_train_semantic_writes_checkpoints_with_validation_and_resume_continues(project, capsys):
    assert train(project, "--steps", "3", "--checkpoint-every", "2", "--validate", "procedural") == 0
    directory = project / "semantic"
    assert steps_in(directory) == [2, 3]
    metrics = read_branch_metadata(directory / "semantic-step0000003.safetensors")["metrics"]
    assert 0 <= metrics["validation_miou"] <= 1 and "procedural" in metrics["validation"]["source"]
    assert metrics["cpu_s"] > 0 and metrics["elapsed_s"] > 0
    assert all(seed in range(2_000_000, 3_000_000) for seed in metrics["validation"]["seeds"])
    assert "done at step 3" in capsys.readouterr().out

    assert train(project, "--steps", "5") == 2  # a fresh run would overwrite: refused
    assert "--resume" in capsys.readouterr().err
    assert train(project, "--steps", "5", "--checkpoint-every", "2", "--resume", "--validate", "none") == 0
    assert steps_in(directory) == [3, 4, 5]
    log = json.loads((directory / TRAINING_LOG).read_text())
    assert [entry["step"] for entry in log] == [2, 3, 4, 5] and "validation_miou" not in log[-1]
    assert "resumed from semantic-step0000003" in capsys.readouterr().err


def test_an_ablation_run_keeps_its_own_checkpoints(project):
    assert train(project, "--steps", "2", "--run", "no-multiscale", "--no-multiscale") == 0
    branch, _ = load_branch(project / "semantic" / "no-multiscale" / "semantic-step0000002.safetensors")
    assert branch.config["multiscale"] is False and steps_in(project / "semantic") == []
    # Resuming it needs no flags (the checkpoint says what it is); contradicting them is an error.
    assert train(project, "--steps", "3", "--run", "no-multiscale", "--resume") == 0
    assert train(project, "--steps", "4", "--run", "no-multiscale", "--resume", "--no-density-prior") == 2
    assert train(project, "--steps", "4", "--resume", "--run", "no-multiscale") == 0


def test_training_variants_are_options_stored_with_the_checkpoint(project, capsys):
    assert train(project, "--steps", "2", "--run", "variant", "--lr-schedule", "cosine", "--class-balance", "0.5",
                 "--edge-weight", "2", "--raw-loss-weight", "0", "--validate", "none") == 0
    settings = read_branch_metadata(project / "semantic" / "variant" / "semantic-step0000002.safetensors")["settings"]
    assert settings["learning_rate_schedule"] == "cosine" and settings["class_balance_power"] == 0.5
    assert settings["boundary_weight"] == 2.0 and settings["raw_loss_weight"] == 0.0
    capsys.readouterr()
    assert train(project, "--steps", "2", "--edge-weight", "-1") == 2
    assert "--edge-weight" in capsys.readouterr().err


def test_resuming_a_branch_of_another_backbone_is_a_clear_error(project, tmp_path, capsys):
    assert train(project, "--steps", "1") == 0
    other_file = tmp_path / "other.safetensors"
    save_generator(TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=16, neural_resolution=RESOLUTION), 1),
                   other_file)
    other = tmp_path / "other"
    with Project.create(other, BackboneRef.for_file(other_file, other)) as created:
        simulate_annotations(created, created.load_backbone(), seeds_for("annotate", 1), VIEWS[:1], RESOLUTION)
    (other / "semantic").mkdir()
    for path in (project / "semantic").glob("*.safetensors"):
        (other / "semantic" / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    assert train(other, "--steps", "2", "--resume") == 2
    error = capsys.readouterr().err
    assert "semantic-step0000001.safetensors" in error and "trained on backbone" in error


def _signal_at_step(monkeypatch, step: int, count: int):
    """Send SIGTERM `count` times to this process when training reports `step`."""
    update = _ProgressBars.update

    def update_and_signal(self, progress):
        update(self, progress)
        if progress.phase == "training" and progress.step == step:
            for _ in range(count):
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(_ProgressBars, "update", update_and_signal)


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resume_goes_on(project, monkeypatch, capsys):
    _signal_at_step(monkeypatch, step=3, count=1)
    assert train(project, "--steps", "50", "--checkpoint-every", "2") == 130
    assert steps_in(project / "semantic")[-1] == 3  # the stop wrote one at the step it stopped
    assert "--resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert train(project, "--steps", "4", "--resume") == 0
    assert steps_in(project / "semantic")[-1] == 4


def test_a_second_signal_interrupts_at_once_and_keeps_the_last_checkpoint(project, monkeypatch):
    _signal_at_step(monkeypatch, step=3, count=2)
    assert train(project, "--steps", "50", "--checkpoint-every", "2") == 130
    (step, path), = list_checkpoints(project / "semantic")
    assert step == 2
    load_branch(path)  # intact


def test_an_annotation_painted_on_another_backbone_stops_training_naming_it(project, capsys):
    meta_path = project / "annotations" / "0001.json"
    meta = json.loads(meta_path.read_text())
    meta["backbone_hash"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    assert train(project, "--steps", "2") == 2
    error = capsys.readouterr().err
    assert "0001.json" in error and "another backbone" in error
    assert not (project / "semantic").exists() or steps_in(project / "semantic") == []


def test_an_unreadable_annotation_is_reported_and_skipped(project, capsys):
    (project / "annotations" / "0002.png").write_bytes(b"not a png")
    assert train(project, "--steps", "1") == 0
    error = capsys.readouterr().err
    assert "skipped:" in error and "0002.png" in error and "training on 2 annotations" in error


def test_evaluate_labels_reports_every_figure_as_json(project, capsys):
    assert train(project, "--steps", "2") == 0
    capsys.readouterr()
    assert main(["evaluate", "labels", "--project", str(project), "--json", "--identities", "2", "--views", "2",
                 "--video-frames", "3", "--threads", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in ("miou", "pixel_accuracy", "video_miou"):
        assert 0 <= figures[key] <= 1, key
    # A random tiny backbone may show no surface (opacity < 0.5) anywhere: nothing to warp, null.
    assert (figures["consistency"] is None) == (figures["consistency_pixels"] == 0)
    assert figures["consistency"] is None or 0 <= figures["consistency"] <= 1
    assert set(figures["per_class_iou"]) >= {"background", "head", "left_eye"}
    assert figures["identities"] == seeds_for("evaluate", 2) and figures["views"] == [list(v) for v in LABEL_VIEWS[:2]]
    assert figures["video"]["frames"] == 3 and figures["step"] == 2 and figures["complete"] is True


def test_evaluate_labels_compares_several_checkpoints_on_the_same_views(project, capsys):
    assert train(project, "--steps", "2", "--checkpoint-every", "1") == 0
    first, second = (str(project / "semantic" / f"semantic-step000000{step}.safetensors") for step in (1, 2))
    options = ["--identities", "1", "--views", "2", "--video-frames", "2", "--threads", "1", "--json"]
    capsys.readouterr()
    assert main(["evaluate", "labels", "--project", str(project), "--checkpoint", first, "--checkpoint", second,
                 "--surface-oracle", *options]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [figures["step"] for figures in both] == [1, 2]
    assert both[0]["surface_oracle"] == both[1]["surface_oracle"] and "miou" in both[0]["surface_oracle"]
    assert main(["evaluate", "labels", "--project", str(project), "--checkpoint", second, *options]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["miou"] == both[1]["miou"] and alone["per_class_iou"] == both[1]["per_class_iou"]


def test_evaluate_labels_without_a_branch_is_a_clear_error(project, capsys):
    assert main(["evaluate", "labels", "--project", str(project)]) == 2
    assert "train-semantic" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the metric itself
SEED = seeds_for("evaluate", 1)[0]


def _views(labeller, resolution=64):
    return [(Camera(yaw, pitch), labeller(SEED, Camera(yaw, pitch))) for yaw, pitch in LABEL_VIEWS]


@pytest.fixture(scope="module")
def truth():
    return ProceduralLabeller(64)


@pytest.fixture(scope="module")
def truth_views(truth):
    return _views(truth)


def test_the_procedural_truth_is_consistent_across_views(truth_views):
    agreeing, compared = pairwise_consistency(truth_views)
    assert compared > 5000  # most of the head is visible in neighbouring views
    assert agreeing / compared > 0.95  # only pixel-boundary effects at label edges


def test_labels_fixed_to_the_screen_are_not_consistent(truth_views):
    # The same depth (so the same pixels are compared) but labels in screen-space stripes.
    stripes = (np.arange(64)[None, :] // 8 % 12).repeat(64, 0)
    screen_fixed = [(camera, LabelledDepth(stripes, view.depth)) for camera, view in truth_views]
    agreeing, compared = pairwise_consistency(screen_fixed)
    assert agreeing / compared < 0.75


def test_evaluate_labels_scores_the_truth_perfectly_and_a_wrong_labeller_poorly(truth):
    cameras = [camera for camera, _ in _views(truth)]
    names = [str(i) for i in range(12)]
    perfect = evaluate_labels(truth, truth, [SEED], cameras, [SEED], cameras[:2], names)
    assert perfect["miou"] == 1.0 and perfect["video_miou"] == 1.0 and perfect["consistency"] > 0.95

    def everything_is_head(seed, camera):
        view = truth(seed, camera)
        return LabelledDepth(np.where(view.labels > 0, 1, 0), view.depth)

    wrong = evaluate_labels(everything_is_head, truth, [SEED], cameras, [], [], names)
    assert wrong["miou"] < 0.3 and wrong["per_class_iou"]["2"] == 0.0


def test_the_surface_oracle_on_the_true_surface_gives_the_true_labels(truth):
    oracle = SurfaceOracleLabeller(lambda seed, camera: truth(seed, camera).depth)
    cameras = [camera for camera, _ in _views(truth)]
    figures = evaluate_labels(oracle, truth, [SEED], cameras, [], [], [str(i) for i in range(12)])
    assert figures["pixel_accuracy"] > 0.99 and figures["miou"] > 0.99
