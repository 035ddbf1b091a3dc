"""Constants of the procedural cat-head category: cameras, labels, seed ranges.

Everything another module needs to agree on with the procedural renderer lives here, so that
the embedded generator, the simulated annotator and the quality figures use the same numbers.

World frame (shared with ``core.camera``): y up, the head faces +z, a frontal camera sits at
``pivot + (0, 0, radius)``.  The head's own LEFT is world +x (a cat facing the viewer shows its
left ear on the right of a frontal image), its own right is world -x.
"""
from __future__ import annotations

import numpy as np

# The camera constants follow EG3D's FFHQ configuration so that ``core.camera.Camera``'s defaults
# (radius 2.7, fov 18.837, pivot (0, 0, 0.2)) frame a procedural head without extra arguments.
# EG3D cameras sit at distance 2.7 from the world ORIGIN (not from the pivot).  Every head point
# lies within HEAD_BOUND_RADIUS = 0.45 of the origin, so for every camera of the family any ray
# meets the head at t in [2.7 - 0.45, 2.7 + 0.45] = [2.25, 3.15], inside [ray_start, ray_end],
# and the head lies inside the tri-plane box [-0.5, 0.5]^3 (tests/test_procedural.py checks both
# on extreme parameter vectors).  The head is ~0.42 wide; the frame is ~0.59 wide at the pivot.
RENDERING = dict(
    avg_camera_radius=2.7,
    avg_camera_pivot=[0.0, 0.0, 0.2],
    fov=18.837,
    ray_start=2.25,
    ray_end=3.3,
    box_warp=1.0,
)

# Sphere around the world origin that contains every head of the family.
HEAD_BOUND_RADIUS = 0.45

# Camera range the category is meant to be seen from (degrees).
YAW_RANGE = (-90.0, 90.0)
PITCH_RANGE = (-30.0, 30.0)

# Mid grey: in EG3D's [-1, 1] image range this is 0, the value an empty ray composites to,
# so a generator fit to these renders does not have to invent a background.
BACKGROUND_RGB = (0.5, 0.5, 0.5)

# (id, name, RGB colour).  0 must stay background; ids are contiguous.
LABELS = [
    (0, "background", (0, 0, 0)),
    (1, "head", (200, 120, 60)),
    (2, "left_ear", (230, 25, 75)),
    (3, "right_ear", (60, 180, 75)),
    (4, "left_inner_ear", (255, 150, 200)),
    (5, "right_inner_ear", (150, 255, 200)),
    (6, "left_eye", (0, 130, 200)),
    (7, "right_eye", (255, 225, 25)),
    (8, "muzzle", (240, 240, 240)),
    (9, "nose", (145, 30, 180)),
    (10, "mouth", (128, 0, 0)),
    (11, "neck", (70, 240, 240)),
]
LABEL_IDS = {name: label_id for label_id, name, _ in LABELS}
NUM_CLASSES = len(LABELS)

# Pairs (left, right) that trade places under a left-right mirror of the world (x -> -x).
LEFT_RIGHT_PAIRS = [("left_ear", "right_ear"), ("left_inner_ear", "right_inner_ear"),
                    ("left_eye", "right_eye")]

# Disjoint identity ranges so that no figure is measured on an identity used for fitting
# the backbone or for annotating.
SEED_RANGES = {
    "fit": range(0, 1_000_000),
    "annotate": range(1_000_000, 2_000_000),
    "evaluate": range(2_000_000, 3_000_000),
}


def label_palette() -> np.ndarray:
    """(NUM_CLASSES, 3) uint8 colours indexed by label id."""
    palette = np.zeros((NUM_CLASSES, 3), np.uint8)
    for label_id, _, colour in LABELS:
        palette[label_id] = colour
    return palette


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """HxW label ids -> HxWx3 uint8 image in the label colours."""
    return label_palette()[labels]


def mirror_label_ids() -> np.ndarray:
    """Lookup table that swaps every left id with its right id (for x -> -x mirrored views)."""
    table = np.arange(NUM_CLASSES, dtype=np.uint8)
    for left, right in LEFT_RIGHT_PAIRS:
        table[LABEL_IDS[left]], table[LABEL_IDS[right]] = LABEL_IDS[right], LABEL_IDS[left]
    return table


def seeds_for(purpose: str, count: int, start: int = 0) -> list[int]:
    """The first ``count`` seeds (after skipping ``start``) of a purpose's range."""
    seeds = SEED_RANGES[purpose]
    if start < 0 or start + count > len(seeds):
        raise ValueError(f"{purpose!r} has {len(seeds)} seeds; asked for {start}..{start + count}")
    return list(seeds[start:start + count])


def purpose_of_seed(seed: int) -> str:
    """Which range a seed belongs to ('fit', 'annotate' or 'evaluate')."""
    for purpose, seeds in SEED_RANGES.items():
        if seed in seeds:
            return purpose
    raise ValueError(f"seed {seed} lies in no range of SEED_RANGES")
