"""`python main.py evaluate downstream`: registered under `evaluate` in core.cli."""
from __future__ import annotations

import json
from pathlib import Path


def add_downstream_evaluation(what) -> None:
    from core.cli import add_threads_argument

    p = what.add_parser(
        "downstream", help="segmenters trained on factory output vs annotations alone vs a DatasetGAN-style baseline",
        description="Train a DeepLabV3-style segmenter from scratch on factory output, on the annotations alone and "
                    "on DatasetGAN-style pixel-classifier labels, and a PointNet-style segmenter on factory point "
                    "clouds; test all on procedural renders of held-out identities (docs/downstream.md).")
    p.add_argument("--project", type=Path, help="project whose annotations (and backbone, and newest semantic checkpoint, "
                                                 "used for the full annotation count) to use; default: the simulated "
                                                 "annotator's masks built in memory")
    p.add_argument("--branch", type=Path, help="semantic-branch checkpoint trained on all the project's annotations "
                                                "(default: the newest in PROJECT/semantic/)")
    p.add_argument("--dataset", type=Path, help="factory dataset folder for the DatasetNeRF arm; default: generate in-process")
    p.add_argument("--work", type=Path, help="folder keeping branches, generated pairs and finished results (resumable)")
    p.add_argument("--backbone", default="default", help="backbone without --project (default: the embedded one)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the pipeline, not a figure")
    p.add_argument("--parts", help="comma-separated subset of main,pairs,annotations,pointclouds")
    p.add_argument("--arms", help="comma-separated subset of datasetnerf,datasetgan,annotations_only (default: all)")
    p.add_argument("--pairs", help="generated-pair counts, e.g. 100,300,1000")
    p.add_argument("--annotations", help="annotation counts, e.g. 30,45,90")
    p.add_argument("--annotation-scale-pairs", type=int, help="pairs generated per annotation count (default 300)")
    p.add_argument("--clouds", help="training point-cloud counts, e.g. 25,50,100")
    p.add_argument("--resolution", type=int, help="image size of every arm and test set (default 64)")
    p.add_argument("--steps", type=int, help="segmenter training steps per arm (default 600)")
    p.add_argument("--semantic-steps", type=int, help="semantic-branch steps when one must be trained (default 1500)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=_evaluate_downstream)


def _counts(text: str, name: str, UserError) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--{name} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"--{name} needs positive counts, got {text!r}")
    return values


def settings_from_arguments(args, UserError):
    from dataclasses import replace

    from core.downstream.evaluate import ARMS, PARTS, DownstreamSettings, quick_settings

    settings = quick_settings() if args.quick else DownstreamSettings()
    changes = {}
    for name in ("pairs", "annotations", "clouds"):
        if getattr(args, name):
            changes[name] = _counts(getattr(args, name), name, UserError)
    if args.parts:
        parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
        unknown = sorted(set(parts) - set(PARTS))
        if unknown or not parts:
            raise UserError(f"--parts takes some of {','.join(PARTS)}; unknown: {unknown}")
        changes["parts"] = parts
    if args.arms:
        arms = tuple(arm.strip() for arm in args.arms.split(",") if arm.strip())
        unknown = sorted(set(arms) - set(ARMS))
        if unknown or not arms:
            raise UserError(f"--arms takes some of {','.join(ARMS)}; unknown: {unknown}")
        changes["arms"] = arms
    for name in ("resolution", "semantic_steps", "annotation_scale_pairs"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if changes.get("resolution") is not None and (changes["resolution"] < 16 or changes["resolution"] % 4):
        raise UserError("--resolution must be a multiple of 4, at least 16")
    settings = replace(settings, **changes)
    if args.steps is not None:
        settings = replace(settings, segmenter=replace(settings.segmenter, steps=args.steps))
    return settings


def _inputs(args, settings, UserError):
    """(backbone, annotations, project branch or None)."""
    from core.backbone import BackboneError, load_backbone
    from core.downstream.sources import simulated_annotations

    if args.project is None:
        try:
            backbone = load_backbone(args.backbone)
        except BackboneError as error:
            raise UserError(str(error)) from error
        return backbone, simulated_annotations(max(settings.annotations), settings.annotation_resolution), None
    return _project_inputs(args.project, args.branch, UserError)


def _project_inputs(folder: Path, branch_file: Path | None, UserError):
    from core.checkpoint.errors import CheckpointError
    from core.project import Project
    from core.project.errors import ProjectError
    from core.semantic import load_branch
    from core.semantic.annotations import annotated_views

    try:
        with Project.open(folder) as project:
            backbone = project.load_backbone("cpu")
            problems = []
            annotations = annotated_views(project, problems)
            checkpoint = branch_file or project.current_branch()
    except (ProjectError, OSError, ValueError) as error:
        raise UserError(str(error)) from error
    for problem in problems:
        print(f"skipped: {problem}")
    if checkpoint is None:
        return backbone, annotations, None
    try:
        branch = load_branch(checkpoint, backbone_hash=backbone.content_hash)[0].eval()
    except (CheckpointError, OSError) as error:
        raise UserError(str(error)) from error
    branch.source = str(checkpoint)
    return backbone, annotations, branch


def _evaluate_downstream(args) -> None:
    from core.cli import StageBar, UserError, use_threads
    from core.downstream.dataset import read_pairs, read_point_clouds
    from core.factory.dataset import DatasetError
    from core.downstream.evaluate import DownstreamRun

    use_threads(args.threads)
    settings = settings_from_arguments(args, UserError)
    backbone, annotations, branch = _inputs(args, settings, UserError)
    dataset = clouds = None
    if args.dataset is not None:
        try:
            dataset = read_pairs(args.dataset, settings.resolution)
            clouds = read_point_clouds(args.dataset) if "pointclouds" in settings.parts else None
        except DatasetError as error:
            raise UserError(str(error)) from error
    bar = StageBar()
    try:
        run = DownstreamRun(backbone, annotations, settings, args.work, dataset, clouds, branch, progress=bar.update)
        results = run.run()
    except ValueError as error:
        raise UserError(str(error)) from error
    finally:
        bar.close()
    results["backbone"] = backbone.name
    results["project"] = str(args.project) if args.project else None
    results["semantic_checkpoint"] = getattr(branch, "source", None)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(summary(results))


def summary(results: dict) -> str:
    """Plain-text tables of the figures (mIoU / pixel accuracy)."""
    def cell(result, test):
        figures = result[test]
        return f"{figures['miou']:.3f} / {figures['pixel_accuracy']:.3f}"

    lines = []
    if "main" in results:
        lines.append("arm               pairs   individual mIoU/acc   video mIoU/acc")
        for arm, result in results["main"].items():
            lines.append(f"{arm:17s} {result['pairs']:5d}   {cell(result, 'individual'):20s}  {cell(result, 'video')}")
    for key, what in (("pairs_scale", "pairs"), ("annotations_scale", "annotations")):
        for result in results.get(key, []):
            lines.append(f"[{key}] {result['arm']:17s} annotations {result['annotations']:3d} pairs {result['pairs']:5d}   "
                         f"{cell(result, 'individual')}   {cell(result, 'video')}")
    for result in results.get("pointclouds", {}).get("results", []):
        test = result["test"]
        lines.append(f"[pointclouds] {result['clouds']:4d} clouds   mIoU {test['miou']:.3f}   accuracy {test['pixel_accuracy']:.3f}")
    return "\n".join(lines)
