"""The fit trainer, its checkpoints, `evaluate fit` and the shipped default backbone."""
import json
import math

import numpy as np
import pytest
import torch

from core.backbone import DEFAULT_BACKBONE_PATH, load_backbone
from core.checkpoint.studio_format import load_generator, read_generator_config, save_generator
from core.cli import main
from core.fileio import read_rgb
from core.fitting import evaluate as evaluation
from core.fitting.config import FitSettings, tiny_fit_config
from core.fitting.data import (BatchStream, RayBatch, occupancy_samples, sample_batch, surface_samples)
from core.fitting.trainer import (FitError, FitRequest, TrainingState, build_generator, fit,
                                  frontal_colour_logit_magnitudes, make_optimizer, next_batch, set_learning_rate,
                                  state_path, train_step, unsaturate_colour)
from core.procedural import HeadParams, ProceduralHead

EVALUATION_KEYS = {"psnr", "silhouette_iou", "depth_error", "identities", "views"}


def tiny_settings(**changes) -> FitSettings:
    settings = FitSettings(identities_per_step=2, views_per_identity=2, rays_per_identity=128,
                           stochastic=False, checkpoint_every_s=1e9, z_samples_for_w_avg=64)
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def tiny_state(settings=None) -> TrainingState:
    settings = settings or tiny_settings()
    generator = build_generator(tiny_fit_config(), seed=0)
    return TrainingState(generator, make_optimizer(generator, settings), settings)


def tiny_request(out, **changes) -> FitRequest:
    values = dict(out=out, steps=2, config=tiny_fit_config(), settings=tiny_settings())
    values.update(changes)
    return FitRequest(**values)


# ---------------------------------------------------------------------------- training
def test_a_few_steps_on_one_batch_lower_the_loss():
    torch.manual_seed(0)
    state = tiny_state()
    batch = next_batch(state, "cpu")
    losses = [train_step(state, batch)["total"] for _ in range(12)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0]


def saturate_colour(generator, factor: float = 200.0) -> None:
    with torch.no_grad():
        generator.decoder.net[-1].weight[1:] *= factor
        generator.decoder.net[-1].bias[1:] *= factor


def colour_logit_p99(generator) -> float:
    return float(torch.quantile(frontal_colour_logit_magnitudes(generator, 2, 16), 0.99))


def colour_gradient(state) -> float:
    state.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    train_step(state, next_batch(state, "cpu"))
    return float(state.generator.decoder.net[-1].weight.grad[1:4].abs().sum())


def test_saturated_colours_are_pulled_back_into_the_trainable_range():
    """A saturated sigmoid passes no gradient to colour; the hinge on |pre-activation| does."""
    state = tiny_state(tiny_settings(colour_logit_weight=0.0))
    saturate_colour(state.generator)
    assert colour_logit_p99(state.generator) > 50
    unguarded = colour_gradient(state)
    state.settings.colour_logit_weight = 0.01
    guarded = colour_gradient(state)
    assert guarded > 100 * unguarded
    losses = train_step(state, next_batch(state, "cpu"))
    assert losses["saturation"] > 0


def test_unsaturate_colour_rescales_only_the_colour_outputs():
    generator = build_generator(tiny_fit_config(), seed=0)
    saturate_colour(generator)
    density_row = generator.decoder.net[-1].weight[0].clone()
    factor = unsaturate_colour(generator, bound=4.0)
    assert factor < 0.1
    assert colour_logit_p99(generator) == pytest.approx(4.0, rel=0.3)
    assert torch.equal(generator.decoder.net[-1].weight[0], density_row)
    assert unsaturate_colour(generator, bound=4.0) == pytest.approx(1.0, abs=0.3)


def test_the_trainer_never_reads_part_labels(monkeypatch):
    """Garbage in the labels of every procedural render and of every shaded 3D point leaves the
    losses bit-identical, rays and 3D targets alike; and the part field is never queried."""
    def run():
        torch.manual_seed(0)
        state = tiny_state(tiny_settings(surface_points_per_identity=64, space_points_per_identity=64))
        return [train_step(state, next_batch(state, "cpu")) for _ in range(2)]

    clean = run()
    assert clean[0]["surface_rgb"] > 0 and clean[0]["occupancy"] > 0
    original_trace, original_shade = ProceduralHead._trace_and_shade, ProceduralHead.shade

    def with_garbage_labels(self, origins, directions, background):
        buffers = original_trace(self, origins, directions, background)
        buffers["labels"] = np.random.randint(0, 255, buffers["labels"].shape).astype(np.uint8)
        return buffers

    def shade_with_garbage_ids(self, points):
        ids, normals, colour = original_shade(self, points)
        return np.random.randint(0, 255, ids.shape).astype(np.uint8), normals, colour

    def no_label_queries(self, xyz):
        raise AssertionError("the fit asked for part labels")

    monkeypatch.setattr(ProceduralHead, "_trace_and_shade", with_garbage_labels)
    monkeypatch.setattr(ProceduralHead, "shade", shade_with_garbage_ids)
    monkeypatch.setattr(ProceduralHead, "label_at_points", no_label_queries)
    assert run() == clean


