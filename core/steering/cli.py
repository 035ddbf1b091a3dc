"""`steer`, `train-frozen` and `evaluate steer`: PoseGen-style steering from the command line."""
from __future__ import annotations

import json
from pathlib import Path

from core.limits import PITCH, TRUNCATION, YAW, range_pair


# ---------------------------------------------------------------------------- steer
def steer_parser(sub) -> None:
    from core.cli import add_threads_argument
    from core.steering.rounds import SteerRequest

    d = SteerRequest(project=Path("."), model=Path("."), task="pose", out=Path("."))
    p = sub.add_parser("steer", help="learn the views/identities a frozen model gets wrong, generate them, fine-tune",
                       description="PoseGen-style rounds (docs/steering.md): steer a camera/identity mixture towards "
                                   "the model's loss, write the samples in the factory's dataset layout, fine-tune "
                                   "the model on them, repeat. Interrupted runs continue with --resume.")
    p.add_argument("--project", required=True, type=Path, help="project folder (backbone, label set, semantic/)")
    p.add_argument("--model", required=True, type=Path, help="TorchScript model (train-frozen writes one)")
    p.add_argument("--task", required=True, choices=["segmentation", "pose"])
    p.add_argument("--input-size", type=int, help="input size of a TorchScript model that does not declare it")
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"rounds R (default {d.rounds})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"samples N written per round (default {d.samples})")
    p.add_argument("--out", required=True, type=Path, help="output folder (round_RR/ datasets, models, state.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--views", type=int, default=d.views, help=f"views per identity (default {d.views})")
    p.add_argument("--size", type=int, default=d.size, help=f"image size (default {d.size})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--components", type=int, default=d.components, help="mixture components (default %(default)s)")
    p.add_argument("--principal", type=int, default=d.principal, help="principal directions of w steered (default %(default)s)")
    p.add_argument("--yaw-bounds", type=range_pair(YAW, "angles in degrees"), default=d.yaw_bounds, metavar="A,B", help="hard bounds (default %(default)s)")
    p.add_argument("--pitch-bounds", type=range_pair(PITCH, "angles in degrees"), default=d.pitch_bounds, metavar="A,B", help="hard bounds (default %(default)s)")
    p.add_argument("--psi-bounds", type=range_pair(TRUNCATION, "truncation values"), default=d.psi_bounds, metavar="A,B", help="hard bounds (default %(default)s)")
    p.add_argument("--kl-weight", type=float, default=d.kl_weight, help="weight of KL(mixture || factory prior)")
    p.add_argument("--steer-steps", type=int, default=d.steer_steps, help="mixture updates per round")
    p.add_argument("--steer-identities", type=int, default=d.steer_identities, help="identities rendered per update")
    p.add_argument("--max-loss", type=float, help="filter: drop steered samples whose loss is above this")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence,
                   help="filter: drop steered samples whose mean label confidence is below this (0-1)")
    p.add_argument("--prior-fraction", type=float, default=d.prior_fraction,
                   help="share of each round's samples drawn from the factory prior (default %(default)s)")
    p.add_argument("--finetune-steps", type=int, default=d.finetune_steps, help="fine-tuning steps per round")
    p.add_argument("--replay", type=Path, help="factory dataset folder replayed while fine-tuning (e.g. the frozen "
                                               "model's own training data), as PoseGen mixes real data")
    p.add_argument("--replay-fraction", type=float, default=d.replay_fraction,
                   help="share of each fine-tuning batch drawn from --replay (default %(default)s)")
    add_threads_argument(p)
    p.set_defaults(run=_steer)


def _steer(args) -> None:
    from core.cli import StageBar, UserError, use_threads
    from core.factory.generate import FactoryError
    from core.steering.rounds import SteerRequest, run_steering

    use_threads(args.threads)
    request = SteerRequest(project=args.project, model=args.model, task=args.task, out=args.out, rounds=args.rounds,
                           samples=args.samples, views=args.views, size=args.size, input_size=args.input_size,
                           seed=args.seed, components=args.components, principal=args.principal,
                           yaw_bounds=args.yaw_bounds, pitch_bounds=args.pitch_bounds, psi_bounds=args.psi_bounds,
                           kl_weight=args.kl_weight, steer_steps=args.steer_steps,
                           steer_identities=args.steer_identities, max_loss=args.max_loss,
                           min_confidence=args.min_confidence, prior_fraction=args.prior_fraction,
                           finetune_steps=args.finetune_steps, replay=args.replay,
                           replay_fraction=args.replay_fraction, resume=args.resume)
    bar = StageBar()
    try:
        result = run_steering(request, bar.update)
    except FactoryError as error:
        raise UserError(str(error)) from error
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped; what is finished stays in {args.out}: run again with --resume")
        raise
    finally:
        bar.close()
    for index, figures in enumerate(result.history, 1):
        losses = figures["steered"]["loss_per_step"]
        print(f"round {index}: steered loss {losses[0] if losses else float('nan'):.3f} -> "
              f"{losses[-1] if losses else float('nan'):.3f}, {figures['generated']['samples']} samples "
              f"({figures['generated']['dropped']} dropped), fine-tune loss {figures['tuned']['last_loss']:.3f}")
    print(f"model: {result.model}")


