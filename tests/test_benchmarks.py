"""Every benchmark keeps running: each script in benchmarks/ is run at a tiny size, in its own
process, and must exit 0 and print its figure (the figure's value is not checked here).

A script says how in a module-level `SMOKE_RUNS = [(arguments, pattern), ...]`: the command-line
arguments of a run of a few seconds and a regular expression its output must match. A new
benchmark is collected from the directory listing, so one without SMOKE_RUNS fails here.
The selected runs start together, as many at a time as there are cores (each is mostly one
thread starting Python and loading a model), so they add little to the suite's wall time.
"""
import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def smoke_runs(script: Path) -> list:
    """The script's SMOKE_RUNS, read without importing it (a literal); [] when it has none."""
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SMOKE_RUNS" for t in node.targets):
            return ast.literal_eval(node.value)
    return []


def _cases():
    for script in BENCHMARKS:
        runs = smoke_runs(script) or [None]  # None: fails below with the reason
        for index, run in enumerate(runs):
            yield pytest.param(script, run, id=f"{script.stem}-{index}" if len(runs) > 1 else script.stem)


def test_the_benchmarks_folder_is_listed():
    assert len(BENCHMARKS) >= 8, BENCHMARKS  # the parametrisation below is not silently empty


def _run(script: Path, arguments: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def started(request):
    """{(script, arguments): future} for every run this session selected, all submitted at once."""
    selected = [item.callspec.params for item in request.session.items
                if item.originalname == "test_benchmark_runs_at_a_tiny_size" and item.callspec.params["run"]]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield {(p["script"], tuple(p["run"][0])): pool.submit(_run, p["script"], p["run"][0]) for p in selected}


@pytest.mark.slow
@pytest.mark.parametrize("script, run", list(_cases()))
def test_benchmark_runs_at_a_tiny_size(script, run, started):
    assert run is not None, f"{script.name} declares no SMOKE_RUNS (see this test's docstring)"
    arguments, pattern = run
    completed = started[(script, tuple(arguments))].result()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert re.search(pattern, completed.stdout), (
        f"{script.name} {' '.join(arguments)} did not print /{pattern}/:\n{completed.stdout[-3000:]}")
