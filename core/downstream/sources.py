"""Where the training pairs of each arm come from.

* annotations: a project's painted masks (core.semantic.annotated_views), or, without a project,
  the simulated annotator's masks built in memory exactly as `annotate-sim` writes them (same
  seeds, views and resolution); the image of an annotation is the backbone's render of its view,
  which is what a person paints on in the Annotate workspace;
* generated pairs: the factory's unit of work (core.factory.render_identity_views: backbone RGB,
  semantic-branch labels, depth, opacity) on new identities at random views of VIEW_RANGE, and
  each identity's views fused into a labelled point cloud (core.factory.fuse_views).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.camera import Camera
from core.imaging import resize_labels
from core.downstream.testsets import random_views
from core.procedural import HeadParams, seeds_for
from core.procedural.renderer import render as procedural_render
from core.semantic.training import AnnotatedView

# annotate-sim's documented views and DatasetNeRF's protocol: each identity frontal, left, right.
ANNOTATION_VIEWS = [(-30.0, 0.0), (0.0, 0.0), (30.0, 0.0)]
ANNOTATION_RESOLUTION = 128
# Generated identities: seeds from the top of the 'fit' range. The backbone was fit on random
# seeds of that whole range, so these are ordinary samples of its latent space, and they can
# never be test or annotation identities.
GENERATION_SEED_START = 900_000
VIEWS_PER_IDENTITY = 4


@dataclass
class PairSet:
    """Training pairs at one resolution, with where each came from."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N, H, W) uint8 label ids
    seeds: np.ndarray  # (N,) int64 identity seed of each pair (-1: not a seed)
    camera_labels: np.ndarray  # (N, 25) float32
    cloud_points: list = field(default_factory=list)  # per identity (P, 3) float32
    cloud_labels: list = field(default_factory=list)  # per identity (P,) uint8

    def __len__(self) -> int:
        return len(self.images)

    def first(self, count: int) -> "PairSet":
        if count > len(self):
            raise ValueError(f"asked for {count} pairs, only {len(self)} exist")
        identities = len(np.unique(self.seeds[:count]))
        return PairSet(self.images[:count], self.labels[:count], self.seeds[:count], self.camera_labels[:count],
                       self.cloud_points[:identities], self.cloud_labels[:identities])

    @classmethod
    def concatenate(cls, parts: list["PairSet"]) -> "PairSet":
        return cls(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.seeds for p in parts]), np.concatenate([p.camera_labels for p in parts]),
                   [c for p in parts for c in p.cloud_points], [c for p in parts for c in p.cloud_labels])


# ---------------------------------------------------------------------------- annotations
def simulated_annotations(count: int, resolution: int = ANNOTATION_RESOLUTION) -> list[AnnotatedView]:
    """`count` procedural masks: identities of the 'annotate' range, ANNOTATION_VIEWS each, in that order."""
    identities = math.ceil(count / len(ANNOTATION_VIEWS))
    annotations = []
    for seed in seeds_for("annotate", identities):
        params = HeadParams.from_seed(seed)
        for yaw, pitch in ANNOTATION_VIEWS:
            label = Camera(yaw=yaw, pitch=pitch).label()
            mask = procedural_render(params, label, resolution)["labels"]
            annotations.append(AnnotatedView(seed, label, mask, source=f"simulated seed {seed} yaw {yaw:g} pitch {pitch:g}"))
    return annotations[:count]


def identity_of(backbone, annotation: AnnotatedView):
    if isinstance(annotation.identity, (int, np.integer)):
        return backbone.identity_from_seed(int(annotation.identity), annotation.truncation_psi,
                                           annotation.truncation_cutoff)
    ws = torch.as_tensor(annotation.identity, dtype=torch.float32)
    return backbone.identity_from_ws(ws if ws.ndim == 3 else ws[None])


@torch.no_grad()
def backbone_rgb(generator, identity, camera_labels: torch.Tensor, resolution: int) -> np.ndarray:
    """(V, H, W, 3) uint8 backbone renders of views of one identity at the output resolution."""
    neural = min(int(generator.neural_rendering_resolution), resolution)
    images = []
    for label in camera_labels:
        image = generator.render(identity, label[None].to(identity.planes.device), neural, deterministic=True).image
        if image.shape[-1] != resolution:
            image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                  antialias=image.shape[-1] > resolution)
        images.append((image[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy())
    return np.stack(images)


def annotation_pairs(backbone, annotations: list[AnnotatedView], resolution: int, progress=None) -> PairSet:
    """The annotations alone as training pairs: backbone render of each view, mask at `resolution`."""
    images, labels, seeds, cameras = [], [], [], []
    for index, annotation in enumerate(annotations):
        camera = torch.as_tensor(annotation.camera_label, dtype=torch.float32).reshape(1, 25)
        images.append(backbone_rgb(backbone.generator, identity_of(backbone, annotation), camera, resolution)[0])
        labels.append(resize_labels(annotation.mask, resolution))
        seeds.append(int(annotation.identity) if isinstance(annotation.identity, (int, np.integer)) else -1)
        cameras.append(camera[0].numpy())
        if progress:
            progress(index + 1, len(annotations))
    return PairSet(np.stack(images), np.stack(labels), np.asarray(seeds, np.int64), np.stack(cameras))


# ---------------------------------------------------------------------------- generated pairs
def generation_views(seed: int, count: int = VIEWS_PER_IDENTITY) -> list[tuple[float, float]]:
    """The random views of one generated identity (a function of its seed, so runs repeat)."""
    return random_views(count, np.random.default_rng(seed))


def generate_identities(backbone, branch, seeds: list[int], resolution: int,
                        views_per_identity: int = VIEWS_PER_IDENTITY, progress=None, should_stop=None,
                        alpha_threshold: float | None = None) -> PairSet:
    """Pairs of `seeds` × views through the factory's renderer, and each identity's fused cloud."""
    from core.factory import fuse_views, render_identity_views

    parts = []
    for index, seed in enumerate(seeds):
        if should_stop is not None and should_stop():
            break
        cameras = np.stack([Camera(yaw=yaw, pitch=pitch).label().numpy()
                            for yaw, pitch in generation_views(seed, views_per_identity)])
        views = render_identity_views(backbone.generator, branch, backbone.identity_from_seed(seed), cameras, resolution)
        cloud = fuse_views(views) if alpha_threshold is None else fuse_views(views, alpha_threshold)
        parts.append(PairSet(views.rgb, views.labels, np.full(len(views), seed, np.int64), views.camera_labels,
                             [cloud.points], [cloud.labels]))
        if progress:
            progress(index + 1, len(seeds))
    if not parts:
        raise ValueError("generation was stopped before the first identity")
    return PairSet.concatenate(parts)


def generation_seeds(count: int, start: int = 0) -> list[int]:
    return list(range(GENERATION_SEED_START + start, GENERATION_SEED_START + start + count))
