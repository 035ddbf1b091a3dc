"""EG3D camera conventions, checked against hand-computed values."""
import math

import pytest
import torch

from core.camera import (
    DEFAULT_FOV_DEG,
    Camera,
    camera_label,
    fov_to_intrinsics,
    look_at_cam2world,
    project_to_pixels,
    ray_bundle,
    split_label,
)

PIVOT = (0.0, 0.0, 0.2)


def test_frontal_camera_sits_on_plus_z_in_opencv_orientation():
    pose = look_at_cam2world(0, 0, 2.7, PIVOT)
    assert pose.dtype == torch.float32 and pose.shape == (4, 4)
    # The camera stays at `radius` from the world origin; only its aim depends on the pivot.
    assert torch.allclose(pose[:3, 3], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6)
    # OpenCV axes in the world: x right (+x), y down (-y), z forward (towards -z).
    assert torch.allclose(pose[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)
    assert torch.equal(pose[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_positive_yaw_moves_camera_to_plus_x():
    pose = look_at_cam2world(90, 0, 2.7, PIVOT)
    assert torch.allclose(pose[:3, 3], torch.tensor([2.7, 0.0, 0.0]), atol=1e-6)
    forward = torch.tensor([-2.7, 0.0, 0.2]) / math.hypot(2.7, 0.2)
    assert torch.allclose(pose[:3, 2], forward, atol=1e-6)
    # Still no roll: the image x axis stays horizontal, the image y axis points down.
    assert abs(pose[1, 0]) < 1e-6 and pose[1, 1] < 0


def test_positive_pitch_moves_camera_down_linearly_in_height():
    # EG3D maps pitch through arccos(1 - 2v/pi): height is linear in pitch, y = -r * pitch/90.
    pose = look_at_cam2world(0, 30, 2.7, PIVOT)
    assert pose[1, 3].item() == pytest.approx(-0.9, abs=1e-6)
    assert torch.linalg.norm(pose[:3, 3]).item() == pytest.approx(2.7, abs=1e-6)
    assert pose[1, 2] > 0  # looks up at the subject
    assert look_at_cam2world(0, -30, 2.7, PIVOT)[1, 3].item() == pytest.approx(0.9, abs=1e-6)


def test_intrinsics_of_default_fov():
    k = fov_to_intrinsics(DEFAULT_FOV_DEG)
    # EG3D's FOV_to_intrinsics uses 3.14159 and 1.414: f = 1 / (tan(fov*3.14159/360) * 1.414).
    focal = 1 / (math.tan(18.837 * 3.14159 / 360) * 1.414)
    # (4.2634; the 4.2647 found in FFHQ's dataset labels is not what the scripts' FOV gives.)
    assert focal == pytest.approx(4.26339, abs=1e-5)
    expected = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    assert torch.equal(k, expected)


def test_label_round_trip_batched_and_unbatched():
    poses = torch.stack([look_at_cam2world(y, p, 2.7, PIVOT) for y, p in [(0, 0), (20, -5), (-45, 10)]])
    k = fov_to_intrinsics(DEFAULT_FOV_DEG)
    labels = camera_label(poses, k)
    assert labels.shape == (3, 25)
    assert torch.equal(labels[:, :16], poses.reshape(3, 16))
    back_pose, back_k = split_label(labels)
    assert torch.equal(back_pose, poses) and torch.equal(back_k, k.expand(3, 3, 3))
    single = camera_label(poses[1], k)
    assert single.shape == (1, 25)
    pose1, k1 = split_label(single[0])
    assert pose1.shape == (1, 4, 4) and torch.equal(pose1[0], poses[1]) and torch.equal(k1[0], k)
    assert torch.equal(Camera(yaw=20, pitch=-5).label(), labels[1])


@pytest.mark.parametrize("pivot,radius", [((0.0, 0.0, 0.2), 2.7), ((0.0, 0.0, -0.06), 2.7), ((0.0, 0.0, 0.0), 1.7)])
def test_camera_from_label_round_trip(pivot, radius):
    for yaw in range(-175, 180, 25):
        for pitch in (-80, -45, -10, 0, 7.5, 33, 60, 85):
            for fov in (12.0, DEFAULT_FOV_DEG, 49.13):
                camera = Camera(yaw=yaw, pitch=pitch, radius=radius, fov=fov, pivot=pivot)
                back = Camera.from_label(camera.label(), pivot=pivot)
                assert back.yaw == pytest.approx(yaw, abs=2e-3)
                assert back.pitch == pytest.approx(pitch, abs=2e-3)
                assert back.radius == pytest.approx(radius, abs=1e-5)
                assert back.fov == pytest.approx(fov, abs=1e-4)
                assert back.pivot == pivot


def _bad(label_fn):
    label = Camera(yaw=25, pitch=-10).label().clone()
    pose, k = (m[0] for m in split_label(label))
    label_fn(pose, k)
    return camera_label(pose, k)[0]


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda pose, k: pose[:3, 3].add_(torch.tensor([0.3, 0.0, 0.0])), "does not look at the pivot"),
        (lambda pose, k: pose[:3, :3].mul_(1.1), "not a rigid transform"),
        (lambda pose, k: pose[:3, 0].neg_(), "not a rigid transform"),  # a reflection
        (lambda pose, k: pose[3].copy_(torch.tensor([0.0, 0.0, 0.1, 1.0])), "last row"),
        (lambda pose, k: k[1, 1].mul_(1.05), "square pixels"),
        (lambda pose, k: k[0, 2].fill_(0.45), "principal point"),
        (lambda pose, k: k[0, 1].fill_(0.01), "skew"),
    ],
)
def test_camera_from_label_rejects_non_look_at_labels(corrupt, message):
    with pytest.raises(ValueError, match=message):
        Camera.from_label(_bad(corrupt))


