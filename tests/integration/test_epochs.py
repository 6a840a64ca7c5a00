"""Forward-secure epoch keys on a real ledger (docs/anchoring.md section 1): rotation by
age and at every seal, the old key destroyed in place, recovery from a crash at each
rotation step, and the compromise the epochs exist for: keys stolen today cannot re-sign
yesterday."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ledger_helpers import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    ORIGIN,
    all_bytes_under,
    append_events,
    cli,
    first_failure_line,
    raw_flags,
    segments,
    set_raw_flags,
    unlocked,
)

from vantio_appliance import checkpoint as cpmod
from vantio_appliance import epoch, keys, merkle, note, reader, writer
from vantio_appliance.canonical import decode, encode
from vantio_appliance.layout import Layout
from vantio_appliance.records import SYSTEM_TENANT, Epoch, Seal, Time, new_trace_id
from vantio_appliance.verify import Report, verify_dir

# -- helpers -------------------------------------------------------------------------------


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _names(signed: bytes) -> list[str]:
    return [s.name for s in note.split(signed)[1]]


@contextmanager
def _held(path: Path) -> Iterator[tuple[int, bytes]]:
    """An open descriptor on ``path``'s inode and its bytes now: after the file is renamed
    over or unlinked, reading the descriptor shows whether the bytes were overwritten."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd, os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)


def _now_bytes(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


def _append_bytes(path: Path, data: bytes) -> None:
    """Append as a writer (or a crashed one) would: O_APPEND is what +a allows."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def _tree(root: Path) -> tuple[int, bytes]:
    leaves = [merkle.leaf_hash(ln.data) for ln in reader.lines(Layout(root))]
    return len(leaves), merkle.root_of(leaves)


def _epoch_line(root: Path, n: int, by: Ed25519PrivateKey, new: Ed25519PrivateKey) -> bytes:
    """The epoch record a writer would append next, made from outside the writer."""
    seq, tree_root = _tree(root)
    vkey = str(note.Signer(epoch.key_name(ORIGIN, n), new).verifier)
    now = time.time_ns()
    return encode(Epoch(v=1, seq=seq, trace_id=new_trace_id(), tenant=SYSTEM_TENANT,
                        time=Time(mono_ns=time.monotonic_ns(), real_ns=now,
                                  earliest_ns=now - 10**9, latest_ns=now + 10**9),
                        epoch=n, root=base64.b64encode(tree_root).decode(), vkey=vkey,
                        signature=epoch.sign_statement(by, ORIGIN, n, seq, tree_root, vkey)))


def _active(root: Path) -> Path:
    return segments(root)[-1]


def _verify(root: Path, trusted: Path) -> Report:
    return verify_dir(root, note.Verifier.parse((trusted / "vkey").read_text()),
                      epoch0=note.Verifier.parse((trusted / "epoch0.vkey").read_text()), jobs=2)


@pytest.fixture
def trusted(ledger_dir: Path, tmp_path: Path) -> Path:
    """The auditor's copies of the two public keys, taken at init."""
    out = tmp_path / "trusted"
    out.mkdir()
    for name in ("vkey", "epoch0.vkey"):
        shutil.copyfile(ledger_dir / name, out / name)
    return out


# -- rotation ------------------------------------------------------------------------------


def test_init_begins_epoch_0_signed_by_the_identity_key(ledger_dir: Path,
                                                        trusted: Path) -> None:
    genesis, first = map(decode, segments(ledger_dir)[0].read_bytes().splitlines())
    assert genesis["kind"] == "genesis" and first["kind"] == "epoch"
    assert (first["seq"], first["epoch"]) == (1, 0)
    assert first["vkey"] == (ledger_dir / "epoch0.vkey").read_text().strip()
    assert base64.b64decode(first["root"]) == merkle.leaf_hash(
        segments(ledger_dir)[0].read_bytes().splitlines()[0])
    identity = note.Verifier.parse((ledger_dir / "vkey").read_text())
    assert identity.verifies(
        epoch.statement(ORIGIN, 0, 1, base64.b64decode(first["root"]), first["vkey"]),
        base64.b64decode(first["signature"]))
    signed = (ledger_dir / "checkpoint").read_bytes()
    assert _names(signed) == [ORIGIN, f"{ORIGIN}/epoch/0"]
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 1 and report.notices == [], report.findings


def test_rotation_by_age_destroys_the_old_key_in_place(ledger_dir: Path, trusted: Path) -> None:
    layout = Layout(ledger_dir)
    old_pem = layout.epoch_key.read_bytes()
    with _held(layout.epoch_key) as (fd, before), \
            writer.Ledger(ledger_dir, epoch_seconds=0.2) as ledger:
        assert before == old_pem
        append_events(ledger, 3)
        assert ledger.epoch == 0
        time.sleep(0.25)
        append_events(ledger, 2)  # the epoch is 0.25 s old: this commit rotates
        assert ledger.epoch == 1
        after = _now_bytes(fd)
        assert len(after) == len(old_pem) and after != old_pem  # overwritten in place...
        assert b"PRIVATE KEY" not in after  # ...with random bytes, not another key
        append_events(ledger, 1)
    assert layout.epoch_key.read_bytes() != old_pem
    assert not layout.epoch_next.exists()
    assert old_pem not in all_bytes_under(ledger_dir)  # nowhere else on disk either
    kinds = [decode(ln.data)["kind"] for ln in reader.lines(layout)]
    assert kinds == ["genesis", "epoch", *["event"] * 5, "epoch", "event"]
    assert _names((ledger_dir / "checkpoint").read_bytes()) == [ORIGIN, f"{ORIGIN}/epoch/1"]
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 2, report.findings


def test_rotation_at_every_seal(ledger_dir: Path, trusted: Path) -> None:
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        for n in range(3):
            append_events(ledger, 2, start=10 * n)
            with _held(layout.epoch_key) as (fd, before):
                signed = ledger.seal()
                assert _names(signed) == [ORIGIN, f"{ORIGIN}/epoch/{n}"]
                assert _now_bytes(fd) != before, f"epoch {n}'s key survived the seal"
            assert ledger.epoch == n + 1
    for n, seg in enumerate(segments(ledger_dir)):
        lines = [decode(ln) for ln in seg.read_bytes().splitlines()]
        if n:  # every segment after the first begins the epoch that follows its seal
            assert (lines[0]["kind"], lines[0]["epoch"]) == ("epoch", n)
        if n < 3:
            seal = lines[-1]
            assert seal["kind"] == "seal"
            assert _names(seal["checkpoint"].encode()) == [ORIGIN, f"{ORIGIN}/epoch/{n}"]
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 4, report.findings


def test_tlog_proof_from_the_cli_carries_both_signatures(ledger_dir: Path,
                                                         tmp_path: Path) -> None:
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 3)
        ledger.seal()
        ledger.rotate_epoch()
        append_events(ledger, 1)
    out = tmp_path / "p.tlog-proof"
    res = cli("ledger", "proof", "--dir", ledger_dir, "--seq", "3", "-o", out)
    assert res.returncode == 0, res.stderr
    signed = out.read_bytes().split(b"\n\n", 1)[1]
    assert _names(signed) == [ORIGIN, f"{ORIGIN}/epoch/2"]


