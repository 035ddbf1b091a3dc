"""`python main.py` with no arguments: start the studio window."""
from __future__ import annotations

import sys


def run(argv: list[str] | None = None) -> int:
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
