"""Data-factory throughput: samples per second at 128² with 8 views per identity, and the cost of
point clouds on top.

    python benchmarks/bench_factory.py [--identities 4] [--views 8] [--threads 2] [--workers 2] [--branch FILE]
    python benchmarks/bench_factory.py --skip-stages --cluster ray --identities 12   # Ray vs local pool

Two parts:
1. Where an identity's time goes (one identity, `--views` views): synthesis, the occupancy grid,
   the backbone renders with empty-space skipping and without (the plain generator.render), the
   semantic labels, PNG writing, point-cloud fusion and PLY writing; and how close the skipped
   renders are to the plain ones.
2. End to end: `generate_dataset` on a throw-away project (the embedded backbone and a semantic
   branch: `--branch`, or a randomly initialised one; labels cost the same either way), without
   and with `--pointclouds`, in samples (image + labels + depth) per second of wall time, and the
   process CPU seconds per sample (steadier than wall time on a shared machine).

3. With `--cluster ray`: part 2 without point clouds on the local process pool and on 1 and 2 Ray
   workers (a local Ray instance, started before the clock), and the steady rates as ratios to
   the local pool with as many workers: Ray's overhead per identity.

The machine's load average is printed first and last: on a shared 2-core machine wall-clock rates
mean little without it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--identities", "2", "--views", "1", "--size", "32", "--workers", "1", "--threads", "1"],
               r"with point clouds: +[\d.]+ samples/s")]


def cpu_seconds() -> float:
    """This process's CPU time and that of its finished worker processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(function):
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def stages(backbone, branch, views: int, size: int) -> None:
    from core.generator.culling import occupancy_grid, render_culled
    from core.factory.generate import camera_labels, depth_to_png
    from core.factory.pointcloud import fuse_views, write_ply
    from core.factory.views import expand_identity, render_identity_views
    from core.fileio import write_indexed_png, write_png
    from core.semantic import labels_for_view
    from core.semantic.branch import SemanticIdentity

    generator = backbone.generator
    rng = np.random.default_rng(0)
    cameras = torch.from_numpy(camera_labels(backbone, np.stack([rng.uniform(-45, 45, views),
                                                                  rng.uniform(-20, 20, views)], 1)))
    backbone.identity_from_seed(2_000_100)  # warm-up
    with torch.no_grad():
        identity, *synthesis = timed(lambda: backbone.identity_from_seed(2_000_101))
        semantic, *semantic_planes = timed(lambda: branch.semantic_identity(identity))
        occupancy, *grid = timed(lambda: occupancy_grid(generator, identity))
        batch = expand_identity(identity, views)
        exact, *plain = timed(lambda: generator.render(batch, cameras, size, deterministic=True, return_samples=True))
        (fast, renderer), *culled = timed(lambda: render_culled(generator, batch, cameras, size, occupancy))
        batch_semantic = SemanticIdentity(batch, semantic.planes.expand(views, -1, -1, -1, -1))
        _, *labels = timed(lambda: labels_for_view(branch, generator, batch_semantic, cameras, size, view=fast))
        rendered = render_identity_views(generator, branch, identity, cameras, size)
    alpha_exact, alpha_fast = exact.samples["weights"].sum(2), fast.samples["weights"].sum(2)
    pixel_difference = (exact.image - fast.image).abs().amax(1) * 127.5  # in grey levels of 255
    image_difference = pixel_difference.max().item()
    pixels_apart = (pixel_difference > 1).float().mean().item()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def write_all():
            for view in range(views):
                write_png(folder / f"i{view}.png", rendered.rgb[view])
                write_indexed_png(folder / f"l{view}.png", rendered.labels[view], np.zeros((12, 3), np.uint8))
                write_png(folder / f"d{view}.png", depth_to_png(rendered.depth[view], rendered.alpha[view], 0.5, 1e-4))

        _, *writing = timed(write_all)
        cloud, *fusion = timed(lambda: fuse_views(rendered))
        _, *ply = timed(lambda: write_ply(folder / "c.ply", cloud))
    print(f"\n1. one identity, {views} views at {size}² (wall s / CPU s; per view where it says so)")
    print(f"   synthesis (once)            {synthesis[0]:7.3f} / {synthesis[1]:7.3f}")
    print(f"   semantic tri-plane (once)   {semantic_planes[0]:7.3f} / {semantic_planes[1]:7.3f}")
    print(f"   occupancy grid (once)       {grid[0]:7.3f} / {grid[1]:7.3f}   ({occupancy.fraction:.1%} of the box occupied)")
    print(f"   backbone render, plain      {plain[0] / views:7.3f} / {plain[1] / views:7.3f} per view")
    print(f"   backbone render, skipping   {culled[0] / views:7.3f} / {culled[1] / views:7.3f} per view "
          f"({renderer.decoded / renderer.total:.1%} of samples decoded, {renderer.live_rays / renderer.rays:.1%} of rays "
          f"rendered; CPU speed-up {plain[1] / max(culled[1], 1e-9):.2f}x)")
    print(f"      vs plain: max |Δimage| {image_difference:.3f} of 255 ({pixels_apart:.3%} of pixels > 1), max |Δopacity| "
          f"{(alpha_exact - alpha_fast).abs().max().item():.1e}, max |Δdepth| where opaque "
          f"{(exact.depth - fast.depth).abs()[(alpha_exact > 0.5).reshape(exact.depth.shape)].max().item():.1e}")
    print(f"   semantic labels             {labels[0] / views:7.3f} / {labels[1] / views:7.3f} per view")
    print(f"   write 3 PNGs                {writing[0] / views:7.3f} / {writing[1] / views:7.3f} per view")
    print(f"   fuse cloud ({len(cloud)} points)  {fusion[0]:7.3f} / {fusion[1]:7.3f}")
    print(f"   write PLY                   {ply[0]:7.3f} / {ply[1]:7.3f}")


