"""`vantio anchor import`: record the evidence a bundle brought back (docs/anchoring.md §2).

On the anchor station, witnesses add C2SP cosignatures and a time-stamping
authority RFC 3161 tokens to a bundle, outside its manifest. Back on the
host, nothing is recorded until the bundle is shown to be one this ledger
exported (its checkpoint signed by the identity key, and its size, root and
``MANIFEST.sha256`` those of an `anchor` export record) and every return
verifies: a quorum of trusted witnesses, each token over the exported
checkpoint and signed by a trusted TSA. All or nothing per bundle: one bad
cosignature or token is corruption or forgery that someone must look at, not
something to skip quietly. What was accepted becomes one `anchor` record with
direction `import`, its evidence listed; evidence recorded before is not
recorded again.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from . import audit, bundle, note, timestamp, witness, writer
from . import checkpoint as cpmod
from .anchor import AnchorError
from .canonical import CanonicalError, decode
from .layout import Layout

WITNESSES: Final = "witnesses"  # DIR/anchors/witnesses: trusted witness keys, one a line
TSA_CERT: Final = "tsa.pem"  # DIR/anchors/tsa.pem: the TSA roots (and pins) trusted
DEFAULT_QUORUM: Final = 1


@dataclass(frozen=True)
class Outcome:
    """One bundle's import: the record appended (seq), or why it was refused."""

    bundle: Path
    size: int | None
    evidence: list[str]  # newly recorded
    seq: int | None = None
    refused: str | None = None
    already: int = 0  # evidence lines found recorded before

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "size": self.size, "evidence": self.evidence,
                "anchor_seq": self.seq, "refused": self.refused, "already": self.already}


class ImportRefused(Exception):
    """This bundle is not recorded: the message says why (exit 1)."""


def bundles_on(media: Path) -> list[Path]:
    """``media`` itself when it is a bundle, else the bundles in it, oldest first."""
    if (media / bundle.MANIFEST).exists() or (media / bundle.CHECKPOINT).exists():
        return [media]
    found = [p for p in media.glob(f"{bundle.PREFIX}*")
             if p.is_dir() and p.name[len(bundle.PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(bundle.PREFIX):]))


def anchor_records(layout: Layout) -> Iterator[dict[str, Any]]:
    """Every `anchor` record of the ledger, in order (a byte search, then a decode)."""
    needle = b'"kind":"anchor"'
    for name in layout.segment_names():
        data = layout.read_segment(name)
        at = data.find(needle)
        while at >= 0:
            lo, hi = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
            if hi < 0:
                break  # torn bytes
            try:
                rec = decode(data[lo:hi])
            except CanonicalError:
                rec = None
            if isinstance(rec, dict) and rec.get("kind") == "anchor":
                yield rec
            at = data.find(needle, hi)


def trusted_witnesses(text: str) -> list[witness.CosignatureVerifier]:
    """The cosignature keys (type 0x04) of a trusted-keys file; other keys are ignored."""
    try:
        return witness.parse_trusted_keys(text)[1]
    except note.NoteError as exc:
        raise AnchorError(f"trusted witness keys: {exc}") from None


def check(path: Path, identity: note.Verifier, exports: dict[tuple[int, str], str],
          witnesses: list[witness.CosignatureVerifier], quorum: int,
          tsa: timestamp.TsaTrust | None) -> tuple[cpmod.Checkpoint, str, list[str]]:
    """The checkpoint, manifest digest and evidence of an acceptable bundle; raises
    ImportRefused (exit 1) or AnchorError (usage: tokens but no TSA to check them with)."""
    files = audit.BundleFiles(path)
    signed = files.read(bundle.CHECKPOINT)
    if signed is None:
        raise ImportRefused(f"no {bundle.CHECKPOINT} file")
    try:
        cp = cpmod.open_signed(signed, [identity])
    except (note.NoteError, cpmod.FormatError) as exc:
        raise ImportRefused(f"the checkpoint is not one of this log ({identity.name}): {exc}") \
            from None
    root = base64.b64encode(cp.root).decode()
    exported = exports.get((cp.size, root))
    if exported is None:
        raise ImportRefused(f"unknown checkpoint: this ledger never exported size {cp.size} with "
                       f"root {root}")
    manifest = audit.check_manifest(files)
    if manifest.status == audit.FAILED:
        raise ImportRefused(f"manifest: {manifest.detail}")
    digest = hashlib.sha256(files.read(bundle.MANIFEST) or b"").hexdigest()
    if digest != exported:
        raise ImportRefused(f"manifest mismatch: {bundle.MANIFEST} is not the one exported with "
                       f"size {cp.size} (the anchor record names {exported})")
    cosigs, tokens = audit.returns(files)
    if not cosigs and not tokens:
        raise ImportRefused("nothing came back: no cosignatures/*.cosig, no timestamps/*.tsr")
    evidence = []
    try:
        q = witness.check_quorum(signed, cosigs, witnesses, quorum)
    except note.NoteError as exc:
        raise ImportRefused(f"cosignatures: {exc}") from None
    if q.invalid:
        raise ImportRefused(f"bad cosignature: {q.invalid[0]}")
    if not q.ok:
        raise ImportRefused(f"quorum not met: {q.count} of {quorum} trusted witnesses cosigned")
    evidence += [f"cosignature {w.witness.name} {w.timestamp}" for w in q.witnessed]
    if tokens and tsa is None:
        raise AnchorError(f"{path} holds time-stamp tokens: give --tsa-cert (or put the TSA "
                          f"certificates in DIR/anchors/{TSA_CERT}) to check them")
    for rel, token in sorted(tokens.items()):
        assert tsa is not None
        try:
            info = timestamp.verify(token, signed, tsa)
        except timestamp.TimestampError as exc:
            raise ImportRefused(f"{rel}: {exc}") from None
        evidence.append(f"timestamp {hashlib.sha256(token).hexdigest()} "
                        f"{info.gen_time.isoformat()}")
    return cp, digest, evidence


