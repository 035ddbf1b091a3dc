"""`python main.py train-semantic` and `python main.py evaluate labels`: thin wrappers of
core.semantic's train_semantic and evaluate_branches over a project folder.

Checkpoints go to PROJECT/semantic/ (PROJECT/semantic/RUN/ with --run), with a training_log.json
beside them that lists every checkpoint's step, loss and validation figures.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

from core.project.store import SEMANTIC_DIR

TRAINING_LOG = "training_log.json"
DEFAULT_STEPS = 2000


# ================================================================================ train-semantic
def add_parser(sub) -> None:
    from core.cli import add_threads_argument

    p = sub.add_parser(
        "train-semantic", help="train the semantic branch on a project's annotations",
        description="Train the semantic branch on every valid annotation of a project, with the project's "
                    "backbone frozen. Checkpoints (with their metrics) go to PROJECT/semantic/; Ctrl-C or "
                    "SIGTERM stops after the current step and writes one; --resume continues from the newest. "
                    "Unreadable annotations are reported and skipped; annotations painted on another "
                    "backbone stop the run.")
    p.add_argument("--project", required=True, type=Path, help="project folder")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"optimiser steps in total, counting those of a resumed run (default {DEFAULT_STEPS})")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--run", dest="run_name", metavar="NAME", help="keep this run's checkpoints in PROJECT/semantic/NAME/ "
                                                 "(e.g. for an ablation beside the main branch)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--validate", choices=["auto", "procedural", "none"], default="auto",
                   help="figures stored with each checkpoint: 'procedural' = mIoU on 2 procedural identities of the "
                        "'evaluate' range (needs a backbone of the procedural category); auto: procedural for the "
                        "embedded default backbone, none otherwise")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="learning rate over the run's --steps: constant (default) or a cosine decay to 0")
    p.add_argument("--class-balance", type=float, default=0.0, metavar="POWER",
                   help="class-balanced cross-entropy: a class weighs (its share of the painted pixels)^-POWER "
                        "(default 0: plain; docs/semantic.md 'What was tried')")
    p.add_argument("--edge-weight", type=float, default=0.0, metavar="W",
                   help="pixels next to a label edge of a mask weigh 1 + W in the loss (default 0)")
    p.add_argument("--raw-loss-weight", type=float, default=0.5, metavar="W",
                   help="weight of the cross-entropy on the volume-rendered logits beside the super-resolved ones "
                        "(default 0.5; 0 = the paper's loss)")
    p.add_argument("--no-multiscale", action="store_true", help="ablation: semantic tri-plane from the last block only")
    p.add_argument("--no-density-prior", action="store_true", help="ablation: the branch predicts its own density")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads_argument(p)
    p.set_defaults(run=_train_semantic)


def _train_semantic(args) -> None:
    from core.cli import UserError, use_threads
    from core.project import ProjectError

    _check_train_arguments(args)
    use_threads(args.threads)
    try:
        project = _open_project(args.project, writable=True)
    except ProjectError as error:
        raise UserError(str(error)) from error
    try:
        _train_in_project(project, args)
    finally:
        project.close()


def _check_train_arguments(args) -> None:
    from core.cli import UserError

    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    if args.checkpoint_every < 1:
        raise UserError("--checkpoint-every must be at least 1")
    for option, value in (("--class-balance", args.class_balance), ("--edge-weight", args.edge_weight),
                          ("--raw-loss-weight", args.raw_loss_weight)):
        if not (value >= 0 and math.isfinite(value)):
            raise UserError(f"{option} must be a finite number >= 0, got {value}")
    name = args.run_name
    if name is not None and (not name or Path(name).name != name or name.startswith(".")):
        raise UserError(f"--run must be a plain folder name, got {name!r}")


def _train_in_project(project, args) -> None:
    from core.cli import UserError
    from core.checkpoint.errors import CheckpointError
    from core.semantic.checkpoint import list_checkpoints
    from core.semantic.training import TrainingSettings, train_semantic

    backbone = _project_backbone(project, args.device)
    views = _training_views(project)
    directory = checkpoint_directory(project.folder, args.run_name)
    existing = list_checkpoints(directory)
    if existing and not args.resume:
        raise UserError(f"{directory} already holds checkpoints (newest: step {existing[-1][0]}); pass --resume to "
                        "continue, --run NAME for a separate run, or delete them to start over")
    branch = _branch_for_run(project, backbone, directory, args)
    settings = TrainingSettings(checkpoint_every=args.checkpoint_every, learning_rate_schedule=args.lr_schedule,
                                class_balance_power=args.class_balance, boundary_weight=args.edge_weight,
                                raw_loss_weight=args.raw_loss_weight)
    validation = _validation(args.validate, project, backbone, views)
    directory.mkdir(parents=True, exist_ok=True)
    log = TrainingLog(directory / TRAINING_LOG, fresh=not existing)
    print(f"training on {len(views)} annotations of {project.folder} (backbone {backbone.name}, {backbone.device}); "
          f"checkpoints in {directory}", file=sys.stderr)
    with _ProgressBars(args.steps, len(views), log) as bars, _StopOnSignals() as stop:
        bars.on_training_start = stop.training_started
        try:
            result = train_semantic(branch, backbone, views, args.steps, progress=bars.update, should_stop=stop,
                                    checkpoint_dir=directory, resume=args.resume, settings=settings,
                                    validate=validation)
        except (ValueError, FileExistsError, CheckpointError) as error:  # e.g. resuming another backbone's branch
            raise UserError(str(error)) from error
    _report_result(result, log)
    if result.stopped:
        raise KeyboardInterrupt


def checkpoint_directory(project_folder: Path, run: str | None = None) -> Path:
    directory = Path(project_folder) / SEMANTIC_DIR
    return directory / run if run else directory


def _open_project(folder: Path, writable: bool):
    from core.project import Project

    return Project.open(folder, writable=writable)


def _project_backbone(project, device_name: str):
    from core.backbone import BackboneError, pick_device
    from core.cli import UserError
    from core.project import ProjectError

    try:
        return project.load_backbone(pick_device(device_name))
    except (ProjectError, BackboneError, OSError) as error:
        raise UserError(str(error)) from error


def _training_views(project) -> list:
    """The project's valid annotations; unreadable ones reported and skipped, foreign ones an error."""
    from core.cli import UserError
    from core.project import ForeignAnnotationError
    from core.semantic.annotations import annotated_views

    problems: list = []
    views = annotated_views(project, problems)
    foreign = [problem for problem in problems if isinstance(problem, ForeignAnnotationError)]
    if foreign:
        listed = "; ".join(str(problem) for problem in foreign[:3])
        more = f" (and {len(foreign) - 3} more)" if len(foreign) > 3 else ""
        raise UserError(f"{len(foreign)} annotation(s) were painted on another backbone: {listed}{more}. "
                        "Repaint them on this project's backbone or remove them; training would mix two models")
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not views:
        raise UserError(f"{project.folder} has no usable annotations to train on"
                        + (f" ({len(problems)} skipped)" if problems else ""))
    if problems:
        print(f"{len(problems)} annotation(s) skipped; training on the other {len(views)}", file=sys.stderr)
    return views


