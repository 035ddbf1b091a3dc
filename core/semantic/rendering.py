"""Semantic volume rendering on top of the frozen backbone, and labels for any view.

With the density prior (the paper's default) the semantic features are composited with the
backbone's own interval weights, at the backbone's own (coarse + importance) sample depths, so
the labels sit exactly where the RGB branch puts its surfaces. EG3D composites an interval with
the mean of its two end samples, so a ray's result is

    sum_i w_i (v_i + v_{i+1}) / 2  =  sum_j c_j v_j,   c_j = (w_{j-1} + w_j) / 2

i.e. a per-sample coefficient c_j: the ray's weight distribution over its S samples (48 for the
default, 96 for EG3D). Decoding semantics at all of them costs as much as the backbone's own
render, so by default each ray is represented by a `SAMPLES_PER_RAY`-point quadrature of that
distribution: the samples at its quantiles (i + 1/2) / k, each with weight total / k. The
opacity stays exactly the backbone's, a sharp surface (weight on a few samples) is reproduced
almost exactly, and a diffuse one is averaged where its weight is. Picks with a negligible
coefficient (rays that miss the head) are dropped altogether. `samples_per_ray=None` gives the
exact composite over every sample with weight instead.

Without the density prior (ablation) the branch predicts its own σ at the same sample depths
and composites with weights from that σ, through EG3D's ray marcher.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.generator.rendering import MipRayMarcher2
from core.generator.triplane import Identity, View
from core.semantic.branch import SemanticBranch, SemanticIdentity

# Samples whose compositing coefficient is below this are skipped (see the module docstring).
MIN_SAMPLE_WEIGHT = 1e-4
# Semantic decoder evaluations per ray: a quadrature of the backbone's weights (module docstring).
SAMPLES_PER_RAY = 8


@dataclass
class PriorSamples:
    """A view's backbone samples, reduced to what compositing with the backbone's density needs.

    Per batch item (a list, because each keeps a different number of samples): world points
    (P, 3), the index of their ray in the view (P,), and their coefficient c_j (P, 1).
    """

    points: list[torch.Tensor]
    rays: list[torch.Tensor]
    coefficients: list[torch.Tensor]
    opacity: torch.Tensor  # (N, M, 1): the composite of 1, i.e. the backbone's weight total

    def points_per_ray(self) -> float:
        """Mean number of decoder evaluations per ray (the cost of a semantic view)."""
        return sum(len(rays) for rays in self.rays) / (self.opacity.shape[0] * self.opacity.shape[1])


@dataclass
class DenseSamples:
    """All of a view's sample depths along its rays, for a branch that predicts its own σ."""

    origins: torch.Tensor  # (N, M, 3)
    directions: torch.Tensor  # (N, M, 3)
    depths: torch.Tensor  # (N, M, S, 1)


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
    """Per-sample coefficients (N, M, S, 1) from interval weights (N, M, S-1, 1)."""
    padded = F.pad(weights, (0, 0, 1, 1))  # no interval before the first or after the last sample
    return (padded[:, :, :-1] + padded[:, :, 1:]) / 2


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


def prior_samples(view: View, origins, directions, min_weight: float = MIN_SAMPLE_WEIGHT,
                  samples_per_ray: int | None = SAMPLES_PER_RAY) -> PriorSamples:
    """The points, rays and coefficients at which to decode semantics for a backbone render.

    `view` must come from G.render(..., return_samples=True). With `samples_per_ray` None every
    sample whose coefficient exceeds `min_weight` is kept (exact up to those); otherwise each ray
    gets a `samples_per_ray`-point quadrature of its weight distribution (see the module doc).
    """
    depths, weights = view.samples["depths"], view.samples["weights"]
    coefficients = sample_coefficients(weights)[..., 0]  # (N, M, S)
    if samples_per_ray is not None:
        coefficients = _weight_quadrature(coefficients, samples_per_ray)
    points = origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)  # (N, M, S, 3)
    n, m, s = coefficients.shape
    kept_points, kept_rays, kept_coefficients = [], [], []
    for i in range(n):
        flat_coefficients = coefficients[i].reshape(m * s)
        keep = torch.nonzero(flat_coefficients > min_weight).squeeze(1)
        kept_points.append(points[i].reshape(m * s, 3)[keep])
        kept_rays.append(torch.div(keep, s, rounding_mode="floor"))
        kept_coefficients.append(flat_coefficients[keep].unsqueeze(1))
    # The composite of 1 along each ray, through the same samples as the features.
    opacity = torch.stack([_sum_per_ray(c, r, m) for c, r in zip(kept_coefficients, kept_rays)])
    return PriorSamples(kept_points, kept_rays, kept_coefficients, opacity)


