"""The project's semantic branch as the workspaces see it: the newest trained one, or why there is none.

Branches are trained into the project's `semantic/` folder (design §4) by the Train dialog or
`main.py train-semantic`; the window loads the newest checkpoint there whenever the session or
the folder changes and hands it to every workspace that shows labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.semantic import load_branch

TRAIN_HINT = "Project → Train Semantic Branch…"


@dataclass
class BranchState:
    """A loaded branch (or None) and a plain sentence for the user about it."""

    branch: object | None
    note: str
    path: Path | None = None
    step: int | None = None


def semantic_folder(project) -> Path:
    return project.semantic_dir


def load_project_branch(project, backbone) -> BranchState:
    """The newest semantic branch of `project` for `backbone`; never raises, says what is missing."""
    if backbone is None:
        return BranchState(None, "No backbone is loaded.")
    if project is None:
        return BranchState(None, "Part labels need a project with a trained semantic branch: "
                                 f"open or create a project, annotate a few views, then {TRAIN_HINT}")
    path = project.current_branch()
    if path is None:
        return BranchState(None, f"This project has no trained semantic branch yet; annotate a few views, "
                                 f"then {TRAIN_HINT}")
    try:
        branch, metadata = load_branch(path, backbone_hash=backbone.content_hash, device=backbone.device)
    except Exception as error:  # a damaged file or another backbone's branch: say so, keep working
        return BranchState(None, f"The semantic branch {path.name} cannot be used: {error}")
    branch.eval().requires_grad_(False)
    step = int(metadata.get("step", 0))
    return BranchState(branch, f"Semantic branch: {path.name} (step {step})", path, step)


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label ids (H, W) → RGB (H, W, 3) uint8; ids outside the palette are drawn black."""
    lookup = np.zeros((256, 3), np.uint8)
    lookup[: len(palette)] = palette[:256]
    return lookup[labels]


def blend_labels(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The RGB frame with every labelled (non-background) pixel tinted by its label's colour."""
    if labels.shape != rgb.shape[:2]:
        labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    colours = colour_labels(labels, palette).astype(np.float32)
    tinted = rgb.astype(np.float32) * (1 - opacity) + colours * opacity
    return np.where((labels != 0)[..., None], tinted, rgb).round().astype(np.uint8)
