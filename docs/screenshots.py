"""Render the studio window offscreen into docs/*.png: each workspace, the Train and Generate dialogs.

    QT_QPA_PLATFORM=offscreen python docs/screenshots.py [--backbone default|PATH|tiny]
                                                         [--branch SEMANTIC_CHECKPOINT] [--train-steps 20]

A throwaway project is made in a temporary folder; its annotations are written by the simulated
annotator (core.project.simulate, procedural ground truth through the project store), and a few
strokes are painted on top through the Annotate workspace's own API. With --branch (a semantic
branch trained on the same backbone, e.g. by `main.py train-semantic`) the Orbit view shows the
Blend mode, the point cloud is drawn (docs/pointcloud.png, vispy under EGL: Qt's offscreen
platform has no OpenGL), the Train dialog continues that branch for --train-steps steps and the
Generate dialog makes a small dataset. Without it those pictures show what the user sees before
training (the Train dialog then trains a fresh branch).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _backbone(spec: str):
    from core.backbone import Backbone, load_backbone

    if spec != "tiny":
        return load_backbone(spec), spec
    from core.generator.configs import tiny_config
    from core.generator.triplane import TriPlaneGenerator

    generator = TriPlaneGenerator.from_config(tiny_config(neural_resolution=64))
    return Backbone(generator, "tiny (random weights)", "tiny"), None


def _wait(app, condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="default", help="'default', a backbone file, or 'tiny'")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--branch", type=Path, help="a semantic-branch checkpoint trained on this backbone")
    parser.add_argument("--train-steps", type=int, default=20, help="steps the Train dialog runs for its picture")
    args = parser.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from PySide6.QtWidgets import QMessageBox

    # A message box would wait for a click that never comes offscreen: print it instead.
    QMessageBox.critical = lambda parent, title, text, *rest, **options: print(f"{title}: {text}")
    from app.main_window import MainWindow
    from core.procedural import seeds_for
    from core.project import BackboneRef, Project, default_label_set
    from core.project.simulate import simulate_annotations

    backbone, spec = _backbone(args.backbone)
    folder = Path(tempfile.mkdtemp()) / "cat-heads"
    reference = BackboneRef.for_backbone(backbone, spec, folder) if spec else BackboneRef("tiny", backbone.content_hash)
    project = Project.create(folder, reference, default_label_set(), {"annotation_resolution": 128})
    seed = seeds_for("annotate", 1)[0]
    simulate_annotations(project, backbone, [seed], [(0.0, 0.0), (30.0, 0.0)], resolution=128)
    if args.branch:
        from app.semantic import semantic_folder
        from core.semantic.checkpoint import checkpoint_name, read_branch_metadata

        semantic_folder(project).mkdir(exist_ok=True)
        step = read_branch_metadata(args.branch)["step"]  # named as training names it, so it is found
        shutil.copy(args.branch, semantic_folder(project) / checkpoint_name(step))

    window = MainWindow(settings=QSettings(str(folder / "studio.ini"), QSettings.IniFormat))
    window.resize(1400, 860)
    window.show()
    window.use_session(backbone, project)
    annotate = window.annotate
    annotate.set_brush_size(7)
    annotate.apply_stroke([(20.5, 100.5), (40.5, 112.5), (60.5, 116.5)], label=9)
    annotate.set_label(2)
    _wait(app, lambda: annotate.last_frame is not None and not annotate.last_frame.coarse, 120)
    _wait(app, lambda: False, 0.5)
    args.out.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.out / "annotate.png"))

    written = ["annotate.png", "orbit.png", "edit.png", "train.png", "generate.png"]
    orbit = window.orbit
    window.tabs.setCurrentWidget(orbit)
    has_branch = window.branch_state.branch is not None
    if has_branch:
        orbit.set_mode("Blend")
    orbit.set_seed(seed)
    orbit.orbit_by(60, -20, interactive=False)
    _wait(app, lambda: orbit.last_frame is not None and orbit.last_frame.request.seed == seed
          and not orbit.last_frame.coarse and (orbit.last_frame.labels is not None or not has_branch), 300)
    _wait(app, lambda: False, 0.3)
    window.grab().save(str(args.out / "orbit.png"))
    if has_branch:
        orbit.fuse_point_cloud()
        _wait(app, lambda: orbit.cloud_panel.cloud is not None, 300)
        if _draw_point_cloud(orbit.cloud_panel, args.out / "pointcloud.png"):
            written.append("pointcloud.png")

    window.tabs.setCurrentWidget(window.edit)
    if has_branch:  # an identity to edit, with a change painted into its label map
        window.edit.start_from_seed(seed)
        _wait(app, lambda: window.edit.before is not None and not window.edit.is_busy(), 300)
        window.edit.set_brush_size(9)
        window.edit.apply_stroke([(56.5, 78.5), (64.5, 80.5), (72.5, 78.5)], label=9)  # a wider nose
        _wait(app, lambda: False, 0.5)
    window.grab().save(str(args.out / "edit.png"))
    if has_branch:  # the same edit run, before and after compared from yaw +30
        window.edit.run_edit()
        _wait(app, lambda: window.edit.last_result is not None and not window.edit.is_busy(), 600)
        window.edit.compare_at(30.0)
        _wait(app, lambda: not window.edit.is_busy(), 300)
        _wait(app, lambda: False, 0.5)
        window.grab().save(str(args.out / "editing_workspace.png"))
        written.append("editing_workspace.png")

    window.train_semantic_branch()
    train = window.train_dialog
    train._steps.setValue((window.branch_state.step or 0) + args.train_steps)
    train._checkpoint_every.setValue(max(1, args.train_steps // 4))
    train.start()
    _wait(app, lambda: not train.is_running(), 900)
    _wait(app, lambda: False, 0.5)
    train.grab().save(str(args.out / "train.png"))
    train.close()

    if spec is None:  # the tiny backbone exists only in memory; the factory loads the project's file
        written.remove("generate.png")
        window.close()
        print("wrote", *(str(args.out / name) for name in written))
        return
    window.generate_dataset()
    generate = window.generate_dialog
    generate._identities.setValue(2)
    generate._views.setValue(2)
    generate._size.setValue(64)
    generate._name.setText("demo")
    generate.start()
    _wait(app, lambda: not generate.is_running(), 600)
    generate.grab().save(str(args.out / "generate.png"))
    generate.close()
    window.close()
    print("wrote", *(str(args.out / name) for name in written))


def _draw_point_cloud(panel, path: Path) -> bool:
    """The cloud as the Orbit tab draws it, rendered by vispy under EGL (no display needed)."""
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    try:
        from vispy import app as vispy_app, scene

        vispy_app.use_app("egl")
        canvas = scene.SceneCanvas(size=(640, 640), show=False, bgcolor="#202124", app="egl")
    except Exception as error:
        print(f"no point-cloud picture: no EGL context ({error})")
        return False
    from PIL import Image

    from app.pointcloud import CloudScene

    cloud_scene = CloudScene(canvas)
    cloud_scene.set_point_size(3)
    cloud_scene.set_cloud(panel.cloud, panel.palette)
    cloud_scene.set_hidden_labels(panel.hidden)
    cloud_scene.view.camera.azimuth, cloud_scene.view.camera.elevation = 60, 15
    Image.fromarray(canvas.render()[..., :3]).save(path)
    return True


if __name__ == "__main__":
    main()
