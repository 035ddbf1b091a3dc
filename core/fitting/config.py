"""The embedded default's network configuration and the fit's training settings.

Why z_dim = 64 although the procedural prior reads only z[:33]: the mapping network first
normalises z to unit second moment, which throws away |z|.  For a Gaussian z the norm is
independent of the direction, so the network cannot recover it; the relative error it must live
with is about 0.71 / sqrt(z_dim): 12 % for z_dim = 33, 9 % for 64.  But every dim beyond the 33
is noise the first mapping layer must learn to ignore: with EG3D's 512 only 6 % of the input's
variance carries identity, and the first default (z_dim 512, mapping lr x 0.25) learned one mean
coat for every identity in 72 minutes.  64 keeps half the variance informative.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from core.procedural import RENDERING

SHIPPED_RESOLUTION = 128   # neural rendering resolution = output resolution (no super-resolution)

# Rendering options of the small generator; camera constants come from the procedural category
# so that the generator's rays are exactly the rays the procedural renderer traces.
_DEFAULT_RENDERING = {
    "image_resolution": SHIPPED_RESOLUTION,
    "superresolution_module": None,
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "c_gen_conditioning_zero": True,   # identity must not depend on the view
    "gpc_reg_prob": 0.0,
    "c_scale": 1.0,
    "superresolution_noise_mode": "none",
    "density_reg": 0.0,
    "density_reg_p_dist": 0.004,
    "reg_type": "l1",
    "decoder_lr_mul": 1.0,
    "sr_antialias": True,
    # 1.05 world units of ray range: 24 coarse samples are ~0.044 apart, and the importance pass
    # puts 24 more where the coarse weights are (the head surface).
    "depth_resolution": 24,
    "depth_resolution_importance": 24,
    "ray_start": RENDERING["ray_start"],
    "ray_end": RENDERING["ray_end"],
    "box_warp": RENDERING["box_warp"],
    "avg_camera_radius": RENDERING["avg_camera_radius"],
    "avg_camera_pivot": list(RENDERING["avg_camera_pivot"]),
}


def default_config() -> tuple[dict, int]:
    """(TriPlaneGenerator kwargs, neural rendering resolution) of the embedded default."""
    init_kwargs = dict(
        z_dim=64,
        c_dim=25,
        w_dim=128,
        img_resolution=SHIPPED_RESOLUTION,
        img_channels=3,
        sr_num_fp16_res=0,
        # A regression from z, not a GAN: the mapping learns at the base rate instead of
        # StyleGAN's 1/100, or it would barely move in hours of CPU time.
        mapping_kwargs={"num_layers": 4, "lr_multiplier": 1.0},
        rendering_kwargs=copy.deepcopy(_DEFAULT_RENDERING),
        sr_kwargs={},
        fused_modconv_default="inference_only",
        num_fp16_res=0,
        conv_clamp=None,
        channel_base=4096,
        channel_max=128,
        plane_resolution=128,
    )
    return init_kwargs, SHIPPED_RESOLUTION


@dataclass
class FitSettings:
    """How the fit trains; stored with every checkpoint so that a resume continues alike."""

    identities_per_step: int = 4      # fresh 'fit' identities each step
    views_per_identity: int = 4       # random views whose rays are pooled per identity
    rays_per_identity: int = 1024     # random rays per identity, spread over its views
    foreground_ray_fraction: float = 0.8   # share of rays aimed at the head's bounding sphere
    learning_rate: float = 2e-3
    # Over the last half of each run (by its --minutes or --steps) the rate falls linearly to
    # this fraction of learning_rate: annealing settles the noisy per-batch updates.
    decay_from: float = 0.5
    final_lr_fraction: float = 0.1
    # Adam's rate of the layers that write the tri-plane features and of the decoder, as
    # multiples of learning_rate (trainer.parameter_group says which layers).
    plane_lr_multiplier: float = 1.0
    decoder_lr_multiplier: float = 1.0
    rgb_weight: float = 1.0
    alpha_weight: float = 1.0
    depth_weight: float = 1.0         # L1 in units of the head radius, on foreground rays
    # 3D supervision from the procedural fields (no ray marching): the decoder's colour at points
    # on the surface (moved along the normal by up to surface_jitter) against the shaded colour
    # there, and its occupancy 1 - exp(-sigma * occupancy_interval) at points in and around the
    # head against sigmoid(-sdf / occupancy_softness).
    surface_points_per_identity: int = 0
    space_points_per_identity: int = 0
    surface_jitter: float = 0.01
    occupancy_interval: float = 0.02
    occupancy_softness: float = 0.004
    surface_rgb_weight: float = 1.0
    occupancy_weight: float = 0.1
    checkpoint_every_s: float = 300.0
    data_seed: int = 0                # step k draws its identities/views from data_seed + k
    stochastic: bool = True           # EG3D's jittered sampling while training
    # Colour is a sigmoid of the decoder's output: past |x| ~ 4 its gradient all but vanishes
    # and that colour stops learning for good.  The first shipped fit drifted to |x| ~ 100 (the
    # large plane features that sharp density needs pass through the same hidden layer) and
    # rendered saturated rainbow rings.  A hinge on |x| beyond the bound keeps colour trainable.
    colour_logit_bound: float = 4.0
    colour_logit_weight: float = 0.01
    z_samples_for_w_avg: int = 4096

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FitSettings":
        known = {key: value for key, value in values.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def tiny_fit_config(plane_resolution: int = 32, neural_resolution: int = 32) -> tuple[dict, int]:
    """A very small configuration with the default's conventions, for tests and quick checks."""
    init_kwargs, _ = default_config()
    init_kwargs.update(z_dim=40, w_dim=16, img_resolution=neural_resolution, channel_base=256, channel_max=16,
                       plane_resolution=plane_resolution, mapping_kwargs={"num_layers": 2, "lr_multiplier": 0.25})
    init_kwargs["rendering_kwargs"].update(image_resolution=neural_resolution, depth_resolution=8,
                                           depth_resolution_importance=8)
    return init_kwargs, neural_resolution
