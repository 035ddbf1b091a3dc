"""Speed of the fit and of the embedded default: `python benchmarks/bench_fit.py [--threads 2]`.

Prints seconds per training step of the default configuration (data included and excluded), with
`--data-workers K` also per step of a whole `fit` whose procedural targets K worker processes
render ahead, and the per-view render time of the shipped default at 128^2 (deterministic, identity
cached).

`--compare-signals --fit-steps K` (or `--minutes M`) instead trains K steps with each training signal (rays only, as
the fits before 2026-12-07; fewer rays + 3D colour and occupancy points), both from the same start (the
shipped default, or random weights with `--from-scratch`), and prints the PSNR each reaches on the
same held-out identities, the dB gained per CPU minute and the ratio of the two.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import DEFAULT_BACKBONE_PATH, load_backbone  # noqa: E402
from core.fitting.config import FitSettings, default_config  # noqa: E402
from core.fitting.data import camera_for  # noqa: E402
from core.checkpoint.studio_format import load_generator  # noqa: E402
from core.fitting.evaluate import evaluate_fit  # noqa: E402
from core.fitting.trainer import (FitRequest, TrainingState, build_generator, fit, make_optimizer,  # noqa: E402
                                  next_batch, train_step)

# The training signals compared: FitSettings changes over today's defaults.
SIGNALS = {
    "rays only": {"rays_per_identity": 1024, "surface_points_per_identity": 0, "space_points_per_identity": 0},
    "rays + 3D points": {"rays_per_identity": 512, "surface_points_per_identity": 8192, "space_points_per_identity": 4096},
}


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--steps", "1", "--views", "1", "--threads", "1"], r"training step .*: [\d.]+ s/step"),
              (["--compare-signals", "--fit-steps", "1", "--identities", "1", "--eval-views", "1", "--threads", "1"],
               r"dB per CPU minute, rays \+ 3D points / rays only: ")]


def time_training_steps(device: str, steps: int) -> tuple[float, float]:
    """(seconds per step including batch rendering, seconds for the batch alone)."""
    settings = FitSettings()
    generator = build_generator(default_config(), seed=0).to(device)
    state = TrainingState(generator, make_optimizer(generator, settings), settings)
    train_step(state, next_batch(state, device))   # warm-up
    data_seconds = step_seconds = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        batch = next_batch(state, device)
        data_seconds += time.perf_counter() - start
        start = time.perf_counter()
        train_step(state, batch)
        _sync(device)
        step_seconds += time.perf_counter() - start
    return (data_seconds + step_seconds) / steps, data_seconds / steps


def time_fit_with_workers(device: str, steps: int, workers: int) -> float:
    """Seconds per step of `fit` itself (waits for batches included, worker start-up excluded)."""
    with tempfile.TemporaryDirectory() as folder:
        request = FitRequest(out=Path(folder) / "bench.safetensors", steps=steps + 1, device=device,
                             settings=FitSettings(checkpoint_every_s=1e9), data_workers=workers)
        result = fit(request)
    return result.train_seconds / result.step


@torch.no_grad()
def time_default_render(device: str, views: int) -> float:
    backbone = load_backbone("default", device=device)
    identity = backbone.identity_from_seed(3)
    labels = [camera_for(yaw, 0.0).label().to(device) for yaw in torch.linspace(-80, 80, views).tolist()]
    backbone.generator.render(identity, labels[0], 128)   # warm-up
    start = time.perf_counter()
    for label in labels:
        backbone.generator.render(identity, label, 128, deterministic=True)
    _sync(device)
    return (time.perf_counter() - start) / views


def compare_signals(args) -> None:
    """dB per CPU minute of each training signal from the same start, on the same identities."""
    start = None if args.from_scratch else DEFAULT_BACKBONE_PATH
    initial = load_generator(start) if start else build_generator(default_config(), seed=0)
    before = evaluate_fit(initial, args.identities, args.views)["psnr"]
    print(f"start ({'random weights' if start is None else start.name}): {before:.2f} dB on "
          f"{args.identities} identities x {args.views} views")
    gains = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, changes in SIGNALS.items():
            request = FitRequest(out=Path(folder) / f"{len(gains)}.safetensors", minutes=args.minutes, steps=args.fit_steps,
                                 device=args.device, init_from=start, settings=FitSettings(checkpoint_every_s=1e9),
                                 setting_changes=changes)
            result = fit(request)
            after = evaluate_fit(load_generator(result.out), args.identities, args.views)["psnr"]
            cpu_minutes = result.train_seconds * args.threads / 60
            gains[name] = (after - before) / cpu_minutes
            print(f"{name}: {after:.2f} dB after {result.step} steps, {cpu_minutes:.1f} CPU min "
                  f"({gains[name]:+.3f} dB per CPU minute)")
    old, new = gains["rays only"], gains["rays + 3D points"]
    ratio = f"{new / old:.2f}" if old > 0 else "n/a (rays only gained nothing)"
    print(f"dB per CPU minute, rays + 3D points / rays only: {ratio}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--data-workers", type=int, default=0, help="also time a fit with this many data workers")
    parser.add_argument("--compare-signals", action="store_true", help="dB per CPU minute of each training signal")
    parser.add_argument("--minutes", type=float, help="with --compare-signals: training minutes per signal")
    parser.add_argument("--fit-steps", type=int, help="with --compare-signals: training steps per signal")
    parser.add_argument("--identities", type=int, default=10, help="with --compare-signals: held-out identities")
    parser.add_argument("--eval-views", dest="views_evaluated", type=int, default=8)
    parser.add_argument("--from-scratch", action="store_true", help="with --compare-signals: start from random weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare_signals:
        if args.minutes is None and args.fit_steps is None:
            parser.error("--compare-signals needs --minutes or --fit-steps")
        args.views = args.views_evaluated
        compare_signals(args)
        return
    per_step, data = time_training_steps(args.device, args.steps)
    settings = FitSettings()
    if args.data_workers:
        per_fit_step = time_fit_with_workers(args.device, args.steps, args.data_workers)
        print(f"fit with {args.data_workers} data workers and {args.threads} training threads: {per_fit_step:.3f} s/step")
    print(f"training step ({settings.identities_per_step} identities x {settings.rays_per_identity} rays, "
          f"{args.device}, {args.threads} threads): {per_step:.3f} s/step, of which procedural targets {data:.3f} s")
    if DEFAULT_BACKBONE_PATH.exists():
        print(f"default backbone, one 128^2 view (identity cached): {time_default_render(args.device, args.views):.3f} s")
    else:
        print(f"default backbone missing at {DEFAULT_BACKBONE_PATH}; render not timed")


if __name__ == "__main__":
    main()
