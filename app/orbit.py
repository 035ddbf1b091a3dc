"""The Orbit workspace: look around an identity; drag to orbit, wheel to zoom.

Dragging asks the render worker for coarse frames; the refined frame follows when the mouse
rests (see app.workers). The Labels and Blend modes show the project's semantic branch (handed
over by the window, see app.semantic); without one they are disabled and their tooltip and the
side panel say what to do.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QButtonGroup, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QRadioButton, QSlider, QSpinBox, QStackedLayout,
                               QTabWidget, QVBoxLayout, QWidget)

from app.pointcloud import PointCloudPanel
from app.rendering import Frame, ViewRequest
from app.semantic import BranchState, blend_labels, colour_labels, load_project_branch
from app.widgets import CANVAS_BACKGROUND, LabelLegend, image_view_widget, placeholder
from app.workers import RenderClient
from core.camera import DEFAULT_FOV_DEG

DEGREES_PER_PIXEL = 0.4
YAW_LIMIT, PITCH_LIMIT = 90.0, 60.0
FOV_LIMITS = (6.0, 40.0)  # zoom changes the field of view: moving the camera would leave the ray range
ARROW_STEP_DEG = 5.0
ZOOM_STEP = 0.9  # field-of-view factor per wheel notch
MODES = ("RGB", "Depth", "Labels", "Blend")
LABEL_MODES = ("Labels", "Blend")
# Depth mode: viridis (perceptually even, readable where grey levels are not) from far (purple)
# to near (yellow); its darkest colour still stands apart from the canvas background.
DEPTH_COLOURS = pg.colormap.get("viridis").getLookupTable(nPts=256).astype(np.float32)
SURFACE_OPACITY = 0.5  # rays at least this opaque set the colour range (as the factory's alpha threshold)


def depth_picture(depth: np.ndarray, opacity: np.ndarray | None) -> np.ndarray:
    """(h, w, 3) uint8: `depth` (uint8, near = 255) through DEPTH_COLOURS, faded into the canvas
    background by each ray's `opacity`, so empty space shows as empty (its expected depth is noise).

    The colours span the 2nd-98th percentile of the surface's depths: the head fills only about a
    third of the frame's fixed ray range, which in one colour ramp would show it in a few greens.
    A percentile range moves little while orbiting (unlike a min/max with empty rays in it)."""
    values = depth.astype(np.float32)
    surface = values[opacity >= SURFACE_OPACITY] if opacity is not None else values.ravel()
    if surface.size >= 16:
        far, near = np.percentile(surface, [2, 98])
        values = (values - far) * 255.0 / max(near - far, 1.0)
    colours = DEPTH_COLOURS[np.clip(np.round(values), 0, 255).astype(np.uint8)]
    if opacity is not None:
        alpha = np.clip(opacity, 0.0, 1.0)[..., None]
        colours = alpha * colours + (1.0 - alpha) * np.asarray(CANVAS_BACKGROUND, np.float32)
    return np.round(colours).astype(np.uint8)


class OrbitViewBox(pg.ViewBox):
    """Left drag orbits, the wheel zooms; the picture itself never pans."""

    orbit_dragged = Signal(float, float, bool)  # dx, dy in screen pixels, drag finished
    zoomed = Signal(float)  # wheel notches, positive = towards the subject

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() != Qt.LeftButton:
            ev.ignore()
            return
        ev.accept()
        delta = ev.screenPos() - ev.lastScreenPos()
        self.orbit_dragged.emit(delta.x(), delta.y(), ev.isFinish())

    def wheelEvent(self, ev, axis=None):
        ev.accept()
        self.zoomed.emit(ev.delta() / 120.0)


class OrbitWorkspace(QWidget):
    error = Signal(str)
    busy_changed = Signal(bool)
    status_message = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.backbone = None
        self.view = ViewRequest(seed=0)
        self.mode = "RGB"
        self.branch_state = load_project_branch(None, None)
        self._palette = np.zeros((1, 3), np.uint8)
        self._label_names: dict[int, str] = {}
        self.last_frame: Frame | None = None
        self.frames_shown = 0
        self._stale = False
        self.renderer = RenderClient(self)
        self.renderer.frame_ready.connect(self._show_frame)
        self.renderer.error.connect(self.error)
        self.renderer.busy_changed.connect(self.busy_changed)
        self._build()
        self._make_shortcuts()

    # ================================================================== session
    def set_session(self, backbone, project=None) -> None:
        self.backbone = backbone
        self.renderer.set_backbone(backbone)
        self._palette = project.label_set.palette() if project is not None else np.zeros((1, 3), np.uint8)
        self._label_names = {label.id: label.name for label in project.label_set.labels} if project else {}
        # Without a project this says why there are no labels; with one, the window hands over
        # the project's branch right after this (MainWindow.reload_semantic_branch).
        self.set_semantic_branch(load_project_branch(project, backbone) if project is None
                                 else BranchState(None, "Looking for the project's semantic branch…"), refresh=False)
        self._pages.setCurrentIndex(1 if backbone is not None else 0)
        self.refresh(interactive=True)  # a coarse first frame appears sooner

    def set_semantic_branch(self, state: BranchState, refresh: bool = True) -> None:
        """Show labels from `state.branch` (None: the label modes are disabled with state.note)."""
        self.branch_state = state
        self.renderer.set_branch(state.branch)
        available = state.branch is not None
        for mode in LABEL_MODES:
            self._mode_buttons[mode].setEnabled(available)
            self._mode_buttons[mode].setToolTip(state.note)
        self._branch_label.setText(state.note)
        self.cloud_panel.set_models(self.backbone, state.branch, self._palette, self._label_names, state.note)
        if not available and self.mode in LABEL_MODES:
            self.set_mode("RGB")
        elif refresh and self.mode in LABEL_MODES:
            self.refresh()

    def set_label_palette(self, palette: np.ndarray) -> None:
        """New label colours (the label set was edited)."""
        self._palette = palette
        self.cloud_panel.palette = palette
        if self.last_frame is not None:
            self._show_frame(self.last_frame)

    def clear_session(self) -> None:
        self.set_session(None)

    def shutdown(self) -> None:
        self.renderer.shutdown()
        self.cloud_panel.shutdown()

    def fuse_point_cloud(self) -> None:
        """The point-cloud tab's button: fuse the identity on screen now."""
        self.cloud_panel.fuse(self.view.seed, self.view.truncation_psi)

    # ================================================================== camera and identity
    def set_seed(self, seed: int) -> None:
        self._update(seed=int(seed))

    def set_truncation(self, psi: float, interactive: bool = False) -> None:
        self._update(interactive, truncation_psi=round(float(psi), 2))

    def orbit_by(self, dx: float, dy: float, interactive: bool = True) -> None:
        """Drag by (dx, dy) screen pixels: right turns the camera right, down looks from above."""
        yaw = float(np.clip(self.view.yaw + dx * DEGREES_PER_PIXEL, -YAW_LIMIT, YAW_LIMIT))
        pitch = float(np.clip(self.view.pitch - dy * DEGREES_PER_PIXEL, -PITCH_LIMIT, PITCH_LIMIT))
        self._update(interactive, yaw=yaw, pitch=pitch)

    def zoom_by(self, notches: float) -> None:
        fov = float(np.clip(self.view.fov * ZOOM_STEP ** notches, *FOV_LIMITS))
        self._update(True, fov=fov)  # wheel bursts behave like a drag: coarse, then refined

    def reset_view(self) -> None:
        self._update(yaw=0.0, pitch=0.0, fov=DEFAULT_FOV_DEG)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")
        if mode in LABEL_MODES and self.branch_state.branch is None:
            raise ValueError(f"the {mode} mode is not available: {self.branch_state.note}")
        self.mode = mode
        self._mode_buttons[mode].setChecked(True)
        if self.last_frame is not None:
            self._show_frame(self.last_frame)
        if mode in LABEL_MODES and (self.last_frame is None or self.last_frame.labels is None):
            self.refresh()  # this frame was rendered without labels

    def refresh(self, interactive: bool = False) -> None:
        if self.backbone is None:
            return
        if not self.isVisible():
            self._stale = True  # a hidden tab leaves the CPU to the visible one; drawn when shown
            return
        self._stale = False
        wants_labels = self.mode in LABEL_MODES and self.branch_state.branch is not None
        self.renderer.request(replace(self.view, labels=wants_labels), interactive=interactive)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def _update(self, interactive: bool = False, **changes) -> None:
        self.view = replace(self.view, **changes)
        self._camera_label.setText(f"yaw {self.view.yaw:+.1f}°  pitch {self.view.pitch:+.1f}°  fov {self.view.fov:.1f}°")
        self._sync_controls()
        self.refresh(interactive)

    def _sync_controls(self) -> None:
        """Show the view's seed and truncation, also when a script or shortcut changed them."""
        for widget, value in ((self._seed_spin, self.view.seed), (self._truncation, round(self.view.truncation_psi * 100))):
            if widget.value() != value and not getattr(widget, "isSliderDown", lambda: False)():
                widget.blockSignals(True)
                widget.setValue(value)
                widget.blockSignals(False)

    # ================================================================== drawing
    def _show_frame(self, frame: Frame) -> None:
        self.last_frame = frame
        self.frames_shown += 1
        self._image_item.setImage(self._picture(frame), autoLevels=False, levels=(0, 255))
        self._image_item.setRect(QRectF(0, 0, 1, 1))  # coarse and refined frames fill the same square
        quality = "coarse" if frame.coarse else "refined"
        size = frame.rgb.shape[0]
        self._frame_label.setText(f"{quality} · {size}×{size} · {frame.seconds * 1000:.0f} ms")
        labelled = self.mode in LABEL_MODES and frame.labels is not None
        if labelled:
            present = set(np.unique(frame.labels).tolist())
            self.legend.set_labels([(i, name, self._palette[i]) for i, name in self._label_names.items()
                                    if i < len(self._palette)], present)
        self.legend.setVisible(labelled)

    def _picture(self, frame: Frame) -> np.ndarray:
        """What the current mode shows of a frame (RGB until a frame with labels arrives)."""
        if self.mode == "Depth":
            return depth_picture(frame.depth, frame.opacity)
        if self.mode == "Labels" and frame.labels is not None:
            return colour_labels(frame.labels, self._palette)
        if self.mode == "Blend" and frame.labels is not None:
            return blend_labels(frame.rgb, frame.labels, self._palette)
        return frame.rgb

    def _make_shortcuts(self) -> None:
        """Arrow keys turn the camera in 5° steps; R resets. Active only while this tab shows."""
        step = ARROW_STEP_DEG / DEGREES_PER_PIXEL  # in the drag's units (screen pixels)
        bindings = {"Left": (-step, 0), "Right": (step, 0), "Up": (0, step), "Down": (0, -step)}
        self.shortcuts = {}
        for keys, (dx, dy) in bindings.items():
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.activated.connect(lambda dx=dx, dy=dy: self.orbit_by(dx, dy, interactive=False))
            self.shortcuts[keys] = shortcut
        self.shortcuts["R"] = QShortcut(QKeySequence("R"), self)
        self.shortcuts["R"].activated.connect(self.reset_view)

    # ================================================================== layout
    def _build(self) -> None:
        self._pages = QStackedLayout(self)
        self._pages.addWidget(placeholder("No backbone loaded yet.\n\nOpen a project, or File → Open Backbone… "
                                          "to look at an EG3D pickle or a studio .safetensors file."))
        page = QWidget()
        row = QHBoxLayout(page)
        self.view_box = OrbitViewBox()
        self.view_box.setMouseEnabled(False, False)
        self.canvas = image_view_widget(self.view_box)
        self._image_item = pg.ImageItem()
        self.view_box.addItem(self._image_item)
        self.view_box.setRange(QRectF(0, 0, 1, 1), padding=0.02)
        self.view_box.orbit_dragged.connect(lambda dx, dy, done: self.orbit_by(dx, dy, interactive=not done))
        self.view_box.zoomed.connect(self.zoom_by)
        self.cloud_panel = PointCloudPanel()
        self.cloud_panel.fuse_requested.connect(self.fuse_point_cloud)
        self.cloud_panel.error.connect(self.error)
        self.cloud_panel.busy_changed.connect(self.busy_changed)
        self.views = QTabWidget()
        self.views.addTab(self.canvas, "Render")
        self.views.addTab(self.cloud_panel, "Point cloud")
        row.addWidget(self.views, stretch=1)
        row.addWidget(self._build_controls())
        self._pages.addWidget(page)
        self._update()

    def _build_controls(self) -> QWidget:
        panel = QWidget()
        panel.setFixedWidth(280)
        column = QVBoxLayout(panel)
        identity = QGroupBox("Identity")
        form = QFormLayout(identity)
        self._seed_spin = QSpinBox(minimum=0, maximum=2**31 - 1, value=self.view.seed)
        self._seed_spin.valueChanged.connect(self.set_seed)
        form.addRow("Seed", self._seed_spin)
        self._truncation = QSlider(Qt.Horizontal, minimum=0, maximum=100, value=100)
        self._truncation.setToolTip("Truncation ψ: lower values pull the identity towards the average one")
        truncation_value = QLabel("ψ 1.00")
        self._truncation.valueChanged.connect(lambda v: truncation_value.setText(f"ψ {v / 100:.2f}"))
        self._truncation.valueChanged.connect(lambda v: self.set_truncation(v / 100, self._truncation.isSliderDown()))
        self._truncation.sliderReleased.connect(lambda: self.set_truncation(self._truncation.value() / 100))
        form.addRow("Truncation", self._truncation)
        form.addRow("", truncation_value)
        column.addWidget(identity)
        column.addWidget(self._build_modes())
        camera = QGroupBox("Camera")
        camera_layout = QVBoxLayout(camera)
        self._camera_label = QLabel()
        camera_layout.addWidget(self._camera_label)
        camera_layout.addWidget(QLabel("Drag or arrow keys to orbit, wheel to zoom, R to reset.", wordWrap=True))
        camera_layout.addWidget(QPushButton("Reset view", clicked=self.reset_view))
        column.addWidget(camera)
        self._branch_label = QLabel(self.branch_state.note, wordWrap=True)
        self._branch_label.setStyleSheet("color: #888;")
        column.addWidget(self._branch_label)
        column.addStretch(1)
        self._frame_label = QLabel("no frame yet")
        column.addWidget(self._frame_label)
        return panel

    def _build_modes(self) -> QGroupBox:
        box = QGroupBox("Show")
        layout = QGridLayout(box)
        group = QButtonGroup(self)
        self._mode_buttons = {}
        for position, mode in enumerate(MODES):
            button = QRadioButton(mode)
            button.toggled.connect(lambda checked, m=mode: checked and m != self.mode and self.set_mode(m))
            if mode in LABEL_MODES:
                button.setEnabled(False)
            group.addButton(button)
            layout.addWidget(button, position // 2, position % 2)
            self._mode_buttons[mode] = button
        self._mode_buttons["RGB"].setChecked(True)
        self.legend = LabelLegend()  # Labels / Blend: what the colours mean (labels in the frame)
        self.legend.setVisible(False)
        layout.addWidget(self.legend, (len(MODES) + 1) // 2, 0, 1, 2)
        return box
