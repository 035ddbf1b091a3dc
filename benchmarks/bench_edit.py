"""Seconds per 3D-aware semantic edit on the embedded default at 128², and the edits' quality.

    python benchmarks/bench_edit.py --project PROJECT --edits 1 --threads 1   # one identity, 3 edit kinds
    python benchmarks/bench_edit.py --project PROJECT --edits 3 --threads 2   # the figures of docs/editing.md
    python benchmarks/bench_edit.py --project PROJECT --steps 30 --learning-rate 0.02 --rgb-weight 10 \
        --crop-margin none --backbone-samples none                            # the optimisation before the speed-up
    python benchmarks/bench_edit.py                                           # no project: an untrained branch (timing only)
    python benchmarks/bench_edit_ratio.py --project PROJECT                   # against a baseline commit, interleaved

For each of --edits 'evaluate' identities (frontal view) every scripted edit of
core.editing.evaluate (enlarge the eyes, remove the left ear, change the nose region) is run
through core.editing.edit_identity exactly as `main.py edit` runs it. Per edit it prints the wall
time of the whole edit (target preparation, optimisation, final 128² render), the CPU seconds
of this process (on a machine shared with other work, CPU seconds / threads approximate the wall
time on idle cores), the optimisation steps run, the median time of one step, and the quality:
IoU of the edited map inside r (before → after) and PSNR outside r (the figures of
`main.py evaluate edit`); then the medians/means per edit kind and over all edits, with the
machine's load average. The issue's speed target: ≤ 10 s per edit on 2 CPU cores (goal 3 s).
Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backbone import load_backbone  # noqa: E402
from core.editing.evaluate import EDIT_VIEW, SCRIPTED_EDITS, procedural_buffers, scripted_target  # noqa: E402
from core.editing.semantic_edit import EditSettings, edit_identity, render_view  # noqa: E402
from core.editing.store import edit_figures  # noqa: E402
from core.procedural import NUM_CLASSES, seeds_for  # noqa: E402
from core.semantic import SemanticBranch, latest_checkpoint, load_branch  # noqa: E402


# tests/test_benchmarks.py runs this benchmark at a tiny size: (arguments, a line the output must match).
SMOKE_RUNS = [(["--edits", "1", "--kinds", "enlarge the eyes", "--steps", "1", "--threads", "1"],
               r"all: median [\d.]+ s per edit")]


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _samples(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    coarse, importance = text.split(",")
    return int(coarse), int(importance)


def settings_from(args) -> EditSettings:
    defaults = EditSettings()
    chosen = {name: getattr(args, name) for name in ("steps", "resolution", "outside_rays", "semantic_samples",
                                                      "learning_rate", "final_learning_rate", "patience",
                                                      "latent_space", "rgb_weight", "perceptual_weight", "coarse_gradients")
              if getattr(args, name, None) is not None}
    chosen.update(crop_margin=args.crop_margin, backbone_samples=args.backbone_samples)  # None is a choice here
    return EditSettings(**{**defaults.__dict__, **chosen})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="project whose newest semantic branch to use (default: untrained)")
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--edits", type=int, default=3, help="'evaluate' identities (each gets every scripted edit)")
    parser.add_argument("--kinds", default=",".join(SCRIPTED_EDITS), help="comma-separated scripted edits to run")
    parser.add_argument("--threads", type=int, default=2)
    # Optimisation settings (default: EditSettings' defaults); 'none' where the setting allows it.
    parser.add_argument("--steps", type=int)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--crop-margin", type=_optional_int, default=EditSettings.crop_margin)
    parser.add_argument("--outside-rays", type=int)
    parser.add_argument("--backbone-samples", type=_samples, default=EditSettings.backbone_samples,
                        help="COARSE,IMPORTANCE samples per ray while optimising, or none (the backbone's own)")
    parser.add_argument("--semantic-samples", type=int)
    parser.add_argument("--coarse-gradients", action="store_true", default=None,
                        help="gradients through the coarse samples too (as before the edit speed-up of issue 23)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--final-learning-rate", type=float)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--latent-space", choices=["w", "w+"])
    parser.add_argument("--rgb-weight", type=float)
    parser.add_argument("--perceptual-weight", type=float)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = load_backbone(args.backbone)
    G = backbone.generator
    if args.project:
        branch, _ = load_branch(latest_checkpoint(args.project / "semantic"), backbone_hash=backbone.content_hash)
        source = f"branch of {args.project}"
    else:
        torch.manual_seed(0)
        branch = SemanticBranch.for_generator(G, NUM_CLASSES)
        source = "untrained branch (timing only)"
    branch.eval().requires_grad_(False)
    resolution = int(G.img_resolution)
    settings = settings_from(args)
    kinds = [kind.strip() for kind in args.kinds.split(",")]
    print(f"backbone {backbone.name} at {resolution}², {source}; {settings}; {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for seed in seeds_for("evaluate", args.edits):
        ws = backbone.identity_from_seed(seed).ws
        before = render_view(G, branch, ws, *EDIT_VIEW, resolution)
        truth = procedural_buffers(backbone, seed, *EDIT_VIEW, resolution)["labels"]
        for kind in kinds:
            target, labels = scripted_target(truth, before[1], SCRIPTED_EDITS[kind], settings.dilation)
            if not (target != before[1]).any():
                print(f"seed {seed}, {kind}: the scripted edit changes nothing in this view; skipped")
                continue
            began, began_cpu = time.perf_counter(), time.process_time()
            step_times, last = [], [time.perf_counter()]

            def progress(report, step_times=step_times, last=last):
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now

            result = edit_identity(G, branch, ws, *EDIT_VIEW, target, settings, edited_labels=labels, before=before,
                                   progress=progress)
            row = {"kind": kind, "seconds": time.perf_counter() - began, "cpu": time.process_time() - began_cpu,
                   "steps": len(result.history), **edit_figures(result)}
            rows.append(row)
            print(f"seed {seed}, {kind}: {row['seconds']:.2f} s per edit ({row['cpu']:.2f} CPU s of this process), "
                  f"{row['steps']} steps, {1000 * statistics.median(step_times[1:] or step_times):.0f} ms per step; "
                  f"IoU inside r {row['iou_in_region_before']:.2f} → {row['iou_in_region']:.2f}, "
                  f"PSNR outside r {row['psnr_outside_region']:.1f} dB; load {os.getloadavg()[0]:.1f}", flush=True)
    if not rows:
        return
    for kind in kinds + ["all"]:
        chosen = [row for row in rows if kind in ("all", row["kind"])]
        if chosen:
            print(f"{kind}: median {statistics.median(r['seconds'] for r in chosen):.2f} s per edit "
                  f"({statistics.median(r['cpu'] for r in chosen):.2f} CPU s), "
                  f"IoU inside r {np.mean([r['iou_in_region_before'] for r in chosen]):.2f} → "
                  f"{np.mean([r['iou_in_region'] for r in chosen]):.2f}, "
                  f"PSNR outside r {np.mean([r['psnr_outside_region'] for r in chosen]):.1f} dB "
                  f"over {len(chosen)} edits")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
