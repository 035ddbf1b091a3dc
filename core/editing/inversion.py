"""3D inversion (DatasetNeRF §5.4): a latent and a camera pose that reproduce an image or a label map.

RGB inversion minimises MSE + λ·perceptual between the render and the image; segmentation
inversion minimises the pixel cross-entropy between the semantic branch's logits and the label
map. Both optimise the latent (w+ by default, or one w) and the camera's yaw and pitch jointly with
Adam. A GAN's inversion depends on where it starts, so a short run is made from each of several
starting points (w_avg at a few yaws, plus random identities) at a low resolution, and the best
one is refined at the full optimisation resolution; the best state seen is what is returned.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.editing.latent import Latent, random_ws, w_statistics
from core.editing.perceptual import perceptual_loss
from core.editing.progress import StepReport, ignore_progress, never_stop
from core.editing.rendering import PITCH_LIMIT, CameraRig, render, to_unit
from core.metrics import psnr

IGNORE_LABEL = 255
# Below these the render is far from the target: the image is far from what the backbone can
# represent. Measured at the optimisation resolution (64²) on the embedded default, default settings
# (docs/editing.md, "Reconstruction quality"): a procedural render of the category 23.0 dB, SSIM
# 0.80; skimage.data.chelsea() 19.3 dB, SSIM 0.39. PSNR alone separates them by little (a blur of
# a smooth photograph scores well), the structure much more.
POOR_PSNR_DB = 20.0
POOR_SSIM = 0.6
POOR_LABEL_CONFIDENCE = 0.6  # mean of the branch's top class probability over the view
POOR_LABEL_ACCURACY = 0.7  # label inversions: fraction of labelled pixels reproduced


@dataclass
class InversionSettings:
    latent_space: str = "w+"
    resolution: int = 64  # renders while refining are this size (the target is resized to it)
    start_yaws: tuple = (-40.0, 0.0, 40.0)  # w_avg is tried from each of these yaws ...
    random_starts: int = 1  # ... and this many random identities from yaw 0
    start_steps: int = 12
    start_resolution: int = 32
    steps: int = 100  # refinement steps from the best start
    learning_rate: float = 0.05  # of the latent offset, in units of the spread of w
    pose_learning_rate: float = 1.5  # degrees per step (Adam's step size)
    perceptual_weight: float = 0.5
    optimise_pose: bool = True
    start_pitch: float = 0.0
    seed: int = 0

    def total_steps(self) -> int:
        return self.start_steps * (len(self.start_yaws) + self.random_starts) + self.steps


@dataclass
class InversionQuality:
    """How close the inverted render came to the target, measured at the optimisation resolution."""

    psnr_db: float | None = None  # RGB inversions: the render against the (resized) image
    ssim: float | None = None  # RGB inversions: structural similarity of the same pair
    label_confidence: float | None = None  # with a semantic branch: mean top-class probability
    label_accuracy: float | None = None  # label inversions: labelled pixels whose class is reproduced
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.psnr_db is not None:
            parts.append(f"PSNR {self.psnr_db:.1f} dB, SSIM {self.ssim:.2f}")
        if self.label_accuracy is not None:
            parts.append(f"label accuracy {self.label_accuracy:.2f}")
        if self.label_confidence is not None:
            parts.append(f"label confidence {self.label_confidence:.2f}")
        return ", ".join(parts) or "not measured"

    def as_dict(self) -> dict:
        return {"psnr_db": self.psnr_db, "ssim": self.ssim, "label_confidence": self.label_confidence,
                "label_accuracy": self.label_accuracy, "warnings": list(self.warnings)}


@dataclass
class InversionResult:
    ws: torch.Tensor  # (1, num_ws, w_dim)
    yaw: float
    pitch: float
    loss: float
    history: list[dict] = field(default_factory=list)  # one row per step: phase, step, loss, terms, pose
    start: str = ""  # which starting point won
    perceptual: str = ""  # name of the perceptual loss used ('' for segmentation inversion)
    stopped: bool = False
    seconds: float = 0.0
    quality: InversionQuality = field(default_factory=InversionQuality)


class _Objective:
    """A loss of a render against a target, with the target prepared once per resolution."""

    needs_branch = False

    def __init__(self):
        self._targets = {}

    def target(self, resolution: int):
        if resolution not in self._targets:
            self._targets[resolution] = self.make_target(resolution)
        return self._targets[resolution]


class RGBObjective(_Objective):
    def __init__(self, image: np.ndarray, perceptual, perceptual_weight: float):
        super().__init__()
        self.image = torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        self.perceptual = perceptual
        self.weight = perceptual_weight

    def make_target(self, resolution):
        if self.image.shape[-1] == resolution:
            return self.image
        return F.interpolate(self.image, size=(resolution, resolution), mode="area")

    def __call__(self, rendered, resolution):
        target = self.target(resolution)
        mse = F.mse_loss(rendered.image, target)
        perceptual = self.perceptual(rendered.image, target)
        return mse + self.weight * perceptual, {"mse": mse.item(), "perceptual": perceptual.item()}


class LabelObjective(_Objective):
    needs_branch = True

    def __init__(self, labels: np.ndarray):
        super().__init__()
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))[None, None].float()

    def make_target(self, resolution):
        return F.interpolate(self.labels, size=(resolution, resolution), mode="nearest")[:, 0].long()

    def __call__(self, rendered, resolution):
        ce = F.cross_entropy(rendered.logits, self.target(resolution), ignore_index=IGNORE_LABEL)
        return ce, {"cross_entropy": ce.item()}


def invert_image(G, image: np.ndarray, settings: InversionSettings | None = None, vgg_weights=None,
                 branch=None, progress: Callable[[StepReport], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> InversionResult:
    """RGB inversion of a prepared (R, R, 3) uint8 image (core.editing.inputs.prepare_image)."""
    settings = settings or InversionSettings()
    perceptual = perceptual_loss(vgg_weights)
    objective = RGBObjective(image, perceptual, settings.perceptual_weight)
    result = _invert(G, None, objective, settings, progress, should_stop, quality_branch=branch)
    result.perceptual = perceptual.name
    return result


def invert_labels(G, branch, labels: np.ndarray, settings: InversionSettings | None = None,
                  progress: Callable[[StepReport], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> InversionResult:
    """Segmentation inversion of an (R, R) label map through the semantic branch (255 = ignore)."""
    labels = np.asarray(labels)
    valid = labels[labels != IGNORE_LABEL]
    if valid.size == 0:
        raise ValueError("the label map holds no labelled pixels")
    num_classes = branch.config["num_classes"]
    if valid.max() >= num_classes:
        raise ValueError(f"the label map holds ids up to {int(valid.max())}; the branch knows 0..{num_classes - 1}")
    return _invert(G, branch, LabelObjective(labels), settings or InversionSettings(), progress, should_stop)


def _invert(G, branch, objective, settings, progress, should_stop, quality_branch=None) -> InversionResult:
    progress, should_stop = progress or ignore_progress, should_stop or never_stop
    began = time.perf_counter()
    w_avg, spread = w_statistics(G)
    rig = CameraRig.of(G)
    starts = [(f"w_avg at yaw {yaw:+.0f}", w_avg.reshape(1, 1, -1).expand(1, G.backbone.num_ws, -1), yaw)
              for yaw in settings.start_yaws]
    starts += [(f"random identity {k}", random_ws(G, settings.seed + k), 0.0) for k in range(settings.random_starts)]
    run = _Run(G, branch if objective.needs_branch else None, objective, rig, settings, progress, should_stop,
               settings.total_steps())
    candidates = []
    for index, (name, ws, yaw) in enumerate(starts):
        state = _State(Latent(ws, w_avg, spread, settings.latent_space), yaw, settings.start_pitch)
        loss = run.optimise(state, settings.start_steps, settings.start_resolution,
                            f"start {index + 1}/{len(starts)}", settings.learning_rate)
        candidates.append((loss, name, state))
        if run.stopped:
            break
    loss, name, state = min(candidates, key=lambda item: item[0])
    if not run.stopped:
        loss = run.optimise(state, settings.steps, settings.resolution, "refine", settings.learning_rate,
                            keep_best=True, decay=True)
    ws = state.latent.ws().detach().clone()
    quality = assess(G, branch or quality_branch, objective, rig.label(state.yaw_param, state.pitch_param).detach(),
                     ws, settings.resolution)
    return InversionResult(ws, float(state.yaw), float(state.pitch), float(loss),
                           run.history, name, "", run.stopped, time.perf_counter() - began, quality)


@torch.no_grad()
def assess(G, branch, objective, camera_label, ws, resolution: int) -> InversionQuality:
    """PSNR against the target image, and the label map's confidence (and accuracy against a
    target map), with a warning for each figure that says the target is out of the backbone's reach."""
    rendered = render(G, ws, camera_label, resolution, branch)
    quality = InversionQuality()
    if isinstance(objective, RGBObjective):
        from skimage.metrics import structural_similarity

        ours, theirs = to_unit(rendered.image), to_unit(objective.target(resolution))
        quality.psnr_db = float(psnr(ours, theirs))
        quality.ssim = float(structural_similarity(ours, theirs, channel_axis=2, data_range=1.0))
        if quality.psnr_db < POOR_PSNR_DB or quality.ssim < POOR_SSIM:
            quality.warnings.append(
                f"the render reproduces the image poorly (PSNR {quality.psnr_db:.1f} dB, SSIM {quality.ssim:.2f}; "
                f"poor below {POOR_PSNR_DB:.0f} dB or {POOR_SSIM}): the image is far from what this backbone can "
                "represent, and edits of it will show that")
    if rendered.logits is not None:
        probabilities = rendered.logits.softmax(1)
        quality.label_confidence = float(probabilities.max(1).values.mean())
        if quality.label_confidence < POOR_LABEL_CONFIDENCE:
            quality.warnings.append(
                f"the semantic branch is unsure of the inverted render's labels (mean confidence "
                f"{quality.label_confidence:.2f} < {POOR_LABEL_CONFIDENCE}): check the label map before editing")
    if isinstance(objective, LabelObjective):
        target = objective.target(resolution)
        labelled = target != IGNORE_LABEL
        hits = (rendered.logits.argmax(1) == target) & labelled
        quality.label_accuracy = float(hits.sum() / labelled.sum().clamp(min=1))
        if quality.label_accuracy < POOR_LABEL_ACCURACY:
            quality.warnings.append(
                f"the inverted labels reproduce the map poorly ({quality.label_accuracy:.0%} of its labelled "
                f"pixels, < {POOR_LABEL_ACCURACY:.0%})")
    return quality


