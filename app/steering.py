"""Hard samples from the window: steer the factory towards a frozen model's mistakes (PoseGen).

The work is core.steering.run_steering, exactly what `main.py steer` runs: per round it steers a
camera/identity mixture towards the model's loss, writes the samples in the factory's dataset
layout and fine-tunes the model (docs/steering.md). It runs in a QThread like the Generate
dialog's job; Stop sets the flag the core checks between phases, and the same request with
"Resume" continues from the first unfinished phase (state.json in the output folder).

Everything the plots and the strip show is read back from what the core writes: state.json's
per-round figures, round_RR/distribution.json (the learned mixtures) and round_RR/cameras.json
(each sample's camera and model loss), images/ and labels/.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QCheckBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from app.widgets import label_lut
from app.workers import JobDialog, StoppableJob
from core.fileio import read_indexed_png, read_rgb
from core.project import LabelSet
from core.steering.models import ModelError, read_declaration
from core.steering.rounds import PHASES, STATE_FORMAT, SteerRequest, run_steering

STEERING_FOLDER = "steering"
STRIP_SAMPLES = 8  # hardest samples shown after each round
STRIP_PIXELS = 96
PHASE_NAMES = {"steer": "steering", "generate": "generating", "finetune": "fine-tuning"}
ROUND_COLOURS = ((90, 160, 255), (255, 170, 60), (120, 220, 120), (240, 100, 160), (200, 200, 90))


class SteeringJob(StoppableJob):
    """run_steering off the GUI thread (progress: (phase, done, total), result: SteerResult)."""

    def __init__(self, request: SteerRequest, parent=None):
        super().__init__(parent)
        self.request = request

    def work(self):
        seen = {"phase": None, "done": 0, "state": {}}

        def report(phase: str, done: int, total: int) -> None:
            # read here, in step with the core: state.json then holds exactly the phases before this one,
            # which the GUI thread (handling the report later) could not know any more
            if phase != seen["phase"] or done <= seen["done"]:
                seen["state"] = read_state(self.request.out) or {}
            seen["phase"], seen["done"] = phase, done
            self.progressed.emit((phase, done, total, seen["state"]))

        return run_steering(self.request, progress=report, should_stop=self.should_stop)


# ---------------------------------------------------------------------------- reading a run
def read_state(out: Path) -> dict | None:
    """The run's state.json, or None where the folder holds no steering run."""
    try:
        state = json.loads((Path(out) / "state.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None


def finished_rounds(state: dict) -> list[int]:
    return sorted(int(r) for r, phases in state.get("rounds", {}).items() if "tuned" in phases)


def mixture_density(mixture: dict, name: str, x: np.ndarray) -> np.ndarray:
    """Marginal density of dimension `name` of a stored mixture (physical units, unclamped)."""
    d = mixture["names"].index(name)
    density = np.zeros_like(x)
    for weight, mean, std in zip(mixture["weights"], mixture["means_physical"], mixture["stds_physical"]):
        density += weight * np.exp(-0.5 * ((x - mean[d]) / std[d]) ** 2) / (std[d] * math.sqrt(2 * math.pi))
    return density


def prior_density(mixture: dict, name: str, x: np.ndarray) -> np.ndarray:
    mean, std = mixture["prior"][name]
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def hardest_samples(folder: Path, count: int = STRIP_SAMPLES) -> list[tuple[str, dict]]:
    """The `count` samples of a round folder with the highest model loss (from cameras.json)."""
    try:
        records = json.loads((folder / "cameras.json").read_text("utf-8"))["images"]
    except (OSError, ValueError, KeyError):
        return []
    ranked = sorted(records.items(), key=lambda item: -float(item[1].get("model_loss", 0.0)))
    return ranked[:count]


def sample_picture(folder: Path, name: str, lut: np.ndarray | None) -> np.ndarray:
    """The sample's RGB image with its label map blended over it where it has labels."""
    image = read_rgb(folder / "images" / f"{name}.png")
    if lut is None or not (folder / "labels" / f"{name}.png").is_file():
        return image
    labels, _ = read_indexed_png(folder / "labels" / f"{name}.png")
    colours = lut[labels]
    alpha = colours[..., 3:4].astype(np.float32) / 255.0 * 0.5
    return (image * (1 - alpha) + colours[..., :3] * alpha).astype(np.uint8)


def to_pixmap(image: np.ndarray, pixels: int) -> QPixmap:
    image = np.ascontiguousarray(image)
    height, width, _ = image.shape
    qimage = QImage(image.data, width, height, 3 * width, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(qimage).scaled(pixels, pixels, Qt.KeepAspectRatio, Qt.FastTransformation)


# ---------------------------------------------------------------------------- the dialog
class HardSamplesDialog(JobDialog):
    """The steering request as a form; Start, Stop, progress, the learned density, the error per
    round and the hardest samples of the newest round."""

    failure_title = "Hard samples failed"
    stopping_text = "Stopping after this phase; what is finished stays (Resume continues it)…"

    def __init__(self, project, device: str = "auto", parent: QWidget | None = None):
        super().__init__(parent)
        self.project, self.device = project, device
        self.declared: dict = {}
        self._units_at_start, self._started_at, self._phase = 0, 0.0, None
        self.setWindowTitle("Hard Samples")
        self.resize(1180, 760)
        self._build()
        self._update_resume()

    # ------------------------------------------------------------------ the request
    def output_folder(self) -> Path:
        text = self._out.text().strip()
        path = Path(text) if text else Path("hard-samples")
        return path if path.is_absolute() else Path(self.project.folder) / STEERING_FOLDER / path

    def request(self) -> SteerRequest:
        return SteerRequest(
            project=Path(self.project.folder), model=Path(self._model.text().strip()), task=self._task.currentText(),
            out=self.output_folder(), rounds=self._rounds.value(), samples=self._samples.value(),
            views=self._views.value(), size=self._size.value(),
            input_size=None if self.declared.get("input_size") else self._input_size.value(),
            seed=self._seed.value(), steer_steps=self._steer_steps.value(),
            finetune_steps=self._finetune_steps.value(), replay=self.replay_folder(),
            replay_fraction=self._replay_fraction.value(), resume=self._resume.isChecked(), device=self.device)

    def replay_folder(self) -> Path | None:
        text = self._replay.text().strip()
        return Path(text) if text else None

    def set_model(self, path: str) -> None:
        """Take the task and input size from the file's studio.json where it declares them."""
        self._model.setText(path)
        self._read_model()

    def _read_model(self) -> None:
        path = self._model.text().strip()
        self.declared = {}
        note = ""
        if path and Path(path).is_file():
            try:
                self.declared = read_declaration(path)
            except ModelError as error:
                note = str(error)
            else:
                note = ("declares " + ", ".join(f"{k} {v}" for k, v in self.declared.items())
                        if self.declared else "no studio.json: choose its task and input size")
        elif path:
            note = f"{path}: model file not found"
        if self.declared.get("task") in ("pose", "segmentation"):
            self._task.setCurrentText(self.declared["task"])
        self._task.setEnabled(not self.declared.get("task") and not self.is_running())
        self._input_size.setEnabled(not self.declared.get("input_size") and not self.is_running())
        if self.declared.get("input_size"):
            self._input_size.setValue(int(self.declared["input_size"]))
        self._model_note.setText(note)

    # ------------------------------------------------------------------ actions
    def start(self) -> None:
        request = self.request()
        state = read_state(request.out) if request.resume else None
        self._units_at_start = self._units_done(state, None) if state else 0
        self._started_at, self._phase = time.monotonic(), None
        self._launch(SteeringJob(request, self), self._total_units(request), "Loading the backbone and the model…")

    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Frozen model", str(self.project.folder),
                                              "TorchScript models (*.pt *.pth *.ts);;All files (*)")
        if path:
            self.set_model(path)

    def choose_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", str(self.output_folder().parent))
        if path:
            self._out.setText(path)

    def choose_replay(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset to replay", str(Path(self.project.folder) / "datasets"))
        if path:
            self._replay.setText(path)

    def open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output_folder())))

    # ------------------------------------------------------------------ progress
    @staticmethod
    def _total_units(request: SteerRequest) -> int:
        return request.rounds * (request.steer_steps + request.samples + request.finetune_steps)

    def _phase_units(self, phase: str) -> int:
        return {"steered": self._steer_steps.value(), "generated": self._samples.value(),
                "tuned": self._finetune_steps.value()}[phase]

    def _units_done(self, state: dict, current) -> int:
        """Work units (steering updates, samples, fine-tuning steps) of the finished phases."""
        units = sum(self._phase_units(phase) for phases in state.get("rounds", {}).values() for phase in phases
                    if phase in PHASES)
        return units + (current or 0)

    def _show_progress(self, report) -> None:
        phase, done, total, state = report  # state: the run's state.json when the core made this report
        if phase != self._phase:  # a phase ended: the round's figures are on disk now
            self._phase = phase
            self.refresh_run()
        rounds = self._rounds.value()
        current_round = min(rounds, len(finished_rounds(state)) + 1) if state else 1
        units = self._units_done(state, done)
        self._progress.setValue(min(units, self._progress.maximum()))
        text = f"Round {current_round}/{rounds} · {PHASE_NAMES.get(phase, phase)} {done}/{total}"
        elapsed = time.monotonic() - self._started_at
        if units > self._units_at_start and elapsed > 0:
            remaining = (self._progress.maximum() - units) * elapsed / (units - self._units_at_start)
            text += f" · ~{time.strftime('%H:%M:%S', time.gmtime(remaining))} left"
        self._status.setText(text)

    def _finished(self, result) -> None:
        self.result = result
        how = "Stopped" if result.stopped else "Done"
        self._status.setText(f"{how}: {result.rounds_done}/{self._rounds.value()} rounds in {result.out}; "
                             f"fine-tuned model {result.model}")
        self.refresh_run()

    def _failed(self, message: str) -> None:
        super()._failed(message)
        self._status.setText(f"{self.failure_title}: {message}")  # stays in the dialog after the box

    def _after_job(self) -> None:
        self._update_resume()

    def _update_resume(self) -> None:
        """Offer Resume when the output folder holds a steering run, and show what it holds."""
        state = read_state(self.output_folder())
        self._resume.setEnabled(state is not None and not self.is_running())
        self._resume.setChecked(state is not None)
        if state is not None:
            done = len(finished_rounds(state))
            self._resume.setText(f"Resume the run in this folder ({done} round{'' if done == 1 else 's'} finished)")
        else:
            self._resume.setText("Resume the run in this folder")
        self._open_button.setEnabled(self.output_folder().is_dir())
        if not self.is_running():
            self.refresh_run()

    def _set_running(self, running: bool) -> None:
        self._start_button.setEnabled(not running)
        self._stop_button.setEnabled(running)
        for widget in self._request_widgets:
            widget.setEnabled(not running)
        if running:
            self._resume.setEnabled(False)
            self._task.setEnabled(False)
            self._input_size.setEnabled(False)
        else:
            self._read_model()
        self.busy_changed.emit(running)

    # ------------------------------------------------------------------ plots and strip
    def refresh_run(self) -> None:
        """Redraw the density, the error per round and the strip from the output folder."""
        out = self.output_folder()
        state = read_state(out) or {"rounds": {}}
        self._draw_density(out, state)
        self._draw_errors(state)
        self._fill_strip(out, state)

    def _draw_density(self, out: Path, state: dict) -> None:
        for plot, name, span in ((self._yaw_plot, "yaw", 90.0), (self._pitch_plot, "pitch", 40.0)):
            plot.clear()
            x = np.linspace(-span, span, 241)
            rounds = sorted(int(r) for r, phases in state["rounds"].items() if "steered" in phases)
            for index, round_index in enumerate(rounds):
                try:
                    camera = json.loads((out / f"round_{round_index:02d}" / "distribution.json")
                                        .read_text("utf-8"))["camera"]
                except (OSError, ValueError, KeyError):
                    continue
                if index == 0:
                    plot.plot(x, prior_density(camera, name, x), pen=pg.mkPen((170, 170, 170), width=2,
                                                                             style=Qt.DashLine), name="prior")
                colour = ROUND_COLOURS[(round_index - 1) % len(ROUND_COLOURS)]
                plot.plot(x, mixture_density(camera, name, x), pen=pg.mkPen(colour, width=2),
                          name=f"round {round_index}")

    def _draw_errors(self, state: dict) -> None:
        self._error_plot.clear()
        rounds = sorted(int(r) for r, phases in state["rounds"].items() if "steered" in phases)
        series = {"steering, first update": [], "steering, last update": [], "fine-tune loss": []}
        for round_index in rounds:
            phases = state["rounds"][str(round_index)]
            losses = phases["steered"].get("loss_per_step") or [math.nan]
            series["steering, first update"].append((round_index, losses[0]))
            series["steering, last update"].append((round_index, losses[-1]))
            if "tuned" in phases:
                series["fine-tune loss"].append((round_index, phases["tuned"].get("last_loss", math.nan)))
        for (name, points), colour in zip(series.items(), ROUND_COLOURS):
            if points:
                xs, ys = zip(*points)
                self._error_plot.plot(list(xs), list(ys), pen=pg.mkPen(colour, width=2), symbol="o",
                                      symbolBrush=colour, symbolSize=7, name=name)
        task = (state.get("request") or {}).get("task", self._task.currentText())
        self._error_plot.setLabel("left", "error (°)" if task == "pose" else "cross-entropy")

    def _fill_strip(self, out: Path, state: dict) -> None:
        while self._strip_row.count():
            widget = self._strip_row.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.strip_names: list[str] = []
        rounds = sorted(int(r) for r, phases in state["rounds"].items() if "generated" in phases)
        if not rounds:
            self._strip_title.setText("Hardest samples: none yet (they appear after each round's generation)")
            return
        folder = out / f"round_{rounds[-1]:02d}"
        try:
            lut = label_lut(LabelSet.from_json(json.loads((folder / "labels.json").read_text("utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            lut = None
        self._strip_title.setText(f"Hardest samples of round {rounds[-1]} (highest model loss first; "
                                  "label colours where the semantic branch labelled them)")
        for name, record in hardest_samples(folder):
            try:
                picture = sample_picture(folder, name, lut)
            except ValueError:
                continue
            tile = QLabel()
            tile.setPixmap(to_pixmap(picture, STRIP_PIXELS))
            tile.setAlignment(Qt.AlignCenter)
            caption = QLabel(f"loss {record.get('model_loss', math.nan):.2f}\n"
                             f"yaw {record.get('yaw', math.nan):.0f}° pitch {record.get('pitch', math.nan):.0f}°\n"
                             f"{record.get('source', '')}")
            caption.setAlignment(Qt.AlignCenter)
            cell = QWidget()
            column = QVBoxLayout(cell)
            column.setContentsMargins(2, 2, 2, 2)
            column.addWidget(tile)
            column.addWidget(caption)
            cell.setToolTip(str(folder / "images" / f"{name}.png"))
            self._strip_row.addWidget(cell)
            self.strip_names.append(name)
        self._strip_row.addStretch(1)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = QHBoxLayout(self)
        layout.addLayout(self._build_form(), 0)
        layout.addLayout(self._build_results(), 1)

    def _build_form(self):
        left = QVBoxLayout()
        form = QFormLayout()
        form.addRow(QLabel("Learn the views and identities a frozen model gets wrong, generate them as factory "
                           "datasets and fine-tune the model on them, round after round (docs/steering.md).",
                           wordWrap=True))
        self._model = QLineEdit(placeholderText="TorchScript model (.pt), e.g. from main.py train-frozen")
        self._model.editingFinished.connect(self._read_model)
        self._model_row = self._row(self._model, QPushButton("Browse…", clicked=self.choose_model))
        form.addRow("Frozen model", self._model_row)
        self._model_note = QLabel(wordWrap=True)
        self._model_note.setStyleSheet("color: #888;")
        form.addRow("", self._model_note)
        self._task = QComboBox()
        self._task.addItems(["pose", "segmentation"])
        self._task.currentTextChanged.connect(lambda _: self._update_resume())
        form.addRow("Task", self._task)
        self._input_size = QSpinBox(minimum=8, maximum=4096, value=32, suffix=" px")
        form.addRow("Model input size", self._input_size)
        self._out = QLineEdit(time.strftime("hard-%Y%m%d-%H%M"))
        self._out.setToolTip(f"A folder under {Path(self.project.folder) / STEERING_FOLDER}, or an absolute path")
        self._out.textChanged.connect(lambda _: self._update_resume())
        self._out_row = self._row(self._out, QPushButton("Browse…", clicked=self.choose_output))
        form.addRow("Output folder", self._out_row)
        self._rounds = QSpinBox(minimum=1, maximum=1000, value=2)
        form.addRow("Rounds", self._rounds)
        self._samples = QSpinBox(minimum=1, maximum=1_000_000, value=32)
        form.addRow("Samples per round", self._samples)
        self._views = QSpinBox(minimum=1, maximum=1000, value=4)
        self._views.setToolTip("Views per identity; samples per round must be a multiple of it")
        form.addRow("Views per identity", self._views)
        self._size = QSpinBox(minimum=8, maximum=4096, value=32, singleStep=4, suffix=" px")
        form.addRow("Image size", self._size)
        self._steer_steps = QSpinBox(minimum=0, maximum=100_000, value=10)
        form.addRow("Steering updates", self._steer_steps)
        self._finetune_steps = QSpinBox(minimum=0, maximum=1_000_000, value=50)
        form.addRow("Fine-tuning steps", self._finetune_steps)
        self._replay = QLineEdit(placeholderText="none")
        self._replay.setToolTip("A factory dataset (e.g. the model's own training data) mixed into every "
                                "fine-tuning batch, so the model keeps what it knew")
        self._replay_row = self._row(self._replay, QPushButton("Browse…", clicked=self.choose_replay))
        form.addRow("Replay dataset", self._replay_row)
        defaults = SteerRequest(Path("."), Path("."), "pose", Path("."))
        self._replay_fraction = QDoubleSpinBox(minimum=0.0, maximum=0.95, singleStep=0.05,
                                               value=defaults.replay_fraction)
        self._replay_fraction.setToolTip("Share of each fine-tuning batch drawn from the replay dataset")
        form.addRow("Replay share", self._replay_fraction)
        self._seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self._seed.setToolTip("The same seed and settings give the same files")
        form.addRow("Seed", self._seed)
        self._resume = QCheckBox("Resume the run in this folder")
        form.addRow(self._resume)
        left.addLayout(form)
        # the rows hold the fields with their Browse buttons: nothing of the request changes while it runs
        self._request_widgets = [self._model_row, self._out_row, self._rounds, self._samples, self._views, self._size,
                                 self._steer_steps, self._finetune_steps, self._replay_row, self._replay_fraction,
                                 self._seed]
        self._add_job_controls(left)
        self._status.setMaximumWidth(420)
        return left

    def _build_results(self):
        right = QVBoxLayout()
        plots = pg.GraphicsLayoutWidget()
        plots.setMinimumHeight(300)
        self._yaw_plot = self._plot(plots, "Learned camera density: yaw", "yaw (°)", "density")
        self._pitch_plot = self._plot(plots, "pitch", "pitch (°)", "density", legend=False)  # yaw's colours
        self._error_plot = self._plot(plots, "Model error per round", "round", "error")
        right.addWidget(plots, 1)
        self._strip_title = QLabel()
        right.addWidget(self._strip_title)
        strip = QWidget()
        self._strip_row = QHBoxLayout(strip)
        self._strip_row.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setWidget(strip)
        scroll.setMinimumHeight(STRIP_PIXELS + 80)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        right.addWidget(scroll)
        self.strip_names = []
        return right

    @staticmethod
    def _plot(canvas: pg.GraphicsLayoutWidget, title: str, x_label: str, y_label: str,
              legend: bool = True) -> pg.PlotItem:
        plot = canvas.addPlot(title=title)
        plot.setLabel("bottom", x_label)
        plot.setLabel("left", y_label)
        plot.showGrid(x=True, y=True, alpha=0.2)
        if legend:
            plot.addLegend(offset=(-8, 8))
        plot.setMenuEnabled(False)
        return plot

    @staticmethod
    def _row(field: QWidget, button: QWidget) -> QWidget:
        widget = QWidget()
        row = QHBoxLayout(widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(field, 1)
        row.addWidget(button)
        return widget
