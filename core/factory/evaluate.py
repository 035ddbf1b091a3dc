"""`evaluate factory`: a generated dataset against the procedural ground truth of its identities.

The factory draws its identities from the procedural 'evaluate' seed range (never fit to, never
annotated) and records each image's seed and camera in cameras.json, so every image has a
procedural twin: the same head (`HeadParams.from_seed(seed)`, which the default backbone was fit
to reproduce for z = RandomState(seed).randn) seen through the same 25-float camera.

* `miou` / `pixel_accuracy` / per-class IoU: the label PNGs against procedural label renders.
* `point_accuracy`: the fraction of fused points whose label equals the procedural label at that
  point. `label_at_points` gives the part whose surface is nearest (the part containing an inside
  point), which is the label of the nearest surface point, so the backbone's small geometric error
  (a point slightly in front of or behind the true surface) does not by itself count against it; a
  point more than FAR_FROM_SURFACE (0.03, ~7% of the head's width) outside the head gets
  'background' and so counts as wrong: a floater is an error of the cloud.
  `surface_distance_median` and `points_near_surface` (|sdf| <= 0.03) report the geometry separately.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from core.factory.generate import FactoryError, done_identities, read_manifest, sample_name
from core.factory.pointcloud import read_ply
from core.fileio import read_indexed_png
from core.metrics import confusion_matrix, label_figures

NEAR_SURFACE = 0.03  # = core.procedural.head.FAR_FROM_SURFACE


def evaluate_factory(dataset, identities: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Figures of the first `identities` done identities of a dataset (all done ones by default).

    `dataset` is a folder, or a list of folders holding shards of one request (`generate
    --shard K/N`), scored as their union."""
    from core.procedural import LABELS, HeadParams, ProceduralHead

    parts = [_dataset_part(Path(folder)) for folder in (dataset if isinstance(dataset, (list, tuple)) else [dataset])]
    request = parts[0][1]["request"]
    if any(manifest["request"] != request for _, manifest, _ in parts):
        raise FactoryError(f"{', '.join(str(folder) for folder, _, _ in parts)}: not shards of one request "
                           "(their manifests ask for different datasets)")
    todo = sorted((index, folder) for folder, manifest, _ in parts for index in done_identities(manifest))
    todo = todo[:identities] if identities is not None else todo
    if not todo:
        raise FactoryError(f"{parts[0][0]}: no identity is complete yet")
    label_set = _read_json(parts[0][0] / "labels.json")
    names = {c["id"]: c["name"] for c in label_set["classes"]}
    num_classes = max(len(LABELS), max(names) + 1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    correct = total = near = 0
    distances, seeds = [], []
    cameras_of = {folder: cameras for folder, _, cameras in parts}
    for done, (index, folder) in enumerate(todo, 1):
        cameras = cameras_of[folder]
        seeds.append(int(cameras[sample_name(index, 0)]["seed"]))
        head = ProceduralHead(HeadParams.from_seed(seeds[-1]))
        for view in range(request["views"]):
            name = sample_name(index, view)
            predicted = _read_labels(folder / "labels" / f"{name}.png")
            truth = head.render(np.asarray(cameras[name]["label"], np.float32), predicted.shape[0])["labels"]
            confusion += confusion_matrix(predicted, truth, num_classes)
        if request["pointclouds"]:
            cloud = read_ply(folder / "pointclouds" / f"{index:06d}.ply")
            if len(cloud):
                correct += int((head.label_at_points(cloud.points) == cloud.labels).sum())
                distance = np.abs(head.sdf(cloud.points))
                near += int((distance <= NEAR_SURFACE).sum())
                distances.append(np.median(distance))
                total += len(cloud)
        if progress is not None:
            progress(done, len(todo))
    figures = label_figures(confusion, [names.get(i, str(i)) for i in range(num_classes)])
    figures.update({
        "dataset": ", ".join(str(folder) for folder, _, _ in parts),
        "identities": len(todo),
        "images": len(todo) * request["views"],
        "seeds": seeds,
        "size": request["size"],
    })
    if request["pointclouds"]:
        figures.update({
            "point_accuracy": correct / total if total else float("nan"),
            "points": total,
            "points_near_surface": near / total if total else float("nan"),
            "surface_distance_median": float(np.median(distances)) if distances else float("nan"),
        })
    return figures


def _dataset_part(folder: Path) -> tuple[Path, dict, dict]:
    """(folder, manifest, cameras by image name) of one dataset folder or shard."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise FactoryError(f"{folder}: no manifest.json; not a factory dataset")
    if manifest["request"]["truncation"] != 1.0:
        raise FactoryError(f"{folder} was generated with truncation {manifest['request']['truncation']}: its identities "
                           "are not the procedural heads of their seeds, so there is no ground truth (use --truncation 1)")
    return folder, manifest, _read_json(folder / "cameras.json")["images"]


def _read_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise FactoryError(f"{path}: unreadable ({error})") from error


def _read_labels(path: Path) -> np.ndarray:
    try:
        return read_indexed_png(path)[0]
    except (OSError, ValueError) as error:
        raise FactoryError(str(error)) from error
