"""Inversion and 3D-aware semantic editing (core.editing) on tiny random generators."""
import cv2
import numpy as np
import pytest
import torch

from core.backbone import seed_to_z
from core.camera import Camera
from core.editing.inputs import EditingInputError, check_label_map, prepare_image, read_image, read_label_map
from core.editing.inversion import InversionSettings, invert_image, invert_labels
from core.editing.perceptual import (VGG16_CHANNELS, VGG16_CONV_INDICES, PerceptualWeightsError, StructuralLoss,
                                     VGGPerceptualLoss, perceptual_loss)
from core.editing.evaluate import floater_pixels
from core.editing.rendering import (SEMANTIC_BORDER, CameraRig, Crop, point_opacity, project_points, render,
                                    render_part, render_still, to_uint8)
from core.semantic.rendering import _rays
from core.editing.semantic_edit import (EditSettings, NoOpEditError, _EditObjective, edit_identity,
                                        edited_label_ids, optimisation_samples, region_of_interest, render_view)
from core.editing.store import edit_figures, read_latent, save_edit, write_latent
from core.fitting.config import tiny_fit_config
from core.generator.triplane import TriPlaneGenerator
from core.semantic import SemanticBranch
from project_support import project_on

RES = 16
NUM_CLASSES = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks: threading only adds overhead, and the machine is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def G():
    return TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=32, neural_resolution=RES), 0)


@pytest.fixture(scope="module")
def branch(G):
    torch.manual_seed(3)
    branch = SemanticBranch.for_generator(G, NUM_CLASSES).eval().requires_grad_(False)
    with torch.no_grad():  # an untrained branch's logits are nearly uniform; make them respond to w
        branch.decoder.classifier.weight.mul_(30)
    return branch


def ws_of(G, seed):
    with torch.no_grad():
        return G.mapping(seed_to_z(seed, G.z_dim), G.frontal_camera_label()[None])


