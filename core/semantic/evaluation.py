"""Label quality of a semantic branch against procedural ground truth (design.md section 7).

    figures = evaluate_branch(branch, backbone, identities=10)     # `python main.py evaluate labels`

Identities come from the procedural 'evaluate' seed range, which neither the backbone's fit nor
the simulated annotator ever uses. Per identity the branch labels LABEL_VIEWS, which lie inside
the annotated yaw range but are none of its poses; the figures are

* `miou`, `pixel_accuracy`, `per_class_iou` over those views (core.metrics);
* `consistency`: the labels of one view warped into a neighbouring view through the backbone's
  expected depth and the two cameras, and compared there, on the surface points visible in both
  (a point counts when view B's own depth at the pixel it lands on agrees with its distance to
  B's camera); both directions of every neighbouring pair;
* `video_miou`: mIoU over a VIDEO_FRAMES-frame yaw orbit (frames pooled into one confusion matrix).

The figures are computed from `Labeller`s: callables (seed, camera) → `LabelledDepth`. The
branch and the procedural truth are both labellers, so the same code measures either; a test
checks that the truth itself is consistent and a view-dependent labeller is not.

`ValidationSet` is the small, cached version the trainer calls at every checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.camera import Camera, project_to_pixels, ray_bundle, split_label
from core.metrics import confusion_matrix, label_figures, mean_iou
from core.project.labels import UNLABELLED_ID  # truth pixels nobody labelled are not scored

# (yaw, pitch) in degrees: inside the annotated yaw range (−30°…+30°), none of its poses.
LABEL_VIEWS = [(-40.0, 5.0), (-15.0, -10.0), (10.0, 10.0), (35.0, -5.0)]
VIDEO_FRAMES = 61
VIDEO_YAW = 45.0  # the orbit sweeps yaw from −VIDEO_YAW to +VIDEO_YAW at pitch 0
# A warped point is visible in the other view when its distance to that camera and the view's
# own depth agree this closely (world units; the heads are ~0.8 across, rays ~2.7 long).
DEPTH_TOLERANCE = 0.03
# Pixels where the backbone's opacity is below this show no surface (no depth to warp with).
SURFACE_OPACITY = 0.5
# Checkpoint validation uses identities this far into the 'evaluate' range, so that the
# identities `evaluate labels` reports on are never the ones watched during training.
VALIDATION_SEED_OFFSET = 500_000
VALIDATION_VIEWS = [(-20.0, 0.0), (25.0, 5.0)]
SURFACE_ORACLE = "surface oracle"


@dataclass
class LabelledDepth:
    """One labelled view: label ids (H, W) and the depth along each pixel's unit ray (inf: no surface)."""

    labels: np.ndarray
    depth: np.ndarray


Labeller = Callable[[int, Camera], LabelledDepth]


# ---------------------------------------------------------------------------- labellers
class RenderMemo:
    """The backbone's render of the last (seed, camera, resolution): labellers of several branches
    that label the same view one after the other share it."""

    def __init__(self):
        self.key, self.value = None, None

    def get(self, key, make):
        if key != self.key:
            self.key, self.value = key, make()
        return self.value


class BranchLabeller:
    """The semantic branch's labels of a seed's identity, with the backbone's expected depth."""

    def __init__(self, branch, backbone, resolution: int | None = None, memo: RenderMemo | None = None):
        from core.semantic.rendering import neural_resolution_for

        self.branch, self.backbone = branch, backbone
        self.resolution = int(resolution or backbone.generator.img_resolution)
        self.neural_resolution = neural_resolution_for(backbone.generator, self.resolution)
        self.memo = memo or RenderMemo()
        self.occupancy = RenderMemo()  # of the identity being evaluated (its views come one after another)

    def render(self, seed: int, camera: Camera):
        """The backbone's view with samples (what the labels reuse) and its LabelledDepth depth."""
        return self.memo.get((seed, camera, self.neural_resolution, self.resolution),
                             lambda: self._render(seed, camera))

    @torch.no_grad()
    def _render(self, seed: int, camera: Camera):
        from core.generator.culling import render_with_samples, skipping_grid

        generator = self.backbone.generator
        identity = self.backbone.identity_from_seed(seed)  # truncation 1, as annotate-sim stores
        occupancy = self.occupancy.get(seed, lambda: skipping_grid(generator, identity))  # as the factory renders
        view = render_with_samples(generator, identity, camera.label()[None].to(self.backbone.device),
                                   self.neural_resolution, occupancy)
        return identity, view, surface_depth(view, self.resolution)

    @torch.no_grad()
    def labels(self, identity, view, camera: Camera) -> np.ndarray:
        from core.semantic.rendering import labels_for_view

        labelled = labels_for_view(self.branch, self.backbone.generator, identity, camera.label(),
                                   self.resolution, view=view)
        return labelled.labels[0].cpu().numpy()

    def __call__(self, seed: int, camera: Camera) -> LabelledDepth:
        identity, view, depth = self.render(seed, camera)
        return LabelledDepth(self.labels(identity, view, camera), depth)


