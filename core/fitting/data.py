"""Training data of the fit: random rays of random views of procedural identities, and 3D
points with the colour and occupancy the procedural category has there.

The procedural renderer traces exactly the rays the generator marches (both come from
``core.camera.ray_bundle``), so a random subset of a view's pixels is rendered on the fly at a
fraction of a full view's cost.  Only rgb, alpha and depth leave this module for rays, and only
shaded colour (at surface points) and occupancy (from the signed distance) for 3D points: the
part labels the procedural category also knows are dropped here, so the fit can never see them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.camera import Camera, ray_bundle, split_label
from core.procedural import RENDERING, SEED_RANGES, HeadParams, ProceduralHead, latent_for_seed
from core.procedural.category import BACKGROUND_RGB, PITCH_RANGE, YAW_RANGE
from core.procedural.renderer import BOUND_CENTRE, BOUND_RADIUS, bound_interval, surface_normals

# What the fit may read from a procedural render; labels and normals are deliberately absent.
SUPERVISED_BUFFERS = ("rgb", "alpha", "depth")
# Candidate points this close to the surface are projected onto it as colour samples.
SURFACE_BAND = 0.03
SURFACE_TOLERANCE = 2e-3   # a projected point farther than this from the surface is dropped


@dataclass
class RayBatch:
    """Rays of a batch of identities with their procedural targets (all float32 tensors)."""

    z: torch.Tensor           # (N, z_dim)
    origins: torch.Tensor     # (N, M, 3)
    directions: torch.Tensor  # (N, M, 3)
    rgb: torch.Tensor         # (N, M, 3) in [0, 1], composited on the grey background
    alpha: torch.Tensor       # (N, M, 1) 1 on the head
    depth: torch.Tensor       # (N, M, 1) distance along the ray, 0 where alpha is 0
    # 3D targets (S or F may be 0 when the settings ask for none):
    surface_points: torch.Tensor   # (N, S, 3) points on the surface, moved along the normal by a jitter
    surface_rgb: torch.Tensor      # (N, S, 3) the shaded colour a ray hitting that surface point shows
    space_points: torch.Tensor     # (N, F, 3) points in and around the head
    occupancy: torch.Tensor        # (N, F, 1) sigmoid(-signed distance / softness) there

    def to(self, device) -> "RayBatch":
        return RayBatch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


def camera_for(yaw: float, pitch: float) -> Camera:
    """A look-at camera of the procedural category's family (EG3D FFHQ constants)."""
    return Camera(yaw=yaw, pitch=pitch, radius=RENDERING["avg_camera_radius"], fov=RENDERING["fov"],
                  pivot=tuple(RENDERING["avg_camera_pivot"]))


