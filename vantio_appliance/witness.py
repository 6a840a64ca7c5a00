"""C2SP tlog-cosignature v1 (Ed25519), the witness's decision, and quorum checks (pure).

A witness keeps, per log origin, the last checkpoint it cosigned and cosigns a
new one only when it is the same tree or a proven extension of it. A verifier
then requires cosignatures of K distinct witnesses it trusts: a host that
forks or rolls back its history would need K witnesses to sign both sides.
Nothing here reads or writes files; ``_witness_cli`` does the I/O.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import merkle, note
from .checkpoint import Checkpoint

MAX_TIMESTAMP: Final = 2**63 - 1  # C2SP: the timestamp MUST NOT exceed 2^63 - 1
_BLOB_LEN: Final = 8 + 64  # after the key id: uint64 timestamp, Ed25519 signature


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """What a v1 cosignature signs: a header, the time, then the whole note body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature time {timestamp} outside 0..2^63-1")
    return b"cosignature/v1\ntime %d\n" % timestamp + body


@dataclass(frozen=True)
class Cosignature:
    """One parsed cosignature line: who (name, key id), when, and the signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes


def parse_cosignature(sig: note.Signature) -> Cosignature:
    """Read a note signature as a cosignature: key id || uint64 time || 64-byte signature."""
    if len(sig.signature) != _BLOB_LEN:
        raise note.NoteError(f"signature of {sig.name} is not a v1 cosignature (wrong length)")
    return Cosignature(sig.name, sig.key_id, int.from_bytes(sig.signature[:8], "big"),
                       sig.signature[8:])


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key, C2SP vkey type 0x04 (``<name>+<key id>+<base64>``)."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return note.key_id(self.name, self.public, note.ALG_COSIGNATURE_V1)

    def __str__(self) -> str:
        raw = base64.b64encode(bytes([note.ALG_COSIGNATURE_V1]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str) -> CosignatureVerifier:
        return cls(*note.parse_key_text(text, note.ALG_COSIGNATURE_V1))

    def matches(self, sig: note.Signature) -> bool:
        """Whether a signature line claims to be this witness's (name and key id)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, body: bytes, cosig: Cosignature) -> bool:
        if cosig.timestamp > MAX_TIMESTAMP or len(cosig.signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(
                cosig.signature, cosigned_message(body, cosig.timestamp))
        except InvalidSignature:
            return False
        return True


class Cosigner:
    """A witness's private key: signs checkpoint bodies as v1 cosignatures."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        note.check_name(name)
        self.name = name
        self._key = key
        self.verifier = CosignatureVerifier(
            name, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def cosign(self, body: bytes, timestamp: int) -> bytes:
        """The cosignature line (with its newline) for a note body at ``timestamp``."""
        sig = self._key.sign(cosigned_message(body, timestamp))
        blob = self.verifier.key_id + timestamp.to_bytes(8, "big") + sig
        return note.signature_line(self.name, blob)


# -- the witness's decision -------------------------------------------------------------


class Outcome(enum.Enum):
    FIRST_USE = "first use"  # cosign: nothing seen before for this origin (trust on first use)
    SAME = "same"  # cosign again: the tree the witness last cosigned
    EXTENDS = "extends"  # cosign: proven consistent with the last cosigned tree
    ROLLBACK = "rollback"  # refuse: smaller than the last cosigned tree
    FORK = "fork"  # refuse: same size other root, or the proof fails
    GAP = "gap"  # refuse: no proof from exactly the last cosigned size

    @property
    def cosign(self) -> bool:
        return self in (Outcome.FIRST_USE, Outcome.SAME, Outcome.EXTENDS)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str

    @property
    def cosign(self) -> bool:
        return self.outcome.cosign


@dataclass(frozen=True)
class Proof:
    """A consistency proof as the bundle carries it (``checkpoint.parse_consistency``)."""

    old: int
    new: int
    hashes: Sequence[bytes]


def decide(last: Checkpoint | None, new: Checkpoint, proof: Proof | None) -> Decision:
    """Cosign ``new`` or refuse it, given the last checkpoint cosigned for its origin.

    ``new`` must already carry a valid log signature. The proof is needed only
    when the tree grew, and then exactly from the last cosigned size: a proof
    from any other size cannot link the two trees, whatever it shows.
    """
    if last is None:
        return Decision(Outcome.FIRST_USE, f"first checkpoint seen for {new.origin}: "
                        f"size {new.size} trusted on first use")
    if last.origin != new.origin:
        raise ValueError(f"state for {last.origin} applied to {new.origin}")
    if new.size < last.size:
        return Decision(Outcome.ROLLBACK, f"rollback: size {new.size} is smaller than "
                        f"size {last.size}, which this witness cosigned")
    if new.size == last.size:
        if new.root != last.root:
            return Decision(Outcome.FORK, f"fork: size {new.size} with another root than "
                            "the one this witness cosigned at that size")
        return Decision(Outcome.SAME, f"size {new.size}: the checkpoint this witness last "
                        "cosigned, cosigned again")
    if proof is None:
        return Decision(Outcome.GAP, f"gap: no consistency proof; size {new.size} needs one "
                        f"from size {last.size}, the last cosigned")
    if (proof.old, proof.new) != (last.size, new.size):
        return Decision(Outcome.GAP, f"gap: the consistency proof runs from size {proof.old} "
                        f"to {proof.new}, but this witness needs one from size {last.size} "
                        f"(last cosigned) to {new.size}")
    try:
        merkle.verify_consistency(last.size, new.size, last.root, new.root, proof.hashes)
    except merkle.ProofError as exc:
        return Decision(Outcome.FORK, f"fork: size {new.size} is not proven to extend size "
                        f"{last.size}, which this witness cosigned ({exc})")
    return Decision(Outcome.EXTENDS, f"size {new.size} extends size {last.size} "
                    "(consistency proof verified)")


# -- quorum, for verifiers ----------------------------------------------------------------


@dataclass(frozen=True)
class Witnessed:
    witness: CosignatureVerifier
    timestamp: int  # POSIX seconds: "as of this time, the largest tree I saw"


@dataclass(frozen=True)
class Quorum:
    """The outcome of a k-of-n check over one checkpoint's cosignatures."""

    required: int
    witnessed: list[Witnessed]  # distinct trusted witnesses with valid cosignatures
    invalid: list[str] = field(default_factory=list)  # lines of trusted keys that fail
    ignored: int = 0  # lines of keys not trusted (C2SP: ignored)

    @property
    def count(self) -> int:
        return len(self.witnessed)

    @property
    def ok(self) -> bool:
        return self.count >= self.required


def check_quorum(signed_checkpoint: bytes, cosignature_lines: Iterable[bytes],
                 trusted: Sequence[CosignatureVerifier], required: int) -> Quorum:
    """Count distinct trusted witnesses whose cosignatures over the checkpoint hold.

    Signature lines may be in the note itself or given separately (the
    bundle's ``cosignatures/*.cosig``, with or without their newline). Lines
    of unknown keys are ignored, as C2SP says. A witness counts once however
    many lines it has; and since a v1 cosignature does not commit to the
    witness's name, one public key counts once even if trusted under two names.
    A line that claims a trusted key but does not verify is not counted and is
    reported in ``invalid``: nobody but that witness could have signed it, so
    it is corruption or an attempted forgery, which a report should show.
    The log's own signature is not checked here: verify it first (a quorum of
    cosignatures over a checkpoint the log never signed is worth nothing).
    Raises NoteError when the checkpoint is not a signed note or a line is
    not a signature line at all.
    """
    if required < 0:
        raise ValueError("the quorum cannot be negative")
    body, sigs = note.split(signed_checkpoint)
    sigs += [note.parse_signature_line(line.rstrip(b"\n")) for line in cosignature_lines]
    witnessed: list[Witnessed] = []
    invalid: list[str] = []
    names: set[str] = set()
    keys: set[bytes] = set()
    ignored = 0
    for sig in sigs:
        witness = next((w for w in trusted if w.matches(sig)), None)
        if witness is None:
            ignored += 1
            continue
        try:
            cosig = parse_cosignature(sig)
        except note.NoteError as exc:
            invalid.append(str(exc))
            continue
        if not witness.verify(body, cosig):
            invalid.append(f"cosignature of {witness.name} (time {cosig.timestamp}) "
                           "does not verify")
            continue
        if witness.name in names or witness.public in keys:
            continue
        names.add(witness.name)
        keys.add(witness.public)
        witnessed.append(Witnessed(witness, cosig.timestamp))
    return Quorum(required, witnessed, invalid, ignored)


def parse_trusted_keys(text: str) -> tuple[list[note.Verifier], list[CosignatureVerifier]]:
    """Split a trusted-keys file (one vkey a line, ``#`` comment lines) into note keys
    (type 0x01) and witness keys (type 0x04). Raises NoteError naming the first bad line."""
    logs: list[note.Verifier] = []
    witnesses: list[CosignatureVerifier] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if note.key_type(line) == note.ALG_COSIGNATURE_V1:
                witnesses.append(CosignatureVerifier.parse(line))
            else:
                logs.append(note.Verifier.parse(line))
        except note.NoteError as exc:
            raise note.NoteError(f"line {number}: {exc}") from None
    return logs, witnesses


