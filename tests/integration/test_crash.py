"""kill -9 of a writer under load, and torn tails: nothing acknowledged is lost, the
sequence continues, and the ledger verifies after every recovery."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Final

import pytest
from ledger_helpers import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    append_events,
    cli,
    cli_env,
    event,
    raw_flags,
    segments,
    set_raw_flags,
)

from vantio_appliance import reader, writer
from vantio_appliance.canonical import decode, encode
from vantio_appliance.layout import Layout
from vantio_appliance.records import SYSTEM_TENANT, Event, Seal, Time, new_trace_id, receipt
from vantio_appliance.verify import verify_dir

pytestmark = pytest.mark.root

SEGMENT_BYTES: Final = 96 * 1024  # small, so that kills also land in and around seals

# The child: open the ledger (recovering it), append batches of various sizes as fast
# as it can, and print "seq trace_id" for each record only AFTER append() returned.
CHILD: Final = r"""
import random, sys
from pathlib import Path
from vantio_appliance import writer

root, seed, segment_bytes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
sizes = [1, 1, 2, 3, 7, 16, 33, 64, 128, 250]
ledger = writer.Ledger(root, segment_bytes=segment_bytes)
out = sys.stdout
out.write("open %d\n" % ledger.size)
out.flush()
i = 0
while True:
    batch = []
    for _ in range(rng.choice(sizes)):
        batch.append(writer.submission("default", {
            "action": "block", "proc": {"pid": i % 4_000_000_000, "comm": "agent"},
            "target_host": "10.1.2.3:443", "bytes_severed": i}))
        i += 1
    acks = ledger.append(batch)
    out.write("".join("%d %s\n" % (a.seq, a.trace_id) for a in acks))
    out.flush()
"""


class Child:
    """A writer subprocess whose acknowledgements are collected as they arrive."""

    def __init__(self, root: Path, seed: int, stderr: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(seed), str(SEGMENT_BYTES)],
            stdout=subprocess.PIPE, stderr=stderr, env=cli_env())
        self.opened_at: int | None = None
        self.acks: list[tuple[int, str]] = []
        self.first_ack = threading.Event()
        self.partial = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd, buf = self.proc.stdout.fileno(), b""
        while chunk := os.read(fd, 1 << 16):
            buf += chunk
            *whole, buf = buf.split(b"\n")
            for line in whole:  # only whole lines count as acknowledged
                a, b = line.decode().split(" ")
                if a == "open":
                    self.opened_at = int(b)
                else:
                    self.acks.append((int(a), b))
                    self.first_ack.set()
        self.partial = buf
        self.first_ack.set()  # EOF: wake the waiter whatever happened

    def kill(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self._thread.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def _records(root: Path) -> dict[int, str]:
    return {ln.seq: decode(ln.data)["trace_id"] for ln in reader.lines(Layout(root))}


def test_kill_9_under_load_loses_nothing_acknowledged(ledger_dir: Path, tmp_path: Path,
                                                      needs_root_flags: None) -> None:
    seed = int(os.environ.get("VANTIO_CRASH_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    where = f"(VANTIO_CRASH_SEED={seed})"
    delays = [0.0, 0.002, 0.01, 0.03, 0.07, 0.12, 0.2, 0.3]  # after the first ack
    rng.shuffle(delays)
    all_acks: dict[int, str] = {}
    flag_warnings: list[str] = []
    expected_size = 2  # the genesis and epoch-0 records
    started = time.monotonic()
    for rnd, delay in enumerate(delays):
        log = tmp_path / f"child-{rnd}.stderr"
        with log.open("wb") as stderr:
            child = Child(ledger_dir, rng.randrange(2**32), stderr)
            try:
                assert child.first_ack.wait(timeout=20), f"round {rnd}: no ack {where}"
                time.sleep(delay + rng.uniform(0, 0.01))
            finally:
                code = child.kill()
        err = log.read_text()
        assert code == -signal.SIGKILL, f"round {rnd}: child died by itself {where}:\n{err}"
        assert child.opened_at is not None and child.acks, f"round {rnd} {where}:\n{err}"
        # the child's own open recovered what the previous kill left, without losing a record
        assert child.opened_at == expected_size, (rnd, child.opened_at, expected_size, where)
        seqs = [s for s, _ in child.acks]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), where
        assert seqs[0] >= child.opened_at, where
        for s, t in child.acks:
            assert all_acks.setdefault(s, t) == t, f"seq {s} acknowledged twice {where}"

        # reopening recovers: the sequence continues after everything acknowledged
        with writer.Ledger(ledger_dir, segment_bytes=SEGMENT_BYTES) as ledger:
            size = ledger.size
            assert size > max(all_acks), (size, max(all_acks), where)
            ack = ledger.append([writer.submission("default", event(rnd))])[0]
            assert ack.seq == size, where
            all_acks[ack.seq] = ack.trace_id
            expected_size = ledger.size  # size + 1, or + 2 when the append sealed

        report = verify_dir(ledger_dir, jobs=2)
        assert report.ok, f"round {rnd} {where}: {[str(f) for f in report.findings]}"
        assert report.records == expected_size, where
        stored = _records(ledger_dir)
        lost = {s: t for s, t in all_acks.items() if stored.get(s) != t}
        assert not lost, f"round {rnd}: acknowledged but not stored at their seq {where}: " \
                         f"{list(lost.items())[:5]}"
        # after recovery: sealed segments +i, the active one +a (reported after all rounds)
        flag_warnings += [f"round {rnd}: {w}" for w in report.warnings]
    assert len(segments(ledger_dir)) > 2, "no seal happened under load: the test is too weak"
    assert flag_warnings == [], f"{where}: {flag_warnings}"
    assert time.monotonic() - started < 30


def _write_fragment(path: Path, data: bytes) -> None:
    """Append bytes as a crashed writer would have: O_APPEND is what +a allows."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


