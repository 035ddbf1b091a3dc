"""The fit trainer: a small TriPlaneGenerator learns to render procedural identity z as the
procedural renderer does, from rgb, alpha and depth of random rays (never part labels).

    result = fit(FitRequest(out=Path("run/backbone.safetensors"), minutes=60),
                 progress=print, should_stop=lambda: False)

The GUI runs ``fit`` in a worker with its own callback and stop flag; the CLI adds a progress
bar and Ctrl-C handling.  Every checkpoint is a pair written atomically: the generator
(``save_generator``) and a sidecar ``<out>.state.pt`` with the optimizer, step and settings.
"""
from __future__ import annotations

import io
import math
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.checkpoint.studio_format import load_generator, read_generator_config, save_generator
from core.fileio import atomic_write_bytes
from core.fitting.config import FitSettings, default_config
from core.fitting.data import BatchStream, RayBatch, camera_for, view_rays
from core.generator.triplane import TriPlaneGenerator

MAX_BAD_STEPS_IN_A_ROW = 20
HEAD_RADIUS = 0.45   # world units: core.procedural's HEAD_BOUND_RADIUS, the sphere holding every head


class FitError(ValueError):
    """The fit cannot start or resume; the message says why."""


@dataclass
class FitRequest:
    out: Path
    minutes: float | None = None      # stop after this much training time (this run)
    steps: int | None = None          # stop at this total step count
    resume: bool = False
    device: str = "cpu"
    settings: FitSettings = field(default_factory=FitSettings)
    config: tuple[dict, int] | None = None   # (init kwargs, neural resolution); default_config()
    init_seed: int = 0
    # Start a new run (step 0, fresh optimizer) from this checkpoint's weights instead of random
    # ones: a fit continued with other settings when its optimizer sidecar is not at hand.
    init_from: Path | None = None
    unsaturate_colour: bool = False   # rescale saturated colour outputs once before training
    data_workers: int = 0             # processes rendering the procedural targets ahead (0: in this one)
    # FitSettings fields this run sets, over `settings` or, on resume, over the saved ones
    # (a lower learning rate to continue a fit, a larger batch on a GPU).
    setting_changes: dict = field(default_factory=dict)


@dataclass
class FitProgress:
    step: int
    total_steps: int | None
    loss: float
    losses: dict
    elapsed_s: float                   # training time of this run
    eta_s: float | None
    checkpointed: bool = False


@dataclass
class FitResult:
    step: int
    loss: float
    train_seconds: float              # over all runs, resumes included
    stopped: bool                     # True when should_stop (or an interrupt) ended it
    out: Path
    colour_rescale: float | None = None   # the factor unsaturate_colour applied, if asked


# ---------------------------------------------------------------------------- model and state
def build_generator(config: tuple[dict, int] | None, seed: int) -> TriPlaneGenerator:
    init_kwargs, resolution = config or default_config()
    torch.manual_seed(seed)
    generator = TriPlaneGenerator(**init_kwargs)
    generator.neural_rendering_resolution = resolution
    return generator


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


def parameter_group(name: str) -> str:
    """Which learning-rate group a generator parameter belongs to (FitSettings' multipliers)."""
    if ".torgb." in name:
        return "planes"      # the synthesis layers that write the tri-plane features
    return "decoder" if name.startswith("decoder.") else "rest"


def make_optimizer(generator, settings: FitSettings) -> torch.optim.Optimizer:
    """Adam with one group per parameter_group, each at learning_rate times its multiplier.
    Adam's steps do not depend on the gradient's scale, so a multiplier is how a layer whose
    output must travel far (the plane features, ~150 in magnitude) is conditioned."""
    multipliers = group_lr_multipliers(settings)
    groups = {name: [] for name in multipliers}
    for name, parameter in generator.named_parameters():
        groups[parameter_group(name)].append(parameter)
    return torch.optim.Adam([{"params": parameters, "name": name, "lr": settings.learning_rate * multipliers[name]}
                             for name, parameters in groups.items()], betas=(0.9, 0.99), eps=1e-8)


def group_lr_multipliers(settings: FitSettings) -> dict:
    return {"planes": settings.plane_lr_multiplier, "decoder": settings.decoder_lr_multiplier, "rest": 1.0}


