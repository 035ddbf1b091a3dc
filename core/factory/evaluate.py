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

from core.factory.generate import FactoryError, read_manifest, sample_name
from core.factory.pointcloud import read_ply
from core.fileio import read_indexed_png
from core.metrics import confusion_matrix, label_figures

NEAR_SURFACE = 0.03  # = core.procedural.head.FAR_FROM_SURFACE


def evaluate_factory(dataset, identities: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Figures of the first `identities` done identities of a dataset (all done ones by default)."""
    from core.procedural import LABELS, HeadParams, ProceduralHead

    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    if manifest is None:
        raise FactoryError(f"{dataset}: no manifest.json; not a factory dataset")
    request = manifest["request"]
    if request["truncation"] != 1.0:
        raise FactoryError(f"{dataset} was generated with truncation {request['truncation']}: its identities are "
                           "not the procedural heads of their seeds, so there is no ground truth (use --truncation 1)")
    done = int(manifest["identities_done"])
    count = done if identities is None else min(done, int(identities))
    if count < 1:
        raise FactoryError(f"{dataset}: no identity is complete yet")
    cameras = _read_json(dataset / "cameras.json")["images"]
    label_set = _read_json(dataset / "labels.json")
    names = {c["id"]: c["name"] for c in label_set["classes"]}
    num_classes = max(len(LABELS), max(names) + 1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    correct = total = near = 0
    distances = []
    for index in range(count):
        record = cameras[sample_name(index, 0)]
        head = ProceduralHead(HeadParams.from_seed(int(record["seed"])))
        for view in range(request["views"]):
            name = sample_name(index, view)
            predicted = _read_labels(dataset / "labels" / f"{name}.png")
            truth = head.render(np.asarray(cameras[name]["label"], np.float32), predicted.shape[0])["labels"]
            confusion += confusion_matrix(predicted, truth, num_classes)
        if request["pointclouds"]:
            cloud = read_ply(dataset / "pointclouds" / f"{index:06d}.ply")
            if len(cloud):
                correct += int((head.label_at_points(cloud.points) == cloud.labels).sum())
                distance = np.abs(head.sdf(cloud.points))
                near += int((distance <= NEAR_SURFACE).sum())
                distances.append(np.median(distance))
                total += len(cloud)
        if progress is not None:
            progress(index + 1, count)
    figures = label_figures(confusion, [names.get(i, str(i)) for i in range(num_classes)])
    figures.update({
        "dataset": str(dataset),
        "identities": count,
        "images": count * request["views"],
        "seeds": [int(cameras[sample_name(i, 0)]["seed"]) for i in range(count)],
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
