"""Speed of an edit against a baseline commit, on the same machine in one run, interleaved.

    python benchmarks/bench_edit_ratio.py --rounds 3 --threads 2                 # against cf9c489
    python benchmarks/bench_edit_ratio.py --project P --baseline cf9c489 --kinds "remove the left ear"

Hosts of one kind differ by about 3.5x on this work, and the 2 cores are shared, so a figure in
seconds says little on its own. This checks the baseline commit out into a temporary git worktree
(`git worktree add --detach`, removed at the end) and runs `benchmarks/bench_edit.py --edits 1` of
each tree in turn, baseline then new, for every round and scripted edit kind, so both see the same
machine within seconds of each other. Per run it prints the seconds per edit (bench_edit's own
figure: preparation, optimisation and the final render, not the imports) and the CPU seconds of
that process, the CPU model and the load average; then per kind and overall the medians and the
paired ratios baseline / new, of wall time and of CPU seconds (the steadier of the two when other
work shares the cores). Not a test.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("enlarge the eyes", "remove the left ear", "change the nose region")  # core.editing.evaluate's
EDIT_LINE = re.compile(r"^seed \d+, (?P<kind>[^:]+): (?P<seconds>[\d.]+) s per edit \((?P<cpu>[\d.]+) CPU s.*?"
                       r"(?P<ms>\d+) ms per step; "
                       r"IoU inside r [\d.]+ → (?P<iou>[\d.]+), PSNR outside r (?P<psnr>[\d.]+) dB", re.M)


# tests/test_benchmarks.py runs this at a tiny size: HEAD against itself (any clone has it), one step.
SMOKE_RUNS = [(["--baseline", "HEAD", "--rounds", "1", "--kinds", "remove the left ear", "--steps", "1",
                "--threads", "1"], r"all: median baseline [\d.]+ s")]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def run_once(tree: Path, kind: str, args) -> dict:
    command = [sys.executable, "benchmarks/bench_edit.py", "--edits", "1", "--threads", str(args.threads),
               "--kinds", kind]
    if args.project:
        command += ["--project", str(args.project)]
    if args.steps:
        command += ["--steps", str(args.steps)]
    environment = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # as main.py sets it
    done = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True)
    match = EDIT_LINE.search(done.stdout)
    if done.returncode or not match:
        raise SystemExit(f"{tree}: bench_edit.py failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    return {"seconds": float(match["seconds"]), "cpu": float(match["cpu"]), "ms": int(match["ms"]), "iou": float(match["iou"]),
            "psnr": float(match["psnr"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="cf9c489", help="commit to compare against (default: cf9c489)")
    parser.add_argument("--project", type=Path, help="project with a trained branch (default: untrained, timing only)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated scripted edits")
    parser.add_argument("--steps", type=int, help="optimisation steps per edit (default: the edit's own)")
    args = parser.parse_args()
    if args.project:
        args.project = args.project.resolve()
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    cpu = cpu_model()
    print(f"{cpu}, {os.cpu_count()} CPUs; baseline {args.baseline} vs this tree ({ROOT}); {args.threads} threads; "
          f"{load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edit-baseline-") as scratch:
        base = Path(scratch) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base), args.baseline], cwd=ROOT,
                       check=True)
        try:
            rows = []
            for round_ in range(1, args.rounds + 1):
                for kind in kinds:
                    old = run_once(base, kind, args)
                    print(f"round {round_}, {kind}: baseline {old['seconds']:.2f} s, {old['cpu']:.2f} CPU s "
                          f"({old['ms']} ms/step; "
                          f"IoU {old['iou']:.2f}, PSNR {old['psnr']:.1f} dB) [{cpu}, {load()}]", flush=True)
                    new = run_once(ROOT, kind, args)
                    print(f"round {round_}, {kind}: new      {new['seconds']:.2f} s, {new['cpu']:.2f} CPU s "
                          f"({new['ms']} ms/step; "
                          f"IoU {new['iou']:.2f}, PSNR {new['psnr']:.1f} dB) [{cpu}, {load()}]; "
                          f"ratio {old['seconds'] / new['seconds']:.2f} (CPU s: {old['cpu'] / new['cpu']:.2f})", flush=True)
                    rows.append((kind, old, new))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    for kind in kinds + ["all"]:
        chosen = [(old, new) for k, old, new in rows if kind in ("all", k)]
        old_s = statistics.median(old["seconds"] for old, _ in chosen)
        new_s = statistics.median(new["seconds"] for _, new in chosen)
        ratios = [old["seconds"] / new["seconds"] for old, new in chosen]
        cpu_ratios = [old["cpu"] / new["cpu"] for old, new in chosen]
        print(f"{kind}: median baseline {old_s:.2f} s, new {new_s:.2f} s per edit; median of the paired ratios "
              f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f}), of CPU seconds "
              f"{statistics.median(cpu_ratios):.2f} ({min(cpu_ratios):.2f}–{max(cpu_ratios):.2f}) over {len(chosen)} "
              f"pairs [{cpu}, {load()}]")


if __name__ == "__main__":
    main()
