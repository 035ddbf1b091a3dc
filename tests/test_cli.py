"""The headless command line, run as a user runs it."""
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.cli import main
from core.fileio import read_rgb

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_the_headless_commands():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0
    assert "render" in result.stdout


def test_render_official_config_with_random_weights(tmp_path):
    """The README's first command: an official-size network renders without any download."""
    out = tmp_path / "x.png"
    assert main(["render", "--config", "ffhq512", "--random-init", "--seed", "0", "--yaw", "20", "--pitch", "0", "--out", str(out)]) == 0
    image = read_rgb(out)
    assert image.shape == (512, 512, 3)
    assert image.std() > 1  # not a blank image


def test_render_depth_mode_and_size(tmp_path):
    out = tmp_path / "d.png"
    args = ["render", "--config", "shapenet128", "--random-init", "--mode", "depth", "--size", "32", "--neural-resolution", "32", "--out", str(out)]
    assert main(args) == 0
    assert read_rgb(out).shape == (32, 32, 3)


def test_same_seed_and_view_give_identical_files(tmp_path):
    args = ["render", "--config", "shapenet128", "--random-init", "--seed", "4", "--yaw", "-40", "--neural-resolution", "32"]
    main(args + ["--out", str(tmp_path / "a.png")])
    main(args + ["--out", str(tmp_path / "b.png")])
    assert np.array_equal(read_rgb(tmp_path / "a.png"), read_rgb(tmp_path / "b.png"))


def test_missing_backbone_is_a_clear_error(tmp_path, capsys):
    assert main(["render", "--backbone", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err


def test_config_needs_random_init(tmp_path, capsys):
    assert main(["render", "--config", "ffhq512", "--out", str(tmp_path / "x.png")]) == 2
    assert "--random-init" in capsys.readouterr().err


def test_output_must_be_png(tmp_path, capsys):
    assert main(["render", "--config", "shapenet128", "--random-init", "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


def _tiny_generator():
    from core.generator.configs import tiny_config
    from core.generator.triplane import TriPlaneGenerator

    config = tiny_config()
    return TriPlaneGenerator.from_config(config), config[0]


def test_render_from_an_official_layout_pickle_and_a_studio_checkpoint_agree(tmp_path):
    from core.checkpoint.studio_format import save_generator
    from eg3d_pickle_fixture import write_eg3d_pickle

    generator, init_kwargs = _tiny_generator()
    marker = tmp_path / "payload-ran"
    pickle_path = write_eg3d_pickle(tmp_path / "net.pkl", generator, init_kwargs, payload_marker=marker)
    studio_path = tmp_path / "net.safetensors"
    save_generator(generator, studio_path)
    view = ["--seed", "2", "--yaw", "30", "--pitch", "-10"]
    assert main(["render", "--backbone", str(pickle_path), *view, "--out", str(tmp_path / "p.png")]) == 0
    assert main(["render", "--backbone", str(studio_path), *view, "--out", str(tmp_path / "s.png")]) == 0
    assert np.array_equal(read_rgb(tmp_path / "p.png"), read_rgb(tmp_path / "s.png"))
    assert not marker.exists()  # the pickle's embedded source never ran


def test_malicious_pickle_is_refused_with_a_clear_error(tmp_path, capsys):
    import os
    import pickle

    class Gadget:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Gadget()}))
    assert main(["render", "--backbone", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "system" in err and "evil.pkl" in err
    assert not (tmp_path / "pwned").exists()