def smooth_image(seed=0, size=32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 4, size // 4, generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------- perceptual losses
def fabricated_vgg_state(seed=0) -> dict:
    """A torchvision-format VGG16 state dict of random tensors (shapes as vgg16().state_dict())."""
    generator = torch.Generator().manual_seed(seed)
    state, in_channels = {}, 3
    for index, channels in zip(VGG16_CONV_INDICES, VGG16_CHANNELS):
        state[f"features.{index}.weight"] = torch.randn(channels, in_channels, 3, 3, generator=generator) * (2 / (9 * in_channels)) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(channels)
        in_channels = channels
    state["classifier.6.bias"] = torch.zeros(1000)  # present in the real file; ignored
    return state


def distortions(image):
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(image.shape, generator=generator)
    return [image + 0.02 * noise, image + 0.1 * noise, image + 0.4 * noise]


@pytest.mark.parametrize("make", [lambda path: StructuralLoss(), lambda path: VGGPerceptualLoss(path)],
                         ids=["structural", "vgg"])
def test_perceptual_losses_are_zero_for_identical_images_and_grow_with_distortion(tmp_path, make):
    path = tmp_path / "vgg16.pth"
    torch.save(fabricated_vgg_state(), path)
    loss = make(path)
    image = smooth_image()
    assert float(loss(image, image.clone())) == pytest.approx(0.0, abs=1e-6)
    values = [float(loss(distorted, image)) for distorted in distortions(image)]
    assert values[0] > 1e-6 and values[0] < values[1] < values[2]
    blurred = torch.nn.functional.avg_pool2d(image, 3, 1, 1, count_include_pad=False)
    assert float(loss(blurred, image)) > 0


def test_vgg_weights_load_from_safetensors_and_say_which_loss_is_active(tmp_path):
    from safetensors.torch import save_file

    state = fabricated_vgg_state(2)
    save_file(state, str(tmp_path / "vgg16.safetensors"))
    loss = perceptual_loss(tmp_path / "vgg16.safetensors")
    assert loss.name == "lpips-vgg16"
    assert torch.equal(loss.vgg.features["28"].weight, state["features.28.weight"])
    assert perceptual_loss(None).name == "ms-ssim+gradients"


def test_a_wrong_vgg_file_is_a_clear_error(tmp_path):
    missing = fabricated_vgg_state()
    del missing["features.10.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(PerceptualWeightsError, match=r"missing.pth.*features.10.weight"):
        VGGPerceptualLoss(tmp_path / "missing.pth")
    wrong = fabricated_vgg_state()
    wrong["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(PerceptualWeightsError, match=r"wrong.pth: features.0.weight has shape \(64, 1, 3, 3\)"):
        VGGPerceptualLoss(tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PerceptualWeightsError, match="garbage.pth: unreadable"):
        VGGPerceptualLoss(tmp_path / "garbage.pth")
    with pytest.raises(PerceptualWeightsError, match="not found"):
        VGGPerceptualLoss(tmp_path / "absent.pth")


# ---------------------------------------------------------------------------- cameras
@pytest.mark.parametrize("yaw,pitch", [(0, 0), (35, -12), (-80, 25)])
def test_differentiable_camera_equals_the_studio_camera(G, yaw, pitch):
    rig = CameraRig.of(G)
    expected = Camera(yaw, pitch, rig.radius, rig.fov, rig.pivot).label()
    yaw_t = torch.tensor(float(yaw), requires_grad=True)
    label = rig.label(yaw_t, torch.tensor(float(pitch)))
    assert torch.allclose(label[0], expected, atol=1e-5)
    label[0, 3].backward()  # camera x moves with yaw
    assert yaw_t.grad is not None and float(yaw_t.grad) != 0


# ---------------------------------------------------------------------------- inversion
def test_rgb_inversion_recovers_a_known_identity_better_than_its_start(G):
    rig = CameraRig.of(G)
    true_ws, true_yaw = ws_of(G, 7), 25.0
    with torch.no_grad():
        target = to_uint8(render(G, true_ws, rig.label(torch.tensor(true_yaw), torch.tensor(0.0)), RES).image)
    settings = InversionSettings(start_yaws=(0.0,), random_starts=1, start_steps=5, start_resolution=RES,
                                 steps=40, resolution=RES, learning_rate=0.1, pose_learning_rate=2.0)
    reports = []
    result = invert_image(G, target, settings, progress=reports.append)
    assert result.perceptual == "ms-ssim+gradients" and len(reports) == settings.total_steps()

    def image_error(ws, yaw):
        with torch.no_grad():
            image = render(G, ws, rig.label(torch.tensor(yaw), torch.tensor(0.0)), RES).image
        return float((to_uint8(image).astype(float) - target).__pow__(2).mean())

    start_error = min(image_error(ws_of(G, 0) * 0 + G.backbone.mapping.w_avg, 0.0), image_error(ws_of(G, 0), 0.0))
    assert image_error(result.ws, result.yaw) < 0.5 * start_error
    assert abs(result.yaw - true_yaw) < true_yaw  # closer to the true pose than the frontal start
    assert result.history[0]["loss"] > result.loss


def test_segmentation_inversion_lowers_the_cross_entropy_and_stops_when_asked(G, branch):
    rig = CameraRig.of(G)
    _, labels = render_view(G, branch, ws_of(G, 5), 10.0, 0.0, RES)
    settings = InversionSettings(start_yaws=(0.0,), random_starts=0, start_steps=2, start_resolution=RES, steps=12,
                                 resolution=RES, learning_rate=0.1)
    result = invert_labels(G, branch, labels, settings)
    assert result.loss < result.history[0]["loss"]
    calls = []
    stopped = invert_labels(G, branch, labels, settings, should_stop=lambda: len(calls) >= 3, progress=calls.append)
    assert stopped.stopped and len(stopped.history) == 3
    with pytest.raises(ValueError, match="ids up to 9"):
        invert_labels(G, branch, np.full((RES, RES), 9, np.uint8), settings)
    assert rig.radius > 0


# ---------------------------------------------------------------------------- editing
def paint_square(labels, value, top=4, left=4, size=6):
    edited = labels.copy()
    edited[top:top + size, left:left + size] = value
    return edited


def test_edit_lowers_the_cross_entropy_inside_r_and_keeps_rgb_outside(G, branch):
    ws = ws_of(G, 3)
    before = render_view(G, branch, ws, 0.0, 0.0, RES)
    # "Enlarge a part": grow the second most common label by two pixels (as enlarging the eyes).
    part = int(np.argsort(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))[-2])
    grown = cv2.dilate((before[1] == part).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    edited = np.where(grown, part, before[1]).astype(np.uint8)
    settings = EditSettings(steps=25, resolution=RES, learning_rate=0.1, rgb_weight=10.0, dilation=1, preview_every=5)
    previews = []
    result = edit_identity(G, branch, ws, 0.0, 0.0, edited, settings,
                           progress=lambda r: previews.append(r) if r.preview_rgb is not None else None)
    assert previews and previews[0].preview_rgb.shape == (RES, RES, 3)
    region = result.region
    assert region[edited != before[1]].all()

    def ce_inside(ws_):
        with torch.no_grad():
            logits = render(G, ws_, CameraRig.of(G).label(torch.tensor(0.0), torch.tensor(0.0)), RES, branch).logits
        target = torch.from_numpy(edited.astype(np.int64))[None]
        ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0].numpy()
        return ce[region].mean()

    assert ce_inside(result.ws) < 0.8 * ce_inside(ws)
    figures = edit_figures(result)
    assert 25 < figures["psnr_outside_region"] < float("inf")  # changed, but little, outside r


def test_region_of_interest_is_the_edited_labels_before_and_after():
    before = np.zeros((20, 20), np.uint8)
    before[2:18, 2:18] = 1  # head
    before[8:10, 8:10] = 2  # a small eye
    after = before.copy()
    after[7:11, 7:11] = 2  # the eye enlarged
    assert edited_label_ids(before, after) == [2]  # the head lost a few pixels: not an edited label
    region = region_of_interest(before, after, [2], dilation=0)
    assert region.sum() == 16 and region[7:11, 7:11].all()
    assert region_of_interest(before, after, [2], dilation=1).sum() > 16


def test_a_part_of_a_view_renders_as_the_full_view_does_on_its_rays(G, branch):
    ws = ws_of(G, 5)
    camera = CameraRig.of(G).label(torch.tensor(10.0), torch.tensor(-5.0))
    with torch.no_grad():
        full = render(G, ws, camera, RES, branch)
        whole = render_part(G, ws, camera, Crop.whole(RES), branch=branch)
        crop, rays = Crop(2, 3, 12, RES), torch.tensor([0, 17, RES * RES - 1])
        part = render_part(G, ws, camera, crop, rays, branch)
    assert torch.allclose(whole.images[0], full.image, atol=1e-5)
    assert torch.allclose(whole.logits[0], full.logits, atol=1e-4)
    rows, columns = crop.slices
    assert torch.allclose(part.images[0], full.image[..., rows, columns], atol=1e-5)
    assert torch.allclose(part.extra, full.image.reshape(1, 3, -1)[..., rays], atol=1e-5)
    still = render_still(G, ws, camera, RES, branch)  # empty space skipped: the same view to the threshold
    assert (still.image - full.image).abs().max() < 2e-3
    assert (still.logits.argmax(1) == full.logits.argmax(1)).float().mean() > 0.99
    # The semantic super-resolution sees zeros past the crop's edges: its interior is exact.
    interior = slice(SEMANTIC_BORDER, -SEMANTIC_BORDER)
    assert torch.allclose(part.logits[0][..., interior, interior],
                          full.logits[..., rows, columns][..., interior, interior], atol=1e-4)
    # Two crops in one pass: each as rendered alone.
    other = Crop(0, 0, 2, RES)
    with torch.no_grad():
        both = render_part(G, ws, camera, [other, crop], rays, branch)
    assert torch.allclose(both.images[1], part.images[0], atol=1e-5) and torch.allclose(both.extra, part.extra, atol=1e-5)
    assert torch.allclose(both.images[0], full.image[..., :2, :2], atol=1e-5)


def test_still_renders_of_a_latent_share_its_occupancy_grid(monkeypatch):
    import core.generator.culling as culling

    G = TriPlaneGenerator.from_config(tiny_fit_config(plane_resolution=32, neural_resolution=RES), 1)  # its own
    built, build = [], culling.occupancy_grid
    monkeypatch.setattr(culling, "occupancy_grid", lambda *args, **kwargs: built.append(1) or build(*args, **kwargs))
    rig, ws, other = CameraRig.of(G), ws_of(G, 5), ws_of(G, 6)
    views = [render_still(G, ws, rig.label(torch.tensor(yaw), torch.tensor(0.0)), RES).image for yaw in (-30.0, 30.0)]
    assert len(built) == 1  # one grid for both views
    render_still(G, other, rig.label(torch.tensor(0.0), torch.tensor(0.0)), RES)
    again = render_still(G, ws, rig.label(torch.tensor(-30.0), torch.tensor(0.0)), RES).image
    assert len(built) == 2 and torch.equal(again, views[0])
    with torch.no_grad():  # a generator changed in place gets a new grid
        next(G.parameters()).mul_(1.01)
    render_still(G, ws, rig.label(torch.tensor(-30.0), torch.tensor(0.0)), RES)
    assert len(built) == 3


def test_a_crop_holds_the_region_with_its_margin_inside_the_view():
    region = np.zeros((32, 32), bool)
    region[5:9, 20:30] = True
    crop = Crop.around(region, margin=2)
    assert crop.size == 14 and 0 <= crop.top and crop.left + crop.size <= 32
    assert crop.mask()[3:11, 18:32].all() and crop.mask().sum() == 14 * 14
    assert Crop.around(region, margin=40) == Crop.whole(32)
    first = region.copy()
    region[20:23, 3:6] = True  # a second part, far away: its own square
    crops = Crop.each_around(region, margin=2)
    assert len(crops) == 2 and Crop.around(first, margin=2) in crops and 7 in (crops[0].size, crops[1].size)
    assert not crops[0].overlaps(crops[1]) and (crops[0].mask() | crops[1].mask())[18:25, 1:8].all()
    region[8, 4:21] = region[8:21, 4] = True  # now joined to it: one part
    assert Crop.each_around(region, margin=2) == [Crop.around(region, margin=2)]
    region[:] = False
    region[4:6, 4:6] = region[4:6, 9:11] = True  # near: the squares overlap and are merged
    merged = Crop.each_around(region, margin=2)
    assert len(merged) == 1 and merged[0].mask()[2:8, 2:13].all()


def full_view_loss(G, branch, ws, edited, region, settings):
    """The §5.4 loss of docs/editing.md computed on a full render of the view (the reference)."""
    camera = CameraRig.of(G).label(torch.tensor(0.0), torch.tensor(0.0))
    with torch.no_grad():
        original = render(G, ws_of(G, 3), camera, RES).image
        rendered = render(G, ws, camera, RES, branch)
    target = torch.from_numpy(edited.astype(np.int64))[None]
    inside = torch.from_numpy(region.astype(np.float32))[None, None]
    pixel_ce = torch.nn.functional.cross_entropy(rendered.logits, target, reduction="none")[:, None]
    ce_region = (pixel_ce * inside).sum() / inside.sum()
    outside = 1 - inside
    mse = ((rendered.image - original) ** 2 * outside).sum() / (3 * outside.sum())
    perceptual = StructuralLoss()(rendered.image * outside, original * outside)
    return pixel_ce.mean() + ce_region, mse, perceptual


def test_the_edit_loss_on_part_of_the_view_equals_the_full_views_when_every_ray_is_included(G, branch):
    start, moved = ws_of(G, 3), ws_of(G, 4)  # the loss of a latent other than the start: no term is zero
    before = render_view(G, branch, start, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))), 5, 6, 4)
    region = region_of_interest(before[1], edited, edited_label_ids(before[1], edited), 1)
    ce, mse, perceptual = full_view_loss(G, branch, moved, edited, region, EditSettings())

    def objective(**options):  # the paper's loss plus the plain CE inside r (full_view_loss's)
        settings = EditSettings(resolution=RES, backbone_samples=None, label_balance=0.0, lovasz_weight=0.0,
                                hold_weight=0.0, **options)
        return _EditObjective(G, branch, start, 0.0, 0.0, edited, region, before[1], settings, StructuralLoss())

    whole = objective(crop_margin=RES)  # the crop is the whole view
    loss, terms = whole(whole.render(moved, 0))
    assert len(whole.crops) == 1 and whole.crops[0].is_whole
    assert terms["cross_entropy"] == pytest.approx(float(ce), rel=1e-4)
    assert terms["mse_outside"] == pytest.approx(float(mse), rel=1e-4)
    assert terms["perceptual_outside"] == pytest.approx(float(perceptual), rel=1e-4)
    assert float(loss) == pytest.approx(float(ce + whole.settings.rgb_weight * mse + perceptual), rel=1e-4)
    # A crop around r plus every ray outside it: the MSE over all pixels outside r is exact.
    cropped = objective(crop_margin=1, outside_rays=RES * RES)
    assert len(cropped.crops) == 1 and not cropped.crops[0].is_whole
    assert len(cropped.outside_rays(0)) == RES * RES - cropped.crops[0].size ** 2
    _, terms = cropped(cropped.render(moved, 0))
    assert terms["mse_outside"] == pytest.approx(float(mse), rel=1e-4)
    # Fewer rays: a different draw at each step, the same draw for the same step.
    sparse = objective(crop_margin=1, outside_rays=20)
    assert torch.equal(sparse.outside_rays(3), sparse.outside_rays(3))
    assert not torch.equal(sparse.outside_rays(3), sparse.outside_rays(4)) and len(sparse.outside_rays(3)) == 20


