"""Offline verification of a ledger directory, trusting nothing but a verifier key.

Each segment is scanned on its own (in parallel where there are several):
canonical form, schema, sequence, torn-tail rules, leaf hashes. The main
process then checks what spans segments: file names against the sequence,
the genesis record against the key, every seal against the tree of all
records before it, and the latest checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from . import checkpoint as cpmod
from . import merkle, note
from ._internal import osutil
from .canonical import is_canonical
from .layout import Layout, segment_first_seq
from .records import SYSTEM_TENANT, Event, Genesis, Record, RecordError, Seal, Torn, decode_record

MAX_FINDINGS: Final = 100


class VerifyError(RuntimeError):
    """The ledger cannot be read at all (exit 2), as opposed to not verifying (exit 1)."""


@dataclass(frozen=True)
class Finding:
    segment: str | None
    seq: int | None
    reason: str
    offset: int | None = None

    def __str__(self) -> str:
        where = [f"segment {self.segment}" if self.segment else "ledger"]
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        return f"{', '.join(where)}: {self.reason}"


@dataclass
class _Scan:
    """What one segment holds, as the main process needs it."""

    name: str
    size: int
    records: int = 0
    # the segment's leaves as subtrees, cut before every special record and at the
    # checkpoint's size: (tree size after the piece, [(level, hash), ...])
    pieces: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)
    specials: list[tuple[int, Record]] = field(default_factory=list)  # (seq, record)
    findings: list[Finding] = field(default_factory=list)
    last_kind: str | None = None


def _scan(path: Path, name: str, cut: int | None) -> _Scan:
    """Scan one segment; a pure function of the file's bytes (runs in a worker)."""
    data = path.read_bytes()
    scan = _Scan(name, len(data))
    first = seq = segment_first_seq(name)
    leaves: list[bytes] = []
    sha, decode, canonical = hashlib.sha256, decode_record, is_canonical
    findings = scan.findings
    bad_at: int | None = None  # start of bytes that are not records, to be excused by `torn`
    offset, rec = 0, None
    *lines, tail = data.split(b"\n")
    for line in lines:
        here, offset = offset, offset + len(line) + 1
        try:
            rec = decode(line)
        except (RecordError, ValueError) as exc:
            if line[:1] == b"{" and line[-1:] == b"}":  # whole but wrong: not a tear
                findings.append(Finding(name, seq, f"invalid record: {exc}", here))
            bad_at = here if bad_at is None else bad_at
            continue
        if type(rec) is not Event:
            _special(scan, rec, seq, here, bad_at)
            bad_at = None
        elif bad_at is not None:
            findings.append(Finding(name, seq, "bytes that are not records, not excused by "
                                    "a torn record", bad_at))
            bad_at = None
        if not canonical(rec, line):
            findings.append(Finding(name, rec.seq, "not in canonical form", here))
        if rec.seq != seq:
            findings.append(Finding(name, rec.seq, f"expected seq {seq}", here))
            seq = rec.seq
        t = rec.time
        if not t.earliest_ns <= t.real_ns <= t.latest_ns:
            findings.append(Finding(name, seq, "time outside its own interval", here))
        leaves.append(sha(b"\x00" + line).digest())
        seq += 1
        if len(findings) > MAX_FINDINGS:
            break
    if tail:
        findings.append(Finding(name, None, "torn tail without a torn record (the writer "
                                "has not recovered yet)", bad_at if bad_at is not None else offset))
    elif bad_at is not None:
        findings.append(Finding(name, seq, "bytes that are not records at the end", bad_at))
    scan.records = len(leaves)
    scan.last_kind = None if rec is None else type(rec).__name__.lower()
    cuts = sorted({s for s, _ in scan.specials} | ({cut} if cut is not None else set()))
    pos = first
    for end in [c for c in cuts if first <= c < first + len(leaves)] + [first + len(leaves)]:
        scan.pieces.append((end, merkle.subtrees(pos, leaves[pos - first:end - first])))
        pos = end
    return scan


