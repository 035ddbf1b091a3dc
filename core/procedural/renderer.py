"""Sphere-tracing renderer of procedural heads from EG3D cameras.

Rays come from ``core.camera.ray_bundle`` so that every pixel is the same ray the generator
marches.  Buffers (all HxW, row 0 at the top):

* rgb     float32 HxWx3 in [0, 1], shaded albedo composited on BACKGROUND_RGB;
* labels  uint8, part ids of category.LABELS, 0 = background (hard, one id per pixel);
* depth   float32, distance t ALONG THE RAY from the camera origin to the surface (rays have unit
          directions, so the surface point is origin + depth * direction); this is what EG3D's
          renderer reports as depth (the weight-averaged sample t along normalised rays).
          Background pixels are +inf;
* normals float32 HxWx3, unit world-space outward normals, 0 on background;
* alpha   float32, 1 on the head, 0 on background (no antialiasing, so alpha > 0 <=> label > 0).

Shading is Lambert + ambient with lights fixed in the head's frame, times ambient occlusion from
the distance field.  None of these depends on the viewing direction, so a surface point has the same colour in every view: a tri-plane generator,
whose colour is a function of position only, can reproduce the renders exactly.  Shading is kept
(rather than unlit albedo) because it makes the shape readable and gives the fitted generator
geometry cues.
"""
from __future__ import annotations

import numpy as np
import torch

from ..camera import ray_bundle, split_label
from .category import BACKGROUND_RGB, LABEL_IDS
from .head import HeadShape, as_components
from .params import HeadParams
from .texture import HeadTexture

# Every head of the family fits in this sphere (checked by the tests); rays that miss it are
# background without evaluating the distance field at all.
BOUND_CENTRE = (0.0, -0.07, 0.10)
BOUND_RADIUS = 0.39

MAX_STEPS = 64
HIT_EPSILON = 4e-4          # a ray has hit when the distance falls below this
STEP_RELAXATION = 0.95      # under-relax: some primitives are bounds, not exact distances
NORMAL_STEP = 5e-4          # finite-difference step of the normals
AO_HEIGHTS = (0.01, 0.025, 0.05)   # distances along the normal probed for occlusion
AO_STRENGTH = 0.6

# Two lights fixed in the head's frame (unit-free directions towards the light) plus ambient.
KEY_LIGHT = (0.45, 0.55, 0.70)
FILL_LIGHT = (-0.6, 0.1, 0.4)
KEY_STRENGTH, FILL_STRENGTH, AMBIENT = 0.70, 0.20, 0.30


class ProceduralHead:
    """One identity ready to render: geometry and texture constants built once."""

    def __init__(self, params: HeadParams):
        self.params = params
        self.shape = HeadShape(params)
        self.texture = HeadTexture(self.shape)

    def render(self, label, resolution: int, background=BACKGROUND_RGB) -> dict:
        origins, directions = camera_rays(label, resolution)
        buffers = self._trace_and_shade(origins, directions, background)
        return {name: value.reshape(resolution, resolution, *value.shape[1:])
                for name, value in buffers.items()}

    def _trace_and_shade(self, origins, directions, background):
        hit_index, hit_t = sphere_trace(self.shape, origins, directions)
        points = tuple(origins[axis][hit_index] + hit_t * directions[axis][hit_index]
                       for axis in range(3))
        ids, normals, colour = self.shade(points)
        return assemble_buffers(len(origins[0]), hit_index, hit_t, ids, normals, colour, background)

    def shade(self, points):
        """Part ids (N,), unit normals (N, 3) and shaded colour (N, 3), unclipped, of surface
        points given as (x, y, z) arrays: what a ray that hits there shows."""
        ids = self.shape.labels_on_surface(points)
        normals = surface_normals(self.shape, points)
        shade = lighting(normals) * ambient_occlusion(self.shape, points, normals)
        return ids, normals, self.texture.albedo(points, ids) * shade[:, None]

    def sdf(self, xyz) -> np.ndarray:
        return self.shape.sdf(as_components(xyz))

    def label_at_points(self, xyz) -> np.ndarray:
        return self.shape.label_at_points(as_components(xyz))


def camera_rays(label, resolution: int):
    """Origins and unit directions of EG3D's rays for one label, as (x, y, z) float32 arrays."""
    label = torch.as_tensor(np.asarray(label, np.float32)) if not torch.is_tensor(label) else label
    cam2world, intrinsics = split_label(label.detach().to("cpu", torch.float32))
    if cam2world.shape[0] != 1:
        raise ValueError("render() takes one camera label")
    origins, directions = ray_bundle(cam2world, intrinsics, resolution)
    return as_components(origins[0].numpy()), as_components(directions[0].numpy())


