"""Generating a dataset from the window: the core factory, progress, stop and resume, errors."""
import json

import pytest
import torch
from app_support import gui_thread_garbage_collection, isolated_settings  # noqa: F401 (autouse fixture)
from PySide6.QtWidgets import QMessageBox

from app.factory import GenerateDialog
from app.main_window import MainWindow
from core.checkpoint.studio_format import save_generator
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.project import BackboneRef, Project, default_label_set
from core.semantic import SemanticBranch, save_branch
from core.semantic.checkpoint import checkpoint_name

SIZE = 16


def make_project(folder, with_branch: bool = True) -> Project:
    """A writable project on a saved tiny backbone (the factory loads it from the file)."""
    folder.mkdir(parents=True)
    generator = TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=SIZE), 0)
    save_generator(generator, folder / "tiny.safetensors")
    project = Project.create(folder, BackboneRef.for_file(folder / "tiny.safetensors", folder), default_label_set())
    if with_branch:
        backbone = project.load_backbone()
        torch.manual_seed(0)
        branch = SemanticBranch.for_generator(backbone.generator, max(project.label_set.ids) + 1, plane_channels=8,
                                              feature_channels=8, decoder_hidden=16, sr_hidden=8)
        save_branch(branch, folder / "semantic" / checkpoint_name(1), backbone.content_hash, step=1)
    return project


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a, **k: shown.append((title, text)))
    return shown


@pytest.fixture
def dialog_for(qtbot, tmp_path, messages):
    projects = []

    def make(with_branch=True):
        project = make_project(tmp_path / "proj", with_branch)
        projects.append(project)
        dialog = GenerateDialog(project, "cpu")
        qtbot.addWidget(dialog, before_close_func=lambda d: d.stop_and_wait())
        dialog._name.setText("run1")
        dialog._size.setValue(SIZE)
        dialog._views.setValue(1)
        dialog.show()
        return dialog

    yield make
    for project in projects:
        project.close()


def test_generate_writes_the_dataset_with_progress(dialog_for, qtbot):
    dialog = dialog_for()
    dialog._identities.setValue(2)
    dialog._start_button.click()
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=60000)
    out = dialog.output_folder()
    assert dialog.result.identities_done == 2 and not dialog.result.stopped
    assert len(list((out / "images").glob("*.png"))) == 2 and len(list((out / "labels").glob("*.png"))) == 2
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert dialog._progress.value() == dialog._progress.maximum() == 2
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert not dialog._resume.isEnabled()  # complete: nothing to resume


def test_stop_keeps_whole_identities_and_resume_finishes(dialog_for, qtbot):
    dialog = dialog_for()
    dialog._identities.setValue(1000)
    dialog.start()
    qtbot.waitUntil(lambda: dialog._progress.value() >= 1, timeout=60000)
    dialog._stop_button.click()
    qtbot.waitUntil(lambda: dialog.result is not None and not dialog.is_running(), timeout=60000)
    done = dialog.result.identities_done
    assert dialog.result.stopped and 1 <= done < 1000
    assert len(list((dialog.output_folder() / "images").glob("*.png"))) == done
    assert dialog._resume.isEnabled() and dialog._resume.isChecked()
    dialog.start()  # the same request, resumed
    qtbot.waitUntil(lambda: dialog._progress.value() > done, timeout=60000)
    dialog.stop()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=60000)
    assert dialog.result.identities_done > done


def test_a_project_without_a_branch_shows_why(dialog_for, qtbot, messages):
    dialog = dialog_for(with_branch=False)
    dialog.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=30000)
    assert messages[-1][0] == "Generation failed" and "no trained semantic branch" in messages[-1][1]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._start_button.isEnabled()


def test_window_menu_needs_a_project(qtbot, tmp_path, messages):
    window = MainWindow(settings=isolated_settings(tmp_path), device="cpu")
    qtbot.addWidget(window)
    window.generate_dataset()
    assert "Open or create a project first" in messages[-1][1]
