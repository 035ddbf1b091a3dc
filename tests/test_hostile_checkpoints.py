"""Checkpoints whose numbers would decide the loader's memory: refused by name, within a cap.

Each file is small; it only *declares* huge sizes. The loader runs in a child process capped at
2 GiB of address space (tests/memory_limit.py), so a regression fails here instead of eating the
machine (the issue measured 4 to 11 GB peaks for these files).
"""
import pickle
from collections import OrderedDict

import pytest
import torch

from core.checkpoint.eg3d_pickle import _storage_from_bytes, read_network_pickle
from core.checkpoint.errors import CorruptCheckpointError
from core.checkpoint.studio_format import save_generator
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from eg3d_pickle_fixture import write_eg3d_pickle
from memory_limit import run_limited

LOAD = """
from core.checkpoint.errors import CheckpointError
from core.checkpoint.eg3d_pickle import load_eg3d_pickle
from core.checkpoint.studio_format import load_generator
for path in {paths!r}:
    try:
        (load_generator if path.endswith(".safetensors") else load_eg3d_pickle)(path)
    except CheckpointError as error:
        print("REFUSED", type(error).__name__, str(error).replace("\\n", " "))
    else:
        print("LOADED")
"""


def load_in_capped_child(*paths) -> str | list[str]:
    """The loader's one-line verdict per file (one child for all: torch imports once); a
    traceback or a memory error fails the test."""
    result = run_limited(LOAD.format(paths=[str(path) for path in paths]))
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = result.stdout.strip().splitlines()
    assert len(verdicts) == len(paths), result.stdout
    return verdicts[0] if len(paths) == 1 else verdicts


@pytest.fixture(scope="module")
def tiny():
    init_kwargs, _ = tiny_config()
    torch.manual_seed(0)
    return TriPlaneGenerator(**init_kwargs).eval(), init_kwargs


def _with(kwargs: dict, **changes) -> dict:
    changed = {**kwargs, **changes}
    for key, value in changes.items():
        if key == "rendering_kwargs":
            changed[key] = {**kwargs[key], **value}
    return changed


HOSTILE_ARGUMENTS = [
    (dict(z_dim=2 ** 20, w_dim=2 ** 20), "z_dim"),
    (dict(mapping_kwargs={"num_layers": 10 ** 6}), "mapping_kwargs.num_layers"),
    (dict(channel_base=2 ** 40), "channel_base"),
    (dict(plane_resolution=3 * 2 ** 12), "plane_resolution"),
    (dict(rendering_kwargs={"depth_resolution": 100000}), "depth_resolution"),
    (dict(conv_clamp=float("nan")), "conv_clamp"),
]


def test_constructor_arguments_out_of_range_are_refused_by_name(tmp_path, tiny):
    generator, init_kwargs = tiny
    paths = [write_eg3d_pickle(tmp_path / f"g{index}.pkl", generator, _with(init_kwargs, **changes))
             for index, (changes, _) in enumerate(HOSTILE_ARGUMENTS)]
    for verdict, (_, named) in zip(load_in_capped_child(*paths), HOSTILE_ARGUMENTS):
        assert verdict.startswith("REFUSED UnsupportedGeneratorError") and named in verdict, verdict
        assert "before building anything" in verdict


def test_rendering_attribute_out_of_range_is_refused(tmp_path, tiny):
    generator, init_kwargs = tiny
    hostile = TriPlaneGenerator(**init_kwargs).eval()
    hostile.load_state_dict(generator.state_dict())
    hostile.rendering_kwargs = dict(hostile.rendering_kwargs, depth_resolution=100000)  # the attribute, not the kwarg
    verdict = load_in_capped_child(write_eg3d_pickle(tmp_path / "g.pkl", hostile, init_kwargs))
    assert verdict.startswith("REFUSED UnsupportedGeneratorError") and "depth_resolution" in verdict


def test_arguments_in_range_but_not_matching_the_tensors_are_refused_before_building(tmp_path, tiny):
    # w_dim 4000 is within range; the network it describes is measured on the meta device
    # (no memory) and its tensors' shapes compared with the file's small ones.
    generator, init_kwargs = tiny
    path = write_eg3d_pickle(tmp_path / "g.pkl", generator, _with(init_kwargs, w_dim=4000, z_dim=4000))
    verdict = load_in_capped_child(path)
    assert verdict.startswith("REFUSED StateDictMismatchError") and "wrong shape" in verdict, verdict
    assert "!= (32, 4000)" in verdict


