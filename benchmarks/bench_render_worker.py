"""Orbit speed through the render worker (not the GUI): frames shown while dragging, refined at rest.

    python benchmarks/bench_render_worker.py [--backbone default|PATH] [--seconds 5] [--threads N]

A simulated drag posts an interactive request every 1/60 s (a mouse at 60 Hz) for --seconds,
then stops; we count the coarse frames that reach the GUI thread during the drag and time the
refined frame after the mouse rests. This is issue 6's speed figure: at least 10 frames per second
while dragging and a refined frame within 0.5 s at rest, on the embedded default at 128².
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the simulated drag")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--coarse", type=int, default=48, help="coarse neural resolution while dragging")
    args = parser.parse_args()

    import torch
    from PySide6.QtCore import QCoreApplication

    from app.rendering import ViewRequest
    from app.workers import RenderClient
    from core.backbone import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    app = QCoreApplication([])
    backbone = load_backbone(args.backbone)
    backbone.identity_from_seed(0, 1.0)  # identity synthesis is a one-off per seed, not per frame
    client = RenderClient(coarse_resolution=args.coarse)
    client.set_backbone(backbone)
    shown = []
    client.frame_ready.connect(lambda frame: shown.append((time.perf_counter(), frame)))

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)

    start = time.perf_counter()
    step = 0
    while time.perf_counter() - start < args.seconds:
        client.request(ViewRequest(seed=0, yaw=(step * 0.5) % 60 - 30), interactive=True)
        step += 1
        spin(1 / 60)
    released = time.perf_counter()
    while not (shown and not shown[-1][1].coarse) and time.perf_counter() - released < 30:
        spin(0.005)
    coarse = [t for t, frame in shown if frame.coarse and t <= released]
    refined = [(t, frame) for t, frame in shown if not frame.coarse]
    client.shutdown()

    print(f"backbone {backbone.name}, device cpu, torch threads {torch.get_num_threads()}, os cpus {os.cpu_count()}")
    print(f"drag: {step} requests in {args.seconds:.1f} s -> {len(coarse)} coarse frames shown "
          f"({len(coarse) / args.seconds:.1f} fps at {args.coarse}²)")
    if refined:
        t, frame = refined[-1]
        size = frame.rgb.shape[0]
        print(f"rest: refined {size}² frame {t - released:.2f} s after the last request (render {frame.seconds:.2f} s)")


if __name__ == "__main__":
    main()
