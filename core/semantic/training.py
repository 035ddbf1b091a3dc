"""Training the semantic branch on painted masks, with the backbone frozen.

The backbone never changes during training, so everything it contributes is computed once per
annotation before the first step: the identity's block features and the view's samples with
their compositing coefficients and RGB (`ViewPrior`). A step then only runs the branch: the
semantic tri-plane of each identity in the batch, the decoder at the kept sample points,
compositing, super-resolution and the pixel cross-entropy at the mask's resolution.

The same function serves the GUI (progress callback, stop flag) and the command line.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from core.backbone import EG3D_DEFAULT_TRUNCATION_CUTOFF
from core.checkpoint.errors import CorruptCheckpointError
from core.generator.culling import render_with_samples, skipping_grid
from core.semantic.branch import SemanticBranch
from core.semantic.checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_branch_for_training,
    save_branch,
)
from core.semantic.rendering import (
    MIN_SAMPLE_WEIGHT,
    SAMPLES_PER_RAY,
    ViewPrior,
    crop_prior,
    neural_resolution_for,
    render_semantic,
    view_prior,
)

from core.project.labels import UNLABELLED_ID

# Mask value of pixels nobody painted: they take no part in the loss.
IGNORE_LABEL = UNLABELLED_ID


@dataclass
class AnnotatedView:
    """One painted mask: whose identity, from which camera, and the label of every pixel."""

    identity: int | torch.Tensor  # a seed, or ws (1, num_ws, w_dim)
    camera_label: torch.Tensor  # (25,) EG3D camera label
    mask: np.ndarray  # (H, H) label ids; IGNORE_LABEL where nothing was painted
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = EG3D_DEFAULT_TRUNCATION_CUTOFF
    source: str = ""  # where it came from (an annotation file), for error messages


@dataclass
class TrainingSettings:
    learning_rate: float = 2e-3
    views_per_step: int = 2
    # Cross-entropy on the volume-rendered (pre-super-resolution) logits as well: it keeps the
    # 3D part of the branch meaningful on its own (labels of 3D points, multi-view consistency)
    # instead of leaving all the work to the 2D super-resolution.
    raw_loss_weight: float = 0.5
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    seed: int = 0
    min_sample_weight: float = MIN_SAMPLE_WEIGHT
    samples_per_ray: int | None = SAMPLES_PER_RAY  # None: every sample with weight (slower, exact)
    # Train on random square crops of this many output pixels (None: whole views). Every part of
    # the branch is local except the tri-plane, so crops cost proportionally less and lose little.
    crop_size: int | None = 64
    # Opt-in variants (measured in docs/semantic.md, "What was tried"):
    # "cosine" decays the learning rate to 0 over the run's total steps (a function of the step,
    # so a resumed run follows the same schedule as long as the total is the same).
    learning_rate_schedule: str = "constant"
    # Class-balanced cross-entropy: class c weighs (its share of the painted pixels)^-power,
    # normalised to a mean pixel weight of 1 (0: plain cross-entropy).
    class_balance_power: float = 0.0
    # Pixels next to a label edge of the mask weigh 1 + boundary_weight.
    boundary_weight: float = 0.0


@dataclass
class TrainingProgress:
    phase: str  # 'preparing', 'training' or 'checkpoint'
    step: int
    total_steps: int
    loss: float = math.nan  # running mean (exponential, ~20 steps) of the training loss
    accuracy: float = math.nan  # running mean of the pixel accuracy on the training batch
    elapsed_s: float = 0.0
    message: str = ""
    checkpoint: Path | None = None


@dataclass
class TrainingResult:
    step: int
    loss: float
    accuracy: float
    checkpoint: Path | None
    stopped: bool
    history: list = field(default_factory=list)  # (step, loss of that step)


@dataclass
class _PreparedView:
    identity_key: tuple
    prior: ViewPrior
    mask: torch.Tensor  # (H, W) int64
    source: str


class _RunningMean:
    """Exponential running mean that is exact over the first few values (no start-up bias)."""

    def __init__(self, horizon: int = 20):
        self.decay = 1 - 1 / horizon
        self.total = self.weight = 0.0

    def update(self, value: float) -> float:
        self.total = self.decay * self.total + value
        self.weight = self.decay * self.weight + 1
        return self.value

    @property
    def value(self) -> float:
        return self.total / self.weight if self.weight else math.nan


@dataclass
class _Run:
    """What one call of train_semantic carries from step to step."""

    branch: SemanticBranch
    optimizer: torch.optim.Optimizer
    backbone: object
    settings: TrainingSettings
    report: Callable[[TrainingProgress], None]
    checkpoint_dir: Path | None
    total_steps: int
    validate: Callable[[SemanticBranch], dict] | None = None
    started: float = field(default_factory=time.monotonic)
    cpu_started: float = field(default_factory=time.process_time)
    validating_s: float = 0.0  # time spent in `validate`, left out of elapsed_s
    validating_cpu_s: float = 0.0
    loss: _RunningMean = field(default_factory=_RunningMean)
    accuracy: _RunningMean = field(default_factory=_RunningMean)

    def elapsed(self) -> float:
        """Seconds of preparation and training in this call (validation left out)."""
        return time.monotonic() - self.started - self.validating_s

    def progress(self, phase: str, step: int, **details) -> TrainingProgress:
        return TrainingProgress(phase, step, self.total_steps, self.loss.value, self.accuracy.value,
                                self.elapsed(), **details)

    def save(self, step: int) -> Path:
        path = Path(self.checkpoint_dir) / checkpoint_name(step)
        # CPU seconds beside the wall time: on a shared machine the wall time mostly measures the others.
        metrics = {"train_loss": self.loss.value, "train_pixel_accuracy": self.accuracy.value,
                   "elapsed_s": self.elapsed(),
                   "cpu_s": time.process_time() - self.cpu_started - self.validating_cpu_s}
        if self.validate is not None:
            metrics.update(self._validation())
        save_branch(self.branch, path, self.backbone.content_hash, step=step, loss=self.loss.value,
                    metrics=_finite(metrics), settings=asdict(self.settings), optimizer=self.optimizer)
        for _, old in list_checkpoints(self.checkpoint_dir)[: -max(1, self.settings.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        self.report(self.progress("checkpoint", step, message=f"saved {path.name}", checkpoint=path))
        return path

    def _validation(self) -> dict:
        started, cpu_started, was_training = time.monotonic(), time.process_time(), self.branch.training
        self.branch.eval()
        try:
            figures = self.validate(self.branch)
        finally:
            self.branch.train(was_training)
            self.branch.clear_cache()
            self.validating_s += time.monotonic() - started
            self.validating_cpu_s += time.process_time() - cpu_started
        return dict(figures, validation_s=time.monotonic() - started)


# ---------------------------------------------------------------------------- the loop
def train_semantic(
    branch: SemanticBranch,
    backbone,
    samples: Iterable,
    steps: int,
    progress: Callable[[TrainingProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir=None,
    resume: bool = False,
    settings: TrainingSettings | None = None,
    validate: Callable[[SemanticBranch], dict] | None = None,
) -> TrainingResult:
    """Train `branch` on annotated views until `steps` optimiser steps in total have been taken.

    `backbone` is a `core.backbone.Backbone` (frozen generator + content hash). `samples` are
    `AnnotatedView`s or (identity, camera_label, mask) tuples. With `checkpoint_dir`, a
    checkpoint is written every `settings.checkpoint_every` steps and at the end (also when
    `should_stop()` turns true, which is checked between steps); `resume=True` continues from
    the newest readable checkpoint there. A KeyboardInterrupt propagates and leaves the last
    checkpoint as it was (every write is atomic). `validate(branch)`, if given, is called at
    every checkpoint and its JSON-friendly figures are stored in the checkpoint's metrics (e.g.
    `core.semantic.evaluation.ValidationSet`); its time is not counted in `elapsed_s`.
    """
    settings = settings or TrainingSettings()
    branch.to(backbone.device)
    optimizer = torch.optim.Adam(branch.parameters(), lr=settings.learning_rate)
    run = _Run(branch, optimizer, backbone, settings, progress or (lambda _: None), checkpoint_dir, steps, validate)
    step, checkpoint = _start_step(run, resume)
    if step >= steps:  # a resumed run that is already done
        branch.eval()
        return TrainingResult(step, math.nan, math.nan, checkpoint, False, [])
    views, identity_features = prepare_views(branch, backbone, samples, settings, run.report, steps)
    step, checkpoint, stopped, history = _train_steps(run, views, identity_features, step, checkpoint, should_stop)
    branch.eval()
    branch.clear_cache()
    if checkpoint_dir is not None and (checkpoint is None or checkpoint.name != checkpoint_name(step)):
        checkpoint = run.save(step)
    return TrainingResult(step, run.loss.value, run.accuracy.value, checkpoint, stopped, history)


def _train_steps(run: _Run, views, identity_features, step: int, checkpoint, should_stop):
    """Optimiser steps until the total is reached or a stop is asked for."""
    history = []
    class_weights = class_weights_for(views, run.branch.num_classes, run.settings.class_balance_power)
    run.branch.train()
    while step < run.total_steps:
        if should_stop is not None and should_stop():
            return step, checkpoint, True, history
        loss, accuracy = training_step(run.branch, views, identity_features, run.optimizer, run.settings, step,
                                       run.total_steps, class_weights)
        step += 1
        history.append((step, loss))
        run.loss.update(loss)
        run.accuracy.update(accuracy)
        run.report(run.progress("training", step))
        if run.checkpoint_dir is not None and step % run.settings.checkpoint_every == 0 and step < run.total_steps:
            checkpoint = run.save(step)
    return step, checkpoint, False, history


def training_step(branch, views, identity_features, optimizer, settings, step: int, total_steps: int | None = None,
                  class_weights: torch.Tensor | None = None):
    """One Adam step on a batch of annotated views; returns (loss, pixel accuracy) of the batch."""
    batch = _batch_for_step(views, settings, step)
    _set_learning_rate(optimizer, settings, step, total_steps)
    optimizer.zero_grad(set_to_none=True)
    planes = {key: branch.triplane(identity_features[key]) for key in {view.identity_key for view in batch}}
    total_loss, correct, counted = 0.0, 0, 0
    for index, view in enumerate(batch):
        prior, mask = _training_crop(view, settings.crop_size, step * 1_000 + index + settings.seed)
        output = render_semantic(branch, planes[view.identity_key], prior, mask.shape[-1])
        weights = pixel_weights(mask, class_weights, settings.boundary_weight)
        total_loss = total_loss + view_loss(output, mask, settings.raw_loss_weight, weights)
        painted = mask != IGNORE_LABEL
        correct += int((output.logits[0].argmax(0) == mask)[painted].sum())
        counted += int(painted.sum())
    loss = total_loss / len(batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), correct / max(counted, 1)


def _training_crop(view: "_PreparedView", crop_size: int | None, seed: int):
    """A random square crop of a prepared view and its mask (the whole view without crop_size)."""
    output_resolution = view.mask.shape[-1]
    scale = output_resolution // view.prior.resolution
    if crop_size is None or crop_size >= output_resolution or output_resolution % view.prior.resolution:
        return view.prior, view.mask
    size = max(1, crop_size // scale)  # in rays of the neural resolution
    generator = torch.Generator().manual_seed(seed)
    top, left = torch.randint(0, view.prior.resolution - size + 1, (2,), generator=generator).tolist()
    prior = crop_prior(view.prior, top, left, size, output_resolution)
    mask = view.mask[top * scale:(top + size) * scale, left * scale:(left + size) * scale]
    return prior, mask


def view_loss(output, mask: torch.Tensor, raw_loss_weight: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel cross-entropy at the mask's resolution, on the final and (weighted) raw logits;
    with `weights` (H, W), the weighted mean over painted pixels."""
    target = mask[None]
    loss = _cross_entropy(output.logits, target, weights)
    if raw_loss_weight > 0:
        raw = F.interpolate(output.raw_logits, size=mask.shape, mode="bilinear", align_corners=False)
        loss = loss + raw_loss_weight * _cross_entropy(raw, target, weights)
    return loss


