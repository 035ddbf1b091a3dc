"""EG3D's tri-plane generator, with an API that separates identity from view.

`TriPlaneGenerator` keeps EG3D's constructor, attribute names and `mapping` / `synthesis` /
`forward` behaviour, so an official network pickle's arguments and state dict load into it as
they are. On top of that the studio uses two calls:

    identity = G.synthesize(ws)              # runs the StyleGAN2 backbone once
    view = G.render(identity, camera_label)  # any number of views from the cached planes

so that an orbit, a batch of factory views or an editing loop never re-runs the synthesis network.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from core.generator import superresolution as superresolution_modules
from core.generator.rendering import ImportanceRenderer, RaySampler
from core.generator.stylegan2 import FullyConnectedLayer
from core.generator.stylegan2 import Generator as StyleGAN2Backbone

PLANE_CHANNELS = 32  # EG3D: three planes of 32 channels each
EG3D_PLANE_RESOLUTION = 256  # EG3D hard-codes the backbone's output resolution
# On a CPU, rendering rays in chunks keeps the per-sample tensors in cache: at 128² with 96
# samples per ray, 2048-ray chunks render twice as fast as one pass (benchmarks/bench_generator.py).
CPU_RAY_CHUNK = 2048


@dataclass
class Identity:
    """What the synthesis network produces for a batch of latents; reused by every view."""

    ws: torch.Tensor  # (N, num_ws, w_dim)
    planes: torch.Tensor  # (N, 3, 32, R, R)
    block_features: dict[int, torch.Tensor] = field(default_factory=dict)  # block resolution -> (N, C, r, r)

    def __len__(self) -> int:
        return self.ws.shape[0]

    def to(self, device) -> "Identity":
        return Identity(
            self.ws.to(device),
            self.planes.to(device),
            {res: x.to(device) for res, x in self.block_features.items()},
        )


@dataclass
class View:
    """One rendered view of a batch of identities. Images are in [-1, 1] as in EG3D."""

    image: torch.Tensor  # (N, 3, H, W): super-resolved when the configuration has a SR module
    image_raw: torch.Tensor  # (N, 3, h, w): neural-rendered RGB at the neural rendering resolution
    feature_image: torch.Tensor  # (N, 32, h, w): the raw volume-rendered feature image
    depth: torch.Tensor  # (N, 1, h, w): expected ray depth (distance along the normalised ray)
    # With return_samples: the final sorted samples' 'depths' and raw 'sigma' (N, h*w, S, 1), and
    # the marcher's 'weights' of the S-1 intervals between them (N, h*w, S-1, 1).
    samples: dict | None = None

    def opacity(self) -> torch.Tensor:
        """(N, 1, h, w): each ray's accumulated weight, its alpha (needs return_samples)."""
        n, _, h, w = self.depth.shape
        return self.samples["weights"].sum(2).reshape(n, 1, h, w)


class OSGDecoder(torch.nn.Module):
    """EG3D's small MLP from averaged tri-plane features to density and 32 colour features."""

    def __init__(self, n_features: int, options: dict):
        super().__init__()
        self.hidden_dim = 64
        lr_mul = options["decoder_lr_mul"]
        self.net = torch.nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr_mul),
            torch.nn.Softplus(),
            FullyConnectedLayer(self.hidden_dim, 1 + options["decoder_output_dim"], lr_multiplier=lr_mul),
        )

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor,
                colour_channels: int | None = None) -> dict:
        """σ and colour features; `colour_channels` k computes only the first k colour features
        (3 = RGB, 0 = density alone) with the same arithmetic, for renders that need no more."""
        # The three planes' mean, summed plane by plane: bit for bit mean(1), without the strided
        # reduction mean(1) runs over grid_sample's layout (3x slower on a CPU).
        planes = sampled_features.unbind(1)
        return self.decode_mean(sum(planes[1:], planes[0]) / len(planes), ray_directions, colour_channels)

    def decode_mean(self, x: torch.Tensor, ray_directions: torch.Tensor, colour_channels: int | None = None) -> dict:
        """`forward` from the planes' mean features (N, M, C) (`rendering.sample_plane_mean`)."""
        n, m, c = x.shape
        x = x.reshape(n * m, c)
        if colour_channels is None:
            x = self.net(x)
        else:
            first, activation, last = self.net
            rows = 1 + colour_channels
            bias = last.bias[:rows] * last.bias_gain
            x = torch.addmm(bias.unsqueeze(0), activation(first(x)), (last.weight[:rows] * last.weight_gain).t())
        x = x.view(n, m, -1)
        # MipNeRF's widened sigmoid keeps colours reachable at exactly 0 and 1.
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return {"rgb": rgb, "sigma": x[..., 0:1]}


def _superresolution_class(module_path: str):
    """Map EG3D's 'training.superresolution.ClassName' to our class of the same name."""
    class_name = module_path.rsplit(".", 1)[-1]
    cls = getattr(superresolution_modules, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"unsupported super-resolution module {module_path!r}")
    return cls


