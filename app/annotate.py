"""The Annotate workspace: paint part labels over a rendered view of an identity.

Data lives in core.annotation (MaskEditor: strokes, fill, undo; AnnotationAutosaver: one atomic
write per committed step); this module only turns mouse and keys into those calls and draws the
result. Each (identity, view) has its own editor, so undo history survives flipping between views.
"""
from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QButtonGroup, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
                               QLabel, QPushButton, QSlider, QSpinBox,
                               QStackedLayout, QToolButton,
                               QVBoxLayout, QWidget)

from app.rendering import Frame, ViewRequest, predict_mask
from app.semantic import BranchState, load_project_branch
from app.widgets import (LabelLegend, LabelPicker, LabelTable, image_view_widget, label_key, label_lut,
                         placeholder)
from app.workers import RenderClient, run_in_background
from core.annotation import AnnotationAutosaver, MaskEditor, ViewKey
from core.procedural import SEED_RANGES
from core.semantic.annotations import (SkippedAnnotation, TrainingInventory, trainable_reason,
                                       training_inventory)
from core.project import UNLABELLED_ID, AnnotationError, IdentityRef, Project

TOOLS = ("paint", "erase", "fill", "pick")
TOOL_KEYS = {"paint": "B", "erase": "E", "fill": "F", "pick": "I"}
VIEW_PRESETS = {"Frontal": (0.0, 0.0), "Left": (-30.0, 0.0), "Right": (30.0, 0.0)}
DEFAULT_ANNOTATION_RESOLUTION = 128
ANNOTATION_TRUNCATION = 1.0  # painted identities are the generator's own samples, untruncated
MAX_BRUSH = 64
HISTORY_KEYS = ("Ctrl+Z", "Ctrl+Shift+Z", "Ctrl+Y")  # undo, redo, redo
# The canvas shows the view ~700 px wide. A backbone with super-resolution already gives its
# sharpest view in the refined frame (its output size); one without (the embedded default:
# 128² and no super-resolution) is rendered again at this neural resolution once the refined
# frame is on screen. 256² costs ~4x a 128² frame (1.7 s against 0.4 s on one CPU core,
# docs/annotating.md); 512² on a GPU is a guess at its budget (not measured: no GPU here).
SHARP_NEURAL_RESOLUTION = {"cpu": 256, "cuda": 512}
SHARP_MAX_FACTOR = 4
SHORTCUTS_HELP = """Annotate
  B / E / F / I      paint, erase, fill, pick
  0–9, Alt+0–9       select label 1–20 of the list (0 = background)
  L                  find a label by name or id (Enter picks it)
  [  ]               brush smaller / larger
  Ctrl+Z             undo the last stroke
  Ctrl+Shift+Z, Ctrl+Y   redo
  N, PageDown        next identity
  P, PageUp          previous identity
  Ctrl+P             prefill the mask from the semantic branch (one undoable step)
  Ctrl+S             make sure everything is on disk (it is saved after every stroke anyway)
  Mouse              left: tool · middle drag: pan · wheel or right drag: zoom

Orbit
  Mouse              left drag: orbit · wheel: zoom (field of view)
  Arrow keys         turn the camera 5° · R: reset the view

Project
  Ctrl+T             train the semantic branch (progress, loss plot, stop)
  Ctrl+G             generate a dataset (progress, stop, resume)"""
SAVE_POLL_MS = 100  # how soon the counters show a finished write
# Undo history is kept per view (as napari keeps it per layer), for the views most recently
# visited, within this many bytes of masks and history over all of them; the least recently
# visited view's history goes first (its mask is on disk), the current view's never does.
HISTORY_BUDGET_BYTES = 64 * 2**20


def sharp_view_resolution(backbone) -> int | None:
    """The neural resolution of Annotate's sharp frame, or None when the refined frame already is
    the sharpest view the backbone gives (super-resolution, or no higher resolution to ask for)."""
    generator = backbone.generator
    if generator.superresolution is not None:
        return None
    native = generator.neural_rendering_resolution
    target = min(SHARP_NEURAL_RESOLUTION.get(backbone.device.type, SHARP_NEURAL_RESOLUTION["cpu"]),
                 SHARP_MAX_FACTOR * native)  # past a few times its own, a render gains no detail
    return target if target > native else None


