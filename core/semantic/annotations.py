"""A project's annotations (core.project) as the semantic trainer's `AnnotatedView`s.

The store validates every file (size, label ids, backbone hash) and reports the bad ones instead
of yielding them; this adapter only turns what is left into training samples, so that the
command line and the GUI train on exactly what the Annotate workspace saved.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from core.semantic.training import AnnotatedView


def annotated_views(project, problems: list | None = None) -> list[AnnotatedView]:
    """Every valid annotation of `project`; problems (bad files, unreadable w files) go to `problems`."""
    views = []
    for annotation in project.iter_training_annotations(problems):
        meta = annotation.meta
        png_path, _ = project.annotation_paths(meta.id)
        try:
            identity = _identity(project, meta.identity)
        except (OSError, ValueError) as error:
            _report(ValueError(f"{png_path}: its identity cannot be loaded: {error}"), problems)
            continue
        views.append(AnnotatedView(
            identity=identity,
            camera_label=torch.tensor(meta.camera_label, dtype=torch.float32),
            mask=annotation.mask,
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
