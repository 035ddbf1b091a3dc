"""3D-aware semantic editing (DatasetNeRF §5.4).

The user repaints part of an identity's label map in one view. With r the region of interest —
the pixels of the edited labels before and after the edit, dilated a little — the latent w+ is
optimised with Adam on

    L(w) = CE(S(w), M_edit) + λ₁ ‖(1 − r) ⊙ (I(w) − I₀)‖² + λ₂ P((1 − r) ⊙ I(w), (1 − r) ⊙ I₀)

where S(w) are the semantic branch's logits, I(w) the backbone's RGB, I₀ the RGB before the edit
and P the perceptual loss (core.editing.perceptual), plus two terms of ours inside r, where the
edit is judged: the CE there with each label's pixels weighed up the rarer the label, and the
Lovász-softmax (a smooth 1 − mean IoU over the labels there); `EditSettings` says why.
An opt-in third term holds the opacity at random points of the tri-plane box off r's rays
(against floaters where the edit view does not look; `EditSettings.hold_weight`); region_weight =
lovasz_weight = hold_weight = 0 gives the paper's loss. The camera stays where the edit was painted.
Because the latent, not the image, changes, the edited identity can be seen from every angle.

Which labels are "edited": every label whose pixels the edit touches, unless the edit touched only
a small part of it (< EDITED_LABEL_FRACTION of its area before ∪ after): painting an eye larger
edits the eye, not the whole head around it; removing an ear edits the ear, not the background.
The caller can also name them (`edited_labels`). The changed pixels themselves are always in r.

For speed the optimisation renders at `settings.resolution` (64² by default for a 128² backbone);
the before/after renders returned are at the full resolution of the edited map.
"""
from __future__ import annotations

import math
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
from core.editing.rendering import (SEMANTIC_BORDER, CameraRig, Crop, PartRender, point_opacity, project_points,
                                    random_box_points, render, render_part, render_still, supports_parts, to_uint8)
from core.semantic.rendering import SAMPLES_PER_RAY

EDITED_LABEL_FRACTION = 0.2
IMPROVEMENT = 0.005  # relative fall of the loss that counts as progress (EditSettings.patience)


class NoOpEditError(EditingInputError):
    """The edited map equals the current labels: there is nothing to optimise towards."""


