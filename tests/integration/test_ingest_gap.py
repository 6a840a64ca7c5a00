"""`gap` records through the real ingest service: accepted alone and in batches, stored as
kind ``gap`` with a receipt, verified by `vantio ledger verify`, refused field by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import cli
from service_helpers import (
    assert_in_ledger,
    auth,
    canonical,
    check_batch,
    check_single,
    fresh_service,
    good_record,
    ledger_lines,
    marker,
    request,
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    with fresh_service(tmp_path_factory.mktemp("gap")) as (root, sock, _server, key, _reader):
        yield root, sock, key


def gap(**extra: Any) -> dict[str, Any]:
    return {"kind": "gap", "stage": "sendmsg4", "lost": 17, "action": "block",
            "window": {"start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_001_000_000_000},
            **extra}


def post(sock: Path, key: str, path: str, body: Any) -> Any:
    return request(sock, "POST", path, json.dumps(body).encode(), auth(key))


def test_a_gap_is_stored_as_a_gap_with_its_receipt(svc: tuple[Path, Path, str]) -> None:
    root, sock, key = svc
    sent = gap(agent="web", cgroup="/vantio-agents.slice/web")
    ack = check_single(post(sock, key, "/v1/records", sent), key)
    line = ledger_lines(root)[ack.seq]
    rec = json.loads(line)
    assert canonical(rec) == line
    assert rec == {**sent, "v": 1, "seq": ack.seq, "trace_id": ack.trace_id, "tenant": "acme",
                   "time": rec["time"], "receipt": ack.receipt}


def test_a_batch_mixes_events_and_gaps_in_order(svc: tuple[Path, Path, str]) -> None:
    root, sock, key = svc
    sent = [good_record(marker()), gap(), good_record(marker(), 1)]
    acks = check_batch(post(sock, key, "/v1/records:batch", {"records": sent}), key, 3)
    lines = assert_in_ledger(root, acks)
    assert [json.loads(lines[a.seq])["kind"] for a in acks] == ["event", "gap", "event"]
    res = cli("ledger", "verify", "--dir", root)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/records", gap(lost=0), "lost"),
    ("/v1/records", gap(prompt="hi"), "prompt"),
    ("/v1/records", gap(proc={"pid": 1}), "proc"),
    ("/v1/records", {k: v for k, v in gap().items() if k != "window"}, "window"),
    ("/v1/records", gap(window={"start_ns": -1, "end_ns": 0}), "window.start_ns"),
    ("/v1/records", gap(kind="event"), "kind"),
    ("/v1/records", {"action": "permit", "prompt": "x"}, "prompt"),  # an event stays an event
    ("/v1/records:batch", {"records": [good_record("a"), gap(stage="Bad!")]},
     "records[1].stage"),
    ("/v1/records:batch", {"records": [{**good_record("a"), "body": 1}, gap()]},
     "records[0].body"),
    ("/v1/records:batch", {"records": [{**good_record("a"), "body": 1}]}, "records[0].body"),
])
def test_refusals_name_the_field(svc: tuple[Path, Path, str], path: str, body: Any,
                                 field: str) -> None:
    root, sock, key = svc
    before = len(ledger_lines(root))
    reply = post(sock, key, path, body)
    assert reply.status == 422, reply.body
    assert reply.json()["field"] == field, reply.body
    assert len(ledger_lines(root)) == before
