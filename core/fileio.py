"""Atomic file writes and image files: the one place the studio writes bytes to disk.

Every write goes to a temporary file in the destination folder and is renamed into place, so a
crash, a full disk or Ctrl-C never leaves a half-written file under the final name.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import cv2
import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(path, "wb", [data])


def atomic_write_text_chunks(path: str | Path, chunks) -> None:
    """A large text file written piece by piece (never whole in memory), atomically."""
    _atomic_write(path, "w", chunks)


def _atomic_write(path: str | Path, mode: str, chunks) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _normal_write_mode(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _normal_write_mode(path: Path) -> int:
    """The mode open(path, "w") would leave: an existing file keeps its own, a new one gets
    0o666 less the umask. (mkstemp makes 0600 files, which teammates sharing a dataset cannot read.)"""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    # Linux reports it without changing it; os.umask can only be read by setting it, which would
    # briefly change it for every thread of the process.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data) -> None:
    """Pretty-printed UTF-8 JSON (people read project files), written atomically.

    Lists of plain numbers (camera labels, colours) stay on one line, so a file reads as fields.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False)
    atomic_write_text(path, _NUMBER_LIST.sub(_one_line, text) + "\n")


# A JSON array of plain numbers as json.dumps(indent=...) spreads it: one item per line. Matching
# the line breaks keeps this away from string values, in which JSON escapes every newline.
_NUMBER = r"-?[0-9][0-9eE.+-]*"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


def _one_line(match: re.Match) -> str:
    return "[" + re.sub(r",\n\s*", ", ", match.group(1)) + "]"


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


# Indexed PNGs keep label maps lossless and small, and any image viewer shows them in the
# label colours. OpenCV cannot write palettes, so these two use Pillow (a scikit-image dependency).
def write_indexed_png(path: str | Path, indices: np.ndarray, palette: np.ndarray) -> None:
    """Write an (H, W) uint8 index map with a (N<=256, 3) uint8 RGB palette, atomically."""
    from PIL import Image

    if indices.ndim != 2 or indices.dtype != np.uint8:
        raise ValueError(f"{path}: an indexed PNG needs an (H, W) uint8 array, got {indices.dtype} {indices.shape}")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(palette) > 256:
        raise ValueError(f"{path}: a PNG palette holds at most 256 colours, got {len(palette)}")
    # Pillow shrinks the bit depth to fit a short palette (4 bits for <= 16 colours), which would
    # silently wrap larger index values; a full 256-entry palette keeps every value 8-bit exact.
    full_palette = np.zeros((256, 3), np.uint8)
    full_palette[: len(palette)] = palette
    height, width = indices.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(indices).tobytes())
    image.putpalette(full_palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_indexed_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(indices (H, W) uint8, palette (N, 3) uint8) of an indexed or greyscale PNG.

    A greyscale ('L') PNG is read as indices with an empty palette. Raises ValueError naming the
    file for anything else (truncated data, RGB images, 16-bit images), never returns a guess.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image_format, mode = image.format, image.mode
            image.load()
            indices = np.asarray(image).copy()
            palette = _palette_of(image)
    except Exception as error:  # Pillow reports damage as OSError, SyntaxError, zlib.error...
        raise ValueError(f"{path}: unreadable PNG ({type(error).__name__}: {error})") from error
    if image_format != "PNG":
        raise ValueError(f"{path}: not a PNG file (found {image_format})")
    if mode not in ("P", "L"):
        raise ValueError(f"{path}: not an indexed PNG (mode {mode}); label maps are stored as palette images")
    return indices.astype(np.uint8, copy=False), palette


def _palette_of(image) -> np.ndarray:
    if image.mode != "P" or image.palette is None:
        return np.zeros((0, 3), np.uint8)
    colours = np.frombuffer(bytes(image.getpalette("RGB") or []), dtype=np.uint8)
    return colours.reshape(-1, 3)
