"""The Annotate workspace, offscreen, on a tiny random backbone."""
import numpy as np
import pytest
from app_support import backbone, gui_thread_garbage_collection, MASK_SIZE, tiny_project  # noqa: F401 (autouse fixture)
from PySide6.QtCore import QPoint, Qt

from app.annotate import AnnotateWorkspace
from core.project import UNLABELLED_ID, Project


@pytest.fixture
def workspace(qtbot, tmp_path, backbone):
    project = tiny_project(tmp_path / "proj", backbone)
    workspace = AnnotateWorkspace()
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(1100, 760)  # about the studio window's workspace area (1280 x 820)
    workspace.show()
    workspace.set_session(backbone, project)
    yield workspace  # qtbot shuts it down (threads, autosave) before closing it
    project.close()


def stored_mask(workspace) -> np.ndarray:
    annotation_id = workspace.autosaver.annotation_id(workspace.key)
    return Project.open(workspace.project.folder).load_annotation(annotation_id).mask


def test_stroke_changes_the_mask_and_undo_restores_it_byte_for_byte(workspace):
    before = workspace.editor.mask.tobytes()
    workspace.apply_stroke([(4.5, 4.5), (20.5, 4.5), (20.5, 12.5)], label=3)
    painted = workspace.editor.mask.copy()
    assert (painted == 3).sum() > 30 and painted[4, 10] == 3
    workspace.undo()
    assert workspace.editor.mask.tobytes() == before
    workspace.redo()
    assert workspace.editor.mask.tobytes() == painted.tobytes()


def test_every_committed_stroke_is_on_disk(workspace):
    workspace.apply_stroke([(2.5, 2.5), (9.5, 2.5)], label=2)
    assert workspace.flush()
    assert stored_mask(workspace).tobytes() == workspace.editor.mask.tobytes()
    workspace.undo()  # undo is a committed change too
    assert workspace.flush()
    assert (stored_mask(workspace) == UNLABELLED_ID).all()


def test_fill_erase_and_pick_tools(workspace):
    workspace.apply_stroke([(0.5, 10.5), (31.5, 10.5)], label=1)  # a wall across the mask
    workspace.set_label(5)
    workspace.set_tool("fill")
    workspace.click_at(3.5, 3.5)
    assert (workspace.editor.mask[:8] == 5).all() and (workspace.editor.mask[13:] == UNLABELLED_ID).all()
    workspace.set_tool("erase")
    workspace.click_at(3.5, 3.5)
    assert workspace.editor.mask[3, 3] == UNLABELLED_ID  # erasing makes a pixel unlabelled again
    workspace.set_tool("pick")
    workspace.click_at(16.5, 10.5)
    assert workspace.label == 1 and workspace.tool == "paint"


def test_a_mouse_drag_on_the_canvas_paints_one_undo_step(workspace, qtbot):
    workspace.set_label(4)
    viewport = workspace.canvas.viewport()
    centre = workspace.view_box.mapViewToScene(workspace.view_box.mapToView(workspace.view_box.boundingRect().center()))
    start = workspace.canvas.mapFromScene(centre)
    qtbot.mousePress(viewport, Qt.LeftButton, pos=start)
    for step in range(1, 8):
        qtbot.mouseMove(viewport, start + QPoint(step * 6, 0))
    qtbot.mouseRelease(viewport, Qt.LeftButton, pos=start + QPoint(42, 0))
    assert (workspace.editor.mask == 4).sum() > 0
    assert workspace.editor.undo_depth == 1


def test_views_keep_their_own_masks_and_history(workspace):
    workspace.apply_stroke([(8.5, 8.5)], label=2)
    first = workspace.editor.mask.copy()
    workspace.next_identity()
    assert (workspace.editor.mask == UNLABELLED_ID).all()
    workspace.set_view(30, 0)
    assert workspace.key.camera.yaw == 30
    workspace.set_identity(workspace.seed - 1)
    workspace.set_view(0, 0)
    assert workspace.editor.mask.tobytes() == first.tobytes() and workspace.editor.can_undo


