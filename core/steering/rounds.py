"""Rounds of feedback-steered generation: steer -> generate -> fine-tune -> repeat.

    request = SteerRequest(project="P", model="M.pt", task="pose", out="D", rounds=2, samples=32)
    result = run_steering(request, progress=print)

Per round r (folder D/round_RR/):
1. steer: `steer_steps` updates of the SteeredDistribution (core.steering.distribution), each
   rendering `steer_identities` x `views` samples and scoring them with the current model
   (its per-sample loss; a sample the filter drops scores 0, so the mixture learns to avoid it);
   the mixture is kept in distribution.json;
2. generate: `samples` samples in the factory's dataset layout (images/, labels/, depth/,
   cameras.json, labels.json, manifest.json, written with the factory's own writers), a
   `prior_fraction` of them from the factory prior and the rest from the learned mixture, with
   PoseGen's filter (loss above `max_loss`, or mean label confidence below `min_confidence`:
   dropped and replaced, up to `max_draws` times the budget);
3. fine-tune: `finetune_steps` steps on every round's samples so far; D/round_RR/model.pt.
D/state.json (atomic) records the finished phases; a run stopped anywhere (Ctrl-C, a crash,
`should_stop`) resumes with `resume=True` from the first unfinished phase. Every random draw is
a function of (seed, round, phase), so a resumed run ends with the same files as a straight one
(at the same torch thread count: another one changes float rounding).
With steer_steps = 0 and prior_fraction = 1 a run is the 'uniform' arm of `evaluate steer`.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.factory.generate import FORMAT_NAME, FORMAT_VERSION, FactoryError, depth_scale_for, depth_to_png, \
    sample_name
from core.fileio import atomic_write_json, write_indexed_png, write_png
from core.steering.distribution import SteeredDistribution
from core.steering.models import FrozenModel, TrainSettings, load_model, save_model, train_steps
from core.steering.render import Samples, SteeringWorld, open_world, steer_seed, targets_of

STATE_FORMAT = "datasetnerf-studio/steering-run"
PHASES = ("steered", "generated", "tuned")
DEFAULT_BOUNDS = {"yaw": (-90.0, 90.0), "pitch": (-40.0, 40.0), "psi": (0.7, 1.3)}
PC_BOUND = 3.0  # principal-direction offsets in standard deviations


class SteeringError(FactoryError):
    """A bad request, model or output folder; the message says which."""


@dataclass
class SteerRequest:
    project: Path
    model: Path
    task: str
    out: Path
    rounds: int = 2
    samples: int = 32  # written per round
    views: int = 4  # views per identity
    size: int = 32
    input_size: int | None = None  # for a user's TorchScript model without a declaration
    seed: int = 0
    # the distribution
    components: int = 4
    principal: int = 2  # principal directions of w steered
    yaw_bounds: tuple = DEFAULT_BOUNDS["yaw"]
    pitch_bounds: tuple = DEFAULT_BOUNDS["pitch"]
    psi_bounds: tuple = DEFAULT_BOUNDS["psi"]
    kl_weight: float = 0.5
    steer_steps: int = 10
    steer_identities: int = 4
    learning_rate: float = 0.1
    # plausibility filter and mixing
    max_loss: float | None = None
    min_confidence: float = 0.0
    max_draws: float = 3.0
    prior_fraction: float = 0.75
    # fine-tuning
    finetune_steps: int = 50
    finetune_batch: int = 16
    finetune_lr: float = 5e-4
    # replay (as PoseGen mixes real data): a factory dataset folder, e.g. the frozen model's own
    # training data, of which each fine-tuning batch draws `replay_fraction`; None = no replay
    replay: Path | None = None
    replay_fraction: float = 0.25  # measured: docs/steering.md
    resume: bool = False
    device: str = "cpu"

    def asked(self) -> dict:
        values = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                  for k, v in asdict(self).items() if k not in ("resume", "device", "out")}
        if self.replay is None:  # a run without replay keeps the request (and state.json) it had before the knob
            del values["replay"], values["replay_fraction"]
        return values

    def bounds(self) -> dict:
        bounds = {"yaw": self.yaw_bounds, "pitch": self.pitch_bounds, "psi": self.psi_bounds}
        bounds.update({f"pc{j + 1}": (-PC_BOUND, PC_BOUND) for j in range(self.principal)})
        return bounds


@dataclass
class SteerResult:
    out: Path
    rounds_done: int
    model: Path
    history: list = field(default_factory=list)  # per round: losses, mass, seconds
    stopped: bool = False


def _check(request: SteerRequest) -> None:
    problems = []
    if request.task not in ("segmentation", "pose"):
        problems.append(f"--task must be segmentation or pose, got {request.task!r}")
    for name in ("rounds", "samples", "views", "steer_identities", "components"):
        if getattr(request, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if request.samples % request.views:
        problems.append(f"--samples ({request.samples}) must be a multiple of --views ({request.views})")
    if request.steer_steps < 0 or request.finetune_steps < 0 or request.principal < 0:
        problems.append("--steer-steps, --finetune-steps and --principal cannot be negative")
    if request.size < 8 or request.size % 4:
        problems.append("--size must be a multiple of 4, at least 8")
    if not 0.0 <= request.prior_fraction <= 1.0:
        problems.append("--prior-fraction must lie in [0, 1]")
    if not 0.0 <= request.replay_fraction < 1.0:
        problems.append("--replay-fraction must lie in [0, 1)")
    if request.replay is not None and not Path(request.replay).is_dir():
        problems.append(f"--replay {request.replay}: not a dataset folder")
    if request.kl_weight < 0 or request.max_draws < 1:
        problems.append("--kl-weight cannot be negative and --max-draws must be at least 1")
    for name, (low, high) in (("yaw", request.yaw_bounds), ("pitch", request.pitch_bounds),
                              ("psi", request.psi_bounds)):
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            problems.append(f"--{name}-bounds must be two finite numbers A,B with A < B")
    if not (-90 < request.pitch_bounds[0] and request.pitch_bounds[1] < 90):
        problems.append("--pitch-bounds must lie inside (-90, 90) degrees")
    if problems:
        raise SteeringError("; ".join(problems))


def _generator(request: SteerRequest, round_index: int, phase: int) -> torch.Generator:
    state = np.random.SeedSequence([request.seed, round_index, phase]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


# ---------------------------------------------------------------------------- the run
def run_steering(request: SteerRequest, progress: Callable[[str, int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, world: SteeringWorld | None = None) -> SteerResult:
    """Run (or resume) the rounds `request` asks for; see the module docstring.

    `progress(phase, done, total)` reports each step; `should_stop()` is checked between phases
    (a stopped run returns with stopped=True). KeyboardInterrupt propagates; finished phases stay.
    """
    _check(request)
    report = progress or (lambda *_: None)
    out = Path(request.out)
    state = _prepare(out, request)
    world = world or open_world(Path(request.project), request.task, request.size, request.principal,
                                request.device)[0]
    if len(world.sigmas) != request.principal:
        raise SteeringError(f"the renderer steers {len(world.sigmas)} principal directions, the request {request.principal}")
    model = _current_model(request, state)
    distribution = SteeredDistribution(request.bounds(), request.principal, request.components, request.seed)
    if state["distribution"]:
        distribution.load_json(state["distribution"])
    stopped = False
    for round_index in range(1, request.rounds + 1):
        folder = out / f"round_{round_index:02d}"
        for phase in PHASES:
            if _done(state, round_index, phase):
                continue
            if should_stop is not None and should_stop():
                stopped = True
                break
            started = time.process_time()
            if phase == "steered":
                figures = steer(world, model, distribution, request, round_index, report)
                atomic_write_json(_fresh(folder) / "distribution.json", distribution.to_json())
                state["distribution"] = distribution.to_json()
            elif phase == "generated":
                figures = generate_round(world, model, distribution, request, round_index, folder, report)
            else:
                figures = finetune(model, out, request, round_index, report)
                save_model(model, folder / "model.pt")
                state["model"] = str(folder / "model.pt")
            figures["cpu_s"] = time.process_time() - started
            state["rounds"].setdefault(str(round_index), {})[phase] = figures
            state["phase"] = [round_index, phase]
            atomic_write_json(out / "state.json", state)
        if stopped:
            break
    rounds_done = sum(1 for r in range(1, request.rounds + 1) if _done(state, r, "tuned"))
    return SteerResult(out, rounds_done, Path(state["model"] or request.model),
                       [state["rounds"].get(str(r), {}) for r in range(1, rounds_done + 1)], stopped)


def _prepare(out: Path, request: SteerRequest) -> dict:
    path = out / "state.json"
    if path.is_file():
        try:
            state = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as error:
            raise SteeringError(f"{path}: unreadable ({error}); choose another --out") from error
        if state.get("format") != STATE_FORMAT:
            raise SteeringError(f"{path}: not a steering run; choose another --out")
        if state.get("request") != request.asked():
            changed = sorted(k for k, v in request.asked().items() if state.get("request", {}).get(k) != v)
            raise SteeringError(f"{out} holds a steering run of another request (different {', '.join(changed)}); "
                                "choose another --out")
        if not request.resume:
            raise SteeringError(f"{out} already holds this steering run; pass --resume to continue it")
        return state
    if out.is_dir() and any(out.iterdir()):
        raise SteeringError(f"{out} is not empty and holds no steering run; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SteeringError(f"cannot create {out}: {error.strerror or error}") from error
    state = {"format": STATE_FORMAT, "request": request.asked(), "phase": None, "model": None,
             "distribution": None, "rounds": {}}
    atomic_write_json(path, state)
    return state


def _done(state: dict, round_index: int, phase: int | str) -> bool:
    return phase in state["rounds"].get(str(round_index), {})


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _current_model(request: SteerRequest, state: dict) -> FrozenModel:
    path = Path(state["model"]) if state["model"] else Path(request.model)
    try:
        model = load_model(path, request.task, request.input_size)
    except ValueError as error:
        raise SteeringError(str(error)) from error
    return model


# ---------------------------------------------------------------------------- phases
@torch.no_grad()
def scored(model: FrozenModel, request: SteerRequest, samples: Samples):
    """(losses, kept): each sample's loss and whether the filter keeps it."""
    model.module.eval()
    images = torch.from_numpy(samples.rgb.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    losses = model.sample_losses(images, torch.from_numpy(targets_of(request.task, samples))).double()
    kept = torch.from_numpy(samples.confidence >= request.min_confidence)
    if request.max_loss is not None:
        kept &= losses <= request.max_loss
    return losses, kept


def _render_draws(world, distribution, draws, request, seeds):
    identity = distribution.identity.physical(draws.identity).numpy()
    camera = distribution.camera.physical(draws.camera).numpy()
    return world.render(seeds, identity, camera, request.views), identity, camera


def steer(world, model, distribution: SteeredDistribution, request: SteerRequest, round_index: int, report) -> dict:
    """Train the mixtures for `steer_steps` steps against the model; the mean loss per step."""
    generator = _generator(request, round_index, 0)
    parameters = [p for mixture in distribution.mixtures() for p in mixture.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=request.learning_rate)
    history = []
    for step in range(request.steer_steps):
        draws = distribution.draw(request.steer_identities, request.views, generator)
        seeds = [steer_seed(request.seed, 10 * round_index, step * request.steer_identities + i)
                 for i in range(request.steer_identities)]
        samples, _, _ = _render_draws(world, distribution, draws, request, seeds)
        losses, kept = scored(model, request, samples)
        rewards = torch.where(kept, losses, torch.zeros_like(losses)).float()
        surrogate = distribution.surrogate(draws, rewards, request.views, request.kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        surrogate.backward()
        optimizer.step()
        history.append(float(losses.mean()))
        report("steer", step + 1, request.steer_steps)
    return {"loss_per_step": history, "kl_camera": distribution.camera.to_json()["kl_to_prior"],
            "kl_identity": distribution.identity.to_json()["kl_to_prior"]}


def generate_round(world, model, distribution, request: SteerRequest, round_index: int, folder: Path, report) -> dict:
    """Write this round's samples in the factory layout; figures of what was kept and dropped."""
    generator = _generator(request, round_index, 1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images", "labels", "depth"):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)  # an interrupted generation starts again (same draws, same bytes)
        (folder / name).mkdir()
    depth_scale = depth_scale_for(world.backbone.rendering_kwargs)
    palette = world.label_set.palette()
    wanted = request.samples
    prior_identities = round(wanted * request.prior_fraction) // request.views
    records, kept_losses, dropped, index = {}, [], 0, 0
    camera = world.backbone.camera(0, 0)  # radius and FOV of every view (only yaw and pitch are steered)
    max_identities = int(math.ceil(request.max_draws * wanted / request.views))
    while len(records) < wanted and index < max_identities:
        from_prior = index < prior_identities
        draws = (distribution.prior_draw if from_prior else distribution.draw)(1, request.views, generator)
        seed = steer_seed(request.seed, 10 * round_index + 1, index)
        samples, identity, angles = _render_draws(world, distribution, draws, request, [seed])
        losses, kept = scored(model, request, samples)
        for view in range(request.views):
            if len(records) >= wanted:
                break
            if not (from_prior or bool(kept[view])):
                dropped += 1
                continue
            name = sample_name(index, view)
            write_sample(folder, world, samples, view, name, depth_scale, palette)
            records[name] = {"identity": index, "seed": seed, "view": view, "yaw": float(angles[view, 0]),
                             "pitch": float(angles[view, 1]), "radius": camera.radius, "fov": camera.fov,
                             "label": [float(v) for v in samples.camera_labels[view]],
                             "psi": float(identity[0, 0]), "pc_offsets": [float(v) for v in identity[0, 1:]],
                             "source": "prior" if from_prior else "steered", "model_loss": float(losses[view])}
            kept_losses.append(float(losses[view]))
        index += 1
        report("generate", len(records), wanted)
    write_dataset_files(folder, request, world, depth_scale, records, index)
    return {"samples": len(records), "dropped": dropped, "identities": index,
            "mean_model_loss": float(np.mean(kept_losses)) if kept_losses else math.nan}


def write_sample(folder: Path, world, samples: Samples, view: int, name: str, depth_scale: float, palette) -> None:
    """Write one view's image, label map and depth PNG into the factory layout under `folder`."""
    write_png(folder / "images" / f"{name}.png", samples.rgb[view])
    write_indexed_png(folder / "labels" / f"{name}.png", samples.labels[view], palette)
    write_png(folder / "depth" / f"{name}.png",
              depth_to_png(samples.depth[view], samples.alpha[view], world.alpha_threshold, depth_scale))


def write_dataset_files(folder: Path, request, world, depth_scale: float, records: dict, identities: int,
                        distribution: str | None = "distribution.json") -> None:
    from core.checkpoint.studio_format import file_sha256

    atomic_write_json(folder / "labels.json", world.label_set.to_json())
    atomic_write_json(folder / "cameras.json", {
        "depth_scale": depth_scale,
        "depth": "expected ray depth (distance from the camera centre along the unit ray) = "
                 "depth PNG value * depth_scale; 0 = background",
        "camera_label": "EG3D: OpenCV cam2world 4x4 row-major + intrinsics 3x3 normalised by image size",
        "images": records})
    branch = world.branch_file
    atomic_write_json(folder / "manifest.json", {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "request": request.asked(),
        "project": str(Path(request.project).resolve()),
        "backbone": {"name": world.backbone.name, "content_hash": world.backbone.content_hash},
        "semantic_branch": {"file": str(branch), "sha256": file_sha256(branch)} if branch else None,
        "label_set_version": world.label_set.version,
        "identity_seeds": {"rule": "core.steering.render.steer_seed(seed, 10 * round + 1, identity)"},
        "depth_scale": depth_scale,
        "samples_per_identity": request.views,
        "identities_done": identities, "complete": True,
        "steering": {"distribution": distribution, "knobs": request.asked()},
    })


def read_training_data(folder, task: str, size: int | None = None):
    """(images (N, H, W, 3) uint8, targets, class count) of a factory dataset folder: label maps
    for segmentation, cameras.json's yaw/pitch (or the angles of its camera labels) for pose."""
    from core.camera import Camera
    from core.factory.dataset import DatasetError, FactoryDataset

    folder = Path(folder)
    dataset = FactoryDataset(folder, size=size)
    document = json.loads((folder / "cameras.json").read_text("utf-8"))
    entries = document.get("images", {}) if isinstance(document, dict) else {}
    images, targets = [], []
    for index, record in enumerate(dataset.records):
        image, label = dataset.image_and_label(index)
        images.append(image)
        if task == "segmentation":
            targets.append(label)
            continue
        entry = entries.get(record.name, {}) if isinstance(entries, dict) else {}
        if "yaw" in entry and "pitch" in entry:
            targets.append(np.array([entry["yaw"], entry["pitch"]], np.float32))
        else:
            camera = Camera.from_label(record.camera_label)
            targets.append(np.array([camera.yaw, camera.pitch], np.float32))
    if not images:
        raise DatasetError(f"{folder}: no finished samples")
    classes = len(dataset.class_names) if dataset.class_names else int(np.max([t.max() for t in targets])) + 1
    return np.stack(images), np.stack(targets), classes


def round_training_data(out: Path, request: SteerRequest, rounds: int):
    """Images and targets of the first `rounds` rounds' datasets together."""
    parts = [read_training_data(out / f"round_{r:02d}", request.task) for r in range(1, rounds + 1)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def finetune(model: FrozenModel, out: Path, request: SteerRequest, round_index: int, report) -> dict:
    images, targets = round_training_data(out, request, round_index)
    rounds_samples, weights = len(images), None
    if request.replay is not None:  # batches draw replay_fraction from the replayed set, the rest from the rounds'
        replay_images, replay_targets, _ = read_training_data(request.replay, request.task, request.size)
        images, targets = np.concatenate([images, replay_images]), np.concatenate([targets, replay_targets])
        weights = np.concatenate([np.full(rounds_samples, (1 - request.replay_fraction) / rounds_samples),
                                  np.full(len(replay_images), request.replay_fraction / len(replay_images))])
    settings = TrainSettings(request.finetune_steps, request.finetune_batch, request.finetune_lr,
                             seed=int(np.random.SeedSequence([request.seed, round_index, 2]).generate_state(1)[0]))
    history = train_steps(model, images, targets, settings, lambda step, total, _: report("finetune", step, total),
                          weights=weights)
    return {"samples": rounds_samples, "replayed": len(images) - rounds_samples,
            "first_loss": history[0] if history else math.nan, "last_loss": history[-1] if history else math.nan}
