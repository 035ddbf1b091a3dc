"""A factory dataset (design.md §4) as a PyTorch `Dataset`: the one reader of the layout.

    images/*.png        RGB
    labels/*.png        indexed PNG, pixel values = label ids (same file stems as images/)
    depth/*.png         16-bit PNG: ray depth = value * depth_scale, 0 = background (optional)
    cameras.json        per image: 25-float label (+ yaw/pitch/radius/fov; seed when known)
    pointclouds/*.ply   binary PLY: x y z red green blue label, one per identity (optional)
    labels.json         the label map; manifest.json: what was asked and done (seeds, hashes)

Only identities the manifest counts as done ("identities_done"; of a shard, its own) are read,
so a dataset that is still being written can be used. The reader does not assume one file-naming scheme, so folders
written by other tools in this layout read too: cameras.json may be a list (in image order), a
{"images": [...]} / {"cameras": [...]} document, or a mapping from file name to entry; an entry
names its image under "file", "image", "name" or "path" when it does. Every problem is a
DatasetError naming the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.fileio import read_indexed_png, read_rgb
from core.imaging import resize_image, resize_labels


class DatasetError(ValueError):
    """A dataset folder that cannot be read as the factory's layout; the message names the file."""


_FILE_KEYS = ("file", "image", "name", "path", "filename")
_LABEL_KEYS = ("label", "camera_label", "c", "camera")
_SEED_KEYS = ("seed", "identity_seed", "identity")


@dataclass(frozen=True)
class SampleRecord:
    """Where one sample's files are and what cameras.json says of it."""

    name: str  # file stem shared by images/, labels/ and depth/
    camera_label: np.ndarray  # (25,) float32, EG3D's camera label
    seed: int  # identity seed (-1: not known)
    identity: int  # identity index in the dataset (-1: not known)


class FactoryDataset(torch.utils.data.Dataset):
    """Items of a factory folder, in file-name order::

        dataset = FactoryDataset("P/datasets/run1")
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
        for batch in loader:
            batch["image"]   # (B, 3, H, W) float32 in [0, 1]
            batch["label"]   # (B, H, W) int64 label ids (labels.json names them)
            batch["depth"]   # (B, H, W) float32 ray depth, NaN on the background
            batch["camera"]  # (B, 25) float32 EG3D camera label (cam2world 4x4 + intrinsics 3x3)

    `size` resizes images (area / linear) and labels (nearest); depth is then omitted, because
    resampling a depth map across silhouettes invents surfaces. `limit` keeps the first items.
    With `pointclouds=True` each item also has its identity's fused cloud ("points" (P, 3),
    "point_colors" (P, 3) uint8, "point_labels" (P,)); clouds differ in size, so batch with
    `collate_fn=FactoryDataset.collate`, which keeps them as lists.
    """

    def __init__(self, folder, size: int | None = None, limit: int | None = None, pointclouds: bool = False):
        self.folder = Path(folder)
        self.size = size
        self.class_names = read_class_names(self.folder)
        self.records = _sample_records(self.folder, limit)
        self.depth_scale = _depth_scale(self.folder) if size is None else None
        self.pointclouds = pointclouds
        if pointclouds and any(record.identity < 0 for record in self.records):
            raise DatasetError(f"{self.folder / 'cameras.json'}: point clouds need each image's identity index")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image, label = self.image_and_label(index)
        item = {"image": torch.from_numpy(image).permute(2, 0, 1).float().div_(255),
                "label": torch.from_numpy(label.astype(np.int64)),
                "camera": torch.from_numpy(record.camera_label),
                "seed": record.seed, "identity": record.identity, "name": record.name}
        if self.depth_scale is not None:
            item["depth"] = torch.from_numpy(self._depth(record, label.shape))
        if self.pointclouds:
            cloud = self.point_cloud(record.identity)
            item.update(points=torch.from_numpy(cloud.points), point_colors=torch.from_numpy(cloud.colors),
                        point_labels=torch.from_numpy(cloud.labels.astype(np.int64)))
        return item

    def image_and_label(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) uint8 label ids of item `index`, at `size`."""
        name = self.records[index].name
        label_path = self.folder / "labels" / f"{name}.png"
        if not label_path.exists():
            raise DatasetError(f"{label_path}: missing (every image needs its label map)")
        try:
            image, label = read_rgb(self.folder / "images" / f"{name}.png"), read_indexed_png(label_path)[0]
        except (OSError, ValueError) as error:
            raise DatasetError(f"{self.folder}: cannot read {name}: {error}") from error
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{label_path}: {label.shape} does not match its image {image.shape[:2]}")
        if self.size is not None:
            image, label = resize_image(image, self.size), resize_labels(label, self.size)
        return image, label

    def point_cloud(self, identity: int):
        """The fused labelled point cloud (core.factory.PointCloud) of one identity."""
        from core.factory.pointcloud import read_ply

        path = self.folder / "pointclouds" / f"{identity:06d}.ply"
        try:
            return read_ply(path)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{path}: {error}") from error

    def _depth(self, record: SampleRecord, shape) -> np.ndarray:
        import cv2

        from core.factory.generate import depth_from_png

        path = self.folder / "depth" / f"{record.name}.png"
        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if values is None or values.dtype != np.uint16 or values.shape != tuple(shape):
            raise DatasetError(f"{path}: missing, unreadable or not a {shape[0]}x{shape[1]} 16-bit depth PNG")
        return depth_from_png(values, self.depth_scale)

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Stack the fixed-size fields of a batch; keep point clouds and names as lists."""
        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key.startswith("point") or key == "name":
                batch[key] = values
            elif isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            else:
                batch[key] = torch.tensor(values)
        return batch


