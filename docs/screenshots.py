"""A walkthrough of the studio in a live X window, grabbed from the X server into docs/*.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py --branch SEMANTIC_CHECKPOINT
        [--backbone default|PATH] [--out docs] [--only annotate,orbit,depth,pointcloud,edit,train,generate,hard_samples]
        [--edit-steps N] [--train-steps 20] [--frozen-model POSE.pt]

The window runs on Qt's xcb platform (set here unless QT_QPA_PLATFORM says otherwise; Qt's
offscreen platform is refused: it has no OpenGL and hides what users see), and every picture is
what the X server shows in the window's rectangle (QScreen.grabWindow), GL canvas included.

A throwaway project is made in a temporary folder; its annotations are written by the simulated
annotator (core.project.simulate), and a stroke is painted on top through the Annotate
workspace's own API. With --branch (a semantic branch trained on the backbone, e.g. by
`main.py train-semantic`) Orbit shows the Blend mode, the point cloud is fused and drawn, an
identity is painted (edit.png: a wider nose), edited and compared from yaw +30
(editing_workspace.png), the Train dialog continues the branch
for --train-steps steps and the Generate dialog makes a small dataset. With --frozen-model (a
TorchScript pose model, e.g. from `main.py train-frozen`) the Hard Samples dialog runs two small
steering rounds against it.

Besides the pictures, `walkthrough.json` in --out lists each picture's parts (name -> [x, y, w, h]
in the picture's pixels, e.g. the point-cloud canvas) and the Orbit frame times: the window tests
(tests/test_window.py) run this script with --only and check those parts' pixels.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PICTURES = ("annotate", "orbit", "depth", "pointcloud", "edit", "train", "generate", "hard_samples")
README_PICTURES = ("annotate", "orbit", "pointcloud", "edit", "train", "generate", "hard_samples")


class Walkthrough:
    """The window, the project and what was grabbed so far."""

    def __init__(self, app, window, args):
        self.app, self.window, self.args, self.out = app, window, args, args.out
        self.parts: dict[str, dict] = {}
        self.facts: dict[str, object] = {}

    def wait(self, condition, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"walkthrough: gave up waiting for {what} after {seconds:.0f} s")
            self.app.processEvents()
            time.sleep(0.01)

    def settle(self, seconds: float = 0.3) -> None:
        """Let queued paints (and the X server) catch up before a grab."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.01)

    def grab(self, name: str, widget=None, **parts) -> None:
        """Save what the X server shows of `widget` (default: the window) as NAME.png, with the
        rectangles of `parts` (widgets inside it) recorded for the tests."""
        from PySide6.QtCore import QPoint

        widget = widget or self.window
        self.settle()
        origin = widget.mapToGlobal(QPoint(0, 0))
        screen = widget.screen()
        picture = screen.grabWindow(0, origin.x(), origin.y(), widget.width(), widget.height())
        picture.save(str(self.out / f"{name}.png"))
        self.parts[name] = {}
        for part, child in parts.items():  # a widget, or (widget, QRect inside it)
            child, inner = child if isinstance(child, tuple) else (child, child.rect())
            corner = child.mapTo(widget, inner.topLeft())
            self.parts[name][part] = [corner.x(), corner.y(), inner.width(), inner.height()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="default", help="'default' or a backbone file")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--branch", type=Path, help="a semantic-branch checkpoint trained on this backbone")
    parser.add_argument("--only", default=",".join(README_PICTURES),
                        help=f"comma-separated pictures to take, of {','.join(PICTURES)}")
    parser.add_argument("--edit-steps", type=int, help="optimisation steps of the edit (default: the studio's)")
    parser.add_argument("--train-steps", type=int, default=20, help="steps the Train dialog runs for its picture")
    parser.add_argument("--frozen-model", type=Path, help="a TorchScript pose model for the Hard Samples picture")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(PICTURES))
    if unknown:
        parser.error(f"--only: unknown picture(s) {', '.join(unknown)}; pictures are {', '.join(PICTURES)}")
    needs_branch = {"pointcloud", "edit", "train"} & set(wanted)
    if needs_branch and args.branch is None:
        parser.error(f"--branch is needed for {', '.join(sorted(needs_branch))}")
    if "hard_samples" in wanted and args.frozen_model is None:
        parser.error("--frozen-model is needed for hard_samples")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication(["DatasetNeRF Studio"])
    if app.platformName() in ("offscreen", "minimal"):
        raise SystemExit(f"walkthrough: Qt's '{app.platformName()}' platform shows no real window; "
                         "run under an X display (xvfb-run -a ...) with QT_QPA_PLATFORM=xcb")
    # A message box would wait for a click that never comes: print it and carry on.
    QMessageBox.critical = lambda parent, title, text, *rest, **options: print(f"{title}: {text}")
    from app.main_window import MainWindow
    from core.backbone import load_backbone
    from core.procedural import seeds_for
    from core.project import BackboneRef, Project, default_label_set
    from core.project.simulate import simulate_annotations

    backbone = load_backbone(args.backbone)
    folder = Path(tempfile.mkdtemp()) / "cat-heads"
    reference = BackboneRef.for_backbone(backbone, args.backbone, folder)
    project = Project.create(folder, reference, default_label_set(), {"annotation_resolution": 128})
    seed = seeds_for("annotate", 1)[0]
    if "annotate" in wanted:
        simulate_annotations(project, backbone, [seed], [(0.0, 0.0), (30.0, 0.0)], resolution=128)
    if args.branch:
        from app.semantic import semantic_folder
        from core.semantic.checkpoint import checkpoint_name, read_branch_metadata

        semantic_folder(project).mkdir(exist_ok=True)
        step = read_branch_metadata(args.branch)["step"]  # named as training names it, so it is found
        shutil.copy(args.branch, semantic_folder(project) / checkpoint_name(step))

    args.out.mkdir(parents=True, exist_ok=True)
    window = MainWindow(settings=QSettings(str(folder / "studio.ini"), QSettings.IniFormat))
    window.resize(1400, 860)
    window.move(0, 0)
    window.show()
    window.use_session(backbone, project)
    walk = Walkthrough(app, window, args)
    walk.wait(lambda: window.windowHandle() is not None and window.windowHandle().isExposed(), 30, "the window")
    steps = {"annotate": _annotate, "orbit": _orbit, "depth": _depth, "pointcloud": _pointcloud, "edit": _edit,
             "train": _train, "generate": _generate, "hard_samples": _hard_samples}
    for name in PICTURES:  # in the walkthrough's order, whatever the order of --only
        if name in wanted:
            steps[name](walk, seed)
    (args.out / "walkthrough.json").write_text(json.dumps({"parts": walk.parts, "facts": walk.facts}, indent=1))
    window.close()
    print("wrote", *(str(args.out / f"{name}.png") for name in walk.parts))


