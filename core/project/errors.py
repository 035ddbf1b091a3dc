"""What can go wrong with a project on disk, one class per problem, each naming the file.

The GUI shows these messages as they are and the command line prints them as one line, so every
message says which file is wrong and, where there is one, what to do about it.
"""
from __future__ import annotations

from pathlib import Path


class ProjectError(Exception):
    """Base of every project-store error."""


class ProjectNotFoundError(ProjectError):
    """The folder holds no project.json."""


class ProjectExistsError(ProjectError):
    """Project.create was pointed at a folder that already holds a project."""


class ProjectFormatError(ProjectError):
    """project.json is unreadable, incomplete, or of a format version this studio does not know."""


class UnsupportedVersionError(ProjectFormatError):
    """project.json was written in a format version this studio cannot read."""


class ProjectLockedError(ProjectError):
    """Another studio instance (named in the message and in `holder`) is writing the project."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


class ProjectReadOnlyError(ProjectError):
    """A write was attempted on a project opened with writable=False."""


class LabelSetError(ProjectError, ValueError):
    """A label set breaks a rule (unique ids, 0 = background, RGB colours, non-empty names)."""


class LabelInUseError(LabelSetError):
    """A label edit would remove ids that existing annotations still paint with."""


class BackboneMismatchError(ProjectError):
    """The backbone file named by project.json no longer has the content hash recorded there."""


class AnnotationError(ProjectError):
    """A problem with one annotation; `path` is the file at fault."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class AnnotationNotFoundError(AnnotationError, KeyError):
    """No annotation with this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return AnnotationError.__str__(self)


class CorruptAnnotationError(AnnotationError):
    """The PNG or JSON of an annotation is unreadable, incomplete or inconsistent."""


class ForeignAnnotationError(AnnotationError):
    """The annotation was painted on another backbone (content hash mismatch)."""


class UnknownLabelError(AnnotationError):
    """The mask uses label ids that the project's label set does not define."""


class MaskSizeError(AnnotationError):
    """The mask's size differs from the resolution its JSON records."""
