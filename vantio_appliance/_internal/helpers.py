"""Helper processes for CPU work that the event loop's thread need not do itself.

The ingest service runs its Python on one thread (the interpreter's lock):
a batch's validation and encoding there leave the machine's other cores
idle. Helper processes take that work; the loop keeps what must happen in
order. They are new interpreters (``python -m`` this module, not forks: the
service has threads) on one end of a socketpair, and not ``multiprocessing``'s
spawn either, whose resource-tracker process outlived the service by a moment
at every stop.

Not ``concurrent.futures.ProcessPoolExecutor``: in Python 3.11 a task submitted
while one of its processes dies can stay pending forever (``terminate_broken``
marks the pool broken without the lock ``submit`` holds), and an interpreter
that held a broken pool could hang on exit. Here each helper has a socketpair
that the event loop reads: no thread in the service, a death is an end of
file on that socket, and its task fails at once. Helpers ignore SIGINT and
SIGTERM (a stop reaches the whole process group, and the service drains
first, then closes them) and die with their parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG: Final = 1
#: A batch of at most 4 MiB takes a helper well under a second: past this, it is stuck.
TASK_TIMEOUT_S: Final = 30.0
_START_TIMEOUT_S: Final = 60.0

Task = tuple[Callable[..., Any], tuple[object, ...], "asyncio.Future[Any]"]


class HelpersGone(RuntimeError):
    """A helper died (or stopped answering) while it held a task: the task is lost."""


def _serve(conn: Connection, parent: int) -> None:
    """A helper's life: run what arrives, send back ("ok", result) or ("err", exception)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the service died before the line above
        return
    conn.send(("ok", None))  # ready
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the service closed its end
            return
        try:
            reply: tuple[str, object] = ("ok", fn(*args))
        except Exception as exc:  # the caller's to handle, as if raised in its process
            reply = ("err", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(("err", RuntimeError(f"helper answer not sendable: {exc!r}")))


@dataclass(eq=False)
class _Helper:
    proc: subprocess.Popen[bytes]
    conn: Connection
    task: Task | None = None


class Helpers:
    """``n`` helper processes on ``loop``, started at once (a first request must not wait)."""

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop,
                 timeout: float = TASK_TIMEOUT_S) -> None:
        if n < 1:
            raise ValueError("helpers need at least one process")
        self.n, self.loop, self.timeout, self.restarts = n, loop, timeout, 0
        self._queue: deque[Task] = deque()
        self._idle: list[_Helper] = []
        self._all: list[_Helper] = []
        for helper in [self._spawn() for _ in range(n)]:
            self._ready(helper)

    def _spawn(self) -> _Helper:
        mine, theirs = socket.socketpair()
        with theirs:  # the child has its own copy; tasks' functions import as in the service
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))})
        helper = _Helper(proc, Connection(mine.detach()))
        self._all.append(helper)
        return helper

    def _ready(self, helper: _Helper) -> None:
        """Wait for a new helper's first message, then let it take tasks."""
        if not helper.conn.poll(_START_TIMEOUT_S):
            raise RuntimeError("a helper process did not start")
        helper.conn.recv()
        self.loop.add_reader(helper.conn.fileno(), self._answer, helper)
        # uvloop makes a watched descriptor non-blocking; a message is sent and read whole
        os.set_blocking(helper.conn.fileno(), True)
        self._idle.append(helper)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a helper; raises HelpersGone if the helper dies with the task or
        it takes longer than ``timeout`` (the helper is then killed and replaced)."""
        future: asyncio.Future[T] = self.loop.create_future()
        self._queue.append((fn, args, future))
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            future.cancel()
            for helper in list(self._all):
                if helper.task is not None and helper.task[2] is future:
                    self._replace(helper, "stopped answering")
            raise HelpersGone("a helper process stopped answering; nothing of this batch "
                              "was committed") from None

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            task = self._queue.popleft()
            if task[2].done():  # timed out while queued
                continue
            helper = self._idle.pop()
            helper.task = task
            try:
                helper.conn.send((task[0], task[1]))
            except OSError:
                self._replace(helper, "died")

    def _answer(self, helper: _Helper) -> None:
        try:
            status, value = helper.conn.recv()
        except (EOFError, OSError):
            self._replace(helper, "died")
            return
        assert helper.task is not None
        future, helper.task = helper.task[2], None
        if not future.done():
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(value if isinstance(value, BaseException)
                                     else RuntimeError(repr(value)))
        self._idle.append(helper)
        self._dispatch()

    def _replace(self, helper: _Helper, why: str) -> None:
        """A helper that died or stopped answering: its task fails, a new one takes its place."""
        log.warning("a helper process %s (exit %s): starting a new one", why,
                    helper.proc.poll())
        self._drop(helper)
        if helper.task is not None and not helper.task[2].done():
            helper.task[2].set_exception(HelpersGone(
                "a helper process died with this batch; nothing of it was committed"))
        self.restarts += 1
        self._ready(self._spawn())  # the loop waits for the spawn (~0.5 s): only after a death
        self._dispatch()

    def _drop(self, helper: _Helper) -> None:
        self.loop.remove_reader(helper.conn.fileno())
        helper.conn.close()
        helper.proc.kill()
        helper.proc.wait(5)
        self._all.remove(helper)
        with contextlib.suppress(ValueError):
            self._idle.remove(helper)

    def close(self) -> None:
        """Stop the helpers (they keep no state: killed); tasks not answered yet fail."""
        for helper in list(self._all):
            self._drop(helper)
            if helper.task is not None and not helper.task[2].done():
                helper.task[2].set_exception(HelpersGone("the service is stopping"))
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()


if __name__ == "__main__":  # a helper: python -m vantio_appliance._internal.helpers FD PARENT
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