def _annotate(walk: Walkthrough, seed: int) -> None:
    annotate = walk.window.annotate
    walk.window.tabs.setCurrentWidget(annotate)
    annotate.set_brush_size(7)
    annotate.apply_stroke([(20.5, 100.5), (40.5, 112.5), (60.5, 116.5)], label=9)
    annotate.set_label(2)
    walk.wait(lambda: annotate.last_frame is not None and not annotate.last_frame.coarse, 120, "Annotate's frame")
    walk.grab("annotate")


def _orbit_frame(walk: Walkthrough, seed: int, mode: str) -> None:
    """Orbit at seed, yaw +24, pitch +8 in `mode`, waiting for the refined frame (timed)."""
    orbit = walk.window.orbit
    walk.window.tabs.setCurrentWidget(orbit)
    orbit.views.setCurrentWidget(orbit.canvas)
    labelled = mode in ("Labels", "Blend")
    orbit.set_mode(mode)
    orbit.set_seed(seed)
    orbit.reset_view()
    asked = time.perf_counter()
    orbit.orbit_by(60, -20, interactive=False)

    def arrived():
        frame = orbit.last_frame
        return (frame is not None and not frame.coarse and frame.request.seed == seed and frame.request.yaw == 24.0
                and (frame.labels is not None or not labelled))

    walk.wait(arrived, 300, f"Orbit's refined {mode} frame")
    walk.facts[f"orbit_{mode.lower()}_frame"] = {"on_screen_s": time.perf_counter() - asked,
                                                 "render_s": orbit.last_frame.seconds}


