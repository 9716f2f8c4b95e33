"""Where a round's client updates run: inline, in a process pool, or on Ray (``execution``).

The simulator interprets a client's ``Send`` (:mod:`fl.actions`). Inline (the default) it
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
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from typing import Any, Callable, Iterator, Protocol

__all__ = ["BACKENDS", "Pending", "Executor", "ProcessExecutor", "RayExecutor", "make_executor",
           "ray_available", "torch_threads", "default_threads"]

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


def _init_process(replica_blob: bytes, build_threads: int | None, threads: int | None) -> None:
    global _WORKER
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
            initargs=(pickle.dumps(replica, protocol=_PICKLE), build_threads, threads))

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


class RayExecutor:
    """``workers`` Ray actors (``threads`` CPUs each), each with its own replica; jobs go to
    them in turn. Starts a local Ray (``num_cpus = workers × threads``) unless Ray is already
    initialised or ``RAY_ADDRESS`` names a cluster; shuts down only what it started."""

    def __init__(self, replica: Callable[[], Any], workers: int, threads: int | None,
                 build_threads: int | None) -> None:
        import ray

        self._ray = ray
        self._started = not ray.is_initialized()
        cpus = workers * (threads or 1)
        if self._started:
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False)
            else:
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
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
        if self._started:
            self._ray.shutdown()


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
