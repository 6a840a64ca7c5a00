#!/usr/bin/env python3
"""Standalone verifier of a vantio anchor bundle.

Needs only Python 3.11+ and the `cryptography` package; it does not use the
vantio software that wrote the bundle, so an auditor can read every line of
what they run (docs/anchoring.md and docs/formats.md of vantio-appliance give
the formats; everything else is RFC 6962, RFC 8785 and C2SP signed-note,
tlog-checkpoint and tlog-proof).

    python3 verify.py [BUNDLE] --trusted-keys FILE [--json]

BUNDLE defaults to the directory this script is in. FILE holds the log's
verifier keys, one a line (its identity key and its epoch-0 key; other lines,
such as witness keys, are ignored here). Exit 0 verified, 1 the evidence does
not verify, 2 unreadable input.

Checked: the manifest; the bundle's key copies against the trusted keys; the
epoch chain (each epoch record in the exported tree, signed by the previous
epoch's key, committing to a tree the exported one begins with); the
checkpoint's identity and epoch signatures; consistency with the previous
export; every record of a custodial copy up to each seal's signed root and on
to the exported tree; tlog-proofs; a regulator export's range (every seq
present, each record beside its proof). Not checked here: witness cosignatures and
RFC 3161 tokens (use `vantio verify`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

OK: Final = "ok"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
NOT_CHECKED: Final = "not checked"
DASH: Final = "\u2014 "
MAX_FINDINGS: Final = 20


class Bad(Exception):
    """The evidence does not verify."""


class Unreadable(Exception):
    """The input cannot be used at all (exit 2)."""


# -- RFC 6962 (section 2.1; verification as in RFC 9162 section 2.1.3 and 2.1.4) ----------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(line: bytes) -> bytes:
    return sha256(b"\x00" + line)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


EMPTY_ROOT: Final = sha256(b"")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes],
                     root: bytes) -> bytes:
    """Check an audit path; return MTH of the first ``index`` leaves (the left siblings)."""
    if not 0 <= index < size:
        raise Bad(f"index {index} not in a tree of size {size}")
    fn, sn, r, prefix = index, size - 1, leaf, None
    for p in proof:
        if sn == 0:
            raise Bad("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            prefix = p if prefix is None else node_hash(p, prefix)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Bad("inclusion proof too short")
    if r != root:
        raise Bad("inclusion proof does not lead to the root")
    return EMPTY_ROOT if prefix is None else prefix


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,
                       proof: list[bytes]) -> None:
    if not 0 <= old <= new:
        raise Bad(f"old size {old} is larger than new size {new}")
    if old == new:
        if proof or old_root != new_root:
            raise Bad("equal sizes need equal roots and an empty proof")
        return
    if old == 0:
        if proof:
            raise Bad("proof must be empty from the empty tree")
        return
    if not proof:
        raise Bad("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Bad("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Bad("consistency proof too short")
    if fr != old_root or sr != new_root:
        raise Bad("consistency proof does not lead to the roots")


class CompactRange:
    """The right edge of a tree: one perfect subtree root per set bit of its size."""

    def __init__(self, size: int, stack: list[bytes]) -> None:
        if len(stack) != size.bit_count():
            raise Bad(f"a tree of size {size} has {size.bit_count()} subtree roots")
        self.size, self.stack = size, list(stack)

    def append(self, leaf: bytes) -> None:
        size, h = self.size, leaf
        while size & 1:
            h = node_hash(self.stack.pop(), h)
            size >>= 1
        self.stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1]
        for h in reversed(self.stack[:-1]):
            r = node_hash(h, r)
        return r


# -- C2SP signed notes, checkpoints and proofs --------------------------------------------


def b64(text: str, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise Bad(f"not base64: {text[:20]!r}") from None
    if base64.b64encode(raw).decode() != text or (size is not None and len(raw) != size):
        raise Bad(f"bad base64 value {text[:20]!r}")
    return raw


def b64e(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Key:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return sha256(self.name.encode() + b"\n\x01" + self.public)[:4]

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64e(bytes([1]) + self.public)}"

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_key(text: str) -> Key:
    """``<name>+<hex key id>+<base64(0x01 || Ed25519 public key)>``."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise Bad("not a verifier key")
    raw = b64(parts[2])
    if len(raw) != 33 or raw[0] != 1:
        raise Bad("not an Ed25519 verifier key")
    key = Key(parts[0], raw[1:])
    if key.key_id.hex() != parts[1]:
        raise Bad("verifier key id does not match its name and key")
    return key