def _special(scan: _Scan, rec: Record, seq: int, here: int, bad_at: int | None) -> None:
    """Checks of a system record within its segment, torn-byte rules included."""
    name = scan.name
    if rec.tenant != SYSTEM_TENANT:
        scan.findings.append(Finding(name, seq, f"{type(rec).__name__.lower()} records belong "
                                     f"to {SYSTEM_TENANT}", here))
    if isinstance(rec, Torn):
        if bad_at is None:
            scan.findings.append(Finding(name, seq, "torn record without torn bytes", here))
        elif (rec.segment, rec.offset, rec.length) != (name, bad_at, here - 1 - bad_at):
            scan.findings.append(Finding(name, seq, "torn record names other bytes", here))
    elif bad_at is not None:
        scan.findings.append(Finding(name, seq, "bytes that are not records, not excused by a "
                                     "torn record", bad_at))
    scan.specials.append((seq, rec))


@dataclass
class SegmentReport:
    name: str
    first_seq: int
    records: int
    bytes: int
    state: str  # sealed | active
    flags: str  # +i | +a | +i+a | none | unsupported
    flags_ok: bool


@dataclass
class Report:
    dir: str
    origin: str
    records: int
    root: str
    checkpoint_size: int | None
    segments: list[SegmentReport]
    findings: list[Finding]
    warnings: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["findings"] = [{**asdict(f), "message": str(f)} for f in self.findings]
        d["records_per_second"] = int(self.records / self.seconds) if self.seconds else None
        return d


def _flags(path: Path, sealed: bool) -> tuple[str, bool]:
    flags = osutil.path_flags(path)
    if flags is None:
        return "unsupported", False
    names = "".join(s for bit, s in ((osutil.FS_IMMUTABLE_FL, "+i"), (osutil.FS_APPEND_FL, "+a"))
                    if flags & bit) or "none"
    return names, names == ("+i" if sealed else "+a")


Progress = Callable[[int, int], None]


class _Checker:
    """The cross-segment state of one verification."""

    def __init__(self, layout: Layout, verifier: note.Verifier) -> None:
        self.layout = layout
        self.verifier = verifier
        self.tree = merkle.CompactRange()
        self.findings: list[Finding] = []
        self.checkpoint: cpmod.Checkpoint | None = None
        self.checkpoint_root: bytes | None = None

    def _merge(self, nodes: list[tuple[int, bytes]], end: int) -> None:
        for level, h in nodes:
            self.tree.append_subtree(level, h)
        if self.checkpoint is not None and end == self.checkpoint.size:
            self.checkpoint_root = self.tree.root()

    def segment(self, scan: _Scan, last: bool) -> None:
        first = segment_first_seq(scan.name)
        if first != self.tree.size:
            self.findings.append(Finding(scan.name, self.tree.size,
                                         f"segment name says seq {first}; expected "
                                         f"{self.tree.size} (a segment is missing or extra)"))
            return
        self.findings.extend(scan.findings)
        specials = dict(scan.specials)
        for end, nodes in scan.pieces:
            self._merge(nodes, end)
            if end in specials:
                self.special(scan.name, end, specials[end])
        if not last and scan.last_kind != "seal":
            self.findings.append(Finding(scan.name, self.tree.size - 1,
                                         "sealed segment does not end with a seal record"))

    def special(self, name: str, seq: int, rec: Record) -> None:
        if isinstance(rec, Genesis):
            if seq != 0:
                self.findings.append(Finding(name, seq, "genesis record after seq 0"))
            elif rec.vkey != str(self.verifier) or rec.origin != self.verifier.name:
                self.findings.append(Finding(name, seq, "genesis names another key or origin "
                                             "than the trusted verifier key"))
        elif isinstance(rec, Seal):
            self.seal(name, seq, rec)
        elif seq == 0:
            self.findings.append(Finding(name, seq, "seq 0 is not a genesis record"))

    def seal(self, name: str, seq: int, rec: Seal) -> None:
        try:
            cp = cpmod.open_signed(rec.checkpoint.encode(), [self.verifier])
        except (note.NoteError, cpmod.FormatError) as exc:
            self.findings.append(Finding(name, seq, f"seal checkpoint: {exc}"))
            return
        if rec.segment != name:
            self.findings.append(Finding(name, seq, f"seal names segment {rec.segment}"))
        if (cp.origin, cp.size, cp.root) != (self.verifier.name, seq, self.tree.root()):
            self.findings.append(Finding(name, seq, "seal checkpoint does not match the "
                                         "records before it"))


