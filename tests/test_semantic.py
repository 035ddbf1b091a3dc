"""The semantic branch: shapes, multi-scale tri-plane, density prior, training, checkpoints, caching."""
import dataclasses

import numpy as np
import pytest
import torch

from core.backbone import Backbone, seed_to_z
from core.camera import Camera
from core.checkpoint.errors import CheckpointError, CorruptCheckpointError, ForeignCheckpointError
from core.checkpoint.studio_format import save_generator
from core.generator.configs import official_config, tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.semantic import SemanticBranch, labels_for_view, view_prior
from core.semantic.branch import upsample_to
from core.semantic.checkpoint import (
    BackboneMismatchError,
    clear_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    load_branch,
    read_branch_metadata,
    save_branch,
)
from core.semantic.rendering import MipRayMarcher2, crop_prior, quantile_depths, render_semantic, sample_coefficients
from core.semantic.training import IGNORE_LABEL, AnnotatedView, TrainingSettings, train_semantic, validate_mask

NUM_CLASSES = 4
RESOLUTION = 16  # neural = output resolution for these tests


def make_generator(seed=0):
    return TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=RESOLUTION), seed)


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture(scope="module")
def backbone(G):
    return Backbone(G, "tiny", "hash-of-tiny")


def identity_of(G, seeds=(0,)):
    z = torch.cat([seed_to_z(seed, G.z_dim) for seed in seeds])
    return G.synthesize(G.mapping(z, G.frontal_camera_label()[None].expand(len(seeds), -1)))


def new_branch(G, seed=1, **options):
    torch.manual_seed(seed)
    return SemanticBranch.for_generator(G, NUM_CLASSES, **options)


def striped_mask(offset: int) -> np.ndarray:
    """A learnable pattern: vertical bands of the classes, shifted per view."""
    columns = (np.arange(RESOLUTION) + offset) // (RESOLUTION // NUM_CLASSES) % NUM_CLASSES
    return np.tile(columns.astype(np.uint8), (RESOLUTION, 1))


def annotations():
    return [
        AnnotatedView(0, Camera(yaw=-30).label(), striped_mask(0), source="a0"),
        AnnotatedView(0, Camera(yaw=30).label(), striped_mask(2), source="a1"),
        AnnotatedView(1, Camera(yaw=0).label(), striped_mask(1), source="a2"),
    ]


FAST = TrainingSettings(learning_rate=5e-3, views_per_step=2, checkpoint_every=2, keep_checkpoints=2)


# ---------------------------------------------------------------------------- the networks
def test_labels_and_logits_shapes(G):
    branch = new_branch(G)
    result = labels_for_view(branch, G, identity_of(G, (0, 1)), Camera(yaw=15).label(), RESOLUTION)
    assert result.labels.shape == (2, RESOLUTION, RESOLUTION) and result.labels.dtype == torch.int64
    assert result.logits.shape == (2, NUM_CLASSES, RESOLUTION, RESOLUTION)
    assert result.view.depth.shape == (2, 1, RESOLUTION, RESOLUTION)


def test_super_resolution_reaches_a_larger_output(G):
    result = labels_for_view(new_branch(G), G, identity_of(G), Camera().label(), 2 * RESOLUTION)
    assert result.logits.shape == (1, NUM_CLASSES, 2 * RESOLUTION, 2 * RESOLUTION)


def test_a_generator_with_super_resolution_gets_labels_at_its_image_resolution():
    torch.manual_seed(0)
    init_kwargs, neural_resolution = tiny_config(superresolution=True)
    G_sr = TriPlaneGenerator(**init_kwargs).eval().requires_grad_(False)
    G_sr.neural_rendering_resolution = neural_resolution
    branch = SemanticBranch.for_generator(G_sr, NUM_CLASSES)
    result = labels_for_view(branch, G_sr, identity_of(G_sr), Camera().label())
    assert result.view.image.shape[-1] == 128 and result.view.depth.shape[-1] == neural_resolution == 64
    assert result.labels.shape == (1, 128, 128)


def test_semantic_triplane_uses_every_block_or_only_the_last(G):
    identity = identity_of(G)
    resolutions = sorted(identity.block_features)
    multiscale, last_only = new_branch(G), new_branch(G, multiscale=False)
    assert multiscale.triplane.resolutions == resolutions
    assert last_only.triplane.resolutions == resolutions[-1:]
    planes = multiscale.encode(identity).planes
    assert planes.shape == (1, 3, 32, G.plane_resolution, G.plane_resolution)
    # Every block's features reach the planes: perturbing any one block changes them.
    for res in resolutions:
        changed = {r: x + (1.0 if r == res else 0.0) * torch.randn_like(x) for r, x in identity.block_features.items()}
        assert not torch.allclose(multiscale.triplane(changed), planes), f"block {res} is not used"
        unchanged_in_ablation = torch.allclose(last_only.triplane(changed), last_only.triplane(identity.block_features))
        assert unchanged_in_ablation == (res != resolutions[-1])


