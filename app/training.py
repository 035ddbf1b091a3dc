"""Train the project's semantic branch from the window: progress, live loss plot, validation, cancel.

The work is core.semantic.train_semantic, exactly what `main.py train-semantic` runs, on the
project's annotations (core.semantic.annotations), with checkpoints in PROJECT/semantic/. It runs
in a QThread; progress arrives as Qt signals and Stop sets the flag train_semantic checks between
steps (it then writes a last checkpoint, so nothing trained is lost).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QHBoxLayout, QLabel, QMessageBox,
                               QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.semantic import semantic_folder
from app.workers import JobDialog, StoppableJob
from core.backbone import Backbone
from core.semantic import SemanticBranch, TrainingProgress, TrainingSettings, train_semantic
from core.semantic.annotations import TrainingInventory, annotated_views, training_inventory
from core.semantic.checkpoint import clear_checkpoints, list_checkpoints, read_branch_metadata

DEFAULT_STEPS = 2000
PLOT_REFRESH_MS = 250  # steps can be much faster than a plot redraw; the curves follow at this pace


@dataclass
class TrainingRequest:
    steps: int
    resume: bool
    validate: bool
    checkpoint_every: int = 100


def procedural_validation_available(project) -> bool:
    """Validation against procedural truth only makes sense for a backbone of that category."""
    return project is not None and project.backbone.path == "default"


class TrainingJob(StoppableJob):
    """train_semantic on a project's annotations, off the GUI thread (progress: TrainingProgress,
    result: TrainingResult)."""

    validated = Signal(int, dict)  # step, the checkpoint's metrics

    def __init__(self, project, backbone, request: TrainingRequest, parent=None):
        super().__init__(parent)
        self.project, self.request = project, request
        # Same frozen generator, its own identity cache: the render threads use the shared one.
        self.backbone = Backbone(backbone.generator, backbone.name, backbone.content_hash, backbone.device)
        self.problems: list = []

    def work(self):
        folder = semantic_folder(self.project)
        views = annotated_views(self.project, self.problems)
        if not views:
            raise ValueError(f"{self.project.folder} has no usable annotations to train on yet; paint a few views "
                             "in the Annotate workspace first")
        branch = self._branch(folder)
        folder.mkdir(exist_ok=True)
        settings = TrainingSettings(checkpoint_every=self.request.checkpoint_every)
        extra = {}
        if self.request.validate:
            from core.semantic.evaluation import ValidationSet

            extra["validate"] = ValidationSet(self.backbone, int(views[0].mask.shape[-1]))
        return train_semantic(branch, self.backbone, views, self.request.steps, progress=self._report,
                              should_stop=self.should_stop, checkpoint_dir=folder, resume=self.request.resume,
                              settings=settings, **extra)

    def _branch(self, folder) -> SemanticBranch:
        num_classes = max(self.project.label_set.ids) + 1
        existing = list_checkpoints(folder)
        if not self.request.resume or not existing:
            return SemanticBranch.for_generator(self.backbone.generator, num_classes)
        config = read_branch_metadata(existing[-1][1])["branch_config"]
        if config["num_classes"] != num_classes:
            raise ValueError(f"the checkpoints in {folder} have {config['num_classes']} classes, the label set "
                             f"{num_classes}: the label set changed since; train afresh")
        return SemanticBranch(**config)

    def _report(self, progress: TrainingProgress) -> None:
        self.progressed.emit(progress)
        if progress.phase == "checkpoint" and progress.checkpoint is not None:
            try:
                metrics = read_branch_metadata(progress.checkpoint).get("metrics", {})
            except Exception:  # the plot is a nicety; the checkpoint itself is what matters
                return
            self.validated.emit(progress.step, metrics)


class TrainDialog(JobDialog):
    """Settings, Start/Stop, a progress bar and live plots; `trained` fires when a run ends."""

    trained = Signal()  # the run ended (finished or stopped) with its branch on disk
    checkpoint_written = Signal()  # a checkpoint mid-run: the workspaces can show it already
    failure_title = "Training failed"
    stopping_text = "Stopping after this step; the branch is saved as it is…"

    def __init__(self, project, backbone, parent: QWidget | None = None):
        super().__init__(parent)
        self.project, self.backbone = project, backbone
        self.setWindowTitle("Train Semantic Branch")
        self.resize(720, 560)
        self._losses: list[tuple[int, float]] = []
        self._accuracies: list[tuple[int, float]] = []
        self._validation: list[tuple[int, float]] = []
        self._build()
        self._plot_timer = QTimer(self, interval=PLOT_REFRESH_MS)
        self._plot_timer.timeout.connect(self._refresh_plot)

    # ------------------------------------------------------------------ actions
    def start(self) -> None:
        existing = list_checkpoints(semantic_folder(self.project))
        resume = self._resume.isChecked() and bool(existing)
        if existing and not resume and not self._confirm_fresh_start(len(existing)):
            return
        if existing and not resume:
            clear_checkpoints(semantic_folder(self.project))
        request = TrainingRequest(self._steps.value(), resume, self._validate.isChecked(),
                                  self._checkpoint_every.value())
        for series in (self._losses, self._accuracies, self._validation):
            series.clear()
        job = TrainingJob(self.project, self.backbone, request, self)
        job.validated.connect(self._show_validation)
        self._launch(job, request.steps, "Preparing the annotations (the backbone renders each view once)…")

    def _confirm_fresh_start(self, count: int) -> bool:
        answer = QMessageBox.question(
            self, "Start afresh?",
            f"{semantic_folder(self.project)} holds {count} checkpoint(s) of an earlier run. Starting afresh "
            "removes them; tick “Continue from the newest checkpoint” to keep training them instead.")
        return answer == QMessageBox.Yes

    def refresh_inventory(self) -> TrainingInventory:
        """Say what training will use and what it skips, and why (Annotate counts the same way)."""
        inventory = training_inventory(self.project)
        self._inventory_label.setText(f"{inventory.describe(limit=5)}.\nCheckpoints go to "
                                      f"{semantic_folder(self.project)}")
        return inventory

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self.is_running():
            self.refresh_inventory()  # painting went on since the dialog was made

    # ------------------------------------------------------------------ progress
    def _show_progress(self, progress: TrainingProgress) -> None:
        if progress.phase == "preparing":
            self._status.setText(progress.message or "Preparing…")
            return
        self._progress.setValue(progress.step)
        if progress.phase == "training" and math.isfinite(progress.loss):
            self._losses.append((progress.step, progress.loss))
            self._accuracies.append((progress.step, progress.accuracy))
            remaining = progress.total_steps - progress.step
            per_step = progress.elapsed_s / max(progress.step, 1)
            self._status.setText(f"step {progress.step}/{progress.total_steps} · loss {progress.loss:.4f} · "
                                 f"pixel accuracy {progress.accuracy:.3f} · ~{remaining * per_step / 60:.1f} min left")
        elif progress.phase == "checkpoint":
            self._checkpoint_label.setText(f"Last checkpoint: {progress.message} (step {progress.step})")
            self.checkpoint_written.emit()

    def _show_validation(self, step: int, metrics: dict) -> None:
        miou = metrics.get("validation_miou")
        if miou is None:
            return
        self._validation.append((step, float(miou)))
        self._refresh_plot()

    def _refresh_plot(self) -> None:
        for curve, series in ((self._loss_curve, self._losses), (self._accuracy_curve, self._accuracies),
                              (self._validation_curve, self._validation)):
            if len(series) != len(curve.getData()[0] if curve.getData()[0] is not None else ()):
                curve.setData(*zip(*series)) if series else curve.setData([], [])

    def _finished(self, result) -> None:
        self.result = result
        self._refresh_plot()
        how = "Stopped" if result.stopped else "Finished"
        saved = f"; saved {result.checkpoint.name}" if result.checkpoint else ""
        problems = self.job.problems
        skipped = ""
        if problems:
            listed = "; ".join(str(problem) for problem in problems[:3])
            skipped = f"\n{len(problems)} annotation(s) skipped: {listed}" + ("; …" if len(problems) > 3 else "")
        self._status.setText(f"{how} at step {result.step}{saved}{skipped}")
        self._status.setToolTip("\n".join(str(problem) for problem in problems))
        self.trained.emit()

    def _after_job(self) -> None:
        self._refresh_plot()

    def _set_running(self, running: bool) -> None:
        self._start_button.setEnabled(not running)
        self._stop_button.setEnabled(running)
        self._plot_timer.start() if running else self._plot_timer.stop()
        for widget in (self._steps, self._resume, self._validate, self._checkpoint_every):
            widget.setEnabled(not running)
        if not running:
            self._validate.setEnabled(procedural_validation_available(self.project))
        self.busy_changed.emit(running)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self._inventory_label = QLabel(wordWrap=True)
        self._inventory_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self._inventory_label)
        self.refresh_inventory()
        self._steps = QSpinBox(minimum=1, maximum=1_000_000, value=DEFAULT_STEPS, singleStep=100)
        self._steps.setToolTip("Optimiser steps in total (a resumed run continues up to this number)")
        form.addRow("Steps", self._steps)
        self._checkpoint_every = QSpinBox(minimum=1, maximum=100_000, value=100, suffix=" steps")
        form.addRow("Checkpoint every", self._checkpoint_every)
        has_checkpoints = bool(list_checkpoints(semantic_folder(self.project)))
        self._resume = QCheckBox("Continue from the newest checkpoint", checked=has_checkpoints,
                                 enabled=has_checkpoints)
        form.addRow(self._resume)
        available = procedural_validation_available(self.project)
        self._validate = QCheckBox("Validate at each checkpoint (mIoU on procedural identities never annotated)",
                                   checked=available, enabled=available)
        if not available:
            self._validate.setToolTip("Only for the embedded default backbone, whose category has ground truth")
        form.addRow(self._validate)
        layout.addLayout(form)
        self._progress = QProgressBar()
        layout.addWidget(self._progress)
        self._status = QLabel("Ready.", wordWrap=True)
        layout.addWidget(self._status)
        self._checkpoint_label = QLabel("", wordWrap=True)
        self._checkpoint_label.setStyleSheet("color: #888;")
        layout.addWidget(self._checkpoint_label)
        layout.addWidget(self._build_plot(), stretch=1)
        buttons = QHBoxLayout()
        self._start_button = QPushButton("Start", clicked=self.start, default=True)
        self._stop_button = QPushButton("Stop", clicked=self.stop, enabled=False)
        self._stop_button.setToolTip("Stop after the current step and save the branch as it is")
        buttons.addStretch(1)
        buttons.addWidget(self._start_button)
        buttons.addWidget(self._stop_button)
        buttons.addWidget(QPushButton("Close", clicked=self.close))
        layout.addLayout(buttons)

    def _build_plot(self) -> QWidget:
        plot = pg.PlotWidget(background="#202124")
        plot.addLegend(offset=(-10, 10))
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setLabel("bottom", "step")
        self._loss_curve = plot.plot([], [], pen=pg.mkPen("#e8a33d", width=2), name="loss (running mean)")
        self._accuracy_curve = plot.plot([], [], pen=pg.mkPen("#5aa9e6", width=1), name="training pixel accuracy")
        self._validation_curve = plot.plot([], [], pen=pg.mkPen("#5a5", width=2), symbol="o", symbolSize=6,
                                           symbolBrush="#5a5", name="validation mIoU")
        self.plot = plot
        return plot
