"""The one writer of a ledger directory: commit, seal, recover.

Invariants the rest of the product relies on:

- a record is acknowledged only after its bytes are fdatasync'd;
- the tree signed into a checkpoint covers only durable records, so the host
  never signs two checkpoints that disagree;
- a segment goes from append-only (+a) to immutable (+i) in one ioctl, after
  its `seal` record is durable, so there is no moment at which it is writable;
- after a crash, opening the ledger finishes any half-done seal and excuses a
  torn tail with a `torn` record: the sequence continues, nothing is lost;
- every checkpoint it signs carries the identity signature and the signature of
  the epoch in force at its size; an epoch's private key is destroyed as soon
  as the next epoch's record is durable (docs/anchoring.md section 1), and
  rotation happens at every seal and when an epoch is ``epoch_seconds`` old.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC
from msgspec import UNSET

from . import checkpoint as cpmod
from . import epoch, keys, merkle, note, retention
from ._internal import osutil
from ._internal.histogram import Histogram
from ._internal.latest import LatestFile
from .canonical import CanonicalError, decode, encode, encode_lines
from .layout import Layout, segment_first_seq, segment_name
from .records import (
    SYSTEM_TENANT,
    Anchor,
    Epoch,
    Event,
    Gap,
    Genesis,
    RecordError,
    Seal,
    Submitted,
    SystemRecord,
    Time,
    Torn,
    decode_submission,
    decode_submissions,
    new_trace_id,
    new_trace_ids,
    submission_fields,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES: Final = 64 * 2**20
DEFAULT_SEGMENT_AGE_S: Final = 86_400
DEFAULT_EPOCH_S: Final = 900
#: Under load the checkpoint file is replaced at most this often (it always is on seal,
#: close and ``flush``): replacing a file on ext4 costs more than the fdatasync, and it
#: slows the ledger's own: every 10 ms cost 20-30% of the single-record rate against
#: every 100 ms (bench/ingest.py, six interleaved pairs, 2026-12-08). The service signs
#: a fresh checkpoint for each API read; the file is for the offline tools.
PUBLISH_INTERVAL_S: Final = 0.100


class LedgerError(RuntimeError):
    """The ledger cannot be opened or written as asked; the message says why."""


class LedgerUnavailable(LedgerError):
    """A write failed (disk full, I/O error): nothing of the batch is acknowledged."""


class EpochKeyGone(LedgerError):
    """A checkpoint of that size needs an epoch key that has been destroyed: sign a newer one."""


@dataclass(frozen=True)
class _EpochSigner:
    """An epoch whose private key this process holds."""

    n: int
    seq: int  # of its epoch record: it signs checkpoints of sizes > seq
    signer: note.Signer
    key: Ed25519PrivateKey  # to sign the next epoch's statement
    started_ns: int  # CLOCK_REALTIME of its record: rotation by age counts from here


class Submission(msgspec.Struct, frozen=True, gc=False):
    """A validated submission (event or gap): only ``submission()``, ``parse()`` and the
    ingest API make one."""

    tenant: str
    fields: Submitted


def submission(tenant: str, fields: Any) -> Submission:
    """Validate ``fields`` (a parsed JSON object) against the whitelist; raises RecordError."""
    return Submission(tenant, submission_fields(fields))


def parse(tenant: str, data: bytes) -> Submission:
    """Validate one JSON-encoded submission; raises RecordError."""
    return Submission(tenant, decode_submission(data))


def parse_lines(tenant: str, data: bytes) -> list[Submission]:
    """Validate JSON lines of submissions at once; raises RecordError if any is bad."""
    return [Submission(tenant, f) for f in decode_submissions(data)]


class Ack(msgspec.Struct, frozen=True, gc=False):
    """What a caller gets back once its record is durable."""

    seq: int
    trace_id: str
    receipt: str
    leaf_hash: bytes
    time: Time


#: Told of every durable write: (segment, offset of the first record, the record lines,
#: their leaf hashes, their trace ids when the writer has them at hand, else None); the
#: service's hot index is one.
Observer = Callable[[str, int, bytes, list[bytes], list[str] | None], None]


class Prepared(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A submission encoded as its record line, with 0 for its seq and zeros for its time.

    The writer, which alone gives seqs and times, puts them in with two
    replacements instead of encoding the record: whoever holds the tenant's
    key (the receipt is in the line) can prepare, so the ingest service
    prepares batches in helper processes, on the other cores, and its event
    loop only finishes the lines.
    """

    line: bytes
    trace_id: str
    receipt: str