def test_points_project_to_the_pixel_whose_ray_they_lie_on(G):
    camera = CameraRig.of(G).label(torch.tensor(36.9), torch.tensor(10.0))
    origins, directions = _rays(G, camera, RES)
    pixels = torch.tensor([0, RES - 1, 3 * RES + 5, RES * RES - 1])
    for distance in (2.0, 2.7, 3.2):
        assert torch.equal(project_points(camera, origins[0, pixels] + distance * directions[0, pixels], RES), pixels)
    behind = origins[0, :1] - directions[0, :1]
    assert int(project_points(camera, behind, RES)[0]) == -1


def test_the_hold_term_is_zero_when_nothing_changed_and_grows_with_density_added_away_from_r(G, branch):
    start = ws_of(G, 3)
    before = render_view(G, branch, start, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))), 5, 6, 4)
    region = region_of_interest(before[1], edited, edited_label_ids(before[1], edited), 1)
    settings = EditSettings(resolution=RES, hold_weight=1.0, hold_points=2048, hold_margin=1)
    objective = _EditObjective(G, branch, start, 0.0, 0.0, edited, region, before[1], settings, StructuralLoss())
    held = objective.held_points(0)
    pixels = project_points(objective.camera, held, RES)
    assert 0 < len(held) < settings.hold_points  # the points on r's rays are left free
    assert not objective.near_region[pixels[pixels >= 0]].any()
    rendered = objective.render(start, 0)
    _, terms = objective(rendered)
    assert terms["opacity_change_away"] == 0.0
    # Density changed over half the box, away from r too: the term is the mean squared opacity change there.
    planes = objective.start_planes.clone()
    planes[:, :, :, :, : planes.shape[-1] // 2] += 3.0
    change = point_opacity(G, planes, held) - point_opacity(G, objective.start_planes, held)
    assert change.abs().max() > 1e-3
    assert float(objective.hold_term(planes, 0)) == pytest.approx(float(change.pow(2).mean()), rel=1e-5)
    # and it takes part in the loss, with a gradient towards the latent
    moved = ws_of(G, 4).requires_grad_(True)
    loss, terms = objective(objective.render(moved, 1))
    assert terms["opacity_change_away"] > 0
    loss.backward()
    assert moved.grad.abs().sum() > 0


def test_floaters_are_new_foreground_apart_from_the_old_silhouette():
    head = np.zeros((32, 32), bool)
    head[8:24, 8:20] = True
    after = head.copy()
    after[10:14, 20:23] = True  # a bump on the head: new foreground, no floater
    assert floater_pixels(head, after) == (0, 4 * 1)  # within 2 px of the old silhouette is the head's
    after[2:5, 26:30] = True  # a blob apart from the head
    assert floater_pixels(head, after) == (12, 4 + 12)
    assert floater_pixels(head, head) == (0, 0)


def test_the_labels_inside_r_are_weighed_alike_and_the_lovasz_term_is_one_minus_their_mean_iou(G, branch):
    start = ws_of(G, 3)
    before = render_view(G, branch, start, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))), 5, 6, 4)
    region = region_of_interest(before[1], edited, edited_label_ids(before[1], edited), 1)

    def objective(balance):
        settings = EditSettings(resolution=RES, backbone_samples=None, crop_margin=RES, label_balance=balance)
        return _EditObjective(G, branch, start, 0.0, 0.0, edited, region, before[1], settings, StructuralLoss())

    inside = region.astype(bool)
    labels = np.unique(edited[inside])
    assert len(labels) >= 2  # the test needs labels of different areas inside r
    plain, balanced = objective(0.0), objective(1.0)
    assert torch.equal(plain.region_weights[0], plain.inside[0])
    weights = balanced.region_weights[0][0, 0].numpy()
    assert weights[~inside].sum() == 0 and weights.sum() == pytest.approx(inside.sum(), rel=1e-5)
    shares = [weights[inside & (edited == label)].sum() for label in labels]
    assert np.allclose(shares, shares[0], rtol=1e-5)  # each label of the edited map: an equal share
    # Lovász-softmax of (nearly) one-hot predictions = 1 − the mean IoU over the target's labels in r.
    for labelling in (edited, before[1], np.roll(edited, 2, axis=1)):
        logits = 50.0 * torch.nn.functional.one_hot(torch.from_numpy(labelling.astype(np.int64)), NUM_CLASSES)
        loss = float(balanced._lovasz([logits.permute(2, 0, 1)[None].float()]))
        ious = [np.logical_and(labelling == label, edited == label)[inside].sum()
                / np.logical_or(labelling == label, edited == label)[inside].sum() for label in labels]
        assert loss == pytest.approx(1 - np.mean(ious), abs=1e-4)


