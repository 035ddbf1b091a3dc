"""Render the studio window offscreen into docs/annotate.png, docs/orbit.png and docs/edit.png.

    QT_QPA_PLATFORM=offscreen python docs/screenshots.py [--backbone default|PATH|tiny]

A throwaway project is made in a temporary folder; its one annotation is written by the simulated
annotator (core.project.simulate, procedural ground truth through the project store), and a few
strokes are painted on top through the Annotate workspace's own API.
"""
from __future__ import annotations

import argparse
import os
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
    args = parser.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
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

    window.tabs.setCurrentWidget(window.orbit)
    window.orbit.set_seed(seed)
    window.orbit.orbit_by(60, -20, interactive=False)
    _wait(app, lambda: window.orbit.last_frame is not None and window.orbit.last_frame.request.seed == seed
          and not window.orbit.last_frame.coarse, 120)
    _wait(app, lambda: False, 0.3)
    window.grab().save(str(args.out / "orbit.png"))

    window.tabs.setCurrentWidget(window.edit)
    window.grab().save(str(args.out / "edit.png"))
    window.close()
    print("wrote", *(str(args.out / name) for name in ("annotate.png", "orbit.png", "edit.png")))


if __name__ == "__main__":
    main()
