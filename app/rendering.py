"""What the workspaces ask the render worker for, and what comes back: plain Python, no Qt.

Kept free of Qt so that benchmarks can time exactly the function the worker runs.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from core.camera import DEFAULT_FOV_DEG, Camera
from core.generator.culling import cached_occupancy_grid, render_culled
from core.factory.pointcloud import PointCloud, fuse_identity_views
from core.factory.views import ALPHA_THRESHOLD
from core.fitting.trainer import image_as_shown, learnt_on_grey
from core.imaging import depth_to_uint8, rgb_to_uint8
from core.semantic import labels_for_view

# Each workspace renders on its own thread, and a frame can still be in flight when the user
# switches tabs. The backbone's identity cache is not thread-safe, and two renders at once gain
# nothing on a small CPU, so renders take turns.
_RENDER_TURN = threading.Lock()

# Ray samples (coarse, importance) of a preview frame while dragging. The embedded default uses
# 24 + 24; a quarter of the samples at a quarter of the pixels is what keeps a drag fluid on a
# laptop CPU, and the refined frame at rest is rendered exactly as the checkpoint says.
COARSE_SAMPLES_PER_RAY = (12, 12)
# Full-sample frames on a CPU skip empty space (core.generator.culling: decode only samples in cells
# where the identity has density). That about halves a refined 128² frame of the default backbone;
# what may differ from the plain render is in culling.py's docstring. A 32³ occupancy grid (0.04 CPU-s, once per identity; the factory's
# 64³ takes 0.27 s) keeps the first full frame quick, the dilation keeping it conservative.
SKIP_EMPTY_SPACE = True
OCCUPANCY_GRID = 32


@dataclass(frozen=True)
class ViewRequest:
    """One view of one identity. `neural_resolution` None means the checkpoint's own.

    `labels`: also compute the semantic branch's part labels of the view (when there is one).
    `samples_per_ray`: (coarse, importance) ray samples; None = the checkpoint's own.
    """

    seed: int
    truncation_psi: float = 1.0
    yaw: float = 0.0
    pitch: float = 0.0
    fov: float = DEFAULT_FOV_DEG
    neural_resolution: int | None = None
    labels: bool = False
    samples_per_ray: tuple[int, int] | None = None

    def at_resolution(self, neural_resolution: int | None) -> "ViewRequest":
        return replace(self, neural_resolution=neural_resolution)

    def as_preview(self, neural_resolution: int, samples_per_ray=COARSE_SAMPLES_PER_RAY) -> "ViewRequest":
        return replace(self, neural_resolution=neural_resolution, samples_per_ray=samples_per_ray)

    def camera(self, backbone) -> Camera:
        return backbone.camera(self.yaw, self.pitch, fov=self.fov)

    @property
    def scene(self) -> tuple:
        """Everything but the resolution: a coarse and a refined frame of one scene share it."""
        return (self.seed, self.truncation_psi, self.yaw, self.pitch, self.fov)


@dataclass(frozen=True, eq=False)
class Frame:
    request: ViewRequest
    request_id: int
    coarse: bool
    rgb: np.ndarray  # (H, W, 3) uint8 at the generator's output resolution
    depth: np.ndarray  # (h, w) uint8 at the neural resolution, near = white
    seconds: float
    labels: np.ndarray | None = None  # (H', W') uint8 label ids, when asked for and a branch exists
    # (h, w) float32 in [0, 1]: each ray's accumulated weight. A ray through empty space has
    # none, and its expected depth is only what the marcher's clamp leaves (noise), not a surface.
    opacity: np.ndarray | None = None


def shows_on_grey(backbone) -> bool:
    """Frames of the studio's own fits are shown on the category's mid grey, official EG3D
    backbones as EG3D composites them (display only; core.fitting.trainer.learnt_on_grey)."""
    return learnt_on_grey(backbone.generator)


def render_frame(backbone, request: ViewRequest, request_id: int = 0, coarse: bool = False,
                 branch=None, skip_empty_space: bool = SKIP_EMPTY_SPACE) -> Frame:
    """Render one request; the identity's planes come from the backbone's cache when warm.

    With `branch` (a core.semantic SemanticBranch) and request.labels, the part labels reuse
    this very render of the backbone (its samples), so they cost only the semantic part.
    `skip_empty_space`: see SKIP_EMPTY_SPACE (full-sample frames on a CPU only).
    """
    start = time.perf_counter()
    want_labels = request.labels and branch is not None
    with _RENDER_TURN, torch.no_grad():
        identity = backbone.identity_from_seed(request.seed, request.truncation_psi)
        grey = shows_on_grey(backbone)
        camera = request.camera(backbone)
        if skip_empty_space and request.samples_per_ray is None and identity.planes.device.type == "cpu":
            view = _render_skipping_empty_space(backbone, identity, camera, request.neural_resolution)
        else:
            view = backbone.render(identity, camera, request.neural_resolution, deterministic=True,
                                   return_samples=True, samples_per_ray=request.samples_per_ray)  # for the opacity
        image = image_as_shown(backbone.generator, view)
        labels = None
        if want_labels:
            labels = _labels(branch, backbone, identity, camera, view)
    kwargs = backbone.rendering_kwargs
    # A fixed depth range keeps the grey levels steady while orbiting (per-frame min/max flickers).
    depth = depth_to_uint8(view.depth[0], kwargs.get("ray_start"), kwargs.get("ray_end"))
    opacity = view.opacity()[0, 0].clamp(0, 1).float().cpu().numpy()
    return Frame(request, request_id, coarse, rgb_to_uint8(image), depth, time.perf_counter() - start, labels,
                 opacity)


def _render_skipping_empty_space(backbone, identity, camera, neural_resolution):
    generator = backbone.generator
    resolution = neural_resolution or generator.neural_rendering_resolution
    label = camera.label().to(backbone.device)[None]
    view, _ = render_culled(generator, identity, label, resolution,
                            cached_occupancy_grid(generator, identity, OCCUPANCY_GRID))
    return view


def _labels(branch, backbone, identity, camera, view) -> np.ndarray:
    generator = backbone.generator
    rendered = view.depth.shape[-1]
    # At the checkpoint's own neural resolution the branch super-resolves to the output size; a
    # preview frame's labels stay at the preview's size (the display scales them).
    resolution = generator.img_resolution if rendered == generator.neural_rendering_resolution else rendered
    labelled = labels_for_view(branch, generator, identity, camera.label().to(backbone.device), resolution, view=view)
    return labelled.labels[0].to(torch.uint8).cpu().numpy()


def predict_mask(backbone, branch, seed: int, truncation_psi: float, camera: Camera, resolution: int) -> np.ndarray:
    """The branch's labels (resolution², uint8) of one view: what "prefill" puts in a mask."""
    with _RENDER_TURN, torch.no_grad():
        identity = backbone.identity_from_seed(seed, truncation_psi)
        labelled = labels_for_view(branch, backbone.generator, identity, camera.label().to(backbone.device),
                                   resolution)
    return labelled.labels[0].to(torch.uint8).cpu().numpy()


def fuse_cloud(backbone, branch, seed: int, truncation_psi: float, cameras: list[Camera], resolution: int,
               alpha_threshold: float = ALPHA_THRESHOLD) -> PointCloud:
    """The identity's labelled cloud fused over `cameras` (core.factory's fusion, as the factory's PLY)."""
    with _RENDER_TURN, torch.no_grad():
        identity = backbone.identity_from_seed(seed, truncation_psi)
        return fuse_identity_views(backbone, branch, identity, cameras, resolution, alpha_threshold=alpha_threshold)
