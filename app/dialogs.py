"""Dialogs: create a project (folder, backbone, label set, mask size) and edit a label set."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QColorDialog, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                               QRadioButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from app.widgets import colour_icon
from core.project import Label, LabelSet, LabelSetError, default_label_set
from core.project.labels import MAX_LABEL_ID

BACKBONE_FILTER = "Backbones (*.pkl *.safetensors);;EG3D network pickles (*.pkl);;Studio checkpoints (*.safetensors)"


def choose_backbone_file(parent: QWidget | None) -> str | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open backbone", "", BACKBONE_FILTER)
    return path or None


class LabelSetTable(QWidget):
    """Names and colours of a label set, editable; ids are fixed once given (masks store them)."""

    def __init__(self, label_set: LabelSet, parent: QWidget | None = None):
        super().__init__(parent)
        self._version = label_set.version
        self._table = QTableWidget(0, 4)
        self._table.setHorizontalHeaderLabels(["Id", "Name", "Colour", "Ignore"])
        self._table.horizontalHeaderItem(3).setToolTip(
            "Painted and shown, but training and evaluation leave its pixels out, as unlabelled ones")
        self._table.verticalHeader().setVisible(False)
        self._table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self._table.cellDoubleClicked.connect(self._maybe_pick_colour)
        for label in label_set.labels:
            self._append(label)
        add = QPushButton("Add label", clicked=self._add_label)
        remove = QPushButton("Remove selected", clicked=self._remove_selected)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        hint = QLabel("Double-click a colour to change it. Id 0 is the background; pixels nobody painted are "
                      "unlabelled (mask value 255) and never trained on.", wordWrap=True)
        hint.setStyleSheet("color: #888;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._table)
        layout.addLayout(buttons)
        layout.addWidget(hint)

    def label_set(self) -> LabelSet:
        """The edited set; LabelSetError saying what is wrong (empty name, no background...)."""
        labels = []
        for row in range(self._table.rowCount()):
            label_id = int(self._table.item(row, 0).text())
            name = self._table.item(row, 1).text().strip()
            colour = self._table.item(row, 2).data(Qt.UserRole)
            ignore = self._table.item(row, 3).checkState() == Qt.Checked
            labels.append(Label(label_id, name, colour, ignore))
        return LabelSet(tuple(labels), self._version)

    def _append(self, label: Label) -> None:
        row = self._table.rowCount()
        self._table.insertRow(row)
        id_item = QTableWidgetItem(str(label.id))
        id_item.setFlags(id_item.flags() & ~Qt.ItemIsEditable)
        self._table.setItem(row, 0, id_item)
        self._table.setItem(row, 1, QTableWidgetItem(label.name))
        self._table.setItem(row, 2, self._colour_item(label.colour))
        ignore = QTableWidgetItem()
        ignore.setFlags((ignore.flags() | Qt.ItemIsUserCheckable) & ~Qt.ItemIsEditable)
        ignore.setCheckState(Qt.Checked if label.ignore else Qt.Unchecked)
        self._table.setItem(row, 3, ignore)

    def _colour_item(self, colour) -> QTableWidgetItem:
        item = QTableWidgetItem(colour_icon(colour), "#%02x%02x%02x" % tuple(colour))
        item.setFlags(item.flags() & ~Qt.ItemIsEditable)
        item.setData(Qt.UserRole, tuple(colour))
        return item

    def _maybe_pick_colour(self, row: int, column: int) -> None:
        if column != 2:
            return
        current = QColor(*self._table.item(row, 2).data(Qt.UserRole))
        chosen = QColorDialog.getColor(current, self, "Label colour")
        if chosen.isValid():
            self._table.setItem(row, 2, self._colour_item((chosen.red(), chosen.green(), chosen.blue())))

    def _add_label(self) -> None:
        used = {int(self._table.item(row, 0).text()) for row in range(self._table.rowCount())}
        new_id = next(i for i in range(MAX_LABEL_ID + 1) if i not in used)
        self._append(Label(new_id, f"label {new_id}", (128, 128, 128)))

    def _remove_selected(self) -> None:
        for row in sorted({index.row() for index in self._table.selectedIndexes()}, reverse=True):
            self._table.removeRow(row)


@dataclass(frozen=True)
class NewProjectChoice:
    folder: Path
    backbone: str  # 'default' or a file path
    label_set: LabelSet
    settings: dict


class NewProjectDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.resize(520, 560)
        self.choice: NewProjectChoice | None = None
        self._folder = QLineEdit(placeholderText="an empty or new folder")
        browse_folder = QPushButton("Browse…", clicked=self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self._folder, stretch=1)
        folder_row.addWidget(browse_folder)
        self._default_backbone = QRadioButton("Embedded default (procedural heads)", checked=True)
        self._file_backbone = QRadioButton("File:")
        self._backbone_path = QLineEdit(placeholderText="EG3D pickle (.pkl) or studio .safetensors")
        self._backbone_path.textEdited.connect(lambda _: self._file_backbone.setChecked(True))
        browse_backbone = QPushButton("Browse…", clicked=self._browse_backbone)
        file_row = QHBoxLayout()
        file_row.addWidget(self._file_backbone)
        file_row.addWidget(self._backbone_path, stretch=1)
        file_row.addWidget(browse_backbone)
        self._resolution = QSpinBox(minimum=32, maximum=1024, singleStep=32, value=128, suffix=" px")
        self._resolution.setToolTip("Masks are painted and stored at this size (square)")
        self._labels = LabelSetTable(default_label_set())
        self._problem = QLabel(wordWrap=True)
        self._problem.setStyleSheet("color: #d33;")
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Folder", folder_row)
        form.addRow("Backbone", self._default_backbone)
        form.addRow("", file_row)
        form.addRow("Mask size", self._resolution)
        form.addRow("Labels", self._labels)
        form.addRow(self._problem)
        form.addRow(buttons)

    def accept(self) -> None:
        try:
            self.choice = self._read_choice()
        except (ValueError, LabelSetError) as error:
            self._problem.setText(str(error))
            return
        super().accept()

    def _read_choice(self) -> NewProjectChoice:
        folder_text = self._folder.text().strip()
        if not folder_text:
            raise ValueError("Choose a folder for the project.")
        backbone = "default"
        if self._file_backbone.isChecked():
            backbone = self._backbone_path.text().strip()
            if not backbone or not Path(backbone).is_file():
                raise ValueError(f"Backbone file not found: {backbone or '(none chosen)'}")
        settings = {"annotation_resolution": self._resolution.value()}
        return NewProjectChoice(Path(folder_text), backbone, self._labels.label_set(), settings)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Project folder")
        if folder:
            self._folder.setText(folder)

    def _browse_backbone(self) -> None:
        path = choose_backbone_file(self)
        if path:
            self._backbone_path.setText(path)
            self._file_backbone.setChecked(True)


class LabelSetDialog(QDialog):
    """Edit an open project's labels; the store refuses to drop ids that masks still use."""

    def __init__(self, label_set: LabelSet, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Labels")
        self.resize(420, 480)
        self.result_set: LabelSet | None = None
        self._table = LabelSetTable(label_set)
        self._problem = QLabel(wordWrap=True)
        self._problem.setStyleSheet("color: #d33;")
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self._table)
        layout.addWidget(self._problem)
        layout.addWidget(buttons)

    def accept(self) -> None:
        try:
            self.result_set = self._table.label_set()
        except LabelSetError as error:
            self._problem.setText(str(error))
            return
        super().accept()