def test_reopening_the_project_shows_the_work(qtbot, backbone, workspace):
    workspace.apply_stroke([(5.5, 5.5), (25.5, 25.5)], label=6)
    painted = workspace.editor.mask.copy()
    project = workspace.project
    workspace.clear_session()  # what closing the project does: write what is pending
    project.close()
    reopened = AnnotateWorkspace()
    qtbot.addWidget(reopened, before_close_func=lambda w: w.shutdown())
    with Project.open(project.folder, writable=True) as again:
        reopened.set_session(backbone, again)
        assert reopened.editor.mask.tobytes() == painted.tobytes()
        assert reopened.autosaver.annotation_id(reopened.key) == 0
        reopened.clear_session()  # before the project closes: pending writes go first


def test_a_read_only_project_shows_a_note_instead_of_a_canvas(qtbot, backbone, workspace):
    reader = AnnotateWorkspace()
    qtbot.addWidget(reader, before_close_func=lambda w: w.shutdown())
    reader.set_session(backbone, Project.open(workspace.project.folder))
    assert reader.editor is None and reader._pages.currentIndex() == 0


def test_shortcuts_select_labels_tools_and_brush(workspace, qtbot):
    shortcuts = workspace.shortcuts
    shortcuts["3"].activated.emit()
    assert workspace.label == workspace.project.label_set.ids[3]
    shortcuts["E"].activated.emit()
    assert workspace.tool == "erase"
    shortcuts["F"].activated.emit()
    assert workspace.tool == "fill"
    size = workspace.brush_size
    shortcuts["]"].activated.emit()
    assert workspace.brush_size == size + 1
    shortcuts["["].activated.emit()
    shortcuts["["].activated.emit()
    assert workspace.brush_size == size - 1
    seed = workspace.seed
    shortcuts["PgDown"].activated.emit()
    assert workspace.seed == seed + 1
    shortcuts["P"].activated.emit()
    assert workspace.seed == seed
    expected = {"B", "E", "F", "I", "[", "]", "Ctrl+Z", "Ctrl+Shift+Z", "N", "P", "PgUp", "PgDown", *"0123456789"}
    assert expected <= set(shortcuts)


def test_counts_follow_the_saved_masks(workspace, qtbot):
    workspace.apply_stroke([(16.5, 16.5)], label=7)
    qtbot.waitUntil(lambda: 7 in {k for c in workspace._stored_counts.values() for k in c}, timeout=5000)
    assert "1 annotated view(s): 1 used for training" in workspace._counts_label.text()
    row = workspace.project.label_set.ids.index(7)
    assert workspace._labels_table.item(row, 2).text() == f"{(workspace.editor.mask == 7).sum():,}"
    assert workspace._labels_table.item(row, 3).text() == f"{(workspace.editor.mask == 7).sum():,}"


def test_the_rendered_view_fills_the_mask_square(workspace, qtbot):
    qtbot.waitUntil(lambda: workspace._image_item.image is not None, timeout=10000)
    assert workspace._image_item.boundingRect().width() > 0
    assert workspace._image_item.mapRectToParent(workspace._image_item.boundingRect()).width() == pytest.approx(MASK_SIZE)


def test_a_new_view_starts_unlabelled_and_the_counts_show_it(workspace, qtbot):
    from app.widgets import label_lut

    assert (workspace.editor.mask == UNLABELLED_ID).all()
    workspace.apply_stroke([(16.5, 16.5)], label=0)  # painted background is a label like the others
    qtbot.waitUntil(lambda: bool(workspace._stored_counts), timeout=5000)
    table = workspace._labels_table
    rows = {table.item(row, 1).text(): row for row in range(table.rowCount())}
    unlabelled_row = rows["unlabelled"]
    painted = int((workspace.editor.mask == 0).sum())
    assert painted > 0
    assert table.item(unlabelled_row, 2).text() == f"{MASK_SIZE ** 2 - painted:,}"
    assert table.item(rows["background"], 2).text() == f"{painted:,}"
    lut = label_lut(workspace.project.label_set, show_background=True)
    assert lut[UNLABELLED_ID, 3] == 0 and lut[0, 3] == 255  # unlabelled clear, painted background drawn


def test_annotate_and_train_count_alike(workspace, qtbot, backbone):
    from app.training import TrainDialog
    from core.semantic.annotations import NOTHING_PAINTED

    workspace.apply_stroke([(4.5, 4.5)], label=3)
    workspace.next_identity()
    workspace.apply_stroke([(4.5, 4.5)], label=3)
    workspace.undo()  # saved again: all unlabelled, so nothing to learn from
    assert workspace.flush()
    qtbot.waitUntil(lambda: len(workspace._skip_reasons) == 2, timeout=5000)
    workspace._drain_save_events()
    text = workspace._counts_label.text()
    assert f"2 annotated view(s): 1 used for training, 1 skipped (0001: {NOTHING_PAINTED})" in text
    assert "this view is annotated but skipped by training" in text
    dialog = TrainDialog(workspace.project, backbone)
    qtbot.addWidget(dialog)
    assert dialog.refresh_inventory() == workspace.training_inventory()
    assert f"1 skipped (0001: {NOTHING_PAINTED})" in dialog._inventory_label.text()


