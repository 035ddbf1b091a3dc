"""StyleGAN2 mapping and synthesis networks, laid out exactly like EG3D's.

EG3D uses this generator as its tri-plane backbone (``StyleGAN2Backbone``)
and reuses its blocks in the super-resolution head. Class names, constructor
arguments, attribute names, and parameter/buffer names follow EG3D's
``training/networks_stylegan2.py`` so that the state of an official network
pickle loads here unchanged (``load_state_dict(..., strict=True)``) and gives
the same outputs.

One addition: ``SynthesisNetwork.forward(ws, return_block_features=True)``
also returns the feature map of every block, keyed by resolution.

Mixed precision: blocks flagged ``use_fp16`` run in float16 on CUDA only,
as in EG3D; on any other device everything runs in float32.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import ops

# ---------------------------------------------------------------------------
# Helpers


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _resolve_fused_modconv(fused_modconv, default, training: bool) -> bool:
    """EG3D's 'inference_only' setting means fused in eval mode, unfused in training."""
    if fused_modconv is None:
        fused_modconv = default
    if fused_modconv == "inference_only":
        fused_modconv = not training
    return bool(fused_modconv)


def _block_dtype_and_format(use_fp16: bool, channels_last: bool, device: torch.device, force_fp32: bool):
    """float16 (and optionally channels-last) only for fp16 blocks running on CUDA."""
    force_fp32 = force_fp32 or device.type != "cuda"
    dtype = torch.float16 if use_fp16 and not force_fp32 else torch.float32
    memory_format = torch.channels_last if channels_last and not force_fp32 else torch.contiguous_format
    return dtype, memory_format


def _memory_format(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


# ---------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalised learning rate.

    Weights are stored divided by ``lr_multiplier`` and rescaled at run time
    by ``lr_multiplier / sqrt(in_features)``: the optimiser then sees every
    layer at the same scale, and the mapping network learns 100x slower.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float = 0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Plain (unmodulated) convolution with equalised learning rate and optional resampling.

    Used by EG3D as the 1x1 ``skip`` path of resnet blocks.
    ``trainable=False`` stores weight and bias as buffers instead of parameters.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter=(1, 3, 3, 1),
        conv_clamp: Optional[float] = None,
        channels_last: bool = False,
        trainable: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ops.ACTIVATIONS[activation].def_gain

        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        weight = weight.to(memory_format=_memory_format(channels_last))
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias is not None:
                self.register_buffer("bias", bias)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # Without upsampling the kernel's orientation is free; correlation avoids a flip.
        x = ops.conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"activation={self.activation}, up={self.up}, down={self.down}")


class MappingNetwork(torch.nn.Module):
    """z (+ conditioning c) -> w, broadcast to ``num_ws`` copies, with optional truncation.

    ``w_avg`` is the running mean of w seen in training; truncation pulls w
    toward it: ``w_avg + psi * (w - w_avg)``, for the first
    ``truncation_cutoff`` copies only when a cutoff is given.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: Optional[int],
        num_layers: int = 8,
        embed_features: Optional[int] = None,
        layer_features: Optional[int] = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: Optional[float] = 0.998,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Optional[torch.Tensor],
        c: Optional[torch.Tensor],
        truncation_psi: float = 1,
        truncation_cutoff: Optional[int] = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Return w of shape [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None)."""
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            # Exponential moving average: w_avg <- beta * w_avg + (1 - beta) * batch mean.
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise RuntimeError("truncation needs w_avg, which this mapping network does not track")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (+ optional 2x upsampling), noise, bias and activation.

    ``noise_mode``: 'random' draws fresh per-pixel noise, 'const' uses the
    stored ``noise_const`` buffer (deterministic), 'none' adds no noise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter=(1, 3, 3, 1),
        conv_clamp: Optional[float] = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ops.ACTIVATIONS[activation].def_gain

        # Styles start at 1 (bias_init) so that a fresh layer is an ordinary convolution.
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(weight.to(memory_format=_memory_format(channels_last)))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> Optional[torch.Tensor]:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            return torch.randn(shape, device=x.device) * self.noise_strength
        return self.noise_const * self.noise_strength

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1) -> torch.Tensor:
        styles = self.affine(w)
        noise = self._noise(x, noise_mode)
        x = ops.modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                                 fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                            clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None, channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(weight.to(memory_format=_memory_format(channels_last)))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # No demodulation here, so the equalised-lr gain goes into the styles.
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


# ---------------------------------------------------------------------------
# Blocks and networks


