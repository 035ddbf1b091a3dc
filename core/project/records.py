"""The values a project stores: backbone reference, identity reference, annotation metadata.

Each knows its JSON form. Parsing is strict and names the file at fault: a trainer must never
guess at a half-written or hand-edited annotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.camera import Camera

from .errors import CorruptAnnotationError

ANNOTATION_FORMAT_VERSION = 1
DEFAULT_BACKBONE = "default"
EG3D_TRUNCATION_CUTOFF = 14  # gen_samples.py's default, as core.backbone

# Labels are float32 in memory; a stored label differing from the one its yaw/pitch/radius/fov
# rebuild by more than this was edited by hand or damaged.
_CAMERA_LABEL_TOL = 1e-4


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -------------------------------------------------------------------------------- backbone
@dataclass(frozen=True)
class BackboneRef:
    """Which frozen generator a project's masks were painted on.

    `path` is 'default' (the embedded backbone), a path relative to the project folder, or an
    absolute path. `content_hash` is the SHA-256 of the file (core.backbone's content_hash).
    """

    path: str
    content_hash: str

    @classmethod
    def for_file(cls, spec: str | Path, project_folder: Path | None = None) -> "BackboneRef":
        """Hash a backbone file ('default' or a path) and record how to find it again."""
        from core.checkpoint.studio_format import file_sha256

        file = _backbone_file(spec)
        if not file.is_file():
            raise FileNotFoundError(f"backbone file not found: {file}")
        return cls(_stored_path(spec, project_folder), file_sha256(file))

    @classmethod
    def for_backbone(cls, backbone, spec: str | Path, project_folder: Path | None = None) -> "BackboneRef":
        """The reference of an already loaded core.backbone.Backbone (no second hashing)."""
        return cls(_stored_path(spec, project_folder), backbone.content_hash)

    def file(self, project_folder: Path) -> Path:
        if self.path == DEFAULT_BACKBONE:
            return _backbone_file(DEFAULT_BACKBONE)
        path = Path(self.path)
        return path if path.is_absolute() else Path(project_folder) / path

    def to_json(self) -> dict:
        return {"path": self.path, "content_hash": self.content_hash}

    @classmethod
    def from_json(cls, data) -> "BackboneRef":
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k) for k in ("path", "content_hash")):
            raise ValueError(f"backbone must be {{'path': str, 'content_hash': str}}, got {data!r}")
        return cls(data["path"], data["content_hash"])


def _backbone_file(spec: str | Path) -> Path:
    if str(spec) == DEFAULT_BACKBONE:
        from core.backbone import DEFAULT_BACKBONE_PATH

        return DEFAULT_BACKBONE_PATH
    return Path(spec)


def _stored_path(spec: str | Path, project_folder: Path | None) -> str:
    """'default', or a path that still works when the project folder moves, where possible."""
    if str(spec) == DEFAULT_BACKBONE:
        return DEFAULT_BACKBONE
    absolute = Path(spec).resolve()
    if project_folder is not None:
        try:
            return absolute.relative_to(Path(project_folder).resolve()).as_posix()
        except ValueError:
            pass
    return str(absolute)


# -------------------------------------------------------------------------------- identities
@dataclass(frozen=True)
class IdentityRef:
    """An identity as the backbone makes it: an EG3D seed (+ truncation) or a saved w file.

    Seeds follow EG3D's convention (z = RandomState(seed).randn), which the procedural category
    shares, so seed s of the generator is meant to be procedural identity s. `w_file` is a .npy
    of ws (1, num_ws, w_dim) relative to the project folder (inverted or edited identities).
    """

    seed: int | None = None
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = EG3D_TRUNCATION_CUTOFF
    w_file: str | None = None

    def __post_init__(self):
        if (self.seed is None) == (self.w_file is None):
            raise ValueError("an identity is either a seed or a w file, exactly one of them")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"identity seed must be an integer, got {self.seed!r}")
        if not _is_finite_number(self.truncation_psi):
            raise ValueError(f"truncation_psi must be a finite number, got {self.truncation_psi!r}")
        if self.w_file is not None and (not isinstance(self.w_file, str) or Path(self.w_file).is_absolute()):
            raise ValueError(f"w_file must be a path relative to the project folder, got {self.w_file!r}")

    @property
    def key(self) -> tuple:
        """Hashable, for counting annotations per identity."""
        if self.seed is not None:
            return ("seed", int(self.seed), float(self.truncation_psi), self.truncation_cutoff)
        return ("w", self.w_file)

    def describe(self) -> str:
        if self.seed is not None:
            return f"seed {self.seed} (psi {self.truncation_psi:g})"
        return f"w {self.w_file}"

    def to_json(self) -> dict:
        if self.seed is not None:
            return {"seed": int(self.seed), "truncation_psi": float(self.truncation_psi), "truncation_cutoff": self.truncation_cutoff}
        return {"w_file": self.w_file}

    @classmethod
    def from_json(cls, data) -> "IdentityRef":
        if isinstance(data, IdentityRef):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"identity must be {{'seed': int, 'truncation_psi': float}} or {{'w_file': path}}, got {data!r}")
        if "w_file" in data:
            return cls(w_file=data["w_file"])
        if "seed" not in data:
            raise ValueError(f"identity has neither 'seed' nor 'w_file': {data!r}")
        cutoff = data.get("truncation_cutoff", EG3D_TRUNCATION_CUTOFF)
        return cls(seed=data["seed"], truncation_psi=data.get("truncation_psi", 1.0), truncation_cutoff=cutoff)


# -------------------------------------------------------------------------------- cameras
def camera_to_json(camera: Camera) -> dict:
    return {
        "label": [float(v) for v in camera.label().tolist()],
        "yaw": float(camera.yaw),
        "pitch": float(camera.pitch),
        "radius": float(camera.radius),
        "fov": float(camera.fov),
        "pivot": [float(v) for v in camera.pivot],
    }


def camera_from_json(data: dict) -> tuple[Camera, tuple[float, ...]]:
    """(Camera, stored 25-float label); ValueError when they disagree or a field is bad."""
    numbers = {name: data[name] for name in ("yaw", "pitch", "radius", "fov")}
    if not all(_is_finite_number(v) for v in numbers.values()):
        raise ValueError(f"camera yaw/pitch/radius/fov must be finite numbers, got {numbers}")
    pivot, label = data["pivot"], data["label"]
    if not _is_number_list(pivot, 3) or not _is_number_list(label, 25):
        raise ValueError("camera needs a 3-number pivot and a 25-number label")
    camera = Camera(pivot=tuple(float(v) for v in pivot), **{k: float(v) for k, v in numbers.items()})
    difference = float(np.abs(camera.label().numpy() - np.asarray(label, np.float32)).max())
    if difference > _CAMERA_LABEL_TOL:
        raise ValueError(f"camera label disagrees with its yaw/pitch/radius/fov/pivot (by {difference:.2e})")
    return camera, tuple(float(v) for v in label)


# -------------------------------------------------------------------------------- annotations
@dataclass(frozen=True)
class AnnotationMeta:
    """Everything annotations/NNNN.json says about one painted mask."""

    id: int
    identity: IdentityRef
    camera: Camera
    camera_label: tuple[float, ...]
    backbone_hash: str
    label_set_version: int
    resolution: tuple[int, int]  # (height, width) of the mask
    created: str
    modified: str
    pixel_counts: dict[int, int] = field(default_factory=dict)  # label id -> pixels, at last save

    def to_json(self) -> dict:
        return {
            "format_version": ANNOTATION_FORMAT_VERSION,
            "id": self.id,
            "identity": self.identity.to_json(),
            "camera": camera_to_json(self.camera),
            "backbone_hash": self.backbone_hash,
            "label_set_version": self.label_set_version,
            "resolution": list(self.resolution),
            "created": self.created,
            "modified": self.modified,
            "pixel_counts": {str(k): int(v) for k, v in sorted(self.pixel_counts.items())},
        }

    @classmethod
    def from_json(cls, data, path: Path) -> "AnnotationMeta":
        """Parse and check every field; CorruptAnnotationError naming `path` otherwise."""
        try:
            return cls._parse(data)
        except (KeyError, TypeError, ValueError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise CorruptAnnotationError(path, f"bad annotation metadata: {detail}") from error

    @classmethod
    def _parse(cls, data) -> "AnnotationMeta":
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data["format_version"] != ANNOTATION_FORMAT_VERSION:
            raise ValueError(f"annotation format version {data['format_version']!r}; this studio reads {ANNOTATION_FORMAT_VERSION}")
        camera, label = camera_from_json(data["camera"])
        return cls(
            id=_int_field(data, "id"),
            identity=IdentityRef.from_json(data["identity"]),
            camera=camera,
            camera_label=label,
            backbone_hash=_str_field(data, "backbone_hash"),
            label_set_version=_int_field(data, "label_set_version"),
            resolution=_resolution(data["resolution"]),
            created=_str_field(data, "created"),
            modified=_str_field(data, "modified"),
            pixel_counts={int(k): int(v) for k, v in dict(data.get("pixel_counts", {})).items()},
        )


@dataclass(frozen=True, eq=False)
class Annotation:
    """One painted view: `mask` (H, W) uint8 label ids, and its metadata."""

    mask: np.ndarray
    meta: AnnotationMeta

    @property
    def id(self) -> int:
        return self.meta.id


def pixel_counts(mask: np.ndarray) -> dict[int, int]:
    counts = np.bincount(mask.reshape(-1), minlength=1)
    return {int(i): int(c) for i, c in enumerate(counts) if c}


# -------------------------------------------------------------------------------- field checks
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def _is_number_list(value, length: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == length and all(_is_finite_number(v) for v in value)


def _int_field(data: dict, name: str) -> int:
    if not _is_int(data[name]):
        raise ValueError(f"{name} must be an integer, got {data[name]!r}")
    return int(data[name])


def _str_field(data: dict, name: str) -> str:
    if not isinstance(data[name], str) or not data[name]:
        raise ValueError(f"{name} must be a non-empty string, got {data[name]!r}")
    return data[name]


def _resolution(value) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) and v > 0 for v in value):
        raise ValueError(f"resolution must be [height, width] in pixels, got {value!r}")
    return int(value[0]), int(value[1])
