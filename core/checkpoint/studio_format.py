"""The studio's own generator checkpoint: one .safetensors file, no pickle anywhere.

The tensors are the generator's state dict. The safetensors header metadata (string -> string)
holds one JSON document under `METADATA_KEY`:

    {"format": "datasetnerf-studio/generator", "format_version": 1,
     "class_name": "TriPlaneGenerator", "init_args": [...], "init_kwargs": {...},
     "rendering_kwargs": {...}, "neural_rendering_resolution": 128,
     "tensors_sha256": "...", "metadata": {...free-form: training info, source hash, ...}}

Loading parses only JSON and raw tensor bytes, so a checkpoint cannot carry code. The checksum
of the tensors catches damaged data that the safetensors header alone would not notice.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from core.checkpoint.errors import (
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    naming_file,
)
from core.checkpoint.generator_spec import GeneratorSpec, build_generator
from core.fileio import atomic_write_bytes

FORMAT_NAME = "datasetnerf-studio/generator"
FORMAT_VERSION = 1
METADATA_KEY = "datasetnerf_studio"
SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024  # the safetensors library's own upper bound


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- saving
def save_generator(generator: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """Write the generator's weights and configuration atomically (temp file + os.replace)."""
    path = Path(path)
    with naming_file(path):
        tensors = _tensors_to_save(generator)
        header = {"format": "pt", METADATA_KEY: _config_json(generator, metadata, tensors_sha256(tensors))}
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))


def _config_json(generator: torch.nn.Module, metadata: dict | None, checksum: str) -> str:
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class_name": type(generator).__name__,
        "init_args": list(generator.init_args),
        "init_kwargs": generator.init_kwargs,
        "rendering_kwargs": generator.rendering_kwargs,
        "neural_rendering_resolution": int(generator.neural_rendering_resolution),
        "tensors_sha256": checksum,
        "metadata": metadata or {},
    }
    try:
        return json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the configuration or metadata is not JSON-serialisable: {error}") from error


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over names, dtypes, shapes and bytes of a state dict, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _tensors_to_save(generator: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory and wants contiguous CPU data; a clone per
    # entry gives exactly that whatever the module's internal aliasing.
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in generator.state_dict().items()}


# ---------------------------------------------------------------------------- loading
def read_generator_config(path) -> dict:
    """The checkpoint's JSON configuration (including free-form metadata), without its tensors."""
    path = Path(path)
    with naming_file(path):
        return _parse_config(read_safetensors_metadata(path))


def load_generator(path, device="cpu") -> torch.nn.Module:
    """Rebuild the generator saved by save_generator; every weight must match its architecture."""
    path = Path(path)
    with naming_file(path):
        config = _parse_config(read_safetensors_metadata(path))
        spec = GeneratorSpec(
            class_name=config["class_name"],
            init_args=tuple(config["init_args"]),
            init_kwargs=config["init_kwargs"],
            rendering_kwargs=config["rendering_kwargs"],
            neural_rendering_resolution=config["neural_rendering_resolution"],
            state_dict=read_safetensors_tensors(path),
        )
        _check_tensors_checksum(spec.state_dict, config["tensors_sha256"])
        return build_generator(spec, device, file_bytes=path.stat().st_size)


def read_safetensors_metadata(path: Path) -> dict:
    """The string metadata of a .safetensors file (shared by every studio checkpoint kind)."""
    _check_safetensors_header(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as file:
            return file.metadata() or {}
    except safetensors.SafetensorError as error:
        raise CorruptCheckpointError(f"not a readable .safetensors file: {error}") from error


def _check_safetensors_header(path: Path) -> None:
    # Recognise a foreign or damaged file by its first bytes before handing it to the parser:
    # safetensors = 8-byte little-endian header length, then a JSON header starting with '{'.
    with open(path, "rb") as file:
        head = file.read(9)
        size = file.seek(0, 2)
    if len(head) < 9:
        raise CorruptCheckpointError("the file is too short to be a .safetensors checkpoint (truncated?)")
    header_length = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and header_length <= SAFETENSORS_HEADER_LIMIT:
        pass   # looks like safetensors (its first byte may be anything, 0x80 included)
    elif head[:1] == b"\x80":
        raise ForeignCheckpointError("this is a pickle file (an EG3D network pickle?); load it with load_eg3d_pickle")
    elif head.startswith(b"PK\x03\x04"):
        raise ForeignCheckpointError("this is a zip archive (a torch.save checkpoint?), not a studio checkpoint")
    else:
        raise ForeignCheckpointError("this is not a .safetensors file")
    if 8 + header_length > size:
        raise CorruptCheckpointError("the file ends inside its header (truncated?)")


def _parse_config(metadata: dict) -> dict:
    if METADATA_KEY not in metadata:
        raise ForeignCheckpointError(
            "a .safetensors file without the studio's configuration; it was not written by save_generator"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CorruptCheckpointError(f"the studio configuration is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ForeignCheckpointError("the configuration in the header is not a studio generator configuration")
    _check_version(config.get("format_version"))
    _check_config_fields(config)
    return config


def _check_version(version) -> None:
    if version != FORMAT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint format version {version!r}; this build of the studio reads version {FORMAT_VERSION}"
        )


def _check_config_fields(config: dict) -> None:
    expected_types = {
        "class_name": str,
        "init_args": list,
        "init_kwargs": dict,
        "rendering_kwargs": dict,
        "neural_rendering_resolution": int,
        "tensors_sha256": str,
    }
    for key, expected in expected_types.items():
        if not isinstance(config.get(key), expected):
            raise CorruptCheckpointError(f"the configuration's {key!r} is missing or not a {expected.__name__}")


def _check_tensors_checksum(tensors: dict, expected: str) -> None:
    if tensors_sha256(tensors) != expected:
        raise CorruptCheckpointError("the tensor data does not match the checksum in the header (the file is damaged)")


def read_safetensors_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file on the CPU; a clear error for damaged data."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as error:
        raise CorruptCheckpointError(f"the tensor data cannot be read (truncated or damaged?): {error}") from error
