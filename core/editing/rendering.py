"""Differentiable renders for inversion and editing: RGB and semantic logits as functions of
(w+, yaw, pitch).

`core.backbone` and `core.semantic.labels_for_view` render without gradients (and the semantic
branch's `encode` detaches the generator's block features, as training the branch wants). Here
gradients must reach the latent and the camera, so the same pieces are composed with autograd
on: `G.synthesize`, `G.render(..., return_samples=True)`, `prior_samples` (the density prior) and
`render_semantic`, with the semantic tri-plane computed from the *attached* block features.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.camera import DEFAULT_FOV_DEG, fov_to_intrinsics, project_to_pixels
from core.fitting.trainer import composite_on_grey, image_as_shown, learnt_on_grey
from core.generator.rendering import MipRayMarcher2
from core.generator.triplane import CPU_RAY_CHUNK, View
from core.semantic.rendering import (SAMPLES_PER_RAY, DenseSamples, ViewPrior, _rays, prior_samples,
                                     render_semantic)

_POLAR_EPS = 1e-5
PITCH_LIMIT = 60.0  # degrees: the look-at frame degenerates towards ±90
# Pixels from a crop's edge that the semantic super-resolution's 3×3 convolutions (two at the
# neural resolution, two at the output's) see past: logits there differ from a full render's.
SEMANTIC_BORDER = 4
MAX_CROPS = 4  # separate squares per edit at most (each runs the semantic super-resolution)


@dataclass(frozen=True)
class CameraRig:
    """What stays fixed while yaw/pitch are optimised: the backbone's orbit, pivot and fov."""

    radius: float
    pivot: tuple
    fov: float = DEFAULT_FOV_DEG

    @classmethod
    def of(cls, G, fov: float = DEFAULT_FOV_DEG) -> "CameraRig":
        kwargs = G.rendering_kwargs
        return cls(float(kwargs.get("avg_camera_radius", 2.7)),
                   tuple(float(v) for v in kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.0))), float(fov))

    def label(self, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """EG3D's 25-float label (1, 25) of a look-at camera, differentiable in yaw/pitch (degrees).

        The same construction as core.camera.look_at_cam2world (LookAtPoseSampler), in torch.
        """
        yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(())
        pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(())
        azimuth = math.pi / 2 + torch.deg2rad(yaw)
        polar = (math.pi / 2 + torch.deg2rad(pitch)).clamp(_POLAR_EPS, math.pi - _POLAR_EPS)
        phi = torch.acos((1.0 - 2.0 * polar / math.pi).clamp(-1 + 1e-7, 1 - 1e-7))
        position = self.radius * torch.stack([
            torch.sin(phi) * torch.cos(math.pi - azimuth),
            torch.cos(phi),
            torch.sin(phi) * torch.sin(math.pi - azimuth),
        ])
        target = torch.tensor(self.pivot, dtype=torch.float32)
        forward = F.normalize(target - position, dim=0)
        up = torch.tensor([0.0, 1.0, 0.0])
        right = F.normalize(torch.linalg.cross(forward, up), dim=0)
        down = F.normalize(torch.linalg.cross(forward, right), dim=0)
        rotation = torch.stack([right, down, forward], dim=1)
        pose = torch.cat([torch.cat([rotation, position[:, None]], 1), torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 0)
        return torch.cat([pose.reshape(16), fov_to_intrinsics(self.fov).reshape(9)])[None]


@dataclass
class Render:
    image: torch.Tensor  # (1, 3, r, r) in [-1, 1]
    logits: torch.Tensor | None  # (1, K, r, r) or None when no branch was given


def render(G, ws: torch.Tensor, camera_label: torch.Tensor, resolution: int, branch=None,
           samples_per_ray: int | None = SAMPLES_PER_RAY, backbone_samples: tuple[int, int] | None = None,
           identity=None) -> Render:
    """RGB (and class logits with a branch) of latent ws (1, num_ws, w_dim) at resolution², with
    autograd to ws and the camera label. The neural renderer runs at `resolution` (capped at the
    backbone's own), and the image is resized to `resolution` when the backbone super-resolves.
    `samples_per_ray`: the semantic branch's quadrature points per ray (its density prior);
    `backbone_samples`: (coarse, importance) samples per ray instead of the backbone's own;
    `identity`: `G.synthesize(ws)` when the caller has it."""
    identity = G.synthesize(ws) if identity is None else identity
    neural = min(int(resolution), int(G.neural_rendering_resolution))
    camera_label = camera_label.to(ws.device)
    view = G.render(identity, camera_label, neural, deterministic=True,
                    return_samples=branch is not None or learnt_on_grey(G), samples_per_ray=backbone_samples)
    image = _resized(image_as_shown(G, view), resolution)
    if branch is None:
        return Render(image, None)
    origins, directions = _rays(G, camera_label, neural)
    semantic_planes = branch.triplane(identity.block_features)  # attached: gradients reach ws
    logits = _semantic_logits(G, branch, semantic_planes, view, origins, directions, neural, resolution, samples_per_ray)
    return Render(image, logits)


@torch.no_grad()
def render_still(G, ws: torch.Tensor, camera_label: torch.Tensor, resolution: int, branch=None) -> Render:
    """`render` without autograd, for results and previews: on a CPU, empty space is skipped as the
    factory and the studio's frames skip it (core.generator.culling says what may differ from the
    full render), which makes a 128² view about a third cheaper, its occupancy grid included. The
    grid of a latent is kept (`culling.cached_occupancy_grid`), so further views of it cost only the render."""
    if ws.device.type != "cpu":
        return render(G, ws, camera_label, resolution, branch)
    from core.generator.culling import cached_occupancy_grid, render_culled
    from core.semantic.rendering import labels_for_view

    identity = G.synthesize(ws)
    neural = min(int(resolution), int(G.neural_rendering_resolution))
    camera_label = camera_label.to(ws.device)
    view, _ = render_culled(G, identity, camera_label, neural, cached_occupancy_grid(G, identity))
    image = _resized(image_as_shown(G, view), resolution)
    if branch is None:
        return Render(image, None)
    return Render(image, labels_for_view(branch, G, identity, camera_label, resolution, view=view).logits)


@torch.no_grad()
def render_opacity(G, ws: torch.Tensor, camera_label: torch.Tensor, resolution: int) -> np.ndarray:
    """(R, R) float32 in [0, 1]: the accumulated opacity of each ray of a view (the plain
    renderer, no culling), R capped at the backbone's neural resolution: the silhouette the
    floater figures compare (core.editing.evaluate.floater_figures)."""
    neural = min(int(resolution), int(G.neural_rendering_resolution))
    view = G.render(G.synthesize(ws), camera_label.to(ws.device), neural, deterministic=True, return_samples=True)
    return view.opacity()[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def _semantic_logits(G, branch, semantic_planes, view: View, origins, directions, neural: int, resolution: int,
                     samples_per_ray: int | None) -> torch.Tensor:
    """Class logits (1, K, resolution, resolution) of a square of rays (neural² of them, row-major)
    rendered by the backbone as `view`; `semantic_planes` = branch.triplane(block features),
    computed with autograd on, so that gradients reach the identity's block features."""
    box_warp = G.rendering_kwargs["box_warp"]
    if branch.density_prior:
        samples = prior_samples(view, origins, directions, box_warp, samples_per_ray=samples_per_ray)
    else:
        samples = DenseSamples(origins, directions, view.samples["depths"][..., 0], box_warp)
    prior = ViewPrior(samples, view.image, neural)
    return render_semantic(branch, semantic_planes, prior, resolution).logits


# ------------------------------------------------------------------ rendering part of a view
@dataclass(frozen=True)
class Crop:
    """A square of `size` rays at (top, left) in the view's grid of resolution² rays."""

    top: int
    left: int
    size: int
    resolution: int

    @classmethod
    def around(cls, region: np.ndarray, margin: int) -> "Crop":
        """The smallest square holding the bounding box of `region` (R, R) grown by `margin`,
        moved inside the view (the whole view when it does not fit)."""
        resolution = region.shape[0]
        rows, columns = np.nonzero(region)
        if len(rows) == 0:
            return cls(0, 0, resolution, resolution)
        top, bottom = rows.min() - margin, rows.max() + 1 + margin
        left, right = columns.min() - margin, columns.max() + 1 + margin
        size = min(resolution, max(bottom - top, right - left))
        # Centre the square on the box, then shift it inside the view.
        top = int(np.clip((top + bottom - size) // 2, 0, resolution - size))
        left = int(np.clip((left + right - size) // 2, 0, resolution - size))
        return cls(top, left, int(size), resolution)

    @classmethod
    def each_around(cls, region: np.ndarray, margin: int) -> list["Crop"]:
        """Disjoint squares covering `region` with `margin`: one per connected part (two eyes are
        two small squares, not one wide one), merged where they would overlap; one square
        around all of it when there are more than MAX_CROPS parts."""
        count, parts = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
        crops = [cls.around(parts == label, margin) for label in range(1, count)]
        if not crops or len(crops) > MAX_CROPS:
            return [cls.around(region, margin)]
        merged = True
        while merged:
            merged = False
            for i, j in itertools.combinations(range(len(crops)), 2):
                if crops[i].overlaps(crops[j]):
                    crops[i] = cls.around(crops[i].mask() | crops[j].mask(), 0)
                    del crops[j]
                    merged = True
                    break
        return crops

    def overlaps(self, other: "Crop") -> bool:
        return (self.top < other.top + other.size and other.top < self.top + self.size
                and self.left < other.left + other.size and other.left < self.left + self.size)

    @classmethod
    def whole(cls, resolution: int) -> "Crop":
        return cls(0, 0, resolution, resolution)

    @property
    def is_whole(self) -> bool:
        return self.size == self.resolution

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.size), slice(self.left, self.left + self.size)

    def mask(self) -> np.ndarray:
        """(R, R) bool: the crop's pixels."""
        inside = np.zeros((self.resolution, self.resolution), bool)
        inside[self.slices] = True
        return inside

    def indices(self) -> torch.Tensor:
        """Row-major indices of the crop's rays in the view (row-major, as the crop's pixels)."""
        rows = torch.arange(self.top, self.top + self.size)
        columns = torch.arange(self.left, self.left + self.size)
        return (rows[:, None] * self.resolution + columns[None]).reshape(-1)


@dataclass
class PartRender:
    """Renders of crops of a view (RGB, and class logits with a branch) plus other rays' RGB."""

    images: list[torch.Tensor]  # per crop (1, 3, s, s) in [-1, 1]
    logits: list[torch.Tensor] | None  # per crop (1, K, s, s)
    extra: torch.Tensor  # (1, 3, E) in [-1, 1]: the RGB of the other rays


def render_part(G, ws: torch.Tensor, camera_label: torch.Tensor, crops: Crop | list[Crop],
                extra: torch.Tensor | None = None, branch=None, backbone_samples: tuple[int, int] | None = None,
                samples_per_ray: int | None = SAMPLES_PER_RAY, identity=None,
                coarse_gradients: bool = True) -> PartRender:
    """`render` restricted to the rays of `crops` (disjoint squares of one view: RGB and, with a
    branch, logits) and the rays `extra` (indices into the view's resolution² rays; RGB only),
    with autograd to ws.

    Every ray is rendered exactly as in `render(G, ws, camera_label, crop.resolution, branch)`
    (a ray's samples depend on that ray alone), so the crop of a full render and this agree to
    float rounding, except the semantic branch's super-resolution convolutions, which see zeros
    beyond a crop's edges instead of the neighbouring pixels (within SEMANTIC_BORDER pixels of
    an edge that is not the view's). Only for backbones without super-resolution, whose neural
    resolution is the image's (`supports_parts`). `backbone_samples` = (coarse, importance)
    samples per ray instead of the backbone's own, for cheaper optimisation steps. `identity`:
    `G.synthesize(ws)` when the caller has it (with autograd, for its own terms).
    `coarse_gradients=False`: the backbone's coarse samples enter the composite as constants, only
    the importance samples (where a ray's weight is) pass gradients: the same render, about half
    the backward pass (`EditSettings.coarse_gradients`).
    """
    crops = [crops] if isinstance(crops, Crop) else list(crops)
    resolution = crops[0].resolution
    if not supports_parts(G, resolution):
        raise ValueError("rendering part of a view needs a backbone without super-resolution, at most at its "
                         "neural rendering resolution")
    identity = G.synthesize(ws) if identity is None else identity
    camera_label = camera_label.to(ws.device)
    extra = torch.zeros(0, dtype=torch.long) if extra is None else extra
    index = torch.cat([crop.indices() for crop in crops] + [extra.cpu()]).to(ws.device)
    origins, directions = _rays(G, camera_label, resolution)
    origins, directions = origins[:, index], directions[:, index]
    # The checkpoint's sample counts, or these; RGB alone is decoded (nothing here reads the other
    # colour features), and coarse_gradients=False makes the coarse samples constants.
    options = dict(G._rendering_options(backbone_samples), colour_channels=3, coarse_gradients=coarse_gradients)
    rendered = G.renderer(identity.planes, G.decoder, origins, directions, options, deterministic=True,
                          return_samples=True,
                          max_rays_per_chunk=CPU_RAY_CHUNK if identity.planes.device.type == "cpu" else None)
    rgb = rendered["features"][..., :3].transpose(1, 2)  # (1, 3, M) in [-1, 1], EG3D's composite on black
    shown = composite_on_grey(rgb, rendered["weights_total"].transpose(1, 2)) * 2 - 1 if learnt_on_grey(G) else rgb
    semantic_planes = branch.triplane(identity.block_features) if branch is not None else None  # attached
    images, logits, first = [], [], 0
    for crop in crops:
        square, size = slice(first, first + crop.size ** 2), crop.size
        first = square.stop
        images.append(shown[..., square].reshape(1, 3, size, size))
        if branch is None:
            continue
        samples = {key: rendered[key][:, square] for key in ("depths", "weights", "sigma")}
        raw = rgb[..., square].reshape(1, 3, size, size)  # what the branch sees: the backbone's own image
        view = View(raw, raw, raw, rendered["depth"][:, square].transpose(1, 2).reshape(1, 1, size, size), samples)
        logits.append(_semantic_logits(G, branch, semantic_planes, view, origins[:, square], directions[:, square],
                                       size, size, samples_per_ray))
    return PartRender(images, logits if branch is not None else None, shown[..., first:])


def random_box_points(G, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 3) points drawn uniformly in the tri-plane box [-box_warp/2, box_warp/2]³."""
    box = float(G.rendering_kwargs["box_warp"])
    return (torch.rand(count, 3, generator=generator) - 0.5) * box


def project_points(camera_label: torch.Tensor, points: torch.Tensor, resolution: int) -> torch.Tensor:
    """(M,) long: the row-major index of the pixel of a resolution² view (camera label (1, 25))
    each world point (M, 3) falls in; -1 for points behind the camera or outside the view."""
    row, column, z = project_to_pixels(camera_label, points, resolution)
    inside = (z > 0) & (column >= 0) & (column < resolution) & (row >= 0) & (row < resolution)
    return torch.where(inside, row * resolution + column, torch.full_like(row, -1))


def point_opacity(G, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(M,) opacity of a coarse sample interval of the backbone at world points (M, 3): 1 −
    exp(−σ δ), σ the marcher's activated density and δ the coarse samples' spacing: what a sample
    there adds to a ray, 0 in empty space, 1 in solid matter."""
    options = G.rendering_kwargs
    spacing = (float(options["ray_end"]) - float(options["ray_start"])) / int(options["depth_resolution"])
    raw = G.renderer.run_model(planes, G.decoder, points[None], torch.zeros_like(points)[None], options,
                               deterministic=True)["sigma"][0, :, 0]
    return 1 - torch.exp(-MipRayMarcher2.activated_density(raw) * spacing)


def supports_parts(G, resolution: int) -> bool:
    """Whether `render_part` can render parts of a view at this resolution (see there)."""
    return G.superresolution is None and int(resolution) <= int(G.neural_rendering_resolution)


def _resized(image: torch.Tensor, resolution: int) -> torch.Tensor:
    if image.shape[-1] == resolution:
        return image
    return F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > resolution)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] → (H, W, 3) uint8 (the studio's convention, core.imaging)."""
    from core.imaging import rgb_to_uint8

    return rgb_to_uint8(image)


def to_unit(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] → (H, W, 3) float64 in [0, 1], for PSNR."""
    return ((image.detach()[0].permute(1, 2, 0).double().cpu().numpy() + 1) / 2).clip(0, 1)
