"""Group commit: concurrent callers share fdatasyncs, and each is acked only once durable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from vantio_appliance import reader, writer
from vantio_appliance.commit import Busy, GroupCommitter
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[writer.Ledger]:
    writer.init(tmp_path / "l", "vantio.appliance/test/commit", use_flags=False)
    with writer.Ledger(tmp_path / "l", use_flags=False) as ledger:
        yield ledger


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def submit(committer: GroupCommitter, subs: list[writer.Submission]
           ) -> asyncio.Future[list[writer.Ack]]:
    fut: asyncio.Future[list[writer.Ack]] = committer.loop.create_future()
    committer.enqueue(subs, fut)
    return fut


def event(i: int = 0, j: int = 0) -> writer.Submission:
    return writer.submission("default", {"action": "permit", "proc": {"pid": i, "tgid": j}})


def test_concurrent_callers_are_grouped_and_all_durable(
        ledger: writer.Ledger, loop: asyncio.AbstractEventLoop) -> None:
    committer = GroupCommitter(ledger, loop, max_batch=64)

    async def caller(i: int) -> list[writer.Ack]:
        acks = []
        for j in range(50):
            [ack] = await submit(committer, [event(i, j)])
            acks.append(ack)
        return acks

    async def main() -> list[list[writer.Ack]]:
        return await asyncio.gather(*(caller(i) for i in range(16)))

    acks = [a for some in loop.run_until_complete(main()) for a in some]
    committer.close()
    assert len(acks) == 800
    assert sorted(a.seq for a in acks) == list(range(2, 802))  # genesis, epoch 0, then these
    assert committer.commits < 800, "no two callers ever shared a commit"
    layout = Layout(ledger.layout.root)
    for ack in acks[::97]:
        assert reader.find(layout, seq=ack.seq).data.count(ack.trace_id.encode()) == 1
    ledger.close()
    assert verify_dir(layout.root, jobs=1).ok


def test_full_queue_refuses_instead_of_growing(ledger: writer.Ledger,
                                               loop: asyncio.AbstractEventLoop) -> None:
    committer = GroupCommitter(ledger, loop, max_pending=3)
    submit(committer, [event(), event()])
    with pytest.raises(Busy):
        submit(committer, [event(), event()])
    committer.close()
    assert ledger.size == 4  # the first two were committed at close


def test_a_failed_commit_fails_every_caller_of_its_group(
        ledger: writer.Ledger, loop: asyncio.AbstractEventLoop) -> None:
    committer = GroupCommitter(ledger, loop)
    fut = submit(committer, [writer.submission("no-such-tenant", {"action": "block"})])
    with pytest.raises(Exception, match="no-such-tenant"):
        loop.run_until_complete(fut)
    ok = submit(committer, [event()])  # the committer goes on
    assert [a.seq for a in loop.run_until_complete(ok)] == [2]
    committer.close()
    assert ledger.size == 3  # genesis, epoch 0 and the good record


def test_a_request_is_committed_whole_in_one_group(ledger: writer.Ledger,
                                                   loop: asyncio.AbstractEventLoop) -> None:
    committer = GroupCommitter(ledger, loop, max_batch=8)
    subs = [event(i) for i in range(20)]
    futs = [submit(committer, subs[:3]), submit(committer, subs), submit(committer, subs[:5])]
    results = loop.run_until_complete(asyncio.gather(*futs))
    committer.close()
    assert [len(r) for r in results] == [3, 20, 5]
    assert committer.commits == 3  # 3 + 20 > 8: each request a group of its own
    for acks in results:  # consecutive seqs: no other caller's record in between
        assert [a.seq for a in acks] == list(range(acks[0].seq, acks[0].seq + len(acks)))


def test_close_commits_what_is_queued_and_what_is_being_written(
        ledger: writer.Ledger, loop: asyncio.AbstractEventLoop) -> None:
    """The server's stop: the loop no longer runs, a group may be in the writing thread."""
    committer = GroupCommitter(ledger, loop, max_batch=4)
    futs = [submit(committer, [event(i)]) for i in range(10)]
    loop.run_until_complete(asyncio.sleep(0))  # the first group goes to the writing thread
    committer.close()
    assert all(f.done() and not f.exception() for f in futs)
    assert sorted(a.seq for f in futs for a in f.result()) == list(range(2, 12))
    assert ledger.size == 12
    with pytest.raises(Busy, match="shutting down"):
        submit(committer, [event()])


def test_seals_between_groups_keep_the_ledger_verifiable(
        tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """Small segments: groups trigger seals (run by the writing thread, each beginning an
    epoch) between them; every record is acknowledged once and the ledger verifies."""
    writer.init(tmp_path / "s", "vantio.appliance/test/commit", use_flags=False)
    with writer.Ledger(tmp_path / "s", use_flags=False, segment_bytes=4000) as ledger:
        committer = GroupCommitter(ledger, loop, max_batch=8)

        async def main() -> list[list[writer.Ack]]:
            return await asyncio.gather(*(submit(committer, [event(i)]) for i in range(120)))

        acks = loop.run_until_complete(main())
        committer.close()
        segments = ledger.layout.segment_names()
    assert len(acks) == 120
    assert len(segments) > 3, segments
    report = verify_dir(tmp_path / "s", jobs=1)
    assert report.ok, report
