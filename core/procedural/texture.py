"""Albedo of surface points: coat colour, tabby stripes or spots, fine fur grain, light
muzzle/chest patches, eyes with slit pupils and a catch-light, nose, mouth, pink inner ears.

Every pattern is a function of the 3D point in the head's frame (never of the view), so the
texture is identical from every camera.  Patterns are built from 3D value noise (a hashed
integer lattice, smoothly interpolated): deterministic, with no state and no stored tables.
"""
from __future__ import annotations

import colorsys

import numpy as np

from . import sdf_ops as ops
from .category import LABEL_IDS
from .head import HeadShape

# Coat palette, interpolated by the 'coat' parameter (0..1): real cat colours in order of
# brightness, so nearby latents give similar cats.
COAT_STOPS = [0.0, 0.14, 0.30, 0.46, 0.62, 0.80, 1.0]
COAT_COLOURS = np.array([
    [0.07, 0.06, 0.06],   # black
    [0.30, 0.30, 0.32],   # dark grey
    [0.55, 0.56, 0.60],   # blue-grey
    [0.50, 0.36, 0.22],   # brown
    [0.85, 0.55, 0.27],   # ginger
    [0.93, 0.78, 0.56],   # cream
    [0.93, 0.92, 0.89],   # white
])
CREAM = np.array([0.95, 0.92, 0.86])


def _lattice_values(ix, iy, iz, seed: int) -> np.ndarray:
    """Pseudo-random value in [0, 1) for each integer lattice point (a 32-bit integer hash)."""
    h = (ix.astype(np.uint32) * np.uint32(73856093)) ^ (iy.astype(np.uint32) * np.uint32(19349663)) \
        ^ (iz.astype(np.uint32) * np.uint32(83492791)) ^ np.uint32(seed * 2654435761 % 2 ** 32)
    h = (h ^ (h >> np.uint32(15))) * np.uint32(2246822519)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(3266489917)
    h = h ^ (h >> np.uint32(16))
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(1.0 / 0x1000000)


