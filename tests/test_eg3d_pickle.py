"""Official EG3D network pickles: read without executing anything, load strictly, fail clearly."""
import io
import os
import pickle
import subprocess
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from core.checkpoint.eg3d_pickle import (
    ALLOWED_GLOBALS,
    InertObject,
    _RestrictedUnpickler,
    extract_generator,
    load_eg3d_pickle,
    read_network_pickle,
)
from core.checkpoint.errors import (
    CheckpointError,
    CorruptCheckpointError,
    ForbiddenGlobalError,
    NotANetworkPickleError,
    StateDictMismatchError,
    TruncatedCheckpointError,
)
from core.checkpoint.generator_spec import build_generator
from core.generator.configs import tiny_config
from core.generator.stylegan2 import Generator as StyleGAN2Generator
from core.generator.triplane import TriPlaneGenerator
from eg3d_pickle_fixture import payload_module_src, write_eg3d_pickle


@pytest.fixture(scope="module")
def tiny():
    """A small TriPlaneGenerator in eval mode (EG3D's fused modconv depends on the mode)."""
    config = tiny_config()
    return TriPlaneGenerator.from_config(config), config[0]


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "payload_ran.txt"
    yield path
    assert not path.exists(), "code embedded in the pickle was executed"


@pytest.fixture
def fixture_pickle(tmp_path, tiny, marker):
    generator, init_kwargs = tiny
    return write_eg3d_pickle(tmp_path / "network-snapshot.pkl", generator, init_kwargs, payload_marker=marker)


# ---------------------------------------------------------------------------- the happy path
def test_fixture_pickle_loads_and_renders_like_the_in_memory_model(fixture_pickle, tiny):
    original, init_kwargs = tiny
    loaded = load_eg3d_pickle(fixture_pickle)

    assert isinstance(loaded, TriPlaneGenerator)
    assert loaded.rendering_kwargs == original.rendering_kwargs
    assert loaded.neural_rendering_resolution == original.neural_rendering_resolution
    assert loaded.init_kwargs == init_kwargs
    theirs, ours = original.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)

    camera = original.frontal_camera_label()
    torch.manual_seed(1)
    ws = original.mapping(torch.randn(1, original.z_dim), camera[None])
    with torch.no_grad():
        expected = original.render(original.synthesize(ws), camera)
        actual = loaded.render(loaded.synthesize(ws), camera)
    assert torch.equal(actual.image, expected.image)
    assert torch.equal(actual.depth, expected.depth)


def test_records_keep_names_and_state_but_no_live_code(fixture_pickle, marker):
    records = read_network_pickle(fixture_pickle)

    generator = records["G_ema"]
    assert isinstance(generator, InertObject) and generator.is_persistent and generator.is_module
    assert generator.class_name == "TriPlaneGenerator" and generator.persistence_version == 6
    assert str(marker) in generator.module_src  # kept as text only
    renderer = generator.state["_modules"]["renderer"]
    assert renderer.qualified_name == "training.volumetric_rendering.renderer.ImportanceRenderer"
    assert not renderer.is_persistent
    assert records["training_set_kwargs"]["class_name"] == "training.dataset.ImageFolderDataset"
    assert records["augment_pipe"] is None


def test_extract_generator_gives_state_dict_and_arguments(fixture_pickle, tiny):
    original, init_kwargs = tiny
    spec = extract_generator(read_network_pickle(fixture_pickle), key="G_ema")

    assert spec.class_name == "TriPlaneGenerator"
    assert spec.init_args == ()
    assert spec.init_kwargs == init_kwargs
    assert isinstance(spec.init_kwargs["mapping_kwargs"], dict)  # EasyDict -> plain dict
    assert spec.neural_rendering_resolution == original.neural_rendering_resolution
    assert list(spec.state_dict) == list(original.state_dict())


def test_super_resolution_configuration_loads_strictly(tmp_path):
    init_kwargs, neural_resolution = tiny_config(superresolution=True)
    generator = TriPlaneGenerator(**init_kwargs)
    generator.neural_rendering_resolution = neural_resolution
    path = write_eg3d_pickle(tmp_path / "sr.pkl", generator, init_kwargs)
    loaded = load_eg3d_pickle(path)
    assert loaded.neural_rendering_resolution == neural_resolution
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in generator.state_dict().items())


def test_training_loop_buffer_dataset_label_std_is_kept(tmp_path):
    init_kwargs, _ = tiny_config()
    generator = TriPlaneGenerator(**init_kwargs)
    label_std = torch.rand(25)
    generator.register_buffer("dataset_label_std", label_std)  # as EG3D's training_loop.py does
    loaded = load_eg3d_pickle(write_eg3d_pickle(tmp_path / "g.pkl", generator, init_kwargs))
    assert torch.equal(loaded.dataset_label_std, label_std)


