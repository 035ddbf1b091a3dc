"""The data factory: a labelled dataset of any size from a project's backbone and semantic branch.

    request = GenerateRequest(project="proj", out="proj/datasets/run1", identities=100, views=8)
    result = generate_dataset(request, progress=print, should_stop=lambda: False)

Output (design.md §4), for identity i (6 digits) and view v (2 digits):

    images/IIIIII_VV.png       RGB, the backbone's render
    labels/IIIIII_VV.png       indexed PNG, values = label ids, palette = the project's label colours
                               (any image viewer shows it as the colour preview)
    depth/IIIIII_VV.png        16-bit PNG: expected ray depth = value * depth_scale (cameras.json),
                               0 where the pixel is background (opacity < alpha_threshold)
    pointclouds/IIIIII.ply     the identity's fused labelled cloud (with --pointclouds)
    cameras.json               per image: identity index and seed, view, 25-float label, yaw/pitch/radius/fov
    labels.json                the label set (id, name, colour)
    manifest.json              what was asked, how many identities are done, hashes of backbone and branch

Identities are seeds of the procedural 'evaluate' range by default (core.procedural.SEED_RANGES):
never fit to, never annotated, and with procedural ground truth for `evaluate factory`. Identity i of
a run with seed S is seed `range.start + (S * SEED_STRIDE + i) % len(range)`; its cameras are
drawn from numpy's default_rng([S, i]). Everything is a function of (S, i), so identities can be
written one at a time, in order, and a resumed run writes the same bytes as an uninterrupted one.

Crash safety: every file is written atomically (core.fileio), and an identity counts as done only
when all its files are in place and manifest.json (rewritten atomically after each identity) says
so. A run that stops anywhere — Ctrl-C, a full disk, `should_stop` — resumes with the first
identity not marked done; its partial files are simply written again.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.factory.pointcloud import POINT_LABELS, fuse_views, write_ply
from core.factory.views import ALPHA_THRESHOLD, DEFAULT_VIEW_BATCH, render_identity_views
from core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text_chunks, write_indexed_png, write_png

FORMAT_NAME = "datasetnerf-studio/factory-dataset"
FORMAT_VERSION = 1
SEED_STRIDE = 100_003  # run seeds S and S+1 start their identities this far apart in the seed range
DEPTH_LEVELS = 65535
CLUSTERS = ("local", "ray")
OUTPUTS = ("images", "labels", "depth", "pointclouds", "cameras.json", "labels.json", "manifest.json")
# What must agree between a run and the dataset it resumes (everything that changes the files).
_REQUEST_KEYS = ("identities", "views", "size", "yaw_range", "pitch_range", "truncation", "seed", "seed_range",
                 "pointclouds", "voxel_size", "alpha_threshold", "point_labels")


class FactoryError(Exception):
    """A problem with the request, the project or the output folder; the message says which."""


@dataclass
class GenerateRequest:
    """What to generate. `identities` × `views` images; angles in degrees (yaw, pitch ranges)."""

    project: Path
    out: Path
    identities: int
    views: int = 8
    size: int = 128
    yaw_range: tuple[float, float] = (-45.0, 45.0)
    pitch_range: tuple[float, float] = (-20.0, 20.0)
    truncation: float = 1.0
    seed: int = 0
    seed_range: str = "evaluate"
    pointclouds: bool = False
    voxel_size: float | None = None
    point_labels: str = "field"  # where the points' labels come from (core.factory.pointcloud says)
    alpha_threshold: float = ALPHA_THRESHOLD
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    branch: Path | None = None  # a semantic-branch checkpoint; default: the project's newest
    view_batch: int = DEFAULT_VIEW_BATCH
    workers: int = 1  # CPU processes (or Ray workers) writing identities side by side (same files as one)
    cluster: str = "local"  # "local": this machine's processes; "ray": Ray workers (core.factory.cluster)
    address: str | None = None  # a running Ray cluster to join (None: start Ray on this machine)
    threads_per_worker: int = 1  # torch threads of each Ray worker
    gpus_per_worker: float = 0.0  # GPUs of each Ray worker (fractions share a GPU)
    shard: tuple[int, int] | None = None  # (K, N): write only identities i with i % N == K

    def planned(self) -> range:
        """The identity indices this run writes, in order: all of them, or its shard's."""
        k, n = self.shard or (0, 1)
        return range(k, self.identities, n)

    def asked(self) -> dict:
        """The part of the request that determines the files (stored in the manifest)."""
        values = {key: getattr(self, key) for key in _REQUEST_KEYS}
        values["yaw_range"], values["pitch_range"] = list(self.yaw_range), list(self.pitch_range)
        if not self.pointclouds:  # no clouds, no point labels: a dataset without clouds resumes whatever the choice
            values["point_labels"] = None
        return values