def value_noise(p, frequency, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [-1, 1]; ``frequency`` is lattice cells per unit along x, y, z."""
    scaled = [axis * np.float32(f) for axis, f in zip(p, frequency)]
    cells = [np.floor(axis) for axis in scaled]
    fractions = [axis - cell for axis, cell in zip(scaled, cells)]
    weights = [f * f * (3.0 - 2.0 * f) for f in fractions]
    ix, iy, iz = (cell.astype(np.int64) for cell in cells)
    total = 0.0
    for dx in (0, 1):
        wx = weights[0] if dx else 1.0 - weights[0]
        for dy in (0, 1):
            wy = weights[1] if dy else 1.0 - weights[1]
            for dz in (0, 1):
                wz = weights[2] if dz else 1.0 - weights[2]
                total = total + wx * wy * wz * _lattice_values(ix + dx, iy + dy, iz + dz, seed)
    return 2.0 * total - 1.0


def fractal_noise(p, frequency, seed: int, octaves: int = 2) -> np.ndarray:
    """Value noise plus finer octaves at half the amplitude each, roughly in [-1, 1]."""
    total, amplitude, norm = 0.0, 1.0, 0.0
    for octave in range(octaves):
        scaled = [f * 2 ** octave for f in frequency]
        total = total + amplitude * value_noise(p, scaled, seed + octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def coat_colour(coat: float, brightness: float, warmth: float) -> np.ndarray:
    base = np.array([np.interp(coat, COAT_STOPS, COAT_COLOURS[:, channel]) for channel in range(3)])
    h, s, v = colorsys.rgb_to_hsv(*base)
    return np.clip(np.array(colorsys.hsv_to_rgb((h + warmth) % 1.0, s, v * brightness)), 0.0, 1.0)


class HeadTexture:
    """Per-identity colours and pattern constants."""

    def __init__(self, shape: HeadShape):
        p = self.params = shape.params
        self.shape = shape
        self.fur = coat_colour(p.coat, p.fur_brightness, p.fur_warmth)
        # Stripes: darker and a little more saturated than the base (ginger -> deep orange).
        self.stripe = self.fur ** (1.0 + 1.5 * p.stripe_darkness) * (1.0 - 0.5 * p.stripe_darkness)
        self.light = self.fur + (CREAM - self.fur) * (0.3 + 0.7 * p.light_patch)
        self.iris = np.array(colorsys.hsv_to_rgb(p.eye_hue, 0.8, 0.85))
        dark_nose, pink_nose = np.array([0.16, 0.11, 0.11]), np.array([0.86, 0.50, 0.55])
        self.nose = dark_nose + (pink_nose - dark_nose) * p.nose_pinkness
        self.inner_ear = np.array([0.88, 0.60, 0.62]) * 0.8 + self.fur * 0.2
        self.mouth = np.array([0.12, 0.07, 0.07])
        self.offset = (p.pattern_offset_x, p.pattern_offset_y, p.pattern_offset_z)

    def albedo(self, p, ids) -> np.ndarray:
        """(N, 3) float32 colours in [0, 1] of surface points p = (x, y, z) with their ids."""
        colour = self._fur_colour(p)
        self._paint(colour, p, ids == LABEL_IDS["muzzle"], self._muzzle_colour)
        colour[ids == LABEL_IDS["nose"]] = self.nose
        colour[ids == LABEL_IDS["mouth"]] = self.mouth
        inner = (ids == LABEL_IDS["left_inner_ear"]) | (ids == LABEL_IDS["right_inner_ear"])
        self._paint(colour, p, inner, self._inner_ear_colour)
        eyes = (ids == LABEL_IDS["left_eye"]) | (ids == LABEL_IDS["right_eye"])
        self._paint(colour, p, eyes, self._eye_colour)
        return np.clip(colour, 0.0, 1.0).astype(np.float32)

    @staticmethod
    def _paint(colour, p, mask, colour_of):
        if mask.any():
            colour[mask] = colour_of(tuple(axis[mask] for axis in p))

    # ----- fur ----------------------------------------------------------------------------
    def _fur_colour(self, p):
        params = self.params
        relative = _relative(p, self.shape.cranium_centre)
        pattern = self._stripes(relative) * (1.0 - params.spottiness) + self._spots(relative) * params.spottiness
        colour = self.fur + (self.stripe - self.fur) * pattern[:, None]
        colour = colour + (self.light - colour) * self._light_patch_weight(relative)[:, None]
        grain = self._grain(p)
        return colour * (1.0 + params.fur_grain * grain)[:, None]

    def _stripes(self, r):
        """Mackerel-tabby bands (1 = dark): down the forehead, around the cheeks and the neck."""
        params = self.params
        x, y, z = r
        around = np.arctan2(x, np.maximum(z, -0.2) + 0.25) * params.stripe_frequency
        # Below the eyes and on the neck the bands run around the body, i.e. follow height.
        lower = ops.smoothstep(-0.01, -0.07, y)
        coordinate = around + (y * 140.0 - around) * lower
        warp = 2.0 * fractal_noise(_shifted(r, self.offset), (9.0, 9.0, 9.0), seed=1)
        wave = np.cos(coordinate + params.stripe_warp * warp)
        threshold = np.cos(np.pi * params.stripe_width)
        stripes = ops.smoothstep(threshold - 0.1, threshold + 0.1, wave)
        # Keep the middle of the face (around the nose bridge) and the chin plain.
        plain = ops.smoothstep(0.05, 0.0, np.abs(x)) * ops.smoothstep(0.02, -0.05, y)
        return stripes * (1.0 - plain)

    def _spots(self, r):
        noise = fractal_noise(_shifted(r, self.offset), (22.0, 22.0, 22.0), seed=2)
        return ops.smoothstep(0.2, 0.4, noise)

    def _grain(self, p):
        """Fur streaks: fine noise stretched along y, the way fur lies down the head and neck."""
        return fractal_noise(_shifted(p, self.offset), (110.0, 28.0, 110.0), seed=3)

    def _light_patch_weight(self, r):
        """Chin, throat and chest lighten towards cream; nothing above the muzzle."""
        x, y, z = r
        below_muzzle = ops.smoothstep(-0.06, -0.11, y) * ops.smoothstep(-0.05, 0.08, z)
        return self.params.light_patch * below_muzzle

    def _muzzle_colour(self, p):
        x, y, z = _relative(p, self.shape.pad_centre)
        colour = np.tile(self.light, (len(x), 1))
        # Rows of whisker follicles: small dark dots on the pads.
        rows = np.cos(y * (2 * np.pi / 0.011))
        columns = np.cos(np.abs(p[0]) * (2 * np.pi / 0.010))
        dots = ops.smoothstep(0.7, 0.95, rows) * ops.smoothstep(0.6, 0.95, columns)
        dots *= ops.smoothstep(0.04, 0.02, np.sqrt(x * x + y * y)) * ops.smoothstep(0.0, 0.012, -y + 0.01)
        return colour * (1.0 - 0.5 * dots)[:, None]

    def _inner_ear_colour(self, p):
        x, y, z = _relative(p, self.shape.ear_base)
        # Darker deep inside, lighter towards the tip.
        depth = ops.smoothstep(0.02, 0.10, y)
        return self.inner_ear * (0.65 + 0.35 * depth)[:, None]

    # ----- eyes ---------------------------------------------------------------------------
    def _eye_colour(self, p):
        shape = self.shape
        u, v, w = ops.to_local((np.abs(p[0]), p[1], p[2]), shape.eye_centre, shape.eye_rotation)
        u, v = u / shape.eye_radii[0], v / shape.eye_radii[1]
        radial = np.sqrt(u * u + v * v)
        iris = self.iris * (1.2 - 0.6 * np.clip(radial, 0.0, 1.0))[:, None]
        # Vertical slit pupil that is widest at the middle of the eye.
        pupil_half_width = 0.14 * np.maximum(1.0 - v * v, 0.0) + 0.02
        pupil = ops.smoothstep(pupil_half_width + 0.05, pupil_half_width, np.abs(u))
        eye = iris + (0.03 - iris) * pupil[:, None]
        rim = ops.smoothstep(0.80, 0.93, radial)
        eye = eye + (0.04 - eye) * rim[:, None]
        # A catch-light fixed in the head frame (upper inner corner), so it is view-consistent.
        glint = ops.smoothstep(0.2, 0.1, np.sqrt((u + 0.3) ** 2 + (v - 0.35) ** 2))
        return eye + (1.0 - eye) * glint[:, None]


def _relative(p, centre):
    return (p[0] - centre[0], p[1] - centre[1], p[2] - centre[2])


def _shifted(p, offset):
    return (p[0] + offset[0], p[1] + offset[1], p[2] + offset[2])
