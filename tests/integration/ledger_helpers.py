"""Helpers shared by the integration tests (not a test module)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

from vantio_appliance import writer
from vantio_appliance.layout import Layout

REPO: Final = Path(__file__).resolve().parents[2]
ORIGIN: Final = "vantio.appliance/test-host/ledger"

FS_IOC_GETFLAGS: Final = 0x80086601
FS_IOC_SETFLAGS: Final = 0x40086602
FS_IMMUTABLE_FL: Final = 0x00000010
FS_APPEND_FL: Final = 0x00000020
WORM_FLAGS: Final = FS_IMMUTABLE_FL | FS_APPEND_FL


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def cli(*args: str | Path, stdin: str | None = None, umask: int = -1,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python3 -m vantio_appliance.cli ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "vantio_appliance.cli", *map(str, args)],
        input=stdin if stdin is not None else "", capture_output=True, text=True,
        env=cli_env(), timeout=timeout, umask=umask, check=False)


def raw_flags(path: Path) -> int:
    """The inode flags by our own FS_IOC_GETFLAGS (not the product's helper)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return int.from_bytes(buf[:4], "little")
    finally:
        os.close(fd)


def set_raw_flags(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags.to_bytes(8, "little"))
    finally:
        os.close(fd)


def lsattr(path: Path) -> str:
    """The flag letters ``lsattr`` prints for ``path`` (e.g. ``-----a--------e-------``)."""
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    field, _, name = out.strip().partition(" ")
    assert name.strip() == str(path), out
    return field


@contextmanager
def unlocked(path: Path) -> Iterator[None]:
    """Drop +a/+i for the duration (as an attacker with root would), then put them back."""
    try:
        before = raw_flags(path)
    except OSError:
        before = 0
    if before & WORM_FLAGS:
        set_raw_flags(path, before & ~WORM_FLAGS)  # one ioctl: ext4 refuses -a while +i
    try:
        yield
    finally:
        if before & WORM_FLAGS and path.exists():
            set_raw_flags(path, before)


def segments(root: Path) -> list[Path]:
    layout = Layout(root)
    return [layout.segments / n for n in layout.segment_names()]


def event(i: int, **extra: Any) -> dict[str, Any]:
    """A valid submission whose content varies with ``i``."""
    fields: dict[str, Any] = {
        "action": ("permit", "block", "quarantine")[i % 3],
        "proc": {"pid": 1000 + i, "tgid": 1000 + i, "uid": 0, "gid": 0, "comm": "agent",
                 "cgroup": "/vantio-agents.slice/a.scope", "cgroup_ancestry": [1, 2, 3]},
        "syscall": {"name": "connect", "args": {"family": "inet", "address": "10.0.0.7",
                                                "port": 443, "proto": "tcp"}},
        "target_host": "api.example.com:443",
        "bytes_severed": i * 17,
    }
    fields.update(extra)
    return fields


def append_events(ledger: writer.Ledger, n: int, tenant: str = "default",
                  start: int = 0) -> list[writer.Ack]:
    return ledger.append([writer.submission(tenant, event(start + i)) for i in range(n)])


def lines_of(path: Path) -> list[bytes]:
    """The lines of a segment, each with its newline."""
    return path.read_bytes().splitlines(keepends=True)


def first_failure_line(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("FAILED:"):
            return line
    raise AssertionError(f"no FAILED: line in\n{stdout}")


def all_bytes_under(root: Path, exclude: Sequence[str] = ()) -> bytes:
    """Every regular file's bytes under ``root`` (to grep for what must not be stored)."""
    out = bytearray()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink() or name in exclude:
                continue
            out += path.read_bytes()
    return bytes(out)


def unfinished_seal(ledger: writer.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three records, a seal whose segment stays open (a writer that failed between the seal
    record and its +i / next segment), then two more records in that segment."""
    append_events(ledger, 3)
    with monkeypatch.context() as m:
        m.setattr(writer.Ledger, "_finish_seal", lambda self: None)
        m.setattr(writer.Ledger, "rotate_epoch", lambda self: None)
        ledger.seal()  # the seal record is durable; the segment stays open
    append_events(ledger, 2, start=3)
