"""Labels and Blend modes in Orbit, and "prefill" in Annotate, from the project's semantic branch."""
import numpy as np
import pytest
import torch
from app_support import backbone, project, gui_thread_garbage_collection, MASK_SIZE, save_tiny_branch  # noqa: F401

from app.annotate import AnnotateWorkspace
from app.orbit import OrbitWorkspace
from app.rendering import ViewRequest, predict_mask, render_frame, shows_on_grey
from app.semantic import blend_labels, colour_labels, load_project_branch, semantic_folder


def test_branch_state_says_what_is_missing_and_loads_the_newest(project, backbone):
    assert "open or create a project" in load_project_branch(None, backbone).note
    assert "no trained semantic branch" in load_project_branch(project, backbone).note
    save_tiny_branch(project, backbone, step=3)
    save_tiny_branch(project, backbone, step=12)
    state = load_project_branch(project, backbone)
    assert state.branch is not None and state.step == 12 and "step 12" in state.note
    (semantic_folder(project) / "semantic-step0000020.safetensors").write_bytes(b"not a checkpoint")
    broken = load_project_branch(project, backbone)
    assert broken.branch is None and "semantic-step0000020" in broken.note


def test_a_frame_with_labels_reuses_the_render_and_matches_labels_for_view(project, backbone):
    branch = save_tiny_branch(project, backbone)
    frame = render_frame(backbone, ViewRequest(seed=4, labels=True), branch=branch)
    assert frame.labels is not None and frame.labels.dtype == np.uint8
    assert frame.labels.shape == (backbone.generator.img_resolution,) * 2
    alone = predict_mask(backbone, branch, 4, 1.0, backbone.camera(), backbone.generator.img_resolution)
    assert np.array_equal(frame.labels, alone)
    assert render_frame(backbone, ViewRequest(seed=4), branch=branch).labels is None  # not asked for


