"""The frozen generator as the rest of the studio sees it: load, sample identities, render views.

`Backbone` wraps a `TriPlaneGenerator` with EG3D's seed and camera conventions (so that seed N
is the identity EG3D's own `gen_samples.py --seeds N` shows) and a small per-identity cache, so
that an orbit or a batch of factory views runs the synthesis network once per identity.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.camera import DEFAULT_FOV_DEG, Camera
from core.checkpoint.eg3d_pickle import load_eg3d_pickle
from core.checkpoint.studio_format import file_sha256, load_generator
from core.generator.configs import official_config
from core.generator.triplane import Identity, TriPlaneGenerator, View
from core.limits import FOV, NEURAL_RESOLUTION, PITCH, SEED, TRUNCATION, TRUNCATION_CUTOFF, YAW

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEFAULT_BACKBONE_PATH = RESOURCES / "default_backbone.safetensors"
EG3D_DEFAULT_TRUNCATION_CUTOFF = 14  # gen_samples.py's default


class BackboneError(ValueError):
    """A backbone could not be found, read or built; the message says which and why."""


def pick_device(name: str | None = None) -> torch.device:
    """'cuda' when asked for or available (name None/'auto'), else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackboneError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """EG3D's convention: z = np.random.RandomState(seed).randn(1, z_dim)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


@dataclass(frozen=True)
class IdentityKey:
    seed: int
    truncation_psi: float
    truncation_cutoff: int | None
    conditioning_fov: float


class Backbone:
    """A frozen generator plus its name, content hash, device and identity cache."""

    def __init__(self, generator: TriPlaneGenerator, name: str, content_hash: str, device="cpu", cache_size: int = 16):
        self.generator = generator.eval().requires_grad_(False).to(device)
        self.name = name
        self.content_hash = content_hash
        self.device = torch.device(device)
        self._cache: OrderedDict[IdentityKey, Identity] = OrderedDict()
        self._cache_size = cache_size

    # -------------------------------------------------------------- cameras
    @property
    def rendering_kwargs(self) -> dict:
        return self.generator.rendering_kwargs

    def camera(self, yaw: float = 0.0, pitch: float = 0.0, fov: float = DEFAULT_FOV_DEG, radius: float | None = None) -> Camera:
        """A look-at camera with yaw/pitch in degrees from frontal, at the checkpoint's average orbit."""
        # The CLI's and the window's ranges (core/limits.py): a NaN angle would render black.
        YAW.check(yaw, "yaw"), PITCH.check(pitch, "pitch"), FOV.check(fov, "fov")
        return Camera(
            yaw=yaw,
            pitch=pitch,
            radius=self.rendering_kwargs.get("avg_camera_radius", 2.7) if radius is None else radius,
            fov=fov,
            pivot=tuple(float(v) for v in self.rendering_kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.0))),
        )

    # -------------------------------------------------------------- identities
    @torch.no_grad()
    def mapping(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = EG3D_DEFAULT_TRUNCATION_CUTOFF,
        conditioning_fov: float = DEFAULT_FOV_DEG,
    ) -> torch.Tensor:
        """z → w, conditioned on the frontal camera as gen_samples.py does.

        gen_samples.py conditions on a camera with its own --fov-deg, whose declared default
        18.837 click truncates to the integer 18; pass conditioning_fov=18 to reproduce it (to
        float rounding). (Only pose-conditioned checkpoints such as FFHQ/AFHQ depend on it.)
        """
        c = self.generator.frontal_camera_label(conditioning_fov).to(self.device)[None].expand(z.shape[0], -1)
        return self.generator.mapping(z.to(self.device), c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    @torch.no_grad()
    def identity_from_seed(
        self,
        seed: int,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = EG3D_DEFAULT_TRUNCATION_CUTOFF,
        conditioning_fov: float = DEFAULT_FOV_DEG,
    ) -> Identity:
        SEED.check(seed, "seed"), TRUNCATION.check(truncation_psi, "truncation")
        FOV.check(conditioning_fov, "conditioning fov")
        if truncation_cutoff is not None:
            TRUNCATION_CUTOFF.check(truncation_cutoff, "truncation cutoff")
        key = IdentityKey(int(seed), float(truncation_psi), truncation_cutoff, float(conditioning_fov))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ws = self.mapping(seed_to_z(seed, self.generator.z_dim), truncation_psi, truncation_cutoff, conditioning_fov)
        identity = self.generator.synthesize(ws)
        self._cache[key] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return identity

    @torch.no_grad()
    def identity_from_ws(self, ws: torch.Tensor) -> Identity:
        return self.generator.synthesize(ws.to(self.device))

    # -------------------------------------------------------------- views
    @torch.no_grad()
    def render(self, identity: Identity, camera: Camera, neural_resolution: int | None = None, **kwargs) -> View:
        if neural_resolution is not None:
            NEURAL_RESOLUTION.check(neural_resolution, "neural resolution")
        return self.generator.render(identity, camera.label().to(self.device), neural_resolution, **kwargs)


# ------------------------------------------------------------------ loading
def random_backbone(config: str, seed: int = 0, device="cpu") -> Backbone:
    """An official-size configuration with random weights, for checking an install or timing it."""
    generator = TriPlaneGenerator.from_config(official_config(config), seed)
    return Backbone(generator, f"{config} (random init, seed {seed})", f"random:{config}:{seed}", device)


def load_backbone(spec: str | Path, device="cpu") -> Backbone:
    """'default' (the embedded backbone), an EG3D network pickle, or a studio .safetensors file."""
    path = DEFAULT_BACKBONE_PATH if str(spec) == "default" else Path(spec)
    if not path.exists():
        if str(spec) == "default":
            raise BackboneError(
                f"the embedded default backbone is missing ({path}); reinstall the studio "
                "or name a backbone with --backbone PATH"
            )
        raise BackboneError(f"backbone file not found: {path}")
    if path.suffix == ".safetensors":
        generator = load_generator(path, device="cpu")
    else:
        generator = load_eg3d_pickle(path, device="cpu")
    name = "default" if str(spec) == "default" else path.name
    return Backbone(generator, name, file_sha256(path), device)
