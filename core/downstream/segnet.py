"""A DeepLabV3-style part segmenter sized for a CPU, trained from scratch.

DatasetNeRF (§5.1), like DatasetGAN, judges generated data by training DeepLab-V3 (ResNet-101) on
it. The same design at a size a 2-core CPU can train in minutes at 64² or 128²:

    stem (3×3 conv, stride 2)                                    → low-level features, stride 2
    ResNet basic blocks: [w, w] · [2w, 2w] stride 2 · [4w, 4w] dilated 2 → stride 4
    ASPP: 1×1 conv, three 3×3 atrous convs (rates 1·r, 2·r, 3·r), image pooling → 1×1 projection
    decoder: upsample to stride 2, concatenate a 1×1 projection of the stem, 3×3 conv, classifier

Output stride 4 instead of DeepLab's 8–16 and the one low-level skip (as in DeepLabV3+) are there
because the thin parts (eyes, mouth, inner ears) are one to three pixels wide at 64².
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class SegNetConfig:
    num_classes: int
    width: int = 16           # channels of the first ResNet stage; later stages 2w and 4w
    aspp_channels: int = 32
    aspp_rate: int = 2        # ASPP dilations are rate, 2·rate and 3·rate (at stride 4)
    low_level_channels: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
    padding = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet's two 3×3 convolutions with an identity (or 1×1 projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels, out_channels, 3, stride, dilation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): parallel dilations plus global context."""

    def __init__(self, in_channels: int, out_channels: int, rate: int):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, out_channels, 1)] + [
            _conv_bn_relu(in_channels, out_channels, 3, dilation=rate * k) for k in (1, 2, 3)])
        # Image pooling without BatchNorm: at batch size 1 a 1×1 map has no batch statistics.
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU())
        self.project = _conv_bn_relu(5 * out_channels, out_channels, 1)

    def forward(self, x):
        pooled = self.pooling(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], 1))


class SegNet(nn.Module):
    """Images (N, 3, H, W) in [0, 1] → class logits (N, K, H, W); H, W multiples of 4."""

    def __init__(self, config: SegNetConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(_conv_bn_relu(3, w, 3), _conv_bn_relu(w, w, 3, stride=2))
        self.stages = nn.Sequential(
            BasicBlock(w, w), BasicBlock(w, w),
            BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w),
            BasicBlock(2 * w, 4 * w, dilation=2), BasicBlock(4 * w, 4 * w, dilation=2))
        self.aspp = ASPP(4 * w, config.aspp_channels, config.aspp_rate)
        self.low_level = _conv_bn_relu(w, config.low_level_channels, 1)
        self.decoder = _conv_bn_relu(config.aspp_channels + config.low_level_channels, config.aspp_channels, 3)
        self.classifier = nn.Conv2d(config.aspp_channels, config.num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] % 4 or images.shape[-2] % 4:
            raise ValueError(f"image sides must be multiples of 4, got {tuple(images.shape[-2:])}")
        low = self.stem(images - 0.5)
        context = self.aspp(self.stages(low))
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([context, self.low_level(low)], 1)))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