#: What ``prepare`` encodes in place of the seq and the time; keys the closed whitelist
#: lets occur once a line and only at its top level (a string cannot hold the unescaped
#: quote before them), so the first occurrence is the one.
_SEQ: Final = b',"seq":0,'
_ZERO_TIME: Final = Time(mono_ns=0, real_ns=0, earliest_ns=0, latest_ns=0)
_TIME: Final = b',"time":' + encode(_ZERO_TIME) + b","


def prepare(batch: Sequence[Submission], mac: Callable[[str], HMAC]) -> list[Prepared]:
    """``batch`` as record lines with trace ids and receipts, for ``Ledger.stage``.

    ``mac(tenant)`` is an HMAC keyed with the tenant's API key, copied per receipt.
    """
    records = _records(batch, mac, itertools.repeat(0), _ZERO_TIME)
    return [Prepared(line, rec.trace_id, rec.receipt)
            for rec, line in zip(records, encode_lines(records).split(b"\n"), strict=False)]


def _records(batch: Sequence[Submission], mac: Callable[[str], HMAC], seqs: Iterable[int],
             time: Time) -> list[Event | Gap]:
    """The records of submissions: their trace ids (new where none was given), receipts
    (``mac`` as for ``prepare``), ``seqs`` (endless) and ``time``."""
    records = []
    for seq, sub, new_id in zip(seqs, batch, new_trace_ids(len(batch)), strict=False):
        f = sub.fields
        tid = new_id if f.trace_id is UNSET else f.trace_id
        receipt = mac(sub.tenant).copy()
        receipt.update(tid.encode())
        records.append(f.record(seq=seq, trace_id=tid, tenant=sub.tenant, time=time,
                                receipt=receipt.finalize().hex()))
    return records


class Staged(msgspec.Struct, frozen=True, gc=False):
    """A group encoded, hashed and receipted, not yet written (``Ledger.stage``)."""

    data: bytes
    leaves: list[bytes]
    acks: list[Ack]


def _time(error_ns: int) -> Time:
    mono, real = osutil.now()
    return Time(mono_ns=mono, real_ns=real, earliest_ns=real - error_ns,
                latest_ns=real + error_ns)


