"""Cameras in EG3D's convention.

A camera is described to the generator by a 25-float *label*: the OpenCV cam2world matrix
(x right, y down, z forward; 16 floats, row-major) followed by the 3x3 intrinsics normalised by
the image size (9 floats). The world has y up.

Interactive views are parameterised like EG3D's scripts: yaw and pitch offsets (degrees) from
the frontal pose of a camera that stays at ``radius`` from the *world origin* and looks at a
``pivot``. Two of EG3D's conventions are easy to get wrong and are reproduced on purpose:

* the camera position does not depend on the pivot; only the viewing direction does
  (``LookAtPoseSampler`` places the camera on the sphere around the origin, then aims it);
* "pitch" is not an elevation angle: the polar angle is mapped through ``arccos(1 - 2 v / pi)``,
  so the camera height is linear in pitch, ``y = -radius * pitch / 90deg``. Positive pitch moves
  the camera *down* (it looks up at the subject); positive yaw moves it towards +x.

The intrinsics reproduce ``FOV_to_intrinsics``, which uses 3.14159 and 1.414 instead of pi and
sqrt(2); the 18.837 degree default gives a focal length of 4.26339 (image widths). FFHQ's
dataset labels carry 4.2647 instead; EG3D's scripts use the former for rendering.

Pure torch/numpy: used by the generator, the procedural renderer and the GUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_FOV_DEG = 18.837

# EG3D's FOV_to_intrinsics approximates pi and sqrt(2) by these literals; matching them keeps
# the focal length (and hence every rendered pixel) identical to the official scripts.
_EG3D_PI = 3.14159
_EG3D_SQRT2 = 1.414

# LookAtPoseSampler clamps the polar angle away from the poles, where the look-at frame is
# undefined (forward parallel to world up).
_POLAR_EPS = 1e-5

_WORLD_UP = np.array([0.0, 1.0, 0.0])

# Tolerances for recognising a label as a look-at pose. Labels are float32, so round trips are
# exact to ~1e-6; the bounds leave room for that while rejecting genuinely different poses.
_RIGID_TOL = 1e-4
_LOOK_AT_TOL_RAD = 1e-3
_RECONSTRUCT_TOL = 1e-4
_INTRINSICS_TOL = 1e-5


# --------------------------------------------------------------------------------------------
# intrinsics


def fov_to_intrinsics(fov_deg: float) -> torch.Tensor:
    """Normalised 3x3 intrinsics (principal point at the image centre) for a field of view."""
    focal = _focal_from_fov(fov_deg)
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _focal_from_fov(fov_deg: float) -> float:
    return float(1.0 / (math.tan(fov_deg * _EG3D_PI / 360.0) * _EG3D_SQRT2))


def _fov_from_focal(focal: float) -> float:
    return math.atan(1.0 / (focal * _EG3D_SQRT2)) * 360.0 / _EG3D_PI


# --------------------------------------------------------------------------------------------
# poses


def _camera_position(yaw_deg: float, pitch_deg: float, radius: float) -> np.ndarray:
    """World position of a camera at yaw/pitch offsets from frontal, on EG3D's sphere."""
    azimuth = math.pi / 2 + math.radians(yaw_deg)
    polar = min(max(math.pi / 2 + math.radians(pitch_deg), _POLAR_EPS), math.pi - _POLAR_EPS)
    # EG3D samples the polar angle "uniformly on the sphere": the angle it is given is only a
    # parameter, and cos(phi) is linear in it.
    phi = math.acos(1.0 - 2.0 * polar / math.pi)
    return radius * np.array(
        [
            math.sin(phi) * math.cos(math.pi - azimuth),
            math.cos(phi),
            math.sin(phi) * math.sin(math.pi - azimuth),
        ]
    )


