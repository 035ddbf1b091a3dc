"""Orbit speed through the render worker (not the GUI): frames while dragging, refined at rest, start-up.

    python benchmarks/bench_render_worker.py [--backbone default|PATH] [--seconds 5] [--threads N]
                                             [--coarse 32] [--coarse-samples 12,12] [--rests 5] [--no-startup]

drag:    an interactive request every 1/60 s (a mouse at 60 Hz) for --seconds; we count the
         coarse frames that reach the GUI thread during the drag (issue 6: at least 10 per second).
rest:    --rests times, the mouse stops after a short drag; the time from the last request to
         the sharp rest preview (64², every ray sample) and to the refined frame on the GUI
         thread (issue 6: a refined frame within 0.5 s at 128²), and the renders alone.
startup: `python main.py`'s window, offscreen, in a fresh process: from launching the process to
         the first Orbit frame of the embedded default on screen (issue 6: within 5 s).
window:  with --window (needs an X display: run under `xvfb-run -a`), the same rests in the studio's
         Orbit tab on Qt's xcb platform, in a fresh process: last request to the refined frame
         drawn, the render alone, and the GUI thread's time per frame shown (issue 23: the window
         within the worker's figure above).
Also printed: the render alone per coarse/refined frame, to see where time goes. Other
processes on the machine slow every figure down: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STARTUP_SCRIPT = r"""
import os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, {repo!r})
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QSettings
app = QApplication(["studio"])
from app.main_window import MainWindow
window = MainWindow(settings=QSettings({ini!r}, QSettings.IniFormat))
window.show()
window.start()
while window.orbit.last_frame is None:
    app.processEvents()
    time.sleep(0.002)
print("first frame", "coarse" if window.orbit.last_frame.coarse else "refined", flush=True)
window.close()
"""


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--seconds", "0.3", "--rests", "1", "--no-startup", "--threads", "1"],
               r"rest: refined 128² frame on screen median [\d.]+ s")]

WINDOW_SCRIPT = r"""
import os, statistics, sys, time
os.environ["QT_QPA_PLATFORM"] = "xcb"
sys.path.insert(0, {repo!r})
import torch
if {threads}:
    torch.set_num_threads({threads})
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication(["studio"])
from app.main_window import MainWindow
from core.backbone import load_backbone
def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
window = MainWindow(settings=QSettings({ini!r}, QSettings.IniFormat))
window.resize(1400, 860)
window.show()
window.use_session(load_backbone("default"), None)
orbit = window.orbit
window.tabs.setCurrentWidget(orbit)
shown, gui = [], []
show = orbit._show_frame
def timed_show(frame):
    start = time.perf_counter()
    show(frame)
    app.processEvents()  # the repaint of the view, on the GUI thread
    gui.append(time.perf_counter() - start)
    shown.append((time.perf_counter(), frame))
orbit.renderer.frame_ready.disconnect()
orbit.renderer.frame_ready.connect(timed_show)
while orbit.last_frame is None or orbit.last_frame.coarse:
    spin(0.01)
waits, renders = [], []
for rest in range({rests}):
    step = rest * 37
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:  # the benchmark's drag: a request every 1/60 s
        orbit._update(True, yaw=(step * 0.5) % 60 - 30)
        step += 1
        spin(1 / 60)
    released = time.perf_counter()
    while not [f for t, f in shown if t >= released and not f.coarse] and time.perf_counter() - released < 60:
        spin(0.002)
    t, frame = [(t, f) for t, f in shown if t >= released and not f.coarse][-1]
    waits.append(t - released)
    renders.append(frame.seconds)
size = frame.rgb.shape[0]
print(f"window: refined {{size}}² frame drawn median {{statistics.median(waits):.2f}} s after the last request "
      f"(min {{min(waits):.2f}}, max {{max(waits):.2f}}); render alone median {{statistics.median(renders):.2f}} s; "
      f"GUI thread per frame shown median {{1000 * statistics.median(gui):.1f}} ms; torch threads "
      f"{{torch.get_num_threads()}}, load average {{os.getloadavg()[0]:.1f}}", flush=True)
