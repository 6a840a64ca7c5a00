"""Reading a ledger directory without writing it: records, leaves, proofs.

Readers take no lock: they see whole lines only (a line is whole once its
newline is on disk) and skip torn bytes, which are not records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from . import checkpoint as cpmod
from . import merkle, note
from .canonical import CanonicalError, decode
from .layout import Layout, segment_first_seq


class ReadError(RuntimeError):
    """The ledger or its checkpoint cannot be read or does not add up."""


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
    raise ReadError(f"no record with {'seq ' + str(seq) if seq is not None else trace_id}")


def signed_checkpoint(layout: Layout, verifier: note.Verifier) -> tuple[bytes, cpmod.Checkpoint]:
    try:
        signed = layout.checkpoint.read_bytes()
        return signed, cpmod.open_signed(signed, [verifier])
    except OSError as exc:
        raise ReadError(f"cannot read {layout.checkpoint}: {exc.strerror}") from None
    except (note.NoteError, cpmod.FormatError) as exc:
        raise ReadError(f"{layout.checkpoint}: {exc}") from None


def tree(layout: Layout, size: int, root: bytes) -> merkle.Tree:
    """The tree of the first ``size`` records, checked against ``root``."""
    sha = hashlib.sha256
    t = merkle.Tree([sha(b"\x00" + ln.data).digest() for ln in lines(layout, size)])
    if t.size != size or t.root() != root:
        raise ReadError(f"the records do not match the checkpoint (size {size}); "
                        "run vantio ledger verify")
    return t


def inclusion_proof(layout: Layout, verifier: note.Verifier, line: Line) -> bytes:
    """A C2SP tlog-proof for ``line`` against the latest checkpoint."""
    signed, cp = signed_checkpoint(layout, verifier)
    if line.seq >= cp.size:
        raise ReadError(f"seq {line.seq} is not yet in the checkpoint (size {cp.size})")
    path = tree(layout, cp.size, cp.root).inclusion_proof(line.seq, cp.size)
    return cpmod.format_inclusion(line.seq, path, signed)


def consistency_proof(layout: Layout, verifier: note.Verifier, old: int,
                      new: int | None = None) -> bytes:
    """The consistency proof from tree size ``old`` to ``new`` (default: the latest checkpoint)."""
    _, cp = signed_checkpoint(layout, verifier)
    new = cp.size if new is None else new
    if not 0 <= old <= new <= cp.size:
        raise ReadError(f"sizes must satisfy 0 <= old <= new <= {cp.size}")
    proof = tree(layout, cp.size, cp.root).consistency_proof(old, new)
    return cpmod.format_consistency(old, new, proof)
