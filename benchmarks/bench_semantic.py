"""Speed of the semantic branch: labels for a new view of a cached identity, and a training step.

    python benchmarks/bench_semantic.py                         # default-sized config, random weights, CPU
    python benchmarks/bench_semantic.py --backbone default      # the embedded default (once it is fit)
    python benchmarks/bench_semantic.py --config ffhq512 --device cuda --resolution 512
    python benchmarks/bench_semantic.py --plateau /tmp/p90 --annotations 90 --steps 1000 --threads 1
    python benchmarks/bench_semantic.py --plateau-log PROJECT/semantic/training_log.json

Prints milliseconds (median of --repeats after one warm-up) for:
  encode        the semantic tri-plane of one identity (once per identity, then cached)
  backbone      the backbone's own render of the view with samples (the RGB view the app shows)
  labels        the semantic part of a view, reusing that backbone render
  labels+view   labels_for_view from scratch for a cached identity (backbone render included)
  train step    one optimiser step on `--views-per-step` prepared annotations
and how many points per ray the semantic decoder evaluates (at most --samples-per-ray; rays that
miss the head cost nothing, so a random backbone, with density everywhere, is the worst case).

--plateau FOLDER: time to plateau of `train-semantic` on the embedded default. The folder gets a
project with --annotations simulated annotations (identities x yaw -30/0/+30) unless it already
holds one; training runs through the command line (run 'plateau-bench', a checkpoint with its
validation mIoU every --every steps) and the report lists, per checkpoint, the time spent
preparing and training (validation excluded) and the validation mIoU. The plateau is the first
checkpoint within --tolerance of the run's best validation mIoU. --plateau-log reports on the
training_log.json of a run made before (e.g. the one behind docs/semantic.md).
Not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import Backbone, load_backbone, pick_device  # noqa: E402
from core.generator.configs import official_config  # noqa: E402
from core.generator.triplane import TriPlaneGenerator  # noqa: E402
from core.generator.culling import occupancy_grid, render_culled  # noqa: E402
from core.semantic import SemanticBranch, labels_for_view, view_prior  # noqa: E402
from core.semantic.rendering import MIN_SAMPLE_WEIGHT, SAMPLES_PER_RAY, render_semantic  # noqa: E402
from core.semantic.training import AnnotatedView, TrainingSettings, prepare_views, training_step  # noqa: E402


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--resolution", "32", "--repeats", "1", "--threads", "1"],
               r"labels for a new view of a cached identity: [\d.]+ s wall")]


def default_sized_generator() -> TriPlaneGenerator:
    """The embedded default's configuration (plane 128, neural 128, no SR), random weights."""
    try:
        from core.fitting.config import default_config
    except ImportError:  # the fitting module is not there yet: an equivalent configuration
        from core.generator.configs import tiny_config

        init_kwargs, _ = tiny_config(plane_resolution=128, neural_resolution=128)
        init_kwargs.update(channel_base=4096, channel_max=128, w_dim=128)
        init_kwargs["rendering_kwargs"].update(depth_resolution=24, depth_resolution_importance=24)
        return _build(init_kwargs, 128)
    init_kwargs, neural_resolution = default_config()
    return _build(init_kwargs, neural_resolution)


def _build(init_kwargs: dict, neural_resolution: int) -> TriPlaneGenerator:
    return TriPlaneGenerator.from_config((init_kwargs, neural_resolution))


def make_backbone(args, device) -> Backbone:
    if args.backbone:
        return load_backbone(args.backbone, device)
    if args.config == "default":
        generator = default_sized_generator()
    else:
        generator = _build(*official_config(args.config))
    return Backbone(generator, args.config, f"random:{args.config}", device)


def timed_ms(fn, device, repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this process). CPU time is the steadier figure on a
    shared machine: other processes stretch the wall time but not the work done."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


def show(name: str, times: tuple[float, float], note: str = "") -> None:
    print(f"{name:<30}{times[0]:8.1f} ms wall {times[1]:8.1f} ms CPU  {note}")