def test_signing_an_old_size_after_rotation_is_refused(ledger_dir: Path) -> None:
    """A destroyed key cannot sign: the ingest API then signs a newer head instead."""
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
        size, root = ledger.size, b"\0" * 32
        ledger.sign_checkpoint(size, root)
        ledger.rotate_epoch()
        with pytest.raises(writer.EpochKeyGone, match=f"tree size {size}"):
            ledger.sign_checkpoint(size, root)
        assert _names(ledger.sign_checkpoint(size + 1, root)) == [ORIGIN, f"{ORIGIN}/epoch/1"]


# -- a crash at each rotation step -----------------------------------------------------------


def test_crash_after_step_1_discards_the_new_key(ledger_dir: Path, trusted: Path) -> None:
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
    keys.generate_key(layout.epoch_next)  # step 1 done; the crash came before the record
    with _held(layout.epoch_next) as (fd, before):
        with writer.Ledger(ledger_dir) as ledger:
            assert ledger.epoch == 0
            append_events(ledger, 1)
        assert not layout.epoch_next.exists()
        assert _now_bytes(fd) != before and b"PRIVATE KEY" not in _now_bytes(fd)
    assert _verify(ledger_dir, trusted).ok


def test_leftover_of_a_half_written_next_key_is_destroyed(ledger_dir: Path) -> None:
    layout = Layout(ledger_dir)
    tmp = layout.keys / ".epoch.next.4242.tmp"  # write_private's temporary name
    tmp.write_bytes(_pem(Ed25519PrivateKey.generate()))
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.epoch == 0
    assert not tmp.exists()


