"""A project's annotations (core.project) as the semantic trainer's `AnnotatedView`s.

The store validates every file (size, label ids, backbone hash) and reports the bad ones instead
of yielding them; this adapter adds the one rule of its own (a mask must hold a pixel to learn
from: neither unlabelled nor of a label marked `ignore`) and turns what is left into training
samples, so that the command line and the GUI train on exactly what the Annotate workspace saved.

`annotation_status` is the one place that says whether an annotation will be trained on and, if
not, why: Annotate's counters, the Train dialog and training itself all ask it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from core.project import AnnotationError
from core.project.labels import UNLABELLED_ID
from core.project.records import pixel_counts
from core.semantic.training import AnnotatedView

NOTHING_PAINTED = "nothing painted (every pixel is unlabelled)"
ONLY_IGNORED = "only unlabelled pixels and labels marked ignore"


@dataclass(frozen=True)
class SkippedAnnotation:
    annotation_id: int
    reason: str


@dataclass(frozen=True)
class TrainingInventory:
    """Which annotations training will use, and the others with the reason for each."""

    usable: tuple[int, ...]
    skipped: tuple[SkippedAnnotation, ...]

    @property
    def total(self) -> int:
        return len(self.usable) + len(self.skipped)

    def describe(self, limit: int = 3) -> str:
        """'3 annotated view(s): 2 used for training, 1 skipped (0002: nothing painted …)'."""
        text = f"{self.total} annotated view(s): {len(self.usable)} used for training"
        if self.skipped:
            listed = "; ".join(f"{s.annotation_id:04d}: {s.reason}" for s in self.skipped[:limit])
            more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
            text += f", {len(self.skipped)} skipped ({listed}{more})"
        return text


def trainable_reason(label_set, pixel_counts: dict[int, int]) -> str | None:
    """None when a mask with these pixel counts has something to learn from, else why not."""
    ignored = set(label_set.ignored_ids) | {UNLABELLED_ID}
    if any(count for label_id, count in pixel_counts.items() if label_id not in ignored):
        return None
    painted = any(count for label_id, count in pixel_counts.items() if label_id != UNLABELLED_ID)
    return ONLY_IGNORED if painted else NOTHING_PAINTED


def annotation_status(project, annotation_id: int) -> str | None:
    """None when training will use this annotation; else the reason it is skipped."""
    try:
        annotation = project.load_annotation(annotation_id)
    except AnnotationError as error:
        return error.problem
    return trainable_reason(project.label_set, pixel_counts(annotation.mask))


def training_inventory(project) -> TrainingInventory:
    """annotation_status of every annotation on disk (a half-saved one included)."""
    usable, skipped = [], []
    for annotation_id in project.annotation_ids():
        reason = annotation_status(project, annotation_id)
        if reason is None:
            usable.append(annotation_id)
        else:
            skipped.append(SkippedAnnotation(annotation_id, reason))
    return TrainingInventory(tuple(usable), tuple(skipped))


def annotated_views(project, problems: list | None = None) -> list[AnnotatedView]:
    """Every annotation training can use, as the trainer sees it: labels marked `ignore` become
    UNLABELLED_ID. Problems (bad files, unreadable w files, nothing to learn) go to `problems`."""
    views = []
    label_set = project.label_set
    for annotation in project.iter_training_annotations(problems):
        meta = annotation.meta
        png_path, _ = project.annotation_paths(meta.id)
        reason = trainable_reason(label_set, pixel_counts(annotation.mask))
        if reason is not None:
            _report(ValueError(f"{png_path}: {reason}"), problems)
            continue
        try:
            identity = _identity(project, meta.identity)
        except (OSError, ValueError) as error:
            _report(ValueError(f"{png_path}: its identity cannot be loaded: {error}"), problems)
            continue
        views.append(AnnotatedView(
            identity=identity,
            camera_label=torch.tensor(meta.camera_label, dtype=torch.float32),
            mask=label_set.training_mask(annotation.mask),
            truncation_psi=float(meta.identity.truncation_psi),
            truncation_cutoff=meta.identity.truncation_cutoff,
            source=str(png_path),
        ))
    return views


def _identity(project, identity_ref):
    """A seed as is, or the ws (1, num_ws, w_dim) of a saved w file (never unpickled)."""
    if identity_ref.seed is not None:
        return int(identity_ref.seed)
    ws = np.load(project.folder / identity_ref.w_file, allow_pickle=False)
    if ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or ws.shape[0] != 1 or not np.isfinite(ws).all():
        raise ValueError(f"expected finite ws of shape (1, num_ws, w_dim), got {ws.shape}")
    return torch.from_numpy(ws.astype(np.float32))


def _report(error: Exception, problems: list | None) -> None:
    # As the store does: collected when the caller asks for a list, a warning otherwise.
    if problems is None:
        warnings.warn(str(error), stacklevel=3)
    else:
        problems.append(error)
