"""The project store: files on disk, the writer lock, validation and the simulated annotator."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.camera import Camera
from core.cli import main
from core.fileio import atomic_write_json, read_indexed_png, write_indexed_png
from core.project.records import pixel_counts
from core.project import (BackboneRef, CorruptAnnotationError, ForeignAnnotationError,
                          IdentityRef, LabelInUseError, LabelSet, LabelSetError, MaskSizeError,
                          Project, ProjectExistsError, ProjectLockedError, ProjectNotFoundError,
                          ProjectReadOnlyError, StaleLockWarning, UnknownLabelError,
                          UnsupportedVersionError, default_label_set)
from core.project.lock import LOCK_NAME, UNREADABLE_LOCK_GRACE_S

REPO = Path(__file__).resolve().parent.parent
HASH = "ab" * 32
SEED_IDENTITY = {"seed": 1_000_000, "truncation_psi": 1.0}


def sample_mask(size=(24, 32), fill=1) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[4:12, 6:20] = fill
    mask[14:18, 2:5] = 7
    return mask


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "proj", BackboneRef("default", HASH), default_label_set()) as project:
        yield project


@pytest.fixture(scope="module")
def tiny_backbone_file(tmp_path_factory):
    from core.checkpoint.studio_format import save_generator
    from core.generator.configs import tiny_config
    from core.generator.triplane import TriPlaneGenerator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    save_generator(TriPlaneGenerator(**tiny_config()[0]), path)
    return path


# ------------------------------------------------------------------ project.json
def test_create_then_open_round_trip(project):
    project.update_settings(brush=5)
    reopened = Project.open(project.folder)
    assert reopened.backbone == BackboneRef("default", HASH)
    assert reopened.label_set == default_label_set()
    assert reopened.label_set.version == 1
    assert reopened.settings == {"brush": 5}
    assert not reopened.writable
    stored = json.loads((project.folder / "project.json").read_text())
    assert stored["format_version"] == 1
    assert stored["labels"]["classes"][2] == {"id": 2, "name": "left_ear", "colour": [230, 25, 75]}


def test_create_refuses_an_existing_project(project):
    project.close()
    with pytest.raises(ProjectExistsError, match="already exists"):
        Project.create(project.folder, BackboneRef("default", HASH))


def test_a_folder_without_project_json_is_not_a_project(tmp_path):
    with pytest.raises(ProjectNotFoundError, match="no project.json"):
        Project.open(tmp_path)


def test_unknown_project_version_is_a_clear_error(project):
    path = project.folder / "project.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), format_version=7)))
    with pytest.raises(UnsupportedVersionError, match=r"project\.json.*version 7.*newer studio"):
        Project.open(project.folder)


def test_backbone_ref_for_file_hashes_and_stores_relative_paths(tmp_path, tiny_backbone_file):
    from core.checkpoint.studio_format import file_sha256

    inside = tmp_path / "proj" / "weights.safetensors"
    inside.parent.mkdir()
    inside.write_bytes(tiny_backbone_file.read_bytes())
    assert BackboneRef.for_file(inside, tmp_path / "proj") == BackboneRef("weights.safetensors", file_sha256(inside))
    assert BackboneRef.for_file(tiny_backbone_file, tmp_path / "proj").path == str(tiny_backbone_file.resolve())


def test_json_files_keep_number_lists_on_one_line_and_strings_intact(tmp_path):
    data = {"label": [1.0, -2.5e-05, 3], "nested": [[1, 2], ["a,\n  b", "[1,\n 2]"]], "empty": []}
    atomic_write_json(tmp_path / "x.json", data)
    text = (tmp_path / "x.json").read_text()
    assert '"label": [1.0, -2.5e-05, 3]' in text
    assert json.loads(text) == data


def test_indexed_png_keeps_values_beyond_a_short_palette(tmp_path):
    values = np.array([[0, 15, 16, 200]], np.uint8)  # Pillow would pack a 3-colour palette into 4 bits
    write_indexed_png(tmp_path / "x.png", values, np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], np.uint8))
    assert np.array_equal(read_indexed_png(tmp_path / "x.png")[0], values)


# ------------------------------------------------------------------ label sets
def test_label_set_edits_bump_the_version(project):
    mask = sample_mask()
    project.add_annotation(SEED_IDENTITY, Camera(), mask)
    added = project.set_label_set(project.label_set.with_label(12, "whiskers", (10, 20, 30)))
    assert added.version == 2 and 12 in added
    assert project.set_label_set(added).version == 2  # unchanged classes keep their version
    recoloured = project.set_label_set(added.with_label(12, "whiskers", (1, 2, 3)))
    assert recoloured.version == 3
    assert Project.open(project.folder).label_set.version == 3
    with pytest.raises(LabelInUseError, match="7"):
        project.set_label_set(recoloured.without(7))  # still painted in the mask
    assert project.set_label_set(recoloured.without(12)).version == 4
    assert project.update_annotation(0, mask).label_set_version == 4


@pytest.mark.parametrize("labels, message", [
    ([(1, "head", (1, 2, 3))], "background"),
    ([(0, "background", (0, 0, 0)), (1, "a", (1, 2, 3)), (1, "b", (1, 2, 3))], "unique"),
    ([(0, "background", (0, 0, 0)), (1, " ", (1, 2, 3))], "name"),
    ([(0, "background", (0, 0, 0)), (1, "a", (1, 2, 300))], "0-255"),
    ([(0, "background", (0, 0, 0)), (256, "a", (1, 2, 3))], "0-254"),
    ([(0, "background", (0, 0, 0)), (255, "a", (1, 2, 3))], "reserved for unlabelled"),
])
def test_label_set_validation(labels, message):
    with pytest.raises(LabelSetError, match=message):
        LabelSet.from_tuples(labels)


# ------------------------------------------------------------------ annotations
def test_annotation_is_an_indexed_png_with_the_label_palette(project):
    mask = sample_mask()
    annotation_id = project.add_annotation(SEED_IDENTITY, Camera(yaw=30, pitch=-10), mask)
    png_path, json_path = project.annotation_paths(annotation_id)
    assert png_path.name == "0000.png" and json_path.name == "0000.json"
    with Image.open(png_path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), mask)
        palette = np.array(image.getpalette("RGB"), np.uint8).reshape(-1, 3)
    for label_id, _name, colour in [(1, "head", (200, 120, 60)), (7, "right_eye", (255, 225, 25))]:
        assert tuple(palette[label_id]) == colour


def test_annotation_metadata_round_trip(project):
    camera = Camera(yaw=30, pitch=-10)
    annotation_id = project.add_annotation(SEED_IDENTITY, camera, sample_mask())
    meta = json.loads(project.annotation_paths(annotation_id)[1].read_text())
    assert meta["identity"]["seed"] == 1_000_000 and meta["identity"]["truncation_psi"] == 1.0
    assert len(meta["camera"]["label"]) == 25 and meta["camera"]["yaw"] == 30
    assert meta["backbone_hash"] == HASH and meta["label_set_version"] == 1
    assert meta["resolution"] == [24, 32]
    annotation = Project.open(project.folder).load_annotation(annotation_id)
    assert np.array_equal(annotation.mask, sample_mask())
    assert annotation.meta.camera == camera
    assert np.allclose(annotation.meta.camera_label, camera.label().numpy())
    assert annotation.meta.identity == IdentityRef(seed=1_000_000)


def test_update_delete_and_counters(project):
    first = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    second = project.add_annotation(SEED_IDENTITY, Camera(yaw=20), sample_mask())
    project.add_annotation({"seed": 1_000_001, "truncation_psi": 0.7}, Camera(), sample_mask())
    created = project.load_annotation(first).meta.created
    updated = project.update_annotation(first, sample_mask(fill=3))
    assert updated.created == created and updated.modified >= created
    assert np.array_equal(project.load_annotation(first).mask, sample_mask(fill=3))
    with pytest.raises(MaskSizeError, match="0000.png"):
        project.update_annotation(first, np.zeros((8, 8), np.uint8))
    project.delete_annotation(second)
    assert project.annotation_ids() == [0, 2]
    assert project.add_annotation(SEED_IDENTITY, Camera(), sample_mask()) == 3  # ids never reused
    counts = project.counts()
    assert counts.annotations == 3
    assert counts.per_identity[IdentityRef(seed=1_000_000)] == 2
    assert counts.pixels_per_class[7] == 3 * 12
    assert counts.pixels_per_class[3] == 8 * 14


def test_writes_refuse_unknown_labels_and_read_only_projects(project):
    with pytest.raises(UnknownLabelError, match=r"\[40\]"):
        project.add_annotation(SEED_IDENTITY, Camera(), sample_mask(fill=40))
    reader = Project.open(project.folder)
    with pytest.raises(ProjectReadOnlyError):
        reader.add_annotation(SEED_IDENTITY, Camera(), sample_mask())


@pytest.mark.parametrize("operation", ["add", "update"])
def test_failed_atomic_write_leaves_no_temp_file(project, monkeypatch, operation):
    if operation == "update":
        project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    before = {p.name: p.read_bytes() for p in (project.folder / "annotations").iterdir()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        if operation == "add":
            project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
        else:
            project.update_annotation(0, sample_mask(fill=3))
    after = {p.name: p.read_bytes() for p in (project.folder / "annotations").iterdir()}
    assert after == before  # no temp file, no half-made annotation, old files untouched


# ------------------------------------------------------------------ validation on load
def _rewrite_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def _break(project: Project, annotation_id: int, how: str) -> Path:
    png_path, json_path = project.annotation_paths(annotation_id)
    if how == "foreign":
        _rewrite_json(json_path, backbone_hash="cd" * 32)
        return json_path
    if how == "label":
        write_indexed_png(png_path, sample_mask(fill=40), project.label_set.palette())
    elif how == "size":
        write_indexed_png(png_path, np.zeros((16, 16), np.uint8), project.label_set.palette())
    elif how == "png":
        png_path.write_bytes(png_path.read_bytes()[:50])
    elif how == "json":
        json_path.write_text("{ not json")
        return json_path
    return png_path


@pytest.mark.parametrize("how, error, message", [
    ("foreign", ForeignAnnotationError, "another backbone"),
    ("label", UnknownLabelError, r"\[40\]"),
    ("size", MaskSizeError, "16x16.*32x24"),
    ("png", CorruptAnnotationError, "unreadable PNG"),
    ("json", CorruptAnnotationError, "unreadable JSON"),
])
def test_bad_annotation_is_a_clear_error_naming_the_file(project, how, error, message):
    annotation_id = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    bad_file = _break(project, annotation_id, how)
    with pytest.raises(error, match=message) as raised:
        Project.open(project.folder).load_annotation(annotation_id)
    assert raised.value.path == bad_file
    assert str(bad_file) in str(raised.value)


def test_iter_training_annotations_skips_and_reports_bad_files(project):
    ways = ["foreign", None, "label", "size", None, "png", "json"]
    bad_files = {}
    for way in ways:
        annotation_id = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
        if way:
            bad_files[annotation_id] = _break(project, annotation_id, way)
    orphan = project.folder / "annotations" / "0042.png"
    write_indexed_png(orphan, sample_mask(), project.label_set.palette())
    problems = []
    valid = list(Project.open(project.folder).iter_training_annotations(problems))
    assert [annotation.id for annotation in valid] == [1, 4]
    assert [problem.path for problem in problems] == list(bad_files.values()) + [orphan.with_suffix(".json")]
    assert "0042.png has no metadata" in str(problems[-1])


def test_camera_label_edited_by_hand_is_caught(project):
    annotation_id = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    json_path = project.annotation_paths(annotation_id)[1]
    meta = json.loads(json_path.read_text())
    meta["camera"]["yaw"] = 45.0  # the label still says frontal
    json_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptAnnotationError, match="camera label disagrees"):
        project.load_annotation(annotation_id)


# ------------------------------------------------------------------ the lock
_CHILD_WRITER = """
import sys
from core.project import Project, ProjectLockedError
try:
    Project.open(sys.argv[1], writable=True)
