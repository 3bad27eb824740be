"""Executors run a stage's shard tasks: in this process, in local worker
processes, or (``executor: ray``) as Ray tasks.

An executor only maps a picklable module-level function over task arguments.
Everything that makes a run safe (atomic writes, markers, conservation checks)
happens inside the task function, so every executor gives the same output.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm


class TaskError(RuntimeError):
    """A shard task failed; finished shards stay on disk and a rerun resumes."""


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=False)


class LocalExecutor:
    """Runs tasks in ``workers`` local processes (in-process when ``workers == 1``)."""

    name = "local"

    def __init__(self, workers: int = 1, progress: bool = True):
        self.workers = max(1, int(workers))
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        """One pool for the executor's lifetime: spawning workers per stage costs seconds each time."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable, tasks: list[tuple], desc: str, labels: list[str] | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(task_index, result)`` as tasks finish; raise :class:`TaskError` on the first failure."""
        labels = labels or [str(i) for i in range(len(tasks))]
        bar = _progress(len(tasks), desc, self.progress)
        try:
            if self.workers == 1 or len(tasks) <= 1:
                for i, args in enumerate(tasks):
                    try:
                        result = fn(*args)
                    except Exception as e:
                        raise TaskError(f"{desc}: task {labels[i]} failed: {type(e).__name__}: {e}") from e
                    bar.update(1)
                    yield i, result
                return
            pool = self._get_pool()
            futures = {pool.submit(fn, *args): i for i, args in enumerate(tasks)}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in sorted(done, key=lambda f: futures[f]):
                        i = futures[fut]
                        exc = fut.exception()
                        if exc is not None:
                            raise TaskError(f"{desc}: task {labels[i]} failed: {type(exc).__name__}: {exc}") from exc
                        bar.update(1)
                        yield i, fut.result()
            finally:
                for p in pending:  # on failure (or an abandoned generator) nothing new starts
                    p.cancel()
        finally:
            bar.close()


def make_executor(kind: str, workers: int, progress: bool = True, options: dict | None = None):
    if kind == "local":
        return LocalExecutor(workers, progress)
    if kind == "ray":
        try:
            from pipeline.ray_executor import RayExecutor
        except ModuleNotFoundError as e:
            raise RuntimeError("executor `ray` needs Ray: pip install 'winnow[ray]'") from e
        return RayExecutor(workers, progress, **(options or {}))
    raise ValueError(f"unknown executor {kind!r}")


def run_all(executor, fn: Callable, tasks: Iterable[tuple], desc: str, labels: list[str] | None = None) -> list[Any]:
    tasks = list(tasks)
    out: list[Any] = [None] * len(tasks)
    for i, r in executor.map(fn, tasks, desc, labels):
        out[i] = r
    return out
