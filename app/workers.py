"""Background work for the GUI: the render worker ("latest request wins") and one-off tasks.

The GUI thread never calls the backbone. A workspace asks its RenderClient for a view; the client
puts the request in a one-slot mailbox (a newer request replaces one still waiting) and wakes the
worker thread, which renders whatever is newest when it gets to it. While the user drags, the
client asks for coarse frames; ~150 ms after the last interactive request it asks for a sharp
rest preview (REST_PREVIEW_RESOLUTION, every ray sample) and, once that is on screen, for the
refined frame (the checkpoint's own resolution and samples). Every request gets an increasing id, so a frame that arrives after a newer one was shown,
or after a cancel, is dropped instead of flickering back.
"""
from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, QTimer, Qt, Signal, Slot
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QMessageBox, QProgressBar, QPushButton, QWidget

from app.errors import describe
from app.rendering import COARSE_SAMPLES_PER_RAY, Frame, ViewRequest, render_frame

REFINE_DELAY_MS = 150
# Preview frames while dragging: this many rays a side, with COARSE_SAMPLES_PER_RAY samples each
# (see benchmarks/bench_render_worker.py for what this buys).
COARSE_NEURAL_RESOLUTION = 32
# When the drag rests, a sharp preview (this many rays a side, every ray sample) comes first and
# the exact refined frame after it: a quarter of the refined frame's work at 128².
REST_PREVIEW_RESOLUTION = 64


@dataclass(frozen=True)
class _Job:
    request_id: int
    request: ViewRequest
    coarse: bool
    backbone: Any
    branch: Any = None  # the semantic branch, for requests that want labels


class _Mailbox:
    """One pending job at most: posting replaces what has not been taken yet."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: _Job | None = None

    def post(self, job: _Job) -> None:
        with self._lock:
            self._job = job

    def take(self) -> _Job | None:
        with self._lock:
            job, self._job = self._job, None
            return job

    def clear(self) -> None:
        self.take()


class _RenderWorker(QObject):
    """Lives in the worker thread; renders the mailbox's newest job until it is empty."""

    rendered = Signal(object)  # Frame
    failed = Signal(int, str)  # request id, message
    busy_changed = Signal(bool)

    def __init__(self, mailbox: _Mailbox, render: Callable = render_frame):
        super().__init__()
        self._mailbox = mailbox
        self._render = render

    @Slot()
    def drain(self) -> None:
        job = self._mailbox.take()
        if job is None:
            return  # an extra wake-up: its job was replaced by one already rendered
        self.busy_changed.emit(True)
        while job is not None:
            self._render_one(job)
            job = self._mailbox.take()
        self.busy_changed.emit(False)

    def _render_one(self, job: _Job) -> None:
        try:
            frame = self._render(job.backbone, job.request, job.request_id, job.coarse, branch=job.branch)
        except Exception as error:  # shown by the GUI; the worker must survive a bad request
            traceback.print_exc()
            self.failed.emit(job.request_id, f"{type(error).__name__}: {error}")
            return
        self.rendered.emit(frame)


