"""Large batches go through a helper process (``_internal.helpers``); the same contract holds.

A batch body of HELPER_MIN_BODY bytes or more is validated and prepared in a
helper, not on the event loop: its refusals, receipts and durability must be
those of the loop's path, a helper that dies must cost at most the batch it
held (never a 201 for a record that is not on disk), and helpers must not
outlive the service. Real server, real socket, real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import (
    Reply,
    Server,
    assert_in_ledger,
    auth,
    check_batch,
    fresh_service,
    good_record,
    marker,
    request,
    segments_bytes,
)

from vantio_appliance.ingest import HELPER_MIN_BODY

N: int = 1000


def _body(records: list[dict[str, Any]]) -> bytes:
    body = json.dumps({"records": records}).encode()
    assert len(body) >= HELPER_MIN_BODY  # else this would test the loop's path
    return body


def _batch(tag: str) -> list[dict[str, Any]]:
    return [good_record(tag, i) for i in range(N)]


def _metric(sock: Path, name: str) -> float:
    text = request(sock, "GET", "/metrics").body.decode()
    return float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith(name + " ")))


def _helpers(server: Server) -> list[int]:
    """The service's helper processes (``python -m vantio_appliance._internal.helpers``)."""
    found = []
    for pid in server.members():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"vantio_appliance._internal.helpers" in cmdline:
            found.append(pid)
    return found


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Path, Path, Server, str, str]]:
    with fresh_service(tmp_path) as svc:
        yield svc


def test_a_large_batch_is_prepared_by_a_helper_and_durable(
        service: tuple[Path, Path, Server, str, str]) -> None:
    root, sock, server, key, _ = service
    assert _helpers(server), "the service started no helper process"
    before = _metric(sock, "vantio_helper_batches_total")
    acks = check_batch(request(sock, "POST", "/v1/records:batch", _body(_batch(marker())),
                               auth(key)), key, N)
    assert _metric(sock, "vantio_helper_batches_total") == before + 1
    assert_in_ledger(root, acks)


@pytest.mark.parametrize(("index", "change", "status", "field"), [
    (700, {"prompt": "SECRET"}, 422, "records[700].prompt"),
    (999, {"proc": {"comm": "agent", "messages": ["SECRET"]}}, 422, "records[999].proc.messages"),
    (3, {"tenant": "someone-else"}, 403, "records[3].tenant"),
    (0, {"action": "explode"}, 422, "records[0].action"),
])
def test_refusals_in_a_large_batch_name_the_field_and_write_nothing(
        service: tuple[Path, Path, Server, str, str], index: int, change: dict[str, Any],
        status: int, field: str) -> None:
    root, sock, _, key, _ = service
    tag = marker()
    records = _batch(tag)
    records[index] = {**records[index], **change}
    before = segments_bytes(root)
    reply = request(sock, "POST", "/v1/records:batch", _body(records), auth(key))
    assert (reply.status, reply.json().get("field")) == (status, field), str(reply)
    assert segments_bytes(root) == before
    assert tag.encode() not in segments_bytes(root)


def test_a_duplicate_key_in_a_large_batch_is_refused(
        service: tuple[Path, Path, Server, str, str]) -> None:
    root, sock, _, key, _ = service
    tag = marker()
    body = _body(_batch(tag)).replace(b'"action": "permit"', b'"action": "permit", '
                                      b'"action": "block"', 1)
    reply = request(sock, "POST", "/v1/records:batch", body, auth(key))
    assert (reply.status, reply.json()["error"]) == (422, "duplicate key"), str(reply)
    assert tag.encode() not in segments_bytes(root)


def test_a_helper_killed_costs_at_most_its_batch(
        service: tuple[Path, Path, Server, str, str]) -> None:
    """kill -9 of a helper, idle and then while batches are in flight: every 201 is on disk,
    every other answer is a 503 whose records are not, new helpers take over, and
    SIGTERM still stops the service cleanly."""
    root, sock, server, key, _ = service
    [helper] = _helpers(server)[:1]
    os.kill(helper, signal.SIGKILL)
    assert _gone(helper)
    acks = check_batch(request(sock, "POST", "/v1/records:batch", _body(_batch(marker())),
                               auth(key)), key, N)  # the broken pool is replaced first

    replies: list[tuple[str, Reply]] = []

    def send() -> None:
        tag = marker()
        replies.append((tag, request(sock, "POST", "/v1/records:batch", _body(_batch(tag)),
                                     auth(key), timeout=60)))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    for pid in _helpers(server):
        os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(90)
    assert len(replies) == len(threads)
    assert {r.status for _, r in replies} <= {201, 503}, [str(r) for _, r in replies]
    stored = segments_bytes(root)
    for tag, reply in replies:
        if reply.status == 201:
            acks += check_batch(reply, key, N)
        else:
            assert reply.json()["error"].startswith("a helper process died"), str(reply)
            assert reply.header("retry-after") == "1"
            assert tag.encode() not in stored
    assert_in_ledger(root, acks)
    assert _metric(sock, "vantio_helper_restarts_total") >= 1
    check_batch(request(sock, "POST", "/v1/records:batch", _body(_batch(marker())),
                        auth(key)), key, N)
    assert server.terminate() == 0, server.logs()  # and it still stops cleanly, at once
    assert server.stopped_in is not None and server.stopped_in < 10


def test_helpers_do_not_outlive_the_service(service: tuple[Path, Path, Server, str, str]
                                            ) -> None:
    """kill -9 of the service: its helpers die with it (PR_SET_PDEATHSIG), none is left
    holding CPU or memory with no one to answer."""
    _, _, server, _, _ = service
    helpers = _helpers(server)
    assert helpers
    parent = int(Path(f"/proc/{helpers[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == server.pid
    os.kill(server.pid, signal.SIGKILL)
    assert all(_gone(pid) for pid in helpers), _helpers(server)


def test_batch_helpers_0_prepares_every_batch_on_the_loop(tmp_path: Path) -> None:
    with fresh_service(tmp_path, args=("--batch-helpers", "0")) as (root, sock, server, key, _):
        assert _helpers(server) == []
        acks = check_batch(request(sock, "POST", "/v1/records:batch",
                                   _body(_batch(marker())), auth(key)), key, N)
        assert _metric(sock, "vantio_helper_batches_total") == 0
        assert_in_ledger(root, acks)


@pytest.mark.parametrize("value", ["-1", "65", "two"])
def test_a_bad_batch_helpers_value_is_refused(tmp_path: Path, value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "vantio_appliance.cli", "serve", "--dir",
                           str(tmp_path), "--socket", str(tmp_path / "s.sock"),
                           "--batch-helpers", value], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--batch-helpers" in proc.stderr and value in proc.stderr, proc.stderr
    assert not (tmp_path / "s.sock").exists()
