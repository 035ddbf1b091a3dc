"""The Edit workspace, offscreen, on a tiny random backbone with an untrained semantic branch."""
import json

import numpy as np
import pytest
import torch
from app_support import backbone, gui_thread_garbage_collection, tiny_project  # noqa: F401 (autouse fixture)

from app.edit import EditWorkspace
from app.semantic import BranchState
from core.editing.inversion import InversionSettings
from core.editing.semantic_edit import EditSettings
from core.semantic import SemanticBranch

WAIT_MS = 60_000


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workspace(qtbot, tmp_path, backbone):
    project = tiny_project(tmp_path / "proj", backbone)
    torch.manual_seed(0)
    branch = SemanticBranch.for_generator(backbone.generator, len(project.label_set.ids)).eval().requires_grad_(False)
    with torch.no_grad():  # an untrained branch's logits are nearly uniform; make them respond to w
        branch.decoder.classifier.weight.mul_(30)
    workspace = EditWorkspace(edit_settings=EditSettings(steps=4, resolution=16),
                              inversion_settings=InversionSettings(start_yaws=(0.0,), random_starts=0, start_steps=1,
                                                                   start_resolution=16, steps=2, resolution=16))
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(1000, 700)
    workspace.show()
    workspace.set_session(backbone, project)
    workspace.set_semantic_branch(BranchState(branch, "test branch"))
    errors = []
    workspace.error.connect(errors.append)
    workspace.errors = errors
    yield workspace
    project.close()


def start(qtbot, workspace, seed=2_000_000):
    with qtbot.waitSignal(workspace.view_ready, timeout=WAIT_MS):
        workspace.start_from_seed(seed)
    qtbot.waitUntil(lambda: not workspace.is_busy(), timeout=WAIT_MS)


def test_paint_run_undo_and_save_an_edit(qtbot, workspace):
    start(qtbot, workspace)
    before_ws = workspace.ws.clone()
    labels = workspace.before[1]
    assert workspace.editor.mask.shape == labels.shape == (32, 32)
    workspace.set_brush_size(6)
    workspace.apply_stroke([(8.5, 8.5), (20.5, 8.5)], label=6)
    assert (workspace.editor.mask != labels).any()
    with qtbot.waitSignal(workspace.edit_finished, timeout=WAIT_MS) as finished:
        workspace.run_edit()
    result = finished.args[0]
    assert not torch.equal(workspace.ws, before_ws) and len(result.history) == 4
    assert workspace.undo_stack and workspace.last_result is result
    qtbot.waitUntil(lambda: not workspace.is_busy(), timeout=WAIT_MS)
    folder = workspace.save("ears")
    assert folder is not None and folder == workspace.project.folder / "edits" / "ears"
    summary = json.loads((folder / "result.json").read_text())
    assert summary["perceptual"] == "ms-ssim+gradients" and (folder / "after.png").is_file()
    assert workspace.save("ears") is None and "already exists" in workspace.errors[-1]
    workspace.undo_edit()
    assert torch.equal(workspace.ws, before_ws) and not workspace.undo_stack


def test_an_unchanged_map_and_a_grey_image_are_refused_plainly(qtbot, workspace, tmp_path):
    from core.fileio import write_png

    start(qtbot, workspace)
    workspace.run_edit()
    assert "identical to the current labels" in workspace.errors[-1]
    grey = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    write_png(tmp_path / "grey.png", grey)
    workspace.invert_image_file(tmp_path / "grey.png")
    assert "grey-scale" in workspace.errors[-1]
    assert not workspace.is_busy()


def test_an_image_is_inverted_and_an_edit_can_be_cancelled(qtbot, workspace):
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with qtbot.waitSignal(workspace.view_ready, timeout=WAIT_MS):
        workspace.invert_image(rgb, "noise.png")
    qtbot.waitUntil(lambda: not workspace.is_busy(), timeout=WAIT_MS)
    assert "inversion of noise.png" in workspace._source_label.text()
    workspace.edit_settings = EditSettings(steps=500, resolution=16)
    workspace.apply_stroke([(4.5, 4.5), (24.5, 24.5)], label=3)
    with qtbot.waitSignal(workspace.edit_finished, timeout=WAIT_MS) as finished:
        workspace.run_edit()
        qtbot.wait(300)
        workspace.cancel()
    assert finished.args[0].stopped and len(finished.args[0].history) < 500


def test_previews_fill_their_panel_and_the_panel_says_what_it_is_doing(qtbot, workspace):
    progress = workspace._progress
    assert progress.value() == progress.minimum() and progress.format() == "Idle"  # empty, not full, when idle
    start(qtbot, workspace)
    assert progress.value() == progress.minimum() and progress.format() == "Idle"
    for size in ((1000, 700), (700, 1000)):  # wide and tall windows: the squares stay as large as fits
        workspace.resize(*size)
        qtbot.waitUntil(lambda: workspace.compare_views.size().width() > 0)
        qtbot.wait(50)
        width, height = workspace.compare_views.width(), workspace.compare_views.height()
        biggest = max(min(width / 2, height), min(width, height / 2))
        for canvas in (workspace.compare_views.layout().itemAt(i).widget() for i in range(2)):
            assert min(canvas.width(), canvas.height()) >= 0.9 * biggest
    for view_box in workspace._compare_boxes:  # the whole render in view
        (x0, x1), (y0, y1) = view_box.viewRange()
        assert x0 <= 0.5 and y0 <= 0.5 and x1 >= 31.5 and y1 >= 31.5
    workspace._yaw_slider.setValue(30)
    assert workspace._yaw_label.text() == "Yaw +30°"
    workspace._yaw_slider.setValue(-45)
    assert workspace._yaw_label.text() == "Yaw -45°"
    workspace.apply_stroke([(8.5, 8.5), (20.5, 8.5)], label=6)
    previews = []
    workspace._relay.report.connect(lambda report: previews.append(workspace._after_item.mapRectToParent(
        workspace._after_item.boundingRect())) if report.preview_rgb is not None else None)
    with qtbot.waitSignal(workspace.edit_finished, timeout=WAIT_MS):
        workspace.run_edit()
    qtbot.waitUntil(lambda: not workspace.is_busy(), timeout=WAIT_MS)
    assert previews and all(rect.width() == rect.height() == 32 for rect in previews)  # 16² previews fill the view
    assert workspace._done_label.text().startswith("Edit done in")
    assert progress.value() == progress.minimum() and progress.format() == "Idle"


def test_edit_shortcuts_fire_whichever_child_has_the_focus(qtbot, workspace):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    start(qtbot, workspace)
    workspace.activateWindow()
    qtbot.waitUntil(lambda: workspace.isActiveWindow(), timeout=5000)
    workspace._palette.setFocus(Qt.OtherFocusReason)  # the label list, as a click would leave it
    qtbot.waitUntil(lambda: workspace.focusWidget() is not None)
    focused = workspace.focusWidget()
    size = workspace.brush_size
    QTest.keyClick(focused, Qt.Key_BracketRight)
    assert workspace.brush_size == size + 1
    QTest.keyClick(focused, Qt.Key_F)
    assert workspace.tool == "fill"
    QTest.keyClick(focused, Qt.Key_2)
    assert workspace._palette.current_label() == workspace._palette.label_ids[2]
    workspace._run_button.setFocus(Qt.OtherFocusReason)
    QTest.keyClick(workspace._run_button, Qt.Key_BracketLeft)
    assert workspace.brush_size == size