def test_an_edit_is_deterministic_and_stops_when_the_loss_stops_falling(G, branch):
    ws = ws_of(G, 3)
    before = render_view(G, branch, ws, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))))
    settings = EditSettings(steps=4, resolution=RES, crop_margin=1, outside_rays=30, backbone_samples=(6, 4),
                            learning_rate=0.1, final_learning_rate=0.01)
    first = edit_identity(G, branch, ws, 0.0, 0.0, edited, settings, before=before)
    second = edit_identity(G, branch, ws, 0.0, 0.0, edited, settings, before=before)
    assert torch.equal(first.ws, second.ws) and not torch.equal(first.ws, ws)
    assert optimisation_samples(G, EditSettings(backbone_samples=(16, 6))) == (8, 6)  # never more than its own
    # Above the neural resolution the view cannot be rendered in parts: every step renders it whole.
    previews = []
    whole = edit_identity(G, branch, ws, 0.0, 0.0, edited, EditSettings(steps=2, resolution=2 * RES), before=before,
                          progress=lambda report: previews.append(report.preview_rgb))
    assert len(whole.history) == 2 and previews[0].shape == (2 * RES, 2 * RES, 3)
    frozen = EditSettings(steps=20, resolution=RES, learning_rate=0.0, patience=3)  # the loss cannot fall
    result = edit_identity(G, branch, ws, 0.0, 0.0, edited, frozen, before=before)
    assert len(result.history) == 4 and torch.allclose(result.ws, ws, atol=1e-5)