# ---------------------------------------------------------------------------- hostile files
class _Reduces:
    """Pickles as a call of `function(*args)`, the classic pickle code-execution gadget."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args

    def __deepcopy__(self, memo):
        # The fixture deep-copies networks as EG3D's training loop does; copying through
        # __reduce__ would run the gadget here, in the test, instead of in the loader.
        return self


def _global_call_pickle(module: str, name: str, argument: str) -> bytes:
    """Protocol-4 bytes calling module.name(argument) through the GLOBAL opcode."""
    encoded = argument.encode()
    return (
        b"\x80\x04"
        + b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        + b"\x8c" + bytes([len(encoded)]) + encoded
        + b"\x85R."
    )


@pytest.mark.parametrize(
    "module, name",
    [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen")],
)
def test_forbidden_global_is_refused_by_name(tmp_path, marker, module, name):
    command = f"touch {marker}" if name in ("system", "Popen") else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_global_call_pickle(module, name, command))

    with pytest.raises(ForbiddenGlobalError) as caught:
        read_network_pickle(path)
    assert caught.value.global_name == f"{module}.{name}"
    assert f"'{module}.{name}'" in str(caught.value) and str(path) in str(caught.value)


def test_reduce_to_exec_is_refused(tmp_path, marker):
    path = tmp_path / "exec.pkl"
    path.write_bytes(pickle.dumps(_Reduces(exec, f"open({str(marker)!r}, 'w')"), protocol=4))
    with pytest.raises(ForbiddenGlobalError, match="builtins.exec"):
        load_eg3d_pickle(path)


def test_os_system_hidden_inside_a_network_is_refused(tmp_path, marker):
    init_kwargs, _ = tiny_config()
    generator = TriPlaneGenerator(**init_kwargs)
    generator.rendering_kwargs = dict(generator.rendering_kwargs, sneaky=_Reduces(os.system, f"touch {marker}"))
    path = write_eg3d_pickle(tmp_path / "hidden.pkl", generator, init_kwargs)
    with pytest.raises(ForbiddenGlobalError, match=r"(posix|os)\.system"):
        load_eg3d_pickle(path)


def test_subprocess_popen_inside_a_network_is_refused(tmp_path, marker):
    init_kwargs, _ = tiny_config()
    generator = TriPlaneGenerator(**init_kwargs)
    generator.decoder.note = _Reduces(subprocess.Popen, ["touch", str(marker)])
    with pytest.raises(ForbiddenGlobalError, match="subprocess.Popen"):
        load_eg3d_pickle(write_eg3d_pickle(tmp_path / "popen.pkl", generator, init_kwargs))


def test_persistent_module_source_never_runs(fixture_pickle, marker, tmp_path):
    records = read_network_pickle(fixture_pickle)
    load_eg3d_pickle(fixture_pickle)
    assert not marker.exists()

    # Control: the embedded source really is a payload, so the check above is meaningful.
    control = tmp_path / "control.txt"
    exec(compile(payload_module_src(control), "<control>", "exec"), {})  # our own test text
    assert control.exists()
    assert records["G_ema"].module_src.startswith(payload_module_src(marker, class_names=()))


def test_build_cannot_modify_an_allowed_global(tmp_path):
    """A BUILD opcode aimed at an allowed global must not be able to modify it."""
    bad = b"\x80\x04" + b"ccollections\nOrderedDict\n" + b"}\x8c\x01x\x8c\x01y" + b"sb."
    path = tmp_path / "build.pkl"
    path.write_bytes(bad)
    with pytest.raises(CorruptCheckpointError):
        read_network_pickle(path)
    assert "collections.OrderedDict" in ALLOWED_GLOBALS


class _OversizedTensor:
    """A tensor whose view reaches past its storage (would make torch grow the storage)."""

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (torch.zeros(4).storage(), 0, (10**9,), (1,), False, OrderedDict())


def test_tensor_view_past_its_storage_is_corrupt(tmp_path):
    path = tmp_path / "oversized.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _OversizedTensor()}, protocol=4))
    with pytest.raises(CorruptCheckpointError, match="past the end"):
        read_network_pickle(path)


class _RepointedTensor:
    """A valid tensor followed by a BUILD that re-points it at a 4 GB view of its storage."""

    def __reduce__(self):
        storage = torch.zeros(4).storage()
        tensor_args = (storage, 0, (4,), (1,), False, OrderedDict())
        return torch._utils._rebuild_tensor_v2, tensor_args, (storage, 0, (10**9,), (1,))


def test_build_cannot_repoint_a_loaded_tensor(tmp_path):
    path = tmp_path / "repoint.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _RepointedTensor()}, protocol=4))
    with pytest.raises(CorruptCheckpointError, match="overwrite the state of a loaded tensor"):
        read_network_pickle(path)


def test_state_dict_tensors_are_plain_tensors(fixture_pickle):
    spec = extract_generator(read_network_pickle(fixture_pickle))
    assert all(type(tensor) is torch.Tensor for tensor in spec.state_dict.values())


def _restricted_loads(data: bytes):
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def test_numpy_values_are_rebuilt_but_object_arrays_refused():
    # EG3D modules hold numpy scalars (weight_gain, act_gain); arrays may appear in kwargs.
    value = _restricted_loads(pickle.dumps({"gain": np.float64(0.5), "array": np.arange(6.0).reshape(2, 3)}, protocol=4))
    assert value["gain"] == 0.5 and isinstance(value["gain"], np.float64)
    assert np.array_equal(value["array"], np.arange(6.0).reshape(2, 3))
    with pytest.raises(CorruptCheckpointError, match="Python objects"):
        _restricted_loads(pickle.dumps(np.array([1, "x"], dtype=object), protocol=4))


# ---------------------------------------------------------------------------- damaged / foreign files
def test_truncated_file(tmp_path, fixture_pickle):
    data = fixture_pickle.read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedCheckpointError) as caught:
        load_eg3d_pickle(path)
    assert str(path) in str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(TruncatedCheckpointError, match="empty"):
        read_network_pickle(path)


def test_text_file_is_not_a_pickle(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(NotANetworkPickleError, match="not a pickle") as caught:
        load_eg3d_pickle(path)
    assert str(path) in str(caught.value)


def test_zip_file_is_not_a_network_pickle(tmp_path):
    path = tmp_path / "checkpoint.pkl"
    torch.save({"weight": torch.zeros(2)}, path)  # torch.save's zip format
    with pytest.raises(NotANetworkPickleError, match="zip"):
        read_network_pickle(path)
    with zipfile.ZipFile(tmp_path / "dataset.zip", "w") as archive:
        archive.writestr("a.txt", "x")
    with pytest.raises(NotANetworkPickleError, match="zip"):
        read_network_pickle(tmp_path / "dataset.zip")


def test_safetensors_file_gets_a_hint(tmp_path):
    import safetensors.torch

    path = tmp_path / "backbone.pkl"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(NotANetworkPickleError, match="load_generator"):
        load_eg3d_pickle(path)


def test_pickle_of_a_plain_list(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(NotANetworkPickleError, match="list"):
        read_network_pickle(path)


def test_dict_without_networks(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0]}, protocol=4))
    with pytest.raises(NotANetworkPickleError, match="without networks"):
        read_network_pickle(path)


def test_stylegan2_pickle_is_not_a_triplane_generator(tmp_path):
    init_kwargs = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    generator = StyleGAN2Generator(**init_kwargs)
    path = write_eg3d_pickle(tmp_path / "stylegan2.pkl", generator, init_kwargs)
    with pytest.raises(NotANetworkPickleError, match="Generator, not an EG3D TriPlaneGenerator"):
        load_eg3d_pickle(path)


def test_missing_and_unexpected_parameters_are_named(tmp_path):
    init_kwargs, _ = tiny_config()
    generator = TriPlaneGenerator(**init_kwargs)
    generator.decoder.net[0].bias = None  # drops decoder.net.0.bias from the state dict
    generator.register_buffer("stray_buffer", torch.zeros(3))
    path = write_eg3d_pickle(tmp_path / "mismatch.pkl", generator, init_kwargs)

    with pytest.raises(StateDictMismatchError) as caught:
        load_eg3d_pickle(path)
    error = caught.value
    assert error.missing == ["decoder.net.0.bias"] and error.unexpected == ["stray_buffer"]
    assert "decoder.net.0.bias" in str(error) and "stray_buffer" in str(error) and str(path) in str(error)


def test_wrong_shapes_are_named(tmp_path, fixture_pickle):
    spec = extract_generator(read_network_pickle(fixture_pickle))
    spec.init_kwargs = dict(spec.init_kwargs, channel_max=16)
    with pytest.raises(StateDictMismatchError, match="wrong shape"):
        build_generator(spec)


def test_every_error_is_a_checkpoint_value_error():
    for error in (ForbiddenGlobalError("os.system"), TruncatedCheckpointError("x"), NotANetworkPickleError("x")):
        assert isinstance(error, CheckpointError) and isinstance(error, ValueError)
