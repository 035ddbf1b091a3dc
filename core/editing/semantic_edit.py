"""3D-aware semantic editing (DatasetNeRF §5.4).

The user repaints part of an identity's label map in one view. With r the region of interest —
the pixels of the edited labels before and after the edit, dilated a little — the latent w+ is
optimised with Adam on

    L(w) = CE(S(w), M_edit) + λ₁ ‖(1 − r) ⊙ (I(w) − I₀)‖² + λ₂ P((1 − r) ⊙ I(w), (1 − r) ⊙ I₀)

where S(w) are the semantic branch's logits, I(w) the backbone's RGB, I₀ the RGB before the edit
and P the perceptual loss (core.editing.perceptual). The camera stays where the edit was painted.
Because the latent, not the image, changes, the edited identity can be seen from every angle.

Which labels are "edited": every label whose pixels the edit touches, unless the edit touched only
a small part of it (< EDITED_LABEL_FRACTION of its area before ∪ after): painting an eye larger
edits the eye, not the whole head around it; removing an ear edits the ear, not the background.
The caller can also name them (`edited_labels`). The changed pixels themselves are always in r.

For speed the optimisation renders at `settings.resolution` (64² by default for a 128² backbone);
the before/after renders returned are at the full resolution of the edited map.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.editing.inputs import EditingInputError, check_label_map
from core.editing.latent import Latent, w_statistics
from core.editing.perceptual import perceptual_loss
from core.editing.progress import StepReport, ignore_progress, never_stop
from core.editing.rendering import CameraRig, render, to_uint8

EDITED_LABEL_FRACTION = 0.2


class NoOpEditError(EditingInputError):
    """The edited map equals the current labels: there is nothing to optimise towards."""


@dataclass
class EditSettings:
    steps: int = 30
    resolution: int = 64  # render size while optimising
    learning_rate: float = 0.02  # of the w+ offset, in units of the spread of w (Adam moves every coordinate ~lr per step)
    rgb_weight: float = 10.0  # λ₁ (MSE in EG3D's [-1, 1] range)
    perceptual_weight: float = 1.0  # λ₂
    # Extra weight of the cross-entropy *inside r* (its mean over r's pixels). The paper's CE is a
    # mean over the whole view, where a small edit (a few % of the pixels) barely registers
    # against the RGB terms; 0 gives the paper's loss exactly.
    region_weight: float = 1.0
    dilation: int = 2  # pixels of r's dilation at the edited map's resolution
    preview_every: int = 5
    latent_space: str = "w+"


@dataclass
class EditResult:
    ws: torch.Tensor  # (1, num_ws, w_dim) after the edit
    start_ws: torch.Tensor
    yaw: float
    pitch: float
    region: np.ndarray  # (R, R) bool: r
    edited_labels: list[int]
    target: np.ndarray  # (R, R) the edited map
    rgb_before: np.ndarray  # (R, R, 3) uint8
    labels_before: np.ndarray  # (R, R) uint8
    rgb_after: np.ndarray
    labels_after: np.ndarray
    history: list[dict] = field(default_factory=list)
    perceptual: str = ""
    stopped: bool = False
    seconds: float = 0.0


@torch.no_grad()
def render_view(G, branch, ws: torch.Tensor, yaw: float, pitch: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (R, R, 3) uint8, labels (R, R) uint8) of a latent from a yaw/pitch view."""
    rig = CameraRig.of(G)
    rendered = render(G, ws, rig.label(torch.tensor(float(yaw)), torch.tensor(float(pitch))), resolution, branch)
    labels = rendered.logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
    return to_uint8(rendered.image), labels


def edited_label_ids(before: np.ndarray, after: np.ndarray, fraction: float = EDITED_LABEL_FRACTION) -> list[int]:
    """The labels an edit is about (see the module docstring)."""
    changed = before != after
    touched = np.union1d(np.unique(before[changed]), np.unique(after[changed]))
    edited = []
    for label in touched:
        area = np.logical_or(before == label, after == label)
        if np.logical_and(changed, area).sum() >= fraction * area.sum():
            edited.append(int(label))
    return edited


def region_of_interest(before: np.ndarray, after: np.ndarray, edited_labels, dilation: int) -> np.ndarray:
    """r: pixels of the edited labels before or after the edit, plus every changed pixel, dilated."""
    region = np.isin(before, edited_labels) | np.isin(after, edited_labels) | (before != after)
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
        region = cv2.dilate(region.astype(np.uint8), kernel) > 0
    return region


