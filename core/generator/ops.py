"""Low-level tensor ops of the StyleGAN2 / EG3D generator, in plain PyTorch.

EG3D ships fused CUDA kernels for these ops together with slow reference
versions that it uses on the CPU. This module re-implements only the reference
maths, so that an official network produces the same numbers here as in EG3D
(to float32 rounding) on any device, with nothing to compile.

Contents:
  * ``bias_act``: add a per-channel bias, apply an activation, scale, clamp.
  * FIR resampling: ``setup_filter``, ``upfirdn2d``, ``filter2d``,
    ``upsample2d``, ``downsample2d``.
  * ``conv2d_resample``: a convolution fused with FIR up/downsampling.
  * ``modulated_conv2d``: StyleGAN2's style-modulated convolution.

Conventions shared by all of them: images are ``[N, C, H, W]``; a *padding* is
an int, ``[x, y]`` or ``[x_before, x_after, y_before, y_after]`` (negative
values crop); an up/down factor is an int or ``[x, y]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

Padding = Union[int, Sequence[int]]
Factor = Union[int, Sequence[int]]

# ---------------------------------------------------------------------------
# Bias + activation


@dataclass(frozen=True)
class Activation:
    """An activation function with the defaults EG3D pairs with it."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float  # shape parameter (the negative slope of lrelu)
    def_gain: float  # output scale that keeps unit variance for N(0, 1) input


_SQRT2 = math.sqrt(2.0)

ACTIVATIONS = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0),
    "relu": Activation(lambda x, alpha: F.relu(x), 0.0, _SQRT2),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, _SQRT2),
    "tanh": Activation(lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, alpha: torch.sigmoid(x) * x, 0.0, _SQRT2),
}


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> torch.Tensor:
    """Return ``clamp(act(x + b) * gain)``.

    ``b`` is a 1-D bias broadcast along dimension ``dim`` of ``x``. ``alpha``
    and ``gain`` default to the activation's own defaults (so ``lrelu`` is
    scaled by sqrt(2) unless ``gain`` is given). ``clamp`` limits the result
    to ``[-clamp, clamp]``; None disables it.
    """
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be non-negative, got {clamp}")

    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of {tuple(x.shape)}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------
# FIR filtering with up/downsampling


def _factor_xy(factor: Factor) -> tuple[int, int]:
    fx, fy = (factor, factor) if isinstance(factor, int) else factor
    if fx < 1 or fy < 1:
        raise ValueError(f"resampling factors must be >= 1, got {factor}")
    return int(fx), int(fy)


