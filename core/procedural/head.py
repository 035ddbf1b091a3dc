"""Geometry of one cat head: its signed distance and the part label of any 3D point.

The head is mirror-symmetric in x, so every primitive is evaluated once on the folded point
(|x|, y, z): one ear stands for both ears, one eye for both eyes, which halves the cost of the
sphere tracer.  Left/right classes are told apart afterwards by the sign of x (the head's own
left is world +x, see category.py).

Parts (world units; the cranium centre sits just behind the camera pivot (0, 0, 0.2)):
cranium + cheeks = "head" fur; whisker pads + chin = "muzzle"; flattened round cones = ears, with
a carved cavity = "inner_ear"; flattened ellipsoids sunk into carved sockets = eyes; a small
ellipsoid = nose; a line of capsules carved into the muzzle = mouth; a round cone widening
towards the chest = neck.

Points are (x, y, z) tuples of float32 arrays (see sdf_ops.py); ``as_components`` converts.
"""
from __future__ import annotations

import numpy as np

from . import sdf_ops as ops
from .category import LABEL_IDS
from .params import HeadParams

CRANIUM_CENTRE = (0.0, -0.015, 0.13)
EAR_THICKNESS = 0.026
MOUTH_RADIUS = 0.0055          # half-width of the painted mouth line
MOUTH_GROOVE_DEPTH = 0.003     # how far the mouth line is carved into the muzzle
FAR_FROM_SURFACE = 0.03        # label_at_points: farther outside than this is background
INNER_EAR_MARGIN = 0.002       # ear surface this close to the cavity volume is inner ear
NECK_BLEND = 0.08              # wide fillet: the neck grows out of the head, no waist
BOUND_MARGIN = 0.03            # exceeds every blend width; see sdf_ops.bounded

# Internal part indices of the folded model, in the order part_distances stacks them.
FUR, MUZZLE, NECK, EAR, EYE, NOSE = range(6)