@pytest.mark.parametrize("fragment", [
    b'{"action":"block","kind":"event","proc":{"pid":4',  # half a record
    b"\x00\x00\x00\x00",  # zeroes, as a lost block would read
    b"x",
], ids=["half-record", "zeroes", "one-byte"])
def test_torn_tail_is_excused_by_a_torn_record(ledger_dir: Path, fragment: bytes) -> None:
    with writer.Ledger(ledger_dir) as ledger:
        acks = append_events(ledger, 4)
        active = ledger.layout.segments / ledger.active
    offset = active.stat().st_size
    _write_fragment(active, fragment)

    # before recovery the tail is reported: by the API and by the command (exit 1)
    report = verify_dir(ledger_dir, jobs=1)
    assert not report.ok
    assert any("torn" in f.reason and f.segment == active.name for f in report.findings), \
        report.findings
    res = cli("ledger", "verify", "--dir", ledger_dir, "--jobs", "1")
    assert res.returncode == 1, res
    assert "FAILED:" in res.stdout and active.name in res.stdout and "torn" in res.stdout

    with writer.Ledger(ledger_dir) as ledger:
        size = ledger.size
        assert size == acks[-1].seq + 2  # the events, then the torn record
        nxt = append_events(ledger, 2)
    assert [a.seq for a in nxt] == [size, size + 1]
    data = active.read_bytes()
    assert data[offset:offset + len(fragment)] == fragment  # +a: the bytes stay, excused
    torn_line = data[offset + len(fragment) + 1:].split(b"\n")[0]
    torn = json.loads(torn_line)
    assert torn["kind"] == "torn" and torn["seq"] == size - 1 and torn["tenant"] == "_system"
    assert (torn["segment"], torn["offset"], torn["length"]) == (
        active.name, offset, len(fragment))
    assert data[offset + len(fragment):offset + len(fragment) + 1] == b"\n"

    assert verify_dir(ledger_dir, jobs=1).ok
    res = cli("ledger", "verify", "--dir", ledger_dir, "--jobs", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    for ack in [*acks, *nxt]:
        assert decode(reader.find(Layout(ledger_dir), seq=ack.seq).data)["trace_id"] == \
            ack.trace_id

    # opening again adds nothing: the tail is excused once
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.size == size + 2
    assert active.read_bytes() == data


def _next_event_line(ledger: writer.Ledger, seq: int) -> bytes:
    """The canonical line the writer would write for an event at ``seq``."""
    tid, now = new_trace_id(), time.time_ns()
    key = ledger.tenants.get("default").api_key
    return encode(Event(v=1, seq=seq, trace_id=tid, tenant="default",
                        time=Time(mono_ns=time.monotonic_ns(), real_ns=now, earliest_ns=now,
                                  latest_ns=now),
                        action="block", receipt=receipt(key, tid)))


def test_half_written_group_commit_keeps_its_whole_lines(ledger_dir: Path) -> None:
    """A kill inside the write of a group: whole lines became records, the rest is torn."""
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 3)
        size = ledger.size
        first, second = _next_event_line(ledger, size), _next_event_line(ledger, size + 1)
        active = ledger.layout.segments / ledger.active
    offset = active.stat().st_size
    fragment = second[:len(second) // 2]
    _write_fragment(active, first + b"\n" + fragment)
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.size == size + 2  # the whole line, then the torn record
        ack = append_events(ledger, 1)[0]
    assert ack.seq == size + 2
    layout = Layout(ledger_dir)
    assert reader.find(layout, seq=size).data == first
    torn = json.loads(reader.find(layout, seq=size + 1).data)
    assert (torn["kind"], torn["offset"], torn["length"]) == (
        "torn", offset + len(first) + 1, len(fragment))
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok, report.findings


def test_torn_tail_right_after_a_seal(ledger_dir: Path) -> None:
    """A crash on the first write of events into a fresh segment (after its epoch record)."""
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
        ledger.seal()
        active = ledger.layout.segments / ledger.active
    _write_fragment(active, b'{"action":"perm')
    assert not verify_dir(ledger_dir, jobs=1).ok
    with writer.Ledger(ledger_dir) as ledger:
        seq = append_events(ledger, 1)[0].seq
    assert seq == 7  # genesis, epoch 0, 2 events, seal, epoch 1, torn
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok, report.findings


def test_crash_between_creating_a_segment_and_setting_append_only(
        ledger_dir: Path, needs_root_flags: None) -> None:
    """_open_segment creates the file, then sets +a: a crash in between leaves a segment
    without +a. Recovery must make the active segment append-only again (FORMATS.md §2:
    the active segment has chattr +a)."""
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
        ledger.seal()
        active = ledger.layout.segments / ledger.active
    set_raw_flags(active, raw_flags(active) & ~FS_APPEND_FL)  # the state such a crash leaves
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 1)
    flags = raw_flags(active)
    assert flags & FS_APPEND_FL and not flags & FS_IMMUTABLE_FL, \
        f"active segment {active.name} left without +a after recovery (flags {flags:#x})"
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok and report.warnings == [], (report.findings, report.warnings)