class RenderClient(QObject):
    """A workspace's handle on its own render thread.

    Signals: frame_ready(Frame) for frames worth showing, error(str), busy_changed(bool).
    """

    frame_ready = Signal(object)
    error = Signal(str)
    busy_changed = Signal(bool)
    _wake = Signal()

    def __init__(self, parent: QObject | None = None, refine_delay_ms: int = REFINE_DELAY_MS,
                 coarse_resolution: int = COARSE_NEURAL_RESOLUTION, render: Callable = render_frame,
                 coarse_samples_per_ray: tuple[int, int] | None = COARSE_SAMPLES_PER_RAY,
                 rest_preview_resolution: int | None = REST_PREVIEW_RESOLUTION):
        super().__init__(parent)
        self.backbone = None
        self.branch = None
        self.coarse_resolution = coarse_resolution
        self.coarse_samples_per_ray = coarse_samples_per_ray
        self.rest_preview_resolution = rest_preview_resolution
        self._refine_after: tuple[int, ViewRequest] | None = None  # (rest preview's id, the refined view)
        self.rendered_count = 0  # frames the worker produced (tests check coalescing with it)
        self._next_id = 1
        self._newest_shown = 0
        self._cancelled_through = 0
        self._pending_refine: ViewRequest | None = None
        self._mailbox = _Mailbox()
        self._thread = QThread()
        self._thread.setObjectName("render-worker")
        self._worker = _RenderWorker(self._mailbox, render)
        self._worker.moveToThread(self._thread)
        self._wake.connect(self._worker.drain)
        self._worker.rendered.connect(self._on_rendered)
        self._worker.failed.connect(self._on_failed)
        self._worker.busy_changed.connect(self.busy_changed)
        self._refine_timer = QTimer(self, singleShot=True, interval=refine_delay_ms)
        self._refine_timer.timeout.connect(self._submit_refined)
        self._thread.start()

    # ------------------------------------------------------------------ requests
    def set_backbone(self, backbone, branch=None) -> None:
        self.cancel()
        self.backbone = backbone
        self.branch = branch

    def set_branch(self, branch) -> None:
        """A new (or no) semantic branch for the same backbone; later requests use it."""
        self.branch = branch

    def request(self, view: ViewRequest, interactive: bool = False) -> int | None:
        """Ask for a view: coarse now and refined at rest if `interactive`, else refined now.

        Returns the id of the request posted now (None without a backbone).
        """
        if self.backbone is None:
            return None
        self._refine_after = None
        if not interactive:
            self._refine_timer.stop()
            self._pending_refine = None
            return self._post(view, coarse=False)
        self._pending_refine = view
        self._refine_timer.start()  # restarts: the refined frame waits for the drag to rest
        return self._post(view.as_preview(self._coarse_resolution_for(view), self.coarse_samples_per_ray), coarse=True)

    def cancel(self) -> None:
        """Forget pending requests and drop any frame still being rendered."""
        self._refine_timer.stop()
        self._pending_refine = None
        self._refine_after = None
        self._mailbox.clear()
        self._cancelled_through = self._next_id - 1

    def shutdown(self) -> None:
        """Stop the thread (waits for a render in progress; called when the window closes)."""
        self.cancel()
        self._thread.quit()
        self._thread.wait()

    # ------------------------------------------------------------------ internals
    def _coarse_resolution_for(self, view: ViewRequest) -> int:
        full = view.neural_resolution or self.backbone.generator.neural_rendering_resolution
        return min(self.coarse_resolution, full)

    def _submit_refined(self) -> None:
        """The drag rests: the sharp preview first (when it is smaller), then the refined frame."""
        view, self._pending_refine = self._pending_refine, None
        if view is None or self.backbone is None:
            return
        full = view.neural_resolution or self.backbone.generator.neural_rendering_resolution
        if self.rest_preview_resolution and self.rest_preview_resolution < full:
            preview_id = self._post(view.as_preview(self.rest_preview_resolution, None), coarse=True)
            self._refine_after = (preview_id, view)
        else:
            self._post(view, coarse=False)

    def _continue_refining(self, request_id: int) -> None:
        """The rest preview is done (or failed): now the refined frame, unless a newer request came."""
        if self._refine_after is not None and self._refine_after[0] == request_id:
            view, self._refine_after = self._refine_after[1], None
            self._post(view, coarse=False)

    def _post(self, view: ViewRequest, coarse: bool) -> int:
        request_id = self._next_id
        self._next_id += 1
        self._mailbox.post(_Job(request_id, view, coarse, self.backbone, self.branch))
        self._wake.emit()
        return request_id

    @Slot(object)
    def _on_rendered(self, frame: Frame) -> None:
        self.rendered_count += 1
        self._continue_refining(frame.request_id)
        if frame.request_id <= self._cancelled_through or frame.request_id < self._newest_shown:
            return  # stale: cancelled, or overtaken by a newer frame already on screen
        self._newest_shown = frame.request_id
        self.frame_ready.emit(frame)

    @Slot(int, str)
    def _on_failed(self, request_id: int, message: str) -> None:
        self._continue_refining(request_id)
        if request_id > self._cancelled_through:
            self.error.emit(message)


class StoppableJob(QThread):
    """Long core work (training, the factory) off the GUI thread: `work()` returns its result,
    reports through `progressed` and polls `should_stop`, which Stop sets."""

    progressed = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str)  # the error, described for a message box

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def work(self) -> Any:
        raise NotImplementedError

    def run(self) -> None:
        try:
            result = self.work()
        except Exception as error:  # shown by the dialog; the studio keeps running
            self.failed.emit(describe(error))
            return
        self.succeeded.emit(result)


