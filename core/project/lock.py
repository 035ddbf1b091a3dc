"""The writer lock: one studio instance writes a project at a time.

`project.lock` is created with O_EXCL (so two instances racing for it cannot both win) and holds
the holder's pid, host, start time and a random token. A lock whose holder process is gone (same
host, pid no longer running) is stale, left by a crash or a kill: it is reclaimed with a warning
rather than locking the person out of their own work. Locks from other hosts are never reclaimed
automatically: we cannot tell whether that process still runs.
"""
from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .errors import ProjectLockedError

LOCK_NAME = "project.lock"

# A lock file is written right after its O_EXCL creation; one that is still empty or unparseable
# after this long was left by a process that died in between.
UNREADABLE_LOCK_GRACE_S = 30.0


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was reclaimed."""


class ProjectLock:
    """Holds project.lock until release(), or until the interpreter exits."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.token = secrets.token_hex(8)
        self.held = False

    def acquire(self) -> None:
        for _ in range(3):  # a reclaimed lock can be taken by a third instance in between
            if self._try_create():
                self.held = True
                atexit.register(self.release)
                return
            holder = read_lock(self.path)
            if not self._reclaim_if_stale(holder):
                raise ProjectLockedError(_locked_message(self.path, holder), holder)
        raise ProjectLockedError(f"{self.path}: could not take the lock (another instance keeps taking it)")

    def release(self) -> None:
        """Remove the lock if it is still ours (never another instance's after a reclaim)."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        if read_lock(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._holder_record(), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _holder_record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "token": self.token,
        }

    def _reclaim_if_stale(self, holder: dict) -> bool:
        reason = _stale_reason(self.path, holder)
        if reason is None:
            return False
        warnings.warn(f"{self.path}: reclaiming a stale lock ({reason})", StaleLockWarning, stacklevel=4)
        self.path.unlink(missing_ok=True)
        return True


def read_lock(path: Path) -> dict:
    """The holder record, or {} when the file is missing, empty or not a lock record."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _stale_reason(path: Path, holder: dict) -> str | None:
    if not holder:
        age = _age_seconds(path)
        if age is not None and age > UNREADABLE_LOCK_GRACE_S:
            return f"unreadable lock file, {age:.0f} s old"
        return None
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if isinstance(pid, int) and not pid_is_running(pid):
        return f"process {pid} on this host is no longer running"
    return None


def pid_is_running(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; never guess
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _age_seconds(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def _locked_message(path: Path, holder: dict) -> str:
    if not holder:
        return f"{path}: the project is being locked by another instance right now; try again"
    who = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
    return (
        f"the project is open for writing by {who} ({path}); close that instance or open read-only. "
        "If it crashed on another machine, delete the lock file."
    )
