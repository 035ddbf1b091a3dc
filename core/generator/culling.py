"""Empty-space skipping for many views of one identity (the factory, the studio's full-sample frames).

Rendering a 128² view decodes ~786k tri-plane samples (48 per ray for the default backbone), and on
a CPU that is nearly all of a factory sample's cost. Most of those samples lie in empty space:
the coarse samples are spread evenly over [ray_start, ray_end], about half the rays miss the head
altogether, and the head fills a small part of the tri-plane box. So, once per identity, the
backbone's density is measured on a grid over the box (64³ points, a third of one view's
samples for the default backbone); cells with density above `DENSITY_THRESHOLD`, dilated by `DILATION` cells, are
'occupied'. Every view of the identity then decodes only the samples inside occupied cells; the
others get zero density (and zero colour features), exactly what the backbone returns in empty
space to within the threshold.

This changes nothing else: same rays, same coarse depths, same importance sampling and
compositing (the backbone's own `ImportanceRenderer`, with its point query restricted), so a
view differs from `generator.render` only where the skipped samples had density below the
threshold — bounded, and measured by tests/test_factory.py and benchmarks/bench_factory.py
(max |Δ| of image, depth and opacity). On the default backbone: opacity within 4e-4, colour
within 0.1/255, depth within 1e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.generator.rendering import ImportanceRenderer
from core.generator.triplane import CPU_RAY_CHUNK, Identity, View

# Grid cells per side: half the planes' resolution (64 for EG3D-sized or the default 128² planes),
# no finer than the planes can vary and never coarser than 16.
MAX_GRID_RESOLUTION = 64
# Density (after EG3D's softplus(σ - 1)) below which a grid point counts as empty. Over the whole
# length of a ray (~1 world unit) such a density removes < 1e-3 of the transmittance.
DENSITY_THRESHOLD = 1e-3
# Cells around an occupied one that count as occupied too: the grid only sees the density at
# cell centres, and a surface's density rises over about a cell.
DILATION = 2
# Raw density given to skipped samples: softplus(EMPTY_SIGMA - 1) is exactly 0 in float32.
EMPTY_SIGMA = -1e4
_GRID_CHUNK = 65536


@dataclass
class Occupancy:
    """Which cells of the tri-plane box [-box/2, box/2]³ hold density, for one identity.

    Beyond the box (by more than one plane texel, where bilinear sampling still reaches the
    border) every point reads all-zero plane features, so the decoder's output there is one
    constant, computed once: `outside_rgb`, `outside_sigma`.
    """

    cells: torch.Tensor  # (G, G, G) bool, indexed [x, y, z]
    beyond_z: torch.Tensor  # (G, G) bool over (x, y): |z| beyond the box, only the xy plane is read
    beyond_y: torch.Tensor  # (G, G) bool over (x, z): |y| beyond the box, the xz and zx planes are read
    box: float
    margin: float  # world units beyond the box that still read plane features
    outside_rgb: torch.Tensor  # (C,)
    outside_sigma: torch.Tensor  # (1,)
    outside_dense: bool  # whether that constant density is above the threshold

    @property
    def fraction(self) -> float:
        return float(self.cells.float().mean())

    def classify(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decode, constant): bool (...,) each, for points (..., 3).

        The planes are read one by one: the xy plane at (x, y), xz at (x, z), zx at (z, x), each
        reading zeros beyond the box. So a point reads zeros from all three when x is beyond the
        box, or both y and z are: such points get the constant. A point beyond the box only in z
        reads the xy plane alone, and only in y the xz and zx planes: for those, 2D maps say
        whether there is density. Inside the box the 3D cells do.
        """
        size = self.cells.shape[0]
        half = self.box / 2
        beyond = points.abs() > half
        far = points.abs() > half + self.margin  # not even bilinear sampling reaches the planes
        bx, by, bz = beyond.unbind(-1)
        fx, fy, fz = far.unbind(-1)
        constant = fx | (fy & fz)
        only_z = fz & ~bx & ~by
        only_y = fy & ~bx & ~bz
        in_box = ~(bx | by | bz)
        index = torch.floor((points / self.box + 0.5) * size).long().clamp(0, size - 1)
        ix, iy, iz = index.unbind(-1)
        decode = torch.where(in_box, self.cells[ix, iy, iz], ~constant)  # near the box's faces: decode
        decode = torch.where(only_z, self.beyond_z[ix, iy], decode)
        decode = torch.where(only_y, self.beyond_y[ix, iz], decode)
        return decode, constant

    def ray_is_live(self, origins: torch.Tensor, directions: torch.Tensor, start: float, end: float) -> torch.Tensor:
        """(N, M) bool: whether a ray meets any cell with density (or the dense outside).

        Tested at points one cell apart along [start, end]; the dilation of the cells keeps a
        ray from slipping past real density between two test points.
        """
        step = self.box / self.cells.shape[0]
        depths = torch.arange(start, end + step, step, device=origins.device, dtype=origins.dtype)
        live = []
        for o, d in zip(origins, directions):  # one view at a time bounds the memory
            points = o[:, None] + depths[None, :, None] * d[:, None]
            decode, constant = self.classify(points)
            live.append((decode | (constant & self.outside_dense)).any(1))
        return torch.stack(live)


