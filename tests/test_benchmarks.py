"""Benchmarks keep running: each is run at a tiny size (their figures are not checked here)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(*arguments) -> str:
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / arguments[0]), *arguments[1:]],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.slow
def test_bench_fit_compares_the_training_signals():
    printed = run_benchmark("bench_fit.py", "--compare-signals", "--fit-steps", "1", "--identities", "1",
                            "--eval-views", "1", "--threads", "1")
    assert "rays only:" in printed and "rays + 3D points:" in printed and "dB per CPU minute" in printed


@pytest.mark.slow
def test_bench_steering_compares_the_gradient_estimates():
    printed = run_benchmark("bench_steering.py", "--updates", "1", "--samples", "4", "--size", "16")
    for method in ("score", "es", "pathwise"):
        assert f"\n{method}" in "\n" + printed and "deg per CPU s" in printed