def load_optimizer_state(optimizer: torch.optim.Optimizer, generator, saved: dict) -> None:
    """Load a sidecar's optimizer state; one saved before the groups existed (a single group in
    generator.parameters() order) is regrouped parameter by parameter."""
    if len(saved["param_groups"]) == len(optimizer.param_groups):
        optimizer.load_state_dict(saved)
        return
    if len(saved["param_groups"]) != 1:
        raise FitError("the sidecar's optimizer has groups this trainer does not know")
    position = {id(parameter): index for index, parameter in enumerate(generator.parameters())}
    flat = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    state = {new: saved["state"][position[id(parameter)]] for new, parameter in enumerate(flat)
             if position[id(parameter)] in saved["state"]}
    hyper = {key: value for key, value in saved["param_groups"][0].items() if key not in ("params", "lr", "name")}
    groups = [{**group, **hyper} for group in optimizer.state_dict()["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


@dataclass
class TrainingState:
    generator: TriPlaneGenerator
    optimizer: torch.optim.Optimizer
    settings: FitSettings
    step: int = 0
    train_seconds: float = 0.0
    last_loss: float = float("nan")
    bad_steps_in_a_row: int = 0


def start_or_resume(request: FitRequest) -> TrainingState:
    out = Path(request.out)
    if out.suffix != ".safetensors":
        raise FitError(f"--out must name a .safetensors file, not {out}")
    if not request.resume:
        if out.exists():
            raise FitError(f"{out} exists; pass --resume to continue it or choose another --out")
        settings = replace(request.settings, **request.setting_changes)
        generator = initial_generator(request).to(request.device)
        return TrainingState(generator, make_optimizer(generator, settings), settings)
    return resume(out, request.device, request.setting_changes)


def initial_generator(request: FitRequest) -> TriPlaneGenerator:
    if request.init_from is None:
        return build_generator(request.config, request.init_seed)
    try:
        generator = load_generator(Path(request.init_from), device="cpu")
    except (OSError, ValueError) as error:
        raise FitError(f"cannot start from {request.init_from}: {error}") from error
    if generator.superresolution is not None:
        raise FitError(f"{request.init_from} has a super-resolution module; the fit trains only the studio's own "
                       "backbones (no super-resolution)")
    return generator.train().requires_grad_(True)


def resume(out: Path, device, setting_changes: dict) -> TrainingState:
    sidecar = state_path(out)
    if not out.exists() or not sidecar.exists():
        raise FitError(f"cannot resume: {out} and {sidecar} must both exist")
    generator = load_generator(out, device="cpu").to(device).requires_grad_(True)
    saved = torch.load(sidecar, map_location=device, weights_only=True)
    recorded_step = int(generator_metadata(out).get("steps", -1))
    if int(saved["step"]) != recorded_step:
        raise FitError(f"{out} (step {recorded_step}) and {sidecar} (step {saved['step']}) do not belong together")
    settings = replace(FitSettings.from_dict(saved["settings"]), **setting_changes)
    optimizer = make_optimizer(generator, settings)
    load_optimizer_state(optimizer, generator, saved["optimizer"])
    return TrainingState(generator, optimizer, settings, int(saved["step"]), float(saved["train_seconds"]),
                         float(saved.get("loss", float("nan"))))


def generator_metadata(path: Path) -> dict:
    """The free-form metadata (training record) saved with a studio checkpoint."""
    return read_generator_config(path).get("metadata", {})


# ---------------------------------------------------------------------------- one step
def predict_rays(generator: TriPlaneGenerator, z: torch.Tensor, origins, directions, stochastic: bool,
                 update_w_avg: bool = False, max_rays_per_chunk: int | None = None) -> dict:
    """Composited colour (on the grey background), alpha and depth of rays (N, M, 3)."""
    identity = synthesize_identity(generator, z, update_w_avg)
    return render_rays(generator, identity, origins, directions, stochastic, max_rays_per_chunk)


def synthesize_identity(generator: TriPlaneGenerator, z: torch.Tensor, update_w_avg: bool = False):
    """z -> w -> planes, with the mapping conditioned on the frontal camera (zeroed anyway)."""
    c = generator.frontal_camera_label().to(z.device)[None].expand(z.shape[0], -1)
    return generator.synthesize(generator.mapping(z, c, update_emas=update_w_avg))


def render_rays(generator: TriPlaneGenerator, identity, origins, directions, stochastic: bool,
                max_rays_per_chunk: int | None = None) -> dict:
    rendered = generator.renderer(identity.planes, generator.decoder, origins, directions,
                                  generator.rendering_kwargs, deterministic=not stochastic,
                                  return_samples=True, max_rays_per_chunk=max_rays_per_chunk)
    alpha = rendered["weights_total"]
    return {"rgb": composite_on_grey(rendered["features"][..., :3], alpha), "alpha": alpha,
            "depth": safe_expected_depth(rendered["weights"], rendered["depths"], alpha)}


def safe_expected_depth(weights, depths, alpha, floor: float = 1e-5) -> torch.Tensor:
    """The renderer's expected depth sum(w t) / sum(w), but with the denominator kept above
    `floor`: an empty ray's 0 / 0 would otherwise put NaN into every gradient (0 * inf)."""
    midpoints = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    return torch.sum(weights * midpoints, -2) / alpha.clamp_min(floor)


def composite_on_grey(image_minus1_1: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """EG3D's renderer composites on black ((sum w c) * 2 - 1); the procedural renders sit on
    mid grey, so the missing (1 - alpha) share of each pixel is grey."""
    return (image_minus1_1 + 1) / 2 + 0.5 * (1 - alpha)


def learnt_on_grey(G) -> bool:
    """Whether G is one of the studio's own fits (no super-resolution module), which learnt the
    procedural category on its mid-grey background: its images are shown and compared composited
    on grey.  Official EG3D backbones are used exactly as EG3D composites them.  (The factory
    writes the backbone's own composite for every backbone.)"""
    return G.superresolution is None


def image_as_shown(G, view) -> torch.Tensor:
    """The view's image in [-1, 1] as the studio shows and compares it: composited on the grey
    for its own fits (the view needs its samples), EG3D's own composite for other backbones."""
    if not learnt_on_grey(G):
        return view.image
    return composite_on_grey(view.image, view.opacity()) * 2 - 1


def decode_points(generator: TriPlaneGenerator, identity, batch: RayBatch, occupancy_interval: float) -> dict:
    """The decoder's colour at the batch's surface points and its occupancy over an interval
    of `occupancy_interval` world units at its space points (EG3D's density: softplus(raw - 1))."""
    def decode(points):
        return generator.renderer.run_model(identity.planes, generator.decoder, points, torch.zeros_like(points),
                                            generator.rendering_kwargs)

    prediction = {}
    if batch.surface_points.shape[1]:
        prediction["surface_rgb"] = decode(batch.surface_points)["rgb"][..., :3]
    if batch.space_points.shape[1]:
        density = torch.nn.functional.softplus(decode(batch.space_points)["sigma"] - 1)
        prediction["occupancy"] = 1 - torch.exp(-density * occupancy_interval)
    return prediction


def fit_losses(prediction: dict, batch: RayBatch, settings: FitSettings, colour_logits: list) -> dict:
    foreground = batch.alpha > 0.5
    rgb = torch.mean((prediction["rgb"] - batch.rgb) ** 2)
    alpha = torch.mean((prediction["alpha"] - batch.alpha) ** 2)
    depth_error = (prediction["depth"] - batch.depth).abs() / HEAD_RADIUS
    depth = depth_error[foreground].mean() if foreground.any() else depth_error.sum() * 0
    saturation = colour_saturation(colour_logits, settings.colour_logit_bound)
    zero = rgb * 0
    surface_rgb = (torch.mean((prediction["surface_rgb"] - batch.surface_rgb) ** 2)
                   if "surface_rgb" in prediction else zero)
    occupancy = (torch.mean((prediction["occupancy"] - batch.occupancy) ** 2)
                 if "occupancy" in prediction else zero)
    total = (settings.rgb_weight * rgb + settings.alpha_weight * alpha + settings.depth_weight * depth
             + settings.colour_logit_weight * saturation + settings.surface_rgb_weight * surface_rgb
             + settings.occupancy_weight * occupancy)
    return {"total": total, "rgb": rgb, "alpha": alpha, "depth": depth, "saturation": saturation,
            "surface_rgb": surface_rgb, "occupancy": occupancy}


@contextmanager
def recording_colour_logits(generator: TriPlaneGenerator):
    """Collects the RGB pre-activations (before the decoder's sigmoid) of every point decoded
    inside the block, coarse and importance passes alike."""
    recorded = []
    output_layer = generator.decoder.net[-1]
    handle = output_layer.register_forward_hook(lambda layer, inputs, output: recorded.append(output[..., 1:4]))
    try:
        yield recorded
    finally:
        handle.remove()


def colour_saturation(colour_logits: list, bound: float) -> torch.Tensor:
    """Mean squared excess of |pre-activation| over `bound`: 0 while every colour is trainable."""
    if not colour_logits:
        raise RuntimeError("no colour pre-activations were recorded: the decoder was not run")
    excess = torch.relu(recorded_magnitudes(colour_logits) - bound)
    return torch.mean(excess ** 2)


def recorded_magnitudes(colour_logits: list) -> torch.Tensor:
    """|pre-activation| of every recorded colour channel, flat."""
    return torch.cat([x.reshape(-1) for x in colour_logits]).abs()


@torch.no_grad()
def frontal_colour_logit_magnitudes(generator: TriPlaneGenerator, identities: int, resolution: int) -> torch.Tensor:
    """recorded_magnitudes over the samples of frontal views of the first `identities` prior z of
    RandomState(0): where a fit's colours stand."""
    z = torch.from_numpy(np.random.RandomState(0).randn(identities, generator.z_dim)).float()
    origins, directions = camera_rays(0.0, 0.0, resolution, next(generator.parameters()).device)
    with recording_colour_logits(generator) as logits:
        predict_rays(generator, z.to(origins.device), origins.expand(identities, -1, -1),
                     directions.expand(identities, -1, -1), stochastic=False)
    return recorded_magnitudes(logits)


@torch.no_grad()
def unsaturate_colour(generator: TriPlaneGenerator, bound: float, identities: int = 4) -> float:
    """Scale the decoder's colour outputs so that the 99th percentile of |pre-activation| on the
    samples of a few prior identities' frontal views is `bound`; the factor used (1 when they are
    already within it).  A one-off repair of a fit whose colours saturated: density is untouched,
    colours restart from the mid range, and training can move them again."""
    generator.eval()
    magnitude = frontal_colour_logit_magnitudes(generator, identities, 64)
    percentile = float(torch.kthvalue(magnitude.cpu(), max(1, int(0.99 * len(magnitude)))).values)
    factor = min(1.0, bound / max(percentile, 1e-12))
    output_layer = generator.decoder.net[-1]
    output_layer.weight[1:] *= factor
    output_layer.bias[1:] *= factor
    return factor


def camera_rays(yaw: float, pitch: float, resolution: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, R*R, 3) origins and directions of the pixel rays of the procedural category's camera
    at (yaw, pitch) degrees, as `render_rays` takes them."""
    origins, directions = view_rays(camera_for(yaw, pitch), resolution)
    return torch.from_numpy(origins)[None].to(device), torch.from_numpy(directions)[None].to(device)


def train_step(state: TrainingState, batch: RayBatch) -> dict:
    state.generator.train()
    with recording_colour_logits(state.generator) as colour_logits:
        identity = synthesize_identity(state.generator, batch.z, update_w_avg=True)
        prediction = render_rays(state.generator, identity, batch.origins, batch.directions, state.settings.stochastic)
        prediction.update(decode_points(state.generator, identity, batch, state.settings.occupancy_interval))
    losses = fit_losses(prediction, batch, state.settings, colour_logits)
    state.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    values = {name: float(value.detach()) for name, value in losses.items()}
    if math.isfinite(values["total"]) and gradients_are_finite(state.generator):
        state.optimizer.step()
        state.bad_steps_in_a_row = 0
    else:   # one bad batch must not poison the weights of an unattended run
        state.bad_steps_in_a_row += 1
        if state.bad_steps_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
            raise FitError(f"{MAX_BAD_STEPS_IN_A_ROW} steps in a row had non-finite losses or gradients")
    state.step += 1
    state.last_loss = values["total"]
    return values


def gradients_are_finite(generator) -> bool:
    return all(torch.isfinite(p.grad).all() for p in generator.parameters() if p.grad is not None)


def next_batch(state: TrainingState, device, stream: BatchStream | None = None) -> RayBatch:
    """The batch of the state's current step (from `stream`'s workers when one is given)."""
    stream = stream or batch_stream(state)
    return stream.batch(state.step).to(device)


def batch_stream(state: TrainingState, workers: int = 0) -> BatchStream:
    generator = state.generator
    return BatchStream(state.settings, generator.z_dim, generator.neural_rendering_resolution, workers)


# ---------------------------------------------------------------------------- checkpoints
@torch.no_grad()
def set_w_avg_to_mean(generator: TriPlaneGenerator, samples: int, seed: int = 12345) -> None:
    """w_avg = the mean w of `samples` prior z: exact, instead of the running average's lag."""
    mapping = generator.backbone.mapping
    if not hasattr(mapping, "w_avg"):
        return
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, generator.z_dim)).float()
    z = z.to(mapping.w_avg.device)
    c = generator.frontal_camera_label().to(z.device)[None].expand(samples, -1)
    mapping.w_avg.copy_(generator.mapping(z, c)[:, 0].mean(0))


