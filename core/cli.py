"""Headless command line: `python main.py <command> --help`.

Each command is a small function over `core/`; the GUI calls the same functions.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.camera import DEFAULT_FOV_DEG
from core.generator.configs import OFFICIAL_CONFIGS
from core.limits import ANY_NUMBER, OutOfRange, Range, cli_range


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


def add_threads_argument(parser: argparse.ArgumentParser,
                         help: str = "CPU threads for torch (default: torch's choice)") -> None:
    parser.add_argument("--threads", type=int, help=help)


def use_threads(threads: int | None) -> None:
    """Apply a command's --threads (None: torch's choice); a count below 1 is a UserError."""
    if threads is None:
        return
    if threads < 1:
        raise UserError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


class StageBar:
    """One tqdm bar (rate, ETA) per stage of a long command; a new stage closes the previous bar."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm, self.stage, self.bar = tqdm, None, None

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, self.tqdm(total=total, desc=stage, leave=False, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stage = self.bar = None


def _add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--backbone", default="default", help="'default' (embedded), an EG3D network pickle (.pkl) or a studio checkpoint (.safetensors)")
    group.add_argument("--config", choices=sorted(OFFICIAL_CONFIGS), help="an official configuration; needs --random-init")
    group.add_argument("--random-init", action="store_true", help="random weights for --config (checks an install without downloading weights)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto: CUDA when present)")


def _open_backbone(args):
    from core.backbone import BackboneError, load_backbone, pick_device, random_backbone

    try:
        device = pick_device(args.device)
        if args.config or args.random_init:
            if not (args.config and args.random_init):
                raise UserError("--config and --random-init go together (random weights of an official configuration)")
            return random_backbone(args.config, device=device)
        return load_backbone(args.backbone, device=device)
    except (BackboneError, ValueError) as error:
        raise UserError(str(error)) from error


# ---------------------------------------------------------------------------- render
def _render_parser(sub) -> None:
    p = sub.add_parser("render", help="render one identity from one view to a PNG", description="Render one identity (EG3D seed convention) from a yaw/pitch look-at camera.")
    _add_backbone_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="identity: z = RandomState(seed).randn(1, z_dim), as EG3D's gen_samples.py")
    p.add_argument("--yaw", type=float, default=0.0, help="degrees from frontal (positive moves the camera to +x, the subject's left)")
    p.add_argument("--pitch", type=float, default=0.0, help="degrees from frontal (EG3D: positive puts the camera lower, looking up)")
    p.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG, help="field of view in degrees (default 18.837, the official scripts' declared value; gen_samples.py actually uses 18: pass --fov 18 to reproduce it)")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi towards w_avg")
    p.add_argument("--truncation-cutoff", type=int, default=14, help="number of w layers truncated (EG3D default 14)")
    p.add_argument("--size", type=int, help="output size in pixels (default: the generator's own)")
    p.add_argument("--neural-resolution", type=int, help="neural rendering resolution (default: the checkpoint's)")
    p.add_argument("--mode", choices=["rgb", "depth"], default="rgb")
    p.add_argument("--stochastic", action="store_true", help="EG3D's random ray jitter and importance sampling instead of the deterministic mode")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.set_defaults(run=_render)