class TriPlaneGenerator(torch.nn.Module):
    """EG3D's TriPlaneGenerator (same arguments, names and behaviour) plus the studio's API.

    `plane_resolution` and a `superresolution_module` of None are studio extensions for small
    configurations such as the embedded default; official pickles never set them.
    """

    def __init__(
        self,
        z_dim,
        c_dim,
        w_dim,
        img_resolution,
        img_channels,
        sr_num_fp16_res=0,
        mapping_kwargs={},
        rendering_kwargs={},
        sr_kwargs={},
        plane_resolution=EG3D_PLANE_RESOLUTION,
        **synthesis_kwargs,
    ):
        super().__init__()
        # Recorded so that a checkpoint can rebuild this exact network (EG3D's persistence does the same).
        self.init_args = ()
        self.init_kwargs = copy.deepcopy(dict(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            sr_num_fp16_res=sr_num_fp16_res,
            mapping_kwargs=mapping_kwargs,
            rendering_kwargs=rendering_kwargs,
            sr_kwargs=sr_kwargs,
            **synthesis_kwargs,
        ))
        if plane_resolution != EG3D_PLANE_RESOLUTION:
            self.init_kwargs["plane_resolution"] = plane_resolution
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = StyleGAN2Backbone(
            z_dim,
            c_dim,
            w_dim,
            img_resolution=plane_resolution,
            img_channels=PLANE_CHANNELS * 3,
            mapping_kwargs=mapping_kwargs,
            **synthesis_kwargs,
        )
        sr_path = rendering_kwargs.get("superresolution_module")
        self.superresolution = None
        if sr_path is not None:
            self.superresolution = _superresolution_class(sr_path)(
                channels=PLANE_CHANNELS,
                img_resolution=img_resolution,
                sr_num_fp16_res=sr_num_fp16_res,
                sr_antialias=rendering_kwargs["sr_antialias"],
                **sr_kwargs,
            )
        self.decoder = OSGDecoder(
            PLANE_CHANNELS,
            {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1), "decoder_output_dim": 32},
        )
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None

    @classmethod
    def from_config(cls, config: tuple[dict, int], seed: int = 0) -> "TriPlaneGenerator":
        """A frozen, eval-mode network of a (init kwargs, neural resolution) configuration
        (see core/generator/configs.py) with random weights drawn from `seed`."""
        init_kwargs, neural_resolution = config
        torch.manual_seed(seed)
        generator = cls(**init_kwargs).eval().requires_grad_(False)
        generator.neural_rendering_resolution = neural_resolution
        return generator

    # ------------------------------------------------------------------ EG3D's API
    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        if self.rendering_kwargs["c_gen_conditioning_zero"]:
            c = torch.zeros_like(c)
        return self.backbone.mapping(
            z,
            c * self.rendering_kwargs.get("c_scale", 0),
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )

    def synthesis(
        self,
        ws,
        c,
        neural_rendering_resolution=None,
        update_emas=False,
        cache_backbone=False,
        use_cached_backbone=False,
        **synthesis_kwargs,
    ):
        if neural_rendering_resolution is not None:
            self.neural_rendering_resolution = neural_rendering_resolution
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes
        identity = Identity(ws, self._as_planes(planes))
        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != "noise_mode"}
        view = self._render(identity, c, self.neural_rendering_resolution, deterministic=False, sr_kwargs=sr_kwargs)
        return {"image": view.image, "image_raw": view.image_raw, "image_depth": view.depth}

    def forward(
        self,
        z,
        c,
        truncation_psi=1,
        truncation_cutoff=None,
        neural_rendering_resolution=None,
        update_emas=False,
        cache_backbone=False,
        use_cached_backbone=False,
        **synthesis_kwargs,
    ):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(
            ws,
            c,
            update_emas=update_emas,
            neural_rendering_resolution=neural_rendering_resolution,
            cache_backbone=cache_backbone,
            use_cached_backbone=use_cached_backbone,
            **synthesis_kwargs,
        )

    def sample_mixed(self, coordinates, directions, ws, **synthesis_kwargs):
        """Density and colour features at arbitrary points (EG3D's name; used for shapes)."""
        identity = self.synthesize(ws, **synthesis_kwargs)
        return self.sample_points(identity, coordinates, directions)

    # ------------------------------------------------------------------ the studio's API
    @property
    def plane_resolution(self) -> int:
        return self.backbone.img_resolution

    def synthesize(self, ws: torch.Tensor, noise_mode: str = "const") -> Identity:
        """Run the synthesis network once: the identity's planes and every block's features."""
        img, block_features = self.backbone.synthesis(ws, noise_mode=noise_mode, return_block_features=True)
        return Identity(ws, self._as_planes(img), block_features)

    def render(
        self,
        identity: Identity,
        camera_label: torch.Tensor,
        neural_resolution: int | None = None,
        deterministic: bool = True,
        superresolve: bool = True,
        return_samples: bool = False,
        max_rays_per_chunk: int | None = None,
        samples_per_ray: tuple[int, int] | None = None,
    ) -> View:
        """Render a view of cached identities from EG3D camera labels (N, 25) or one (25,).

        Deterministic mode is EG3D with its randomness off: no coarse jitter, importance
        samples with det=True, and 'const' noise in the super-resolution blocks. Rays are
        rendered in chunks of `max_rays_per_chunk` (default: CPU_RAY_CHUNK on a CPU, all at once
        on a GPU); chunking changes results only by float rounding (< 1e-6). `samples_per_ray`
        (coarse, importance) overrides the checkpoint's depth_resolution(_importance) for this
        call only, e.g. for quick preview frames; None renders exactly as the checkpoint says.
        """
        if camera_label.ndim == 1:
            camera_label = camera_label[None]
        if camera_label.shape[0] == 1 and len(identity) > 1:
            camera_label = camera_label.expand(len(identity), -1)
        resolution = neural_resolution or self.neural_rendering_resolution
        if max_rays_per_chunk is None and identity.planes.device.type == "cpu":
            max_rays_per_chunk = CPU_RAY_CHUNK
        return self._render(
            identity,
            camera_label.to(identity.planes.device, torch.float32),
            resolution,
            deterministic=deterministic,
            superresolve=superresolve,
            return_samples=return_samples,
            max_rays_per_chunk=max_rays_per_chunk,
            options=self._rendering_options(samples_per_ray),
        )

    def _rendering_options(self, samples_per_ray: tuple[int, int] | None) -> dict:
        if samples_per_ray is None:
            return self.rendering_kwargs
        coarse, importance = (int(count) for count in samples_per_ray)
        if coarse < 4 or importance < 0:  # the importance pass needs interior coarse intervals
            raise ValueError(f"samples_per_ray needs at least 4 coarse samples, got {samples_per_ray}")
        return dict(self.rendering_kwargs, depth_resolution=coarse, depth_resolution_importance=importance)

    def sample_points(self, identity: Identity, coordinates: torch.Tensor, directions: torch.Tensor) -> dict:
        """σ and colour features at world points (N, M, 3) from the cached planes."""
        return self.renderer.run_model(identity.planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def frontal_camera_label(self, fov_deg: float | None = None) -> torch.Tensor:
        """The camera the mapping network is conditioned on: frontal, at the average radius/pivot."""
        from core.camera import Camera, DEFAULT_FOV_DEG

        return Camera(
            yaw=0.0,
            pitch=0.0,
            radius=self.rendering_kwargs.get("avg_camera_radius", 2.7),
            fov=DEFAULT_FOV_DEG if fov_deg is None else fov_deg,
            pivot=tuple(self.rendering_kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.0))),
        ).label()

    # ------------------------------------------------------------------ internals
    def _as_planes(self, backbone_image: torch.Tensor) -> torch.Tensor:
        n, _, h, w = backbone_image.shape
        return backbone_image.view(n, 3, PLANE_CHANNELS, h, w)

    def _render(
        self,
        identity: Identity,
        camera_label: torch.Tensor,
        resolution: int,
        deterministic: bool,
        superresolve: bool = True,
        return_samples: bool = False,
        max_rays_per_chunk: int | None = None,
        sr_kwargs: dict | None = None,
        options: dict | None = None,
    ) -> View:
        cam2world = camera_label[:, :16].view(-1, 4, 4)
        intrinsics = camera_label[:, 16:25].view(-1, 3, 3)
        ray_origins, ray_directions = self.ray_sampler(cam2world, intrinsics, resolution)
        rendered = self.renderer(
            identity.planes,
            self.decoder,
            ray_origins,
            ray_directions,
            self.rendering_kwargs if options is None else options,
            deterministic=deterministic,
            return_samples=return_samples,
            max_rays_per_chunk=max_rays_per_chunk,
        )
        if return_samples:
            feature_samples, depth_samples = rendered["features"], rendered["depth"]
            samples = {k: rendered[k] for k in ("depths", "weights", "sigma")}
        else:
            feature_samples, depth_samples, _ = rendered
            samples = None

        n = ray_origins.shape[0]
        feature_image = feature_samples.permute(0, 2, 1).reshape(n, -1, resolution, resolution).contiguous()
        depth_image = depth_samples.permute(0, 2, 1).reshape(n, 1, resolution, resolution)
        image_raw = feature_image[:, :3]
        image = image_raw
        if superresolve and self.superresolution is not None:
            noise_mode = self.rendering_kwargs["superresolution_noise_mode"]
            if deterministic and noise_mode == "random":
                noise_mode = "const"
            image = self.superresolution(image_raw, feature_image, identity.ws, noise_mode=noise_mode, **(sr_kwargs or {}))
        return View(image, image_raw, feature_image, depth_image, samples)