def striped_mask(resolution: int, num_classes: int, offset: int) -> np.ndarray:
    columns = (np.arange(resolution) * num_classes // resolution + offset) % num_classes
    return np.tile(columns.astype(np.uint8), (resolution, 1))


# ---------------------------------------------------------------------------- time to plateau
PLATEAU_VIEWS = [(-30.0, 0.0), (0.0, 0.0), (30.0, 0.0)]
PLATEAU_RUN = "plateau-bench"


def train_for_plateau(args) -> Path:
    """Annotate (if needed) and train through `train-semantic`; returns the run's training log."""
    from core.cli import main as cli_main
    from core.project import BackboneRef, Project, default_label_set
    from core.project.simulate import simulate_annotations
    from core.procedural import seeds_for

    folder = Path(args.plateau)
    if not Project.exists(folder):
        identities = max(1, args.annotations // len(PLATEAU_VIEWS))
        backbone = load_backbone("default")
        with Project.create(folder, BackboneRef.for_backbone(backbone, "default"), default_label_set()) as project:
            simulate_annotations(project, backbone, seeds_for("annotate", identities), PLATEAU_VIEWS)
    command = ["train-semantic", "--project", str(folder), "--run", PLATEAU_RUN, "--steps", str(args.steps),
               "--checkpoint-every", str(args.every), "--validate", "procedural"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if (folder / "semantic" / PLATEAU_RUN).is_dir():
        command.append("--resume")
    status = cli_main(command)
    if status != 0:
        raise SystemExit(status)
    return folder / "semantic" / PLATEAU_RUN / "training_log.json"


def report_plateau(log_path: Path, tolerance: float) -> None:
    entries = [e for e in json.loads(Path(log_path).read_text()) if e.get("validation_miou") is not None]
    if not entries:
        raise SystemExit(f"{log_path} has no checkpoint with a validation mIoU")
    best = max(e["validation_miou"] for e in entries)
    plateau = next(e for e in entries if e["validation_miou"] >= best - tolerance)
    print(f"{'step':>6} {'wall min':>9} {'CPU min':>8} {'val mIoU':>9}   ({log_path})")
    for e in entries:
        mark = "  <- plateau" if e is plateau else ""
        cpu = f"{e['cpu_s'] / 60:8.1f}" if e.get("cpu_s") is not None else f"{'-':>8}"
        print(f"{e['step']:>6} {e['elapsed_s'] / 60:9.1f} {cpu} {e['validation_miou']:9.4f}{mark}")
    cpu = f", {plateau['cpu_s'] / 60:.1f} CPU min" if plateau.get("cpu_s") is not None else ""
    print(f"time to plateau (within {tolerance} of the best validation mIoU {best:.4f}): "
          f"{plateau['elapsed_s'] / 60:.1f} min wall{cpu}, step {plateau['step']} (preparation included, validation "
          "excluded; issue target on 2 CPU cores: 15 min)")
    if plateau is entries[-1] and len(entries) > 1 and best - entries[-2]["validation_miou"] > tolerance:
        print("the best checkpoint is the last one and still improving: no plateau yet, train longer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="'default' or an official config (ffhq512, ...)")
    parser.add_argument("--backbone", help="a backbone file or 'default' instead of random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=128, help="output (mask) resolution")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--min-weight", type=float, default=MIN_SAMPLE_WEIGHT)
    parser.add_argument("--samples-per-ray", type=int, default=SAMPLES_PER_RAY, help="0: every sample with weight")
    parser.add_argument("--views-per-step", type=int, default=2)
    parser.add_argument("--crop", type=int, default=TrainingSettings.crop_size, help="training crop (0: whole views)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--plateau", metavar="FOLDER", help="time to plateau of train-semantic (see above)")
    parser.add_argument("--plateau-log", metavar="JSON", help="time to plateau from an existing training_log.json")
    parser.add_argument("--annotations", type=int, default=90, help="--plateau: simulated annotations (default 90)")
    parser.add_argument("--steps", type=int, default=1000, help="--plateau: training steps (default 1000)")
    parser.add_argument("--every", type=int, default=100, help="--plateau: steps between validations (default 100)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="plateau: mIoU within this of the best")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plateau or args.plateau_log:
        report_plateau(Path(args.plateau_log) if args.plateau_log else train_for_plateau(args), args.tolerance)
        return
    device = pick_device(args.device)
    quadrature = dict(min_weight=args.min_weight, samples_per_ray=args.samples_per_ray or None)
    backbone = make_backbone(args, device)
    G = backbone.generator
    branch = SemanticBranch.for_generator(G, args.classes).to(device).eval()
    identity = backbone.identity_from_seed(0)
    camera = backbone.camera(yaw=20).label().to(device)
    neural = min(G.neural_rendering_resolution, args.resolution)
    print(f"backbone {backbone.name}, device {device}, threads {torch.get_num_threads()}, "
          f"output {args.resolution}², neural {neural}², plane {G.plane_resolution}²")

    encode_ms = timed_ms(lambda: branch.encode(identity), device, args.repeats)
    with torch.no_grad():
        view = G.render(identity, camera, neural, return_samples=True)
    backbone_ms = timed_ms(lambda: G.render(identity, camera, neural, return_samples=True), device, args.repeats)
    prior, _ = view_prior(G, identity, camera, neural, view=view, **quadrature)
    points_per_ray = prior.samples.points_per_ray()
    semantic = branch.semantic_identity(identity)

    @torch.no_grad()
    def semantic_only():
        reused, _ = view_prior(G, identity, camera, neural, view=view, **quadrature)
        return render_semantic(branch, semantic.planes, reused, args.resolution).logits.argmax(1)

    labels_ms = timed_ms(semantic_only, device, args.repeats)
    full_ms = timed_ms(lambda: labels_for_view(branch, G, identity, camera, args.resolution, **quadrature),
                       device, args.repeats)
    show("encode (once per identity)", encode_ms)
    show("backbone render with samples", backbone_ms)
    show("labels, reusing the render", labels_ms,
         f"({points_per_ray:.1f} decoder points per ray of {view.samples['depths'].shape[2]})")
    show("labels_for_view from scratch", full_ms)
    if device.type == "cpu":  # the studio's and the factory's CPU path: the identity's occupancy grid is cached with it
        occupancy = occupancy_grid(G, identity)
        cameras = camera.reshape(1, -1)

        @torch.no_grad()
        def skipping_empty_space():
            culled, _ = render_culled(G, identity, cameras, neural, occupancy)
            return labels_for_view(branch, G, identity, cameras, args.resolution, view=culled, **quadrature)

        full_ms = timed_ms(skipping_empty_space, device, args.repeats)
        show("labels_for_view, empty space skipped", full_ms, "(render_culled + labels; grid cached)")
    print(f"labels for a new view of a cached identity: {full_ms[0] / 1000:.2f} s wall, {full_ms[1] / 1000:.2f} s CPU "
          f"at {args.resolution}² (issue target at 128² on CPU: 0.3 s)")

    settings = TrainingSettings(views_per_step=args.views_per_step, min_sample_weight=args.min_weight,
                                samples_per_ray=quadrature["samples_per_ray"], crop_size=args.crop or None)
    annotated = [AnnotatedView(seed, backbone.camera(yaw=yaw).label(), striped_mask(args.resolution, args.classes, i))
                 for i, (seed, yaw) in enumerate([(0, -30), (0, 30), (1, 0)])]
    wall, cpu = time.perf_counter(), time.process_time()
    views, features = prepare_views(branch, backbone, annotated, settings)
    prepare_ms = (1000 * (time.perf_counter() - wall) / len(annotated),
                  1000 * (time.process_time() - cpu) / len(annotated))
    optimizer = torch.optim.Adam(branch.parameters(), lr=settings.learning_rate)
    branch.train()
    step_counter = iter(range(10 ** 6))
    step_ms = timed_ms(lambda: training_step(branch, views, features, optimizer, settings, next(step_counter)),
                       device, args.repeats)
    show("prepare one annotation", prepare_ms, "(backbone, once per annotation)")
    show(f"train step ({args.views_per_step} views)", step_ms, f"(crops of {settings.crop_size}²)")


if __name__ == "__main__":
    main()
