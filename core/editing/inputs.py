"""Reading what the user gives to inversion and editing, with one clear error per problem.

Images of any size are centre-cropped to a square and resized to the backbone's resolution, and
the caller is told so (`note`). Grey-scale images are refused: a colour generator fit to a
grey image would invent the colours. Label maps must be indexed/grey PNGs holding ids of the
label set; an edited map must have exactly the size of the render it was painted on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class EditingInputError(ValueError):
    """Bad input for inversion or editing; the message names the file and what is wrong."""


@dataclass
class PreparedImage:
    rgb: np.ndarray  # (R, R, 3) uint8
    note: str  # what was done to it ('' when nothing)


def square_and_resize(array: np.ndarray, resolution: int, nearest: bool) -> tuple[np.ndarray, str]:
    """Centre-crop to a square, then resize to resolution²; the note says what happened."""
    height, width = array.shape[:2]
    notes = []
    if height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        array = array[top:top + side, left:left + side]
        notes.append(f"centre-cropped {width}x{height} to {side}x{side}")
    side = array.shape[0]
    if side != resolution:
        interpolation = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if side > resolution else cv2.INTER_CUBIC)
        array = cv2.resize(array, (resolution, resolution), interpolation=interpolation)
        notes.append(f"resized {side}x{side} to {resolution}x{resolution}")
    return np.ascontiguousarray(array), "; ".join(notes)


def prepare_image(rgb: np.ndarray, resolution: int, source: str = "the image") -> PreparedImage:
    """An RGB uint8 array (H, W, 3) ready for RGB inversion; grey-scale content is an error."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 1):
        raise EditingInputError(f"{source} is a grey-scale image; RGB inversion needs a colour image")
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise EditingInputError(f"{source} is not an RGB image (array of shape {rgb.shape})")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise EditingInputError(f"{source} is only {rgb.shape[1]}x{rgb.shape[0]} pixels")
    notes = []
    if rgb.shape[2] == 4:
        alpha = rgb[..., 3:].astype(np.float32) / 255
        rgb = (rgb[..., :3] * alpha + 127.5 * (1 - alpha)).round().astype(np.uint8)
        notes.append("composited its alpha channel on mid grey")
    if rgb.dtype != np.uint8:
        raise EditingInputError(f"{source} has {rgb.dtype} pixels; 8-bit colour images are supported")
    spread = np.abs(rgb.astype(np.int16) - rgb.mean(2, keepdims=True)).max()
    if spread <= 2:
        raise EditingInputError(f"{source} is a grey-scale image stored as RGB (all channels equal); "
                                "RGB inversion needs a colour image")
    rgb, note = square_and_resize(rgb, resolution, nearest=False)
    return PreparedImage(rgb, "; ".join(notes + ([note] if note else [])))


def read_image(path: str | Path, resolution: int) -> PreparedImage:
    """An image file (PNG, JPEG, …) prepared for RGB inversion."""
    path = Path(path)
    if not path.is_file():
        raise EditingInputError(f"image file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise EditingInputError(f"{path}: not a readable image file")
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return prepare_image(image, resolution, str(path))


def check_label_map(labels: np.ndarray, num_classes: int, source: str, resolution: int | None = None) -> np.ndarray:
    """(H, W) uint8 ids below num_classes (and of size resolution² when given), else an error."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise EditingInputError(f"{source}: a label map is (H, W) ids, got shape {labels.shape}")
    if resolution is not None and labels.shape != (resolution, resolution):
        raise EditingInputError(f"{source} is {labels.shape[1]}x{labels.shape[0]}, but the render it edits is "
                                f"{resolution}x{resolution}; paint on a map of the render's size")
    unknown = sorted(int(v) for v in np.unique(labels) if v >= num_classes)
    if unknown:
        raise EditingInputError(f"{source} holds label ids {unknown} outside the label set (0..{num_classes - 1})")
    return labels.astype(np.uint8)


def read_label_map(path: str | Path, num_classes: int, resolution: int | None = None,
                   fit_to: int | None = None) -> tuple[np.ndarray, str]:
    """An indexed (or grey) PNG of label ids. `resolution`: the size it must have exactly;
    `fit_to`: centre-crop and resize (nearest) to that size instead, with a note."""
    from core.fileio import read_indexed_png

    path = Path(path)
    if not path.is_file():
        raise EditingInputError(f"label map not found: {path}")
    try:
        labels, _ = read_indexed_png(path)
    except ValueError as error:
        raise EditingInputError(str(error)) from error
    note = ""
    if fit_to is not None:
        labels, note = square_and_resize(labels, fit_to, nearest=True)
    return check_label_map(labels, num_classes, str(path), resolution), note