@dataclass
class FactoryProgress:
    identities_done: int
    identities_total: int
    samples_done: int
    samples_total: int
    elapsed_s: float  # of this call (a resumed run counts from its own start)
    samples_this_run: int  # samples written by this call, for the rate

    @property
    def rate(self) -> float:
        """Samples per second written by this call."""
        return self.samples_this_run / self.elapsed_s if self.elapsed_s > 0 else math.nan


@dataclass
class FactoryResult:
    out: Path
    identities_done: int
    identities_total: int
    samples_written: int  # by this call
    elapsed_s: float
    stopped: bool
    manifest: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- seeds and cameras
def identity_seed(request: GenerateRequest, index: int) -> int:
    from core.procedural import SEED_RANGES

    seeds = SEED_RANGES[request.seed_range]
    return int(seeds.start + (request.seed * SEED_STRIDE + index) % len(seeds))


def view_angles(request: GenerateRequest, index: int) -> np.ndarray:
    """(views, 2) yaw, pitch in degrees of identity `index`, uniform in the ranges."""
    rng = np.random.default_rng([int(request.seed), int(index)])
    yaw = rng.uniform(*request.yaw_range, request.views)
    pitch = rng.uniform(*request.pitch_range, request.views)
    return np.stack([yaw, pitch], 1)


def sample_name(index: int, view: int) -> str:
    return f"{index:06d}_{view:02d}"