def test_the_label_set_dialog_marks_a_label_ignore(qtbot):
    from PySide6.QtCore import Qt

    from app.dialogs import LabelSetTable
    from core.project import default_label_set

    table = LabelSetTable(default_label_set())
    qtbot.addWidget(table)
    neck_row = default_label_set().ids.index(11)
    table._table.item(neck_row, 3).setCheckState(Qt.Checked)
    assert table.label_set().ignored_ids == [11]


def test_undo_survives_moving_to_another_identity_and_view_and_back(workspace):
    shortcuts = workspace.shortcuts
    workspace.apply_stroke([(8.5, 8.5), (20.5, 8.5)], label=2)
    first_key = workspace.key
    shortcuts["N"].activated.emit()  # another identity
    workspace.apply_stroke([(4.5, 4.5)], label=5)
    workspace.set_view(-30, 0)  # another view of it
    workspace.apply_stroke([(6.5, 6.5)], label=6)
    shortcuts["P"].activated.emit()  # back to the first identity, still at yaw -30: a new view
    assert (workspace.editor.mask == UNLABELLED_ID).all() and not workspace.editor.can_undo
    workspace.set_view(0, 0)
    assert workspace.key == first_key and workspace._undo_button.isEnabled()
    shortcuts["Ctrl+Z"].activated.emit()
    assert (workspace.editor.mask == UNLABELLED_ID).all()
    assert workspace.flush() and (stored_mask(workspace) == UNLABELLED_ID).all()  # the undo is saved
    shortcuts["Ctrl+Shift+Z"].activated.emit()
    assert (workspace.editor.mask == 2).sum() > 0
    shortcuts["N"].activated.emit()
    workspace.set_view(-30, 0)
    shortcuts["Ctrl+Z"].activated.emit()
    assert (workspace.editor.mask == UNLABELLED_ID).all()


def test_undo_history_is_bounded_in_memory(workspace, monkeypatch):
    mask_bytes = MASK_SIZE * MASK_SIZE
    monkeypatch.setattr("app.annotate.HISTORY_BUDGET_BYTES", 4 * mask_bytes)
    painted = []
    for view in range(8):
        workspace.set_identity(1_000_000 + view)
        workspace.apply_stroke([(0.5, 16.5), (31.5, 16.5)], label=3)
        painted.append(workspace.editor.mask.copy())
        assert workspace.history_nbytes() <= 4 * mask_bytes
    assert len(workspace._editors) < 8
    workspace.set_identity(1_000_000)  # the oldest view: its history was forgotten, its mask was not
    assert np.array_equal(workspace.editor.mask, painted[0]) and not workspace.editor.can_undo
    workspace.set_identity(1_000_007)  # the view visited just before kept its history
    assert workspace.editor.can_undo


def test_every_label_shows_and_has_a_key_or_the_picker(workspace, qtbot):
    label_set = workspace.project.label_set
    table = workspace._labels_table
    assert table.rowCount() == len(label_set) + 1  # and the unlabelled row
    # The whole set is visible at once: every row lies inside the table's viewport.
    qtbot.waitUntil(lambda: table.viewport().height() > 0)
    last = table.visualItemRect(table.item(table.rowCount() - 1, 1))
    assert last.bottom() <= table.viewport().height(), (last, table.viewport().height())
    keys = [table.item(row, 0).text() for row in range(len(label_set))]
    assert keys[:10] == [str(d) for d in range(10)] and keys[10:12] == ["Alt+0", "Alt+1"]
    workspace.shortcuts["Alt+1"].activated.emit()  # neck, the 12th label
    assert workspace.label == 11 and "neck" in workspace._brush_label.text()
    picker = workspace._label_picker
    for text, expected in (("mouth", 10), ("MOU", 10), ("8", 8), ("9 nose", 9)):
        picker.setText(text)
        picker.returnPressed.emit()
        assert workspace.label == expected and picker.text() == ""
    picker.setText("ear")  # four labels contain it: nothing picked, the text stays to refine
    picker.returnPressed.emit()
    assert workspace.label == 9 and picker.text() == "ear"
    table.label_clicked.emit(3)
    assert workspace.label == 3
    table.label_clicked.emit(UNLABELLED_ID)  # the unlabelled row is the eraser
    assert workspace.tool == "erase"