def test_official_eg3d_shapes_fit_in_a_small_semantic_triplane():
    init_kwargs, _ = official_config("ffhq512")
    block_channels = {res: min(init_kwargs["channel_base"] // res, init_kwargs["channel_max"])
                      for res in (4, 8, 16, 32, 64, 128, 256)}
    branch = SemanticBranch(block_channels, 256, num_classes=12)
    assert sum(block_channels.values()) == 2944  # what the paper's concatenation would hold at 256²
    with torch.no_grad():
        planes = branch.triplane({res: torch.randn(1, c, res, res) for res, c in block_channels.items()})
    assert planes.shape == (1, 3, 32, 256, 256)
    logits = branch.superresolution(torch.randn(1, 32, 16, 16), torch.randn(1, 12, 16, 16), torch.rand(1, 1, 16, 16),
                                    torch.randn(1, 3, 64, 64), 64)
    assert logits.shape == (1, 12, 64, 64)  # 4× semantic super-resolution, as 128² → 512² on EG3D


def test_projection_before_upsampling_equals_the_papers_order(G):
    identity = identity_of(G)
    triplane = new_branch(G).triplane
    with torch.no_grad():
        ours = triplane(identity.block_features)
        upsampled = []
        for res in triplane.resolutions:
            x = identity.block_features[res]
            x = x / x.pow(2).mean().add(1e-8).sqrt()
            upsampled.append(upsample_to(x, 32))
        weight = torch.cat([triplane.projections[f"b{res}"].weight for res in triplane.resolutions], dim=1)
        papers = torch.nn.functional.conv2d(torch.cat(upsampled, 1), weight, triplane.bias)
    assert torch.allclose(ours.reshape(papers.shape), papers, atol=1e-5)


@torch.no_grad()
def test_density_prior_opacity_is_the_backbones_weight_total(G):
    branch = new_branch(G)
    identity = identity_of(G)
    label = Camera(yaw=10, pitch=5).label()
    exact, view = view_prior(G, identity, label, RESOLUTION, density_prior=True, min_weight=0.0, samples_per_ray=None)
    planes = branch.encode(identity).planes
    output = render_semantic(branch, planes, exact, RESOLUTION)
    weights_total = view.samples["weights"].sum(2).reshape(1, 1, RESOLUTION, RESOLUTION)
    assert torch.allclose(output.opacity, weights_total, atol=1e-5)
    # The quadrature (k samples per ray) keeps each ray's opacity; only rays whose total weight
    # is below k * min_weight are dropped.
    k = 4
    quadrature, _ = view_prior(G, identity, label, RESOLUTION, density_prior=True, view=view, samples_per_ray=k)
    approx = render_semantic(branch, planes, quadrature, RESOLUTION)
    assert (approx.opacity - weights_total).abs().max() <= k * 1e-4
    assert quadrature.samples.points_per_ray() <= k
    tolerance = 0.1 * output.feature_image.abs().max().item()
    assert torch.allclose(approx.feature_image, output.feature_image, atol=tolerance)


def test_quantile_depths_follow_the_backbones_weights():
    edges = torch.linspace(2.0, 3.0, 11)[None]  # ten intervals of 0.1
    sharp = torch.zeros(1, 10)
    sharp[0, 4] = 0.9
    on_surface = quantile_depths(edges, sharp, 8)
    assert ((on_surface >= 2.4 - 1e-6) & (on_surface <= 2.5 + 1e-6)).all()
    uniform = quantile_depths(edges, torch.ones(1, 10), 4)
    assert torch.allclose(uniform, torch.tensor([[2.125, 2.375, 2.625, 2.875]]))


@torch.no_grad()
def test_a_crop_renders_the_same_rays_as_the_whole_view(G):
    identity = identity_of(G)
    for density_prior in (True, False):
        branch = new_branch(G, density_prior=density_prior)
        planes = branch.encode(identity).planes
        prior, _ = view_prior(G, identity, Camera(yaw=25).label(), RESOLUTION, density_prior=density_prior)
        whole = render_semantic(branch, planes, prior, 2 * RESOLUTION)
        part = render_semantic(branch, planes, crop_prior(prior, 3, 5, 8, 2 * RESOLUTION), 16)
        assert torch.allclose(part.raw_logits, whole.raw_logits[..., 3:11, 5:13], atol=1e-5)
        assert torch.allclose(part.opacity, whole.opacity[..., 3:11, 5:13], atol=1e-6)
        # The super-resolution is local: away from the crop's border it agrees as well.
        assert torch.allclose(part.logits[..., 6:10, 6:10], whole.logits[..., 12:16, 16:20], atol=1e-4)


def test_sample_coefficients_reproduce_eg3d_compositing():
    torch.manual_seed(0)
    values, weights = torch.randn(2, 5, 7, 3), torch.rand(2, 5, 6, 1)
    expected = MipRayMarcher2.composite(values, weights)
    assert torch.allclose((sample_coefficients(weights[..., 0])[..., None] * values).sum(2), expected, atol=1e-6)


def test_without_density_prior_the_branch_renders_its_own_density(G):
    branch = new_branch(G, density_prior=False)
    identity = identity_of(G)
    prior, view = view_prior(G, identity, Camera().label(), RESOLUTION, density_prior=False)
    output = render_semantic(branch, branch.encode(identity).planes, prior, RESOLUTION)
    backbone_total = view.samples["weights"].sum(2).reshape(output.opacity.shape)
    assert not torch.allclose(output.opacity, backbone_total, atol=1e-3)
    output.logits.sum().backward()
    assert branch.decoder.output.weight.grad is not None


def test_cached_identity_gives_the_same_labels_as_an_uncached_call(G):
    branch = new_branch(G).eval()
    identity, label = identity_of(G), Camera(yaw=-20).label()
    first = labels_for_view(branch, G, identity, label, RESOLUTION)
    cached = branch.semantic_identity(identity)
    assert branch.semantic_identity(identity) is cached  # computed once, then reused
    again = labels_for_view(branch, G, identity, label, RESOLUTION)
    fresh = labels_for_view(branch, G, branch.encode(identity), label, RESOLUTION)
    assert torch.equal(first.labels, again.labels) and torch.equal(first.labels, fresh.labels)
    assert torch.allclose(first.logits, fresh.logits)
    # Changing the weights in place invalidates the cache.
    with torch.no_grad():
        branch.triplane.bias.add_(1.0)
    assert branch.semantic_identity(identity) is not cached


# ---------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_leaves_the_backbone_untouched(backbone):
    G = backbone.generator
    before = {name: p.clone() for name, p in G.named_parameters()}
    branch = new_branch(G)
    full_batch = dataclasses.replace(FAST, views_per_step=3)  # the same loss every step: comparable
    result = train_semantic(branch, backbone, annotations(), steps=12, settings=full_batch)
    losses = [loss for _, loss in result.history]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    for name, p in G.named_parameters():
        assert not p.requires_grad and p.grad is None and torch.equal(p, before[name]), name
    assert all(p.grad is not None for p in branch.parameters())


def test_checkpoints_round_trip_and_resume_continues_the_step_count(backbone, tmp_path):
    G = backbone.generator
    branch = new_branch(G)
    first = train_semantic(branch, backbone, annotations(), steps=4, checkpoint_dir=tmp_path, settings=FAST)
    assert first.step == 4 and first.checkpoint.name == "semantic-step0000004.safetensors"
    metadata = read_branch_metadata(first.checkpoint)
    assert metadata["step"] == 4 and metadata["backbone_hash"] == "hash-of-tiny"
    assert metadata["branch_config"] == branch.config and "train_loss" in metadata["metrics"]

    loaded, _ = load_branch(first.checkpoint, backbone_hash="hash-of-tiny")
    identity, label = identity_of(G), Camera(yaw=5).label()
    assert torch.equal(labels_for_view(loaded, G, identity, label).logits,
                       labels_for_view(branch, G, identity, label).logits)

    resumed_branch = new_branch(G, seed=7)  # different init: resume must overwrite it
    resumed = train_semantic(resumed_branch, backbone, annotations(), steps=6, checkpoint_dir=tmp_path,
                             resume=True, settings=FAST)
    assert resumed.step == 6 and [step for step, _ in resumed.history] == [5, 6]
    # An uninterrupted run of 6 steps ends at the same weights (same batches, restored Adam state).
    straight = new_branch(G)
    train_semantic(straight, backbone, annotations(), steps=6, settings=FAST)
    for a, b in zip(straight.parameters(), resumed_branch.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 6]  # keep_checkpoints=2


def test_a_fresh_run_refuses_a_directory_with_checkpoints(backbone, tmp_path):
    train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=2, checkpoint_dir=tmp_path,
                   settings=FAST)
    with pytest.raises(FileExistsError, match="resume"):
        train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=2, checkpoint_dir=tmp_path)
    assert latest_checkpoint(tmp_path).name == "semantic-step0000002.safetensors"
    assert clear_checkpoints(tmp_path) == 1 and latest_checkpoint(tmp_path) is None
    result = train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=1, checkpoint_dir=tmp_path)
    assert result.step == 1