def test_camera_from_label_rejects_roll_wrong_pivot_and_bad_shapes():
    label = Camera(yaw=25, pitch=-10).label()
    pose, k = (m[0] for m in split_label(label))
    angle = math.radians(5)
    roll = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    rolled = pose.clone()
    rolled[:3, :3] = pose[:3, :3] @ roll  # rotate about the optical axis: still aims at the pivot
    with pytest.raises(ValueError, match="roll"):
        Camera.from_label(camera_label(rolled, k)[0])
    with pytest.raises(ValueError, match="does not look at the pivot"):
        Camera.from_label(label, pivot=(0.0, 0.0, -0.06))
    with pytest.raises(ValueError, match="25"):
        Camera.from_label(label[:24])
    with pytest.raises(ValueError, match="NaN"):
        Camera.from_label(torch.full((25,), float("nan")))


def test_centre_ray_points_at_pivot_and_pixels_are_row_major():
    for camera in (Camera(), Camera(yaw=40, pitch=-20), Camera(yaw=-120, pitch=15, radius=1.7, pivot=(0.0, 0.0, 0.0))):
        origins, directions = ray_bundle(camera.cam2world()[None], camera.intrinsics()[None], 5)
        assert origins.shape == directions.shape == (1, 25, 3)
        position = camera.cam2world()[:3, 3]
        assert torch.allclose(origins[0], position.expand(25, 3))
        assert torch.allclose(directions.norm(dim=-1), torch.ones(1, 25), atol=1e-6)
        to_pivot = torch.tensor(camera.pivot) - position
        centre = directions[0, 2 * 5 + 2]  # row 2, column 2
        assert torch.allclose(centre, to_pivot / to_pivot.norm(), atol=1e-6)
    # Frontal camera: pixel 0 is the top-left corner (world -x, +y); pixel 4 the top-right.
    _, directions = ray_bundle(Camera().cam2world(), Camera().intrinsics(), 5)
    assert directions[0, 0, 0] < 0 and directions[0, 0, 1] > 0
    assert directions[0, 4, 0] > 0 and directions[0, 4, 1] > 0
    assert directions[0, 20, 0] < 0 and directions[0, 20, 1] < 0


def test_project_to_pixels_inverts_the_ray_bundle():
    camera = Camera(yaw=35.0, pitch=-12.0)
    cam2world, intrinsics = split_label(camera.label())
    resolution = 24
    origins, directions = ray_bundle(cam2world, intrinsics, resolution)
    depths = torch.linspace(2.2, 3.2, resolution * resolution)[:, None]
    points = origins[0] + depths * directions[0]
    row, column, z = project_to_pixels(camera.label(), points, resolution)
    assert torch.equal(row * resolution + column, torch.arange(resolution * resolution))
    assert bool((z > 0).all())
    behind = origins[0][:1] - directions[0][:1]
    assert project_to_pixels(camera.label(), behind, resolution)[2].item() < 0
