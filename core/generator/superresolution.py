"""EG3D's super-resolution heads, with EG3D's class and parameter names.

The tri-plane renderer produces a low-resolution feature image whose first
three channels are RGB. A super-resolution head turns (rgb, features) into
the final image with two StyleGAN2 synthesis blocks, all modulated by the
*last* w of the backbone. Which head a network uses depends on its output
resolution:

====================================  ======  ============  ==================
class                                 output  input (res)   block widths
====================================  ======  ============  ==================
SuperresolutionHybrid2X                  128      64        128, 64 (no-up first)
SuperresolutionHybrid4X                  256     128        128, 64 (no-up first)
SuperresolutionHybrid8X                  512     128        128, 64
SuperresolutionHybrid8XDC                512     128        256, 128
====================================  ======  ============  ==================

Inputs of another size are first resized with bilinear interpolation
(anti-aliased when ``sr_antialias``) to the head's input resolution; the 4X
head only ever enlarges. Blocks run in float16 only on CUDA and only when
``sr_num_fp16_res > 0``, but that setting also turns on output clamping
(``conv_clamp=256``) on every device, which matters for numerics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops
from .stylegan2 import SynthesisBlock


class SynthesisBlockNoUp(SynthesisBlock):
    """A SynthesisBlock that keeps its input resolution (no 2x upsampling).

    Same layers and parameter names as SynthesisBlock; ``x`` and ``img`` come
    in at ``resolution`` instead of ``resolution // 2``.
    """

    upsamples = False


class _HybridSuperresolution(torch.nn.Module):
    """Shared body of the super-resolution heads; subclasses set the layout."""

    output_resolution: int  # the only img_resolution the head accepts
    input_size: int  # neural-rendering resolution the first block expects
    first_block_upsamples: bool  # False: block0 works at the input resolution
    block_widths: tuple[int, int]  # output channels of block0 and block1
    has_resample_filter = True  # an unused buffer, kept because EG3D's state has it
    only_enlarge = False  # resize only inputs smaller than input_size

    def __init__(self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool,
                 num_fp16_res: int = 4, conv_clamp=None, channel_base=None, channel_max=None,
                 **block_kwargs):
        # num_fp16_res, conv_clamp, channel_base and channel_max are accepted (EG3D passes the
        # backbone's settings) but ignored: the head has its own fixed layout.
        super().__init__()
        if img_resolution != self.output_resolution:
            raise ValueError(f"{type(self).__name__} makes {self.output_resolution}px images, "
                             f"not {img_resolution}px")
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = self.input_size
        self.sr_antialias = sr_antialias

        first_block = SynthesisBlock if self.first_block_upsamples else SynthesisBlockNoUp
        first_res = self.input_size * 2 if self.first_block_upsamples else self.input_size
        width0, width1 = self.block_widths
        common = dict(w_dim=512, img_channels=3, use_fp16=use_fp16, conv_clamp=(256 if use_fp16 else None))
        self.block0 = first_block(channels, width0, resolution=first_res, is_last=False, **common, **block_kwargs)
        self.block1 = SynthesisBlock(width0, width1, resolution=self.output_resolution, is_last=True,
                                     **common, **block_kwargs)
        if self.has_resample_filter:
            self.register_buffer("resample_filter", ops.setup_filter([1, 3, 3, 1]))

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        size = (self.input_resolution, self.input_resolution)
        return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=self.sr_antialias)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """rgb: [N, 3, r, r]; x: [N, channels, r, r]; ws: [N, num_ws, 512] -> [N, 3, R, R].

        ``block_kwargs`` go to both blocks (noise_mode, fused_modconv, force_fp32, ...).
        The inputs are never modified in place.
        """
        # Each block has conv0, conv1 and torgb; all six layers use the backbone's last w.
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = x.shape[-1]
        if size < self.input_resolution or (size != self.input_resolution and not self.only_enlarge):
            x = self._resize(x)
            rgb = self._resize(rgb)
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb


class SuperresolutionHybrid2X(_HybridSuperresolution):
    """64 -> 128 (EG3D ShapeNet Cars)."""

    output_resolution = 128
    input_size = 64
    first_block_upsamples = False
    block_widths = (128, 64)


class SuperresolutionHybrid4X(_HybridSuperresolution):
    """128 -> 256. Larger inputs pass through unresized, as in EG3D."""

    output_resolution = 256
    input_size = 128
    first_block_upsamples = False
    block_widths = (128, 64)
    only_enlarge = True


class SuperresolutionHybrid8X(_HybridSuperresolution):
    """128 -> 512 with narrow blocks (older EG3D 512px configuration)."""

    output_resolution = 512
    input_size = 128
    first_block_upsamples = True
    block_widths = (128, 64)


class SuperresolutionHybrid8XDC(_HybridSuperresolution):
    """128 -> 512 with double channels (EG3D FFHQ and AFHQ 512px networks)."""

    output_resolution = 512
    input_size = 128
    first_block_upsamples = True
    block_widths = (256, 128)
    has_resample_filter = False