def test_stop_flag_is_honoured_between_steps_with_a_final_checkpoint(backbone, tmp_path):
    steps_seen = []
    result = train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=50,
                            progress=lambda p: steps_seen.append(p.step) if p.phase == "training" else None,
                            should_stop=lambda: len(steps_seen) >= 3, checkpoint_dir=tmp_path, settings=FAST)
    assert result.stopped and result.step == 3
    assert read_branch_metadata(result.checkpoint)["step"] == 3


def test_keyboard_interrupt_keeps_the_last_checkpoint(backbone, tmp_path):
    def interrupt_at_step_5(progress):
        if progress.phase == "training" and progress.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=50,
                       progress=interrupt_at_step_5, checkpoint_dir=tmp_path, settings=FAST)
    (step, path), = list_checkpoints(tmp_path)[-1:]
    assert step == 4
    branch, _ = load_branch(path, backbone_hash="hash-of-tiny")
    assert isinstance(branch, SemanticBranch)


# ---------------------------------------------------------------------------- bad input
def test_backbone_hash_mismatch_is_a_clear_error(backbone, tmp_path):
    path = tmp_path / "branch.safetensors"
    save_branch(new_branch(backbone.generator), path, backbone_hash="hash-of-tiny")
    with pytest.raises(BackboneMismatchError, match="trained on backbone") as error:
        load_branch(path, backbone_hash="another-backbone")
    assert str(path) in str(error.value)
    # Resuming a run on another backbone fails the same way.
    other = Backbone(backbone.generator, "other", "another-backbone")
    train_semantic(new_branch(backbone.generator), backbone, annotations(), steps=2, checkpoint_dir=tmp_path / "run",
                   settings=FAST)
    with pytest.raises(BackboneMismatchError):
        train_semantic(new_branch(backbone.generator), other, annotations(), steps=4, checkpoint_dir=tmp_path / "run",
                       resume=True)


