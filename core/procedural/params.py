"""Parameter vector of one procedural cat head.

Every parameter is a float in a fixed range [low, high].  The latent prior maps a standard
normal z through the normal CDF into that range:  value_i = low_i + (high_i - low_i) * Phi(z_i),
using z[0 : PARAM_COUNT] in the order of PARAM_SPECS; further dims of z are ignored.  So a
generator with z_dim >= PARAM_COUNT that is fit on (z, render(from_latent(z))) pairs can learn
z -> head, and ``from_seed(seed)`` is exactly ``from_latent(latent_for_seed(seed, any z_dim))``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

# (name, low, high, what it controls).  Lengths are in world units (the head is ~0.45 wide).
PARAM_SPECS = [
    # --- shape and proportions (all mirror-symmetric: left and right share one value) ---
    ("head_width", 0.175, 0.205, "x radius of the cranium"),
    ("head_height", 0.145, 0.170, "y radius of the cranium"),
    ("head_depth", 0.150, 0.175, "z radius of the cranium"),
    ("cheek_size", 0.070, 0.095, "radius of the cheek (jowl) bulges"),
    ("cheek_spread", 0.065, 0.095, "x offset of each cheek"),
    ("ear_height", 0.100, 0.145, "ear length from base to tip"),
    ("ear_width", 0.052, 0.070, "ear base radius"),
    ("ear_spread", 8.0, 32.0, "outward roll of the ears, degrees"),
    ("ear_position", 0.42, 0.62, "ear base x as a fraction of head_width"),
    ("ear_lean", -5.0, 18.0, "backward tilt of the ears, degrees"),
    ("eye_size", 0.030, 0.040, "eye radius"),
    ("eye_spacing", 0.060, 0.078, "x offset of each eye"),
    ("eye_height", 0.005, 0.035, "y of the eyes above the cranium centre"),
    ("eye_slant", 0.0, 18.0, "outer corners up, degrees"),
    ("muzzle_size", 0.036, 0.048, "radius of the whisker pads"),
    ("muzzle_length", 0.000, 0.025, "how far the muzzle protrudes"),
    ("nose_size", 0.016, 0.024, "nose half-width"),
    ("neck_width", 0.100, 0.135, "neck radius"),
    # --- colours ---
    ("coat", 0.0, 1.0, "position along the coat palette black-grey-brown-ginger-cream-white"),
    ("fur_brightness", 0.85, 1.15, "multiplies the coat colour"),
    ("fur_warmth", -0.04, 0.04, "hue shift of the coat colour"),
    ("stripe_darkness", 0.0, 0.85, "how much darker stripes/spots are than the base"),
    ("light_patch", 0.0, 1.0, "how white the muzzle, chin and chest are"),
    ("eye_hue", 0.08, 0.55, "iris hue (amber .. green .. blue)"),
    ("nose_pinkness", 0.0, 1.0, "nose colour, dark .. pink"),
    # --- texture ---
    ("stripe_frequency", 14.0, 26.0, "tabby stripe phase per radian around the head"),
    ("stripe_width", 0.20, 0.45, "fraction of each stripe period that is dark"),
    ("stripe_warp", 0.3, 1.4, "waviness of the stripes"),
    ("spottiness", 0.0, 1.0, "mix from stripes (0) to spots (1)"),
    ("pattern_offset_x", 0.0, 10.0, "3D offset of the pattern noise"),
    ("pattern_offset_y", 0.0, 10.0, "3D offset of the pattern noise"),
    ("pattern_offset_z", 0.0, 10.0, "3D offset of the pattern noise"),
    ("fur_grain", 0.04, 0.16, "amplitude of fine fur-like streak noise"),
]
PARAM_NAMES = [name for name, *_ in PARAM_SPECS]
PARAM_COUNT = len(PARAM_SPECS)
PARAM_LOW = np.array([low for _, low, _, _ in PARAM_SPECS], np.float64)
PARAM_HIGH = np.array([high for _, _, high, _ in PARAM_SPECS], np.float64)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    # torch (a project dependency) rather than scipy (only a transitive one) provides Phi.
    return torch.special.ndtr(torch.as_tensor(z, dtype=torch.float64)).numpy()


def normal_quantile(u: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.as_tensor(u, dtype=torch.float64)).numpy()


def latent_for_seed(seed: int, z_dim: int = PARAM_COUNT) -> np.ndarray:
    """The standard-normal latent of an identity; its first PARAM_COUNT dims define the head."""
    if z_dim < PARAM_COUNT:
        raise ValueError(f"z_dim must be >= {PARAM_COUNT}")
    return np.random.RandomState(seed).standard_normal(z_dim)


@dataclasses.dataclass(frozen=True)
class HeadParams:
    """One identity.  Field order is the order of the flat array and of the latent dims."""
    values: tuple

    def __post_init__(self):
        if len(self.values) != PARAM_COUNT:
            raise ValueError(f"expected {PARAM_COUNT} values, got {len(self.values)}")

    def __getattr__(self, name):
        # Named access (params.ear_height) without writing 33 dataclass fields by hand.
        # 'values' itself must not recurse here (copy/pickle probe before __init__ ran).
        if name == "values" or name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.values[PARAM_NAMES.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    @classmethod
    def from_array(cls, array) -> "HeadParams":
        array = np.asarray(array, np.float64).reshape(-1)
        if array.shape[0] != PARAM_COUNT:
            raise ValueError(f"expected {PARAM_COUNT} values, got {array.shape[0]}")
        # Tolerate float32 round trips at the range ends, refuse anything really outside.
        slack = 1e-5 * (PARAM_HIGH - PARAM_LOW)
        outside = (array < PARAM_LOW - slack) | (array > PARAM_HIGH + slack) | ~np.isfinite(array)
        if outside.any():
            names = [PARAM_NAMES[i] for i in np.flatnonzero(outside)]
            raise ValueError(f"parameters outside their ranges (see PARAM_SPECS): {names}")
        return cls(tuple(float(v) for v in np.clip(array, PARAM_LOW, PARAM_HIGH)))

    @classmethod
    def from_latent(cls, z) -> "HeadParams":
        """Map standard-normal z (uses z[:PARAM_COUNT]) through Phi into the parameter ranges."""
        z = np.asarray(z, np.float64).reshape(-1)
        if z.shape[0] < PARAM_COUNT:
            raise ValueError(f"latent needs at least {PARAM_COUNT} dims, got {z.shape[0]}")
        unit = normal_cdf(z[:PARAM_COUNT])
        return cls.from_array(PARAM_LOW + (PARAM_HIGH - PARAM_LOW) * unit)

    @classmethod
    def from_seed(cls, seed: int) -> "HeadParams":
        return cls.from_latent(latent_for_seed(seed))

    @classmethod
    def mean(cls) -> "HeadParams":
        """The head at z = 0 (every parameter mid-range)."""
        return cls.from_latent(np.zeros(PARAM_COUNT))

    def to_array(self) -> np.ndarray:
        return np.array(self.values, np.float64)

    def to_latent(self) -> np.ndarray:
        """Inverse of from_latent (clipped away from +-inf at the range ends)."""
        unit = (self.to_array() - PARAM_LOW) / (PARAM_HIGH - PARAM_LOW)
        return normal_quantile(np.clip(unit, 1e-6, 1 - 1e-6))

    def replace(self, **changes) -> "HeadParams":
        array = self.to_array()
        for name, value in changes.items():
            array[PARAM_NAMES.index(name)] = value
        return HeadParams.from_array(array)

    def as_dict(self) -> dict:
        return dict(zip(PARAM_NAMES, self.values))
