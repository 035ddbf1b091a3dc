"""Hard samples from the window: a tiny steering run, its plots and strip, stop/resume, errors."""
import json

import pytest
import torch
from app_support import gui_thread_garbage_collection, isolated_settings  # noqa: F401 (autouse fixture)
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QMessageBox

from app.main_window import MainWindow
from app.steering import HardSamplesDialog, read_state
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import NUM_CLASSES
from core.project import Project
from core.semantic import SemanticBranch
from core.steering.models import new_model, save_model
from project_support import project_on

SIZE = 16


@pytest.fixture(scope="module")
def generator():
    return TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=SIZE), 0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_model(new_model("pose", SIZE, width=4), folder / "pose.pt")
    save_model(new_model("segmentation", SIZE, NUM_CLASSES, width=4), folder / "seg.pt")
    (folder / "junk.pt").write_bytes(b"not a model at all")
    return folder


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a, **k: shown.append((title, text)))
    return shown


@pytest.fixture
def dialog_for(qtbot, tmp_path, generator, messages):
    projects = []

    def make(model, with_branch=True, rounds=1):
        torch.manual_seed(3)
        branch = SemanticBranch.for_generator(generator, NUM_CLASSES) if with_branch else None
        folder = project_on(tmp_path / "proj", generator, branch=branch, step=5)
        project = Project.open(folder)
        projects.append(project)
        dialog = HardSamplesDialog(project, "cpu")
        qtbot.addWidget(dialog, before_close_func=lambda d: d.stop_and_wait())
        dialog.set_model(str(model))
        dialog._out.setText("run1")
        for spin, value in ((dialog._rounds, rounds), (dialog._samples, 4), (dialog._views, 2),
                            (dialog._size, SIZE), (dialog._steer_steps, 2), (dialog._finetune_steps, 2)):
            spin.setValue(value)
        dialog.show()
        return dialog

    yield make
    for project in projects:
        project.close()


def test_a_tiny_run_fills_the_plots_and_the_strip(dialog_for, models, qtbot, messages):
    dialog = dialog_for(models / "pose.pt", rounds=2)
    shown = []
    dialog._progress.valueChanged.connect(shown.append)
    assert dialog._task.currentText() == "pose" and not dialog._task.isEnabled()  # from studio.json
    assert not dialog._input_size.isEnabled() and dialog._input_size.value() == SIZE
    dialog._start_button.click()
    assert not dialog._model_row.isEnabled() and not dialog._replay_row.isEnabled()  # Browse… too, while it runs
    qtbot.waitUntil(lambda: dialog.result is not None or bool(messages), timeout=120000)
    assert not messages
    assert dialog.result.rounds_done == 2 and not dialog.result.stopped
    assert dialog._progress.value() == dialog._progress.maximum() == 2 * (2 + 4 + 2)
    assert shown == sorted(shown)  # reports handled late still count the phases finished when they were made
    out = dialog.output_folder()
    assert (out / "round_02" / "model.pt").is_file()
    density = dialog._yaw_plot.listDataItems()
    assert [item.name() for item in density] == ["prior", "round 1", "round 2"]
    assert all(len(item.getData()[0]) > 100 for item in density)
    assert len(dialog._pitch_plot.listDataItems()) == 3
    errors = {item.name(): item.getData()[1] for item in dialog._error_plot.listDataItems()}
    state = read_state(out)
    assert list(errors["steering, last update"]) == [state["rounds"][r]["steered"]["loss_per_step"][-1]
                                                     for r in "12"]
    assert list(errors["fine-tune loss"]) == [state["rounds"][r]["tuned"]["last_loss"] for r in "12"]
    # the strip: the newest round's samples, hardest first, as shown pictures
    records = json.loads((out / "round_02" / "cameras.json").read_text())["images"]
    ranked = sorted(records, key=lambda name: -records[name]["model_loss"])
    assert dialog.strip_names == ranked
    tiles = [dialog._strip_row.itemAt(i).widget() for i in range(len(dialog.strip_names))]
    assert all(not tile.findChildren(QLabel)[0].pixmap().isNull() for tile in tiles)
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._resume.isEnabled() and "2 rounds finished" in dialog._resume.text()


def test_stop_keeps_the_finished_phases_and_resume_finishes(dialog_for, models, qtbot, messages):
    dialog = dialog_for(models / "pose.pt", rounds=2)
    dialog.start()
    qtbot.waitUntil(lambda: dialog._progress.value() >= 1, timeout=120000)
    dialog._stop_button.click()
    qtbot.waitUntil(lambda: dialog.result is not None and not dialog.is_running(), timeout=120000)
    assert not messages and dialog.result.stopped and dialog.result.rounds_done < 2
    state = read_state(dialog.output_folder())
    assert state["rounds"]  # at least the phase in progress finished and was kept
    assert dialog._resume.isEnabled() and dialog._resume.isChecked()
    dialog.start()  # the same request, resumed
    qtbot.waitUntil(lambda: dialog.result is not None and not dialog.is_running(), timeout=120000)
    assert not messages and dialog.result.rounds_done == 2 and not dialog.result.stopped
    assert [item.name() for item in dialog._yaw_plot.listDataItems()] == ["prior", "round 1", "round 2"]
    assert "round 2" in dialog._strip_title.text()


def test_replaying_a_dataset_from_the_dialog(dialog_for, models, qtbot, messages):
    dialog = dialog_for(models / "pose.pt")
    dialog._replay.setText(str(dialog.output_folder().parent / "missing"))
    dialog.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=60000)
    assert "not a dataset folder" in messages[-1][1]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    dialog._replay.clear()
    dialog.start()  # a first run; its round folder is a factory dataset to replay in a second one
    qtbot.waitUntil(lambda: dialog.result is not None and not dialog.is_running(), timeout=120000)
    replayed = dialog.output_folder() / "round_01"
    dialog._out.setText("run2")
    dialog._replay.setText(str(replayed))
    dialog._replay_fraction.setValue(0.5)
    dialog.result = None
    dialog.start()
    qtbot.waitUntil(lambda: dialog.result is not None and not dialog.is_running(), timeout=120000)
    assert len(messages) == 1
    state = read_state(dialog.output_folder())
    assert state["request"]["replay"] == str(replayed) and state["request"]["replay_fraction"] == 0.5
    assert state["rounds"]["1"]["tuned"]["replayed"] == 4


def test_a_bad_model_file_is_refused_in_the_dialog(dialog_for, models, qtbot, messages):
    dialog = dialog_for(models / "junk.pt")
    assert "not a TorchScript model" in dialog._model_note.text() and dialog._task.isEnabled()
    dialog.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=60000)
    assert messages[-1][0] == "Hard samples failed" and "not a TorchScript model" in messages[-1][1]
    assert "not a TorchScript model" in dialog._status.text()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._start_button.isEnabled() and dialog._model.text().endswith("junk.pt")


def test_segmentation_without_a_semantic_branch_says_why(dialog_for, models, qtbot, messages):
    dialog = dialog_for(models / "seg.pt", with_branch=False)
    assert dialog._task.currentText() == "segmentation"
    dialog.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=60000)
    assert "a segmentation run needs the factory's labels" in messages[-1][1]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._start_button.isEnabled()


def test_window_menu_needs_a_project(qtbot, tmp_path, messages):
    window = MainWindow(settings=isolated_settings(tmp_path), device="cpu")
    qtbot.addWidget(window)
    action = next(a for a in window.findChildren(QAction) if a.text() == "&Hard Samples…")
    action.trigger()
    assert messages[-1][0] == "Hard Samples" and "Open or create a project first" in messages[-1][1]
