"""`vantio anchor export`: carry a signed checkpoint off the host (docs/anchoring.md §2).

The I/O edge of anchoring. The export holds the ledger's writer lock for its
whole run, so the tree it proves things about cannot move underneath it, and
because it appends an `anchor` record naming what left the host. Order of
what becomes durable, so that a crash at any point leaves no lie behind:

1. the bundle, written under ``.vantio-anchor-<size>.partial``, every file and
   directory fsync'd, then renamed to ``vantio-anchor-<size>`` (fsync'd);
2. the `anchor` record (fdatasync'd by the writer);
3. ``DIR/anchors/last-export``, replaced by rename and fsync'd.

A crash before 2 leaves a complete bundle without its record (the next
export still extends the previous one); a crash between 2 and 3 leaves the
older last-export, which the next export extends all the same.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import bundle, merkle, note, reader, writer
from . import checkpoint as cpmod
from ._internal import osutil
from .canonical import CanonicalError, decode
from .layout import Layout, segment_first_seq

CopyProgress = Callable[[int, int], None]  # (bytes done, bytes in all)


class AnchorError(RuntimeError):
    """The export cannot run as asked (usage, media, a held lock): exit 2, nothing written."""


class AnchorRefused(AnchorError):
    """The checkpoint is not an extension of the last export (rollback, fork): exit 1."""


@dataclass(frozen=True)
class Export:
    path: Path
    size: int
    root: bytes
    manifest_sha256: str
    anchor_seq: int
    previous: int | None
    segments: list[str]
    files: int
    bytes: int


@dataclass
class Scan:
    """One pass over the ledger up to the exported size."""

    tree: merkle.Tree
    epochs: list[tuple[int, int, bytes]]  # (n, seq, line)
    starts: dict[str, int]  # segment name -> seq of its first record


def verify_script() -> bytes:
    """The standalone verifier shipped in every bundle (package data)."""
    return resources.files("vantio_appliance").joinpath("data/bundle_verify.py").read_bytes()


def scan(layout: Layout, size: int, root: bytes) -> Scan:
    """The tree and epoch records of the first ``size`` records, checked against ``root``.
    After an expire the tree starts from the expired records' edge, and the expired
    epoch records come from ``warm/expired.epochs``."""
    leaves: list[bytes] = []
    starts: dict[str, int] = {}
    sha = hashlib.sha256
    try:
        edge, kept = reader.kept(layout, size)
        expired = layout.expired_epochs.read_bytes() if edge.size else b""
    except (OSError, reader.ReadError) as exc:
        raise AnchorError(f"cannot read the expired records' edge: {exc}") from None
    epochs = [e for line in expired.split(b"\n")[:-1] if (e := _epoch(line, None))]
    for ln in kept:
        starts.setdefault(ln.segment, ln.seq)
        leaves.append(sha(b"\x00" + ln.data).digest())
        if b'"kind":"epoch"' in ln.data and (e := _epoch(ln.data, ln.seq)):
            epochs.append(e)
    tree = merkle.Tree(start=edge)
    tree.extend(leaves)  # level by level: much faster than a leaf at a time
    if tree.size != size or tree.root() != root:
        raise AnchorError(f"the records do not match the checkpoint (size {size}); run vantio "
                          "ledger verify before exporting")
    return Scan(tree, epochs, starts)


def _epoch(line: bytes, seq: int | None) -> tuple[int, int, bytes] | None:
    """(n, seq, line) of an epoch record; None for any other line."""
    try:
        rec = decode(line)
    except CanonicalError:
        return None
    if not isinstance(rec, dict) or rec.get("kind") != "epoch":
        return None
    return int(rec["epoch"]), int(rec["seq"]) if seq is None else seq, line


def last_export(layout: Layout, identity: note.Verifier) -> tuple[bytes, cpmod.Checkpoint] | None:
    """The last exported checkpoint, its identity signature checked; None before the first."""
    try:
        signed = layout.last_export.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"cannot read {layout.last_export}: {exc.strerror}") from None
    try:
        return signed, cpmod.open_signed(signed, [identity])
    except (note.NoteError, cpmod.FormatError) as exc:
        raise AnchorError(f"{layout.last_export} is not a checkpoint of this log: {exc}") from None


def refusal(last: cpmod.Checkpoint | None, new: cpmod.Checkpoint,
            root_at_last: bytes | None) -> str | None:
    """Why ``new`` may not be exported after ``last`` (None: it may). Pure."""
    if last is None:
        return None
    if new.size < last.size:
        return (f"rollback: the ledger's checkpoint (size {new.size}) is older than the last "
                f"export (size {last.size})")
    if new.size == last.size and new.root != last.root:
        return f"fork: size {new.size} has another root than the last export"
    if root_at_last != last.root:
        return (f"fork: the ledger's tree of size {last.size} is not the one exported last "
                f"(no consistency proof from {last.size} to {new.size})")
    return None


class BundleWriter:
    """Files of a bundle being written, each SHA-256 kept for the manifest; each file is
    fsync'd as written unless ``fsync`` is false (then the caller syncs them all at once)."""

    def __init__(self, base: Path, progress: CopyProgress | None, total: int,
                 fsync: bool = True) -> None:
        self.base = base
        self.fsync = fsync
        self.digests: dict[str, str] = {}
        self.bytes = 0
        self.progress = progress
        self.total = total

    def write(self, rel: str, data: bytes) -> None:
        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        self.digests[rel] = hashlib.sha256(data).hexdigest()
        self.bytes += len(data)

    def copy(self, rel: str, src: io.BufferedIOBase) -> None:
        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                digest.update(chunk)
                self.bytes += len(chunk)
                if self.progress:
                    self.progress(self.bytes, self.total)
            dst.flush()
            os.fsync(dst.fileno())
        self.digests[rel] = digest.hexdigest()

    def fsync_dirs(self) -> None:
        for dirpath, _dirs, _files in os.walk(self.base):
            osutil.fsync_dir(Path(dirpath))