def edit_identity(G, branch, start_ws: torch.Tensor, yaw: float, pitch: float, edited: np.ndarray,
                  settings: EditSettings | None = None, vgg_weights=None, edited_labels=None,
                  before: tuple[np.ndarray, np.ndarray] | None = None,
                  progress: Callable[[StepReport], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> EditResult:
    """Optimise w+ so that the view (yaw, pitch) of the identity shows the edited label map.

    `edited` is an (R, R) map of label ids painted on the render of `start_ws` at R² (R = the
    backbone's resolution, as the Edit workspace shows it). `before` = (rgb, labels) of that
    render when the caller has them. A map of another size, unknown ids or no change at all
    raises EditingInputError (NoOpEditError) before anything runs.
    """
    settings = settings or EditSettings()
    progress, should_stop = progress or ignore_progress, should_stop or never_stop
    began = time.perf_counter()
    num_classes = branch.config["num_classes"]
    edited = check_label_map(edited, num_classes, "the edited label map")
    resolution = edited.shape[0]
    rgb_before, labels_before = before if before is not None else render_view(G, branch, start_ws, yaw, pitch, resolution)
    edited = check_label_map(edited, num_classes, "the edited label map", labels_before.shape[0])
    if not np.any(edited != labels_before):
        raise NoOpEditError("the edited label map is identical to the current labels: paint a change first")
    if edited_labels is None:
        edited_labels = edited_label_ids(labels_before, edited)
    region = region_of_interest(labels_before, edited, list(edited_labels), settings.dilation)

    perceptual = perceptual_loss(vgg_weights)
    objective = _EditObjective(G, start_ws, yaw, pitch, edited, region, settings, perceptual)
    w_avg, spread = w_statistics(G)
    latent = Latent(start_ws, w_avg, spread, settings.latent_space)
    optimizer = torch.optim.Adam([latent.offset], lr=settings.learning_rate)
    history, stopped = [], False
    best_loss, best_offset = float("inf"), latent.offset.detach().clone()
    for step in range(settings.steps):
        if should_stop():
            stopped = True
            break
        rendered = render(G, latent.ws(), objective.camera, settings.resolution, branch)
        loss, terms = objective(rendered)
        if loss.item() < best_loss:
            best_loss, best_offset = loss.item(), latent.offset.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"phase": "edit", "step": step + 1, "loss": loss.item(), **terms})
        report = StepReport("edit", step + 1, settings.steps, loss.item(), terms, yaw, pitch)
        if settings.preview_every and (step % settings.preview_every == 0 or step + 1 == settings.steps):
            report.preview_rgb = to_uint8(rendered.image)
            report.preview_labels = rendered.logits.argmax(1)[0].to(torch.uint8).numpy()
        progress(report)
    # The last step's update was never scored; keep it only if no earlier state scored better.
    final = _score(G, branch, latent, objective, settings.resolution)
    if final > best_loss:
        with torch.no_grad():
            latent.offset.copy_(best_offset)
    ws = latent.ws().detach().clone()
    rgb_after, labels_after = render_view(G, branch, ws, yaw, pitch, resolution)
    return EditResult(ws, start_ws.detach().clone(), float(yaw), float(pitch), region, list(edited_labels), edited,
                      rgb_before, labels_before, rgb_after, labels_after, history, perceptual.name, stopped,
                      time.perf_counter() - began)


@torch.no_grad()
def _score(G, branch, latent, objective, resolution) -> float:
    return float(objective(render(G, latent.ws(), objective.camera, resolution, branch))[0])


class _EditObjective:
    """The §5.4 loss at the optimisation resolution, against targets prepared once."""

    def __init__(self, G, start_ws, yaw, pitch, edited, region, settings: EditSettings, perceptual):
        self.camera = CameraRig.of(G).label(torch.tensor(float(yaw)), torch.tensor(float(pitch)))
        size = settings.resolution
        target = torch.from_numpy(edited.astype(np.float32))[None, None]
        self.target = F.interpolate(target, size=(size, size), mode="nearest")[:, 0].long()
        # A low-resolution pixel is in r when any of the pixels it covers is: keep r generous.
        region = torch.from_numpy(region.astype(np.float32))[None, None]
        self.inside = F.adaptive_max_pool2d(region, size) if size < region.shape[-1] else \
            F.interpolate(region, size=(size, size), mode="nearest")
        self.outside = 1 - self.inside
        with torch.no_grad():
            self.original = render(G, start_ws, self.camera, size).image  # same renderer, same size: exact at start
        self.settings, self.perceptual = settings, perceptual

    def __call__(self, rendered):
        pixel_ce = F.cross_entropy(rendered.logits, self.target, reduction="none")[:, None]
        ce = pixel_ce.mean()
        if self.settings.region_weight:
            ce = ce + self.settings.region_weight * (pixel_ce * self.inside).sum() / self.inside.sum().clamp_min(1)
        outside = self.outside
        mse = ((rendered.image - self.original) ** 2 * outside).sum() / (3 * outside.sum()).clamp_min(1)
        perceptual = self.perceptual(rendered.image * outside, self.original * outside)
        loss = ce + self.settings.rgb_weight * mse + self.settings.perceptual_weight * perceptual
        return loss, {"cross_entropy": ce.item(), "mse_outside": mse.item(), "perceptual_outside": perceptual.item()}
