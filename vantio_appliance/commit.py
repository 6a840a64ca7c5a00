"""Group commit: many callers, one writer thread, one fdatasync per group.

Callers get a Future that resolves only once their record is durable. Under
load the queue grows while a commit runs and the next commit takes all of it
(up to ``max_batch``), so throughput rises with concurrency while each caller
still waits for exactly one fdatasync. The queue is bounded: when it is full,
``submit`` refuses at once (the ingest API answers 429) instead of growing.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Final

from .writer import PUBLISH_INTERVAL_S, Ack, Ledger, Submission

IDLE_TICK_S: Final = 1.0  # how often an idle committer checks rotation by age


class Busy(RuntimeError):
    """The commit queue is full; try again later."""


class GroupCommitter:
    def __init__(self, ledger: Ledger, *, max_batch: int = 1024,
                 max_pending: int = 65536) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[tuple[Submission, Future[Ack]]] = []
        self._cv = threading.Condition()
        self._closing = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="vantio-commit", daemon=True)
        self._thread.start()

    def submit(self, sub: Submission) -> Future[Ack]:
        fut: Future[Ack] = Future()
        with self._cv:
            if self._closing:
                raise Busy("the ledger is shutting down")
            if len(self._pending) >= self.max_pending:
                raise Busy(f"{len(self._pending)} records are waiting to be committed")
            self._pending.append((sub, fut))
            self._cv.notify()
        return fut

    @property
    def depth(self) -> int:
        return len(self._pending)

    def _take(self) -> list[tuple[Submission, Future[Ack]]] | None:
        with self._cv:
            while not self._pending and not self._closing:
                wait = PUBLISH_INTERVAL_S if self.ledger.unpublished else IDLE_TICK_S
                if not self._cv.wait(wait):
                    return []
            if not self._pending:
                return None
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:  # idle: cover the last commits, seal if the segment is old
                self.ledger.flush()
                self.ledger.rotate_if_due()
                continue
            try:
                acks = self.ledger.append([sub for sub, _ in batch])
            except Exception as exc:  # every caller of the group learns why, none is acked
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.commits += 1
            for (_, fut), ack in zip(batch, acks, strict=True):
                fut.set_result(ack)

    def close(self) -> None:
        """Commit everything already submitted, then stop."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()
