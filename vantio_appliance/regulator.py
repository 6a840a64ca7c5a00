"""`vantio export`: the records of a time range, each with its proof, for an examiner.

SEC 17a-4 examination: a regulator asks for the records of a period and must
be able to check them without the host. The bundle holds each record's line
and a C2SP tlog-proof of its inclusion in one signed checkpoint, plus what
checks that checkpoint (the epoch records with their proofs, the log's keys),
a manifest, the standalone verifier and a `range` file naming the period and
the records' seqs. The records are one unbroken run of seqs, from the first
record stamped at or after FROM to the last stamped before TO, so a verifier
can see that none is missing in between. It reads the ledger only (no writer
lock): it proves against the latest published checkpoint.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import bundle, note, reader
from . import checkpoint as cpmod
from ._internal import osutil
from .anchor import AnchorError, BundleWriter, CopyProgress, scan, verify_script, write_signed
from .layout import Layout

RANGE: Final = "range"
RECORDS: Final = "records"
RANGE_HEADER: Final = "vantio.appliance/record-range@v2"
#: records (two files each) a directory of ``records/`` holds: a FAT directory takes at most
#: 65,536 entries and a long name three of them, so a flat ``records/`` broke vfat media
#: past about 10,000 records
RECORDS_PER_DIR: Final = 1000
_REAL_NS: Final = re.compile(rb'"real_ns":([0-9]+)')  # canonical: only the record's time


class ExportError(AnchorError):
    """Cannot export as asked (usage, I/O, unreadable ledger): exit 2, nothing written."""


class NothingInRange(ExportError):
    """No record in the period: exit 1, nothing written."""


@dataclass(frozen=True)
class Range:
    """The ``range`` file: the period asked for and the run of seqs exported."""

    start_ns: int
    end_ns: int  # exclusive
    first: int
    last: int

    def format(self) -> bytes:
        return (f"{RANGE_HEADER}\nfrom {self.start_ns}\nto {self.end_ns}\n"
                f"first {self.first}\nlast {self.last}\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> Range:
        try:
            head, *fields, end = data.decode().split("\n")
            pairs = [f.split(" ") for f in fields]
            if head != RANGE_HEADER or end != "" or [p[0] for p in pairs] != [
                    "from", "to", "first", "last"] or any(len(p) != 2 for p in pairs):
                raise ValueError
            return cls(*(int(p[1]) for p in pairs))
        except (UnicodeDecodeError, ValueError):
            raise bundle.BundleFormatError(f"the range file is not a {RANGE_HEADER}") from None


def _stem(seq: int) -> str:
    """``records/<seq // 1000, 13 digits>/<seq, 16 digits>``: the directory's name is the
    first 13 digits of its records' names."""
    return f"{RECORDS}/{seq // RECORDS_PER_DIR:013d}/{seq:016d}"


def record_name(seq: int) -> str:
    return f"{_stem(seq)}.record"


def proof_name(seq: int) -> str:
    return f"{_stem(seq)}.tlog-proof"


def parse_time(text: str) -> int:
    """An ISO 8601 date or date-time in nanoseconds since the epoch; UTC unless it says."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date (2026-11-23 or "
                         "2026-11-23T10:00:00Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Exported:
    path: Path
    range: Range
    records: int
    size: int  # of the checkpoint proved against
    files: int
    bytes: int
    manifest_sha256: str


def export(root: Path, start_ns: int, end_ns: int, out: Path,
           progress: CopyProgress | None = None) -> Exported:
    """Write the regulator bundle of the records stamped in [start_ns, end_ns) to ``out``."""
    layout = Layout(root)
    if not layout.vkey.is_file():
        raise ExportError(f"{root} is not a ledger (no vkey)")
    if start_ns >= end_ns:
        raise ExportError("--from must be before --to")
    if out.exists():
        raise ExportError(f"{out} exists already")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} is not a directory")
    identity = note.Verifier.parse(layout.vkey.read_text())
    try:
        signed, cp = reader.signed_checkpoint(layout, identity)
    except reader.ReadError as exc:
        raise ExportError(str(exc)) from None
    first = last = -1
    try:
        edge, run = reader.kept(layout, cp.size)
    except reader.ReadError as exc:
        raise ExportError(str(exc)) from None
    for ln in run:  # a pass for the run's ends: memory stays small
        if start_ns <= _stamp(ln.data) < end_ns:
            first = ln.seq if first < 0 else first
            last = ln.seq
    if last < 0:
        gone = f" (the records before seq {edge.size} expired)" if edge.size else ""
        raise NothingInRange(f"no record stamped from {iso(start_ns)} to {iso(end_ns)} in "
                             f"the checkpoint of size {cp.size}{gone}")
    rng = Range(start_ns, end_ns, first, last)
    kept = [ln for ln in reader.lines(layout, last + 1) if ln.seq >= first]
    tree_scan = scan(layout, cp.size, cp.root)
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    w = BundleWriter(partial, None, 0, fsync=False)  # one sync at the end: many small files
    try:
        write_signed(w, layout, signed, cp.size, tree_scan)
        count = rng.last - rng.first + 1
        for i, ln in enumerate(kept):
            w.write(record_name(ln.seq), ln.data + b"\n")
            w.write(proof_name(ln.seq), cpmod.format_inclusion(
                ln.seq, tree_scan.tree.inclusion_proof(ln.seq, cp.size), signed))
            if progress and i % 1000 == 999:
                progress(i + 1, count)
        w.write(RANGE, rng.format())
        w.write(bundle.VERIFY_SCRIPT, verify_script())
        w.write(bundle.README, _readme(cp, rng).encode())
        manifest = bundle.format_manifest(w.digests)
        w.write(bundle.MANIFEST, manifest)
        os.sync()  # every file durable before the bundle gets its final name
        os.rename(partial, out)
        osutil.fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Exported(out, rng, count, cp.size, len(w.digests), w.bytes,
                    hashlib.sha256(manifest).hexdigest())


def _stamp(line: bytes) -> int:
    m = _REAL_NS.search(line)
    return int(m[1]) if m else -1


def _readme(cp: cpmod.Checkpoint, rng: Range) -> str:
    return f"""vantio regulator export
=======================

Log (origin):  {cp.origin}
Period:        {iso(rng.start_ns)} to {iso(rng.end_ns)} (the end excluded)
Records:       seq {rng.first} to {rng.last}, {rng.last - rng.first + 1} records, every seq in
               between (a record between them stamped outside the period is kept, so
               that none is missing)
Proved in:     the checkpoint of tree size {cp.size}, root
               {base64.b64encode(cp.root).decode()}

records/<dir>/<seq>.record is a record's line; records/<dir>/<seq>.tlog-proof
proves it is leaf <seq> of the tree the file `checkpoint` signs (<seq> has 16
digits; <dir>, its first 13, holds 1000 records). Check it all with the
log's public keys, obtained from the operator out of band (its identity key
and epoch-0 key, one a line, in e.g. trusted.keys):

    python3 verify.py --trusted-keys trusted.keys          (Python 3.11+, cryptography)
    vantio verify . --trusted-keys trusted.keys

Both exit 0 when everything checks, 1 when something does not, 2 when the
input cannot be read. Formats: docs/anchoring.md and docs/formats.md of
vantio-appliance.
"""


__all__ = ["ExportError", "Exported", "NothingInRange", "Range", "export", "iso",
           "parse_time", "proof_name", "record_name"]
