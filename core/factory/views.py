"""All the views of one identity in one pass: RGB, part labels, depth and opacity.

This is the factory's unit of work (and the point-cloud view's). The synthesis network and the
semantic tri-plane run once per identity; the views are rendered together, batched, from the
cached planes, and the semantic branch reuses each backbone render through its density-prior
path (`labels_for_view(..., view=...)`): the branch only decodes a few points per visible ray and
runs its super-resolution, it never renders a view of its own. On a CPU the backbone renders
through `core.generator.culling`: the identity's density is measured once on a grid and the views
decode only samples where there is density (culling.py says how, and what may differ).

Everything comes back at the label resolution `resolution`:
* rgb: the backbone's final image, resized (area) when its size differs;
* depth: the expected ray depth (distance from the camera centre along the *unit* ray
  direction, EG3D's `image_depth`), upsampled from the neural resolution;
* alpha: the backbone's opacity (its interval weights' total), upsampled the same way;
* label_points: labels of any world points from the branch's 3D semantic field of the identity
  (its decoder at the points, no rendering): what the point clouds label their points with.
Depth is upsampled *weighted by opacity* (bilinear of depth·alpha over bilinear of alpha): a
plain bilinear upsampling would blend a silhouette pixel's surface depth with the far plane
that empty rays are clamped to, and put points in mid-air between the head and the background.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.generator.culling import render_with_samples, skipping_grid
from core.generator.triplane import Identity
from core.semantic.branch import SemanticBranch, SemanticIdentity
from core.semantic.rendering import labels_for_view, neural_resolution_for

# Views rendered in one renderer call. The CPU renderer works through rays in fixed chunks, so a
# larger batch mostly saves Python overhead; on a GPU it fills the device. Memory per view at
# 128² with the default backbone is ~30 MB (samples kept for the semantic branch).
DEFAULT_VIEW_BATCH = 8
# Below this opacity a (label-resolution) pixel is background: no depth, no point.
ALPHA_THRESHOLD = 0.5
# Points the semantic decoder labels at a time (bounds the hidden activations' memory).
POINT_CHUNK = 65_536


@dataclass
class IdentityViews:
    """V views of one identity at the label resolution H = W."""

    camera_labels: np.ndarray  # (V, 25) float32
    rgb: np.ndarray  # (V, H, W, 3) uint8
    labels: np.ndarray  # (V, H, W) uint8 class ids
    depth: np.ndarray  # (V, H, W) float32 expected ray depth (meaningless where alpha is ~0)
    alpha: np.ndarray  # (V, H, W) float32 opacity in [0, 1]
    # world points (N, 3) -> (N,) uint8 class ids from the branch's 3D semantic field (None: no branch)
    label_points: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    # (V, H, W) float32: the branch's softmax probability of each pixel's label (how sure it is)
    confidence: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.camera_labels)


def field_labeller(branch: SemanticBranch, semantic: SemanticIdentity, box_warp: float):
    """Labels (N,) uint8 of world points (N, 3) from one identity's semantic field: the decoder's
    class logits at the points themselves, the same at a point whichever view it came from."""
    if len(semantic) != 1:
        raise ValueError(f"expected one identity, got a batch of {len(semantic)}")
    device = semantic.planes.device

    @torch.no_grad()
    def label_points(points) -> np.ndarray:
        points = torch.from_numpy(np.ascontiguousarray(points, np.float32)).reshape(-1, 3)
        labels = [branch.query_points(semantic, chunk.to(device)[None], box_warp)["logits"][0].argmax(-1)
                  for chunk in points.split(POINT_CHUNK)]
        return torch.cat(labels).to(torch.uint8).cpu().numpy() if labels else np.zeros(0, np.uint8)

    return label_points


def expand_identity(identity: Identity, count: int) -> Identity:
    """The same single identity repeated `count` times (views, not copies: no memory)."""
    if len(identity) != 1:
        raise ValueError(f"expected one identity, got a batch of {len(identity)}")
    return Identity(
        identity.ws.expand(count, -1, -1),
        identity.planes.expand(count, -1, -1, -1, -1),
        {res: x.expand(count, -1, -1, -1) for res, x in identity.block_features.items()},
    )


@torch.no_grad()
def render_identity_views(
    generator,
    branch: SemanticBranch,
    identity: Identity,
    camera_labels,
    resolution: int,
    view_batch: int = DEFAULT_VIEW_BATCH,
) -> IdentityViews:
    """Render every camera (V, 25) of one identity; see the module docstring for what comes back."""
    camera_labels = torch.as_tensor(np.asarray(camera_labels, np.float32)).reshape(-1, 25)
    device = identity.planes.device
    semantic = branch.semantic_identity(identity)  # cached: once per identity
    neural_resolution = neural_resolution_for(generator, resolution)
    occupancy = skipping_grid(generator, identity)
    parts = []
    for first in range(0, len(camera_labels), max(1, int(view_batch))):
        cameras = camera_labels[first:first + view_batch].to(device)
        count = len(cameras)
        batch_identity = expand_identity(identity, count)
        batch_semantic = SemanticIdentity(batch_identity, semantic.planes.expand(count, -1, -1, -1, -1))
        view = render_with_samples(generator, batch_identity, cameras, neural_resolution, occupancy)
        labelled = labels_for_view(branch, generator, batch_semantic, cameras, resolution, view=view)
        depth, alpha = _upsample_depth(view.depth, view.opacity(), resolution)
        parts.append((_rgb_uint8(view.image, resolution), labelled.labels.to(torch.uint8).cpu().numpy(),
                      depth[:, 0].cpu().numpy(), alpha[:, 0].cpu().numpy(),
                      labelled.logits.float().softmax(1).amax(1).cpu().numpy()))
    rgb, labels, depth, alpha, confidence = (np.concatenate(arrays) for arrays in zip(*parts))
    return IdentityViews(camera_labels.numpy(), rgb, labels, depth.astype(np.float32), alpha.astype(np.float32),
                         field_labeller(branch, semantic, generator.rendering_kwargs["box_warp"]),
                         confidence.astype(np.float32))


def _upsample_depth(depth: torch.Tensor, alpha: torch.Tensor, resolution: int):
    """Opacity-weighted bilinear upsampling of depth (N,1,h,w) and bilinear of alpha."""
    alpha = alpha.clamp(0, 1)
    if depth.shape[-1] == resolution:
        return depth, alpha
    size = (resolution, resolution)
    weighted = F.interpolate(depth * alpha, size=size, mode="bilinear", align_corners=False)
    alpha_up = F.interpolate(alpha, size=size, mode="bilinear", align_corners=False)
    nearest = F.interpolate(depth, size=size, mode="nearest")
    depth_up = torch.where(alpha_up > 1e-6, weighted / alpha_up.clamp_min(1e-6), nearest)
    return depth_up, alpha_up


def _rgb_uint8(image: torch.Tensor, resolution: int) -> np.ndarray:
    """(N, 3, h, w) in [-1, 1] → (N, H, W, 3) uint8 (gen_samples.py's rounding), resized if needed."""
    if image.shape[-1] != resolution:
        image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=image.shape[-1] > resolution)
    scaled = (image.float().permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255)
    return scaled.to(torch.uint8).cpu().numpy()
