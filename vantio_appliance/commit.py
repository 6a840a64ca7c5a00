"""Group commit on an event loop: many callers, one fdatasync per group.

Callers get a future that resolves only once their records are durable. While
one group is being written, the requests that arrive queue up, and the next
group takes all of them (up to ``max_batch`` records): throughput rises with
concurrency while each caller still waits for one fdatasync. A caller's
records are never split across groups: a batch request is committed whole or
not at all. The queue is bounded: when it is full, ``enqueue`` refuses at once
(the ingest API answers 429) instead of growing.

Why the loop: the work of a group that needs the interpreter (encoding,
hashing, receipts, the tree, the answers) runs on the event loop's thread, and
only the write and its fdatasync run in a thread of their own, which waits on
the disk without the GIL. A committer thread doing the Python work as well
would contend with the loop for the GIL on every group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

from .writer import PUBLISH_INTERVAL_S, Ack, Ledger, Prepared, Staged, Submission

IDLE_TICK_S: Final = 1.0  # how often an idle committer checks rotation by age

log = logging.getLogger(__name__)

Entry = tuple[Sequence[Submission | Prepared], "asyncio.Future[list[Ack]]"]


class Busy(RuntimeError):
    """The commit queue is full, or the committer is shutting down; try again later."""


class GroupCommitter:
    """Commits for callers on ``loop``; every method but ``close`` runs on the loop."""

    def __init__(self, ledger: Ledger, loop: asyncio.AbstractEventLoop, *,
                 max_batch: int = 1024, max_pending: int = 65536,
                 on_commit: Callable[[list[Ack]], None] | None = None) -> None:
        self.ledger, self.loop = ledger, loop
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_commit = on_commit
        self.commits = 0
        self._pending: list[Entry] = []
        self._depth = 0  # records waiting
        #: what the writing thread is doing: a group, or (no group) a seal or rotation
        self._storing: tuple[list[Entry], Staged | None, Future[None]] | None = None
        self._scheduled = False  # a call of _next is due on the loop
        self._closing = False
        self._io = ThreadPoolExecutor(1, thread_name_prefix="vantio-commit")
        self._tick = loop.call_soon(self._idle)

    def enqueue(self, subs: Sequence[Submission | Prepared],
                fut: asyncio.Future[list[Ack]]) -> None:
        """Queue ``subs`` to be committed together; ``fut`` gets their Acks in order."""
        if self._closing:
            raise Busy("the ledger is shutting down")
        if self._depth + len(subs) > self.max_pending:
            raise Busy(f"{self._depth} records are waiting to be committed")
        self._pending.append((subs, fut))
        self._depth += len(subs)
        if self._storing is None and not self._scheduled:
            # soon, not now: the requests of this loop iteration join the same group
            self._scheduled = True
            self.loop.call_soon(self._next)

    @property
    def depth(self) -> int:
        """Records queued and not yet committed."""
        return self._depth

    def _take(self) -> list[Entry]:
        n, count = 0, 0
        while n < len(self._pending) and (n == 0 or count + len(self._pending[n][0])
                                          <= self.max_batch):
            count += len(self._pending[n][0])
            n += 1
        group, self._pending = self._pending[:n], self._pending[n:]
        self._depth -= count
        return group

    def _next(self) -> None:
        """Stage the next group and hand it to the writing thread."""
        self._scheduled = False
        while self._storing is None and (group := self._take()):
            try:
                staged = self.ledger.stage([sub for subs, _ in group for sub in subs])
            except Exception as exc:  # every caller of the group learns why, none is acked
                _fail(group, exc)
                continue
            done = self._io.submit(self.ledger.store, staged)
            self._storing = (group, staged, done)
            done.add_done_callback(self._wake)

    def _wake(self, done: Future[None]) -> None:
        """In the writing thread: one wake-up of the loop per group."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stored, done)

    def _stored(self, done: Future[None]) -> None:
        if self._storing is None or self._storing[2] is not done:
            return  # close() finished this group already
        rotated = self._storing[1] is None
        self._settle()
        if self._closing:
            return
        if not rotated and self.ledger.rotation_due():
            self._rotate()
            return
        self.ledger.publish_if_due()  # after the answers: they wait only for the fdatasync
        self._next()

    def _rotate(self) -> None:
        """A seal or epoch rotation, in the writing thread: it waits on the disk too."""
        done = self._io.submit(self.ledger.rotate_if_due)
        self._storing = ([], None, done)
        done.add_done_callback(self._wake)

    def _settle(self) -> None:
        """Finish the stored group and answer its callers."""
        assert self._storing is not None
        group, staged, done = self._storing
        self._storing = None
        exc = done.exception()
        if exc is not None:
            _fail(group, exc)
            return
        if staged is None:  # a rotation (its failures are logged by the ledger)
            return
        acks = self.ledger.finish(staged)
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(acks)
        _answer(group, acks)

    def _idle(self) -> None:
        """While the writing thread is idle: cover the last commits, seal an old segment."""
        if self._storing is None and not self._pending:
            self.ledger.publish_if_due()  # the file's own thread renames: the loop goes on
            if self.ledger.rotation_due():
                self._rotate()
        wait = PUBLISH_INTERVAL_S if self.ledger.unpublished else IDLE_TICK_S
        self._tick = self.loop.call_later(wait, self._idle)

    def close(self) -> None:
        """Commit everything already accepted, then stop. Called once the loop no longer
        runs (the server has stopped), in the loop's thread."""
        self._closing = True
        self._tick.cancel()
        if self._storing is not None:
            self._storing[2].exception()  # wait for the write under way
            self._settle()
        self._io.shutdown()
        while group := self._take():
            try:
                _answer(group, self.ledger.write([sub for subs, _ in group for sub in subs]))
            except Exception as exc:
                log.error("%d records not committed at shutdown: %s",
                          sum(len(subs) for subs, _ in group), exc)
                _fail(group, exc)


def _answer(group: list[Entry], acks: list[Ack]) -> None:
    start = 0
    for subs, fut in group:
        if not fut.done() and not fut.get_loop().is_closed():  # done: cancelled (gone)
            fut.set_result(acks[start:start + len(subs)])
        start += len(subs)


def _fail(group: list[Entry], exc: BaseException) -> None:
    for _, fut in group:
        if not fut.done() and not fut.get_loop().is_closed():
            fut.set_exception(exc)