def _orbit_parts(orbit) -> dict:
    """Orbit's canvas and, inside it, the frame's own square (the image item, in widget pixels)."""
    from PySide6.QtCore import QRectF

    square = orbit.view_box.mapViewToDevice(QRectF(0, 0, 1, 1)).boundingRect().toRect()
    return {"canvas": orbit.canvas, "frame": (orbit.canvas, square)}


def _orbit(walk: Walkthrough, seed: int) -> None:
    has_branch = walk.window.branch_state.branch is not None
    _orbit_frame(walk, seed, "Blend" if has_branch else "RGB")
    walk.grab("orbit", **_orbit_parts(walk.window.orbit))


def _depth(walk: Walkthrough, seed: int) -> None:
    _orbit_frame(walk, seed, "Depth")
    walk.grab("depth", **_orbit_parts(walk.window.orbit))


def _pointcloud(walk: Walkthrough, seed: int) -> None:
    orbit = walk.window.orbit
    walk.window.tabs.setCurrentWidget(orbit)
    orbit.set_seed(seed)
    panel = orbit.cloud_panel
    orbit.views.setCurrentWidget(panel)
    walk.wait(lambda: panel.scene is not None, 30, "the point-cloud canvas")
    panel._fuse_button.click()  # as the user does
    walk.wait(lambda: panel.cloud is not None and panel._fuse_button.isEnabled(), 300, "the fused cloud")
    camera = panel.scene.view.camera
    camera.azimuth, camera.elevation = 60, 15  # a three-quarter view shows the cloud is 3D
    panel.scene.canvas.update()
    walk.facts["pointcloud"] = {"points": len(panel.cloud), "shown": panel.visible_points()}
    # The part is the widget laid out where the canvas goes: what the user sees there.
    walk.grab("pointcloud", canvas=panel._canvas_slot.itemAt(0).widget())


def _edit(walk: Walkthrough, seed: int) -> None:
    window = walk.window
    edit = window.edit
    window.tabs.setCurrentWidget(edit)
    if walk.args.edit_steps:
        edit.edit_settings = replace(edit.edit_settings, steps=walk.args.edit_steps)
    edit.start_from_seed(seed)
    walk.wait(lambda: edit.before is not None and not edit.is_busy(), 300, "Edit's starting identity")
    edit.set_brush_size(9)
    edit.apply_stroke([(56.5, 78.5), (64.5, 80.5), (72.5, 78.5)], label=9)  # a wider nose
    walk.grab("edit", canvas=edit._image_item.getViewWidget())
    edit.run_edit()
    walk.wait(lambda: edit.last_result is not None and not edit.is_busy(), 900, "the edit")
    edit.compare_at(30.0)
    walk.wait(lambda: not edit.is_busy(), 300, "the comparison renders")
    walk.grab("editing_workspace", before=edit._before_item.getViewWidget(), after=edit._after_item.getViewWidget())


def _train(walk: Walkthrough, seed: int) -> None:
    window = walk.window
    window.train_semantic_branch()
    train = window.train_dialog
    train._steps.setValue((window.branch_state.step or 0) + walk.args.train_steps)
    train._checkpoint_every.setValue(max(1, walk.args.train_steps // 4))
    train.start()
    walk.wait(lambda: not train.is_running(), 900, "training")
    walk.grab("train", train)
    train.close()


def _generate(walk: Walkthrough, seed: int) -> None:
    window = walk.window
    window.generate_dataset()
    generate = window.generate_dialog
    generate._identities.setValue(2)
    generate._views.setValue(2)
    generate._size.setValue(64)
    generate._name.setText("demo")
    generate.start()
    walk.wait(lambda: not generate.is_running(), 600, "the dataset")
    walk.grab("generate", generate)
    generate.close()


def _hard_samples(walk: Walkthrough, seed: int) -> None:
    window = walk.window
    window.hard_samples()
    dialog = window.hard_samples_dialog
    dialog.set_model(str(walk.args.frozen_model))
    dialog._out.setText("demo")
    for spin, value in ((dialog._rounds, 2), (dialog._samples, 24), (dialog._views, 4), (dialog._size, 32),
                        (dialog._steer_steps, 6), (dialog._finetune_steps, 40)):
        spin.setValue(value)
    dialog.start()
    walk.wait(lambda: dialog.result is not None and not dialog.is_running(), 900, "the steering rounds")
    walk.grab("hard_samples", dialog)
    dialog.close()


if __name__ == "__main__":
    main()
