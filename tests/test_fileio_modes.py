"""Atomic writes leave the mode a plain open(path, "w") would: the umask decides, not mkstemp."""
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from core.fileio import atomic_write_bytes, atomic_write_json, write_indexed_png, write_png


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)
        return mask

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_umask_mode_like_a_normal_write(tmp_path, umask, mask):
    umask(mask)
    normal = tmp_path / "normal.bin"
    normal.write_bytes(b"x")
    writers = {
        "a.bin": lambda p: atomic_write_bytes(p, b"data"),
        "a.json": lambda p: atomic_write_json(p, {"a": 1}),
        "a.png": lambda p: write_png(p, np.zeros((4, 4, 3), np.uint8)),
        "labels.png": lambda p: write_indexed_png(p, np.zeros((4, 4), np.uint8), np.zeros((2, 3), np.uint8)),
    }
    for name, write in writers.items():
        write(tmp_path / name)
        assert _mode(tmp_path / name) == _mode(normal) == 0o666 & ~mask, name


def test_an_existing_file_keeps_its_own_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "shared.json"
    path.write_text("{}")
    path.chmod(0o664)
    atomic_write_json(path, {"b": 2})
    assert _mode(path) == 0o664


def test_umask_is_read_without_changing_it(umask):
    from core.fileio import current_umask

    umask(0o027)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027


def test_cli_outputs_are_readable_by_others(tmp_path):
    # The case: a rendered file (invert and generate write through the same functions).
    out = tmp_path / "render.png"
    code = "import os, sys; os.umask(0o022); from core.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, "render", "--neural-resolution", "32",
                    "--out", str(out)], check=True, capture_output=True)
    assert _mode(out) == 0o644
