"""EG3D's volume rendering, reimplemented in plain PyTorch.

Rays come from `core.camera.ray_bundle`; the renderer places coarse samples along them, queries
the tri-plane through a decoder, importance-samples a second set of depths from the coarse
weights, and composites both sets with the MipNeRF-style ray marcher.

The tri-plane lookup must match what the official checkpoints were trained with, including a
quirk: EG3D's three plane "axes" project a point (x, y, z) to (x, y), (x, z) and (z, x). The
third plane therefore sees the same two coordinates as the second one, transposed, and nothing
is indexed by (y, z). Each plane's first coordinate runs along the image width and the second
along its height (grid_sample's convention), after scaling world coordinates by 2 / box_warp.

Randomness: EG3D jitters the coarse depths, draws importance samples at random and may add
density noise. ``deterministic=True`` switches all three off exactly as EG3D's own code would
(linspace depths, det=True in sample_pdf, no noise); the default keeps EG3D's behaviour.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.camera import ray_bundle

__all__ = [
    "generate_planes",
    "project_onto_planes",
    "sample_from_planes",
    "sample_plane_mean",
    "ray_box_limits",
    "RaySampler",
    "MipRayMarcher2",
    "ImportanceRenderer",
]


# --------------------------------------------------------------------------------------------
# tri-plane lookup


def generate_planes() -> torch.Tensor:
    """The three plane bases (rows are the axes) exactly as the official checkpoints use them."""
    xy = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    xz = [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    # Intended as the remaining plane, but its rows make the projection below yield (z, x):
    # kept as is, because the trained weights depend on it.
    zx = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    return torch.tensor([xy, xz, zx], dtype=torch.float32)


def project_onto_planes(plane_axes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """2D coordinates (N*n_planes, M, 2) of points (N, M, 3) in each plane's basis."""
    n, m, _ = coordinates.shape
    n_planes = plane_axes.shape[0]
    # A point c = a @ axes has coordinates a = c @ inv(axes) in that basis; the first two of
    # them lie in the plane.
    to_plane = torch.linalg.inv(plane_axes)
    points = coordinates.unsqueeze(1).expand(n, n_planes, m, 3).reshape(n * n_planes, m, 3)
    to_plane = to_plane.unsqueeze(0).expand(n, n_planes, 3, 3).reshape(n * n_planes, 3, 3)
    return torch.bmm(points, to_plane)[..., :2]


def sample_from_planes(
    plane_axes: torch.Tensor,
    plane_features: torch.Tensor,
    coordinates: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    box_warp: float = None,
) -> torch.Tensor:
    """Bilinear features (N, n_planes, M, C) of points (N, M, 3) from planes (N, n_planes, C, H, W).

    The planes span [-box_warp/2, box_warp/2] in every axis; points outside read zeros.
    """
    if padding_mode != "zeros":
        raise ValueError("the tri-plane is sampled with zero padding only")
    n, n_planes, channels, height, width = plane_features.shape
    m = coordinates.shape[1]
    flat_planes = plane_features.reshape(n * n_planes, channels, height, width)
    normalised = (2 / box_warp) * coordinates
    grid = project_onto_planes(plane_axes, normalised).unsqueeze(1)  # (N*P, 1, M, 2)
    sampled = F.grid_sample(flat_planes, grid.float(), mode=mode, padding_mode="zeros", align_corners=False)
    # (N*P, C, 1, M) -> (N, P, M, C)
    return sampled.permute(0, 3, 2, 1).reshape(n, n_planes, m, channels)


