"""A contact sheet of the fit: procedural render beside backbone render, held-out identities."""
from __future__ import annotations

import numpy as np

from core.fitting.evaluate import backbone_identity, backbone_view, procedural_view
from core.procedural import seeds_for

GAP = 4            # pixels between cells
PAIR_GAP = 12      # wider gap between (procedural, backbone) pairs
GAP_GREY = 255


def contact_sheet(generator, identities: int = 4, views=((0.0, 0.0), (45.0, 10.0), (-80.0, -15.0)),
                  resolution: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3): one row per 'evaluate' identity, for every view the procedural render
    (left) and the backbone's (right)."""
    resolution = resolution or int(generator.neural_rendering_resolution)
    rows = []
    for seed in seeds_for("evaluate", identities):
        cells = []
        identity = backbone_identity(generator, seed)
        for yaw, pitch in views:
            truth = procedural_view(seed, yaw, pitch, resolution, generator.z_dim)["rgb"]
            mine = backbone_view(generator, identity, yaw, pitch, resolution)["rgb"]
            cells.append(_join([_to_uint8(truth), _to_uint8(mine)], GAP, axis=1))
        rows.append(_join(cells, PAIR_GAP, axis=1))
    return _join(rows, GAP, axis=0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _join(images, gap: int, axis: int) -> np.ndarray:
    """Concatenate images along an axis with white gaps between them."""
    shape = list(images[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, GAP_GREY, np.uint8)
    parts = []
    for index, image in enumerate(images):
        if index:
            parts.append(spacer)
        parts.append(image)
    return np.concatenate(parts, axis=axis)