class _Expanded:
    """A tensor pickled as a 28000x28000 stride-0 view of one float (a 3 GB copy waiting to happen)."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (torch.zeros(1).storage(), 0, (28000, 28000), (0, 0), False, OrderedDict())

    def __deepcopy__(self, memo):
        return self


def test_stride_zero_view_is_refused_naming_the_repeat(tmp_path):
    path = tmp_path / "expanded.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Expanded()}, protocol=4))
    with pytest.raises(CorruptCheckpointError, match="28000x28000 tensor view repeats the 1 elements"):
        read_network_pickle(path)


def test_dataset_label_std_as_a_huge_stride_zero_view_is_refused_in_a_real_layout(tmp_path, tiny):
    generator, init_kwargs = tiny
    hostile = TriPlaneGenerator(**init_kwargs).eval()
    hostile.load_state_dict(generator.state_dict())
    hostile.register_buffer("dataset_label_std", torch.zeros(1).expand(28000, 28000))
    verdict = load_in_capped_child(write_eg3d_pickle(tmp_path / "g.pkl", hostile, init_kwargs))
    assert verdict.startswith("REFUSED CorruptCheckpointError") and "28000x28000" in verdict, verdict


def test_dataset_label_std_of_the_wrong_shape_is_named(tmp_path, tiny):
    generator, init_kwargs = tiny
    hostile = TriPlaneGenerator(**init_kwargs).eval()
    hostile.load_state_dict(generator.state_dict())
    hostile.register_buffer("dataset_label_std", torch.rand(280, 280))  # EG3D's has c_dim = 25 entries
    verdict = load_in_capped_child(write_eg3d_pickle(tmp_path / "g.pkl", hostile, init_kwargs))
    assert verdict.startswith("REFUSED StateDictMismatchError"), verdict
    assert "dataset_label_std (280, 280) != (25,)" in verdict


def _storage_bytes_declaring(elements: int, in_header: bool, in_data: bool) -> bytes:
    """torch's legacy storage record of 4 floats, with the declared element counts changed."""
    data = torch.zeros(4).storage().__reduce__()[1][0]
    # The record ends with the data header (int64 element count) and 16 bytes of floats.
    head, count, floats = data[:-24], data[-24:-16], data[-16:]
    if in_header:
        head = head.replace(pickle.dumps(4, protocol=2)[2:-1], pickle.dumps(elements, protocol=2)[2:-1])
    if in_data:
        count = elements.to_bytes(8, "little")
    return head + count + floats


@pytest.mark.parametrize("in_header, in_data", [(False, True), (True, True), (True, False)])
def test_storage_size_mismatch_has_a_readable_message(in_header, in_data):
    bad = _storage_bytes_declaring(166000000000, in_header, in_data)
    with pytest.raises(CorruptCheckpointError) as caught:
        _storage_from_bytes(bad)
    message = str(caught.value)
    assert "%ld" not in message and "holds 16 bytes" in message, message
    assert "166000000000" in message


def test_intact_storage_record_still_decodes():
    storage = _storage_from_bytes(torch.arange(4.0).storage().__reduce__()[1][0])
    assert storage.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_non_finite_weights_are_refused_in_a_pickle(tmp_path, tiny):
    generator, init_kwargs = tiny
    paths = []
    for value in (float("nan"), float("inf"), -float("inf")):
        hostile = TriPlaneGenerator(**init_kwargs).eval()
        hostile.load_state_dict(generator.state_dict())
        with torch.no_grad():
            hostile.decoder.net[0].weight[0, 0] = value
        paths.append(write_eg3d_pickle(tmp_path / f"g{value}.pkl", hostile, init_kwargs))
    for verdict in load_in_capped_child(*paths):
        assert verdict.startswith("REFUSED CorruptCheckpointError"), verdict
        assert "NaN or infinite" in verdict and "decoder.net.0.weight" in verdict


def test_non_finite_weights_are_refused_in_a_studio_checkpoint(tmp_path, tiny):
    generator, init_kwargs = tiny
    hostile = TriPlaneGenerator(**init_kwargs).eval()
    hostile.load_state_dict(generator.state_dict())
    with torch.no_grad():
        hostile.backbone.mapping.fc0.bias[3] = float("nan")
    save_generator(hostile, tmp_path / "g.safetensors")  # a valid checksum over a NaN
    verdict = load_in_capped_child(tmp_path / "g.safetensors")
    assert verdict.startswith("REFUSED CorruptCheckpointError") and "backbone.mapping.fc0.bias" in verdict, verdict


def test_arguments_implying_more_weights_than_the_file_holds_are_refused(tiny):
    from core.checkpoint.generator_spec import GeneratorSpec, build_generator

    generator, init_kwargs = tiny
    spec = GeneratorSpec("TriPlaneGenerator", (), init_kwargs, generator.rendering_kwargs, 32, generator.state_dict())
    with pytest.raises(CorruptCheckpointError, match="imply 0.2 MiB of weights, but the whole file is 0.0 MiB"):
        build_generator(spec, file_bytes=1000)
    assert build_generator(spec, file_bytes=10 ** 6) is not None


def test_an_honest_pickle_still_loads_in_the_capped_child(tmp_path, tiny):
    generator, init_kwargs = tiny
    honest = write_eg3d_pickle(tmp_path / "g.pkl", generator, init_kwargs)
    assert load_in_capped_child(honest, "resources/default_backbone.safetensors") == ["LOADED", "LOADED"]


def test_the_shipped_default_carries_a_checksum_of_its_tensors():
    # Rule: a studio checkpoint must carry tensors_sha256 (save_generator always writes it); a
    # file without one is refused as damaged. The shipped default has one, and it verifies.
    from pathlib import Path

    from core.checkpoint.studio_format import read_generator_config, read_safetensors_tensors, tensors_sha256

    path = Path(__file__).resolve().parents[1] / "resources" / "default_backbone.safetensors"
    assert read_generator_config(path)["tensors_sha256"] == tensors_sha256(read_safetensors_tensors(path))


def test_a_studio_checkpoint_without_a_checksum_is_refused(tmp_path, tiny):
    import json

    import safetensors.torch

    from core.checkpoint.studio_format import METADATA_KEY, load_generator, read_safetensors_metadata

    generator, _ = tiny
    save_generator(generator, tmp_path / "g.safetensors")
    config = json.loads(read_safetensors_metadata(tmp_path / "g.safetensors")[METADATA_KEY])
    del config["tensors_sha256"]
    tensors = safetensors.torch.load_file(str(tmp_path / "g.safetensors"))
    safetensors.torch.save_file(tensors, str(tmp_path / "bare.safetensors"),
                                metadata={"format": "pt", METADATA_KEY: json.dumps(config)})
    with pytest.raises(CorruptCheckpointError, match="tensors_sha256"):
        load_generator(tmp_path / "bare.safetensors")
