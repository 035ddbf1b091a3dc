"""Training and testing the downstream segmenter on (image, label) pairs.

The same loop trains every arm of the comparison (factory output, annotations alone, the
DatasetGAN-style baseline), so that the only difference between them is the data.
Augmentation: random horizontal flips that swap left and right part ids (the category is
left/right symmetric, so a mirrored head with swapped labels is as real as any other) and a
small brightness/contrast jitter.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.downstream.segnet import SegNet, SegNetConfig
from core.metrics import confusion_matrix, label_figures
from core.project.labels import UNLABELLED_ID

IGNORE_LABEL = UNLABELLED_ID  # the project's unlabelled value: one reserved value everywhere


@dataclass
class SegmenterSettings:
    steps: int = 1500
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    seed: int = 0
    flip_table: np.ndarray | None = None  # label id → id in a mirrored image; None: no flips
    jitter: float = 0.1  # brightness/contrast jitter amplitude


@dataclass
class SegmenterProgress:
    step: int
    total_steps: int
    loss: float
    elapsed_s: float


@dataclass
class SegmenterResult:
    model: SegNet
    steps: int
    stopped: bool
    seconds: float
    history: list = field(default_factory=list)  # (step, loss)


def check_pairs(images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """(N, H, W, 3) uint8 images and (N, H, W) label ids, or a ValueError saying what is off."""
    if images.ndim != 4 or images.shape[-1] != 3 or labels.shape != images.shape[:3]:
        raise ValueError(f"expected images (N, H, W, 3) and labels (N, H, W), got {images.shape} and {labels.shape}")
    if len(images) == 0:
        raise ValueError("there are no training pairs")
    valid = labels[labels != IGNORE_LABEL]
    if valid.size and valid.max() >= num_classes:
        raise ValueError(f"labels hold id {int(valid.max())}, beyond the {num_classes} classes")


def train_segmenter(images: np.ndarray, labels: np.ndarray, num_classes: int,
                    settings: SegmenterSettings | None = None,
                    progress: Callable[[SegmenterProgress], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> SegmenterResult:
    """Train a SegNet from scratch on uint8 images (N, H, W, 3) and label ids (N, H, W)."""
    settings = settings or SegmenterSettings()
    check_pairs(images, labels, num_classes)
    torch.manual_seed(settings.seed)
    model = SegNet(SegNetConfig(num_classes, width=settings.width))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(settings.steps))
    rng = np.random.default_rng(settings.seed)
    started, history, stopped = time.monotonic(), [], False
    model.train()
    for step in range(settings.steps):
        if should_stop is not None and should_stop():
            stopped = True
            break
        batch_images, batch_labels = _augmented_batch(images, labels, settings, rng)
        loss = F.cross_entropy(model(batch_images), batch_labels, ignore_index=IGNORE_LABEL)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append((step + 1, float(loss.detach())))
        if progress is not None:
            progress(SegmenterProgress(step + 1, settings.steps, history[-1][1], time.monotonic() - started))
    model.eval()
    return SegmenterResult(model, len(history), stopped, time.monotonic() - started, history)


def _warmup_cosine(steps: int):
    """Learning-rate factor: linear warm-up over the first 5 % of the steps, then cosine to 0."""
    warmup = max(1, steps // 20)
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))


def _augmented_batch(images, labels, settings: SegmenterSettings, rng: np.random.Generator):
    index = rng.integers(0, len(images), settings.batch_size)
    batch_images = images[index].astype(np.float32) / 255.0
    batch_labels = labels[index].astype(np.int64)
    if settings.flip_table is not None:
        flip = rng.random(len(index)) < 0.5
        table = np.asarray(settings.flip_table, np.int64)
        batch_images[flip] = batch_images[flip, :, ::-1]
        flipped = batch_labels[flip, :, ::-1]
        unpainted = flipped == IGNORE_LABEL
        batch_labels[flip] = np.where(unpainted, IGNORE_LABEL, table[np.where(unpainted, 0, flipped)])
    if settings.jitter:
        gain = 1 + settings.jitter * rng.uniform(-1, 1, (len(index), 1, 1, 1))
        offset = settings.jitter * rng.uniform(-0.5, 0.5, (len(index), 1, 1, 1))
        batch_images = np.clip((batch_images - 0.5) * gain + 0.5 + offset, 0, 1).astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(batch_images)).permute(0, 3, 1, 2)
    return tensor, torch.from_numpy(np.ascontiguousarray(batch_labels))


@torch.no_grad()
def predict(model: SegNet, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Label ids (N, H, W) uint8 of uint8 images (N, H, W, 3)."""
    model.eval()
    out = []
    for first in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[first:first + batch_size].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        out.append(model(batch).argmax(1).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3], np.uint8)


def segmentation_figures(prediction: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict:
    """mIoU, pixel accuracy and per-class IoU (core.metrics) over a whole test set."""
    confusion = confusion_matrix(prediction, truth, len(class_names), ignore=IGNORE_LABEL)
    figures = label_figures(confusion, class_names)
    figures["images"] = int(len(truth))
    return figures