def surface_depth(view, resolution: int) -> np.ndarray:
    """The backbone's expected depth (H, W) at `resolution`, inf where its opacity shows no surface."""
    depth = view.depth[:1].float()
    opacity = view.samples["weights"][:1].sum(2).reshape(depth.shape)
    depth = torch.where(opacity >= SURFACE_OPACITY, depth, torch.full_like(depth, math.inf))
    if depth.shape[-1] != resolution:
        depth = F.interpolate(depth, size=(resolution, resolution), mode="nearest")
    return depth[0, 0].cpu().numpy()


class ProceduralLabeller:
    """The procedural category's own labels and depth: the ground truth (and a perfect labeller)."""

    def __init__(self, resolution: int):
        self.resolution = int(resolution)
        self._head = (None, None)  # (seed, ProceduralHead): views of one identity come together

    def __call__(self, seed: int, camera: Camera) -> LabelledDepth:
        from core.procedural import HeadParams, ProceduralHead

        if self._head[0] != seed:
            self._head = (seed, ProceduralHead(HeadParams.from_seed(seed)))
        buffers = self._head[1].render(camera.label(), self.resolution)
        return LabelledDepth(buffers["labels"], buffers["depth"])


class SurfaceOracleLabeller:
    """The procedural label of the point where each pixel's ray meets a surface given by
    `depth_of(seed, camera)` (H, W) along the unit rays, inf where there is none.

    With the backbone's depth this is not a semantic branch but the best any branch using the
    backbone's density could do: the gap between it and the truth is the backbone's geometry.
    """

    def __init__(self, depth_of: Callable[[int, Camera], np.ndarray]):
        self.depth_of = depth_of
        self._head = (None, None)

    @classmethod
    def on_backbone(cls, backbone, resolution: int, memo: RenderMemo | None = None) -> "SurfaceOracleLabeller":
        surfaces = BranchLabeller(None, backbone, resolution, memo)
        return cls(lambda seed, camera: surfaces.render(seed, camera)[2])

    def __call__(self, seed: int, camera: Camera) -> LabelledDepth:
        from core.procedural import HeadParams, ProceduralHead

        if self._head[0] != seed:
            self._head = (seed, ProceduralHead(HeadParams.from_seed(seed)))
        depth = np.asarray(self.depth_of(seed, camera), np.float32)
        resolution = depth.shape[-1]
        origins, directions = (x[0].numpy() for x in ray_bundle(*split_label(camera.label()), resolution))
        flat = depth.reshape(-1)
        surface = np.isfinite(flat)
        labels = np.zeros(flat.shape, np.uint8)
        labels[surface] = self._head[1].label_at_points(origins[surface] + flat[surface, None] * directions[surface])
        return LabelledDepth(labels.reshape(depth.shape), depth)


# ---------------------------------------------------------------------------- consistency
def warp_agreement(a: LabelledDepth, camera_a: Camera, b: LabelledDepth, camera_b: Camera,
                   tolerance: float = DEPTH_TOLERANCE) -> tuple[int, int]:
    """(agreeing, compared) pixels of view A whose surface point is visible in view B.

    Each surface pixel of A is lifted to 3D with A's depth along its ray, projected into B and
    compared with the label of the B pixel it lands in, if B's depth there is that point's
    distance to B's camera (within `tolerance`): points hidden or off-screen in B are not counted.
    """
    resolution_a, resolution_b = a.labels.shape[-1], b.labels.shape[-1]
    origins, directions = (x[0].numpy().astype(np.float64)
                           for x in ray_bundle(*split_label(camera_a.label()), resolution_a))
    depth_a = np.asarray(a.depth, np.float64).reshape(-1)
    surface = np.isfinite(depth_a)
    points = origins[surface] + depth_a[surface, None] * directions[surface]
    labels_a = np.asarray(a.labels).reshape(-1)[surface]

    label_b = camera_b.label().double()
    row, column, z = (x.numpy() for x in project_to_pixels(label_b, torch.from_numpy(points), resolution_b))
    on_screen = (z > 0) & (column >= 0) & (column < resolution_b) & (row >= 0) & (row < resolution_b)
    column, row = column[on_screen], row[on_screen]
    position = split_label(label_b)[0][0, :3, 3].numpy()
    distance = np.linalg.norm(points[on_screen] - position, axis=1)
    depth_b = np.asarray(b.depth, np.float64)[row, column]
    visible = np.isfinite(depth_b) & (np.abs(depth_b - distance) <= tolerance)
    agreeing = labels_a[on_screen][visible] == np.asarray(b.labels)[row[visible], column[visible]]
    return int(agreeing.sum()), int(visible.sum())


