"""Semantic volume rendering on top of the frozen backbone, and labels for any view.

With the density prior (the paper's default) the semantic features are composited with the
backbone's own interval weights, at the backbone's own (coarse + importance) sample depths, so
the labels sit exactly where the RGB branch puts its surfaces. EG3D composites an interval with
the mean of its two end samples, so a ray's result is

    sum_i w_i (v_i + v_{i+1}) / 2  =  sum_j c_j v_j,   c_j = (w_{j-1} + w_j) / 2

i.e. a per-sample coefficient c_j: the ray's weight distribution over its S samples (48 for the
default, 96 for EG3D). Decoding semantics at all of them costs as much as the backbone's own
render, so by default each ray is represented by a `SAMPLES_PER_RAY`-point quadrature of that
distribution instead: the depths at its quantiles (i + 1/2) / k (inverse CDF over the
backbone's intervals, as its importance sampler does), each carrying total / k of the weight.
The opacity stays exactly the backbone's; a sharp surface puts all k points on it; a diffuse
one is averaged where its weight is. Rays whose total weight is negligible (they miss the
head) are not decoded at all. `samples_per_ray=None` gives the exact composite over all samples.

Without the density prior (ablation) the branch predicts its own σ at the same sample depths
and composites with weights from that σ, through EG3D's ray marcher.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.generator.rendering import MipRayMarcher2
from core.generator.triplane import Identity, View
from core.semantic.branch import SemanticBranch, SemanticIdentity, plane_grid

# Samples whose compositing coefficient is below this are skipped (see the module docstring).
MIN_SAMPLE_WEIGHT = 1e-4
# Semantic decoder evaluations per ray: a quadrature of the backbone's weights (module docstring).
SAMPLES_PER_RAY = 8


@dataclass
class PriorSamples:
    """A view's samples reduced to what compositing with the backbone's density needs.

    Per batch item (lists: each item has its own number R of visible rays): the index of each
    visible ray in the view (R,), the plane coordinates of its k points (3, R, k, 2) and their
    compositing coefficients (R, k).
    """

    rays: list[torch.Tensor]
    grids: list[torch.Tensor]
    coefficients: list[torch.Tensor]
    opacity: torch.Tensor  # (N, 1, M): the composite of 1, i.e. the backbone's weight total

    def points_per_ray(self) -> float:
        """Mean number of decoder evaluations per ray of the view (the cost of a semantic view)."""
        decoded = sum(coefficients.numel() for coefficients in self.coefficients)
        return decoded / (self.opacity.shape[0] * self.opacity.shape[2])


@dataclass
class DenseSamples:
    """All of a view's samples, for a branch that predicts its own σ (density prior off)."""

    origins: torch.Tensor  # (N, M, 3)
    directions: torch.Tensor  # (N, M, 3)
    depths: torch.Tensor  # (N, M, S); the points are made per render: (N, M, S, 3) would be large
    box_warp: float


@dataclass
class ViewPrior:
    """What the frozen backbone contributes to one semantic view; computed once, without grads."""

    samples: PriorSamples | DenseSamples
    rgb: torch.Tensor  # (N, 3, H, W): the backbone's final image, in [-1, 1]
    resolution: int  # neural rendering resolution of the samples (h = w)


@dataclass
class SemanticOutput:
    logits: torch.Tensor  # (N, K, H, W) at the output resolution
    raw_logits: torch.Tensor  # (N, K, h, w) volume-rendered, at the neural resolution
    feature_image: torch.Tensor  # (N, F, h, w) rendered semantic features
    opacity: torch.Tensor  # (N, 1, h, w)


@dataclass
class LabelledView:
    labels: torch.Tensor  # (N, H, W) int64
    logits: torch.Tensor  # (N, K, H, W)
    view: View  # the backbone's render of the same view (image, depth, samples)


# ------------------------------------------------------------------ the backbone's side
def sample_coefficients(weights: torch.Tensor) -> torch.Tensor:
    """Per-sample coefficients (..., S) from interval weights (..., S-1): c_j = (w_{j-1} + w_j) / 2."""
    padded = F.pad(weights, (1, 1))  # no interval before the first or after the last sample
    return (padded[..., :-1] + padded[..., 1:]) / 2