def _padding_xxyy(padding: Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    px0, px1, py0, py1 = padding
    return px0, px1, py0, py1


def _filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(width, height) of a filter; a 1-D (separable) filter is square."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(
    f,
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """Turn a list/array/tensor of taps into a float32 FIR filter tensor.

    A 1-D list of taps becomes the 2-D outer product unless it is long enough
    (>= 8 taps) to be worth applying as two 1-D passes; pass ``separable`` to
    force either form. ``normalize`` makes the taps sum to one (so a constant
    image keeps its value); ``gain`` scales the overall 2-D response, which
    for a separable filter means each 1-D pass gets ``sqrt(gain)``.
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if f.numel() == 0 or f.ndim > 2:
        raise ValueError("a filter needs 1 to 2 dimensions and at least one tap")
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    # None keeps the tensor where it was made: the CPU, or the meta device while a checkpoint's
    # arguments are checked by building the network without memory (core/checkpoint/limits.py).
    return f if device is None else f.to(device=device)


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: Factor = 1,
    down: Factor = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample each channel.

    The steps, in order, as in ``scipy.signal.upfirdn``:
      1. insert ``up - 1`` zeros after every pixel;
      2. pad with zeros (negative padding crops), in upsampled pixels;
      3. convolve with ``f`` ("valid" mode: outputs see only padded input);
      4. keep every ``down``-th pixel.
    ``flip_filter=True`` correlates instead of convolving. ``gain`` scales
    the output. ``f`` is float32 as made by ``setup_filter`` (None = identity).
    """
    if x.ndim != 4:
        raise ValueError(f"expected an [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _factor_xy(up)
    downx, downy = _factor_xy(down)
    px0, px1, py0, py1 = _padding_xxyy(padding)
    n, c, h, w = x.shape

    # 1. Zero insertion: view every pixel as a 1x1 cell and pad it to up x up.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)

    # 2. Pad the positive parts, then crop the negative ones.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    if x.shape[3] < f.shape[-1] or x.shape[2] < f.shape[0]:
        raise ValueError("the padded image is smaller than the filter")

    # 3. conv2d correlates, so a true convolution needs the filter flipped.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    # Depthwise: every channel is filtered on its own.
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=c)
    else:  # separable: a vertical pass, then a horizontal one
        x = F.conv2d(x, f.unsqueeze(2), groups=c)
        x = F.conv2d(x, f.unsqueeze(3), groups=c)

    # 4. Decimate.
    return x[:, :, ::downy, ::downx]


def filter2d(x, f, padding: Padding = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """FIR-filter an image keeping its size; ``padding`` is added on top."""
    px0, px1, py0, py1 = _padding_xxyy(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up: Factor = 2, padding: Padding = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Upsample by ``up`` with FIR interpolation; output is ``up`` times the input size.

    Zero insertion leaves 1 in ``up**2`` pixels non-zero, so the gain is
    raised by ``up**2`` to keep the average brightness.
    """
    upx, upy = _factor_xy(up)
    px0, px1, py0, py1 = _padding_xxyy(padding)
    fw, fh = _filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x, f, down: Factor = 2, padding: Padding = 0, flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Anti-aliased downsample by ``down``; output is the input size divided by ``down``."""
    downx, downy = _factor_xy(down)
    px0, px1, py0, py1 = _padding_xxyy(padding)
    fw, fh = _filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


# ---------------------------------------------------------------------------
# Convolution with resampling


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d / conv_transpose2d, where ``flip_weight=False`` means true convolution.

    torch's conv2d is a correlation; flipping the kernel turns it into a
    convolution. 1x1 kernels are symmetric, so they skip the flip.
    """
    kh, kw = w.shape[2:]
    if not flip_weight and (kh > 1 or kw > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _weight_for_transpose(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[O, I/g, kh, kw] (conv2d layout) -> [I, O/g, kh, kw] (conv_transpose2d layout)."""
    out_ch, in_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    return w.reshape(groups * in_per_group, out_ch // groups, kh, kw)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with FIR upsampling before it and/or downsampling after it.

    Equivalent to ``upfirdn2d(up) -> conv2d(w) -> upfirdn2d(down)`` with the
    padding (given relative to the upsampled image) applied once up front, but
    each common case takes a cheaper route. The routes round differently in
    the last bits, and EG3D picks the same route, so matching numerics requires
    following the same choice. ``flip_weight=True`` is correlation (like
    ``torch.nn.functional.conv2d``), False is convolution.
    """
    if x.ndim != 4 or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError("x and w must be 4-D tensors of the same dtype")
    out_ch, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding_xxyy(padding)

    # Widen the padding so the FIR filter can run "valid" over the resampled image.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]
    is_1x1 = kw == 1 and kh == 1

    # 1x1 kernels commute with resampling: always resample at the low resolution.
    if is_1x1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if is_1x1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter, then a strided convolution skips the dropped pixels.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a stride-`up` transposed convolution does zero insertion and
    # the convolution in one go; the FIR filter then runs on its output.
    if up > 1:
        w = _weight_for_transpose(w, groups)
        # The transposed conv already widens the output by (k - 1) on the leading
        # side and (k - up) on the trailing side; take that off the padding.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Whatever both sides must crop can be cropped by the transposed conv itself.
        crop_x = max(min(-px0, -px1), 0)
        crop_y = max(min(-py0, -py1), 0)
        # A transposed conv is a true convolution, hence the inverted flip.
        x = _conv(x, w, stride=up, padding=[crop_y, crop_x], groups=groups, transpose=True,
                  flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y],
                      gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and symmetric, non-negative padding: conv2d pads by itself.
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case (asymmetric or negative padding).
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


# ---------------------------------------------------------------------------
# Modulated convolution


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    resample_filter: Optional[torch.Tensor] = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2 convolution whose input channels are scaled per sample by ``styles``.

    x: [N, I, H, W]; weight: [O, I, kh, kw]; styles: [N, I]; noise broadcasts
    onto the output. With ``demodulate`` each output channel of every
    sample's effective kernel is renormalised to unit L2 norm.

    ``fused_modconv=True`` builds one kernel per sample and runs them all as a
    grouped convolution. False scales the activations before and after a
    shared convolution instead, which is the same maths (a different
    rounding) and is what EG3D uses when training.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if styles.shape != (batch, in_ch) or x.shape[1] != in_ch:
        raise ValueError(f"shapes do not agree: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"styles {tuple(styles.shape)}")

    # In float16 the modulated weights could overflow; since demodulation
    # renormalises anyway, rescaling the inputs first changes nothing else.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    # Per-sample kernels [N, O, I, kh, kw] and their demodulation coefficients [N, O].
    per_sample_w = None
    dcoefs = None
    if demodulate or fused_modconv:
        per_sample_w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (per_sample_w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()

    conv_kwargs = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), **conv_kwargs)
        if demodulate and noise is not None:
            # addcmul matches the fused multiply-add EG3D uses here.
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    if demodulate:
        per_sample_w = per_sample_w * dcoefs.reshape(batch, -1, 1, 1, 1)
    # Fold the batch into channels: sample n's channels form group n.
    x = x.reshape(1, -1, *x.shape[2:])
    group_w = per_sample_w.reshape(-1, in_ch, kh, kw).to(x.dtype)
    x = conv2d_resample(x, group_w, groups=batch, **conv_kwargs)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        # In place on the fresh conv output, so a float32 noise is rounded once
        # into a float16 x, as in EG3D.
        x.add_(noise)
    return x
