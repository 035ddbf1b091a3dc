"""Every error reaches the user as a message box, never as a crash.

`show_error` is the one place that turns an exception or a message into a dialog, so tests can
monkeypatch QMessageBox and see what the user would see. `install_excepthook` routes uncaught
exceptions (in slots, timers, callbacks) through it, after printing the traceback for bug reports.
"""
from __future__ import annotations

import sys
import traceback

from PySide6.QtWidgets import QApplication, QMessageBox, QWidget


def describe(error: BaseException) -> str:
    """One readable line: our error types carry full sentences; others get their type name."""
    text = str(error).strip()
    from core.backbone import BackboneError
    from core.project import ProjectError

    if isinstance(error, (BackboneError, ProjectError, OSError, ValueError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def show_error(parent: QWidget | None, title: str, error: BaseException | str) -> None:
    message = error if isinstance(error, str) else describe(error)
    QMessageBox.critical(parent, title, message)


def install_excepthook() -> None:
    """Show uncaught exceptions in a message box (and on stderr) instead of ending the studio."""
    previous = sys.excepthook

    def hook(kind, error, trace):
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, error, trace)
            return
        traceback.print_exception(kind, error, trace)
        if QApplication.instance() is not None:
            show_error(QApplication.activeWindow(), "Unexpected error",
                       f"{describe(error)}\n\nThe studio keeps running; the details are on the console.")

    sys.excepthook = hook