def _cross_entropy(logits, target, weights):
    if weights is None:
        return F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL, reduction="none")[0]
    painted = weights * (target[0] != IGNORE_LABEL)
    return (per_pixel * painted).sum() / painted.sum().clamp_min(1e-12)


def pixel_weights(mask: torch.Tensor, class_weights: torch.Tensor | None, boundary_weight: float):
    """Per-pixel loss weights (H, W) of a mask, or None for plain cross-entropy."""
    if class_weights is None and not boundary_weight:
        return None
    weights = torch.ones(mask.shape, dtype=torch.float32, device=mask.device)
    if class_weights is not None:
        weights = class_weights.to(mask.device)[mask.clamp_max(len(class_weights) - 1)]
    if boundary_weight:
        weights = weights * (1 + boundary_weight * label_edges(mask))
    return weights


def label_edges(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) float: 1 where a 4-neighbour holds another painted label."""
    edges = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    painted = mask != IGNORE_LABEL
    for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
        differ = (a != b) & (a != IGNORE_LABEL) & (b != IGNORE_LABEL)
        if a.shape[0] != mask.shape[0]:
            edges[1:] |= differ
            edges[:-1] |= differ
        else:
            edges[:, 1:] |= differ
            edges[:, :-1] |= differ
    return (edges & painted).float()


def class_weights_for(views: list, num_classes: int, power: float) -> torch.Tensor | None:
    """Class-balancing weights from the painted pixels of the training masks (None for power 0)."""
    if not power:
        return None
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for view in views:
        painted = view.mask[view.mask != IGNORE_LABEL].cpu()
        counts += torch.bincount(painted, minlength=num_classes)[:num_classes].double()
    share = counts / counts.sum()
    weights = torch.where(share > 0, share.clamp_min(1e-12) ** -power, torch.ones_like(share))
    weights = weights / (share * weights).sum()  # the mean weight of a painted pixel is 1
    return weights.float()


def _set_learning_rate(optimizer, settings: TrainingSettings, step: int, total_steps: int | None) -> None:
    if settings.learning_rate_schedule == "constant" or not total_steps:
        factor = 1.0
    elif settings.learning_rate_schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        raise ValueError(f"unknown learning-rate schedule {settings.learning_rate_schedule!r}")
    for group in optimizer.param_groups:
        group["lr"] = settings.learning_rate * factor


def _batch_for_step(views: list, settings: TrainingSettings, step: int) -> list:
    # Seeded by the step, so a resumed run draws the same batches as an uninterrupted one.
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    order = torch.randperm(len(views), generator=generator)
    return [views[i] for i in order[: settings.views_per_step].tolist()]


# ---------------------------------------------------------------------------- preparation
def as_annotated_view(item) -> AnnotatedView:
    if isinstance(item, AnnotatedView):
        return item
    identity, camera_label, mask = item[:3]
    return AnnotatedView(identity, camera_label, mask)


@torch.no_grad()
def prepare_views(branch, backbone, samples, settings: TrainingSettings, report=lambda _: None, total_steps=0):
    """Run the frozen backbone once per identity and per view; returns (views, block features)."""
    annotated = [as_annotated_view(item) for item in samples]
    if not annotated:
        raise ValueError("there are no annotations to train on")
    masks = [validate_mask(item, branch.num_classes) for item in annotated]
    views, identity_features = [], {}
    for key, indices in _group_by_identity(annotated).items():
        # One identity at a time: only its block features outlive this loop.
        identity = _identity(backbone, annotated[indices[0]])
        identity_features[key] = {res: x.float() for res, x in identity.block_features.items()}
        # On a CPU the identity's views render with empty space skipped (2-3x less work, the same
        # samples within culling.py's tolerances), as the factory and the studio render them.
        occupancy = skipping_grid(backbone.generator, identity)
        for index in indices:
            item, mask = annotated[index], masks[index]
            if not bool((mask != IGNORE_LABEL).any()):
                report(TrainingProgress("preparing", 0, total_steps,
                                        message=f"skipped {_name(item, index)}: nothing painted"))
                continue
            neural_resolution = neural_resolution_for(backbone.generator, mask.shape[-1])
            camera = _camera(item).to(backbone.device)[None]
            view = render_with_samples(backbone.generator, identity, camera, neural_resolution, occupancy)
            prior, _ = view_prior(backbone.generator, identity, camera, neural_resolution,
                                  branch.density_prior, settings.min_sample_weight, view=view,
                                  samples_per_ray=settings.samples_per_ray)
            views.append(_PreparedView(key, prior, mask.to(backbone.device), item.source))
            report(TrainingProgress("preparing", 0, total_steps,
                                    message=f"prepared view {len(views)}/{len(annotated)}"))
    if not views:
        raise ValueError("none of the annotations has painted pixels")
    return views, identity_features


def _group_by_identity(annotated: list) -> dict:
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(annotated):
        groups.setdefault(identity_key(item), []).append(index)
    return groups


def validate_mask(item: AnnotatedView, num_classes: int) -> torch.Tensor:
    """The mask as int64 (H, W); a ValueError naming the annotation for anything unusable."""
    mask = np.asarray(item.mask)
    name = _name(item)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"{name}: the mask must be a square 2D array of label ids, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{name}: the mask must hold integer label ids, got {mask.dtype}")
    unknown = np.setdiff1d(np.unique(mask), np.r_[np.arange(num_classes), IGNORE_LABEL])
    if unknown.size:
        raise ValueError(f"{name}: label ids {unknown.tolist()} are outside the label set 0..{num_classes - 1}")
    return torch.from_numpy(mask.astype(np.int64))


def identity_key(item: AnnotatedView) -> tuple:
    if isinstance(item.identity, (int, np.integer)):
        return ("seed", int(item.identity), float(item.truncation_psi), item.truncation_cutoff)
    ws = torch.as_tensor(item.identity).detach().to("cpu", torch.float32).contiguous()
    return ("ws", hashlib.sha256(ws.numpy().tobytes()).hexdigest())


def _identity(backbone, item: AnnotatedView):
    if isinstance(item.identity, (int, np.integer)):
        return backbone.identity_from_seed(int(item.identity), item.truncation_psi, item.truncation_cutoff)
    ws = torch.as_tensor(item.identity, dtype=torch.float32)
    return backbone.identity_from_ws(ws if ws.ndim == 3 else ws[None])


def _camera(item: AnnotatedView) -> torch.Tensor:
    label = torch.as_tensor(item.camera_label, dtype=torch.float32).reshape(-1)
    if label.numel() != 25:
        raise ValueError(f"{_name(item)}: a camera label has 25 values, got {label.numel()}")
    return label


def _name(item: AnnotatedView, index: int | None = None) -> str:
    if item.source:
        return str(item.source)
    return "annotation" if index is None else f"annotation #{index}"


# ---------------------------------------------------------------------------- checkpoints
def _start_step(run: _Run, resume: bool) -> tuple[int, Path | None]:
    """(0, None) for a fresh run; for resume, the newest readable checkpoint's (step, path), loaded."""
    existing = list_checkpoints(run.checkpoint_dir) if run.checkpoint_dir is not None else []
    if not resume:
        if existing:
            raise FileExistsError(
                f"{run.checkpoint_dir} already holds training checkpoints (newest: step {existing[-1][0]}); "
                "resume from them or remove them with core.semantic.checkpoint.clear_checkpoints() first"
            )
        return 0, None
    for step, path in reversed(existing):
        try:
            # A branch of another backbone is an error naming the file, not a checkpoint to skip.
            loaded, _, optimizer_state = load_branch_for_training(path, run.backbone.content_hash, run.backbone.device)
        except CorruptCheckpointError as error:
            run.report(run.progress("preparing", 0, message=f"skipped unreadable checkpoint: {error}"))
            continue
        _adopt(run.branch, run.optimizer, loaded, optimizer_state, path)
        run.report(run.progress("preparing", step, message=f"resumed from {path.name}", checkpoint=path))
        return step, path
    run.report(run.progress("preparing", 0, message="no checkpoint to resume from; starting afresh"))
    return 0, None


def _adopt(branch, optimizer, loaded, optimizer_state, path) -> None:
    if loaded.config != branch.config:
        raise ValueError(f"{path}: the checkpoint's branch configuration {loaded.config} differs from "
                         f"this branch's {branch.config}")
    branch.load_state_dict(loaded.state_dict())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)


def _finite(metrics: dict) -> dict:
    # JSON has no NaN; a checkpoint written before the first step has no loss yet.
    return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in metrics.items()}
