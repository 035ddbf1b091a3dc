"""Time procedural renders (all buffers) at 64^2, 128^2 and 256^2.  Not a test.

    python benchmarks/bench_procedural.py [--repeats 7] [--threads N] [--resolutions 64,128,256]

Prints the median and best time per render, and separately the time of
core.camera.ray_bundle (torch) so that a slow machine can be told apart from a slow tracer.
The machine's load average is printed too: on a shared 2-core machine torch's two intra-op
threads stall each other, which shows up in the ray_bundle column first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.camera import Camera, ray_bundle, split_label
from core.procedural import HeadParams, ProceduralHead
from core.procedural.renderer import camera_rays


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--repeats", "1", "--threads", "1", "--resolutions", "32"], r"32\^2 +[\d.]+ +[\d.]+")]


def time_call(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_resolution(resolution: int, repeats: int) -> dict:
    render_times, ray_times = [], []
    for index in range(repeats):
        # A new identity and a new camera every time: nothing can be reused between renders.
        head = ProceduralHead(HeadParams.from_seed(1000 + index))
        label = Camera(yaw=-60.0 + 120.0 * index / max(repeats - 1, 1), pitch=10.0).label()
        render_times.append(time_call(lambda: head.render(label, resolution)))
        cam2world, intrinsics = split_label(label)
        ray_times.append(time_call(lambda: ray_bundle(cam2world, intrinsics, resolution)))
    return dict(median=statistics.median(render_times), best=min(render_times),
                rays=statistics.median(ray_times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--resolutions", default="64,128,256", help="comma-separated render resolutions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    camera_rays(Camera().label(), 32)  # warm up torch and numpy
    print(f"{'resolution':>10} {'median s':>9} {'best s':>8} {'ray_bundle s':>16}")
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        result = bench_resolution(resolution, args.repeats)
        print(f"{resolution:>8}^2 {result['median']:>9.3f} {result['best']:>8.3f} {result['rays']:>16.3f}")


if __name__ == "__main__":
    main()
