"""The project store (design.md section 4): one folder per project, everything a person made
survives a crash.

    project.json           format version, backbone reference, label set (+ version), settings
    project.lock           present while a studio instance has the project open for writing
    annotations/NNNN.png   indexed PNG: pixel values are label ids, palette = label colours;
                           255 (labels.UNLABELLED_ID) = nobody painted this pixel
    annotations/NNNN.json  identity, camera, backbone hash, label-set version, timestamps, size

Every write goes through core.fileio's temp-file-and-rename, so a file on disk is always either
the old or the new version. The GUI and the command line share this API; the semantic trainer
reads masks only through `iter_training_annotations`, which validates every file and reports
(never trains on) the bad ones.
"""
from __future__ import annotations

import json
import re
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from core.camera import Camera
from core.fileio import atomic_write_json, read_indexed_png, write_indexed_png

from core.semantic.checkpoint import latest_checkpoint

from .errors import (AnnotationError, AnnotationNotFoundError, BackboneMismatchError,
                     CorruptAnnotationError, ForeignAnnotationError, LabelInUseError, MaskSizeError,
                     ProjectExistsError, ProjectFormatError, ProjectNotFoundError,
                     ProjectReadOnlyError, UnknownLabelError, UnsupportedVersionError)
from .labels import UNLABELLED_COLOUR, UNLABELLED_ID, LabelSet, default_label_set
from .lock import ProjectLock
from .records import (AnnotationMeta, Annotation, BackboneRef, IdentityRef, pixel_counts,
                      utc_now)

PROJECT_FILE = "project.json"
PROJECT_FORMAT = "datasetnerf-studio-project"
PROJECT_FORMAT_VERSION = 1
ANNOTATIONS_DIR = "annotations"
SET_ASIDE_DIR = "set-aside"  # under annotations/: damaged annotations moved out of the way, never deleted

_ANNOTATION_STEM = re.compile(r"^\d{4,}$")


class AnnotationProblemWarning(UserWarning):
    """An annotation was skipped for training; the message names the file and why."""


@dataclass(frozen=True)
class AnnotationCounts:
    """What the annotate workspace shows: how much has been painted, of what."""

    annotations: int
    per_identity: dict[IdentityRef, int]
    pixels_per_class: dict[int, int]


SEMANTIC_DIR = "semantic"
DATASETS_DIR = "datasets"
EDITS_DIR = "edits"