def test_surface_samples_lie_on_the_surface_with_the_colour_a_ray_shows_there():
    head = ProceduralHead(HeadParams.from_seed(7))
    rng = np.random.RandomState(0)
    points, colours = surface_samples(head, 500, jitter=0.0, rng=rng)
    assert points.shape == (500, 3) and colours.shape == (500, 3)
    assert np.abs(head.sdf(points)).max() < 2e-3
    assert colours.min() >= 0 and colours.max() <= 1 and colours.std() > 0.01
    # A ray aimed at a sample sees the same colour there.
    sample, colour = points[0], colours[0]
    origin = sample + 1.0 * np.array([0.0, 0.0, 1.0], np.float32) + 0.0
    direction = (sample - origin) / np.linalg.norm(sample - origin)
    traced = head._trace_and_shade(tuple(origin[:, None]), tuple(direction[:, None].astype(np.float32)), (0.5,) * 3)
    if traced["alpha"][0] and abs(traced["depth"][0] - 1.0) < 2e-3:   # nothing in front of it
        assert np.allclose(traced["rgb"][0], colour, atol=0.02)
    jittered, _ = surface_samples(head, 500, jitter=0.01, rng=np.random.RandomState(0))
    assert 2e-3 < np.abs(head.sdf(jittered)).max() < 0.0125


def test_occupancy_targets_follow_the_signed_distance():
    head = ProceduralHead(HeadParams.from_seed(7))
    points, occupancy = occupancy_samples(head, 400, softness=0.004, rng=np.random.RandomState(1))
    distance = head.sdf(points)
    assert points.shape == (400, 3) and occupancy.shape == (400, 1)
    assert (occupancy[distance < -0.02] > 0.99).all() and (occupancy[distance > 0.02] < 0.01).all()
    assert (np.abs(distance) < 0.03).mean() >= 0.5   # half of them where the occupancy changes


def test_rays_of_a_step_do_not_depend_on_the_3d_points():
    plain = sample_batch(3, tiny_settings(), 40, 32)
    with_points = sample_batch(3, tiny_settings(surface_points_per_identity=32, space_points_per_identity=16), 40, 32)
    assert all(torch.equal(getattr(plain, name), getattr(with_points, name))
               for name in ("z", "origins", "directions", "rgb", "alpha", "depth"))
    assert plain.surface_points.shape[1] == 0 and with_points.surface_points.shape[1:] == (32, 3)
    assert with_points.occupancy.shape[1:] == (16, 1)


def test_3d_supervision_alone_teaches_colour_and_occupancy():
    torch.manual_seed(0)
    state = tiny_state(tiny_settings(surface_points_per_identity=256, space_points_per_identity=256,
                                     rgb_weight=0.0, alpha_weight=0.0, depth_weight=0.0, learning_rate=0.03))
    batch = next_batch(state, "cpu")
    first = train_step(state, batch)
    for _ in range(20):
        last = train_step(state, batch)
    assert last["surface_rgb"] < 0.5 * first["surface_rgb"]
    assert last["occupancy"] < 0.9 * first["occupancy"]   # a sharp density needs sigma ~ 100: slow from random


def test_a_fit_can_start_from_a_checkpoints_weights(tmp_path):
    start = tmp_path / "start.safetensors"
    fit(tiny_request(start, steps=2))
    out = tmp_path / "continued.safetensors"
    seen = []
    fit(tiny_request(out, steps=1, init_from=start), progress=seen.append)
    assert [p.step for p in seen] == [1]   # a new run: step 0, fresh optimizer
    before, after = load_generator(start).state_dict(), load_generator(out).state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all((before[name] - after[name]).abs().max() < 0.1 for name in changed if "w_avg" not in name)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(FitError, match="cannot start from"):
        fit(tiny_request(tmp_path / "x.safetensors", init_from=broken))


def test_progress_callback_and_stop_flag(tmp_path):
    out = tmp_path / "g.safetensors"
    seen = []
    result = fit(tiny_request(out, steps=10), progress=seen.append, should_stop=lambda: len(seen) >= 2)
    assert result.stopped and result.step == 2
    assert [p.step for p in seen] == [1, 2]
    assert seen[-1].eta_s is not None and math.isfinite(seen[-1].loss)
    assert out.exists() and state_path(out).exists()


