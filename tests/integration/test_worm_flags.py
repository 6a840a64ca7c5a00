"""Real chattr behaviour on the files the ledger makes: the kernel, not the code, says no.

As root (CAP_LINUX_IMMUTABLE does not bypass the flags, it only allows changing
them): the active segment is append-only, a sealed one immutable.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_helpers import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    append_events,
    cli,
    lsattr,
    raw_flags,
    segments,
    set_raw_flags,
)

from vantio_appliance import reader, writer
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("needs_root_flags")]

Attempt = Callable[[Path], object]


def _open_close(flags: int) -> Attempt:
    def attempt(path: Path) -> None:
        os.close(os.open(path, flags | os.O_CLOEXEC))
    return attempt


def _rename(path: Path) -> None:
    os.rename(path, path.with_name("renamed.worm"))


def _hardlink(path: Path) -> None:
    os.link(path, path.with_name("linked.worm"))


def _chmod(path: Path) -> None:
    os.chmod(path, 0o666)


# what nobody, root included, may do to an append-only (active) segment
ACTIVE_REFUSED: dict[str, Attempt] = {
    "open O_WRONLY (overwrite)": _open_close(os.O_WRONLY),
    "open O_RDWR": _open_close(os.O_RDWR),
    "open O_WRONLY|O_TRUNC": _open_close(os.O_WRONLY | os.O_TRUNC),
    "open O_WRONLY|O_APPEND|O_TRUNC": _open_close(os.O_WRONLY | os.O_APPEND | os.O_TRUNC),
    "truncate": lambda p: os.truncate(p, 0),
    "truncate to shorter": lambda p: os.truncate(p, p.stat().st_size - 1),
    "rename": _rename,
    "unlink": os.unlink,
    "hard link": _hardlink,
    "chmod": _chmod,
}

# and to an immutable (sealed) one: not even appending
SEALED_REFUSED: dict[str, Attempt] = {
    **ACTIVE_REFUSED,
    "open O_WRONLY|O_APPEND": _open_close(os.O_WRONLY | os.O_APPEND),
    "open O_RDWR|O_APPEND": _open_close(os.O_RDWR | os.O_APPEND),
}


def _assert_refused(path: Path, attempts: dict[str, Attempt]) -> None:
    before = path.read_bytes()
    allowed = []
    for what, attempt in attempts.items():
        try:
            attempt(path)
        except PermissionError as exc:
            assert exc.errno == errno.EPERM, f"{what}: {exc}"
        else:
            allowed.append(what)
    assert not allowed, f"{path.name}: the kernel allowed {allowed}"
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        p.name for p in segments(path.parent.parent))  # no renamed/linked copies appeared


def test_active_segment_is_append_only(ledger_dir: Path) -> None:
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 5)
        active = ledger.layout.segments / ledger.active
    assert active == segments(ledger_dir)[-1]
    assert raw_flags(active) & FS_APPEND_FL
    assert not raw_flags(active) & FS_IMMUTABLE_FL
    letters = lsattr(active)
    assert "a" in letters and "i" not in letters, letters

    _assert_refused(active, ACTIVE_REFUSED)
    assert raw_flags(active) & FS_APPEND_FL  # the attempts changed nothing

    # appending is what +a is for: O_APPEND works, and pwrite cannot land anywhere but the end
    size = active.stat().st_size
    fd = os.open(active, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        assert os.write(fd, b"{torn") == 5
        assert os.pwrite(fd, b"X", 0) == 1  # O_APPEND: Linux appends, whatever the offset
    finally:
        os.close(fd)
    data = active.read_bytes()
    assert len(data) == size + 6
    assert data[:1] == b"{" and data.endswith(b"{tornX")

    # the stray bytes are a torn tail: the next open excuses them and the ledger verifies
    assert not verify_dir(ledger_dir, jobs=1).ok
    with writer.Ledger(ledger_dir) as ledger:
        seq = append_events(ledger, 1)[0].seq
    torn = json.loads(reader.find(Layout(ledger_dir), seq=seq - 1).data)
    assert (torn["kind"], torn["offset"], torn["length"]) == ("torn", size, 6)
    assert verify_dir(ledger_dir, jobs=1).ok


def test_sealed_segment_is_immutable_and_link_moves(ledger_dir: Path) -> None:
    layout = Layout(ledger_dir)
    assert os.readlink(layout.link) == "segments/0000000000000000.worm"
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 7)
        sealed = layout.segments / ledger.active
        ledger.seal()
        active = layout.segments / ledger.active
        append_events(ledger, 2)
    assert sealed != active
    assert active.name == "0000000000000010.worm"  # genesis, epoch 0, 7 events, seal
    assert [p.name for p in segments(ledger_dir)] == [sealed.name, active.name]

    flags = raw_flags(sealed)
    assert flags & FS_IMMUTABLE_FL, f"sealed segment flags {flags:#x}"
    assert not flags & FS_APPEND_FL, f"sealed segment still +a ({flags:#x})"
    letters = lsattr(sealed)
    assert "i" in letters and "a" not in letters, letters
    assert raw_flags(active) & FS_APPEND_FL and not raw_flags(active) & FS_IMMUTABLE_FL
    assert "a" in lsattr(active) and "i" not in lsattr(active)

    _assert_refused(sealed, SEALED_REFUSED)
    assert raw_flags(sealed) & FS_IMMUTABLE_FL

    assert layout.link.is_symlink()
    assert os.readlink(layout.link) == f"segments/{active.name}"
    assert layout.link.resolve() == active.resolve()
    last = json.loads(sealed.read_bytes().splitlines()[-1])
    assert (last["kind"], last["segment"], last["seq"]) == ("seal", sealed.name, 9)
    first = json.loads(active.read_bytes().splitlines()[0])  # the rotation at the seal
    assert (first["kind"], first["epoch"], first["seq"]) == ("epoch", 1, 10)


def test_root_cannot_change_a_sealed_segment_without_dropping_the_flag(
        ledger_dir: Path) -> None:
    with writer.Ledger(ledger_dir) as ledger:
        ledger.seal()
    sealed = segments(ledger_dir)[0]
    mode = sealed.stat().st_mode
    with pytest.raises(PermissionError):
        os.chown(sealed, 1, 1)
    with pytest.raises(PermissionError):
        os.utime(sealed, (0, 0))
    assert sealed.stat().st_mode == mode and sealed.stat().st_uid == 0
    # only dropping the flag (CAP_LINUX_IMMUTABLE) makes it writable: the teardown relies on it
    set_raw_flags(sealed, raw_flags(sealed) & ~FS_IMMUTABLE_FL)
    os.close(os.open(sealed, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
    set_raw_flags(sealed, raw_flags(sealed) | FS_IMMUTABLE_FL)


def _verify_cli(root: Path) -> tuple[int, str, dict[str, object]]:
    text = cli("ledger", "verify", "--dir", root, "--jobs", "1")
    js = cli("ledger", "verify", "--dir", root, "--jobs", "1", "--json")
    assert js.returncode == text.returncode, (text, js)
    return text.returncode, text.stdout, json.loads(js.stdout)


def test_verify_reports_flags_per_segment(ledger_dir: Path) -> None:
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 3)
        ledger.seal()
        append_events(ledger, 3)
        ledger.seal()
        append_events(ledger, 1)
    names = [p.name for p in segments(ledger_dir)]
    assert len(names) == 3

    code, out, report = _verify_cli(ledger_dir)
    assert code == 0, out
    rows = [ln.split() for ln in out.splitlines()
            if ln.startswith("  ") and ln.split()[0].endswith(".worm")]
    assert [r[0] for r in rows] == names
    assert [(r[1], r[4], r[5]) for r in rows] == [
        ("sealed", "+i", "ok"), ("sealed", "+i", "ok"), ("active", "+a", "ok")]
    segs = report["segments"]
    assert isinstance(segs, list)
    assert [(s["name"], s["state"], s["flags"], s["flags_ok"]) for s in segs] == [
        (names[0], "sealed", "+i", True), (names[1], "sealed", "+i", True),
        (names[2], "active", "+a", True)]
    assert report["ok"] is True and report["warnings"] == []

    # a sealed segment stripped of +i still verifies (the signatures hold) but is reported
    middle = segments(ledger_dir)[1]
    set_raw_flags(middle, raw_flags(middle) & ~FS_IMMUTABLE_FL)
    code, out, report = _verify_cli(ledger_dir)
    assert code == 0, out
    row = next(ln.split() for ln in out.splitlines() if ln.strip().startswith(names[1]))
    assert (row[4], row[5]) == ("none", "FLAGS"), out
    assert f"warning: {names[1]}: sealed segment has flags none, expected +i" in out
    segs = report["segments"]
    assert isinstance(segs, list)
    assert (segs[1]["flags"], segs[1]["flags_ok"]) == ("none", False)
    assert report["ok"] is True
    assert report["warnings"] == [f"{names[1]}: sealed segment has flags none, expected +i"]
