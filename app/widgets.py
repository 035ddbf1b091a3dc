"""Small widgets and helpers shared by the workspaces."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QWidget

from core.project import LabelSet

# Images are (rows, cols[, channels]) everywhere in the studio, as numpy and the renderer have them.
pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


def colour_icon(colour, size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*colour))
    return QIcon(pixmap)


def label_lut(label_set: LabelSet) -> np.ndarray:
    """(256, 4) uint8 RGBA lookup for an overlay: label colours, background fully transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for label in label_set.labels:
        if label.id != 0:
            lut[label.id] = (*label.colour, 255)
    return lut


CANVAS_BACKGROUND = (0x20, 0x21, 0x24)  # the dark grey behind every picture (and the point cloud)


def image_view_widget(view_box: pg.ViewBox) -> pg.GraphicsLayoutWidget:
    """A borderless pyqtgraph canvas showing one ViewBox, y pointing down like an image."""
    canvas = pg.GraphicsLayoutWidget()
    canvas.setBackground(QColor(*CANVAS_BACKGROUND))
    canvas.ci.setContentsMargins(0, 0, 0, 0)
    view_box.setAspectLocked(True)
    view_box.invertY(True)
    view_box.setMenuEnabled(False)
    canvas.addItem(view_box)
    return canvas


class LabelPalette(QListWidget):
    """The label set as a list: key number, colour swatch, name. The selection is the brush."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label_ids: list[int] = []
        self.setFocusPolicy(Qt.NoFocus)  # number keys belong to the workspace shortcuts

    def set_label_set(self, label_set: LabelSet) -> None:
        self.clear()
        self.label_ids = label_set.ids
        for position, label in enumerate(label_set.labels):
            key = str(position) if position <= 9 else " "
            item = QListWidgetItem(colour_icon(label.colour), f"{key}  {label.name}")
            item.setData(Qt.UserRole, label.id)
            item.setToolTip(f"label id {label.id}, colour {label.colour}")
            self.addItem(item)

    def current_label(self) -> int | None:
        item = self.currentItem()
        return None if item is None else int(item.data(Qt.UserRole))

    def select_label(self, label_id: int) -> None:
        if label_id in self.label_ids:
            self.setCurrentRow(self.label_ids.index(label_id))


def placeholder(text: str) -> QLabel:
    """A centred, plainly worded note for a workspace that has nothing to show yet."""
    label = QLabel(text)
    label.setAlignment(Qt.AlignCenter)
    label.setWordWrap(True)
    label.setStyleSheet("color: #777; font-size: 14px; padding: 40px;")
    return label
