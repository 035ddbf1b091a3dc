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
from core.imaging import depth_to_uint8, rgb_to_uint8

# Each workspace renders on its own thread, and a frame can still be in flight when the user
# switches tabs. The backbone's identity cache is not thread-safe, and two renders at once gain
# nothing on a small CPU, so renders take turns.
_RENDER_TURN = threading.Lock()


@dataclass(frozen=True)
class ViewRequest:
    """One view of one identity. `neural_resolution` None means the checkpoint's own."""

    seed: int
    truncation_psi: float = 1.0
    yaw: float = 0.0
    pitch: float = 0.0
    fov: float = DEFAULT_FOV_DEG
    neural_resolution: int | None = None

    def at_resolution(self, neural_resolution: int | None) -> "ViewRequest":
        return replace(self, neural_resolution=neural_resolution)

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


def render_frame(backbone, request: ViewRequest, request_id: int = 0, coarse: bool = False) -> Frame:
    """Render one request; the identity's planes come from the backbone's cache when warm."""
    start = time.perf_counter()
    with _RENDER_TURN, torch.no_grad():
        identity = backbone.identity_from_seed(request.seed, request.truncation_psi)
        view = backbone.render(identity, request.camera(backbone), request.neural_resolution, deterministic=True)
    kwargs = backbone.rendering_kwargs
    # A fixed depth range keeps the grey levels steady while orbiting (per-frame min/max flickers).
    depth = depth_to_uint8(view.depth[0], kwargs.get("ray_start"), kwargs.get("ray_end"))
    return Frame(request, request_id, coarse, rgb_to_uint8(view.image), depth, time.perf_counter() - start)
