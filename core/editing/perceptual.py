"""Perceptual losses for inversion and editing, with or without pretrained weights.

No network can be downloaded here, so there are two losses with one interface:

* `VGGPerceptualLoss` ("lpips-vgg16"): our own VGG16 feature stack loads a torchvision-format
  ImageNet state dict (keys `features.N.weight` / `features.N.bias` for the 13 convolutions at
  N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; `classifier.*` keys are ignored) from a file
  the user names. Like LPIPS it compares the ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3 and
  relu5_3, each unit-normalised over channels at every pixel; unlike LPIPS the per-channel
  squared differences are averaged *unweighted* (LPIPS learns a linear weight per channel, which
  we do not have), then averaged over pixels and summed over the five layers.
* `StructuralLoss` ("ms-ssim+gradients", the offline default): 1 − SSIM averaged over three
  scales (Gaussian window σ = 1.5, a plain mean of the scales instead of MS-SSIM's product with
  exponents, which is unstable when a scale's SSIM is negative) plus the L1 difference of the
  images' horizontal and vertical finite differences (edges where the target has edges). Both
  are zero for identical images and grow with blur, noise and shifts.

Images are (N, 3, H, W) in EG3D's [-1, 1] range. `perceptual_loss(path_or_None)` picks one;
its `name` says which, and the command line and the Edit workspace show it.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# torchvision's VGG16 'features': convolutions at these indices, ReLU after each, max-pool at
# 4, 9, 16, 23, 30. LPIPS taps the ReLUs after the last convolution of each stage.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (2, 7, 14, 21)  # conv indices followed by a max-pool (the last pool is unused)
VGG16_TAPS = (2, 7, 14, 21, 28)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualWeightsError(ValueError):
    """A VGG16 weights file could not be read or is not a torchvision VGG16 state dict."""


# ------------------------------------------------------------------ VGG16 (LPIPS-style)
class VGG16Features(nn.Module):
    """torchvision's vgg16().features up to relu5_3, with the same module indices."""

    def __init__(self):
        super().__init__()
        self.features = nn.ModuleDict()
        in_channels = 3
        for index, channels in zip(VGG16_CONV_INDICES, VGG16_CHANNELS):
            self.features[str(index)] = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
            in_channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index in VGG16_CONV_INDICES:
            x = F.relu(self.features[str(index)](x))
            if index in VGG16_TAPS:
                taps.append(x)
            if index in VGG16_POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        return taps

    def load_torchvision_state_dict(self, state: dict, source: str) -> None:
        """Copy `features.N.*` tensors in, checking that every one is there with the right shape."""
        expected = {f"features.{index}.{kind}": parameter
                    for index in VGG16_CONV_INDICES
                    for kind, parameter in (("weight", self.features[str(index)].weight),
                                            ("bias", self.features[str(index)].bias))}
        missing = [key for key in expected if key not in state]
        if missing:
            found = ", ".join(list(state)[:4]) or "nothing"
            raise PerceptualWeightsError(
                f"{source}: not a torchvision VGG16 state dict: {len(missing)} of its 26 convolution tensors are "
                f"missing (first: {missing[0]}; the file holds {found}{'…' if len(state) > 4 else ''})")
        with torch.no_grad():
            for key, parameter in expected.items():
                value = state[key]
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(parameter.shape):
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise PerceptualWeightsError(
                        f"{source}: {key} has shape {shape}, VGG16 needs {tuple(parameter.shape)}")
                if not torch.isfinite(value).all():
                    raise PerceptualWeightsError(f"{source}: {key} holds NaN or infinite values")
                parameter.copy_(value.float())


def read_vgg16_state_dict(path: str | Path) -> dict:
    """A state dict from a .safetensors file or a torch .pth/.pt file (read with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise PerceptualWeightsError(f"VGG16 weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only refuses anything but tensors and plain containers: no code runs.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors / pickle report damage in many types
        raise PerceptualWeightsError(f"{path}: unreadable weights file ({type(error).__name__}: {error})") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PerceptualWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


class VGGPerceptualLoss(nn.Module):
    """LPIPS-style distance on our VGG16 with ImageNet weights (unweighted channel average)."""

    name = "lpips-vgg16"

    def __init__(self, weights_path: str | Path):
        super().__init__()
        self.vgg = VGG16Features()
        self.vgg.load_torchvision_state_dict(read_vgg16_state_dict(weights_path), str(weights_path))
        self.vgg.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.source = str(weights_path)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        both = torch.cat([x, y]).float()
        both = ((both + 1) / 2 - self.mean) / self.std
        total = both.new_zeros(())
        for features in self.vgg(both):
            normalised = features / (features.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            a, b = normalised.chunk(2)
            total = total + (a - b).pow(2).mean(1).mean()
        return total


# ------------------------------------------------------------------ the offline default
def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (N, C, H, W), Gaussian window, reflect-padded borders."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    channels = x.shape[1]
    window = _gaussian_window(window_size, sigma, channels, x)
    pad = window_size // 2

    def blur(t):
        return F.conv2d(F.pad(t, (pad,) * 4, mode="reflect"), window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean()


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class StructuralLoss(nn.Module):
    """(1 − SSIM) averaged over scales + gradient L1: the default without pretrained weights."""

    name = "ms-ssim+gradients"

    def __init__(self, scales: int = 3, gradient_weight: float = 1.0):
        super().__init__()
        self.scales = scales
        self.gradient_weight = gradient_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
        gx, gy = image_gradients(x), image_gradients(y)
        gradient = (gx[0] - gy[0]).abs().mean() + (gx[1] - gy[1]).abs().mean()
        dissimilarity, used = x.new_zeros(()), 0
        for scale in range(self.scales):
            if min(x.shape[-2:]) < 8:  # too small for a 7-pixel window with reflect padding
                break
            dissimilarity = dissimilarity + (1 - ssim(x, y))
            used += 1
            if scale + 1 < self.scales:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        return dissimilarity / max(used, 1) + self.gradient_weight * gradient


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"a perceptual loss compares two (N, 3, H, W) images; got {tuple(x.shape)} and {tuple(y.shape)}")


def perceptual_loss(vgg_weights: str | Path | None = None) -> nn.Module:
    """The LPIPS-style VGG16 loss when a weights file is given, else the structural default."""
    if vgg_weights:
        return VGGPerceptualLoss(vgg_weights)
    return StructuralLoss()