def split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    text, sep, sigs = note.rpartition(b"\n\n")
    if not sep or not sigs.endswith(b"\n"):
        raise Bad("not a signed note")
    out = []
    for line in sigs[:-1].decode().split("\n"):
        if not line.startswith(DASH):
            raise Bad("malformed signature line")
        name, _, sig = line[len(DASH):].partition(" ")
        raw = b64(sig)
        if len(raw) < 5:
            raise Bad("signature too short")
        out.append((name, raw[:4], raw[4:]))
    return text + b"\n", out


def signed_by(note: bytes, key: Key) -> bool:
    text, sigs = split_note(note)
    return any(name == key.name and kid == key.key_id and key.verifies(text, sig)
               for name, kid, sig in sigs)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def parse_checkpoint(signed: bytes) -> Checkpoint:
    text, _ = split_note(signed)
    lines = text.decode().split("\n")
    if len(lines) < 4 or not lines[1].isdigit():
        raise Bad("not a checkpoint")
    return Checkpoint(lines[0], int(lines[1]), b64(lines[2], 32))


def parse_hashes(lines: list[str]) -> list[bytes]:
    return [b64(x, 32) for x in lines]


def parse_tlog_proof(data: bytes) -> tuple[int, list[bytes], bytes]:
    head, sep, signed = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    if not sep or lines[0] != "c2sp.org/tlog-proof@v1":
        raise Bad("not a c2sp.org/tlog-proof@v1")
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        rest = rest[1:]
    if not rest or not rest[0].startswith("index ") or not rest[0][6:].isdigit():
        raise Bad("tlog-proof has no index line")
    return int(rest[0][6:]), parse_hashes(rest[1:]), signed


def parse_consistency(data: bytes) -> tuple[int, int, list[bytes]]:
    lines = data.decode().split("\n")
    if (len(lines) < 4 or lines[0] != "vantio.appliance/consistency-proof@v1"
            or lines[-1] != "" or not lines[1].startswith("old ")
            or not lines[2].startswith("new ")):
        raise Bad("not a vantio.appliance/consistency-proof@v1")
    return int(lines[1][4:]), int(lines[2][4:]), parse_hashes(lines[3:-1])


# -- records (RFC 8785 canonical JSON lines) -----------------------------------------------


COMMON: Final = {"v", "seq", "kind", "trace_id", "tenant", "time"}
#: kind: (required fields, optional fields), docs/formats.md "Kinds"
KINDS: Final[dict[str, tuple[set[str], set[str]]]] = {
    "event": ({"action", "receipt"}, {"proc", "syscall", "target_host", "bytes_severed"}),
    "genesis": ({"origin", "vkey"}, set()),
    "seal": ({"segment", "checkpoint"}, set()),
    "torn": ({"segment", "offset", "length"}, set()),
    "epoch": ({"epoch", "root", "vkey", "signature"}, set()),
    "anchor": ({"direction", "size", "root"}, {"manifest", "evidence"}),
}
NESTED: Final = {"proc": {"pid", "tgid", "uid", "gid", "comm", "cgroup", "cgroup_ancestry"},
                 "syscall": {"name", "args"},
                 "args": {"family", "address", "port", "proto", "size", "flags", "path", "argc"}}


def _closed(rec: dict[str, Any]) -> None:
    """Every object holds only the fields of its kind (the whitelist)."""
    required, optional = KINDS.get(rec["kind"], (None, set()))
    if required is None:
        raise Bad(f"unknown kind {rec['kind']!r}")
    extra = set(rec) - COMMON - required - optional
    if extra or not required <= set(rec):
        raise Bad(f"fields not those of a {rec['kind']} record: "
                  f"{sorted(extra) or sorted(required - set(rec))}")
    for name, allowed in NESTED.items():
        obj = rec.get(name) if name != "args" else (rec.get("syscall") or {}).get("args")
        if obj is not None and (not isinstance(obj, dict) or set(obj) - allowed):
            raise Bad(f"{name}: fields not allowed")


