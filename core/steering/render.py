"""Rendering steered samples: identities (seed, psi, pc offsets) seen through steered cameras.

The identity of a draw is w = w_avg + psi (w_seed - w_avg) + sum_j pc_j sigma_j v_j, applied to
every w layer, where w_seed is the seed's untruncated w (EG3D's z convention, core.backbone) and
(v_j, sigma_j) are the leading principal directions of w and their standard deviations, measured
once on PRINCIPAL_SAMPLES seeds of the 'fit' range. Views come from the factory's own unit of work
(core.factory.render_identity_views: backbone RGB, semantic-branch labels, depth, opacity, and the
branch's label confidence). A `pose` run needs no semantic branch: without one, the labels are
the unlabelled value everywhere and only the cameras are targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.backbone import seed_to_z
from core.factory.views import ALPHA_THRESHOLD, IdentityViews, _rgb_uint8, _upsample_depth, expand_identity, \
    render_identity_views
from core.generator.culling import render_with_samples, skipping_grid
from core.procedural import SEED_RANGES

PRINCIPAL_SAMPLES = 256
# Identities of steered samples: seeds of the 'evaluate' range below the last 30,000, which the
# downstream and steering test sets keep for themselves (core.downstream.testsets).
STEER_SEEDS = range(SEED_RANGES["evaluate"].start, SEED_RANGES["evaluate"].stop - 30_000)


def steer_seed(run_seed: int, stream: int, index: int) -> int:
    """Identity seed number `index` of a run's stream (a stream per round and phase)."""
    state = np.random.SeedSequence([int(run_seed), int(stream), int(index)]).generate_state(1)[0]
    return int(STEER_SEEDS.start + int(state) % len(STEER_SEEDS))


@dataclass
class Samples:
    """n rendered samples at the dataset size."""

    rgb: np.ndarray  # (n, H, W, 3) uint8
    labels: np.ndarray  # (n, H, W) uint8
    confidence: np.ndarray  # (n,) mean label confidence over the foreground (1 without a branch)
    depth: np.ndarray  # (n, H, W) float32
    alpha: np.ndarray  # (n, H, W) float32
    camera_labels: np.ndarray  # (n, 25)
    angles: np.ndarray  # (n, 2) yaw, pitch in degrees

    def __len__(self) -> int:
        return len(self.rgb)


