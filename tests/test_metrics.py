import numpy as np
import pytest

from core.metrics import confusion_matrix, label_figures, mean_iou, per_class_iou, pixel_accuracy, psnr


def test_iou_and_accuracy_of_a_known_case():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    prediction = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
    confusion = confusion_matrix(prediction, truth, 4, ignore=255)
    ious = per_class_iou(confusion)
    assert ious[0] == pytest.approx(1 / 3)     # 1 shared pixel, 3 in the union
    assert ious[1] == pytest.approx(2 / 3)
    assert ious[2] == pytest.approx(2 / 3)
    assert np.isnan(ious[3])                   # absent everywhere: left out of the mean
    assert mean_iou(confusion) == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert pixel_accuracy(confusion) == pytest.approx(5 / 7)   # the ignored pixel is not counted
    figures = label_figures(confusion, ["bg", "a", "b", "c"])
    assert figures["per_class_iou"]["c"] is None


def test_labels_outside_the_set_are_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([5]), np.array([0]), 3)


def test_psnr():
    a = np.zeros((4, 4, 3))
    assert psnr(a, a) == float("inf")
    assert psnr(a + 0.1, a) == pytest.approx(20.0)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    b = a.copy()
    b[1:, :] = 1
    assert psnr(b, a, mask=mask) == float("inf")
