"""
Running a study's missing runs: in worker processes, with a progress bar (rich), each stored as soon as it completes.

Only runs without a cached result are computed; each one's file is written (atomically) the moment it completes, so a
sweep killed at any point loses only the runs in flight and the next invocation computes only what is still missing.
Workers are *spawned* processes (one torch/BLAS thread each: the runs are small and threads only add hand-off cost);
the results are then read back from the cache, so a parallel sweep reports exactly what a serial one does.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.cache import Cache
from harness.keys import jsonable
from harness.spec import Results, Run

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread() -> None:
    """One BLAS and torch thread in this process (a worker's initializer; the serial path calls it too)."""
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    import sys

    if "torch" in sys.modules:  # do not import torch for studies that never use it
        sys.modules["torch"].set_num_threads(1)


def machine() -> dict[str, Any]:
    """
    The machine that computes a study's runs, as a run of its own (:data:`MACHINE`): cached with the study's other
    runs, so that a report names the machine its timings were measured on, not the one that rebuilt the report.

    :return: ``platform`` (:func:`platform.platform`), ``machine`` (the architecture), ``python`` (its version) and
        ``cpus``
    """
    import platform

    return dict(
        platform=platform.platform(), machine=platform.machine(), python=platform.python_version(), cpus=os.cpu_count()
    )


#: The run that records the machine (:func:`machine`); a study lists it with its runs and reads ``results[MACHINE]``.
MACHINE = Run(machine, {}, "machine")


def timed(fn: Callable[..., Any], config: dict[str, Any]) -> tuple[Any, float]:
    """
    :param fn: a run's function
    :param config: its arguments
    :return: ``fn(**config)`` as JSON-able values, and the seconds it took
    """
    one_thread()
    start = time.perf_counter()
    result = fn(**config)
    return jsonable(result), time.perf_counter() - start


def unique(runs: Sequence[Run]) -> list[Run]:
    """
    :param runs: runs, possibly repeated (two parts of a report may share a run)
    :return: each run once, in first-seen order
    """
    return list(dict.fromkeys(runs))


def run_missing(runs: Sequence[Run], cache: Cache, workers: int = 1, desc: str = "runs") -> int:
    """
    Compute the runs that have no cached result, storing each one as it completes.

    :param runs: the study's runs
    :param cache: where results are found and stored
    :param workers: worker processes (``1``: in this process, one after the other)
    :param desc: the progress bar's label
    :return: how many runs were computed
    :raises Exception: the first run that fails, after the runs in flight have finished (and been stored); runs not
        started yet are cancelled
    """
    missing = [run for run in unique(runs) if not cache.has(run)]
    if not missing:
        return 0
    columns = (TextColumn(desc), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(desc, total=len(missing))
        if workers <= 1 or len(missing) == 1:
            for run in missing:
                result, seconds = timed(run.fn, dict(run.config))
                cache.store(run, result, seconds)
                bar.advance(task)
            return len(missing)
        for variable in THREAD_VARIABLES:  # inherited by the workers before they import NumPy
            os.environ.setdefault(variable, "1")
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context, initializer=one_thread) as pool:
            futures: dict[Future[tuple[Any, float]], Run] = {
                pool.submit(timed, run.fn, dict(run.config)): run for run in missing
            }
            try:
                for future in as_completed(futures):
                    result, seconds = future.result()
                    cache.store(futures[future], result, seconds)
                    bar.advance(task)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                for future, run in futures.items():  # what finished meanwhile is kept
                    if future.done() and not future.cancelled() and future.exception() is None and not cache.has(run):
                        cache.store(run, *future.result())
                raise
    return len(missing)


def collect(runs: Sequence[Run], cache: Cache) -> Results:
    """
    :param runs: the study's runs
    :param cache: the cache
    :return: the cached results of the runs (the others listed as missing)
    """
    runs = unique(runs)
    return Results({run: cache.load(run) for run in runs if cache.has(run)}, [run for run in runs if not cache.has(run)])