class Project:
    """An open project folder. Use `Project.create` or `Project.open`, ideally in a `with`."""

    def __init__(self, folder: Path, config: dict, lock: ProjectLock | None):
        self.folder = folder
        self._lock = lock
        self._use_config(config)
        self._write_mutex = threading.RLock()  # the GUI autosaves from a worker thread

    # ============================================================ opening and closing
    @classmethod
    def create(cls, folder, backbone_ref: BackboneRef, label_set: LabelSet | None = None,
               settings: dict | None = None) -> "Project":
        """Make a new project in `folder` (created if needed) and open it for writing."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lock = _take_lock(folder)
        try:
            if (folder / PROJECT_FILE).exists():
                raise ProjectExistsError(f"{folder / PROJECT_FILE} already exists; open the project instead")
            config = _new_config(backbone_ref, label_set or default_label_set(), settings or {})
            atomic_write_json(folder / PROJECT_FILE, config)
            (folder / ANNOTATIONS_DIR).mkdir(exist_ok=True)
        except BaseException:
            lock.release()
            raise
        return cls(folder, config, lock)

    @classmethod
    def open(cls, folder, writable: bool = False) -> "Project":
        """Open an existing project; `writable` takes the lock (ProjectLockedError if held)."""
        folder = Path(folder)
        if not (folder / PROJECT_FILE).is_file():
            raise ProjectNotFoundError(f"{folder} is not a studio project (no {PROJECT_FILE})")
        lock = _take_lock(folder) if writable else None
        try:
            project = cls(folder, _read_config(folder / PROJECT_FILE), lock)
            if writable:
                project._recover_interrupted_writes()
        except BaseException:
            if lock:
                lock.release()
            raise
        return project

    @staticmethod
    def exists(folder) -> bool:
        return (Path(folder) / PROJECT_FILE).is_file()

    def close(self) -> None:
        """Release the writer lock (also done at interpreter exit); the object becomes read-only."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"Project({str(self.folder)!r}, {mode}, {len(self.annotation_ids())} annotations)"

    # ============================================================ project.json
    @property
    def semantic_dir(self) -> Path:
        """Where semantic branches are trained (design §4); `--run NAME` trains into subfolders."""
        return self.folder / SEMANTIC_DIR

    @property
    def datasets_dir(self) -> Path:
        return self.folder / DATASETS_DIR

    @property
    def edits_dir(self) -> Path:
        return self.folder / EDITS_DIR

    def current_branch(self) -> Path | None:
        """The project's semantic branch: the highest-step checkpoint at the top level of `semantic/`.

        The one rule the window, the factory, editing and downstream all use. Checkpoints a
        `--run NAME` training wrote into `semantic/NAME/` are never picked implicitly (pass
        `--branch FILE` for them), so every verb uses the branch the window shows.
        """
        return latest_checkpoint(self.semantic_dir)

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    @property
    def backbone(self) -> BackboneRef:
        return self._backbone

    @property
    def label_set(self) -> LabelSet:
        return self._label_set

    @property
    def settings(self) -> dict:
        return json.loads(json.dumps(self._config["settings"]))  # a copy the caller may change

    def reload(self) -> None:
        """Re-read project.json (a read-only view picks up a writer's label edits)."""
        self._use_config(_read_config(self.folder / PROJECT_FILE))

    def update_settings(self, **changes) -> None:
        with self._write_mutex:
            self._require_writable()
            self._save_config(dict(self._config, settings={**self._config["settings"], **changes}))

    def set_label_set(self, label_set: LabelSet) -> LabelSet:
        """Store new classes under the next version; refuses to drop ids that masks still use.

        Returns the stored set. Unchanged classes keep the current version.
        """
        with self._write_mutex:
            self._require_writable()
            current = self.label_set
            if label_set.same_classes(current):
                return current
            self._refuse_dropping_used_ids(label_set)
            stored = LabelSet(label_set.labels, current.version + 1)
            self._save_config(dict(self._config, labels=stored.to_json()))
            return stored

    def load_backbone(self, device="cpu"):
        """The core.backbone.Backbone this project was painted on, after checking its hash."""
        from core.backbone import load_backbone

        reference = self.backbone
        spec = reference.path if reference.path == "default" else reference.file(self.folder)
        backbone = load_backbone(spec, device=device)
        if backbone.content_hash != reference.content_hash:
            raise BackboneMismatchError(
                f"{reference.file(self.folder)}: content hash {backbone.content_hash[:12]}… differs from "
                f"{reference.content_hash[:12]}… recorded in {self.folder / PROJECT_FILE}; "
                "the backbone file was replaced since the project was made"
            )
        return backbone

    # ============================================================ annotations: listing
    def annotation_paths(self, annotation_id: int) -> tuple[Path, Path]:
        """(NNNN.png, NNNN.json) of an annotation id."""
        stem = f"{int(annotation_id):04d}"
        folder = self.folder / ANNOTATIONS_DIR
        return folder / f"{stem}.png", folder / f"{stem}.json"

    def annotation_ids(self) -> list[int]:
        """Ids with a PNG or a JSON on disk (a half-saved one included), ascending."""
        folder = self.folder / ANNOTATIONS_DIR
        if not folder.is_dir():
            return []
        stems = {path.stem for path in folder.iterdir() if path.suffix in (".png", ".json")}
        return sorted(int(stem) for stem in stems if _ANNOTATION_STEM.match(stem))

    def annotations(self, problems: list | None = None) -> list[AnnotationMeta]:
        """Metadata of every annotation whose JSON reads; unreadable ones go to `problems`."""
        metas = []
        for annotation_id in self.annotation_ids():
            try:
                metas.append(self._read_meta(annotation_id))
            except AnnotationError as error:
                _report(error, problems)
        return metas

    def counts(self) -> AnnotationCounts:
        """Annotations per identity and pixels per class, from the metadata (no PNG decoding)."""
        metas = self.annotations(problems=[])
        per_identity = Counter(meta.identity for meta in metas)
        pixels: Counter = Counter()
        for meta in metas:
            pixels.update(meta.pixel_counts)
        return AnnotationCounts(len(metas), dict(per_identity), dict(sorted(pixels.items())))

    # ============================================================ annotations: writing
    def add_annotation(self, identity, camera: Camera, mask: np.ndarray) -> int:
        """Store a new painted mask for an identity seen through `camera`; returns its id.

        `identity` is an IdentityRef, or its JSON form ({'seed': s, 'truncation_psi': p} or
        {'w_file': relative path}). `mask` is (H, W) label ids of this project's label set.
        """
        with self._write_mutex:
            self._require_writable()
            annotation_id = self._next_id()
            png_path, json_path = self.annotation_paths(annotation_id)
            if not isinstance(camera, Camera):
                raise TypeError(f"camera must be a core.camera.Camera, got {type(camera).__name__}")
            mask = self._checked_mask(mask, png_path)
            now = utc_now()
            meta = AnnotationMeta(
                id=annotation_id,
                identity=IdentityRef.from_json(identity),
                camera=camera,
                camera_label=tuple(camera.label().tolist()),
                backbone_hash=self.backbone.content_hash,
                label_set_version=self.label_set.version,
                resolution=mask.shape,
                created=now,
                modified=now,
                pixel_counts=pixel_counts(mask),
            )
            self._write_png(png_path, mask)
            try:
                atomic_write_json(json_path, meta.to_json())
            except BaseException:
                png_path.unlink(missing_ok=True)  # no half-made annotation left behind
                raise
            return annotation_id

    def update_annotation(self, annotation_id: int, mask: np.ndarray) -> AnnotationMeta:
        """Replace an annotation's mask (the per-stroke autosave): two small atomic writes."""
        with self._write_mutex:
            self._require_writable()
            png_path, json_path = self.annotation_paths(annotation_id)
            meta = self._read_meta(annotation_id)
            self._check_backbone(meta, json_path)
            mask = self._checked_mask(mask, png_path)
            if mask.shape != meta.resolution:
                raise MaskSizeError(png_path, f"new mask is {_size(mask.shape)}, the annotation is {_size(meta.resolution)}")
            meta = replace(meta, modified=utc_now(), label_set_version=self.label_set.version, pixel_counts=pixel_counts(mask))
            self._write_png(png_path, mask)
            atomic_write_json(json_path, meta.to_json())
            return meta

    def delete_annotation(self, annotation_id: int) -> None:
        with self._write_mutex:
            self._require_writable()
            png_path, json_path = self.annotation_paths(annotation_id)
            if not png_path.exists() and not json_path.exists():
                raise AnnotationNotFoundError(json_path, "no such annotation")
            json_path.unlink(missing_ok=True)  # first, so a crash never leaves a mask-less entry
            png_path.unlink(missing_ok=True)

    def repair_annotation(self, annotation_id: int) -> str:
        """Make a damaged annotation whose mask still reads load again; returns what was done.

        Label ids outside the label set become background (0); a mask of another size than its
        JSON records is resized (nearest) to it; the pixel counts are recomputed. A PNG or JSON
        that does not read, or a mask painted on another backbone, cannot be repaired
        (CorruptAnnotationError / ForeignAnnotationError: set it aside instead)."""
        with self._write_mutex:
            self._require_writable()
            png_path, json_path = self.annotation_paths(annotation_id)
            meta = self._read_meta(annotation_id)
            self._check_backbone(meta, json_path)
            self._check_identity_file(meta, json_path)
            mask, done = self._read_mask(png_path), []
            if mask.shape != meta.resolution:
                import cv2

                done.append(f"resized the mask from {_size(mask.shape)} to {_size(meta.resolution)}")
                mask = cv2.resize(mask, meta.resolution[::-1], interpolation=cv2.INTER_NEAREST)
            unknown = ~self.label_set.id_lookup()[mask]
            if unknown.any():
                done.append(f"painted {int(unknown.sum())} pixels of unknown label ids "
                            f"{np.unique(mask[unknown]).tolist()} as background")
                mask = np.where(unknown, 0, mask).astype(np.uint8)
            if not done:
                return "nothing to repair: the annotation loads"
            meta = replace(meta, modified=utc_now(), label_set_version=self.label_set.version,
                           pixel_counts=pixel_counts(mask))
            self._write_png(png_path, mask)
            atomic_write_json(json_path, meta.to_json())
            return "; ".join(done)

    def set_aside_annotation(self, annotation_id: int) -> Path:
        """Move an annotation's files (whatever of them exists) to annotations/set-aside/, where
        nothing reads them and nothing is lost; returns that folder. The JSON goes first, as
        delete_annotation removes it first: a crash between the two leaves an orphan PNG, which
        the next writable open removes from annotations/ (the set-aside copy stays)."""
        with self._write_mutex:
            self._require_writable()
            png_path, json_path = self.annotation_paths(annotation_id)
            if not png_path.exists() and not json_path.exists():
                raise AnnotationNotFoundError(json_path, "no such annotation")
            folder = self.folder / ANNOTATIONS_DIR / SET_ASIDE_DIR
            folder.mkdir(exist_ok=True)
            stamp = utc_now().replace(":", "").replace("-", "")
            for path in (json_path, png_path):
                if path.exists():
                    path.replace(folder / f"{path.stem}-{stamp}{path.suffix}")
            return folder

    # ============================================================ annotations: reading
    def load_annotation(self, annotation_id: int) -> Annotation:
        """Mask and metadata, fully validated; an AnnotationError subclass naming the file if not."""
        png_path, json_path = self.annotation_paths(annotation_id)
        meta = self._read_meta(annotation_id)
        self._check_backbone(meta, json_path)
        self._check_identity_file(meta, json_path)
        mask = self._read_mask(png_path)
        if mask.shape != meta.resolution:
            raise MaskSizeError(png_path, f"mask is {_size(mask.shape)} but {json_path.name} records {_size(meta.resolution)}")
        self._check_label_ids(mask, png_path)
        return Annotation(mask, meta)

    def iter_training_annotations(self, problems: list | None = None) -> Iterator[Annotation]:
        """Every valid annotation; each invalid one is skipped and its error appended to
        `problems` (or issued as an AnnotationProblemWarning when no list is given)."""
        for annotation_id in self.annotation_ids():
            try:
                annotation = self.load_annotation(annotation_id)
            except AnnotationError as error:
                _report(error, problems)
                continue
            yield annotation

    def check_annotations(self) -> list[AnnotationError]:
        """Every problem iter_training_annotations would skip, for a 'check project' report."""
        problems: list[AnnotationError] = []
        for _ in self.iter_training_annotations(problems):
            pass
        return problems

    # ============================================================ internals
    def _require_writable(self) -> None:
        if not self.writable:
            raise ProjectReadOnlyError(f"{self.folder} is open read-only (or closed); open it with writable=True to change it")

    def _save_config(self, config: dict) -> None:
        atomic_write_json(self.folder / PROJECT_FILE, config)
        self._use_config(config)

    def _use_config(self, config: dict) -> None:
        self._config = config
        self._backbone = BackboneRef.from_json(config["backbone"])
        self._label_set = LabelSet.from_json(config["labels"])

    def _next_id(self) -> int:
        ids = self.annotation_ids()  # an orphan PNG counts until a writable open removes it
        return ids[-1] + 1 if ids else 0

    def _recover_interrupted_writes(self) -> None:
        """Undo or finish what a killed writer left: temp files, uncommitted masks, and updates
        killed between their PNG and their JSON."""
        _remove_stale_temp_files(self.folder)
        _remove_uncommitted_masks(self.folder)
        self._finish_interrupted_updates()

    def _finish_interrupted_updates(self) -> None:
        """An update writes the PNG, then the JSON: a PNG newer than its JSON is a stroke killed
        between the two. The mask is whole (each write is atomic), so keep it and rewrite the
        JSON's pixel counts from it; a file that does not read is left for the error paths."""
        for annotation_id in self.annotation_ids():
            png_path, json_path = self.annotation_paths(annotation_id)
            try:
                if png_path.stat().st_mtime_ns <= json_path.stat().st_mtime_ns:
                    continue
                meta = self._read_meta(annotation_id)
                mask = self._read_mask(png_path)
            except (OSError, AnnotationError):
                continue
            counts = pixel_counts(mask)
            if mask.shape == meta.resolution and counts != meta.pixel_counts:
                atomic_write_json(json_path, replace(meta, pixel_counts=counts).to_json())

    def _read_meta(self, annotation_id: int) -> AnnotationMeta:
        png_path, json_path = self.annotation_paths(annotation_id)
        if not json_path.exists():
            if png_path.exists():
                raise CorruptAnnotationError(json_path, f"missing: {png_path.name} has no metadata (a save or delete was interrupted)")
            raise AnnotationNotFoundError(json_path, "no such annotation")
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise CorruptAnnotationError(json_path, f"unreadable JSON ({error})") from error
        meta = AnnotationMeta.from_json(data, json_path)
        if meta.id != annotation_id:
            raise CorruptAnnotationError(json_path, f"records id {meta.id}, but the file name says {annotation_id}")
        return meta

    def _read_mask(self, png_path: Path) -> np.ndarray:
        if not png_path.exists():
            raise CorruptAnnotationError(png_path, "missing: the metadata has no mask")
        try:
            indices, _palette = read_indexed_png(png_path)  # values are authoritative, colours cosmetic
        except ValueError as error:
            raise CorruptAnnotationError(png_path, str(error).removeprefix(f"{png_path}: ")) from error
        return indices

    def _write_png(self, png_path: Path, mask: np.ndarray) -> None:
        palette = np.zeros((UNLABELLED_ID + 1, 3), np.uint8)
        label_palette = self.label_set.palette()
        palette[: len(label_palette)] = label_palette
        palette[UNLABELLED_ID] = UNLABELLED_COLOUR  # cosmetic: viewers show unpainted pixels grey
        write_indexed_png(png_path, mask, palette)

    def _checked_mask(self, mask, png_path: Path) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.size == 0 or not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"a mask is a non-empty (H, W) array of integer label ids, got {mask.dtype} {mask.shape}")
        if mask.min() < 0 or mask.max() > 255:
            raise UnknownLabelError(png_path, f"mask values {int(mask.min())}..{int(mask.max())} do not fit the 0-255 label ids")
        mask = mask.astype(np.uint8, copy=False)
        self._check_label_ids(mask, png_path)
        return mask

    def _check_label_ids(self, mask: np.ndarray, png_path: Path) -> None:
        label_set = self.label_set
        unknown = np.unique(mask[~label_set.id_lookup()[mask]])
        if unknown.size:
            raise UnknownLabelError(png_path, f"label ids {unknown.tolist()} are not in the project's label set (version {label_set.version}, ids {label_set.ids})")

    def _check_backbone(self, meta: AnnotationMeta, json_path: Path) -> None:
        expected = self.backbone.content_hash
        if meta.backbone_hash != expected:
            raise ForeignAnnotationError(
                json_path,
                f"painted on another backbone (hash {meta.backbone_hash[:12]}…); this project's backbone "
                f"{self.backbone.path} has hash {expected[:12]}…",
            )

    def _check_identity_file(self, meta: AnnotationMeta, json_path: Path) -> None:
        w_file = meta.identity.w_file
        if w_file is not None and not (self.folder / w_file).is_file():
            raise CorruptAnnotationError(json_path, f"identity file {w_file} is missing from the project")

    def _refuse_dropping_used_ids(self, label_set: LabelSet) -> None:
        users = Counter()
        for meta in self.annotations(problems=[]):
            for label_id, count in meta.pixel_counts.items():
                if count and label_id != UNLABELLED_ID and label_id not in label_set:
                    users[label_id] += 1
        if users:
            used = ", ".join(f"{i} ({n} annotations)" for i, n in sorted(users.items()))
            raise LabelInUseError(f"cannot remove label ids still painted in annotations: {used}; repaint or delete them first")


