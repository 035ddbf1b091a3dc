"""`export`: a factory dataset in the layouts other training code reads (COCO, mmsegmentation).

* coco:  images/NAME.png and annotations/{train,val}.json — COCO semantic segmentation in the
  stuff style: one annotation per (image, part present), its mask as COCO RLE (column-major, as
  pycocotools writes; pycocotools reads it back), with area and box. Category ids are the label
  ids; background and pixels whose id the label set does not define are left unannotated. Each
  image entry also carries the factory's camera (25-float label, yaw, pitch) and identity seed.
* mmseg: img_dir/{train,val}/NAME.png, ann_dir/{train,val}/NAME.png (8-bit greyscale label ids,
  which mmsegmentation reads unchanged; a palette PNG would be read as colours by OpenCV) and
  metainfo.json (classes and palette, for a dataset config's `metainfo=`).

The last `val_identities` identities form the validation split, so no identity is in both. The
export is written beside `out` and moved into place when complete: an interrupted export leaves
no half-written folder under the asked name.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.factory.dataset import DatasetError, FactoryDataset
from core.fileio import atomic_write_json, write_png

FORMATS = ("coco", "mmseg")


@dataclass(frozen=True)
class ExportResult:
    out: Path
    images: dict  # split name -> number of images
    annotations: int  # COCO annotations written (0 for mmseg)


def export_dataset(dataset, out, format: str, val_identities: int = 0, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Write `dataset` (a factory folder) to `out` in `format`; DatasetError on any problem."""
    if format not in FORMATS:
        raise DatasetError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    source = FactoryDataset(dataset)
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} exists; choose a new folder or pass --overwrite")
    splits = _splits(source, val_identities)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        writer = _CocoWriter(source, staging) if format == "coco" else _MmsegWriter(source, staging)
        done = 0
        for split, indices in splits.items():
            for index in indices:
                writer.add(split, index)
                done += 1
                if progress is not None:
                    progress(done, len(source))
        annotations = writer.finish(list(splits))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, {split: len(indices) for split, indices in splits.items()}, annotations)


def _splits(source: FactoryDataset, val_identities: int) -> dict[str, list[int]]:
    identities = sorted({record.identity for record in source.records})
    if val_identities < 0 or (val_identities and val_identities >= len(identities)):
        raise DatasetError(f"--val-identities must be between 0 and {len(identities) - 1} "
                           f"(the dataset has {len(identities)} identities)")
    if val_identities and identities == [-1]:
        raise DatasetError(f"{source.folder / 'cameras.json'}: a validation split needs each image's identity index")
    val = set(identities[len(identities) - val_identities:]) if val_identities else set()
    splits = {"train": [i for i, r in enumerate(source.records) if r.identity not in val]}
    if val:
        splits["val"] = [i for i, r in enumerate(source.records) if r.identity in val]
    return splits


def _label_set(source: FactoryDataset) -> tuple[list[str], np.ndarray]:
    """(names by id, (K, 3) uint8 palette by id) from the dataset's labels.json."""
    path = source.folder / "labels.json"
    if source.class_names is None:
        raise DatasetError(f"{path}: missing (the export names its classes from it)")
    palette = np.zeros((len(source.class_names), 3), np.uint8)
    document = json.loads(path.read_text())
    for entry in document.get("classes", []) if isinstance(document, dict) else []:
        if isinstance(entry, dict) and "colour" in entry and 0 <= int(entry["id"]) < len(palette):
            palette[int(entry["id"])] = entry["colour"]
    return source.class_names, palette


def _place_image(source: Path, target: Path) -> None:
    """Hard-link where the filesystem allows (no extra disk for a large dataset), copy otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class _CocoWriter:
    def __init__(self, source: FactoryDataset, out: Path):
        self.source, self.out = source, out
        self.names, _ = _label_set(source)
        self.documents: dict[str, dict] = {}
        self.annotation_id = 0

    def add(self, split: str, index: int) -> None:
        from pycocotools import mask as coco_mask

        record = self.source.records[index]
        _, label = self.source.image_and_label(index)
        file_name = f"{record.name}.png"
        _place_image(self.source.folder / "images" / file_name, self.out / "images" / file_name)
        document = self.documents.setdefault(split, {"images": [], "annotations": []})
        image_id = index + 1
        camera = self._camera_fields(record)
        document["images"].append({"id": image_id, "file_name": file_name, "height": int(label.shape[0]),
                                   "width": int(label.shape[1]), **camera})
        for class_id in np.unique(label):
            class_id = int(class_id)
            if class_id == 0 or class_id >= len(self.names):
                continue  # background and undefined ids stay unannotated
            rle = coco_mask.encode(np.asfortranarray(label == class_id, dtype=np.uint8))
            self.annotation_id += 1
            document["annotations"].append({
                "id": self.annotation_id, "image_id": image_id, "category_id": class_id, "iscrowd": 0,
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)]})

    def _camera_fields(self, record) -> dict:
        fields = {"camera_label": [float(v) for v in record.camera_label]}
        if record.seed >= 0:
            fields["seed"] = record.seed
        return fields

    def finish(self, splits: list[str]) -> int:
        categories = [{"id": i, "name": name, "supercategory": "part"}
                      for i, name in enumerate(self.names) if i > 0]
        info = {"description": f"DatasetNeRF Studio factory dataset {self.source.folder.name}",
                "source": str(self.source.folder)}
        for split in splits:
            document = self.documents.get(split, {"images": [], "annotations": []})
            atomic_write_json(self.out / "annotations" / f"{split}.json",
                              {"info": info, "categories": categories, **document})
        return self.annotation_id


class _MmsegWriter:
    def __init__(self, source: FactoryDataset, out: Path):
        self.source, self.out = source, out
        self.names, self.palette = _label_set(source)

    def add(self, split: str, index: int) -> None:
        name = self.source.records[index].name
        _, label = self.source.image_and_label(index)
        _place_image(self.source.folder / "images" / f"{name}.png", self.out / "img_dir" / split / f"{name}.png")
        (self.out / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        write_png(self.out / "ann_dir" / split / f"{name}.png", label)

    def finish(self, splits: list[str]) -> int:
        atomic_write_json(self.out / "metainfo.json", {
            "classes": self.names, "palette": self.palette.tolist(),
            "img_suffix": ".png", "seg_map_suffix": ".png", "reduce_zero_label": False,
            "data_prefix": {split: {"img_path": f"img_dir/{split}", "seg_map_path": f"ann_dir/{split}"}
                            for split in splits}})
        return 0
