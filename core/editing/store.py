"""Inversion and edit results on disk: the files `main.py invert` / `main.py edit` write and the
Edit workspace saves under a project's `edits/NAME/`.

Latents are .npy arrays (1, num_ws, w_dim) float32 — the same w files the project store's
annotations refer to — read back with allow_pickle=False. Every write is atomic
(core.fileio). A folder is complete when its `result.json` exists; it is written last.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, write_indexed_png, write_png

RESULT_FILE = "result.json"
ORBIT_YAWS = (-60.0, -30.0, 0.0, 30.0, 60.0)


def write_latent(path: str | Path, ws: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.save(buffer, ws.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_latent(path: str | Path, G) -> torch.Tensor:
    """ws (1, num_ws, w_dim) from a .npy file; a ValueError naming the file when it does not fit G."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latent file not found: {path}")
    try:
        ws = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy reports damage as ValueError, OSError, EOFError…
        raise ValueError(f"{path}: not a readable .npy latent ({type(error).__name__}: {error})") from error
    if ws.ndim == 2:
        ws = ws[None]
    expected = (1, G.backbone.num_ws, G.w_dim)
    if ws.shape != expected:
        raise ValueError(f"{path}: latent of shape {ws.shape}, this backbone needs {expected} (w+)")
    if not np.isfinite(ws).all():
        raise ValueError(f"{path}: latent holds NaN or infinite values")
    return torch.from_numpy(ws.astype(np.float32))


