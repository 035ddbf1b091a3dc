"""Small widgets and helpers shared by the workspaces."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCompleter, QHeaderView, QLabel, QLayout, QLineEdit,
                               QListWidget, QListWidgetItem, QTableWidget, QTableWidgetItem, QWidget)

from core.project import UNLABELLED_ID, LabelSet
from core.project.labels import UNLABELLED_COLOUR, UNLABELLED_NAME

# Images are (rows, cols[, channels]) everywhere in the studio, as numpy and the renderer have them.
pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)


def colour_icon(colour, size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*colour))
    return QIcon(pixmap)


def label_lut(label_set: LabelSet, show_background: bool = False) -> np.ndarray:
    """(256, 4) uint8 RGBA lookup for an overlay: label colours; unlabelled (UNLABELLED_ID) always
    transparent, background too unless `show_background` (Annotate: painted background shows)."""
    lut = np.zeros((256, 4), np.uint8)
    for label in label_set.labels:
        if label.id != 0 or show_background:
            lut[label.id] = (*label.colour, 255)
    lut[UNLABELLED_ID] = 0
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


# ---------------------------------------------------------------------- label keys, table, legend
def label_key(position: int) -> str | None:
    """The shortcut of the label at `position` in the set: 0-9, then Alt+0-Alt+9 (None past 19:
    the label picker reaches every label by name or id)."""
    if position < 10:
        return str(position)
    if position < 20:
        return f"Alt+{position - 10}"
    return None


class LabelTable(QTableWidget):
    """The whole label set, one row each, plus the unlabelled pixels: key, colour and name, and
    pixels of each in this view and in all views. Clicking a row picks the brush label."""

    label_clicked = Signal(int)  # a label id, or UNLABELLED_ID for the unlabelled row
    COLUMNS = ("Key", "Label", "This view", "All views")
    ROW_HEIGHT = 20

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, len(self.COLUMNS), parent)
        self.row_ids: list[int] = []
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.ROW_HEIGHT)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        self.setEditTriggers(QTableWidget.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setFocusPolicy(Qt.NoFocus)  # number keys belong to the workspace shortcuts
        self.setStyleSheet("QTableWidget::item:selected { background: #3d6fb4; color: white; }")
        self.cellClicked.connect(lambda row, _column: self.label_clicked.emit(self.row_ids[row]))

    def set_label_set(self, label_set: LabelSet) -> None:
        rows = [(label_key(position), label.colour, label.name + (" (ignored)" if label.ignore else ""),
                 f"label id {label.id}" + (": painted, but not trained on or scored" if label.ignore else ""))
                for position, label in enumerate(label_set.labels)]
        rows.append(("E", UNLABELLED_COLOUR, UNLABELLED_NAME,
                     f"mask value {UNLABELLED_ID}: nobody painted these pixels, so training and evaluation "
                     "leave them out; erase (E) makes pixels unlabelled"))
        self.row_ids = [*label_set.ids, UNLABELLED_ID]
        self.setRowCount(len(rows))
        for row, (key, colour, name, tip) in enumerate(rows):
            items = [QTableWidgetItem(key or ""), QTableWidgetItem(colour_icon(colour), name),
                     QTableWidgetItem("0"), QTableWidgetItem("0")]
            for column, item in enumerate(items):
                item.setToolTip(tip)
                if column >= 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.setItem(row, column, item)
        self.setMinimumHeight(self.minimumSizeHint().height())
        self.updateGeometry()

    def set_counts(self, this_view: dict[int, int], all_views: dict[int, int]) -> None:
        for row, label_id in enumerate(self.row_ids):
            self.item(row, 2).setText(f"{this_view.get(label_id, 0):,}")
            self.item(row, 3).setText(f"{all_views.get(label_id, 0):,}")

    def show_selected(self, label_id: int) -> None:
        if label_id in self.row_ids:
            self.selectRow(self.row_ids.index(label_id))

    # Up to this many rows the whole label set shows without scrolling; a longer one scrolls (and
    # the label picker reaches every label by name or id).
    ALWAYS_SHOWN_ROWS = 16

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self._height_for(self.rowCount()))

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), self._height_for(min(self.rowCount(), self.ALWAYS_SHOWN_ROWS)))

    def _height_for(self, rows: int) -> int:
        return self.horizontalHeader().sizeHint().height() + rows * self.ROW_HEIGHT + 2 * self.frameWidth()


class LabelPicker(QLineEdit):
    """Type a label's name (or part of it) or its id, Enter: `picked` fires with the label id."""

    picked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setPlaceholderText("Find label: name or id, Enter  (L)")
        self.setClearButtonEnabled(True)
        self._label_set: LabelSet | None = None
        self.returnPressed.connect(self._pick)

    def set_label_set(self, label_set: LabelSet) -> None:
        self._label_set = label_set
        completer = QCompleter([f"{label.id} {label.name}" for label in label_set.labels], self)
        completer.setCaseSensitivity(Qt.CaseInsensitive)
        completer.setFilterMode(Qt.MatchContains)
        completer.activated.connect(lambda _text: self._pick())
        self.setCompleter(completer)

    def find(self, text: str) -> int | None:
        """The id of the label `text` names: an id, an exact name, or the one name containing it."""
        text = text.strip().lower()
        if self._label_set is None or not text:
            return None
        labels = self._label_set.labels
        first = text.split()[0]
        if first.isdigit() and int(first) in self._label_set:
            return int(first)
        exact = [label.id for label in labels if label.name.lower() == text]
        partial = [label.id for label in labels if text in label.name.lower()]
        if exact:
            return exact[0]
        return partial[0] if len(partial) == 1 else None  # several matches: keep typing

    def _pick(self) -> None:
        label_id = self.find(self.text())
        if label_id is None:
            self.setStyleSheet("background: #5a2a2a;")  # nothing (or several) matched: keep typing
            return
        self.setStyleSheet("")
        self.clear()
        self.picked.emit(label_id)