def test_the_legend_names_the_colours_painted_in_this_view(workspace):
    workspace.apply_stroke([(4.5, 4.5)], label=10)
    workspace.apply_stroke([(20.5, 20.5)], label=0)
    assert workspace._legend.entries == ["background", "mouth"]
    workspace.undo()
    workspace.undo()
    assert workspace._legend.entries == []  # only unlabelled pixels: nothing coloured to explain


def test_the_canvas_shows_a_sharp_view_and_says_which(qtbot, tmp_path, monkeypatch):
    from app.annotate import sharp_view_resolution
    from core.backbone import Backbone
    from core.generator.configs import tiny_config
    from core.generator.triplane import TriPlaneGenerator

    # No super-resolution, as the embedded default: a second, sharper render follows the refined one.
    plain = Backbone(TriPlaneGenerator.from_config(tiny_config(neural_resolution=16)), "plain", "plain-hash")
    monkeypatch.setattr("app.annotate.SHARP_NEURAL_RESOLUTION", {"cpu": 48})
    assert sharp_view_resolution(plain) == 48
    project = tiny_project(tmp_path / "plain", plain)
    workspace = AnnotateWorkspace()
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(1100, 760)
    workspace.show()
    workspace.set_session(plain, project)
    qtbot.waitUntil(lambda: workspace.last_frame is not None and workspace.last_frame.rgb.shape[0] == 48,
                    timeout=20000)
    assert "neural resolution 48²" in workspace._shown_resolution.text()
    assert f"mask: {MASK_SIZE}²" in workspace._shown_resolution.text()
    assert workspace.editor.mask.shape == (MASK_SIZE, MASK_SIZE)  # stored at the project's size
    shown = workspace._image_item.mapRectToParent(workspace._image_item.boundingRect())
    assert shown.width() == pytest.approx(MASK_SIZE)  # the sharp frame covers the mask's square
    workspace.apply_stroke([(4.5, 4.5)], label=3)
    assert workspace.flush() and stored_mask(workspace).shape == (MASK_SIZE, MASK_SIZE)
    workspace.clear_session()
    project.close()


def test_a_backbone_with_super_resolution_shows_its_own_output():
    from app.annotate import sharp_view_resolution
    from core.backbone import Backbone
    from core.generator.configs import tiny_config
    from core.generator.triplane import TriPlaneGenerator

    with_sr = Backbone(TriPlaneGenerator.from_config(tiny_config(superresolution=True)), "sr", "sr-hash")
    assert with_sr.generator.img_resolution > with_sr.generator.neural_rendering_resolution
    assert sharp_view_resolution(with_sr) is None  # its refined frame is its super-resolved output


def test_shortcuts_work_while_a_number_box_has_focus(workspace, qtbot):
    """Typing a seed moves to another identity and back; Ctrl+Z must still undo the stroke."""
    from PySide6.QtTest import QTest

    workspace.activateWindow()
    qtbot.waitUntil(workspace.isActiveWindow, timeout=5000)
    handle = workspace.windowHandle()  # key events as the window system delivers them: shortcuts apply
    workspace.apply_stroke([(8.5, 8.5), (20.5, 8.5)], label=2)
    seed = workspace.seed
    spin = workspace._seed_spin
    for target in (seed + 1, seed):
        spin.setFocus()
        spin.lineEdit().selectAll()
        for character in str(target):
            QTest.keyClick(handle, character)
        QTest.keyClick(handle, Qt.Key_Return)
        assert workspace.seed == target
        assert workspace.canvas.hasFocus()  # Enter hands the keys back to painting
    spin.setFocus()
    QTest.keyClick(handle, Qt.Key_Z, Qt.ControlModifier)
    assert (workspace.editor.mask == UNLABELLED_ID).all()  # the stroke's undo, not the box's text undo
    QTest.keyClick(handle, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert (workspace.editor.mask == 2).sum() > 0
    QTest.keyClick(handle, Qt.Key_N)  # a number box can never take N: it is the next identity
    assert workspace.seed == seed + 1
