"""Speed of the fit and of the embedded default: `python benchmarks/bench_fit.py [--threads 2]`.

Prints seconds per training step of the default configuration (data included and excluded), with
`--data-workers K` also per step of a whole `fit` whose procedural targets K worker processes
render ahead, and the per-view render time of the shipped default at 128^2 (deterministic, identity
cached).
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
from core.fitting.trainer import (FitRequest, TrainingState, build_generator, fit, make_optimizer,  # noqa: E402
                                  next_batch, train_step)


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
