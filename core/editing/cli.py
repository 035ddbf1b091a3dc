"""`main.py invert`, `main.py edit` and `main.py evaluate edit` (the GUI's Edit workspace calls the
same core.editing functions)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.editing.semantic_edit import EditSettings


# ---------------------------------------------------------------------------- shared
def _add_common(p, steps_default: int, resolution_default: int) -> None:
    from core.cli import add_threads_argument

    p.add_argument("--steps", type=int, default=steps_default, help=f"optimisation steps (default {steps_default})")
    p.add_argument("--resolution", type=int, default=resolution_default,
                   help=f"render size while optimising (default {resolution_default}; outputs are at the backbone's size)")
    p.add_argument("--vgg", type=Path, metavar="FILE",
                   help="torchvision-format VGG16 ImageNet weights (.pth or .safetensors) for an LPIPS-style perceptual "
                        "loss; without it an offline multi-scale SSIM + gradient loss is used")
    add_threads_argument(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def _open_project(folder: Path, need_branch: bool, device: str):
    """(backbone, branch or None, palette) of a project; UserError for whatever is missing."""
    from core.cli import UserError
    from core.project.errors import ProjectError
    from core.project.store import Project
    from core.semantic import load_branch
    from core.semantic.checkpoint import CheckpointError

    try:
        project = Project.open(folder)
        backbone = project.load_backbone(device=device)
        palette = project.label_set.palette()
    except (ProjectError, ValueError, OSError) as error:
        raise UserError(str(error)) from error
    checkpoint = project.current_branch()
    if checkpoint is None:
        if need_branch:
            raise UserError(f"{project.folder} has no trained semantic branch (semantic/*.safetensors); "
                            "train one on the project's annotations first")
        return backbone, None, palette
    try:
        branch, _ = load_branch(checkpoint, backbone_hash=backbone.content_hash, device=device)
    except (CheckpointError, ValueError) as error:
        raise UserError(str(error)) from error
    return backbone, branch.eval().requires_grad_(False), palette


class _Bar:
    """tqdm over optimisation steps; shows the loss, its parts and the pose."""

    def __init__(self, total: int, description: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit="step")

    def __call__(self, report) -> None:
        self.bar.total = report.total_steps
        self.bar.update(report.step - self.bar.n)
        postfix = {"phase": report.phase, "loss": f"{report.loss:.4f}"}
        if report.yaw == report.yaw:
            postfix["yaw"], postfix["pitch"] = f"{report.yaw:.1f}", f"{report.pitch:.1f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _check_out(out: Path, overwrite: bool) -> None:
    from core.cli import UserError
    from core.editing.store import RESULT_FILE

    if (out / RESULT_FILE).exists() and not overwrite:
        raise UserError(f"{out} already holds a finished result ({RESULT_FILE}); pass --overwrite or pick another --out")


# ---------------------------------------------------------------------------- invert
def invert_parser(sub) -> None:
    p = sub.add_parser("invert", help="find the latent and pose of an image (RGB) or a label map (segmentation)",
                       description="3D inversion (DatasetNeRF §5.4): optimise w+ and the camera's yaw/pitch so that the "
                                   "project's backbone renders the image (MSE + perceptual) or, through its semantic "
                                   "branch, the label map (cross-entropy). Several starting points, the best refined.")
    p.add_argument("--project", required=True, type=Path, help="project folder (backbone; semantic branch for labels)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", type=Path, help="colour image of any size (centre-cropped and resized)")
    what.add_argument("--mask", type=Path, help="indexed PNG of label ids (centre-cropped and resized, nearest)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--latent-space", choices=["w+", "w"], default="w+")
    p.add_argument("--no-pose", action="store_true", help="keep the camera frontal (do not optimise yaw/pitch)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished result in --out")
    _add_common(p, steps_default=100, resolution_default=64)
    p.set_defaults(run=_invert)


def _invert(args) -> None:
    from core.cli import UserError, use_threads
    from core.editing.inputs import EditingInputError, read_image, read_label_map
    from core.editing.inversion import InversionSettings, invert_image, invert_labels
    from core.editing.perceptual import PerceptualWeightsError, perceptual_loss
    from core.editing.store import save_inversion

    use_threads(args.threads)
    _check_out(args.out, args.overwrite)
    backbone, branch, palette = _open_project(args.project, need_branch=args.mask is not None, device=args.device)
    G = backbone.generator
    resolution = int(G.img_resolution)
    settings = InversionSettings(latent_space=args.latent_space, steps=args.steps, resolution=args.resolution,
                                 optimise_pose=not args.no_pose)
    try:
        if args.image is not None:
            prepared = read_image(args.image, resolution)
            target_rgb, target_labels, note = prepared.rgb, None, prepared.note
            print(f"perceptual loss: {perceptual_loss(args.vgg).name}")
        else:
            target_labels, note = read_label_map(args.mask, branch.config["num_classes"], fit_to=resolution)
            target_rgb = None
    except (EditingInputError, PerceptualWeightsError) as error:
        raise UserError(str(error)) from error
    if note:
        print(f"{args.image or args.mask}: {note}")
    bar = _Bar(settings.total_steps(), "invert")
    try:
        if target_rgb is not None:
            result = invert_image(G, target_rgb, settings, args.vgg, branch=branch, progress=bar)
        else:
            result = invert_labels(G, branch, target_labels, settings, progress=bar)
    except ValueError as error:
        raise UserError(str(error)) from error
    finally:
        bar.close()
    extra = {"source": str(args.image or args.mask), "backbone": backbone.name, "backbone_hash": backbone.content_hash,
             "latent_space": settings.latent_space, "quality": result.quality.as_dict()}
    try:
        save_inversion(args.out, result, G, branch, target_rgb, target_labels, resolution, palette, extra)
    except OSError as error:
        raise UserError(f"could not write {args.out}: {error}") from error
    print(f"wrote {args.out}: yaw {result.yaw:.1f}, pitch {result.pitch:.1f}, loss {result.loss:.4f} "
          f"(best start: {result.start}) in {result.seconds:.0f} s")
    print(f"reconstruction: {result.quality.summary()}")
    for warning in result.quality.warnings:
        print(f"warning: {warning}", file=sys.stderr)


# ---------------------------------------------------------------------------- edit
def edit_parser(sub) -> None:
    p = sub.add_parser("edit", help="3D-aware semantic edit: make an identity follow a repainted label map",
                       description="Optimise w+ (Adam) so that the semantic branch renders the edited label map while "
                                   "the RGB outside the edited region stays as it was (DatasetNeRF §5.4).")
    p.add_argument("--project", required=True, type=Path, help="project folder (backbone and trained semantic branch)")
    p.add_argument("--start", required=True, type=Path, help="latent .npy (1, num_ws, w_dim), e.g. an inversion's latent.npy")
    p.add_argument("--pose", type=Path, help="pose.json of the view the mask was painted on (default: the pose.json "
                                              "beside --start, else frontal)")
    p.add_argument("--mask", required=True, type=Path, help="edited label map: indexed PNG of the render's size")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished result in --out")
    _add_common(p, steps_default=EditSettings.steps, resolution_default=EditSettings.resolution)
    p.set_defaults(run=_edit)


def _edit(args) -> None:
    from core.cli import UserError, use_threads
    from core.editing.inputs import EditingInputError, read_label_map
    from core.editing.perceptual import PerceptualWeightsError
    from core.editing.semantic_edit import edit_identity
    from core.editing.store import read_latent, read_pose, save_edit

    use_threads(args.threads)
    _check_out(args.out, args.overwrite)
    backbone, branch, palette = _open_project(args.project, need_branch=True, device=args.device)
    G = backbone.generator
    resolution = int(G.img_resolution)
    try:
        ws = read_latent(args.start, G)
        pose_file = args.pose or args.start.parent / "pose.json"
        if args.pose is not None or pose_file.exists():
            yaw, pitch = read_pose(pose_file)
        else:
            yaw, pitch = 0.0, 0.0
            print(f"no pose.json beside {args.start}: editing the frontal view (yaw 0, pitch 0)")
        edited, _ = read_label_map(args.mask, branch.config["num_classes"], resolution=resolution)
    except (EditingInputError, ValueError) as error:
        raise UserError(str(error)) from error
    settings = EditSettings(steps=args.steps, resolution=args.resolution)
    bar = _Bar(settings.steps, "edit")
    try:
        result = edit_identity(G, branch, ws, yaw, pitch, edited, settings, args.vgg, progress=bar)
    except (EditingInputError, PerceptualWeightsError) as error:
        raise UserError(str(error)) from error
    finally:
        bar.close()
    extra = {"start": str(args.start), "mask": str(args.mask), "backbone": backbone.name,
             "backbone_hash": backbone.content_hash}
    try:
        save_edit(args.out, result, G, branch, palette, extra)
    except OSError as error:
        raise UserError(f"could not write {args.out}: {error}") from error
    figures = json.loads((args.out / "result.json").read_text())
    print(f"perceptual loss: {result.perceptual}; edited labels {result.edited_labels}")
    print(f"wrote {args.out}: IoU of the edited map inside r {figures['iou_in_region_before']:.3f} -> "
          f"{figures['iou_in_region']:.3f}, PSNR outside r {figures['psnr_outside_region']:.1f} dB, "
          f"{result.seconds:.1f} s")


# ---------------------------------------------------------------------------- evaluate edit
def add_edit_evaluation(what) -> None:
    p = what.add_parser("edit", help="scripted semantic edits and RGB inversions on held-out procedural identities",
                        description="Scripted edits (enlarge the eyes, remove the left ear, enlarge the nose) of "
                                    "'evaluate' identities: IoU of the edited map inside r, PSNR outside r, seconds per "
                                    "edit; and RGB inversions of procedural renders: PSNR and label IoU.")
    p.add_argument("--project", required=True, type=Path, help="project with a trained semantic branch")
    p.add_argument("--identities", type=int, default=3, help="identities for the scripted edits (3 edits each; 0: skip them)")
    p.add_argument("--inversions", type=int, default=2, help="identities to invert (0: skip the inversion figures)")
    p.add_argument("--inversion-steps", type=int, default=100)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_common(p, steps_default=EditSettings.steps, resolution_default=EditSettings.resolution)
    p.set_defaults(run=_evaluate_edit)


def _evaluate_edit(args) -> None:
    from tqdm import tqdm

    from core.cli import UserError, use_threads
    from core.editing.evaluate import evaluate_edits, evaluate_inversions
    from core.editing.inversion import InversionSettings
    from core.editing.perceptual import PerceptualWeightsError

    use_threads(args.threads)
    if args.identities < 0 or args.inversions < 0 or args.identities + args.inversions == 0:
        raise UserError("--identities and --inversions must be at least 0, and not both 0")
    backbone, branch, _ = _open_project(args.project, need_branch=True, device=args.device)
    settings = EditSettings(steps=args.steps, resolution=args.resolution)
    figures = {}
    try:
        if args.identities:
            with tqdm(total=args.identities * 3, desc="edits", unit="edit", disable=args.json) as bar:
                figures = evaluate_edits(backbone, branch, args.identities, settings, args.vgg,
                                         progress=lambda done, total: bar.update(done - bar.n))
        if args.inversions:
            inversion = InversionSettings(steps=args.inversion_steps, resolution=args.resolution)
            with tqdm(total=args.inversions, desc="inversions", unit="image", disable=args.json) as bar:
                figures["inversion"] = evaluate_inversions(backbone, branch, args.inversions, inversion, args.vgg,
                                                           progress=lambda done, total: bar.update(done - bar.n))
    except (PerceptualWeightsError, ValueError) as error:
        raise UserError(str(error)) from error
    figures["backbone"] = backbone.name
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    if "edits" in figures:
        print(f"edits ({len(figures['edits'])}, {backbone.name}): IoU inside r {figures['iou_in_region']:.3f} "
              f"(before the edit {figures['iou_in_region_before']:.3f}), PSNR outside r "
              f"{figures['psnr_outside_region']:.1f} dB, {figures['seconds_per_edit']:.1f} s per edit")
    if "inversion" in figures:
        inv = figures["inversion"]
        print(f"RGB inversion ({len(inv['inversions'])}): PSNR {inv['psnr']:.1f} dB, label IoU {inv['label_iou']:.3f} "
              f"(backbone's own latent of the seed: {inv['reference_psnr_backbone_seed']:.1f} dB, "
              f"{inv['reference_label_iou_backbone_seed']:.3f}), {inv['seconds_per_inversion']:.0f} s each")
