"""The render worker (latest request wins, coarse then refined) and the Orbit workspace."""
import threading
import time

import numpy as np
import pytest
from app_support import gui_thread_garbage_collection, FAST_NEURAL_RESOLUTION, tiny_backbone  # noqa: F401 (autouse fixture)

from app.orbit import OrbitWorkspace
from app.rendering import Frame, ViewRequest
from app.workers import RenderClient


class SlowRenderer:
    """Stands in for the backbone: takes a while per frame and records what it rendered."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.rendered: list[ViewRequest] = []
        self.started: list[ViewRequest] = []
        self.on_thread: set[str] = set()

    def __call__(self, backbone, request, request_id, coarse, branch=None):
        self.on_thread.add(threading.current_thread().name)
        self.started.append(request)
        time.sleep(self.seconds)
        self.rendered.append(request)
        size = request.neural_resolution or 64
        return Frame(request, request_id, coarse, np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8), self.seconds)


class FakeGenerator:
    neural_rendering_resolution = 128


class FakeBackbone:
    generator = FakeGenerator()


@pytest.fixture
def client(qtbot):
    renderer = SlowRenderer()
    client = RenderClient(refine_delay_ms=100, coarse_resolution=32, render=renderer)
    client.set_backbone(FakeBackbone())
    shown = []
    client.frame_ready.connect(shown.append)
    yield client, renderer, shown
    client.shutdown()


def test_twenty_quick_requests_coalesce_and_the_last_one_is_shown(client, qtbot):
    client, renderer, shown = client
    for seed in range(20):
        client.request(ViewRequest(seed=seed))
    qtbot.waitUntil(lambda: bool(shown) and shown[-1].request.seed == 19, timeout=5000)
    qtbot.wait(150)  # nothing else arrives afterwards
    assert len(renderer.rendered) <= 3, [r.seed for r in renderer.rendered]
    assert shown[-1].request.seed == 19 and not shown[-1].coarse
    assert [frame.request_id for frame in shown] == sorted(frame.request_id for frame in shown)
    assert threading.main_thread().name not in renderer.on_thread  # the GUI thread never renders


def test_dragging_renders_coarse_then_refined_at_rest(client, qtbot):
    client, renderer, shown = client
    for step in range(5):
        client.request(ViewRequest(seed=1, yaw=step * 2.0), interactive=True)
        qtbot.wait(10)
    qtbot.waitUntil(lambda: bool(shown) and not shown[-1].coarse, timeout=5000)
    drag = [frame for frame in shown if frame.coarse and frame.request.neural_resolution == 32]
    assert drag and all(frame.request.samples_per_ray == (12, 12) for frame in drag)
    # At rest: one sharp preview (64², every sample), then one refined frame, both of the last view.
    rest = [(r.neural_resolution, r.samples_per_ray) for r in renderer.rendered if r.neural_resolution != 32]
    assert rest == [(64, None), (None, None)]
    assert [frame.request.neural_resolution for frame in shown[-2:]] == [64, None]
    assert shown[-1].request.yaw == 8.0 and shown[-2].request.yaw == 8.0


def test_a_new_drag_during_the_rest_preview_cancels_the_refined_frame(client, qtbot):
    client, renderer, shown = client
    client.request(ViewRequest(seed=1, yaw=1.0), interactive=True)
    qtbot.waitUntil(lambda: any(r.neural_resolution == 64 for r in renderer.started), timeout=5000)
    client.request(ViewRequest(seed=1, yaw=2.0), interactive=True)  # the drag goes on mid-preview
    qtbot.waitUntil(lambda: bool(shown) and not shown[-1].coarse and shown[-1].request.yaw == 2.0, timeout=5000)
    refined = [r for r in renderer.rendered if r.neural_resolution is None]
    assert [r.yaw for r in refined] == [2.0]  # nothing refined for the view the user left


def test_cancel_drops_the_frame_in_flight(client, qtbot):
    client, renderer, shown = client
    client.request(ViewRequest(seed=5))
    qtbot.waitUntil(lambda: bool(renderer.on_thread), timeout=2000)
    client.cancel()
    qtbot.wait(200)
    assert renderer.rendered and not shown


def test_busy_signal_brackets_the_work(client, qtbot):
    client, renderer, shown = client
    states = []
    client.busy_changed.connect(states.append)
    with qtbot.waitSignal(client.frame_ready, timeout=5000):
        client.request(ViewRequest(seed=2))
    qtbot.waitUntil(lambda: states[-1:] == [False], timeout=2000)
    assert states[0] is True


def test_render_errors_are_reported_not_raised(qtbot):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    client = RenderClient(render=broken)
    client.set_backbone(FakeBackbone())
    with qtbot.waitSignal(client.error, timeout=5000) as signal:
        client.request(ViewRequest(seed=0))
    assert "out of memory" in signal.args[0]
    client.shutdown()


# ---------------------------------------------------------------------- the workspace
@pytest.fixture
def orbit(qtbot):
    workspace = OrbitWorkspace()
    qtbot.addWidget(workspace, before_close_func=lambda w: w.shutdown())
    workspace.resize(800, 600)
    workspace.show()
    workspace.set_session(tiny_backbone())
    qtbot.waitUntil(lambda: workspace.last_frame is not None, timeout=20000)
    return workspace  # qtbot shuts it down before closing it


def test_orbit_drag_zoom_seed_and_depth_with_a_real_backbone(orbit, qtbot):
    for _ in range(10):
        orbit.orbit_by(5, -2)  # what a left drag emits
    orbit.orbit_by(0, 0, interactive=False)
    qtbot.waitUntil(lambda: not orbit.last_frame.coarse and orbit.last_frame.request.yaw == 20.0, timeout=20000)
    assert orbit.last_frame.request.pitch == pytest.approx(8.0)
    assert orbit.last_frame.rgb.shape[:2] == (FAST_NEURAL_RESOLUTION, FAST_NEURAL_RESOLUTION)
    orbit.zoom_by(2)
    assert orbit.view.fov < 18.8
    orbit.set_seed(7)
    qtbot.waitUntil(lambda: orbit.last_frame.request.seed == 7, timeout=20000)
    orbit.set_mode("Depth")
    assert orbit._image_item.image.shape[2] == 3  # colour-mapped (depth_picture, below)


def test_depth_shows_empty_space_as_the_background_and_near_brighter_than_far():
    from app.orbit import depth_picture
    from app.widgets import CANVAS_BACKGROUND

    depth = np.array([[255, 0], [255, 128]], np.uint8)
    opacity = np.array([[1.0, 1.0], [0.0, 0.5]], np.float32)
    picture = depth_picture(depth, opacity).astype(int)
    assert picture.shape == (2, 2, 3)
    assert picture[1, 0].tolist() == list(CANVAS_BACKGROUND)  # no opacity: empty, whatever its depth says
    assert picture[0, 0].sum() > picture[0, 1].sum() + 200  # near is bright, far dark
    assert np.abs(picture[0, 1] - CANVAS_BACKGROUND).max() > 40  # far but opaque still stands out


def test_depth_frame_of_the_default_backbone_is_empty_around_the_head():
    """The issue's picture: noisy bands and a white block where no head is. A frame's opacity
    masks them: the corners of a real frame are background, the middle is the head."""
    from app.orbit import depth_picture
    from app.rendering import render_frame
    from app.widgets import CANVAS_BACKGROUND
    from core.backbone import load_backbone

    frame = render_frame(load_backbone("default"), ViewRequest(seed=0, yaw=24.0, pitch=8.0, neural_resolution=64))
    assert frame.opacity.shape == frame.depth.shape == (64, 64)
    picture = depth_picture(frame.depth, frame.opacity).astype(int)
    off = np.abs(picture - np.array(CANVAS_BACKGROUND)).max(-1)
    corners = np.concatenate([off[:8, :8].ravel(), off[:8, -8:].ravel()])
    assert corners.max() <= 6, corners.max()
    assert (off[24:40, 24:40] > 40).all()  # the head, colour-mapped


def test_semantic_modes_without_a_project_are_disabled_and_say_why(orbit):
    for mode in ("Labels", "Blend"):
        button = orbit._mode_buttons[mode]
        assert not button.isEnabled() and "semantic branch" in button.toolTip()
    with pytest.raises(ValueError, match="semantic branch"):
        orbit.set_mode("Labels")
    assert "Train Semantic Branch" in orbit._branch_label.text()


def test_arrow_keys_turn_the_camera_and_r_resets(orbit):
    orbit.shortcuts["Right"].activated.emit()
    orbit.shortcuts["Up"].activated.emit()
    assert orbit.view.yaw == pytest.approx(5.0) and orbit.view.pitch == pytest.approx(-5.0)
    orbit.shortcuts["R"].activated.emit()
    assert (orbit.view.yaw, orbit.view.pitch) == (0.0, 0.0)


def test_preview_frames_use_fewer_ray_samples_and_leave_default_renders_alone():
    backbone = tiny_backbone()
    identity, camera = backbone.identity_from_seed(3), backbone.camera(10, 5)
    default = backbone.render(identity, camera, return_samples=True)
    options = backbone.rendering_kwargs
    assert default.samples["depths"].shape[2] == options["depth_resolution"] + options["depth_resolution_importance"]
    preview = backbone.render(identity, camera, return_samples=True, samples_per_ray=(4, 2))
    assert preview.samples["depths"].shape[2] == 6
    again = backbone.render(identity, camera, return_samples=True)
    assert np.array_equal(again.image.numpy(), default.image.numpy())  # the override was for one call only
    with pytest.raises(ValueError, match="coarse samples"):
        backbone.render(identity, camera, samples_per_ray=(1, 0))


def test_legend_swatches_show_numpy_palette_colours(qtbot):
    """Orbit hands the legend rows of a numpy palette; each swatch must be drawn in its colour."""
    from app.widgets import LabelLegend

    legend = LabelLegend()
    qtbot.addWidget(legend)
    palette = np.array([[0, 0, 0], [200, 30, 40]], np.uint8)
    legend.set_labels([(i, name, palette[i]) for i, name in enumerate(["background", "head"])])
    legend.resize(400, 40)
    legend.show()
    qtbot.waitExposed(legend)
    image = legend.grab().toImage()
    colours = {image.pixelColor(x, y).getRgb()[:3] for x in range(image.width()) for y in range(image.height())}
    assert (200, 30, 40) in colours