def _trusted_checkpoint(layout: Layout, verifier: note.Verifier,
                        findings: list[Finding]) -> cpmod.Checkpoint | None:
    try:
        data = layout.checkpoint.read_bytes()
    except FileNotFoundError:
        findings.append(Finding(None, None, "no checkpoint file"))
        return None
    try:
        return cpmod.open_signed(data, [verifier])
    except (note.NoteError, cpmod.FormatError) as exc:
        findings.append(Finding(None, None, f"checkpoint: {exc}"))
        return None


def verify_dir(root: Path, verifier: note.Verifier | None = None, *,
               progress: Progress | None = None, jobs: int | None = None) -> Report:
    """Verify the ledger in ``root``; ``verifier`` defaults to ``root/vkey`` (an auditor
    should pass the copy they trust instead)."""
    started = time.perf_counter()
    layout = Layout(root)
    if verifier is None:
        try:
            verifier = note.Verifier.parse(layout.vkey.read_text())
        except (OSError, note.NoteError) as exc:
            raise VerifyError(f"cannot read verifier key {layout.vkey}: {exc}") from None
    names = layout.segment_names()
    if not names:
        raise VerifyError(f"no segments in {layout.segments}")
    check = _Checker(layout, verifier)
    check.checkpoint = _trusted_checkpoint(layout, verifier, check.findings)
    total = sum((layout.segments / n).stat().st_size for n in names)
    segments, done = [], 0
    cut = check.checkpoint.size if check.checkpoint else None
    for i, scan in enumerate(_scans(layout, names, cut, jobs)):
        last = i == len(names) - 1
        check.segment(scan, last)
        flags, flags_ok = _flags(layout.segments / scan.name, sealed=not last)
        segments.append(SegmentReport(scan.name, segment_first_seq(scan.name), scan.records,
                                      scan.size, "active" if last else "sealed", flags, flags_ok))
        done += scan.size
        if progress:
            progress(done, total)
    warnings = _warnings(layout, names, segments)
    cp = check.checkpoint
    if cp is not None:
        if cp.size > check.tree.size:
            check.findings.append(Finding(None, cp.size, f"checkpoint claims {cp.size} records;"
                                          f" the ledger holds {check.tree.size}"))
        elif cp.size and check.checkpoint_root != cp.root:
            check.findings.append(Finding(None, cp.size, "checkpoint root does not match the "
                                          "records"))
    return Report(str(root), verifier.name, check.tree.size,
                  base64.b64encode(check.tree.root()).decode(), cp.size if cp else None, segments,
                  check.findings[:MAX_FINDINGS], warnings, time.perf_counter() - started)


def _scans(layout: Layout, names: list[str], cut: int | None,
           jobs: int | None) -> Iterator[_Scan]:
    paths = [layout.segments / n for n in names]
    cuts = [cut] * len(names)
    jobs = min(jobs or os.cpu_count() or 1, len(names))
    if jobs <= 1:
        yield from map(_scan, paths, names, cuts)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(_scan, paths, names, cuts)


def _warnings(layout: Layout, names: list[str], segments: list[SegmentReport]) -> list[str]:
    out = [f"{s.name}: {s.state} segment has flags {s.flags}, expected "
           f"{'+i' if s.state == 'sealed' else '+a'}" for s in segments if not s.flags_ok]
    link = layout.link
    if not link.is_symlink() or os.readlink(link) != f"segments/{names[-1]}":
        out.append(f"{link.name} does not point to the active segment {names[-1]}")
    return out