# ---------------------------------------------------------------------------- the run
def generate_dataset(
    request: GenerateRequest,
    progress: Callable[[FactoryProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FactoryResult:
    """Write (or resume) the dataset `request` asks for, one identity at a time.

    `progress(FactoryProgress)` is called after each identity (and once at the start);
    `should_stop()` is checked between identities, and a stopped run returns with
    `stopped=True` (resume it with `request.resume=True`). Raises FactoryError for bad requests,
    foreign or unwritable output folders, and write failures (the message names the file and
    says how many identities are complete). KeyboardInterrupt propagates; what is done stays done.
    """
    _check_request(request)
    started = time.monotonic()
    backbone, branch, branch_file, label_set = _open_models(request)
    out = Path(request.out)
    manifest = _new_manifest(request, backbone, branch_file, label_set)
    done = _prepare_folder(out, request, manifest)
    manifest["identities_done"] = done
    planned = request.planned()
    if request.workers > 1 and backbone.device.type != "cpu" and request.cluster == "local":
        raise FactoryError("--workers is for CPU runs; on a GPU one process renders the views in batches")
    report = progress or (lambda _: None)
    samples_this_run = 0

    def tell() -> None:
        report(FactoryProgress(done, len(planned), done * request.views, len(planned) * request.views,
                               time.monotonic() - started, samples_this_run))

    tell()
    todo = planned[done:]
    with _naming_failed_writes(out, lambda: f"{done} of {len(planned)}"):
        if done == 0:
            _write_static_files(out, request, backbone, label_set, manifest)
        if request.cluster == "ray":
            from core.factory.cluster import write_on_ray

            written = write_on_ray(request, (backbone, branch, label_set), todo, manifest["depth_scale"], should_stop)
        elif request.workers > 1:
            # the workers open the branch this process chose, even if a newer one appears meanwhile
            written = _write_in_workers(replace(request, branch=branch_file), todo, manifest["depth_scale"], should_stop)
        else:
            written = _write_in_turn(request, (backbone, branch, label_set), todo, manifest["depth_scale"], should_stop)
        for _ in written:
            done += 1
            manifest["identities_done"] = done
            manifest["complete"] = done == len(planned)
            atomic_write_json(out / "manifest.json", manifest)
            samples_this_run += request.views
            tell()
    stopped = done < len(planned)
    if not stopped:
        _remove_temporary_files(out)  # a worker killed mid-write (and retried) may have left one
    return FactoryResult(out, done, len(planned), samples_this_run, time.monotonic() - started, stopped, manifest)


def _write_in_turn(request, models, indices, depth_scale: float, should_stop):
    """Write `indices` in this process, in order; yield each index once it is written."""
    backbone, branch, label_set = models
    for index in indices:
        if should_stop is not None and should_stop():
            return
        _write_identity(Path(request.out), request, backbone, backbone.generator, branch, label_set, index, depth_scale)
        yield index


def _write_in_workers(request, indices, depth_scale: float, should_stop):
    """Write `indices` in `request.workers` processes (one torch thread each); yield them in
    order, each once it and every identity before it are written, so that the manifest only ever
    counts a complete prefix. A few identities past the prefix may be written when the run stops:
    a resumed run writes them again, with the same bytes."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from core.processes import process_pool

    pool = process_pool(request.workers, initializer=_start_worker, initargs=(request, depth_scale))
    upcoming, running, prefix = iter(indices), {}, CompletePrefix(indices)
    try:
        while True:
            if should_stop is not None and should_stop():
                upcoming = iter(())  # submit nothing more, drop what has not started, finish the rest
                running = {future: index for future, index in running.items() if not future.cancel()}
            while len(running) < 2 * request.workers:
                index = next(upcoming, None)
                if index is None:
                    break
                running[pool.submit(_worker_write, index)] = index
            if not running:
                return
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                future.result()  # a worker's error (a full disk, ...) stops the run here
                yield from prefix.add(running.pop(future))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class CompletePrefix:
    """Identities of `order` finished in any order -> those that complete a prefix of it, in order."""

    def __init__(self, order):
        self.order, self.position, self.finished = list(order), 0, set()

    def add(self, index: int):
        self.finished.add(index)
        while self.position < len(self.order) and self.order[self.position] in self.finished:
            self.finished.discard(self.order[self.position])
            yield self.order[self.position]
            self.position += 1


_worker_state: dict = {}


def _start_worker(request: GenerateRequest, depth_scale: float) -> None:
    backbone, branch, _, label_set = _open_models(request)
    _worker_state.update(request=request, depth_scale=depth_scale, models=(backbone, branch, label_set))


def _worker_write(index: int) -> int:
    request, (backbone, branch, label_set) = _worker_state["request"], _worker_state["models"]
    _write_identity(Path(request.out), request, backbone, backbone.generator, branch, label_set, index,
                    _worker_state["depth_scale"])
    return index


def _write_identity(out: Path, request, backbone, generator, branch, label_set, index: int, depth_scale: float):
    seed = identity_seed(request, index)
    with torch.no_grad():
        identity = backbone.identity_from_seed(seed, request.truncation)
        labels = camera_labels(backbone, view_angles(request, index))
        views = render_identity_views(generator, branch, identity, labels, request.size, request.view_batch)
    palette = label_set.palette()
    for view in range(len(views)):
        name = sample_name(index, view)
        write_png(out / "images" / f"{name}.png", views.rgb[view])
        write_indexed_png(out / "labels" / f"{name}.png", views.labels[view], palette)
        write_png(out / "depth" / f"{name}.png", depth_to_png(views.depth[view], views.alpha[view],
                                                              request.alpha_threshold, depth_scale))
    if request.pointclouds:
        cloud = fuse_views(views, request.alpha_threshold, request.voxel_size, request.point_labels)
        write_ply(out / "pointclouds" / f"{index:06d}.ply", cloud,
                  comments=(f"identity {index} seed {seed}", "label ids: see labels.json"))
    branch.clear_cache()  # one identity at a time: memory stays flat however many are written


def camera_labels(backbone, angles: np.ndarray) -> np.ndarray:
    return np.stack([backbone.camera(float(yaw), float(pitch)).label().numpy() for yaw, pitch in angles])


def depth_scale_for(rendering_kwargs: dict) -> float:
    """World units per 16-bit depth level: the far end of the rays over 65535 levels."""
    far = rendering_kwargs.get("ray_end")
    if not isinstance(far, (int, float)):  # 'auto': rays end where they leave the box
        far = rendering_kwargs.get("avg_camera_radius", 2.7) + rendering_kwargs.get("box_warp", 1.0) * math.sqrt(3)
    return float(far) / DEPTH_LEVELS


def depth_to_png(depth: np.ndarray, alpha: np.ndarray, alpha_threshold: float, scale: float) -> np.ndarray:
    """(H, W) uint16: round(depth / scale) on the foreground, 0 on the background."""
    levels = np.clip(np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) / scale), 1, DEPTH_LEVELS)
    return np.where(alpha >= alpha_threshold, levels, 0).astype(np.uint16)


def depth_from_png(values: np.ndarray, scale: float) -> np.ndarray:
    """The inverse: float32 depth, NaN on the background."""
    depth = values.astype(np.float32) * np.float32(scale)
    depth[values == 0] = np.nan
    return depth


# ---------------------------------------------------------------------------- models
def _open_models(request: GenerateRequest):
    """(backbone, branch, branch file, label set) of the request's project; FactoryError if not."""
    from core.backbone import BackboneError, pick_device
    from core.checkpoint.errors import CheckpointError
    from core.project import Project, ProjectError
    from core.semantic import load_branch

    try:
        project = Project.open(request.project)
        backbone = project.load_backbone(device=pick_device(request.device))
    except (ProjectError, BackboneError, OSError, ValueError) as error:
        raise FactoryError(str(error)) from error
    branch_file = Path(request.branch) if request.branch else find_branch(project)
    try:
        branch, _ = load_branch(branch_file, backbone_hash=backbone.content_hash, device=backbone.device)
    except CheckpointError as error:
        raise FactoryError(str(error)) from error
    label_set = project.label_set
    if max(label_set.ids) >= branch.num_classes:
        raise FactoryError(f"{branch_file}: the branch predicts {branch.num_classes} classes but the project's "
                           f"label set uses ids up to {max(label_set.ids)}; train the branch again")
    return backbone, branch.eval(), branch_file, label_set


def find_branch(project) -> Path:
    """The project's current semantic branch (`Project.current_branch`), or a FactoryError saying how to get one."""
    branch = project.current_branch()
    if branch is None:
        raise FactoryError(f"{project.semantic_dir}: no trained semantic branch; "
                           "run train-semantic first or pass --branch FILE")
    return branch


# ---------------------------------------------------------------------------- the folder
def _check_request(request: GenerateRequest) -> None:
    from core.procedural import SEED_RANGES

    problems = []
    if request.identities < 1:
        problems.append("--n must be at least 1")
    if request.views < 1:
        problems.append("--views must be at least 1")
    if request.size < 8:
        problems.append("--size must be at least 8 pixels")
    for name, (low, high) in (("--yaw-range", request.yaw_range), ("--pitch-range", request.pitch_range)):
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            problems.append(f"{name} must be two finite angles A,B with A <= B, got {low},{high}")
    if not (-90 < request.pitch_range[0] and request.pitch_range[1] < 90):
        problems.append("--pitch-range must lie inside (-90, 90) degrees")
    if request.point_labels not in POINT_LABELS:
        problems.append(f"--point-labels must be one of {', '.join(POINT_LABELS)}, got {request.point_labels!r}")
    if request.voxel_size is not None and not request.voxel_size > 0:
        problems.append(f"--voxel-size must be positive, got {request.voxel_size}")
    if request.seed < 0:
        problems.append("--seed cannot be negative")
    if request.workers < 1:
        problems.append("--workers must be at least 1")
    if request.cluster not in CLUSTERS:
        problems.append(f"--cluster must be one of {', '.join(CLUSTERS)}, got {request.cluster!r}")
    if request.address is not None and request.cluster != "ray":
        problems.append("--address names a Ray cluster; it needs --cluster ray")
    if request.shard is not None and not (0 <= request.shard[0] < request.shard[1] <= max(request.identities, 1)):
        problems.append(f"--shard K/N needs 0 <= K < N <= --n, got {request.shard[0]}/{request.shard[1]}")
    if request.threads_per_worker < 1 or not (0 <= request.gpus_per_worker <= 64):
        problems.append("--threads-per-worker must be at least 1 and --gpus-per-worker between 0 and 64")
    if request.seed_range not in SEED_RANGES:
        problems.append(f"unknown seed range {request.seed_range!r}; known: {', '.join(SEED_RANGES)}")
    if problems:
        raise FactoryError("; ".join(problems))


def _new_manifest(request: GenerateRequest, backbone, branch_file: Path, label_set) -> dict:
    from core.checkpoint.studio_format import file_sha256

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "request": request.asked(),
        "project": str(Path(request.project).resolve()),
        "backbone": {"name": backbone.name, "content_hash": backbone.content_hash},
        "semantic_branch": {"file": str(Path(branch_file).resolve()), "sha256": file_sha256(branch_file)},
        "label_set_version": label_set.version,
        "identity_seeds": {"range": request.seed_range, "first": identity_seed(request, 0),
                           "rule": f"seed of identity i = range start + ({request.seed} * {SEED_STRIDE} + i) "
                                   "mod range length"},
        "depth_scale": depth_scale_for(backbone.rendering_kwargs),
        "samples_per_identity": request.views,
        "shard": list(request.shard) if request.shard else None,
        "identities_done": 0,
        "complete": False,
    }


def _prepare_folder(out: Path, request: GenerateRequest, manifest: dict) -> int:
    """Check or clear the output folder; the number of identities already done (resume)."""
    existing = read_manifest(out)
    if request.overwrite:
        _remove_outputs(out)
        existing = None
    elif existing is None and out.is_dir() and any(out.iterdir()):
        raise FactoryError(f"{out} is not empty and holds no factory dataset (no readable manifest.json); "
                           "choose another --out or pass --overwrite")
    elif existing is not None:
        different = _differences(existing, manifest)
        if different:
            raise FactoryError(f"{out} holds a dataset of another {different}; pass --overwrite to replace it "
                               "or choose another --out")
        if not request.resume:
            raise FactoryError(f"{out} already holds this dataset ({existing.get('identities_done', 0)} of "
                               f"{request.identities} identities done); pass --resume to finish it or --overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_temporary_files(out)
        probe = out / ".write-test"
        atomic_write_bytes(probe, b"ok")
        probe.unlink()
    except OSError as error:
        raise FactoryError(f"cannot write to {out}: {error.strerror or error}") from error
    return int(existing.get("identities_done", 0)) if existing else 0


def done_identities(manifest: dict) -> list[int]:
    """The identity indices a dataset's manifest counts as written (a shard's: its own)."""
    done = int(manifest.get("identities_done", 0))
    shard, total = manifest.get("shard"), manifest.get("request", {}).get("identities")
    if not shard or total is None:  # unsharded, or a layout-compatible manifest of another writer
        return list(range(done))
    return list(range(int(shard[0]), int(total), int(shard[1]))[:done])


def read_manifest(out: Path) -> dict | None:
    import json

    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise FactoryError(f"{path}: unreadable manifest ({error}); pass --overwrite to start again") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise FactoryError(f"{path}: not a factory manifest; choose another --out or pass --overwrite")
    return manifest


def _differences(existing: dict, manifest: dict) -> str:
    """'' when `existing` is the same dataset as `manifest` will be, else what differs."""
    if existing.get("format_version") != FORMAT_VERSION:
        return f"format version ({existing.get('format_version')})"
    if existing.get("project") != manifest["project"]:
        return f"project ({existing.get('project')})"
    if existing.get("backbone", {}).get("content_hash") != manifest["backbone"]["content_hash"]:
        return "backbone (its content hash differs)"
    if existing.get("semantic_branch", {}).get("sha256") != manifest["semantic_branch"]["sha256"]:
        return f"semantic branch ({existing.get('semantic_branch', {}).get('file')})"
    if existing.get("label_set_version") != manifest["label_set_version"]:
        return "label set version"
    if existing.get("shard") != manifest["shard"]:
        return f"shard ({existing.get('shard')})"
    changed = [key for key in _REQUEST_KEYS if existing.get("request", {}).get(key) != manifest["request"][key]]
    return f"request (different {', '.join(changed)})" if changed else ""


def _remove_outputs(out: Path) -> None:
    """Remove what the factory writes (only that: other files in the folder stay)."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _remove_temporary_files(out: Path) -> None:
    """Left-overs of atomic writes interrupted by a kill (never counted as done)."""
    for folder in (out, *(out / name for name in OUTPUTS[:4])):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)


def _write_static_files(out: Path, request, backbone, label_set, manifest: dict) -> None:
    for name in OUTPUTS[:3] + (("pointclouds",) if request.pointclouds else ()):
        (out / name).mkdir(exist_ok=True)
    atomic_write_json(out / "labels.json", label_set.to_json())
    _write_cameras(out / "cameras.json", request, backbone, manifest["depth_scale"])
    atomic_write_json(out / "manifest.json", manifest)


def _write_cameras(path: Path, request, backbone, depth_scale: float) -> None:
    """cameras.json for every planned image, streamed: memory does not grow with N.

    It is a function of the request alone, so it is written once at the start; manifest.json's
    identities_done says which of these images exist.
    """
    import json

    header = {"depth_scale": depth_scale,
              "depth": "expected ray depth (distance from the camera centre along the unit ray) = "
                       "depth PNG value * depth_scale; 0 = background",
              "camera_label": "EG3D: OpenCV cam2world 4x4 row-major + intrinsics 3x3 normalised by image size"}

    def chunks():
        yield json.dumps(header, indent=2)[:-2] + ',\n  "images": {\n'
        for index in range(request.identities):
            seed = identity_seed(request, index)
            angles = view_angles(request, index)
            lines = []
            for view, (yaw, pitch) in enumerate(angles):
                camera = backbone.camera(float(yaw), float(pitch))
                record = {"identity": index, "seed": seed, "view": view, "yaw": float(yaw), "pitch": float(pitch),
                          "radius": camera.radius, "fov": camera.fov,
                          "label": [float(v) for v in camera.label().numpy()]}
                lines.append(f'    "{sample_name(index, view)}": {json.dumps(record)}')
            yield ",\n".join(lines) + (",\n" if index + 1 < request.identities else "\n")
        yield "  }\n}\n"

    atomic_write_text_chunks(path, chunks())


class _naming_failed_writes:
    """Turn an OSError while writing (full disk, permissions) into a FactoryError that says what is done."""

    def __init__(self, out: Path, done: Callable[[], str]):
        self.out, self.done = out, done

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, OSError):
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            raise FactoryError(f"writing to {self.out} failed{where}: {error.strerror or error}; "
                               f"{self.done()} identities are complete, run again with --resume "
                               "once the problem is fixed") from error
        return False
