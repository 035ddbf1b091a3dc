"""Labelled point clouds (DatasetNeRF §3.3): depth back-projected with the camera, fused over views.

    cloud = fuse_identity_views(backbone, branch, identity, [Camera(yaw=y) for y in (-40, 0, 40)])
    write_ply("head.ply", cloud)      # binary little-endian: x y z float, red green blue label uchar
    cloud = read_ply("head.ply")

Each foreground pixel (opacity >= alpha_threshold) of each view becomes one point at
origin + depth · direction, where depth is the renderer's expected ray depth: EG3D composites
the sample depths along the *unit* ray direction (its RaySampler normalises the directions), so
the depth is a distance from the camera centre, not a z value, and `core.camera.ray_bundle`
gives exactly those rays. The point carries the pixel's RGB and a label from the semantic branch:

* point_labels="field" (default): the branch's 3D semantic field at the point itself (its decoder,
  the part the density prior puts on the backbone's surfaces). A surface point seen by several
  views gets one label whichever view it came from, and no label edge of the 2D super-resolution
  (which follows the image, not the surface) is carried onto the surface. On the shipped default
  it labels 0.907 of the points right against 0.881 for the pixels' labels (docs/factory.md).
* point_labels="pixels": the label of the pixel it was back-projected from (the paper's §3.3:
  back-projected semantic masks, merged over the views).

Optional voxel down-sampling keeps one point per occupied voxel: the mean position and colour of
its points and their majority label (ties go to the smaller id, so results are deterministic).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.camera import Camera, ray_bundle, split_label
from core.factory.views import ALPHA_THRESHOLD, IdentityViews, render_identity_views
from core.fileio import atomic_write_bytes


@dataclass
class PointCloud:
    points: np.ndarray  # (N, 3) float32 world coordinates
    colors: np.ndarray  # (N, 3) uint8 RGB
    labels: np.ndarray  # (N,) uint8 class ids

    def __post_init__(self):
        self.points = np.asarray(self.points, np.float32).reshape(-1, 3)
        self.colors = np.asarray(self.colors, np.uint8).reshape(-1, 3)
        self.labels = np.asarray(self.labels, np.uint8).reshape(-1)
        if not len(self.points) == len(self.colors) == len(self.labels):
            raise ValueError(f"a point cloud needs as many colours and labels as points, got "
                             f"{len(self.points)}, {len(self.colors)} and {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def concatenate(cls, clouds) -> "PointCloud":
        clouds = list(clouds)
        if not clouds:
            return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
        return cls(*(np.concatenate([getattr(c, name) for c in clouds]) for name in ("points", "colors", "labels")))


# ---------------------------------------------------------------------------- geometry
def backproject(depth, camera_label, valid_mask) -> np.ndarray:
    """World points (N, 3) float32 of the valid pixels (row-major order) of a square depth map.

    `depth` (H, W) is the expected ray depth (distance along the unit ray), `camera_label` the
    25-float EG3D label, `valid_mask` (H, W) bool.
    """
    depth = np.asarray(depth, np.float32)
    valid_mask = np.asarray(valid_mask, bool)
    if depth.ndim != 2 or depth.shape[0] != depth.shape[1] or valid_mask.shape != depth.shape:
        raise ValueError(f"backproject needs a square (H, H) depth map and a mask of the same shape, "
                         f"got {depth.shape} and {valid_mask.shape}")
    cam2world, intrinsics = split_label(torch.as_tensor(np.asarray(camera_label, np.float32)).reshape(25))
    origins, directions = ray_bundle(cam2world, intrinsics, depth.shape[0])
    origins, directions = origins[0].numpy(), directions[0].numpy()
    valid = valid_mask.reshape(-1)
    points = origins[valid] + depth.reshape(-1)[valid, None] * directions[valid]
    return points.astype(np.float32)


POINT_LABELS = ("field", "pixels")


def fuse_views(views: IdentityViews, alpha_threshold: float = ALPHA_THRESHOLD,
               voxel_size: float | None = None, point_labels: str = "field") -> PointCloud:
    """One identity's cloud from its rendered views (already at the label resolution); the module
    docstring says what `point_labels` chooses."""
    if point_labels not in POINT_LABELS:
        raise ValueError(f"point_labels must be one of {', '.join(POINT_LABELS)}, got {point_labels!r}")
    if point_labels == "field" and views.label_points is None:
        raise ValueError("point_labels='field' needs views rendered with a semantic branch (IdentityViews.label_points)")
    clouds = []
    for index in range(len(views)):
        valid = (views.alpha[index] >= alpha_threshold) & np.isfinite(views.depth[index])
        clouds.append(PointCloud(backproject(views.depth[index], views.camera_labels[index], valid),
                                 views.rgb[index][valid], views.labels[index][valid]))
    cloud = PointCloud.concatenate(clouds)
    if point_labels == "field" and len(cloud):
        cloud.labels = views.label_points(cloud.points)
    return voxel_downsample(cloud, voxel_size) if voxel_size else cloud


def fuse_identity_views(backbone, branch, identity, cameras, resolution: int = 128, voxel_size: float | None = None,
                        alpha_threshold: float = ALPHA_THRESHOLD, point_labels: str = "field") -> PointCloud:
    """Render `cameras` (Camera objects or (V, 25) labels) of one identity and fuse them.

    `backbone` is a core.backbone.Backbone or a TriPlaneGenerator; `identity` an Identity of
    batch 1 or, with a Backbone, a seed. Labels come from `branch` at `resolution`; the
    backbone's expected-depth maps are upsampled to that resolution (views.py says how).
    """
    generator = getattr(backbone, "generator", backbone)
    if isinstance(identity, (int, np.integer)):
        if not hasattr(backbone, "identity_from_seed"):
            raise TypeError("a seed as identity needs a core.backbone.Backbone, not a bare generator")
        identity = backbone.identity_from_seed(int(identity))
    views = render_identity_views(generator, branch, identity, camera_labels_of(cameras), resolution)
    return fuse_views(views, alpha_threshold, voxel_size, point_labels)


def camera_labels_of(cameras) -> np.ndarray:
    """(V, 25) float32 labels from a list of Camera objects or labels."""
    if isinstance(cameras, (list, tuple)) and cameras and isinstance(cameras[0], Camera):
        return np.stack([camera.label().numpy() for camera in cameras]).astype(np.float32)
    if torch.is_tensor(cameras):
        cameras = cameras.detach().cpu().numpy()
    return np.asarray(cameras, np.float32).reshape(-1, 25)


def voxel_downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """One point per occupied voxel: mean position and colour, majority label (ties: smaller id)."""
    if voxel_size <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel_size}")
    if len(cloud) == 0:
        return cloud
    keys = np.floor(cloud.points / voxel_size).astype(np.int64)
    _, voxel, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    voxel = voxel.reshape(-1)
    count = len(counts)
    points = np.zeros((count, 3), np.float64)
    colors = np.zeros((count, 3), np.float64)
    np.add.at(points, voxel, cloud.points)
    np.add.at(colors, voxel, cloud.colors)
    points /= counts[:, None]
    colors = np.round(colors / counts[:, None])
    return PointCloud(points, colors, _majority_labels(voxel, cloud.labels, count))


def _majority_labels(voxel: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    pairs, votes = np.unique(voxel * 256 + labels.astype(np.int64), return_counts=True)
    pair_voxel, pair_label = pairs // 256, pairs % 256
    order = np.lexsort((pair_label, -votes, pair_voxel))  # per voxel: most votes first, then smaller id
    first = np.ones(len(order), bool)
    first[1:] = pair_voxel[order][1:] != pair_voxel[order][:-1]
    majority = np.zeros(count, np.uint8)
    majority[pair_voxel[order][first]] = pair_label[order][first]
    return majority


# ---------------------------------------------------------------------------- PLY files
_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                    ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "u1")])
_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
              "uchar": "u1", "uint8": "u1", "char": "i1", "int8": "i1",
              "ushort": "<u2", "uint16": "<u2", "short": "<i2", "int16": "<i2",
              "uint": "<u4", "uint32": "<u4", "int": "<i4", "int32": "<i4"}


def ply_bytes(cloud: PointCloud, comments: tuple[str, ...] = ()) -> bytes:
    """The binary little-endian PLY file of a cloud, as bytes."""
    vertices = np.empty(len(cloud), _VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = cloud.points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = cloud.colors[:, channel]
    vertices["label"] = cloud.labels
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {comment}" for comment in comments]
    lines += [f"element vertex {len(cloud)}"]
    lines += [f"property {'float' if name in 'xyz' else 'uchar'} {name}" for name in _VERTEX.names]
    lines += ["end_header"]
    return ("\n".join(lines) + "\n").encode("ascii") + vertices.tobytes()


def write_ply(path, cloud: PointCloud, comments: tuple[str, ...] = ()) -> None:
    """Write a cloud as binary little-endian PLY (x, y, z float; red, green, blue, label uchar), atomically."""
    atomic_write_bytes(path, ply_bytes(cloud, comments))


def read_ply(path) -> PointCloud:
    """Read a binary little-endian PLY with a vertex element holding x, y, z, red, green, blue, label.

    Other scalar vertex properties are skipped. Raises ValueError naming the file otherwise.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the point cloud ({error})") from error
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic line or no end_header)")
    dtype, count = _vertex_layout(path, data[:end].decode("ascii", errors="replace").splitlines())
    body = data[end + len(b"end_header\n"):]
    if len(body) < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated: {count} vertices need {count * dtype.itemsize} bytes, "
                         f"found {len(body)}")
    vertices = np.frombuffer(body, dtype, count)
    missing = [name for name in _VERTEX.names if name not in dtype.names]
    if missing:
        raise ValueError(f"{path}: the vertices lack {', '.join(missing)}")
    points = np.stack([vertices[name] for name in "xyz"], 1)
    colors = np.stack([vertices[name] for name in ("red", "green", "blue")], 1)
    return PointCloud(points, colors, vertices["label"])


def _vertex_layout(path: Path, header: list[str]) -> tuple[np.dtype, int]:
    if len(header) < 2 or header[1].split() != ["format", "binary_little_endian", "1.0"]:
        raise ValueError(f"{path}: only binary_little_endian 1.0 PLY files are read, found "
                         f"{header[1] if len(header) > 1 else 'no format line'!r}")
    fields, count, element = [], None, None
    for line in header[2:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "element":
            if count is not None and element == "vertex":
                break  # the vertices come first in the body; later elements are not read
            element, count = words[1], int(words[2])
            if element != "vertex":
                raise ValueError(f"{path}: expected the vertex element first, found {element!r}")
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise ValueError(f"{path}: unsupported vertex property {' '.join(words[1:])!r}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    if count is None:
        raise ValueError(f"{path}: no vertex element")
    return np.dtype(fields), count
