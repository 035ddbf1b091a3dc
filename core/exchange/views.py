"""`export-views`: a project's views rendered for painting in CVAT or labelme, with a sidecar.

    OUT/images/IIII_VV.png   the backbone's render of identity I from view V, at the mask size
    OUT/studio_views.json    the sidecar: for each image its identity, camera, size and backbone
    OUT/cvat_labels.json     (cvat) the label set in CVAT's raw label format (Project > Raw)
    OUT/labelmap.txt         (cvat) the label colours, as CVAT's segmentation-mask format has them
    OUT/labels.txt           (labelme) one label name per line, for `labelme --labels labels.txt`

`import-annotations` reads the painted masks back and finds each image's view in the sidecar,
so a mask lands on exactly the identity and camera it was painted on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.fileio import atomic_write_json, atomic_write_text, write_png
from core.project.records import IdentityRef, camera_from_json, camera_to_json

SIDECAR = "studio_views.json"
SIDECAR_FORMAT = "datasetnerf-studio/views"
EXPORT_FORMATS = ("cvat", "labelme")


class ExchangeError(ValueError):
    """Files from or for another annotation tool that cannot be used; the message names the file."""


@dataclass(frozen=True)
class SidecarEntry:
    identity: IdentityRef
    camera: object  # core.camera.Camera
    size: int


@dataclass(frozen=True)
class Sidecar:
    path: Path
    backbone_hash: str
    entries: dict[str, SidecarEntry]  # image file stem -> its view

    def entry(self, stem: str, source: Path) -> SidecarEntry:
        if stem not in self.entries:
            raise ExchangeError(f"{source}: image {stem!r} has no entry in {self.path} "
                                "(was it exported by export-views from this project?)")
        return self.entries[stem]


def export_views(project, backbone, seeds: list[int], views: list[tuple[float, float]], format: str, out,
                 size: int, progress: Callable[[int, int], None] | None = None) -> int:
    """Render every seed at every (yaw, pitch) into `out` for `format`; returns the image count."""
    import torch

    from core.imaging import resize_image, rgb_to_uint8

    if format not in EXPORT_FORMATS:
        raise ExchangeError(f"unknown format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries, total = {}, len(seeds) * len(views)
    for index, seed in enumerate(seeds):
        identity = IdentityRef(seed=int(seed), truncation_psi=1.0)
        with torch.no_grad():
            latent = backbone.identity_from_seed(int(seed), identity.truncation_psi, identity.truncation_cutoff)
            for view_index, (yaw, pitch) in enumerate(views):
                camera = backbone.camera(yaw, pitch)
                image = resize_image(rgb_to_uint8(backbone.render(latent, camera).image), size)
                stem = f"{index:04d}_{view_index:02d}"
                write_png(out / "images" / f"{stem}.png", image)
                entries[stem] = {"identity": identity.to_json(), "camera": camera_to_json(camera), "size": size}
                if progress is not None:
                    progress(len(entries), total)
    _write_label_config(out, project.label_set, format)
    atomic_write_json(out / SIDECAR, {"format": SIDECAR_FORMAT, "version": 1, "project": str(project.folder),
                                      "backbone_hash": project.backbone.content_hash,
                                      "label_set": project.label_set.to_json(), "images": entries})
    return len(entries)


def _write_label_config(out: Path, label_set, format: str) -> None:
    if format == "cvat":
        atomic_write_json(out / "cvat_labels.json", [
            {"name": label.name, "color": "#%02x%02x%02x" % label.colour, "type": "any", "attributes": []}
            for label in label_set.labels])
        lines = ["# label:color_rgb:parts:actions"]
        lines += [f"{label.name}:{','.join(str(c) for c in label.colour)}::" for label in label_set.labels]
        atomic_write_text(out / "labelmap.txt", "\n".join(lines) + "\n")
    else:
        atomic_write_text(out / "labels.txt", "\n".join(label.name for label in label_set.labels) + "\n")


def read_sidecar(path: Path) -> Sidecar:
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise ExchangeError(f"{path}: unreadable sidecar ({error})") from error
    if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
        raise ExchangeError(f"{path}: not a sidecar written by export-views")
    entries = {}
    try:
        for stem, entry in document["images"].items():
            camera, _ = camera_from_json(entry["camera"])
            entries[stem] = SidecarEntry(IdentityRef.from_json(entry["identity"]), camera, int(entry["size"]))
        backbone_hash = str(document["backbone_hash"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ExchangeError(f"{path}: damaged sidecar ({type(error).__name__}: {error})") from error
    return Sidecar(Path(path), backbone_hash, entries)


def label_ids_by_name(label_set) -> dict[str, int]:
    """Label names (and labelme's '_background_') to ids, case-insensitive."""
    names = {label.name.lower(): label.id for label in label_set.labels}
    names.setdefault("_background_", 0)
    return names


def empty_mask(size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8)
