"""The frozen model PoseGen steers against: one TorchScript file whatever its task.

Every model is a TorchScript file (`torch.jit.load`; never pickle) with its declaration stored
beside the code as the extra file `studio.json`: {"task": "segmentation"|"pose", "input_size": S,
"num_classes": K}. The studio writes its own models that way (`train-frozen`: the downstream
segmenter of core.downstream, or PoseNet below); a user's own TorchScript file may lack the
declaration and then gets it from the command line (`--task`, `--input-size`).

* segmentation: images (N, 3, S, S) in [0, 1] -> logits (N, K, S, S); per-sample loss = pixel
  cross-entropy against the factory's labels (unlabelled pixels ignored);
* pose: images (N, 3, S, S) in [0, 1] -> (N, 2) yaw, pitch in degrees; per-sample loss = mean
  absolute angle error in degrees.

Fine-tuning trains the loaded module's own parameters (a scripted module trains like any other)
and saves it back as TorchScript with the same declaration. The studio's models are trained eagerly
and *traced* in eval mode when saved (the downstream SegNet does not script), so a fine-tuned
loaded model keeps its BatchNorm statistics frozen: the usual way to fine-tune on few samples.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.downstream.training import IGNORE_LABEL
from core.fileio import atomic_write_bytes

TASKS = ("segmentation", "pose")
DECLARATION = "studio.json"
POSE_SCALE_DEG = 45.0  # PoseNet predicts angles / 45 degrees: unit-sized targets


class ModelError(ValueError):
    """A model file that cannot be used for the task; the message names the file and the problem."""


class PoseNet(nn.Module):
    """A small CNN regressing (yaw, pitch) in degrees from an image (N, 3, S, S) in [0, 1]."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images - 0.5).mean(dim=(2, 3))
        return self.head(features) * POSE_SCALE_DEG


@dataclass
class FrozenModel:
    """A loaded model with its declared task, input size and (segmentation) class count."""

    module: nn.Module  # a loaded TorchScript module, or an eager studio model before its first save
    task: str
    input_size: int
    num_classes: int = 0
    source: str = ""

    def declaration(self) -> dict:
        return {"task": self.task, "input_size": self.input_size, "num_classes": self.num_classes}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for images (N, 3, H, W) in [0, 1], resized to the input size first."""
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.input_size)
        return self.module(images)

    def sample_losses(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) loss per sample; targets: (N, H, W) label ids (segmentation) or (N, 2) degrees (pose)."""
        return sample_losses(self.task, self.forward(images), targets)


def sample_losses(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if task == "pose":
        return (outputs - targets.to(outputs.dtype)).abs().mean(1)
    if targets.shape[-1] != outputs.shape[-1]:
        targets = F.interpolate(targets[:, None].float(), size=outputs.shape[-2:], mode="nearest")[:, 0].long()
    pixels = F.cross_entropy(outputs, targets.long(), ignore_index=IGNORE_LABEL, reduction="none")
    counted = (targets != IGNORE_LABEL).flatten(1).sum(1).clamp_min(1)
    return pixels.flatten(1).sum(1) / counted


# ---------------------------------------------------------------------------- files
def save_model(model: FrozenModel, path: Path) -> None:
    """Write the model as TorchScript with its declaration, atomically."""
    module = model.module
    if not isinstance(module, torch.jit.ScriptModule):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # SegNet's size check is constant here
            module = torch.jit.trace(module.eval(), torch.full((1, 3, model.input_size, model.input_size), 0.5))
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={DECLARATION: json.dumps(model.declaration())})
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_model(path, task: str | None = None, input_size: int | None = None) -> FrozenModel:
    """Load a TorchScript model and check it against its (or the given) declaration.

    Raises ModelError when the file does not load as TorchScript, the task is unknown or
    contradicts the file's declaration, or a probe batch gives outputs of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    extra = {DECLARATION: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError/ValueError/... for anything not TorchScript
        raise ModelError(f"{path}: not a TorchScript model ({str(error).splitlines()[0][:200]}); "
                         "save yours with torch.jit.save(torch.jit.script(model), PATH)") from error
    try:
        declared = json.loads(extra[DECLARATION]) if extra[DECLARATION] else {}
    except ValueError as error:
        raise ModelError(f"{path}: its {DECLARATION} is not JSON ({error})") from error
    if not isinstance(declared, dict):
        raise ModelError(f"{path}: its {DECLARATION} must be a JSON object")
    if task is not None and declared.get("task") not in (None, task):
        raise ModelError(f"{path}: the file declares task {declared['task']!r}, not {task!r}")
    task = task or declared.get("task")
    if task not in TASKS:
        raise ModelError(f"{path}: task must be one of {', '.join(TASKS)} (pass --task), got {task!r}")
    size = int(input_size or declared.get("input_size") or 0)
    if size < 8:
        raise ModelError(f"{path}: declare the model's input size (--input-size, at least 8)")
    model = FrozenModel(module, task, size, int(declared.get("num_classes", 0)), str(path))
    _probe(model, path)
    return model


def read_declaration(path) -> dict:
    """The `studio.json` declaration of a TorchScript file without loading its code ({} when it
    has none): a TorchScript file is a zip archive holding extra files under ARCHIVE/extra/."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{DECLARATION}")]
            text = archive.read(names[0]).decode("utf-8") if names else ""
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: not a TorchScript model ({error})") from error
    try:
        declared = json.loads(text) if text else {}
    except ValueError as error:
        raise ModelError(f"{path}: its {DECLARATION} is not JSON ({error})") from error
    if not isinstance(declared, dict):
        raise ModelError(f"{path}: its {DECLARATION} must be a JSON object")
    return declared


