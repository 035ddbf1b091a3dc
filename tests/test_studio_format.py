"""The studio's .safetensors generator checkpoint: round trip, damage detection, atomic writes."""
import hashlib
import json
import os
import pickle

import pytest
import safetensors.torch
import torch

from core.checkpoint.errors import (
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    ForeignCheckpointError,
)
from core.checkpoint.studio_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    file_sha256,
    load_generator,
    read_generator_config,
    save_generator,
)
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator

TRAINING_INFO = {"trainer": "fit-backbone", "steps": 1200, "seeds": [0, 99], "psnr": 27.5}


def _tiny_generator(seed: int = 0) -> TriPlaneGenerator:
    return TriPlaneGenerator.from_config(tiny_config(), seed)


@pytest.fixture(scope="module")
def generator():
    return _tiny_generator()


@pytest.fixture
def saved(tmp_path, generator):
    path = tmp_path / "backbone.safetensors"
    save_generator(generator, path, metadata=TRAINING_INFO)
    return path


def test_round_trip_is_exact(saved, generator):
    loaded = load_generator(saved)

    assert isinstance(loaded, TriPlaneGenerator)
    assert loaded.rendering_kwargs == generator.rendering_kwargs
    assert loaded.neural_rendering_resolution == generator.neural_rendering_resolution
    ours, theirs = loaded.state_dict(), generator.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[name], theirs[name]) and ours[name].dtype == theirs[name].dtype for name in theirs)

    camera = generator.frontal_camera_label()
    ws = generator.mapping(torch.randn(1, generator.z_dim), camera[None])
    with torch.no_grad():
        assert torch.equal(loaded.render(loaded.synthesize(ws), camera).image, generator.render(generator.synthesize(ws), camera).image)


def test_config_and_free_form_metadata_are_readable_without_tensors(saved, generator):
    config = read_generator_config(saved)
    assert config["format_version"] == FORMAT_VERSION
    assert config["class_name"] == "TriPlaneGenerator"
    assert config["init_kwargs"] == generator.init_kwargs
    assert config["metadata"] == TRAINING_INFO


def test_a_loaded_generator_can_be_saved_again(saved, tmp_path):
    again = tmp_path / "again.safetensors"
    save_generator(load_generator(saved), again)
    assert read_generator_config(again)["init_kwargs"] == read_generator_config(saved)["init_kwargs"]


def test_file_sha256_is_the_hash_of_the_bytes(saved):
    assert file_sha256(saved) == hashlib.sha256(saved.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- damaged / foreign files
def test_truncated_file_is_corrupt(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptCheckpointError) as caught:
        load_generator(saved)
    assert str(saved) in str(caught.value)


def test_flipped_tensor_byte_is_caught_by_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's bytes
    saved.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_generator(saved)


def test_header_cut_short_is_corrupt(saved):
    saved.write_bytes(saved.read_bytes()[:50])
    with pytest.raises(CorruptCheckpointError):
        load_generator(saved)


def test_text_pickle_and_zip_files_are_foreign(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a checkpoint at all")
    pickled = tmp_path / "eg3d.safetensors"
    pickled.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    zipped = tmp_path / "torch.safetensors"
    torch.save({"w": torch.zeros(1)}, zipped)
    for path in (text, pickled, zipped):
        with pytest.raises(ForeignCheckpointError) as caught:
            load_generator(path)
        assert str(path) in str(caught.value)


def test_safetensors_from_elsewhere_is_foreign(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ForeignCheckpointError, match="save_generator"):
        load_generator(path)


def test_newer_format_version_is_refused(tmp_path, saved):
    config = read_generator_config(saved)
    config["format_version"] = FORMAT_VERSION + 1
    tensors = safetensors.torch.load_file(str(saved))
    future = tmp_path / "future.safetensors"
    safetensors.torch.save_file(tensors, str(future), metadata={"format": "pt", METADATA_KEY: json.dumps(config)})
    with pytest.raises(CheckpointVersionError, match=f"version {FORMAT_VERSION + 1}"):
        load_generator(future)


# ---------------------------------------------------------------------------- atomic writes
def test_save_leaves_only_the_checkpoint(tmp_path, generator):
    save_generator(generator, tmp_path / "g.safetensors")
    save_generator(generator, tmp_path / "g.safetensors")  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors"]


def test_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def interrupted(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        save_generator(_tiny_generator(seed=1), saved)
    assert saved.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [saved.name]


def test_unserialisable_metadata_is_refused_before_writing(tmp_path, generator):
    path = tmp_path / "g.safetensors"
    with pytest.raises(CheckpointError, match="JSON"):
        save_generator(generator, path, metadata={"when": object()})
    assert not path.exists() and os.listdir(tmp_path) == []
