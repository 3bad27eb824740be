"""Executors run a stage's shard tasks: in this process, in local worker
processes, or (``executor: ray``) as Ray tasks.

An executor only maps a picklable module-level function over task arguments.
Everything that makes a run safe (atomic writes, markers, conservation checks)
happens inside the task function, so every executor gives the same output.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm


class TaskError(RuntimeError):
    """A shard task failed; finished shards stay on disk and a rerun resumes."""


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def _exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: a worker dies with the run, even when the parent is SIGKILLed.

    On Linux the kernel sends SIGKILL when the parent exits (``PR_SET_PDEATHSIG``);
    everywhere a watchdog thread also checks once a second that the parent is
    still the one that started it (a worker busy in C code still exits: the
    thread calls ``os._exit``). Finished shards are on disk; a rerun resumes.
    (Linux sends the signal when the *thread* that started the worker ends; the
    pool is started from the thread that runs the stages, which outlives it.)
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="winnow-parent-watchdog", daemon=True).start()


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
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
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


RAY_OPTIONS = ("address", "shuffle_partitions", "runtime_env")


def make_executor(kind: str, workers: int, progress: bool = True, options: dict | None = None):
    from pipeline.config import ConfigError

    options = dict(options or {})
    if kind == "local":  # executor_options are Ray's; `--executor local` on a Ray config ignores them
        return LocalExecutor(workers, progress)
    if kind == "ray":
        unknown = sorted(set(options) - set(RAY_OPTIONS))
        if unknown:
            raise ConfigError(f"executor_options: unknown key(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(RAY_OPTIONS)}")
        if options.get("address"):
            check_ray_address(str(options["address"]))
        try:
            from pipeline.ray_executor import RayExecutor
        except ModuleNotFoundError as e:
            raise RuntimeError("executor `ray` needs Ray: pip install 'winnow[ray]'") from e
        try:
            return RayExecutor(workers, progress, **options)
        except (ConnectionError, TimeoutError, OSError) as e:
            raise ConfigError(f"executor_options.address: cannot join the Ray cluster at "
                              f"{options.get('address')!r}: {type(e).__name__}: {e}") from None
    raise ValueError(f"unknown executor {kind!r}")


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with the config key, when ``executor_options.address`` names a host:port nobody answers on.

    ``auto`` (the cluster `ray start` set up here) is left to Ray, which fails fast when there is none.
    """
    from pipeline.config import ConfigError

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"executor_options.address: expected `auto`, `host:port` or `ray://host:port`, "
                          f"got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"executor_options.address: no Ray cluster answers at {address!r} "
                          f"({e.strerror or type(e).__name__}); start one with `ray start --head` or fix the address") from None


def run_all(executor, fn: Callable, tasks: Iterable[tuple], desc: str, labels: list[str] | None = None) -> list[Any]:
    tasks = list(tasks)
    out: list[Any] = [None] * len(tasks)
    for i, r in executor.map(fn, tasks, desc, labels):
        out[i] = r
    return out