def view_rays(camera: Camera, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(R*R, 3) origins and unit directions of a camera's pixel rays."""
    cam2world, intrinsics = split_label(camera.label()[None])
    origins, directions = ray_bundle(cam2world, intrinsics, resolution)
    return origins[0].numpy(), directions[0].numpy()


def procedural_targets(head: ProceduralHead, origins: np.ndarray, directions: np.ndarray) -> dict:
    """rgb / alpha / depth of arbitrary rays (M, 3): the only procedural buffers the fit reads."""
    # The sphere tracer works on any set of rays; _trace_and_shade is the renderer's per-ray core.
    buffers = head._trace_and_shade(tuple(origins.T), tuple(directions.T), BACKGROUND_RGB)
    return {name: buffers[name] for name in SUPERVISED_BUFFERS}


def pick_rays(origins, directions, count: int, foreground_fraction: float, rng) -> np.ndarray:
    """Pixel indices: most aimed at the head's bounding sphere (where the detail is), the rest
    anywhere so that empty space is taught to stay empty."""
    near_head, _, _ = bound_interval(tuple(origins.T), tuple(directions.T))
    aimed = int(round(count * foreground_fraction)) if near_head.size else 0
    chosen_near = rng.choice(near_head, aimed, replace=aimed > near_head.size) if aimed else np.zeros(0, np.int64)
    chosen_any = rng.randint(0, len(origins), count - aimed)
    return np.concatenate([chosen_near, chosen_any]).astype(np.int64)


def random_view(rng) -> Camera:
    return camera_for(rng.uniform(*YAW_RANGE), rng.uniform(*PITCH_RANGE))


def identity_rays(head: ProceduralHead, views: int, rays: int, foreground_fraction: float, rng, resolution: int):
    """`rays` random rays pooled from `views` random views of one identity, with their targets."""
    per_view = np.diff(np.linspace(0, rays, views + 1).astype(int))
    chosen_origins, chosen_directions = [], []
    for count in per_view:
        origins, directions = view_rays(random_view(rng), resolution)
        index = pick_rays(origins, directions, int(count), foreground_fraction, rng)
        chosen_origins.append(origins[index])
        chosen_directions.append(directions[index])
    # One trace over all the views' rays: the sphere tracer's cost is mostly numpy's per-call
    # overhead on small arrays, so tracing the views one by one took 3x as long.
    origins, directions = np.concatenate(chosen_origins), np.concatenate(chosen_directions)
    return origins, directions, procedural_targets(head, origins, directions)


def sample_points_in_bound(count: int, rng) -> np.ndarray:
    """(count, 3) points uniform in the sphere that holds every head."""
    directions = rng.standard_normal((count, 3))
    directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    radii = BOUND_RADIUS * rng.uniform(0.0, 1.0, (count, 1)) ** (1 / 3)
    return (np.asarray(BOUND_CENTRE) + radii * directions).astype(np.float32)


def project_onto_surface(head: ProceduralHead, points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Newton steps p <- p - sdf(p) n(p) towards the zero level set; (count, 3)."""
    for _ in range(iterations):
        components = tuple(points.T)
        distance = head.shape.sdf(components)
        points = points - distance[:, None] * surface_normals(head.shape, components)
    return points.astype(np.float32)


def surface_samples(head: ProceduralHead, count: int, jitter: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """`count` surface points of the head, moved along their normals by U(-jitter, jitter), and the
    shaded colour of the surface point each came from (what a ray that hits it shows)."""
    points, colours, found = [np.zeros((0, 3), np.float32)], [np.zeros((0, 3), np.float32)], 0
    while found < count:
        candidates = sample_points_in_bound(max(4 * count, 256), rng)
        near = candidates[np.abs(head.sdf(candidates)) < SURFACE_BAND]
        on_surface = project_onto_surface(head, near)
        on_surface = on_surface[np.abs(head.sdf(on_surface)) < SURFACE_TOLERANCE][:count - found]
        _, normals, colour = head.shade(tuple(on_surface.T))
        offsets = rng.uniform(-jitter, jitter, (len(on_surface), 1)).astype(np.float32)
        points.append(on_surface + offsets * normals)
        colours.append(np.clip(colour, 0.0, 1.0))
        found += len(on_surface)
    return np.concatenate(points).astype(np.float32), np.concatenate(colours).astype(np.float32)


def occupancy_samples(head: ProceduralHead, count: int, softness: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """`count` points, half uniform in the bound and half within SURFACE_BAND of the surface
    (where the occupancy changes), with the target occupancy sigmoid(-sdf / softness)."""
    uniform = sample_points_in_bound(count - count // 2, rng)
    near = [np.zeros((0, 3), np.float32)]
    while sum(len(chunk) for chunk in near) < count // 2:
        candidates = sample_points_in_bound(max(8 * count, 256), rng)
        near.append(candidates[np.abs(head.sdf(candidates)) < SURFACE_BAND])
    points = np.concatenate([uniform] + near)[:count]
    distance = head.sdf(points).astype(np.float64)
    occupancy = 1.0 / (1.0 + np.exp(np.clip(distance / softness, -50, 50)))
    return points, occupancy.astype(np.float32)[:, None]


def identity_points(head: ProceduralHead, settings, rng) -> dict:
    """The 3D targets of one identity: shaded colour near the surface, occupancy in space."""
    surface, rgb = surface_samples(head, settings.surface_points_per_identity, settings.surface_jitter, rng)
    space, occupancy = occupancy_samples(head, settings.space_points_per_identity, settings.occupancy_softness, rng)
    return {"surface_points": surface, "surface_rgb": rgb, "space_points": space, "occupancy": occupancy}


POINT_FIELDS = ("surface_points", "surface_rgb", "space_points", "occupancy")


def sample_batch(step_seed: int, settings, z_dim: int, resolution: int) -> RayBatch:
    """The batch of one training step; a function of `step_seed` only (so resumes repeat it)."""
    rng = np.random.RandomState(step_seed)
    fit_seeds = SEED_RANGES["fit"]
    seeds = rng.randint(fit_seeds.start, fit_seeds.stop, settings.identities_per_step)
    zs = []
    fields = {name: [] for name in ("origins", "directions", "rgb", "alpha", "depth") + POINT_FIELDS}
    for seed in seeds:
        z = latent_for_seed(int(seed), z_dim)
        head = ProceduralHead(HeadParams.from_latent(z))
        origins, directions, targets = identity_rays(head, settings.views_per_identity, settings.rays_per_identity,
                                                     settings.foreground_ray_fraction, rng, resolution)
        zs.append(z)
        fields["origins"].append(origins)
        fields["directions"].append(directions)
        for name in SUPERVISED_BUFFERS:
            fields[name].append(targets[name])
        # The 3D targets draw from their own stream, so that the rays of a step are the same
        # whether or not (and however many) 3D points are asked for.
        point_rng = np.random.RandomState([step_seed % 2**32, int(seed)])
        points = identity_points(head, settings, point_rng)
        for name in POINT_FIELDS:
            fields[name].append(points[name])
    return _as_batch(zs, fields)


def _as_batch(zs, fields) -> RayBatch:
    def stack(name):
        return torch.from_numpy(np.stack(fields[name]).astype(np.float32))

    alpha, depth = stack("alpha")[..., None], stack("depth")[..., None]
    depth = torch.where(alpha > 0.5, depth, torch.zeros_like(depth))   # inf on background
    return RayBatch(torch.from_numpy(np.stack(zs).astype(np.float32)), stack("origins"), stack("directions"),
                    stack("rgb"), alpha, depth, *(stack(name) for name in POINT_FIELDS))


class BatchStream:
    """The batches of consecutive training steps, rendered in this process or, with `workers`,
    that many processes ahead of the training: the procedural targets are numpy on the CPU, so
    on a GPU they, not the network, would set the pace. Either way step k gets exactly
    `sample_batch(settings.data_seed + k, ...)`."""

    def __init__(self, settings, z_dim: int, resolution: int, workers: int = 0):
        self.settings, self.z_dim, self.resolution, self.workers = settings, z_dim, resolution, workers
        self.pending = {}    # step -> future of its batch's arrays
        self.pool = None
        if workers > 0:
            from core.processes import process_pool

            self.pool = process_pool(workers)

    def batch(self, step: int) -> RayBatch:
        if self.pool is None:
            return sample_batch(self.settings.data_seed + step, self.settings, self.z_dim, self.resolution)
        for stale in [s for s in self.pending if s < step]:
            self.pending.pop(stale).cancel()
        for ahead in range(step, step + 2 * self.workers):
            if ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(_batch_arrays, self.settings.data_seed + ahead, self.settings,
                                                       self.z_dim, self.resolution)
        return RayBatch(**{name: torch.from_numpy(array) for name, array in self.pending.pop(step).result().items()})

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _batch_arrays(step_seed: int, settings, z_dim: int, resolution: int) -> dict:
    """A worker's batch as numpy arrays (plain pickles, no shared-memory tensors to leak)."""
    batch = sample_batch(step_seed, settings, z_dim, resolution)
    return {name: getattr(batch, name).numpy() for name in RayBatch.__dataclass_fields__}
