"""Signed-distance primitives and blends, component-wise in numpy.

Points are passed as three float32 arrays (x, y, z) rather than one (N, 3) array: every
operation is then a plain element-wise ufunc, with no BLAS call and no threading, which keeps
the sphere tracer's many small evaluations cheap and predictable on a busy 2-core machine
(torch's per-op overhead and intra-op threads made the same code 3-10x slower there).

Formulas after Inigo Quilez's distance-function notes.  Some are bounds rather than exact
distances (ellipsoid, flattened shapes); they never overestimate by much near the surface, which
is all sphere tracing needs as long as the tracer under-relaxes its steps a little.
"""
from __future__ import annotations

import numpy as np


def length(x, y, z):
    return np.sqrt(x * x + y * y + z * z)


def sphere(p, centre, radius):
    return length(p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]) - radius


def ellipsoid(p, centre, radii):
    """Approximate distance to an axis-aligned ellipsoid (exact on the surface, good near it)."""
    u = (p[0] - centre[0]) * (1.0 / radii[0])
    v = (p[1] - centre[1]) * (1.0 / radii[1])
    w = (p[2] - centre[2]) * (1.0 / radii[2])
    k0 = length(u, v, w)
    k1 = length(u * (1.0 / radii[0]), v * (1.0 / radii[1]), w * (1.0 / radii[2]))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-8)


def to_local(p, origin, rotation):
    """Coordinates of p in a frame whose axes are the columns of ``rotation`` (3, 3)."""
    d = (p[0] - origin[0], p[1] - origin[1], p[2] - origin[2])
    return tuple(d[0] * rotation[0, j] + d[1] * rotation[1, j] + d[2] * rotation[2, j]
                 for j in range(3))


def capsule(p, a, b, radius):
    """Distance to the segment a-b, minus a radius."""
    ba = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    pa = (p[0] - a[0], p[1] - a[1], p[2] - a[2])
    h = (pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) * (1.0 / (ba[0] ** 2 + ba[1] ** 2 + ba[2] ** 2))
    h = np.clip(h, 0.0, 1.0)
    return length(pa[0] - h * ba[0], pa[1] - h * ba[1], pa[2] - h * ba[2]) - radius


def round_cone(q, r_base, r_tip, height):
    """Round cone along +y in its own frame: base sphere r_base at 0, tip sphere r_tip at height."""
    b = (r_base - r_tip) / height
    a = (1.0 - b * b) ** 0.5
    radial = np.sqrt(q[0] * q[0] + q[2] * q[2])
    k = a * q[1] - b * radial
    to_base = np.sqrt(radial * radial + q[1] * q[1]) - r_base
    above = q[1] - height
    to_tip = np.sqrt(radial * radial + above * above) - r_tip
    to_side = a * radial + b * q[1] - r_base
    return np.where(k < 0.0, to_base, np.where(k > a * height, to_tip, to_side))


def bounded(p, centre, radius, evaluate, margin, fields=1):
    """Evaluate an expensive part only near its bounding sphere.

    Elsewhere the distance to the bounding sphere stands in: it never exceeds the distance to the
    part, so sphere tracing stays safe, and beyond ``margin`` (larger than every blend width the
    part takes part in) it cannot change the head's surface or the nearest-part label.
    ``evaluate`` returns one distance array, or a tuple of ``fields`` arrays (several fields that
    live inside the same sphere).
    """
    distance = sphere(p, centre, radius)
    near = np.flatnonzero(distance < margin)
    if near.size == distance.size:
        return evaluate(p)
    exact = evaluate(tuple(axis[near] for axis in p)) if near.size else None
    if fields == 1:
        if exact is not None:
            distance[near] = exact
        return distance
    outputs = tuple(distance.copy() for _ in range(fields))
    if exact is not None:
        for output, values in zip(outputs, exact):
            output[near] = values
    return outputs


def smooth_min(a, b, k):
    """Polynomial smooth union: blends the two surfaces over a band of width ~k."""
    h = np.clip(0.5 + (0.5 / k) * (b - a), 0.0, 1.0)
    return b + h * (a - b) - k * h * (1.0 - h)


def smooth_max(a, b, k):
    """Smooth intersection; smooth_max(a, -b, k) carves b out of a with a rounded rim."""
    return -smooth_min(-a, -b, k)


def smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
