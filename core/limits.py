"""Sane ranges for every number the studio takes from outside: files, the command line, the window.

Why one place: a number decides how much memory and time the studio spends (a checkpoint's
`w_dim`, a `--neural-resolution`), or whether it silently renders garbage (a NaN angle renders
black). Each `Range` says what is allowed and, where it matters, the memory its upper end implies,
so the error message can say why. Checkpoints (`core/checkpoint`), the CLI's argument types
(`core/cli.py`) and the window's input widgets all read their bounds from here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


class OutOfRange(ValueError):
    """A number outside its Range (or not a number of the right kind); the message names it."""


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    integer: bool = False
    power_of_two: bool = False
    note: str = ""  # why the bound is where it is (memory implied, convention), shown in messages

    def describe(self) -> str:
        kind = "a power of two" if self.power_of_two else "an integer" if self.integer else "a finite number"
        text = f"{kind} from {_number(self.low)} to {_number(self.high)}"
        return f"{text} ({self.note})" if self.note else text

    def check(self, value, name: str):
        """`value` if it is inside the range; OutOfRange naming `name` otherwise."""
        if not self.contains(value):
            raise OutOfRange(f"{name} must be {self.describe()}, not {value!r}")
        return value

    def contains(self, value) -> bool:
        # numbers.* so that numpy scalars (a seed drawn by numpy, a spin box's float) count too.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value) or not self.low <= value <= self.high:
            return False
        return not self.power_of_two or int(value) & (int(value) - 1) == 0

    def parse(self, text: str, integer: bool | None = None):
        """The value of a command-line string, an int (`integer`, default: the range's kind) or a
        float, checked."""
        integer = self.integer if integer is None else integer
        try:
            value = int(text, 10) if integer else float(text)
        except ValueError:
            raise OutOfRange(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        if not self.contains(value):
            raise OutOfRange(f"must be {self.describe()}, not {text}")
        return value


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 2 ** 20:
        exponent = math.log2(abs(value) + 1)
        if exponent.is_integer():
            return f"{'-' if value < 0 else ''}2^{int(exponent)}-1"
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- what users type
SEED = Range(0, 2 ** 32 - 1, integer=True, note="EG3D's seeds seed numpy's RandomState")
YAW = Range(-360.0, 360.0, note="degrees")
PITCH = Range(-89.0, 89.0, note="degrees; at +-90 the look-at camera has no up direction")
FOV = Range(1.0, 179.0, note="degrees")
TRUNCATION = Range(-2.0, 2.0, note="psi; EG3D uses 0.5 to 1")
TRUNCATION_CUTOFF = Range(0, 64, integer=True, note="w layers; EG3D's largest network has 14")
NEURAL_RESOLUTION = Range(
    8, 512, integer=True,
    note="rays per side; a GPU renders a whole image at once, about 1 KiB per sample: "
         "512^2 rays x 96 samples is 25 GiB; a CPU renders 2048-ray chunks",
)
IMAGE_SIZE = Range(8, 4096, integer=True, note="pixels per side; a 4096^2 RGB image is 48 MiB")
INVERSION_RESOLUTION = Range(16, 512, integer=True, note="pixels per side of the rendered comparison")


# ---------------------------------------------------------------------------- checkpoint arguments
_FEATURES = Range(1, 4096, integer=True, note="EG3D uses 512")
_CHANNEL_BASE = Range(1, 2 ** 20, integer=True, note="EG3D uses 32768")
_FP16_LAYERS = Range(0, 16, integer=True)
_DISTANCE = Range(0.0, 1000.0, note="world units")

# Dotted paths into the constructor arguments. Anything numeric not listed still has to be finite
# and fit in 32 bits (ANY_NUMBER), and the network these arguments build is then measured without
# memory (on torch's meta device) against the tensors in the file before anything is allocated.
INIT_ARGUMENTS = {
    "z_dim": _FEATURES,
    "w_dim": _FEATURES,
    "c_dim": Range(0, 1024, integer=True, note="EG3D's camera label has 25"),
    "img_resolution": Range(4, 2048, integer=True, power_of_two=True),
    "img_channels": Range(1, 16, integer=True),
    "plane_resolution": Range(4, 1024, integer=True, power_of_two=True, note="EG3D uses 256"),
    "channel_base": _CHANNEL_BASE,
    "channel_max": _FEATURES,
    "num_fp16_res": _FP16_LAYERS,
    "sr_num_fp16_res": _FP16_LAYERS,
    "conv_clamp": Range(0.0, 1e6),
    "mapping_kwargs.num_layers": Range(0, 32, integer=True, note="EG3D uses 2"),
    "mapping_kwargs.embed_features": _FEATURES,
    "mapping_kwargs.layer_features": _FEATURES,
    "mapping_kwargs.w_avg_beta": Range(0.0, 1.0),
    "sr_kwargs.channel_base": _CHANNEL_BASE,
    "sr_kwargs.channel_max": _FEATURES,
}
RENDERING_ARGUMENTS = {
    "depth_resolution": Range(1, 512, integer=True, note="samples per ray; EG3D uses 48 to 64"),
    "depth_resolution_importance": Range(0, 512, integer=True, note="samples per ray; EG3D uses 48 to 64"),
    "image_resolution": Range(4, 2048, integer=True, power_of_two=True),
    "ray_start": _DISTANCE,
    "ray_end": _DISTANCE,
    "box_warp": Range(1e-6, 1000.0, note="world units"),
    "avg_camera_radius": Range(1e-6, 1000.0, note="world units"),
}
CHECKPOINT_NEURAL_RESOLUTION = Range(4, 512, integer=True, note="EG3D uses 64 or 128")
ANY_NUMBER = Range(-(2 ** 31), 2 ** 31 - 1, note="no constructor argument needs more")


def check_numbers(value, name: str, named: dict[str, Range], path: str = "") -> None:
    """Every number in a nested argument structure: finite and 32-bit; `named` paths in range."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, name, named, f"{path}{key}." if isinstance(key, str) else path)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_numbers(item, name, named, path)
        return
    key = path.rstrip(".")
    if key in named and value is not None and not (isinstance(value, str) and value == "auto"):
        named[key].check(value, f"{name} {key}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ANY_NUMBER.check(value, f"{name} {key or '(a positional argument)'}")


# ---------------------------------------------------------------------------- command-line arguments
# Every int/float option of every command, by its argparse `dest` ("COMMAND:dest" where one name
# means different things in different commands). core/cli.py applies these as the options' types,
# so a bad number ends as argparse's one-line error and exit status 2 before any work starts;
# tests/test_cli_ranges.py fails for a numeric option that is missing here.
_COUNT = Range(1, 10 ** 6, integer=True)
_STEPS = Range(1, 10 ** 7, integer=True, note="optimisation steps")
_WEIGHT = Range(0.0, 1000.0)
_MULTIPLIER = Range(0.0, 1000.0)
_RESOLUTION = Range(8, 2048, integer=True, note="pixels per side; 2048^2 labels and images take about 50 MiB each")

CLI_ARGUMENTS: dict[str, Range] = {
    "threads": Range(1, 1024, integer=True),
    "seed": SEED,
    "yaw": YAW,
    "pitch": PITCH,
    "fov": FOV,
    "truncation": TRUNCATION,
    "truncation_cutoff": TRUNCATION_CUTOFF,
    "size": IMAGE_SIZE,
    "neural_resolution": NEURAL_RESOLUTION,
    "steps": _STEPS,
    "resolution": _RESOLUTION,
    "invert:resolution": INVERSION_RESOLUTION,
    "edit:resolution": INVERSION_RESOLUTION,
    "identities": Range(0, 10 ** 6, integer=True, note="0 skips where the help says so"),
    "annotate-sim:identities": _COUNT,
    "annotate-sim:start": SEED,
    "inversions": Range(0, 1000, integer=True),
    "inversion_steps": _STEPS,
    "views": Range(1, 1000, integer=True),
    "video_identities": Range(0, 1000, integer=True),
    "video_frames": Range(1, 10 ** 4, integer=True),
    "checkpoint_every": Range(1, 10 ** 7, note="steps (train-semantic) or seconds (fit-backbone)"),
    "class_balance": Range(0.0, 4.0, note="power of the inverse class frequency"),
    "edge_weight": _WEIGHT,
    "raw_loss_weight": _WEIGHT,
    "annotation_scale_pairs": _COUNT,
    "semantic_steps": _STEPS,
    "n": Range(1, 10 ** 7, integer=True),
    "generate:size": Range(8, 2048, integer=True, note="pixels per side; each view's image, labels and depth are "
                                                       "held at once, about 16 bytes a pixel: 64 MiB at 2048^2"),
    "voxel_size": Range(1e-6, 10.0, note="world units"),
    "workers": Range(1, 256, integer=True),
    "threads_per_worker": Range(1, 1024, integer=True),
    "gpus_per_worker": Range(0.0, 64.0, note="GPUs of each Ray worker; fractions share one"),
    "val_identities": Range(0, 10 ** 7, integer=True),
    "export-views:start": SEED,
    # steer, evaluate steer, train-frozen (core/steering)
    "rounds": Range(1, 1000, integer=True),
    "samples": Range(1, 10 ** 7, integer=True, note="samples written per round"),
    "input_size": Range(8, 1024, integer=True, note="pixels per side of the frozen model's input"),
    "components": Range(1, 64, integer=True),
    "principal": Range(0, 64, integer=True, note="principal directions of w steered"),
    "kl_weight": Range(0.0, 100.0),
    "steer_steps": _STEPS,
    "steer_identities": Range(1, 1024, integer=True),
    "max_loss": Range(0.0, 1e6),
    "min_confidence": Range(0.0, 1.0),
    "prior_fraction": Range(0.0, 1.0),
    "replay_fraction": Range(0.0, 0.99, note="share of each fine-tuning batch replayed (below 1: the rounds keep a share)"),
    "finetune_steps": _STEPS,
    "width": Range(1, 1024, integer=True, note="channels of the frozen model's first layer"),
    "data_workers": Range(0, 64, integer=True),
    "minutes": Range(0.01, 10 ** 6),
    "learning_rate": Range(1e-9, 10.0),
    "identities_per_step": Range(1, 1024, integer=True),
    "rays_per_identity": Range(1, 2 ** 20, integer=True, note="about 1 KiB of activations per ray sample"),
    "surface_points_per_identity": Range(0, 2 ** 20, integer=True),
    "space_points_per_identity": Range(0, 2 ** 20, integer=True),
    "plane_lr_multiplier": _MULTIPLIER,
    "decoder_lr_multiplier": _MULTIPLIER,
}


def range_pair(checked: Range, what: str = "numbers"):
    """An argparse type for "A,B": two values inside `checked`, A <= B (a --yaw-range, a bound)."""

    def parse(text: str) -> tuple[float, float]:
        import argparse

        try:
            low, high = (checked.parse(part) for part in text.split(","))
        except (ValueError, OutOfRange) as error:
            raise argparse.ArgumentTypeError(f"expected two {what} A,B, got {text!r}: {error}") from None
        if low > high:
            raise argparse.ArgumentTypeError(f"the range {text!r} ends before it starts")
        return low, high

    return parse


def cli_range(command: str, dest: str) -> Range | None:
    return CLI_ARGUMENTS.get(f"{command}:{dest}", CLI_ARGUMENTS.get(dest))