def _write_seal_record(ledger_dir: Path) -> tuple[Path, int]:
    """Append the seal record seal() would write, as a crashed seal() left it: durable,
    and nothing after it. Returns the segment and the seal's seq."""
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 3)
        sealed = ledger.layout.segments / ledger.active
        signed, seq = ledger.signed_checkpoint(), ledger.size
    now = time.time_ns()
    seal = Seal(v=1, seq=seq, trace_id=new_trace_id(), tenant=SYSTEM_TENANT,
                time=Time(mono_ns=time.monotonic_ns(), real_ns=now, earliest_ns=now - 10**9,
                          latest_ns=now + 10**9),
                segment=sealed.name, checkpoint=signed.decode())
    _write_fragment(sealed, encode(seal) + b"\n")
    return sealed, seq


def test_crash_after_the_seal_record_finishes_the_seal(ledger_dir: Path,
                                                       needs_root_flags: None) -> None:
    """The seal record is durable but the crash came before +i and the next segment."""
    sealed, seq = _write_seal_record(ledger_dir)
    assert raw_flags(sealed) & FS_APPEND_FL and not raw_flags(sealed) & FS_IMMUTABLE_FL
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.active == "0000000000000006.worm"
        assert ledger.epoch == 1  # the rotation that follows a seal was made up for
        assert append_events(ledger, 1)[0].seq == seq + 2
    assert raw_flags(sealed) & FS_IMMUTABLE_FL and not raw_flags(sealed) & FS_APPEND_FL
    assert os.readlink(Layout(ledger_dir).link) == "segments/0000000000000006.worm"
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok and report.warnings == [], (report.findings, report.warnings)


def test_crash_after_the_sealing_ioctl_before_the_next_segment(
        ledger_dir: Path, needs_root_flags: None) -> None:
    """_finish_seal sets +i (and drops +a), fsyncs, and only then creates the next segment:
    a crash in between leaves the last segment sealed AND immutable. Opening must finish
    the seal (create the next segment), not try to open the immutable one for appending."""
    sealed, seq = _write_seal_record(ledger_dir)
    set_raw_flags(sealed, (raw_flags(sealed) | FS_IMMUTABLE_FL) & ~FS_APPEND_FL)  # one ioctl
    with writer.Ledger(ledger_dir) as ledger:  # the bug: PermissionError (EPERM) here
        assert ledger.active == f"{seq + 1:016d}.worm"
        assert append_events(ledger, 1)[0].seq == seq + 2  # after the epoch-1 record
    assert os.readlink(Layout(ledger_dir).link) == f"segments/{seq + 1:016d}.worm"
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok and report.warnings == [], (report.findings, report.warnings)


def test_seal_record_that_reached_the_disk_despite_a_failed_fdatasync(
        ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, needs_root_flags: None) -> None:
    """fdatasync fails (EIO) after the seal record's bytes were written: seal() raises and
    acknowledges nothing, but the record is on disk. The next write's repair takes it in
    and must finish the seal (+i, next segment) instead of appending after it."""
    real = os.fdatasync
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 3)
        sealed, seq = ledger.layout.segments / ledger.active, ledger.size
        with monkeypatch.context() as m:
            def failing(fd: int) -> None:
                m.setattr(os, "fdatasync", real)  # once: the disk comes back
                raise OSError(5, "Input/output error")
            m.setattr(os, "fdatasync", failing)
            with pytest.raises(writer.LedgerUnavailable):
                ledger.seal()
        assert b'"kind":"seal"' in sealed.read_bytes().splitlines()[-1]
        acks = append_events(ledger, 2, start=3)
        assert ledger.active == f"{seq + 1:016d}.worm"
    assert acks[0].seq > seq
    assert raw_flags(sealed) & FS_IMMUTABLE_FL and not raw_flags(sealed) & FS_APPEND_FL
    assert sealed.read_bytes().splitlines()[-1].startswith(b'{"checkpoint":')
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok and report.warnings == [], (report.findings, report.warnings)
