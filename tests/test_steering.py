"""PoseGen-style steering: models, the mixture, rounds (layout, determinism, resume), the CLI."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.factory.dataset import FactoryDataset
from core.generator.configs import tiny_config
from core.generator.triplane import TriPlaneGenerator
from core.procedural import NUM_CLASSES
from core.semantic import SemanticBranch
from core.steering.distribution import Mixture, SteeredDistribution
from core.steering.models import ModelError, load_model, new_model, save_model, sample_losses
from core.steering.rounds import SteerRequest, SteeringError, run_steering
from project_support import project_on

SIZE = 16


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    generator = TriPlaneGenerator.from_config(tiny_config(plane_resolution=32, neural_resolution=SIZE), 0)
    torch.manual_seed(3)
    branch = SemanticBranch.for_generator(generator, NUM_CLASSES)
    return project_on(tmp_path_factory.mktemp("steer") / "project", generator, branch=branch, step=5)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_model(new_model("pose", SIZE, width=4), folder / "pose.pt")
    save_model(new_model("segmentation", SIZE, NUM_CLASSES, width=4), folder / "seg.pt")
    return folder


def request_for(project, model, out, **changes):
    base = SteerRequest(project=project, model=model, task="pose", out=out, rounds=2, samples=4, views=2, size=SIZE,
                        steer_steps=2, steer_identities=2, finetune_steps=2, finetune_batch=2, principal=1,
                        components=2)
    return replace(base, **changes)


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".pt" and p.name != "state.json"}


# ---------------------------------------------------------------------------- models
def test_models_round_trip_and_bad_files_are_refused(models, tmp_path):
    pose = load_model(models / "pose.pt")
    assert pose.declaration() == {"task": "pose", "input_size": SIZE, "num_classes": 0}
    assert load_model(models / "seg.pt").num_classes == NUM_CLASSES
    with pytest.raises(ModelError, match="declares task 'pose'"):
        load_model(models / "pose.pt", task="segmentation")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a TorchScript model"):
        load_model(tmp_path / "junk.pt", task="pose", input_size=SIZE)

    class ThreeNumbers(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    torch.jit.save(torch.jit.script(ThreeNumbers()), str(tmp_path / "user.pt"))
    with pytest.raises(ModelError, match=r"must return \(N, 2\)"):
        load_model(tmp_path / "user.pt", task="pose", input_size=SIZE)
    with pytest.raises(ModelError, match="input size"):
        load_model(tmp_path / "user.pt", task="pose")
    with pytest.raises(ModelError, match="logits"):
        load_model(tmp_path / "user.pt", task="segmentation", input_size=SIZE)


def test_per_sample_losses():
    outputs = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(sample_losses("pose", outputs, torch.zeros(2, 2)), torch.tensor([5.0, 0.0]))
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 1] = 10  # sample 0 predicts class 1 everywhere, sample 1 is unsure
    losses = sample_losses("segmentation", logits, torch.ones(2, 4, 4, dtype=torch.long))
    assert losses[0] < 0.01 and abs(losses[1] - np.log(3)) < 1e-4


# ---------------------------------------------------------------------------- the distribution
def test_mixture_moves_its_mass_towards_the_loss_and_stays_in_bounds():
    bounds = {"yaw": (-90, 90), "pitch": (-40, 40)}
    mixture = Mixture(("yaw", "pitch"), bounds, components=3, seed=0)
    optimizer = torch.optim.Adam(mixture.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = mixture.sample(32, generator)
        loss = mixture.physical(x)[:, 0].float()  # the model is worst at large positive yaw
        surrogate = mixture.surrogate(x, loss, 0.01, generator)
        optimizer.zero_grad()
        surrogate.backward()
        optimizer.step()
    values = mixture.physical(mixture.sample(512, generator))
    assert values[:, 0].mean() > 45 and values[:, 0].max() <= 90 and values[:, 1].abs().max() <= 40
    assert mixture.to_json()["kl_to_prior"] > 0.5  # it left the prior, and says how far


def test_prior_draws_are_the_factory_ranges():
    distribution = SteeredDistribution({"yaw": (-90, 90), "pitch": (-40, 40), "psi": (0.7, 1.3)}, 0, 2, 0)
    draws = distribution.prior_draw(50, 2, torch.Generator().manual_seed(1))
    camera = distribution.camera.physical(draws.camera)
    assert camera[:, 0].abs().max() <= 45 and camera[:, 1].abs().max() <= 20
    assert torch.allclose(distribution.identity.physical(draws.identity), torch.ones(50, 1, dtype=torch.float64))


# ---------------------------------------------------------------------------- rounds
@pytest.fixture(scope="module")
def reference(project, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "steer"
    result = run_steering(request_for(project, models / "pose.pt", out))
    assert result.rounds_done == 2 and not result.stopped
    return out


def test_rounds_write_factory_datasets_with_the_distribution(reference):
    for round_index in (1, 2):
        folder = reference / f"round_{round_index:02d}"
        dataset = FactoryDataset(folder)
        assert len(dataset) == 4 and dataset[0]["image"].shape == (3, SIZE, SIZE)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["steering"]["knobs"]["kl_weight"] == 0.5 and manifest["complete"]
        cameras = json.loads((folder / "cameras.json").read_text())["images"]
        assert sorted(r["source"] for r in cameras.values()) == ["prior"] * 2 + ["steered"] * 2
        assert all(-90 <= r["yaw"] <= 90 and 0.7 <= r["psi"] <= 1.3 for r in cameras.values())
        distribution = json.loads((folder / "distribution.json").read_text())
        assert set(distribution) == {"camera", "identity"} and distribution["identity"]["names"] == ["psi", "pc1"]
        assert load_model(folder / "model.pt").task == "pose"
    state = json.loads((reference / "state.json").read_text())
    assert len(state["rounds"]["2"]["steered"]["loss_per_step"]) == 2


def test_same_seed_same_files_and_stop_resume(project, models, reference, tmp_path):
    out = tmp_path / "stopped"
    calls = []
    stopped = run_steering(request_for(project, models / "pose.pt", out),
                           should_stop=lambda: len(calls.append(1) or calls) > 4)
    assert stopped.stopped and stopped.rounds_done == 1
    with pytest.raises(SteeringError, match="--resume"):
        run_steering(request_for(project, models / "pose.pt", out))
    resumed = run_steering(request_for(project, models / "pose.pt", out, resume=True))
    assert resumed.rounds_done == 2
    assert files_of(out) == files_of(reference)
    other = run_steering(request_for(project, models / "pose.pt", tmp_path / "other", seed=1))
    assert files_of(tmp_path / "other") != files_of(reference) and other.rounds_done == 2
    with pytest.raises(SteeringError, match="another request"):
        run_steering(request_for(project, models / "pose.pt", out, samples=6, resume=True))


def test_filter_drops_samples_beyond_the_loss_threshold(project, models, tmp_path):
    result = run_steering(request_for(project, models / "pose.pt", tmp_path / "f", rounds=1, max_loss=0.0,
                                      max_draws=2.0))
    generated = result.history[0]["generated"]
    assert generated["dropped"] > 0 and generated["samples"] == 2  # only the prior's samples pass


def test_segmentation_rounds(project, models, tmp_path):
    result = run_steering(request_for(project, models / "seg.pt", tmp_path / "s", task="segmentation", rounds=1))
    assert result.rounds_done == 1
    labels = FactoryDataset(tmp_path / "s" / "round_01")[0]["label"]
    assert labels.max() < NUM_CLASSES


def test_replay_mixes_the_replayed_dataset_into_fine_tuning(project, models, reference, tmp_path, monkeypatch):
    from core.steering import rounds

    real_train, seen = rounds.train_steps, []

    def recording(model, images, targets, settings, progress=None, weights=None):
        seen.append((images.copy(), weights))
        return real_train(model, images, targets, settings, progress, weights)

    monkeypatch.setattr(rounds, "train_steps", recording)
    replayed = reference / "round_02"  # any factory dataset: 4 samples unlike the run's own
    plain = run_steering(request_for(project, models / "pose.pt", tmp_path / "plain", rounds=1))
    mixed = run_steering(request_for(project, models / "pose.pt", tmp_path / "mixed", rounds=1, replay=replayed,
                                     replay_fraction=0.75, finetune_steps=4))
    (plain_images, plain_weights), (mixed_images, weights) = seen
    assert plain_weights is None and len(plain_images) == 4 and len(mixed_images) == 8
    replay_images = FactoryDataset(replayed)
    assert np.array_equal(mixed_images[:4], plain_images)  # the round's own samples, then the replayed ones
    assert np.allclose(weights, [0.25 / 4] * 4 + [0.75 / 4] * 4) and len(replay_images) == 4
    assert mixed.history[0]["tuned"]["replayed"] == 4 and plain.history[0]["tuned"].get("replayed") == 0
    knobs = json.loads((tmp_path / "mixed" / "round_01" / "manifest.json").read_text())["steering"]["knobs"]
    assert knobs["replay"] == str(replayed) and knobs["replay_fraction"] == 0.75
    assert "replay" not in json.loads((tmp_path / "plain" / "round_01" / "manifest.json").read_text())["request"]
    with pytest.raises(SteeringError, match="--replay"):
        run_steering(request_for(project, models / "pose.pt", tmp_path / "bad", replay=tmp_path / "none"))
    with pytest.raises(SteeringError, match="--replay-fraction"):
        run_steering(request_for(project, models / "pose.pt", tmp_path / "bad", replay=replayed, replay_fraction=1.0))


# ---------------------------------------------------------------------------- the command line
@pytest.fixture
def keep_threads():
    """`--threads 1` sets torch's thread count for the whole process: restore it (other tests
    compare float results with runs made at the default count)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cli_train_frozen_steer_and_evaluate(project, reference, tmp_path, capsys, keep_threads):
    model = tmp_path / "pose.pt"
    assert main(["train-frozen", "--dataset", str(reference / "round_01"), "--task", "pose", "--out", str(model),
                 "--size", str(SIZE), "--steps", "2", "--width", "4", "--threads", "1"]) == 0
    assert load_model(model).task == "pose"
    out = tmp_path / "cli-run"
    arguments = ["steer", "--project", str(project), "--model", str(model), "--task", "pose", "--rounds", "1",
                 "--samples", "4", "--views", "2", "--size", str(SIZE), "--steer-steps", "1", "--steer-identities",
                 "1", "--finetune-steps", "1", "--principal", "1", "--out", str(out), "--threads", "1"]
    assert main(arguments) == 0
    assert (out / "round_01" / "model.pt").is_file() and "round 1:" in capsys.readouterr().out
    assert main(arguments) == 2 and "--resume" in capsys.readouterr().err
    assert main(arguments + ["--resume"]) == 0
    assert main(arguments[:-2] + ["--samples", "3", "--resume"]) == 2
    assert "multiple of --views" in capsys.readouterr().err
    assert main(["steer", "--project", str(project), "--model", str(tmp_path / "none.pt"), "--task", "pose",
                 "--out", str(tmp_path / "x")]) == 2
    assert "model file not found" in capsys.readouterr().err

    assert main(["evaluate", "steer", "--quick", "--json", "--project", str(project), "--threads", "1",
                 "--work", str(tmp_path / "eval"), "--replay-fraction", "0.5"]) == 0
    results = json.loads(capsys.readouterr().out)
    # both fine-tuned arms replayed the frozen model's own training renders, written as a factory dataset
    assert results["settings"]["replay_fraction"] == 0.5 and len(FactoryDataset(tmp_path / "eval" / "pretrain")) == 8
    for arm in ("uniform", "steered"):
        state = json.loads((tmp_path / "eval" / arm / "state.json").read_text())
        assert state["request"]["replay"] == str(tmp_path / "eval" / "pretrain")
        assert state["rounds"]["1"]["tuned"]["replayed"] == 8
    for arm in ("frozen", "uniform", "steered"):
        for test in ("in_distribution", "out_of_distribution"):
            assert np.isfinite(results[arm][test]["pose_error_deg"]) and results[arm][test]["images"] == 8
    assert np.isfinite(results["relative_gain_ood"]) and results["learned_distribution"]["camera"]
    # the arms differ only by their data: uniform and steered fine-tune the same frozen model
    assert results["frozen"] != results["steered"]