def test_bad_edit_inputs_are_clear_errors(G, branch):
    ws = ws_of(G, 3)
    before = render_view(G, branch, ws, 0.0, 0.0, RES)
    with pytest.raises(NoOpEditError, match="identical"):
        edit_identity(G, branch, ws, 0.0, 0.0, before[1].copy(), EditSettings(steps=1, resolution=RES), before=before)
    with pytest.raises(EditingInputError, match=r"is 8x8, but the render it edits is 16x16"):
        edit_identity(G, branch, ws, 0.0, 0.0, before[1][:8, :8].copy(), EditSettings(steps=1, resolution=RES),
                      before=before)
    with pytest.raises(EditingInputError, match=r"label ids \[7\]"):
        edit_identity(G, branch, ws, 0.0, 0.0, paint_square(before[1], 7), EditSettings(steps=1, resolution=RES))


def test_images_are_cropped_resized_and_grey_ones_refused(tmp_path):
    import cv2

    rgb = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    prepared = prepare_image(rgb, 32)
    assert prepared.rgb.shape == (32, 32, 3) and "centre-cropped 90x60 to 60x60" in prepared.note
    with pytest.raises(EditingInputError, match="grey-scale"):
        prepare_image(rgb[..., 0], 32)
    with pytest.raises(EditingInputError, match="grey-scale image stored as RGB"):
        prepare_image(np.repeat(rgb[..., :1], 3, 2), 32)
    cv2.imwrite(str(tmp_path / "grey.png"), rgb[..., 0])
    with pytest.raises(EditingInputError, match="grey.png is a grey-scale image"):
        read_image(tmp_path / "grey.png", 32)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(EditingInputError, match="broken.png: not a readable image"):
        read_image(tmp_path / "broken.png", 32)
    cv2.imwrite(str(tmp_path / "colour.png"), rgb[..., ::-1])
    assert np.array_equal(read_image(tmp_path / "colour.png", 60).rgb, rgb[:, 15:75])


