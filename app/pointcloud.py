"""The Orbit workspace's point-cloud view: the identity's fused, labelled cloud in vispy.

The cloud is core.factory.pointcloud.fuse_identity_views (what the factory writes as PLY): a
few views of the identity back-projected through the backbone's depth, labelled by the semantic
branch. `CloudScene` holds the vispy drawing (markers, turntable camera, point size, which
classes show) and works on any vispy canvas, so a test can draw it under an EGL context;
`PointCloudPanel` hosts it in a Qt canvas where the platform has OpenGL (not Qt's offscreen
platform: there it says so and keeps the data side working).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QRadioButton,
                               QSlider, QVBoxLayout, QWidget)

from app.rendering import ALPHA_THRESHOLD, fuse_cloud
from app.widgets import CANVAS_BACKGROUND, colour_icon, placeholder
from core.factory.pointcloud import PointCloud
from app.workers import run_in_background

# Views fused into the cloud: around the face and a little from above and below (yaw, pitch).
CLOUD_VIEWS = ((-60.0, 0.0), (-30.0, 0.0), (0.0, 0.0), (30.0, 0.0), (60.0, 0.0), (0.0, 25.0), (0.0, -20.0))
CLOUD_RESOLUTION = 64  # label resolution per view: ~20k points, a few seconds on a laptop CPU
DEFAULT_POINT_SIZE = 4
NO_GL_PLATFORMS = ("offscreen", "minimal")


def gl_unavailable_reason() -> str | None:
    """Why this process cannot show a GL canvas (None when it can)."""
    platform = QGuiApplication.platformName()
    if platform in NO_GL_PLATFORMS:
        return f"Qt's '{platform}' platform has no OpenGL; the point-cloud view needs a display with OpenGL."
    return None


class CloudScene:
    """A labelled cloud drawn with vispy markers on `canvas` (a vispy SceneCanvas)."""

    def __init__(self, canvas):
        from vispy import scene

        self.canvas = canvas
        self.view = canvas.central_widget.add_view()
        # The world has y up and the frontal camera on +z (core.camera): azimuth 90 looks from there.
        self.view.camera = scene.TurntableCamera(fov=30, elevation=10, azimuth=90, up="y")
        self.markers = scene.visuals.Markers(parent=self.view.scene)
        self.cloud = None
        self.palette = np.zeros((1, 3), np.uint8)
        self.point_size = DEFAULT_POINT_SIZE
        self.hidden: set[int] = set()
        self.colour_by = "labels"

    def set_cloud(self, cloud, palette: np.ndarray) -> None:
        self.cloud, self.palette = cloud, palette
        if len(cloud):
            centre = cloud.points.mean(0)
            extent = float(np.ptp(cloud.points, 0).max()) or 1.0
            self.view.camera.center = tuple(float(v) for v in centre)
            self.view.camera.scale_factor = extent * 1.6
        self.redraw()

    def set_point_size(self, size: float) -> None:
        self.point_size = float(size)
        self.redraw()

    def set_hidden_labels(self, hidden) -> None:
        self.hidden = set(int(label) for label in hidden)
        self.redraw()

    def set_colour_by(self, what: str) -> None:
        if what not in ("labels", "rgb"):
            raise ValueError(f"colour by 'labels' or 'rgb', not {what!r}")
        self.colour_by = what
        self.redraw()

    def visible(self) -> np.ndarray:
        """Mask of the points whose class is shown."""
        if self.cloud is None:
            return np.zeros(0, bool)
        return ~np.isin(self.cloud.labels, list(self.hidden))

    def redraw(self) -> None:
        if self.cloud is None:
            return
        shown = self.visible()
        points = self.cloud.points[shown]
        if self.colour_by == "labels":
            lookup = np.zeros((256, 3), np.uint8)
            lookup[: len(self.palette)] = self.palette[:256]
            colours = lookup[self.cloud.labels[shown]]
        else:
            colours = self.cloud.colors[shown]
        rgba = np.concatenate([colours / 255.0, np.ones((len(colours), 1))], 1).astype(np.float32)
        if len(points):
            self.markers.set_data(points, face_color=rgba, edge_width=0, size=self.point_size)
        else:  # vispy wants at least one point; an invisible one stands for "nothing shown"
            self.markers.set_data(np.zeros((1, 3), np.float32), face_color=(0, 0, 0, 0), edge_width=0, size=0)
        self.canvas.update()


class PointCloudPanel(QWidget):
    """Controls and (where GL exists) the vispy canvas for the current identity's cloud."""

    error = Signal(str)
    busy_changed = Signal(bool)
    fuse_requested = Signal()  # the button: the workspace answers with fuse(seed, psi)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.backbone = self.branch = None
        self.palette = np.zeros((1, 3), np.uint8)
        self.label_names: dict[int, str] = {}
        self.cloud = None
        self.cloud_seed: tuple | None = None
        self.hidden: set[int] = {0}  # background-labelled points are halo around the head; tick to show them
        self.colour_by = "labels"
        self.alpha_threshold = ALPHA_THRESHOLD  # a pixel becomes a point where the head is this opaque
        self.scene: CloudScene | None = None
        self._making_canvas = False
        self._tasks: set = set()
        self._build()

    # ------------------------------------------------------------------ session
    def set_models(self, backbone, branch, palette: np.ndarray, label_names: dict[int, str], note: str) -> None:
        self.backbone, self.branch, self.palette, self.label_names = backbone, branch, palette, label_names
        self._fuse_button.setEnabled(branch is not None)
        self._status.setText("Fuse the current identity's views into a labelled cloud." if branch is not None
                             else note)
        self.cloud, self.cloud_seed = None, None
        self._refresh_classes()
        if self.scene is not None:  # the previous session's cloud goes
            self.scene.set_cloud(PointCloud.concatenate([]), palette)

    def fuse(self, seed: int, truncation_psi: float) -> None:
        """Fuse CLOUD_VIEWS of the identity in the background; the cloud shows when it is done."""
        if self.branch is None or self.backbone is None:
            return
        backbone, branch, threshold = self.backbone, self.branch, self.alpha_threshold
        cameras = [backbone.camera(yaw, pitch) for yaw, pitch in CLOUD_VIEWS]
        self._fuse_button.setEnabled(False)
        self._status.setText(f"Fusing {len(cameras)} views of seed {seed}…")
        self.busy_changed.emit(True)

        def done(result, failed: bool):
            self.busy_changed.emit(False)
            self._fuse_button.setEnabled(self.branch is not None)
            if failed:
                self._status.setText("The point cloud could not be made.")
                self.error.emit(f"Point cloud failed: {result}")
            elif branch is self.branch:
                self.show_cloud(result, (seed, truncation_psi))

        thread = run_in_background(lambda: fuse_cloud(backbone, branch, seed, truncation_psi, cameras,
                                                      CLOUD_RESOLUTION, threshold),
                                   lambda cloud: done(cloud, False), lambda error: done(error, True), self)
        self._tasks.add(thread)
        thread.finished.connect(lambda: (self._tasks.discard(thread), thread.deleteLater()))

    def show_cloud(self, cloud, identity: tuple) -> None:
        self.cloud, self.cloud_seed = cloud, identity
        self._status.setText(f"Seed {identity[0]}: {len(cloud):,} points from {len(CLOUD_VIEWS)} views. "
                             "Drag to orbit, wheel to zoom.")
        self._refresh_classes()
        if self.scene is not None:
            self.scene.set_cloud(cloud, self.palette)
            self.scene.set_hidden_labels(self.hidden)

    def set_point_size(self, size: int) -> None:
        self._size.setValue(int(size))

    def set_class_visible(self, label_id: int, visible: bool) -> None:
        for row in range(self._classes.count()):
            item = self._classes.item(row)
            if int(item.data(Qt.UserRole)) == label_id:
                item.setCheckState(Qt.Checked if visible else Qt.Unchecked)  # -> _class_toggled
                return
        raise ValueError(f"label {label_id} is not in the cloud")

    def visible_points(self) -> int:
        if self.cloud is None:
            return 0
        return int((~np.isin(self.cloud.labels, list(self.hidden))).sum())

    def shutdown(self) -> None:
        for thread in list(self._tasks):
            thread.wait()

    # ------------------------------------------------------------------ internals
    def _refresh_classes(self) -> None:
        self._classes.blockSignals(True)
        self._classes.clear()
        if self.cloud is not None:
            ids, counts = np.unique(self.cloud.labels, return_counts=True)
            for label_id, count in zip(ids.tolist(), counts.tolist()):
                colour = tuple(int(c) for c in self.palette[label_id]) if label_id < len(self.palette) else (0, 0, 0)
                name = self.label_names.get(label_id, f"id {label_id}")
                item = QListWidgetItem(colour_icon(colour), f"{name} ({count:,})")
                item.setData(Qt.UserRole, label_id)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Unchecked if label_id in self.hidden else Qt.Checked)
                self._classes.addItem(item)
        self._classes.blockSignals(False)

    def _class_toggled(self, item: QListWidgetItem) -> None:
        label_id = int(item.data(Qt.UserRole))
        if item.checkState() == Qt.Checked:
            self.hidden.discard(label_id)
        else:
            self.hidden.add(label_id)
        if self.scene is not None:
            self.scene.set_hidden_labels(self.hidden)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.scene is None and not self._making_canvas and gl_unavailable_reason() is None:
            # Creating the GL widget inside this panel makes the panel a native window, which Qt
            # shows again from inside the constructor: without the guard that nested showEvent
            # made a second canvas, the one laid out, while the cloud went to the hidden first.
            self._making_canvas = True
            try:
                self._make_canvas()
            finally:
                self._making_canvas = False

    def _make_canvas(self) -> None:
        """The GL canvas, made when the tab is first shown: importing vispy costs start-up time."""
        from vispy import scene

        canvas = scene.SceneCanvas(keys=None, app="pyside6", bgcolor=np.array(CANVAS_BACKGROUND) / 255, parent=self)
        self.scene = CloudScene(canvas)
        self._canvas_slot.replaceWidget(self._canvas_note, canvas.native)
        canvas.native.show()
        self._canvas_note.deleteLater()
        if self.cloud is not None:
            self.scene.set_cloud(self.cloud, self.palette)
            self.scene.set_hidden_labels(self.hidden)
        self.scene.set_point_size(self._size.value())
        self.scene.set_colour_by(self.colour_by)

    def set_colour_by(self, what: str) -> None:
        self.colour_by = what
        if self.scene is not None:
            self.scene.set_colour_by(what)

    def _build(self) -> None:
        row = QHBoxLayout(self)
        self._canvas_slot = row
        self._canvas_note = placeholder(gl_unavailable_reason() or "Fuse a cloud to see it here.")
        row.addWidget(self._canvas_note, stretch=1)
        controls = QWidget()
        controls.setFixedWidth(260)
        column = QVBoxLayout(controls)
        self._fuse_button = QPushButton("Fuse this identity's cloud", enabled=False)
        self._fuse_button.clicked.connect(lambda: self.fuse_requested.emit())
        column.addWidget(self._fuse_button)
        self._status = QLabel("", wordWrap=True)
        self._status.setStyleSheet("color: #888;")
        column.addWidget(self._status)
        column.addWidget(QLabel("Point size"))
        self._size = QSlider(Qt.Horizontal, minimum=1, maximum=12, value=DEFAULT_POINT_SIZE)
        self._size.valueChanged.connect(lambda size: self.scene and self.scene.set_point_size(size))
        column.addWidget(self._size)
        colour_row = QHBoxLayout()
        by_label, by_rgb = QRadioButton("Label colours", checked=True), QRadioButton("RGB")
        by_label.toggled.connect(lambda on: self.set_colour_by("labels" if on else "rgb"))
        colour_row.addWidget(by_label)
        colour_row.addWidget(by_rgb)
        column.addLayout(colour_row)
        column.addWidget(QLabel("Classes shown"))
        self._classes = QListWidget()
        self._classes.itemChanged.connect(self._class_toggled)
        column.addWidget(self._classes, stretch=1)
        row.addWidget(controls)