class SynthesisBlock(torch.nn.Module):
    """One resolution level: [const |] conv0 (2x up) -> conv1 -> [torgb], plus the image path.

    ``architecture``: 'orig' emits an image only from the last block, 'skip'
    (StyleGAN2 default) sums every block's ToRGB output into an upsampled
    running image, 'resnet' adds a 1x1 upsampled skip connection to the
    features (and emits an image only from the last block).

    The first block (``in_channels == 0``) starts from a learned constant.
    ``forward`` returns ``(x, img)``: this block's features and the running
    image (None until a block has a ToRGB).
    """

    # SynthesisBlockNoUp (super-resolution) turns this off: same layers, no 2x.
    upsamples = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter=(1, 3, 3, 1),
        conv_clamp: Optional[float] = 256,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default=True,
        **layer_kwargs,
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last)

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            if self.upsamples:
                up_kwargs = dict(up=2, resample_filter=resample_filter)
            else:
                up_kwargs = {}
            self.conv0 = SynthesisLayer(in_channels, out_channels, **common, **up_kwargs, **layer_kwargs)
            self.num_conv += 1

        self.conv1 = SynthesisLayer(out_channels, out_channels, **common, **layer_kwargs)
        self.num_conv += 1

        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1

        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False,
                                    up=(2 if self.upsamples else 1), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                force_fp32: bool = False, fused_modconv=None, update_emas: bool = False, **layer_kwargs):
        """ws: [N, num_conv + num_torgb, w_dim]; layer_kwargs go to SynthesisLayer (noise_mode)."""
        del update_emas  # accepted for call compatibility; nothing to update here
        expected_ws = self.num_conv + self.num_torgb
        if ws.ndim != 3 or ws.shape[1] != expected_ws:
            raise ValueError(f"block b{self.resolution} needs ws of shape [N, {expected_ws}, {self.w_dim}], "
                             f"got {tuple(ws.shape)}")
        if x is not None:
            in_res = self.resolution // 2 if self.upsamples else self.resolution
            if x.shape[1:] != (self.in_channels, in_res, in_res):
                raise ValueError(f"block b{self.resolution} needs x of shape [N, {self.in_channels}, {in_res}, "
                                 f"{in_res}], got {tuple(x.shape)}")
        w_iter = iter(ws.unbind(dim=1))
        dtype, memory_format = _block_dtype_and_format(self.use_fp16, self.channels_last, ws.device, force_fp32)
        fused_modconv = _resolve_fused_modconv(fused_modconv, self.fused_modconv_default, self.training)
        conv_kwargs = dict(fused_modconv=fused_modconv, **layer_kwargs)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), **conv_kwargs)
        elif self.architecture == "resnet":
            x = x.to(dtype=dtype, memory_format=memory_format)
            # Both branches are scaled by sqrt(1/2) so that their sum keeps unit variance.
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **conv_kwargs)
            x = self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **conv_kwargs)
            x = y + x
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), **conv_kwargs)
            x = self.conv1(x, next(w_iter), **conv_kwargs)

        if img is not None and self.upsamples:
            img = ops.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            # Out of place: `img` may be a caller's tensor (super-resolution input).
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class SynthesisNetwork(torch.nn.Module):
    """Chain of SynthesisBlocks b4, b8, ..., b{img_resolution}.

    Channels per block are ``min(channel_base // res, channel_max)``; the
    ``num_fp16_res`` highest resolutions (never below 8) are float16 blocks.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 4,
        **block_kwargs,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        # Each block consumes one w per conv; its ToRGB borrows the next block's first w,
        # so only the last block's ToRGB needs an extra one.
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, return_block_features: bool = False, **block_kwargs):
        """ws: [N, num_ws, w_dim] -> img [N, img_channels, R, R].

        With ``return_block_features=True`` returns ``(img, features)`` where
        ``features[res]`` is block b{res}'s output feature map
        ``[N, C_res, res, res]`` (float32 on CPU; float16 for fp16 blocks on CUDA).
        ``block_kwargs`` (noise_mode, fused_modconv, force_fp32, ...) go to every block.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        features = {}
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
            features[res] = x
        if return_block_features:
            return img, features
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}")


class Generator(torch.nn.Module):
    """StyleGAN2 generator = ``mapping`` (z, c -> ws) + ``synthesis`` (ws -> img).

    EG3D imports this class as ``StyleGAN2Backbone`` and stores it as
    ``backbone`` of its tri-plane generator.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: Optional[dict] = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z, c, truncation_psi: float = 1, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False, **synthesis_kwargs):
        """``synthesis_kwargs`` may include ``return_block_features=True`` (see SynthesisNetwork)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# EG3D's name for the same class.
StyleGAN2Backbone = Generator
