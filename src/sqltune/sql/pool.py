"""Untrusted SQL run in worker processes, so that a crash in SQLite or the OOM killer fails one task, not the run.

Evaluate's verdicts, predict's candidate checks and the GRPO reward all go through `crash_safe_map`: tasks are dealt
out in contiguous chunks (tasks of one database sit together), each worker keeps its own state from `initializer`,
and when a worker dies the chunks it took down are run again one task at a time, so exactly the task whose worker
dies again is known; it gets `crashed(task)` and the others their normal results.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from sqltune.errors import SqltuneError

Task = TypeVar("Task")
Result = TypeVar("Result")


def crash_safe_map(
    run_chunk: Callable[[list[Task]], list[Result]],
    tasks: Sequence[Task],
    *,
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    crashed: Callable[[Task], Result],
    what: str,
) -> Iterator[Result]:
    """Results of all `tasks`, in completion order, from pools of `workers` processes.

    `run_chunk` and `initializer` run in the workers (module-level functions: they are pickled); `crashed` runs
    here. The start method is chosen now, before the caller starts any thread (a progress bar's, say).
    """
    context = multiprocessing.get_context(start_method())
    return _pooled(run_chunk, list(tasks), workers, initializer, initargs, crashed, what, context)


def _pooled(
    run_chunk: Callable[[list[Task]], list[Result]],
    tasks: list[Task],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    crashed: Callable[[Task], Result],
    what: str,
    context: multiprocessing.context.BaseContext,
) -> Iterator[Result]:
    """After a death, a fresh pool of `workers` goes on; the pools after the first start as `start_method` says
    then."""
    chunksize = max(1, math.ceil(len(tasks) / (workers * 32)))
    chunks = deque(tasks[i : i + chunksize] for i in range(0, len(tasks), chunksize))
    pool_args = (run_chunk, initializer, initargs, what)
    while chunks:
        lost: list[list[Task]] = []
        yield from _pool_pass(chunks, workers, context, lost, *pool_args)
        context = multiprocessing.get_context(start_method())
        one_by_one = deque([task] for chunk in lost for task in chunk)
        while one_by_one:
            died: list[list[Task]] = []
            yield from _pool_pass(one_by_one, 1, context, died, *pool_args)
            yield from (crashed(task) for [task] in died)


def _pool_pass(
    chunks: deque[list[Task]],
    workers: int,
    context: multiprocessing.context.BaseContext,
    lost: list[list[Task]],
    run_chunk: Callable[[list[Task]], list[Result]],
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    what: str,
) -> Iterator[Result]:
    """Results of `chunks`, taken in order with at most one per worker in flight, until none is left or a worker
    dies; then the chunks in flight that had not finished go to `lost` (in order) and the pass ends."""
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
        try:  # workers that die before any task would otherwise make every task a crash
            pool.submit(os.getpid).result()
        except BrokenProcessPool:
            raise SqltuneError(
                f"{what}: worker processes ({context.get_start_method()}) die as they start; with forkserver or "
                "spawn, a script that calls it must guard the call with `if __name__ == '__main__':`"
            ) from None
        in_flight: dict[Future[list[Result]], list[Task]] = {}
        try:
            while chunks or in_flight:
                while chunks and len(in_flight) < workers:
                    future = pool.submit(run_chunk, chunks[0])  # a dead pool refuses it: the chunk stays
                    in_flight[future] = chunks.popleft()
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    results = future.result()
                    del in_flight[future]
                    yield from results
        except BrokenProcessPool:
            wait(in_flight)  # every future of a broken pool ends: with its results if it finished in time
            for future, chunk in in_flight.items():
                if isinstance(future.exception(), BrokenProcessPool):
                    lost.append(chunk)
                else:
                    yield from future.result()


def worker_count(requested: int | None, tasks: int) -> int:
    """Worker processes for `tasks` tasks: `requested` (0 or None: one per CPU), never more than the tasks, at
    least one."""
    return max(1, min(requested or os.cpu_count() or 1, tasks))


def start_method() -> str:
    """fork is cheapest (workers inherit everything) but unsafe once threads exist; then a fresh forkserver."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"