def test_foreign_and_corrupt_files_are_clear_errors(backbone, tmp_path):
    generator_file = tmp_path / "generator.safetensors"
    save_generator(backbone.generator, generator_file)
    with pytest.raises(ForeignCheckpointError, match="not a semantic branch"):
        load_branch(generator_file)
    path = tmp_path / "branch.safetensors"
    save_branch(new_branch(backbone.generator), path, backbone_hash="hash-of-tiny")
    data = bytearray(path.read_bytes())
    data[-20:] = bytes(20)  # damage the tensor bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        load_branch(path)
    (tmp_path / "junk.safetensors").write_bytes(b"hello")
    with pytest.raises(CheckpointError):
        load_branch(tmp_path / "junk.safetensors")


def test_bad_masks_name_the_annotation():
    good = striped_mask(0)
    with pytest.raises(ValueError, match=r"a7.*outside the label set"):
        validate_mask(AnnotatedView(0, Camera().label(), np.full_like(good, 9), source="a7"), NUM_CLASSES)
    with pytest.raises(ValueError, match=r"a8.*square"):
        validate_mask(AnnotatedView(0, Camera().label(), good[:8], source="a8"), NUM_CLASSES)
    unpainted = np.full_like(good, IGNORE_LABEL)
    assert (validate_mask(AnnotatedView(0, Camera().label(), unpainted), NUM_CLASSES) == IGNORE_LABEL).all()


def test_a_projects_annotations_train_the_branch(backbone, tmp_path):
    from core.project import BackboneRef, IdentityRef, Project
    from core.semantic.annotations import annotated_views

    with Project.create(tmp_path / "project", BackboneRef("default", "hash-of-tiny")) as project:
        for item in annotations():
            project.add_annotation(IdentityRef(seed=item.identity), Camera.from_label(item.camera_label), item.mask)
        np.save(tmp_path / "project" / "broken.npy", np.full((1, 3, 4), np.nan))
        project.add_annotation(IdentityRef(w_file="broken.npy"), Camera(), striped_mask(0))
        problems = []
        views = annotated_views(project, problems)
    assert len(views) == 3 and len(problems) == 1 and "0003.png" in str(problems[0])
    assert views[0].identity == 0 and views[0].source.endswith("0000.png")
    assert np.array_equal(views[1].mask, striped_mask(2))
    result = train_semantic(new_branch(backbone.generator), backbone, views, steps=2, settings=FAST)
    assert result.step == 2


def test_every_header_length_reads_back(backbone, tmp_path):
    # A header of 128 mod 256 bytes makes the file's first byte 0x80, a pickle's first byte: the
    # shared safetensors reader must still recognise it (the '{' at byte 8 decides).
    branch, path = new_branch(backbone.generator), tmp_path / "branch.safetensors"
    for length in range(256):
        save_branch(branch, path, backbone_hash="hash-of-tiny", metrics={"note": "x" * length})
        assert read_branch_metadata(path)["metrics"]["note"] == "x" * length