window.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the simulated drag")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--coarse", type=int, help="coarse neural resolution while dragging (default: the studio's)")
    parser.add_argument("--coarse-samples", help="coarse frames' ray samples 'coarse,importance' or 'full' (default: the studio's)")
    parser.add_argument("--rests", type=int, default=5, help="refined frames to time")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    parser.add_argument("--no-skip", action="store_true", help="full-sample frames without empty-space skipping")
    parser.add_argument("--rest-preview", type=int, help="rest preview resolution, 0 for none (default: the studio's)")
    parser.add_argument("--window", action="store_true", help="also the rests in the studio's window (X display)")
    args = parser.parse_args()

    import torch
    from PySide6.QtCore import QCoreApplication

    from functools import partial

    import app.rendering as rendering
    from app.rendering import COARSE_SAMPLES_PER_RAY, ViewRequest
    from app.workers import COARSE_NEURAL_RESOLUTION, RenderClient
    from core.backbone import load_backbone
    from core.generator.culling import cached_occupancy_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = COARSE_SAMPLES_PER_RAY
    if args.coarse_samples:
        samples = None if args.coarse_samples == "full" else tuple(int(v) for v in args.coarse_samples.split(","))
    coarse_resolution = args.coarse or COARSE_NEURAL_RESOLUTION
    app = QCoreApplication([])
    backbone = load_backbone(args.backbone)
    identity = backbone.identity_from_seed(0, 1.0)  # identity synthesis is a one-off per seed, not per frame
    skip = not args.no_skip
    occupancy_s = None
    if skip:  # also once per identity, on its first full-sample frame; timed here on its own
        start = time.perf_counter()
        # The worker's own cache: the grid built here is the one its first refined frame reuses.
        cached_occupancy_grid(backbone.generator, identity, rendering.OCCUPANCY_GRID)
        occupancy_s = time.perf_counter() - start
    client = RenderClient(coarse_resolution=coarse_resolution, coarse_samples_per_ray=samples,
                          render=partial(rendering.render_frame, skip_empty_space=skip))
    if args.rest_preview is not None:
        client.rest_preview_resolution = args.rest_preview or None
    client.set_backbone(backbone)
    shown = []
    client.frame_ready.connect(lambda frame: shown.append((time.perf_counter(), frame)))

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)

    def drag(seconds: float, first_step: int = 0) -> tuple[int, float]:
        start, step = time.perf_counter(), first_step
        while time.perf_counter() - start < seconds:
            client.request(ViewRequest(seed=0, yaw=(step * 0.5) % 60 - 30), interactive=True)
            step += 1
            spin(1 / 60)
        return step, time.perf_counter()

    def wait_refined(released: float) -> tuple[float, object] | None:
        while time.perf_counter() - released < 60:
            refined = [(t, f) for t, f in shown if not f.coarse and t >= released]
            if refined:
                return refined[-1]
            spin(0.002)
        return None

    print(f"backbone {backbone.name}, device cpu, torch threads {torch.get_num_threads()}, os cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"full-sample frames: {'empty space skipped (occupancy grid once per identity: %.2f s)' % occupancy_s if skip else 'plain render'}")
    steps, released = drag(args.seconds)
    coarse = [(t, f) for t, f in shown if f.coarse and t <= released]
    print(f"drag: {steps} requests in {args.seconds:.1f} s -> {len(coarse)} coarse frames shown "
          f"({len(coarse) / args.seconds:.1f} fps at {coarse_resolution}², samples {samples or 'full'}); "
          f"render alone median {1000 * statistics.median(f.seconds for _, f in coarse):.0f} ms" if coarse else
          f"drag: no coarse frame arrived in {args.seconds:.1f} s")
    waits, renders, size, previews, preview_renders = [], [], None, [], []
    for rest in range(args.rests):
        shown.clear()
        _, released = drag(0.2, first_step=rest * 37)
        result = wait_refined(released)
        if result is not None:
            waits.append(result[0] - released)
            renders.append(result[1].seconds)
            size = result[1].rgb.shape[0]
        preview = [(t, f) for t, f in shown if t >= released and client.rest_preview_resolution
                   and f.request.neural_resolution == client.rest_preview_resolution]
        if preview:
            previews.append(preview[0][0] - released)
            preview_renders.append(preview[0][1].seconds)
    client.shutdown()
    if previews:
        print(f"rest: sharp {client.rest_preview_resolution}² preview on screen median {statistics.median(previews):.2f} s "
              f"after the last request; render alone median {statistics.median(preview_renders):.2f} s")
    if waits:
        print(f"rest: refined {size}² frame on screen median {statistics.median(waits):.2f} s after the last request "
              f"(min {min(waits):.2f}, max {max(waits):.2f}; includes the {client._refine_timer.interval()} ms rest "
              f"delay); render alone median {statistics.median(renders):.2f} s, over {len(waits)} rests")
    if args.window:
        print(window_rests(args.rests, args.threads))
    if not args.no_startup and args.backbone == "default":
        print(f"startup: launch to first Orbit frame {startup_seconds():.2f} s (fresh process, offscreen; "
              f"load average {os.getloadavg()[0]:.1f})")


def startup_seconds() -> float:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        script = STARTUP_SCRIPT.format(repo=str(REPO), ini=str(Path(folder) / "studio.ini"))
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith("first frame"):
                elapsed = time.perf_counter() - start
                break
        else:
            raise RuntimeError("the studio did not show a frame")
        process.wait(60)
        return elapsed


def window_rests(rests: int, threads: int | None) -> str:
    """The rests through the studio's Orbit tab in a live window, in a fresh process."""
    import tempfile

    if not os.environ.get("DISPLAY"):
        return "window: not measured (no X display; run under xvfb-run -a)"
    with tempfile.TemporaryDirectory() as folder:
        script = WINDOW_SCRIPT.format(repo=str(REPO), ini=str(Path(folder) / "studio.ini"), rests=rests,
                                      threads=threads or 0)
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("window:")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"the window measurement failed: {run.stderr[-2000:]}")
    return lines[0]


if __name__ == "__main__":
    main()
