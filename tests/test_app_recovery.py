"""Recovery paths of the window (issue 23, items 12-14): damaged annotations and project files,
a project held by another studio (read-only mode), and reopening the last session at launch."""
import hashlib

import numpy as np
import pytest
from app_support import (MASK_SIZE, gui_thread_garbage_collection, isolated_settings, save_tiny_branch,  # noqa: F401
                         tiny_backbone, tiny_project)
from PySide6.QtWidgets import QMessageBox

import app.main_window as main_window_module
from app.main_window import LAST_SESSION_KEY, MainWindow
from core.fileio import write_indexed_png
from core.project import IdentityRef, Project, ProjectReadOnlyError

WAIT_MS = 20_000


class Shown(list):
    answers: list


@pytest.fixture
def dialogs(monkeypatch):
    """Message boxes are never shown: each records (title, text, buttons) and clicks the button
    named in `dialogs.answers` (first match), else none (as closing the box would)."""
    shown, answers = Shown(), []

    def exec_(box):
        buttons = [button.text() for button in box.buttons()]
        shown.append((box.windowTitle(), box.text(), buttons))
        for answer in answers:
            for button in box.buttons():
                if button.text() == answer and button.isEnabled():
                    button.click()
                    return 0
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a, **k: shown.append((title, text, [])))
    monkeypatch.setattr(Project, "load_backbone", lambda self, device="cpu": tiny_backbone())
    monkeypatch.setattr(main_window_module, "load_backbone", lambda spec, device=None: tiny_backbone())
    shown.answers = answers
    return shown


def make_window(qtbot, tmp_path):
    window = MainWindow(settings=isolated_settings(tmp_path), device="cpu")
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot, tmp_path, dialogs):
    return make_window(qtbot, tmp_path)


def annotated_project(folder, backbone, seed):
    """A closed project with one annotation of the view Annotate opens first (seed, frontal)."""
    project = tiny_project(folder, backbone)
    mask = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    mask[4:20, 4:20] = 2
    project.add_annotation(IdentityRef(seed=seed, truncation_psi=1.0), backbone.camera(0.0, 0.0), mask)
    project.close()
    return project.annotation_paths(0)


def open_in(window, qtbot, folder):
    window.open_project(folder)
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT_MS)
    qtbot.wait(50)  # the queued damaged-annotation question


def test_a_damaged_annotation_can_be_set_aside_and_the_project_stays_open(window, dialogs, qtbot, tmp_path):
    png, json_file = annotated_project(tmp_path / "proj", tiny_backbone(), window.annotate.seed)
    png.write_bytes(b"not a png at all")
    dialogs.answers.append("Set Aside")
    open_in(window, qtbot, tmp_path / "proj")
    title, text, buttons = dialogs[-1]
    assert title == "Damaged annotation" and "0000.png" in text
    assert sorted(buttons) == ["Repair", "Set Aside", "Skip"]
    assert window.project.writable and window._project_label.text() == "Project: proj"
    assert not png.exists() and not json_file.exists()
    set_aside = sorted(p.suffix for p in (tmp_path / "proj" / "annotations" / "set-aside").iterdir())
    assert set_aside == [".json", ".png"]  # moved, not deleted
    assert window.annotate.editor is not None  # the view can be painted again, as a new annotation
    window.annotate.apply_stroke([(3.5, 3.5)], label=1)
    assert window.annotate.flush() and window.project.annotation_ids() == [0]
    window.project.load_annotation(0)


def test_a_mask_with_unknown_labels_is_repaired_and_a_skipped_one_asks_once(window, dialogs, qtbot, tmp_path):
    png, _ = annotated_project(tmp_path / "proj", tiny_backbone(), window.annotate.seed)
    bad = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    bad[:4] = 200  # an id the label set does not have
    bad[10:12] = 1
    write_indexed_png(png, bad, np.zeros((256, 3), np.uint8))
    dialogs.answers.append("Skip")
    open_in(window, qtbot, tmp_path / "proj")
    assert dialogs[-1][0] == "Damaged annotation" and window.annotate.editor is None  # skipped: not paintable
    count = len(dialogs)
    window.annotate.set_view(20.0, 0.0)
    window.annotate.set_view(0.0, 0.0)  # back to the damaged view: a status message, no second question
    qtbot.wait(50)
    assert len(dialogs) == count and "skipped" in window.statusBar().currentMessage()
    window._skipped_annotations.clear()
    dialogs.answers[:] = ["Repair"]
    window.annotate.reload_view()
    qtbot.waitUntil(lambda: window.annotate.editor is not None, timeout=WAIT_MS)
    repaired = window.project.load_annotation(0).mask
    assert (repaired[:4] == 0).all() and (repaired[10:12] == 1).all()
    assert "repaired" in window.statusBar().currentMessage() and window.project.writable


