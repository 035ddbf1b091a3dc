"""The Qt-free mask editor and autosaver behind the Annotate workspace."""
import numpy as np
import pytest

from core.annotation import AnnotationAutosaver, MaskEditor, ViewKey
from core.camera import Camera
from core.project import BackboneRef, IdentityRef, Project, default_label_set


def blank(size=(32, 40)) -> np.ndarray:
    return np.zeros(size, np.uint8)


def test_stroke_paints_a_capsule_and_undo_restores_bytes():
    editor = MaskEditor(blank())
    original = editor.mask.tobytes()
    change = editor.stroke([(5.5, 10.5), (20.5, 10.5)], label=3, radius=2)
    assert change is not None and change.kind == "stroke"
    assert editor.mask[10, 5:21].tolist() == [3] * 16  # the line between the points
    assert editor.mask[10 + 3, 12] == 0  # outside the radius
    assert editor.undo() is change
    assert editor.mask.tobytes() == original
    assert editor.redo() is change
    assert editor.mask[10, 12] == 3


def test_one_pixel_brush_never_misses_the_pixel_under_the_cursor():
    editor = MaskEditor(blank())
    editor.stroke([(3.0, 4.0)], label=2, radius=0.5)  # a pixel corner: no centre within 0.5
    assert editor.mask[4, 3] == 2


def test_erase_is_painting_background():
    editor = MaskEditor(np.full((8, 8), 4, np.uint8))
    editor.stroke([(4.5, 4.5)], label=0, radius=1)
    assert editor.mask[4, 4] == 0 and editor.mask[0, 0] == 4


def test_fill_is_contiguous_and_one_step():
    mask = blank((10, 10))
    mask[:, 5] = 1  # a wall splits the mask in two
    editor = MaskEditor(mask)
    editor.fill(1.5, 1.5, label=2)
    assert (editor.mask[:, :5] == 2).all() and (editor.mask[:, 6:] == 0).all()
    assert editor.undo_depth == 1
    editor.undo()
    assert editor.mask.tobytes() == mask.tobytes()


def test_fill_outside_or_same_label_changes_nothing():
    editor = MaskEditor(blank((4, 4)))
    assert editor.fill(-1, 2, label=1) is None
    assert editor.fill(1, 1, label=0) is None
    assert editor.undo_depth == 0


def test_pick_and_bounds():
    editor = MaskEditor(blank((4, 4)))
    editor.stroke([(2.5, 1.5)], label=7, radius=0.5)
    assert editor.pick(2.7, 1.2) == 7
    assert editor.pick(10, 10) is None