def test_studio_fits_are_shown_on_grey_official_composites_are_not(backbone):
    assert shows_on_grey(backbone)  # no super-resolution module: a core.fitting-style backbone
    frame = render_frame(backbone, ViewRequest(seed=4))
    view = backbone.render(backbone.identity_from_seed(4), backbone.camera(), return_samples=True)
    alpha = view.samples["weights"].sum(2).reshape(1, 1, *view.image.shape[-2:])
    on_black = ((view.image[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).numpy()
    expected = on_black + 127.5 * (1 - alpha[0, 0, ..., None].numpy())  # the uncovered share is grey
    assert np.abs(frame.rgb.astype(float) - expected).max() <= 1.0


def test_blend_tints_only_labelled_pixels():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    labels = np.zeros((2, 2), np.uint8)
    labels[0, 0] = 2
    palette = np.array([[0, 0, 0], [0, 255, 0], [200, 0, 0]], np.uint8)
    blended = blend_labels(rgb, labels, palette, opacity=0.5)
    assert (blended[:2, :2] == [150, 50, 50]).all() and (blended[2:, 2:] == 100).all()
    assert (colour_labels(np.array([[2, 9]], np.uint8), palette) == [[[200, 0, 0], [0, 0, 0]]]).all()


@pytest.fixture
def orbit(qtbot, backbone, project):
    workspace = OrbitWorkspace()
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(800, 600)
    workspace.show()
    workspace.set_session(backbone, project)
    return workspace


def test_labels_and_blend_modes_show_the_branch(orbit, qtbot, backbone, project):
    orbit.set_semantic_branch(load_project_branch(project, backbone))
    assert not orbit._mode_buttons["Labels"].isEnabled()  # no branch trained yet
    save_tiny_branch(project, backbone)
    orbit.set_semantic_branch(load_project_branch(project, backbone))
    assert orbit._mode_buttons["Labels"].isEnabled() and orbit._mode_buttons["Blend"].isEnabled()
    orbit._mode_buttons["Labels"].click()  # as the user does
    assert orbit.mode == "Labels"
    qtbot.waitUntil(lambda: orbit.last_frame is not None and orbit.last_frame.labels is not None
                    and not orbit.last_frame.coarse, timeout=20000)
    shown = orbit._image_item.image
    assert np.array_equal(shown, colour_labels(orbit.last_frame.labels, project.label_set.palette()))
    present = set(np.unique(orbit.last_frame.labels).tolist())
    names = [label.name for label in project.label_set.labels if label.id in present]
    assert orbit.legend.isVisible() and orbit.legend.entries == names  # what the colours mean
    orbit.set_mode("Blend")
    assert orbit._image_item.image.shape == orbit.last_frame.rgb.shape
    assert orbit.legend.isVisible() and orbit.legend.entries == names
    orbit.set_mode("RGB")
    assert not orbit.legend.isVisible()
    orbit.set_semantic_branch(load_project_branch(None, backbone))  # project closed: back to RGB
    assert orbit.mode == "RGB" and not orbit._mode_buttons["Blend"].isEnabled()


@pytest.fixture
def annotate(qtbot, backbone, project):
    workspace = AnnotateWorkspace()
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(900, 700)
    workspace.show()
    workspace.set_session(backbone, project)
    return workspace


def test_prefill_fills_the_view_as_one_undoable_saved_step(annotate, qtbot, backbone, project):
    assert not annotate._prefill_button.isEnabled()
    save_tiny_branch(project, backbone)
    state = load_project_branch(project, backbone)
    annotate.set_semantic_branch(state)
    assert annotate._prefill_button.isEnabled()
    annotate.apply_stroke([(2.5, 2.5), (9.5, 2.5)], label=2)
    painted = annotate.editor.mask.copy()
    annotate.prefill_from_branch()
    qtbot.waitUntil(lambda: not np.array_equal(annotate.editor.mask, painted), timeout=20000)
    expected = predict_mask(backbone, state.branch, annotate.seed, 1.0, backbone.camera(), MASK_SIZE)
    assert np.array_equal(annotate.editor.mask, expected)
    assert annotate.flush()
    annotation_id = annotate.autosaver.annotation_id(annotate.key)
    assert np.array_equal(project.load_annotation(annotation_id).mask, expected)
    annotate.undo()  # the whole prefill is one step
    assert annotate.editor.mask.tobytes() == painted.tobytes()


def test_prefill_failure_is_reported(annotate, qtbot, backbone, project, monkeypatch):
    save_tiny_branch(project, backbone)
    annotate.set_semantic_branch(load_project_branch(project, backbone))

    def broken(*args):
        raise torch.cuda.OutOfMemoryError("no memory left")

    monkeypatch.setattr("app.annotate.predict_mask", broken)
    with qtbot.waitSignal(annotate.error, timeout=5000) as signal:
        annotate.prefill_from_branch()
    assert "Prefill failed" in signal.args[0] and "no memory" in signal.args[0]


def test_skipping_empty_space_shows_the_same_frame(project, backbone):
    branch = save_tiny_branch(project, backbone)
    request = ViewRequest(seed=6, yaw=20.0, labels=True)
    plain = render_frame(backbone, request, branch=branch, skip_empty_space=False)
    culled = render_frame(backbone, request, branch=branch, skip_empty_space=True)
    assert np.abs(plain.rgb.astype(int) - culled.rgb.astype(int)).max() <= 1
    assert np.abs(plain.depth.astype(int) - culled.depth.astype(int)).max() <= 1
    assert np.mean(plain.labels == culled.labels) > 0.99


def test_a_prefill_that_changes_nothing_says_so(annotate, qtbot, backbone, project):
    save_tiny_branch(project, backbone)
    state = load_project_branch(project, backbone)
    annotate.set_semantic_branch(state)
    messages = []
    annotate.status_message.connect(messages.append)
    expected = predict_mask(backbone, state.branch, annotate.seed, 1.0, backbone.camera(), MASK_SIZE)
    annotate.apply_prefill(expected)
    assert "pixels changed" in messages[-1] and annotate.editor.undo_depth == 1
    annotate.apply_prefill(expected)  # the same labels again: no new undo step, and the user is told
    assert "changed nothing" in messages[-1] and annotate.editor.undo_depth == 1
