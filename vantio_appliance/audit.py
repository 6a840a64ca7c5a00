"""`vantio verify BUNDLE`: check an anchor bundle with nothing but public keys.

The third party's verifier (docs/anchoring.md section 4): it reads only the
bundle directory and a file of trusted verifier keys, never the host. Each
check is reported on its own, so an auditor sees what holds as well as what
does not: manifest, keys, epoch chain, checkpoint signatures, consistency
with the previous export, the custodial copy, tlog-proofs, witness quorum and
time-stamp tokens. The last two call the witness and timestamp modules.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from . import bundle, merkle, note, regulator, timestamp, witness
from . import checkpoint as cpmod
from .canonical import encode as canonical_encode
from .epoch import EpochChain, EpochError, key_name
from .records import Epoch, RecordError, decode_record
from .verify import Checker, scan_segment

OK: Final = "ok"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"  # nothing of that kind in the bundle
NOT_CHECKED: Final = "not checked"  # present, but this build cannot check it
_SEGMENT: Final = re.compile(r"segments/([0-9]{16}\.worm)")
MAX_FINDINGS: Final = 20  # per check


class BundleError(RuntimeError):
    """The bundle or the trusted keys cannot be read at all (exit 2)."""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    findings: list[str] = field(default_factory=list)


@dataclass
class BundleReport:
    bundle: str
    origin: str
    size: int | None
    root: str | None
    epoch: int | None
    checks: list[Check]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    def first_failure(self) -> str | None:
        for c in self.checks:
            if c.status == FAILED:
                return f"{c.name}: {c.findings[0] if c.findings else c.detail}"
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass(frozen=True)
class TrustedKeys:
    """A trusted-keys file: note keys (type 0x01: the log's identity and epoch-0 keys, maybe
    more) and the text of every other key (witness cosignature keys, type 0x04)."""

    notes: list[note.Verifier]
    others: list[str]


def parse_trusted_keys(text: str) -> TrustedKeys:
    """One verifier key a line; empty lines and ``#`` comments are skipped."""
    notes: list[note.Verifier] = []
    others: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if note.key_type(line) == note.ALG_ED25519:
            try:
                notes.append(note.Verifier.parse(line))
            except note.NoteError as exc:
                raise BundleError(f"trusted keys, line {number}: {exc}") from None
        else:
            others.append(line)
    return TrustedKeys(notes, others)