def test_history_holds_at_least_one_hundred_strokes_as_diffs():
    editor = MaskEditor(blank((64, 64)))
    states = [editor.mask.tobytes()]
    for step in range(120):
        editor.stroke([(step % 64 + 0.5, step // 2 % 64 + 0.5)], label=1 + step % 5, radius=1.5)
        states.append(editor.mask.tobytes())
    for expected in reversed(states[-101:-1]):
        editor.undo()
        assert editor.mask.tobytes() == expected
    assert max(change.nbytes for change in editor._undo) < 64 * 64  # diffs, not copies


def test_a_new_stroke_after_undo_drops_the_redo_branch():
    editor = MaskEditor(blank())
    editor.stroke([(1.5, 1.5)], label=1, radius=1)
    editor.undo()
    editor.stroke([(9.5, 9.5)], label=2, radius=1)
    assert not editor.can_redo and editor.redo() is None


def test_cancel_and_undo_during_a_stroke_restore_the_mask():
    editor = MaskEditor(blank())
    editor.begin_stroke(label=5, radius=3)
    editor.stroke_to(10, 10)
    editor.undo()  # Ctrl+Z mid-stroke drops the stroke instead of undoing an older one
    assert not editor.mask.any() and not editor.stroke_active


def test_replace_is_one_step():
    editor = MaskEditor(blank((4, 4)))
    editor.replace(np.full((4, 4), 3, np.uint8))
    assert (editor.mask == 3).all()
    editor.undo()
    assert not editor.mask.any()
    with pytest.raises(ValueError, match="new mask"):
        editor.replace(np.zeros((2, 2), np.uint8))


def test_autosaver_adds_then_updates_and_reopens(tmp_path):
    folder = tmp_path / "proj"
    key = ViewKey(IdentityRef(seed=1_000_000), Camera(yaw=10.0), (16, 16))
    with Project.create(folder, BackboneRef("default", "ab" * 32), default_label_set()) as project:
        saved = []
        saver = AnnotationAutosaver(project, on_saved=lambda k, i, counts: saved.append((i, counts)))
        editor = MaskEditor(np.zeros(key.resolution, np.uint8))
        for x in (2.5, 8.5):
            editor.stroke([(x, 4.5)], label=2, radius=1)
            saver.submit(key, editor.mask)
            assert saver.flush(10)
        assert saver.close()
        assert [annotation_id for annotation_id, _ in saved] == [0, 0]  # add once, then update
        assert saved[-1][1][2] == int((editor.mask == 2).sum())
    reopened = AnnotationAutosaver(Project.open(folder))
    assert reopened.annotation_id(key) == 0
    assert reopened.load_mask(key).tobytes() == editor.mask.tobytes()
    reopened.close()


def test_autosaver_reports_write_errors(tmp_path):
    key = ViewKey(IdentityRef(seed=1), Camera(), (8, 8))
    with Project.create(tmp_path / "p", BackboneRef("default", "ab" * 32)) as project:
        pass  # closed: read-only, every write fails
    errors = []
    saver = AnnotationAutosaver(Project.open(tmp_path / "p"), on_error=lambda k, e: errors.append(e))
    saver.submit(key, np.zeros((8, 8), np.uint8))
    saver.close()
    assert errors and "read-only" in str(errors[0])


def test_history_bytes_limit_drops_the_oldest_steps_and_counts_what_it_keeps():
    editor = MaskEditor(np.zeros((64, 64), np.uint8), history_bytes_limit=3_000)
    for row in range(10):
        editor.stroke([(0.5, row * 6 + 3.5), (63.5, row * 6 + 3.5)], label=1, radius=2)  # ~256 px, ~1.5 kB
    kept = editor.undo_depth
    assert 1 <= kept < 10
    assert editor.nbytes - editor.mask.nbytes <= 3_000
    editor.undo()
    assert editor.nbytes == editor.mask.nbytes + sum(step.nbytes for step in editor._undo + editor._redo)
    editor.stroke([(1.5, 1.5)], label=2, radius=1)  # forks history: the redo step is freed
    assert editor.nbytes == editor.mask.nbytes + sum(step.nbytes for step in editor._undo)
    while editor.undo():
        pass
    assert (editor.mask[(kept - 1) * 6:] == 0).all() or editor.undo_depth == 0


def test_a_view_revisited_while_its_first_write_runs_gets_its_mask_back(tmp_path, monkeypatch):
    import threading

    key = ViewKey(IdentityRef(seed=1), Camera(), (8, 8))
    with Project.create(tmp_path / "p", BackboneRef("default", "ab" * 32)) as project:
        writing, release = threading.Event(), threading.Event()
        add = project.add_annotation

        def slow_add(*args):
            writing.set()
            release.wait(10)
            return add(*args)

        monkeypatch.setattr(project, "add_annotation", slow_add)
        saver = AnnotationAutosaver(project)
        mask = np.full((8, 8), 3, np.uint8)
        saver.submit(key, mask)
        assert writing.wait(10)  # popped from the queue, not yet on disk, no id yet
        assert np.array_equal(saver.load_mask(key), mask)  # not None: that would show an empty view
        release.set()
        assert saver.close()
