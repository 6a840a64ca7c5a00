"""The anchor bundle's files and their formats (docs/anchoring.md section 2). Pure.

A bundle is what leaves the host on removable media and what an auditor
checks with nothing but public keys, so everything in it is a public format:
C2SP checkpoints and tlog-proofs, our consistency-proof file, record lines,
and the two small text formats defined here (the manifest and the compact
range).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from . import merkle

PREFIX: Final = "vantio-anchor-"
MANIFEST: Final = "MANIFEST.sha256"
CHECKPOINT: Final = "checkpoint"
PREVIOUS: Final = "previous-checkpoint"
CONSISTENCY: Final = "consistency"
EPOCHS: Final = "epochs"
EPOCH_PROOFS: Final = "epochs.proofs"
LOG_VKEY: Final = "keys/log.vkey"
EPOCH0_VKEY: Final = "keys/epoch0.vkey"
SEGMENTS: Final = "segments"
EDGE: Final = "segments/edge"
SEGMENTS_CONSISTENCY: Final = "segments/consistency"
#: after an expire: the tree's edge before the first kept record, and its consistency proof
EXPIRED: Final = "expired"
EXPIRED_CONSISTENCY: Final = "expired.consistency"
VERIFY_SCRIPT: Final = "verify.py"
README: Final = "README.txt"
#: added on the anchor station after export: outside the manifest
RETURNS: Final = ("cosignatures/", "timestamps/")
COMPACT_RANGE_HEADER: Final = "vantio.appliance/compact-range@v1"

_MANIFEST_LINE: Final = re.compile(r"([0-9a-f]{64})  (\S.*)")


class BundleFormatError(ValueError):
    """A bundle file does not parse as its format."""


def bundle_name(size: int) -> str:
    return f"{PREFIX}{size}"


def epoch_proof_name(n: int) -> str:
    return f"{EPOCH_PROOFS}/{n}.tlog-proof"


def safe_path(path: str) -> bool:
    """A relative path that stays inside the bundle: no '..', no absolute, no empty part."""
    parts = path.split("/")
    return (bool(path) and not path.startswith("/") and "\\" not in path
            and all(p not in ("", ".", "..") for p in parts))


def format_manifest(digests: dict[str, str]) -> bytes:
    """``<hex sha256>  <relative path>`` for every file, sorted by path (its UTF-8 bytes)."""
    paths = sorted(digests, key=lambda p: p.encode())
    return "".join(f"{digests[p]}  {p}\n" for p in paths).encode()


def parse_manifest(data: bytes) -> dict[str, str]:
    """Path -> hex SHA-256; raises BundleFormatError for a malformed, unsorted or
    duplicated line or a path that would leave the bundle."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BundleFormatError("manifest is not UTF-8") from None
    if not text.endswith("\n"):
        raise BundleFormatError("manifest does not end with a newline")
    out: dict[str, str] = {}
    last = b""
    for number, line in enumerate(text[:-1].split("\n"), 1):
        m = _MANIFEST_LINE.fullmatch(line)
        if not m:
            raise BundleFormatError(f"manifest line {number} is not '<sha256>  <path>'")
        digest, path = m.groups()
        if not safe_path(path):
            raise BundleFormatError(f"manifest line {number}: path {path!r} leaves the bundle")
        if path.encode() <= last:
            raise BundleFormatError(f"manifest line {number}: {path} is out of order or "
                                    "repeated")
        last = path.encode()
        out[path] = digest
    return out


def format_compact_range(cr: merkle.CompactRange) -> bytes:
    """The tree's right edge at ``cr.size``: header, size, the subtree hashes left to right."""
    lines = [COMPACT_RANGE_HEADER, f"size {cr.size}",
             *(base64.b64encode(h).decode() for h in cr.hashes)]
    return ("\n".join(lines) + "\n").encode()


def parse_compact_range(data: bytes) -> merkle.CompactRange:
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError:
        raise BundleFormatError("compact range is not UTF-8") from None
    if len(lines) < 3 or lines[0] != COMPACT_RANGE_HEADER or lines[-1] != "":
        raise BundleFormatError(f"compact range must start with {COMPACT_RANGE_HEADER}")
    if not lines[1].startswith("size ") or not lines[1][5:].isdigit():
        raise BundleFormatError("compact range needs a 'size N' line")
    hashes = []
    for text in lines[2:-1]:
        try:
            h = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise BundleFormatError("compact range hash is not base64") from None
        if len(h) != 32:
            raise BundleFormatError("compact range hash is not a SHA-256 hash")
        hashes.append(h)
    try:
        return merkle.CompactRange(int(lines[1][5:]), hashes)
    except ValueError as exc:
        raise BundleFormatError(str(exc)) from None


def readme(origin: str, size: int, root: bytes, previous: int | None, epoch: int,
           segments: list[str]) -> str:
    """README.txt: what the bundle is and how to check it, for whoever finds the media."""
    custodial = (f"a custodial copy of {len(segments)} sealed segment(s), "
                 f"{segments[0]} to {segments[-1]}" if segments else "no custodial copy")
    prev = f"the previous export (size {previous})" if previous is not None else \
        "no previous export (this is the first)"
    return f"""vantio anchor bundle
====================

Log (origin):  {origin}
Tree size:     {size}
Root hash:     {base64.b64encode(root).decode()}
Signed by:     the log's identity key and the key of epoch {epoch}
Links back to: {prev}
Holds:         {custodial}

This directory carries a signed checkpoint of a vantio WORM ledger off the
host. It proves nothing by itself: check it with the log's public keys,
obtained from the operator out of band (the identity key and the epoch-0 key,
one per line in a file, e.g. trusted.keys):

    python3 verify.py --trusted-keys trusted.keys          (Python 3.11+, cryptography)
    vantio verify {bundle_name(size)} --trusted-keys trusted.keys

Both exit 0 when everything checks, 1 when something does not, 2 when the
input cannot be read. MANIFEST.sha256 lists every file with its SHA-256.
Witness cosignatures go in cosignatures/, RFC 3161 time-stamp tokens over the
file `checkpoint` in timestamps/ (both outside the manifest).
Formats: docs/anchoring.md and docs/formats.md of vantio-appliance.
"""
