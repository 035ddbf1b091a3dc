"""Errors raised while reading or writing generator checkpoints.

Every error is a `CheckpointError` (a `ValueError`), so callers that only want "this file cannot
be used" catch one class; the subclasses say why. Each message names the file once it is known.
"""
from __future__ import annotations

import contextlib
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint could not be read, trusted or loaded; the message says which file and why."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.path}: {self.message}"


class ForbiddenGlobalError(CheckpointError):
    """The pickle names a global outside the allow-list; nothing from it was executed."""

    def __init__(self, global_name: str, path: str | Path | None = None):
        super().__init__(
            f"refused to load: the pickle references the forbidden global '{global_name}' "
            "(it is not on the allow-list of tensor and module-state constructors; nothing was executed)",
            path,
        )
        self.global_name = global_name


class CorruptCheckpointError(CheckpointError):
    """The file's bytes are damaged or inconsistent."""


class TruncatedCheckpointError(CorruptCheckpointError):
    """The file ends before its data does (an interrupted download or copy)."""


class NotANetworkPickleError(CheckpointError):
    """The file is readable but is not an EG3D network pickle with a tri-plane generator."""


class UnsupportedGeneratorError(CheckpointError):
    """The file's generator class or constructor arguments cannot be built by this studio."""


class ForeignCheckpointError(CheckpointError):
    """A .safetensors file that was not written by the studio's `save_generator`."""


class CheckpointVersionError(CheckpointError):
    """A studio checkpoint written in a format version this build cannot read."""


class StateDictMismatchError(CheckpointError):
    """The file's parameters do not match the generator its own arguments describe."""

    def __init__(self, missing, unexpected, mismatched_shapes=(), path: str | Path | None = None):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched_shapes = list(mismatched_shapes)
        super().__init__(self._describe(), path)

    def _describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_first_few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_first_few(self.unexpected)})")
        if self.mismatched_shapes:
            parts.append(f"{len(self.mismatched_shapes)} with the wrong shape ({_first_few(self.mismatched_shapes)})")
        return "parameters do not match the generator built from the file's arguments: " + "; ".join(parts)


def _first_few(names, count: int = 5) -> str:
    shown = ", ".join(str(name) for name in names[:count])
    return shown + (", ..." if len(names) > count else "")


@contextlib.contextmanager
def naming_file(path: str | Path):
    """Attach `path` to any CheckpointError raised inside, so low-level code need not know it."""
    try:
        yield
    except CheckpointError as error:
        if error.path is None:
            error.path = Path(path)
        raise
