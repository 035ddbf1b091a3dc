"""Conversions from rendered tensors to displayable arrays."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def rgb_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] (EG3D's range) → (H, W, 3) uint8, as gen_samples.py."""
    if image.ndim == 4:
        image = image[0]
    scaled = (image.detach().float().permute(1, 2, 0) * 127.5 + 128).clamp(0, 255)
    return scaled.to(torch.uint8).cpu().numpy()


def depth_to_uint8(depth: torch.Tensor, near: float | None = None, far: float | None = None) -> np.ndarray:
    """(1, H, W) or (1, 1, H, W) ray depth → (H, W) uint8, near = white, far = black."""
    depth = depth.detach().float().reshape(depth.shape[-2], depth.shape[-1]).cpu()
    near = float(depth.min()) if near is None else near
    far = float(depth.max()) if far is None else far
    normalised = (far - depth) / max(far - near, 1e-8)
    return (normalised.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def resize_labels(mask: np.ndarray, resolution: int) -> np.ndarray:
    if mask.shape[0] == resolution:
        return np.asarray(mask, np.uint8)
    return cv2.resize(np.asarray(mask, np.uint8), (resolution, resolution), interpolation=cv2.INTER_NEAREST)


def resize_image(image: np.ndarray, resolution: int) -> np.ndarray:
    if image.shape[0] == resolution:
        return image
    shrink = resolution < image.shape[0]
    return cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