def _step_2(ledger_dir: Path) -> tuple[Ed25519PrivateKey, bytes]:
    """Steps 1 and 2 of a rotation to epoch 1, done from outside: the new key in
    epoch.next and the epoch record durable; step 3 (destroying epoch 0's key) not done."""
    layout = Layout(ledger_dir)
    new = keys.generate_key(layout.epoch_next)
    line = _epoch_line(ledger_dir, 1, keys.load_key(layout.epoch_key, "epoch key"), new)
    return new, line


def test_crash_after_step_2_finishes_the_rotation(ledger_dir: Path, trusted: Path) -> None:
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
    new, line = _step_2(ledger_dir)
    _append_bytes(_active(ledger_dir), line + b"\n")
    with _held(layout.epoch_key) as (fd, before):
        with writer.Ledger(ledger_dir) as ledger:
            assert ledger.epoch == 1
            assert append_events(ledger, 1)[0].seq == 5  # genesis, epoch 0, 2, epoch 1
        assert _now_bytes(fd) != before  # epoch 0's key, overwritten
    assert layout.epoch_key.read_bytes() == _pem(new)
    assert not layout.epoch_next.exists()
    assert _names((ledger_dir / "checkpoint").read_bytes()) == [ORIGIN, f"{ORIGIN}/epoch/1"]
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 2, report.findings


def test_crash_inside_step_3_finishes_it(ledger_dir: Path, trusted: Path) -> None:
    """The old key already overwritten, the rename not done."""
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
    new, line = _step_2(ledger_dir)
    _append_bytes(_active(ledger_dir), line + b"\n")
    keys.shred(layout.epoch_key)
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.epoch == 1
        append_events(ledger, 1)
    assert layout.epoch_key.read_bytes() == _pem(new)
    assert not layout.epoch_next.exists()
    assert _verify(ledger_dir, trusted).ok


