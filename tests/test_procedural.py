"""Procedural cat heads: determinism, ground-truth consistency, conventions, ranges."""
import numpy as np
import pytest

from core.camera import Camera, ray_bundle, split_label
from core.procedural import (BACKGROUND_RGB, LABEL_IDS, LABELS, NUM_CLASSES, PARAM_COUNT,
                             RENDERING, SEED_RANGES, HeadParams, ProceduralHead,
                             label_at_points, latent_for_seed, mirror_label_ids,
                             purpose_of_seed, render, sdf, seeds_for)
from core.procedural.category import HEAD_BOUND_RADIUS
from core.procedural.params import PARAM_HIGH, PARAM_LOW
from core.procedural.renderer import BOUND_CENTRE, BOUND_RADIUS

RES = 64


def camera(yaw, pitch=0.0):
    return Camera(yaw, pitch, radius=RENDERING["avg_camera_radius"], fov=RENDERING["fov"],
                  pivot=tuple(RENDERING["avg_camera_pivot"])).label()


@pytest.fixture(scope="module")
def head():
    return ProceduralHead(HeadParams.from_seed(7))


def extreme_params():
    """Every parameter at its low end, at its high end, and random corners of the range box."""
    rng = np.random.RandomState(0)
    corners = [np.where(rng.rand(PARAM_COUNT) < 0.5, PARAM_LOW, PARAM_HIGH) for _ in range(6)]
    return [HeadParams.from_array(a) for a in [PARAM_LOW, PARAM_HIGH, *corners]]


# ----- labels, seeds, parameters ---------------------------------------------------------------
def test_label_list_has_background_pairs_and_ten_classes():
    assert NUM_CLASSES >= 10
    assert [label_id for label_id, _, _ in LABELS] == list(range(NUM_CLASSES))
    assert LABELS[0][1] == "background"
    names = [name for _, name, _ in LABELS]
    assert len(set(names)) == len(names)
    for part in ("ear", "eye", "inner_ear"):
        assert "left_" + part in names and "right_" + part in names
    assert len({tuple(colour) for _, _, colour in LABELS}) == NUM_CLASSES


def test_seed_ranges_are_disjoint():
    ranges = list(SEED_RANGES.values())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert a.stop <= b.start or b.stop <= a.start
    assert seeds_for("evaluate", 3) == [SEED_RANGES["evaluate"].start + k for k in range(3)]
    assert purpose_of_seed(SEED_RANGES["annotate"].start) == "annotate"
    with pytest.raises(ValueError):
        seeds_for("fit", len(SEED_RANGES["fit"]) + 1)


def test_from_latent_stays_in_range_and_round_trips():
    rng = np.random.RandomState(1)
    latents = np.concatenate([rng.standard_normal((50, 40)), np.full((1, 40), 9.0),
                              np.full((1, 40), -9.0)])
    for z in latents:
        values = HeadParams.from_latent(z).to_array()
        assert np.all(values >= PARAM_LOW) and np.all(values <= PARAM_HIGH)
    params = HeadParams.from_latent(latents[0])
    assert HeadParams.from_array(params.to_array()) == params
    np.testing.assert_allclose(params.to_latent(), latents[0][:PARAM_COUNT], atol=1e-6)
    with pytest.raises(ValueError):
        HeadParams.from_latent(np.zeros(PARAM_COUNT - 1))


def test_from_seed_is_the_prefix_of_any_longer_latent():
    assert HeadParams.from_seed(12) == HeadParams.from_latent(latent_for_seed(12, 512))
    assert HeadParams.from_seed(12) != HeadParams.from_seed(13)


# ----- rendering ---------------------------------------------------------------------------------
def test_same_seed_renders_identical_buffers():
    first = render(HeadParams.from_seed(3), camera(25, 5), RES)
    second = render(HeadParams.from_seed(3), camera(25, 5), RES)
    assert set(first) == {"rgb", "labels", "depth", "normals", "alpha"}
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_different_seeds_render_differently():
    a = render(HeadParams.from_seed(3), camera(0), RES)
    b = render(HeadParams.from_seed(4), camera(0), RES)
    assert np.abs(a["rgb"] - b["rgb"]).mean() > 0.02
    assert (a["labels"] != b["labels"]).mean() > 0.01


def test_buffer_types_and_background(head):
    buffers = head.render(camera(40, -10), RES)
    assert buffers["rgb"].shape == (RES, RES, 3) and buffers["rgb"].dtype == np.float32
    assert buffers["labels"].dtype == np.uint8 and buffers["depth"].dtype == np.float32
    background = buffers["labels"] == 0
    assert 0.2 < (~background).mean() < 0.8
    np.testing.assert_array_equal(background, buffers["alpha"] == 0.0)
    assert np.all(buffers["alpha"][~background] == 1.0)
    np.testing.assert_allclose(buffers["rgb"][background], np.broadcast_to(BACKGROUND_RGB, (background.sum(), 3)))
    assert np.all(np.isinf(buffers["depth"][background]))
    assert np.all(buffers["normals"][background] == 0.0)
    assert buffers["rgb"].min() >= 0.0 and buffers["rgb"].max() <= 1.0
    np.testing.assert_allclose(np.linalg.norm(buffers["normals"][~background], axis=-1), 1.0, atol=1e-4)


