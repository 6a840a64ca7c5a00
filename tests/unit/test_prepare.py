"""Prepared lines: a helper (or the writer itself) encodes, the writer puts in seq and time;
the result must be exactly the record's canonical line, whatever the submitted strings hold."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC

from vantio_appliance import canonical, demo, keys, writer
from vantio_appliance.layout import Layout
from vantio_appliance.records import EventFields, GapFields, Record

TRACE = "1b4e28ba-2fa1-4d2b-883f-0016d3cca427"
#: strings that spell the markers prepare() puts in and writer.stage() looks for
SEQ_LOOKALIKE = ',"seq":0,'
TIME_LOOKALIKE = ',"time":{"earliest_ns":0,"latest_ns":0,"mono_ns":0,"real_ns":0},'


def submissions() -> list[dict[str, Any]]:
    rng = random.Random(3)
    out: list[dict[str, Any]] = [demo.event(rng) for _ in range(20)]
    out.append({"action": "block", "trace_id": TRACE,
                "proc": {"comm": SEQ_LOOKALIKE, "cgroup": TIME_LOOKALIKE * 3}})
    out.append({"action": "permit", "target_host": "h:1", "proc": {"comm": '"\\\n\u00e9'}})
    out.append({"kind": "gap", "stage": "ring", "lost": 7, "action": "block",
                "window": {"start_ns": 1, "end_ns": 2}, "agent": SEQ_LOOKALIKE,
                "cgroup": TIME_LOOKALIKE})
    out.append({"kind": "gap", "stage": "pump", "lost": 1, "action": "permit",
                "window": {"start_ns": 0, "end_ns": 0},
                "trace_id": "2b4e28ba-2fa1-4d2b-883f-0016d3cca427"})
    return out


def submission(fields: dict[str, Any]) -> writer.Submission:
    if "kind" in fields:
        return writer.Submission("acme", msgspec.convert(fields, GapFields))
    return writer.Submission("acme", msgspec.convert(fields, EventFields))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[writer.Ledger, str]]:
    writer.init(tmp_path / "l", "vantio.appliance/test/prepare", use_flags=False)
    api_key = keys.TenantStore(Layout(tmp_path / "l").tenants).add("acme").api_key
    with writer.Ledger(tmp_path / "l", use_flags=False) as led:
        yield led, api_key


def test_staged_lines_are_the_canonical_records(ledger: tuple[writer.Ledger, str]) -> None:
    led, api_key = ledger
    subs = [submission(s) for s in submissions()]
    staged = led.stage(subs)  # Submissions are prepared inside
    lines = staged.data.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == len(subs) == len(staged.acks) == len(staged.leaves)
    for sub, line, ack, leaf in zip(subs, lines, staged.acks, staged.leaves, strict=True):
        expected = sub.fields.record(seq=ack.seq, trace_id=ack.trace_id, tenant="acme",
                                     time=ack.time, receipt=ack.receipt)
        assert line == canonical.encode(expected)
        assert msgspec.json.decode(line, type=Record) == expected
        assert ack.receipt == hmac.new(api_key.encode(), ack.trace_id.encode(),
                                       hashlib.sha256).hexdigest()
        assert leaf == hashlib.sha256(b"\x00" + line).digest()
    assert [a.seq for a in staged.acks] == list(range(led.size, led.size + len(subs)))
    assert staged.acks[20].trace_id == TRACE  # a trace id given is kept
    assert len({a.trace_id for a in staged.acks}) == len(subs)  # the others are new


def test_prepared_by_another_process_stage_alike(ledger: tuple[writer.Ledger, str]) -> None:
    """What a helper process returns: prepared with the tenant's key, through msgpack."""
    led, api_key = ledger
    subs = [submission(s) for s in submissions()]
    mac = HMAC(api_key.encode(), SHA256())
    wire_bytes = msgspec.msgpack.encode(writer.prepare(subs, lambda _: mac))
    prepared = msgspec.msgpack.decode(wire_bytes, type=list[writer.Prepared])
    staged = led.stage(prepared)
    for sub, line, ack in zip(subs, staged.data.split(b"\n"), staged.acks, strict=False):
        assert line == canonical.encode(sub.fields.record(
            seq=ack.seq, trace_id=ack.trace_id, tenant="acme", time=ack.time,
            receipt=ack.receipt))


def test_a_group_of_submissions_and_prepared_records_stages_in_order(
        ledger: tuple[writer.Ledger, str]) -> None:
    """A helper's batch and the loop's own submissions in one group: every line canonical,
    seqs in the group's order, each receipt the tenant's."""
    led, api_key = ledger
    subs = [submission(s) for s in submissions()]
    mac = HMAC(api_key.encode(), SHA256())
    group: list[writer.Submission | writer.Prepared] = [
        *subs[:5], *writer.prepare(subs[5:15], lambda _: mac), *subs[15:]]
    staged = led.stage(group)
    lines = staged.data.split(b"\n")
    assert lines.pop() == b""
    assert [a.seq for a in staged.acks] == list(range(led.size, led.size + len(subs)))
    for sub, line, ack in zip(subs, lines, staged.acks, strict=True):
        assert line == canonical.encode(sub.fields.record(
            seq=ack.seq, trace_id=ack.trace_id, tenant="acme", time=ack.time,
            receipt=ack.receipt))
        assert ack.receipt == hmac.new(api_key.encode(), ack.trace_id.encode(),
                                       hashlib.sha256).hexdigest()