def _branch_for_run(project, backbone, directory: Path, args):
    """A new branch for the project's label set, or, when resuming, one of the checkpoint's shape."""
    from core.cli import UserError
    from core.semantic import SemanticBranch

    num_classes = max(project.label_set.ids) + 1
    options = dict(multiscale=not args.no_multiscale, density_prior=not args.no_density_prior)
    branch = SemanticBranch.for_generator(backbone.generator, num_classes, **options)
    stored = _resumable_config(directory) if args.resume else None
    if stored is None:
        return branch
    if stored["num_classes"] != num_classes:
        raise UserError(f"the checkpoints in {directory} have {stored['num_classes']} classes, the project's label "
                        f"set {num_classes}; the label set changed: train afresh with --run NAME")
    # The checkpoint decides the shape; an ablation flag it contradicts is a mistake worth naming.
    for option, flag in (("multiscale", args.no_multiscale), ("density_prior", args.no_density_prior)):
        if flag and stored[option]:
            raise UserError(f"the checkpoints in {directory} were trained with {option}; resume without "
                            f"--no-{option.replace('_', '-')} or use --run NAME for the ablation")
    return SemanticBranch(**stored)


def _resumable_config(directory: Path) -> dict | None:
    """The branch configuration of the newest readable checkpoint (train_semantic resumes from it)."""
    from core.checkpoint.errors import CheckpointError
    from core.semantic.checkpoint import list_checkpoints, read_branch_metadata

    for _, path in reversed(list_checkpoints(directory)):
        try:
            return read_branch_metadata(path)["branch_config"]
        except CheckpointError:
            continue
    return None


def _validation(choice: str, project, backbone, views):
    from core.semantic.evaluation import ValidationSet

    if choice == "auto":
        choice = "procedural" if project.backbone.path == "default" else "none"
    if choice == "none":
        return None
    resolution = int(views[0].mask.shape[-1])
    return ValidationSet(backbone, resolution, class_names=class_names(project))