# ================================================================ project.json helpers
def _new_config(backbone_ref: BackboneRef, label_set: LabelSet, settings: dict) -> dict:
    if not isinstance(backbone_ref, BackboneRef):
        raise TypeError(f"backbone_ref must be a BackboneRef (see BackboneRef.for_file), got {type(backbone_ref).__name__}")
    return {
        "format": PROJECT_FORMAT,
        "format_version": PROJECT_FORMAT_VERSION,
        "created": utc_now(),
        "backbone": backbone_ref.to_json(),
        "labels": LabelSet(label_set.labels, label_set.version).to_json(),
        "settings": json.loads(json.dumps(settings)),  # fails here, not at the next save
    }


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ProjectFormatError(f"{path}: unreadable ({error})") from error
    if not isinstance(config, dict) or config.get("format") != PROJECT_FORMAT:
        raise ProjectFormatError(f"{path}: not a DatasetNeRF Studio project file")
    version = config.get("format_version")
    if version != PROJECT_FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{path}: project format version {version!r}; this studio reads version {PROJECT_FORMAT_VERSION}"
            + (" (made by a newer studio: update the studio)" if isinstance(version, int) and version > PROJECT_FORMAT_VERSION else "")
        )
    _check_config_fields(path, config)
    return config


def _check_config_fields(path: Path, config: dict) -> None:
    try:
        BackboneRef.from_json(config.get("backbone"))
        LabelSet.from_json(config.get("labels"))
    except (ValueError, TypeError) as error:
        raise ProjectFormatError(f"{path}: {error}") from error
    if not isinstance(config.get("settings", {}), dict):
        raise ProjectFormatError(f"{path}: settings must be a JSON object")
    config.setdefault("settings", {})