def test_checkpoint_and_resume_continue_from_the_saved_step(tmp_path):
    out = tmp_path / "g.safetensors"
    fit(tiny_request(out, steps=2))
    assert read_generator_config(out)["metadata"]["steps"] == 2
    saved = load_generator(out).state_dict()

    with pytest.raises(FitError, match="--resume"):
        fit(tiny_request(out, steps=4))
    seen = []
    result = fit(tiny_request(out, steps=4, resume=True), progress=seen.append)
    assert [p.step for p in seen] == [3, 4] and result.step == 4
    resumed = load_generator(out).state_dict()
    assert any(not torch.equal(saved[name], resumed[name]) for name in saved)
    sidecar = torch.load(state_path(out), weights_only=True)
    assert sidecar["step"] == 4
    adam_steps = {float(entry["step"]) for entry in sidecar["optimizer"]["state"].values()}
    assert adam_steps == {4.0}   # the optimizer's own counters continued too


def test_a_resume_can_change_the_learning_rate_and_batch(tmp_path):
    out = tmp_path / "g.safetensors"
    fit(tiny_request(out, steps=2))
    seen = []
    fit(tiny_request(out, steps=3, resume=True, setting_changes={"learning_rate": 1e-5, "identities_per_step": 3}),
        progress=seen.append)
    sidecar = torch.load(state_path(out), weights_only=True)
    assert sidecar["settings"]["learning_rate"] == 1e-5 and sidecar["settings"]["identities_per_step"] == 3
    assert {group["lr"] for group in sidecar["optimizer"]["param_groups"]} == {1e-5}
    assert sidecar["settings"]["rays_per_identity"] == tiny_settings().rays_per_identity   # the rest as saved
    assert [p.step for p in seen] == [3]


def test_an_interrupt_saves_the_last_finished_step(tmp_path):
    out = tmp_path / "g.safetensors"

    def interrupt_at_step_3(progress):
        if progress.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_request(out, steps=10), progress=interrupt_at_step_3)
    assert torch.load(state_path(out), weights_only=True)["step"] == 3
    assert read_generator_config(out)["metadata"]["steps"] == 3


def test_data_workers_give_the_fit_the_same_batches_and_weights(tmp_path):
    settings = tiny_settings()
    with BatchStream(settings, 40, 32, workers=2) as stream:
        for step in (5, 6, 9, 3):   # ahead, in order, a skip and a step back all get their own batch
            ahead, here = stream.batch(step), sample_batch(settings.data_seed + step, settings, 40, 32)
            assert all(torch.equal(getattr(ahead, name), getattr(here, name)) for name in RayBatch.__dataclass_fields__)
    in_process, in_workers = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    fit(tiny_request(in_process, steps=3))
    fit(tiny_request(in_workers, steps=3, data_workers=2))
    a, b = load_generator(in_process).state_dict(), load_generator(in_workers).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_w_avg_is_the_mean_w_after_a_checkpoint(tmp_path):
    out = tmp_path / "g.safetensors"
    fit(tiny_request(out, steps=1))
    generator = load_generator(out)
    assert generator.backbone.mapping.w_avg.abs().sum() > 0
    # Truncation psi = 0 then gives every z the same w.
    c = generator.frontal_camera_label()[None].expand(3, -1)
    ws = generator.mapping(torch.randn(3, generator.z_dim), c, truncation_psi=0.0)
    assert torch.allclose(ws[0], ws[1])


def test_fit_backbone_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "--minutes or --steps" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.png"), "--steps", "1"]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--resume"]) == 2
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--unsaturate-colour"]) == 2
    assert "use it with --resume" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--data-workers", "-1"]) == 2
    assert "--data-workers" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--learning-rate", "0"]) == 2
    assert "--learning-rate" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--surface-points", "-1"]) == 2
    assert "--surface-points" in capsys.readouterr().err
    assert main(["fit-backbone", "--out", str(tmp_path / "g.safetensors"), "--steps", "1", "--resume",
                 "--init-from", str(tmp_path / "a.safetensors")]) == 2
    assert "--init-from" in capsys.readouterr().err