def _probe(model: FrozenModel, path: Path) -> None:
    """Run two blank images through the model and check what comes back."""
    module_was_training = model.module.training
    model.module.eval()
    try:
        with torch.no_grad():
            output = model.forward(torch.full((2, 3, model.input_size, model.input_size), 0.5))
    except Exception as error:
        raise ModelError(f"{path}: the model fails on a (2, 3, {model.input_size}, {model.input_size}) batch: "
                         f"{str(error).splitlines()[0][:200]}") from error
    finally:
        model.module.train(module_was_training)
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"{path}: the model must return one tensor, got {type(output).__name__}")
    size = model.input_size
    if model.task == "pose" and tuple(output.shape) != (2, 2):
        raise ModelError(f"{path}: a pose model must return (N, 2) yaw and pitch in degrees; got {tuple(output.shape)}")
    if model.task == "segmentation":
        if output.ndim != 4 or tuple(output.shape[2:]) != (size, size) or output.shape[0] != 2:
            raise ModelError(f"{path}: a segmentation model must return logits (N, K, {size}, {size}); "
                             f"got {tuple(output.shape)}")
        if model.num_classes and output.shape[1] != model.num_classes:
            raise ModelError(f"{path}: declares {model.num_classes} classes but returns {output.shape[1]}")
        model.num_classes = int(output.shape[1])


# ---------------------------------------------------------------------------- training
@dataclass
class TrainSettings:
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0


def train_steps(model: FrozenModel, images: np.ndarray, targets: np.ndarray, settings: TrainSettings,
                progress=None, weights: np.ndarray | None = None) -> list[float]:
    """Train `model` in place on uint8 images (N, H, W, 3) and targets (labels (N, H, W) or angles
    (N, 2)) for `settings.steps` Adam steps with a cosine schedule; returns the loss per step.
    `weights` (N,), summing to 1, are the samples' batch draw probabilities (default uniform)."""
    if len(images) == 0:
        raise ValueError("there are no training samples")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    parameters = [p for p in model.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    steps = max(1, settings.steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.module.train()
    history = []
    for step in range(settings.steps):
        index = (rng.integers(0, len(images), settings.batch_size) if weights is None
                 else rng.choice(len(images), settings.batch_size, p=weights))
        batch = torch.from_numpy(images[index].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        loss = model.sample_losses(batch, torch.from_numpy(np.asarray(targets[index]))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, settings.steps, history[-1])
    model.module.eval()
    return history


def new_model(task: str, input_size: int, num_classes: int = 0, width: int = 16, seed: int = 0) -> FrozenModel:
    """A fresh, untrained studio model for `task` (the downstream SegNet or PoseNet), eager."""
    torch.manual_seed(seed)
    if task == "pose":
        return FrozenModel(PoseNet(width), "pose", int(input_size))
    if task == "segmentation":
        from core.downstream.segnet import SegNet, SegNetConfig

        return FrozenModel(SegNet(SegNetConfig(num_classes, width=width)), "segmentation", int(input_size),
                           int(num_classes))
    raise ModelError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


@torch.no_grad()
def evaluate_outputs(model: FrozenModel, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Predictions for uint8 images (N, H, W, 3): label ids (N, S, S) or angles (N, 2)."""
    model.module.eval()
    out = []
    for first in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[first:first + batch_size].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        output = model.forward(batch)
        out.append((output.argmax(1).to(torch.uint8) if model.task == "segmentation" else output).numpy())
    return np.concatenate(out)
