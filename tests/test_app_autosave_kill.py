"""Autosave survives SIGKILL: a studio process paints, is killed mid-stroke, and the work is there."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.annotation import MaskEditor
from core.project import UNLABELLED_ID, Project, StaleLockWarning

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STROKES = [([(2.5, 2.5), (20.5, 6.5)], 2), ([(5.5, 25.5), (28.5, 25.5)], 5), ([(16.5, 4.5), (16.5, 30.5)], 9)]
BRUSH = 3

# The child paints through the Annotate workspace, exactly as a drag would, then starts a fourth
# stroke and leaves it unfinished; it says "committed" only after the saver reports the writes.
CHILD = textwrap.dedent(f"""
    import gc, sys, time
    gc.disable()  # no collection inside the render or autosave thread (see app_support)
    sys.path.insert(0, {str(TESTS)!r})
    from app_support import tiny_backbone, tiny_project
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from app.annotate import AnnotateWorkspace
    workspace = AnnotateWorkspace()
    workspace.set_session(tiny_backbone(), tiny_project(sys.argv[1], tiny_backbone()))
    workspace.set_brush_size({BRUSH})
    for points, label in {STROKES!r}:
        workspace.apply_stroke(points, label=label)
        workspace.flush()
    workspace.set_label(1)
    workspace.begin_stroke(0.5, 31.5)
    workspace.continue_stroke(31.5, 31.5)  # in progress: may be lost
    print("committed", flush=True)
    while True:
        app.processEvents()
        time.sleep(0.05)
""")


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_killed_studio_loses_at_most_the_stroke_in_progress(tmp_path):
    folder = tmp_path / "proj"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "committed", child.stderr.read() if child.poll() is not None else line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    expected = MaskEditor(np.full((32, 32), UNLABELLED_ID, np.uint8))  # a new view starts unlabelled
    for points, label in STROKES:
        expected.stroke(points, label, BRUSH / 2)
    project = Project.open(folder)  # the dead writer's lock does not stop a reader
    annotations = list(project.iter_training_annotations(problems := []))
    assert not problems and len(annotations) == 1
    assert annotations[0].mask.tobytes() == expected.mask.tobytes()
    assert not list(folder.glob("annotations/.*.tmp"))  # no half-written files left behind
    with pytest.warns(StaleLockWarning, match="no longer running"):
        reopened = Project.open(folder, writable=True)  # the dead studio's lock is reclaimed
    with reopened:
        assert reopened.annotation_ids() == [0]