def import_bundles(root: Path, media: Path, *, witness_keys: Path | None = None,
                   quorum: int = DEFAULT_QUORUM, tsa_cert: Path | None = None,
                   use_flags: bool = True) -> list[Outcome]:
    """Check every bundle at ``media`` and record what each brought back."""
    layout = Layout(root)
    if not layout.vkey.is_file():
        raise AnchorError(f"{root} is not a ledger (no vkey)")
    if not media.is_dir():
        raise AnchorError(f"{media} is not a directory (is the media mounted?)")
    if quorum < 0:
        raise AnchorError("--quorum cannot be negative")
    found = bundles_on(media)
    if not found:
        raise AnchorError(f"no anchor bundle ({bundle.PREFIX}SIZE) in {media}")
    witnesses = _witnesses(layout, witness_keys)
    if quorum and not witnesses:
        raise AnchorError(f"--quorum {quorum} needs trusted witness keys: --witness-keys FILE "
                          f"or {layout.anchors / WITNESSES}")
    tsa = _tsa(layout, tsa_cert)
    try:
        ledger = writer.Ledger(root, use_flags=use_flags)
    except writer.LedgerError as exc:
        raise AnchorError(f"anchor import appends anchor records, so it needs the writer "
                          f"lock: {exc}. Stop vantio-ledger.service for the import") from None
    out = []
    with ledger:
        exports: dict[tuple[int, str], str] = {}
        recorded: set[tuple[int, str, str]] = set()
        for rec in anchor_records(layout):
            if rec.get("direction") == "export" and "manifest" in rec:
                exports[(rec["size"], rec["root"])] = rec["manifest"]
            for e in rec.get("evidence", []):
                recorded.add((rec["size"], rec["root"], e))
        for path in found:
            try:
                cp, digest, evidence = check(path, ledger.signer.verifier, exports, witnesses,
                                             quorum, tsa)
            except ImportRefused as exc:
                out.append(Outcome(path, None, [], refused=str(exc)))
                continue
            key = (cp.size, base64.b64encode(cp.root).decode())
            new = [e for e in evidence if (*key, e) not in recorded]
            seq = None
            if new:
                seq = ledger.anchor("import", cp.size, cp.root, manifest=digest, evidence=new)
                recorded.update((*key, e) for e in new)
            out.append(Outcome(path, cp.size, new, seq, already=len(evidence) - len(new)))
    return out


def _witnesses(layout: Layout, given: Path | None) -> list[witness.CosignatureVerifier]:
    path = given or layout.anchors / WITNESSES
    try:
        return trusted_witnesses(path.read_text())
    except FileNotFoundError:
        if given is not None:
            raise AnchorError(f"cannot read {given}: no such file") from None
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorError(f"cannot read {path}: {exc}") from None


def _tsa(layout: Layout, given: Path | None) -> timestamp.TsaTrust | None:
    path = given or layout.anchors / TSA_CERT
    try:
        return timestamp.TsaTrust.from_pem(path.read_bytes())
    except FileNotFoundError:
        if given is not None:
            raise AnchorError(f"cannot read {given}: no such file") from None
        return None
    except OSError as exc:
        raise AnchorError(f"cannot read {path}: {exc.strerror}") from None
    except timestamp.TimestampError as exc:
        raise AnchorError(f"{path}: {exc}") from None


__all__ = ["ImportRefused", "Outcome", "anchor_records", "bundles_on", "check", "import_bundles",
           "trusted_witnesses"]
