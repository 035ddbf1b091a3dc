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
view differs from `generator.render` only (a) where skipped samples had density below the
threshold, (b) on rays fainter than `RAY_OPACITY_TOLERANCE`, and (c) on a few rays of a sharp
surface, where decoding in other batches changes the coarse densities in their last bits and
that flips a tie of EG3D's deterministic importance sampler, moving fine samples by one coarse
interval (about 1 ray in 2000 on the default backbone; the plain renderer is just as sensitive
to such bits). tests/test_factory.py bounds all three on the shipped backbone and
benchmarks/bench_factory.py prints them.

Without a super-resolution module only RGB is used, so only σ and the first three colour
features are decoded, sorted and composited (the other 29 are never read).
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from core.generator.rendering import ImportanceRenderer, MipRayMarcher2
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
# A ray that meets no occupied cell is not rendered unless the decoder's constant density outside
# the box could make it this opaque over its whole length (at most 1.3 grey levels of colour).
RAY_OPACITY_TOLERANCE = 5e-3
# Raw density given to skipped samples: softplus(EMPTY_SIGMA - 1) is exactly 0 in float32.
EMPTY_SIGMA = -1e4
_GRID_CHUNK = 65536
SKIP, DECODE, CONSTANT = 0, 1, 2  # what a sample point gets: zero density, the decoder, the decoder's outside constant


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
    outside_density: float  # that constant σ after EG3D's softplus(σ - 1): density per world unit

    def __post_init__(self):
        self.codes = self._codes(self.cells, self.beyond_z, self.beyond_y)
        # ray_is_live tests points two cells apart against cells grown by one more cell: a ray
        # that crosses an occupied cell then runs at least two cells inside the grown region.
        grow = 1
        self.live_codes = self._codes(_dilate(self.cells, grow), _dilate(self.beyond_z, grow), _dilate(self.beyond_y, grow))

    @property
    def fraction(self) -> float:
        return float(self.cells.float().mean())

    @staticmethod
    def _codes(cells, beyond_z, beyond_y) -> torch.Tensor:
        """A (G+2)³ table of SKIP / DECODE / CONSTANT over the cells plus one layer standing for
        'beyond the box' on each side of every axis (see `classify`), flattened for `take`.

        The planes are read one by one: the xy plane at (x, y), xz at (x, z), zx at (z, x), each
        reading zeros beyond the box. So a point reads zeros from all three when x is beyond it,
        or both y and z are: such points get the decoder's constant. A point beyond it only in z
        reads the xy plane alone, and only in y the xz and zx planes: for those the 2D maps say
        whether there is density; inside the box the 3D cells do.
        """
        codes = torch.full([s + 2 for s in cells.shape], SKIP, dtype=torch.uint8, device=cells.device)
        inner = slice(1, -1)
        codes[inner, inner, inner] = cells.to(torch.uint8) * DECODE
        for side in (0, -1):
            codes[inner, inner, side] = beyond_z.to(torch.uint8) * DECODE
            codes[inner, side, inner] = beyond_y.to(torch.uint8) * DECODE
            codes[side] = CONSTANT
            for other in (0, -1):
                codes[:, side, other] = CONSTANT
        return codes.reshape(-1)

    def _lookup(self, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """The code of each point (..., 3). A point in the margin band just outside a face (up
        to one texel, which bilinear sampling still reads) counts as its border cell."""
        size = self.cells.shape[0]
        cell = points * (size / self.box) + size / 2  # cell coordinates: [0, G) inside the box
        reach = size * self.margin / self.box
        index = cell.floor().clamp_(0, size - 1) + 1
        index = torch.where(cell < -reach, 0.0, torch.where(cell >= size + reach, float(size + 1), index)).long()
        ix, iy, iz = index.unbind(-1)
        return codes.take((ix * (size + 2) + iy) * (size + 2) + iz)

    def classify(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decode, constant): bool (...,) each, for points (..., 3); see `_codes`."""
        codes = self._lookup(self.codes, points)
        return codes == DECODE, codes == CONSTANT

    def ray_is_live(self, origins: torch.Tensor, directions: torch.Tensor, start: float, end: float) -> torch.Tensor:
        """(N, M) bool: whether a ray meets any cell with density (or an outside dense enough).

        Tested at points two cells apart along [start, end] against `live_codes`. The constant
        outside counts only when it could make a ray at least RAY_OPACITY_TOLERANCE opaque over
        [start, end].
        """
        outside_matters = self.outside_density * (end - start) > RAY_OPACITY_TOLERANCE
        live_codes = (self.live_codes == DECODE) | ((self.live_codes == CONSTANT) & outside_matters)
        step = 2 * self.box / self.cells.shape[0]
        depths = torch.arange(start, end + step, step, device=origins.device, dtype=origins.dtype)
        live = []
        for o, d in zip(origins, directions):  # one view at a time bounds the memory
            points = o[:, None] + depths[None, :, None] * d[:, None]
            live.append(self._lookup(live_codes, points).any(1))
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
    outside_point = torch.full((1, 1, 3), 2.0 * box, device=device)
    points = torch.cat([grid, beyond_z, beyond_y, outside_point[0]])[None]
    planes, renderer, options = identity.planes[:1], generator.renderer, generator.rendering_kwargs
    density_only = partial(generator.decoder, colour_channels=0)  # the grid needs no colour
    sigma = []
    for first in range(0, points.shape[1], _GRID_CHUNK):
        chunk = points[:, first:first + _GRID_CHUNK]
        sigma.append(renderer.run_model(planes, density_only, chunk, torch.zeros_like(chunk), options)["sigma"].reshape(-1))
    sigma = torch.cat(sigma)
    rgb = renderer.run_model(planes, generator.decoder, outside_point, torch.zeros_like(outside_point), options)["rgb"][0, 0]
    dense = MipRayMarcher2.activated_density(sigma) > threshold
    volume, plane = resolution ** 3, resolution ** 2
    cells = _dilate(dense[:volume].reshape(resolution, resolution, resolution), dilation)
    map_z = _dilate(dense[volume:volume + plane].reshape(resolution, resolution), dilation)
    map_y = _dilate(dense[volume + plane:volume + 2 * plane].reshape(resolution, resolution), dilation)
    margin = box / identity.planes.shape[-1]  # one texel
    outside_density = float(MipRayMarcher2.activated_density(sigma[-1]))
    return Occupancy(cells, map_z, map_y, box, margin, rgb.clone(), sigma[-1:].clone(), outside_density)


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

    def __init__(self, occupancy: Occupancy, colour_channels: int | None = None):
        super().__init__()
        self.occupancy = occupancy
        self.outside_rgb = occupancy.outside_rgb[:colour_channels]
        self.decoded = self.total = 0  # samples decoded / asked for, for the benchmark

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options, deterministic=False):
        n, p, _ = sample_coordinates.shape
        occupancy = self.occupancy
        live, outside = occupancy.classify(sample_coordinates)
        rgb = sample_coordinates.new_zeros(n, p, self.outside_rgb.shape[0])
        sigma = sample_coordinates.new_full((n, p, 1), EMPTY_SIGMA)
        rgb[outside] = self.outside_rgb
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


# Occupancy grids remembered per generator (`cached_occupancy_grid`): the studio's recent
# identities while the user orbits or steps through seeds, an edit's before and after.
GRID_CACHE_SIZE = 8
_grid_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # generator -> OrderedDict
_grid_cache_lock = threading.Lock()


def cached_occupancy_grid(generator, identity: Identity, resolution: int | None = None) -> Occupancy:
    """`occupancy_grid(generator, identity, resolution)`, remembered for the GRID_CACHE_SIZE
    (latent, grid size) pairs last asked for per generator. The key is the latent's bytes and the
    generator's parameter versions, so the same latent asked for again (another frame, a new
    Identity object of it) costs nothing, and a generator changed in place since gets a new grid."""
    ws = identity.ws.detach()
    key = (hashlib.blake2b(ws.cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest(), resolution,
           sum(parameter._version for parameter in generator.parameters()))
    with _grid_cache_lock:
        cache = _grid_cache.setdefault(generator, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    occupancy = occupancy_grid(generator, identity, resolution)  # outside the lock: other callers go on
    with _grid_cache_lock:
        cache[key] = occupancy
        while len(cache) > GRID_CACHE_SIZE:
            cache.popitem(last=False)
    return occupancy


def skipping_grid(generator, identity: Identity, resolution: int | None = None) -> Occupancy | None:
    """The identity's occupancy grid where skipping empty space is measured to pay (on a CPU);
    None on a GPU, which renders the plain batch in one pass."""
    return occupancy_grid(generator, identity, resolution) if identity.planes.device.type == "cpu" else None


@torch.no_grad()
def render_with_samples(generator, identity: Identity, camera_labels: torch.Tensor, resolution: int,
                        occupancy: Occupancy | None) -> View:
    """`generator.render(identity, cameras, resolution, deterministic=True, return_samples=True)`,
    with empty space skipped when the identity's occupancy grid is given (see `skipping_grid`)."""
    if occupancy is None:
        return generator.render(identity, camera_labels, resolution, deterministic=True, return_samples=True)
    return render_culled(generator, identity, camera_labels, resolution, occupancy)[0]