def pairwise_consistency(views: list[tuple[Camera, LabelledDepth]], tolerance: float = DEPTH_TOLERANCE):
    """(agreeing, compared) over both directions of every neighbouring pair of views."""
    agreeing = compared = 0
    for (camera_a, a), (camera_b, b) in zip(views, views[1:]):
        for source, source_camera, target, target_camera in ((a, camera_a, b, camera_b), (b, camera_b, a, camera_a)):
            agree, count = warp_agreement(source, source_camera, target, target_camera, tolerance)
            agreeing, compared = agreeing + agree, compared + count
    return agreeing, compared


# ---------------------------------------------------------------------------- the evaluation
def label_cameras(backbone, views=LABEL_VIEWS) -> list[Camera]:
    return [backbone.camera(yaw, pitch) for yaw, pitch in views]


def orbit_cameras(backbone, frames: int = VIDEO_FRAMES, yaw: float = VIDEO_YAW) -> list[Camera]:
    """A yaw sweep from −yaw to +yaw at pitch 0, `frames` frames (the video of the quality protocol)."""
    return [backbone.camera(float(angle), 0.0) for angle in np.linspace(-yaw, yaw, frames)]


class _Tally:
    """One labeller's running counts."""

    def __init__(self, num_classes: int):
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.video_confusion = np.zeros_like(self.confusion)
        self.agreeing = self.compared = 0

    def figures(self, class_names: list[str], complete: bool) -> dict:
        figures = label_figures(self.confusion, class_names)
        figures.update(
            consistency=self.agreeing / self.compared if self.compared else math.nan,
            consistency_pixels=int(self.compared),
            video_miou=mean_iou(self.video_confusion) if self.video_confusion.any() else math.nan,
            complete=complete,
        )
        return figures


