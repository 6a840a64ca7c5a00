"""Forward-secure epoch keys: the epoch statement, key names, and the chain a verifier walks.

Pure: no files, no clocks. A root attacker can read every key on the host, so
a checkpoint signed only by the identity key proves nothing about the past
once that key is stolen. Each epoch therefore has its own Ed25519 key, named
``<origin>/epoch/<n>``; the `epoch` record that begins epoch n carries its
verifier key and the root of the tree before it, signed by epoch n-1's key
(epoch 0's by the identity key), and the writer then destroys epoch n-1's
private key. A verifier who holds the identity key and epoch 0's key from the
day the ledger was made walks the chain: a history rewritten and re-signed
with keys stolen later breaks at the first epoch whose key was already gone.
See docs/anchoring.md section 1.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import checkpoint as cpmod
from . import note

STATEMENT_HEADER: Final = "vantio.appliance/epoch@v1"


def key_name(origin: str, n: int) -> str:
    """The note key name of epoch ``n``'s key."""
    return f"{origin}/epoch/{n}"


def statement(origin: str, n: int, seq: int, root: bytes, vkey: str) -> bytes:
    """The bytes an epoch record's signature covers (docs/anchoring.md section 1)."""
    return (f"{STATEMENT_HEADER}\n{origin}\n{n}\n{seq}\n"
            f"{base64.b64encode(root).decode()}\n{vkey}\n").encode()


def sign_statement(key: Ed25519PrivateKey, origin: str, n: int, seq: int, root: bytes,
                   vkey: str) -> str:
    """Base64 Ed25519 signature over the statement, as the record's ``signature`` field."""
    return base64.b64encode(key.sign(statement(origin, n, seq, root, vkey))).decode()


class EpochError(ValueError):
    """The epoch chain or an epoch signature does not hold; ``epoch`` names the epoch."""

    def __init__(self, epoch: int | None, reason: str) -> None:
        super().__init__(f"epoch {epoch}: {reason}" if epoch is not None else reason)
        self.epoch = epoch
        self.reason = reason


@dataclass(frozen=True)
class EpochKey:
    """Epoch ``n``: its verifier key, where its record is, and the tree it committed to."""

    n: int
    seq: int
    root: bytes
    verifier: note.Verifier


def _b64(text: str, size: int, what: str, n: int) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise EpochError(n, f"{what} is not base64") from None
    if len(raw) != size:
        raise EpochError(n, f"{what} is not {size} bytes")
    return raw


class EpochChain:
    """The epochs accepted so far, from a trusted identity key and epoch-0 key.

    Records must be fed in ledger order; each one is accepted only if its
    number follows the last, its key is named for it (and, for epoch 0, is the
    trusted epoch-0 key) and its signature verifies with the previous key.
    """

    def __init__(self, identity: note.Verifier, epoch0: note.Verifier) -> None:
        if epoch0.name != key_name(identity.name, 0):
            raise EpochError(0, f"the epoch-0 key is named {epoch0.name!r}, expected "
                             f"{key_name(identity.name, 0)!r}")
        self.identity = identity
        self.epoch0 = epoch0
        self.epochs: list[EpochKey] = []

    @property
    def origin(self) -> str:
        return self.identity.name

    def accept(self, n: int, seq: int, root_b64: str, vkey: str,
               signature_b64: str) -> EpochKey:
        """Check one epoch record's fields against the chain and add it; raises EpochError."""
        expected = len(self.epochs)
        if n != expected:
            raise EpochError(n, f"expected epoch {expected} next (epoch numbers increase by "
                             "one from 0)")
        if n == 0 and seq != 1:
            raise EpochError(0, f"record at seq {seq}; epoch 0 directly follows genesis (seq 1)")
        if self.epochs and seq <= self.epochs[-1].seq:
            raise EpochError(n, f"record at seq {seq} is not after epoch {n - 1}'s "
                             f"(seq {self.epochs[-1].seq})")
        root = _b64(root_b64, 32, "root", n)
        signature = _b64(signature_b64, 64, "signature", n)
        try:
            verifier = note.Verifier.parse(vkey)
        except note.NoteError as exc:
            raise EpochError(n, f"vkey: {exc}") from None
        if verifier.name != key_name(self.origin, n):
            raise EpochError(n, f"key is named {verifier.name!r}, expected "
                             f"{key_name(self.origin, n)!r}")
        if n == 0 and verifier != self.epoch0:
            raise EpochError(0, "the record's key is not the trusted epoch-0 key")
        signer, by = ((self.identity, "the identity key") if n == 0 else
                      (self.epochs[-1].verifier, f"epoch {n - 1}'s key"))
        if not signer.verifies(statement(self.origin, n, seq, root, vkey), signature):
            raise EpochError(n, f"record signature does not verify with {by}")
        key = EpochKey(n, seq, root, verifier)
        self.epochs.append(key)
        return key

    def at(self, size: int) -> EpochKey:
        """The epoch in force for a checkpoint of tree size ``size``: the latest whose
        record is inside that tree (seq < size)."""
        for key in reversed(self.epochs):
            if key.seq < size:
                return key
        raise EpochError(None, f"no epoch is in force at tree size {size} (epoch 0's record "
                         "is not in that tree)")

    def open_checkpoint(self, signed: bytes, what: str = "checkpoint") -> cpmod.Checkpoint:
        """Verify the identity signature and the signature of the epoch in force; parse.

        Raises note.NoteError or checkpoint.FormatError for the identity
        signature and the format, EpochError (naming the epoch) for the epoch
        signature.
        """
        cp = cpmod.open_signed(signed, [self.identity])
        if cp.origin != self.origin:
            raise note.NoteError(f"{what} is for origin {cp.origin!r}, not {self.origin!r}")
        key = self.at(cp.size)
        text, sigs = note.split(signed)
        v = key.verifier
        if not any(s.name == v.name and s.key_id == v.key_id and v.verifies(text, s.signature)
                   for s in sigs):
            raise EpochError(key.n, f"{what} at size {cp.size} not signed by epoch key")
        return cp
