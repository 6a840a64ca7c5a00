"""Offline verification of a ledger directory, trusting nothing but two public keys:
the identity verifier key and the epoch-0 verifier key, as handed out at init.

Each segment is scanned on its own (in parallel where there are several):
canonical form, schema, sequence, torn-tail rules, leaf hashes. The main
process then checks what spans segments: file names against the sequence,
the genesis record against the key, the epoch chain (each epoch record signed
by the previous epoch's key, committing to the tree before it), every seal
against the tree of all records before it and the epoch in force, and the
latest checkpoint.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import itertools
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
from .canonical import encode as canonical_encode
from .epoch import EpochChain, EpochError
from .layout import Layout, segment_first_seq
from .records import (
    SYSTEM_TENANT,
    Epoch,
    Event,
    Gap,
    Genesis,
    Record,
    RecordError,
    Seal,
    Torn,
    decode_record,
)

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


CHUNK_BYTES: Final = 4 * 2**20  # a segment is scanned in chunks of about this size


@dataclass(frozen=True)
class _Task:
    path: Path
    name: str
    start: int  # byte range of the segment, on line boundaries
    end: int
    cut: int | None  # a tree size whose root is needed (the checkpoint's)


@dataclass
class _Scan:
    """What one chunk of a segment holds, as the main process needs it."""

    name: str
    start: int
    size: int
    first: int | None = None  # seq of its first record (from the file name at byte 0)
    records: int = 0
    # leaves as subtrees, cut before every system record and at the task's cut:
    # (tree size after the piece, [(level, hash), ...])
    pieces: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)
    specials: list[tuple[int, Record]] = field(default_factory=list)  # (seq, record)
    findings: list[Finding] = field(default_factory=list)
    last_kind: str | None = None
    open_bad: int | None = None  # non-record bytes running into the next chunk
    lead_torn: bool = False  # starts with a torn record excusing the previous chunk's bytes


def _scan(task: _Task) -> _Scan:
    """Scan a chunk of a segment: a pure function of its bytes (runs in a worker)."""
    with task.path.open("rb") as f:
        f.seek(task.start)
        data = f.read(task.end - task.start)
    name = task.name
    scan = _Scan(name, task.start, len(data))
    seq = segment_first_seq(name) if task.start == 0 else None
    leaves: list[bytes] = []
    sha, decode, encode = hashlib.sha256, decode_record, canonical_encode
    findings = scan.findings
    bad_at: int | None = None  # start of bytes that are not records, to be excused by `torn`
    offset, rec = task.start, None
    *lines, tail = data.split(b"\n")
    add_leaf = leaves.append
    for line in lines:
        here, offset = offset, offset + len(line) + 1
        try:
            rec = decode(line)
        except (RecordError, ValueError) as exc:
            if line[:1] == b"{" and line[-1:] == b"}":  # whole but wrong: not a tear
                findings.append(Finding(name, seq, f"invalid record: {exc}", here))
            bad_at = here if bad_at is None else bad_at
            continue
        if seq is None or scan.first is None:
            seq = rec.seq if seq is None else seq
            scan.first = seq
            scan.lead_torn = type(rec) is Torn and bad_at is None and task.start > 0
        if type(rec) is Event or type(rec) is Gap:  # a tenant's record
            if bad_at is not None or rec.tenant == SYSTEM_TENANT:
                _event_findings(scan, rec, seq, here, bad_at)
                bad_at = None
        else:
            _special(scan, rec, seq, here, bad_at)
            bad_at = None
        if encode(rec) != line:
            findings.append(Finding(name, rec.seq, "not in canonical form", here))
        if rec.seq != seq:
            findings.append(Finding(name, rec.seq, f"expected seq {seq}", here))
            seq = rec.seq
        t = rec.time
        if not t.earliest_ns <= t.real_ns <= t.latest_ns:
            findings.append(Finding(name, seq, "time outside its own interval", here))
            if len(findings) > MAX_FINDINGS:
                break
        add_leaf(sha(b"\x00" + line).digest())
        seq += 1
    if tail:
        findings.append(Finding(name, None, "torn tail without a torn record (the writer "
                                "has not recovered yet)", bad_at if bad_at is not None else offset))
    scan.open_bad = None if tail else bad_at
    scan.records = len(leaves)
    scan.last_kind = None if rec is None else type(rec).__name__.lower()
    _pieces(scan, leaves, task.cut)
    return scan


def scan_segment(path: Path, name: str) -> _Scan:
    """Scan a whole segment file in this process (a bundle's custodial copy)."""
    return _scan(_Task(path, name, 0, path.stat().st_size, None))


def _pieces(scan: _Scan, leaves: list[bytes], cut: int | None) -> None:
    if scan.first is None:
        return
    first, end_all = scan.first, scan.first + len(leaves)
    cuts = {s for s, _ in scan.specials} | ({cut} if cut is not None else set())
    pos = first
    for end in [*sorted(c for c in cuts if first <= c < end_all), end_all]:
        scan.pieces.append((end, merkle.subtrees(pos, leaves[pos - first:end - first])))
        pos = end


def _event_findings(scan: _Scan, rec: Event | Gap, seq: int, here: int, bad_at: int | None) -> None:
    if bad_at is not None:
        scan.findings.append(Finding(scan.name, seq, "bytes that are not records, not excused "
                                     "by a torn record", bad_at))
    if rec.tenant == SYSTEM_TENANT:
        scan.findings.append(Finding(scan.name, seq, f"{type(rec).__name__.lower()} records cannot "
                                     "belong to the ledger", here))


def _special(scan: _Scan, rec: Record, seq: int, here: int, bad_at: int | None) -> None:
    """Checks of a system record within its segment, torn-byte rules included."""
    name = scan.name
    if rec.tenant != SYSTEM_TENANT:
        scan.findings.append(Finding(name, seq, f"{type(rec).__name__.lower()} records belong "
                                     f"to {SYSTEM_TENANT}", here))
    if isinstance(rec, Torn):
        if bad_at is None and not (scan.lead_torn and seq == scan.first):
            scan.findings.append(Finding(name, seq, "torn record without torn bytes", here))
        elif bad_at is not None and (rec.segment, rec.offset, rec.length) != (
                name, bad_at, here - 1 - bad_at):
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
    epochs: int = 0  # epoch records verified along the chain
    notices: list[str] = field(default_factory=list)  # what the verification had to trust

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
    text = osutil.flags_text(path)
    return text, text == ("+i" if sealed else "+a")


Progress = Callable[[int, int], None]


class Checker:
    """The cross-segment state of one verification.

    With ``known_epochs`` the chain is complete already (a bundle's epochs
    file), and epoch records met in the segments must match it; otherwise
    they are accepted into it one by one, in ledger order.
    """

    def __init__(self, verifier: note.Verifier, chain: EpochChain,
                 tree: merkle.CompactRange | None = None, known_epochs: bool = False) -> None:
        self.verifier = verifier
        self.chain = chain
        self.known_epochs = known_epochs
        self.tree = tree.copy() if tree is not None else merkle.CompactRange()
        self.broken = False  # the sequence broke: roots from here on mean nothing
        self.findings: list[Finding] = []
        self.checkpoint: cpmod.Checkpoint | None = None
        self.checkpoint_root: bytes | None = None
        self._seals: list[int] = []  # seqs of the seal records of the segment being read

    def segment(self, chunks: list[_Scan], last: bool) -> None:
        name = chunks[0].name
        first = segment_first_seq(name)
        if first != self.tree.size and not self.broken:
            self.findings.append(Finding(name, self.tree.size,
                                         f"segment name says seq {first}; expected "
                                         f"{self.tree.size} (a segment is missing or extra)"))
            self.broken = True
        for chunk in chunks:
            self.findings.extend(chunk.findings)
            if chunk.first is not None and chunk.first != self.tree.size and not self.broken:
                self.findings.append(Finding(name, chunk.first, f"expected seq {self.tree.size}",
                                             chunk.start))
                self.broken = True
            if not self.broken:
                self._merge(chunk)
        if chunks[-1].open_bad is not None:
            self.findings.append(Finding(name, None, "bytes that are not records at the end",
                                         chunks[-1].open_bad))
        for seq in self._seals:  # a seal closes its segment: nothing may follow it there
            if not self.broken and seq != self.tree.size - 1:
                self.findings.append(Finding(name, seq, "records follow the seal record in "
                                             "its segment (the seal was never finished)"))
        self._seals.clear()
        kinds = [c.last_kind for c in chunks if c.last_kind]
        if not last and (not kinds or kinds[-1] != "seal"):
            self.findings.append(Finding(name, None,
                                         "sealed segment does not end with a seal record"))

    def _merge(self, chunk: _Scan) -> None:
        specials = dict(chunk.specials)
        for end, nodes in chunk.pieces:
            for level, h in nodes:
                self.tree.append_subtree(level, h)
            if self.checkpoint is not None and end == self.checkpoint.size:
                self.checkpoint_root = self.tree.root()
            if end in specials:
                self.special(chunk.name, end, specials[end])

    def special(self, name: str, seq: int, rec: Record) -> None:
        if isinstance(rec, Genesis):
            if seq != 0:
                self.findings.append(Finding(name, seq, "genesis record after seq 0"))
            elif rec.vkey != str(self.verifier) or rec.origin != self.verifier.name:
                self.findings.append(Finding(name, seq, "genesis names another key or origin "
                                             "than the trusted verifier key"))
        elif isinstance(rec, Seal):
            self.seal(name, seq, rec)
        elif isinstance(rec, Epoch):
            self.epoch(name, seq, rec)
        elif seq == 0:
            self.findings.append(Finding(name, seq, "seq 0 is not a genesis record"))

    def epoch(self, name: str, seq: int, rec: Epoch) -> None:
        """An epoch record: in the chain, and committing to the tree of the records before it."""
        root = base64.b64encode(self.tree.root()).decode()
        if rec.root != root:
            self.findings.append(Finding(name, seq, f"epoch {rec.epoch}: record commits to a "
                                         "root that does not match the records before it"))
        if self.known_epochs:
            known = next((e for e in self.chain.epochs if e.n == rec.epoch), None)
            same = known is not None and (known.seq, str(known.verifier), base64.b64encode(
                known.root).decode()) == (seq, rec.vkey, rec.root)
            if not same:
                self.findings.append(Finding(name, seq, f"epoch {rec.epoch}: record differs "
                                             "from the verified epoch chain"))
            return
        try:
            self.chain.accept(rec.epoch, seq, rec.root, rec.vkey, rec.signature)
        except EpochError as exc:
            self.findings.append(Finding(name, seq, str(exc)))

    def seal(self, name: str, seq: int, rec: Seal) -> None:
        self._seals.append(seq)
        try:
            cp = self.chain.open_checkpoint(rec.checkpoint.encode(), "seal checkpoint")
        except (note.NoteError, cpmod.FormatError) as exc:
            self.findings.append(Finding(name, seq, f"seal checkpoint: {exc}"))
            return
        except EpochError as exc:
            self.findings.append(Finding(name, seq, str(exc)))
            return
        if rec.segment != name:
            self.findings.append(Finding(name, seq, f"seal names segment {rec.segment}"))
        if (cp.origin, cp.size, cp.root) != (self.verifier.name, seq, self.tree.root()):
            self.findings.append(Finding(name, seq, "seal checkpoint does not match the "
                                         "records before it"))


def _trusted_checkpoint(layout: Layout, verifier: note.Verifier,
                        findings: list[Finding]) -> tuple[bytes, cpmod.Checkpoint | None]:
    """The checkpoint file, its identity signature checked (its epoch's is checked last)."""
    try:
        data = layout.checkpoint.read_bytes()
    except FileNotFoundError:
        findings.append(Finding(None, None, "no checkpoint file"))
        return b"", None
    try:
        return data, cpmod.open_signed(data, [verifier])
    except (note.NoteError, cpmod.FormatError) as exc:
        findings.append(Finding(None, None, f"checkpoint: {exc}"))
        return data, None


def _key(path: Path) -> note.Verifier:
    try:
        return note.Verifier.parse(path.read_text())
    except (OSError, note.NoteError) as exc:
        raise VerifyError(f"cannot read verifier key {path}: {exc}") from None


def verify_dir(root: Path, verifier: note.Verifier | None = None, *,
               epoch0: note.Verifier | None = None,
               progress: Progress | None = None, jobs: int | None = None) -> Report:
    """Verify the ledger in ``root``. ``verifier`` defaults to ``root/vkey`` and ``epoch0``
    to ``root/epoch0.vkey``: the host's copies, which a root attacker can replace. An
    auditor passes the copies handed out at init instead (``notices`` says which were used).
    """
    started = time.perf_counter()
    layout = Layout(root)
    notices = []
    if verifier is None:
        verifier = _key(layout.vkey)
    if epoch0 is None:
        epoch0 = _key(layout.epoch0_vkey)
        notices.append(f"epoch-0 key taken from {layout.epoch0_vkey}, the host's own copy: "
                       "pass --epoch-key with the copy handed out at init to rule out a "
                       "history re-signed from scratch")
    try:
        chain = EpochChain(verifier, epoch0)
    except EpochError as exc:
        raise VerifyError(str(exc)) from None
    names = layout.segment_names()
    if not names:
        raise VerifyError(f"no segments in {layout.segments}")
    check = Checker(verifier, chain)
    signed, check.checkpoint = _trusted_checkpoint(layout, verifier, check.findings)
    cut = check.checkpoint.size if check.checkpoint else None
    try:
        tasks = [_tasks(layout.segments / n, n, cut) for n in names]
    except OSError as exc:
        raise VerifyError(f"cannot read {exc.filename}: {exc.strerror}") from None
    total, done = sum(t[-1].end for t in tasks), 0
    segments = []
    for i, chunks in enumerate(_scan_all(tasks, jobs)):
        last = i == len(names) - 1
        check.segment(chunks, last)
        name = chunks[0].name
        flags, flags_ok = _flags(layout.segments / name, sealed=not last)
        size = tasks[i][-1].end
        segments.append(SegmentReport(name, segment_first_seq(name),
                                      sum(c.records for c in chunks), size,
                                      "active" if last else "sealed", flags, flags_ok))
        done += size
        if progress:
            progress(done, total)
    cp = check.checkpoint
    if cp is not None and not check.broken:
        if cp.size > check.tree.size:
            check.findings.append(Finding(None, cp.size, f"checkpoint claims {cp.size} records;"
                                          f" the ledger holds {check.tree.size}"))
        elif check.checkpoint_root != cp.root:
            check.findings.append(Finding(None, cp.size, "checkpoint root does not match the "
                                          "records"))
        try:
            chain.open_checkpoint(signed)
        except EpochError as exc:
            check.findings.append(Finding(None, cp.size, str(exc)))
        except (note.NoteError, cpmod.FormatError) as exc:  # checked already; for mypy's sake
            check.findings.append(Finding(None, cp.size, f"checkpoint: {exc}"))
    return Report(str(root), verifier.name, check.tree.size,
                  base64.b64encode(check.tree.root()).decode(), cp.size if cp else None,
                  segments, check.findings[:MAX_FINDINGS], _warnings(layout, names, segments),
                  time.perf_counter() - started, len(chain.epochs), notices)


def _tasks(path: Path, name: str, cut: int | None) -> list[_Task]:
    """Split a segment into chunks that start and end on line boundaries."""
    size = path.stat().st_size
    bounds = [0]
    with path.open("rb") as f:
        while bounds[-1] + CHUNK_BYTES < size:
            f.seek(bounds[-1] + CHUNK_BYTES)
            window = f.read(1 << 16)
            nl = window.find(b"\n")
            if nl < 0:
                break
            bounds.append(bounds[-1] + CHUNK_BYTES + nl + 1)
    bounds.append(size)
    return [_Task(path, name, a, b, cut) for a, b in itertools.pairwise(bounds) if b > a] or [
        _Task(path, name, 0, 0, cut)]


def _scan_all(tasks: list[list[_Task]], jobs: int | None) -> Iterator[list[_Scan]]:
    """Each segment's chunk scans, in order; all chunks of all segments run in parallel."""
    flat = [t for seg in tasks for t in seg]
    jobs = min(jobs or os.cpu_count() or 1, len(flat))
    pool = ProcessPoolExecutor(jobs, initializer=gc.disable) if jobs > 1 else None
    try:
        scans = pool.map(_scan, flat, chunksize=1) if pool else map(_scan, flat)
        for seg in tasks:
            chunks = [next(scans) for _ in seg]
            # a chunk boundary that cuts torn bytes from their torn record: rescan whole
            if any(c.lead_torn for c in chunks[1:]) or any(c.open_bad is not None
                                                           for c in chunks[:-1]):
                chunks = [_scan(_Task(seg[0].path, seg[0].name, 0, seg[-1].end, seg[0].cut))]
            yield chunks
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _warnings(layout: Layout, names: list[str], segments: list[SegmentReport]) -> list[str]:
    out = [f"{s.name}: {s.state} segment has flags {s.flags}, expected "
           f"{'+i' if s.state == 'sealed' else '+a'}" for s in segments if not s.flags_ok]
    link = layout.link
    if not link.is_symlink() or os.readlink(link) != f"segments/{names[-1]}":
        out.append(f"{link.name} does not point to the active segment {names[-1]}")
    return out
