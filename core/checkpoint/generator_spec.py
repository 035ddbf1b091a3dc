"""A generator as a checkpoint describes it, and building our generator from that description.

Both checkpoint formats (official EG3D pickles and the studio's .safetensors) reduce to a
`GeneratorSpec`: the constructor arguments EG3D's persistence recorded, the rendering options,
and a flat state dict. `build_generator` turns a spec into a `TriPlaneGenerator` and refuses
any parameter mismatch instead of silently leaving weights at their random initial values.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from core.checkpoint.errors import StateDictMismatchError, UnsupportedGeneratorError

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


def build_generator(spec: GeneratorSpec, device="cpu") -> torch.nn.Module:
    """Construct the generator from its own arguments and load every weight, strictly."""
    generator = _construct(spec)
    generator.rendering_kwargs = copy.deepcopy(spec.rendering_kwargs)
    generator.neural_rendering_resolution = int(spec.neural_rendering_resolution)
    _register_training_loop_buffers(generator, spec.state_dict)
    check_state_dict_matches(generator, spec.state_dict)
    generator.load_state_dict(spec.state_dict, strict=True)
    return generator.eval().requires_grad_(False).to(device)


def _construct(spec: GeneratorSpec) -> torch.nn.Module:
    cls = generator_class(spec.class_name)
    try:
        return cls(*copy.deepcopy(spec.init_args), **copy.deepcopy(spec.init_kwargs))
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        raise UnsupportedGeneratorError(
            f"cannot build a {spec.class_name} from the file's constructor arguments: {error}"
        ) from error


def _register_training_loop_buffers(generator: torch.nn.Module, state_dict: dict) -> None:
    own_names = set(generator.state_dict())
    for name in TRAINING_LOOP_BUFFERS:
        if name in state_dict and name not in own_names and not hasattr(generator, name):
            generator.register_buffer(name, torch.empty_like(state_dict[name]))


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
