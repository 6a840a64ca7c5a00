"""The ingest service under faults: kill -9 under load, a full disk, a full queue.

In each, every 201 the clients received must be in the verified ledger at its
seq (a 201 means durable), and the service must come back: after a restart
(kill -9) or by itself (disk full, queue full).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import ORIGIN, cli
from service_helpers import (
    Ack,
    Load,
    Reply,
    Server,
    add_tenant,
    assert_in_ledger,
    auth,
    check_batch,
    check_single,
    good_record,
    leaf_hash,
    ledger_lines,
    marker,
    merkle_root,
    open_checkpoint,
    request,
    running,
    segments_bytes,
)

from vantio_appliance import writer
from vantio_appliance.verify import verify_dir


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _metrics(sock: Path) -> dict[str, float]:
    reply = request(sock, "GET", "/metrics")
    assert reply.status == 200, str(reply)
    pairs = (line.rsplit(" ", 1) for line in reply.body.decode().splitlines()
             if line and not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def _verified(root: Path, *, crashed: bool = False) -> None:
    """verify_dir and `vantio ledger verify` pass. Right after a crash (``crashed``), and
    only then, a torn tail still waiting for the torn record that the writer's recovery
    appends is allowed (FORMATS.md section 2); nothing else is."""
    report = verify_dir(root, jobs=1)
    findings = [str(f) for f in report.findings]
    if crashed:
        findings = [f for f in findings if "torn tail without a torn record" not in f]
    assert not findings, findings
    if report.ok:
        res = cli("ledger", "verify", "--dir", root)
        assert res.returncode == 0, res.stdout + res.stderr


def _checkpoint_matches_disk(sock: Path, reader: str, root: Path) -> None:
    """GET /v1/checkpoint signs a tree that is a prefix of the records on disk."""
    reply = request(sock, "GET", "/v1/checkpoint", None, auth(reader, None))
    assert reply.status == 200, str(reply)
    cp = open_checkpoint(reply.body, (root / "vkey").read_text())
    lines = ledger_lines(root)
    missing = [i for i in range(cp.size) if i not in lines]
    assert not missing, f"the service signed a tree of {cp.size}; no records on disk at {missing}"
    assert cp.root == merkle_root([leaf_hash(lines[i]) for i in range(cp.size)]), (
        f"the service signed a root over {cp.size} records that the disk does not hold")


def _proof_verifies(sock: Path, reader: str, root: Path, ack: Ack, tmp: Path) -> None:
    reply = request(sock, "GET", f"/v1/records/{ack.trace_id}", None, auth(reader, None))
    assert reply.status == 200, str(reply)
    got = reply.json()
    line = ledger_lines(root)[ack.seq]
    assert got["seq"] == ack.seq, f"the hot index puts {ack.trace_id} at {got['seq']}"
    assert line in reply.body
    (tmp / "p.tlog-proof").write_text(got["proof"])
    (tmp / "record").write_bytes(line + b"\n")
    res = cli("ledger", "verify-proof", tmp / "p.tlog-proof", "--vkey", root / "vkey",
              "--record", tmp / "record")
    assert res.returncode == 0, res.stdout + res.stderr


# -- kill -9 -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [40, 1000])  # 1000: large batches go to helpers
def test_kill_9_under_load_loses_no_201_and_the_server_restarts(ledger_dir: Path,
                                                                  tmp_path: Path,
                                                                  batch_size: int) -> None:
    key, reader = add_tenant(ledger_dir, "acme"), add_tenant(ledger_dir, "auditor", "reader")
    sock = tmp_path / "ingest.sock"
    server = Server(ledger_dir, sock, tmp_path / "server.log")
    try:
        server.start()
        load = Load(sock, key, threads=6, batch_every=2, batch_size=batch_size).start()
        try:
            load.wait_for(2000, timeout=30)
            assert load.acked() >= 2000, (load.statuses, server.logs())
            if batch_size == 1000:  # the sizes grow from 1: wait until helpers have had some
                assert _wait(lambda: _metrics(sock)["vantio_helper_batches_total"] >= 3, 60)
            server.kill()  # SIGKILL to the whole process group, mid-stream
        finally:
            load.finish()
        assert server.proc is not None and server.proc.returncode == -9
        assert server.members() == []
        assert not load.bad, load.bad[:5]
        assert all(s < 500 for s in load.statuses), load.statuses

        _verified(ledger_dir, crashed=True)
        lines = assert_in_ledger(ledger_dir, load.acks)  # every 201 at its seq
        assert len({a.trace_id for a in load.acks}) == len(load.acks)

        server.start()  # same directory, same socket path (left behind by the kill)
        after = check_single(request(sock, "POST", "/v1/records",
                                     json.dumps(good_record(marker())).encode(), auth(key)),
                             key)
        assert after.seq >= len(lines)
        for ack in (load.acks[0], load.acks[-1], after):
            _proof_verifies(sock, reader, ledger_dir, ack, tmp_path)
        _checkpoint_matches_disk(sock, reader, ledger_dir)
        assert server.terminate() == 0, server.logs()
    finally:
        server.close()
    _verified(ledger_dir)
    assert_in_ledger(ledger_dir, [*load.acks, after])


# -- disk full -----------------------------------------------------------------------------


def _fill(path: Path, leave: int) -> None:
    """Take all the free space but ``leave`` bytes (an ENOSPC on the way is fine)."""
    st = os.statvfs(path.parent)
    with path.open("ab") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
        f.flush()
        os.fsync(f.fileno())


def _big(i: int) -> dict[str, Any]:
    rec = good_record(marker(), i)
    rec["proc"]["cgroup"] = f"/vantio-agents.slice/{marker()}/" + "x" * 3000
    return rec


def _disk_service(small_fs: Path) -> tuple[Path, str, str]:
    root = small_fs / "l"
    writer.init(root, ORIGIN)
    return root, add_tenant(root, "acme"), add_tenant(root, "auditor", "reader")


def test_disk_full_503_then_recovers_by_itself(small_fs: Path, tmp_path: Path) -> None:
    root, key, reader = _disk_service(small_fs)
    sock = tmp_path / "ingest.sock"
    filler = small_fs / "filler"
    acks: list[Ack] = []

    def send(i: int) -> Reply:
        if i % 4 == 3:
            records = [_big(i * 10 + j) for j in range(4)]
            reply = request(sock, "POST", "/v1/records:batch",
                            json.dumps({"records": records}).encode(), auth(key))
            if reply.status == 201:
                acks.extend(check_batch(reply, key, 4))
        else:
            reply = request(sock, "POST", "/v1/records", json.dumps(_big(i)).encode(), auth(key))
            if reply.status == 201:
                acks.append(check_single(reply, key))
        assert reply.status in (201, 503), str(reply)
        return reply

    with running(root, sock, tmp_path / "server.log") as server:
        pid = server.pid
        _fill(filler, leave=160 * 2**10)
        full: Reply | None = None
        for i in range(2000):
            if (reply := send(i)).status == 503:
                full = reply
                break
        assert full is not None, "the disk never filled"
        assert acks, "the disk filled before the first commit"
        retry = full.header("retry-after")
        assert retry is not None and retry.isdigit(), str(full)
        assert full.json()["error"]
        _fill(filler, leave=0)  # whatever space the failed write left
        outage = [send(1000 + i).status for i in range(20)]
        assert outage.count(503) >= 15, outage  # still full: refused, not acknowledged
        assert_in_ledger(root, acks)
        _checkpoint_matches_disk(sock, reader, root)

        filler.unlink()  # space returns; no restart
        assert _wait(lambda: send(5000).status == 201, timeout=15), server.logs()
        for i in range(6):
            send(6000 + i)
        assert server.pid == pid and server.proc is not None and server.proc.poll() is None
        assert_in_ledger(root, acks)
        for ack in (acks[0], acks[-1]):
            _proof_verifies(sock, reader, root, ack, tmp_path)
        _checkpoint_matches_disk(sock, reader, root)
        assert server.terminate() == 0, server.logs()
    _verified(root)
    assert_in_ledger(root, acks)


def _post_big_batch(sock: Path, key: str, n: int = 40) -> tuple[Reply, list[str]]:
    """A batch of ``n`` records of ~3.5 KB (one write of ~140 KB); returns the reply and
    the markers the records carry."""
    records = [_big(i) for i in range(n)]
    reply = request(sock, "POST", "/v1/records:batch", json.dumps({"records": records}).encode(),
                    auth(key))
    return reply, [r["proc"]["cgroup"].split("/")[2] for r in records]


def _stored_markers(root: Path, markers: list[str]) -> list[str]:
    """Which of ``markers`` are in records of the ledger (not in torn bytes)."""
    text = b"\n".join(ledger_lines(root).values())
    return [m for m in markers if m.encode() in text]


def _post_until_201(sock: Path, key: str, timeout: float = 15) -> Ack:
    deadline = time.monotonic() + timeout
    while True:
        reply = request(sock, "POST", "/v1/records", json.dumps(_big(1)).encode(), auth(key))
        if reply.status == 201:
            return check_single(reply, key)
        assert reply.status == 503, str(reply)
        assert time.monotonic() < deadline, f"still refused once space returned: {reply}"
        time.sleep(0.1)


def test_disk_full_mid_batch_commits_none_of_it_and_keeps_the_index(
        small_fs: Path, tmp_path: Path) -> None:
    """A batch that does not fit on the disk is refused (503) before any of it is written
    (the writer reserves a group's space first). It must commit none of its records
    (docs/ingest.md: "committed together or not at all"), and what the service serves
    afterwards (hot-tier reads, its signed checkpoint) must match the ledger on disk."""
    root, key, reader = _disk_service(small_fs)
    sock = tmp_path / "ingest.sock"
    reserve, filler = small_fs / "reserve", small_fs / "filler"
    problems: list[str] = []
    with running(root, sock, tmp_path / "server.log") as server:
        reserve.write_bytes(b"\0" * 256 * 2**10)
        _fill(filler, leave=100 * 2**10)
        reply, markers = _post_big_batch(sock, key)
        assert reply.status == 503, str(reply)
        assert (reply.header("retry-after") or "").isdigit(), str(reply)
        partial = [m for m in markers if m.encode() in segments_bytes(root)]
        assert not partial, f"{len(partial)} records of the refused batch reached the disk"
        reserve.unlink()  # some space returns: the next request repairs the tail
        ack = _post_until_201(sock, key)
        assert server.proc is not None and server.proc.poll() is None

        stored = _stored_markers(root, markers)
        if stored:
            problems.append(f"{len(stored)} of the {len(markers)} records of the refused "
                            "batch (503) are records in the ledger")
        got = request(sock, "GET", f"/v1/records/{ack.trace_id}", None, auth(reader, None))
        if got.status != 200 or got.json()["seq"] != ack.seq:
            problems.append(f"GET /v1/records/{ack.trace_id} (acknowledged at seq {ack.seq})"
                            f" answers {got.status}, seq {got.json().get('seq')}")
        try:
            _checkpoint_matches_disk(sock, reader, root)
        except AssertionError as exc:
            problems.append(f"GET /v1/checkpoint: {exc}".splitlines()[0])
        try:
            _proof_verifies(sock, reader, root, ack, tmp_path)
        except AssertionError as exc:
            problems.append(f"the served proof for seq {ack.seq}: {exc}".splitlines()[0])
        assert server.terminate() == 0, server.logs()
    assert_in_ledger(root, [ack])
    _verified(root)
    assert not problems, "\n".join(problems)


def test_disk_full_twice_in_a_row_leaves_no_torn_bytes_unexcused(
        small_fs: Path, tmp_path: Path) -> None:
    """The disk fills twice in a row, the second time to the last byte: refused requests
    leave no bytes behind (no torn bytes at all), and once space returns the next
    acknowledged record is on disk whole, on its own line, and the ledger verifies."""
    root, key, _ = _disk_service(small_fs)
    sock = tmp_path / "ingest.sock"
    filler = small_fs / "filler"
    with running(root, sock, tmp_path / "server.log") as server:
        _fill(filler, leave=100 * 2**10)
        reply, markers = _post_big_batch(sock, key)
        assert reply.status == 503, str(reply)
        assert not [m for m in markers if m.encode() in segments_bytes(root)]
        _fill(filler, leave=0)  # the last bytes too (blocks the ledger reserved may remain)
        acks = []
        for _ in range(3):
            before = segments_bytes(root)
            reply = request(sock, "POST", "/v1/records", json.dumps(_big(2)).encode(),
                            auth(key))
            assert reply.status in (201, 503), str(reply)
            if reply.status == 503:
                assert segments_bytes(root) == before, "a refused request left bytes behind"
            else:
                acks.append(check_single(reply, key))
        filler.unlink()
        acks.append(_post_until_201(sock, key))
        assert server.terminate() == 0, server.logs()
    assert_in_ledger(root, acks)
    _verified(root)


# -- queue full ----------------------------------------------------------------------------


def test_full_queue_answers_429_and_never_5xx(ledger_dir: Path, tmp_path: Path) -> None:
    key = add_tenant(ledger_dir, "acme")
    sock = tmp_path / "ingest.sock"
    depths: list[float] = []
    with running(ledger_dir, sock, tmp_path / "server.log",
                 env={"VANTIO_MAX_PENDING": "1"}) as server:
        load = Load(sock, key, threads=32, batch_every=0).start()
        try:
            def busy() -> bool:
                depths.append(_metrics(sock)["vantio_queue_depth"])
                return load.statuses[429] >= 50 and load.acked() >= 200
            _wait(busy, timeout=15)
        finally:
            load.finish()
        metrics = _metrics(sock)
        assert server.terminate() == 0, server.logs()
    assert depths and max(depths) <= 1, f"the queue grew past VANTIO_MAX_PENDING: {max(depths)}"
    assert metrics['vantio_refusals_total{status="429"}'] == load.statuses[429]
    assert metrics["vantio_records_total"] == load.acked()
    assert load.statuses[429] > 0, f"no 429 with VANTIO_MAX_PENDING=1: {load.statuses}"
    assert load.acked() > 0, load.statuses
    assert set(load.statuses) <= {201, 429}, load.statuses
    assert not load.bad, load.bad[:5]
    assert load.retry_after and all(v is not None and v.isdigit() for v in load.retry_after), (
        load.retry_after)
    _verified(ledger_dir)
    assert_in_ledger(ledger_dir, load.acks)

