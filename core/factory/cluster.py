"""The factory on Ray (`generate --cluster ray`): identities written by Ray workers, same bytes.

Each worker is a Ray actor that takes the backbone, semantic branch and label set from Ray's
object store (put there once by the driver, so no worker reads the project's files) and writes
whole identities into the output folder with the factory's own `_write_identity`, atomically
file by file. On a cluster the output folder must be a path every node sees (a shared
filesystem). The driver keeps up to two identities queued per worker and yields indices in
order once they and every identity before them are written, so manifest.json only ever counts a
complete prefix, exactly as with local processes. A worker process that dies is restarted by Ray
and its identities are retried; an identity's files do not depend on which worker or how many
times it was written, so the dataset equals a local run file for file.

Ray is an optional extra (`pip install -e ".[cluster]"`), imported only here.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from core.factory.generate import CompletePrefix, FactoryError, _write_identity

RETRIES = 3  # restarts of a dead worker, and retries of each of its identities


def import_ray():
    try:
        import ray
    except ImportError:
        raise FactoryError("--cluster ray needs Ray: pip install -e \".[cluster]\" (or pip install 'ray>=2.40')") from None
    return ray


def connect(request):
    """Join `request.address`, or start Ray on this machine with `request.workers` CPUs; True if started here."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if request.address:
            ray.init(address=request.address, **options)
        else:
            ray.init(num_cpus=request.workers * request.threads_per_worker,
                     num_gpus=torch.cuda.device_count() if request.gpus_per_worker else 0,
                     object_store_memory=512 * 2**20, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise FactoryError(f"could not {'join Ray at ' + request.address if request.address else 'start Ray'}: "
                           f"{error}") from error
    return True


def write_on_ray(request, models, indices, depth_scale: float, should_stop):
    """Write `indices` on `request.workers` Ray actors; yield them in order as a complete prefix."""
    ray = import_ray()
    started_here = connect(request)
    try:
        writer = ray.remote(_IdentityWriter).options(
            num_cpus=request.threads_per_worker, num_gpus=request.gpus_per_worker,
            max_restarts=RETRIES, max_task_retries=RETRIES)
        shared = ray.put(_on_cpu(models))
        workers = [writer.remote(shared, request, depth_scale) for _ in range(request.workers)]
        yield from _dispatch(ray, workers, indices, should_stop)
    except Exception as error:
        if error.__class__.__module__.startswith("ray"):
            raise FactoryError(f"a Ray worker failed ({type(error).__name__}: {error}); the identities before "
                               "it are complete, run again with --resume") from error
        raise
    finally:
        if started_here:
            ray.shutdown()


def _dispatch(ray, workers, indices, should_stop):
    upcoming, running, prefix = iter(indices), {}, CompletePrefix(indices)
    load = {worker: 0 for worker in range(len(workers))}
    while True:
        if should_stop is not None and should_stop():
            upcoming = iter(())  # queue nothing more; what is running finishes
        while min(load.values()) < 2:
            index = next(upcoming, None)
            if index is None:
                break
            worker = min(load, key=load.get)
            running[workers[worker].write.remote(index)] = (index, worker)
            load[worker] += 1
        if not running:
            return
        completed, _ = ray.wait(list(running), num_returns=1)
        for reference in completed:
            index, worker = running.pop(reference)
            load[worker] -= 1
            ray.get(reference)  # a worker's error (a full disk, ...) stops the run here
            yield from prefix.add(index)


def _on_cpu(models):
    """A CPU copy of (backbone, branch, label set): pickled once into the object store for any node."""
    backbone, branch, label_set = models
    if backbone.device.type == "cpu":
        return models
    from core.backbone import Backbone

    generator = copy.deepcopy(backbone.generator).cpu()
    return Backbone(generator, backbone.name, backbone.content_hash, "cpu"), copy.deepcopy(branch).cpu(), label_set


class _IdentityWriter:
    """A Ray actor: the models once, then whole identities on request."""

    def __init__(self, models, request, depth_scale: float):
        from core.backbone import Backbone

        torch.set_num_threads(request.threads_per_worker)
        backbone, branch, label_set = models
        device = "cuda" if request.gpus_per_worker > 0 else "cpu"
        if device != "cpu":
            backbone = Backbone(backbone.generator, backbone.name, backbone.content_hash, device)
            branch = branch.to(device)
        self.models, self.request, self.depth_scale = (backbone, branch.eval(), label_set), request, depth_scale

    def pid(self) -> int:
        import os

        return os.getpid()

    def write(self, index: int) -> int:
        backbone, branch, label_set = self.models
        _write_identity(Path(self.request.out), self.request, backbone, backbone.generator, branch, label_set, index,
                        self.depth_scale)
        return index
