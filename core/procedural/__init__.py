"""Procedural cat heads with ground truth: the studio's source of truth (design.md section 3).

No Qt here.  See category.py for cameras, labels and seed ranges, params.py for the identity
parameters and their latent prior, render.py for the buffers and their conventions.
"""
from .category import (BACKGROUND_RGB, LABEL_IDS, LABELS, NUM_CLASSES, RENDERING, SEED_RANGES,
                       colourise_labels, label_palette, mirror_label_ids, purpose_of_seed,
                       seeds_for)
from .params import PARAM_COUNT, PARAM_NAMES, PARAM_SPECS, HeadParams, latent_for_seed
from .renderer import ProceduralHead, label_at_points, render, sdf

__all__ = [
    "BACKGROUND_RGB", "LABEL_IDS", "LABELS", "NUM_CLASSES", "RENDERING", "SEED_RANGES",
    "colourise_labels", "label_palette", "mirror_label_ids", "purpose_of_seed", "seeds_for",
    "PARAM_COUNT", "PARAM_NAMES", "PARAM_SPECS", "HeadParams", "latent_for_seed",
    "ProceduralHead", "label_at_points", "render", "sdf",
]