def read_pose(path: str | Path) -> tuple[float, float]:
    """(yaw, pitch) in degrees from a pose.json an inversion or edit wrote."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return float(data["yaw"]), float(data["pitch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a pose file with 'yaw' and 'pitch' ({type(error).__name__}: {error})") from error


def write_history(folder: Path, history: list[dict]) -> None:
    """loss.csv (every step's loss and its terms) and loss.png (the curve)."""
    if not history:
        return
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(folder / "loss.csv", text.getvalue())
    write_png(folder / "loss.png", loss_curve([row["loss"] for row in history]))


def loss_curve(values, width: int = 480, height: int = 240) -> np.ndarray:
    """A plain plot of a loss curve (log scale when it spans more than a decade), as RGB uint8."""
    values = np.asarray(values, np.float64)
    image = np.full((height, width, 3), 255, np.uint8)
    margin = 30
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return image
    log = finite.min() > 0 and finite.max() / finite.min() > 10
    shown = np.log10(np.clip(values, 1e-12, None)) if log else values
    low, high = np.nanmin(shown), np.nanmax(shown)
    span = max(high - low, 1e-12)
    xs = margin + (width - 2 * margin) * np.arange(len(values)) / max(len(values) - 1, 1)
    ys = height - margin - (height - 2 * margin) * (shown - low) / span
    points = np.stack([xs, ys], 1).round().astype(np.int32)
    cv2.rectangle(image, (margin, margin), (width - margin, height - margin), (200, 200, 200), 1)
    cv2.polylines(image, [points.reshape(-1, 1, 2)], False, (30, 90, 200), 2, cv2.LINE_AA)
    scale = " (log)" if log else ""
    cv2.putText(image, f"loss{scale}: {values[0]:.4g} -> {values[-1]:.4g}", (margin, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{len(values)} steps", (margin, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    return image


def write_orbit(folder: Path, G, branch, ws: torch.Tensor, pitch: float, resolution: int, palette, prefix: str) -> None:
    """Renders of the identity from ORBIT_YAWS: RGB, and labels when there is a branch."""
    from core.editing.rendering import CameraRig, render_still, to_uint8

    rig = CameraRig.of(G)
    for yaw in ORBIT_YAWS:
        rendered = render_still(G, ws, rig.label(torch.tensor(yaw), torch.tensor(float(pitch))), resolution, branch)
        name = f"{prefix}_yaw{yaw:+.0f}"
        write_png(folder / f"{name}.png", to_uint8(rendered.image))
        if rendered.logits is not None:
            write_indexed_png(folder / f"{name}_labels.png", rendered.logits.argmax(1)[0].to(torch.uint8).numpy(), palette)


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    height = max(image.shape[0] for image in images)
    parts = []
    for image in images:
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, 2)
        parts += [image, np.full((height, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], 1)


def save_inversion(folder: str | Path, result, G, branch, target_rgb, target_labels, resolution: int, palette,
                   extra: dict | None = None) -> Path:
    """latent.npy, pose.json, render.png (+ labels.png), target, orbit renders, loss curve, result.json."""
    from core.editing.semantic_edit import render_view

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULT_FILE).unlink(missing_ok=True)
    write_latent(folder / "latent.npy", result.ws)
    pose = {"yaw": result.yaw, "pitch": result.pitch}
    atomic_write_json(folder / "pose.json", pose)
    if target_rgb is not None:
        write_png(folder / "target.png", target_rgb)
    if target_labels is not None:
        write_indexed_png(folder / "target_labels.png", target_labels.astype(np.uint8), palette)
    if branch is not None:
        rgb, labels = render_view(G, branch, result.ws, result.yaw, result.pitch, resolution)
        write_indexed_png(folder / "labels.png", labels, palette)
    else:
        from core.editing.rendering import CameraRig, render, to_uint8

        with torch.no_grad():
            rgb = to_uint8(render(G, result.ws, CameraRig.of(G).label(torch.tensor(result.yaw),
                                                                      torch.tensor(result.pitch)), resolution).image)
    write_png(folder / "render.png", rgb)
    write_orbit(folder, G, branch, result.ws, result.pitch, resolution, palette, "orbit")
    write_history(folder, result.history)
    summary = {**pose, "loss": result.loss, "start": result.start, "perceptual": result.perceptual,
               "stopped": result.stopped, "seconds": result.seconds, **(extra or {})}
    atomic_write_json(folder / RESULT_FILE, summary)
    return folder


def save_edit(folder: str | Path, result, G, branch, palette, extra: dict | None = None, orbit: bool = True) -> Path:
    """Before/after latents, maps, renders, r, a side-by-side sheet, orbit renders, loss curve, result.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULT_FILE).unlink(missing_ok=True)
    write_latent(folder / "latent_before.npy", result.start_ws)
    write_latent(folder / "latent.npy", result.ws)
    atomic_write_json(folder / "pose.json", {"yaw": result.yaw, "pitch": result.pitch})
    write_png(folder / "before.png", result.rgb_before)
    write_png(folder / "after.png", result.rgb_after)
    write_indexed_png(folder / "labels_before.png", result.labels_before, palette)
    write_indexed_png(folder / "labels_after.png", result.labels_after, palette)
    write_indexed_png(folder / "edited_target.png", result.target, palette)
    write_png(folder / "region.png", result.region.astype(np.uint8) * 255)
    colour = _palette_lookup(palette)
    write_png(folder / "side_by_side.png", side_by_side(result.rgb_before, colour[result.labels_before],
                                                        colour[result.target], colour[result.labels_after],
                                                        result.rgb_after))
    if orbit:
        write_orbit(folder, G, branch, result.ws, result.pitch, result.rgb_after.shape[0], palette, "after")
    write_history(folder, result.history)
    summary = {"yaw": result.yaw, "pitch": result.pitch, "edited_labels": result.edited_labels,
               "perceptual": result.perceptual, "stopped": result.stopped, "seconds": result.seconds,
               **edit_figures(result), **(extra or {})}
    atomic_write_json(folder / RESULT_FILE, summary)
    return folder


def _palette_lookup(palette) -> np.ndarray:
    table = np.zeros((256, 3), np.uint8)
    palette = np.asarray(palette, np.uint8).reshape(-1, 3)
    table[:len(palette)] = palette
    return table


def edit_figures(result) -> dict:
    """IoU of the target labels inside r before and after the edit — the mean over the classes in
    the render or the target there, and (`…_target_labels`) over the target's classes only, see
    core.editing.evaluate — and PSNR outside r of the after render against the before render."""
    from core.metrics import confusion_matrix, mean_iou, per_class_iou, psnr

    num_classes = int(max(result.target.max(), result.labels_after.max(), result.labels_before.max())) + 1
    inside = result.region
    target = result.target[inside]
    figures = {}
    for suffix, labels in (("", result.labels_after), ("_before", result.labels_before)):
        confusion = confusion_matrix(labels[inside], target, num_classes)
        figures["iou_in_region" + suffix] = mean_iou(confusion)
        figures["iou_in_region_target_labels" + suffix] = float(np.mean(per_class_iou(confusion)[np.unique(target)]))
    return {**figures, "psnr_outside_region": psnr(result.rgb_after / 255.0, result.rgb_before / 255.0, mask=~inside),
            "region_fraction": float(inside.mean())}
