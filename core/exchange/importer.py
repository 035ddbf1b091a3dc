"""`import-annotations`: masks painted in another tool, back into the project's annotations.

The folder is read as whichever of these it holds (checked in this order):

    annotations.xml (or another *.xml)     CVAT for images 1.1 (masks, polygons, boxes)
    labelmap.txt + SegmentationClass/      CVAT's segmentation-mask export (colour PNGs)
    *.json with "images"/"annotations"     COCO (RLE or polygons)
    *.json with "shapes"                   labelme, one file per image
    masks/*.png                            indexed or greyscale PNGs of label ids

Each image is matched to its view through the sidecar export-views wrote (the folder's own
studio_views.json, its parent's, or --sidecar). A file is imported whole or not at all: every
mask in it is decoded and checked (known labels, the exported size, a sidecar entry) before any
is written, and if a write fails the file's annotations are put back as they were. An image
already imported is updated in place, so importing again after more painting does not duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.exchange import masks as readers
from core.exchange.views import SIDECAR, ExchangeError, Sidecar, read_sidecar


@dataclass
class ImportSummary:
    format: str
    files: int = 0
    added: list[int] = field(default_factory=list)  # new annotation ids
    updated: list[int] = field(default_factory=list)  # ids of annotations painted again

    def describe(self) -> str:
        return (f"{self.format}: {self.files} file(s), {len(self.added)} new annotation(s), "
                f"{len(self.updated)} updated")


UNCOVERED = ("background", "unlabelled")


def import_annotations(project, folder, sidecar: Path | None = None, uncovered: str = "background",
                       progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Import every annotation file in `folder`; pixels no shape covers become `uncovered`."""
    from core.project import UNLABELLED_ID

    if uncovered not in UNCOVERED:
        raise ExchangeError(f"uncovered pixels are {' or '.join(UNCOVERED)}, not {uncovered!r}")
    fill = 0 if uncovered == "background" else UNLABELLED_ID
    folder = Path(folder)
    if not folder.is_dir():
        raise ExchangeError(f"{folder}: not a folder")
    views = read_sidecar(sidecar or _find_sidecar(folder))
    if views.backbone_hash != project.backbone.content_hash:
        raise ExchangeError(f"{views.path}: its images were rendered by another backbone "
                            f"({views.backbone_hash[:12]}, the project's is {project.backbone.content_hash[:12]})")
    format, sources = detect(folder)
    summary = ImportSummary(format)
    for done, (source, read) in enumerate(sources, 1):
        masks = read(source, project.label_set, fill)
        _commit_file(project, views, source, masks, summary)
        summary.files += 1
        if progress is not None:
            progress(done, len(sources))
    return summary


def detect(folder: Path) -> tuple[str, list]:
    """(format name, [(source, reader)]) of what `folder` holds; ExchangeError if nothing known."""
    xml = sorted(folder.glob("*.xml"))
    if xml:
        return "CVAT for images", [(path, readers.read_cvat_xml) for path in xml]
    if (folder / "labelmap.txt").exists() and (folder / "SegmentationClass").is_dir():
        return "CVAT segmentation mask", [(folder, readers.read_cvat_segmentation)]
    coco, labelme = [], []
    for path in sorted(p for p in folder.glob("*.json") if p.name != SIDECAR):
        head = readers._read_json(path)
        if isinstance(head, dict) and "annotations" in head and "images" in head:
            coco.append(path)
        elif isinstance(head, dict) and "shapes" in head:
            labelme.append(path)
    if coco:
        return "COCO", [(path, readers.read_coco) for path in coco]
    if labelme:
        return "labelme", [(path, readers.read_labelme) for path in labelme]
    if (folder / "masks").is_dir():
        return "indexed PNG", [(folder / "masks", readers.read_indexed_masks)]
    raise ExchangeError(f"{folder}: found no annotations (expected a CVAT annotations.xml, labelmap.txt + "
                        "SegmentationClass/, COCO or labelme JSON, or masks/*.png)")


def _find_sidecar(folder: Path) -> Path:
    for candidate in (folder / SIDECAR, folder.parent / SIDECAR):
        if candidate.exists():
            return candidate
    raise ExchangeError(f"{folder}: no {SIDECAR} here or in the parent folder; pass --sidecar (the file "
                        "export-views wrote beside the images)")


def _commit_file(project, views: Sidecar, source: Path, masks: dict[str, np.ndarray], summary: ImportSummary) -> None:
    planned = []
    existing = _existing_annotations(project)
    known = project.label_set.id_lookup()
    for stem, mask in masks.items():
        entry = views.entry(stem, source)
        if mask.shape != (entry.size, entry.size):
            raise ExchangeError(f"{source}: the mask of {stem} is {mask.shape[1]}x{mask.shape[0]}, "
                                f"its image was exported at {entry.size}x{entry.size}")
        unknown = sorted(set(np.unique(mask).tolist()) - set(np.flatnonzero(known).tolist()))
        if unknown:
            raise ExchangeError(f"{source}: the mask of {stem} has label ids {unknown} the project does not define")
        key = (entry.identity.key, tuple(np.round(entry.camera.label().numpy(), 5)), mask.shape)
        planned.append((existing.get(key), entry, mask))
    added, restored = [], []
    try:
        for annotation_id, entry, mask in planned:
            if annotation_id is None:
                added.append(project.add_annotation(entry.identity, entry.camera, mask))
            else:
                restored.append((annotation_id, project.load_annotation(annotation_id).mask))
                project.update_annotation(annotation_id, mask)
    except BaseException:
        for annotation_id in added:
            project.delete_annotation(annotation_id)
        for annotation_id, mask in restored:
            project.update_annotation(annotation_id, mask)
        raise
    summary.added += added
    summary.updated += [annotation_id for annotation_id, _ in restored]


def _existing_annotations(project) -> dict:
    return {(meta.identity.key, tuple(np.round(np.asarray(meta.camera_label, np.float32), 5)), meta.resolution): meta.id
            for meta in project.annotations(problems=[])}
