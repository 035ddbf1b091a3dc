"""Test sets of the downstream evaluation: procedural renders of identities nothing else uses.

Seeds come from the top of the 'evaluate' range (SEED_RANGES): `evaluate fit`, `evaluate labels`
and contact sheets take the *first* seeds of that range (seeds_for('evaluate', n) with n in the
hundreds at most), so the last 30,000 are reserved here, split three ways so that the image,
video and point-cloud test sets do not share identities either. tests/test_downstream.py checks
the sub-ranges are disjoint from each other and from the first 100,000 evaluate seeds.

* individual: one random view per identity, yaw and pitch uniform in VIEW_RANGE (the range the
  generated training data covers; DatasetNeRF's "arbitrary poses within the training spectrum");
* video: 61-frame orbits, yaw sweeping VIEW_RANGE's yaw and pitch one sine period inside it;
* point clouds: each identity's visible surface from a few random views of VIEW_RANGE, each
  point with its procedural part label (the renderer's hit points, labelled by label_at_points).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.camera import Camera, ray_bundle, split_label
from core.procedural import LABELS, SEED_RANGES, HeadParams, ProceduralHead

_EVALUATE = SEED_RANGES["evaluate"]
INDIVIDUAL_SEEDS = range(_EVALUATE.stop - 30_000, _EVALUATE.stop - 20_000)
VIDEO_SEEDS = range(_EVALUATE.stop - 20_000, _EVALUATE.stop - 10_000)
POINT_CLOUD_SEEDS = range(_EVALUATE.stop - 10_000, _EVALUATE.stop)

# Degrees. Generated training views and test views are drawn from the same range.
VIEW_RANGE = {"yaw": (-45.0, 45.0), "pitch": (-20.0, 20.0)}
VIDEO_FRAMES = 61
# Test images are composited on black: the background of every image the generator makes (EG3D
# composites on black, so factory images and annotation renders have it). The category's grey is
# the fit's convention only; a grey test background would measure the convention, not the parts.
TEST_BACKGROUND = (0.0, 0.0, 0.0)
CLASS_NAMES = [name for _, name, _ in LABELS]


@dataclass
class ImageTestSet:
    name: str
    images: np.ndarray  # (N, H, W, 3) uint8 procedural RGB
    labels: np.ndarray  # (N, H, W) uint8 procedural part ids
    seeds: list[int]
    views: list[tuple[float, float]]  # (yaw, pitch) per image

    def __len__(self) -> int:
        return len(self.images)


def random_views(count: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    yaw, pitch = VIEW_RANGE["yaw"], VIEW_RANGE["pitch"]
    return [(float(rng.uniform(*yaw)), float(rng.uniform(*pitch))) for _ in range(count)]


def orbit_views(frames: int = VIDEO_FRAMES) -> list[tuple[float, float]]:
    """Yaw sweeps the range once; pitch makes one sine period inside it (a smooth video)."""
    t = np.linspace(0.0, 1.0, frames)
    (yaw_low, yaw_high), (_, pitch_high) = VIEW_RANGE["yaw"], VIEW_RANGE["pitch"]
    yaw = yaw_low + (yaw_high - yaw_low) * t
    pitch = 0.75 * pitch_high * np.sin(2 * np.pi * t)
    return [(float(y), float(p)) for y, p in zip(yaw, pitch)]


def _render(head: ProceduralHead, yaw: float, pitch: float, resolution: int) -> dict:
    return head.render(Camera(yaw=yaw, pitch=pitch).label(), resolution, background=TEST_BACKGROUND)


def _as_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def individual_test_set(count: int = 90, resolution: int = 64, progress=None) -> ImageTestSet:
    """`count` identities, one random view each."""
    seeds = list(INDIVIDUAL_SEEDS[:count])
    views = random_views(count, np.random.default_rng(INDIVIDUAL_SEEDS.start))
    images, labels = [], []
    for index, (seed, (yaw, pitch)) in enumerate(zip(seeds, views)):
        buffers = _render(ProceduralHead(HeadParams.from_seed(seed)), yaw, pitch, resolution)
        images.append(_as_uint8(buffers["rgb"]))
        labels.append(buffers["labels"])
        if progress:
            progress(index + 1, count)
    return ImageTestSet("individual", np.stack(images), np.stack(labels), seeds, views)


def video_test_set(orbits: int = 2, frames: int = VIDEO_FRAMES, resolution: int = 64, progress=None) -> ImageTestSet:
    """`orbits` identities, each a `frames`-frame orbit."""
    views = orbit_views(frames)
    images, labels, seeds = [], [], []
    for orbit, seed in enumerate(VIDEO_SEEDS[:orbits]):
        head = ProceduralHead(HeadParams.from_seed(seed))
        for index, (yaw, pitch) in enumerate(views):
            buffers = _render(head, yaw, pitch, resolution)
            images.append(_as_uint8(buffers["rgb"]))
            labels.append(buffers["labels"])
            seeds.append(seed)
            if progress:
                progress(orbit * frames + index + 1, orbits * frames)
    return ImageTestSet("video", np.stack(images), np.stack(labels), seeds, views * orbits)


# ---------------------------------------------------------------------------- point clouds
@dataclass
class PointCloudTestSet:
    points: list[np.ndarray]  # per cloud (P, 3) float32 world coordinates
    labels: list[np.ndarray]  # per cloud (P,) uint8 procedural part ids
    seeds: list[int]


def procedural_point_cloud(seed: int, views: list[tuple[float, float]], resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Surface points of one procedural identity seen from `views`, with their true labels.

    Points are the renderer's own ray hits (origin + depth · unit direction), so they lie on the
    zero level set to the tracer's tolerance; labels come from label_at_points at those points.
    """
    head = ProceduralHead(HeadParams.from_seed(seed))
    points = []
    for yaw, pitch in views:
        label = Camera(yaw=yaw, pitch=pitch).label()
        depth = _render(head, yaw, pitch, resolution)["depth"].reshape(-1)
        cam2world, intrinsics = split_label(label.reshape(25))
        origins, directions = (array[0].numpy() for array in ray_bundle(cam2world, intrinsics, resolution))
        hit = np.isfinite(depth)
        points.append(origins[hit] + depth[hit, None] * directions[hit])
    points = np.concatenate(points).astype(np.float32)
    return points, head.label_at_points(points).astype(np.uint8)


def point_cloud_test_set(count: int = 20, views_per_cloud: int = 4, resolution: int = 64, progress=None) -> PointCloudTestSet:
    rng = np.random.default_rng(POINT_CLOUD_SEEDS.start)
    seeds, points, labels = list(POINT_CLOUD_SEEDS[:count]), [], []
    for index, seed in enumerate(seeds):
        cloud_points, cloud_labels = procedural_point_cloud(seed, random_views(views_per_cloud, rng), resolution)
        points.append(cloud_points)
        labels.append(cloud_labels)
        if progress:
            progress(index + 1, count)
    return PointCloudTestSet(points, labels, seeds)