def quantile_depths(depths: torch.Tensor, weights: torch.Tensor, count: int) -> torch.Tensor:
    """Depths (R, count) at the quantiles (i + 1/2) / count of each ray's interval weights.

    depths (R, S) are interval edges, weights (R, S-1) the intervals' weights; within an
    interval the weight is spread uniformly (inverse-CDF sampling, like EG3D's sample_pdf with
    fixed, centred quantiles).
    """
    cdf = torch.cumsum(weights, 1) / weights.sum(1, keepdim=True).clamp_min(1e-12)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], 1)  # (R, S): CDF at each edge
    quantiles = (torch.arange(count, device=depths.device, dtype=depths.dtype) + 0.5) / count
    quantiles = quantiles.expand(depths.shape[0], count).contiguous()
    upper = torch.searchsorted(cdf.contiguous(), quantiles, right=True).clamp(1, depths.shape[1] - 1)
    lower = upper - 1
    cdf_low, cdf_high = cdf.gather(1, lower), cdf.gather(1, upper)
    depth_low, depth_high = depths.gather(1, lower), depths.gather(1, upper)
    fraction = (quantiles - cdf_low) / (cdf_high - cdf_low).clamp_min(1e-12)
    return depth_low + fraction.clamp(0, 1) * (depth_high - depth_low)


def prior_samples(view: View, origins, directions, box_warp: float, min_weight: float = MIN_SAMPLE_WEIGHT,
                  samples_per_ray: int | None = SAMPLES_PER_RAY) -> PriorSamples:
    """Where to decode semantics for a backbone render (return_samples=True), and with what weight."""
    depths, weights = view.samples["depths"][..., 0], view.samples["weights"][..., 0]  # (N,M,S), (N,M,S-1)
    totals = weights.sum(2)  # (N, M)
    rays, grids, coefficients = [], [], []
    for i in range(depths.shape[0]):
        visible = torch.nonzero(totals[i] > min_weight).squeeze(1)
        ray_depths, ray_weights = depths[i, visible], weights[i, visible]
        if samples_per_ray is None:
            ray_coefficients = sample_coefficients(ray_weights)  # (R, S)
        else:
            ray_depths = quantile_depths(ray_depths, ray_weights, samples_per_ray)
            ray_coefficients = (totals[i, visible] / samples_per_ray)[:, None].expand(-1, samples_per_ray)
        points = origins[i, visible, None] + ray_depths[..., None] * directions[i, visible, None]  # (R, k, 3)
        rays.append(visible)
        grids.append(plane_grid(points, box_warp))
        coefficients.append(ray_coefficients.contiguous())
    num_rays = depths.shape[1]
    opacity = torch.stack([_scatter_rays(c.sum(1)[None], r, num_rays) for c, r in zip(coefficients, rays)])
    return PriorSamples(rays, grids, coefficients, opacity)


def _scatter_rays(values: torch.Tensor, rays: torch.Tensor, num_rays: int) -> torch.Tensor:
    """Per-visible-ray values (C, R) into all of a view's rays (C, M), zero elsewhere."""
    return values.new_zeros(values.shape[0], num_rays).index_copy(1, rays, values)


def _camera_batch(camera_label: torch.Tensor, n: int, device) -> torch.Tensor:
    camera_label = torch.as_tensor(camera_label, dtype=torch.float32, device=device)
    if camera_label.ndim == 1:
        camera_label = camera_label[None]
    if camera_label.shape[0] == 1 and n > 1:
        camera_label = camera_label.expand(n, -1)
    return camera_label


def _rays(G, camera_label: torch.Tensor, resolution: int):
    cam2world = camera_label[:, :16].view(-1, 4, 4)
    intrinsics = camera_label[:, 16:25].view(-1, 3, 3)
    return G.ray_sampler(cam2world, intrinsics, resolution)


