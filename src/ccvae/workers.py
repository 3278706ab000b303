"""Worker processes for the evaluation's CPU-bound fits (probes, DCI's trees, SAP's SVMs), owned here so that
an interrupt stops them.

These fits are small and single-threaded at heart: two side by side in one-thread processes finish sooner than
one after another at two threads. joblib's reusable loky workers did this at first, but a SIGTERM that reached
``ccvae evaluate`` mid-fit left them deadlocked, alive after the command had exited and holding its stderr open
(a caller reading it to the end waited for ever), and loky's resource tracker printed multi-line leak warnings.
Here a pool lives for a ``with worker_pool(n):`` block, one start-up for the whole evaluation (about 3 s: each
process imports torch), and any exception that leaves the block, KeyboardInterrupt included, kills the
processes before it goes on.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# The executor of the open ``worker_pool`` block (None outside one): ``parallel_map`` calls deep in the metrics
# share it instead of each paying the start-up, as joblib's ``parallel_config`` block shares a backend.
_pool: ProcessPoolExecutor | None = None
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# The most fits any stage of the evaluation has at once that are worth a process each (a task's four classifier
# probes); past it more processes only cost their start-up and memory.
MAX_AUTO_JOBS = 4


def resolve_jobs(n_jobs: int) -> int:
    """``n_jobs`` as given, or for 0 this process's share of the cores: its torch threads (which ``--seeds`` sets to
    the cores split between the seeds, through OMP_NUM_THREADS), at most ``MAX_AUTO_JOBS``. Two seeds evaluating
    side by side on 2 cores then fit in turn, one process each, instead of starting 2 workers each."""
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0, got {n_jobs}")
    if n_jobs > 0:
        return n_jobs
    import torch

    return max(1, min(torch.get_num_threads(), MAX_AUTO_JOBS))


def _init_worker() -> None:
    """One thread per process, set before torch or numpy load."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)


def _kill(executor: ProcessPoolExecutor) -> None:
    """Stop the workers now, mid-task: an interrupted evaluation has no use for what they are computing."""
    kill_workers = getattr(executor, "kill_workers", None)  # public from Python 3.14
    if kill_workers is not None:
        kill_workers()
    else:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.kill()
    executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def worker_pool(n_jobs: int) -> Iterator[None]:
    """Within the block, ``parallel_map`` runs in one pool of up to ``n_jobs`` one-thread processes (started
    on first use; 0: ``resolve_jobs``). On normal exit the pool shuts down; on any exception its processes are killed
    first. One process or a pool already open: nothing to do (the outer pool serves)."""
    global _pool
    n_jobs = resolve_jobs(n_jobs)
    if n_jobs <= 1 or _pool is not None:
        yield
        return
    executor = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker)
    _pool = executor
    try:
        yield
    except BaseException:
        _kill(executor)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        _pool = None
        del executor
        # The pool's queues hold named semaphores that their finalisers unlink; collect them now, since an
        # interrupted command leaves through os._exit, and a name left behind makes the resource tracker warn.
        gc.collect()


def parallel_map(fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], n_jobs: int) -> list[T]:
    """``[fn(*job) for job in jobs]``, in worker processes: the open ``worker_pool``'s, else a pool of
    ``min(n_jobs, len(jobs))`` for this call (0: ``resolve_jobs``). One process or one job: here, in turn, at this
    process's threads. ``fn`` and the jobs must pickle (a module-level function and plain data)."""
    n_jobs = resolve_jobs(n_jobs)
    if n_jobs <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    with worker_pool(min(n_jobs, len(jobs))):
        assert _pool is not None
        # The workers start inside submit. A terminal's Ctrl-C reaches the whole process group; the parent unwinds
        # and kills its workers, and a worker's own KeyboardInterrupt would only print a traceback beside the
        # parent's one-line message. So SIGINT is blocked while they start: they inherit the mask (blocked for
        # their lifetime, from their first instruction on), and the parent gets a Ctrl-C of that moment on unblocking.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            futures = [_pool.submit(fn, *job) for job in jobs]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return [f.result() for f in futures]
