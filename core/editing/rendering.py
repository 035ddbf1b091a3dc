"""Differentiable renders for inversion and editing: RGB and semantic logits as functions of
(w+, yaw, pitch).

`core.backbone` and `core.semantic.labels_for_view` render without gradients (and the semantic
branch's `encode` detaches the generator's block features, as training the branch wants). Here
gradients must reach the latent and the camera, so the same pieces are composed with autograd
on: `G.synthesize`, `G.render(..., return_samples=True)`, `prior_samples` (the density prior) and
`render_semantic`, with the semantic tri-plane computed from the *attached* block features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.camera import DEFAULT_FOV_DEG, fov_to_intrinsics
from core.fitting.trainer import composite_on_grey, learnt_on_grey
from core.semantic.rendering import (SAMPLES_PER_RAY, DenseSamples, ViewPrior, _rays, prior_samples,
                                     render_semantic)

_POLAR_EPS = 1e-5
PITCH_LIMIT = 60.0  # degrees: the look-at frame degenerates towards ±90


@dataclass(frozen=True)
class CameraRig:
    """What stays fixed while yaw/pitch are optimised: the backbone's orbit, pivot and fov."""

    radius: float
    pivot: tuple
    fov: float = DEFAULT_FOV_DEG

    @classmethod
    def of(cls, G, fov: float = DEFAULT_FOV_DEG) -> "CameraRig":
        kwargs = G.rendering_kwargs
        return cls(float(kwargs.get("avg_camera_radius", 2.7)),
                   tuple(float(v) for v in kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.0))), float(fov))

    def label(self, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """EG3D's 25-float label (1, 25) of a look-at camera, differentiable in yaw/pitch (degrees).

        The same construction as core.camera.look_at_cam2world (LookAtPoseSampler), in torch.
        """
        yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(())
        pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(())
        azimuth = math.pi / 2 + torch.deg2rad(yaw)
        polar = (math.pi / 2 + torch.deg2rad(pitch)).clamp(_POLAR_EPS, math.pi - _POLAR_EPS)
        phi = torch.acos((1.0 - 2.0 * polar / math.pi).clamp(-1 + 1e-7, 1 - 1e-7))
        position = self.radius * torch.stack([
            torch.sin(phi) * torch.cos(math.pi - azimuth),
            torch.cos(phi),
            torch.sin(phi) * torch.sin(math.pi - azimuth),
        ])
        target = torch.tensor(self.pivot, dtype=torch.float32)
        forward = F.normalize(target - position, dim=0)
        up = torch.tensor([0.0, 1.0, 0.0])
        right = F.normalize(torch.linalg.cross(forward, up), dim=0)
        down = F.normalize(torch.linalg.cross(forward, right), dim=0)
        rotation = torch.stack([right, down, forward], dim=1)
        pose = torch.cat([torch.cat([rotation, position[:, None]], 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 0)
        return torch.cat([pose.reshape(16), fov_to_intrinsics(self.fov).reshape(9)])[None]


@dataclass
class Render:
    image: torch.Tensor  # (1, 3, r, r) in [-1, 1]
    logits: torch.Tensor | None  # (1, K, r, r) or None when no branch was given


def render(G, ws: torch.Tensor, camera_label: torch.Tensor, resolution: int, branch=None,
           samples_per_ray: int | None = SAMPLES_PER_RAY) -> Render:
    """RGB (and class logits with a branch) of latent ws (1, num_ws, w_dim) at resolution², with
    autograd to ws and the camera label. The neural renderer runs at `resolution` (capped at the
    backbone's own), and the image is resized to `resolution` when the backbone super-resolves."""
    identity = G.synthesize(ws)
    neural = min(int(resolution), int(G.neural_rendering_resolution))
    camera_label = camera_label.to(ws.device)
    grey = learnt_on_grey(G)
    view = G.render(identity, camera_label, neural, deterministic=True, return_samples=branch is not None or grey)
    image = view.image
    if grey:
        alpha = view.samples["weights"].sum(2).reshape(image.shape[0], 1, *image.shape[-2:])  # the rays' opacity
        image = composite_on_grey(image, alpha) * 2 - 1
    image = _resized(image, resolution)
    if branch is None:
        return Render(image, None)
    origins, directions = _rays(G, camera_label, neural)
    box_warp = G.rendering_kwargs["box_warp"]
    if branch.density_prior:
        samples = prior_samples(view, origins, directions, box_warp, samples_per_ray=samples_per_ray)
    else:
        samples = DenseSamples(origins, directions, view.samples["depths"][..., 0], box_warp)
    semantic_planes = branch.triplane(identity.block_features)  # attached: gradients reach ws
    prior = ViewPrior(samples, view.image, neural)
    logits = render_semantic(branch, semantic_planes, prior, resolution).logits
    return Render(image, logits)


def _resized(image: torch.Tensor, resolution: int) -> torch.Tensor:
    if image.shape[-1] == resolution:
        return image
    return F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > resolution)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] → (H, W, 3) uint8 (the studio's convention, core.imaging)."""
    from core.imaging import rgb_to_uint8

    return rgb_to_uint8(image)


def to_unit(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] → (H, W, 3) float64 in [0, 1], for PSNR."""
    return ((image.detach()[0].permute(1, 2, 0).double().cpu().numpy() + 1) / 2).clip(0, 1)