class Ledger:
    """An open ledger directory, held exclusively by this process."""

    def __init__(self, root: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 segment_age_s: float = DEFAULT_SEGMENT_AGE_S,
                 epoch_seconds: float = DEFAULT_EPOCH_S, use_flags: bool = True) -> None:
        self.layout = Layout(root)
        self.segment_bytes = segment_bytes
        self.segment_age_ns = int(segment_age_s * 1e9)
        self.epoch_age_ns = int(epoch_seconds * 1e9)
        self.use_flags = use_flags
        self._lock_fd = self._lock()
        try:
            ident = keys.load_identity(self.layout.identity)
            self._identity_key = ident  # signs epoch 0's statement
            self.origin = note.Verifier.parse(self.layout.vkey.read_text()).name
            self.signer = note.Signer(self.origin, ident)
            if self.signer.verifier != note.Verifier.parse(self.layout.vkey.read_text()):
                raise LedgerError(f"{self.layout.vkey} does not match the identity key")
            self.tenants = keys.TenantStore(self.layout.tenants)
            self._macs: dict[str, HMAC] = {}
            self._tree = merkle.CompactRange()
            self._fd = -1
            self._dirty = False
            # (current epoch, next epoch while a rotation is under way); replaced whole, so
            # that a thread signing for the ingest API always sees a consistent pair
            self._epochs: tuple[_EpochSigner, _EpochSigner | None] | None = None
            self._seen_epoch: tuple[int, dict[str, Any]] | None = None
            self._published_at = 0.0
            self._unpublished = False
            self._checkpoint_file = LatestFile(self.layout.checkpoint)
            self.fsync_seconds = Histogram()  # for the service's metrics
            self.observer: Observer | None = None
            self._recover()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------

    def _lock(self) -> int:
        if not self.layout.identity.exists():
            raise LedgerError(f"{self.layout.root} is not a ledger (run vantio ledger init)")
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LedgerError(
                f"{self.layout.root} is held by another writer (pid {holder}); "
                "the ledger has one writer at a time") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _recover(self) -> None:
        names = self.layout.segment_names()
        if not names:
            self._open_segment(0)
            self._begin()
            return
        self._seen_epoch = None
        start, offset = self._load_state(names)
        for name in names[start:-1]:
            self._absorb(name, offset, active=False)
            offset = 0
        self.active = names[-1]
        self._active_first = segment_first_seq(self.active)
        self._absorb(self.active, offset, active=True)
        for name in names[:-1]:
            self._make_immutable(self.layout.segment_path(name))
        self._resume_epochs(names)
        if self._last_kind == "seal" and self._torn is None:
            self._finish_seal()  # crashed between the seal record and the next segment
        else:
            try:
                self._fd = os.open(self.layout.segments / self.active,
                                   os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except PermissionError:
                raise LedgerError(f"the active segment {self.active} is immutable but not "
                                  "sealed; run vantio ledger verify") from None
            self._make_append_only()  # a crash can come between creating a segment and its +a
            if self._torn is not None:
                self._append_torn()
            self._point_link()
            self._publish()
        assert self._epochs is not None
        if self._epochs[0].seq < self._active_first:
            self.rotate_if_due()  # a crash came between a seal and the rotation after it

    def _begin(self) -> None:
        """A new ledger's first group: genesis, and epoch 0 signed by the identity key."""
        key = keys.load_key(self.layout.epoch_key, "epoch key")
        signer = note.Signer(epoch.key_name(self.origin, 0), key)
        try:
            published = note.Verifier.parse(self.layout.epoch0_vkey.read_text())
        except (OSError, note.NoteError) as exc:
            raise LedgerError(f"cannot read {self.layout.epoch0_vkey}: {exc}") from None
        if published != signer.verifier:
            raise LedgerError(f"{self.layout.epoch0_vkey} does not match {self.layout.epoch_key}")
        genesis = self._genesis()
        root = merkle.leaf_hash(genesis)  # the tree of the genesis record alone
        vkey = str(signer.verifier)
        first = self._system(Epoch, seq=1, epoch=0, root=base64.b64encode(root).decode(),
                             vkey=vkey, signature=epoch.sign_statement(
                                 self._identity_key, self.origin, 0, 1, root, vkey))
        self._epochs = (_EpochSigner(0, 1, signer, key, time.time_ns()), None)
        self._commit([genesis, first])

    def _resume_epochs(self, names: list[str]) -> None:
        """Find the current epoch and its key; finish or undo a rotation a crash cut short."""
        found = self._seen_epoch or self._find_epoch(names)
        if found is None:
            raise LedgerError(f"{self.layout.root} has no epoch record (its init did not "
                              "finish, or it predates epoch keys): it cannot be signed for")
        seq, rec = found
        n, vkey = int(rec["epoch"]), note.Verifier.parse(rec["vkey"])
        for tmp in self.layout.keys.glob(".epoch.*.tmp"):  # step 1 cut short in write_private
            keys.destroy(tmp)
        nxt_path = self.layout.epoch_next
        if nxt_path.exists():
            try:
                named = keys.load_key(nxt_path, "next epoch key").public_key().public_bytes_raw(
                ) == vkey.public
            except keys.KeyFileError:
                named = False
            if named:  # step 2 was durable: finish step 3
                self._install_next()
                log.warning("finished an interrupted rotation to epoch %d", n)
            else:  # step 2 never happened: the key never signed anything
                keys.destroy(nxt_path)
                log.warning("discarded the key of a rotation that did not reach the ledger")
        key = keys.load_key(self.layout.epoch_key, "epoch key")
        signer = note.Signer(epoch.key_name(self.origin, n), key)
        if signer.verifier != vkey:
            raise LedgerError(f"{self.layout.epoch_key} is not the key of epoch {n} (the "
                              f"ledger's last epoch record, seq {seq})")
        self._epochs = (_EpochSigner(n, seq, signer, key, int(rec["time"]["real_ns"])), None)

    def _find_epoch(self, names: list[str]) -> tuple[int, dict[str, Any]] | None:
        """The last epoch record on disk, searched from the end (usually in the active
        segment, which a rotation at seal begins)."""
        needle = b'"kind":"epoch"'  # canonical JSON: a string value cannot contain it unescaped
        for name in reversed(names):
            data = self.layout.read_segment(name)
            end = len(data)
            while (at := data.rfind(needle, 0, end)) >= 0:
                lo, hi = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
                end = lo
                if hi < 0:
                    continue  # torn bytes
                try:
                    rec = decode(data[lo:hi])
                except CanonicalError:
                    continue
                if type(rec) is dict and rec.get("kind") == "epoch":
                    return int(rec["seq"]), rec
        return None

    def _load_state(self, names: list[str]) -> tuple[int, int]:
        """Resume from the cached right edge of the tree when it fits the files."""
        try:
            st = msgspec.json.decode(self.layout.state.read_bytes())
            start = names.index(st["segment"])
            tree = merkle.CompactRange(st["size"], [base64.b64decode(h) for h in st["stack"]])
            if not 0 <= st["offset"] <= (self.layout.segments / st["segment"]).stat().st_size:
                raise ValueError("offset beyond segment")
        except (OSError, msgspec.DecodeError, ValueError, KeyError, TypeError):
            self._tree = retention.expired_edge(self.layout)  # empty unless some were deleted
            return 0, 0
        self._tree = tree
        return start, int(st["offset"])

    def _absorb(self, name: str, offset: int, *, active: bool) -> None:
        """Hash the records of a segment from ``offset`` into the tree."""
        data = self.layout.read_segment(name)
        if offset == 0 and data and segment_first_seq(name) != self._tree.size:
            raise LedgerError(f"segment {name} does not start at seq {self._tree.size}")
        self._last_kind, self._torn, bad_at = None, None, None
        pos = offset
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:  # a torn tail: bytes with no newline
                self._torn = (bad_at if bad_at is not None else pos, len(data))
                break
            line = data[pos:end]
            try:
                rec = decode(line)
                ok = type(rec) is dict and rec.get("seq") == self._tree.size
            except CanonicalError:
                ok = False
            if not ok and line[:1] == b"{" and line[-1:] == b"}":  # whole, so not a tear
                raise LedgerError(f"{name}: invalid record at byte {pos}; "
                                  "run vantio ledger verify")
            if not ok:
                bad_at = pos if bad_at is None else bad_at
            elif rec["kind"] == "torn" and bad_at is not None:
                if (rec["offset"], rec["length"]) != (bad_at, pos - 1 - bad_at):
                    raise LedgerError(f"{name}: torn record at byte {pos} names other bytes")
                bad_at = None
            if ok:
                if bad_at is not None:
                    raise LedgerError(f"{name}: bytes at {bad_at} are not records and not torn; "
                                      "run vantio ledger verify")
                if rec["kind"] == "epoch":
                    self._seen_epoch = (self._tree.size, rec)
                self._tree.append(merkle.leaf_hash(line))
                self._last_kind = rec["kind"]
            pos = end + 1
        if bad_at is not None and self._torn is None:
            self._torn = (bad_at, len(data))
        if self._torn is not None and not active:
            raise LedgerError(f"sealed segment {name} has a torn tail; run vantio ledger verify")
        # resume here after a failed repair: the torn bytes are met again, whole
        self._offset = self._torn[0] if self._torn else len(data)
        first = data[:data.find(b"\n")]
        try:
            self._segment_start_ns = int(msgspec.json.decode(first)["time"]["real_ns"])
        except (msgspec.DecodeError, KeyError, TypeError):
            self._segment_start_ns = time.time_ns()

    # -- records ---------------------------------------------------------------

    def _system(self, kind: type[SystemRecord], seq: int | None = None, **fields: Any) -> bytes:
        return encode(kind(v=1, seq=self._tree.size if seq is None else seq,
                           trace_id=new_trace_id(), tenant=SYSTEM_TENANT,
                           time=_time(osutil.clock_error_ns()), **fields))

    def _genesis(self) -> bytes:
        return self._system(Genesis, origin=self.origin, vkey=str(self.signer.verifier))

    def _receipt_mac(self, tenant: str) -> HMAC:
        """An HMAC keyed with the tenant's API key, copied per receipt (records.receipt's
        value). cryptography's copy costs a third of the standard library's."""
        mac = self._macs.get(tenant)
        if mac is None:
            key = self.tenants.get(tenant).api_key.encode()
            mac = self._macs[tenant] = HMAC(key, SHA256())
        return mac

    def append(self, batch: Sequence[Submission]) -> list[Ack]:
        """Commit ``batch`` as one group (durable when this returns), then ``upkeep``."""
        acks = self.write(batch)
        self.upkeep()
        return acks

    def upkeep(self) -> None:
        """``publish_if_due``, then ``rotate_if_due``. Apart from ``write`` so that a
        group's callers can be answered first: acknowledgements need only the fdatasync."""
        self.publish_if_due()
        self.rotate_if_due()

    def publish_if_due(self) -> None:
        """Publish the checkpoint when a commit is not covered by the file and
        PUBLISH_INTERVAL_S has passed since the last time."""
        if self.unpublished:
            self._publish(now=False)

    def write(self, batch: Sequence[Submission | Prepared]) -> list[Ack]:
        """Commit ``batch`` as one group: durable when this returns. ``upkeep`` follows.

        Raises LedgerUnavailable when the disk refuses the write: then no
        record of the batch is acknowledged, and the next call repairs the
        tail before it writes.
        """
        staged = self.stage(batch)
        self.store(staged)
        return self.finish(staged)

    # The three steps of ``write``, apart so that a service can run ``store``, the one that
    # waits on the disk, in a thread of its own and the rest on its event loop. Between
    # ``stage`` and ``finish`` nothing else may touch the ledger.

    def stage(self, batch: Sequence[Submission | Prepared]) -> Staged:
        """The group's record lines, leaf hashes and acknowledgements (CPU only, unless a
        failed write is to be repaired first)."""
        self._repair()
        t = _time(osutil.clock_error_ns())  # the group is accepted at one moment
        first = self._tree.size
        records: Sequence[Event | Gap | Prepared]
        if all(type(x) is Submission for x in batch):  # encoded at once: 0.9 us a record less
            records = _records(batch, self._receipt_mac,  # type: ignore[arg-type]
                               itertools.count(first), t)
            data = encode_lines(records)
            lines = data.split(b"\n")[:-1]
        else:  # a helper's batch in the group: the seqs and the time put in
            records = self._prepared(batch)
            when = b',"time":' + encode(t) + b","
            lines = [p.line.replace(_SEQ, b',"seq":%d,' % seq, 1).replace(_TIME, when, 1)
                     for seq, p in enumerate(records, first)]
            data = b"".join([line + b"\n" for line in lines])
        sha = hashlib.sha256
        leaves = [sha(b"\x00" + line).digest() for line in lines]
        return Staged(data, leaves, [Ack(seq, r.trace_id, r.receipt, leaf, t) for seq, r, leaf
                                     in zip(itertools.count(first), records, leaves)])

    def _prepared(self, batch: Sequence[Submission | Prepared]) -> list[Prepared]:
        """The batch as Prepared records, the Submissions in it prepared here."""
        subs = [x for x in batch if type(x) is Submission]
        made = iter(prepare(subs, self._receipt_mac))
        return [next(made) if type(x) is Submission else x for x in batch]  # type: ignore[misc]

    def store(self, staged: Staged) -> None:
        """Write the group and fdatasync it (raises LedgerUnavailable as ``write``)."""
        self._write_durable(staged.data)

    def finish(self, staged: Staged) -> list[Ack]:
        """After ``store``: extend the tree, tell the observer; the group's acknowledgements."""
        self._extend(staged.data, staged.leaves, trace_ids=[a.trace_id for a in staged.acks])
        return staged.acks

    def anchor(self, direction: str, size: int, root: bytes, *, manifest: str | None = None,
               evidence: list[str] | None = None) -> int:
        """Append an `anchor` record (durable when this returns); returns its seq."""
        self._repair()
        fields: dict[str, Any] = {"direction": direction, "size": size,
                                  "root": base64.b64encode(root).decode()}
        if manifest is not None:
            fields["manifest"] = manifest
        if evidence is not None:
            fields["evidence"] = evidence
        seq = self._tree.size
        self._commit([self._system(Anchor, **fields)])
        self._publish()
        return seq

    # -- writing ---------------------------------------------------------------

    def _commit(self, lines: list[bytes]) -> None:
        """Commit the ledger's own records (genesis, seal)."""
        self._write_commit(b"".join(ln + b"\n" for ln in lines),
                           [merkle.leaf_hash(ln) for ln in lines])

    def _write_commit(self, data: bytes, leaves: list[bytes], lead: bytes = b"",
                      at: int | None = None) -> None:
        """Write whole lines (after ``lead``), fdatasync, and only then extend the tree.

        ``at`` is where the write lands when it is not the end of the last
        record (after torn bytes); the offset moves only once the write is durable.
        """
        self._write_durable(lead + data)
        self._extend(data, leaves, lead, at)

    def _extend(self, data: bytes, leaves: list[bytes], lead: bytes = b"",
                at: int | None = None, trace_ids: list[str] | None = None) -> None:
        """After a durable write: the tree, the offset, the observer."""
        self._tree.extend(leaves)
        start = (self._offset if at is None else at) + len(lead)
        self._offset = start + len(data)
        if self.observer is not None:
            self.observer(self.active, start, data, leaves, trace_ids)
        self._unpublished = True  # upkeep publishes

    def _write_durable(self, data: bytes) -> None:
        try:  # a full disk refuses the whole group here, before anything is written
            osutil.reserve(self._fd, os.fstat(self._fd).st_size, len(data))
        except OSError as exc:
            raise LedgerUnavailable(f"ledger write refused: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            started = time.perf_counter()
            os.fdatasync(self._fd)
            self.fsync_seconds.observe(time.perf_counter() - started)
        except OSError as exc:
            self._dirty = True
            raise LedgerUnavailable(f"ledger write failed: {exc.strerror}") from None

    def _repair(self) -> None:
        """After a failed write: take in whatever reached the disk, excuse a torn tail."""
        if not self._dirty:
            return
        try:  # what reached the page cache must be durable before it is signed
            os.fdatasync(self._fd)
        except OSError as exc:
            raise LedgerUnavailable(f"ledger still unwritable: {exc.strerror}") from None
        taken = self._offset
        self._absorb(self.active, taken, active=True)
        if self.observer is not None and self._offset > taken:  # whole lines that made it
            with (self.layout.segments / self.active).open("rb") as f:
                f.seek(taken)
                data = f.read(self._offset - taken)
            self.observer(self.active, taken, data,
                          [merkle.leaf_hash(ln) for ln in data.split(b"\n")[:-1]], None)
        self._settle_rotation()
        # the failed write was a seal record and it reached the disk: a seal closes its
        # segment, so finish it (+i, the next segment) before anything else is written
        sealed = self._last_kind == "seal" and self._torn is None and self._offset > taken
        if self._torn is not None:
            self._append_torn()
        self._dirty = False
        if sealed:
            self._finish_seal()
        else:
            self._publish()

    def _append_torn(self) -> None:
        assert self._torn is not None
        off, end = self._torn
        line = self._system(Torn, segment=self.active, offset=off, length=end - off)
        # the torn bytes stay; a newline ends them, then the torn record
        self._write_commit(line + b"\n", [merkle.leaf_hash(line)], lead=b"\n", at=end)
        log.warning("torn tail of %s (%d bytes at %d) excused by a torn record",
                    self.active, end - off, off)
        self._torn = None

    def _publish(self, *, now: bool = True) -> None:
        """Sign the tree and replace the checkpoint file.

        The file is derivable from the durable records, so it is not fsync'd, and
        failing to replace it (disk full) does not fail a commit that is already
        durable: the next publication, or the next open, covers it. With
        ``now=False`` (upkeep) it waits out PUBLISH_INTERVAL_S and leaves the
        file to its thread instead of waiting for the rename.
        """
        clock = time.monotonic()
        if not now and clock - self._published_at < PUBLISH_INTERVAL_S:
            self._unpublished = True
            return
        written = self._checkpoint_file.put(self.signed_checkpoint(), wait=now)
        self._published_at, self._unpublished = clock, not written

    def flush(self) -> None:
        """Publish the checkpoint if a commit is not yet covered by the file."""
        if self.unpublished:
            self._publish()

    @property
    def unpublished(self) -> bool:
        return self._unpublished or self._checkpoint_file.failed

    def signed_checkpoint(self) -> bytes:
        """The checkpoint of the whole durable tree, signed by identity and epoch keys."""
        return self.sign_checkpoint(self._tree.size, self._tree.root())

    def sign_checkpoint(self, size: int, root: bytes) -> bytes:
        """Sign a checkpoint of ``size`` (a size this ledger has had) with the identity key
        and the key of the epoch in force at that size.

        Safe to call from another thread than the writer's. Raises EpochKeyGone
        when that epoch's key has been destroyed: sign a newer tree instead.
        """
        assert self._epochs is not None
        cur, nxt = self._epochs
        held = nxt if nxt is not None and size > nxt.seq else cur
        if size <= held.seq:
            raise EpochKeyGone(f"the key of the epoch in force at tree size {size} is "
                               f"destroyed (epoch {held.n} begins at seq {held.seq})")
        return cpmod.sign(cpmod.Checkpoint(self.origin, size, root), self.signer, held.signer)

    @property
    def epoch(self) -> int:
        """The current epoch's number."""
        assert self._epochs is not None
        return self._epochs[0].n

    # -- epochs ----------------------------------------------------------------

    def rotate_epoch(self) -> None:
        """Begin the next epoch and destroy the current one's key: the three steps of
        docs/anchoring.md section 1. Raises LedgerUnavailable when a write fails; the
        next commit then finishes or undoes the rotation from what reached the disk."""
        self._repair()
        assert self._epochs is not None
        cur = self._epochs[0]
        n, seq, root = cur.n + 1, self._tree.size, self._tree.root()
        try:  # step 1: the new key, durable before anything names it
            key = keys.generate_key(self.layout.epoch_next)
        except OSError as exc:
            raise LedgerUnavailable(f"epoch rotation: cannot write {self.layout.epoch_next}: "
                                    f"{exc.strerror}") from None
        signer = note.Signer(epoch.key_name(self.origin, n), key)
        vkey = str(signer.verifier)
        line = self._system(Epoch, epoch=n, root=base64.b64encode(root).decode(), vkey=vkey,
                            signature=epoch.sign_statement(cur.key, self.origin, n, seq, root,
                                                           vkey))
        nxt = _EpochSigner(n, seq, signer, key, time.time_ns())
        self._epochs = (cur, nxt)  # sizes > seq are signed by the new key from here on
        try:
            self._commit([line])  # step 2: the epoch record, fdatasync'd
        except LedgerUnavailable:
            if not self._dirty:  # refused before a byte was written: undo step 1 now
                self._settle_rotation()
            raise  # else the next commit's repair settles it from what reached the disk
        try:
            self._install_next()  # step 3: destroy the old key
        except OSError as exc:
            self._dirty = True  # the next commit's repair retries step 3
            raise LedgerUnavailable(f"epoch rotation: cannot destroy the old key: "
                                    f"{exc.strerror}") from None
        self._epochs = (nxt, None)
        log.info("epoch %d begins at seq %d", n, seq)

    def _install_next(self) -> None:
        """Step 3: overwrite epoch.key in place, fsync, rename epoch.next over it, fsync dir.
        Idempotent: once epoch.next is gone, epoch.key is already the new key."""
        key, nxt = self.layout.epoch_key, self.layout.epoch_next
        if nxt.exists():
            if key.exists():
                keys.shred(key)
            os.replace(nxt, key)
        osutil.fsync_dir(self.layout.keys)

    def _settle_rotation(self) -> None:
        """After a failed write during a rotation: keep the new epoch if its record reached
        the ledger (it is then the record at the new epoch's seq), else discard its key."""
        assert self._epochs is not None
        cur, nxt = self._epochs
        if nxt is None:
            return
        if self._tree.size > nxt.seq:
            self._install_next()
            self._epochs = (nxt, None)
        else:
            if self.layout.epoch_next.exists():
                keys.destroy(self.layout.epoch_next)
            self._epochs = (cur, None)

    @property
    def size(self) -> int:
        return self._tree.size

    # -- segments --------------------------------------------------------------

    def rotation_due(self) -> str | None:
        """"seal" when the active segment is too large or too old, "epoch" when the
        current epoch is too old or a crash cut off the rotation that follows a seal."""
        now = time.time_ns()
        assert self._epochs is not None
        cur = self._epochs[0]
        if (self._offset >= self.segment_bytes
                or now - self._segment_start_ns >= self.segment_age_ns):
            return "seal"
        if now - cur.started_ns >= self.epoch_age_ns or cur.seq < self._active_first:
            return "epoch"
        return None

    def rotate_if_due(self) -> None:
        """Seal the active segment (which begins a new epoch) or begin a new epoch, as
        ``rotation_due`` says. A failed write is logged, not raised: the caller's records
        are durable, and the next call tries again."""
        try:
            if (due := self.rotation_due()) == "seal":
                self.seal()
            elif due == "epoch":
                self.rotate_epoch()
        except LedgerUnavailable as exc:
            log.warning("sealing or epoch rotation postponed: %s", exc)

    def seal(self) -> bytes:
        """Seal the active segment, start the next, and begin a new epoch in it, so that
        the key that signed the seal is destroyed; returns the sealed checkpoint."""
        self._repair()
        signed = self.signed_checkpoint()
        sealed = self.active
        line = self._system(Seal, segment=sealed, checkpoint=signed.decode())
        self._commit([line])
        self._finish_seal()
        try:
            self.rotate_epoch()
        except LedgerUnavailable as exc:  # the seal stands; the next commit rotates
            log.warning("sealed %s; epoch rotation postponed: %s", sealed, exc)
        return signed

    def _finish_seal(self) -> None:
        """After the seal record is durable: +i on the segment, then the next segment."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._make_immutable(self.layout.segments / self.active)
        self._open_segment(self._tree.size)
        self._publish()
        self._save_state()

    def _make_immutable(self, path: Path) -> None:
        """+i and -a in one ioctl (ext4 refuses to drop +a once +i is set); idempotent."""
        flags = osutil.path_flags(path) if self.use_flags else None
        if flags is not None and not flags & osutil.FS_IMMUTABLE_FL:
            try:
                osutil.set_path_flags(path, osutil.FS_IMMUTABLE_FL, osutil.FS_APPEND_FL)
            except osutil.FlagsUnsupported as exc:
                self._flags_unavailable(exc)

    def _make_append_only(self) -> None:
        """+a on the active segment's open descriptor; idempotent."""
        if not self.use_flags:
            return
        try:
            if not osutil.get_flags(self._fd) & osutil.FS_APPEND_FL:
                osutil.add_flags(self._fd, osutil.FS_APPEND_FL)
        except osutil.FlagsUnsupported as exc:
            self._flags_unavailable(exc)
        except OSError:  # no inode flags on this file system at all
            self._flags_unavailable(OSError(0, "not supported by the file system"))

    def _flags_unavailable(self, exc: OSError) -> None:
        log.warning("inode flags unavailable (%s): segments are not +a/+i; "
                    "the signatures still make tampering evident", exc.strerror)
        self.use_flags = False

    def _open_segment(self, first_seq: int) -> None:
        self.active = segment_name(first_seq)
        self._active_first = first_seq
        self.layout.segments.mkdir(mode=0o750, exist_ok=True)
        path = self.layout.segments / self.active
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._make_append_only()
        osutil.fsync_dir(self.layout.segments)
        self._offset = os.fstat(self._fd).st_size
        self._segment_start_ns = time.time_ns()
        self._point_link()

    def _point_link(self) -> None:
        """Switch ledger.worm to the active segment by an atomic rename."""
        link, target = self.layout.link, f"segments/{self.active}"
        if link.is_symlink() and os.readlink(link) == target:
            return
        tmp = link.with_name(".ledger.worm.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        osutil.fsync_dir(self.layout.root)

    def _save_state(self) -> None:
        """Save the tree's right edge: only a cache, so a failure is logged, not raised."""
        state = {"segment": self.active, "offset": self._offset, "size": self._tree.size,
                 "stack": [base64.b64encode(h).decode() for h in self._tree.hashes]}
        try:
            osutil.replace_file(self.layout.state, msgspec.json.encode(state), 0o600)
        except OSError as exc:
            log.warning("state cache not saved (%s)", exc.strerror)

    def close(self) -> None:
        """Publish the checkpoint, save the state cache and release the files."""
        if getattr(self, "_fd", -1) >= 0 and not self._dirty:
            self.flush()
            self._save_state()
        if hasattr(self, "_checkpoint_file"):
            self._checkpoint_file.close()
        for attr in ("_fd", "_lock_fd"):
            if getattr(self, attr, -1) >= 0:
                os.close(getattr(self, attr))
                setattr(self, attr, -1)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init(root: Path, origin: str, *, use_flags: bool = True,
         identity: Ed25519PrivateKey | None = None) -> note.Verifier:
    """Create a ledger directory: identity key (``identity``, imported, or a new one), vkey,
    epoch-0 key and epoch0.vkey, tenant `default`, then the genesis and epoch-0 records.
    Returns the identity verifier key (``epoch0_verifier`` reads the other public key an
    auditor needs)."""
    layout = Layout(root)
    if layout.identity.exists() or layout.segment_names():
        raise LedgerError(f"{root} holds a ledger already")
    root.mkdir(mode=0o750, parents=True, exist_ok=True)
    keys.make_private_dir(layout.keys)
    key = (keys.write_key(layout.identity, identity) if identity is not None
           else keys.generate_identity(layout.identity))
    verifier = note.Signer(origin, key).verifier
    osutil.replace_file(layout.vkey, f"{verifier}\n".encode(), 0o644, durable=True)
    epoch0 = note.Signer(epoch.key_name(origin, 0), keys.generate_key(layout.epoch_key))
    osutil.replace_file(layout.epoch0_vkey, f"{epoch0.verifier}\n".encode(), 0o644,
                        durable=True)
    keys.TenantStore(layout.tenants).add("default")
    Ledger(root, use_flags=use_flags).close()
    return verifier


def epoch0_verifier(root: Path) -> note.Verifier:
    """The ledger's epoch-0 verifier key, from ``epoch0.vkey`` (the host's copy)."""
    path = Layout(root).epoch0_vkey
    try:
        return note.Verifier.parse(path.read_text())
    except (OSError, note.NoteError) as exc:
        raise LedgerError(f"cannot read {path}: {exc}") from None


__all__ = ["Ack", "EpochKeyGone", "Ledger", "LedgerError", "LedgerUnavailable", "RecordError",
           "Submission", "epoch0_verifier", "init", "submission"]
