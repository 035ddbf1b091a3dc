"""Left and right labels are the subject's, not the image's (docs/editing.md, "Left and right").

Issue 19 saw painted left/right eyes come out swapped after an edit of a photograph. Nothing in the
studio mirrors a label map (no flip in core/editing, core/semantic or the Edit workspace's display,
and the edit's target is the painted map as painted: tested below), so the swap was the painting's:
`left_eye` is the subject's left eye, on the image's RIGHT in a frontal view.
"""
import numpy as np
import torch

from core.backbone import load_backbone
from core.editing.evaluate import procedural_buffers
from core.editing.semantic_edit import EditSettings, edit_identity, render_view
from core.fitting.config import tiny_fit_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import LABEL_IDS
from core.semantic import SemanticBranch

SIZE = 64


def _mean_column(labels, name):
    columns = np.nonzero(labels == LABEL_IDS[name])[1]
    assert columns.size, f"no {name} pixels"
    return columns.mean()


def test_the_subjects_left_eye_is_on_the_image_right_in_a_frontal_view():
    backbone = load_backbone("default")
    labels = procedural_buffers(backbone, 2000000, 0.0, 0.0, SIZE)["labels"]
    assert _mean_column(labels, "left_eye") > SIZE / 2 > _mean_column(labels, "right_eye")
    assert _mean_column(labels, "left_ear") > SIZE / 2 > _mean_column(labels, "right_ear")


def test_positive_yaw_moves_the_camera_to_the_subjects_left():
    backbone = load_backbone("default")
    area = {yaw: (procedural_buffers(backbone, 2000000, yaw, 0.0, SIZE)["labels"] == LABEL_IDS["left_ear"]).sum()
            for yaw in (-40.0, 40.0)}
    assert area[40.0] > area[-40.0]  # the camera sees more of the left ear from the subject's left


def test_an_edit_targets_the_painted_side_without_mirroring():
    torch.manual_seed(0)
    G = TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=32, neural_resolution=16), 0)
    branch = SemanticBranch.for_generator(G, 4).eval().requires_grad_(False)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim), G.frontal_camera_label()[None])
    _, before = render_view(G, branch, ws, 0.0, 0.0, 16)
    painted = before.copy()
    painted[4:10, 11:15] = (before[4:10, 11:15] + 1) % 4  # paint only on the image's right
    result = edit_identity(G, branch, ws, 0.0, 0.0, painted, EditSettings(steps=1, resolution=16, dilation=0))
    assert result.region[4:10, 11:15].any() and not result.region[:, :8].any()
