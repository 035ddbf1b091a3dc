"""`python main.py evaluate edit`: editing and inversion figures against procedural ground truth.

Identities come from the 'evaluate' seed range (never used to fit the backbone or to annotate).

Scripted edits (design.md §7, issue 7): for each identity, the frontal view's *procedural* label
map P is edited by a script — enlarge the eyes (each eye dilated by EYE_GROWTH px into the face),
remove the left ear (ear and inner ear → background), change the nose region (nose dilated by
NOSE_GROWTH px) — giving P′ and the edited labels E. The map handed to the editor is what a user
would paint on the *rendered* labels L₀ of the identity: P′ inside the region of E (in P, P′ or
L₀, dilated), L₀ elsewhere. Figures per edit: mean IoU, over the classes present there, of the
edited identity's rendered labels against that target inside r (and the same before the edit,
for reference); PSNR of the edited render against the original render outside r; seconds.
A label the target lacks inside r but the render shows there (a remnant of a removed ear) counts
as a class of IoU 0: while a few pixels of the left ear and of its inner ear remain, the ear's
figure is at most 0.5 (two labels of IoU 0 beside background and head). For reference the mean
over the target's labels only (`iou_in_region_target_labels`; leftover pixels still count
against the label they should have had) is reported beside it.

Inversion: the procedural render of an identity from INVERSION_VIEW is inverted (RGB, unknown
pose); figures: PSNR of the inverted render against the image, mean IoU of the inverted
identity's labels against the procedural labels of the image, and the error of the recovered
pose. For reference the same figures are given for the backbone's own latent of that seed at
the true pose (what a perfect inversion onto this backbone could reach).
"""
from __future__ import annotations

import dataclasses
import math
import time

import cv2
import numpy as np
import torch

from core.editing.inversion import InversionSettings, invert_image
from core.editing.rendering import CameraRig, render_opacity, to_uint8
from core.editing.semantic_edit import EditSettings, edit_identity, render_view
from core.editing.store import edit_figures
from core.metrics import confusion_matrix, mean_iou, psnr
from core.procedural import LABEL_IDS, HeadParams, render as procedural_render, seeds_for

EDIT_VIEW = (0.0, 0.0)
INVERSION_VIEW = (20.0, -5.0)
EYE_GROWTH = 3
NOSE_GROWTH = 3
# Views an edit's floaters are looked for in (yaw, pitch): an edit is optimised in one view only, so
# density it creates where that view does not look goes unpunished unless something else holds it.
FLOATER_VIEWS = ((-60.0, 0.0), (-30.0, 0.0), (30.0, 0.0), (60.0, 0.0), (0.0, 20.0), (0.0, -20.0))
FOREGROUND = 0.2  # opacity from which a pixel is foreground (a floater of 0.4 is plainly visible on grey)
FLOATER_TOUCH = 2  # px: new foreground this close to the old silhouette belongs to the head
FACE = [LABEL_IDS[name] for name in ("head", "muzzle", "left_eye", "right_eye", "nose")]


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _grow(labels: np.ndarray, label_id: int, pixels: int, into) -> np.ndarray:
    grown = cv2.dilate((labels == label_id).astype(np.uint8), _disc(pixels)) > 0
    edited = labels.copy()
    edited[grown & np.isin(labels, into)] = label_id
    return edited


def enlarge_eyes(labels: np.ndarray):
    edited = labels
    for name in ("left_eye", "right_eye"):
        edited = _grow(edited, LABEL_IDS[name], EYE_GROWTH, [LABEL_IDS["head"], LABEL_IDS["muzzle"]])
    return edited, [LABEL_IDS["left_eye"], LABEL_IDS["right_eye"]]


def remove_left_ear(labels: np.ndarray):
    ear = [LABEL_IDS["left_ear"], LABEL_IDS["left_inner_ear"]]
    edited = labels.copy()
    edited[np.isin(labels, ear)] = LABEL_IDS["background"]
    return edited, ear


def enlarge_nose(labels: np.ndarray):
    nose = LABEL_IDS["nose"]
    return _grow(labels, nose, NOSE_GROWTH, [LABEL_IDS["muzzle"], LABEL_IDS["head"], LABEL_IDS["mouth"]]), [nose]


SCRIPTED_EDITS = {"enlarge the eyes": enlarge_eyes, "remove the left ear": remove_left_ear,
                  "change the nose region": enlarge_nose}