def _look_at_rotation(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Columns (right, down, forward) of an OpenCV camera at `position` aiming at `target`."""
    forward = _unit(target - position)
    # No roll: the right vector is horizontal; with y up and z forward this cross product keeps
    # x pointing to the image right and leaves the camera's y pointing down.
    right = _unit(np.cross(forward, _WORLD_UP))
    down = _unit(np.cross(forward, right))
    return np.stack([right, down, forward], axis=1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def look_at_cam2world(yaw_deg: float, pitch_deg: float, radius: float, pivot) -> torch.Tensor:
    """4x4 float32 OpenCV cam2world of EG3D's ``LookAtPoseSampler`` for yaw/pitch offsets.

    Equivalent to ``LookAtPoseSampler.sample(pi/2 + yaw, pi/2 + pitch, pivot, radius=radius)``.
    The camera sits at distance `radius` from the world origin (not from the pivot) and looks
    at `pivot`; yaw=pitch=0 puts it at (0, 0, radius).
    """
    position = _camera_position(float(yaw_deg), float(pitch_deg), float(radius))
    target = np.asarray(pivot, dtype=np.float64).reshape(3)
    pose = np.eye(4)
    pose[:3, :3] = _look_at_rotation(position, target)
    pose[:3, 3] = position
    return torch.from_numpy(pose).float()


# --------------------------------------------------------------------------------------------
# 25-float labels


def camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Labels (N, 25) from cam2world (N,4,4) or (4,4) and intrinsics (N,3,3) or (3,3).

    A single intrinsics matrix is shared by all poses. The result is always batched.
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float32).reshape(-1, 4, 4)
    intrinsics = torch.as_tensor(intrinsics, dtype=torch.float32, device=cam2world.device).reshape(-1, 3, 3)
    if intrinsics.shape[0] == 1 and cam2world.shape[0] > 1:
        intrinsics = intrinsics.expand(cam2world.shape[0], 3, 3)
    if intrinsics.shape[0] != cam2world.shape[0]:
        raise ValueError(f"{cam2world.shape[0]} poses but {intrinsics.shape[0]} intrinsics")
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], dim=1)


def split_label(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cam2world (N,4,4), intrinsics (N,3,3)) from labels (N,25) or a single (25,) label."""
    label = torch.as_tensor(label)
    if label.shape[-1] != 25:
        raise ValueError(f"a camera label has 25 values, got shape {tuple(label.shape)}")
    label = label.reshape(-1, 25)
    return label[:, :16].reshape(-1, 4, 4), label[:, 16:].reshape(-1, 3, 3)


# --------------------------------------------------------------------------------------------
# rays


def ray_bundle(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre, as EG3D's RaySampler.

    Returns origins and unit directions, each (N, R*R, 3), pixels in row-major order (the index
    is row * R + column, row 0 at the top). Intrinsics are normalised: pixel (row, col) sits at
    u = (col + 0.5) / R, v = (row + 0.5) / R. Skew is honoured like EG3D does.
    """
    cam2world = cam2world.reshape(-1, 4, 4)
    intrinsics = intrinsics.reshape(-1, 3, 3)
    n, device = cam2world.shape[0], cam2world.device
    if intrinsics.shape[0] == 1 and n > 1:
        intrinsics = intrinsics.expand(n, 3, 3)
    # The arithmetic below keeps EG3D's order of operations so that rays agree bit for bit.
    u, v = _pixel_centres(resolution, device)
    u, v = u.expand(n, -1), v.expand(n, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]
    depth = torch.ones_like(u)
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx * depth
    y_cam = (v - cy) / fy * depth
    points_cam = torch.stack([x_cam, y_cam, depth, torch.ones_like(depth)], dim=-1)
    points_world = torch.bmm(cam2world, points_cam.transpose(1, 2)).transpose(1, 2)[:, :, :3]
    position = cam2world[:, :3, 3]
    directions = torch.nn.functional.normalize(points_world - position[:, None, :], dim=2)
    origins = position[:, None, :].expand_as(directions).contiguous()
    return origins, directions


def project_to_pixels(camera_label, points: torch.Tensor, resolution: int):
    """Where world points (M, 3) land in a resolution² view: (row, column, z), row and column the
    pixel (long, floor; they may lie outside 0…R−1), z the depth along the optical axis (≤ 0:
    behind the camera; check it before trusting row and column). The inverse of `ray_bundle`
    (skew honoured), computed in the points' dtype."""
    points = torch.as_tensor(points)
    cam2world, intrinsics = (m[0].detach().to(points) for m in split_label(camera_label))
    in_camera = (points - cam2world[:3, 3]) @ cam2world[:3, :3]  # x right, y down, z forward
    z = in_camera[:, 2]
    u = intrinsics[0, 0] * in_camera[:, 0] / z + intrinsics[0, 2] + intrinsics[0, 1] * in_camera[:, 1] / z
    v = intrinsics[1, 1] * in_camera[:, 1] / z + intrinsics[1, 2]
    finite = torch.isfinite(u) & torch.isfinite(v)
    row = torch.where(finite, torch.floor(v * resolution), torch.full_like(v, -1)).long()
    column = torch.where(finite, torch.floor(u * resolution), torch.full_like(u, -1)).long()
    return row, column, z


def _pixel_centres(resolution: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (u, v) of every pixel centre, each (1, R*R), row-major."""
    index = torch.arange(resolution, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(index, index, indexing="ij")
    scale, offset = 1.0 / resolution, 0.5 / resolution
    u = cols * scale + offset
    v = rows * scale + offset
    return u.reshape(1, -1), v.reshape(1, -1)


# --------------------------------------------------------------------------------------------
# the Camera value object


@dataclass(frozen=True)
class Camera:
    """A look-at camera as the studio's views and files describe it (angles in degrees).

    `radius` is the distance from the world origin (EG3D's convention), not from `pivot`.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    radius: float = 2.7
    fov: float = DEFAULT_FOV_DEG
    pivot: tuple = (0.0, 0.0, 0.2)

    def cam2world(self) -> torch.Tensor:
        return look_at_cam2world(self.yaw, self.pitch, self.radius, self.pivot)

    def intrinsics(self) -> torch.Tensor:
        return fov_to_intrinsics(self.fov)

    def label(self) -> torch.Tensor:
        """The 25-float EG3D label, shape (25,)."""
        return camera_label(self.cam2world(), self.intrinsics())[0]

    @classmethod
    def from_label(cls, label, pivot=(0.0, 0.0, 0.2)) -> "Camera":
        """Recover yaw, pitch, radius and fov from a label produced for a look-at pose.

        Yaw comes back in (-180, 180]. Raises ValueError when the label is not such a pose around `pivot`: a non-rigid matrix,
        a camera not aiming at the pivot, a rolled camera, or intrinsics that are not square
        pixels with a centred principal point.
        """
        label = torch.as_tensor(label).detach().to("cpu", torch.float64)
        if label.numel() != 25:
            raise ValueError(f"expected one 25-float camera label, got shape {tuple(label.shape)}")
        if not torch.isfinite(label).all():
            raise ValueError("camera label contains NaN or infinite values")
        cam2world, intrinsics = (m[0].numpy() for m in split_label(label.reshape(25)))
        pivot = tuple(float(p) for p in pivot)
        fov = _fov_from_checked_intrinsics(intrinsics)
        yaw, pitch, radius = _look_at_angles_from_checked_pose(cam2world, np.array(pivot))
        camera = cls(yaw=yaw, pitch=pitch, radius=radius, fov=fov, pivot=pivot)
        rebuilt = camera.cam2world().double().numpy()
        error = np.abs(rebuilt - cam2world).max()
        if error > _RECONSTRUCT_TOL * max(1.0, radius):
            raise ValueError(
                "camera label is not a look-at pose without roll around pivot "
                f"{pivot} (closest look-at pose differs by {error:.2e})"
            )
        return camera


def _fov_from_checked_intrinsics(k: np.ndarray) -> float:
    fx, fy = k[0, 0], k[1, 1]
    if fx <= 0 or abs(fx - fy) > _INTRINSICS_TOL * fx:
        raise ValueError(f"intrinsics are not square pixels (fx={fx:.6g}, fy={fy:.6g})")
    if abs(k[0, 2] - 0.5) > _INTRINSICS_TOL or abs(k[1, 2] - 0.5) > _INTRINSICS_TOL:
        raise ValueError(f"principal point ({k[0, 2]:.6g}, {k[1, 2]:.6g}) is not the image centre (0.5, 0.5)")
    off_diagonal = np.abs([k[0, 1], k[1, 0], k[2, 0], k[2, 1], k[2, 2] - 1.0]).max()
    if off_diagonal > _INTRINSICS_TOL:
        raise ValueError("intrinsics have skew or a last row other than (0, 0, 1)")
    return _fov_from_focal(float(fx))


def _look_at_angles_from_checked_pose(pose: np.ndarray, pivot: np.ndarray) -> tuple[float, float, float]:
    if np.abs(pose[3] - [0.0, 0.0, 0.0, 1.0]).max() > _RIGID_TOL:
        raise ValueError(f"cam2world last row is {pose[3].tolist()}, not [0, 0, 0, 1]")
    rotation, position = pose[:3, :3], pose[:3, 3]
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > _RIGID_TOL or np.linalg.det(rotation) < 0:
        raise ValueError("cam2world is not a rigid transform (rotation part is not orthonormal with det +1)")
    radius = float(np.linalg.norm(position))
    if radius < 1e-6:
        raise ValueError("camera sits at the world origin; yaw/pitch are undefined")
    to_pivot = pivot - position
    if np.linalg.norm(to_pivot) < 1e-6:
        raise ValueError("camera sits on the pivot; it cannot look at it")
    cos_angle = float(np.clip(np.dot(_unit(to_pivot), rotation[:, 2]), -1.0, 1.0))
    if math.acos(cos_angle) > _LOOK_AT_TOL_RAD:
        raise ValueError(
            f"camera does not look at the pivot {tuple(pivot.tolist())} "
            f"(its optical axis is off by {math.degrees(math.acos(cos_angle)):.3f} degrees)"
        )
    # Inverse of _camera_position: height is linear in pitch, yaw is the azimuth from +z to +x.
    pitch = -90.0 * float(np.clip(position[1] / radius, -1.0, 1.0))
    yaw = math.degrees(math.atan2(position[0], position[2]))
    return yaw, pitch, radius
