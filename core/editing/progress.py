"""Progress reports of inversion and editing, for tqdm on the command line and the GUI's bars."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepReport:
    phase: str  # 'start k/n' (short runs from each starting point), 'refine' or 'edit'
    step: int  # steps done so far over the whole run
    total_steps: int
    loss: float
    terms: dict = field(default_factory=dict)  # the loss's named parts
    yaw: float = float("nan")
    pitch: float = float("nan")
    # Every few steps of an edit: the current render (H, W, 3) uint8 and labels (H, W) uint8.
    preview_rgb: np.ndarray | None = None
    preview_labels: np.ndarray | None = None


def never_stop() -> bool:
    return False


def ignore_progress(report: StepReport) -> None:
    pass
