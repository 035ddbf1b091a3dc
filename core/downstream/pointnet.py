"""A PointNet-style part segmenter for labelled point clouds (DatasetNeRF §5.2).

PointNet (Qi et al. 2017) without the input/feature transform networks (every cloud here is in
the same world frame, as the factory writes it): a shared per-point MLP, a max-pooled global
feature, and a per-point head on [local feature, global feature]. Widths are reduced from
64-128-1024 to 64-128-256 for the CPU. Coordinates are divided by HEAD_SCALE so that they lie
in the unit ball.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.metrics import confusion_matrix, label_figures, per_class_iou

HEAD_SCALE = 0.45  # every head of the category lies within this radius of the origin


@dataclass
class PointNetSettings:
    steps: int = 600
    batch_size: int = 8
    points_per_cloud: int = 1024
    learning_rate: float = 1e-3
    jitter: float = 0.005  # world units of Gaussian noise per point while training
    seed: int = 0


def _shared_mlp(*widths: int) -> nn.Sequential:
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv1d(a, b, 1), nn.BatchNorm1d(b), nn.ReLU()]
    return nn.Sequential(*layers)


class PointNetSeg(nn.Module):
    """Points (N, 3, P) → logits (N, K, P)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.local = _shared_mlp(3, 64, 64)
        self.global_features = _shared_mlp(64, 128, 256)
        self.head = nn.Sequential(_shared_mlp(64 + 256, 128, 64), nn.Conv1d(64, num_classes, 1))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        local = self.local(points / HEAD_SCALE)
        pooled = self.global_features(local).amax(2, keepdim=True).expand(-1, -1, points.shape[2])
        return self.head(torch.cat([local, pooled], 1))


def train_pointnet(clouds: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                   settings: PointNetSettings | None = None,
                   progress: Callable[[int, int, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> tuple[PointNetSeg, float]:
    """Train on (points (P, 3), labels (P,)) clouds; returns the model and the training seconds."""
    settings = settings or PointNetSettings()
    clouds = [(np.asarray(p, np.float32), np.asarray(l, np.int64)) for p, l in clouds if len(p)]
    if not clouds:
        raise ValueError("there are no (non-empty) training point clouds")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = PointNetSeg(num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    started = time.monotonic()
    model.train()
    for step in range(settings.steps):
        if should_stop is not None and should_stop():
            break
        points, labels = _batch(clouds, settings, rng)
        loss = F.cross_entropy(model(points), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress:
            progress(step + 1, settings.steps, float(loss.detach()))
    return model.eval(), time.monotonic() - started


def _batch(clouds, settings: PointNetSettings, rng):
    points, labels = [], []
    for index in rng.integers(0, len(clouds), settings.batch_size):
        cloud_points, cloud_labels = clouds[index]
        pick = rng.integers(0, len(cloud_points), settings.points_per_cloud)
        points.append(cloud_points[pick] + rng.normal(0, settings.jitter, (len(pick), 3)).astype(np.float32))
        labels.append(cloud_labels[pick])
    return torch.from_numpy(np.stack(points)).transpose(1, 2), torch.from_numpy(np.stack(labels))


@torch.no_grad()
def predict_cloud(model: PointNetSeg, points: np.ndarray) -> np.ndarray:
    """Labels (P,) of every point of one cloud (one pass: the max-pool sees the whole cloud)."""
    tensor = torch.from_numpy(np.asarray(points, np.float32)).T[None]
    return model.eval()(tensor)[0].argmax(0).to(torch.uint8).numpy()


def point_figures(model: PointNetSeg, test_points: list, test_labels: list, class_names: list[str]) -> dict:
    """Accuracy and mIoU over every point of every test cloud (core.metrics)."""
    confusion = sum(confusion_matrix(predict_cloud(model, points), labels, len(class_names))
                    for points, labels in zip(test_points, test_labels))
    figures = label_figures(confusion, class_names)
    # A surface cloud has no background points: a point labelled background is already an error of
    # its true part, so also report the mean over the classes present in the truth alone.
    ious = per_class_iou(confusion)
    present = np.asarray(confusion).sum(1) > 0
    figures["miou_truth_classes"] = float(np.nanmean(ious[present])) if present.any() else float("nan")
    figures["clouds"] = len(test_points)
    figures["points"] = int(sum(len(points) for points in test_points))
    return figures