def test_label_maps_are_checked(tmp_path):
    from core.fileio import write_indexed_png

    labels = np.zeros((16, 16), np.uint8)
    labels[4:8, 4:8] = 3
    write_indexed_png(tmp_path / "map.png", labels, np.zeros((4, 3), np.uint8))
    assert np.array_equal(read_label_map(tmp_path / "map.png", 4, resolution=16)[0], labels)
    resized, note = read_label_map(tmp_path / "map.png", 4, fit_to=8)
    assert resized.shape == (8, 8) and "resized 16x16 to 8x8" in note and set(np.unique(resized)) <= {0, 3}
    with pytest.raises(EditingInputError, match=r"map.png holds label ids \[3\]"):
        read_label_map(tmp_path / "map.png", 3)
    with pytest.raises(EditingInputError, match="map.png is 16x16, but the render it edits is 32x32"):
        check_label_map(labels, 4, "map.png", 32)


def test_latents_round_trip_and_bad_ones_are_named(G, tmp_path):
    ws = ws_of(G, 1)
    write_latent(tmp_path / "latent.npy", ws)
    assert torch.equal(read_latent(tmp_path / "latent.npy", G), ws)
    np.save(tmp_path / "short.npy", np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="short.npy: latent of shape"):
        read_latent(tmp_path / "short.npy", G)


