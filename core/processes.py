"""Worker processes for long CPU work: the one place that knows how the studio starts them."""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

import torch


def process_pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """`workers` spawned processes with one torch thread each (they share the machine's cores with
    each other and with the parent). Ctrl-C is left to the parent, which stops the pool; a forked
    torch can hang in its thread pool, hence spawn."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(initializer, initargs))


def _start_worker(initializer, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)
