"""Group commit: many callers, one writer thread, one fdatasync per group.

Callers get a Future that resolves only once their records are durable. Under
load the queue grows while a commit runs and the next commit takes all of it
(up to ``max_batch`` records), so throughput rises with concurrency while each
caller still waits for one fdatasync. A caller's records are never split
across groups: a batch request is committed whole or not at all. The queue is
bounded: when it is full, ``submit`` refuses at once (the ingest API answers
429) instead of growing.

An event loop caller passes its own asyncio futures and a ``settle`` hook: the
committer then hands each group's outcomes to the loop in one call, instead of
waking the loop once per caller (one cross-thread wake-up per group commit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Final, TypeAlias

from .writer import PUBLISH_INTERVAL_S, Ack, Ledger, Submission

IDLE_TICK_S: Final = 1.0  # how often an idle committer checks rotation by age

Waiter: TypeAlias = "Future[list[Ack]] | asyncio.Future[list[Ack]]"
Outcome: TypeAlias = "list[Ack] | BaseException"
Entry = tuple[Sequence[Submission], Waiter]
#: receives a group's waiters with their outcomes, in the committer thread
Settle = Callable[[list[tuple[Waiter, Outcome]]], None]


class Busy(RuntimeError):
    """The commit queue is full, or the committer is shutting down; try again later."""


class GroupCommitter:
    def __init__(self, ledger: Ledger, *, max_batch: int = 1024, max_pending: int = 65536,
                 on_commit: Callable[[list[Ack]], None] | None = None,
                 settle: Settle | None = None) -> None:
        self.ledger = ledger
        self.settle: Settle = settle or settle_here
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_commit = on_commit
        self._pending: list[Entry] = []
        self._depth = 0  # records waiting
        self._cv = threading.Condition()
        self._closing = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="vantio-commit", daemon=True)
        self._thread.start()

    def submit(self, subs: Sequence[Submission]) -> Future[list[Ack]]:
        """Queue ``subs`` to be committed together; the Future gives their Acks in order."""
        fut: Future[list[Ack]] = Future()
        self.enqueue(subs, fut)
        return fut

    def enqueue(self, subs: Sequence[Submission], fut: Waiter) -> None:
        """As ``submit``, with the caller's own future (``settle`` must be able to resolve it)."""
        with self._cv:
            if self._closing:
                raise Busy("the ledger is shutting down")
            if self._depth + len(subs) > self.max_pending:
                raise Busy(f"{self._depth} records are waiting to be committed")
            self._pending.append((subs, fut))
            self._depth += len(subs)
            self._cv.notify()

    @property
    def depth(self) -> int:
        """Records queued and not yet committed."""
        return self._depth

    def _take(self) -> list[Entry] | None:
        with self._cv:
            while not self._pending and not self._closing:
                wait = PUBLISH_INTERVAL_S if self.ledger.unpublished else IDLE_TICK_S
                if not self._cv.wait(wait):
                    return []
            if not self._pending:
                return None
            n, count = 0, 0
            while n < len(self._pending) and (n == 0 or count + len(self._pending[n][0])
                                              <= self.max_batch):
                count += len(self._pending[n][0])
                n += 1
            group, self._pending = self._pending[:n], self._pending[n:]
            self._depth -= count
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            if not group:  # idle: cover the last commits, seal if the segment is old
                self.ledger.flush()
                self.ledger.rotate_if_due()
                continue
            try:
                acks = self.ledger.write([sub for subs, _ in group for sub in subs])
            except Exception as exc:  # every caller of the group learns why, none is acked
                self.settle([(fut, exc) for _, fut in group])
                continue
            self.commits += 1
            if self.on_commit is not None:
                self.on_commit(acks)
            outcomes: list[tuple[Waiter, Outcome]] = []
            start = 0
            for subs, fut in group:
                outcomes.append((fut, acks[start:start + len(subs)]))
                start += len(subs)
            self.settle(outcomes)
            self.ledger.upkeep()  # after the answers: they wait for nothing but the fdatasync

    def close(self) -> None:
        """Commit everything already submitted, then stop."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()


def settle_here(outcomes: list[tuple[Waiter, Outcome]]) -> None:
    """Resolve the waiters in the calling thread (right for concurrent Futures)."""
    for fut, outcome in outcomes:
        if fut.cancelled():
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)