def test_an_edit_session_is_saved_with_its_figures(G, branch, tmp_path):
    import json

    ws = ws_of(G, 3)
    before = render_view(G, branch, ws, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))))
    result = edit_identity(G, branch, ws, 0.0, 0.0, edited, EditSettings(steps=2, resolution=RES), before=before)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    save_edit(tmp_path / "edit", result, G, branch, palette)
    summary = json.loads((tmp_path / "edit" / "result.json").read_text())
    assert {"iou_in_region", "psnr_outside_region", "seconds", "perceptual"} <= set(summary)
    for name in ("latent.npy", "latent_before.npy", "after.png", "labels_after.png", "side_by_side.png", "loss.csv",
                 "loss.png", "after_yaw+60.png"):
        assert (tmp_path / "edit" / name).is_file(), name


# ---------------------------------------------------------------------------- command line
@pytest.fixture
def tiny_project(tmp_path, G, branch):
    from core.project.labels import LabelSet

    labels = LabelSet.from_tuples([(0, "background", (0, 0, 0)), (1, "a", (255, 0, 0)), (2, "b", (0, 255, 0)),
                                   (3, "c", (0, 0, 255))])
    return project_on(tmp_path / "project", G, labels, branch, step=1)


def test_invert_and_edit_from_the_command_line(tiny_project, tmp_path, capsys):
    import json

    from core.cli import main
    from core.fileio import read_indexed_png, write_indexed_png, write_png

    rgb = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    write_png(tmp_path / "photo.png", rgb)
    write_png(tmp_path / "grey.png", rgb[..., 0])
    common = ["--project", str(tiny_project), "--steps", "3", "--resolution", str(RES), "--threads", "1"]
    assert main(["invert", *common, "--image", str(tmp_path / "grey.png"), "--out", str(tmp_path / "x")]) == 2
    assert "grey.png is a grey-scale image" in capsys.readouterr().err
    assert main(["invert", *common, "--image", str(tmp_path / "photo.png"), "--out", str(tmp_path / "inv")]) == 0
    out = capsys.readouterr().out
    assert "centre-cropped 30x40 to 30x30" in out and "perceptual loss: ms-ssim+gradients" in out
    for name in ("latent.npy", "pose.json", "render.png", "labels.png", "loss.csv", "loss.png", "result.json"):
        assert (tmp_path / "inv" / name).is_file(), name
    labels, _ = read_indexed_png(tmp_path / "inv" / "labels.png")
    # No change → a clear refusal; a real change → an edit folder with figures.
    write_indexed_png(tmp_path / "same.png", labels, np.zeros((4, 3), np.uint8))
    edit = ["edit", *common, "--start", str(tmp_path / "inv" / "latent.npy")]
    assert main([*edit, "--mask", str(tmp_path / "same.png"), "--out", str(tmp_path / "e0")]) == 2
    assert "identical to the current labels" in capsys.readouterr().err
    write_indexed_png(tmp_path / "edited.png", paint_square(labels, 3), np.zeros((4, 3), np.uint8))
    assert main([*edit, "--mask", str(tmp_path / "edited.png"), "--out", str(tmp_path / "e1")]) == 0
    summary = json.loads((tmp_path / "e1" / "result.json").read_text())
    assert summary["perceptual"] == "ms-ssim+gradients" and (tmp_path / "e1" / "after.png").is_file()
    assert main([*edit, "--mask", str(tmp_path / "edited.png"), "--out", str(tmp_path / "e1")]) == 2  # kept


