"""The studio's main window: projects, backbones, the workspace tabs and the status bar.

The window owns the session (the open project and its backbone) and hands it to each workspace
through `set_session(backbone, project)`; a workspace added later (Edit, training, the factory)
plugs in the same way. Anything slow (loading a backbone) runs in app.workers; every failure ends
in a message box that says what went wrong.
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMenu, QMessageBox, QTabWidget,
                               QWidget)

from app.annotate import SHORTCUTS_HELP, AnnotateWorkspace
from app.dialogs import LabelSetDialog, NewProjectChoice, NewProjectDialog, choose_backbone_file
from app.errors import show_error
from app.factory import GenerateDialog
from app.orbit import OrbitWorkspace
from app.edit import EDIT_SHORTCUTS_HELP, EditWorkspace
from app.semantic import load_project_branch
from app.steering import HardSamplesDialog
from app.training import TrainDialog
from app.widgets import placeholder
from app.workers import run_in_background
from core.backbone import load_backbone, pick_device
from core.project import (AnnotationError, BackboneRef, MaskSizeError, Project, ProjectFormatError,
                          ProjectLockedError, UnknownLabelError)

RECENT_KEY = "recent_projects"
LAST_SESSION_KEY = "last_session"  # JSON: the project folder, identity, view and tab to reopen at launch
MAX_RECENT = 8
REPEATED_ERROR_QUIET_S = 5.0  # a render error repeating while dragging is shown once


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, device: str | None = None):
        super().__init__()
        self.settings = settings if settings is not None else QSettings("DatasetNeRF", "Studio")
        self.device = pick_device(device)
        self.backbone = None
        self.project: Project | None = None
        self._busy: dict[str, bool] = {}
        self._tasks: set = set()
        self.train_dialog: TrainDialog | None = None
        self.generate_dialog: GenerateDialog | None = None
        self.hard_samples_dialog: HardSamplesDialog | None = None
        self._last_error = ("", 0.0)
        self._skipped_annotations: set = set()  # damaged annotations the user chose to skip this session
        self.setWindowTitle("DatasetNeRF Studio")
        self.resize(1280, 820)
        self._build_workspaces()
        self._build_menus()
        self._build_status_bar()

    # ================================================================== public actions
    def start(self) -> None:
        """First thing after show(): the last project at its last identity and view, or else the
        embedded backbone for the Orbit view (a moved or deleted project: a status message)."""
        last = self.last_session()
        if last and Project.exists(last["folder"]):
            self.open_project(last["folder"], restore=last)
            return
        if last:
            self.statusBar().showMessage(f"The last project, {last['folder']}, is not there any more "
                                         "(moved or deleted): open it from File ▸ Open Project.", 15000)
        self._start_screen()

    def open_project(self, folder, read_only: bool = False, restore: dict | None = None) -> None:
        """Open a project (for writing unless `read_only`) and load its backbone in the background.
        Held by another studio: offer to open it read-only. A damaged project.json: say what is
        wrong and offer another folder. `restore`: the identity, view and tab to show (last_session)."""
        try:
            project = Project.open(folder, writable=not read_only)
        except ProjectLockedError as error:
            if self._ask("Project in use", str(error), "Open Read-Only"):
                self.open_project(folder, read_only=True, restore=restore)
            elif restore:
                self._start_screen()
            return
        except ProjectFormatError as error:
            if self._ask("Cannot open project", f"{error}\n\nThe folder's project.json is damaged or is not a "
                         "studio project file; nothing was changed.", "Open Another Folder…"):
                self._choose_project()
            if restore and self.backbone is None:
                self._start_screen()
            return
        except Exception as error:
            show_error(self, "Cannot open project", error)
            if restore:
                self._start_screen()
            return
        self._run_task("Loading backbone", lambda: project.load_backbone(self.device),
                       lambda backbone: self._opened(backbone, project, restore),
                       lambda error: self._project_failed(project, error, restore))

    def _start_screen(self) -> None:
        self.tabs.setCurrentWidget(self.orbit)
        self.open_backbone("default")

    def _opened(self, backbone, project: Project, restore: dict | None) -> None:
        if restore:  # before the session reaches Annotate, which opens this identity and view
            self.annotate.seed = int(restore.get("seed", self.annotate.seed))
            self.annotate.yaw = float(restore.get("yaw", self.annotate.yaw))
            self.annotate.pitch = float(restore.get("pitch", self.annotate.pitch))
        self.use_session(backbone, project)
        tab = (restore or {}).get("tab")
        if tab in self.workspaces and (tab != "annotate" or project.writable):
            self.tabs.setCurrentWidget(self.workspaces[tab])
        if not project.writable:
            self.statusBar().showMessage(f"{project.folder} is open read-only: browse, orbit and export; "
                                         "nothing is written to it.", 10000)

    def create_project(self, choice: NewProjectChoice) -> None:
        def build():
            backbone = load_backbone(choice.backbone, device=self.device)  # before anything is written
            return backbone

        def made(backbone):
            try:
                reference = BackboneRef.for_backbone(backbone, choice.backbone, choice.folder)
                project = Project.create(choice.folder, reference, choice.label_set, choice.settings)
            except Exception as error:
                show_error(self, "Cannot create project", error)
                return
            self.use_session(backbone, project)

        self._run_task("Loading backbone", build, made,
                       lambda error: show_error(self, "Cannot create project", error))

    def open_backbone(self, spec) -> None:
        """Look at a backbone without a project (Orbit only); closes the open project."""
        def failed(error):
            self._offer_backbone_file(f"Could not load the backbone: {error}") if str(spec) == "default" \
                else show_error(self, "Cannot open backbone", error)

        self._run_task("Loading backbone", lambda: load_backbone(spec, device=self.device),
                       lambda backbone: self.use_session(backbone, None), failed)

    def close_project(self) -> None:
        self.settings.remove(LAST_SESSION_KEY)  # closed on purpose: the next launch starts afresh
        self._end_project_jobs()
        self.annotate.clear_session()
        if self.project is not None:
            self.project.close()
            self.project = None
        self._use_session_everywhere()
        self._update_status()

    def save(self) -> None:
        if self.annotate.flush():
            self.statusBar().showMessage("All annotations saved", 3000)
        else:
            show_error(self, "Save", "Saving is taking unusually long; the masks are still being written.")

    def edit_labels(self) -> None:
        if self.project is None:
            return
        if not self.project.writable:
            show_error(self, "Edit Labels", self._read_only_note("the label set is stored in its project.json"))
            return
        dialog = LabelSetDialog(self.project.label_set, self)
        dialog.deleteLater()  # after this handler returns
        if dialog.exec() != LabelSetDialog.Accepted:
            return
        try:
            self.project.set_label_set(dialog.result_set)
        except Exception as error:
            show_error(self, "Labels not changed", error)
            return
        self.annotate.refresh_label_set()
        self.orbit.set_label_palette(self.project.label_set.palette())

    def train_semantic_branch(self) -> None:
        """Open (or bring back) the Train dialog for the open project."""
        if self.project is None or self.backbone is None:
            show_error(self, "Train Semantic Branch", "Open or create a project first, and paint a few views in "
                                                      "the Annotate workspace: the branch learns from them.")
            return
        if not self.project.writable:
            show_error(self, "Train Semantic Branch", self._read_only_note("training writes its checkpoints there"))
            return
        if self.train_dialog is None:
            self.train_dialog = TrainDialog(self.project, self.backbone, self)
            self.train_dialog.trained.connect(self.reload_semantic_branch)
            self.train_dialog.checkpoint_written.connect(self.reload_semantic_branch)  # labels improve live
            self.train_dialog.busy_changed.connect(lambda busy: self._set_busy("Training", busy))
        self.train_dialog.show()
        self.train_dialog.raise_()

    def generate_dataset(self) -> None:
        """Open (or bring back) the Generate dialog for the open project."""
        if self.project is None:
            show_error(self, "Generate Dataset", "Open or create a project first: the factory uses its backbone "
                                                 "and its trained semantic branch.")
            return
        if not self.project.writable:
            show_error(self, "Generate Dataset", self._read_only_note("the factory writes datasets/ there"))
            return
        if self.generate_dialog is None:
            self.generate_dialog = GenerateDialog(self.project, self.device.type, self)
            self.generate_dialog.busy_changed.connect(lambda busy: self._set_busy("Generating", busy))
        self.generate_dialog.show()
        self.generate_dialog.raise_()

    def hard_samples(self) -> None:
        """Open (or bring back) the Hard samples dialog: steered generation against a frozen model."""
        if self.project is None:
            show_error(self, "Hard Samples", "Open or create a project first: steering renders with its backbone "
                                             "(and, for segmentation, its trained semantic branch).")
            return
        if not self.project.writable:
            show_error(self, "Hard Samples", self._read_only_note("steering writes its rounds there"))
            return
        if self.hard_samples_dialog is None:
            self.hard_samples_dialog = HardSamplesDialog(self.project, self.device.type, self)
            self.hard_samples_dialog.busy_changed.connect(lambda busy: self._set_busy("Steering", busy))
        self.hard_samples_dialog.show()
        self.hard_samples_dialog.raise_()

    def _end_project_jobs(self) -> None:
        """Before the project closes: training and generation stop (keeping what they wrote), dialogs go."""
        for name in ("train_dialog", "generate_dialog", "hard_samples_dialog"):
            dialog = getattr(self, name)
            if dialog is not None:
                dialog.stop_and_wait()
                dialog.hide()
                dialog.deleteLater()
                setattr(self, name, None)

    def show_error(self, message: str) -> None:
        """Workspace errors; the same message repeating within a few seconds is shown once."""
        now = time.monotonic()
        if message == self._last_error[0] and now - self._last_error[1] < REPEATED_ERROR_QUIET_S:
            return
        self._last_error = (message, now)
        show_error(self, "DatasetNeRF Studio", message)

    def _read_only_note(self, why: str) -> str:
        return (f"{self.project.folder} is open read-only (another studio holds it), and {why}. Close that "
                "studio, then open the project again to change it.")

    def last_session(self) -> dict | None:
        """{'folder', 'seed', 'yaw', 'pitch', 'tab'} of the project open when the studio last closed."""
        try:
            value = json.loads(str(self.settings.value(LAST_SESSION_KEY, "") or "null"))
        except ValueError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("folder"), str) else None

    def _remember_session(self) -> None:
        if self.project is None:
            return
        tab = next((name for name, widget in self.workspaces.items() if widget is self.tabs.currentWidget()), None)
        annotate = self.annotate
        self.settings.setValue(LAST_SESSION_KEY, json.dumps({
            "folder": str(Path(self.project.folder).resolve()), "seed": int(annotate.seed),
            "yaw": float(annotate.yaw), "pitch": float(annotate.pitch), "tab": tab}))
        self.settings.sync()

    def _ask(self, title: str, text: str, action: str) -> bool:
        """A warning with one way on (`action`) beside Cancel; True when the user takes it."""
        box = QMessageBox(QMessageBox.Warning, title, text, parent=self)
        button = box.addButton(action, QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.deleteLater()
        box.exec()
        return box.clickedButton() is button

    def _annotation_problem(self, key, annotation_id, error: AnnotationError) -> None:
        """A view's stored annotation does not load: repair it (when its mask reads), set it aside
        (moved to annotations/set-aside/, nothing deleted), or skip it (the view stays unpainted
        and cannot be painted until then). The project stays open either way."""
        if self.project is None or annotation_id is None:
            return
        name = f"Annotation {int(annotation_id):04d}"
        if annotation_id in self._skipped_annotations:
            self.statusBar().showMessage(f"{name} is damaged and was skipped: {error.problem}", 8000)
            return
        box = QMessageBox(QMessageBox.Warning, "Damaged annotation", f"{name} cannot be loaded.\n\n{error}",
                          parent=self)
        box.setInformativeText("Repair keeps the mask (unknown labels become background, a wrong size is "
                               "resized); Set Aside moves its files to annotations/set-aside/ and lets you paint "
                               "the view again; Skip leaves it as it is (the view cannot be painted).")
        repair = box.addButton("Repair", QMessageBox.AcceptRole)
        repair.setEnabled(isinstance(error, (MaskSizeError, UnknownLabelError)))
        set_aside = box.addButton("Set Aside", QMessageBox.DestructiveRole)
        box.addButton("Skip", QMessageBox.RejectRole)
        box.deleteLater()
        box.exec()
        try:
            if box.clickedButton() is repair:
                done = self.project.repair_annotation(annotation_id)
                self.annotate.reload_view()
                self.statusBar().showMessage(f"{name} repaired: {done}", 8000)
            elif box.clickedButton() is set_aside:
                folder = self.project.set_aside_annotation(annotation_id)
                self.annotate.reload_view(forget=True)
                self.statusBar().showMessage(f"{name} moved to {folder}; the view is unpainted", 8000)
            else:
                self._skipped_annotations.add(annotation_id)
                self.statusBar().showMessage(f"{name} skipped: it stays on disk as it is", 8000)
        except Exception as error:
            show_error(self, "Damaged annotation", error)

    def recent_projects(self) -> list[str]:
        value = self.settings.value(RECENT_KEY, [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in value or []]

    # ================================================================== session
    def use_session(self, backbone, project: Project | None) -> None:
        """Show `backbone` (and `project`, if any) in every workspace; closes the previous project."""
        if self.project is not project:
            self._end_project_jobs()
        if self.project is not None and self.project is not project:
            self._remember_session()
            self.annotate.clear_session()
            self.project.close()
        self.backbone, self.project = backbone, project
        self._skipped_annotations = set()
        self._use_session_everywhere()
        if project is not None:
            self._remember(project.folder)
            self._remember_session()
            self.tabs.setCurrentWidget(self.annotate if project.writable else self.orbit)
        elif self.tabs.currentWidget() is self.annotate:
            self.tabs.setCurrentWidget(self.orbit)  # nothing to annotate without a project
        self._update_status()

    def _use_session_everywhere(self) -> None:
        for workspace in self.workspaces.values():
            workspace.set_session(self.backbone, self.project)
        self.reload_semantic_branch()

    def reload_semantic_branch(self) -> None:
        """Hand the project's newest semantic branch (or why there is none) to the workspaces that use it."""
        self.branch_state = load_project_branch(self.project, self.backbone)
        for workspace in self.workspaces.values():
            if hasattr(workspace, "set_semantic_branch"):
                workspace.set_semantic_branch(self.branch_state)

    def _project_failed(self, project: Project, error: BaseException, restore: dict | None = None) -> None:
        project.close()
        show_error(self, "Cannot open project", f"{project.folder}: could not load its backbone.\n\n{error}")
        if restore:
            self._start_screen()

    def _offer_backbone_file(self, message: str) -> None:
        box = QMessageBox(QMessageBox.Warning, "No backbone", message, parent=self)
        box.setInformativeText("You can open an EG3D network pickle or a studio .safetensors backbone instead.")
        open_button = box.addButton("Open Backbone…", QMessageBox.AcceptRole)
        box.addButton("Not now", QMessageBox.RejectRole)
        box.deleteLater()
        box.exec()
        if box.clickedButton() is open_button:
            self._choose_backbone()

    def _run_task(self, description: str, function, on_success, on_failure) -> None:
        self._set_busy(description, True)

        def succeeded(result):
            self._set_busy(description, False)
            on_success(result)

        def failed(error):
            self._set_busy(description, False)
            on_failure(error)

        thread = run_in_background(function, succeeded, failed, self)
        self._tasks.add(thread)
        thread.finished.connect(lambda: self._forget_task(thread))

    def _forget_task(self, thread) -> None:
        # Deleted only once it has left the set, so closeEvent never waits on a deleted thread.
        self._tasks.discard(thread)
        thread.deleteLater()

    def _remember(self, folder: Path) -> None:
        folder = str(Path(folder).resolve())
        recent = [folder] + [f for f in self.recent_projects() if f != folder]
        self.settings.setValue(RECENT_KEY, recent[:MAX_RECENT])

    # ================================================================== menu handlers
    def _new_project(self) -> None:
        dialog = NewProjectDialog(self)
        dialog.deleteLater()  # after this handler returns
        if dialog.exec() == NewProjectDialog.Accepted:
            self.create_project(dialog.choice)

    def _choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open project")
        if folder:
            self.open_project(folder)

    def _choose_backbone(self) -> None:
        path = choose_backbone_file(self)
        if path:
            self.open_backbone(path)

    def _fill_recent_menu(self) -> None:
        self._recent_menu.clear()
        recent = self.recent_projects()
        for folder in recent:
            self._recent_menu.addAction(folder, lambda f=folder: self.open_project(f))
        if not recent:
            self._recent_menu.addAction("(none yet)").setEnabled(False)

    # ================================================================== layout
    def _build_workspaces(self) -> None:
        self.annotate = AnnotateWorkspace()
        self.orbit = OrbitWorkspace()
        self.edit = EditWorkspace()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.annotate, "Annotate")
        self.tabs.addTab(self.orbit, "Orbit")
        self.tabs.addTab(self.edit, "Edit")
        self.setCentralWidget(self.tabs)
        # Every workspace speaks the same small protocol: set_session(backbone, project),
        # shutdown(), and the signals error / status_message / busy_changed. The Edit workspace,
        # training and the factory join this dict when they land.
        self.workspaces = {"annotate": self.annotate, "orbit": self.orbit, "edit": self.edit}
        for name, workspace in self.workspaces.items():
            workspace.error.connect(self.show_error)
            workspace.status_message.connect(lambda text: self.statusBar().showMessage(text, 2000))
            workspace.busy_changed.connect(lambda busy, n=name: self._set_busy(f"Rendering ({n})", busy))
        # Queued: the question comes after the session is fully shown, not inside set_session.
        self.annotate.annotation_problem.connect(self._annotation_problem, Qt.QueuedConnection)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._add_action(file_menu, "&New Project…", self._new_project, QKeySequence.New)
        self._add_action(file_menu, "&Open Project…", self._choose_project, QKeySequence.Open)
        self._recent_menu = QMenu("Open &Recent", self)
        self._recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu(self._recent_menu)
        self._add_action(file_menu, "Open &Backbone…", self._choose_backbone)
        file_menu.addSeparator()
        self._add_action(file_menu, "&Save", self.save, QKeySequence.Save)
        self._add_action(file_menu, "&Close Project", self.close_project)
        file_menu.addSeparator()
        self._add_action(file_menu, "&Quit", self.close, QKeySequence.Quit)
        project_menu = self.menuBar().addMenu("&Project")
        self._add_action(project_menu, "Edit &Labels…", self.edit_labels)
        self._add_action(project_menu, "&Train Semantic Branch…", self.train_semantic_branch, QKeySequence("Ctrl+T"))
        self._add_action(project_menu, "&Generate Dataset…", self.generate_dataset, QKeySequence("Ctrl+G"))
        self._add_action(project_menu, "&Hard Samples…", self.hard_samples, QKeySequence("Ctrl+Shift+G"))
        help_menu = self.menuBar().addMenu("&Help")
        self._add_action(help_menu, "Keyboard &Shortcuts", self.show_shortcuts, QKeySequence("F1"))

    def show_shortcuts(self) -> None:
        box = QMessageBox(QMessageBox.Information, "Keyboard shortcuts", f"{SHORTCUTS_HELP}\n\n{EDIT_SHORTCUTS_HELP}",
                          parent=self)
        box.setStyleSheet("QLabel { font-family: monospace; }")
        box.deleteLater()
        box.exec()

    def _add_action(self, menu: QMenu, text: str, handler, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(handler)
        menu.addAction(action)
        return action

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self._device_label = QLabel()
        self._backbone_label = QLabel()
        self._project_label = QLabel()
        self._busy_label = QLabel()
        for label in (self._project_label, self._backbone_label, self._device_label, self._busy_label):
            label.setContentsMargins(8, 0, 8, 0)
            bar.addPermanentWidget(label)
        self._update_status()

    def _set_busy(self, source: str, busy: bool) -> None:
        self._busy[source] = busy
        self._update_status()

    def _update_status(self) -> None:
        if self.device.type == "cuda":
            import torch

            self._device_label.setText(f"CUDA · {torch.cuda.get_device_name(self.device)}")
        else:
            self._device_label.setText("CPU")
        self._backbone_label.setText(f"Backbone: {self.backbone.name}" if self.backbone else "No backbone")
        read_only = self.project is not None and not self.project.writable
        self._project_label.setText((f"Project: {self.project.folder.name}" + (" (read-only)" if read_only else ""))
                                    if self.project else "No project")
        busy = [source for source, on in self._busy.items() if on]
        self._busy_label.setText(f"● {busy[0]}…" if busy else "Ready")
        self._busy_label.setStyleSheet("color: #e8a33d;" if busy else "color: #5a5;")
        title = "DatasetNeRF Studio" + (f" — {self.project.folder}" if self.project else "") + \
            (" [read-only]" if read_only else "")
        self.setWindowTitle(title)

    def closeEvent(self, event) -> None:
        try:
            self._shut_down()
        except Exception:  # an exception escaping a Qt override can take PySide down with it
            traceback.print_exc()
        super().closeEvent(event)

    def _shut_down(self) -> None:
        self._remember_session()
        self._end_project_jobs()
        for workspace in self.workspaces.values():
            workspace.shutdown()  # Annotate writes its pending masks first
        if self.project is not None:
            self.project.close()
            self.project = None
        for thread in list(self._tasks):
            thread.wait()  # a backbone still loading must finish before its QThread is destroyed
