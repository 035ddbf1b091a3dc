"""Generate a labelled dataset from the window: what to make, progress, rate, stop and resume.

The work is core.factory.generate_dataset, exactly what `main.py generate` runs: it opens the
project's backbone and newest semantic branch itself and writes PROJECT/datasets/NAME/ one
identity at a time (every file atomic, resumable). It runs in a QThread; Stop sets the flag it
checks between identities, and the same request with "Resume" finishes the dataset.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QSpinBox,
                               QVBoxLayout, QWidget)

from app.workers import JobDialog, StoppableJob
from core.factory.generate import FactoryProgress, GenerateRequest, generate_dataset, read_manifest


class FactoryJob(StoppableJob):
    """generate_dataset off the GUI thread (progress: FactoryProgress, result: FactoryResult)."""

    def __init__(self, request: GenerateRequest, parent=None):
        super().__init__(parent)
        self.request = request

    def work(self):
        return generate_dataset(self.request, progress=self.progressed.emit, should_stop=self.should_stop)


class GenerateDialog(JobDialog):
    """The factory's request as a form; Start, Stop, progress and the result."""

    failure_title = "Generation failed"
    stopping_text = "Stopping after this identity; what is written stays (Resume finishes it)…"

    def __init__(self, project, device: str = "auto", parent: QWidget | None = None):
        super().__init__(parent)
        self.project, self.device = project, device
        self.setWindowTitle("Generate Dataset")
        self.resize(560, 520)
        self._build()
        self._update_resume()

    # ------------------------------------------------------------------ the request
    def output_folder(self) -> Path:
        return self.project.datasets_dir / (self._name.text().strip() or "dataset")

    def request(self) -> GenerateRequest:
        return GenerateRequest(
            project=Path(self.project.folder), out=self.output_folder(), identities=self._identities.value(),
            views=self._views.value(), size=self._size.value(),
            yaw_range=(self._yaw_low.value(), self._yaw_high.value()),
            pitch_range=(self._pitch_low.value(), self._pitch_high.value()),
            truncation=self._truncation.value(), seed=self._seed.value(), pointclouds=self._pointclouds.isChecked(),
            resume=self._resume.isChecked(), device=self.device)

    # ------------------------------------------------------------------ actions
    def start(self) -> None:
        request = self.request()
        self._launch(FactoryJob(request, self), request.identities * request.views,
                     "Loading the project's backbone and semantic branch…")

    def open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output_folder())))

    # ------------------------------------------------------------------ progress
    def _show_progress(self, progress: FactoryProgress) -> None:
        self._progress.setMaximum(progress.samples_total)
        self._progress.setValue(progress.samples_done)
        text = f"{progress.identities_done}/{progress.identities_total} identities · {progress.samples_done} images"
        if progress.samples_this_run:
            remaining = (progress.samples_total - progress.samples_done) / progress.rate
            text += f" · {progress.rate:.2f} images/s · ~{time.strftime('%H:%M:%S', time.gmtime(remaining))} left"
        self._status.setText(text)

    def _finished(self, result) -> None:
        self.result = result
        how = "Stopped" if result.stopped else "Done"
        self._status.setText(f"{how}: {result.identities_done}/{result.identities_total} identities "
                             f"({result.samples_written} images written in {result.elapsed_s:.0f} s) in {result.out}")
        self._open_button.setEnabled(True)

    def _after_job(self) -> None:
        self._update_resume()

    def _update_resume(self) -> None:
        """Offer Resume when the output folder holds an unfinished dataset of the factory."""
        try:
            manifest = read_manifest(self.output_folder())
        except Exception:
            manifest = None
        resumable = bool(manifest) and not manifest.get("complete", False)
        self._resume.setEnabled(resumable and not self.is_running())
        self._resume.setChecked(resumable)
        self._open_button.setEnabled(self.output_folder().is_dir())

    def _set_running(self, running: bool) -> None:
        self._start_button.setEnabled(not running)
        self._stop_button.setEnabled(running)
        for widget in self._request_widgets:
            widget.setEnabled(not running)
        if running:
            self._resume.setEnabled(False)
        self.busy_changed.emit(running)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow(QLabel("Images, indexed label maps, depth, cameras and (optionally) labelled point clouds "
                           "of new identities, from the backbone and the project's newest semantic branch.",
                           wordWrap=True))
        self._name = QLineEdit(time.strftime("dataset-%Y%m%d-%H%M"))
        self._name.setToolTip(f"Folder under {self.project.datasets_dir}")
        self._name.textChanged.connect(lambda _: self._update_resume())
        form.addRow("Name", self._name)
        self._identities = QSpinBox(minimum=1, maximum=10_000_000, value=100)
        form.addRow("Identities", self._identities)
        self._views = QSpinBox(minimum=1, maximum=1000, value=8)
        form.addRow("Views per identity", self._views)
        self._size = QSpinBox(minimum=8, maximum=4096, value=128, suffix=" px")
        form.addRow("Image size", self._size)
        self._yaw_low, self._yaw_high = self._angle(-45.0, 90), self._angle(45.0, 90)
        form.addRow("Yaw range", self._pair(self._yaw_low, self._yaw_high))
        self._pitch_low, self._pitch_high = self._angle(-20.0, 89), self._angle(20.0, 89)
        form.addRow("Pitch range", self._pair(self._pitch_low, self._pitch_high))
        self._truncation = QDoubleSpinBox(minimum=0.0, maximum=1.0, value=1.0, singleStep=0.05, decimals=2)
        form.addRow("Truncation ψ", self._truncation)
        self._seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self._seed.setToolTip("The same seed and settings give the same files")
        form.addRow("Seed", self._seed)
        self._pointclouds = QCheckBox("Labelled point cloud per identity (PLY)")
        form.addRow(self._pointclouds)
        self._resume = QCheckBox("Resume the unfinished dataset in this folder")
        form.addRow(self._resume)
        layout.addLayout(form)
        self._request_widgets = [self._name, self._identities, self._views, self._size, self._yaw_low,
                                 self._yaw_high, self._pitch_low, self._pitch_high, self._truncation, self._seed,
                                 self._pointclouds]
        self._add_job_controls(layout)

    @staticmethod
    def _angle(value: float, limit: float) -> QDoubleSpinBox:
        return QDoubleSpinBox(minimum=-limit, maximum=limit, value=value, singleStep=5, decimals=1, suffix="°")

    @staticmethod
    def _pair(low: QWidget, high: QWidget) -> QWidget:
        widget = QWidget()
        row = QHBoxLayout(widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(low)
        row.addWidget(QLabel("to"))
        row.addWidget(high)
        return widget