def sample_plane_mean(plane_axes: torch.Tensor, plane_features: torch.Tensor, coordinates: torch.Tensor,
                      box_warp: float) -> torch.Tensor:
    """The planes' mean of `sample_from_planes` (N, M, C), what EG3D's decoder reads, summed in
    grid_sample's own layout: bit for bit the same sums as averaging the (N, P, M, C) result,
    without its strided copies (forward and backward; a quarter of the lookup's time on a CPU).
    The result is a transposed view, not contiguous."""
    n, n_planes, channels, height, width = plane_features.shape
    flat_planes = plane_features.reshape(n * n_planes, channels, height, width)
    grid = project_onto_planes(plane_axes, (2 / box_warp) * coordinates).unsqueeze(1)  # (N*P, 1, M, 2)
    sampled = F.grid_sample(flat_planes, grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    planes = sampled.reshape(n, n_planes, channels, -1).unbind(1)  # each (N, C, M), contiguous rows
    return (sum(planes[1:], planes[0]) / n_planes).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# rays


class RaySampler(nn.Module):
    """EG3D's RaySampler: (cam2world (N,4,4), intrinsics (N,3,3), resolution) -> origins, dirs."""

    def forward(self, cam2world_matrix: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        return ray_bundle(cam2world_matrix, intrinsics, resolution)


def ray_box_limits(ray_origins: torch.Tensor, ray_directions: torch.Tensor, box_side_length: float):
    """Entry and exit distances of rays through the cube [-s/2, s/2]^3 (slab method).

    Returns (t_near, t_far), each shaped like the rays with a trailing 1. Rays that miss get
    t_near=-1, t_far=-2 (EG3D's marker, so that t_far > t_near tells the hits).
    """
    shape = ray_origins.shape[:-1]
    origins = ray_origins.detach().reshape(-1, 3)
    directions = ray_directions.detach().reshape(-1, 3)
    half = box_side_length / 2
    low = torch.full((3,), -half, dtype=origins.dtype, device=origins.device)
    high = torch.full((3,), half, dtype=origins.dtype, device=origins.device)
    inverse = 1 / directions
    # The near face of each slab depends on the direction's sign; choosing it by sign (instead
    # of min/max of both faces) keeps EG3D's handling of axis-parallel rays (inf and NaN).
    backwards = inverse < 0
    near_face = torch.where(backwards, high, low)
    far_face = torch.where(backwards, low, high)
    t_near_axis = (near_face - origins) * inverse
    t_far_axis = (far_face - origins) * inverse

    hits = torch.ones(origins.shape[0], dtype=torch.bool, device=origins.device)
    t_near, t_far = t_near_axis[:, 0], t_far_axis[:, 0]
    for axis in (1, 2):
        axis_near, axis_far = t_near_axis[:, axis], t_far_axis[:, axis]
        hits &= ~((t_near > axis_far) | (axis_near > t_far))
        t_near = torch.max(t_near, axis_near)
        t_far = torch.min(t_far, axis_far)
    t_near = torch.where(hits, t_near, torch.full_like(t_near, -1.0))
    t_far = torch.where(hits, t_far, torch.full_like(t_far, -2.0))
    return t_near.reshape(*shape, 1), t_far.reshape(*shape, 1)


# --------------------------------------------------------------------------------------------
# compositing


class MipRayMarcher2(nn.Module):
    """Alpha compositing between consecutive samples (values averaged at interval midpoints).

    Inputs are (N, M, S, C) colours, (N, M, S, 1) raw densities and (N, M, S, 1) depths; the
    weights are per interval, (N, M, S-1, 1).
    """

    def forward(self, colors, densities, depths, rendering_options):
        rgb, depth, weights = self.march(colors, densities, depths, rendering_options)
        return rgb, clamp_depth(depth, depths.min(), depths.max()), weights

    def march(self, colors, densities, depths, rendering_options):
        """As forward, but the composite depth is not yet clamped to the depth range.

        EG3D clamps to the range of *all* depths in the batch, which couples rays; the renderer
        clamps once after gathering its chunks so that chunking does not change results.
        """
        if rendering_options["clamp_mode"] != "softplus":
            raise ValueError("MipRayMarcher2 supports clamp_mode='softplus' only")
        deltas = depths[:, :, 1:] - depths[:, :, :-1]
        sigma = self.activated_density(_midpoints(densities))
        weights = self.interval_weights(sigma, deltas)
        rgb = self.composite(colors, weights)
        weight_total = weights.sum(2)
        depth = torch.sum(weights * _midpoints(depths), -2) / weight_total
        if rendering_options.get("white_back", False):
            rgb = rgb + 1 - weight_total
        return rgb * 2 - 1, depth, weights

    @staticmethod
    def activated_density(raw: torch.Tensor) -> torch.Tensor:
        """EG3D's density from the decoder's raw σ: softplus(raw − 1). The −1 bias is part of the
        trained model (it made initialisation start from a mostly empty volume)."""
        return F.softplus(raw - 1)

    @staticmethod
    def interval_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """w_i = alpha_i * prod_{j<i} (1 - alpha_j), with alpha = 1 - exp(-sigma * delta)."""
        alpha = 1 - torch.exp(-(sigma * deltas))
        # 1e-10 keeps the product differentiable through fully opaque intervals.
        transmittance = torch.cumprod(
            torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2
        )[:, :, :-1]
        return alpha * transmittance

    @staticmethod
    def composite(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum over a ray of per-sample values (N, M, S, C) with interval weights.

        This is how EG3D composites colours; the semantic branch uses it for its own features
        with the backbone's weights.
        """
        return torch.sum(weights * _midpoints(values), -2)


def _midpoints(values: torch.Tensor) -> torch.Tensor:
    return (values[:, :, :-1] + values[:, :, 1:]) / 2


def clamp_depth(depth: torch.Tensor, lowest, highest) -> torch.Tensor:
    """Rays with no weight get NaN depth; send it to the far end, then clamp to the range."""
    depth = torch.nan_to_num(depth, float("inf"))
    return torch.clamp(depth, lowest, highest)


# --------------------------------------------------------------------------------------------
# sampling along rays


def coarse_depths(n, m, ray_start, ray_end, count, disparity_space, deterministic, device):
    """Stratified depths (N, M, count, 1) between ray_start and ray_end.

    `ray_start`/`ray_end` are floats or per-ray tensors (N, M, 1). Without `deterministic`,
    each depth is jittered forward by up to one spacing, as in EG3D.
    """
    if disparity_space:
        # Uniform in inverse depth: dense near the camera.
        steps = torch.linspace(0, 1, count, device=device).reshape(1, 1, count, 1).repeat(n, m, 1, 1)
        if not deterministic:
            steps = steps + torch.rand_like(steps) * (1 / (count - 1))
        if torch.is_tensor(ray_start):
            ray_start, ray_end = ray_start.unsqueeze(-2), ray_end.unsqueeze(-2)
        return 1.0 / (1.0 / ray_start * (1.0 - steps) + 1.0 / ray_end * steps)
    if torch.is_tensor(ray_start):
        fractions = torch.arange(count, dtype=torch.float32, device=device).reshape(count, 1, 1, 1) / (count - 1)
        # Built depth-major and viewed as (N, M, count, 1), like EG3D: the jitter drawn by
        # rand_like follows this memory layout, so a given seed jitters the same samples.
        depths = (ray_start[None] + fractions * (ray_end - ray_start)[None]).permute(1, 2, 0, 3)
        spacing = ((ray_end - ray_start) / (count - 1)).unsqueeze(-2)
    else:
        depths = torch.linspace(ray_start, ray_end, count, device=device).reshape(1, 1, count, 1).repeat(n, m, 1, 1)
        spacing = (ray_end - ray_start) / (count - 1)
    if not deterministic:
        depths = depths + torch.rand_like(depths) * spacing
    return depths


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, count: int, det: bool = False, eps: float = 1e-5):
    """Inverse-transform sampling of `count` depths per ray from a piecewise-constant pdf.

    bins (R, B) are bin edges, weights (R, W) the bin weights; normally B = W + 1. EG3D's
    importance pass hands over W + 2 edges (see `importance_depths`): the last is never used.
    """
    rays, n_bins = weights.shape
    weights = weights + eps  # no bin has exactly zero mass
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    if det:
        u = torch.linspace(0, 1, count, device=bins.device).expand(rays, count)
    else:
        u = torch.rand(rays, count, device=bins.device)
    u = u.contiguous()

    upper = torch.searchsorted(cdf, u, right=True)
    lower = torch.clamp_min(upper - 1, 0)
    upper = torch.clamp_max(upper, n_bins)
    pairs = torch.stack([lower, upper], -1).view(rays, 2 * count)
    cdf_pair = torch.gather(cdf, 1, pairs).view(rays, count, 2)
    bin_pair = torch.gather(bins, 1, pairs).view(rays, count, 2)

    mass = cdf_pair[..., 1] - cdf_pair[..., 0]
    # An empty bin is never drawn from, so any non-zero denominator will do.
    mass = torch.where(mass < eps, torch.ones_like(mass), mass)
    return bin_pair[..., 0] + (u - cdf_pair[..., 0]) / mass * (bin_pair[..., 1] - bin_pair[..., 0])


@torch.no_grad()
def importance_depths(coarse: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool) -> torch.Tensor:
    """Fine depths (N, M, count, 1) drawn where the coarse pass found weight."""
    n, m, samples, _ = coarse.shape
    coarse = coarse.reshape(n * m, samples)
    weights = weights.reshape(n * m, 1, -1).float()  # S-1 interval weights per ray
    # Widen peaks by one interval (max filter), smooth them (box filter) and keep a floor so
    # that empty space is still sampled a little.
    weights = F.max_pool1d(weights, 2, 1, padding=1)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
    mids = 0.5 * (coarse[:, :-1] + coarse[:, 1:])
    # EG3D drops the first and last weight but keeps every midpoint as a bin edge, so there
    # are two more edges than weights and the last midpoint is never reached. Kept for parity.
    fine = sample_pdf(mids, weights[:, 1:-1], count, det=deterministic)
    return fine.reshape(n, m, count, 1)


def merge_samples(depths_a, colors_a, densities_a, depths_b, colors_b, densities_b):
    """Concatenate two sample sets along the ray and sort them by depth."""
    depths = torch.cat([depths_a, depths_b], dim=-2)
    colors = torch.cat([colors_a, colors_b], dim=-2)
    densities = torch.cat([densities_a, densities_b], dim=-2)
    return sort_samples(depths, colors, densities)


def sort_samples(depths, colors, densities):
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order.expand(-1, -1, -1, 1))
    return depths, colors, densities


# --------------------------------------------------------------------------------------------
# the renderer


class ImportanceRenderer(nn.Module):
    """EG3D's two-pass (coarse + importance) tri-plane volume renderer.

    forward(planes (N,3,C,H,W), decoder, ray_origins (N,M,3), ray_directions (N,M,3), options)
    returns EG3D's (features (N,M,C'), depth (N,M,1), weight total (N,M,1)). With
    ``return_samples=True`` it returns a dict that also holds the final (coarse + fine, sorted)
    samples, sorted by depth: 'depths' (N,M,S,1), 'sigma' raw decoder densities (N,M,S,1) and
    'weights' per interval between consecutive samples (N,M,S-1,1), next to 'features',
    'depth' and 'weights_total' (EG3D's three outputs). The weights are what the semantic branch
    needs to composite its own features with the backbone's density: evaluate them at
    origins + depths * directions and call MipRayMarcher2.composite(values, weights).
    """

    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        self.plane_axes = generate_planes()

    def forward(
        self,
        planes,
        decoder,
        ray_origins,
        ray_directions,
        rendering_options,
        deterministic: bool = False,
        return_samples: bool = False,
        max_rays_per_chunk: int | None = None,
    ):
        self.plane_axes = self.plane_axes.to(ray_origins.device)
        ray_start, ray_end = self._ray_limits(ray_origins, ray_directions, rendering_options)

        num_rays = ray_origins.shape[1]
        chunk = num_rays if not max_rays_per_chunk else max(1, int(max_rays_per_chunk))
        parts, lowest, highest = [], [], []
        for first in range(0, num_rays, chunk):
            rays = slice(first, first + chunk)
            limits = (ray_start[:, rays], ray_end[:, rays]) if torch.is_tensor(ray_start) else (ray_start, ray_end)
            part = self._render_rays(planes, decoder, ray_origins[:, rays], ray_directions[:, rays], limits,
                                     rendering_options, deterministic)
            part["weights_total"] = part["weights"].sum(2)
            lowest.append(part["depths"].min())
            highest.append(part["depths"].max())
            if not return_samples:  # keep only what is returned, to bound memory
                part = {key: part[key] for key in ("features", "depth", "weights_total")}
            parts.append(part)
        result = {key: torch.cat([part[key] for part in parts], dim=1) for key in parts[0]}

        # EG3D clamps depth to the range of all sample depths of the batch (see march()).
        result["depth"] = clamp_depth(result["depth"], torch.stack(lowest).min(), torch.stack(highest).max())
        if return_samples:
            return result
        return result["features"], result["depth"], result["weights_total"]

    def _ray_limits(self, ray_origins, ray_directions, options):
        """Floats from the options, or per-ray tensors for ray_start = ray_end = 'auto'."""
        if not (options["ray_start"] == options["ray_end"] == "auto"):
            return options["ray_start"], options["ray_end"]
        ray_start, ray_end = ray_box_limits(ray_origins, ray_directions, options["box_warp"])
        hits = ray_end > ray_start
        if hits.any():
            # Rays that miss the box still get samples, over the span of the entry depths of the
            # rays that hit (EG3D uses the largest *entry* depth as their end, reproduced here).
            ray_start[~hits] = ray_start[hits].min()
            ray_end[~hits] = ray_start[hits].max()
        return ray_start, ray_end

    def _render_rays(self, planes, decoder, ray_origins, ray_directions, limits, options, deterministic):
        n, m, _ = ray_origins.shape
        depths = coarse_depths(n, m, *limits, options["depth_resolution"],
                               options["disparity_space_sampling"], deterministic, ray_origins.device)
        # options["coarse_gradients"] = False: the coarse samples enter the composite as constants
        # (the fine ones, where the weight is, keep their gradients): half the backward pass.
        with torch.set_grad_enabled(torch.is_grad_enabled() and options.get("coarse_gradients", True)):
            colors, densities = self._query(planes, decoder, ray_origins, ray_directions, depths, options,
                                            deterministic)

        fine_count = options["depth_resolution_importance"]
        if fine_count > 0:
            _, _, coarse_weights = self.ray_marcher(colors, densities, depths, options)
            fine = importance_depths(depths, coarse_weights, fine_count, deterministic)
            fine_colors, fine_densities = self._query(planes, decoder, ray_origins, ray_directions, fine, options,
                                                      deterministic)
            depths, colors, densities = merge_samples(depths, colors, densities, fine, fine_colors, fine_densities)

        features, depth, weights = self.ray_marcher.march(colors, densities, depths, options)
        return {
            "features": features,
            "depth": depth,
            "depths": depths,
            "sigma": densities,
            "weights": weights,
        }

    def _query(self, planes, decoder, ray_origins, ray_directions, depths, options, deterministic):
        """Decoder outputs at `depths` along the rays: colours (N,M,S,C) and densities (N,M,S,1)."""
        n, m, samples, _ = depths.shape
        points = (ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)).reshape(n, -1, 3)
        directions = ray_directions.unsqueeze(-2).expand(-1, -1, samples, -1).reshape(n, -1, 3)
        out = self.run_model(planes, decoder, points, directions, options, deterministic=deterministic)
        colors = out["rgb"].reshape(n, m, samples, out["rgb"].shape[-1])
        return colors, out["sigma"].reshape(n, m, samples, 1)

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options, deterministic=False):
        """Decoder outputs {'rgb', 'sigma'} at arbitrary points (N, M, 3)."""
        self.plane_axes = self.plane_axes.to(sample_coordinates.device)
        colour_channels = options.get("colour_channels")  # decode only the first k colour features (3: RGB)
        if hasattr(decoder, "decode_mean"):  # EG3D's decoder reads the planes' mean: sum them where they lie
            mean = sample_plane_mean(self.plane_axes, planes, sample_coordinates, options["box_warp"])
            out = decoder.decode_mean(mean, sample_directions, colour_channels)
        else:
            features = sample_from_planes(self.plane_axes, planes, sample_coordinates, padding_mode="zeros",
                                          box_warp=options["box_warp"])
            extra = {} if colour_channels is None else {"colour_channels": colour_channels}
            out = decoder(features, sample_directions, **extra)
        noise = options.get("density_noise", 0)
        if noise > 0 and not deterministic:
            out["sigma"] = out["sigma"] + torch.randn_like(out["sigma"]) * noise
        return out