def test_constant_coarse_samples_give_the_same_loss_and_a_gradient_pointing_the_same_way(G, branch):
    # EditSettings.coarse_gradients=False (the default) halves the backward pass: the render and
    # the loss must not change, and the gradient must still point where the full one does.
    start, moved = ws_of(G, 3), ws_of(G, 4)
    before = render_view(G, branch, start, 0.0, 0.0, RES)
    edited = paint_square(before[1], int(np.argmin(np.bincount(before[1].ravel(), minlength=NUM_CLASSES))), 5, 6, 4)
    region = region_of_interest(before[1], edited, edited_label_ids(before[1], edited), 1)
    results = {}
    for coarse_gradients in (True, False):
        settings = EditSettings(resolution=RES, coarse_gradients=coarse_gradients)
        objective = _EditObjective(G, branch, start, 0.0, 0.0, edited, region, before[1], settings, StructuralLoss())
        ws = moved.clone().requires_grad_(True)
        loss, _ = objective(objective.render(ws, 0))
        loss.backward()
        results[coarse_gradients] = (loss.item(), ws.grad.flatten())
    assert results[False][0] == pytest.approx(results[True][0], rel=1e-6)
    full, partial = results[True][1], results[False][1]
    assert not torch.equal(full, partial)  # the coarse samples' share really is left out
    assert float(torch.nn.functional.cosine_similarity(full, partial, dim=0)) > 0.9


def test_the_planes_mean_summed_in_place_is_bit_for_bit_the_decoders_mean():
    from core.generator.rendering import generate_planes, sample_from_planes, sample_plane_mean

    generator = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 8, 16, 16, generator=generator)
    points = torch.rand(2, 50, 3, generator=generator) - 0.5
    axes = generate_planes()
    features = sample_from_planes(axes, planes, points, box_warp=1.0).unbind(1)
    assert torch.equal(sample_plane_mean(axes, planes, points, 1.0), sum(features[1:], features[0]) / 3)
