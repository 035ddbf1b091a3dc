"""The semantic trainer's opt-in variants: class-balanced and edge-weighted cross-entropy, cosine
learning rate (measured in docs/semantic.md, 'What was tried')."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.backbone import Backbone
from core.camera import Camera
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.semantic import SemanticBranch
from core.semantic.training import (IGNORE_LABEL, AnnotatedView, TrainingSettings, _set_learning_rate,
                                    class_weights_for, label_edges, pixel_weights, train_semantic, view_loss)
from core.semantic.rendering import SemanticOutput

RESOLUTION, NUM_CLASSES = 16, 4


@dataclasses.dataclass
class _View:
    mask: torch.Tensor


def test_class_weights_balance_the_painted_pixels():
    mask = torch.tensor([[0] * 12 + [1] * 3 + [IGNORE_LABEL]])  # class 0: 12 px, class 1: 3 px, 2 and 3: none
    assert class_weights_for([_View(mask)], NUM_CLASSES, 0.0) is None
    weights = class_weights_for([_View(mask), _View(mask)], NUM_CLASSES, 1.0)
    assert weights[1] / weights[0] == pytest.approx(4.0)  # (3/15)^-1 over (12/15)^-1
    assert (12 * weights[0] + 3 * weights[1]) / 15 == pytest.approx(1.0)  # mean painted-pixel weight 1
    assert weights[2] == weights[3] == 1.0 / float((12 * (15 / 12) + 3 * (15 / 3)) / 15)
    half = class_weights_for([_View(mask)], NUM_CLASSES, 0.5)
    assert half[1] / half[0] == pytest.approx(2.0)


def test_label_edges_mark_both_sides_of_a_change_and_ignore_unpainted():
    mask = torch.tensor([[0, 0, 1, 1],
                         [0, 0, 1, 1],
                         [IGNORE_LABEL, IGNORE_LABEL, 1, 1],
                         [2, 2, 2, 2]])
    expected = torch.tensor([[0, 1, 1, 0],
                             [0, 1, 1, 0],
                             [0, 0, 1, 1],
                             [0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(label_edges(mask), expected)
    assert pixel_weights(mask, None, 0.0) is None
    weights = pixel_weights(mask, None, 2.0)
    assert torch.equal(weights, 1 + 2 * expected)


def test_unit_weights_give_the_plain_cross_entropy():
    torch.manual_seed(0)
    logits, raw = torch.randn(1, NUM_CLASSES, 8, 8), torch.randn(1, NUM_CLASSES, 4, 4)
    mask = torch.randint(0, NUM_CLASSES, (8, 8))
    mask[0, :3] = IGNORE_LABEL
    output = SemanticOutput(logits=logits, raw_logits=raw, feature_image=None, opacity=None)
    plain = view_loss(output, mask, 0.5)
    assert torch.allclose(view_loss(output, mask, 0.5, torch.ones(8, 8)), plain)
    # class weights through the pixel weights equal torch's weighted cross-entropy
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    expected = F.cross_entropy(logits, mask[None], weight=weights, ignore_index=IGNORE_LABEL)
    assert torch.allclose(view_loss(output, mask, 0.0, pixel_weights(mask, weights, 0.0)), expected)


def test_cosine_schedule_follows_the_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=1.0)
    settings = TrainingSettings(learning_rate=2e-3, learning_rate_schedule="cosine")
    for step, factor in ((0, 1.0), (50, 0.5), (100, 0.0), (25, 0.5 * (1 + math.cos(math.pi / 4)))):
        _set_learning_rate(optimizer, settings, step, 100)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * factor)
    _set_learning_rate(optimizer, TrainingSettings(learning_rate=2e-3), 50, 100)
    assert optimizer.param_groups[0]["lr"] == 2e-3
    with pytest.raises(ValueError, match="schedule"):
        _set_learning_rate(optimizer, TrainingSettings(learning_rate_schedule="steps"), 1, 10)


def test_variants_train_and_resume_on_the_same_path(tmp_path):
    G = TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=RESOLUTION), 0)
    backbone = Backbone(G, "tiny", "hash-of-tiny")
    columns = np.arange(RESOLUTION) // (RESOLUTION // NUM_CLASSES) % NUM_CLASSES
    mask = np.tile(columns.astype(np.uint8), (RESOLUTION, 1))
    mask[:, :2] = 3  # a rare class
    views = [AnnotatedView(0, Camera(yaw=-30).label(), mask), AnnotatedView(1, Camera(yaw=20).label(), mask[:, ::-1].copy())]
    settings = TrainingSettings(learning_rate=5e-3, checkpoint_every=2, learning_rate_schedule="cosine",
                                class_balance_power=0.5, boundary_weight=1.0)

    def branch():
        torch.manual_seed(1)
        return SemanticBranch.for_generator(G, NUM_CLASSES)

    straight = branch()
    result = train_semantic(straight, backbone, views, steps=6, settings=settings)
    assert all(math.isfinite(loss) for _, loss in result.history)
    # stopped after 4 of 6 steps, then resumed: the schedule is a function of (step, total)
    done = {"step": 0}
    stopped = train_semantic(branch(), backbone, views, steps=6, settings=settings, checkpoint_dir=tmp_path,
                             progress=lambda p: done.update(step=p.step), should_stop=lambda: done["step"] >= 4)
    assert stopped.stopped and stopped.step == 4
    resumed = branch()
    train_semantic(resumed, backbone, views, steps=6, settings=settings, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