def _render(args) -> None:
    import cv2
    import torch

    from core.fileio import write_png
    from core.imaging import depth_to_uint8, rgb_to_uint8

    if args.size is not None and args.size < 8:
        raise UserError("--size must be at least 8 pixels")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, not {args.out}")
    start = time.perf_counter()
    backbone = _open_backbone(args)
    with torch.no_grad():
        # Like gen_samples.py, the mapping is conditioned on a frontal camera with the same FOV.
        identity = backbone.identity_from_seed(args.seed, args.truncation, args.truncation_cutoff, args.fov)
        camera = backbone.camera(args.yaw, args.pitch, fov=args.fov)
        view = backbone.render(identity, camera, args.neural_resolution, deterministic=not args.stochastic)
    if args.mode == "rgb":
        image = rgb_to_uint8(view.image)
    else:
        kwargs = backbone.rendering_kwargs
        near, far = kwargs.get("ray_start"), kwargs.get("ray_end")
        near, far = (near, far) if isinstance(near, (int, float)) and isinstance(far, (int, float)) else (None, None)
        image = depth_to_uint8(view.depth, near, far)
    if args.size is not None and image.shape[0] != args.size:
        shrink = args.size < image.shape[0]
        image = cv2.resize(image, (args.size, args.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    try:
        write_png(args.out, image)
    except OSError as error:
        raise UserError(f"could not write {args.out}: {error}") from error
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}, {args.mode}, backbone {backbone.name}, {backbone.device}) in {elapsed:.1f} s")


# ---------------------------------------------------------------------------- entry
from core.fitting.cli import add_fit_evaluation, fit_backbone_parser  # noqa: E402
from core.project.simulate import add_parser as annotate_sim_parser  # noqa: E402
from core.factory.cli import add_factory_evaluation, export_parser, generate_parser  # noqa: E402
from core.semantic.cli import add_labels_evaluation, add_parser as train_semantic_parser  # noqa: E402
from core.downstream.cli import add_downstream_evaluation  # noqa: E402
from core.editing.cli import add_edit_evaluation, edit_parser, invert_parser  # noqa: E402
from core.exchange.cli import export_views_parser, import_annotations_parser  # noqa: E402
from core.steering.cli import add_steer_evaluation, steer_parser, train_frozen_parser  # noqa: E402

# `evaluate WHAT`: each function adds one WHAT (a quality figure against procedural ground truth).
EVALUATIONS = [add_fit_evaluation, add_labels_evaluation, add_downstream_evaluation, add_factory_evaluation,
               add_edit_evaluation, add_steer_evaluation]


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="quality figures against procedural ground truth",
                       description="Quality figures measured against the procedural category.")
    what = p.add_subparsers(dest="evaluation", metavar="WHAT", required=True)
    for add in EVALUATIONS:
        add(what)


COMMANDS = [_render_parser, fit_backbone_parser, _evaluate_parser, annotate_sim_parser, train_semantic_parser, generate_parser,
            invert_parser, edit_parser, export_parser, export_views_parser, import_annotations_parser, steer_parser,
            train_frozen_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="DatasetNeRF Studio. Without a command, opens the studio window; with one, runs headless.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="headless commands")
    for add in COMMANDS:
        add(sub)
    apply_ranges(parser)
    return parser


# ---------------------------------------------------------------------------- numeric arguments
class RangedNumber:
    """An argparse type: an int or float parsed and checked against its Range (core/limits.py).

    argparse turns the refusal into `error: argument --yaw: must be ...` and exit status 2.
    """

    def __init__(self, number_type: type, checked: Range):
        self.number_type = number_type
        self.range = checked
        self.__name__ = number_type.__name__  # argparse names the type in some messages

    def __call__(self, text: str):
        try:
            return self.range.parse(text, integer=self.number_type is int)
        except OutOfRange as error:
            raise argparse.ArgumentTypeError(str(error)) from None


def numeric_options(parser: argparse.ArgumentParser, command: str = ""):
    """(command, action) for every int/float option of `parser` and its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from numeric_options(child, f"{command} {name}".strip())
        elif action.type in (int, float) or isinstance(action.type, RangedNumber):
            yield command, action


def apply_ranges(parser: argparse.ArgumentParser) -> None:
    """Give every int/float option its Range; an option without one still has to be finite."""
    for command, action in numeric_options(parser):
        if not isinstance(action.type, RangedNumber):
            action.type = RangedNumber(action.type, cli_range(command, action.dest) or ANY_NUMBER)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's --help (0) or its one-line usage error (2)
        return exit_.code
    if args.command is None:
        parser.print_help()
        return 0
    try:
        args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