except ProjectLockedError as error:
    print(error, flush=True)
sys.stdin.readline()  # the parent closes its project now
project = Project.open(sys.argv[1], writable=True)
print(project.writable)  # and exits without closing: the lock must still go
"""


def test_second_writer_is_refused_with_the_holder_named(project):
    with pytest.raises(ProjectLockedError, match=f"process {os.getpid()} on {socket.gethostname()}") as raised:
        Project.open(project.folder, writable=True)
    assert raised.value.holder["pid"] == os.getpid()
    assert Project.open(project.folder).label_set == project.label_set  # readers are welcome
    project.close()
    assert not (project.folder / LOCK_NAME).exists()
    with Project.open(project.folder, writable=True) as again:
        assert again.writable


def test_second_writer_in_another_process_is_refused_and_locks_go_at_exit(project):
    child = subprocess.Popen([sys.executable, "-c", _CHILD_WRITER, str(project.folder)], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        refusal = child.stdout.readline()
        project.close()
        rest, errors = child.communicate("go\n", timeout=60)
    finally:
        child.kill()
    assert f"process {os.getpid()}" in refusal, errors
    assert rest.strip() == "True", errors
    assert not (project.folder / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_reclaimed_with_a_warning(project):
    project.close()
    finished = subprocess.Popen(["true"])
    finished.wait()
    record = {"pid": finished.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00", "token": "x"}
    (project.folder / LOCK_NAME).write_text(json.dumps(record))
    with pytest.warns(StaleLockWarning, match=f"process {finished.pid}"):
        reclaimed = Project.open(project.folder, writable=True)
    assert reclaimed.writable
    reclaimed.close()


def test_unreadable_lock_is_reclaimed_only_once_it_is_old(project):
    project.close()
    lock_file = project.folder / LOCK_NAME
    lock_file.write_text("")  # an instance that died between creating and writing its lock
    with pytest.raises(ProjectLockedError, match="right now"):
        Project.open(project.folder, writable=True)
    old = lock_file.stat().st_mtime - UNREADABLE_LOCK_GRACE_S - 5
    os.utime(lock_file, (old, old))
    with pytest.warns(StaleLockWarning, match="unreadable"):
        Project.open(project.folder, writable=True).close()


def test_lock_of_another_host_is_never_reclaimed(project):
    project.close()
    record = {"pid": 1, "host": "some-other-host", "since": "2026-01-01T00:00:00+00:00", "token": "x"}
    (project.folder / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(ProjectLockedError, match="some-other-host"):
        Project.open(project.folder, writable=True)


# ------------------------------------------------------------------ annotate-sim
def test_annotate_sim_writes_procedural_labels_through_the_store(tmp_path, tiny_backbone_file, capsys):
    from core.backbone import load_backbone
    from core.procedural import HeadParams, render, seeds_for

    folder = tmp_path / "sim"
    args = ["annotate-sim", "--project", str(folder), "--identities", "2", "--views", "-30,0; 0,10",
            "--resolution", "32", "--backbone", str(tiny_backbone_file)]
    assert main(args) == 0
    backbone = load_backbone(tiny_backbone_file)
    project = Project.open(folder)
    assert project.backbone.content_hash == backbone.content_hash
    problems = []
    annotations = list(project.iter_training_annotations(problems))
    assert len(annotations) == 4 and problems == []
    expected = [(seed, view) for seed in seeds_for("annotate", 2) for view in [(-30.0, 0.0), (0.0, 10.0)]]
    for annotation, (seed, (yaw, pitch)) in zip(annotations, expected):
        camera = backbone.camera(yaw, pitch)
        assert annotation.meta.identity == IdentityRef(seed=seed, truncation_psi=1.0)
        assert annotation.meta.camera == camera
        assert np.array_equal(annotation.mask, render(HeadParams.from_seed(seed), camera.label(), 32)["labels"])
    assert main(args[:-2]) == 0  # the project's own backbone; everything already present
    assert "skipped 4 already present" in capsys.readouterr().out
    assert len(project.annotation_ids()) == 4


def test_annotate_sim_without_a_default_backbone_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import core.backbone

    monkeypatch.setattr(core.backbone, "DEFAULT_BACKBONE_PATH", tmp_path / "absent.safetensors")
    assert main(["annotate-sim", "--project", str(tmp_path / "p"), "--identities", "1", "--views", "0,0"]) == 2
    assert "--backbone PATH" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_annotate_sim_bad_views_and_foreign_backbone(tmp_path, tiny_backbone_file, capsys):
    folder = tmp_path / "p"
    assert main(["annotate-sim", "--project", str(folder), "--identities", "1", "--views", "0;1,2"]) == 2
    assert "'0' is not 'yaw,pitch'" in capsys.readouterr().err
    Project.create(folder, BackboneRef("default", HASH)).close()
    args = ["annotate-sim", "--project", str(folder), "--identities", "1", "--views", "0,0", "--backbone", str(tiny_backbone_file)]
    assert main(args) == 2
    assert "is not the backbone of" in capsys.readouterr().err


def test_writable_open_removes_masks_whose_add_never_committed(project):
    kept = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    orphan = project.folder / "annotations" / f"{kept + 1:04d}.png"  # killed between PNG and JSON
    write_indexed_png(orphan, sample_mask(), project.label_set.palette())
    project.close()
    assert Project.open(project.folder).annotation_ids() == [kept, kept + 1]  # a reader removes nothing
    reopened = Project.open(project.folder, writable=True)
    assert not orphan.exists()
    assert reopened.annotation_ids() == [kept]
    assert reopened.add_annotation(SEED_IDENTITY, Camera(), sample_mask()) == kept + 1  # the id is reused


def test_a_recovery_that_fails_on_open_releases_the_lock(project, monkeypatch):
    annotation_id = project.add_annotation(SEED_IDENTITY, Camera(), sample_mask())
    png_path, json_path = project.annotation_paths(annotation_id)
    write_indexed_png(png_path, np.zeros_like(sample_mask()), project.label_set.palette())  # killed before its JSON
    os.utime(json_path, ns=(0, 0))
    project.close()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("core.project.store.atomic_write_json", full_disk)
        with pytest.raises(OSError, match="No space left"):
            Project.open(project.folder, writable=True)
    with Project.open(project.folder, writable=True) as reopened:  # the lock was not left held
        assert reopened.annotations()[0].pixel_counts == pixel_counts(np.zeros_like(sample_mask()))


def test_one_branch_rule_for_window_factory_and_verbs(project):
    """A newer checkpoint in a `--run` subfolder must not be picked: every reader uses the top level."""
    from app.semantic import semantic_folder
    from core.factory.generate import FactoryError, find_branch

    assert project.current_branch() is None and semantic_folder(project) == project.semantic_dir
    with pytest.raises(FactoryError, match="no trained semantic branch"):
        find_branch(project)
    top = project.semantic_dir / "semantic-step0000010.safetensors"
    run = project.semantic_dir / "trial" / "semantic-step0000050.safetensors"
    run.parent.mkdir(parents=True)
    for path in (top, run):  # the run's file is newer by name, step and mtime
        path.write_bytes(b"x")
    os.utime(top, (1, 1))
    assert project.current_branch() == top
    assert find_branch(project) == top
    assert project.datasets_dir == project.folder / "datasets" and project.edits_dir == project.folder / "edits"