def _no_float(text: str) -> Any:
    raise Bad(f"not an integer: {text}")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_record(line: bytes) -> dict[str, Any]:
    """A record line: canonical JSON, the common fields with their types."""
    try:
        rec = json.loads(line, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Bad(f"not JSON: {exc}") from None
    if not isinstance(rec, dict) or canonical(rec) != line:
        raise Bad("not a canonical JSON object")
    t = rec.get("time")
    if not isinstance(t, dict):
        raise Bad("no time object")
    ints = [rec.get("seq"), *(t.get(k) for k in ("mono_ns", "real_ns", "earliest_ns",
                                                 "latest_ns"))]
    if (rec.get("v") != 1 or not isinstance(rec.get("kind"), str)
            or not isinstance(rec.get("tenant"), str) or not isinstance(rec.get("trace_id"), str)
            or not all(type(i) is int and i >= 0 for i in ints)):
        raise Bad("missing or mistyped common fields (v, seq, kind, tenant, trace_id, time)")
    if not t["earliest_ns"] <= t["real_ns"] <= t["latest_ns"]:
        raise Bad("time outside its own interval")
    if rec["kind"] != "event" and rec["tenant"] != "_system":
        raise Bad(f"{rec['kind']} records belong to _system")
    _closed(rec)
    return rec


# -- the epoch chain (docs/anchoring.md section 1) -----------------------------------------


@dataclass(frozen=True)
class EpochKey:
    n: int
    seq: int
    root: str
    key: Key


class Chain:
    def __init__(self, identity: Key, epoch0: Key) -> None:
        self.identity, self.epoch0 = identity, epoch0
        self.epochs: list[EpochKey] = []

    def accept(self, rec: dict[str, Any]) -> None:
        n, seq, origin = rec.get("epoch"), rec["seq"], self.identity.name
        if rec["kind"] != "epoch" or type(n) is not int:
            raise Bad(f"seq {seq} is not an epoch record")
        if n != len(self.epochs):
            raise Bad(f"epoch {n}: expected epoch {len(self.epochs)} next")
        if n == 0 and seq != 1:
            raise Bad("epoch 0: not at seq 1")
        if self.epochs and seq <= self.epochs[-1].seq:
            raise Bad(f"epoch {n}: seq {seq} is not after epoch {n - 1}'s")
        key = parse_key(rec["vkey"])
        if key.name != f"{origin}/epoch/{n}":
            raise Bad(f"epoch {n}: key named {key.name}")
        if n == 0 and key != self.epoch0:
            raise Bad("epoch 0: the record's key is not the trusted epoch-0 key")
        statement = (f"vantio.appliance/epoch@v1\n{origin}\n{n}\n{seq}\n{rec['root']}\n"
                     f"{rec['vkey']}\n").encode()
        by = self.identity if n == 0 else self.epochs[-1].key
        b64(rec["root"], 32)
        if not by.verifies(statement, b64(rec["signature"], 64)):
            raise Bad(f"epoch {n}: record signature does not verify")
        self.epochs.append(EpochKey(n, seq, rec["root"], key))

    def at(self, size: int) -> EpochKey:
        for e in reversed(self.epochs):
            if e.seq < size:
                return e
        raise Bad(f"no epoch in force at tree size {size}")

    def open(self, signed: bytes, what: str = "checkpoint") -> Checkpoint:
        cp = parse_checkpoint(signed)
        if cp.origin != self.identity.name or not signed_by(signed, self.identity):
            raise Bad(f"{what}: no valid signature by the identity key")
        e = self.at(cp.size)
        if not signed_by(signed, e.key):
            raise Bad(f"epoch {e.n}: {what} at size {cp.size} not signed by epoch key")
        return cp


# -- the bundle ----------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    status: str
    detail: str
    findings: list[str] = field(default_factory=list)


def failed(name: str, findings: list[str]) -> Check:
    return Check(name, FAILED, findings[0], findings[:MAX_FINDINGS])


class Bundle:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise Unreadable(f"{root} is not a directory")
        self.root = root
        self.files: dict[str, Path] = {}
        self.links: list[str] = []
        for dirpath, dirs, names in os.walk(root):
            for name in [*names, *dirs]:
                path = Path(dirpath, name)
                rel = path.relative_to(root).as_posix()
                if path.is_symlink():
                    self.links.append(rel)
                elif path.is_file():
                    self.files[rel] = path

    def read(self, rel: str) -> bytes | None:
        path = self.files.get(rel)
        return path.read_bytes() if path else None


def check_manifest(b: Bundle) -> Check:
    data = b.read("MANIFEST.sha256")
    if data is None:
        return failed("manifest", ["no MANIFEST.sha256"])
    listed: dict[str, str] = {}
    findings = [f"{rel} is a symbolic link" for rel in b.links]
    last = b""
    for line in data.decode(errors="replace").splitlines():
        m = re.fullmatch(r"([0-9a-f]{64})  (\S.*)", line)
        parts = m[2].split("/") if m else []
        if not m or any(p in ("", ".", "..") for p in parts) or m[2].encode() <= last:
            return failed("manifest", [f"malformed or unsorted manifest line {line[:80]!r}"])
        last = m[2].encode()
        listed[m[2]] = m[1]
    for rel, digest in listed.items():
        path = b.files.get(rel)
        if path is None:
            findings.append(f"{rel} is listed but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            findings.append(f"{rel} does not match its SHA-256")
    for rel in sorted(b.files):
        if (rel != "MANIFEST.sha256" and rel not in listed
                and not rel.startswith(("cosignatures/", "timestamps/"))):
            findings.append(f"{rel} is not in the manifest")
    if findings:
        return failed("manifest", findings)
    return Check("manifest", OK, f"{len(listed)} files, each matching its SHA-256")


def check_keys(b: Bundle, identity: Key, epoch0: Key) -> Check:
    findings = []
    for rel, key in (("keys/log.vkey", identity), ("keys/epoch0.vkey", epoch0)):
        data = b.read(rel)
        if data is None or data.decode(errors="replace").strip() != str(key):
            findings.append(f"{rel} is missing or not the trusted key {key.name}")
    return failed("keys", findings) if findings else Check(
        "keys", OK, "the bundle's verifier keys are the trusted ones")


def check_epochs(b: Bundle, chain: Chain, signed: bytes | None,
                 cp: Checkpoint | None) -> Check:
    data = b.read("epochs")
    if data is None or cp is None or signed is None:
        return failed("epochs", ["no epochs file or no readable checkpoint"])
    findings: list[str] = []
    expired = _expired(b, cp, findings)
    lines = data.split(b"\n")
    for line in lines[:-1]:
        try:  # the chain first: its keys check the other checkpoints even if a proof fails
            rec = parse_record(line)
            n = rec.get("epoch")
            chain.accept(rec)
        except (Bad, ValueError, KeyError) as exc:
            findings.append(str(exc))
            break
        proof = b.read(f"epochs.proofs/{n}.tlog-proof")
        if proof is None and rec["seq"] < expired:
            continue  # an expired record: its leaf is gone, its signature chain holds it
        try:
            if proof is None:
                raise Bad("no tlog-proof")
            index, path, proof_cp = parse_tlog_proof(proof)
            if proof_cp != signed or index != rec["seq"]:
                raise Bad("the tlog-proof is not for this record in the exported checkpoint")
            prefix = verify_inclusion(index, cp.size, leaf_hash(line), path, cp.root)
            if b64e(prefix) != rec.get("root"):
                findings.append(f"epoch {n}: the record commits to a tree that the exported "
                                "tree does not begin with")
        except (Bad, ValueError) as exc:
            findings.append(f"epoch {n}: {exc}")
    if lines[-1] != b"" or not chain.epochs:
        findings.append("epochs file malformed or empty")
    if findings:
        return failed("epochs", findings)
    return Check("epochs", OK, f"{len(chain.epochs)} epochs (0..{chain.epochs[-1].n}), each "
                 "signed by the previous one's key and committed to the exported tree")


def _expired(b: Bundle, cp: Checkpoint, findings: list[str]) -> int:
    """Records expired before the kept ones (0 if none): the edge, consistent with cp."""
    data, proof = b.read("expired"), b.read("expired.consistency")
    if data is None:
        return 0
    try:
        lines = data.decode().split("\n")
        if lines[0] != "vantio.appliance/compact-range@v1" or not lines[1].startswith("size "):
            raise Bad("not a vantio.appliance/compact-range@v1")
        edge = CompactRange(int(lines[1][5:]), parse_hashes(lines[2:-1]))
        if proof is None:
            raise Bad("no expired.consistency")
        old, new, path = parse_consistency(proof)
        if (old, new) != (edge.size, cp.size):
            raise Bad(f"expired.consistency is for sizes {old}->{new}")
        verify_consistency(old, new, edge.root(), cp.root, path)
    except (Bad, ValueError) as exc:
        findings.append(f"expired: the expired records' edge does not lead to the exported "
                        f"tree: {exc}")
        return 0
    return edge.size


def check_checkpoint(chain: Chain, signed: bytes | None) -> Check:
    try:
        if signed is None:
            raise Bad("no checkpoint file")
        cp = chain.open(signed)
    except (Bad, ValueError) as exc:
        return failed("checkpoint", [str(exc)])
    return Check("checkpoint", OK, f"size {cp.size}, signed by the identity key and the key "
                 f"of epoch {chain.at(cp.size).n}")


def check_previous(b: Bundle, chain: Chain, cp: Checkpoint | None) -> Check:
    prev_signed, proof = b.read("previous-checkpoint"), b.read("consistency")
    if prev_signed is None:
        if proof is not None:
            return failed("previous", ["a consistency proof without a previous checkpoint"])
        return Check("previous", SKIPPED, "first export: no previous checkpoint")
    try:
        prev = chain.open(prev_signed, "previous checkpoint")
        if cp is None:
            raise Bad("no readable checkpoint")
        if prev.size > cp.size:
            raise Bad(f"rollback: the exported checkpoint (size {cp.size}) is older than the "
                      f"previous export (size {prev.size})")
        if prev.size == cp.size and prev.root != cp.root:
            raise Bad(f"fork: size {cp.size} has another root than the previous export")
        if proof is None:
            raise Bad("no consistency proof from the previous export")
        old, new, path = parse_consistency(proof)
        if (old, new) != (prev.size, cp.size):
            raise Bad(f"fork: the consistency proof is for sizes {old}->{new}")
        try:
            verify_consistency(old, new, prev.root, cp.root, path)
        except Bad as exc:
            raise Bad(f"fork: the exported tree does not extend the previous export: "
                      f"{exc}") from None
    except (Bad, ValueError) as exc:
        return failed("previous", [str(exc)])
    return Check("previous", OK, f"extends the previous export (size {prev.size})")


def _segment(b: Bundle, name: str, tree: CompactRange, chain: Chain, identity: Key,
             findings: list[str]) -> int:
    """Every record of one sealed segment, extending ``tree``; returns its record count."""
    data = b.files[f"segments/{name}"].read_bytes()
    if int(name[:16]) != tree.size:
        raise Bad(f"segment {name}: name says seq {int(name[:16])}; expected {tree.size}")
    *lines, tail = data.split(b"\n")
    if tail:
        findings.append(f"segment {name}: torn tail without a torn record")
    offset, bad_at, last_kind, count, sealed = 0, None, None, 0, None
    for line in lines:
        here, offset = offset, offset + len(line) + 1
        try:
            rec = parse_record(line)
        except Bad as exc:
            if line[:1] == b"{" and line[-1:] == b"}":
                findings.append(f"segment {name}, byte {here}: invalid record: {exc}")
            bad_at = here if bad_at is None else bad_at
            continue
        seq, kind = rec["seq"], rec["kind"]
        where = f"segment {name}, seq {seq}"
        if kind == "torn":
            if bad_at is None or (rec.get("segment"), rec.get("offset"), rec.get("length")) != (
                    name, bad_at, here - 1 - bad_at):
                findings.append(f"{where}: torn record without the torn bytes it names")
        elif bad_at is not None:
            findings.append(f"{where}: bytes that are not records, not excused by a torn record")
        bad_at = None
        if seq != tree.size:
            raise Bad(f"{where}: expected seq {tree.size}")
        if sealed is not None:  # a seal closes its segment: nothing may follow it there
            findings.append(f"segment {name}, seq {sealed}: records follow the seal record "
                            "in its segment (the seal was never finished)")
            sealed = None
        if kind == "seal":
            sealed = seq
            try:
                scp = chain.open(str(rec.get("checkpoint")).encode(), "seal checkpoint")
                if (scp.size, scp.root) != (seq, tree.root()) or rec.get("segment") != name:
                    findings.append(f"{where}: seal checkpoint does not match the records "
                                    "before it")
            except (Bad, ValueError) as exc:
                findings.append(f"{where}: {exc}")
        elif kind == "epoch":
            n = rec.get("epoch")
            known = next((e for e in chain.epochs if e.n == n), None)
            if known is None or (known.seq, str(known.key), known.root) != (
                    seq, rec.get("vkey"), rec.get("root")):
                findings.append(f"{where}: epoch {n}: record differs from the verified chain")
            if rec.get("root") != b64e(tree.root()):
                findings.append(f"{where}: epoch {n}: record commits to a root that does not "
                                "match the records before it")
        elif kind == "genesis" and (seq != 0 or rec.get("vkey") != str(identity)):
            findings.append(f"{where}: genesis names another key than the trusted one")
        tree.append(leaf_hash(line))
        last_kind, count = kind, count + 1
    if bad_at is not None:
        findings.append(f"segment {name}: bytes that are not records at the end")
    if last_kind != "seal":
        findings.append(f"segment {name}: sealed segment does not end with a seal record")
    return count


def check_custodial(b: Bundle, chain: Chain, identity: Key, cp: Checkpoint | None) -> Check:
    names = sorted(rel[9:] for rel in b.files
                   if re.fullmatch(r"segments/[0-9]{16}\.worm", rel))
    others = [rel for rel in b.files if rel.startswith("segments/") and rel[9:] not in names
              and rel not in ("segments/edge", "segments/consistency")]
    if not names and not others:
        return Check("custodial", SKIPPED, "no custodial copy")
    findings = [f"{rel} is not a segment" for rel in others]
    records = 0
    try:
        edge_data, proof = b.read("segments/edge"), b.read("segments/consistency")
        if not names or edge_data is None or cp is None:
            raise Bad("no segments, no segments/edge or no readable checkpoint")
        lines = edge_data.decode().split("\n")
        if lines[0] != "vantio.appliance/compact-range@v1" or not lines[1].startswith("size "):
            raise Bad("segments/edge is not a vantio.appliance/compact-range@v1")
        tree = CompactRange(int(lines[1][5:]), parse_hashes(lines[2:-1]))
        first = tree.size
        for name in names:
            records += _segment(b, name, tree, chain, identity, findings)
        if proof is None:
            raise Bad("no segments/consistency")
        old, new, path = parse_consistency(proof)
        if (old, new) != (tree.size, cp.size):
            raise Bad(f"segments/consistency is for sizes {old}->{new}")
        verify_consistency(old, new, tree.root(), cp.root, path)
    except (Bad, ValueError) as exc:
        findings.append(f"custodial copy: {exc}")
    if findings:
        return failed("custodial", findings)
    return Check("custodial", OK, f"{len(names)} segments, {records} records from seq {first}: "
                 "every seal signed by its epoch, all in the exported tree")


def check_proofs(b: Bundle, chain: Chain) -> Check:
    others = sorted(r for r in b.files if r.endswith(".tlog-proof")
                    and not r.startswith("epochs.proofs/"))
    findings = []
    opened: dict[bytes, Checkpoint] = {}  # a regulator export's proofs share one
    for rel in others:
        try:
            index, path, signed = parse_tlog_proof(b.files[rel].read_bytes())
            pcp = opened.get(signed) or chain.open(signed, f"{rel}'s checkpoint")
            opened[signed] = pcp
            record = b.read(rel[:-len(".tlog-proof")] + ".record")
            if record is not None:
                verify_inclusion(index, pcp.size, leaf_hash(record.rstrip(b"\n")), path,
                                 pcp.root)
        except (Bad, ValueError) as exc:
            findings.append(f"{rel}: {exc}")
    if findings:
        return failed("proofs", findings)
    return Check("proofs", OK, f"{len(chain.epochs)} epoch tlog-proofs (see epochs)"
                 + (f"; {len(others)} more" if others else ""))


def _record_file(seq: int, ext: str) -> str:
    """records/<seq // 1000, 13 digits>/<seq, 16 digits>.<ext> (1000 records a directory)."""
    return f"records/{seq // 1000:013d}/{seq:016d}.{ext}"


def check_range(b: Bundle) -> Check:
    """A regulator export: records/ holds exactly the seqs the range file names, each a
    record of that seq beside its tlog-proof, the first and last stamped in the period."""
    data = b.read("range")
    if data is None:
        return Check("range", SKIPPED, "not a regulator export")
    try:
        head, *fields, end = data.decode().split("\n")
        pairs = [f.split(" ") for f in fields]
        if head != "vantio.appliance/record-range@v2" or end != "" or [
                p[0] for p in pairs] != ["from", "to", "first", "last"]:
            raise ValueError
        start, stop, first, last = (int(p[1]) for p in pairs)
    except (UnicodeDecodeError, ValueError, IndexError):
        return failed("range", ["the range file is not a vantio.appliance/record-range@v2"])
    findings = []
    expected = {_record_file(seq, ext) for seq in range(first, last + 1)
                for ext in ("record", "tlog-proof")}
    present = {rel for rel in b.files if rel.startswith("records/")}
    findings += [f"{rel} is missing: the range names seqs {first}..{last}"
                 for rel in sorted(expected - present)]
    findings += [f"{rel} is outside the range's seqs {first}..{last}"
                 for rel in sorted(present - expected)]
    for seq in range(first, last + 1):
        line = b.read(_record_file(seq, "record"))
        if line is None:
            continue
        try:
            rec = parse_record(line.rstrip(b"\n"))
        except Bad as exc:
            findings.append(f"{_record_file(seq, 'record')}: not a record: {exc}")
            continue
        if rec["seq"] != seq:
            findings.append(f"records/{seq:016d}.record holds seq {rec['seq']}")
        if seq in (first, last) and not start <= rec["time"]["real_ns"] < stop:
            findings.append(f"seq {seq} is stamped outside the period")
    if findings:
        return failed("range", findings)
    return Check("range", OK, f"seqs {first}..{last}, every one present")


def verify(root: Path, trusted_text: str, quorum: int) -> dict[str, Any]:
    b = Bundle(root)
    keys: list[Key] = []
    for line in trusted_text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                keys.append(parse_key(line))
            except Bad:
                continue  # witness keys (type 0x04) and others: not used here
    signed = b.read("checkpoint")
    cp: Checkpoint | None = None
    try:
        cp = parse_checkpoint(signed) if signed is not None else None
    except (Bad, ValueError):
        cp = None
    logs = [k for k in keys if not re.search(r"/epoch/[0-9]+$", k.name)]
    origin = cp.origin if cp else (logs[0].name if len(logs) == 1 else "")
    identity = next((k for k in keys if k.name == origin), None)
    epoch0 = next((k for k in keys if k.name == f"{origin}/epoch/0"), None)
    if identity is None or epoch0 is None:
        raise Unreadable(f"the trusted keys have no identity and epoch-0 key for {origin!r}")
    chain = Chain(identity, epoch0)
    checks = [check_manifest(b), check_keys(b, identity, epoch0),
              check_epochs(b, chain, signed, cp), check_checkpoint(chain, signed),
              check_previous(b, chain, cp), check_custodial(b, chain, identity, cp),
              check_proofs(b, chain), check_range(b)]
    cosigs = [r for r in b.files if r.startswith("cosignatures/")]
    if quorum:
        checks.append(failed("witnesses", [f"a quorum of {quorum} was required; this script "
                                           "does not check cosignatures (use vantio verify)"]))
    elif cosigs:
        checks.append(Check("witnesses", NOT_CHECKED, f"{len(cosigs)} cosignature files not "
                            "checked by this script (use vantio verify)"))
    else:
        checks.append(Check("witnesses", SKIPPED, "no cosignatures"))
    tokens = [r for r in b.files if r.startswith("timestamps/")]
    checks.append(Check("timestamps", NOT_CHECKED if tokens else SKIPPED,
                        f"{len(tokens)} tokens not checked by this script" if tokens
                        else "no time-stamp tokens"))
    try:
        epoch: int | None = chain.at(cp.size).n if cp else None
    except Bad:
        epoch = None
    return {"bundle": str(root), "origin": origin, "size": cp.size if cp else None,
            "root": b64e(cp.root) if cp else None, "epoch": epoch,
            "ok": all(c.status != FAILED for c in checks),
            "checks": [asdict(c) for c in checks]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--trusted-keys", required=True, type=Path)
    parser.add_argument("--quorum", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = verify(args.bundle, args.trusted_keys.read_text(), args.quorum)
    except (Unreadable, OSError, UnicodeDecodeError) as exc:
        print(f"verify.py: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(f"bundle     {report['bundle']}\norigin     {report['origin']}")
        print(f"checkpoint size {report['size']}, root {report['root']}, epoch {report['epoch']}")
        for c in report["checks"]:
            print(f"  {c['name']:11} {c['status']:12} {c['detail']}")
            for f in c["findings"][1:]:
                print(f"  {'':11} {'':12} also: {f}")
        first = next((c for c in report["checks"] if c["status"] == FAILED), None)
        print("OK: the bundle verifies" if report["ok"] else
              f"FAILED: {first['name']}: {first['detail']}" if first else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