@torch.no_grad()
def view_prior(
    G,
    identity: Identity,
    camera_label: torch.Tensor,
    neural_resolution: int,
    density_prior: bool = True,
    min_weight: float = MIN_SAMPLE_WEIGHT,
    view: View | None = None,
    samples_per_ray: int | None = SAMPLES_PER_RAY,
) -> tuple[ViewPrior, View]:
    """Render (or reuse) the backbone's view and keep what the semantic branch needs from it."""
    camera_label = _camera_batch(camera_label, len(identity), identity.planes.device)
    if view is None:
        view = G.render(identity, camera_label, neural_resolution, deterministic=True, return_samples=True)
    elif view.samples is None or view.depth.shape[-1] != neural_resolution:
        raise ValueError(f"the given view must be rendered with return_samples=True at the neural resolution "
                         f"{neural_resolution}")
    origins, directions = _rays(G, camera_label, neural_resolution)
    box_warp = G.rendering_kwargs["box_warp"]
    if density_prior:
        samples = prior_samples(view, origins, directions, box_warp, min_weight, samples_per_ray)
    else:
        samples = DenseSamples(origins, directions, view.samples["depths"][..., 0], box_warp)
    return ViewPrior(samples, view.image, neural_resolution), view


def crop_prior(prior: ViewPrior, top: int, left: int, size: int, output_resolution: int) -> ViewPrior:
    """The part of a view inside a square of `size` rays at (top, left), for training on crops.

    The RGB is cropped at the output resolution (the matching square, scaled).
    """
    rows, columns = torch.meshgrid(torch.arange(top, top + size), torch.arange(left, left + size), indexing="ij")
    inside = (rows * prior.resolution + columns).reshape(-1).to(prior.rgb.device)  # row-major, as the rays
    scale = output_resolution // prior.resolution
    rgb = F.interpolate(prior.rgb, size=(output_resolution,) * 2, mode="bilinear", align_corners=False,
                        antialias=prior.rgb.shape[-1] > output_resolution)
    rgb = rgb[..., top * scale:(top + size) * scale, left * scale:(left + size) * scale]
    return ViewPrior(_crop_samples(prior.samples, inside, prior.resolution ** 2), rgb, size)


def _crop_samples(samples, inside: torch.Tensor, num_rays: int):
    if isinstance(samples, DenseSamples):
        return DenseSamples(samples.origins[:, inside], samples.directions[:, inside], samples.depths[:, inside],
                            samples.box_warp)
    # Renumber the rays: position in the crop, or -1 outside it.
    renumber = torch.full((num_rays,), -1, dtype=torch.long, device=inside.device)
    renumber[inside] = torch.arange(len(inside), device=inside.device)
    rays, grids, coefficients = [], [], []
    for ray, grid, coefficient in zip(samples.rays, samples.grids, samples.coefficients):
        new_index = renumber[ray]
        kept = new_index >= 0
        rays.append(new_index[kept])
        grids.append(grid[:, kept])
        coefficients.append(coefficient[kept])
    return PriorSamples(rays, grids, coefficients, samples.opacity[:, :, inside])


# ------------------------------------------------------------------ the semantic side
def render_semantic(branch: SemanticBranch, planes: torch.Tensor, prior: ViewPrior,
                    output_resolution: int) -> SemanticOutput:
    """Volume-render the semantic features of one view and super-resolve them to class logits."""
    if isinstance(prior.samples, PriorSamples) != branch.density_prior:
        raise ValueError("the view was prepared for a branch "
                         f"{'with' if isinstance(prior.samples, PriorSamples) else 'without'} the density prior")
    if isinstance(prior.samples, PriorSamples):
        features, opacity = _composite_with_prior(branch, planes, prior.samples)
    else:
        features, opacity = _composite_with_own_density(branch, planes, prior.samples)
    raw_logits = _raw_logits(branch, features, opacity)
    feature_image, raw_logits, opacity = (_as_image(x, prior.resolution) for x in (features, raw_logits, opacity))
    logits = branch.superresolution(feature_image, raw_logits, opacity, prior.rgb, output_resolution)
    return SemanticOutput(logits, raw_logits, feature_image, opacity)


