"""How well a backbone reproduces the procedural category: `python main.py evaluate fit`.

Identities come from the 'evaluate' seed range (never used by the fit, which draws from 'fit');
views are the fixed EVALUATION_VIEWS below.  The fit samples yaw and pitch continuously over
yaw +-90 deg, pitch +-30 deg, so these exact cameras are not training views, though they lie in
the same range.  Everything is compared at the backbone's own output resolution (128^2 for the
embedded default), deterministic rendering, no truncation.
"""
from __future__ import annotations

import numpy as np
import torch

from core.fitting.data import camera_for
from core.fitting.trainer import HEAD_RADIUS, camera_rays, render_rays, synthesize_identity
from core.metrics import psnr
from core.procedural import HeadParams, ProceduralHead, latent_for_seed, seeds_for

# (yaw, pitch) in degrees; positive yaw moves the camera to +x (the head's left).
EVALUATION_VIEWS = [(0.0, 0.0), (25.0, -10.0), (-25.0, 15.0), (50.0, 5.0),
                    (-50.0, -20.0), (75.0, 20.0), (-75.0, -5.0), (10.0, 28.0)]
FOREGROUND_ALPHA = 0.5


def evaluation_views(count: int) -> list[tuple[float, float]]:
    if not 1 <= count <= len(EVALUATION_VIEWS):
        raise ValueError(f"--views must be between 1 and {len(EVALUATION_VIEWS)}, got {count}")
    return EVALUATION_VIEWS[:count]


@torch.no_grad()
def backbone_identity(generator, seed: int):
    """The planes of identity `seed` (EG3D's seed convention, no truncation)."""
    device = next(generator.parameters()).device
    generator.eval()
    z = torch.from_numpy(latent_for_seed(seed, generator.z_dim)[None]).float().to(device)
    return synthesize_identity(generator, z)


@torch.no_grad()
def backbone_view(generator, seed_or_identity, yaw: float, pitch: float, resolution: int) -> dict:
    """rgb [0,1] on grey (H, W, 3), alpha and depth (H, W) of an identity (or its seed)."""
    identity = seed_or_identity
    if isinstance(seed_or_identity, int):
        identity = backbone_identity(generator, seed_or_identity)
    rays = camera_rays(yaw, pitch, resolution, identity.planes.device)
    predicted = render_rays(generator, identity, *rays, stochastic=False, max_rays_per_chunk=8192)
    image_shape = (resolution, resolution)
    return {"rgb": predicted["rgb"][0].clamp(0, 1).reshape(*image_shape, 3).cpu().numpy(),
            "alpha": predicted["alpha"][0].reshape(image_shape).cpu().numpy(),
            "depth": predicted["depth"][0].reshape(image_shape).cpu().numpy()}


def procedural_view(seed: int, yaw: float, pitch: float, resolution: int, z_dim: int) -> dict:
    head = ProceduralHead(HeadParams.from_latent(latent_for_seed(seed, z_dim)))
    buffers = head.render(camera_for(yaw, pitch).label(), resolution)
    return {name: buffers[name] for name in ("rgb", "alpha", "depth")}


def compare_view(predicted: dict, target: dict) -> dict:
    """Per-image figures: PSNR of rgb, IoU of silhouettes, depth error sum/count on shared pixels."""
    mine, theirs = predicted["alpha"] > FOREGROUND_ALPHA, target["alpha"] > FOREGROUND_ALPHA
    union = np.logical_or(mine, theirs).sum()
    both = np.logical_and(mine, theirs)
    depth_gap = np.abs(predicted["depth"][both] - target["depth"][both])
    return {"psnr": psnr(predicted["rgb"], target["rgb"]),
            "iou": float(both.sum() / union) if union else 1.0,
            "depth_sum": float(depth_gap.sum()), "depth_count": int(both.sum()),
            "colour_sum": (predicted["rgb"][mine].sum(0), target["rgb"][theirs].sum(0)),
            "colour_count": (int(mine.sum()), int(theirs.sum()))}


def colour_correlation(per_image: list[dict], views: int) -> list | None:
    """Per channel, the correlation over identities of the mean foreground colour (over all the
    identity's views) of the backbone with the truth's: does the coat follow the identity?
    None with fewer than 3 identities."""
    identities = len(per_image) // views
    if identities < 3:
        return None
    means = np.zeros((2, identities, 3))
    for index in range(identities):
        images = per_image[index * views:(index + 1) * views]
        for side in range(2):
            total = sum(image["colour_sum"][side] for image in images)
            means[side, index] = total / max(sum(image["colour_count"][side] for image in images), 1)
    correlations = []
    for channel in range(3):
        predicted, truth = means[0, :, channel], means[1, :, channel]
        constant = predicted.std() == 0 or truth.std() == 0   # e.g. a random network's one grey
        correlations.append(0.0 if constant else float(np.corrcoef(predicted, truth)[0, 1]))
    return correlations


def evaluate_fit(generator, identities: int = 50, views: int = 8, resolution: int | None = None,
                 progress=None) -> dict:
    """The fit figures over `identities` x `views` held-out images, at `resolution` (default: the
    backbone's own neural rendering resolution)."""
    if identities < 1:
        raise ValueError(f"--identities must be at least 1, got {identities}")
    resolution = resolution or int(generator.neural_rendering_resolution)
    cameras = evaluation_views(views)
    seeds = seeds_for("evaluate", identities)
    per_image = []
    for seed in seeds:
        identity = backbone_identity(generator, seed)
        for yaw, pitch in cameras:
            per_image.append(compare_view(backbone_view(generator, identity, yaw, pitch, resolution),
                                          procedural_view(seed, yaw, pitch, resolution, generator.z_dim)))
            if progress is not None:
                progress(len(per_image), len(seeds) * len(cameras))
    return summarise(per_image, seeds, cameras, resolution)


def summarise(per_image: list[dict], seeds, cameras, resolution: int) -> dict:
    depth_count = sum(item["depth_count"] for item in per_image)
    depth_world = sum(item["depth_sum"] for item in per_image) / max(depth_count, 1)
    return {
        "psnr": float(np.mean([item["psnr"] for item in per_image])),
        "silhouette_iou": float(np.mean([item["iou"] for item in per_image])),
        "depth_error": depth_world / HEAD_RADIUS,
        "depth_error_world": depth_world,
        "colour_correlation": colour_correlation(per_image, len(cameras)),
        "head_radius": HEAD_RADIUS,
        "resolution": resolution,
        "identities": [int(seed) for seed in seeds],
        "views": [{"yaw": yaw, "pitch": pitch} for yaw, pitch in cameras],
        "images": len(per_image),
    }