def test_backprojected_pixels_carry_their_rendered_label(head):
    label = camera(-35, 12)
    buffers = head.render(label, RES)
    origins, directions = (t[0].numpy() for t in ray_bundle(*split_label(label), RES))
    foreground = buffers["labels"].reshape(-1) > 0
    depth = buffers["depth"].reshape(-1, 1)[foreground]
    points = origins[foreground] + depth * directions[foreground]
    assert np.abs(head.sdf(points)).max() < 1e-3
    agreement = head.label_at_points(points) == buffers["labels"].reshape(-1)[foreground]
    assert agreement.mean() >= 0.99
    # Normals face the camera.
    normals = buffers["normals"].reshape(-1, 3)[foreground]
    assert ((normals * directions[foreground]).sum(axis=1) < 0.0).mean() > 0.97


def test_every_class_appears_in_frontal_and_side_views():
    seen = set()
    for seed in (0, 1):
        params = HeadParams.from_seed(seed)
        for yaw in (-60, 0, 60):
            seen |= set(np.unique(render(params, camera(yaw), 96)["labels"]).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_left_parts_sit_on_image_right_in_a_frontal_view(head):
    labels = head.render(camera(0), RES)["labels"]
    columns = np.arange(RES)[None, :].repeat(RES, 0)
    for part in ("eye", "ear"):
        left = columns[labels == LABEL_IDS["left_" + part]].mean()
        right = columns[labels == LABEL_IDS["right_" + part]].mean()
        assert left > RES / 2 > right


def test_mirrored_yaw_mirrors_labels_and_swaps_sides(head):
    seen_from_left = head.render(camera(-50, 10), RES)
    seen_from_right = head.render(camera(50, 10), RES)
    mirrored = mirror_label_ids()[seen_from_left["labels"][:, ::-1]]
    assert (mirrored == seen_from_right["labels"]).mean() > 0.995
    # From +yaw the camera is on the head's left: more left eye than right eye is visible.
    labels = seen_from_right["labels"]
    assert (labels == LABEL_IDS["left_eye"]).sum() > (labels == LABEL_IDS["right_eye"]).sum()
    finite = np.isfinite(seen_from_right["depth"]) & np.isfinite(seen_from_left["depth"][:, ::-1])
    np.testing.assert_allclose(seen_from_right["depth"][finite], seen_from_left["depth"][:, ::-1][finite],
                               atol=2e-3)


# ----- camera constants and geometry bounds --------------------------------------------------
def test_heads_stay_inside_box_bound_sphere_and_ray_range():
    rng = np.random.RandomState(2)
    directions = rng.standard_normal((20000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shells = [HEAD_BOUND_RADIUS * directions,
              np.asarray(BOUND_CENTRE) + BOUND_RADIUS * directions]
    assert HEAD_BOUND_RADIUS <= RENDERING["box_warp"] / 2
    assert RENDERING["avg_camera_radius"] - HEAD_BOUND_RADIUS >= RENDERING["ray_start"]
    assert RENDERING["avg_camera_radius"] + HEAD_BOUND_RADIUS <= RENDERING["ray_end"]
    for params in extreme_params() + [HeadParams.from_seed(s) for s in range(4)]:
        for shell in shells:
            assert sdf(params, shell).min() > 0.0


def test_extreme_views_see_the_whole_head_within_ray_range():
    params = HeadParams.from_array(PARAM_HIGH)
    for yaw in (-90, 90):
        for pitch in (-30, 30):
            buffers = render(params, camera(yaw, pitch), 48)
            depth = buffers["depth"][np.isfinite(buffers["depth"])]
            assert depth.size > 0.15 * 48 * 48
            assert depth.min() >= RENDERING["ray_start"] and depth.max() <= RENDERING["ray_end"]
            # The head never leaves the frame sideways or through the top.
            top_and_sides = np.concatenate([buffers["labels"][0], buffers["labels"][:, 0],
                                            buffers["labels"][:, -1]])
            assert np.isin(top_and_sides, [0, LABEL_IDS["neck"]]).all()


def test_label_at_points_far_away_is_background_and_inside_is_negative(head):
    far = np.array([[0.0, 0.45, 0.45], [0.49, 0.0, 0.0], [0.0, 0.0, -0.49]])
    assert np.all(label_at_points(head.params, far) == 0)
    cranium = np.array([[0.0, 0.0, 0.12]])
    assert head.sdf(cranium)[0] < -0.1
    assert head.label_at_points(cranium)[0] == LABEL_IDS["head"]
