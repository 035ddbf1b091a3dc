"""Labelled point clouds: back-projection conventions, fusion, voxel majority, PLY files."""
import numpy as np
import pytest
import torch

from core.backbone import Backbone
from core.camera import Camera
from core.factory.pointcloud import (PointCloud, backproject, fuse_identity_views, ply_bytes, read_ply,
                                     voxel_downsample, write_ply)
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import RENDERING, HeadParams, ProceduralHead
from core.semantic import SemanticBranch

NUM_CLASSES = 4
RES = 16


def head_camera(yaw, pitch=0.0):
    return Camera(yaw, pitch, radius=RENDERING["avg_camera_radius"], fov=RENDERING["fov"],
                  pivot=tuple(RENDERING["avg_camera_pivot"]))


@pytest.fixture(scope="module")
def tiny():
    generator = TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=RES), 0)
    torch.manual_seed(1)
    return Backbone(generator, "tiny", "tiny-hash"), SemanticBranch.for_generator(generator, NUM_CLASSES).eval()


def read_ply_with_numpy(path):
    """An independent reader: the header parsed by hand, the body with one fixed numpy dtype."""
    data = open(path, "rb").read()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[2])
    properties = [line.split()[1:] for line in lines if line.startswith("property")]
    assert properties == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"], ["uchar", "green"],
                          ["uchar", "blue"], ["uchar", "label"]]
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1"), ("l", "u1")])
    assert len(body) == count * 16
    return np.frombuffer(body, dtype)


# ---------------------------------------------------------------------------- back-projection
def test_backprojected_procedural_depth_lies_on_the_surface():
    """The procedural renderer's depth is t along the unit ray, like EG3D's: the points must
    land on the head's surface (sdf ~ 0) for any camera."""
    head = ProceduralHead(HeadParams.from_seed(2_000_003))
    for camera in (head_camera(0), head_camera(60, 20), head_camera(-80, -25)):
        buffers = head.render(camera.label(), 48)
        valid = buffers["alpha"] > 0.5
        points = backproject(buffers["depth"], camera.label(), valid)
        assert points.shape == (valid.sum(), 3) and points.dtype == np.float32
        assert np.abs(head.sdf(points)).max() < 2e-3


def test_backproject_puts_points_at_depth_along_each_ray():
    camera = head_camera(30, 10)
    depth = np.full((8, 8), 2.5, np.float32)
    valid = np.zeros((8, 8), bool)
    valid[2, 5] = valid[7, 0] = True
    points = backproject(depth, camera.label(), valid)
    position = camera.cam2world()[:3, 3].numpy()
    assert np.allclose(np.linalg.norm(points - position, axis=1), 2.5, atol=1e-5)
    # pixel (2, 5) is up and right of centre: in the camera frame x > 0 (right) and y < 0 (up)
    rotation = camera.cam2world()[:3, :3].numpy()
    local = (points[0] - position) @ rotation
    assert local[0] > 0 and local[1] < 0 and local[2] > 0


def test_backproject_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="square"):
        backproject(np.ones((4, 6)), Camera().label(), np.ones((4, 6), bool))


# ---------------------------------------------------------------------------- fusion
def test_fused_cloud_of_a_generator(tiny):
    backbone, branch = tiny
    cameras = [head_camera(-30), head_camera(0), head_camera(30, 10)]
    everything = fuse_identity_views(backbone, branch, 5, cameras, resolution=RES, alpha_threshold=0.0)
    assert len(everything) == 3 * RES * RES  # threshold 0: every pixel of every view
    assert np.isfinite(everything.points).all() and everything.labels.max() < NUM_CLASSES
    nothing = fuse_identity_views(backbone, branch, 5, cameras, resolution=RES, alpha_threshold=1.01)
    assert len(nothing) == 0
    # same inputs, same cloud; labels given as a (V, 25) array work the same
    labels = np.stack([c.label().numpy() for c in cameras])
    again = fuse_identity_views(backbone, branch, 5, labels, resolution=RES, alpha_threshold=0.0)
    assert np.array_equal(again.points, everything.points) and np.array_equal(again.labels, everything.labels)
    # a larger label resolution upsamples the depth maps
    fine = fuse_identity_views(backbone, branch, 5, cameras[:1], resolution=2 * RES, alpha_threshold=0.0)
    assert len(fine) == 4 * RES * RES
    coarse = fuse_identity_views(backbone, branch, 5, cameras, resolution=RES, alpha_threshold=0.0, voxel_size=0.05)
    assert 0 < len(coarse) < len(everything)


