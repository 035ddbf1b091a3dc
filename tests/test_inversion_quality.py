"""Inversions report how well they reproduce their target and warn when it is out of reach."""
import json

import numpy as np
import pytest
import torch

from core.editing.inversion import InversionSettings, invert_image, invert_labels
from core.editing.rendering import CameraRig, render, to_uint8
from core.editing.semantic_edit import render_view
from core.fitting.config import tiny_fit_config
from core.generator.triplane import TriPlaneGenerator
from core.semantic import SemanticBranch

RES = 16
QUICK = InversionSettings(resolution=RES, start_resolution=RES, start_yaws=(0.0,), random_starts=0,
                          start_steps=2, steps=6)


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=32, neural_resolution=RES), 0)


@pytest.fixture(scope="module")
def branch(G):
    torch.manual_seed(3)
    branch = SemanticBranch.for_generator(G, 4).eval().requires_grad_(False)
    with torch.no_grad():
        branch.decoder.classifier.weight.mul_(30)
    return branch


def _w_avg_render(G):
    # QUICK starts at w_avg from yaw 0, so its own render is a target within exact reach.
    from core.editing.latent import w_statistics

    w_avg, _ = w_statistics(G)
    ws = w_avg.reshape(1, 1, -1).expand(1, G.backbone.num_ws, -1)
    with torch.no_grad():
        return to_uint8(render(G, ws, CameraRig.of(G).label(torch.tensor(0.0), torch.tensor(0.0)), RES).image), ws


def test_a_reachable_image_reports_good_quality_without_a_warning(G, branch):
    image, _ = _w_avg_render(G)
    quality = invert_image(G, image, QUICK, branch=branch).quality
    assert quality.psnr_db > 30 and quality.ssim > 0.9, quality
    assert not any("reproduces the image poorly" in warning for warning in quality.warnings)
    # This branch is untrained (nearly uniform over 4 classes), and the report says so.
    assert 0.25 <= quality.label_confidence < 0.6
    assert any("semantic branch is unsure" in warning for warning in quality.warnings)
    assert quality.summary().startswith("PSNR ") and "label confidence" in quality.summary()


def test_an_unreachable_image_is_reported_as_poor(G):
    noise = np.random.default_rng(0).integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    quality = invert_image(G, noise, QUICK).quality
    assert quality.psnr_db < 20 and quality.ssim < 0.6
    assert quality.label_confidence is None  # no branch, no label figure
    assert any("far from what this backbone can represent" in warning for warning in quality.warnings)


def test_label_inversion_reports_accuracy_and_confidence(G, branch):
    _, ws = _w_avg_render(G)
    _, labels = render_view(G, branch, ws, 0.0, 0.0, RES)
    quality = invert_labels(G, branch, labels, QUICK).quality
    assert quality.label_accuracy > 0.9 and quality.psnr_db is None
    scrambled = np.random.default_rng(1).integers(0, 4, labels.shape).astype(np.uint8)
    poor = invert_labels(G, branch, scrambled, QUICK).quality
    assert poor.label_accuracy < 0.7 and any("reproduce the map poorly" in w for w in poor.warnings)


def test_the_invert_command_prints_the_quality_and_warns(G, branch, tmp_path, capsys):
    from core.cli import main
    from core.fileio import write_png
    from core.project.labels import LabelSet
    from project_support import project_on

    labels = LabelSet.from_tuples([(0, "background", (0, 0, 0)), (1, "a", (255, 0, 0)), (2, "b", (0, 255, 0)),
                                   (3, "c", (0, 0, 255))])
    folder = project_on(tmp_path / "project", G, labels, branch, step=1)
    write_png(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert main(["invert", "--project", str(folder), "--image", str(tmp_path / "noise.png"), "--out",
                 str(tmp_path / "inv"), "--steps", "3", "--resolution", str(RES), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "reconstruction: PSNR" in captured.out and "label confidence" in captured.out
    assert "warning: the render reproduces the image poorly" in captured.err
    quality = json.loads((tmp_path / "inv" / "result.json").read_text())["quality"]
    assert quality["psnr_db"] < 20 and quality["warnings"]