def sphere_trace(shape: HeadShape, origins, directions):
    """Indices of the rays that hit the head, and their hit distances t along the ray.

    Rays start where they enter the bounding sphere and leave the working set as soon as they
    hit or pass its exit, so later steps evaluate the distance field on few points.
    """
    index, t, t_exit = bound_interval(origins, directions)
    o = [axis[index] for axis in origins]
    d = [axis[index] for axis in directions]
    hit_index, hit_t = [], []
    for _ in range(MAX_STEPS):
        if index.size == 0:
            break
        distance = shape.sdf((o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]))
        hit = distance < HIT_EPSILON
        hit_index.append(index[hit])
        hit_t.append(t[hit])
        t = t + STEP_RELAXATION * distance
        keep = ~hit & (t < t_exit)
        index, t, t_exit = index[keep], t[keep], t_exit[keep]
        o, d = [axis[keep] for axis in o], [axis[keep] for axis in d]
    return np.concatenate(hit_index), np.concatenate(hit_t).astype(np.float32)


def bound_interval(origins, directions):
    """Rays that meet the bounding sphere: (their indices, entry t, exit t)."""
    to_centre = [c - o for c, o in zip(BOUND_CENTRE, origins)]
    along = sum(tc * d for tc, d in zip(to_centre, directions))
    miss_squared = sum(tc * tc for tc in to_centre) - along * along
    half_chord_squared = BOUND_RADIUS ** 2 - miss_squared
    index = np.flatnonzero(half_chord_squared > 0.0)
    half_chord = np.sqrt(half_chord_squared[index])
    return index, along[index] - half_chord, along[index] + half_chord


def surface_normals(shape: HeadShape, points, step=NORMAL_STEP) -> np.ndarray:
    """(N, 3) unit gradients of the distance field, tetrahedral differences in one evaluation."""
    offsets = np.array([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], np.float32)
    samples = tuple(np.concatenate([points[axis] + step * offset[axis] for offset in offsets])
                    for axis in range(3))
    values = shape.sdf(samples).reshape(4, -1)
    gradient = values.T @ offsets
    return gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)


def ambient_occlusion(shape: HeadShape, points, normals) -> np.ndarray:
    """Darkening in creases (ear cavities, eye sockets, under the chin), from a few distance
    samples along the normal: how much nearer the surface is there than the open-space value."""
    heights = np.array(AO_HEIGHTS, np.float32)
    samples = tuple(np.concatenate([points[axis] + h * normals[:, axis] for h in heights])
                    for axis in range(3))
    distances = shape.sdf(samples).reshape(len(heights), -1)
    weights = (0.5 ** np.arange(len(heights), dtype=np.float32))[:, None]
    occlusion = (weights * np.maximum(heights[:, None] - distances, 0.0) / heights[:, None]).sum(0)
    return np.clip(1.0 - AO_STRENGTH * occlusion, 0.0, 1.0)


def lighting(normals: np.ndarray) -> np.ndarray:
    """Lambert from two lights fixed in the head frame plus ambient: view-independent."""
    key = np.array(KEY_LIGHT, np.float32) / np.linalg.norm(KEY_LIGHT)
    fill = np.array(FILL_LIGHT, np.float32) / np.linalg.norm(FILL_LIGHT)
    return (AMBIENT + KEY_STRENGTH * np.maximum(normals @ key, 0.0)
            + FILL_STRENGTH * np.maximum(normals @ fill, 0.0))


def assemble_buffers(count, hit_index, hit_t, ids, normals, colour, background) -> dict:
    rgb = np.tile(np.asarray(background, np.float32), (count, 1))
    rgb[hit_index] = np.clip(colour, 0.0, 1.0)
    labels = np.full(count, LABEL_IDS["background"], np.uint8)
    labels[hit_index] = ids
    depth = np.full(count, np.inf, np.float32)
    depth[hit_index] = hit_t
    normal_buffer = np.zeros((count, 3), np.float32)
    normal_buffer[hit_index] = normals
    alpha = np.zeros(count, np.float32)
    alpha[hit_index] = 1.0
    return dict(rgb=rgb, labels=labels, depth=depth, normals=normal_buffer, alpha=alpha)


def render(params: HeadParams, label, resolution: int, background=BACKGROUND_RGB) -> dict:
    """All buffers of one identity seen through one 25-float EG3D camera label."""
    return ProceduralHead(params).render(label, resolution, background)


def sdf(params: HeadParams, xyz) -> np.ndarray:
    """Signed distance (N,) float32 of world points (N, 3) to the head surface, < 0 inside."""
    return ProceduralHead(params).sdf(xyz)


def label_at_points(params: HeadParams, xyz) -> np.ndarray:
    """Part id (N,) uint8 of world points: nearest surface part, 0 beyond FAR_FROM_SURFACE."""
    return ProceduralHead(params).label_at_points(xyz)
