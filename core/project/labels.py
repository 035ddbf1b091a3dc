"""Label sets: which part ids a project paints with, their names and colours.

A `LabelSet` is an immutable value; edits return a new set. The project stores the set with a
version number that goes up whenever the classes change, and every annotation records the
version it was painted under, so a trainer can tell masks made before a relabelling.

Mask value UNLABELLED_ID (255, as COCO-stuff and mmseg reserve it) means "nobody painted this
pixel": a new mask starts unlabelled, and training and evaluation leave such pixels out. It is
not a label of the set and no label may take that id. A label can also be marked `ignore`
(CVAT's and COCO's "ignore" / crowd regions): it is painted and shown like any other, and
training and evaluation treat its pixels as unlabelled. Background (id 0) is a label like the
others: painted background teaches the branch "background", unpainted pixels teach nothing.
Masks written before UNLABELLED_ID existed hold no 255s and are read as they were painted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import LabelSetError

BACKGROUND_ID = 0
UNLABELLED_ID = 255  # the mask value of unpainted pixels; never a label's id
MAX_LABEL_ID = UNLABELLED_ID - 1  # masks are 8-bit indexed PNGs
UNLABELLED_NAME = "unlabelled"
UNLABELLED_COLOUR = (128, 128, 128)  # cosmetic: its PNG palette entry and its swatch


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    colour: tuple[int, int, int]
    ignore: bool = False  # painted and shown, but left out of training and evaluation

    def __post_init__(self):
        _validate_label(self)
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "colour", _colour(self.colour))

    def to_json(self) -> dict:
        data = {"id": self.id, "name": self.name, "colour": list(self.colour)}
        if self.ignore:
            data["ignore"] = True  # absent means False, so older project files read unchanged
        return data


@dataclass(frozen=True)
class LabelSet:
    """Labels sorted by id, plus the version number the project stores with them."""

    labels: tuple[Label, ...]
    version: int = 1

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(sorted(self.labels, key=lambda label: label.id)))
        _validate(self)

    # ---------------------------------------------------------------- queries
    @property
    def ids(self) -> list[int]:
        return [label.id for label in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label_id: int) -> bool:
        return any(label.id == label_id for label in self.labels)

    def by_id(self, label_id: int) -> Label:
        for label in self.labels:
            if label.id == label_id:
                return label
        raise KeyError(f"no label with id {label_id}")

    def same_classes(self, other: "LabelSet") -> bool:
        return self.labels == other.labels

    def palette(self) -> np.ndarray:
        """(max id + 1, 3) uint8: row i is the colour of label i (black where no label)."""
        palette = np.zeros((max(self.ids) + 1, 3), np.uint8)
        for label in self.labels:
            palette[label.id] = label.colour
        return palette

    def id_lookup(self) -> np.ndarray:
        """(256,) bool: True for the mask values this set allows (its ids and UNLABELLED_ID)."""
        known = np.zeros(UNLABELLED_ID + 1, bool)
        known[self.ids] = True
        known[UNLABELLED_ID] = True
        return known

    @property
    def ignored_ids(self) -> list[int]:
        """Ids of the labels marked `ignore`."""
        return [label.id for label in self.labels if label.ignore]

    def training_mask(self, mask: np.ndarray) -> np.ndarray:
        """`mask` as training and evaluation see it: ignore-labels become UNLABELLED_ID."""
        ignored = self.ignored_ids
        if not ignored:
            return mask
        return np.where(np.isin(mask, ignored), UNLABELLED_ID, mask).astype(mask.dtype, copy=False)

    # ---------------------------------------------------------------- edits (new sets)
    def with_label(self, label_id: int, name: str, colour, ignore: bool = False) -> "LabelSet":
        """Add a label, or replace the one with this id (rename / recolour / (un)ignore)."""
        kept = [label for label in self.labels if label.id != label_id]
        return replace(self, labels=tuple(kept) + (Label(label_id, name, colour, ignore),))

    def without(self, label_id: int) -> "LabelSet":
        if label_id not in self:
            raise LabelSetError(f"no label with id {label_id} to remove")
        return replace(self, labels=tuple(label for label in self.labels if label.id != label_id))

    # ---------------------------------------------------------------- JSON
    def to_json(self) -> dict:
        return {"version": self.version, "classes": [label.to_json() for label in self.labels]}

    @classmethod
    def from_json(cls, data) -> "LabelSet":
        try:
            classes = [Label(c["id"], c["name"], c["colour"], _flag(c.get("ignore", False))) for c in data["classes"]]
            version = data["version"]
        except (KeyError, TypeError, ValueError) as error:
            raise LabelSetError(f"label set is not a list of {{id, name, colour}} with a version ({error})") from error
        if not isinstance(version, int) or version < 1:
            raise LabelSetError(f"label set version must be a positive integer, got {version!r}")
        return cls(tuple(classes), version)

    @classmethod
    def from_tuples(cls, labels, version: int = 1) -> "LabelSet":
        """From (id, name, (r, g, b)) tuples, the form of core.procedural.LABELS."""
        return cls(tuple(Label(i, name, colour) for i, name, colour in labels), version)


def default_label_set() -> LabelSet:
    """The procedural cat-head category's parts (core.procedural.LABELS), version 1."""
    from core.procedural.category import LABELS

    return LabelSet.from_tuples(LABELS)


def _colour(value) -> tuple[int, int, int]:
    try:
        channels = tuple(value)
    except TypeError:
        raise LabelSetError(f"a colour is three integers 0-255, got {value!r}") from None
    if len(channels) != 3 or not all(_is_byte(c) for c in channels):
        raise LabelSetError(f"a colour is three integers 0-255, got {value!r}")
    return tuple(int(c) for c in channels)


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise LabelSetError(f"a label's 'ignore' is true or false, got {value!r}")
    return value


def _is_byte(value) -> bool:
    return _is_integer(value) and 0 <= value <= 255


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate(label_set: LabelSet) -> None:
    ids = label_set.ids
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise LabelSetError(f"label ids must be unique; repeated: {duplicates}")
    if BACKGROUND_ID not in ids:
        raise LabelSetError("label id 0 (background) is missing; every label set starts with it")


def _validate_label(label: Label) -> None:
    if not _is_integer(label.id) or not 0 <= label.id <= MAX_LABEL_ID:
        raise LabelSetError(f"label id {label.id!r} must be an integer 0-{MAX_LABEL_ID} (masks are 8-bit; "
                            f"{UNLABELLED_ID} is reserved for unlabelled pixels)")
    if not isinstance(label.name, str) or not label.name.strip():
        raise LabelSetError(f"label {label.id} needs a non-empty name")
    _colour(label.colour)
    if not isinstance(label.ignore, bool):
        raise LabelSetError(f"label {label.id}: 'ignore' is true or false, got {label.ignore!r}")