# ---------------------------------------------------------------------------- train-frozen
def train_frozen_parser(sub) -> None:
    from core.cli import add_threads_argument

    p = sub.add_parser("train-frozen", help="train a pose or segmentation model on a factory dataset (TorchScript)",
                       description="Train the studio's PoseNet (yaw/pitch from an image) or DeepLabV3-style "
                                   "segmenter on a factory dataset and write it as TorchScript for `steer`.")
    p.add_argument("--dataset", required=True, type=Path, help="factory dataset folder (generate writes one)")
    p.add_argument("--task", required=True, choices=["segmentation", "pose"])
    p.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    p.add_argument("--size", type=int, default=32, help="model input size (default 32)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    p.set_defaults(run=_train_frozen)


def _train_frozen(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError, use_threads
    from core.factory.dataset import DatasetError
    from core.steering.models import TrainSettings, new_model, save_model, train_steps
    from core.steering.rounds import read_training_data

    use_threads(args.threads)
    if args.size < 8 or args.size % 4:
        raise UserError("--size must be a multiple of 4, at least 8")
    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    try:
        images, targets, num_classes = read_training_data(args.dataset, args.task, args.size)
    except DatasetError as error:
        raise UserError(str(error)) from error
    model = new_model(args.task, args.size, num_classes, args.width, args.seed)
    with tqdm(total=args.steps, desc="train", leave=False) as bar:
        history = train_steps(model, images, targets, TrainSettings(args.steps, seed=args.seed),
                              lambda step, total, loss: bar.update(1))
    try:
        save_model(model, args.out)
    except OSError as error:
        raise UserError(f"could not write {args.out}: {error}") from error
    print(f"wrote {args.out} ({args.task}, {len(images)} samples, loss {history[0]:.3f} -> {history[-1]:.3f})")


# ---------------------------------------------------------------------------- evaluate steer
def add_steer_evaluation(what) -> None:
    from core.cli import add_threads_argument

    p = what.add_parser("steer", help="frozen vs uniform vs steered fine-tuning, in and out of distribution",
                        description="Pre-train a model on factory-prior renders, fine-tune it on uniform and on "
                                    "steered samples (same budget) and test all three on procedural ground truth "
                                    "in and out of the factory's distribution (docs/steering.md).")
    p.add_argument("--project", type=Path, help="project to render with (default: the embedded backbone; "
                                                 "segmentation needs a project with a semantic branch)")
    p.add_argument("--task", choices=["segmentation", "pose"], default="pose")
    p.add_argument("--quick", action="store_true", help="CI-sized run of the same protocol (a check, not a figure)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--samples", type=int, help="samples per round")
    p.add_argument("--seed", type=int)
    p.add_argument("--kl-weight", type=float, help="steered arm: weight of KL(mixture || prior) (default 0.5)")
    p.add_argument("--prior-fraction", type=float, help="steered arm: share of prior samples per round (default 0.75)")
    p.add_argument("--replay-fraction", type=float,
                   help="both fine-tuned arms: share of each batch replaying the pre-training renders (default 0.25; 0 = none)")
    p.add_argument("--work", type=Path, help="folder keeping models and rounds (resumable)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=_evaluate_steer)


def _evaluate_steer(args) -> None:
    from dataclasses import replace

    from core.backbone import BackboneError, load_backbone
    from core.cli import StageBar, UserError, use_threads
    from core.factory.generate import FactoryError
    from core.project import default_label_set
    from core.steering.evaluate import SteerEvaluation, evaluate_steering, quick_settings
    from core.steering.render import SteeringWorld, open_world

    use_threads(args.threads)
    settings = replace(quick_settings() if args.quick else SteerEvaluation(), task=args.task)
    for name in ("rounds", "samples", "seed"):
        if getattr(args, name) is not None:
            if getattr(args, name) < (0 if name == "seed" else 1):
                raise UserError(f"--{name} must be {'non-negative' if name == 'seed' else 'at least 1'}")
            settings = replace(settings, **{name: getattr(args, name)})
    if args.replay_fraction is not None and not 0 <= args.replay_fraction < 1:
        raise UserError("--replay-fraction must lie in [0, 1)")
    for name in ("kl_weight", "prior_fraction", "replay_fraction"):
        if getattr(args, name) is not None:
            settings = replace(settings, **{name: getattr(args, name)})
    if settings.samples % settings.views:
        raise UserError(f"--samples must be a multiple of {settings.views}")
    try:
        if args.project is not None:
            world = open_world(args.project, settings.task, settings.size, 2)[0]
        elif settings.task == "segmentation":
            raise UserError("evaluate steer --task segmentation needs --project (a semantic branch labels the samples)")
        else:
            world = SteeringWorld(load_backbone("default"), None, default_label_set(), settings.size, 2)
    except (FactoryError, BackboneError) as error:
        raise UserError(str(error)) from error
    bar = StageBar()
    try:
        results = evaluate_steering(world, settings, args.work, bar.update)
    except FactoryError as error:
        raise UserError(str(error)) from error
    finally:
        bar.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    key = "pose_error_deg" if settings.task == "pose" else "miou"
    for arm in ("frozen", "uniform", "steered"):
        print(f"{arm:8s} {key} in {results[arm]['in_distribution'][key]:.3f}  "
              f"out {results[arm]['out_of_distribution'][key]:.3f}")
    print(f"relative_gain_ood {results['relative_gain_ood']:+.3f}")
