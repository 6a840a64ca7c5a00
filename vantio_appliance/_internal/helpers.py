"""Helper processes for CPU work that the event loop's thread need not do itself.

The ingest service runs its Python on one thread (the interpreter's lock):
a batch's validation and encoding there leave the machine's other cores
idle. A pool of spawned processes (not forked: granian's worker has threads)
takes that work; the loop keeps what must happen in order. Helpers ignore
SIGINT and SIGTERM (a stop reaches the whole process group, and the service
drains through its pool, which it shuts down last) and die with their
parent (PR_SET_PDEATHSIG), so a killed service leaves none behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG: Final = 1


class HelpersGone(RuntimeError):
    """A helper died while it held a task (the pool is replaced; the task is lost)."""


def _init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


class Helpers:
    """``n`` helper processes, started at once (a first request must not wait for them)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("helpers need at least one process")
        self.n, self.restarts = n, 0
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init)
        for f in [pool.submit(int) for _ in range(self.n)]:
            f.result(timeout=60)
        return pool

    async def run(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: object
                  ) -> T:
        """``fn(*args)`` in a helper. A pool found broken (a helper died while idle) is
        replaced first; a helper that dies with the task raises HelpersGone."""
        pool = self._pool
        try:
            future = loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            pool = self._replace(pool)
            future = loop.run_in_executor(pool, fn, *args)
        try:
            return await future
        except BrokenProcessPool:
            self._replace(pool)
            raise HelpersGone("a helper process died with this batch; nothing of it "
                              "was committed") from None

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """New helpers, unless another caller has replaced the broken pool already."""
        if self._pool is broken:  # the loop waits for the spawn (~0.5 s): only after a death
            log.warning("a helper process died: starting new helpers")
            broken.shutdown(wait=False)
            self._pool = self._start()
            self.restarts += 1
        return self._pool

    def close(self) -> None:
        """Wait for the tasks given, then stop the processes."""
        self._pool.shutdown(wait=True)
