"""The Edit workspace: repaint an identity's label map and let the 3D identity follow (DatasetNeRF §5.4).

Start from a sampled identity (a seed) or an image (inverted in the background, with progress),
paint the change over the rendered labels with the Annotate workspace's brush (core.annotation's
MaskEditor, app.annotate's PaintViewBox and app.widgets' LabelPalette), run the optimisation with
live preview, progress and cancel, compare before and after side by side from any yaw, undo an
edit, and save the session with its renders under the project's `edits/NAME/`. Every computation
is a core.editing function run off the GUI thread; this module only wires widgets to them.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QBoxLayout, QButtonGroup, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QSlider, QSpinBox, QStackedLayout, QToolButton,
                               QVBoxLayout, QWidget)

from app.annotate import TOOL_KEYS, PaintViewBox
from app.semantic import BranchState, load_project_branch
from app.widgets import LabelPalette, image_view_widget, label_lut, placeholder
from app.workers import run_in_background
from core.annotation import MaskEditor
from core.editing.perceptual import perceptual_loss
from core.editing.progress import StepReport
from core.procedural import SEED_RANGES

TOOLS = ("paint", "fill", "pick")
IDLE_TEXT = "Idle"
EDIT_SHORTCUTS_HELP = """Edit
  B / F / I          paint, fill, pick
  0–9                select a label (0 = background)
  [  ]               brush smaller / larger
  Ctrl+Z             undo the last stroke
  Ctrl+Return        run the edit · Esc: cancel it"""


class CompareViews(QWidget):
    """Before and after as large as the panel allows, aspect kept: side by side in a wide panel,
    one above the other in a tall one (the orientation that gives the bigger squares)."""

    oriented = Signal(bool)  # True: side by side

    def __init__(self, canvases, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QBoxLayout(QBoxLayout.LeftToRight, self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        for canvas in canvases:
            self._layout.addWidget(canvas)

    def resizeEvent(self, event) -> None:
        width, height = event.size().width(), event.size().height()
        side_by_side = min(width / 2, height) >= min(width, height / 2)
        self._layout.setDirection(QBoxLayout.LeftToRight if side_by_side else QBoxLayout.TopToBottom)
        self.oriented.emit(side_by_side)
        super().resizeEvent(event)


class _Relay(QObject):
    """Carries progress reports from a worker thread to the GUI thread (a queued signal)."""

    report = Signal(object)


class EditWorkspace(QWidget):
    error = Signal(str)
    busy_changed = Signal(bool)
    status_message = Signal(str)
    edit_finished = Signal(object)  # EditResult (tests and scripts wait on it)
    view_ready = Signal()  # the start view (RGB, labels, editable mask) is shown

    def __init__(self, parent: QWidget | None = None, edit_settings=None, inversion_settings=None):
        from core.editing.inversion import InversionSettings
        from core.editing.semantic_edit import EditSettings

        super().__init__(parent)
        self.backbone = None
        self.project = None
        self.branch_state = load_project_branch(None, None)
        self.vgg_weights = None
        self.ws = None
        self.yaw, self.pitch = 0.0, 0.0
        self.before = None  # (rgb, labels) of the current latent at (yaw, pitch)
        self.editor: MaskEditor | None = None
        self.undo_stack: list = []  # (ws, before) of the states before each applied edit
        self.last_result = None
        self.tool, self.brush_size = "paint", 5
        self.edit_settings = edit_settings or EditSettings()
        self.inversion_settings = inversion_settings or InversionSettings()
        self._stop = threading.Event()
        self._tasks: set = set()
        self._relay = _Relay()
        self._relay.report.connect(self._show_report)
        self._build()
        self._make_shortcuts()

    # ================================================================== session
    def set_session(self, backbone, project) -> None:
        self.cancel()
        self.backbone, self.project = backbone, project
        self.ws, self.before, self.editor, self.last_result = None, None, None, None
        self.undo_stack.clear()
        label_set = project.label_set if project is not None else None
        if label_set is not None:
            self._palette.set_label_set(label_set)
            self._mask_item.setLookupTable(label_lut(label_set))
            self._palette.select_label(label_set.ids[min(1, len(label_set.ids) - 1)])
        self._pages.setCurrentIndex(1 if project is not None and backbone is not None else 0)
        self._perceptual_label.setText(f"Perceptual loss: {perceptual_loss(self.vgg_weights).name}")
        self._refresh_buttons()

    def clear_session(self) -> None:
        self.set_session(None, None)

    def set_semantic_branch(self, state: BranchState) -> None:
        self.branch_state = state
        self._branch_label.setText(state.note)
        self._refresh_buttons()

    def shutdown(self) -> None:
        self.cancel()
        for thread in list(self._tasks):
            thread.wait()

    @property
    def branch(self):
        return self.branch_state.branch

    @property
    def resolution(self) -> int:
        return int(self.backbone.generator.img_resolution)

    @property
    def palette(self) -> np.ndarray:
        return self.project.label_set.palette()

    # ================================================================== starting points
    def start_from_seed(self, seed: int | None = None) -> None:
        """The sampled identity `seed` (EG3D convention), frontal view."""
        if seed is not None:
            self._seed_spin.setValue(int(seed))
        ws = self.backbone.identity_from_seed(int(self._seed_spin.value())).ws
        self._set_start(ws, 0.0, 0.0, f"identity {self._seed_spin.value()}")

    def choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Image to invert", "", "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if path:
            self.invert_image_file(Path(path))

    def invert_image_file(self, path: Path) -> None:
        """Read, crop/resize and invert an image in the background; a bad file is a plain error."""
        from core.editing.inputs import EditingInputError, read_image

        try:
            prepared = read_image(path, self.resolution)
        except EditingInputError as error:
            self.error.emit(str(error))
            return
        if prepared.note:
            self.status_message.emit(f"{Path(path).name}: {prepared.note}")
        self.invert_image(prepared.rgb, Path(path).name)

    def invert_image(self, rgb: np.ndarray, name: str = "image") -> None:
        from core.editing.inversion import invert_image

        G, stop, relay, branch = self.backbone.generator, self._stop, self._relay, self.branch
        settings = self.inversion_settings
        self._begin(f"Inverting {name}…", settings.total_steps())
        self._run(lambda: invert_image(G, rgb, settings, self.vgg_weights, branch=branch, progress=relay.report.emit,
                                       should_stop=stop.is_set),
                  lambda result: self._set_start(result.ws, result.yaw, result.pitch,
                                                 f"inversion of {name} (yaw {result.yaw:.0f}°, pitch {result.pitch:.0f}°; "
                                                 f"{result.quality.summary()}{'; POOR: far from the backbone' if result.quality.warnings else ''})"),
                  "Inversion")

    def _set_start(self, ws, yaw: float, pitch: float, description: str) -> None:
        """Render the start view and make its labels the editable mask."""
        from core.editing.semantic_edit import render_view

        if self.branch is None:
            self.error.emit(f"Editing needs a trained semantic branch. {self.branch_state.note}")
            return
        G, branch, resolution = self.backbone.generator, self.branch, self.resolution
        self._begin(f"Rendering {description}…", 0)

        def show(before):
            self.ws, self.yaw, self.pitch, self.before = ws, yaw, pitch, before
            self.undo_stack.clear()
            self.last_result = None
            self._reset_mask()
            self._source_label.setText(f"Editing {description}")
            self._show_compare(before[0], None)
            self.view_ready.emit()

        self._run(lambda: render_view(G, branch, ws, yaw, pitch, resolution), show, "Rendering")

    # ================================================================== painting
    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self._tool_buttons[tool].setChecked(True)

    def set_brush_size(self, size: int) -> None:
        self.brush_size = int(min(max(size, self._brush_spin.minimum()), self._brush_spin.maximum()))
        self._brush_spin.setValue(self.brush_size)

    def select_label_by_position(self, position: int) -> None:
        """Key 0-9: the label at that row of the palette (0 = the first, background)."""
        if 0 <= position < len(self._palette.label_ids):
            self.set_label(self._palette.label_ids[position])

    def set_label(self, label_id: int) -> None:
        self._palette.select_label(label_id)

    def apply_stroke(self, points, label: int | None = None) -> None:
        label = self._palette.current_label() if label is None else label
        if self.editor is not None and label is not None:
            self.editor.stroke(points, label, self.brush_size / 2)
            self._refresh_mask()

    def click_at(self, x: float, y: float) -> None:
        if self.editor is None:
            return
        if self.tool == "fill":
            self.editor.fill(x, y, self._palette.current_label())
        elif self.tool == "pick":
            picked = self.editor.pick(x, y)
            if picked is not None:
                self.set_label(picked)
            return
        else:
            self.apply_stroke([(x, y)])
        self._refresh_mask()

    def _begin_stroke(self, x, y):
        if self.editor is not None and self.tool == "paint" and self._palette.current_label() is not None:
            self.editor.begin_stroke(self._palette.current_label(), self.brush_size / 2)
            self.editor.stroke_to(x, y)
            self._refresh_mask()

    def _continue_stroke(self, x, y):
        if self.editor is not None and self.editor.stroke_active:
            self.editor.stroke_to(x, y)
            self._refresh_mask()

    def _finish_stroke(self):
        if self.editor is not None:
            self.editor.end_stroke()
            self._refresh_mask()

    def undo_stroke(self) -> None:
        if self.editor is not None and self.editor.undo() is not None:
            self._refresh_mask()

    def _reset_mask(self) -> None:
        self.editor = MaskEditor(self.before[1].copy())
        self._image_item.setImage(self.before[0])
        self.view_box.setRange(QRectF(0, 0, self.resolution, self.resolution), padding=0.02)
        self._refresh_mask()
        if self.isVisible():
            self._canvas.setFocus()  # not a spin box, which would swallow the [ ] B F I keys

    def _refresh_mask(self) -> None:
        if self.editor is not None:
            self._mask_item.setImage(self.editor.mask, levels=(0, 255))
        self._refresh_buttons()

    # ================================================================== editing
    def run_edit(self) -> None:
        """Optimise the identity towards the painted map (background thread, cancellable)."""
        from core.editing.inputs import EditingInputError
        from core.editing.semantic_edit import edit_identity

        if self.editor is None or self.branch is None:
            return
        edited = self.editor.mask.copy()
        if not np.any(edited != self.before[1]):
            self.error.emit("The painted map is identical to the current labels: paint a change first.")
            return
        G, branch, stop, relay = self.backbone.generator, self.branch, self._stop, self._relay
        ws, yaw, pitch, before = self.ws, self.yaw, self.pitch, self.before
        settings = self.edit_settings
        self._begin("Editing…", settings.steps)

        def work():
            try:
                return edit_identity(G, branch, ws, yaw, pitch, edited, settings, self.vgg_weights, before=before,
                                     progress=relay.report.emit, should_stop=stop.is_set)
            except EditingInputError as error:
                raise ValueError(str(error)) from error

        self._run(work, self._apply_result, "Edit")

    def _apply_result(self, result) -> None:
        from core.editing.store import edit_figures

        self.undo_stack.append((self.ws, self.before))
        self.last_result = result
        self.ws, self.before = result.ws, (result.rgb_after, result.labels_after)
        self._reset_mask()
        self._show_compare(result.rgb_before, result.rgb_after)
        figures = edit_figures(result)
        note = " (cancelled: best state so far)" if result.stopped else ""
        message = (f"Edit done in {result.seconds:.1f} s{note}: IoU of the painted map inside the edited region "
                   f"{figures['iou_in_region_before']:.2f} → {figures['iou_in_region']:.2f}, PSNR outside "
                   f"{figures['psnr_outside_region']:.1f} dB")
        self._done_label.setText(message.replace(": ", ".\n", 1))  # stays until the next run
        self.status_message.emit(message)
        self.edit_finished.emit(result)

    def undo_edit(self) -> None:
        if not self.undo_stack:
            return
        self.ws, self.before = self.undo_stack.pop()
        self.last_result = None
        self._reset_mask()
        self._show_compare(self.before[0], None)
        self.status_message.emit("Edit undone")

    def cancel(self) -> None:
        self._stop.set()

    def compare_at(self, yaw: float) -> None:
        """Render before (the state the last edit started from) and after at this yaw."""
        from core.editing.rendering import CameraRig, render_still, to_uint8

        if self.ws is None:
            return
        G, pitch = self.backbone.generator, self.pitch
        start = self.undo_stack[-1][0] if self.undo_stack else None
        current, resolution = self.ws, self.resolution

        def work():
            import torch

            label = CameraRig.of(G).label(torch.tensor(float(yaw)), torch.tensor(float(pitch)))
            after = to_uint8(render_still(G, current, label, resolution).image)
            before = to_uint8(render_still(G, start, label, resolution).image) if start is not None else None
            return (before, after) if before is not None else (after, None)

        self._run(lambda: work(), lambda pair: self._show_compare(*pair), "Rendering", quiet=True)

    # ================================================================== saving
    def save(self, name: str | None = None, export_to: Path | None = None) -> Path | None:
        """Write the last edit (latents, maps, renders from several yaws, figures) to edits/NAME/;
        in a read-only project, to NAME/ in a folder outside it (`export_to`, else asked for)."""
        from core.editing.store import save_edit

        if self.last_result is None:
            self.error.emit("Nothing to save yet: run an edit first.")
            return None
        name = (name or self._name_edit.text()).strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name or ""):
            self.error.emit("Name the edit with letters, digits, '-', '_' or '.' (at most 64).")
            return None
        if getattr(self.project, "writable", True):
            folder = self.project.edits_dir / name
        else:  # read-only: the project is never written; export elsewhere
            if export_to is None:
                chosen = QFileDialog.getExistingDirectory(self, "Export the edit to (outside the read-only project)")
                if not chosen:
                    return None
                export_to = Path(chosen)
            project_folder = Path(self.project.folder).resolve()
            if Path(export_to).resolve() == project_folder or project_folder in Path(export_to).resolve().parents:
                self.error.emit(f"The project is open read-only: export the edit to a folder outside {project_folder}.")
                return None
            folder = Path(export_to) / name
        if folder.exists():
            self.error.emit(f"{folder} already exists; choose another name.")
            return None
        try:
            save_edit(folder, self.last_result, self.backbone.generator, self.branch, self.palette,
                      {"backbone": self.backbone.name, "backbone_hash": self.backbone.content_hash})
        except OSError as error:
            self.error.emit(f"Could not save {folder}: {error}")
            return None
        self.status_message.emit(f"Saved the edit and its renders to {folder}")
        return folder

    # ================================================================== background work
    def _begin(self, text: str, total: int) -> None:
        self._stop.clear()
        self._progress.setRange(0, max(total, 0))
        self._progress.setValue(0)
        self._progress.setFormat(text if total == 0 else f"{text} %v/%m")
        self._done_label.setText("")
        self.busy_changed.emit(True)
        self._refresh_buttons(busy=True)

    def _run(self, function, on_success, what: str, quiet: bool = False) -> None:
        def finished(result, failed):
            if not quiet:
                self.busy_changed.emit(False)
                self._show_idle_progress()
            if failed:
                self.error.emit(f"{what} failed: {result}")
            else:
                on_success(result)
            self._refresh_buttons(busy=False)

        thread = run_in_background(function, lambda result: finished(result, False),
                                   lambda error: finished(error, True), self)
        self._tasks.add(thread)
        thread.finished.connect(lambda: (self._tasks.discard(thread), thread.deleteLater()))

    def _show_idle_progress(self) -> None:
        """An empty bar that says so: a full bar read as 'something is running'."""
        self._progress.setRange(0, 1)
        self._progress.setValue(0)
        self._progress.setFormat(IDLE_TEXT)

    def _show_report(self, report: StepReport) -> None:
        self._progress.setValue(report.step)
        self._loss_label.setText(f"{report.phase}: loss {report.loss:.4f}")
        if report.preview_rgb is not None and self.backbone is not None:
            self._after_item.setImage(report.preview_rgb)  # at the optimisation's size: stretched to the view
            self._after_item.setRect(QRectF(0, 0, self.resolution, self.resolution))

    def is_busy(self) -> bool:
        return bool(self._tasks)

    # ================================================================== layout
    def _build(self) -> None:
        self._pages = QStackedLayout(self)
        self._pages.addWidget(placeholder("Open a project with a trained semantic branch to edit identities.\n\n"
                                          "Start from a sampled identity or an image, paint the change into its "
                                          "labels, and the 3D identity follows."))
        page = QWidget()
        row = QHBoxLayout(page)
        row.addWidget(self._build_canvas(), stretch=2)
        row.addWidget(self._build_compare(), stretch=2)
        row.addWidget(self._build_side_panel())
        self._pages.addWidget(page)

    def _build_canvas(self) -> QWidget:
        box = QGroupBox("Paint the change")
        layout = QVBoxLayout(box)
        self.view_box = PaintViewBox()
        canvas = self._canvas = image_view_widget(self.view_box)
        canvas.setFocusPolicy(Qt.StrongFocus)
        self._image_item, self._mask_item = pg.ImageItem(), pg.ImageItem()
        self._mask_item.setOpacity(0.5)
        self.view_box.addItem(self._image_item)
        self.view_box.addItem(self._mask_item)
        self.view_box.stroke_started.connect(self._begin_stroke)
        self.view_box.stroke_moved.connect(self._continue_stroke)
        self.view_box.stroke_finished.connect(self._finish_stroke)
        self.view_box.clicked.connect(self.click_at)
        layout.addWidget(canvas)
        self._source_label = QLabel("No identity yet")
        layout.addWidget(self._source_label)
        return box

    def _build_compare(self) -> QWidget:
        box = QGroupBox("Before | after (live preview while editing)")
        layout = QVBoxLayout(box)
        self._before_item, self._after_item = pg.ImageItem(), pg.ImageItem()
        canvases, self._compare_boxes = [], []
        for item in (self._before_item, self._after_item):
            view_box = pg.ViewBox(enableMouse=False)
            view_box.addItem(item)
            self._compare_boxes.append(view_box)
            canvases.append(image_view_widget(view_box))
        self.compare_views = CompareViews(canvases)
        self.compare_views.oriented.connect(lambda side_by_side: box.setTitle(
            "Before | after (live preview while editing)" if side_by_side else
            "Before (top) / after (bottom, live preview while editing)"))
        layout.addWidget(self.compare_views, stretch=1)
        yaw_row = QHBoxLayout()
        self._yaw_slider = QSlider(Qt.Horizontal, minimum=-90, maximum=90, value=0)
        self._yaw_slider.setToolTip("Compare before and after from another yaw (released: render)")
        self._yaw_slider.sliderReleased.connect(lambda: self.compare_at(self._yaw_slider.value()))
        self._yaw_label = QLabel()
        self._yaw_label.setMinimumWidth(self._yaw_label.fontMetrics().horizontalAdvance("Yaw −90°") + 4)
        self._yaw_slider.valueChanged.connect(self._show_yaw)
        self._show_yaw(0)
        yaw_row.addWidget(self._yaw_label)
        yaw_row.addWidget(self._yaw_slider)
        layout.addLayout(yaw_row)
        return box

    def _show_yaw(self, yaw: int) -> None:
        self._yaw_label.setText(f"Yaw {yaw:+d}°" if yaw else "Yaw 0°")

    def _show_compare(self, before, after) -> None:
        self._before_item.setImage(before)
        if after is not None:
            self._after_item.setImage(after)
        else:
            self._after_item.clear()
        size = before.shape[0]
        for item in (self._before_item, self._after_item):
            item.setRect(QRectF(0, 0, size, size))  # a preview at the optimisation's size fills it too
        for view_box in self._compare_boxes:  # the whole image, as large as the canvas allows
            view_box.setRange(QRectF(0, 0, size, size), padding=0)

    def _build_side_panel(self) -> QWidget:
        panel = QWidget()
        panel.setFixedWidth(320)
        column = QVBoxLayout(panel)
        source = QGroupBox("Start from")
        form = QFormLayout(source)
        self._seed_spin = QSpinBox(minimum=0, maximum=2**31 - 1, value=SEED_RANGES["evaluate"].start)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self._seed_spin, stretch=1)
        self._seed_button = QPushButton("Use identity", clicked=lambda: self.start_from_seed())
        seed_row.addWidget(self._seed_button)
        form.addRow("Seed", seed_row)
        self._image_button = QPushButton("Invert an image…", clicked=self.choose_image)
        form.addRow(self._image_button)
        column.addWidget(source)

        tools = QGroupBox("Brush")
        form = QFormLayout(tools)
        buttons, group = QHBoxLayout(), QButtonGroup(self)
        self._tool_buttons = {}
        for tool in TOOLS:
            button = QToolButton(text=tool.capitalize(), checkable=True)
            button.clicked.connect(lambda _=False, t=tool: self.set_tool(t))
            group.addButton(button)
            buttons.addWidget(button)
            self._tool_buttons[tool] = button
        self._tool_buttons["paint"].setChecked(True)
        form.addRow(buttons)
        self._brush_spin = QSpinBox(minimum=1, maximum=64, value=self.brush_size, suffix=" px")
        self._brush_spin.valueChanged.connect(lambda value: setattr(self, "brush_size", int(value)))
        form.addRow("Brush size", self._brush_spin)
        self._palette = LabelPalette()
        form.addRow(self._palette)
        strokes = QHBoxLayout()
        self._undo_stroke_button = QPushButton("Undo stroke", clicked=self.undo_stroke)
        self._reset_button = QPushButton("Reset map", clicked=lambda: self.before is not None and self._reset_mask())
        strokes.addWidget(self._undo_stroke_button)
        strokes.addWidget(self._reset_button)
        form.addRow(strokes)
        column.addWidget(tools, stretch=1)

        run = QGroupBox("Edit")
        form = QVBoxLayout(run)
        actions = QHBoxLayout()
        self._run_button = QPushButton("Run edit", clicked=self.run_edit)
        self._cancel_button = QPushButton("Cancel", clicked=self.cancel)
        self._undo_edit_button = QPushButton("Undo edit", clicked=self.undo_edit)
        for button in (self._run_button, self._cancel_button, self._undo_edit_button):
            actions.addWidget(button)
        form.addLayout(actions)
        self._progress = QProgressBar(textVisible=True)
        self._show_idle_progress()
        form.addWidget(self._progress)
        self._done_label = QLabel("", wordWrap=True)
        self._done_label.setStyleSheet("color: #5a5;")
        form.addWidget(self._done_label)
        self._loss_label = QLabel("")
        self._perceptual_label = QLabel("")
        self._branch_label = QLabel(self.branch_state.note, wordWrap=True)
        for label in (self._loss_label, self._perceptual_label, self._branch_label):
            form.addWidget(label)
        save_row = QHBoxLayout()
        self._name_edit = QLineEdit("edit-1", placeholderText="name under edits/")
        self._save_button = QPushButton("Save + export", clicked=lambda: self.save())
        save_row.addWidget(self._name_edit)
        save_row.addWidget(self._save_button)
        form.addLayout(save_row)
        column.addWidget(run)
        return panel

    # ================================================================== shortcuts
    def _make_shortcuts(self) -> None:
        """Window-wide while this tab is shown: they fire whichever child has the focus (the
        palette, a spin box, a button), and Qt skips them while the tab is hidden, so Annotate's
        keys of the same name do not clash."""
        bindings = [(TOOL_KEYS[tool], lambda t=tool: self.set_tool(t)) for tool in TOOLS]
        bindings += [(str(digit), lambda d=digit: self.select_label_by_position(d)) for digit in range(10)]
        bindings += [
            ("[", lambda: self.set_brush_size(self.brush_size - 1)),
            ("]", lambda: self.set_brush_size(self.brush_size + 1)),
            ("Ctrl+Z", self.undo_stroke),
            ("Ctrl+Return", lambda: self._run_button.isEnabled() and self.run_edit()),
            ("Esc", self.cancel),
        ]
        self.shortcuts = {}
        for keys, action in bindings:
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.WindowShortcut)
            shortcut.activated.connect(action)
            self.shortcuts[keys] = shortcut

    def _refresh_buttons(self, busy: bool | None = None) -> None:
        busy = self.is_busy() if busy is None else busy
        ready = self.backbone is not None and self.project is not None and self.branch is not None
        self._seed_button.setEnabled(ready and not busy)
        self._image_button.setEnabled(ready and not busy)
        self._run_button.setEnabled(ready and not busy and self.editor is not None)
        self._cancel_button.setEnabled(busy)
        self._undo_edit_button.setEnabled(not busy and bool(self.undo_stack))
        self._save_button.setEnabled(not busy and self.last_result is not None)
        read_only = self.project is not None and not self.project.writable
        self._save_button.setText("Export…" if read_only else "Save + export")
        self._save_button.setToolTip("The project is open read-only: the edit is exported to a folder outside it"
                                     if read_only else "Save the edit and its renders under the project's edits/")
        self._undo_stroke_button.setEnabled(self.editor is not None and self.editor.can_undo)