def test_point_labels_come_from_the_semantic_field_or_the_pixels(tiny):
    from core.factory.pointcloud import fuse_views
    from core.factory.views import render_identity_views

    backbone, branch = tiny
    identity = backbone.identity_from_seed(5)
    cameras = np.stack([head_camera(yaw).label().numpy() for yaw in (-30, 20)])
    views = render_identity_views(backbone.generator, branch, identity, cameras, RES)
    field = fuse_views(views, alpha_threshold=0.0)
    pixels = fuse_views(views, alpha_threshold=0.0, point_labels="pixels")
    assert np.array_equal(field.points, pixels.points) and np.array_equal(field.colors, pixels.colors)
    assert np.array_equal(pixels.labels, views.labels.reshape(-1))  # threshold 0: every pixel, row-major
    # the field's label is the decoder's argmax at the point itself, whichever view it came from
    semantic = branch.semantic_identity(identity)
    with torch.no_grad():
        logits = branch.query_points(semantic, torch.from_numpy(field.points)[None],
                                     backbone.generator.rendering_kwargs["box_warp"])["logits"][0]
    assert np.array_equal(field.labels, logits.argmax(-1).numpy())
    assert np.array_equal(views.label_points(field.points[::-1]), field.labels[::-1])
    with pytest.raises(ValueError, match="point_labels"):
        fuse_views(views, point_labels="votes")
    views.label_points = None
    with pytest.raises(ValueError, match="semantic branch"):
        fuse_views(views)


def test_voxel_downsampling_keeps_the_majority_label_and_mean_position():
    points = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.01], [0.51, 0.5, 0.5],
                       [0.52, 0.5, 0.5]], np.float32)
    colors = np.array([[0, 0, 0], [30, 30, 30], [60, 60, 60], [10, 20, 30], [10, 20, 30]], np.uint8)
    labels = np.array([3, 3, 1, 2, 5], np.uint8)  # voxel 1: 3 wins 2:1; voxel 2: tie 2/5 -> 2
    cloud = voxel_downsample(PointCloud(points, colors, labels), 0.1)
    order = np.argsort(cloud.points[:, 0])
    assert len(cloud) == 2
    assert cloud.labels[order].tolist() == [3, 2]
    assert np.allclose(cloud.points[order][0], points[:3].mean(0))
    assert cloud.colors[order][0].tolist() == [30, 30, 30]
    with pytest.raises(ValueError, match="positive"):
        voxel_downsample(cloud, 0)


# ---------------------------------------------------------------------------- PLY
def test_ply_round_trip_and_independent_reader(tmp_path):
    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.normal(size=(100, 3)), rng.integers(0, 256, (100, 3)), rng.integers(0, 12, 100))
    path = tmp_path / "cloud.ply"
    write_ply(path, cloud, comments=("identity 7",))
    back = read_ply(path)
    assert np.array_equal(back.points, cloud.points) and np.array_equal(back.colors, cloud.colors)
    assert np.array_equal(back.labels, cloud.labels)
    raw = read_ply_with_numpy(path)
    assert np.array_equal(np.stack([raw["x"], raw["y"], raw["z"]], 1), cloud.points)
    assert np.array_equal(np.stack([raw["r"], raw["g"], raw["b"]], 1), cloud.colors)
    assert np.array_equal(raw["l"], cloud.labels)
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]  # no temporary file left


def test_empty_cloud_is_a_valid_ply(tmp_path):
    write_ply(tmp_path / "empty.ply", PointCloud.concatenate([]))
    assert len(read_ply(tmp_path / "empty.ply")) == 0
    assert len(read_ply_with_numpy(tmp_path / "empty.ply")) == 0


def test_bad_ply_files_are_named(tmp_path):
    cloud = PointCloud(np.zeros((10, 3)), np.zeros((10, 3)), np.zeros(10))
    truncated = tmp_path / "truncated.ply"
    truncated.write_bytes(ply_bytes(cloud)[:-5])
    with pytest.raises(ValueError, match="truncated.ply: truncated"):
        read_ply(truncated)
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="ascii.ply: only binary_little_endian"):
        read_ply(ascii_ply)
    not_ply = tmp_path / "image.ply"
    not_ply.write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="image.ply: not a PLY"):
        read_ply(not_ply)
    with pytest.raises(ValueError, match="missing.ply"):
        read_ply(tmp_path / "missing.ply")