class JobDialog(QDialog):
    """A dialog that runs one StoppableJob at a time (training, the factory): Start launches it,
    Stop asks it to stop, closing hides the dialog while it runs, a failure shows a message.

    Subclasses build `_progress`, `_status` and `_stop_button` (`_add_job_controls` lays them out
    as every such dialog shows them), and give `_show_progress`, `_finished`, `_set_running`
    (which emits busy_changed) and optionally `_after_job`; `open_folder` shows the output."""

    busy_changed = Signal(bool)
    failure_title = "The job failed"
    stopping_text = "Stopping…"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.job: StoppableJob | None = None
        self.result = None
        self.error_text = ""

    def _add_job_controls(self, layout) -> None:
        """Progress bar, status line and Open Folder / Start / Stop / Close, at the foot of `layout`."""
        self._progress = QProgressBar()
        layout.addWidget(self._progress)
        self._status = QLabel("Ready.", wordWrap=True)
        self._status.setMinimumHeight(48)  # room for two lines: a long output path wraps
        self._status.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self._status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self._status)
        layout.addStretch(1)
        buttons = QHBoxLayout()
        self._open_button = QPushButton("Open Folder", clicked=self.open_folder)
        self._start_button = QPushButton("Start", clicked=self.start, default=True)
        self._stop_button = QPushButton("Stop", clicked=self.stop, enabled=False)
        buttons.addWidget(self._open_button)
        buttons.addStretch(1)
        buttons.addWidget(self._start_button)
        buttons.addWidget(self._stop_button)
        buttons.addWidget(QPushButton("Close", clicked=self.close))
        layout.addLayout(buttons)

    def _launch(self, job: StoppableJob, total: int, status: str) -> None:
        self.result, self.error_text = None, ""
        self.job = job
        job.progressed.connect(self._show_progress)
        job.succeeded.connect(self._finished)
        job.failed.connect(self._failed)
        job.finished.connect(self._job_ended)
        self._progress.setRange(0, total)
        self._progress.setValue(0)
        self._set_running(True)
        self._status.setText(status)
        job.start()

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()
            self._stop_button.setEnabled(False)
            self._status.setText(self.stopping_text)

    def is_running(self) -> bool:
        """True from Start until the end of the run has been handled on this thread."""
        return self.job is not None

    def stop_and_wait(self) -> None:
        """Stop a running job and block until it has saved and ended (the project closing)."""
        if self.job is not None:
            self.job.stop()
            self.job.wait()

    def _failed(self, message: str) -> None:
        self.error_text = message
        self._status.setText(f"{self.failure_title}.")
        QMessageBox.critical(self, self.failure_title, message)

    def _job_ended(self) -> None:
        self._set_running(False)
        self.job.deleteLater()
        self.job = None
        self._after_job()

    def _after_job(self) -> None:
        """What a dialog refreshes once its job has ended (nothing by default)."""

    def closeEvent(self, event) -> None:
        if self.is_running():  # the run keeps going; the dialog comes back from the Project menu
            self.hide()
            event.ignore()
            return
        super().closeEvent(event)


class _TaskThread(QThread):
    succeeded = Signal(object)
    failed = Signal(object)  # the exception

    def __init__(self, function: Callable[[], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._function = function

    def run(self) -> None:
        try:
            result = self._function()
        except Exception as error:  # handed to the GUI thread, which shows it
            self.failed.emit(error)
            return
        self.succeeded.emit(result)


def run_in_background(function: Callable[[], Any], on_success: Callable[[Any], None],
                      on_failure: Callable[[BaseException], None], parent: QObject) -> QThread:
    """Run a one-off task (loading a backbone, say) off the GUI thread; callbacks run on it.

    The thread is parented to `parent`, which keeps it alive; the caller deletes it (deleteLater)
    once `finished` has arrived, and must wait() for it before `parent` goes away.
    """
    thread = _TaskThread(function, parent)
    thread.succeeded.connect(on_success)
    thread.failed.connect(on_failure)
    thread.start()
    return thread
