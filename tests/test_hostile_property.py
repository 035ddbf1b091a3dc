"""Property-based: generated arguments and generated checkpoints end in a clean refusal or a valid
result, never a traceback and never past a memory cap.

Hypothesis runs inside one child process capped at 2 GiB of address space (tests/memory_limit.py),
so a case that made the studio allocate what a number asks for fails as a MemoryError there.
"""
from memory_limit import run_limited

CHILD = r'''
import argparse, contextlib, io, math, pickle, tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from core.checkpoint.eg3d_pickle import extract_generator, load_eg3d_pickle, read_network_pickle
from core.checkpoint.errors import CheckpointError
from core.checkpoint.generator_spec import build_generator
from core.cli import build_parser, numeric_options
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.limits import cli_range
from eg3d_pickle_fixture import write_eg3d_pickle

QUICK = dict(database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
PARSER = build_parser()
OPTIONS = list(numeric_options(PARSER))
numbers = st.one_of(
    st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_000", " 5", "", "-0", "4294967295", "4294967296"]),
)


@settings(max_examples=300, **QUICK)
@given(st.integers(0, len(OPTIONS) - 1), numbers)
def cli_option(index, text):
    command, action = OPTIONS[index]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = PARSER.parse_args(command.split() + [f"{action.option_strings[0]}={text}"])
    except SystemExit as refusal:
        assert refusal.code == 2
        return
    value = getattr(args, action.dest)
    assert cli_range(command, action.dest).contains(value), (command, action.dest, text, value)


init_kwargs, _ = tiny_config()
torch.manual_seed(0)
GENERATOR = TriPlaneGenerator(**init_kwargs).eval()
FOLDER = Path(tempfile.mkdtemp())
BASE = write_eg3d_pickle(FOLDER / "base.pkl", GENERATOR, init_kwargs).read_bytes()
NUMERIC_KEYS = [key for key, value in init_kwargs.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
RENDERING_KEYS = [key for key, value in init_kwargs["rendering_kwargs"].items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)]
hostile_numbers = st.one_of(st.integers(-2 ** 64, 2 ** 64), st.floats(allow_nan=True, allow_infinity=True),
                            st.sampled_from([0, -1, 2 ** 20, 2 ** 31, 2 ** 40, 3 * 2 ** 10, 10 ** 5]))


def loads_or_refuses(load):
    try:
        generator = load()
    except CheckpointError:
        return
    assert isinstance(generator, TriPlaneGenerator)


@settings(max_examples=40, **QUICK)
@given(st.dictionaries(st.sampled_from(NUMERIC_KEYS), hostile_numbers, max_size=3),
       st.dictionaries(st.sampled_from(RENDERING_KEYS), hostile_numbers, max_size=2),
       st.one_of(st.none(), hostile_numbers))
def pickle_arguments(changes, rendering_changes, neural_resolution):
    records = read_network_pickle(FOLDER / "base.pkl")
    state = records["G_ema"].state
    state["_init_kwargs"] = {**state["_init_kwargs"], **changes}
    state["rendering_kwargs"] = {**state["rendering_kwargs"], **rendering_changes}
    if neural_resolution is not None:
        state["neural_rendering_resolution"] = neural_resolution
    def load():
        spec = extract_generator(records)
        return build_generator(spec, file_bytes=len(BASE))
    loads_or_refuses(load)


@settings(max_examples=60, **QUICK)
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       st.one_of(st.none(), st.integers(0, len(BASE))))
def pickle_bytes(flips, cut):
    data = bytearray(BASE)
    for position, value in flips:
        data[position] = value
    path = FOLDER / "mutated.pkl"
    path.write_bytes(bytes(data[:cut]))
    loads_or_refuses(lambda: load_eg3d_pickle(path))


cli_option()
pickle_arguments()
pickle_bytes()
print("ALL HELD")
'''


def test_generated_arguments_and_checkpoints_refuse_cleanly_within_the_cap():
    result = run_limited(CHILD, timeout=300)
    assert result.returncode == 0 and "ALL HELD" in result.stdout, result.stdout[-2000:] + result.stderr[-6000:]