def test_crash_inside_step_2_keeps_the_old_epoch(ledger_dir: Path, trusted: Path) -> None:
    """The epoch record torn: it is not a record, so the new key never signed anything."""
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
    new, line = _step_2(ledger_dir)
    _append_bytes(_active(ledger_dir), line[:len(line) // 2])
    with writer.Ledger(ledger_dir) as ledger:
        assert ledger.epoch == 0
        append_events(ledger, 1)
    assert not layout.epoch_next.exists()
    assert layout.epoch_key.read_bytes() != _pem(new)
    kinds = [decode(ln.data)["kind"] for ln in reader.lines(layout)]
    assert kinds == ["genesis", "epoch", "event", "event", "torn", "event"]
    assert _verify(ledger_dir, trusted).ok


def test_torn_rotation_after_a_seal_is_made_up(ledger_dir: Path, trusted: Path) -> None:
    """The seal is durable and the new segment exists, but the crash tore the epoch
    record: recovery excuses the torn bytes and begins the epoch again, so the key that
    signed the seal is destroyed all the same."""
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
        size = ledger.size
        signed = ledger.signed_checkpoint()
    # the seal, as seal() writes it, then the next segment, then a torn epoch record
    now = time.time_ns()
    active = _active(ledger_dir)
    seal = encode(Seal(v=1, seq=size, trace_id=new_trace_id(), tenant=SYSTEM_TENANT,
                       time=Time(mono_ns=time.monotonic_ns(), real_ns=now,
                                 earliest_ns=now - 10**9, latest_ns=now + 10**9),
                       segment=active.name, checkpoint=signed.decode()))
    _append_bytes(active, seal + b"\n")
    new, line = _step_2(ledger_dir)
    fresh = layout.segments / f"{size + 1:016d}.worm"
    fresh.write_bytes(line[:40])
    with _held(layout.epoch_key) as (fd, before):
        with writer.Ledger(ledger_dir) as ledger:
            assert ledger.active == fresh.name
            assert ledger.epoch == 1
            append_events(ledger, 1)
        assert _now_bytes(fd) != before  # the key that signed the seal is gone
    assert layout.epoch_key.read_bytes() != _pem(new)  # a fresh key, not the torn one's
    kinds = [decode(ln)["kind"] for ln in fresh.read_bytes().splitlines()[1:]]
    assert kinds == ["torn", "epoch", "event"]
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 2, report.findings


# -- the compromise --------------------------------------------------------------------------

# The ledger of the compromise cases (seq: what):
#   0000000000000000.worm  0 genesis, 1 epoch 0, 2-5 events, 6 seal              (+i)
#   0000000000000007.worm  7 epoch 1, 8-11 events, 12 seal                       (+i)
#   0000000000000013.worm  13 epoch 2, 14-16 events, 17 epoch 3, 18-19 events    (+a)
SEG1 = "0000000000000007.worm"
SEG2 = "0000000000000013.worm"


@pytest.fixture
def history(ledger_dir: Path) -> Path:
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 4)
        ledger.seal()
        append_events(ledger, 4, start=4)
        ledger.seal()
        append_events(ledger, 3, start=8)
        ledger.rotate_epoch()
        append_events(ledger, 2, start=11)
        assert (ledger.size, ledger.epoch) == (20, 3)
    assert [p.name for p in segments(ledger_dir)] == ["0000000000000000.worm", SEG1, SEG2]
    return ledger_dir


def _rewrite(path: Path, lines: list[bytes]) -> None:
    """As root: drop +i/+a, write, put the flags back."""
    with unlocked(path), path.open("r+b") as f:
        f.write(b"".join(ln + b"\n" for ln in lines))
        f.truncate()


def _resign(text_of: bytes, identity: note.Signer, epoch_signer: note.Signer) -> bytes:
    cp = cpmod.Checkpoint.parse_text(note.split(text_of)[0])
    return cpmod.sign(cp, identity, epoch_signer)


def test_keys_stolen_later_cannot_resign_an_earlier_sealed_segment(
        history: Path, trusted: Path, needs_root_flags: None) -> None:
    layout = Layout(history)
    # the attacker is root: they read the keys the host holds now
    identity = note.Signer(ORIGIN, keys.load_identity(layout.identity))
    stolen = note.Signer(epoch.key_name(ORIGIN, 3), keys.load_key(layout.epoch_key))
    assert stolen.verifier == note.Verifier.parse(
        decode(_active(history).read_bytes().splitlines()[4])["vkey"])

    # 1. rewrite a record of the sealed segment of epoch 1, and re-sign its seal
    seg1 = layout.segments / SEG1
    lines = seg1.read_bytes().splitlines()
    rec = decode(lines[2])
    assert (rec["seq"], rec["kind"]) == (9, "event")
    rec["action"] = "permit" if rec["action"] != "permit" else "block"  # the evidence, changed
    lines[2] = encode(rec)
    _rewrite(seg1, lines)
    size, forged_root = 12, merkle.root_of(
        [merkle.leaf_hash(ln.data) for ln in reader.lines(layout, 12)])
    seal = decode(lines[-1])
    seal["checkpoint"] = cpmod.sign(cpmod.Checkpoint(ORIGIN, size, forged_root), identity,
                                    stolen).decode()
    lines[-1] = encode(seal)
    _rewrite(seg1, lines)
    # 2. continue the chain with what the stolen key can sign: epoch 4, over the forged tree
    thief = Ed25519PrivateKey.generate()
    _append_bytes(_active(history), _epoch_line(history, 4, keys.load_key(layout.epoch_key),
                                                thief) + b"\n")
    # 3. the checkpoint file, signed by the identity key and the attacker's epoch 4
    n, root = _tree(history)
    (history / "checkpoint").write_bytes(cpmod.sign(
        cpmod.Checkpoint(ORIGIN, n, root), identity,
        note.Signer(epoch.key_name(ORIGIN, 4), thief)))

    # without epoch keys this would be a perfect forgery: every identity signature holds
    # and every signed root is the root of the records as they now are
    for seal_line in (ln for ln in reader.lines(layout) if b'"kind":"seal"' in ln.data):
        cp = cpmod.open_signed(decode(seal_line.data)["checkpoint"].encode(), [identity.verifier])
        assert cp.root == merkle.root_of(
            [merkle.leaf_hash(ln.data) for ln in reader.lines(layout, cp.size)])
    assert cpmod.open_signed((history / "checkpoint").read_bytes(),
                             [identity.verifier]).root == root

    report = _verify(history, trusted)
    assert not report.ok
    first = report.findings[0]
    assert (first.segment, first.seq) == (SEG1, 12), report.findings
    assert first.reason == "epoch 1: seal checkpoint at size 12 not signed by epoch key"
    reasons = [str(f) for f in report.findings]
    assert f"segment {SEG2}, seq 13: epoch 2: record commits to a root that does not match " \
           "the records before it" in reasons, reasons
    assert f"segment {SEG2}, seq 17: epoch 3: record commits to a root that does not match " \
           "the records before it" in reasons, reasons

    res = cli("ledger", "verify", "--dir", history, "--vkey", trusted / "vkey",
              "--epoch-key", trusted / "epoch0.vkey")
    assert res.returncode == 1, res.stdout + res.stderr
    assert first_failure_line(res.stdout) == (
        f"FAILED: segment {SEG1}, seq 12: epoch 1: seal checkpoint at size 12 not signed by "
        "epoch key")
    res = cli("ledger", "verify", "--dir", history, "--json")  # the host's copies: still caught
    assert res.returncode == 1
    js = json.loads(res.stdout)
    assert js["ok"] is False and "epoch 1" in js["findings"][0]["reason"]
    assert any("epoch0.vkey" in n for n in js["notices"])


def test_rewrite_inside_the_current_epoch_is_the_known_limit(history: Path,
                                                             trusted: Path) -> None:
    """What forward security cannot do: the records since the last rotation are signed
    only by keys the attacker now holds (docs/anchoring.md section 1, the limit)."""
    layout = Layout(history)
    identity = note.Signer(ORIGIN, keys.load_identity(layout.identity))
    stolen = note.Signer(epoch.key_name(ORIGIN, 3), keys.load_key(layout.epoch_key))
    active = _active(history)
    lines = active.read_bytes().splitlines()
    rec = decode(lines[-1])
    assert (rec["seq"], rec["kind"]) == (19, "event")  # after epoch 3's record (seq 17)
    rec["bytes_severed"] += 1
    lines[-1] = encode(rec)
    _rewrite(active, lines)
    n, root = _tree(history)
    (history / "checkpoint").write_bytes(
        cpmod.sign(cpmod.Checkpoint(ORIGIN, n, root), identity, stolen))
    assert _verify(history, trusted).ok  # hence short epochs, and anchors carried off the host


def test_tampered_epoch_record_signature(history: Path, trusted: Path) -> None:
    seg1 = Layout(history).segments / SEG1
    lines = seg1.read_bytes().splitlines()
    rec = decode(lines[0])
    sig = bytearray(base64.b64decode(rec["signature"]))
    sig[0] ^= 0x01
    rec["signature"] = base64.b64encode(sig).decode()
    lines[0] = encode(rec)
    _rewrite(seg1, lines)
    report = _verify(history, trusted)
    first = report.findings[0]
    assert (first.segment, first.seq) == (SEG1, 7), report.findings
    assert first.reason == "epoch 1: record signature does not verify with epoch 0's key"
    res = cli("ledger", "verify", "--dir", history, "--vkey", trusted / "vkey",
              "--epoch-key", trusted / "epoch0.vkey")
    assert res.returncode == 1 and "epoch 1: record signature" in first_failure_line(res.stdout)


def test_skipped_epoch_number(ledger_dir: Path, trusted: Path) -> None:
    """An epoch record numbered 2 after epoch 0, properly signed by epoch 0's key."""
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
    new = Ed25519PrivateKey.generate()
    line = _epoch_line(ledger_dir, 2, keys.load_key(layout.epoch_key), new)
    _append_bytes(_active(ledger_dir), line + b"\n")
    n, root = _tree(ledger_dir)
    identity = note.Signer(ORIGIN, keys.load_identity(layout.identity))
    (ledger_dir / "checkpoint").write_bytes(cpmod.sign(
        cpmod.Checkpoint(ORIGIN, n, root), identity, note.Signer(epoch.key_name(ORIGIN, 2), new)))
    report = _verify(ledger_dir, trusted)
    first = report.findings[0]
    assert first.seq == 4 and first.reason.startswith("epoch 2: expected epoch 1 next"), \
        report.findings
    # the writer refuses to continue such a ledger: its epoch key is not epoch 2's
    with pytest.raises(writer.LedgerError, match="is not the key of epoch 2"):
        writer.Ledger(ledger_dir)


def test_wrong_epoch0_key(history: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-epoch0.vkey"
    key = Ed25519PrivateKey.generate()
    other.write_text(f"{note.Signer(epoch.key_name(ORIGIN, 0), key).verifier}\n")
    res = cli("ledger", "verify", "--dir", history, "--epoch-key", other)
    assert res.returncode == 1, res.stdout + res.stderr
    assert first_failure_line(res.stdout) == (
        "FAILED: segment 0000000000000000.worm, seq 1: epoch 0: the record's key is not the "
        "trusted epoch-0 key")
    misnamed = tmp_path / "misnamed.vkey"
    misnamed.write_text(f"{note.Signer('other/epoch/0', Ed25519PrivateKey.generate()).verifier}\n")
    res = cli("ledger", "verify", "--dir", history, "--epoch-key", misnamed)
    assert res.returncode == 2 and "epoch-0 key is named" in res.stderr, res


def test_default_epoch_key_is_the_hosts_copy_with_a_warning(history: Path) -> None:
    res = cli("ledger", "verify", "--dir", history)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning: epoch-0 key taken from" in res.stdout and "host's own copy" in res.stdout
    assert "epochs     4" in res.stdout
    res = cli("ledger", "verify", "--dir", history, "--epoch-key", history / "epoch0.vkey")
    assert res.returncode == 0 and "epoch-0 key taken from" not in res.stdout


# -- the service -----------------------------------------------------------------------------


def _chain(root: Path) -> epoch.EpochChain:
    """The epoch chain from the ledger's records, trusting the keys made at init."""
    chain = epoch.EpochChain(note.Verifier.parse((root / "vkey").read_text()),
                             note.Verifier.parse((root / "epoch0.vkey").read_text()))
    for ln in reader.lines(Layout(root)):
        rec = decode(ln.data)
        if rec["kind"] == "epoch":
            chain.accept(rec["epoch"], rec["seq"], rec["root"], rec["vkey"], rec["signature"])
    return chain


def test_service_rotates_when_idle_and_signs_with_the_epoch_in_force(
        ledger_dir: Path, tmp_path: Path) -> None:
    from service_helpers import add_tenant, auth, check_single, good_record, request, running

    key, reader_key = add_tenant(ledger_dir, "acme"), add_tenant(ledger_dir, "auditor", "reader")
    sock = tmp_path / "ingest.sock"
    with running(ledger_dir, sock, tmp_path / "server.log", args=("--epoch-seconds", "0.5")):
        ack = check_single(request(sock, "POST", "/v1/records",
                                   json.dumps(good_record("epochs")).encode(), auth(key)), key)
        time.sleep(1.8)  # the committer's idle tick (1 s) rotates the 0.5 s old epoch
        reply = request(sock, "GET", "/v1/checkpoint", None, auth(reader_key, None))
        assert reply.status == 200, str(reply)
        chain = _chain(ledger_dir)
        assert len(chain.epochs) >= 2, "the idle service did not rotate"
        cp = chain.open_checkpoint(reply.body)
        assert _names(reply.body) == [ORIGIN, f"{ORIGIN}/epoch/{chain.at(cp.size).n}"]
        got = request(sock, "GET", f"/v1/records/{ack.trace_id}", None, auth(reader_key, None))
        assert got.status == 200, str(got)
        proof = got.json()["proof"].encode()
        cp = chain.open_checkpoint(proof.split(b"\n\n", 1)[1])
        assert chain.at(cp.size).n >= 1
    report = verify_dir(ledger_dir, jobs=1)
    assert report.ok and report.epochs >= 2, report.findings


def test_rotation_refused_by_the_disk_is_undone(ledger_dir: Path, trusted: Path,
                                                needs_root_flags: None) -> None:
    """Step 2 refused before a byte is written (here: the active segment made immutable
    behind the writer's back, so even its space reservation fails): the new key is
    destroyed at once, the old epoch goes on signing, and a later rotation works."""
    layout = Layout(ledger_dir)
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2)
        active = layout.segments / ledger.active
        flags = raw_flags(active)
        set_raw_flags(active, (flags | FS_IMMUTABLE_FL) & ~FS_APPEND_FL)
        try:
            with pytest.raises(writer.LedgerUnavailable):
                ledger.rotate_epoch()
        finally:
            set_raw_flags(active, flags)
        assert ledger.epoch == 0 and not layout.epoch_next.exists()
        append_events(ledger, 2)  # signed by epoch 0 still: the record never reached the disk
        ledger.flush()
        assert _names((ledger_dir / "checkpoint").read_bytes())[1] == f"{ORIGIN}/epoch/0"
        ledger.rotate_epoch()
        assert ledger.epoch == 1
        append_events(ledger, 1)
    report = _verify(ledger_dir, trusted)
    assert report.ok and report.epochs == 2, report.findings