class _ShortcutPassThrough(QObject):
    """Lets `keys` reach the workspace's shortcuts while a spin box or the label picker has
    focus: their text fields would take Ctrl+Z for their own text, so after typing a seed
    (moving to another identity and back) Ctrl+Z would not undo the stroke; and a number box
    would swallow N, P, B... which it can never accept anyway."""

    def __init__(self, keys, parent: QObject):
        super().__init__(parent)
        self._keys = {QKeySequence(k) for k in keys}

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.ShortcutOverride and QKeySequence(event.keyCombination()) in self._keys:
            return True  # not accepted by the text field, so the shortcut runs
        return False


class PaintViewBox(pg.ViewBox):
    """Left button runs the tool; middle drag pans, right drag and the wheel zoom."""

    stroke_started = Signal(float, float)
    stroke_moved = Signal(float, float)
    stroke_finished = Signal()
    clicked = Signal(float, float)
    hovered = Signal(float, float)

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() != Qt.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        if ev.isStart():
            start = self.mapSceneToView(ev.buttonDownScenePos(Qt.LeftButton))
            self.stroke_started.emit(start.x(), start.y())
        point = self.mapSceneToView(ev.scenePos())
        self.stroke_moved.emit(point.x(), point.y())
        if ev.isFinish():
            self.stroke_finished.emit()

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.LeftButton:
            ev.accept()
            point = self.mapSceneToView(ev.scenePos())
            self.clicked.emit(point.x(), point.y())
        else:
            super().mouseClickEvent(ev)

    def hoverEvent(self, ev):
        if not ev.isExit():
            point = self.mapSceneToView(ev.scenePos())
            self.hovered.emit(point.x(), point.y())


