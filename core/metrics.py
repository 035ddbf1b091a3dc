"""Label-quality figures shared by every evaluation (semantic branch, factory, editing, downstream).

All work on integer label maps of any shape; pixels whose truth equals `ignore` take no part.
A class that appears in neither prediction nor truth has no IoU (NaN) and is left out of the mean,
so a head without a visible left ear is not rewarded or punished for it.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(prediction, truth, num_classes: int, ignore: int | None = None) -> np.ndarray:
    """(num_classes, num_classes) counts: rows are the true class, columns the predicted one."""
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction has {prediction.size} pixels, truth {truth.size}")
    keep = truth != ignore if ignore is not None else np.ones(truth.shape, bool)
    prediction, truth = prediction[keep], truth[keep]
    for name, values in (("prediction", prediction), ("truth", truth)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has label ids outside 0..{num_classes - 1}")
    return np.bincount(truth * num_classes + prediction, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class; NaN for a class absent from both prediction and truth."""
    confusion = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in prediction or truth."""
    ious = per_class_iou(confusion)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def label_figures(confusion: np.ndarray, class_names: list[str] | None = None) -> dict:
    """{'miou', 'pixel_accuracy', 'per_class_iou': {name: iou or None}} for JSON reports."""
    ious = per_class_iou(confusion)
    names = class_names or [str(index) for index in range(len(ious))]
    return {
        "miou": mean_iou(confusion),
        "pixel_accuracy": pixel_accuracy(confusion),
        "per_class_iou": {name: (None if np.isnan(iou) else float(iou)) for name, iou in zip(names, ious)},
    }


def psnr(prediction, truth, peak: float = 1.0, mask=None) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, peak]; over `mask` pixels when given."""
    difference = (np.asarray(prediction, np.float64) - np.asarray(truth, np.float64)) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        difference = difference[mask] if difference.shape == mask.shape else difference[mask, ...]
    mse = float(difference.mean()) if difference.size else float("nan")
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))