def scripted_target(procedural: np.ndarray, rendered: np.ndarray, script, dilation: int):
    """(edited map for the editor, edited labels) from procedural labels P and rendered labels L₀."""
    edited, labels = script(procedural)
    region = np.isin(procedural, labels) | np.isin(edited, labels) | np.isin(rendered, labels)
    region = cv2.dilate(region.astype(np.uint8), _disc(dilation)) > 0
    return np.where(region, edited, rendered).astype(np.uint8), labels


def procedural_buffers(backbone, seed: int, yaw: float, pitch: float, resolution: int) -> dict:
    return procedural_render(HeadParams.from_seed(seed), backbone.camera(yaw, pitch).label(), resolution)


def evaluate_edits(backbone, branch, identities: int = 3, settings: EditSettings | None = None, vgg_weights=None,
                   progress=None, view: tuple[float, float] = EDIT_VIEW) -> dict:
    """The scripted edits of `identities` 'evaluate' seeds, painted in `view` (yaw, pitch)."""
    settings = settings or EditSettings()
    G = backbone.generator
    resolution = int(G.img_resolution)
    num_classes = branch.config["num_classes"]
    rows = []
    seeds = seeds_for("evaluate", identities)
    for seed in seeds:
        ws = backbone.identity_from_seed(seed).ws
        before = render_view(G, branch, ws, *view, resolution)
        shapes_before = silhouettes(G, ws)
        truth = procedural_buffers(backbone, seed, *view, resolution)["labels"]
        for name, script in SCRIPTED_EDITS.items():
            target, labels = scripted_target(truth, before[1], script, settings.dilation)
            if not np.any(target != before[1]):
                rows.append({"seed": seed, "edit": name, "skipped": "the edit changes nothing in this view"})
                continue
            result = edit_identity(G, branch, ws, *view, target, settings, vgg_weights, labels, before)
            rows.append({"seed": seed, "edit": name, "seconds": result.seconds, "steps": len(result.history),
                         "perceptual": result.perceptual,
                         "label_iou_before_edit": _miou(before[1], truth, num_classes), **edit_figures(result),
                         **floater_figures(G, ws, result.ws, before=shapes_before)})
            if progress:
                progress(len(rows), len(seeds) * len(SCRIPTED_EDITS))
    done = [row for row in rows if "skipped" not in row]
    return {
        "edits": rows,
        "iou_in_region": _mean(done, "iou_in_region"),
        "iou_in_region_before": _mean(done, "iou_in_region_before"),
        "psnr_outside_region": _mean(done, "psnr_outside_region"),
        "iou_in_region_target_labels": _mean(done, "iou_in_region_target_labels"),
        "iou_in_region_target_labels_before": _mean(done, "iou_in_region_target_labels_before"),
        "seconds_per_edit": _mean(done, "seconds"),
        # Pixels summed over FLOATER_VIEWS at the backbone's resolution, mean per edit; and how many
        # edits left any floater at all.
        "floater_pixels": _mean(done, "floater_pixels"),
        "new_foreground_pixels": _mean(done, "new_foreground_pixels"),
        "edits_with_floaters": sum(1 for row in done if row["floater_pixels"] > 0),
        "floater_views": [list(view) for view in FLOATER_VIEWS],
        "per_edit": {name: {key: _mean([r for r in done if r["edit"] == name], key)
                            for key in ("iou_in_region", "iou_in_region_before", "psnr_outside_region", "seconds",
                                        "iou_in_region_target_labels", "iou_in_region_target_labels_before",
                                        "floater_pixels", "new_foreground_pixels")}
                     for name in SCRIPTED_EDITS},
        "settings": dataclasses.asdict(settings),
        "view": {"yaw": view[0], "pitch": view[1]},
        "identities": seeds,
        "resolution": resolution,
        "threads": torch.get_num_threads(),
    }


