"""EG3D volume rendering: plane lookup, sampling modes, chunking and a known analytic scene."""
import torch

from core.camera import Camera, ray_bundle
from core.generator.rendering import (
    ImportanceRenderer,
    MipRayMarcher2,
    coarse_depths,
    generate_planes,
    project_onto_planes,
    ray_box_limits,
    sample_from_planes,
)

FFHQ_OPTIONS = dict(depth_resolution=12, depth_resolution_importance=12, ray_start=2.25, ray_end=3.3, box_warp=1,
                    disparity_space_sampling=False, clamp_mode="softplus")


class MeanDecoder(torch.nn.Module):
    """Averages the three planes like EG3D's decoder; channel 0 is density, the rest colour."""

    def forward(self, sampled_features, ray_directions):
        x = sampled_features.mean(1)
        return {"rgb": torch.sigmoid(x[..., 1:]), "sigma": x[..., :1] * 3}


def _rays(camera=Camera(), resolution=8):
    return ray_bundle(camera.cam2world()[None], camera.intrinsics()[None], resolution)


def _random_planes(seed=0, channels=5, size=16):
    return torch.randn(1, 3, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 3


def test_plane_projection_reproduces_eg3d_axes():
    point = torch.tensor([[[0.1, 0.2, 0.3]]])
    projected = project_onto_planes(generate_planes(), point)
    # EG3D's planes read (x, y), (x, z) and -- a quirk the checkpoints depend on -- (z, x).
    assert torch.allclose(projected[:, 0], torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.1]]))


def test_plane_lookup_uses_width_for_first_coordinate_and_box_warp():
    size = 8
    centres = (torch.arange(size) + 0.5) / size * 2 - 1  # align_corners=False pixel centres
    planes = torch.zeros(1, 3, 2, size, size)
    planes[:, :, 0] = centres.view(1, size)  # varies along the width
    planes[:, :, 1] = centres.view(size, 1)  # varies along the height
    point = torch.tensor([[[0.3, -0.2, 0.45], [0.0, 0.0, 1.5]]])
    features = sample_from_planes(generate_planes(), planes, point, box_warp=2.0)
    expected = torch.tensor([[0.3, -0.2], [0.3, 0.45], [0.45, 0.3]])
    assert torch.allclose(features[0, :, 0], expected, atol=1e-6)
    # With box_warp=2 the planes span [-1, 1]: z=1.5 is outside the (x, z) and (z, x) planes.
    assert torch.equal(features[0, 1:, 1], torch.zeros(2, 2))
    # box_warp=1 halves the span: the same point reads twice the coordinates.
    half = sample_from_planes(generate_planes(), planes, point[:, :1] / 2, box_warp=1.0)
    assert torch.allclose(half[0, :, 0], expected, atol=1e-6)


def test_ray_box_limits_hand_case():
    origins = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 2.0, 2.0]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])
    near, far = ray_box_limits(origins, directions, 1.6)
    assert torch.allclose(near[0, :, 0], torch.tensor([1.2, -1.0]))
    assert torch.allclose(far[0, :, 0], torch.tensor([2.8, -2.0]))


def test_deterministic_coarse_depths_are_linspace():
    depths = coarse_depths(1, 3, 2.25, 3.3, 48, False, True, "cpu")
    assert torch.equal(depths[0, 2, :, 0], torch.linspace(2.25, 3.3, 48))


def test_deterministic_mode_is_deterministic_and_default_mode_jitters():
    renderer, planes, decoder = ImportanceRenderer(), _random_planes(), MeanDecoder()
    origins, directions = _rays()
    first = renderer(planes, decoder, origins, directions, FFHQ_OPTIONS, deterministic=True, return_samples=True)
    second = renderer(planes, decoder, origins, directions, FFHQ_OPTIONS, deterministic=True, return_samples=True)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    jittered_a = renderer(planes, decoder, origins, directions, FFHQ_OPTIONS, return_samples=True)
    jittered_b = renderer(planes, decoder, origins, directions, FFHQ_OPTIONS, return_samples=True)
    assert not torch.equal(jittered_a["depths"], jittered_b["depths"])
    assert not torch.equal(jittered_a["depths"], first["depths"])
    noisy = dict(FFHQ_OPTIONS, density_noise=1.0)
    quiet = renderer(planes, decoder, origins, directions, noisy, deterministic=True, return_samples=True)
    assert torch.equal(quiet["sigma"], first["sigma"])  # deterministic also switches density noise off


