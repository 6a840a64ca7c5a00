"""What the enforcer sends: ring buffer records as event JSON, and gap records, both
accepted by the ingest whitelist."""

from __future__ import annotations

import json
import socket

import msgspec
import pytest

from vantio_appliance import enforcer
from vantio_appliance.enforcer import EventEncoder
from vantio_appliance.records import EventFields, GapFields


def cgroups(cgid: int) -> tuple[str, list[int]] | None:
    return None if cgid == 99 else (f"/vantio-agents.slice/a{cgid}", [1, 7, cgid])


def raw(*, cgid: int = 5, pid: int = 100, stage: int = 2, action: int = 0, flags: int = 0,
        proto: int = 2, family: int = 4, addr: str = "127.0.0.2", port: int = 9,
        comm: bytes = b"python3", path: bytes = b"") -> bytes:
    packed = (socket.inet_pton(socket.AF_INET, addr) + bytes(12) if family == 4
              else socket.inet_pton(socket.AF_INET6, addr))
    head = enforcer._EVENT.pack(cgid, pid, pid, 1000, 1000, packed, port, stage, action, flags,
                                proto, family, comm)
    return head + (enforcer._EXEC_TAIL.pack(1, 0, path) if stage == 4 else b"")


CASES = [raw(), raw(action=1), raw(action=2, stage=0, proto=1, port=443),
         raw(flags=1, action=1), raw(family=6, addr="2001:db8::1", stage=1),
         raw(family=6, addr="::ffff:10.0.0.1", stage=3, flags=2), raw(pid=7, comm=b"x" * 16),
         raw(cgid=99), raw(comm=b'q"\\\x01'), raw(stage=4, path=b"/usr/bin/python3")]


@pytest.mark.parametrize("event", CASES)
def test_the_fast_encoder_says_what_event_record_says(event: bytes) -> None:
    enc = EventEncoder(cgroups)
    want = enforcer.event_record(enforcer.decode_event(event), cgroups)
    for _ in range(2):  # built, then from the cache
        line, action = enc(event)
        assert json.loads(line) == want
        assert enforcer.ACTIONS[action] == want["action"]
        msgspec.json.decode(line, type=EventFields)  # the whitelist takes it


def test_the_cache_tells_decisions_apart() -> None:
    enc = EventEncoder(cgroups)
    seen = {enc(e)[0] for e in CASES for _ in range(3)}
    assert len(seen) == len({enc(e)[0] for e in CASES}) == len(CASES)


def test_gap_records_are_whitelisted_gaps() -> None:
    for stage, action in enforcer.loss_slots():
        rec = enforcer.gap_record(stage, action, 3, (10, 20))
        gap = msgspec.convert(rec, GapFields)
        assert (gap.kind, gap.lost, gap.window.start_ns) == ("gap", 3, 10)
    actions = dict(enforcer.loss_slots())
    assert actions == {"connect4": "block", "connect6": "block", "sendmsg4": "block",
                       "sendmsg6": "block", "exec": "permit"}  # the enforce-mode slots win
    assert enforcer.loss_slots()[0] == ("connect4", "permit")  # monitor mode lets through