def _take_lock(folder: Path) -> ProjectLock:
    lock = ProjectLock(folder)
    lock.acquire()
    return lock


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files of writes killed mid-way (atomic_write_bytes names them .NAME.xxx.tmp).

    Only the lock holder writes these two places, so every temp file there is dead.
    """
    for path in [*folder.glob(f".{PROJECT_FILE}.*.tmp"), *(folder / ANNOTATIONS_DIR).glob(".*.tmp")]:
        path.unlink(missing_ok=True)


def _remove_uncommitted_masks(folder: Path) -> None:
    """NNNN.png files with no NNNN.json: an add killed before its commit, or a delete killed mid-way.

    The JSON is an annotation's commit (add writes the PNG, then the JSON; delete removes the
    JSON first), so a PNG alone was never a committed annotation, or was already deleted.
    """
    annotations = folder / ANNOTATIONS_DIR
    if not annotations.is_dir():
        return
    for png_path in annotations.glob("*.png"):
        if _ANNOTATION_STEM.match(png_path.stem) and not png_path.with_suffix(".json").exists():
            png_path.unlink(missing_ok=True)


def _report(error: AnnotationError, problems: list | None) -> None:
    if problems is None:
        warnings.warn(f"skipped: {error}", AnnotationProblemWarning, stacklevel=3)
    else:
        problems.append(error)


def _size(shape) -> str:
    height, width = shape
    return f"{width}x{height}"
