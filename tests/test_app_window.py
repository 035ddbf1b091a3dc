"""The main window: sessions, errors as message boxes, recent projects, the command line."""
import subprocess
import sys
from pathlib import Path

import pytest
from app_support import gui_thread_garbage_collection, isolated_settings, tiny_backbone, tiny_project  # noqa: F401 (autouse fixture)
from PySide6.QtWidgets import QMessageBox

import app.main_window as main_window_module
from app.errors import install_excepthook
from app.main_window import MainWindow
from core.backbone import BackboneError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def messages(monkeypatch):
    """Every message box the studio would show, as (title, text); none is ever opened."""
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a, **k: shown.append((title, text)))
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append((box.windowTitle(), box.text())))
    return shown


@pytest.fixture
def window(qtbot, tmp_path, messages):
    window = MainWindow(settings=isolated_settings(tmp_path), device="cpu")
    qtbot.addWidget(window)
    window.show()
    return window  # qtbot closes it after the test (closeEvent shuts the workers down)


def test_status_bar_tabs_and_plain_edit_placeholder(window):
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == ["Annotate", "Orbit", "Edit"]
    assert type(window.edit).__name__ == "EditWorkspace"  # the Edit workspace replaced its placeholder
    assert window._device_label.text() == "CPU"
    assert window._backbone_label.text() == "No backbone"


def test_session_reaches_both_workspaces_and_recent_projects(window, tmp_path, qtbot):
    backbone = tiny_backbone()
    project = tiny_project(tmp_path / "proj", backbone)
    window.use_session(backbone, project)
    assert window.annotate.editor is not None and window.orbit.backbone is backbone
    assert window._backbone_label.text() == "Backbone: tiny"
    assert window.recent_projects() == [str((tmp_path / "proj").resolve())]
    window.annotate.apply_stroke([(3.5, 3.5)], label=2)
    window.save()
    assert project.annotation_ids() == [0]
    window.close_project()
    assert not project.writable and window.annotate.editor is None


def test_opening_a_missing_project_shows_a_message(window, messages, tmp_path):
    window.open_project(tmp_path / "nowhere")
    assert messages and "not a studio project" in messages[-1][1]


def test_a_project_whose_backbone_fails_to_load_shows_a_message(window, messages, tmp_path, qtbot):
    backbone = tiny_backbone()
    tiny_project(tmp_path / "proj", backbone).close()  # its backbone file does not exist
    window.open_project(tmp_path / "proj")
    qtbot.waitUntil(lambda: bool(messages), timeout=10000)
    assert "could not load its backbone" in messages[-1][1]
    assert window.project is None


def test_missing_default_backbone_offers_to_open_a_file(window, messages, monkeypatch, qtbot):
    def missing(spec, device):
        raise BackboneError("the embedded default backbone is missing (resources/default_backbone.safetensors)")

    monkeypatch.setattr(main_window_module, "load_backbone", missing)
    window.start()
    qtbot.waitUntil(lambda: bool(messages), timeout=10000)
    title, text = messages[-1]
    assert title == "No backbone" and "default backbone is missing" in text
    assert window.isVisible()


def test_render_errors_show_a_message_once(window, messages, qtbot):
    class BrokenBackbone:
        name = "broken"

        class generator:
            neural_rendering_resolution = 16

        def identity_from_seed(self, *args):
            raise BackboneError("weights are damaged")

    window.use_session(BrokenBackbone(), None)
    qtbot.waitUntil(lambda: bool(messages), timeout=10000)
    window.orbit.set_seed(3)
    qtbot.wait(300)
    assert [text for _, text in messages].count(messages[0][1]) == 1
    assert "weights are damaged" in messages[0][1]


def test_uncaught_exceptions_become_message_boxes(window, messages, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    install_excepthook()
    try:
        raise ZeroDivisionError("a bug in a slot")
    except ZeroDivisionError:
        sys.excepthook(*sys.exc_info())
    assert messages[-1][0] == "Unexpected error" and "ZeroDivisionError: a bug in a slot" in messages[-1][1]


def test_main_py_help_still_runs_the_command_line():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "render" in result.stdout


@pytest.fixture(scope="module")
def tiny_backbone_file(tmp_path_factory):
    from core.checkpoint.studio_format import save_generator

    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    save_generator(tiny_backbone().generator, path)
    return path


def test_new_project_dialog_validates_and_edits_labels(qtbot, tmp_path, tiny_backbone_file):
    from app.dialogs import NewProjectDialog

    dialog = NewProjectDialog()
    qtbot.addWidget(dialog)
    dialog.accept()  # no folder yet: stays open and says why
    assert dialog.choice is None and "folder" in dialog._problem.text()
    dialog._folder.setText(str(tmp_path / "new"))
    dialog._file_backbone.setChecked(True)
    dialog._backbone_path.setText(str(tiny_backbone_file))
    dialog._labels._table.item(1, 1).setText("skull")
    dialog._resolution.setValue(64)
    dialog.accept()
    choice = dialog.choice
    assert choice.backbone == str(tiny_backbone_file) and choice.settings == {"annotation_resolution": 64}
    assert choice.label_set.by_id(1).name == "skull"


def test_create_then_reopen_a_project_from_the_window(window, tmp_path, tiny_backbone_file, qtbot, messages):
    from app.dialogs import NewProjectChoice
    from core.project import default_label_set

    folder = tmp_path / "made"
    choice = NewProjectChoice(folder, str(tiny_backbone_file), default_label_set(), {"annotation_resolution": 32})
    window.create_project(choice)
    qtbot.waitUntil(lambda: window.project is not None, timeout=20000)
    assert window.tabs.currentWidget() is window.annotate and not messages
    window.annotate.apply_stroke([(4.5, 4.5), (12.5, 4.5)], label=3)
    painted = window.annotate.editor.mask.copy()
    window.close_project()
    window.open_project(folder)
    qtbot.waitUntil(lambda: window.project is not None, timeout=20000)
    assert window.annotate.editor.mask.tobytes() == painted.tobytes()
    assert window.recent_projects()[0] == str(folder.resolve())


def test_a_project_open_elsewhere_is_refused_with_a_message(window, tmp_path, messages):
    backbone = tiny_backbone()
    with tiny_project(tmp_path / "busy", backbone):  # holds the writer lock
        window.open_project(tmp_path / "busy")
    assert "open for writing by" in messages[-1][1]


def test_shortcuts_are_listed_under_help(window, messages):
    window.show_shortcuts()
    title, text = messages[-1]
    assert title == "Keyboard shortcuts" and "Ctrl+Shift+Z" in text and "PageDown" in text


def test_missing_xcb_libraries_are_named_before_qt_aborts():
    from app.studio import XCB_LIBRARIES, missing_xcb_packages

    none_found = lambda library: None  # noqa: E731
    everything = lambda library: f"lib{library}.so"  # noqa: E731
    if sys.platform.startswith("linux"):
        assert missing_xcb_packages({}, none_found) == list(XCB_LIBRARIES.values())
        assert missing_xcb_packages({"QT_QPA_PLATFORM": "xcb"}, none_found) == list(XCB_LIBRARIES.values())
    assert missing_xcb_packages({}, everything) == []
    assert missing_xcb_packages({"QT_QPA_PLATFORM": "offscreen"}, none_found) == []  # Qt will not load xcb
    assert missing_xcb_packages({"WAYLAND_DISPLAY": "wayland-0"}, none_found) == []
