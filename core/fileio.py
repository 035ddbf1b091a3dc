"""Atomic file writes and image files: the one place the studio writes bytes to disk.

Every write goes to a temporary file in the destination folder and is renamed into place, so a
crash, a full disk or Ctrl-C never leaves a half-written file under the final name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or grey (H, W) uint8/uint16 array as PNG, atomically."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); a clear error for unreadable files."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
