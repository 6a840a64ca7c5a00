"""Reading a ledger directory without writing it: records, leaves, proofs.

Readers take no lock: they see whole lines only (a line is whole once its
newline is on disk) and skip torn bytes, which are not records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from . import checkpoint as cpmod
from . import merkle, note, retention
from .canonical import CanonicalError, decode
from .layout import Layout, segment_first_seq


class ReadError(RuntimeError):
    """The ledger or its checkpoint cannot be read or does not add up."""


class Expired(ReadError):
    """The record was deleted after its retention end (`vantio ledger expire`)."""


@dataclass(frozen=True)
class Line:
    seq: int
    segment: str
    offset: int  # of the line in its segment
    data: bytes  # the record line without its newline


def lines(layout: Layout, upto: int | None = None) -> Iterator[Line]:
    """Every record line in ledger order (torn bytes skipped), up to seq ``upto``."""
    names = layout.segment_names()
    seq = segment_first_seq(names[0]) if names else 0  # not 0 once expired ones are deleted
    for name in names:
        offset = 0
        for raw in layout.read_segment(name).split(b"\n")[:-1]:
            here, offset = offset, offset + len(raw) + 1
            if not raw.startswith(b"{") or not raw.endswith(b"}"):
                continue  # torn bytes: excused by the torn record that follows
            if upto is not None and seq >= upto:
                return
            yield Line(seq, name, here, raw)
            seq += 1


def find(layout: Layout, *, seq: int | None = None, trace_id: str | None = None) -> Line:
    """The record with ``seq`` or ``trace_id``; ReadError when there is none."""
    needle = f'"trace_id":"{trace_id}"'.encode() if trace_id else None
    for line in lines(layout):
        if seq is not None and line.seq == seq:
            return line
        if needle is not None and needle in line.data:
            try:
                if decode(line.data).get("trace_id") == trace_id:
                    return line
            except CanonicalError:
                continue
    edge = expired_edge(layout)
    if seq is not None and seq < edge.size:
        raise Expired(expired_message(layout, seq, edge.size))
    gone = f" (or it was among the {edge.size} records that expired)" if edge.size else ""
    what = f"seq {seq}" if seq is not None else trace_id
    raise ReadError(f"no record with {what}{gone}")


def expired_edge(layout: Layout) -> merkle.CompactRange:
    """The tree's right edge before the first kept record (empty when none expired)."""
    try:
        return retention.expired_edge(layout)
    except (OSError, retention.RetentionError) as exc:
        raise ReadError(str(exc)) from None


def expired_message(layout: Layout, seq: int, first: int) -> str:
    """Why seq has no record any more: it expired, and when (the last deletion)."""
    try:
        when = dt.datetime.fromtimestamp(layout.expired.stat().st_mtime, dt.UTC)
        on = f" on {when:%Y-%m-%dT%H:%M:%SZ}"
    except OSError:
        on = ""
    return (f"seq {seq} expired{on}: the records before seq {first} were deleted after "
            "their retention end (vantio ledger expire), so no proof of it can be made")


def kept(layout: Layout, size: int | None) -> tuple[merkle.CompactRange, Iterator[Line]]:
    """The edge the kept records follow, and the kept records before seq ``size``."""
    edge = expired_edge(layout)
    return edge, (ln for ln in lines(layout, size) if ln.seq >= edge.size)


def signed_checkpoint(layout: Layout, verifier: note.Verifier) -> tuple[bytes, cpmod.Checkpoint]:
    try:
        signed = layout.checkpoint.read_bytes()
        return signed, cpmod.open_signed(signed, [verifier])
    except OSError as exc:
        raise ReadError(f"cannot read {layout.checkpoint}: {exc.strerror}") from None
    except (note.NoteError, cpmod.FormatError) as exc:
        raise ReadError(f"{layout.checkpoint}: {exc}") from None


def tree(layout: Layout, size: int, root: bytes) -> merkle.Tree:
    """The tree of the first ``size`` records, checked against ``root``; after an expire,
    it starts from the expired records' edge and holds the kept ones."""
    sha = hashlib.sha256
    edge, records = kept(layout, size)
    t = merkle.Tree([sha(b"\x00" + ln.data).digest() for ln in records], start=edge)
    if t.size != size or t.root() != root:
        raise ReadError(f"the records do not match the checkpoint (size {size}); "
                        "run vantio ledger verify")
    return t


def inclusion_proof(layout: Layout, verifier: note.Verifier, line: Line) -> bytes:
    """A C2SP tlog-proof for ``line`` against the latest checkpoint."""
    signed, cp = signed_checkpoint(layout, verifier)
    if line.seq >= cp.size:
        raise ReadError(f"seq {line.seq} is not yet in the checkpoint (size {cp.size})")
    t = tree(layout, cp.size, cp.root)
    if line.seq < t.first:
        raise Expired(expired_message(layout, line.seq, t.first))
    path = t.inclusion_proof(line.seq, cp.size)
    return cpmod.format_inclusion(line.seq, path, signed)


def consistency_proof(layout: Layout, verifier: note.Verifier, old: int,
                      new: int | None = None) -> bytes:
    """The consistency proof from tree size ``old`` to ``new`` (default: the latest checkpoint)."""
    _, cp = signed_checkpoint(layout, verifier)
    new = cp.size if new is None else new
    if not 0 <= old <= new <= cp.size:
        raise ReadError(f"sizes must satisfy 0 <= old <= new <= {cp.size}")
    t = tree(layout, cp.size, cp.root)
    if 0 < old < t.first:
        raise Expired(f"tree size {old} lies before the first kept record (seq {t.first}): "
                      "the records before it expired, so no proof from it can be made")
    proof = t.consistency_proof(old, new)
    return cpmod.format_consistency(old, new, proof)
