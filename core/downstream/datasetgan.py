"""The DatasetGAN-style baseline: a pixel classifier on the generator's 2D synthesis features.

DatasetGAN (Zhang et al. 2021) upsamples every StyleGAN synthesis block's feature map to the image
size, concatenates them per pixel, and trains a small ensemble of MLPs on the painted pixels; new
samples are then labelled pixel by pixel. It has no 3D rendering: its features belong to the
generator's 2D image pathway. In a tri-plane generator that pathway is the synthesis network that
produces the planes: its block outputs (`Identity.block_features`, 4² … R²) are 2D maps on the
plane grid, shared by every view of the identity, and no image is made from them without volume
rendering. The baseline therefore uses exactly those maps, as DatasetGAN would:

* pixel (i, j) of a view is described by the upsampled block features at grid cell (i, j)
  (each block scaled to unit RMS, as the semantic tri-plane does, so no block dominates), plus
  the view's direction (the camera's forward vector), because one classifier serves every view
  of an identity and a 2D feature map cannot otherwise tell a left from a frontal view;
* trained on the same annotations as the semantic branch (mask pixels of the annotation views);
* its generated image for a (identity, view) is the backbone's render of that view — the same
  image the factory writes — so both arms train the segmenter on identical images and differ
  only in their labels.

The classifier is DatasetGAN's: Linear-ReLU-BatchNorm (128), Linear-ReLU-BatchNorm (32), Linear,
an ensemble whose softmax outputs are averaged (3 members here instead of 10, for the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.camera import split_label
from core.downstream.sources import identity_of
from core.imaging import resize_labels
from core.semantic.training import IGNORE_LABEL, AnnotatedView

VIEW_CODE_SCALE = 3.0  # the view direction's weight among ~600 unit-RMS feature channels


@dataclass
class PixelClassifierSettings:
    members: int = 3
    steps: int = 800
    pixels_per_step: int = 2048
    learning_rate: float = 1e-3
    seed: int = 0


class PixelClassifier(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 128), nn.ReLU(), nn.BatchNorm1d(128),
            nn.Linear(128, 32), nn.ReLU(), nn.BatchNorm1d(32),
            nn.Linear(32, num_classes))

    def forward(self, x):
        return self.layers(x)


def block_feature_maps(identity, resolution: int) -> torch.Tensor:
    """(C_total, H, W) float32: every synthesis block's output, unit RMS, resized to the image size."""
    maps = []
    for res in sorted(identity.block_features):
        features = identity.block_features[res][:1].float()
        features = features / features.pow(2).mean().add(1e-8).sqrt()
        maps.append(F.interpolate(features, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                  antialias=res > resolution)[0])
    return torch.cat(maps)


def view_code(camera_label) -> torch.Tensor:
    """The camera's forward direction (3,), scaled: what a view-agnostic 2D feature map lacks."""
    cam2world, _ = split_label(torch.as_tensor(np.asarray(camera_label, np.float32)).reshape(25))
    return cam2world.reshape(-1, 4, 4)[0, :3, 2] * VIEW_CODE_SCALE


def pixel_inputs(feature_map: torch.Tensor, camera_label) -> torch.Tensor:
    """(H·W, C + 3) classifier inputs of one view, pixels in row-major order."""
    channels = feature_map.shape[0]
    pixels = feature_map.reshape(channels, -1).T
    return torch.cat([pixels, view_code(camera_label).expand(pixels.shape[0], 3)], 1)


class PixelEnsemble:
    """Trained members and the features they expect; labels any view of any identity."""

    def __init__(self, members: list[PixelClassifier], resolution: int):
        self.members = members
        self.resolution = resolution

    @torch.no_grad()
    def label_view(self, identity, camera_label, feature_map: torch.Tensor | None = None) -> np.ndarray:
        feature_map = block_feature_maps(identity, self.resolution) if feature_map is None else feature_map
        inputs = pixel_inputs(feature_map, camera_label)
        probabilities = sum(F.softmax(member.eval()(inputs), 1) for member in self.members)
        return probabilities.argmax(1).reshape(self.resolution, self.resolution).to(torch.uint8).numpy()


def train_pixel_ensemble(backbone, annotations: list[AnnotatedView], num_classes: int, resolution: int,
                         settings: PixelClassifierSettings | None = None,
                         progress: Callable[[int, int], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> PixelEnsemble:
    """Train the ensemble on the annotations' painted pixels (at `resolution`)."""
    settings = settings or PixelClassifierSettings()
    features, masks, cameras = _training_pixels(backbone, annotations, resolution)
    in_features = features[0].shape[0] + 3
    rng = np.random.default_rng(settings.seed)
    painted = [np.flatnonzero(mask.reshape(-1) != IGNORE_LABEL) for mask in masks]
    codes = [view_code(camera) for camera in cameras]
    members, total = [], settings.members * settings.steps
    for member_index in range(settings.members):
        torch.manual_seed(settings.seed * 101 + member_index)
        member = PixelClassifier(in_features, num_classes)
        optimizer = torch.optim.Adam(member.parameters(), lr=settings.learning_rate)
        member.train()
        for step in range(settings.steps):
            if should_stop is not None and should_stop():
                raise InterruptedError("training of the pixel classifier was stopped")
            inputs, targets = _pixel_batch(features, masks, codes, painted, settings.pixels_per_step, rng)
            loss = F.cross_entropy(member(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress:
                progress(member_index * settings.steps + step + 1, total)
        members.append(member.eval())
    return PixelEnsemble(members, resolution)


def _training_pixels(backbone, annotations, resolution):
    """Per annotation: its identity's feature map (shared between views, float16), mask, camera."""
    by_identity, features, masks, cameras = {}, [], [], []
    for annotation in annotations:
        key = annotation.identity if isinstance(annotation.identity, (int, np.integer)) else id(annotation.identity)
        if key not in by_identity:
            by_identity[key] = block_feature_maps(identity_of(backbone, annotation), resolution).half()
        features.append(by_identity[key])
        masks.append(resize_labels(annotation.mask, resolution))
        cameras.append(annotation.camera_label)
    if not annotations:
        raise ValueError("there are no annotations to train the pixel classifier on")
    return features, masks, cameras


def _pixel_batch(features, masks, codes, painted, count: int, rng):
    views = rng.integers(0, len(masks), count)
    inputs, targets = [], []
    for view in np.unique(views):
        take = int((views == view).sum())
        pixels = rng.choice(painted[view], take)
        feature = features[view].reshape(features[view].shape[0], -1)[:, torch.from_numpy(pixels)].T.float()
        inputs.append(torch.cat([feature, codes[view].expand(take, 3)], 1))
        targets.append(torch.from_numpy(masks[view].reshape(-1)[pixels].astype(np.int64)))
    return torch.cat(inputs), torch.cat(targets)


def label_pairs(ensemble: PixelEnsemble, backbone, seeds: np.ndarray, camera_labels: np.ndarray, progress=None) -> np.ndarray:
    """DatasetGAN labels (N, H, W) for generated (seed, camera) pairs (feature maps once per seed)."""
    labels, cached_seed, feature_map = [], None, None
    for index, (seed, camera) in enumerate(zip(seeds, camera_labels)):
        if seed != cached_seed:
            cached_seed = seed
            feature_map = block_feature_maps(backbone.identity_from_seed(int(seed)), ensemble.resolution)
        labels.append(ensemble.label_view(None, camera, feature_map))
        if progress:
            progress(index + 1, len(seeds))
    return np.stack(labels)