def steady_rate(ticks) -> float:
    """Samples/s from the first finished identity to the last: leaves out loading the models and
    starting the workers, which a long run pays once."""
    (t0, s0), (t1, s1) = ticks[1], ticks[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")


def throw_away_project(folder: Path, branch) -> Path:
    from core.project import BackboneRef, Project, default_label_set
    from core.semantic import save_branch

    with Project.create(folder / "project", BackboneRef.for_file("default"), default_label_set()) as project:
        backbone_hash = project.backbone.content_hash
    save_branch(branch, folder / "branch.safetensors", backbone_hash)
    return folder / "branch.safetensors"


def ray_against_local(branch, identities: int, views: int, size: int) -> None:
    import ray

    from core.factory.generate import GenerateRequest, generate_dataset

    print(f"\n3. Ray workers against the local process pool: {identities} identities x {views} views at {size}²")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        branch_file = throw_away_project(folder, branch)
        for cluster, workers in (("local", 1), ("ray", 1), ("local", 2), ("ray", 2)):
            request = GenerateRequest(project=folder / "project", out=folder / f"{cluster}{workers}",
                                      identities=identities, views=views, size=size, branch=branch_file,
                                      device="cpu", workers=workers, cluster=cluster,
                                      # the same CPU allowance: one local process uses this process's threads
                                      threads_per_worker=torch.get_num_threads() if workers == 1 else 1)
            ticks = []
            generate_dataset(request, lambda state: ticks.append((time.perf_counter(), state.samples_done)))
            rates[cluster, workers] = steady_rate(ticks)
            ratio = f", {rates[cluster, workers] / rates['local', workers]:.3f} of the local pool's" if cluster == "ray" else ""
            print(f"   {cluster} x{workers}: steady {rates[cluster, workers]:6.2f} samples/s{ratio}; {load()}")
    ray.shutdown()
    for workers in (1, 2):
        overhead = rates["local", workers] / rates["ray", workers] - 1
        print(f"   Ray overhead per identity, {workers} worker(s): {100 * overhead:+.1f} %")


def end_to_end(branch, identities: int, views: int, size: int, workers: int) -> None:
    from core.factory.generate import GenerateRequest, generate_dataset

    print(f"\n2. generate_dataset: {identities} identities x {views} views at {size}², {workers} worker process(es)")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        branch_file = throw_away_project(folder, branch)
        for pointclouds in (False, True):
            request = GenerateRequest(project=folder / "project", out=folder / f"out{int(pointclouds)}",
                                      identities=identities, views=views, size=size, pointclouds=pointclouds,
                                      branch=branch_file, device="cpu", workers=workers)
            ticks = []  # (time, samples done) at each finished identity
            result, wall, cpu = timed(lambda: generate_dataset(
                request, lambda state: ticks.append((time.perf_counter(), state.samples_done))))
            samples = result.samples_written
            steady = steady_rate(ticks)
            print(f"   {'with' if pointclouds else 'without'} point clouds: {samples / wall:6.2f} samples/s "
                  f"({wall / samples:.3f} s wall, {cpu / samples:.3f} s CPU per sample), steady {steady:.2f} samples/s; "
                  f"{load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of this process (part 1, and part 2 with one worker)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes of part 2 (one thread each when > 1)")
    parser.add_argument("--branch", type=Path, help="a trained semantic branch (default: random weights)")
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--cluster", choices=["ray"], help="also compare Ray workers with the local pool (part 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from core.backbone import load_backbone
    from core.procedural import NUM_CLASSES
    from core.semantic import SemanticBranch, load_branch

    print(f"bench_factory: {args.threads} torch threads; {load()}")
    backbone = load_backbone("default")
    if args.branch:
        branch, _ = load_branch(args.branch, backbone.content_hash)
    else:
        torch.manual_seed(0)
        branch = SemanticBranch.for_generator(backbone.generator, NUM_CLASSES)
    branch.eval()
    if not args.skip_stages:
        stages(backbone, branch, args.views, args.size)
    end_to_end(branch, args.identities, args.views, args.size, args.workers)
    if args.cluster == "ray":
        ray_against_local(branch, args.identities, args.views, args.size)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