def export(root: Path, media: Path, *, custodial: bool = False, since: int | None = None,
           progress: CopyProgress | None = None, use_flags: bool = True) -> Export:
    """Write an anchor bundle of the ledger's current checkpoint to ``media``, record it
    with an `anchor` record, and remember it in ``DIR/anchors/last-export``."""
    layout = Layout(root)
    if not layout.vkey.is_file():
        raise AnchorError(f"{root} is not a ledger (no vkey)")
    if not media.is_dir():
        raise AnchorError(f"{media} is not a directory (is the media mounted?)")
    if since is not None and not custodial:
        raise AnchorError("--since chooses the segments of a custodial copy: add --custodial")
    try:
        ledger = writer.Ledger(root, use_flags=use_flags)
    except writer.LedgerError as exc:
        raise AnchorError(f"anchor export appends an anchor record, so it needs the writer "
                          f"lock: {exc}. Stop vantio-ledger.service for the export") from None
    with ledger:
        ledger.flush()
        signed = ledger.signed_checkpoint()
        cp = cpmod.open_signed(signed, [ledger.signer.verifier])
        last = last_export(layout, ledger.signer.verifier)
        if last is not None and cp.size < last[1].size:  # no tree needed to see a rollback
            raise AnchorRefused(str(refusal(last[1], cp, None)))
        tree_scan = scan(layout, cp.size, cp.root)
        if last is not None and last[1].size < tree_scan.tree.first:
            raise AnchorError(f"the last export (size {last[1].size}) lies before the first "
                              f"kept record (seq {tree_scan.tree.first}): the records between "
                              "expired, so no consistency proof from it can be made")
        if last is not None:
            why = refusal(last[1], cp, tree_scan.tree.root(last[1].size))
            if why:
                raise AnchorRefused(why)
        start = since if since is not None else (last[1].size if last else 0)
        if not 0 <= start <= cp.size:
            raise AnchorError(f"--since {start} is not a tree size in 0..{cp.size}")
        # segments an expire cut short of deleting are behind the edge: not copied
        names = [n for n in layout.segment_names()
                 if segment_first_seq(n) >= tree_scan.tree.first]
        copied = [n for i, n in enumerate(names[:-1])
                  if segment_first_seq(names[i + 1]) > start] if custodial else []
        final = media / bundle.bundle_name(cp.size)
        if final.exists():
            raise AnchorError(f"{final} exists already")
        partial = media / f".{bundle.bundle_name(cp.size)}.partial"
        if partial.exists():  # a crashed export of ours: never complete, never renamed
            shutil.rmtree(partial)
        total = sum(layout.segment_path(n).stat().st_size for n in copied)
        out = BundleWriter(partial, progress, total)
        try:
            _write_bundle(out, layout, ledger, signed, cp, last, tree_scan, copied, names)
            manifest = bundle.format_manifest(out.digests)
            out.write(bundle.MANIFEST, manifest)
            out.fsync_dirs()
            os.rename(partial, final)
            osutil.fsync_dir(media)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        sha = hashlib.sha256(manifest).hexdigest()
        seq = ledger.anchor("export", cp.size, cp.root, manifest=sha)
    layout.anchors.mkdir(mode=0o750, exist_ok=True)
    osutil.replace_file(layout.last_export, signed, 0o644, durable=True)
    return Export(final, cp.size, cp.root, sha, seq, last[1].size if last else None, copied,
                  len(out.digests), out.bytes)