class SteeringWorld:
    """The backbone (and branch) a run renders with, plus the principal directions of its w."""

    def __init__(self, backbone, branch, label_set, size: int, principal: int, alpha_threshold=ALPHA_THRESHOLD):
        self.backbone, self.branch, self.label_set = backbone, branch, label_set
        self.size, self.alpha_threshold = int(size), float(alpha_threshold)
        self.branch_file = None  # the branch's checkpoint, recorded in the manifests
        mapping = backbone.generator.backbone.mapping
        self.w_avg = mapping.w_avg.detach().clone()
        self.directions, self.sigmas = self._principal_directions(principal)

    def _principal_directions(self, count: int):
        if count == 0:
            return torch.zeros(0, self.w_avg.numel()), torch.zeros(0)
        z = torch.cat([seed_to_z(seed, self.backbone.generator.z_dim) for seed in range(PRINCIPAL_SAMPLES)])
        w = self.backbone.mapping(z, 1.0, None)[:, 0].cpu()
        _, singular, vectors = torch.linalg.svd(w - w.mean(0), full_matrices=False)
        return vectors[:count], singular[:count] / (len(w) - 1) ** 0.5

    def ws_for(self, seed: int, psi: float, offsets) -> torch.Tensor:
        """(1, num_ws, w_dim) of one steered identity."""
        if len(offsets) != len(self.sigmas):
            raise ValueError(f"{len(offsets)} principal offsets for {len(self.sigmas)} directions")
        ws = self.backbone.mapping(seed_to_z(seed, self.backbone.generator.z_dim), 1.0, None).cpu()
        w_avg = self.w_avg.to(ws)
        shift = (torch.as_tensor(offsets, dtype=ws.dtype) * self.sigmas.to(ws))[:, None] * self.directions.to(ws)
        return w_avg + float(psi) * (ws - w_avg) + shift.sum(0)

    @torch.no_grad()
    def render(self, seeds, identity_values: np.ndarray, angles: np.ndarray, views: int) -> Samples:
        """Render identity i (seed, psi, offsets) from angles[i * views:(i + 1) * views]."""
        parts = []
        for index, seed in enumerate(seeds):
            psi, offsets = identity_values[index][0], identity_values[index][1:]
            identity = self.backbone.identity_from_ws(self.ws_for(int(seed), psi, offsets))
            own = angles[index * views:(index + 1) * views]
            labels = np.stack([self.backbone.camera(float(y), float(p)).label().numpy() for y, p in own])
            parts.append(self._views(identity, labels))
        return Samples(
            np.concatenate([p.rgb for p in parts]), np.concatenate([p.labels for p in parts]),
            np.concatenate([self._mean_confidence(p) for p in parts]), np.concatenate([p.depth for p in parts]),
            np.concatenate([p.alpha for p in parts]), np.concatenate([p.camera_labels for p in parts]),
            np.asarray(angles, np.float64))

    def _views(self, identity, camera_labels: np.ndarray) -> IdentityViews:
        generator = self.backbone.generator
        if self.branch is not None:
            views = render_identity_views(generator, self.branch, identity, camera_labels, self.size)
            self.branch.clear_cache()
            return views
        from core.downstream.training import IGNORE_LABEL
        from core.semantic.rendering import neural_resolution_for

        cameras = torch.as_tensor(camera_labels, dtype=torch.float32).to(self.backbone.device)
        view = render_with_samples(generator, expand_identity(identity, len(cameras)), cameras,
                                   neural_resolution_for(generator, self.size), skipping_grid(generator, identity))
        depth, alpha = _upsample_depth(view.depth, view.opacity(), self.size)
        rgb = _rgb_uint8(view.image, self.size)
        return IdentityViews(camera_labels.astype(np.float32), rgb,
                             np.full(rgb.shape[:3], IGNORE_LABEL, np.uint8),
                             depth[:, 0].cpu().numpy(), alpha[:, 0].cpu().numpy())

    def _mean_confidence(self, views: IdentityViews) -> np.ndarray:
        if views.confidence is None:
            return np.ones(len(views), np.float32)
        foreground = views.alpha >= self.alpha_threshold
        total = (views.confidence * foreground).reshape(len(views), -1).sum(1)
        return (total / np.maximum(foreground.reshape(len(views), -1).sum(1), 1)).astype(np.float32)


def targets_of(task: str, samples: Samples) -> np.ndarray:
    """What the model should predict: label ids (n, H, W) or angles (n, 2) float32."""
    return samples.labels if task == "segmentation" else samples.angles.astype(np.float32)


def open_world(project: Path, task: str, size: int, principal: int, device: str = "cpu", branch_file=None):
    """(world, branch file or None) of a project; a pose run works without a semantic branch."""
    from core.backbone import BackboneError, pick_device
    from core.checkpoint.errors import CheckpointError
    from core.factory.generate import FactoryError, find_branch
    from core.project import Project, ProjectError
    from core.semantic import load_branch

    try:
        opened = Project.open(project)
        backbone = opened.load_backbone(device=pick_device(device))
    except (ProjectError, BackboneError, OSError, ValueError) as error:
        raise FactoryError(str(error)) from error
    branch = None
    try:
        branch_file = Path(branch_file) if branch_file else find_branch(opened)
        branch, _ = load_branch(branch_file, backbone_hash=backbone.content_hash, device=backbone.device)
        branch = branch.eval()
    except (FactoryError, CheckpointError) as error:
        if task == "segmentation":
            raise FactoryError(f"a segmentation run needs the factory's labels: {error}") from error
        branch_file = None
    world = SteeringWorld(backbone, branch, opened.label_set, size, principal)
    world.branch_file = branch_file
    return world, branch_file
