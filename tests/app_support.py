"""Shared pieces of the GUI tests: a tiny random backbone and a project painted on it."""
from __future__ import annotations

import gc
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import: no display in CI

import pytest
from PySide6.QtCore import QSettings

from core.backbone import Backbone
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.project import BackboneRef, Project, default_label_set

MASK_SIZE = 32
FAST_NEURAL_RESOLUTION = 16  # keeps a render well under a second on two busy cores


def tiny_backbone() -> Backbone:
    generator = TriPlaneGenerator.from_config((tiny_config()[0], FAST_NEURAL_RESOLUTION))
    return Backbone(generator, "tiny", "tiny-hash")


def tiny_project(folder: Path, backbone: Backbone) -> Project:
    reference = BackboneRef("tiny.safetensors", backbone.content_hash)
    return Project.create(folder, reference, default_label_set(), {"annotation_resolution": MASK_SIZE})


@pytest.fixture(scope="module")
def backbone():
    """One tiny backbone per test module (import this fixture by name, as below)."""
    return tiny_backbone()


@pytest.fixture
def project(tmp_path, backbone):
    """A fresh project on the tiny backbone, closed (lock released) after the test."""
    project = tiny_project(tmp_path / "proj", backbone)
    yield project
    project.close()


def window_tests_unavailable(reason: str):
    """Skip a real-window test saying why; fail instead where STUDIO_WINDOW_TESTS=required (.ci/run
    installs Xvfb, so there a missing X server is a broken set-up, not a reason to skip)."""
    if os.environ.get("STUDIO_WINDOW_TESTS") == "required":
        pytest.fail(f"window tests are required here but cannot run: {reason}")
    pytest.skip(reason)


def isolated_settings(folder: Path) -> QSettings:
    """Recent projects go to a file under the test's tmp folder, never the user's settings."""
    return QSettings(str(folder / "studio.ini"), QSettings.IniFormat)


@pytest.fixture(autouse=True)
def gui_thread_garbage_collection():
    """Collect cyclic garbage only on the GUI thread during a GUI test.

    Otherwise the collector may run inside a render or autosave thread, free a Qt object there,
    and crash the test process at random (the studio itself uses pyqtgraph's GarbageCollector).
    Import this fixture into each GUI test module; being autouse, it then applies to all its tests.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def tiny_branch(backbone: Backbone, label_set, seed: int = 0):
    """A random semantic branch shaped for `backbone` and `label_set` (labels, not quality)."""
    import torch

    from core.semantic import SemanticBranch

    torch.manual_seed(seed)
    return SemanticBranch.for_generator(backbone.generator, max(label_set.ids) + 1, plane_channels=8,
                                        feature_channels=8, decoder_hidden=16, sr_hidden=8).eval()


def save_tiny_branch(project: Project, backbone: Backbone, step: int = 1):
    """A random branch saved where the studio looks for the project's trained one."""
    from app.semantic import semantic_folder
    from core.semantic import save_branch
    from core.semantic.checkpoint import checkpoint_name

    branch = tiny_branch(backbone, project.label_set)
    folder = semantic_folder(project)
    folder.mkdir(exist_ok=True)
    save_branch(branch, folder / checkpoint_name(step), backbone.content_hash, step=step)
    return branch


def paint_annotations(project: Project, backbone: Backbone, seeds=(1, 2), yaws=(0.0, 20.0)) -> None:
    """A few simple masks (a labelled block) through the store, as the Annotate workspace saves them."""
    import numpy as np

    from core.project import IdentityRef

    for seed in seeds:
        for yaw in yaws:
            mask = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
            mask[8:24, 6 + seed:20 + seed] = 1
            mask[8:12, 6 + seed:20 + seed] = 2
            project.add_annotation(IdentityRef(seed=seed), backbone.camera(yaw, 0.0), mask)