def evaluate_labels(labellers: Labeller | dict, truth: Labeller, seeds: list[int], cameras: list[Camera],
                    video_seeds: list[int], video_cameras: list[Camera], class_names: list[str],
                    progress: Callable[[int, int], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict:
    """The label figures of a labeller (or of each of a {name: labeller} dict) against `truth`.

    With several labellers every view is labelled by all of them in turn, so labellers that share
    a `RenderMemo` share the backbone's render of it. `progress(done, total)` counts views;
    `should_stop()` is checked between views and ends the evaluation early with the figures so
    far (`complete` is then false). Returns the figures, or {name: figures} for a dict.
    """
    named = dict(labellers) if isinstance(labellers, dict) else {"": labellers}
    num_classes = len(class_names)
    tallies = {name: _Tally(num_classes) for name in named}
    total = len(seeds) * len(cameras) + len(video_seeds) * len(video_cameras)
    done, stopped = 0, False

    def label_view(seed, camera, kept: dict | None, video: bool) -> bool:
        nonlocal done, stopped
        truth_labels = truth(seed, camera).labels
        for name, labeller in named.items():
            prediction = labeller(seed, camera)
            tally = tallies[name]
            confusion = tally.video_confusion if video else tally.confusion
            confusion += confusion_matrix(prediction.labels, truth_labels, num_classes, ignore=UNLABELLED_ID)
            if kept is not None:
                kept[name].append((camera, prediction))
        done += 1
        if progress is not None:
            progress(done, total)
        stopped = bool(should_stop is not None and should_stop())
        return stopped

    for seed in seeds:
        kept = {name: [] for name in named}
        for camera in cameras:
            if label_view(seed, camera, kept, video=False):
                break
        for name, views in kept.items():
            agree, count = pairwise_consistency(views)
            tallies[name].agreeing += agree
            tallies[name].compared += count
        if stopped:
            break
    for seed in video_seeds if not stopped else []:
        for camera in video_cameras:
            if label_view(seed, camera, None, video=True):
                break
        if stopped:
            break
    results = {name: tally.figures(class_names, complete=not stopped) for name, tally in tallies.items()}
    return results if isinstance(labellers, dict) else results[""]


def evaluate_branch(branch, backbone, identities: int = 10, views: int = len(LABEL_VIEWS),
                    video_identities: int = 1, video_frames: int = VIDEO_FRAMES, resolution: int | None = None,
                    class_names: list[str] | None = None, progress=None, should_stop=None) -> dict:
    """`evaluate_labels` of a trained branch on the first `identities` seeds of the 'evaluate' range.

    The video uses the first `video_identities` of those seeds. Returns the figures plus what
    was measured on (seeds, views, frames, resolution), ready for JSON.
    """
    return evaluate_branches({"": branch}, backbone, identities, views, video_identities, video_frames, resolution,
                             class_names, progress, should_stop)[""]


def evaluate_branches(branches: dict, backbone, identities: int = 10, views: int = len(LABEL_VIEWS),
                      video_identities: int = 1, video_frames: int = VIDEO_FRAMES, resolution: int | None = None,
                      class_names: list[str] | None = None, progress=None, should_stop=None,
                      surface_oracle: bool = False) -> dict:
    """As evaluate_branch for several branches of one backbone ({name: branch} → {name: figures}):
    each view is rendered by the backbone once for all of them. With `surface_oracle`, the
    figures of SurfaceOracleLabeller come under the name SURFACE_ORACLE as well."""
    from core.procedural import seeds_for

    if identities < 1 or not 1 <= views <= len(LABEL_VIEWS):
        raise ValueError(f"need at least 1 identity and 1..{len(LABEL_VIEWS)} views, got {identities} and {views}")
    if not 0 <= video_identities <= identities or (video_identities and video_frames < 2):
        raise ValueError(f"video identities must be 0..{identities} (of the evaluated ones) with at least 2 frames")
    memo = RenderMemo()
    labellers = {name: BranchLabeller(branch.eval(), backbone, resolution, memo) for name, branch in branches.items()}
    resolution = next(iter(labellers.values())).resolution
    if surface_oracle:
        labellers[SURFACE_ORACLE] = SurfaceOracleLabeller.on_backbone(backbone, resolution, memo)
    seeds = seeds_for("evaluate", identities)
    names = class_names or [str(index) for index in range(next(iter(branches.values())).num_classes)]
    results = evaluate_labels(labellers, ProceduralLabeller(resolution), seeds,
                              label_cameras(backbone, LABEL_VIEWS[:views]), seeds[:video_identities],
                              orbit_cameras(backbone, video_frames), names, progress, should_stop)
    for figures in results.values():
        figures.update(
            identities=seeds, views=[list(view) for view in LABEL_VIEWS[:views]],
            video_identities=seeds[:video_identities],
            video={"frames": video_frames, "yaw": [-VIDEO_YAW, VIDEO_YAW], "pitch": 0.0},
            resolution=resolution, depth_tolerance=DEPTH_TOLERANCE,
        )
    for branch in branches.values():
        branch.clear_cache()
    return results


# ---------------------------------------------------------------------------- checkpoint validation
class ValidationSet:
    """mIoU and pixel accuracy on a few procedural identities, for the trainer's checkpoints.

    The identities are far into the 'evaluate' range (VALIDATION_SEED_OFFSET), never annotated
    and never among those `evaluate labels` reports on; the figures are only recorded, nothing
    is selected by them. The backbone's views and the truth are computed once, so a validation
    costs only the semantic part of each view.
    """

    def __init__(self, backbone, resolution: int, identities: int = 2, views=VALIDATION_VIEWS,
                 class_names: list[str] | None = None):
        from core.procedural import seeds_for

        self.seeds = seeds_for("evaluate", identities, VALIDATION_SEED_OFFSET)
        self.views = [tuple(view) for view in views]
        self.resolution = int(resolution)
        self.class_names = class_names
        self._backbone = backbone
        self._items = None  # [(seed, camera, identity, view, truth labels)], made on first use

    def describe(self) -> dict:
        return {"source": "procedural 'evaluate'-range identities (never annotated; not those of "
                          "`evaluate labels`)",
                "seeds": self.seeds, "views": [list(view) for view in self.views], "resolution": self.resolution}

    def _prepare(self, branch) -> list:
        labeller = BranchLabeller(branch, self._backbone, self.resolution)
        truth = ProceduralLabeller(self.resolution)
        items = []
        for seed in self.seeds:
            for camera in label_cameras(self._backbone, self.views):
                identity, view, _ = labeller.render(seed, camera)
                items.append((camera, identity, view, truth(seed, camera).labels))
        return items

    @torch.no_grad()
    def __call__(self, branch) -> dict:
        if self._items is None:
            self._items = self._prepare(branch)
        labeller = BranchLabeller(branch, self._backbone, self.resolution)
        num_classes = branch.num_classes
        confusion = np.zeros((num_classes, num_classes), np.int64)
        for camera, identity, view, truth in self._items:
            confusion += confusion_matrix(labeller.labels(identity, view, camera), truth, num_classes,
                                          ignore=UNLABELLED_ID)
        figures = label_figures(confusion, self.class_names)
        return {"validation_miou": figures["miou"], "validation_pixel_accuracy": figures["pixel_accuracy"],
                "validation": self.describe()}