class HeadShape:
    """Constants of one identity's geometry, built once and reused for every ray."""

    def __init__(self, params: HeadParams):
        self.params = p = params
        c = CRANIUM_CENTRE
        self.cranium_centre = c
        self.cranium_radii = (p.head_width, p.head_height, p.head_depth)
        self.cheek_centre = _offset(c, p.cheek_spread, -0.055, 0.45 * p.head_depth)
        self.cheek_radii = (1.15 * p.cheek_size, 0.85 * p.cheek_size, p.cheek_size)
        self._build_muzzle(p, c)
        self._build_eye(p, c)
        self._build_ear(p, c)
        self._build_neck(p, c)
        self._build_mouth(p)

    # ----- construction -------------------------------------------------------------------
    def _front_z(self, x: float, y: float) -> float:
        """z of the cranium's front surface above (x, y), relative to the cranium centre."""
        rx, ry, rz = self.cranium_radii
        return rz * max(1.0 - (x / rx) ** 2 - (y / ry) ** 2, 0.0) ** 0.5

    def _build_muzzle(self, p, c):
        pad_y = -0.072
        pad_z = self._front_z(0.75 * p.muzzle_size, pad_y) + p.muzzle_length - 0.45 * p.muzzle_size
        self.pad_centre = _offset(c, 0.75 * p.muzzle_size, pad_y, pad_z)
        self.pad_radii = (p.muzzle_size, 0.8 * p.muzzle_size, 0.85 * p.muzzle_size)
        self.chin_centre = _offset(c, 0.0, pad_y - 0.045, pad_z - 0.02)
        self.chin_radii = (0.8 * p.muzzle_size, 0.5 * p.muzzle_size, 0.7 * p.muzzle_size)
        nose_y = pad_y + 0.6 * p.muzzle_size
        self.nose_centre = _offset(c, 0.0, nose_y, pad_z + 0.68 * p.muzzle_size)
        self.nose_radii = (p.nose_size, 0.7 * p.nose_size, 0.65 * p.nose_size)

    def _build_eye(self, p, c):
        x, y = p.eye_spacing, p.eye_height
        self.eye_centre = _offset(c, x, y, self._front_z(x, y) - 0.40 * p.eye_size)
        self.eye_radii = (1.15 * p.eye_size, 0.85 * p.eye_size, 0.6 * p.eye_size)
        # Columns = the eye's own axes: slanted (outer corner up) and turned a little outward.
        self.eye_rotation = _float32(ops.rotation_y(18.0) @ ops.rotation_z(p.eye_slant))
        self.socket_radius = 1.18 * p.eye_size

    def _build_ear(self, p, c):
        x = p.ear_position * p.head_width
        y = 0.80 * p.head_height * max(1.0 - (x / p.head_width) ** 2, 0.0) ** 0.5
        self.ear_base = _offset(c, x, y, -0.015)
        # World <- ear frame: lean back (about x), roll outward (about z), face a bit outward.
        rotation = ops.rotation_y(15.0) @ ops.rotation_z(-p.ear_spread) @ ops.rotation_x(-p.ear_lean)
        self.ear_rotation = _float32(rotation)
        self.ear_flatten = p.ear_width / EAR_THICKNESS
        self.ear_height = p.ear_height + 0.35 * p.ear_width  # the lower part is inside the head
        self.ear_width = p.ear_width
        self.cavity_offset = (0.0, 0.22 * self.ear_height, 0.75 * EAR_THICKNESS)
        axis = rotation[:, 1]
        self.ear_bound_centre = _offset(self.ear_base, *(0.5 * self.ear_height * axis))
        self.ear_bound_radius = 0.5 * self.ear_height + self.ear_width

    def _build_neck(self, p, c):
        """A cone from the chest up into the underside of the head, leaning forward."""
        self.neck_base = _offset(c, 0.0, -0.24, -0.08)
        self.neck_rotation = _float32(ops.rotation_x(15.0))
        self.neck_length = 0.25
        self.neck_radii = (1.25 * p.neck_width, 1.0 * p.neck_width)

    def _build_mouth(self, p):
        """The mouth line (a cat's inverted 'Y') as capsules lying on the muzzle surface."""
        nose_bottom = self.nose_centre[1] - self.nose_radii[1]
        junction = self.pad_centre[1] - 0.45 * p.muzzle_size
        corner = 0.85 * p.muzzle_size
        outline_xy = [(0.0, nose_bottom + 0.002), (0.0, junction),
                      (0.35 * corner, junction - 0.010), (0.7 * corner, junction - 0.008),
                      (corner, junction)]
        points = self._project_to_surface(np.array(outline_xy, np.float32))
        # (start, end) coordinates of each segment as (1, S) rows, ready for broadcasting.
        self.mouth_starts = tuple(points[None, :-1, axis] for axis in range(3))
        self.mouth_ends = tuple(points[None, 1:, axis] for axis in range(3))
        # A sphere around every point also holds the segments between them.
        centre = np.mean(points, axis=0)
        self.mouth_bound_centre = tuple(float(v) for v in centre)
        self.mouth_bound_radius = float(max(np.linalg.norm(np.subtract(points, centre), axis=1)))

    def _project_to_surface(self, xy: np.ndarray) -> np.ndarray:
        """Points (K, 3) of the mouth-less head surface seen from the front at xy (K, 2)."""
        near = np.full(len(xy), 0.6, np.float32)
        far = np.full(len(xy), self.cranium_centre[2], np.float32)
        for _ in range(32):  # bisection along -z: 0.5 / 2^32, far below a pixel
            middle = 0.5 * (near + far)
            outside = self._body_without_mouth((xy[:, 0], xy[:, 1], middle)) > 0.0
            near = np.where(outside, middle, near)
            far = np.where(outside, far, middle)
        return np.stack([xy[:, 0], xy[:, 1], far], axis=1)

    # ----- distances of folded points ------------------------------------------------------
    def _fur(self, q):
        cranium = ops.ellipsoid(q, self.cranium_centre, self.cranium_radii)
        cheek = ops.ellipsoid(q, self.cheek_centre, self.cheek_radii)
        return ops.smooth_min(cranium, cheek, 0.04)

    def _muzzle(self, q):
        pad = ops.ellipsoid(q, self.pad_centre, self.pad_radii)
        chin = ops.ellipsoid(q, self.chin_centre, self.chin_radii)
        return ops.smooth_min(pad, chin, 0.02)

    def _neck(self, q):
        local = ops.to_local(q, self.neck_base, self.neck_rotation)
        return ops.round_cone(local, self.neck_radii[0], self.neck_radii[1], self.neck_length)

    def _ear_and_cavity(self, q):
        """Solid ear (its front hollowed out) and the cavity volume (inner ear where <= 0)."""
        return ops.bounded(q, self.ear_bound_centre, self.ear_bound_radius,
                           self._exact_ear_and_cavity, BOUND_MARGIN, fields=2)

    def _exact_ear_and_cavity(self, q):
        x, y, z = ops.to_local(q, self.ear_base, self.ear_rotation)
        flat = (x, y, z * self.ear_flatten)
        outer = ops.round_cone(flat, self.ear_width, 0.006, self.ear_height)
        dx, dy, dz = self.cavity_offset
        cavity_flat = (x - dx, y - dy, (z - dz) * self.ear_flatten)
        cavity = ops.round_cone(cavity_flat, 0.72 * self.ear_width, 0.002, 0.72 * self.ear_height)
        # Dividing by the flatten factor keeps the bound conservative for sphere tracing.
        scale = 1.0 / self.ear_flatten
        outer, cavity = outer * scale, cavity * scale
        return ops.smooth_max(outer, -cavity, 0.004), cavity

    def _eye(self, q):
        return ops.bounded(q, self.eye_centre, max(self.eye_radii), self._exact_eye, BOUND_MARGIN)

    def _exact_eye(self, q):
        local = ops.to_local(q, self.eye_centre, self.eye_rotation)
        return ops.ellipsoid(local, (0.0, 0.0, 0.0), self.eye_radii)

    def _socket(self, q):
        return ops.sphere(q, self.eye_centre, self.socket_radius)

    def _nose(self, q):
        return ops.ellipsoid(q, self.nose_centre, self.nose_radii)

    def _mouth_line(self, q):
        return ops.bounded(q, self.mouth_bound_centre, self.mouth_bound_radius,
                           self._exact_mouth_line, BOUND_MARGIN)

    def _exact_mouth_line(self, q):
        """Distance to the nearest mouth segment, all segments at once by broadcasting."""
        starts, ends = self.mouth_starts, self.mouth_ends
        column = tuple(axis[:, None] for axis in q)
        return ops.capsule(column, starts, ends, 0.0).min(axis=1)

    def _body_without_mouth(self, p):
        q = fold(p)
        body = ops.smooth_min(self._fur(q), self._muzzle(q), 0.025)
        return ops.smooth_min(body, self._nose(q), 0.006)

    def part_distances(self, q):
        """Folded points -> ((N, 6) distances of the carved parts FUR..NOSE, cavity, mouth line)."""
        socket = self._socket(q)
        mouth_line = self._mouth_line(q)
        fur = ops.smooth_max(self._fur(q), -socket, 0.012)
        muzzle = ops.smooth_max(self._muzzle(q), -(mouth_line - MOUTH_GROOVE_DEPTH), 0.003)
        ear, cavity = self._ear_and_cavity(q)
        parts = np.stack([fur, muzzle, self._neck(q), ear, self._eye(q), self._nose(q)], axis=1)
        return parts, cavity, mouth_line

    def sdf_folded(self, q):
        """Signed distance of the whole head at folded points (the tracer's inner loop)."""
        face = ops.smooth_min(self._fur(q), self._muzzle(q), 0.025)
        face = ops.smooth_min(face, self._neck(q), NECK_BLEND)
        face = ops.smooth_min(face, self._ear_and_cavity(q)[0], 0.02)
        face = ops.smooth_max(face, -self._socket(q), 0.012)
        face = ops.smooth_max(face, MOUTH_GROOVE_DEPTH - self._mouth_line(q), 0.003)
        face = np.minimum(face, self._eye(q))
        return ops.smooth_min(face, self._nose(q), 0.006)

    # ----- public, on unfolded world points -----------------------------------------------
    def sdf(self, p):
        return self.sdf_folded(fold(p))

    def labels_on_surface(self, p):
        """Part id (N,) uint8 of points on or near the surface: nearest carved part, refined."""
        parts, cavity, mouth_line = self.part_distances(fold(p))
        nearest = np.argmin(parts, axis=1)
        left = p[0] >= 0.0
        ids = np.full(nearest.shape, LABEL_IDS["head"], np.uint8)
        ids[nearest == MUZZLE] = LABEL_IDS["muzzle"]
        ids[nearest == NECK] = LABEL_IDS["neck"]
        ids[nearest == NOSE] = LABEL_IDS["nose"]
        _assign_sided(ids, nearest == EYE, left, "eye")
        is_ear = nearest == EAR
        inner = is_ear & (cavity <= INNER_EAR_MARGIN)
        _assign_sided(ids, is_ear & ~inner, left, "ear")
        _assign_sided(ids, inner, left, "inner_ear")
        painted_mouth = ((nearest == MUZZLE) | (nearest == FUR)) & (mouth_line <= MOUTH_RADIUS)
        ids[painted_mouth] = LABEL_IDS["mouth"]
        return ids

    def label_at_points(self, p, far=FAR_FROM_SURFACE):
        """Label ids of arbitrary points: the part whose carved distance is smallest (the part
        containing an inside point, the nearest part's surface for an outside one), and
        background for points more than ``far`` outside the head."""
        ids = self.labels_on_surface(p)
        ids[self.sdf(p) > far] = LABEL_IDS["background"]
        return ids


def fold(p):
    """Mirror the head's right half onto its left (x -> |x|)."""
    return (np.abs(p[0]), p[1], p[2])


def as_components(xyz) -> tuple:
    """(N, 3) array-like (numpy or torch) -> (x, y, z) contiguous float32 arrays."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    return tuple(np.ascontiguousarray(xyz[:, axis]) for axis in range(3))


def _assign_sided(ids, mask, left, part):
    ids[mask & left] = LABEL_IDS["left_" + part]
    ids[mask & ~left] = LABEL_IDS["right_" + part]


def _offset(centre, dx, dy, dz):
    return (float(centre[0] + dx), float(centre[1] + dy), float(centre[2] + dz))


def _float32(matrix) -> np.ndarray:
    # float32 entries keep every product with the float32 point arrays in float32.
    return np.asarray(matrix, np.float32)
