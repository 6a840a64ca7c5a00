"""Retention (SEC 17a-4): sealed segments go warm, and are deleted only after their end.

A sealed segment is *due* for warm storage ``warm_after`` after its seal
(the time of its seal record, the newest record in it), and *expired*
``retain_for`` after its seal, so every record in it has been kept at least
that long. Moving it compresses it into ``DIR/warm/<name>.gz`` with +i, checks
that the copy decompresses to the very same bytes, and only then drops the
hot file; a crash in between leaves both, and the next run finishes the move
(readers prefer the hot file while it exists). Deletion is a separate,
explicit command that refuses (nothing deleted) any segment before its end,
and deletes only from the oldest, so that what remains is one unbroken
history: the tree's compact range at the first kept record (``warm/expired``)
and the deleted segments' epoch records (``warm/expired.epochs``) let
`vantio ledger verify` check it from there (both are authenticated by what
follows: the next seal's signed root, and the epoch chain from epoch 0).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import bundle, merkle
from ._internal import osutil
from .canonical import CanonicalError, decode
from .layout import Layout, segment_first_seq

DAY_NS: Final = 86_400 * 10**9
YEAR_NS: Final = 365 * DAY_NS + DAY_NS // 4  # a Julian year: leap days included on average
DEFAULT_WARM_AFTER_NS: Final = 3 * YEAR_NS
DEFAULT_RETAIN_FOR_NS: Final = 6 * YEAR_NS
_DURATION: Final = re.compile(r"([0-9]+)([yd])")
Progress = Callable[[int, int], None]  # (segments done, segments in all)


class RetentionError(RuntimeError):
    """Cannot run as asked (usage, I/O, a segment not as expected): exit 2."""


class RetentionRefused(RetentionError):
    """A deletion before the retention end: exit 1, nothing deleted."""


def parse_duration(text: str) -> int:
    """``6y`` or ``1095d`` in nanoseconds (a year is 365.25 days)."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 6y or 1095d")
    return int(m[1]) * (YEAR_NS if m[2] == "y" else DAY_NS)


@dataclass(frozen=True)
class Segment:
    name: str
    sealed_ns: int  # real time of its seal record
    warm: bool


def sealed_at(data: bytes, name: str) -> int:
    """The time of the seal record that ends a sealed segment's bytes."""
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1:].rstrip(b"\n")
    try:
        rec = decode(last)
        if not isinstance(rec, dict) or rec.get("kind") != "seal":
            raise CanonicalError("not a seal record")
        return int(rec["time"]["real_ns"])
    except (CanonicalError, KeyError, TypeError, ValueError):
        raise RetentionError(f"segment {name} does not end with a seal record; run vantio "
                             "ledger verify") from None


def sealed_segments(layout: Layout) -> list[Segment]:
    """Every sealed segment (all but the last, the active one), oldest first."""
    names = layout.segment_names()
    warm = set(layout.warm_names()) - set(layout.hot_names())
    return [Segment(n, sealed_at(_tail(layout, n, n in warm), n), n in warm)
            for n in names[:-1]]


def _tail(layout: Layout, name: str, warm: bool) -> bytes:
    """The end of a segment, enough for its last line (a seal record is a few KiB)."""
    if warm:
        return layout.read_segment(name)
    with (layout.segments / name).open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        return f.read()


def due(segments: list[Segment], now_ns: int, warm_after_ns: int) -> list[Segment]:
    """Hot segments sealed at least ``warm_after_ns`` before ``now_ns``. Pure."""
    return [s for s in segments if not s.warm and now_ns - s.sealed_ns >= warm_after_ns]


def expired(segments: list[Segment], now_ns: int, retain_for_ns: int) -> list[Segment]:
    """The oldest segments, in a row, whose retention ended by ``now_ns``. Pure."""
    out = []
    for s in segments:
        if now_ns - s.sealed_ns < retain_for_ns:
            break
        out.append(s)
    return out


def retention_end(s: Segment, retain_for_ns: int) -> int:
    return s.sealed_ns + retain_for_ns