def class_names(project) -> list[str]:
    """Names indexed by label id (ids the label set skips are named by their number)."""
    names = {label.id: label.name for label in project.label_set.labels}
    return [names.get(index, f"id {index}") for index in range(max(names) + 1)]



def _report_result(result, log: "TrainingLog") -> None:
    last = log.entries[-1] if log.entries else {}
    validation = last.get("validation_miou")
    figures = f"loss {result.loss:.4f}, train pixel accuracy {result.accuracy:.3f}" if math.isfinite(result.loss) else ""
    if validation is not None:
        figures += f", validation mIoU {validation:.3f}"
    state = "stopped" if result.stopped else "done"
    print(f"{state} at step {result.step}" + (f": {figures}" if figures else "")
          + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))
    if result.stopped:
        print("continue with the same command and --resume", file=sys.stderr)


class TrainingLog:
    """training_log.json: one entry per checkpoint (step, loss, validation figures, elapsed time)."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.entries = [] if fresh else self._read()

    def _read(self) -> list:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []  # a missing or damaged log only loses history, never training
        return entries if isinstance(entries, list) else []

    def add_checkpoint(self, path: Path) -> None:
        from core.checkpoint.errors import CheckpointError
        from core.fileio import atomic_write_json
        from core.semantic.checkpoint import read_branch_metadata

        try:
            document = read_branch_metadata(path)
        except CheckpointError:
            return
        entry = {"step": document["step"], "checkpoint": path.name, "saved_at": document.get("saved_at")}
        entry.update({key: value for key, value in document.get("metrics", {}).items() if key != "validation"})
        self.entries = [e for e in self.entries if e.get("step") != entry["step"]] + [entry]
        atomic_write_json(self.path, self.entries)


class _ProgressBars:
    """tqdm bars: one for preparing the annotations, one for the steps (loss, accuracy, ETA)."""

    def __init__(self, steps: int, annotations: int, log: TrainingLog):
        self.steps, self.annotations, self.log = steps, annotations, log
        self.prepare_bar = self.train_bar = None
        self.on_training_start = lambda: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for bar in (self.prepare_bar, self.train_bar):
            if bar is not None:
                bar.close()

    def update(self, progress) -> None:
        from tqdm import tqdm

        if progress.phase == "preparing":
            if progress.message.startswith("prepared view"):
                if self.prepare_bar is None:
                    self.prepare_bar = tqdm(total=self.annotations, desc="preparing", unit="view")
                self.prepare_bar.update(1)
            elif progress.message:
                tqdm.write(progress.message, file=sys.stderr)
            return
        if self.train_bar is None:
            if self.prepare_bar is not None:
                self.prepare_bar.close()
            start = progress.step - 1 if progress.phase == "training" else progress.step
            self.train_bar = tqdm(total=self.steps, initial=max(start, 0), desc="train-semantic", unit="step")
            self.on_training_start()
        if progress.phase == "training":
            self.train_bar.update(progress.step - self.train_bar.n)
            if math.isfinite(progress.loss):
                self.train_bar.set_postfix(loss=f"{progress.loss:.4f}", acc=f"{progress.accuracy:.3f}", refresh=False)
        elif progress.phase == "checkpoint" and progress.checkpoint is not None:
            self.log.add_checkpoint(progress.checkpoint)
            entry = self.log.entries[-1] if self.log.entries else {}
            note = f", validation mIoU {entry['validation_miou']:.3f}" if entry.get("validation_miou") is not None else ""
            tqdm.write(f"step {progress.step}: saved {progress.checkpoint.name}{note}", file=sys.stderr)


class _StopOnSignals:
    """Ctrl-C / SIGTERM: the first stops training after the current step (a checkpoint is written);
    a second one, or one before the first step, interrupts at once (the last checkpoint stays)."""

    def __init__(self):
        self.requested = False
        self.training = False
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def training_started(self) -> None:
        self.training = True

    def _handle(self, signum, frame):
        if self.requested or not self.training:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once)", file=sys.stderr)

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. called from a GUI worker): no handlers
                pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ================================================================================ evaluate labels
def add_labels_evaluation(what) -> None:
    """`evaluate labels`: registered under `evaluate` in core.cli."""
    from core.cli import add_threads_argument
    from core.semantic.evaluation import LABEL_VIEWS, VIDEO_FRAMES

    p = what.add_parser(
        "labels", help="label quality of a project's semantic branch on held-out procedural identities",
        description="mIoU, pixel accuracy, per-class IoU, multi-view consistency and orbit-video mIoU of the "
                    "project's trained semantic branch, against the procedural labels of identities from the "
                    "'evaluate' seed range (never annotated).")
    p.add_argument("--project", required=True, type=Path, help="project folder")
    p.add_argument("--checkpoint", type=Path, action="append",
                   help="a semantic-branch checkpoint (default: the newest in PROJECT/semantic/, or "
                        "PROJECT/semantic/RUN/ with --run); several --checkpoint options compare branches of the "
                        "same backbone on the same renders (the JSON is then a list)")
    p.add_argument("--run", dest="run_name", metavar="NAME", help="evaluate the newest checkpoint of this run")
    p.add_argument("--identities", type=int, default=10, help="held-out identities (default 10)")
    p.add_argument("--views", type=int, default=len(LABEL_VIEWS),
                   help=f"views per identity, of {LABEL_VIEWS} (default all {len(LABEL_VIEWS)})")
    p.add_argument("--video-identities", type=int, default=1,
                   help="identities whose orbit video is labelled (of the evaluated ones; default 1)")
    p.add_argument("--video-frames", type=int, default=VIDEO_FRAMES, help=f"frames of the orbit (default {VIDEO_FRAMES})")
    p.add_argument("--resolution", type=int, help="label resolution (default: the backbone's image resolution)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_threads_argument(p)
    p.add_argument("--surface-oracle", action="store_true",
                   help="also report 'surface_oracle': the procedural label at the backbone's own surface point of "
                        "each pixel, the ceiling the backbone's geometry puts on any branch")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=_evaluate_labels)


def _evaluate_labels(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError, use_threads
    from core.project import ProjectError
    from core.semantic.evaluation import SURFACE_ORACLE, evaluate_branches

    use_threads(args.threads)
    try:
        project = _open_project(args.project, writable=False)
    except ProjectError as error:
        raise UserError(str(error)) from error
    backbone = _project_backbone(project, args.device)
    names = class_names(project)
    loaded = [_load_for_evaluation(path, backbone, names, args.project) for path in _checkpoints_to_evaluate(args)]
    try:
        with tqdm(desc="evaluate labels", unit="view") as bar:
            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)

            results = evaluate_branches({str(path): branch for path, branch, _ in loaded}, backbone, args.identities,
                                        args.views, args.video_identities, args.video_frames, args.resolution, names,
                                        progress, surface_oracle=args.surface_oracle)
    except ValueError as error:
        raise UserError(str(error)) from error
    reports = []
    for path, _, document in loaded:
        figures = results[str(path)]
        figures.update(checkpoint=str(path), step=document["step"], backbone=backbone.name,
                       branch={key: document["branch_config"][key] for key in ("multiscale", "density_prior")})
        if args.surface_oracle:
            figures["surface_oracle"] = {key: results[SURFACE_ORACLE][key] for key in
                                         ("miou", "pixel_accuracy", "per_class_iou", "consistency", "video_miou")}
        reports.append(figures)
    if args.json:
        print(json.dumps(_json_ready(reports[0] if len(reports) == 1 else reports), indent=2))
        return
    for figures in reports:
        print(f"{Path(figures['checkpoint']).name} (step {figures['step']}): mIoU {figures['miou']:.4f}, pixel "
              f"accuracy {figures['pixel_accuracy']:.4f}, consistency {figures['consistency']:.4f}, video mIoU "
              f"{figures['video_miou']:.4f} ({len(figures['identities'])} identities x {len(figures['views'])} "
              f"views, {figures['resolution']}^2)")


def _load_for_evaluation(path: Path, backbone, names: list[str], project_folder: Path):
    from core.checkpoint.errors import CheckpointError
    from core.cli import UserError
    from core.semantic.checkpoint import load_branch

    try:
        branch, document = load_branch(path, backbone_hash=backbone.content_hash, device=backbone.device)
    except CheckpointError as error:
        raise UserError(str(error)) from error
    if len(names) != branch.num_classes:
        raise UserError(f"{path} has {branch.num_classes} classes, but the label set of {project_folder} has "
                        f"{len(names)}; it was trained on another label set")
    return path, branch, document


def _checkpoints_to_evaluate(args) -> list[Path]:
    from core.cli import UserError
    from core.semantic.checkpoint import latest_checkpoint

    if args.checkpoint:
        for path in args.checkpoint:
            if not path.is_file():
                raise UserError(f"checkpoint not found: {path}")
        return list(dict.fromkeys(args.checkpoint))
    directory = checkpoint_directory(args.project, args.run_name)
    path = latest_checkpoint(directory)
    if path is None:
        raise UserError(f"no semantic-branch checkpoint in {directory}; run train-semantic first or pass --checkpoint")
    return [path]


def _json_ready(value):
    """NaN (a figure with nothing to measure) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value