def test_out_of_distribution_test_set_is_out_of_the_factory_ranges():
    from core.steering.evaluate import test_set

    images, labels, angles = test_set("out_of_distribution", 6, 16)
    assert images.shape == (6, 16, 16, 3) and labels.shape == (6, 16, 16)
    assert np.all((np.abs(angles[:, 0]) >= 60) & (np.abs(angles[:, 0]) <= 90))
    assert np.all((np.abs(angles[:, 1]) >= 30) & (np.abs(angles[:, 1]) <= 40))
    inside = test_set("in_distribution", 6, 16)[2]
    assert np.all(np.abs(inside[:, 0]) <= 45) and np.all(np.abs(inside[:, 1]) <= 20)


def test_ctrl_c_keeps_finished_phases(project, models, reference, tmp_path, monkeypatch):
    from core.steering import rounds

    real_finetune, calls = rounds.finetune, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # round 2's fine-tuning
            raise KeyboardInterrupt
        return real_finetune(*args, **kwargs)

    monkeypatch.setattr(rounds, "finetune", interrupted)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_steering(request_for(project, models / "pose.pt", out))
    state = json.loads((out / "state.json").read_text())
    assert sorted(state["rounds"]["1"]) == ["generated", "steered", "tuned"]
    assert sorted(state["rounds"]["2"]) == ["generated", "steered"]
    monkeypatch.setattr(rounds, "finetune", real_finetune)
    assert run_steering(request_for(project, models / "pose.pt", out, resume=True)).rounds_done == 2
    assert files_of(out) == files_of(reference)
    resumed, straight = (load_model(folder / "round_02" / "model.pt").module.state_dict() for folder in (out, reference))
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)  # the same fine-tuned model
