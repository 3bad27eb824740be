"""Executors run a stage's shard tasks: in this process, in local worker
processes, or (``executor: ray``) as Ray tasks, on a local or an existing Ray cluster.

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

from pipeline.errors import ConfigProblem, RunFailure


class TaskError(RunFailure, RuntimeError):
    """A shard task failed; finished shards stay on disk and a rerun resumes."""


#: Seconds between progress lines when stderr is not a terminal (a log file, CI).
PROGRESS_LINE_SECONDS = float(os.environ.get("WINNOW_PROGRESS_SECONDS", "30"))


class _LineProgress:
    """Progress as plain lines (``[langid] 12/40 shards (30%), 1m05s``), at most one per
    :data:`PROGRESS_LINE_SECONDS` and one at the end: a redirected log gets readable lines,
    not a flood of carriage returns."""

    def __init__(self, total: int, desc: str, every: float = PROGRESS_LINE_SECONDS, stream=None):
        self.total, self.desc, self.every = total, desc, every
        self.stream = stream or sys.stderr
        self.n = 0
        self.t0 = self._last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.every and self.n < self.total:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        secs = int(now - self.t0)
        pct = 100 * self.n / self.total if self.total else 100.0
        print(f"[{self.desc}] {self.n:,}/{self.total:,} shards ({pct:.0f}%), {secs // 60}m{secs % 60:02d}s",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.total and self.n and time.monotonic() - self.t0 >= self.every:
            self._line(time.monotonic())  # long work ends with a line; short work stays quiet


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal; periodic lines otherwise (``enabled=False``: nothing)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if enabled and not (isatty and isatty()):
        return _LineProgress(total, desc)
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
    # Ctrl-C reaches the whole process group: the parent stops the run and says so in one line;
    # a worker must not print its own KeyboardInterrupt traceback (it is ended by the parent).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="winnow-parent-watchdog", daemon=True).start()


def _submit_holding_ctrl_c(pool: ProcessPoolExecutor, fn: Callable, tasks: list[tuple]) -> dict:
    """Submit every task with SIGINT blocked, then deliver a Ctrl-C that came meanwhile.

    The pool spawns its workers inside ``submit``. A Ctrl-C landing in the parent halfway through a spawn left the
    pool unable to shut down (the run hung instead of stopping), and one landing in a worker before its initializer
    ignores SIGINT printed that worker's traceback. Workers inherit the blocked mask, so they never see Ctrl-C; the
    parent gets it as soon as the submissions are done, and ends them (:meth:`LocalExecutor.abort`)."""
    block = threading.current_thread() is threading.main_thread()
    if block:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return {pool.submit(fn, *args): i for i, args in enumerate(tasks)}
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


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

    def abort(self) -> None:
        """Stop now (Ctrl-C): cancel what has not started and end the workers mid-task.

        A task ended mid-write leaves at most a temporary file, which the next run deletes;
        its shard has no marker, so it is redone.
        """
        if self._pool is None:
            return
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
        self._pool = None

    def map(self, fn: Callable, tasks: list[tuple], desc: str, labels: list[str] | None = None,
            resources: dict | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(task_index, result)`` as tasks finish; raise :class:`TaskError` on the first failure.
        (``resources`` is Ray's per-task request; local workers are one task each.)"""
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
            pending = set()
            try:
                futures = _submit_holding_ctrl_c(pool, fn, tasks)
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in sorted(done, key=lambda f: futures[f]):
                        i = futures[fut]
                        exc = fut.exception()
                        if exc is not None:
                            raise TaskError(f"{desc}: task {labels[i]} failed: {type(exc).__name__}: {exc}") from exc
                        bar.update(1)
                        yield i, fut.result()
            except KeyboardInterrupt:
                self.abort()
                raise
            finally:
                for p in pending:  # on failure (or an abandoned generator) nothing new starts
                    p.cancel()
        finally:
            bar.close()


RAY_OPTIONS = ("address", "shuffle_partitions", "runtime_env")