def test_a_garbage_project_file_says_what_is_wrong_and_offers_another_folder(window, dialogs, qtbot, tmp_path,
                                                                              monkeypatch):
    folder = tmp_path / "proj"
    tiny_project(folder, tiny_backbone()).close()
    (folder / "project.json").write_bytes(b"\x00garbage{")
    chosen = []
    monkeypatch.setattr(window, "_choose_project", lambda: chosen.append(True))
    dialogs.answers.append("Open Another Folder…")
    window.open_project(folder)
    title, text, buttons = dialogs[-1]
    assert title == "Cannot open project" and "project.json" in text and "unreadable" in text
    assert "Open Another Folder…" in buttons and chosen == [True]
    assert window.project is None and not (folder / "project.lock").exists()


def folder_bytes(folder):
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_held_project_opens_read_only_and_the_session_writes_nothing(window, dialogs, qtbot, tmp_path):
    backbone = tiny_backbone()
    writer = tiny_project(tmp_path / "proj", backbone)  # another studio holds the lock
    writer.add_annotation(IdentityRef(seed=1), backbone.camera(0.0, 0.0), np.ones((MASK_SIZE, MASK_SIZE), np.uint8))
    save_tiny_branch(writer, backbone)
    before = folder_bytes(tmp_path / "proj")
    dialogs.answers.append("Open Read-Only")
    window.open_project(tmp_path / "proj")
    assert "open read-only" in dialogs[-1][1] and "Open Read-Only" in dialogs[-1][2]
    qtbot.waitUntil(lambda: window.project is not None, timeout=WAIT_MS)
    project = window.project
    assert not project.writable and window._project_label.text() == "Project: proj (read-only)"
    assert "[read-only]" in window.windowTitle() and window.tabs.currentWidget() is window.orbit
    assert window.annotate.editor is None  # no painting
    with pytest.raises(ProjectReadOnlyError):
        project.add_annotation(IdentityRef(seed=2), backbone.camera(0.0, 0.0), np.zeros((MASK_SIZE, MASK_SIZE), np.uint8))
    window.train_semantic_branch()
    assert "read-only" in dialogs[-1][1] and window.train_dialog is None
    window.generate_dataset()
    assert "read-only" in dialogs[-1][1] and window.generate_dialog is None
    # Edit: browse and edit, and the result is exported outside the project, never into it.
    edit = window.edit
    edit.edit_settings.steps, edit.edit_settings.resolution = 2, 16
    with qtbot.waitSignal(edit.view_ready, timeout=WAIT_MS):
        edit.start_from_seed(2_000_000)
    qtbot.waitUntil(lambda: not edit.is_busy(), timeout=WAIT_MS)
    edit.apply_stroke([(8.5, 8.5), (20.5, 8.5)], label=3)
    with qtbot.waitSignal(edit.edit_finished, timeout=60_000):
        edit.run_edit()
    qtbot.waitUntil(lambda: not edit.is_busy(), timeout=WAIT_MS)
    assert edit._save_button.text() == "Export…"
    assert edit.save("inside", export_to=tmp_path / "proj") is None  # refused
    exported = edit.save("e1", export_to=tmp_path / "out")
    assert exported == tmp_path / "out" / "e1" and (exported / "after.png").is_file()
    window.close()
    assert folder_bytes(tmp_path / "proj") == before  # every file, the writer's lock included
    writer.close()


def test_the_last_project_reopens_at_its_identity_and_view(qtbot, tmp_path, dialogs):
    tiny_project(tmp_path / "proj", tiny_backbone()).close()
    first = make_window(qtbot, tmp_path)
    open_in(first, qtbot, tmp_path / "proj")
    first.annotate.set_identity(17)
    first.annotate.set_view(20.0, -5.0)
    first.close()
    assert not (tmp_path / "proj" / "project.lock").exists()
    second = make_window(qtbot, tmp_path)
    second.start()
    qtbot.waitUntil(lambda: second.project is not None, timeout=WAIT_MS)
    assert second.project.folder.resolve() == (tmp_path / "proj").resolve() and second.project.writable
    assert (second.annotate.seed, second.annotate.yaw, second.annotate.pitch) == (17, 20.0, -5.0)
    assert second.annotate.key.identity.seed == 17 and second.tabs.currentWidget() is second.annotate
    second.close()


def test_a_moved_last_project_falls_back_to_the_start_screen_with_a_message(qtbot, tmp_path, dialogs):
    settings = isolated_settings(tmp_path)
    settings.setValue(LAST_SESSION_KEY, '{"folder": "%s", "seed": 3}' % (tmp_path / "gone").as_posix())
    settings.sync()
    window = make_window(qtbot, tmp_path)
    window.start()
    assert "not there any more" in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: window.backbone is not None, timeout=WAIT_MS)
    assert window.project is None and window.tabs.currentWidget() is window.orbit and not dialogs
    window.close_project()  # an explicit close forgets the last session
    assert window.last_session() is None
