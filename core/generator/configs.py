"""Constructor arguments of the official EG3D configurations.

They are the arguments EG3D's training loop passes to `TriPlaneGenerator` for the published
checkpoints, so that `--config ffhq512 --random-init` builds a network of exactly the official
shape (for checking an install or timing it without weights). A real pickle carries its own
arguments; these are never used to load one.
"""
from __future__ import annotations

import copy

_SR_PATH = "training.superresolution."

# Rendering options shared by all official configurations (EG3D train.py defaults).
_COMMON_RENDERING = {
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "c_gen_conditioning_zero": False,
    "gpc_reg_prob": 0.5,
    "c_scale": 1.0,
    "superresolution_noise_mode": "none",
    "density_reg": 0.25,
    "density_reg_p_dist": 0.004,
    "reg_type": "l1",
    "decoder_lr_mul": 1.0,
    "sr_antialias": True,
}

_HEAD_RENDERING = {
    "depth_resolution": 48,
    "depth_resolution_importance": 48,
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1,
    "avg_camera_radius": 2.7,
}


def _official(img_resolution: int, sr_module: str, rendering: dict) -> dict:
    channels = dict(channel_base=32768, channel_max=512)
    return dict(
        z_dim=512,
        c_dim=25,
        w_dim=512,
        img_resolution=img_resolution,
        img_channels=3,
        sr_num_fp16_res=4,
        mapping_kwargs={"num_layers": 2},
        rendering_kwargs={
            "image_resolution": img_resolution,
            "superresolution_module": _SR_PATH + sr_module,
            **_COMMON_RENDERING,
            **rendering,
        },
        sr_kwargs=dict(channels, fused_modconv_default="inference_only"),
        fused_modconv_default="inference_only",
        num_fp16_res=0,
        conv_clamp=None,
        **channels,
    )


# name -> (init kwargs, neural rendering resolution)
OFFICIAL_CONFIGS: dict[str, tuple[dict, int]] = {
    "ffhq512": (
        _official(512, "SuperresolutionHybrid8XDC", dict(_HEAD_RENDERING, avg_camera_pivot=[0, 0, 0.2])),
        128,
    ),
    "afhq512": (
        _official(512, "SuperresolutionHybrid8XDC", dict(_HEAD_RENDERING, avg_camera_pivot=[0, 0, -0.06])),
        128,
    ),
    "shapenet128": (
        _official(
            128,
            "SuperresolutionHybrid2X",
            {
                "depth_resolution": 64,
                "depth_resolution_importance": 64,
                "ray_start": 0.1,
                "ray_end": 2.6,
                "box_warp": 1.6,
                "white_back": True,
                "avg_camera_radius": 1.7,
                "avg_camera_pivot": [0, 0, 0],
                "c_gen_conditioning_zero": True,
            },
        ),
        64,
    ),
}


def official_config(name: str) -> tuple[dict, int]:
    """A deep copy of an official configuration: (init kwargs, neural rendering resolution)."""
    if name not in OFFICIAL_CONFIGS:
        known = ", ".join(sorted(OFFICIAL_CONFIGS))
        raise ValueError(f"unknown configuration {name!r}; known: {known}")
    init_kwargs, neural_resolution = OFFICIAL_CONFIGS[name]
    return copy.deepcopy(init_kwargs), neural_resolution


def tiny_config(plane_resolution: int = 32, neural_resolution: int = 32, superresolution: bool = False) -> tuple[dict, int]:
    """A very small configuration of the same architecture, for tests and quick checks.

    EG3D's super-resolution modules hard-code w_dim=512 and their sizes, so the variant with
    super-resolution uses the 2X module (64² neural → 128² image) and a 512-d latent.
    """
    w_dim = 512 if superresolution else 16
    img_resolution = 128 if superresolution else neural_resolution
    sr_module = _SR_PATH + "SuperresolutionHybrid2X" if superresolution else None
    init_kwargs = dict(
        z_dim=16,
        c_dim=25,
        w_dim=w_dim,
        img_resolution=img_resolution,
        img_channels=3,
        sr_num_fp16_res=0,
        mapping_kwargs={"num_layers": 2},
        rendering_kwargs={
            "image_resolution": img_resolution,
            "superresolution_module": sr_module,
            **_COMMON_RENDERING,
            **dict(_HEAD_RENDERING, depth_resolution=8, depth_resolution_importance=8, avg_camera_pivot=[0, 0, 0.2]),
        },
        sr_kwargs=dict(channel_base=256, channel_max=32, fused_modconv_default="inference_only"),
        fused_modconv_default="inference_only",
        num_fp16_res=0,
        conv_clamp=None,
        channel_base=256,
        channel_max=32,
        plane_resolution=plane_resolution,
    )
    return init_kwargs, (64 if superresolution else neural_resolution)
