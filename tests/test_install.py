"""`pip install .` gives a working application: a wheel carries the embedded default and the script."""
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_and_renders_on_its_embedded_default(tmp_path):
    # Build from a copy: setuptools reuses a checkout's build/ folder, which can hide a missing file.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv*"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("datasetnerf_studio-*.whl")
    # A fresh virtualenv that borrows this interpreter's installed dependencies (torch, Qt, ...)
    # but gets the studio only from the wheel; run outside the checkout so nothing finds REPO.
    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=False)
    python = environment / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import core, resources; print(core.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0 and where.stdout.startswith(str(environment)), where.stdout + where.stderr
    out = tmp_path / "x.png"
    result = subprocess.run([str(environment / "bin" / "datasetnerf-studio"), "render", "--backbone", "default",
                             "--seed", "3", "--yaw", "30", "--size", "64", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "backbone default" in result.stdout and out.stat().st_size > 1000
    usage = subprocess.run([str(environment / "bin" / "datasetnerf-studio"), "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "headless commands" in usage.stdout


def test_the_entry_point_opens_the_window_without_a_command(monkeypatch):
    from app import studio

    opened = []
    monkeypatch.setattr(studio, "run", lambda: opened.append(True) or 0)
    assert studio.main([]) == 0 and opened == [True]
    assert studio.main(["render", "--backbone", "default", "--out", "x.txt"]) == 2 and opened == [True]