def evaluate_inversions(backbone, branch, identities: int = 2, settings: InversionSettings | None = None,
                        vgg_weights=None, first: int = 100, progress=None) -> dict:
    """RGB inversion of procedural renders of 'evaluate' seeds `first`, `first + 1`, …"""
    settings = settings or InversionSettings()
    G = backbone.generator
    resolution = int(G.img_resolution)
    num_classes = branch.config["num_classes"] if branch is not None else None
    rows = []
    for seed in seeds_for("evaluate", identities, start=first):
        truth = procedural_buffers(backbone, seed, *INVERSION_VIEW, resolution)
        image = (truth["rgb"] * 255).round().astype(np.uint8)
        began = time.perf_counter()
        result = invert_image(G, image, settings, vgg_weights)
        seconds = time.perf_counter() - began
        row = {"seed": seed, "seconds": seconds, "start": result.start, "perceptual": result.perceptual,
               "yaw_error": abs(result.yaw - INVERSION_VIEW[0]), "pitch_error": abs(result.pitch - INVERSION_VIEW[1])}
        own = backbone.identity_from_seed(seed).ws
        for key, ws, pose in (("inverted", result.ws, (result.yaw, result.pitch)), ("backbone_seed", own, INVERSION_VIEW)):
            if branch is not None:
                rgb, labels = render_view(G, branch, ws, *pose, resolution)
                row[f"{key}_label_iou"] = _miou(labels, truth["labels"], num_classes)
            else:
                from core.editing.rendering import CameraRig, render

                with torch.no_grad():
                    rgb = to_uint8(render(G, ws, CameraRig.of(G).label(torch.tensor(pose[0]), torch.tensor(pose[1])),
                                          resolution).image)
            row[f"{key}_psnr"] = psnr(rgb / 255.0, image / 255.0)
        rows.append(row)
        if progress:
            progress(len(rows), identities)
    return {
        "inversions": rows,
        "psnr": _mean(rows, "inverted_psnr"),
        "label_iou": _mean(rows, "inverted_label_iou"),
        "reference_psnr_backbone_seed": _mean(rows, "backbone_seed_psnr"),
        "reference_label_iou_backbone_seed": _mean(rows, "backbone_seed_label_iou"),
        "seconds_per_inversion": _mean(rows, "seconds"),
        "view": {"yaw": INVERSION_VIEW[0], "pitch": INVERSION_VIEW[1]},
        "settings": {"steps": settings.steps, "start_steps": settings.start_steps, "resolution": settings.resolution,
                     "starts": len(settings.start_yaws) + settings.random_starts, "latent_space": settings.latent_space},
    }


def silhouettes(G, ws: torch.Tensor, views=FLOATER_VIEWS, resolution: int | None = None) -> list[np.ndarray]:
    """Foreground masks (opacity > FOREGROUND) of a latent from each (yaw, pitch) of `views`."""
    rig, resolution = CameraRig.of(G), resolution or int(G.img_resolution)
    return [render_opacity(G, ws, rig.label(torch.tensor(yaw), torch.tensor(pitch)), resolution) > FOREGROUND
            for yaw, pitch in views]


def floater_pixels(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """(floater pixels, new foreground pixels) of one view's silhouettes before and after an edit.
    New foreground: after's foreground farther than FLOATER_TOUCH px from before's. Floaters: the
    connected parts (8-connected) of after's foreground that do not come that close to before's
    at all — foreground that is new and disconnected from the head."""
    near_before = cv2.dilate(before.astype(np.uint8), _disc(FLOATER_TOUCH)) > 0
    new = after & ~near_before
    count, parts = cv2.connectedComponents(after.astype(np.uint8), connectivity=8)
    touching = np.unique(parts[near_before & after])
    floating = (parts > 0) & ~np.isin(parts, touching)
    return int(floating.sum()), int(new.sum())


def floater_figures(G, start_ws: torch.Tensor, edited_ws: torch.Tensor, views=FLOATER_VIEWS,
                    before: list[np.ndarray] | None = None) -> dict:
    """Floaters of an edit in other views (pixels at the backbone's resolution, summed over
    `views`; `before` = the start's `silhouettes` when the caller has them)."""
    before = before if before is not None else silhouettes(G, start_ws, views)
    counts = [floater_pixels(old, new) for old, new in zip(before, silhouettes(G, edited_ws, views))]
    return {"floater_pixels": sum(c[0] for c in counts), "new_foreground_pixels": sum(c[1] for c in counts),
            "floater_pixels_per_view": {f"{yaw:+.0f}/{pitch:+.0f}": c[0] for (yaw, pitch), c in zip(views, counts)}}


def _miou(prediction, truth, num_classes) -> float:
    return mean_iou(confusion_matrix(prediction, truth, num_classes))


def _mean(rows, key) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None and math.isfinite(row[key])]
    return float(np.mean(values)) if values else None
