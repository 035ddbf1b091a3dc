"""An annotation's writes survive SIGKILL at any moment: a loop of kills at random delays."""
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from core.project import Project
from core.project.records import pixel_counts

REPO = Path(__file__).resolve().parent.parent
SIZE = 128

# The child adds one annotation, then updates it stroke after stroke (stroke k fills row k with
# label 1 + k % 3), printing each stroke's number only after its writes have returned.
CHILD = textwrap.dedent(f"""
    import os, sys
    import numpy as np
    from core.camera import Camera
    from core.project import BackboneRef, Project
    folder = sys.argv[1]
    project = (Project.open(folder, writable=True) if Project.exists(folder)
               else Project.create(folder, BackboneRef("default", "ab" * 32)))
    ids = project.annotation_ids()
    mask = project.load_annotation(ids[0]).mask.copy() if ids else np.zeros(({SIZE}, {SIZE}), np.uint8)
    stroke = int((mask.sum(axis=1) > 0).sum())
    warm = Project.create(f"{{folder}}-warm{{os.getpid()}}", BackboneRef("default", "ab" * 32))  # imports done before
    warm.add_annotation({{'seed': 1, 'truncation_psi': 1.0}}, Camera(), mask)  # the kills start
    print("ready", stroke, flush=True)
    while stroke < {SIZE}:
        mask[stroke] = 1 + stroke % 3
        if ids:
            project.update_annotation(ids[0], mask)
        else:
            ids = [project.add_annotation({{'seed': 1, 'truncation_psi': 1.0}}, Camera(), mask)]
        stroke += 1
        print("committed", stroke, flush=True)
""")


def expected_mask(strokes: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for row in range(strokes):
        mask[row] = 1 + row % 3
    return mask


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
@pytest.mark.filterwarnings("ignore::core.project.StaleLockWarning")
def test_kills_at_random_moments_never_lose_a_committed_stroke_or_leave_half_of_one(tmp_path):
    folder = tmp_path / "proj"
    rng = random.Random(23)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    committed = 0
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().split()[0] == "ready", child.stderr.read()
        try:
            time.sleep(rng.uniform(0, 0.006 if committed == 0 else 0.12))  # add, then updates
        finally:
            os.kill(child.pid, signal.SIGKILL)
            lines = child.stdout.read().split("\n")
            child.wait(30)
            child.stdout.close()
            child.stderr.close()
        done = [int(line.split()[1]) for line in lines if line.startswith("committed")]
        committed = max([committed, *done])
        with Project.open(folder, writable=True) as project:  # recovery runs here
            assert not list(folder.glob("annotations/.*.tmp"))
            assert project.check_annotations() == []
            assert project.annotation_ids() in ([], [0])
            if committed:
                annotation = project.load_annotation(0)
                strokes = int((annotation.mask.sum(axis=1) > 0).sum())
                assert strokes in (committed, committed + 1)  # the stroke in progress may land
                assert annotation.mask.tobytes() == expected_mask(strokes).tobytes()
                assert annotation.meta.pixel_counts == pixel_counts(annotation.mask)
                committed = strokes
        if committed >= SIZE:  # all strokes landed: start a new project, so every kill tests a write
            shutil.rmtree(folder)
            committed = 0
