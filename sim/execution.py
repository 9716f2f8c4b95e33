"""Where a round's client updates run: inline, in a process pool, or on Ray (``execution``).

The simulator interprets a client's ``Send`` (:mod:`fl.core.actions`). Inline (the default) it
calls ``work(plan)`` when the upload completes in simulated time. With ``execution.backend``
``process`` or ``ray``, a ``Send`` that also carries a picklable ``job`` is submitted to a
worker as soon as its sizer has returned, so every upload that is in flight at the same
simulated time trains at the same real time; when the upload completes in simulated time the
simulator waits for that job's result and sends it into the client's generator, exactly
where ``work(plan)``'s result would have gone. If the upload fails the job is cancelled (or,
already running, its result is dropped). Results are consumed in simulated-time order and a
job's result depends only on the job, so the outputs (events, rounds, adapters) are identical
whatever the backend; tests pin it.

Each worker builds its own replica of the algorithm once (``Algorithm.replica()``: a fresh
build from the same config and context, models from the local cache), then runs jobs on it.

Torch threads: CPU kernels split their work by the thread count, so float results depend on
it (measured: a LoRA step with 1 and with 2 threads differs in the last bits). Every client
update therefore runs with the same count in every backend: ``execution.threads``, or, when
that is null, the host's ``torch.get_num_threads()``. A worker builds its replica with the
host's count (so set-up choices such as fedsoda's layer pruning are the host's) and then
trains with ``threads``. Workers default to ``cpu_count // threads`` (at least 1); for
parallel speed on a small machine set ``threads: 1`` (which changes the numerics slightly,
identically in every backend).

Algorithms whose ``Send`` has no ``job`` (split_lora, the surrogate) run inline
under any backend; no pool is started for them (pools start at the first job).

Workers die with their parent, whatever kills it (``kill -9`` included): every process-pool
worker fedwave starts (here and in :mod:`sim.sweep`) calls :func:`die_with_parent` first,
and what Ray leaves of a local Ray that fedwave starts is killed by a reaper process when
fedwave dies (:class:`LocalRay`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

__all__ = ["BACKENDS", "Pending", "Executor", "ProcessExecutor", "RayExecutor", "JobBatcher", "make_executor",
           "ray_available", "torch_threads", "default_threads", "die_with_parent", "LocalRay",
           "init_ray"]

BACKENDS = ("inline", "process", "ray")
_PICKLE = pickle.HIGHEST_PROTOCOL


class Pending(Protocol):
    """A submitted job: ``result()`` waits for it (raising what the job raised);
    ``cancel()`` stops it if it has not started (a running job's result is dropped)."""

    def result(self) -> Any: ...

    def cancel(self) -> None: ...


class Executor(Protocol):
    """Runs ``job(replica, plan)`` on a worker's replica; ``close()`` stops every worker."""

    def submit(self, job: Any, plan: Any) -> Pending: ...

    def close(self) -> None: ...


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads() -> int | None:
    """The host's torch thread count, or None when torch is not loaded (nothing to pin)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (restored after); None: leave them as they are."""
    torch = sys.modules.get("torch") if n is not None else None
    if torch is None or torch.get_num_threads() == n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------- dying together
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """End this process when its parent, the process ``parent_pid``, ends, however it ends.

    Every process-pool worker that fedwave starts calls this first (the pool's initializer),
    so that a killed fedwave (``kill -9`` included: no ``atexit``, no ``finally`` runs
    there) leaves no worker behind. ``parent_pid`` is the pid of the process that starts
    the pool (``os.getpid()`` there, passed in ``initargs``): with the ``spawn`` start
    method that process is the worker's parent.

    Linux: the kernel sends this process SIGKILL when its parent exits
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so it dies even while busy in C code. The kernel
    means the parent *thread*, the one that started the worker: fedwave's pools are started
    by the thread that submits their jobs and closed before that call returns, so that
    thread outlives them. Elsewhere (macOS), or if ``prctl`` fails: a daemon thread checks
    ``os.getppid()`` every ``0.5`` s and calls ``os._exit`` once it is no longer
    ``parent_pid`` (the worker was re-parented: its parent died); it needs the GIL, so a
    long call that holds it delays the exit.

    Either way, if the parent already died before this ran (the classic race: the worker
    was re-parented before the death signal was armed), the process exits at once.
    """
    if not _kill_on_parent_death():
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _kill_on_parent_death() -> bool:
    """Arm ``PR_SET_PDEATHSIG = SIGKILL`` for this process; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):  # no libc prctl (an unusual libc): use the thread
        return False
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


def _watch_parent(parent_pid: int, poll_s: float = 0.5) -> threading.Thread:
    """Start a daemon thread that ends this process (``os._exit(1)``) once its parent is no
    longer ``parent_pid``, checking every ``poll_s`` seconds; returns the thread."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name=f"die-with-parent-{parent_pid}", daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- the worker side
class _Worker:
    """A worker's replica (built at its first job) and thread counts."""

    def __init__(self, replica_blob: bytes, build_threads: int | None, threads: int | None) -> None:
        self._blob = replica_blob
        self._build_threads = build_threads
        self._threads = threads
        self._replica = None

    def run(self, blob: bytes) -> bytes:
        """``job(replica, plan)`` for a pickled ``(job, plan)``; the result pickled."""
        job, plan = pickle.loads(blob)
        if self._replica is None:
            build = pickle.loads(self._blob)  # imports the algorithm's module (and torch) first
            with torch_threads(self._build_threads):
                self._replica = build()
        with torch_threads(self._threads):
            out = job(self._replica, plan)
        return pickle.dumps(out, protocol=_PICKLE)


_WORKER: _Worker | None = None  # this worker process's state (process pool)


def _init_process(parent_pid: int, replica_blob: bytes, build_threads: int | None,
                  threads: int | None) -> None:
    global _WORKER
    die_with_parent(parent_pid)
    _WORKER = _Worker(replica_blob, build_threads, threads)


def _run_in_process(blob: bytes) -> bytes:
    assert _WORKER is not None, "process-pool worker used before its initialiser ran"
    return _WORKER.run(blob)


# ----------------------------------------------------------------------------- the host side
# Jobs and results travel as plain pickles (bytes): tensors go by value, not through torch's
# shared-memory reductions (file descriptors, which run out with many tensors).
class _FuturePending:
    def __init__(self, future) -> None:
        self._future = future

    def result(self) -> Any:
        return pickle.loads(self._future.result())

    def cancel(self) -> None:
        self._future.cancel()


class ProcessExecutor:
    """A pool of ``workers`` spawned processes (spawn: the host holds torch's threads, which
    fork would copy half-initialised), each with its own replica."""

    def __init__(self, replica: Callable[[], Any], workers: int, threads: int | None,
                 build_threads: int | None) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(os.getpid(), pickle.dumps(replica, protocol=_PICKLE), build_threads, threads))

    def submit(self, job: Any, plan: Any) -> Pending:
        return _FuturePending(self._pool.submit(_run_in_process,
                                                pickle.dumps((job, plan), protocol=_PICKLE)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _RayPending:
    def __init__(self, ray, ref) -> None:
        self._ray, self._ref = ray, ref

    def result(self) -> Any:
        return pickle.loads(self._ray.get(self._ref))

    def cancel(self) -> None:
        try:
            self._ray.cancel(self._ref)  # a queued actor task is dropped; a running one finishes
        except Exception:  # noqa: BLE001  (already done, or not cancellable: nothing to stop)
            pass


# ----------------------------------------------------------------------------- Ray
class LocalRay:
    """A local Ray cluster of ``num_cpus`` CPUs (``ray.init``) that dies with this process,
    however this process dies.

    ``ray.init()`` fate-shares the processes it starts itself (GCS, raylet, monitors) with
    this process (Linux: ``PR_SET_PDEATHSIG``; elsewhere a reaper of Ray's own that kills
    their process group), and Ray's workers exit within seconds of the raylet. But on Linux
    the raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) notice the
    raylet's death and then spend 60 s reporting it to the dead GCS before they exit
    (measured with Ray 2.60 after ``kill -9`` of the driver; Ray has no option for it). So,
    once ``ray.init`` has returned (the agents are running by then), a reaper is started: a
    small process in a session of its own that is given the processes ``ray.init`` started
    (pid and start time, from /proc) and whose stdin is a pipe from this process. When that
    pipe closes (:meth:`close`, or this process dying, however) the reaper SIGKILLs those of
    them still running; the start time guards against a pid reused since. Workers Ray starts
    later exit with the raylet. The pipe's write end stays in this process (fedwave starts
    workers with ``spawn``, which does not pass it on).

    Not covered: this process killed during ``ray.init`` itself, before the reaper starts
    (the agents then exit after their 60 s). Without /proc (macOS) no reaper is started:
    there Ray has no kernel fate-sharing and starts a reaper of its own that kills its
    process group, agents included (ray/_private/node.py; not tested here).
    """

    def __init__(self, num_cpus: int) -> None:
        import subprocess

        import ray

        before = _descendants(os.getpid())
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        started = {pid: t0 for pid, t0 in _descendants(os.getpid()).items() if pid not in before}
        self._reaper = None
        if started:
            root = str(Path(__file__).resolve().parents[1])  # the folder that holds sim/
            code = (f"import sys; sys.path.insert(0, {root!r}); from sim.execution import "
                    f"_reap_when_stdin_closes; _reap_when_stdin_closes({started!r})")
            try:
                self._reaper = subprocess.Popen([sys.executable, "-c", code],
                                                stdin=subprocess.PIPE, start_new_session=True)
            except BaseException:
                ray.shutdown()
                raise

    def close(self) -> None:
        """Shut Ray down, then let the reaper kill whatever of it is left."""
        import ray

        try:
            ray.shutdown()
        finally:
            if self._reaper is not None:
                self._reaper.stdin.close()
                self._reaper.wait()


def _reap_when_stdin_closes(procs: dict[int, int]) -> None:
    """The reaper of :class:`LocalRay`: wait until stdin closes (its parent closed it, or
    died), then SIGKILL each process of ``procs`` (pid -> start time, clock ticks since
    boot) that still runs with that start time."""
    while sys.stdin.buffer.read(1 << 16):
        pass
    for pid, t0 in sorted(procs.items()):
        if _process_table(pid).get(pid, (None, None))[1] == t0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _process_table(pid: int | None = None) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot), from /proc: of process
    ``pid`` only, or of every process when None. Empty without /proc (not Linux)."""
    stats = [Path(f"/proc/{pid}/stat")] if pid is not None else Path("/proc").glob("[0-9]*/stat")
    table: dict[int, tuple[int, int]] = {}
    for stat in stats:
        try:  # after the ")" that ends the command name: state, ppid, ... (proc(5))
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # ended meanwhile
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[19]))  # ppid, starttime
    return table


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every running descendant of process ``pid`` (/proc; empty without)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = table[child][1]
            todo.append(child)
    return out


def init_ray(num_cpus: int) -> Callable[[], None]:
    """Connect this process to Ray; returns the function that undoes what this did.

    Ray already initialised: nothing is done (a no-op is returned). ``RAY_ADDRESS`` set: the
    cluster it names (its CPUs, not ``num_cpus``); undone by disconnecting. Otherwise a
    :class:`LocalRay` of ``num_cpus`` CPUs, which dies with this process; undone by
    shutting it down.
    """
    import ray

    if ray.is_initialized():
        return lambda: None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return ray.shutdown
    return LocalRay(num_cpus).close


class RayExecutor:
    """``workers`` Ray actors (``threads`` CPUs each), each with its own replica; jobs go to
    them in turn. Ray as :func:`init_ray` leaves it (a local Ray of ``workers × threads``
    CPUs, unless Ray is already initialised or ``RAY_ADDRESS`` names a cluster); ``close``
    undoes only what it started."""

    def __init__(self, replica: Callable[[], Any], workers: int, threads: int | None,
                 build_threads: int | None) -> None:
        import ray

        self._ray = ray
        self._stop_ray = init_ray(workers * (threads or 1))
        actor = ray.remote(num_cpus=threads or 1, max_restarts=0)(_Worker)
        blob = pickle.dumps(replica, protocol=_PICKLE)
        self._actors = [actor.remote(blob, build_threads, threads) for _ in range(workers)]
        self._next = 0

    def submit(self, job: Any, plan: Any) -> Pending:
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return _RayPending(self._ray, actor.run.remote(pickle.dumps((job, plan), protocol=_PICKLE)))

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        self._stop_ray()


class _BatchedPending:
    def __init__(self, batcher: "JobBatcher", job: Any, plan: Any) -> None:
        self._batcher, self.job, self.plan = batcher, job, plan
        self.cancelled = False
        self.done = False
        self.value: Any = None

    def result(self) -> Any:
        if not self.done:
            self._batcher.run_queued()
        return self.value

    def cancel(self) -> None:
        self.cancelled = True


class JobBatcher:
    """Clients batched, inline (``execution.batch_clients``): a job is queued when its
    upload starts; the first result asked for (its upload completed) runs every job still
    queued — in submission order, through :meth:`fl.core.algorithm.Algorithm.run_jobs`, which
    may train them as one batch — and keeps the others' results for when their uploads
    complete. A job whose upload failed before the batch ran is dropped; one that failed
    after it ran cost real compute but no simulated time, and its result is never used (as
    with the process and Ray backends). Which jobs share a batch follows the simulated
    event order, so runs are reproducible."""

    def __init__(self, algorithm: Any, threads: int | None) -> None:
        self._algorithm, self._threads = algorithm, threads
        self._queue: list[_BatchedPending] = []
        self.batches: list[int] = []  # sizes of the batches run (for diagnostics)

    def submit(self, job: Any, plan: Any) -> _BatchedPending:
        pending = _BatchedPending(self, job, plan)
        self._queue.append(pending)
        return pending

    def run_queued(self) -> None:
        items = [p for p in self._queue if not p.cancelled]
        self._queue.clear()
        if not items:
            return
        with torch_threads(self._threads):
            results = self._algorithm.run_jobs([(p.job, p.plan) for p in items])
        for p, r in zip(items, results):
            p.value, p.done = r, True
        self.batches.append(len(items))


def make_executor(backend: str, replica: Callable[[], Any], workers: int | None,
                  threads: int | None) -> Executor:
    """A ``process`` or ``ray`` executor of ``workers`` workers (None: ``cpu_count //
    threads``, at least 1) training with ``threads`` torch threads (None: the host's)."""
    build_threads = default_threads()
    threads = threads if threads is not None else build_threads
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // (threads or 1))
    if backend == "process":
        return ProcessExecutor(replica, workers, threads, build_threads)
    if backend == "ray":
        if not ray_available():
            raise RuntimeError("execution.backend: 'ray' needs Ray, which is not installed. "
                               "Fix: pip install 'fedwave[ray]' (or set execution.backend: process).")
        return RayExecutor(replica, workers, threads, build_threads)
    raise ValueError(f"execution.backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
