"""Training the semantic branch from the window: the same core function, progress, plots, stop."""
import pytest
from app_support import backbone, project, gui_thread_garbage_collection, isolated_settings, paint_annotations  # noqa: F401
from PySide6.QtWidgets import QMessageBox

from app.main_window import MainWindow
from app.semantic import load_project_branch, semantic_folder
from app.training import TrainDialog
from core.semantic.checkpoint import list_checkpoints


@pytest.fixture
def messages(monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a, **k: shown.append((title, text)))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    return shown


@pytest.fixture
def dialog(qtbot, project, backbone, messages):
    dialog = TrainDialog(project, backbone)
    qtbot.addWidget(dialog, before_close_func=lambda d: d.stop_and_wait())
    dialog._validate.setChecked(False)  # the tiny backbone has no procedural ground truth anyway
    dialog.show()
    return dialog


def test_training_runs_the_core_trainer_plots_the_loss_and_saves_into_the_project(dialog, qtbot, project, backbone):
    paint_annotations(project, backbone, seeds=(1,))
    dialog._steps.setValue(4)
    dialog._checkpoint_every.setValue(2)
    with qtbot.waitSignal(dialog.trained, timeout=60000):
        dialog._start_button.click()
    assert dialog.result.step == 4 and not dialog.result.stopped
    assert [step for step, _ in list_checkpoints(semantic_folder(project))] == [2, 4]
    assert len(dialog._loss_curve.getData()[0]) == 4  # one point per step
    assert dialog._progress.value() == 4 and "Finished at step 4" in dialog._status.text()
    state = load_project_branch(project, backbone)
    assert state.step == 4 and state.branch is not None
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._start_button.isEnabled() and dialog._resume.isEnabled()


def test_the_dialog_says_which_annotations_it_skips_and_why(dialog, qtbot, project, backbone):
    import numpy as np

    from core.project import UNLABELLED_ID, IdentityRef
    from core.semantic.annotations import NOTHING_PAINTED

    paint_annotations(project, backbone, seeds=(1,), yaws=(0.0,))
    project.add_annotation(IdentityRef(seed=2), backbone.camera(0.0, 0.0), np.full((32, 32), UNLABELLED_ID, np.uint8))
    dialog.hide()
    dialog.show()  # opened again after painting: the counts are fresh
    text = dialog._inventory_label.text()
    assert f"2 annotated view(s): 1 used for training, 1 skipped (0001: {NOTHING_PAINTED})" in text
    dialog._steps.setValue(1)
    with qtbot.waitSignal(dialog.trained, timeout=60000):
        dialog._start_button.click()
    assert "1 annotation(s) skipped" in dialog._status.text() and "0001.png" in dialog._status.text()
    assert NOTHING_PAINTED in dialog._status.text()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)


def test_stop_ends_the_run_early_and_keeps_what_was_trained(dialog, qtbot, project, backbone):
    paint_annotations(project, backbone, seeds=(1,))
    dialog._steps.setValue(100_000)
    dialog.start()
    qtbot.waitUntil(lambda: len(dialog._losses) >= 1, timeout=60000)
    assert dialog.is_running() and dialog._stop_button.isEnabled()
    with qtbot.waitSignal(dialog.trained, timeout=30000):
        dialog._stop_button.click()
    assert dialog.result.stopped and 1 <= dialog.result.step < 100_000
    assert list_checkpoints(semantic_folder(project))[-1][0] == dialog.result.step
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)


def test_nothing_to_train_on_shows_a_message(dialog, qtbot, messages):
    dialog.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=30000)
    title, text = messages[-1]
    assert title == "Training failed" and "no usable annotations" in text
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10000)
    assert dialog._start_button.isEnabled()


def test_window_trains_the_open_project_and_hands_the_branch_to_the_workspaces(qtbot, tmp_path, project, backbone,
                                                                               messages):
    window = MainWindow(settings=isolated_settings(tmp_path), device="cpu")
    qtbot.addWidget(window)
    window.show()
    window.train_semantic_branch()
    assert "Open or create a project first" in messages[-1][1]
    paint_annotations(project, backbone, seeds=(1,), yaws=(0.0,))
    window.use_session(backbone, project)
    assert not window.orbit._mode_buttons["Labels"].isEnabled()
    window.train_semantic_branch()
    window.train_dialog._validate.setChecked(False)
    window.train_dialog._steps.setValue(2)
    with qtbot.waitSignal(window.train_dialog.trained, timeout=60000):
        window.train_dialog.start()
    assert window.branch_state.step == 2
    assert window.orbit._mode_buttons["Labels"].isEnabled() and window.annotate._prefill_button.isEnabled()