class _State:
    def __init__(self, latent: Latent, yaw: float, pitch: float):
        self.latent = latent
        self.yaw_param = torch.tensor(float(yaw), requires_grad=True)
        self.pitch_param = torch.tensor(float(pitch), requires_grad=True)

    @property
    def yaw(self) -> float:
        return self.yaw_param.item()

    @property
    def pitch(self) -> float:
        return self.pitch_param.item()

    def snapshot(self):
        return self.latent.offset.detach().clone(), self.yaw, self.pitch

    def restore(self, snapshot) -> None:
        offset, yaw, pitch = snapshot
        with torch.no_grad():
            self.latent.offset.copy_(offset)
            self.yaw_param.fill_(yaw)
            self.pitch_param.fill_(pitch)


class _Run:
    def __init__(self, G, branch, objective, rig, settings, progress, should_stop, total_steps):
        self.G, self.branch, self.objective, self.rig = G, branch, objective, rig
        self.settings, self.progress, self.should_stop = settings, progress, should_stop
        self.total_steps = total_steps
        self.step = 0
        self.history: list[dict] = []
        self.stopped = False

    def optimise(self, state: _State, steps: int, resolution: int, phase: str, learning_rate: float,
                 keep_best: bool = False, decay: bool = False) -> float:
        groups = [{"params": [state.latent.offset], "lr": learning_rate}]
        if self.settings.optimise_pose:
            groups.append({"params": [state.yaw_param, state.pitch_param], "lr": self.settings.pose_learning_rate})
        optimizer = torch.optim.Adam(groups)
        base_rates = [group["lr"] for group in groups]
        best_loss, best = math.inf, None
        for local_step in range(steps):
            if self.should_stop():
                self.stopped = True
                break
            if decay:  # cosine decay to a tenth over the run settles the last steps
                scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * local_step / max(steps, 1)))
                for group, rate in zip(groups, base_rates):
                    group["lr"] = rate * scale
            label = self.rig.label(state.yaw_param, state.pitch_param)
            rendered = render(self.G, state.latent.ws(), label, resolution, self.branch)
            loss, terms = self.objective(rendered, resolution)
            if keep_best and loss.item() < best_loss:  # the state that produced this loss
                best_loss, best = loss.item(), state.snapshot()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                state.pitch_param.clamp_(-PITCH_LIMIT, PITCH_LIMIT)
                state.yaw_param.clamp_(-180.0, 180.0)
            self.step += 1
            row = {"phase": phase, "step": self.step, "loss": loss.item(), **terms, "yaw": state.yaw, "pitch": state.pitch}
            self.history.append(row)
            self.progress(StepReport(phase, self.step, self.total_steps, loss.item(), terms, state.yaw, state.pitch))
        if keep_best and best is not None:
            state.restore(best)
            return best_loss
        return self.history[-1]["loss"] if self.history else math.inf
