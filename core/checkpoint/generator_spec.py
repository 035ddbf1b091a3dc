"""A generator as a checkpoint describes it, and building our generator from that description.

Both checkpoint formats (official EG3D pickles and the studio's .safetensors) reduce to a
`GeneratorSpec`: the constructor arguments EG3D's persistence recorded, the rendering options,
and a flat state dict. `build_generator` turns a spec into a `TriPlaneGenerator` and refuses
any parameter mismatch instead of silently leaving weights at their random initial values.

The file's numbers decide how much memory building takes, so nothing is allocated before they
are checked: every argument against its range (core/limits.py), then the network they describe
is built on torch's meta device (shapes, no memory) and compared with the file's tensors, name by
name and shape by shape, and its byte size with the file's size. Only then is the real network
built, and weights that are NaN or infinite are refused.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from core.checkpoint.errors import CorruptCheckpointError, StateDictMismatchError, UnsupportedGeneratorError
from core.limits import (
    CHECKPOINT_NEURAL_RESOLUTION,
    INIT_ARGUMENTS,
    RENDERING_ARGUMENTS,
    OutOfRange,
    check_numbers,
)

# Buffers that EG3D's training loop registers on G after construction
# (G.register_buffer('dataset_label_std', ...)), so official pickles carry them although
# TriPlaneGenerator.__init__ never creates them. We register them the same way before loading,
# which keeps load_state_dict strict for everything else.
TRAINING_LOOP_BUFFERS = ("dataset_label_std",)


@dataclass
class GeneratorSpec:
    """Everything needed to rebuild a generator, with no code attached."""

    class_name: str
    init_args: tuple
    init_kwargs: dict
    rendering_kwargs: dict
    neural_rendering_resolution: int
    state_dict: dict[str, torch.Tensor] = field(repr=False)


def generator_class(class_name: str):
    """Our implementation of a generator class named in a checkpoint."""
    # Imported here so that reading a checkpoint's records never needs the network code.
    from core.generator.triplane import TriPlaneGenerator

    known = {"TriPlaneGenerator": TriPlaneGenerator}
    if class_name not in known:
        raise UnsupportedGeneratorError(
            f"the generator is a {class_name}; the studio can build only {', '.join(sorted(known))}"
        )
    return known[class_name]


def build_generator(spec: GeneratorSpec, device="cpu", file_bytes: int | None = None) -> torch.nn.Module:
    """Construct the generator from its own arguments and load every weight, strictly.

    `file_bytes` (the checkpoint's size on disk) bounds the weights the arguments may imply.
    """
    check_generator_arguments(spec)
    generator_class(spec.class_name)  # an unknown class is named before anything is built
    with torch.device("meta"):
        outline = _construct(spec)
    _register_training_loop_buffers(outline, spec.state_dict)
    check_state_dict_matches(outline, spec.state_dict)
    _check_implied_size(outline, file_bytes)
    check_finite(spec.state_dict)
    generator = _construct(spec)
    generator.rendering_kwargs = copy.deepcopy(spec.rendering_kwargs)
    generator.neural_rendering_resolution = int(spec.neural_rendering_resolution)
    _register_training_loop_buffers(generator, spec.state_dict)
    generator.load_state_dict(spec.state_dict, strict=True)
    return generator.eval().requires_grad_(False).to(device)


def check_generator_arguments(spec: GeneratorSpec) -> None:
    """Every constructor and rendering argument inside its range (core/limits.py), by name."""
    nested_rendering = {f"rendering_kwargs.{key}": item for key, item in RENDERING_ARGUMENTS.items()}
    try:
        check_numbers(list(spec.init_args), "constructor argument", {})
        check_numbers(spec.init_kwargs, "constructor argument", {**INIT_ARGUMENTS, **nested_rendering})
        check_numbers(spec.rendering_kwargs, "rendering argument", RENDERING_ARGUMENTS)
        CHECKPOINT_NEURAL_RESOLUTION.check(spec.neural_rendering_resolution, "neural_rendering_resolution")
    except OutOfRange as error:
        raise UnsupportedGeneratorError(f"refused before building anything: the file's {error}") from None
    start, end = spec.rendering_kwargs.get("ray_start"), spec.rendering_kwargs.get("ray_end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and not start < end:
        raise UnsupportedGeneratorError(f"the file's rendering arguments ray_start {start} and ray_end {end} give no depth range")


def _check_implied_size(outline: torch.nn.Module, file_bytes: int | None) -> None:
    # Shapes matching the file's tensors already bound the network by the tensors' sizes; tensors
    # may share storage, though, so the file's own size is the bound on what it can really hold.
    implied = sum(tensor.numel() * tensor.element_size() for tensor in outline.state_dict().values())
    if file_bytes is not None and implied > file_bytes:
        raise CorruptCheckpointError(
            f"the constructor arguments imply {implied / 2**20:.1f} MiB of weights, "
            f"but the whole file is {file_bytes / 2**20:.1f} MiB"
        )


def check_finite(state_dict: dict) -> None:
    """Refuse NaN or infinite weights, naming the first few tensors that hold them."""
    bad = [name for name, tensor in state_dict.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise CorruptCheckpointError(f"{len(bad)} weight tensor(s) hold NaN or infinite values ({shown})")


def _construct(spec: GeneratorSpec) -> torch.nn.Module:
    cls = generator_class(spec.class_name)
    try:
        return cls(*copy.deepcopy(spec.init_args), **copy.deepcopy(spec.init_kwargs))
    except (TypeError, ValueError, KeyError, AssertionError, IndexError, NotImplementedError) as error:
        raise UnsupportedGeneratorError(
            f"cannot build a {spec.class_name} from the file's constructor arguments: {error}"
        ) from error


def _register_training_loop_buffers(generator: torch.nn.Module, state_dict: dict) -> None:
    # The shape is EG3D's (one std per camera-label entry), never the file's: a file must not
    # choose the size of a buffer we allocate.
    own_names = set(generator.state_dict())
    for name in TRAINING_LOOP_BUFFERS:
        if name in state_dict and name not in own_names and not hasattr(generator, name):
            generator.register_buffer(name, torch.empty(generator.c_dim))


def check_state_dict_matches(module: torch.nn.Module, state_dict: dict) -> None:
    """Raise StateDictMismatchError naming missing, unexpected and wrongly shaped entries."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    mismatched = [
        f"{name} {tuple(state_dict[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched)
