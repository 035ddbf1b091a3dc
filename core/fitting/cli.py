"""Command-line parsers of the fit: `fit-backbone` and `evaluate fit` (registered in core.cli)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

from core.fitting.config import FitSettings


def fit_backbone_parser(sub) -> None:
    from core.cli import add_threads_argument

    p = sub.add_parser(
        "fit-backbone", help="fit the small generator to the procedural category",
        description="Fit a small EG3D-architecture generator so that identity z renders like procedural "
                    "identity z from every view (rgb, alpha and depth supervision; never part labels). "
                    "Ctrl-C saves a checkpoint; --resume continues it.")
    p.add_argument("--out", required=True, type=Path, help="checkpoint (.safetensors); a sidecar <out>.state.pt holds the optimizer")
    p.add_argument("--minutes", type=float, help="training time of this run")
    p.add_argument("--steps", type=int, help="stop at this total number of steps")
    p.add_argument("--resume", action="store_true", help="continue from --out and its sidecar")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--unsaturate-colour", action="store_true",
                   help="with --resume: first scale the decoder's colour outputs back into the sigmoid's "
                        "trainable range (a fit whose colours saturated stops learning them)")
    add_threads_argument(p)
    p.add_argument("--data-workers", type=int, default=0,
                   help="processes that render the procedural targets ahead of the training (default 0: "
                        "in the training process). The targets are numpy on the CPU: with --device cuda "
                        "they set the pace unless several workers render them")
    p.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints (default 300)")
    p.add_argument("--learning-rate", type=float,
                   help="Adam's rate, held for the first half of this run, then decayed to 0.1x (default 2e-3; "
                        "with --resume it replaces the saved rate, e.g. a lower one to continue a fit)")
    p.add_argument("--identities-per-step", type=int,
                   help="identities per training step (default 4; a GPU takes many more)")
    p.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                   help="start a new run (step 0, fresh optimizer) from this studio checkpoint's weights, "
                        "e.g. resources/default_backbone.safetensors, instead of random ones")
    p.add_argument("--rays", type=int, dest="rays_per_identity",
                   help="rendered rays per identity and step (default 1024)")
    p.add_argument("--surface-points", type=int, dest="surface_points_per_identity",
                   help="3D colour samples on the surface per identity and step, supervised without "
                        "ray marching (default %d)" % FitSettings.surface_points_per_identity)
    p.add_argument("--space-points", type=int, dest="space_points_per_identity",
                   help="3D occupancy samples in and around the head per identity and step "
                        "(default %d)" % FitSettings.space_points_per_identity)
    p.add_argument("--plane-lr-multiplier", type=float,
                   help="Adam's rate of the layers that write the tri-plane features, times --learning-rate (default 1)")
    p.add_argument("--decoder-lr-multiplier", type=float,
                   help="Adam's rate of the decoder, times --learning-rate (default 1)")
    p.set_defaults(run=_fit_backbone)


# FitSettings fields that fit-backbone's options of the same name set (unset: the default or, with
# --resume, the saved value).
SETTING_ARGUMENTS = ("learning_rate", "identities_per_step", "rays_per_identity", "surface_points_per_identity",
                     "space_points_per_identity", "plane_lr_multiplier", "decoder_lr_multiplier")


def _fit_backbone(args) -> None:
    from core.cli import UserError, use_threads
    from core.fitting.trainer import FitError, FitRequest, fit

    _check_fit_arguments(args, UserError)
    use_threads(args.threads)
    changes = {name: getattr(args, name) for name in SETTING_ARGUMENTS}
    changes["checkpoint_every_s"] = args.checkpoint_every
    request = FitRequest(out=args.out, minutes=args.minutes, steps=args.steps, resume=args.resume,
                         init_from=args.init_from,
                         device=args.device, unsaturate_colour=args.unsaturate_colour, data_workers=args.data_workers,
                         setting_changes={name: value for name, value in changes.items() if value is not None})
    bar = _ProgressBar(args.minutes, args.steps)
    try:
        with _sigterm_as_interrupt():
            result = fit(request, progress=bar.update)
    except FitError as error:
        raise UserError(str(error)) from error
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: checkpoint saved to {args.out}; continue with --resume")
        raise
    bar.close()
    if result.colour_rescale is not None:
        print(f"colour outputs scaled by {result.colour_rescale:.4g} before training")
    print(f"saved {result.out} at step {result.step} (loss {result.loss:.4f}, "
          f"{result.train_seconds / 60:.1f} min of training in all)")


def _check_fit_arguments(args, UserError) -> None:
    if args.minutes is None and args.steps is None:
        raise UserError("give --minutes or --steps (or both)")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError("--minutes must be positive")
    if args.unsaturate_colour and not args.resume:
        raise UserError("--unsaturate-colour repairs an existing fit: use it with --resume")
    for option, value in (("--learning-rate", args.learning_rate), ("--plane-lr-multiplier", args.plane_lr_multiplier),
                          ("--decoder-lr-multiplier", args.decoder_lr_multiplier)):
        if value is not None and not value > 0:
            raise UserError(f"{option} must be positive")
    if args.identities_per_step is not None and args.identities_per_step < 1:
        raise UserError("--identities-per-step must be at least 1")
    if args.rays_per_identity is not None and args.rays_per_identity < 1:
        raise UserError("--rays must be at least 1")
    for option, value in (("--surface-points", args.surface_points_per_identity),
                          ("--space-points", args.space_points_per_identity)):
        if value is not None and value < 0:
            raise UserError(f"{option} must be 0 or more")
    if args.init_from is not None and args.resume:
        raise UserError("--init-from starts a new run; --resume continues --out itself: give one of them")
    if args.data_workers < 0:
        raise UserError("--data-workers must be 0 or more")
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be at least 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but torch sees no CUDA device")


class _sigterm_as_interrupt:
    """A `kill` (SIGTERM) saves a checkpoint exactly as Ctrl-C does."""

    def __enter__(self):
        def handler(signum, frame):
            raise KeyboardInterrupt

        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:        # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


class _ProgressBar:
    """tqdm over steps (with --steps) or over seconds (with --minutes only), loss in the postfix."""

    def __init__(self, minutes, steps):
        from tqdm import tqdm

        self.by_steps = steps is not None
        total = steps if self.by_steps else int(minutes * 60)
        self.bar = tqdm(total=total, unit="step" if self.by_steps else "s", dynamic_ncols=True,
                        bar_format=None if self.by_steps else "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")

    def update(self, progress) -> None:
        done = progress.step if self.by_steps else int(progress.elapsed_s)
        self.bar.update(max(done - self.bar.n, 0))
        postfix = {"step": progress.step, "loss": f"{progress.loss:.4f}", "rgb": f"{progress.losses['rgb']:.4f}",
                   "alpha": f"{progress.losses['alpha']:.4f}", "depth": f"{progress.losses['depth']:.4f}",
                   "sat": f"{progress.losses['saturation']:.3g}"}
        if progress.losses.get("surface_rgb"):
            postfix["rgb3d"] = f"{progress.losses['surface_rgb']:.4f}"
            postfix["occ"] = f"{progress.losses['occupancy']:.4f}"
        if progress.eta_s is not None:
            postfix["eta"] = f"{progress.eta_s / 60:.1f}min"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------- evaluate fit
def add_fit_evaluation(what) -> None:
    """`evaluate fit`: registered under `evaluate` in core.cli."""
    fit = what.add_parser("fit", help="how well a backbone reproduces held-out procedural identities",
                          description="PSNR, silhouette IoU and depth error of a backbone against the procedural "
                                      "renders of identities from the 'evaluate' seed range, 8 fixed views.")
    fit.add_argument("--backbone", default="default", help="'default' (embedded) or a studio checkpoint (.safetensors)")
    fit.add_argument("--identities", type=int, default=50)
    fit.add_argument("--views", type=int, default=8, help="how many of the 8 fixed evaluation views")
    fit.add_argument("--resolution", type=int, help="render and compare at this resolution (default: the backbone's own)")
    fit.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    fit.add_argument("--json", action="store_true", help="print the figures as JSON")
    fit.add_argument("--contact-sheet", type=Path, metavar="PNG",
                     help="also write procedural-beside-backbone renders of 4 held-out identities, 3 views")
    fit.set_defaults(run=_evaluate_fit)


def _write_contact_sheet(generator, path: Path, UserError) -> None:
    from core.fileio import write_png
    from core.fitting.contact_sheet import contact_sheet

    if path.suffix.lower() != ".png":
        raise UserError(f"--contact-sheet must name a .png file, not {path}")
    try:
        write_png(path, contact_sheet(generator))
    except OSError as error:
        raise UserError(f"could not write {path}: {error}") from error


def _evaluate_fit(args) -> None:
    import torch

    from core.backbone import BackboneError, load_backbone, pick_device
    from core.cli import UserError
    from core.fitting.evaluate import evaluate_fit

    try:
        backbone = load_backbone(args.backbone, device=pick_device(args.device))
        with torch.no_grad():
            figures = evaluate_fit(backbone.generator, args.identities, args.views, args.resolution)
    except (BackboneError, ValueError) as error:
        raise UserError(str(error)) from error
    figures["backbone"] = backbone.name
    if args.contact_sheet is not None:
        _write_contact_sheet(backbone.generator, args.contact_sheet, UserError)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    correlation = figures["colour_correlation"]
    colour = "" if correlation is None else ", coat colour correlation R/G/B " + " / ".join(f"{c:.3f}" for c in correlation)
    print(f"{backbone.name}: PSNR {figures['psnr']:.2f} dB, silhouette IoU {figures['silhouette_iou']:.4f}, "
          f"depth error {100 * figures['depth_error']:.2f}% of head radius {figures['head_radius']}{colour} "
          f"({len(figures['identities'])} identities x {len(figures['views'])} views, {figures['resolution']}^2)")