def save_checkpoint(state: TrainingState, out: Path, extra_metadata: dict | None = None) -> None:
    """Sidecar first, generator second: the generator's step tells a resume whether they match."""
    set_w_avg_to_mean(state.generator, state.settings.z_samples_for_w_avg)
    sidecar = {"step": state.step, "train_seconds": state.train_seconds, "loss": state.last_loss,
               "optimizer": state.optimizer.state_dict(), "settings": state.settings.to_dict()}
    buffer = io.BytesIO()
    torch.save(sidecar, buffer)
    atomic_write_bytes(state_path(out), buffer.getvalue())
    metadata = {"steps": state.step, "train_minutes": round(state.train_seconds / 60, 2),
                "loss": state.last_loss, "hardware": hardware_description(state.generator),
                "trainer": "core.fitting", "supervision": "rgb, alpha, depth (no part labels)",
                "settings": state.settings.to_dict(), **(extra_metadata or {})}
    state.generator.eval()
    save_generator(state.generator, out, metadata)


def hardware_description(generator) -> str:
    device = next(generator.parameters()).device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------- the loop
def fit(request: FitRequest, progress: Callable[[FitProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> FitResult:
    """Train until `steps`, `minutes` or `should_stop()`; checkpoint periodically and at the end.

    A KeyboardInterrupt is caught at a step boundary or inside one: the last finished step is
    saved and the interrupt re-raised, so that a caller can exit with status 130.
    """
    if request.minutes is None and request.steps is None:
        raise FitError("give --minutes or --steps (or both): the fit needs a place to stop")
    state = start_or_resume(request)
    colour_rescale = None
    if request.unsaturate_colour:
        colour_rescale = unsaturate_colour(state.generator, state.settings.colour_logit_bound)
    device = torch.device(request.device)
    out = Path(request.out)
    try:
        with batch_stream(state, request.data_workers) as batches:
            stopped = _train_until_done(state, request, device, batches, progress, should_stop)
    except KeyboardInterrupt:
        save_checkpoint(state, out)
        raise
    save_checkpoint(state, out)
    return FitResult(state.step, state.last_loss, state.train_seconds, stopped, out, colour_rescale)


def _train_until_done(state, request, device, batches, progress, should_stop) -> bool:
    """The training loop; True when `should_stop` ended it."""
    out = Path(request.out)
    run_start = time.monotonic()
    first_step = state.step
    last_checkpoint = run_start
    while not _finished(state, request, run_start):
        if should_stop is not None and should_stop():
            return True
        step_start = time.monotonic()
        set_learning_rate(state, run_fraction(request, state.step, first_step, run_start))
        losses = train_step(state, next_batch(state, device, batches))
        state.train_seconds += time.monotonic() - step_start
        checkpointed = time.monotonic() - last_checkpoint >= state.settings.checkpoint_every_s
        if checkpointed:
            save_checkpoint(state, out)
            last_checkpoint = time.monotonic()
        if progress is not None:
            progress(_progress(state, request, losses, run_start, checkpointed))
    return False


def run_fraction(request: FitRequest, step: int, first_step: int, run_start: float) -> float:
    """How far this run is towards its stopping point, 0..1 (the nearer of time and steps)."""
    fractions = [0.0]
    if request.minutes is not None:
        fractions.append((time.monotonic() - run_start) / (request.minutes * 60))
    if request.steps is not None:
        fractions.append((step - first_step) / max(request.steps - first_step, 1))
    return min(max(fractions), 1.0)


def set_learning_rate(state: TrainingState, fraction: float) -> None:
    settings = state.settings
    ramp = (fraction - settings.decay_from) / max(1.0 - settings.decay_from, 1e-9)
    ramp = min(max(ramp, 0.0), 1.0)
    scale = 1.0 + ramp * (settings.final_lr_fraction - 1.0)
    multipliers = group_lr_multipliers(settings)
    for group in state.optimizer.param_groups:
        group["lr"] = settings.learning_rate * scale * multipliers[group["name"]]


def _finished(state: TrainingState, request: FitRequest, run_start: float) -> bool:
    if request.steps is not None and state.step >= request.steps:
        return True
    return request.minutes is not None and time.monotonic() - run_start >= request.minutes * 60


def _progress(state, request, losses, run_start, checkpointed) -> FitProgress:
    elapsed = time.monotonic() - run_start
    etas = []
    if request.minutes is not None:
        etas.append(max(request.minutes * 60 - elapsed, 0.0))
    if request.steps is not None and state.step > 0:
        seconds_per_step = state.train_seconds / state.step   # the average over every run
        etas.append(max(request.steps - state.step, 0) * seconds_per_step)
    return FitProgress(state.step, request.steps, losses["total"], losses, elapsed,
                       min(etas) if etas else None, checkpointed)