class ExecutorOptionError(ConfigProblem, ValueError):
    """A bad ``executor_options`` entry (the CLI prints it as one line, like a config error)."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_workers(workers: int, log: Callable[[str], None] | None = None) -> int:
    """``workers`` capped at the usable cores, with one warning line when capped.

    Each local worker is a process that runs one shard at a time and loads the stage's models; more of them
    than cores only adds start-up time and memory (``workers: 12`` on 2 cores turned 0.1 s into 22 s).
    Processes are started on demand, so a stage with fewer pending shards starts fewer. ``WINNOW_MAX_WORKERS``
    sets another cap (e.g. for a plug-in that waits on the network rather than computing).
    """
    env = os.environ.get("WINNOW_MAX_WORKERS", "")
    cap = int(env) if env.isdigit() and int(env) > 0 else usable_cores()
    if workers > cap:
        limit = f"WINNOW_MAX_WORKERS={cap}" if env else f"the {cap} CPU core(s) this process may use"
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"winnow: warning: workers: {workers} is more than {limit}; using {cap}")
        return cap
    return workers


def make_executor(kind: str, workers: int, progress: bool = True, options: dict | None = None,
                  log: Callable[[str], None] | None = None):
    options = dict(options or {})
    if kind == "local":  # executor_options are Ray's; `--executor local` on a Ray config ignores them
        return LocalExecutor(local_workers(workers, log), progress)
    if kind == "ray":
        unknown = sorted(set(options) - set(RAY_OPTIONS))
        if unknown:
            raise ExecutorOptionError(f"executor_options: unknown key(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(RAY_OPTIONS)}")
        if options.get("address"):
            check_ray_address(str(options["address"]))
        try:
            import ray  # noqa: F401
        except ModuleNotFoundError as e:
            raise RuntimeError("executor `ray` needs Ray: pip install 'winnow[ray]'") from e
        try:
            return RayExecutor(workers, progress, **options)
        except (ConnectionError, TimeoutError, OSError) as e:
            raise ExecutorOptionError(f"executor_options.address: cannot join the Ray cluster at "
                              f"{options.get('address')!r}: {type(e).__name__}: {e}") from None
    raise ValueError(f"unknown executor {kind!r}")


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, with the config key, when ``executor_options.address`` names a host:port nobody answers on.

    ``auto`` (the cluster `ray start` set up here) is left to Ray, which fails fast when there is none.
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ExecutorOptionError(f"executor_options.address: expected `auto`, `host:port` or `ray://host:port`, "
                          f"got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ExecutorOptionError(f"executor_options.address: no Ray cluster answers at {address!r} "
                          f"({e.strerror or type(e).__name__}); start one with `ray start --head` or fix the address") from None


def run_all(executor, fn: Callable, tasks: Iterable[tuple], desc: str, labels: list[str] | None = None,
            resources: dict | None = None) -> list[Any]:
    tasks = list(tasks)
    out: list[Any] = [None] * len(tasks)
    for i, r in executor.map(fn, tasks, desc, labels, **({"resources": resources} if resources else {})):
        out[i] = r
    return out


# ---------------------------------------------------------------------------
# Ray (optional dependency, imported when used). Its task functions are the same module-level
# functions the local executor runs; they write their outputs atomically and their markers last,
# so a Ray run resumes, checks conservation and records stats exactly like a local one. The run
# folder must be on storage every Ray node sees (the driver reads the markers the workers write).


class RayExecutor:
    """Maps task functions over Ray with at most ``workers`` tasks in flight, one CPU each.

    ``address`` joins an existing cluster (``auto``: the one ``ray start`` set
    up on this machine; ``ray://host:10001``: Ray Client); without it, a
    private local cluster with ``num_cpus=workers`` is started. If Ray is
    already initialised in this process (a test fixture, a notebook), that
    session is used as is. ``shuffle_partitions`` sets how many partitions the
    MinHash plan shuffles band keys into (default 4 x workers, as locally).
    """

    name = "ray"

    def __init__(self, workers: int = 1, progress: bool = True, address: str | None = None,
                 shuffle_partitions: int | None = None, runtime_env: dict | None = None):
        self.workers = max(1, int(workers))
        self.progress = progress
        self.shuffle_partitions = max(1, int(shuffle_partitions or 4 * self.workers))
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, runtime_env=runtime_env or _pythonpath_env(), log_to_driver=False)
            else:  # workers of a cluster started here inherit this process's environment
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         runtime_env=runtime_env)

    def map(self, fn: Callable, tasks: list[tuple], desc: str, labels: list[str] | None = None,
            resources: dict | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(task_index, result)`` as tasks finish; raise :class:`TaskError` on the first failure.

        ``resources``: what each task asks Ray for (``num_cpus``, ``num_gpus``; default one CPU)."""
        import ray

        labels = labels or [str(i) for i in range(len(tasks))]
        # a task lost with its worker or node is retried (Ray's default): tasks write atomically, markers last
        remote = ray.remote(**{"num_cpus": 1, **(resources or {})})(fn)
        bar = _progress(len(tasks), desc, self.progress)
        in_flight: dict[ray.ObjectRef, int] = {}
        next_task = 0
        try:
            while next_task < len(tasks) or in_flight:
                while next_task < len(tasks) and len(in_flight) < self.workers:
                    in_flight[remote.remote(*tasks[next_task])] = next_task
                    next_task += 1
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    i = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.cause if e.cause is not None else e
                        raise TaskError(f"{desc}: task {labels[i]} failed: {type(cause).__name__}: {cause}") from cause
                    except ray.exceptions.RayError as e:  # worker died, node lost, ...
                        raise TaskError(f"{desc}: task {labels[i]} failed: {type(e).__name__}: {e}") from e
                    bar.update(1)
                    yield i, result
        finally:
            for ref in in_flight:
                ray.cancel(ref)
            bar.close()


def _pythonpath_env() -> dict | None:
    """Workers of an existing cluster import stage plugins (``kind: mymodule:MyStage``) as the driver does.

    Ray already puts the driver's working directory on the workers' path; a
    cluster started by ``ray start`` does not see the driver's ``PYTHONPATH``,
    so it is forwarded (as a variable, nothing is uploaded: nodes must see the
    same paths).
    """
    pythonpath = os.environ.get("PYTHONPATH")
    return {"env_vars": {"PYTHONPATH": pythonpath}} if pythonpath else None