class AnnotateWorkspace(QWidget):
    """Needs a session with a writable project; shows a plain note until there is one."""

    error = Signal(str)
    busy_changed = Signal(bool)
    status_message = Signal(str)
    annotation_problem = Signal(object, object, object)  # ViewKey, annotation id, AnnotationError

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.backbone = None
        self.project: Project | None = None
        self.autosaver: AnnotationAutosaver | None = None
        self.editor: MaskEditor | None = None
        self.key: ViewKey | None = None
        self.tool = "paint"
        self.brush_size = 5
        self.seed = SEED_RANGES["annotate"].start
        self.yaw, self.pitch = 0.0, 0.0
        self.resolution = DEFAULT_ANNOTATION_RESOLUTION
        self._editors: OrderedDict[ViewKey, MaskEditor] = OrderedDict()
        self._stored_counts: dict[int, dict[int, int]] = {}  # annotation id -> pixels per class
        self._skip_reasons: dict[int, str | None] = {}  # annotation id -> why training skips it (None: used)
        self._label = 1  # the brush's label id
        self._current_request: ViewRequest | None = None
        self.last_frame: Frame | None = None
        self._stale = False
        self.branch_state = load_project_branch(None, None)
        self._tasks: set = set()  # prefill predictions still running
        self.renderer = RenderClient(self)
        self.renderer.frame_ready.connect(self._show_frame)
        self.renderer.error.connect(self.error)
        self.renderer.busy_changed.connect(self.busy_changed)
        # The autosaver's plain Python thread only appends to this deque; the GUI thread drains
        # it on a timer. Emitting Qt signals from non-Qt threads is what we avoid here.
        self._save_events: deque = deque()
        self._save_poll = QTimer(self, interval=SAVE_POLL_MS)
        self._save_poll.timeout.connect(self._drain_save_events)
        self._build()
        self._make_shortcuts()

    # ================================================================== session
    def set_session(self, backbone, project: Project | None) -> None:
        """Show `project` painted over `backbone`; a read-only or missing project shows a note."""
        self.clear_session()
        self.backbone = backbone
        self.renderer.set_backbone(backbone)
        if project is None or not project.writable:
            self._pages.setCurrentIndex(0)
            return
        self.project = project
        self.resolution = int(project.settings.get("annotation_resolution", DEFAULT_ANNOTATION_RESOLUTION))
        self.autosaver = AnnotationAutosaver(
            project,
            on_saved=lambda key, annotation_id, counts: self._save_events.append(("saved", annotation_id, counts)),
            on_error=lambda key, error: self._save_events.append(("failed", key, error)))
        self._save_poll.start()
        self._stored_counts = {meta.id: meta.pixel_counts for meta in project.annotations(problems=[])}
        self._apply_label_set()
        self._pages.setCurrentIndex(1)
        self.fit_view()
        self._go_to_view()

    def clear_session(self) -> None:
        """Write what is pending and forget the project (the window closes it)."""
        self.flush()
        if self.autosaver is not None:
            self.autosaver.close()
            self._save_poll.stop()
            self._drain_save_events()  # a failed last write still gets reported
        self.autosaver, self.project, self.editor, self.key = None, None, None, None
        self._editors.clear()
        self.renderer.set_backbone(None)
        self.set_semantic_branch(load_project_branch(None, self.backbone))
        self._pages.setCurrentIndex(0)

    def fit_view(self) -> None:
        """Show the whole mask (after zooming in, or when the mask size changes)."""
        self.view_box.setRange(QRectF(0, 0, self.resolution, self.resolution), padding=0.02)

    def flush(self, timeout: float = 10.0) -> bool:
        """Ctrl+S: everything committed is on disk when this returns True."""
        if self.editor is not None and self.editor.stroke_active:
            self.finish_stroke()
        return self.autosaver.flush(timeout) if self.autosaver else True

    def shutdown(self) -> None:
        self.clear_session()
        self.renderer.shutdown()
        for thread in list(self._tasks):
            thread.wait()

    def set_semantic_branch(self, state: BranchState) -> None:
        """The branch that "Prefill" asks for labels (None: the button says what is missing)."""
        self.branch_state = state
        self._prefill_button.setEnabled(state.branch is not None)
        self._prefill_button.setToolTip(
            "Replace this view's mask by the semantic branch's labels, to correct instead of painting "
            f"from scratch (one undoable step).\n{state.note}" if state.branch is not None else state.note)

    def prefill_from_branch(self) -> None:
        """Fill this view's mask with the branch's labels, off the GUI thread; Ctrl+Z takes it back."""
        branch, key = self.branch_state.branch, self.key
        if branch is None or self.editor is None:
            return
        backbone, seed, camera = self.backbone, self.seed, self.backbone.camera(self.yaw, self.pitch)
        self.busy_changed.emit(True)
        self._prefill_button.setEnabled(False)

        def done(result, failed: bool):
            self.busy_changed.emit(False)
            self._prefill_button.setEnabled(self.branch_state.branch is not None)
            if failed:
                self.error.emit(f"Prefill failed: {result}")
            elif key != self.key or self.editor is None:
                self.status_message.emit("Prefill dropped: the view changed while it was computed")
            else:
                self.apply_prefill(result)

        thread = run_in_background(
            lambda: predict_mask(backbone, branch, seed, ANNOTATION_TRUNCATION, camera, key.resolution[0]),
            lambda mask: done(mask, False), lambda error: done(error, True), self)
        self._tasks.add(thread)
        thread.finished.connect(lambda: (self._tasks.discard(thread), thread.deleteLater()))

    def apply_prefill(self, labels: np.ndarray) -> None:
        """Put predicted labels into the current mask as one undoable, autosaved step."""
        known = self.project.label_set.id_lookup()
        mask = np.where(known[labels], labels, UNLABELLED_ID).astype(np.uint8)  # ids this project lacks
        change = self.editor.replace(mask)
        self._committed(change)
        if change is None:
            self.status_message.emit("Prefill changed nothing: this mask already holds the branch's labels")
        else:
            self.status_message.emit(f"Prefilled from the semantic branch ({change.pixel_count:,} pixels changed); "
                                     "Ctrl+Z undoes it")

    def refresh_label_set(self) -> None:
        """After the label set was edited: new names and colours (and ignore flags), same masks."""
        if self.project is not None:
            self._apply_label_set()
            self._refresh_counts()

    # ================================================================== identity and view
    def set_identity(self, seed: int) -> None:
        self.seed = int(seed)
        self._go_to_view()

    def next_identity(self) -> None:
        self.set_identity(self.seed + 1)

    def previous_identity(self) -> None:
        self.set_identity(max(self.seed - 1, 0))

    def set_view(self, yaw: float, pitch: float) -> None:
        self.yaw, self.pitch = round(float(yaw), 1), round(float(pitch), 1)
        self._go_to_view()

    def _go_to_view(self) -> None:
        if self.project is None:
            return
        if self.editor is not None and self.editor.stroke_active:
            self.finish_stroke()
        self.key = self._view_key()
        self.editor = self._editor_for(self.key)
        self._sync_controls()
        self._image_item.clear()
        self._refresh_overlay()
        self._refresh_counts()
        self._current_request = ViewRequest(self.seed, ANNOTATION_TRUNCATION, self.yaw, self.pitch)
        self._request_render()

    def _request_render(self) -> None:
        if not self.isVisible():
            self._stale = True  # a hidden tab leaves the CPU to the visible one; drawn when shown
            return
        self._stale = False
        # Coarse first, refined once the user stops flipping through identities and views.
        self.renderer.request(self._current_request, interactive=True)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._stale and self._current_request is not None:
            self._request_render()

    def _view_key(self) -> ViewKey:
        identity = IdentityRef(seed=self.seed, truncation_psi=ANNOTATION_TRUNCATION)
        # Camera construction is arithmetic only: no rendering happens on the GUI thread.
        return ViewKey(identity, self.backbone.camera(self.yaw, self.pitch), (self.resolution, self.resolution))

    def _editor_for(self, key: ViewKey) -> MaskEditor:
        if key in self._editors:
            self._editors.move_to_end(key)
            return self._editors[key]
        try:
            stored = self.autosaver.load_mask(key)
        except AnnotationError as error:  # shown, not painted over: the window offers repair / set aside / skip
            self.annotation_problem.emit(key, self.autosaver.annotation_id(key), error)
            return None
        # A new view starts unlabelled: training learns only from what was painted (or prefilled).
        editor = MaskEditor(stored if stored is not None else np.full(key.resolution, UNLABELLED_ID, np.uint8),
                            history_bytes_limit=HISTORY_BUDGET_BYTES // 2)
        self._editors[key] = editor
        self._trim_history()
        return editor

    def _trim_history(self) -> None:
        """Forget the least recently visited views' editors until the history fits its budget."""
        total = sum(editor.nbytes for editor in self._editors.values())
        while total > HISTORY_BUDGET_BYTES and len(self._editors) > 1:
            _, forgotten = self._editors.popitem(last=False)
            total -= forgotten.nbytes

    def history_nbytes(self) -> int:
        """Bytes of masks and undo history held for the views visited (bounded by the budget)."""
        return sum(editor.nbytes for editor in self._editors.values())

    def reload_view(self, forget: bool = False) -> None:
        """Read the current view's annotation again (after a repair; `forget`: after it was set aside)."""
        if self.key is None:
            return
        self._editors.pop(self.key, None)
        if forget:
            self.autosaver.forget(self.key)
        self._stored_counts = {meta.id: meta.pixel_counts for meta in self.project.annotations(problems=[])}
        self._go_to_view()

    def _show_frame(self, frame: Frame) -> None:
        if self._current_request is None or frame.request.scene != self._current_request.scene:
            return  # a frame of a view we already left
        self.last_frame = frame
        self._image_item.setImage(frame.rgb, autoLevels=False, levels=(0, 255))
        # Whatever size the frame is, it covers the mask's square: strokes land on mask pixels.
        self._image_item.setRect(QRectF(0, 0, self.resolution, self.resolution))
        sharp = sharp_view_resolution(self.backbone)
        refined = not frame.coarse and frame.request.neural_resolution is None
        if refined and sharp is not None:
            self.renderer.request(self._current_request.at_resolution(sharp))  # on the render thread
        self._describe_shown(frame, pending_sharp=sharp if refined else None)

    def _describe_shown(self, frame: Frame, pending_sharp: int | None = None) -> None:
        """Say which resolution the canvas shows, against the mask's."""
        generator = self.backbone.generator
        shown = frame.rgb.shape[0]
        neural = frame.request.neural_resolution or generator.neural_rendering_resolution
        if frame.coarse:
            how = f"preview {shown}²"
        elif generator.superresolution is not None:
            how = f"{shown}² (the backbone's super-resolution of its {neural}² neural render)"
        elif neural > generator.neural_rendering_resolution:
            how = f"{shown}² (rendered at neural resolution {neural}²; the backbone's own is {generator.neural_rendering_resolution}²)"
        else:
            how = f"{shown}² (the backbone's neural resolution)"
        waiting = f" · sharper {pending_sharp}² view on its way" if pending_sharp else ""
        self._shown_resolution.setText(f"View: {how}{waiting} · mask: {self.resolution}² (what is painted and saved)")

    # ================================================================== tools
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; tools are {TOOLS}")
        self.tool = tool
        self._tool_buttons[tool].setChecked(True)
        self.status_message.emit(f"Tool: {tool}")

    def set_brush_size(self, size: int) -> None:
        self.brush_size = int(np.clip(size, 1, MAX_BRUSH))
        if self._brush_spin.value() != self.brush_size:
            self._brush_spin.setValue(self.brush_size)

    def set_label(self, label_id: int) -> None:
        """The brush's label (the unlabelled row stands for the eraser)."""
        if label_id == UNLABELLED_ID:
            self.set_tool("erase")
            return
        if self.project is not None and label_id not in self.project.label_set:
            return
        self._label = int(label_id)
        self._labels_table.show_selected(self._label)
        if self.project is not None:
            name = self.project.label_set.by_id(self._label).name
            self._brush_label.setText(f"Brush: <b>{name}</b>")

    @property
    def label(self) -> int:
        return self._label

    def select_label_by_position(self, position: int) -> None:
        """A label key: 0-9 the first ten labels, Alt+0-9 the next ten (label_key)."""
        ids = self.project.label_set.ids if self.project is not None else []
        if 0 <= position < len(ids):
            self.set_label(ids[position])
            if self.tool in ("erase", "pick"):
                self.set_tool("paint")

    def pick_label(self, label_id: int) -> None:
        """From the label picker or a click on the table: select it, paint with it."""
        self.set_label(label_id)
        if label_id != UNLABELLED_ID and self.tool in ("erase", "pick"):
            self.set_tool("paint")
        self.canvas.setFocus()  # back to painting: the keys are shortcuts again

    def focus_label_picker(self) -> None:
        self._label_picker.setFocus()
        self._label_picker.selectAll()

    def begin_stroke(self, x: float, y: float) -> None:
        if self.editor is None or self.tool not in ("paint", "erase"):
            return
        label = UNLABELLED_ID if self.tool == "erase" else self.label  # erase = back to unlabelled
        self.editor.begin_stroke(label, self.brush_size / 2)
        self.editor.stroke_to(x, y)
        self._refresh_overlay()

    def continue_stroke(self, x: float, y: float) -> None:
        if self.editor is not None and self.editor.stroke_active:
            self.editor.stroke_to(x, y)
            self._refresh_overlay()

    def finish_stroke(self) -> None:
        if self.editor is not None and self.editor.stroke_active:
            self._committed(self.editor.end_stroke())

    def apply_stroke(self, points, label: int | None = None) -> None:
        """A whole stroke through image points [(x, y), ...]: what a drag does, for scripts."""
        if label is not None:
            self.set_label(label)
        (x, y), rest = points[0], points[1:]
        self.begin_stroke(x, y)
        for x, y in rest:
            self.continue_stroke(x, y)
        self.finish_stroke()

    def click_at(self, x: float, y: float) -> None:
        """A click: a dab for paint/erase, a flood for fill, a colour sample for pick."""
        if self.editor is None:
            return
        if self.tool in ("paint", "erase"):
            self.begin_stroke(x, y)
            self.finish_stroke()
        elif self.tool == "fill":
            self._committed(self.editor.fill(x, y, self.label))
        elif self.tool == "pick":
            picked = self.editor.pick(x, y)
            if picked is not None:
                self.set_label(picked)
                self.set_tool("paint")

    def undo(self) -> None:
        if self.editor is not None:
            self._committed(self.editor.undo())

    def redo(self) -> None:
        if self.editor is not None:
            self._committed(self.editor.redo())

    def _committed(self, change) -> None:
        """After every undoable step: redraw, and queue the mask for its atomic write."""
        self._refresh_overlay()
        if change is not None:
            self.autosaver.submit(self.key, self.editor.mask)
            self._trim_history()
        self._refresh_counts()
        self._undo_button.setEnabled(self.editor.can_undo)
        self._redo_button.setEnabled(self.editor.can_redo)

    # ================================================================== autosave events
    def _drain_save_events(self) -> None:
        changed = False
        while self._save_events:
            kind, subject, detail = self._save_events.popleft()
            if kind == "saved":
                self._stored_counts[subject] = detail
                # The rule training applies, on the counts just written (no re-reading the file).
                self._skip_reasons[subject] = trainable_reason(self.project.label_set, detail)
                changed = True
            else:
                self.error.emit(f"Could not save the annotation: {detail}")
        if changed:
            self._refresh_counts()

    # ================================================================== drawing
    def _refresh_overlay(self) -> None:
        if self.editor is None:
            self._mask_item.clear()
            return
        self._mask_item.setImage(self.editor.mask, autoLevels=False, levels=(0, 255), lut=self._lut)
        self._mask_item.setRect(QRectF(0, 0, self.resolution, self.resolution))
        self._undo_button.setEnabled(self.editor.can_undo)
        self._redo_button.setEnabled(self.editor.can_redo)

    def _move_brush_outline(self, x: float, y: float) -> None:
        radius = self.brush_size / 2
        self._brush_outline.setRect(QRectF(x - radius, y - radius, 2 * radius, 2 * radius))
        self._brush_outline.setVisible(self.tool in ("paint", "erase"))

    def _refresh_counts(self) -> None:
        if self.project is None or self.editor is None:
            return
        annotated = self.autosaver.annotation_ids()
        this_identity = sum(1 for key in annotated if key.identity == self.key.identity)
        inventory = self.training_inventory()
        this_view = annotated.get(self.key)
        view_note = ""
        if this_view is not None:
            reason = self._skip_reasons.get(this_view)
            view_note = " · this view is annotated" + (f" but skipped by training: {reason}" if reason else "")
        self._counts_label.setText(f"Seed {self.seed}: {this_identity} annotated view(s){view_note}\n"
                                   f"Project: {inventory.describe(limit=2)}")
        view_counts = self.editor.pixel_counts()
        totals: dict[int, int] = {}
        for counts in self._stored_counts.values():
            for label_id, pixels in counts.items():
                totals[label_id] = totals.get(label_id, 0) + pixels
        self._labels_table.set_counts(view_counts, totals)
        self._legend.set_labels(self.project.label_set.labels, present=set(view_counts))

    def training_inventory(self) -> TrainingInventory:
        """What Train will use and skip, by the rule training applies (core.semantic.annotations)."""
        usable = tuple(i for i, reason in sorted(self._skip_reasons.items()) if reason is None)
        skipped = tuple(SkippedAnnotation(i, reason) for i, reason in sorted(self._skip_reasons.items())
                        if reason is not None)
        return TrainingInventory(usable, skipped)

    def _apply_label_set(self) -> None:
        label_set = self.project.label_set
        self._labels_table.set_label_set(label_set)
        self._label_picker.set_label_set(label_set)
        current = self._label
        self.set_label(current if current in label_set else (label_set.ids[1] if len(label_set) > 1 else 0))
        self._lut = label_lut(label_set, show_background=True)
        # Whole-project check (a label's ignore flag may have changed): the rule training applies.
        inventory = training_inventory(self.project)
        self._skip_reasons = {i: None for i in inventory.usable}
        self._skip_reasons.update({skipped.annotation_id: skipped.reason for skipped in inventory.skipped})
        self._refresh_overlay()

    def _sync_controls(self) -> None:
        """Show the current seed and view in the spin boxes without re-triggering navigation."""
        for spin, value in ((self._seed_spin, self.seed), (self._yaw_spin, self.yaw), (self._pitch_spin, self.pitch)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    # ================================================================== layout
    def _build(self) -> None:
        self._pages = QStackedLayout(self)
        self._pages.addWidget(placeholder("Create or open a project (File menu) to annotate.\n\n"
                                          "Annotations are saved into the project after every stroke."))
        page = QWidget()
        row = QHBoxLayout(page)
        canvas_column = QVBoxLayout()
        canvas_column.addWidget(self._build_canvas(), stretch=1)
        self._legend = LabelLegend()  # what the overlay's colours mean (labels in this view)
        self._legend.setToolTip("Labels painted in this view; unlabelled pixels show no colour")
        canvas_column.addWidget(self._legend)
        self._shown_resolution = QLabel()
        self._shown_resolution.setStyleSheet("color: #888;")
        canvas_column.addWidget(self._shown_resolution)
        row.addLayout(canvas_column, stretch=1)
        row.addWidget(self._build_side_panel())
        self._pages.addWidget(page)

    def _build_canvas(self) -> QWidget:
        self.view_box = PaintViewBox()
        self.canvas = image_view_widget(self.view_box)
        self.canvas.setFocusPolicy(Qt.StrongFocus)
        self._image_item = pg.ImageItem()
        self._mask_item = pg.ImageItem()
        self._mask_item.setOpacity(0.5)
        self._lut = np.zeros((256, 4), np.uint8)
        self._brush_outline = pg.QtWidgets.QGraphicsEllipseItem()
        self._brush_outline.setPen(pg.mkPen("w", width=1, cosmetic=True))
        for item in (self._image_item, self._mask_item, self._brush_outline):
            self.view_box.addItem(item)
        self.view_box.setRange(QRectF(0, 0, self.resolution, self.resolution), padding=0.02)
        self.view_box.stroke_started.connect(self.begin_stroke)
        self.view_box.stroke_moved.connect(self.continue_stroke)
        self.view_box.stroke_finished.connect(self.finish_stroke)
        self.view_box.clicked.connect(self.click_at)
        self.view_box.hovered.connect(self._move_brush_outline)
        return self.canvas

    def _build_side_panel(self) -> QWidget:
        panel = QWidget()
        panel.setFixedWidth(340)
        column = QVBoxLayout(panel)
        column.addWidget(self._build_tools_box())
        column.addWidget(self._build_labels_box(), stretch=1)
        column.addWidget(self._build_view_box())
        return panel

    def _build_tools_box(self) -> QGroupBox:
        box = QGroupBox("Tools")
        layout = QFormLayout(box)
        buttons = QHBoxLayout()
        group = QButtonGroup(self)
        self._tool_buttons = {}
        for tool in TOOLS:
            button = QToolButton(text=f"{tool.capitalize()} ({TOOL_KEYS[tool]})", checkable=True)
            button.clicked.connect(lambda _=False, t=tool: self.set_tool(t))
            group.addButton(button)
            buttons.addWidget(button)
            self._tool_buttons[tool] = button
        self._tool_buttons["paint"].setChecked(True)
        layout.addRow(buttons)
        self._brush_spin = QSpinBox(minimum=1, maximum=MAX_BRUSH, value=self.brush_size, suffix=" px")
        self._brush_spin.setToolTip("Brush diameter in mask pixels ( [ and ] )")
        self._brush_spin.valueChanged.connect(self.set_brush_size)
        layout.addRow("Brush size", self._brush_spin)
        self._opacity = QSlider(Qt.Horizontal, minimum=0, maximum=100, value=50)
        self._opacity.valueChanged.connect(lambda value: self._mask_item.setOpacity(value / 100))
        layout.addRow("Overlay opacity", self._opacity)
        history = QHBoxLayout()
        self._undo_button = QPushButton("Undo", enabled=False, clicked=self.undo)
        self._redo_button = QPushButton("Redo", enabled=False, clicked=self.redo)
        history.addWidget(self._undo_button)
        history.addWidget(self._redo_button)
        layout.addRow(history)
        # Correcting a model's guess beats painting from scratch (MaskEditor.replace: one step).
        self._prefill_button = QPushButton("Prefill from semantic branch (Ctrl+P)", enabled=False,
                                           clicked=self.prefill_from_branch)
        self._prefill_button.setToolTip(self.branch_state.note)
        layout.addRow(self._prefill_button)
        return box

    def _build_labels_box(self) -> QGroupBox:
        """Every label with its key and pixel counts, a picker by name or id, and the totals."""
        box = QGroupBox("Labels (0–9, Alt+0–9, L: find)")
        layout = QVBoxLayout(box)
        self._label_picker = LabelPicker()
        self._label_picker.picked.connect(self.pick_label)
        self._brush_label = QLabel()
        self._brush_label.setToolTip("The label the brush and fill paint with")
        picker_row = QHBoxLayout()
        picker_row.addWidget(self._label_picker, stretch=1)
        picker_row.addWidget(self._brush_label)
        layout.addLayout(picker_row)
        self._labels_table = LabelTable()
        self._labels_table.label_clicked.connect(self.pick_label)
        layout.addWidget(self._labels_table, stretch=1)
        self._counts_label = QLabel(wordWrap=True)
        layout.addWidget(self._counts_label)
        return box

    def _build_view_box(self) -> QGroupBox:
        box = QGroupBox("Identity and view")
        layout = QFormLayout(box)
        seeds = QHBoxLayout()
        self._seed_spin = QSpinBox(minimum=0, maximum=2**31 - 1, value=self.seed)
        self._seed_spin.setToolTip("EG3D seed of the identity (annotation seeds start at 1,000,000)")
        self._seed_spin.valueChanged.connect(self.set_identity)
        previous = QPushButton("◀", clicked=self.previous_identity, toolTip="Previous identity (P, PageUp)")
        following = QPushButton("▶", clicked=self.next_identity, toolTip="Next identity (N, PageDown)")
        for button in (previous, following):
            button.setFixedWidth(40)  # narrow, so the row's "Seed" label keeps its room
        seeds.addWidget(previous)
        seeds.addWidget(self._seed_spin, stretch=1)
        seeds.addWidget(following)
        layout.addRow("Seed", seeds)
        presets = QHBoxLayout()
        for name, (yaw, pitch) in VIEW_PRESETS.items():
            button = QPushButton(name, toolTip=f"yaw {yaw:+.0f}°, pitch {pitch:+.0f}°")
            button.clicked.connect(lambda _=False, y=yaw, p=pitch: self.set_view(y, p))
            presets.addWidget(button)
        presets.addWidget(QPushButton("Fit", clicked=self.fit_view,
                                      toolTip="Show the whole mask (middle-drag pans, wheel zooms)"))
        layout.addRow(presets)  # the buttons say what they are; a row label would squeeze them
        self._yaw_spin = QDoubleSpinBox(minimum=-90, maximum=90, decimals=1, singleStep=5, suffix="°")
        self._pitch_spin = QDoubleSpinBox(minimum=-60, maximum=60, decimals=1, singleStep=5, suffix="°")
        self._yaw_spin.valueChanged.connect(lambda yaw: self.set_view(yaw, self.pitch))
        self._pitch_spin.valueChanged.connect(lambda pitch: self.set_view(self.yaw, pitch))
        angles = QHBoxLayout()
        angles.addWidget(self._yaw_spin)
        angles.addWidget(QLabel("Pitch"))
        angles.addWidget(self._pitch_spin)
        layout.addRow("Yaw", angles)  # one row for both: the label list keeps the height
        return box

    # ================================================================== shortcuts
    def _make_shortcuts(self) -> None:
        """Active while this workspace is the visible tab (Qt ignores hidden widgets' shortcuts)."""
        bindings = [(TOOL_KEYS[tool], lambda t=tool: self.set_tool(t)) for tool in TOOLS]
        bindings += [(label_key(position), lambda p=position: self.select_label_by_position(p)) for position in range(20)]
        bindings += [("L", self.focus_label_picker)]
        bindings += [
            ("[", lambda: self.set_brush_size(self.brush_size - 1)),
            ("]", lambda: self.set_brush_size(self.brush_size + 1)),
            (HISTORY_KEYS[0], self.undo), (HISTORY_KEYS[1], self.redo), (HISTORY_KEYS[2], self.redo),
            ("N", self.next_identity), ("PgDown", self.next_identity),
            ("P", self.previous_identity), ("PgUp", self.previous_identity),
            ("Ctrl+P", self.prefill_from_branch),
        ]
        self.shortcuts = {}
        for keys, action in bindings:
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.activated.connect(action)
            self.shortcuts[keys] = shortcut
        self._label_picker.installEventFilter(_ShortcutPassThrough(HISTORY_KEYS, self))
        not_numbers = [keys for keys in self.shortcuts if not keys.isdigit() and not keys.startswith("Alt+")]
        number_keys = _ShortcutPassThrough(not_numbers, self)
        for spin in (self._seed_spin, self._yaw_spin, self._pitch_spin, self._brush_spin):
            spin.installEventFilter(number_keys)
        for spin in (self._seed_spin, self._yaw_spin, self._pitch_spin):
            # Enter in a seed or angle box hands the keyboard back to painting (N, P, 0-9, B, ...).
            spin.lineEdit().returnPressed.connect(self.canvas.setFocus)
