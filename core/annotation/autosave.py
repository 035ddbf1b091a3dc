"""Autosave: every committed stroke goes to disk through the project store, off the GUI thread.

The saver keeps one pending mask per view; a newer mask for the same view replaces an older one
still waiting (only the latest state matters on disk). The first save of a view adds an
annotation, later ones update it. Each write is the store's temp-file-and-rename, so killing the
process loses at most what was not yet written: the stroke in progress, or the last few
milliseconds of a burst.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.camera import Camera
from core.project import IdentityRef, Project
from core.project.records import pixel_counts

SavedCallback = Callable[["ViewKey", int, dict], None]  # key, annotation id, pixels per class
ErrorCallback = Callable[["ViewKey", BaseException], None]


@dataclass(frozen=True)
class ViewKey:
    """One annotated view: an identity seen through a camera, at a mask size (height, width)."""

    identity: IdentityRef
    camera: Camera
    resolution: tuple[int, int]


class AnnotationAutosaver:
    """Writes masks for a writable project on a background thread, in submission order."""

    def __init__(self, project: Project, on_saved: SavedCallback | None = None,
                 on_error: ErrorCallback | None = None):
        self.project = project
        self._on_saved = on_saved
        self._on_error = on_error
        self._ids = _index_existing(project)
        self._pending: dict[ViewKey, np.ndarray] = {}
        self._writing = False
        self._in_flight: tuple[ViewKey, np.ndarray] | None = None  # the mask being written now
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="annotation-autosave", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ queries
    def annotation_id(self, key: ViewKey) -> int | None:
        with self._condition:
            return self._ids.get(key)

    def annotation_ids(self) -> dict[ViewKey, int]:
        with self._condition:
            return dict(self._ids)

    def load_mask(self, key: ViewKey) -> np.ndarray | None:
        """The newest mask of a view: a queued or in-flight one, else the stored one, else None."""
        with self._condition:
            pending = self._pending.get(key)
            if pending is None and self._in_flight is not None and self._in_flight[0] == key:
                pending = self._in_flight[1]  # a view revisited while its write (its first, maybe) runs
            annotation_id = self._ids.get(key)
        if pending is not None:
            return pending.copy()
        if annotation_id is None:
            return None
        return self.project.load_annotation(annotation_id).mask

    def forget(self, key: ViewKey) -> None:
        """The view has no annotation any more (its files were set aside): its next stroke makes a new one."""
        with self._condition:
            self._ids.pop(key, None)

    # ------------------------------------------------------------------ writing
    def submit(self, key: ViewKey, mask: np.ndarray) -> None:
        """Queue the mask of a view for writing (a copy is taken: keep painting)."""
        if tuple(mask.shape) != tuple(key.resolution):
            raise ValueError(f"mask is {mask.shape}, the view is annotated at {key.resolution}")
        with self._condition:
            if self._closed:
                raise RuntimeError("the autosaver is closed")
            self._pending.pop(key, None)  # re-insert so write order follows the newest edit
            self._pending[key] = np.array(mask, dtype=np.uint8, copy=True)
            self._condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is on disk; False if `timeout` ran out first."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and not self._writing, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write what is pending, then stop the thread. Returns whether all was written."""
        flushed = self.flush(timeout)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)
        return flushed

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and drained
                key = next(iter(self._pending))
                mask = self._pending.pop(key)
                self._writing = True
                self._in_flight = (key, mask)
            try:
                self._write(key, mask)
            finally:
                with self._condition:
                    self._writing = False
                    self._in_flight = None
                    self._condition.notify_all()

    def _write(self, key: ViewKey, mask: np.ndarray) -> None:
        try:
            annotation_id = self._ids.get(key)
            if annotation_id is None:
                annotation_id = self.project.add_annotation(key.identity, key.camera, mask)
                with self._condition:
                    self._ids[key] = annotation_id
            else:
                self.project.update_annotation(annotation_id, mask)
        except Exception as error:  # reported to the GUI; the thread must keep serving
            if self._on_error:
                self._on_error(key, error)
            return
        if self._on_saved:
            self._on_saved(key, annotation_id, pixel_counts(mask))


def _index_existing(project: Project) -> dict[ViewKey, int]:
    """Existing annotations by view; with duplicates the oldest wins (it is what reopens)."""
    index: dict[ViewKey, int] = {}
    for meta in project.annotations(problems=[]):
        index.setdefault(ViewKey(meta.identity, meta.camera, tuple(meta.resolution)), meta.id)
    return index