def _sample_records(folder: Path, limit: int | None) -> list[SampleRecord]:
    image_paths = sorted((folder / "images").glob("*.png"))
    if not image_paths:
        raise DatasetError(f"{folder / 'images'}: no PNG images (is {folder} a factory dataset?)")
    cameras_path = folder / "cameras.json"
    entries = _camera_entries(cameras_path)
    manifest = _read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    is_done = _finished(manifest if isinstance(manifest, dict) else {})
    records = []
    for index, image_path in enumerate(image_paths):
        if limit is not None and len(records) >= limit:
            break
        stem = image_path.stem
        entry = _entry_for(entries, index, stem, cameras_path)
        identity = entry.get("identity")
        identity = identity if isinstance(identity, int) and not isinstance(identity, bool) else -1
        if not is_done(identity):
            continue  # an identity the factory has not finished: its files may be partial
        records.append(SampleRecord(stem, _camera_label(entry, stem, cameras_path), _seed(entry), identity))
    return records


def _finished(manifest: dict):
    """identity index -> whether the manifest counts it written (a shard's manifest: its own)."""
    from core.factory.generate import done_identities

    done = manifest.get("identities_done")
    if not isinstance(done, int):
        return lambda identity: True  # no factory manifest: every file there is meant to be read
    if isinstance(manifest.get("request"), dict):
        finished = set(done_identities(manifest))
        return lambda identity: identity in finished
    return lambda identity: identity < done


def _depth_scale(folder: Path) -> float | None:
    """World units per depth level, or None when the folder has no depth maps."""
    if not (folder / "depth").is_dir():
        return None
    for path in (folder / "cameras.json", folder / "manifest.json"):
        document = _read_json(path) if path.exists() else None
        if isinstance(document, dict) and isinstance(document.get("depth_scale"), (int, float)):
            return float(document["depth_scale"])
    raise DatasetError(f"{folder}: depth/ exists but neither cameras.json nor manifest.json gives depth_scale")


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
        entry = entries.get(stem)
        if entry is None:
            entry = next((value for key, value in entries.items() if Path(str(key)).stem == stem), None)
        if entry is None:
            raise DatasetError(f"{path}: no camera entry for image {stem}")
        return entry if isinstance(entry, dict) else {"label": entry}
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
    """Names by id from labels.json ({"classes"/"labels": [...]}, a list, or {id: name}); None without it."""
    path = Path(folder) / "labels.json"
    if not path.exists():
        return None
    document = _read_json(path)
    items = document
    if isinstance(document, dict):
        items = document.get("classes", document.get("labels", document))
    names = {}
    try:
        if isinstance(items, dict):
            for key, value in items.items():
                names[int(key)] = value.get("name", str(key)) if isinstance(value, dict) else str(value)
        else:
            for item in items:
                names[int(item["id"])] = str(item.get("name", item["id"]))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DatasetError(f"{path}: not a label map ({error})") from error
    if not names:
        raise DatasetError(f"{path}: no labels")
    return [names.get(i, f"class_{i}") for i in range(max(names) + 1)]
