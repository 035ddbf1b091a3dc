"""Issue 23 item 4: the unlabelled state (mask value 255) and labels marked `ignore`."""
import json

import numpy as np
import pytest

from core.camera import Camera
from core.fileio import read_indexed_png
from core.metrics import confusion_matrix
from core.project import UNLABELLED_ID, BackboneRef, IdentityRef, LabelSet, Project, default_label_set
from core.project.labels import UNLABELLED_COLOUR
from core.semantic.annotations import (NOTHING_PAINTED, ONLY_IGNORED, annotated_views, annotation_status,
                                       trainable_reason, training_inventory)
from core.semantic.evaluation import LabelledDepth, evaluate_labels
from core.semantic.training import IGNORE_LABEL

SIZE = 16


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "p", BackboneRef("default", "hash-of-tiny")) as project:
        yield project


def unlabelled() -> np.ndarray:
    return np.full((SIZE, SIZE), UNLABELLED_ID, np.uint8)


def test_one_reserved_value_for_unlabelled():
    assert IGNORE_LABEL == UNLABELLED_ID == 255  # training's ignore_index is the store's value


def test_a_partly_painted_mask_keeps_its_unlabelled_pixels(project):
    mask = unlabelled()
    mask[2:6, 2:6] = 3
    mask[10:, :] = 0  # background, painted on purpose
    annotation_id = project.add_annotation(IdentityRef(seed=1), Camera(), mask)
    stored = project.load_annotation(annotation_id)
    assert np.array_equal(stored.mask, mask)
    assert stored.meta.pixel_counts == {0: 6 * SIZE, 3: 16, UNLABELLED_ID: SIZE * SIZE - 6 * SIZE - 16}
    indices, palette = read_indexed_png(project.annotation_paths(annotation_id)[0])
    assert tuple(palette[UNLABELLED_ID]) == UNLABELLED_COLOUR and tuple(palette[3]) == project.label_set.by_id(3).colour
    # Unlabelled pixels are no label of the set, so they never block removing a label.
    project.set_label_set(project.label_set.without(11))


def test_masks_from_before_the_unlabelled_value_read_as_painted(project):
    old = np.zeros((SIZE, SIZE), np.uint8)  # what the studio wrote before: unpainted = background
    old[4:8, 4:8] = 2
    annotation_id = project.add_annotation(IdentityRef(seed=1), Camera(), old)
    (view,) = annotated_views(project, problems := [])
    assert not problems and np.array_equal(view.mask, old)  # background still means background
    assert annotation_status(project, annotation_id) is None


def test_labels_marked_ignore_are_painted_but_not_trained_on(project):
    labels = project.label_set
    label_set = labels.with_label(11, "neck", labels.by_id(11).colour, ignore=True)
    project.set_label_set(label_set)
    assert project.label_set.ignored_ids == [11]
    data = json.loads((project.folder / "project.json").read_text())
    assert [c for c in data["labels"]["classes"] if c["id"] == 11][0]["ignore"] is True
    assert "ignore" not in [c for c in data["labels"]["classes"] if c["id"] == 1][0]  # older readers unchanged
    assert Project.open(project.folder).label_set.ignored_ids == [11]

    mask = unlabelled()
    mask[:4] = 11
    mask[4:8] = 1
    project.add_annotation(IdentityRef(seed=1), Camera(), mask)
    only_neck = unlabelled()
    only_neck[:4] = 11
    project.add_annotation(IdentityRef(seed=2), Camera(), only_neck)
    project.add_annotation(IdentityRef(seed=3), Camera(), unlabelled())
    problems = []
    (view,) = annotated_views(project, problems)
    assert (view.mask[:4] == UNLABELLED_ID).all() and (view.mask[4:8] == 1).all()
    assert len(problems) == 2 and ONLY_IGNORED in str(problems[0]) and NOTHING_PAINTED in str(problems[1])
    inventory = training_inventory(project)
    assert inventory.usable == (0,) and [s.reason for s in inventory.skipped] == [ONLY_IGNORED, NOTHING_PAINTED]
    assert inventory.describe() == (f"3 annotated view(s): 1 used for training, 2 skipped "
                                    f"(0001: {ONLY_IGNORED}; 0002: {NOTHING_PAINTED})")


def test_ignore_flags_are_checked_when_read():
    data = default_label_set().to_json()
    data["classes"][1]["ignore"] = "yes"
    with pytest.raises(ValueError, match="ignore"):
        LabelSet.from_json(data)


def test_trainable_reason_is_about_pixels_to_learn_from():
    label_set = default_label_set()
    assert trainable_reason(label_set, {UNLABELLED_ID: 10}) == NOTHING_PAINTED
    assert trainable_reason(label_set, {}) == NOTHING_PAINTED
    assert trainable_reason(label_set, {0: 1, UNLABELLED_ID: 10}) is None  # painted background teaches


def test_evaluation_skips_unlabelled_truth_pixels():
    truth = np.array([[1, 1], [UNLABELLED_ID, UNLABELLED_ID]])
    prediction = np.array([[1, 1], [0, 2]])
    assert confusion_matrix(prediction, truth, 3, ignore=UNLABELLED_ID).sum() == 2
    depth = np.ones((2, 2))
    figures = evaluate_labels(lambda seed, camera: LabelledDepth(prediction, depth),
                              lambda seed, camera: LabelledDepth(truth, depth),
                              seeds=[0], cameras=[Camera()], video_seeds=[], video_cameras=[],
                              class_names=["background", "a", "b"])
    assert figures["pixel_accuracy"] == 1.0 and figures["miou"] == 1.0
