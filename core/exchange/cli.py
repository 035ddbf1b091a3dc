"""`export-views` and `import-annotations`: paint in CVAT or labelme, train here."""
from __future__ import annotations

from pathlib import Path


def export_views_parser(sub) -> None:
    from core.exchange.views import EXPORT_FORMATS
    from core.project.simulate import DEFAULT_RESOLUTION

    p = sub.add_parser("export-views", help="render a project's views to paint in CVAT or labelme",
                       description="Render N identities of the 'annotate' seed range at the given views into "
                                   "--out/images, with the label set as the tool's label config and a sidecar "
                                   "(studio_views.json) that import-annotations uses to put each painted mask "
                                   "on its identity and camera.")
    p.add_argument("--project", required=True, type=Path, help="project folder (its backbone renders the views)")
    p.add_argument("--n", required=True, type=int, help="number of identities")
    p.add_argument("--views", required=True, help="'yaw,pitch;yaw,pitch;…' in degrees, e.g. --views='-30,0;0,0;30,0'")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the tool the images are painted in")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--start", type=int, default=0, help="skip this many seeds of the 'annotate' range first")
    p.add_argument("--size", type=int, default=DEFAULT_RESOLUTION,
                   help=f"image (and mask) size in pixels (default {DEFAULT_RESOLUTION}, the annotation size)")
    p.set_defaults(run=_export_views)


def _export_views(args) -> None:
    from tqdm import tqdm

    from core.backbone import BackboneError
    from core.cli import UserError
    from core.exchange.views import ExchangeError, export_views
    from core.procedural import seeds_for
    from core.project import Project, ProjectError
    from core.project.simulate import parse_views

    if args.n < 1 or args.size < 8 or args.start < 0:
        raise UserError("--n must be at least 1, --size at least 8 and --start not negative")
    try:
        views, seeds = parse_views(args.views), seeds_for("annotate", args.n, args.start)
        with Project.open(args.project) as project, \
                tqdm(total=len(seeds) * len(views), unit="image", desc="export-views", disable=None) as bar:
            count = export_views(project, project.load_backbone(), seeds, views, args.format, args.out, args.size,
                                 lambda done, total: bar.update(done - bar.n))
    except (ExchangeError, ProjectError, BackboneError, ValueError, OSError) as error:
        raise UserError(str(error)) from error
    print(f"wrote {count} images ({len(seeds)} identities x {len(views)} views, {args.size}x{args.size}) for "
          f"{args.format} to {args.out}; paint them, then: python main.py import-annotations "
          f"--project {args.project} --from FOLDER")


def import_annotations_parser(sub) -> None:
    p = sub.add_parser("import-annotations", help="read masks painted in CVAT, labelme or COCO into a project",
                       description="Import painted masks (CVAT for images 1.1 XML, CVAT segmentation-mask "
                                   "export, COCO JSON, labelme JSON, or masks/*.png of label ids) into the "
                                   "project's annotations, each on the view export-views rendered for it. "
                                   "A file is imported whole or not at all; importing again updates.")
    p.add_argument("--project", required=True, type=Path, help="project folder")
    p.add_argument("--from", dest="source", required=True, type=Path, help="folder holding the tool's export")
    p.add_argument("--sidecar", type=Path, help="the studio_views.json export-views wrote "
                   "(default: the one in --from or its parent)")
    p.add_argument("--uncovered", choices=("background", "unlabelled"), default="background",
                   help="what pixels no shape covers become (default background, as the tools' own mask "
                        "exports; unlabelled when only some parts were outlined: training leaves them out)")
    p.set_defaults(run=_import_annotations)


def _import_annotations(args) -> None:
    from core.cli import UserError
    from core.exchange.importer import import_annotations
    from core.exchange.views import ExchangeError
    from core.project import Project, ProjectError

    try:
        with Project.open(args.project, writable=True) as project:
            summary = import_annotations(project, args.source, args.sidecar, args.uncovered)
    except ImportError as error:
        raise UserError(f"COCO files need pycocotools: pip install 'datasetnerf-studio[formats]' ({error})") from error
    except (ExchangeError, ProjectError, OSError) as error:
        raise UserError(str(error)) from error
    print(f"imported into {args.project}: {summary.describe()}")