def _composite_with_prior(branch, planes, samples: PriorSamples):
    """Features (N, F, M) composited with the backbone's weights, and the opacity (N, 1, M)."""
    per_item = []
    num_rays = samples.opacity.shape[2]
    for item_planes, rays, grid, coefficients in zip(planes, samples.rays, samples.grids, samples.coefficients):
        r, k = coefficients.shape
        decoded = branch.decode_grid(item_planes, grid.reshape(3, r * k, 2))["features"]  # (F, R*k)
        composited = (decoded.view(-1, r, k) * coefficients).sum(2)
        per_item.append(_scatter_rays(composited, rays, num_rays))
    return torch.stack(per_item), samples.opacity


def _composite_with_own_density(branch, planes, samples: DenseSamples):
    """As _composite_with_prior, with weights from the branch's own σ at the same samples."""
    n, m, s = samples.depths.shape
    points = samples.origins.unsqueeze(-2) + samples.depths.unsqueeze(-1) * samples.directions.unsqueeze(-2)
    features, sigma = [], []
    for item_planes, item_points in zip(planes, points):
        decoded = branch.decode_grid(item_planes, plane_grid(item_points, samples.box_warp).reshape(3, m * s, 2))
        features.append(decoded["features"].view(-1, m, s))
        sigma.append(decoded["sigma"].view(m, s))
    features, sigma = torch.stack(features), torch.stack(sigma)  # (N, F, M, S), (N, M, S)
    # EG3D's activation on the interval means, as MipRayMarcher2 does.
    interval_sigma = MipRayMarcher2.activated_density((sigma[..., :-1] + sigma[..., 1:]) / 2)
    deltas = samples.depths[..., 1:] - samples.depths[..., :-1]
    weights = MipRayMarcher2.interval_weights(interval_sigma[..., None], deltas[..., None])[..., 0]
    composited = (features * sample_coefficients(weights)[:, None]).sum(3)
    return composited, weights.sum(2)[:, None]


def _raw_logits(branch: SemanticBranch, features: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Composited per-point logits (N, K, M): classify(features), its bias weighted by opacity.

    The classifier is affine, so sum_j c_j (W v_j + b) = W (sum_j c_j v_j) + b * opacity; the
    transparent remainder of each ray gets the branch's learnt logits for "nothing hit".
    """
    classifier = branch.decoder.classifier
    return (torch.matmul(classifier.weight, features) + classifier.bias[:, None] * opacity
            + branch.empty_logits[:, None] * (1 - opacity))


def _as_image(values: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, M) per-ray values → (N, C, h, w) images (rays are in row-major pixel order)."""
    return values.reshape(values.shape[0], values.shape[1], resolution, resolution)


# ------------------------------------------------------------------ inference
def neural_resolution_for(G, resolution: int) -> int:
    """Render semantics at the backbone's neural resolution, or lower for small outputs."""
    return min(int(G.neural_rendering_resolution), int(resolution))


@torch.no_grad()
def labels_for_view(
    branch: SemanticBranch,
    G,
    identity: Identity | SemanticIdentity,
    camera_label: torch.Tensor,
    resolution: int | None = None,
    view: View | None = None,
    min_weight: float = MIN_SAMPLE_WEIGHT,
    samples_per_ray: int | None = SAMPLES_PER_RAY,
) -> LabelledView:
    """Part labels (N, H, W) of a view of identities; the semantic tri-plane is cached per identity.

    Pass `view` (a render of the same camera at the neural resolution with return_samples=True)
    to reuse a backbone render the caller already has, e.g. the RGB shown next to the labels.
    """
    semantic = branch.semantic_identity(identity)
    resolution = int(resolution or G.img_resolution)
    neural_resolution = neural_resolution_for(G, resolution)
    prior, view = view_prior(G, semantic.identity, camera_label, neural_resolution, branch.density_prior,
                             min_weight, view, samples_per_ray)
    output = render_semantic(branch, semantic.planes, prior, resolution)
    return LabelledView(output.logits.argmax(1), output.logits, view)