class _Held:
    """One retention command at a time (flock on the warm directory)."""

    def __init__(self, layout: Layout) -> None:
        layout.warm.mkdir(mode=0o750, exist_ok=True)
        self.fd = os.open(layout.warm, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RetentionError(f"{layout.warm} is in use by another retention command") \
                from None

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def move_warm(layout: Layout, name: str, *, use_flags: bool = True) -> int:
    """Compress one sealed segment into warm storage (+i) and drop the hot file; returns
    the warm file's size. Idempotent: a move a crash cut short is finished."""
    hot, warm = layout.segments / name, layout.warm_path(name)
    data = hot.read_bytes()
    digest = hashlib.sha256(data).digest()
    if not warm.exists():
        tmp = warm.with_name(f".{warm.name}.tmp")
        _unlink(tmp)
        with tmp.open("wb") as raw:
            with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(tmp, warm)
        osutil.fsync_dir(layout.warm)
        if use_flags:
            _set_immutable(warm)
    with gzip.open(warm, "rb") as f:  # never drop the hot file for a copy that differs
        if hashlib.sha256(f.read()).digest() != digest:
            raise RetentionError(f"{warm} does not decompress to {hot}; both kept")
    _unlink(hot)
    osutil.fsync_dir(layout.segments)
    return warm.stat().st_size


def delete_expired(layout: Layout, gone: list[Segment]) -> None:
    """Delete the oldest segments ``gone`` (all warm, expired: checked by the caller), after
    recording the tree's compact range at the first kept record and their epoch records."""
    edge = expired_edge(layout)
    epochs = layout.expired_epochs.read_bytes() if layout.expired_epochs.exists() else b""
    leaves: list[bytes] = []
    for s in gone:
        data = layout.read_segment(s.name)
        if segment_first_seq(s.name) != edge.size + len(leaves):
            raise RetentionError(f"segment {s.name} does not follow the expired ones")
        for line in data.split(b"\n")[:-1]:
            if line[:1] == b"{" and line[-1:] == b"}":
                leaves.append(merkle.leaf_hash(line))
                if b'"kind":"epoch"' in line:
                    epochs += line + b"\n"
            # torn bytes are not leaves: their torn record follows them
    edge.extend(leaves)
    # the edge and epochs first, durably: a crash leaves segments the edge already covers,
    # which the next deletion removes (they are still expired)
    osutil.replace_file(layout.expired_epochs, epochs, 0o640, durable=True)
    osutil.replace_file(layout.expired, bundle.format_compact_range(edge), 0o640, durable=True)
    for s in gone:
        path = layout.segment_path(s.name)
        _clear_flags(path)
        _unlink(path)
    osutil.fsync_dir(layout.warm)
    osutil.fsync_dir(layout.segments)


def expired_edge(layout: Layout) -> merkle.CompactRange:
    """The tree's compact range before the first kept segment (empty when none deleted)."""
    try:
        data = layout.expired.read_bytes()
    except FileNotFoundError:
        return merkle.CompactRange()
    try:
        return bundle.parse_compact_range(data)
    except bundle.BundleFormatError as exc:
        raise RetentionError(f"{layout.expired}: {exc}") from None


def _set_immutable(path: Path) -> None:
    # as the writer: where the file system has no flags, the signatures still hold
    with contextlib.suppress(osutil.FlagsUnsupported):
        osutil.set_path_flags(path, osutil.FS_IMMUTABLE_FL)


def _clear_flags(path: Path) -> None:
    flags = osutil.path_flags(path)
    if flags is not None and flags & (osutil.FS_IMMUTABLE_FL | osutil.FS_APPEND_FL):
        osutil.set_path_flags(path, 0, osutil.FS_IMMUTABLE_FL | osutil.FS_APPEND_FL)


def _unlink(path: Path) -> None:
    if path.exists():
        _clear_flags(path)
        path.unlink()


@dataclass(frozen=True)
class Moved:
    name: str
    bytes_before: int
    bytes_after: int


def retain(root: Path, *, now_ns: int, warm_after_ns: int = DEFAULT_WARM_AFTER_NS,
           use_flags: bool = True, progress: Progress | None = None) -> list[Moved]:
    """Move every due segment to warm storage; returns what moved."""
    layout = _layout(root)
    with _Held(layout):
        for name in set(layout.warm_names()) & set(layout.hot_names()):
            move_warm(layout, name, use_flags=use_flags)  # a move a crash cut short
        todo = due(sealed_segments(layout), now_ns, warm_after_ns)
        moved = []
        for i, s in enumerate(todo):
            before = (layout.segments / s.name).stat().st_size
            moved.append(Moved(s.name, before, move_warm(layout, s.name, use_flags=use_flags)))
            if progress:
                progress(i + 1, len(todo))
        return moved


def expire(root: Path, *, now_ns: int, retain_for_ns: int = DEFAULT_RETAIN_FOR_NS,
           upto: str | None = None) -> list[Segment]:
    """Delete expired segments (all of them, or those up to ``upto``): the explicit
    deletion. Refuses, deleting nothing, any segment before its retention end."""
    layout = _layout(root)
    with _Held(layout):
        segments = sealed_segments(layout)
        if upto is not None:
            names = [s.name for s in segments]
            if upto not in names:
                raise RetentionError(f"{upto} is not a sealed segment of {root}")
            wanted = segments[:names.index(upto) + 1]
            ok = expired(wanted, now_ns, retain_for_ns)
            if len(ok) < len(wanted):
                s = wanted[len(ok)]
                raise RetentionRefused(f"{s.name} is retained until "
                                       f"{_iso(retention_end(s, retain_for_ns))} (sealed "
                                       f"{_iso(s.sealed_ns)}); nothing deleted")
        else:
            wanted = expired(segments, now_ns, retain_for_ns)
        hot = [s.name for s in wanted if not s.warm]
        if hot:
            raise RetentionRefused(f"{hot[0]} is not in warm storage yet: run vantio ledger "
                                   "retain first; nothing deleted")
        if wanted:
            delete_expired(layout, wanted)
        return wanted


def _layout(root: Path) -> Layout:
    layout = Layout(root)
    if not layout.vkey.is_file():
        raise RetentionError(f"{root} is not a ledger (no vkey)")
    return layout


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["DEFAULT_RETAIN_FOR_NS", "DEFAULT_WARM_AFTER_NS", "Moved", "RetentionError",
           "RetentionRefused", "Segment", "due", "expire", "expired", "expired_edge",
           "parse_duration", "retain", "retention_end", "sealed_at"]