class BundleFiles:
    """The files of a bundle directory, by relative path (symlinks are not followed)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise BundleError(f"{root} is not a directory")
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
        return path.read_bytes() if path is not None else None


def _findings(out: list[str], text: str) -> None:
    if len(out) < MAX_FINDINGS:
        out.append(text)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_manifest(b: BundleFiles) -> Check:
    data = b.read(bundle.MANIFEST)
    if data is None:
        return Check("manifest", FAILED, f"no {bundle.MANIFEST}", [f"no {bundle.MANIFEST}"])
    try:
        listed = bundle.parse_manifest(data)
    except bundle.BundleFormatError as exc:
        return Check("manifest", FAILED, str(exc), [str(exc)])
    findings: list[str] = []
    for rel in b.links:
        _findings(findings, f"{rel} is a symbolic link")
    for rel, digest in listed.items():
        path = b.files.get(rel)
        if path is None:
            _findings(findings, f"{rel} is listed but missing")
        elif _sha256(path) != digest:
            _findings(findings, f"{rel} does not match its SHA-256")
    for rel in sorted(b.files):
        if rel != bundle.MANIFEST and rel not in listed and not rel.startswith(bundle.RETURNS):
            _findings(findings, f"{rel} is not in the manifest")
    if findings:
        return Check("manifest", FAILED, findings[0], findings)
    return Check("manifest", OK, f"{len(listed)} files, each matching its SHA-256")


def check_keys(b: BundleFiles, identity: note.Verifier, epoch0: note.Verifier) -> Check:
    findings = []
    for rel, trusted in ((bundle.LOG_VKEY, identity), (bundle.EPOCH0_VKEY, epoch0)):
        data = b.read(rel)
        if data is None:
            findings.append(f"no {rel}")
        elif data.decode(errors="replace").strip() != str(trusted):
            findings.append(f"{rel} is not the trusted key {trusted.name}")
    if findings:
        return Check("keys", FAILED, findings[0], findings)
    return Check("keys", OK, "the bundle's verifier keys are the trusted ones "
                 "(the checks use the trusted copies)")


def check_epochs(b: BundleFiles, chain: EpochChain, signed: bytes | None,
                 cp: cpmod.Checkpoint | None) -> Check:
    """Every epoch record: in the exported tree (its tlog-proof), signed by the previous
    epoch's key, committed to the exported tree's prefix (the proof's left siblings)."""
    data = b.read(bundle.EPOCHS)
    if data is None or cp is None or signed is None:
        why = f"no {bundle.EPOCHS} file" if data is None else "no readable checkpoint"
        return Check("epochs", FAILED, why, [why])
    findings: list[str] = []
    expired = _expired(b, cp, findings)
    lines = data.split(b"\n")
    if lines[-1] != b"":
        findings.append(f"{bundle.EPOCHS} does not end with a newline")
    for line in lines[:-1]:
        try:
            rec = decode_record(line)
        except RecordError as exc:
            findings.append(f"{bundle.EPOCHS}: not a record: {exc}")
            break
        if not isinstance(rec, Epoch) or canonical_encode(rec) != line:
            findings.append(f"{bundle.EPOCHS}: seq {rec.seq} is not a canonical epoch record")
            break
        n = rec.epoch
        try:  # the chain first: its keys check the other checkpoints even if a proof fails
            chain.accept(n, rec.seq, rec.root, rec.vkey, rec.signature)
        except EpochError as exc:
            findings.append(str(exc))
            break
        proof_data = b.read(bundle.epoch_proof_name(n))
        if proof_data is None and rec.seq < expired:
            continue  # an expired record: its leaf is gone, its signature chain holds it
        try:
            if proof_data is None:
                raise merkle.ProofError(f"no {bundle.epoch_proof_name(n)}")
            proof = cpmod.parse_inclusion(proof_data)
            if proof.signed_checkpoint != signed:
                raise merkle.ProofError("its checkpoint is not the exported one")
            if proof.index != rec.seq:
                raise merkle.ProofError(f"it proves index {proof.index}, the record is seq "
                                        f"{rec.seq}")
            merkle.verify_inclusion(rec.seq, cp.size, merkle.leaf_hash(line), proof.path,
                                    cp.root)
            prefix = merkle.prefix_root(rec.seq, cp.size, proof.path)
        except (cpmod.FormatError, merkle.ProofError) as exc:
            _findings(findings, f"epoch {n}: tlog-proof: {exc}")
            continue
        if base64.b64encode(prefix).decode() != rec.root:
            _findings(findings, f"epoch {n}: the record commits to a tree of {rec.seq} records "
                      "that the exported tree does not begin with")
    if not chain.epochs and not findings:
        findings.append("no epoch records")
    if findings:
        return Check("epochs", FAILED, findings[0], findings)
    return Check("epochs", OK, f"{len(chain.epochs)} epochs (0..{chain.epochs[-1].n}), each "
                 "signed by the previous one's key and committed to the exported tree")


def _expired(b: BundleFiles, cp: cpmod.Checkpoint, findings: list[str]) -> int:
    """How many records expired before the exported tree's kept ones (0 when none): the
    ``expired`` edge, checked consistent with the checkpoint."""
    data, proof = b.read(bundle.EXPIRED), b.read(bundle.EXPIRED_CONSISTENCY)
    if data is None:
        return 0
    try:
        edge = bundle.parse_compact_range(data)
        if proof is None:
            raise merkle.ProofError(f"no {bundle.EXPIRED_CONSISTENCY}")
        old, new, path = cpmod.parse_consistency(proof)
        if (old, new) != (edge.size, cp.size):
            raise merkle.ProofError(f"{bundle.EXPIRED_CONSISTENCY} is for sizes {old}->{new}")
        merkle.verify_consistency(old, new, edge.root(), cp.root, path)
    except (bundle.BundleFormatError, cpmod.FormatError, merkle.ProofError) as exc:
        findings.append(f"{bundle.EXPIRED}: the expired records' edge does not lead to the "
                        f"exported tree: {exc}")
        return 0
    return edge.size


def check_checkpoint(chain: EpochChain, signed: bytes | None) -> Check:
    if signed is None:
        return Check("checkpoint", FAILED, "no checkpoint file", ["no checkpoint file"])
    try:
        cp = chain.open_checkpoint(signed)
    except (note.NoteError, cpmod.FormatError, EpochError) as exc:
        return Check("checkpoint", FAILED, str(exc), [str(exc)])
    return Check("checkpoint", OK, f"size {cp.size}, signed by the identity key and the key "
                 f"of epoch {chain.at(cp.size).n}")


def check_previous(b: BundleFiles, chain: EpochChain, cp: cpmod.Checkpoint | None) -> Check:
    prev_signed, proof = b.read(bundle.PREVIOUS), b.read(bundle.CONSISTENCY)
    if prev_signed is None:
        if proof is not None:
            return Check("previous", FAILED, "a consistency proof without a previous "
                         "checkpoint", ["a consistency proof without a previous checkpoint"])
        return Check("previous", SKIPPED, "first export: no previous checkpoint")
    try:
        prev = chain.open_checkpoint(prev_signed, "previous checkpoint")
    except (note.NoteError, cpmod.FormatError, EpochError) as exc:
        return Check("previous", FAILED, str(exc), [f"previous checkpoint: {exc}"])
    if cp is None:
        return Check("previous", FAILED, "no readable checkpoint", ["no readable checkpoint"])
    why = None
    if prev.size > cp.size:
        why = (f"rollback: the exported checkpoint (size {cp.size}) is older than the previous "
               f"export (size {prev.size})")
    elif prev.size == cp.size and prev.root != cp.root:
        why = f"fork: size {cp.size} has another root than the previous export"
    elif proof is None:
        why = f"no {bundle.CONSISTENCY} proof from the previous export"
    else:
        try:
            cpmod.verify_consistency(proof, prev, cp)
        except (cpmod.FormatError, merkle.ProofError) as exc:
            why = (f"fork: the exported tree (size {cp.size}) does not extend the previous "
                   f"export (size {prev.size}): {exc}")
    if why:
        return Check("previous", FAILED, why, [why])
    return Check("previous", OK, f"extends the previous export (size {prev.size}, signed by "
                 f"epoch {chain.at(prev.size).n})")


def check_custodial(b: BundleFiles, identity: note.Verifier, chain: EpochChain,
                    cp: cpmod.Checkpoint | None) -> Check:
    """Every record of the copied segments, from the edge to each seal's signed root, and
    on to the exported tree by segments/consistency."""
    names = sorted(m[1] for rel in b.files if (m := _SEGMENT.fullmatch(rel)))
    others = [rel for rel in b.files if rel.startswith(f"{bundle.SEGMENTS}/")
              and not _SEGMENT.fullmatch(rel) and rel not in (bundle.EDGE,
                                                             bundle.SEGMENTS_CONSISTENCY)]
    if not names and not others:
        return Check("custodial", SKIPPED, "no custodial copy")
    findings = [f"{rel} is not a segment" for rel in others]
    edge_data = b.read(bundle.EDGE)
    if edge_data is None or cp is None or not names:
        why = ("no segments" if not names else f"no {bundle.EDGE}" if edge_data is None
               else "no readable checkpoint")
        return Check("custodial", FAILED, why, [*findings, why])
    try:
        edge = bundle.parse_compact_range(edge_data)
    except bundle.BundleFormatError as exc:
        return Check("custodial", FAILED, str(exc), [*findings, f"{bundle.EDGE}: {exc}"])
    check = Checker(identity, chain, edge, known_epochs=True)
    records = 0
    for name in names:
        scan = scan_segment(b.files[f"{bundle.SEGMENTS}/{name}"], name)
        check.segment([scan], last=False)
        records += scan.records
    for f in check.findings:
        _findings(findings, str(f))
    proof = b.read(bundle.SEGMENTS_CONSISTENCY)
    if not check.broken:
        try:
            if proof is None:
                raise merkle.ProofError(f"no {bundle.SEGMENTS_CONSISTENCY}")
            old, new, path = cpmod.parse_consistency(proof)
            if (old, new) != (check.tree.size, cp.size):
                raise merkle.ProofError(f"it is for sizes {old}->{new}; the copy ends at "
                                        f"{check.tree.size}, the checkpoint is {cp.size}")
            merkle.verify_consistency(old, new, check.tree.root(), cp.root, path)
        except (cpmod.FormatError, merkle.ProofError) as exc:
            _findings(findings, f"{bundle.SEGMENTS_CONSISTENCY}: the copy does not lead to the "
                      f"exported tree: {exc}")
    if findings:
        return Check("custodial", FAILED, findings[0], findings)
    return Check("custodial", OK, f"{len(names)} segments, {records} records from seq "
                 f"{edge.size}: every seal signed by its epoch, all in the exported tree")


def check_proofs(b: BundleFiles, chain: EpochChain, n_epochs: int) -> Check:
    """tlog-proofs besides the epochs': each checkpoint's signatures, and the inclusion of
    ``X.record`` (the record's line) when the bundle has it beside ``X.tlog-proof``."""
    others = sorted(rel for rel in b.files if rel.endswith(".tlog-proof")
                    and not rel.startswith(f"{bundle.EPOCH_PROOFS}/"))
    findings: list[str] = []
    with_record = 0
    opened: dict[bytes, cpmod.Checkpoint] = {}  # a regulator export's proofs share one
    for rel in others:
        data = b.read(rel)
        assert data is not None
        record = b.read(rel[:-len(".tlog-proof")] + ".record")
        try:
            proof = cpmod.parse_inclusion(data)
            pcp = opened.get(proof.signed_checkpoint) or chain.open_checkpoint(
                proof.signed_checkpoint, f"{rel}'s checkpoint")
            opened[proof.signed_checkpoint] = pcp
            if record is not None:
                merkle.verify_inclusion(proof.index, pcp.size,
                                        merkle.leaf_hash(record.rstrip(b"\n")), proof.path,
                                        pcp.root)
                with_record += 1
        except (cpmod.FormatError, note.NoteError, EpochError, merkle.ProofError) as exc:
            _findings(findings, f"{rel}: {exc}")
    if findings:
        return Check("proofs", FAILED, findings[0], findings)
    detail = f"{n_epochs} epoch tlog-proofs (see epochs)"
    if others:
        detail += (f"; {len(others)} more, checkpoints signed, {with_record} with their record "
                   "included")
    return Check("proofs", OK, detail)


def check_range(b: BundleFiles) -> Check:
    """A regulator export (regulator.py): ``records/`` holds exactly the seqs the range file
    names, each a record line of that seq with its tlog-proof (checked under proofs), and
    the first and last stamped inside the period."""
    data = b.read(regulator.RANGE)
    if data is None:
        return Check("range", SKIPPED, "not a regulator export")
    try:
        rng = regulator.Range.parse(data)
    except bundle.BundleFormatError as exc:
        return Check("range", FAILED, str(exc), [str(exc)])
    findings: list[str] = []
    expected = {n for seq in range(rng.first, rng.last + 1)
                for n in (regulator.record_name(seq), regulator.proof_name(seq))}
    present = {rel for rel in b.files if rel.startswith(f"{regulator.RECORDS}/")}
    for rel in sorted(expected - present):
        _findings(findings, f"{rel} is missing: the range names seqs {rng.first}..{rng.last}")
    for rel in sorted(present - expected):
        _findings(findings, f"{rel} is outside the range's seqs {rng.first}..{rng.last}")
    for seq in range(rng.first, rng.last + 1):
        line = b.read(regulator.record_name(seq))
        if line is None:
            continue
        try:
            rec = decode_record(line.rstrip(b"\n"))
        except RecordError as exc:
            _findings(findings, f"{regulator.record_name(seq)}: not a record: {exc}")
            continue
        if rec.seq != seq:
            _findings(findings, f"{regulator.record_name(seq)} holds seq {rec.seq}")
        if seq in (rng.first, rng.last) and not rng.start_ns <= rec.time.real_ns < rng.end_ns:
            _findings(findings, f"seq {seq} is stamped outside the period")
    if findings:
        return Check("range", FAILED, findings[0], findings)
    return Check("range", OK, f"seqs {rng.first}..{rng.last}, every one present, stamped "
                 f"{regulator.iso(rng.start_ns)} to {regulator.iso(rng.end_ns)}")


def check_cosignatures(signed_checkpoint: bytes, cosignature_lines: list[bytes],
                       witness_keys: list[str], quorum: int) -> Check:
    """Witness quorum: at least ``quorum`` distinct trusted witnesses cosigned (C2SP
    tlog-cosignature, witness.check_quorum). Keys other than cosignature keys (type
    0x04) are ignored; with no lines and no quorum the check is skipped."""
    try:
        verifiers = [witness.CosignatureVerifier.parse(k) for k in witness_keys
                     if note.key_type(k) == note.ALG_COSIGNATURE_V1]
        q = witness.check_quorum(signed_checkpoint, cosignature_lines, verifiers, quorum)
    except note.NoteError as exc:
        return Check("witnesses", FAILED, str(exc), [str(exc)])
    if not cosignature_lines and not quorum:
        return Check("witnesses", SKIPPED, "no cosignatures")
    findings = list(q.invalid)
    if not q.ok:
        findings.insert(0, f"quorum not met: {q.count} of {quorum} trusted witnesses cosigned")
    names = ", ".join(w.witness.name for w in q.witnessed) or "none"
    detail = f"{q.count} trusted witnesses cosigned ({names}); quorum {quorum}"
    return Check("witnesses", FAILED if findings else OK, detail, findings)


def check_timestamps(checkpoint_file: bytes | None, tokens: dict[str, bytes],
                     tsa_cert: bytes | None) -> Check:
    """RFC 3161 tokens over SHA-256 of the file `checkpoint` (timestamp.verify), when
    ``--tsa-cert`` gives the TSAs to trust; without it they are reported, not checked."""
    if not tokens:
        if tsa_cert is not None:
            why = "--tsa-cert was given but the bundle has no timestamps/*.tsr"
            return Check("timestamps", FAILED, why, [why])
        return Check("timestamps", SKIPPED, "no time-stamp tokens")
    if tsa_cert is None:
        return Check("timestamps", NOT_CHECKED, f"{len(tokens)} tokens not checked: give "
                     "--tsa-cert to check them")
    if checkpoint_file is None:
        return Check("timestamps", FAILED, "no checkpoint file", ["no checkpoint file"])
    findings, times = [], []
    try:
        trust = timestamp.TsaTrust.from_pem(tsa_cert)
    except ValueError as exc:
        raise BundleError(f"--tsa-cert: {exc}") from None
    for rel, token in sorted(tokens.items()):
        try:
            info = timestamp.verify(token, checkpoint_file, trust)
            times.append(f"{rel}: {info.gen_time.isoformat()}")
        except ValueError as exc:
            findings.append(f"{rel}: {exc}")
    if findings:
        return Check("timestamps", FAILED, findings[0], findings)
    return Check("timestamps", OK, "; ".join(times))


def returns(b: BundleFiles) -> tuple[list[bytes], dict[str, bytes]]:
    """What came back from the anchor station: cosignature lines, and tokens by path."""
    cosigs = [line for rel in sorted(b.files) if rel.startswith("cosignatures/")
              and rel.endswith(".cosig")
              for line in b.files[rel].read_bytes().splitlines() if line.strip()]
    tokens = {rel: b.files[rel].read_bytes() for rel in b.files
              if rel.startswith("timestamps/") and rel.endswith(".tsr")}
    return cosigs, tokens


def _log_keys(trusted: TrustedKeys, origin: str) -> tuple[note.Verifier, note.Verifier]:
    identity = next((k for k in trusted.notes if k.name == origin), None)
    epoch0 = next((k for k in trusted.notes if k.name == key_name(origin, 0)), None)
    if identity is None or epoch0 is None:
        missing, name = (("identity key", origin) if identity is None
                         else ("epoch-0 key", key_name(origin, 0)))
        raise BundleError(f"the trusted keys have no {missing} for the log {origin!r} "
                          f"(a key named {name})")
    return identity, epoch0


def verify_bundle(path: Path, trusted: TrustedKeys, *, quorum: int = 0,
                  tsa_cert: bytes | None = None) -> BundleReport:
    """Check the bundle at ``path`` against ``trusted`` keys; BundleError when unreadable."""
    started = time.perf_counter()
    b = BundleFiles(path)
    signed = b.read(bundle.CHECKPOINT)
    cp: cpmod.Checkpoint | None = None
    origin = ""
    if signed is not None:
        try:
            cp = cpmod.Checkpoint.parse_text(note.split(signed)[0])
            origin = cp.origin
        except (note.NoteError, cpmod.FormatError):
            cp = None
    if not origin:  # which log? the keys file may name one alone
        logs = [k for k in trusted.notes if not re.search(r"/epoch/[0-9]+$", k.name)]
        if len(logs) != 1:
            raise BundleError(f"{path}: no readable checkpoint, and the trusted keys do not "
                              "name one log")
        origin = logs[0].name
    identity, epoch0 = _log_keys(trusted, origin)
    try:
        chain = EpochChain(identity, epoch0)
    except EpochError as exc:
        raise BundleError(str(exc)) from None
    checks = [check_manifest(b), check_keys(b, identity, epoch0),
              check_epochs(b, chain, signed, cp), check_checkpoint(chain, signed)]
    checks += [check_previous(b, chain, cp), check_custodial(b, identity, chain, cp),
               check_proofs(b, chain, len(chain.epochs)), check_range(b)]
    cosigs, tokens = returns(b)
    witness_keys = trusted.others + [str(k) for k in trusted.notes
                                     if k not in (identity, epoch0)]
    checks.append(check_cosignatures(signed or b"", cosigs, witness_keys, quorum))
    checks.append(check_timestamps(signed, tokens, tsa_cert))
    epoch = None
    if cp is not None:
        try:
            epoch = chain.at(cp.size).n
        except EpochError:
            epoch = None
    return BundleReport(str(path), origin, cp.size if cp else None,
                        base64.b64encode(cp.root).decode() if cp else None, epoch, checks,
                        time.perf_counter() - started)


def report_lines(report: BundleReport) -> Iterator[str]:
    """The readable report: one line a check, then the verdict."""
    yield f"bundle     {report.bundle}"
    yield f"origin     {report.origin}"
    if report.size is not None:
        yield f"checkpoint size {report.size}, root {report.root}, epoch {report.epoch}"
    for c in report.checks:
        yield f"  {c.name:11} {c.status:12} {c.detail}"
        for f in c.findings[1:]:
            yield f"  {'':11} {'':12} also: {f}"
    if report.ok:
        yield f"OK: the bundle verifies ({report.seconds:.2f} s)"
    else:
        yield f"FAILED: {report.first_failure()}"