class LabelLegend(QWidget):
    """Swatches and names of the labels drawn, wrapping into rows (for any view that draws labels)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = _FlowLayout(self)
        self.entries: list[str] = []

    def set_labels(self, labels, present: set[int] | None = None) -> None:
        """`labels`: (id, name, colour) or Label objects; with `present`, only those ids are listed."""
        while self._layout.count():
            self._layout.takeAt(0).widget().deleteLater()
        self.entries = []
        for label in labels:
            label_id, name, colour = (label.id, label.name, label.colour) if hasattr(label, "id") else label
            if present is not None and label_id not in present:
                continue
            red, green, blue = (int(c) for c in colour)  # numpy 2 would print np.uint8(...), which CSS ignores
            chip = QLabel(f'<span style="background-color: rgb({red}, {green}, {blue});">&nbsp;&nbsp;&nbsp;&nbsp;</span> {name}')
            chip.setToolTip(f"label id {label_id}")
            self._layout.addWidget(chip)
            self.entries.append(name)
        self._layout.invalidate()
        self.updateGeometry()


class _FlowLayout(QLayout):
    """Widgets left to right, wrapping to a new row when the width runs out."""

    SPACING = 10

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self._items = []
        self.setContentsMargins(4, 2, 4, 2)

    def addItem(self, item) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int):
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int):
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(width, move=False)

    def setGeometry(self, rect) -> None:
        super().setGeometry(rect)
        self._arrange(rect.width(), move=True, left=rect.x(), top=rect.y())

    def sizeHint(self) -> QSize:
        return self.minimumSize()

    def minimumSize(self) -> QSize:
        widest = max((item.sizeHint().width() for item in self._items), default=0)
        return QSize(widest + 8, self._arrange(max(widest, 1) + 8, move=False))

    def _arrange(self, width: int, move: bool, left: int = 0, top: int = 0) -> int:
        margins = self.contentsMargins()
        x, y, row_height = left + margins.left(), top + margins.top(), 0
        right = left + width - margins.right()
        for item in self._items:
            size = item.sizeHint()
            if x + size.width() > right and x > left + margins.left():
                x, y, row_height = left + margins.left(), y + row_height + 2, 0
            if move:
                item.setGeometry(QRect(x, y, size.width(), size.height()))
            x += size.width() + self.SPACING
            row_height = max(row_height, size.height())
        return y + row_height + margins.bottom() - top