def _weight_quadrature(coefficients: torch.Tensor, count: int) -> torch.Tensor:
    """Coefficients (N, M, S) re-weighted onto the samples at the quantiles (i + 1/2) / count.

    Each quantile carries an equal share of the ray's total weight, so a ray's coefficients
    still sum to the backbone's opacity, but at most `count` samples per ray are non-zero.
    Samples without weight are never picked; one holding much of it is picked several times.
    """
    total = coefficients.sum(2, keepdim=True)
    cdf = torch.cumsum(coefficients, 2) / total.clamp_min(1e-12)
    quantiles = (torch.arange(count, device=cdf.device, dtype=cdf.dtype) + 0.5) / count
    picked = torch.searchsorted(cdf.contiguous(), quantiles.expand(*cdf.shape[:2], count).contiguous())
    picked = picked.clamp_max(coefficients.shape[2] - 1)
    shares = (total / count).expand(-1, -1, count)
    return torch.zeros_like(coefficients).scatter_add_(2, picked, shares)


def _sum_per_ray(values: torch.Tensor, rays: torch.Tensor, num_rays: int) -> torch.Tensor:
    return values.new_zeros(num_rays, values.shape[1]).index_add(0, rays, values)


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
    if density_prior:
        samples = prior_samples(view, origins, directions, min_weight, samples_per_ray)
    else:
        samples = DenseSamples(origins, directions, view.samples["depths"])
    return ViewPrior(samples, view.image, neural_resolution), view


# ------------------------------------------------------------------ the semantic side
def render_semantic(branch: SemanticBranch, planes: torch.Tensor, prior: ViewPrior, output_resolution: int,
                    box_warp: float) -> SemanticOutput:
    """Volume-render the semantic features of one view and super-resolve them to class logits."""
    if isinstance(prior.samples, PriorSamples):
        features, opacity = _composite_with_prior(branch, planes, prior.samples, box_warp)
    else:
        features, opacity = _composite_with_own_density(branch, planes, prior.samples, box_warp)
    raw_logits = _raw_logits(branch, features, opacity)
    feature_image, raw_logits, opacity = (_as_image(x, prior.resolution) for x in (features, raw_logits, opacity))
    logits = branch.superresolution(feature_image, raw_logits, opacity, prior.rgb, output_resolution)
    return SemanticOutput(logits, raw_logits, feature_image, opacity)


def _composite_with_prior(branch, planes, samples: PriorSamples, box_warp):
    """Features (N, M, F) composited with the backbone's weights, and the opacity (N, M, 1)."""
    per_item = []
    num_rays = samples.opacity.shape[1]
    for i, (points, rays, coefficients) in enumerate(zip(samples.points, samples.rays, samples.coefficients)):
        decoded = branch.decode_points(planes[i:i + 1], points[None], box_warp)
        per_item.append(_sum_per_ray(decoded["features"][0] * coefficients, rays, num_rays))
    return torch.stack(per_item), samples.opacity


def _composite_with_own_density(branch, planes, samples: DenseSamples, box_warp):
    n, m, s, _ = samples.depths.shape
    points = samples.origins.unsqueeze(-2) + samples.depths * samples.directions.unsqueeze(-2)
    decoded = branch.decode_points(planes, points.reshape(n, m * s, 3), box_warp)
    features = decoded["features"].reshape(n, m, s, -1)
    sigma = decoded["sigma"].reshape(n, m, s, 1)
    # EG3D's activation (softplus with the -1 bias) on the interval means, as MipRayMarcher2 does.
    interval_sigma = F.softplus((sigma[:, :, :-1] + sigma[:, :, 1:]) / 2 - 1)
    weights = MipRayMarcher2.interval_weights(interval_sigma, samples.depths[:, :, 1:] - samples.depths[:, :, :-1])
    return MipRayMarcher2.composite(features, weights), weights.sum(2)


def _raw_logits(branch: SemanticBranch, features: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Composited per-point logits: classify(features) with the bias weighted by opacity.

    The classifier is affine, so sum_j c_j (W v_j + b) = W (sum_j c_j v_j) + b * opacity; the
    transparent remainder of each ray gets the branch's learnt logits for "nothing hit".
    """
    classifier = branch.decoder.classifier
    return (F.linear(features, classifier.weight) + classifier.bias * opacity
            + branch.empty_logits * (1 - opacity))


def _as_image(rays_values: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, M, C) per-ray values → (N, C, h, w) images."""
    n, _, c = rays_values.shape
    return rays_values.permute(0, 2, 1).reshape(n, c, resolution, resolution)


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
    output = render_semantic(branch, semantic.planes, prior, resolution, G.rendering_kwargs["box_warp"])
    return LabelledView(output.logits.argmax(1), output.logits, view)