@torch.no_grad()
def render_culled(generator, identity: Identity, camera_labels: torch.Tensor, resolution: int,
                  occupancy: Occupancy, max_rays_per_chunk: int | None = None,
                  colour_channels: int | None = None) -> tuple[View, CulledRenderer]:
    """`generator.render(identity, cameras, resolution, deterministic=True, return_samples=True)`
    with empty space skipped; `identity` is one identity repeated over the batch of cameras.

    Rays that meet no occupied cell are not rendered at all: they come back empty (no weight,
    the background feature value, depth at the far end) as the backbone renders them to within
    the density threshold. The other rays of all views are rendered together by the culled
    renderer, and the view is assembled as TriPlaneGenerator._render does.

    Without a super-resolution module only RGB is used downstream, so by default only the first
    `colour_channels` = 3 colour features are decoded and composited: the view's `feature_image`
    then has 3 channels (the same values as the first 3 of the full render's).
    """
    if not _same_identity_over_batch(identity):
        raise ValueError("render_culled renders views of one identity: expand a single identity over the cameras")
    options = generator.rendering_kwargs
    if colour_channels is None and generator.superresolution is None:
        colour_channels = 3  # nothing reads more than RGB: decode, sort and composite 3 channels, not 32
    renderer = CulledRenderer(occupancy, colour_channels)
    decoder = generator.decoder if colour_channels is None else partial(generator.decoder, colour_channels=colour_channels)
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
    rendered = _empty_rays(n, m, options, identity.planes.device, renderer.outside_rgb.shape[0])
    if renderer.live_rays:
        where = live.nonzero(as_tuple=True)
        part = renderer(identity.planes[:1], decoder, origins[where][None], directions[where][None], options,
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


def _empty_rays(n: int, m: int, options: dict, device, channels: int) -> dict:
    """What the renderer returns for rays through empty space: no weight anywhere.

    Features composite to 0 (mapped to -1 like every composite; white_back adds the missing
    weight, giving 1), the depth is the far end (EG3D's value for a ray without weight, clamped),
    the samples are evenly spread with zero weight.
    """
    samples = options["depth_resolution"] + options["depth_resolution_importance"]
    start, end = float(options["ray_start"]), float(options["ray_end"])
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