def test_default_return_is_eg3d_triplet():
    renderer, planes = ImportanceRenderer(), _random_planes(channels=4)
    origins, directions = _rays(resolution=4)
    features, depth, weights = renderer(planes, MeanDecoder(), origins, directions, FFHQ_OPTIONS, deterministic=True)
    assert features.shape == (1, 16, 3) and depth.shape == (1, 16, 1) and weights.shape == (1, 16, 1)


def test_chunked_rendering_matches_unchunked():
    renderer, planes, decoder = ImportanceRenderer(), _random_planes(seed=1), MeanDecoder()
    camera = Camera(yaw=30, pitch=-10, radius=1.7, fov=49.13, pivot=(0.0, 0.0, 0.0))
    origins, directions = _rays(camera, resolution=8)
    shapenet_auto = dict(FFHQ_OPTIONS, ray_start="auto", ray_end="auto", box_warp=1.6, white_back=True)
    for options in (FFHQ_OPTIONS, shapenet_auto, dict(FFHQ_OPTIONS, disparity_space_sampling=True)):
        whole = renderer(planes, decoder, origins, directions, options, deterministic=True, return_samples=True)
        chunked = renderer(planes, decoder, origins, directions, options, deterministic=True, return_samples=True,
                           max_rays_per_chunk=7)
        assert whole.keys() == chunked.keys()
        for key in whole:
            assert torch.allclose(whole[key], chunked[key], atol=1e-6, rtol=0), key


def test_weights_sum_to_at_most_one():
    renderer, decoder = ImportanceRenderer(), MeanDecoder()
    origins, directions = _rays(Camera(yaw=-20, pitch=15), resolution=8)
    for seed in range(3):
        out = renderer(_random_planes(seed) * 5, decoder, origins, directions, FFHQ_OPTIONS, return_samples=True)
        assert (out["weights"] >= 0).all()
        assert (out["weights_total"] <= 1 + 1e-6).all()
        assert torch.allclose(out["weights"].sum(2), out["weights_total"])


def test_samples_composite_back_to_the_rendered_features():
    # The semantic branch composites its own per-sample values with these weights.
    renderer, planes, decoder = ImportanceRenderer(), _random_planes(seed=2), MeanDecoder()
    origins, directions = _rays(resolution=6)
    out = renderer(planes, decoder, origins, directions, FFHQ_OPTIONS, deterministic=True, return_samples=True)
    n, m, s, _ = out["depths"].shape
    assert s == 24 and out["weights"].shape == (n, m, s - 1, 1)
    points = origins.unsqueeze(-2) + out["depths"] * directions.unsqueeze(-2)
    values = renderer.run_model(planes, decoder, points.reshape(n, -1, 3),
                                directions.unsqueeze(-2).expand(-1, -1, s, -1).reshape(n, -1, 3), FFHQ_OPTIONS)
    colours = values["rgb"].reshape(n, m, s, -1)
    assert torch.allclose(values["sigma"].reshape(n, m, s, 1), out["sigma"], atol=1e-6)
    assert torch.allclose(MipRayMarcher2.composite(colours, out["weights"]) * 2 - 1, out["features"], atol=1e-5)


def test_opaque_wall_renders_at_its_analytic_depth():
    # Density from the (x, z) plane only: opaque wherever z < 0.1, inside the box (box_warp=1,
    # so the planes cover [-0.5, 0.5]). A frontal camera at z=2.7 must see the wall at
    # t = (2.7 - 0.1) / -d_z along each ray.
    size, wall_z = 128, 0.1
    row_z = ((torch.arange(size) + 0.5) / size * 2 - 1) / 2  # world z of each row centre
    planes = torch.zeros(1, 3, 4, size, size)
    planes[0, 1, 0] = torch.where(row_z < wall_z, 300.0, -30.0).view(size, 1).expand(size, size)
    origins, directions = _rays(Camera(), resolution=8)
    options = dict(FFHQ_OPTIONS, depth_resolution=48, depth_resolution_importance=48)
    _, depth, weights = ImportanceRenderer()(planes, MeanDecoder(), origins, directions, options, deterministic=True)
    expected = (2.7 - wall_z) / -directions[..., 2:]
    # The density steps between two row centres (1/128 wide) and samples are ~1/100 apart.
    assert (depth - expected).abs().max() < 0.005
    assert (weights > 0.999).all()
