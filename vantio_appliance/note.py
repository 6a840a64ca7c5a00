"""C2SP signed-note with Ed25519 keys: signing, verifier keys, verification.

Pure apart from the key objects: nothing here reads or writes files. A note is
its text (ending in a newline), an empty line, and one signature line per
signer, ``— <name> <base64(4-byte key id || signature)>``. Verifiers ignore
lines whose key they do not know, so cosignatures can be added later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519: Final = 0x01
ALG_COSIGNATURE_V1: Final = 0x04  # C2SP tlog-cosignature: timestamped Ed25519 cosignatures
MAX_SIGNATURES: Final = 100  # C2SP: verifiers SHOULD bound the work a note can cause
_DASH: Final = "\u2014 "
_HEX8: Final = re.compile(r"[0-9a-f]{8}")
_CONTROL: Final = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _strict_b64(text: str) -> bytes:
    """Base64 that re-encodes to itself: no stray padding or spaces (as Go's decoder)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise NoteError("not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError("not canonical base64")
    return raw


def _check_text(text: bytes) -> None:
    """C2SP: note text is valid UTF-8 with no control characters but newline."""
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        raise NoteError("note text is not UTF-8") from None
    if _CONTROL.search(decoded):
        raise NoteError("note text contains a control character")


class NoteError(ValueError):
    """A note or key is malformed, or no trusted signature verifies."""


def check_name(name: str) -> None:
    """C2SP: a key name is non-empty, without white space or '+'."""
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


def key_id(name: str, public: bytes, alg: int = ALG_ED25519) -> bytes:
    """First 4 bytes of SHA-256(name || 0x0A || alg || public key)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def parse_key_text(text: str, alg: int) -> tuple[str, bytes]:
    """Name and 32-byte public key of ``<name>+<hex key id>+<base64(alg || key)>``.

    Shared by note keys (0x01) and cosignature keys (0x04): the key id must
    match the name, the algorithm byte and the key.
    """
    parts = text.strip().split("+", 2)  # the base64 key itself may contain "+"
    if len(parts) != 3:
        raise NoteError("verifier key must be <name>+<key id>+<key>")
    name, hex_id, b64 = parts
    check_name(name)
    if not _HEX8.fullmatch(hex_id):
        raise NoteError("verifier key id must be 8 lower-case hex digits")
    raw, kid = _strict_b64(b64), bytes.fromhex(hex_id)
    if len(raw) != 33 or raw[0] != alg:
        raise NoteError("verifier key is not an Ed25519 key" if alg == ALG_ED25519
                        else f"verifier key is not of type 0x{alg:02x}")
    if key_id(name, raw[1:], alg) != kid:
        raise NoteError("verifier key id does not match its name and key")
    return name, raw[1:]


def signature_line(name: str, blob: bytes) -> bytes:
    """``— <name> <base64(blob)>`` and a newline; blob = key id || signature."""
    return f"{_DASH}{name} ".encode() + base64.b64encode(blob) + b"\n"


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_type(text: str) -> int | None:
    """The type byte of a verifier key's text, to pick its parser (which checks the rest)."""
    parts = text.split("+", 2)
    try:
        return base64.b64decode(parts[2][:4], validate=True)[0] if len(parts) == 3 else None
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key, as C2SP verifier-key text describes it."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def __str__(self) -> str:
        raw = base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
        return cls(*parse_key_text(text, ALG_ED25519))

    def verifies(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            return False
        return True


class Signer:
    """A named Ed25519 private key that signs notes."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        check_name(name)
        self.name = name
        self._key = key
        self.verifier = Verifier(name, _raw_public(key.public_key()))
        self._kid = self.verifier.key_id

    def signature_line(self, text: bytes) -> bytes:
        return signature_line(self.name, self._kid + self._key.sign(text))

    def sign(self, text: bytes) -> bytes:
        """The signed note: ``text``, an empty line, this signer's line."""
        if not text.endswith(b"\n"):
            raise NoteError("note text must end with a newline")
        _check_text(text)
        return text + b"\n" + self.signature_line(text)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


def split(note: bytes) -> tuple[bytes, list[Signature]]:
    """The text and the signature lines of a signed note."""
    text, sep, sigs = note.rpartition(b"\n\n")
    if not sep or not sigs.endswith(b"\n"):
        raise NoteError("not a signed note (no empty line before signatures)")
    text += b"\n"
    _check_text(text)
    lines = sigs[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return text, [parse_signature_line(line) for line in lines]


def parse_signature_line(line: bytes) -> Signature:
    """One ``— <name> <base64(key id || signature)>`` line, without its newline."""
    try:
        s = line.decode()
    except UnicodeDecodeError:
        raise NoteError("signature line is not UTF-8") from None
    if not s.startswith(_DASH):
        raise NoteError(f"malformed signature line: {s[:40]!r}")
    name, _, b64 = s[len(_DASH):].partition(" ")
    try:
        raw = _strict_b64(b64)
    except NoteError:
        raise NoteError(f"signature of {name} is not base64") from None
    if len(raw) < 5:
        raise NoteError(f"signature of {name} too short")
    return Signature(name, raw[:4], raw[4:])


def verify(note: bytes, verifiers: list[Verifier]) -> tuple[bytes, list[Verifier]]:
    """Return the note's text and the known verifiers whose signatures hold.

    Raises NoteError when none does: an unsigned note proves nothing.
    """
    text, sigs = split(note)
    good = []
    for v in verifiers:
        for s in sigs:
            if s.name == v.name and s.key_id == v.key_id:
                if not v.verifies(text, s.signature):
                    raise NoteError(f"signature of {v.name} does not verify")
                good.append(v)
                break
    if not good:
        raise NoteError("no signature by a trusted key")
    return text, good