@dataclass
class EditSettings:
    steps: int = 24
    resolution: int = 64  # the grid of rays the loss is computed on (the view's size while optimising)
    # Pixels around r's bounding box (at `resolution`) rendered in full each step, RGB and labels;
    # None renders the whole view each step (as backbones that super-resolve always are).
    crop_margin: int | None = 8
    outside_rays: int = 512  # rays drawn at random outside that crop each step, for the MSE term
    # (coarse, importance) samples per ray while optimising, at most the backbone's own; None: its
    # own. Fewer are cheaper but let the optimiser hide geometry between the samples: with 16 + 8
    # on the shipped default a removed ear was gone at those samples and back in the final render.
    backbone_samples: tuple[int, int] | None = None
    semantic_samples: int | None = SAMPLES_PER_RAY  # the branch's points per ray (density prior)
    # Gradients through the backbone's coarse samples too (as EG3D trains). False: they enter each
    # step's composite as constants and only the importance samples, which sit where a ray's
    # weight is, pass gradients: the render is the same, the backward pass about half as long,
    # and the scripted edits' figures equal to two decimals (docs/editing.md, "Speed").
    coarse_gradients: bool = False
    learning_rate: float = 0.06  # of the w+ offset, in units of the spread of w (Adam moves every coordinate ~lr per step)
    final_learning_rate: float | None = None  # cosine decay to this by the last step; None: constant
    # Stop when the loss has not fallen below its best by IMPROVEMENT (relative) for this many
    # steps in a row; 0: always run every step.
    patience: int = 0
    rgb_weight: float = 30.0  # λ₁ (MSE in EG3D's [-1, 1] range; docs/editing.md says why 30, not 10)
    perceptual_weight: float = 1.0  # λ₂
    # Extra weight of the cross-entropy *inside r* (its mean over r's pixels). The paper's CE is a
    # mean over the whole view, where a small edit (a few % of the pixels) barely registers
    # against the RGB terms; 0 gives the paper's loss exactly.
    region_weight: float = 1.0
    # Weigh the CE inside r by label: each pixel by (pixels of its label in the edited map inside
    # r)^-label_balance, so that with 1 every label there counts alike, as the mean IoU over labels
    # does (a small part next to a big edit, the mouth under a grown nose, is otherwise given up);
    # 0: every pixel alike.
    label_balance: float = 0.5
    # Weight of the Lovász-softmax loss inside r (Berman et al. 2018): a smooth stand-in for
    # 1 − the mean IoU over the edited map's labels there, the figure an edit is judged by.
    lovasz_weight: float = 1.0
    # Hold the shape away from the edit (docs/editing.md, "Floaters"): the other terms see one
    # view only, so density the edit creates where that view does not look (behind the head, at
    # the tri-plane box's border) is free, and shows as floaters from other angles. Each step
    # `hold_points` points drawn in the tri-plane box whose pixel in the edit view is farther than
    # `hold_margin` px (at `resolution`) from r keep their opacity: hold_weight × the mean
    # squared change of a coarse sample's opacity there (`point_opacity`). 0: off (the default):
    # at 30 it only fades the chelsea floater (peak opacity 0.51 → 0.44; 100: 0.39) for +10 % time
    # and −0.003 IoU inside r; 300 lost a quarter of that ear edit (docs/editing.md, "Floaters").
    hold_weight: float = 0.0
    hold_points: int = 4096
    hold_margin: int = 2
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
    rendered = render_still(G, ws, rig.label(torch.tensor(float(yaw)), torch.tensor(float(pitch))), resolution, branch)
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
    raises EditingInputError (NoOpEditError) before anything runs. The result depends only on
    the inputs and settings (the rays sampled outside r are drawn from a generator seeded per step).
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
    objective = _EditObjective(G, branch, start_ws, yaw, pitch, edited, region, labels_before, settings, perceptual)
    w_avg, spread = w_statistics(G)
    latent = Latent(start_ws, w_avg, spread, settings.latent_space)
    optimizer = torch.optim.Adam([latent.offset], lr=settings.learning_rate)
    history, stopped = [], False
    best_loss, best_offset, since_best, converged = float("inf"), latent.offset.detach().clone(), 0, False
    for step in range(settings.steps):
        if should_stop():
            stopped = True
            break
        rendered = objective.render(latent.ws(), step)
        loss, terms = objective(rendered)
        since_best += 1
        if loss.item() < best_loss:
            if loss.item() < best_loss * (1 - IMPROVEMENT):
                since_best = 0
            best_loss, best_offset = loss.item(), latent.offset.detach().clone()
        # Converged: this state was scored, so the best state is known and no update is needed.
        converged = bool(settings.patience) and since_best >= settings.patience
        if not converged:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(settings, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        history.append({"phase": "edit", "step": step + 1, "loss": loss.item(), **terms})
        report = StepReport("edit", step + 1, settings.steps, loss.item(), terms, yaw, pitch)
        if settings.preview_every and (step % settings.preview_every == 0 or step + 1 == settings.steps or converged):
            report.preview_rgb, report.preview_labels = objective.preview(rendered)
        progress(report)
        if converged:
            break
    # The last update was never scored (unless the loop converged or was stopped before it);
    # keep it only if no earlier state scored better.
    final = objective.score(latent.ws(), settings.steps) if history and not converged else float("inf")
    if final > best_loss:
        with torch.no_grad():
            latent.offset.copy_(best_offset)
    ws = latent.ws().detach().clone()
    rgb_after, labels_after = render_view(G, branch, ws, yaw, pitch, resolution)
    return EditResult(ws, start_ws.detach().clone(), float(yaw), float(pitch), region, list(edited_labels), edited,
                      rgb_before, labels_before, rgb_after, labels_after, history, perceptual.name, stopped,
                      time.perf_counter() - began)


def optimisation_samples(G, settings: EditSettings) -> tuple[int, int] | None:
    """(coarse, importance) samples per ray while optimising: settings.backbone_samples, but
    never more than the backbone's own (None: the backbone's own)."""
    if settings.backbone_samples is None:
        return None
    own = (int(G.rendering_kwargs["depth_resolution"]), int(G.rendering_kwargs["depth_resolution_importance"]))
    return tuple(min(wanted, mine) for wanted, mine in zip(settings.backbone_samples, own))


def _learning_rate(settings: EditSettings, step: int) -> float:
    if settings.final_learning_rate is None or settings.steps < 2:
        return settings.learning_rate
    progress = step / (settings.steps - 1)
    return settings.final_learning_rate + (settings.learning_rate - settings.final_learning_rate) * \
        (1 + math.cos(math.pi * progress)) / 2


class _EditObjective:
    """The §5.4 loss on the grid of settings.resolution² rays, against targets prepared once.

    Each step renders only part of the view (`render_part`): every ray of the squares around r
    (one per separate part of r; RGB and labels) and `outside_rays` rays drawn at random outside
    them (RGB only). The terms estimate those of the whole view: the cross-entropy's whole-view
    mean counts the crops (outside them the labels are to stay as they are and the RGB terms hold
    them), the MSE sums the crops' pixels outside r and the drawn rays scaled up to all rays
    outside the crops, and the perceptual loss compares each crop (outside r) weighted by its
    share of the view. With the whole view as the crop all three equal the full render's loss
    (tested). Backbones that super-resolve are rendered whole.
    """

    def __init__(self, G, branch, start_ws, yaw, pitch, edited, region, labels_before, settings: EditSettings,
                 perceptual):
        self.G, self.branch, self.settings, self.perceptual = G, branch, settings, perceptual
        self.camera = CameraRig.of(G).label(torch.tensor(float(yaw)), torch.tensor(float(pitch)))
        size = settings.resolution
        target = torch.from_numpy(edited.astype(np.float32))[None, None]
        target = F.interpolate(target, size=(size, size), mode="nearest")[:, 0].long()
        before = torch.from_numpy(labels_before.astype(np.float32))[None, None]
        self.labels_before = F.interpolate(before, size=(size, size), mode="nearest")[0, 0].to(torch.uint8).numpy()
        # A low-resolution pixel is in r when any of the pixels it covers is: keep r generous.
        region = torch.from_numpy(region.astype(np.float32))[None, None]
        inside = F.adaptive_max_pool2d(region, size) if size < region.shape[-1] else \
            F.interpolate(region, size=(size, size), mode="nearest")
        self.parts = supports_parts(G, size)
        if self.parts and settings.crop_margin is not None:
            self.crops = Crop.each_around(inside[0, 0].numpy() > 0, settings.crop_margin)
        else:
            self.crops = [Crop.whole(size)]
        self.targets = [target[:, crop.slices[0], crop.slices[1]] for crop in self.crops]
        self.inside = [inside[..., crop.slices[0], crop.slices[1]] for crop in self.crops]
        self.region_pixels = max(float(sum(part.sum() for part in self.inside)), 1.0)
        self.region_weights = self._region_weights(settings.label_balance)
        self.view_pixels = size * size
        self.outside_pixels = float((1 - inside).sum())
        self.counted = [torch.from_numpy(_uncut(crop))[None, None] for crop in self.crops]
        in_crops = torch.zeros(self.view_pixels, dtype=torch.bool)
        for crop in self.crops:
            in_crops[crop.indices()] = True
        self.beyond_crops = torch.nonzero(~in_crops).squeeze(1)  # the rays the MSE term samples from
        self.backbone_samples = optimisation_samples(G, settings)
        with torch.no_grad():  # same renderer, same rays and samples: exact at the start
            if self.parts:
                original = render_part(G, start_ws, self.camera, Crop.whole(size),
                                       backbone_samples=self.backbone_samples).images[0]
            else:
                original = render(G, start_ws, self.camera, size, backbone_samples=self.backbone_samples).image
        self.original_view = original
        self.originals = [original[..., crop.slices[0], crop.slices[1]] for crop in self.crops]
        self.original_rays = original.reshape(1, 3, -1)
        if settings.hold_weight:
            with torch.no_grad():
                self.start_planes = G.synthesize(start_ws).planes
            near = inside if not settings.hold_margin else F.max_pool2d(
                inside, 2 * settings.hold_margin + 1, stride=1, padding=settings.hold_margin)
            self.near_region = near.reshape(-1) > 0  # the edit view's pixels whose rays may change

    def held_points(self, step: int) -> torch.Tensor:
        """(M, 3) the points drawn at `step` whose opacity is held: in the tri-plane box, not on
        the edit view's rays through r (grown by hold_margin)."""
        generator = torch.Generator().manual_seed(1_000_003 + step)
        points = random_box_points(self.G, self.settings.hold_points, generator)
        pixels = project_points(self.camera, points, self.settings.resolution)
        free = torch.zeros(len(points), dtype=torch.bool)
        seen = pixels >= 0
        free[seen] = self.near_region[pixels[seen]]
        return points[~free]

    def hold_term(self, planes: torch.Tensor, step: int) -> torch.Tensor:
        """Mean squared change of the opacity at `held_points` from the start (0 when unchanged)."""
        points = self.held_points(step)
        with torch.no_grad():
            start = point_opacity(self.G, self.start_planes, points)
        return (point_opacity(self.G, planes, points) - start).pow(2).mean()

    def _region_weights(self, power: float) -> list[torch.Tensor]:
        """Per crop (1, 1, s, s): each pixel's weight in the CE inside r (0 outside r), ∝ (pixels
        of its label inside r)^-power; they sum to r's pixel count."""
        if not power:
            return list(self.inside)
        counts = torch.zeros(int(max(int(t.max()) for t in self.targets)) + 1)
        for target, inside in zip(self.targets, self.inside):
            counts += torch.bincount(target[inside[:, 0] > 0], minlength=len(counts))[:len(counts)].float()
        weight = torch.where(counts > 0, counts.clamp(min=1) ** -float(power), torch.zeros(()))
        weight *= self.region_pixels / (weight * counts).sum()
        return [inside * weight[target][:, None] for target, inside in zip(self.targets, self.inside)]

    def outside_rays(self, step: int) -> torch.Tensor:
        """The rays outside the crops sampled at `step` (all of them when there are few)."""
        count = min(self.settings.outside_rays, len(self.beyond_crops)) if self.parts else 0
        if count == len(self.beyond_crops):
            return self.beyond_crops
        generator = torch.Generator().manual_seed(step)
        return self.beyond_crops[torch.randperm(len(self.beyond_crops), generator=generator)[:count]].sort().values

    def render(self, ws: torch.Tensor, step: int, rays: torch.Tensor | None = None) -> "_StepRender":
        settings = self.settings
        identity = self.G.synthesize(ws)
        if not self.parts:
            whole = render(self.G, ws, self.camera, settings.resolution, self.branch, settings.semantic_samples,
                           self.backbone_samples, identity)
            part = PartRender([whole.image], [whole.logits], whole.image.new_zeros(1, 3, 0))
            return _StepRender(part, self.beyond_crops[:0], identity.planes, step)
        rays = self.outside_rays(step) if rays is None else rays
        part = render_part(self.G, ws, self.camera, self.crops, rays, self.branch, self.backbone_samples,
                           settings.semantic_samples, identity, settings.coarse_gradients)
        return _StepRender(part, rays, identity.planes, step)

    def __call__(self, rendered: "_StepRender"):
        part, rays, settings = rendered.part, rendered.rays, self.settings
        ce = region_ce = squared = perceptual = 0.0
        for crop, image, logits, target, inside, weights, counted, original in zip(
                self.crops, part.images, part.logits, self.targets, self.inside, self.region_weights, self.counted,
                self.originals):
            pixel_ce = F.cross_entropy(logits, target, reduction="none")[:, None]
            ce = ce + (pixel_ce * counted).sum() / self.view_pixels
            region_ce = region_ce + (pixel_ce * weights).sum() / self.region_pixels
            outside = 1 - inside
            squared = squared + ((image - original) ** 2 * outside).sum()
            share = crop.size ** 2 / self.view_pixels
            perceptual = perceptual + share * self.perceptual(image * outside, original * outside)
        if settings.region_weight:
            ce = ce + settings.region_weight * region_ce
        lovasz = self._lovasz(part.logits) if settings.lovasz_weight else None
        if len(rays):
            scale = len(self.beyond_crops) / len(rays)
            squared = squared + scale * (part.extra - self.original_rays[..., rays]).pow(2).sum()
        mse = squared / max(3 * self.outside_pixels, 1)
        loss = ce + settings.rgb_weight * mse + settings.perceptual_weight * perceptual
        terms = {"cross_entropy": ce.item(), "mse_outside": mse.item(), "perceptual_outside": perceptual.item()}
        if lovasz is not None:
            loss = loss + settings.lovasz_weight * lovasz
            terms["lovasz_inside"] = lovasz.item()
        if settings.hold_weight:
            hold = self.hold_term(rendered.planes, rendered.step)
            loss = loss + settings.hold_weight * hold
            terms["opacity_change_away"] = hold.item()
        return loss, terms

    def _lovasz(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """Lovász-softmax over r's pixels, averaged over the labels of the edited map there."""
        probabilities = torch.cat([F.softmax(crop_logits, 1)[0][:, inside[0, 0] > 0].T
                                   for crop_logits, inside in zip(logits, self.inside)])
        targets = torch.cat([target[0][inside[0, 0] > 0] for target, inside in zip(self.targets, self.inside)])
        losses = []
        for label in torch.unique(targets):
            truth = (targets == label).float()
            errors, order = (truth - probabilities[:, label]).abs().sort(descending=True)
            losses.append(errors @ _jaccard_steps(truth[order]))
        return torch.stack(losses).mean() if losses else probabilities.sum() * 0

    @torch.no_grad()
    def score(self, ws: torch.Tensor, step: int) -> float:
        return float(self(self.render(ws, step))[0])

    def preview(self, rendered: "_StepRender") -> tuple[np.ndarray, np.ndarray]:
        """(RGB, labels) of the view at the optimisation resolution: the crops' current renders
        pasted into the view before the edit."""
        rgb, labels = self.original_view.detach().clone(), self.labels_before.copy()
        for crop, image, logits in zip(self.crops, rendered.part.images, rendered.part.logits):
            rgb[..., crop.slices[0], crop.slices[1]] = image.detach()
            labels[crop.slices] = logits.detach().argmax(1)[0].to(torch.uint8).numpy()
        return to_uint8(rgb), labels


def _jaccard_steps(truth_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order
    (`truth_sorted`: 1 where the pixel has the label): how much 1 − IoU grows as each pixel in
    turn is counted wrong."""
    total = truth_sorted.sum()
    intersection = total - truth_sorted.cumsum(0)
    union = total + (1 - truth_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _uncut(crop: Crop) -> np.ndarray:
    """(s, s) float: the crop's pixels whose logits equal a full render's (the semantic
    super-resolution sees past the crop's inner edges), counted in the whole-view CE."""
    border, uncut = SEMANTIC_BORDER, np.ones((crop.size, crop.size), np.float32)
    if crop.top > 0:
        uncut[:border] = 0
    if crop.left > 0:
        uncut[:, :border] = 0
    if crop.top + crop.size < crop.resolution:
        uncut[crop.size - border:] = 0
    if crop.left + crop.size < crop.resolution:
        uncut[:, crop.size - border:] = 0
    return uncut


@dataclass
class _StepRender:
    part: PartRender
    rays: torch.Tensor  # the rays outside the crops in part.extra
    planes: torch.Tensor  # the tri-plane the part was rendered from (with autograd)
    step: int