# ---------------------------------------------------------------------------- evaluation
def test_evaluate_fit_on_a_tiny_random_backbone(tmp_path, capsys):
    generator = build_generator(tiny_fit_config(), seed=1)
    figures = evaluation.evaluate_fit(generator, identities=2, views=2)
    assert EVALUATION_KEYS <= set(figures)
    assert figures["identities"] == [2_000_000, 2_000_001] and len(figures["views"]) == 2
    assert 0 <= figures["silhouette_iou"] <= 1 and math.isfinite(figures["psnr"])
    assert figures["colour_correlation"] is None   # fewer than 3 identities
    sharper = evaluation.evaluate_fit(generator, identities=3, views=1, resolution=48)
    assert sharper["resolution"] == 48 and len(sharper["colour_correlation"]) == 3

    path = tmp_path / "tiny.safetensors"
    save_generator(generator, path)
    sheet = tmp_path / "sheet.png"
    assert main(["evaluate", "fit", "--backbone", str(path), "--identities", "1", "--views", "1", "--json",
                 "--contact-sheet", str(sheet)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert EVALUATION_KEYS <= set(printed)
    assert read_rgb(sheet).shape[0] == 4 * 32 + 3 * 4   # four identities of 32^2 with gaps
    assert main(["evaluate", "fit", "--backbone", str(path), "--views", "9"]) == 2


def test_perfect_prediction_scores_perfectly():
    target = evaluation.procedural_view(2_000_000, 30.0, 5.0, 48, 40)
    figures = evaluation.compare_view(target, target)
    assert figures["iou"] == 1.0 and figures["depth_sum"] == 0.0 and figures["psnr"] > 100


# ---------------------------------------------------------------------------- shipped default
def test_the_shipped_default_loads_and_renders_a_head():
    assert DEFAULT_BACKBONE_PATH.exists(), f"the embedded default must ship at {DEFAULT_BACKBONE_PATH}"
    assert DEFAULT_BACKBONE_PATH.stat().st_size <= 30 * 1024 * 1024
    backbone = load_backbone("default")
    generator = backbone.generator
    predicted = evaluation.backbone_view(generator, 3, 30.0, 0.0, 128)
    truth = evaluation.procedural_view(3, 30.0, 0.0, 128, generator.z_dim)
    coverage = float((predicted["alpha"] > 0.5).mean())
    assert 0.15 < coverage < 0.7
    assert evaluation.compare_view(predicted, truth)["iou"] > 0.8
    assert "steps" in read_generator_config(DEFAULT_BACKBONE_PATH)["metadata"]


def test_plane_and_decoder_layers_train_at_their_own_rates():
    state = tiny_state(tiny_settings(plane_lr_multiplier=10.0, decoder_lr_multiplier=0.1))
    base = state.settings.learning_rate
    set_learning_rate(state, 1.0)
    rates = {group["name"]: group["lr"] for group in state.optimizer.param_groups}
    assert rates == pytest.approx({"planes": 10 * base * 0.1, "decoder": 0.1 * base * 0.1, "rest": base * 0.1})
    grouped = {group["name"]: {id(p) for p in group["params"]} for group in state.optimizer.param_groups}
    assert id(state.generator.decoder.net[0].weight) in grouped["decoder"]
    assert id(state.generator.backbone.synthesis.b32.torgb.weight) in grouped["planes"]
    assert id(state.generator.backbone.synthesis.b32.conv0.weight) in grouped["rest"]


def test_a_sidecar_from_before_the_rate_groups_resumes_with_its_moments(tmp_path):
    out = tmp_path / "g.safetensors"
    fit(tiny_request(out, steps=1))
    generator = load_generator(out).requires_grad_(True)
    single = torch.optim.Adam(generator.parameters(), lr=1e-3)   # the trainer's optimizer until 2026-12-07
    generator.decoder.net[0].weight.sum().backward()
    single.step()
    sidecar = torch.load(state_path(out), weights_only=True)
    sidecar["optimizer"] = single.state_dict()
    torch.save(sidecar, state_path(out))
    from core.fitting.trainer import resume
    state = resume(out, "cpu", {})
    moments = state.optimizer.state[state.generator.decoder.net[0].weight]["exp_avg"]
    assert torch.equal(moments, single.state[generator.decoder.net[0].weight]["exp_avg"])
    assert {group["name"] for group in state.optimizer.param_groups} == {"planes", "decoder", "rest"}


def test_learning_rate_holds_then_falls_linearly_over_the_second_half():
    state = tiny_state()
    rates = []
    for fraction in (0.0, 0.5, 0.75, 1.0):
        set_learning_rate(state, fraction)
        rates.append(state.optimizer.param_groups[0]["lr"])
    base = state.settings.learning_rate
    assert rates[:2] == [base, base]
    assert rates[2] == pytest.approx(base * 0.55) and rates[3] == pytest.approx(base * 0.1)
