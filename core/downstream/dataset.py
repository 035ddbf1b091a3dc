"""Reading a factory dataset (design.md §4) as downstream training pairs and point clouds.

    images/*.png        RGB
    labels/*.png        indexed PNG, pixel values = label ids (same file stems as images/)
    cameras.json        per image: 25-float label (+ yaw/pitch/radius/fov; seed when known)
    pointclouds/*.ply   binary PLY: x y z red green blue label (core.factory.read_ply)
    labels.json         the label map; manifest.json: what was asked and done (seeds, hashes)

Only identities the manifest counts as done ("identities_done") are read, so a dataset that is
still being written can be used. The reader does not assume one file-naming scheme: cameras.json may be a list (in image order),
a {"images": [...]} / {"cameras": [...]} document, or a mapping from file name to entry; an entry
names its image under "file", "image", "name" or "path" when it does. Every problem is a
DatasetError naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.downstream.sources import PairSet, resize_image, resize_labels
from core.fileio import read_indexed_png, read_rgb


class DatasetError(ValueError):
    """A dataset folder that cannot be read as the factory's layout; the message names the file."""


_FILE_KEYS = ("file", "image", "name", "path", "filename")
_LABEL_KEYS = ("label", "camera_label", "c", "camera")
_SEED_KEYS = ("seed", "identity_seed", "identity")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot be read as JSON: {error}") from error


def _camera_entries(path: Path) -> list | dict:
    document = _read_json(path)
    if isinstance(document, dict):
        for key in ("images", "cameras", "frames", "views"):
            if isinstance(document.get(key), (list, dict)):
                return document[key]
    if isinstance(document, (list, dict)):
        return document
    raise DatasetError(f"{path}: expected a list or mapping of camera entries")


def _entry_for(entries, index: int, stem: str, path: Path) -> dict:
    if isinstance(entries, dict):
        for key, entry in entries.items():
            if Path(str(key)).stem == stem:
                return entry if isinstance(entry, dict) else {"label": entry}
        raise DatasetError(f"{path}: no camera entry for image {stem}")
    for entry in entries:
        if isinstance(entry, dict) and any(Path(str(entry.get(k, ""))).stem == stem for k in _FILE_KEYS if k in entry):
            return entry
    if index < len(entries) and isinstance(entries[index], dict) and not any(k in entries[index] for k in _FILE_KEYS):
        return entries[index]
    raise DatasetError(f"{path}: no camera entry for image {stem}")


def _camera_label(entry: dict, stem: str, path: Path) -> np.ndarray:
    for key in _LABEL_KEYS:
        if key in entry:
            label = np.asarray(entry[key], np.float32).reshape(-1)
            if label.size == 25:
                return label
    raise DatasetError(f"{path}: the entry of {stem} has no 25-float camera label")


def _seed(entry: dict) -> int:
    for key in _SEED_KEYS:
        value = entry.get(key)
        if isinstance(value, dict):
            value = value.get("seed")
        if isinstance(value, (int, np.integer)):
            return int(value)
    return -1


def read_class_names(folder: Path) -> list[str] | None:
    """Names by id from labels.json ({"labels": [...]}, a list, or {id: name}); None without the file."""
    path = Path(folder) / "labels.json"
    if not path.exists():
        return None
    document = _read_json(path)
    items = document.get("labels", document) if isinstance(document, dict) else document
    names = {}
    if isinstance(items, dict):
        for key, value in items.items():
            names[int(key)] = value.get("name", str(key)) if isinstance(value, dict) else str(value)
    else:
        for item in items:
            names[int(item["id"])] = str(item.get("name", item["id"]))
    if not names:
        raise DatasetError(f"{path}: no labels")
    return [names.get(i, f"class_{i}") for i in range(max(names) + 1)]


def read_pairs(folder, resolution: int | None = None, limit: int | None = None) -> PairSet:
    """Images, labels, cameras and seeds of a factory dataset, resized to `resolution` if given."""
    folder = Path(folder)
    image_paths = sorted((folder / "images").glob("*.png"))
    if not image_paths:
        raise DatasetError(f"{folder / 'images'}: no PNG images (is {folder} a factory dataset?)")
    cameras_path = folder / "cameras.json"
    entries = _camera_entries(cameras_path)
    manifest = _read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    done = manifest.get("identities_done") if isinstance(manifest, dict) else None
    images, labels, seeds, cameras = [], [], [], []
    for index, image_path in enumerate(image_paths):
        if limit is not None and len(images) >= limit:
            break
        stem = image_path.stem
        entry = _entry_for(entries, index, stem, cameras_path)
        if isinstance(done, int) and isinstance(entry.get("identity"), int) and entry["identity"] >= done:
            continue  # an identity the factory has not finished: its files may be partial
        label_path = folder / "labels" / f"{stem}.png"
        if not label_path.exists():
            raise DatasetError(f"{label_path}: missing (every image needs its label map)")
        try:
            image, mask = read_rgb(image_path), read_indexed_png(label_path)[0]
        except (OSError, ValueError) as error:
            raise DatasetError(f"{image_path.parent.parent}: cannot read {stem}: {error}") from error
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{label_path}: {mask.shape} does not match its image {image.shape[:2]}")
        size = resolution or image.shape[0]
        images.append(resize_image(image, size))
        labels.append(resize_labels(mask, size))
        cameras.append(_camera_label(entry, stem, cameras_path))
        seeds.append(_seed(entry))
    return PairSet(np.stack(images), np.stack(labels), np.asarray(seeds, np.int64), np.stack(cameras))


def read_point_clouds(folder, limit: int | None = None) -> tuple[list, list]:
    """(points list, labels list) of pointclouds/*.ply in name order."""
    from core.factory import read_ply

    paths = sorted((Path(folder) / "pointclouds").glob("*.ply"))[:limit]
    points, labels = [], []
    for path in paths:
        try:
            cloud = read_ply(path)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: {error}") from error
        points.append(cloud.points)
        labels.append(cloud.labels)
    return points, labels
