"""The entry point (`python main.py`, the `datasetnerf-studio` script): a command runs headless,
no command starts the studio window."""
from __future__ import annotations

import ctypes.util
import os
import sys

# System libraries Qt's X11 (xcb) platform plugin loads that a fresh Debian/Ubuntu may lack; without
# them Qt aborts with "no Qt platform plugin could be initialized" and no hint of what is missing.
XCB_LIBRARIES = {"xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-keysyms": "libxcb-keysyms1"}


def missing_xcb_packages(environ=os.environ, find_library=ctypes.util.find_library) -> list[str]:
    """Debian packages Qt's xcb plugin needs but this machine lacks ([] when Qt will not use xcb)."""
    uses_xcb = environ.get("QT_QPA_PLATFORM", "xcb") == "xcb" and not environ.get("WAYLAND_DISPLAY")
    if not sys.platform.startswith("linux") or not uses_xcb:
        return []
    return [package for library, package in XCB_LIBRARIES.items() if find_library(library) is None]


def main(argv: list[str] | None = None) -> int:
    """With arguments, the headless command line (core.cli); without, the window."""
    argv = sys.argv[1:] if argv is None else argv
    # torch's OpenMP threads spin while they wait; beside other busy programs two spinning threads
    # on two cores made an edit take 6-223 s instead of 4 (docs/editing.md). Waiting threads that
    # sleep cost little on an idle machine. Set before torch is imported; the user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv:
        from core.cli import main as command_line

        return command_line(argv)
    return run()


def run(argv: list[str] | None = None) -> int:
    missing = missing_xcb_packages()
    if missing:
        print("error: the studio window needs system libraries that Qt's X11 plugin loads: "
              f"apt-get install -y {' '.join(missing)}  (the headless commands work without them: "
              "python main.py --help)", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.errors import install_excepthook
    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1] if argv is None else ["studio", *argv])
    app.setApplicationName("DatasetNeRF Studio")
    app.setOrganizationName("DatasetNeRF")
    install_excepthook()
    # Python's cyclic garbage collector runs in whichever thread happens to allocate; if that is a
    # render thread and the garbage holds a Qt object, Qt crashes. Collect on a GUI-thread timer.
    from pyqtgraph.util.garbage_collector import GarbageCollector

    collector = GarbageCollector(interval=1.0)  # noqa: F841 (kept alive for the app's lifetime)
    window = MainWindow()
    window.show()
    window.start()
    return app.exec()
