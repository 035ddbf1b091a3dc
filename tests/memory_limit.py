"""Run a piece of Python in a child process whose address space is capped (RLIMIT_AS).

A loader that lets a file decide its memory would, under test, eat the machine; in a capped child
the same regression ends as a MemoryError there, and the test fails instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Importing torch and building the embedded default takes about 1.5 GiB of address space.
DEFAULT_LIMIT_BYTES = 2 << 30
ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
"""


def run_limited(code: str, limit_bytes: int = DEFAULT_LIMIT_BYTES, timeout: float = 120) -> subprocess.CompletedProcess:
    """`code` run by a fresh interpreter under the cap; its exit status, stdout and stderr."""
    prelude = _PRELUDE.format(limit=int(limit_bytes), root=str(ROOT), tests=str(ROOT / "tests"))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
