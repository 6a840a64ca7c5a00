"""Group commit: concurrent callers share fdatasyncs, and each is acked only once durable."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from vantio_appliance import reader, writer
from vantio_appliance.commit import Busy, GroupCommitter
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir


@pytest.fixture
def ledger(tmp_path: Path) -> writer.Ledger:
    writer.init(tmp_path / "l", "vantio.appliance/test/commit", use_flags=False)
    return writer.Ledger(tmp_path / "l", use_flags=False)


def test_concurrent_callers_are_grouped_and_all_durable(ledger: writer.Ledger) -> None:
    committer = GroupCommitter(ledger, max_batch=64)
    acks: list[writer.Ack] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        for j in range(50):
            fut = committer.submit([writer.submission("default", {
                "action": "permit", "proc": {"pid": i, "tgid": j}})])
            [ack] = fut.result(timeout=30)
            with lock:
                acks.append(ack)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    ledger.close()

    assert len(acks) == 800
    assert sorted(a.seq for a in acks) == list(range(2, 802))  # genesis, epoch 0, then these
    assert committer.commits < 800, "no two callers ever shared a commit"
    layout = Layout(ledger.layout.root)
    for ack in acks[::97]:
        assert reader.find(layout, seq=ack.seq).data.count(ack.trace_id.encode()) == 1
    assert verify_dir(layout.root, jobs=1).ok


def test_full_queue_refuses_instead_of_growing(ledger: writer.Ledger) -> None:
    committer = GroupCommitter(ledger, max_pending=0)
    with pytest.raises(Busy):
        committer.submit([writer.submission("default", {"action": "block"})])
    committer.close()
    ledger.close()


def test_a_failed_commit_fails_every_caller_of_its_group(ledger: writer.Ledger) -> None:
    committer = GroupCommitter(ledger)
    unknown = writer.submission("no-such-tenant", {"action": "block"})
    fut: Future[list[writer.Ack]] = committer.submit([unknown])
    with pytest.raises(Exception, match="no-such-tenant"):
        fut.result(timeout=10)
    committer.close()
    size = ledger.size
    ledger.close()
    assert size == 2  # nothing but the genesis and epoch-0 records was written


def test_a_request_is_committed_whole_in_one_group(ledger: writer.Ledger) -> None:
    committer = GroupCommitter(ledger, max_batch=8)
    subs = [writer.submission("default", {"action": "permit"}) for _ in range(20)]
    futs = [committer.submit(subs[:3]), committer.submit(subs), committer.submit(subs[:5])]
    results = [f.result(timeout=10) for f in futs]
    committer.close()
    ledger.close()
    assert [len(r) for r in results] == [3, 20, 5]
    for acks in results:  # consecutive seqs: no other caller's record in between
        assert [a.seq for a in acks] == list(range(acks[0].seq, acks[0].seq + len(acks)))
