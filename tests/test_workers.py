"""ccvae.workers: the evaluation's worker processes give what running in turn gives, and an interrupt kills them."""

from __future__ import annotations

import multiprocessing
import operator
import os
import signal
import time

import pytest
import torch

from ccvae.workers import parallel_map, worker_pool


def test_parallel_map_keeps_order_in_one_thread_workers():
    here = os.getpid()
    assert parallel_map(os.getpid, [(), ()], 1) == [here, here]  # n_jobs 1: in turn, here
    with worker_pool(2):  # one pool for the block: one start-up
        assert parallel_map(operator.mul, [(i, 3) for i in range(9)], 2) == [3 * i for i in range(9)]
        pids = set(parallel_map(os.getpid, [()] * 6, 2))
        assert here not in pids and 1 <= len(pids) <= 2
        assert parallel_map(torch.get_num_threads, [(), ()], 2) == [1, 1]
        assert set(parallel_map(os.getpid, [()] * 4, 2)) <= pids | {here}  # the same pool, not a new one
    assert not multiprocessing.active_children()


def test_an_error_in_a_job_reaches_the_caller_and_the_pool_is_gone():
    with pytest.raises(ZeroDivisionError):
        parallel_map(operator.truediv, [(1, 1), (1, 0), (2, 1)], 2)
    assert not multiprocessing.active_children()


def test_an_interrupt_kills_the_workers_mid_task():
    """What SIGTERM does to ``ccvae evaluate`` (the command turns it into KeyboardInterrupt): out within seconds,
    the workers killed, not left computing (joblib's loky workers outlived the command and held its stderr)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    children = []
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), worker_pool(2):
            parallel_map(os.getpid, [(), ()], 2)  # started
            children = multiprocessing.active_children()
            signal.alarm(1)
            parallel_map(time.sleep, [(120,), (120,)], 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - t0 < 30
    assert children and not any(c.is_alive() for c in children)
    assert not multiprocessing.active_children()


def test_resolve_jobs_is_the_processes_share_of_the_cores():
    """0: this process's torch threads, at most MAX_AUTO_JOBS; a number is kept; OMP_NUM_THREADS (what --seeds sets
    for each seed's child) decides a fresh process's share."""
    import subprocess
    import sys

    import torch

    from ccvae.workers import MAX_AUTO_JOBS, resolve_jobs

    assert resolve_jobs(3) == 3
    with pytest.raises(ValueError, match="n_jobs must be >= 0"):
        resolve_jobs(-1)
    before = torch.get_num_threads()
    try:
        for threads, expected in ((1, 1), (2, 2), (MAX_AUTO_JOBS + 4, MAX_AUTO_JOBS)):
            torch.set_num_threads(threads)
            assert resolve_jobs(0) == expected
        torch.set_num_threads(1)  # and the pool resolves 0 itself: one process, so the jobs run here
        assert parallel_map(os.getpid, [(), ()], 0) == [os.getpid()] * 2
    finally:
        torch.set_num_threads(before)
    code = "from ccvae.workers import resolve_jobs; print(resolve_jobs(0))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
