"""The semantic branch of DatasetNeRF: the only part of the model the studio trains.

Three trainable parts sit on top of a frozen tri-plane generator:

* `SemanticTriplane`: every synthesis block's output features, upsampled to the plane
  resolution, concatenated and mapped (1×1 conv) into three planes of `plane_channels` each.
* `SemanticDecoder`: an MLP from the averaged tri-plane features of a 3D point to 32 semantic
  features (and class logits through a linear classifier; σ too when the density prior is off).
* `SemanticSuperResolution`: refines the volume-rendered low-resolution semantic map to the
  output resolution and produces per-pixel class logits.

Rendering lives in `core.semantic.rendering`; this module only holds the networks.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.generator.rendering import generate_planes, project_onto_planes
from core.generator.triplane import Identity

# How many identities' semantic tri-planes a branch keeps; an orbit or a factory run works
# through one identity at a time, so a few suffice.
SEMANTIC_CACHE_SIZE = 8


@dataclass
class SemanticIdentity:
    """An identity together with its semantic tri-plane: what every view of it reuses."""

    identity: Identity
    planes: torch.Tensor  # (N, 3, plane_channels, R, R)

    def __len__(self) -> int:
        return len(self.identity)


class SemanticTriplane(nn.Module):
    """Multi-scale generator features → three semantic planes (N, 3, C, R, R).

    The paper upsamples every block's features to the plane resolution, concatenates them and
    reshapes the result into three planes. For EG3D that tensor has ~2900 channels at 256², so
    two exact rewrites keep it cheap, without changing the result:
    * the 1×1 projection is applied to each block *before* upsampling (bilinear upsampling acts
      per channel, the projection per pixel, so they commute), and the projections are summed;
    * the sum is built coarse to fine, doubling the resolution between blocks, the way the
      backbone's own skip architecture sums its ToRGB outputs: every block's features are thus
      upsampled by repeated 2× bilinear steps (EG3D's [1,3,3,1] filter is that same kernel),
      and the work is one upsampling of 3·C channels per level instead of one per block at R².
    """

    def __init__(self, block_channels: dict[int, int], plane_resolution: int, plane_channels: int, multiscale: bool):
        super().__init__()
        resolutions = sorted(block_channels)
        # Without multi-scale features only the last block (at the plane resolution) is used.
        self.resolutions = resolutions if multiscale else resolutions[-1:]
        self.plane_resolution = plane_resolution
        self.plane_channels = plane_channels
        out_channels = 3 * plane_channels
        self.projections = nn.ModuleDict({
            f"b{res}": nn.Conv2d(block_channels[res], out_channels, kernel_size=1, bias=False)
            for res in self.resolutions
        })
        # Summing k projections adds their variances; scale so the planes start near unit scale.
        with torch.no_grad():
            for projection in self.projections.values():
                projection.weight.mul_(1 / math.sqrt(len(self.resolutions)))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, block_features: dict[int, torch.Tensor]) -> torch.Tensor:
        missing = [res for res in self.resolutions if res not in block_features]
        if missing:
            raise ValueError(f"the identity lacks block features at resolutions {missing}; "
                             "synthesize it with G.synthesize() so every block's output is kept")
        total = None
        for res in self.resolutions:
            projected = self.projections[f"b{res}"](_unit_rms(block_features[res].float()))
            total = projected if total is None else upsample_to(total, res) + projected
        total = upsample_to(total, self.plane_resolution) + self.bias.view(1, -1, 1, 1)
        n = total.shape[0]
        return total.view(n, 3, self.plane_channels, self.plane_resolution, self.plane_resolution)


def upsample_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Repeated 2× bilinear upsampling of square images up to `resolution` (a power-of-two multiple)."""
    while images.shape[-1] < resolution:
        images = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    return images


def _unit_rms(features: torch.Tensor) -> torch.Tensor:
    """Scale each identity's block output to unit RMS.

    StyleGAN2 block outputs differ in magnitude by orders of magnitude between blocks (and
    between generators); without this the largest block would dominate the projection at
    initialisation. One scalar per identity and block keeps the spatial structure intact.
    """
    rms = features.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
    return features / rms


class SemanticDecoder(nn.Module):
    """Per-point MLP on the averaged tri-plane features, like EG3D's OSGDecoder for colour.

    Outputs 'features' (P, feature_channels), and 'sigma' (P, 1) raw density when the branch
    predicts its own (density prior off). `classify` maps features to class logits; it is
    affine, so compositing logits along a ray equals classifying the composited features.
    ReLU instead of OSGDecoder's softplus: this MLP runs on ~10^5 points per view on the CPU,
    where softplus costs several times more than the matrix products around it.
    """

    def __init__(self, plane_channels: int, hidden: int, feature_channels: int, num_classes: int,
                 predicts_density: bool):
        super().__init__()
        self.predicts_density = predicts_density
        self.hidden = nn.Linear(plane_channels, hidden)
        self.output = nn.Linear(hidden, feature_channels + (1 if predicts_density else 0))
        self.classifier = nn.Linear(feature_channels, num_classes)
        self.feature_channels = feature_channels

    def forward(self, averaged_features: torch.Tensor) -> dict:
        """Plane-averaged features (C, P), channels first → {'features' (F, P), 'sigma' (1, P) or None}.

        Channels first because that is how grid_sample returns the samples: no transposes of
        ~10^5 × 96 values per view.
        """
        hidden = F.relu(torch.addmm(self.hidden.bias[:, None], self.hidden.weight, averaged_features))
        x = torch.addmm(self.output.bias[:, None], self.output.weight, hidden)
        features = x[: self.feature_channels]
        sigma = x[self.feature_channels:] if self.predicts_density else None
        return {"features": features, "sigma": sigma}

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits (..., K) of per-point features (..., F), channels last."""
        return self.classifier(features)


_PLANE_AXES = generate_planes()


def plane_grid(points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """grid_sample coordinates (3, ..., 2) of world points (..., 3) in the three planes.

    The same projection as the backbone's planes (EG3D's plane axes, quirk included): the
    block features the semantic planes are made of are laid out in those axes.
    """
    flat = points.reshape(1, -1, 3) * (2 / box_warp)
    grid = project_onto_planes(_PLANE_AXES.to(points.device), flat)  # (3, P, 2)
    return grid.reshape(3, *points.shape[:-1], 2)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2))


class SemanticSuperResolution(nn.Module):
    """Rendered semantic map (neural resolution) → class logits at the output resolution.

    Input at the neural resolution: the rendered semantic features, the raw class logits and the
    opacity. After (bilinear) upsampling to the output resolution the backbone's RGB image joins
    in, so that label edges can follow image edges. The output is a residual on top of the
    upsampled raw logits: the final conv starts at zero, so at initialisation the output *is*
    the volume-rendered segmentation and training only learns the refinement.
    """

    def __init__(self, feature_channels: int, num_classes: int, hidden: int, uses_rgb: bool):
        super().__init__()
        self.uses_rgb = uses_rgb
        self.low = nn.Sequential(_conv3x3(feature_channels + num_classes + 1, hidden), _conv3x3(hidden, hidden))
        self.high = nn.Sequential(_conv3x3(hidden + (3 if uses_rgb else 0), hidden), _conv3x3(hidden, hidden))
        self.to_logits = nn.Conv2d(hidden, num_classes, 1)
        nn.init.zeros_(self.to_logits.weight)
        nn.init.zeros_(self.to_logits.bias)

    def forward(self, feature_image, raw_logits, opacity, rgb, output_resolution: int) -> torch.Tensor:
        x = self.low(torch.cat([feature_image, raw_logits, opacity], dim=1))
        x = _resize(x, output_resolution)
        if self.uses_rgb:
            x = torch.cat([x, _resize(rgb.to(x.dtype), output_resolution)], dim=1)
        return _resize(raw_logits, output_resolution) + self.to_logits(self.high(x))


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > resolution)


class SemanticBranch(nn.Module):
    """Semantic tri-plane + decoder + super-resolution for one generator architecture.

    Build one with `SemanticBranch.for_generator(G, num_classes)`; the constructor takes only
    JSON-friendly arguments so that `config` rebuilds the same network from a checkpoint.
    `density_prior=False` and `multiscale=False` are the paper's two ablations.
    """

    def __init__(
        self,
        block_channels: dict,
        plane_resolution: int,
        num_classes: int,
        plane_channels: int = 32,
        feature_channels: int = 32,
        decoder_hidden: int = 64,
        sr_hidden: int = 32,
        multiscale: bool = True,
        density_prior: bool = True,
        uses_rgb: bool = True,
    ):
        super().__init__()
        block_channels = {int(res): int(channels) for res, channels in block_channels.items()}
        if num_classes < 2:
            raise ValueError(f"a segmentation needs at least 2 classes, got {num_classes}")
        if max(block_channels) != plane_resolution:
            raise ValueError(f"the last block's resolution {max(block_channels)} must equal the plane resolution "
                             f"{plane_resolution}")
        self._config = dict(
            block_channels={str(res): c for res, c in sorted(block_channels.items())},
            plane_resolution=int(plane_resolution), num_classes=int(num_classes), plane_channels=int(plane_channels),
            feature_channels=int(feature_channels), decoder_hidden=int(decoder_hidden), sr_hidden=int(sr_hidden),
            multiscale=bool(multiscale), density_prior=bool(density_prior), uses_rgb=bool(uses_rgb),
        )
        self.num_classes = num_classes
        self.density_prior = density_prior
        self.triplane = SemanticTriplane(block_channels, plane_resolution, plane_channels, multiscale)
        self.decoder = SemanticDecoder(plane_channels, decoder_hidden, feature_channels, num_classes,
                                       predicts_density=not density_prior)
        self.superresolution = SemanticSuperResolution(feature_channels, num_classes, sr_hidden, uses_rgb)
        # Logits of a ray that hits nothing: the composited features vanish there, so the
        # background class must come from somewhere; learnt, weighted by (1 - opacity).
        self.empty_logits = nn.Parameter(torch.zeros(num_classes))
        self._cache: OrderedDict[int, tuple[Identity, tuple, SemanticIdentity]] = OrderedDict()

    @classmethod
    def for_generator(cls, G, num_classes: int, **options) -> "SemanticBranch":
        """A branch shaped for generator G's synthesis blocks (EG3D or the embedded default)."""
        synthesis = G.backbone.synthesis
        block_channels = {res: getattr(synthesis, f"b{res}").conv1.out_channels for res in synthesis.block_resolutions}
        return cls(block_channels, G.plane_resolution, num_classes, **options)

    @property
    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable (stored in checkpoints)."""
        return dict(self._config, block_channels=dict(self._config["block_channels"]))

    # -------------------------------------------------------------- identities
    def encode(self, identity: Identity) -> SemanticIdentity:
        """The identity's semantic tri-plane, computed now (differentiable w.r.t. the branch)."""
        block_features = {res: x.detach() for res, x in identity.block_features.items()}
        return SemanticIdentity(identity, self.triplane(block_features))

    def semantic_identity(self, identity: Identity | SemanticIdentity) -> SemanticIdentity:
        """The cached semantic tri-plane of `identity`, computed once per identity and weights.

        The cache entry is keyed by the identity object and checked against the parameters'
        storage and version counters, which every in-place update (optimiser step,
        load_state_dict) bumps, so a trained-on or moved branch never serves stale planes.
        """
        if isinstance(identity, SemanticIdentity):
            return identity
        key, weights_version = id(identity), self._weights_version()
        entry = self._cache.get(key)
        if entry is not None and entry[0] is identity and entry[1] == weights_version:
            self._cache.move_to_end(key)
            return entry[2]
        with torch.no_grad():
            semantic = self.encode(identity)
        # Holding the identity in the entry keeps its id() from being reused by another object.
        self._cache[key] = (identity, weights_version, semantic)
        while len(self._cache) > SEMANTIC_CACHE_SIZE:
            self._cache.popitem(last=False)
        return semantic

    def clear_cache(self) -> None:
        self._cache.clear()

    def _weights_version(self) -> tuple:
        # In-place updates bump a tensor's version; .to(device) or new tensors change its storage.
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    # -------------------------------------------------------------- points
    def decode_grid(self, planes: torch.Tensor, grid: torch.Tensor) -> dict:
        """Decoder outputs (F, P) at grid points (3, P, 2) of one identity's planes (3, C, R, R)."""
        sampled = F.grid_sample(planes, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
        return self.decoder(sampled[:, :, 0].mean(0))  # averaged over the planes, as in EG3D

    def query_points(self, identity: SemanticIdentity, points: torch.Tensor, box_warp: float) -> dict:
        """Semantic 'features' (N, M, F) and class 'logits' (N, M, K) at world points (N, M, 3)."""
        features = []
        for planes, item_points in zip(identity.planes, points):
            features.append(self.decode_grid(planes, plane_grid(item_points, box_warp))["features"].t())
        features = torch.stack(features)
        return {"features": features, "logits": self.decoder.classify(features)}
