"""Semantic-branch checkpoints: one .safetensors file each, JSON metadata, no pickle.

Same approach as the generator format (`core.checkpoint.studio_format`): tensors are the
branch's state dict (prefix ``branch.``) plus, for resuming, the optimiser's state tensors
(prefix ``optimizer.``); the header's metadata holds one JSON document:

    {"format": "datasetnerf-studio/semantic-branch", "format_version": 1,
     "branch_config": {...SemanticBranch arguments...}, "backbone_hash": "...",
     "step": 500, "loss": 0.31, "metrics": {...}, "settings": {...},
     "optimizer": {"param_groups": [...], "scalars": {...}} | null,
     "tensors_sha256": "...", "saved_at": "2026-...Z"}

A branch only makes sense on the backbone it was trained on, so loading checks the backbone's
content hash when the caller gives one.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import safetensors.torch
import torch

from core.checkpoint.errors import (
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    ForeignCheckpointError,
    StateDictMismatchError,
    naming_file,
)
from core.checkpoint.studio_format import METADATA_KEY, read_safetensors_metadata, read_safetensors_tensors, tensors_sha256
from core.fileio import atomic_write_bytes
from core.semantic.branch import SemanticBranch

FORMAT_NAME = "datasetnerf-studio/semantic-branch"
FORMAT_VERSION = 1
CHECKPOINT_PATTERN = re.compile(r"^semantic-step(\d{7,})\.safetensors$")


class BackboneMismatchError(CheckpointError):
    """The branch was trained on a different backbone than the one it is loaded for."""


def checkpoint_name(step: int) -> str:
    return f"semantic-step{step:07d}.safetensors"


# ---------------------------------------------------------------------------- saving
def save_branch(
    branch: SemanticBranch,
    path,
    backbone_hash: str,
    step: int = 0,
    loss: float | None = None,
    metrics: dict | None = None,
    settings: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write the branch (and optionally its optimiser, for resuming) atomically."""
    path = Path(path)
    with naming_file(path):
        tensors = {f"branch.{name}": t for name, t in branch.state_dict().items()}
        optimizer_json = None
        if optimizer is not None:
            optimizer_tensors, optimizer_json = _split_optimizer_state(optimizer.state_dict())
            tensors.update(optimizer_tensors)
        tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        document = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "branch_config": branch.config,
            "backbone_hash": str(backbone_hash),
            "step": int(step),
            "loss": None if loss is None or not math.isfinite(loss) else float(loss),
            "metrics": metrics or {},
            "settings": settings or {},
            "optimizer": optimizer_json,
            "tensors_sha256": tensors_sha256(tensors),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            header = {"format": "pt", METADATA_KEY: json.dumps(document, sort_keys=True)}
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"the metrics or settings are not JSON-serialisable: {error}") from error
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))


def _split_optimizer_state(state: dict) -> tuple[dict, dict]:
    """torch optimiser state → (tensors by flat name, JSON for everything else)."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            name = f"optimizer.{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


# ---------------------------------------------------------------------------- loading
def read_branch_metadata(path) -> dict:
    """The checkpoint's JSON document (step, loss, metrics, config, backbone hash) only."""
    path = Path(path)
    with naming_file(path):
        return _parse_document(read_safetensors_metadata(path))


def load_branch(path, backbone_hash: str | None = None, device="cpu") -> tuple[SemanticBranch, dict]:
    """Rebuild a saved branch; returns (branch, metadata). A CheckpointError names the file."""
    branch, document, _ = load_branch_for_training(path, backbone_hash, device)
    return branch, document


def load_branch_for_training(path, backbone_hash: str | None = None, device="cpu"):
    """As load_branch, plus the optimiser state dict (or None) for resuming."""
    path = Path(path)
    with naming_file(path):
        document = _parse_document(read_safetensors_metadata(path))
        check_backbone_hash(document, backbone_hash)
        tensors = read_safetensors_tensors(path)
        if tensors_sha256(tensors) != document["tensors_sha256"]:
            raise CorruptCheckpointError(
                "the tensor data does not match the checksum in the header (the file is damaged)")
        branch = _build_branch(document["branch_config"], tensors).to(device)
        return branch, document, _optimizer_state(document, tensors)


def check_backbone_hash(document: dict, backbone_hash: str | None) -> None:
    if backbone_hash is not None and document["backbone_hash"] != backbone_hash:
        raise BackboneMismatchError(
            f"this semantic branch was trained on backbone {document['backbone_hash'][:16]}…, "
            f"but the loaded backbone is {str(backbone_hash)[:16]}…; retrain it on this backbone"
        )


def _parse_document(metadata: dict) -> dict:
    if METADATA_KEY not in metadata:
        raise ForeignCheckpointError(
            "a .safetensors file without the studio's metadata; not a semantic-branch checkpoint")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CorruptCheckpointError(f"the checkpoint metadata is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ForeignCheckpointError("this checkpoint is not a semantic branch (a generator checkpoint?)")
    if document.get("format_version") != FORMAT_VERSION:
        raise CheckpointVersionError(f"semantic-branch format version {document.get('format_version')!r}; "
                                     f"this build reads version {FORMAT_VERSION}")
    for key, expected in {"branch_config": dict, "backbone_hash": str, "step": int, "tensors_sha256": str}.items():
        if not isinstance(document.get(key), expected):
            raise CorruptCheckpointError(f"the metadata's {key!r} is missing or not a {expected.__name__}")
    return document


def _build_branch(config: dict, tensors: dict) -> SemanticBranch:
    try:
        branch = SemanticBranch(**config)
    except (TypeError, ValueError) as error:
        raise CorruptCheckpointError(f"the stored branch configuration cannot be built: {error}") from error
    state = {name[len("branch."):]: t for name, t in tensors.items() if name.startswith("branch.")}
    expected = branch.state_dict()
    mismatched = [name for name in state if name in expected and state[name].shape != expected[name].shape]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched)
    branch.load_state_dict(state)
    return branch


def _optimizer_state(document: dict, tensors: dict) -> dict | None:
    stored = document.get("optimizer")
    if not stored:
        return None
    state: dict[int, dict] = {}
    flat = {name: t for name, t in tensors.items() if name.startswith("optimizer.")}
    flat.update(stored.get("scalars", {}))
    for name, value in flat.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": stored["param_groups"]}


# ---------------------------------------------------------------------------- a directory of them
def list_checkpoints(directory) -> list[tuple[int, Path]]:
    """(step, path) of the training checkpoints in a directory, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def clear_checkpoints(directory) -> int:
    """Remove a directory's training checkpoints (for a fresh run); returns how many."""
    found = list_checkpoints(directory)
    for _, path in found:
        path.unlink()
    return len(found)