@torch.no_grad()
def occupancy_grid(generator, identity: Identity, resolution: int | None = None,
                   threshold: float = DENSITY_THRESHOLD, dilation: int = DILATION) -> Occupancy:
    """The backbone's density on a grid over the tri-plane box (and the 2D maps beyond it),
    thresholded and dilated."""
    box = float(generator.rendering_kwargs["box_warp"])
    resolution = resolution or max(16, min(MAX_GRID_RESOLUTION, identity.planes.shape[-1] // 2))
    device = identity.planes.device
    centres = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * box - box / 2
    grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    a, b = (m.reshape(-1) for m in torch.meshgrid(centres, centres, indexing="ij"))
    far = torch.full_like(a, 2.0 * box)  # reads zeros from the planes that involve this axis
    beyond_z, beyond_y = torch.stack([a, b, far], 1), torch.stack([a, far, b], 1)
    outside_point = torch.full((1, 3), 2.0 * box, device=device)
    points = torch.cat([grid, beyond_z, beyond_y, outside_point])[None]
    single = Identity(identity.ws[:1], identity.planes[:1], {})
    sigma, rgb = [], None
    for first in range(0, points.shape[1], _GRID_CHUNK):
        chunk = points[:, first:first + _GRID_CHUNK]
        out = generator.sample_points(single, chunk, torch.zeros_like(chunk))
        sigma.append(out["sigma"].reshape(-1))
        rgb = out["rgb"][0, -1]
    sigma = torch.cat(sigma)
    dense = F.softplus(sigma - 1) > threshold
    volume, plane = resolution ** 3, resolution ** 2
    cells = _dilate(dense[:volume].reshape(resolution, resolution, resolution), dilation)
    map_z = _dilate(dense[volume:volume + plane].reshape(resolution, resolution), dilation)
    map_y = _dilate(dense[volume + plane:volume + 2 * plane].reshape(resolution, resolution), dilation)
    margin = box / identity.planes.shape[-1]  # one texel
    return Occupancy(cells, map_z, map_y, box, margin, rgb.clone(), sigma[-1:].clone(), bool(dense[-1]))


def _dilate(occupied: torch.Tensor, cells: int) -> torch.Tensor:
    if cells <= 0:
        return occupied
    pool = F.max_pool3d if occupied.ndim == 3 else F.max_pool2d
    return pool(occupied[None, None].float(), 2 * cells + 1, stride=1, padding=cells)[0, 0] > 0


class CulledRenderer(ImportanceRenderer):
    """EG3D's importance renderer that decodes only the samples inside occupied cells.

    Samples in empty cells get zero density and colour; samples beyond the box get the decoder's
    constant output there. All batch items must be views of the same identity (the factory's
    case): the live samples of every view are decoded together, from the first item's planes.
    """

    def __init__(self, occupancy: Occupancy):
        super().__init__()
        self.occupancy = occupancy
        self.decoded = self.total = 0  # samples decoded / asked for, for the benchmark

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options, deterministic=False):
        n, p, _ = sample_coordinates.shape
        occupancy = self.occupancy
        live, outside = occupancy.classify(sample_coordinates)
        rgb = sample_coordinates.new_zeros(n, p, occupancy.outside_rgb.shape[0])
        sigma = sample_coordinates.new_full((n, p, 1), EMPTY_SIGMA)
        rgb[outside] = occupancy.outside_rgb
        sigma[outside] = occupancy.outside_sigma
        where = live.nonzero(as_tuple=True)
        self.decoded += len(where[0])
        self.total += n * p
        if len(where[0]):
            out = super().run_model(planes[:1], decoder, sample_coordinates[where][None],
                                    sample_directions[where][None], options, deterministic)
            rgb[where] = out["rgb"][0].to(rgb.dtype)
            sigma[where] = out["sigma"][0].to(sigma.dtype)
        return {"rgb": rgb, "sigma": sigma}


@torch.no_grad()
def render_culled(generator, identity: Identity, camera_labels: torch.Tensor, resolution: int,
                  occupancy: Occupancy, max_rays_per_chunk: int | None = None) -> tuple[View, CulledRenderer]:
    """`generator.render(identity, cameras, resolution, deterministic=True, return_samples=True)`
    with empty space skipped; `identity` is one identity repeated over the batch of cameras.

    Rays that meet no occupied cell are not rendered at all: they come back empty (no weight,
    the background feature value, depth at the far end) as the backbone renders them to within
    the density threshold. The other rays of all views are rendered together by the culled
    renderer, and the view is assembled as TriPlaneGenerator._render does.
    """
    if not _same_identity_over_batch(identity):
        raise ValueError("render_culled renders views of one identity: expand a single identity over the cameras")
    options = generator.rendering_kwargs
    renderer = CulledRenderer(occupancy)
    cam2world = camera_labels[:, :16].view(-1, 4, 4)
    intrinsics = camera_labels[:, 16:25].view(-1, 3, 3)
    origins, directions = generator.ray_sampler(cam2world, intrinsics, resolution)
    n, m, _ = origins.shape
    if max_rays_per_chunk is None and identity.planes.device.type == "cpu":
        # Small chunks keep the per-sample tensors in cache: 2048 rays per chunk (as for one view
        # of generator.render) measured 2x faster on one thread than 8 views' worth per chunk.
        max_rays_per_chunk = CPU_RAY_CHUNK
    fixed_limits = all(isinstance(options[key], (int, float)) for key in ("ray_start", "ray_end"))
    if fixed_limits:
        live = occupancy.ray_is_live(origins, directions, float(options["ray_start"]), float(options["ray_end"]))
    else:  # per-ray limits depend on the batch's rays ('auto'): render every ray
        live = torch.ones(n, m, dtype=torch.bool, device=origins.device)
    renderer.live_rays, renderer.rays = int(live.sum()), n * m
    rendered = _empty_rays(n, m, options, identity.planes.device, generator.decoder)
    if renderer.live_rays:
        where = live.nonzero(as_tuple=True)
        part = renderer(identity.planes[:1], generator.decoder, origins[where][None], directions[where][None], options,
                        deterministic=True, return_samples=True, max_rays_per_chunk=max_rays_per_chunk)
        for key, values in rendered.items():
            values[where] = part[key][0].to(values.dtype)
    feature_image = rendered["features"].permute(0, 2, 1).reshape(n, -1, resolution, resolution).contiguous()
    depth_image = rendered["depth"].permute(0, 2, 1).reshape(n, 1, resolution, resolution)
    image = image_raw = feature_image[:, :3]
    if generator.superresolution is not None:
        noise_mode = options["superresolution_noise_mode"]
        image = generator.superresolution(image_raw, feature_image, identity.ws,
                                          noise_mode="const" if noise_mode == "random" else noise_mode)
    samples = {key: rendered[key] for key in ("depths", "weights", "sigma")}
    return View(image, image_raw, feature_image, depth_image, samples), renderer


def _empty_rays(n: int, m: int, options: dict, device, decoder) -> dict:
    """What the renderer returns for rays through empty space: no weight anywhere.

    Features composite to 0 (mapped to -1 like every composite; white_back adds the missing
    weight, giving 1), the depth is the far end (EG3D's value for a ray without weight, clamped),
    the samples are evenly spread with zero weight.
    """
    samples = options["depth_resolution"] + options["depth_resolution_importance"]
    start, end = float(options["ray_start"]), float(options["ray_end"])
    channels = decoder.net[-1].weight.shape[0] - 1
    depths = torch.linspace(start, end, samples, device=device).reshape(1, 1, samples, 1).repeat(n, m, 1, 1)
    return {
        "features": torch.full((n, m, channels), 1.0 if options.get("white_back", False) else -1.0, device=device),
        "depth": torch.full((n, m, 1), end, device=device),
        "depths": depths,
        "weights": torch.zeros(n, m, samples - 1, 1, device=device),
        "sigma": torch.full((n, m, samples, 1), EMPTY_SIGMA, device=device),
        "weights_total": torch.zeros(n, m, 1, device=device),
    }


def _same_identity_over_batch(identity: Identity) -> bool:
    return len(identity) == 1 or identity.planes.stride(0) == 0 or bool(
        (identity.planes == identity.planes[:1]).all())
