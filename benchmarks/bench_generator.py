"""Per-identity synthesis time, per-view render time and peak memory of a backbone.

    python benchmarks/bench_generator.py                      # official FFHQ-512 config, random weights, CPU
    python benchmarks/bench_generator.py --device cuda        # the same on a GPU
    python benchmarks/bench_generator.py --backbone default   # the embedded default

Prints one line per figure (median of --repeats runs after one warm-up). Peak memory is the
process's resident-set high-water mark during the phase on CPU (Linux /proc), and
torch.cuda.max_memory_allocated on CUDA. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import load_backbone, pick_device, random_backbone  # noqa: E402


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--backbone", "default", "--resolutions", "32", "--repeats", "1"],
               r"render \(neural image only\) at 32x32 neural: \d+ ms per view")]


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mib("VmHWM")


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    _reset_peak(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), _peak_mib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ffhq512")
    parser.add_argument("--backbone", help="a backbone file or 'default' instead of --config with random weights")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--resolutions", default="64,128", help="neural rendering resolutions")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = pick_device(args.device)
    backbone = load_backbone(args.backbone, device) if args.backbone else random_backbone(args.config, device=device)
    G = backbone.generator
    print(f"backbone: {backbone.name}; device: {device}; torch threads: {torch.get_num_threads()}")
    print(f"resident memory with the model loaded: {_rss_mib('VmRSS'):.0f} MiB")

    with torch.no_grad():
        ws = backbone.mapping(torch.randn(1, G.z_dim, device=device))
        seconds, peak = _timed(lambda: G.synthesize(ws), device, args.repeats)
        print(f"synthesis (planes + block features): {seconds * 1000:.0f} ms per identity; peak {peak:.0f} MiB")
        identity = G.synthesize(ws)
        label = backbone.camera(20, 0).label().to(device)
        for resolution in [int(r) for r in args.resolutions.split(",")]:
            for superresolve in (False, True):
                if superresolve and G.superresolution is None:
                    continue
                seconds, peak = _timed(
                    lambda: G.render(identity, label, resolution, superresolve=superresolve), device, args.repeats
                )
                what = "render + super-resolution" if superresolve else "render (neural image only)"
                print(f"{what} at {resolution}x{resolution} neural: {seconds * 1000:.0f} ms per view; peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
