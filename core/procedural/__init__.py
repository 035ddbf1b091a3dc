"""Procedural cat heads with ground truth: the studio's source of truth (design.md section 3).

    params = HeadParams.from_seed(seed)            # or .from_latent(z), .from_array(a)
    buffers = render(params, Camera(yaw, pitch).label(), 128)
    # rgb, labels, depth (t along the unit ray, inf on background), normals, alpha
    ids = label_at_points(params, xyz)             # (N,) uint8, 0 far from the head
    distance = sdf(params, xyz)                    # (N,) float32, negative inside

ProceduralHead(params) keeps one identity's constants for many renders.  category.py holds the
camera constants (RENDERING), LABELS, SEED_RANGES and the left/right convention; params.py the
parameter ranges and the latent prior; renderer.py the buffer conventions.  No Qt here.
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
