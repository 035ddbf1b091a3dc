"""An edit through the Edit workspace's worker path against the same edit headless, interleaved.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_edit_window.py --project PROJECT --rounds 3 --threads 2

For each round and scripted edit (core.editing.evaluate, frontal view of the first 'evaluate'
identity) it runs the edit headless (`edit_identity` on this thread, as `main.py edit` does) and
through app.edit.EditWorkspace (`run_edit`: the background QThread, the progress relay, the live
previews, the result shown), timed from the click to the `edit_finished` signal, and prints both
with the ratio window / headless, the CPU model and the load. The issue's target: within 1.5x.
Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_edit_ratio import KINDS, cpu_model  # noqa: E402

# tests/test_benchmarks.py runs this at a tiny size: a throw-away project, an untrained branch, one step.
SMOKE_RUNS = [(["--rounds", "1", "--kinds", "remove the left ear", "--steps", "1", "--threads", "1"],
               r"window / headless: median [\d.]+")]


def throw_away_project(folder: Path) -> Path:
    """A project on the embedded default with an untrained semantic branch (timing only)."""
    import torch

    from core.procedural import NUM_CLASSES
    from core.project import BackboneRef, Project, default_label_set
    from core.semantic import SemanticBranch, save_branch
    from core.semantic.checkpoint import checkpoint_name

    with Project.create(folder, BackboneRef.for_file("default"), default_label_set()) as project:
        backbone = project.load_backbone()
    torch.manual_seed(0)
    branch = SemanticBranch.for_generator(backbone.generator, NUM_CLASSES)
    save_branch(branch, folder / "semantic" / checkpoint_name(0), backbone.content_hash, step=0)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="project with a trained semantic branch "
                        "(default: a throw-away one with an untrained branch, timing only)")
    parser.add_argument("--steps", type=int, help="optimisation steps per edit (default: the edit's own)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as main.py sets it
    import torch
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.edit import EditWorkspace
    from app.semantic import load_project_branch
    from core.annotation import MaskEditor
    from core.editing.evaluate import EDIT_VIEW, SCRIPTED_EDITS, procedural_buffers, scripted_target
    from core.editing.semantic_edit import edit_identity, render_view
    from core.procedural import seeds_for
    from core.project import Project

    torch.set_num_threads(args.threads)
    app = QApplication.instance() or QApplication([])
    if args.project is None:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="edit-window-")
        args.project = throw_away_project(Path(scratch.name) / "project")
    project = Project.open(args.project)  # read-only: nothing is written
    backbone = project.load_backbone()
    workspace = EditWorkspace()
    if args.steps:
        from dataclasses import replace

        workspace.edit_settings = replace(workspace.edit_settings, steps=args.steps)
    workspace.set_session(backbone, project)
    state = load_project_branch(project, backbone)
    workspace.set_semantic_branch(state)
    G, branch = backbone.generator, state.branch
    seed = seeds_for("evaluate", 1)[0]
    ws = backbone.identity_from_seed(seed).ws
    resolution = int(G.img_resolution)
    before = render_view(G, branch, ws, *EDIT_VIEW, resolution)
    truth = procedural_buffers(backbone, seed, *EDIT_VIEW, resolution)["labels"]
    cpu = cpu_model()
    print(f"{cpu}, {os.cpu_count()} CPUs, {args.threads} threads, load {os.getloadavg()[0]:.1f}", flush=True)

    def through_window(target) -> float:
        workspace.ws, workspace.yaw, workspace.pitch, workspace.before = ws, *EDIT_VIEW, before
        workspace.undo_stack.clear()
        workspace.editor = MaskEditor(target.copy())
        loop, done = QEventLoop(), []
        workspace.edit_finished.connect(lambda result: (done.append(time.perf_counter()), loop.quit()))
        workspace.error.connect(lambda message: (print("error:", message), loop.quit()))
        QTimer.singleShot(600_000, loop.quit)
        began = time.perf_counter()
        workspace.run_edit()
        loop.exec()
        workspace.edit_finished.disconnect()
        workspace.error.disconnect()
        if not done:
            raise SystemExit("the workspace's edit did not finish")
        return done[0] - began

    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    ratios = []
    for round_ in range(1, args.rounds + 1):
        for kind in kinds:
            target, _ = scripted_target(truth, before[1], SCRIPTED_EDITS[kind], workspace.edit_settings.dilation)
            began = time.perf_counter()
            edit_identity(G, branch, ws, *EDIT_VIEW, target, workspace.edit_settings, before=before)
            headless = time.perf_counter() - began
            window = through_window(target)
            ratios.append(window / headless)
            print(f"round {round_}, {kind}: headless {headless:.2f} s, window {window:.2f} s, ratio "
                  f"{window / headless:.2f} [{cpu}, load {os.getloadavg()[0]:.1f}]", flush=True)
    print(f"window / headless: median {statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}) "
          f"over {len(ratios)} pairs [{cpu}, load {os.getloadavg()[0]:.1f}]")
    workspace.shutdown()
    project.close()
    del app


if __name__ == "__main__":
    main()
