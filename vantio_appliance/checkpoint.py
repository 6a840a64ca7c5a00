"""C2SP tlog-checkpoint, tlog-proof and the consistency-proof file (pure).

These are the block headers and proofs an auditor checks offline; their bytes
are fixed by FORMATS.md sections 3 and 4 and by the C2SP specs they name.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from . import merkle, note

PROOF_HEADER: Final = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER: Final = "vantio.appliance/consistency-proof@v1"


class FormatError(ValueError):
    """Bytes that do not parse as the format they claim to be."""


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _unb64_hash(s: str, what: str) -> bytes:
    try:
        h = base64.b64decode(s, validate=True)
    except binascii.Error:
        raise FormatError(f"{what} is not base64") from None
    if len(h) != 32:
        raise FormatError(f"{what} is not a SHA-256 hash")
    return h


def _size(s: str, what: str) -> int:
    if not s.isdigit() or (len(s) > 1 and s[0] == "0") or not s.isascii():
        raise FormatError(f"{what} {s!r} is not a decimal size")
    return int(s)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n".encode()

    @classmethod
    def parse_text(cls, text: bytes) -> Checkpoint:
        try:
            lines = text.decode().split("\n")
        except UnicodeDecodeError:
            raise FormatError("checkpoint is not UTF-8") from None
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise FormatError("checkpoint needs origin, size and root lines")
        if "" in lines[3:-1]:
            raise FormatError("checkpoint extension lines must not be empty")
        return cls(lines[0], _size(lines[1], "tree size"), _unb64_hash(lines[2], "root hash"))


def sign(cp: Checkpoint, signer: note.Signer, *more: note.Signer) -> bytes:
    """The signed checkpoint: one signature line per signer, in order (identity first)."""
    text = cp.text()
    return signer.sign(text) + b"".join(s.signature_line(text) for s in more)


def open_signed(signed: bytes, verifiers: list[note.Verifier]) -> Checkpoint:
    """Verify a signed checkpoint against trusted keys and parse it."""
    text, _ = note.verify(signed, verifiers)
    return Checkpoint.parse_text(text)


def format_inclusion(index: int, proof: list[bytes], signed_checkpoint: bytes) -> bytes:
    """A C2SP tlog-proof: header, index, audit path, empty line, checkpoint."""
    lines = [PROOF_HEADER, f"index {index}", *map(_b64, proof)]
    return ("\n".join(lines) + "\n\n").encode() + signed_checkpoint


@dataclass(frozen=True)
class InclusionProof:
    index: int
    path: list[bytes]
    signed_checkpoint: bytes
    extra: bytes | None = None


def parse_inclusion(data: bytes) -> InclusionProof:
    head, sep, signed = data.partition(b"\n\n")
    if not sep or not signed:
        raise FormatError("tlog-proof has no checkpoint after an empty line")
    try:
        lines = head.decode().split("\n")
    except UnicodeDecodeError:
        raise FormatError("tlog-proof is not UTF-8") from None
    if lines[0] != PROOF_HEADER:
        raise FormatError(f"first line must be {PROOF_HEADER}")
    rest, extra = lines[1:], None
    if rest and rest[0].startswith("extra "):
        try:
            extra = base64.b64decode(rest[0][6:], validate=True)
        except binascii.Error:
            raise FormatError("extra is not base64") from None
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise FormatError("tlog-proof has no index line")
    index = _size(rest[0][6:], "index")
    path = [_unb64_hash(s, "proof hash") for s in rest[1:]]
    return InclusionProof(index, path, signed, extra)


def verify_inclusion(data: bytes, line: bytes, verifiers: list[note.Verifier]) -> Checkpoint:
    """Check a tlog-proof for one record line (without its newline)."""
    proof = parse_inclusion(data)
    cp = open_signed(proof.signed_checkpoint, verifiers)
    merkle.verify_inclusion(proof.index, cp.size, merkle.leaf_hash(line), proof.path, cp.root)
    return cp


def format_consistency(old: int, new: int, proof: list[bytes]) -> bytes:
    lines = [CONSISTENCY_HEADER, f"old {old}", f"new {new}", *map(_b64, proof)]
    return ("\n".join(lines) + "\n").encode()


def parse_consistency(data: bytes) -> tuple[int, int, list[bytes]]:
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError:
        raise FormatError("consistency proof is not UTF-8") from None
    if lines[-1] != "" or len(lines) < 4 or lines[0] != CONSISTENCY_HEADER:
        raise FormatError(f"consistency proof must start with {CONSISTENCY_HEADER}, old, new")
    if not lines[1].startswith("old ") or not lines[2].startswith("new "):
        raise FormatError("consistency proof needs 'old N' and 'new N' lines")
    old, new = _size(lines[1][4:], "old size"), _size(lines[2][4:], "new size")
    return old, new, [_unb64_hash(s, "proof hash") for s in lines[3:-1]]


def verify_consistency(data: bytes, old_cp: Checkpoint, new_cp: Checkpoint) -> None:
    """Check a consistency-proof file between two (already verified) checkpoints."""
    old, new, path = parse_consistency(data)
    if (old, new) != (old_cp.size, new_cp.size):
        raise merkle.ProofError(
            f"proof is for sizes {old}->{new}, checkpoints are {old_cp.size}->{new_cp.size}")
    if old_cp.origin != new_cp.origin:
        raise merkle.ProofError("checkpoints are from different origins")
    merkle.verify_consistency(old, new, old_cp.root, new_cp.root, path)