def write_signed(out: BundleWriter, layout: Layout, signed: bytes, size: int,
                 tree_scan: Scan) -> None:
    """What every bundle holds to check its checkpoint: the checkpoint, the epoch records
    with their inclusion in it, and the log's verifier keys. After an expire, the expired
    epoch records have no inclusion proof (their leaves are gone): the bundle holds the
    edge of the expired records instead, with its consistency with the checkpoint."""
    tree = tree_scan.tree
    out.write(bundle.CHECKPOINT, signed)
    out.write(bundle.EPOCHS, b"".join(line + b"\n" for _, _, line in tree_scan.epochs))
    for n, seq, _ in tree_scan.epochs:
        if seq >= tree.first:
            out.write(bundle.epoch_proof_name(n), cpmod.format_inclusion(
                seq, tree.inclusion_proof(seq, size), signed))
    if tree.first:
        out.write(bundle.EXPIRED, bundle.format_compact_range(tree.compact_range(tree.first)))
        out.write(bundle.EXPIRED_CONSISTENCY, cpmod.format_consistency(
            tree.first, size, tree.consistency_proof(tree.first, size)))
    out.write(bundle.LOG_VKEY, layout.vkey.read_bytes())
    out.write(bundle.EPOCH0_VKEY, layout.epoch0_vkey.read_bytes())


def _write_bundle(out: BundleWriter, layout: Layout, ledger: writer.Ledger, signed: bytes,
                  cp: cpmod.Checkpoint, last: tuple[bytes, cpmod.Checkpoint] | None,
                  tree_scan: Scan, copied: list[str], names: list[str]) -> None:
    tree, size = tree_scan.tree, cp.size
    write_signed(out, layout, signed, size, tree_scan)
    if last is not None:
        out.write(bundle.PREVIOUS, last[0])
        out.write(bundle.CONSISTENCY, cpmod.format_consistency(
            last[1].size, size, tree.consistency_proof(last[1].size, size)))
    if copied:
        first = segment_first_seq(copied[0])
        after = segment_first_seq(names[names.index(copied[-1]) + 1])
        out.write(bundle.EDGE, bundle.format_compact_range(tree.compact_range(first)))
        for name in copied:
            with layout.open_segment(name) as source:  # warm ones leave decompressed
                out.copy(f"{bundle.SEGMENTS}/{name}", source)
        out.write(bundle.SEGMENTS_CONSISTENCY, cpmod.format_consistency(
            after, size, tree.consistency_proof(after, size)))
    out.write(bundle.VERIFY_SCRIPT, verify_script())
    out.write(bundle.README, bundle.readme(cp.origin, size, cp.root,
                                           last[1].size if last else None, ledger.epoch,
                                           copied).encode())


__all__ = ["AnchorError", "AnchorRefused", "BundleWriter", "Export", "Scan", "export",
           "last_export", "refusal", "scan", "verify_script", "write_signed"]
