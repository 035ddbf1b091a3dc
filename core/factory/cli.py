"""`generate` and `evaluate factory`: the data factory from the command line."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.limits import PITCH, YAW, range_pair


def _shard(text: str) -> tuple[int, int]:
    import argparse

    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (shard K of N, counting from 0), got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def generate_parser(sub) -> None:
    from core.cli import add_threads_argument
    from core.factory.generate import GenerateRequest
    from core.factory.pointcloud import POINT_LABELS

    defaults = GenerateRequest(project=Path("."), out=Path("."), identities=1)
    p = sub.add_parser(
        "generate", help="write a labelled dataset: images, labels, depth, cameras, point clouds",
        description="Write N identities x V views of labelled images (and optionally labelled point clouds) "
                    "with a project's backbone and trained semantic branch. Identities come from the procedural "
                    "'evaluate' seed range, so `evaluate factory` can score the result. Same arguments, same files; "
                    "an interrupted run continues with --resume.")
    p.add_argument("--project", required=True, type=Path, help="project folder (backbone, label set, semantic/)")
    p.add_argument("--n", required=True, type=int, help="number of identities N")
    p.add_argument("--views", type=int, default=defaults.views, help=f"views per identity V (default {defaults.views})")
    p.add_argument("--out", required=True, type=Path, help="output folder, e.g. PROJECT/datasets/NAME")
    p.add_argument("--size", type=int, default=defaults.size, help=f"image and label size in pixels (default {defaults.size})")
    p.add_argument("--yaw-range", type=range_pair(YAW, "angles in degrees"), default=defaults.yaw_range, metavar="A,B",
                   help="yaw range in degrees, uniform (default %(default)s)")
    p.add_argument("--pitch-range", type=range_pair(PITCH, "angles in degrees"), default=defaults.pitch_range, metavar="A,B",
                   help="pitch range in degrees, uniform (default %(default)s)")
    p.add_argument("--truncation", type=float, default=defaults.truncation,
                   help="truncation psi (default 1: the procedural twins of the seeds, needed by evaluate factory)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="run seed: picks the identities and cameras (default 0)")
    p.add_argument("--pointclouds", action="store_true", help="also write each identity's fused labelled point cloud (PLY)")
    p.add_argument("--voxel-size", type=float, help="voxel down-sampling of the point clouds (world units, e.g. 0.005)")
    p.add_argument("--point-labels", choices=POINT_LABELS, default=defaults.point_labels,
                   help="label each point from the branch's 3D field at the point (default) or from the pixel "
                        "it was back-projected from (the paper's way)")
    p.add_argument("--branch", type=Path, help="semantic-branch checkpoint (default: the newest under PROJECT/semantic/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset in --out (only the factory's files)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto: CUDA when present)")
    add_threads_argument(p, "CPU threads for torch with --workers 1 (default: torch's choice)")
    p.add_argument("--workers", type=int, help="CPU processes (or Ray workers) writing identities side by side "
                   "(default: one per core on a CPU run, 1 on a GPU); the files do not depend on it")
    cluster = p.add_argument_group("cluster (docs/factory.md: the same bytes as a local run)")
    cluster.add_argument("--cluster", choices=("local", "ray"), default="local",
                         help="local: processes on this machine (default); ray: Ray workers (pip install -e \".[cluster]\")")
    cluster.add_argument("--address", help="join this running Ray cluster (e.g. HEAD:6379, or 'auto'); "
                         "default: start Ray on this machine. --out must be a path every node sees")
    cluster.add_argument("--threads-per-worker", type=int, default=defaults.threads_per_worker,
                         help="torch threads (Ray CPUs) of each Ray worker (default 1)")
    cluster.add_argument("--shard", type=_shard, metavar="K/N",
                         help="write only identities i with i %% N == K (0 <= K < N), e.g. one job of a SLURM "
                              "array per shard, each into its own --out; `evaluate factory --dataset` takes them all")
    cluster.add_argument("--gpus-per-worker", type=float, default=defaults.gpus_per_worker,
                         help="GPUs of each Ray worker; fractions share a GPU (default 0: CPU workers)")
    p.set_defaults(run=_generate)


def _generate(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError, use_threads
    from core.factory.generate import FactoryError, GenerateRequest, generate_dataset

    use_threads(args.threads)
    request = GenerateRequest(
        workers=args.workers or _default_workers(args.device, args.n),
        project=args.project, out=args.out, identities=args.n, views=args.views, size=args.size,
        yaw_range=args.yaw_range, pitch_range=args.pitch_range, truncation=args.truncation, seed=args.seed,
        pointclouds=args.pointclouds, voxel_size=args.voxel_size, point_labels=args.point_labels, resume=args.resume, overwrite=args.overwrite,
        device=args.device, branch=args.branch, cluster=args.cluster, address=args.address,
        threads_per_worker=args.threads_per_worker, gpus_per_worker=args.gpus_per_worker, shard=args.shard)
    bar = None

    def progress(state) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=state.samples_total, initial=state.samples_done, unit="sample", desc="generate",
                       dynamic_ncols=True)
        bar.update(state.samples_done - bar.n)
        bar.set_postfix(identities=f"{state.identities_done}/{state.identities_total}")

    try:
        result = generate_dataset(request, progress)
    except FactoryError as error:
        raise UserError(str(error)) from error
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"{args.out}: stopped; every identity marked done in manifest.json is complete. "
              "Run the same command with --resume to finish (same files as an uninterrupted run).", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    rate = result.samples_written / result.elapsed_s if result.elapsed_s > 0 else 0.0
    print(f"{result.out}: {result.identities_done}/{result.identities_total} identities "
          f"({result.identities_done * args.views} samples) done; {result.samples_written} written now in "
          f"{result.elapsed_s:.1f} s ({rate:.2f} samples/s)")


def _default_workers(device: str, identities: int) -> int:
    from core.backbone import BackboneError, pick_device

    try:
        on_cpu = pick_device(device).type == "cpu"
    except BackboneError:
        return 1  # generate_dataset reports the missing device
    return max(1, min(os.cpu_count() or 1, identities)) if on_cpu else 1


def add_factory_evaluation(what) -> None:
    p = what.add_parser("factory", help="label mIoU and point-cloud accuracy of a generated dataset",
                        description="Compare a generated dataset with the procedural ground truth of its identities "
                                    "(same seeds, same cameras): label mIoU, pixel accuracy, per-class IoU and, "
                                    "with point clouds, the fraction of points with the right part label.")
    p.add_argument("--dataset", required=True, type=Path, nargs="+",
                   help="a folder written by `generate`, or the folders of its shards (scored as one)")
    p.add_argument("--identities", type=int, help="score only the first K identities (default: all done)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=_evaluate_factory)


def _evaluate_factory(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError
    from core.factory.evaluate import evaluate_factory
    from core.factory.generate import FactoryError

    with tqdm(unit="identity", desc="evaluate factory", dynamic_ncols=True, disable=None) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        try:
            figures = evaluate_factory(args.dataset, args.identities, progress)
        except FactoryError as error:
            raise UserError(str(error)) from error
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['dataset']}: {figures['images']} images of {figures['identities']} identities")
    print(f"  label mIoU {figures['miou']:.3f}, pixel accuracy {figures['pixel_accuracy']:.3f}")
    if "point_accuracy" in figures:
        print(f"  point accuracy {figures['point_accuracy']:.3f} over {figures['points']} points "
              f"({figures['points_near_surface']:.3f} within 0.03 of the surface)")


def export_parser(sub) -> None:
    from core.factory.export import FORMATS

    p = sub.add_parser("export", help="write a generated dataset as COCO or mmsegmentation files",
                       description="Convert a factory dataset for other training code: COCO semantic "
                                   "segmentation (RLE masks, read by pycocotools) or the mmsegmentation folder "
                                   "layout with a palette. Images are hard-linked where the filesystem allows.")
    p.add_argument("--dataset", required=True, type=Path, help="a folder written by `generate`")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, help="new output folder")
    p.add_argument("--val-identities", type=int, default=0,
                   help="put the last K identities in a 'val' split (default 0: everything in 'train')")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=_export)


def _export(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError
    from core.factory.dataset import DatasetError
    from core.factory.export import export_dataset

    if args.format == "coco":
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise UserError("--format coco needs pycocotools: pip install 'datasetnerf-studio[formats]'") from None
    with tqdm(unit="image", desc=f"export {args.format}", dynamic_ncols=True, disable=None) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        try:
            result = export_dataset(args.dataset, args.out, args.format, args.val_identities, args.overwrite, progress)
        except (DatasetError, OSError) as error:
            raise UserError(str(error)) from error
    splits = ", ".join(f"{count} {split}" for split, count in result.images.items())
    extra = f", {result.annotations} annotations" if args.format == "coco" else ""
    print(f"wrote {result.out} ({args.format}: {splits} images{extra})")
