"""The simulated annotator: procedural ground-truth masks written through the store exactly as a
person painting in the Annotate workspace would (design.md section 3, purpose 2).

The semantic branch never reads procedural labels any other way, so tests and benchmarks that use
this exercise the same files, validation and counters as real annotations.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ProjectError
from .labels import default_label_set
from .records import BackboneRef, IdentityRef
from .store import Project

DEFAULT_RESOLUTION = 128


@dataclass(frozen=True)
class SimulationResult:
    written: list[int]  # ids of the new annotations
    skipped: int        # (identity, view) pairs already annotated at this resolution


def parse_views(text: str) -> list[tuple[float, float]]:
    """'yaw,pitch;yaw,pitch;…' (degrees) → [(yaw, pitch), …]; ValueError saying what is wrong."""
    views = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        numbers = item.split(",")
        try:
            yaw, pitch = (float(n) for n in numbers)
        except ValueError:
            raise ValueError(f"view {item!r} is not 'yaw,pitch' in degrees") from None
        views.append((yaw, pitch))
    if not views:
        raise ValueError(f"no views in {text!r}; expected 'yaw,pitch;yaw,pitch;…'")
    return views


def simulate_annotations(project: Project, backbone, seeds: list[int], views: list[tuple[float, float]],
                         resolution: int = DEFAULT_RESOLUTION,
                         progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Paint procedural labels of every seed at every (yaw, pitch) view into `project`.

    Cameras come from `backbone.camera(yaw, pitch)` as in the GUI, so the stored camera is the
    one the generator renders. The identity stored is the seed with truncation 1 (the generator
    and the procedural category share EG3D's seed convention). Views already annotated at this
    resolution are skipped, so an interrupted run can simply be started again.
    """
    from core.procedural import HeadParams, render

    _check_label_set_covers_procedural_labels(project)
    done = _already_annotated(project)
    written, skipped, total = [], 0, len(seeds) * len(views)
    for seed in seeds:
        params = HeadParams.from_seed(seed)
        identity = IdentityRef(seed=seed, truncation_psi=1.0)
        for yaw, pitch in views:
            camera = backbone.camera(yaw, pitch)
            if (identity, camera, (resolution, resolution)) in done:
                skipped += 1
            else:
                mask = render(params, camera.label(), resolution)["labels"]
                written.append(project.add_annotation(identity, camera, mask))
            if progress:
                progress(len(written) + skipped, total)
    return SimulationResult(written, skipped)


def _already_annotated(project: Project) -> set:
    return {(meta.identity, meta.camera, meta.resolution) for meta in project.annotations(problems=[])}


def _check_label_set_covers_procedural_labels(project: Project) -> None:
    from core.procedural.category import LABELS

    missing = [f"{label_id} {name}" for label_id, name, _ in LABELS if label_id not in project.label_set]
    if missing:
        raise ProjectError(f"{project.folder}: the label set lacks procedural labels {missing}; the simulated annotator paints all of them")


# ================================================================================ command line
def add_parser(sub) -> None:
    p = sub.add_parser(
        "annotate-sim", help="paint procedural ground-truth masks into a project (simulated annotator)",
        description="Write the procedural category's part labels for K annotation identities at the given "
                    "views into a project, through the same store the Annotate workspace uses. Creates the "
                    "project if the folder holds none. Views already annotated are skipped.")
    p.add_argument("--project", required=True, type=Path, help="project folder (created if missing)")
    p.add_argument("--identities", required=True, type=int, help="number of identities K, from the 'annotate' seed range")
    p.add_argument("--views", required=True, help="'yaw,pitch;yaw,pitch;…' in degrees, e.g. --views='-30,0;0,0;30,0' (with '=': a value starting with '-' would be read as an option)")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, help=f"mask size in pixels (default {DEFAULT_RESOLUTION})")
    p.add_argument("--start", type=int, default=0, help="skip this many seeds of the 'annotate' range first (default 0)")
    p.add_argument("--backbone", help="backbone file for a new project (default: the embedded one); for an existing project it must be the project's")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the backbone is loaded (only its cameras are used)")
    p.set_defaults(run=_annotate_sim)


def _annotate_sim(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError
    from core.procedural import seeds_for

    try:
        views = parse_views(args.views)
        _check_counts(args)
        seeds = seeds_for("annotate", args.identities, args.start)
    except ValueError as error:
        raise UserError(str(error)) from error
    project, backbone = _open_or_create(args)
    try:
        with tqdm(total=len(seeds) * len(views), desc="annotate-sim", unit="mask") as bar:
            result = simulate_annotations(project, backbone, seeds, views, args.resolution,
                                          progress=lambda done, _total: bar.update(done - bar.n))
    except ProjectError as error:
        raise UserError(str(error)) from error
    finally:
        project.close()
    print(f"wrote {len(result.written)} annotations ({len(seeds)} identities x {len(views)} views, "
          f"{args.resolution}x{args.resolution}) to {args.project}"
          + (f"; skipped {result.skipped} already present" if result.skipped else ""))


def _check_counts(args) -> None:
    if args.identities < 1:
        raise ValueError("--identities must be at least 1")
    if args.start < 0:
        raise ValueError("--start cannot be negative")
    if args.resolution < 8:
        raise ValueError("--resolution must be at least 8 pixels")


def _open_or_create(args):
    """(writable project, its backbone); every failure becomes one UserError line."""
    from core.backbone import BackboneError
    from core.cli import UserError

    try:
        if Project.exists(args.project):
            return _open_existing(args)
        return _create_new(args)
    except (ProjectError, BackboneError, OSError) as error:
        raise UserError(str(error)) from error


def _open_existing(args):
    from core.backbone import load_backbone

    project = Project.open(args.project, writable=True)
    try:
        if args.backbone is None:
            return project, project.load_backbone(args.device)
        backbone = load_backbone(args.backbone, device=args.device)
        if backbone.content_hash != project.backbone.content_hash:
            raise ProjectError(f"--backbone {args.backbone} is not the backbone of {args.project} "
                               f"({project.backbone.path}); leave --backbone out to use the project's")
        return project, backbone
    except BaseException:
        project.close()
        raise


def _create_new(args):
    from core.backbone import load_backbone

    spec = args.backbone or "default"
    backbone = load_backbone(spec, device=args.device)  # before creating anything on disk
    reference = BackboneRef.for_backbone(backbone, spec, args.project)
    return Project.create(args.project, reference, default_label_set()), backbone
