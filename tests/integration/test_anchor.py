"""Anchor bundles (docs/anchoring.md sections 2 and 4): `vantio anchor export` writes
them and refuses rollbacks and forks; `vantio verify` and the bundle's own verify.py
check them with public keys only, and refuse every tampering."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Media
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_helpers import ORIGIN, REPO, append_events, cli, segments, unfinished_seal, unlocked

from vantio_appliance import anchor, bundle, epoch, keys, merkle, note, reader, writer
from vantio_appliance import checkpoint as cpmod
from vantio_appliance.canonical import decode, encode
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir

# -- helpers -------------------------------------------------------------------------------


def _grow(root: Path, seals: int, per: int = 4, start: int = 0) -> None:
    """Append ``per`` events and seal, ``seals`` times, then ``per`` more events."""
    with writer.Ledger(root) as ledger:
        for i in range(seals):
            append_events(ledger, per, start=start + i * per)
            ledger.seal()
        append_events(ledger, per, start=start + seals * per)


def _trusted(root: Path, out: Path) -> Path:
    """The auditor's keys file: the identity and epoch-0 keys as printed at init."""
    out.write_text(f"# {ORIGIN}\n{(root / 'vkey').read_text()}{(root / 'epoch0.vkey').read_text()}")
    return out


def _export(root: Path, media: Path, *args: str) -> Path:
    res = cli("anchor", "export", "--dir", root, "--to", media, "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return Path(json.loads(res.stdout)["bundle"])


def _verify(b: Path, keys_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = cli("verify", b, "--trusted-keys", keys_file, "--json", *args)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def _standalone(b: Path, keys_file: Path, cwd: Path) -> tuple[int, dict[str, Any]]:
    """The bundle's verify.py under the system Python, isolated (-I: no PYTHONPATH, no
    user site, no script directory magic), from outside the repository, with any import
    of vantio_appliance made to fail."""
    guard = ("import runpy, sys; sys.modules['vantio_appliance'] = None; "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    res = subprocess.run(["/usr/bin/python3", "-I", "-c", guard, str(b / "verify.py"), str(b),
                          "--trusted-keys", str(keys_file), "--json"],
                         capture_output=True, text=True, cwd=cwd, env={"PATH": "/usr/bin:/bin"},
                         timeout=120, check=False)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def _failed(report: dict[str, Any]) -> dict[str, list[str]]:
    return {c["name"]: c["findings"] for c in report["checks"] if c["status"] == "failed"}


def _remanifest(b: Path) -> None:
    """Rewrite MANIFEST.sha256 for the files as they now are (what a forger would do)."""
    digests = {}
    for dirpath, _dirs, files in os.walk(b):
        for name in files:
            p = Path(dirpath, name)
            rel = p.relative_to(b).as_posix()
            if rel != bundle.MANIFEST and not rel.startswith(bundle.RETURNS):
                digests[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    (b / bundle.MANIFEST).write_bytes(bundle.format_manifest(digests))


def _size(root: Path) -> int:
    with writer.Ledger(root) as ledger:
        return ledger.size


def _anchor_records(root: Path) -> list[dict[str, Any]]:
    return [r for r in (decode(ln.data) for ln in reader.lines(Layout(root)))
            if r["kind"] == "anchor"]


@dataclass
class Setup:
    root: Path
    media: Path
    keys: Path
    outside: Path  # a working directory outside the repository


@pytest.fixture
def setup(ledger_dir: Path, tmp_path: Path) -> Setup:
    media, outside = tmp_path / "media", tmp_path / "elsewhere"
    media.mkdir()
    outside.mkdir()
    _grow(ledger_dir, 2)
    return Setup(ledger_dir, media, _trusted(ledger_dir, tmp_path / "trusted.keys"), outside)


# -- export --------------------------------------------------------------------------------


def test_first_export_writes_a_complete_verifiable_bundle(setup: Setup) -> None:
    size_before = _size(setup.root)  # opening adds nothing: no rotation is due
    b = _export(setup.root, setup.media, "--custodial")
    assert b == setup.media / f"vantio-anchor-{size_before}"
    assert [p.name for p in setup.media.iterdir()] == [b.name]  # no partial directory left
    files = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    sealed = [p.name for p in segments(setup.root)[:-1]]
    assert files == sorted([
        "MANIFEST.sha256", "README.txt", "checkpoint", "epochs", "epochs.proofs/0.tlog-proof",
        "epochs.proofs/1.tlog-proof", "epochs.proofs/2.tlog-proof", "keys/epoch0.vkey",
        "keys/log.vkey", "segments/consistency", "segments/edge", "verify.py",
        *(f"segments/{n}" for n in sealed)])
    manifest = (b / "MANIFEST.sha256").read_text().splitlines()
    assert [ln.split("  ", 1)[1] for ln in manifest] == [f for f in files
                                                        if f != "MANIFEST.sha256"]
    for ln in manifest:
        digest, rel = ln.split("  ", 1)
        assert hashlib.sha256((b / rel).read_bytes()).hexdigest() == digest
    signed = (b / "checkpoint").read_bytes()
    assert [s.name for s in note.split(signed)[1]] == [ORIGIN, f"{ORIGIN}/epoch/2"]
    assert (setup.root / "anchors" / "last-export").read_bytes() == signed
    assert (b / "verify.py").read_bytes() == anchor.verify_script()
    for name in sealed:
        assert (b / "segments" / name).read_bytes() == (setup.root / "segments" / name
                                                        ).read_bytes()
    [rec] = _anchor_records(setup.root)
    cp = cpmod.Checkpoint.parse_text(note.split(signed)[0])
    assert (rec["direction"], rec["size"], rec["seq"]) == ("export", cp.size, cp.size)
    assert rec["root"] == base64.b64encode(cp.root).decode()
    assert rec["manifest"] == hashlib.sha256((b / "MANIFEST.sha256").read_bytes()).hexdigest()
    readme = (b / "README.txt").read_text()
    assert ORIGIN in readme and "python3 verify.py --trusted-keys" in readme

    code, report = _verify(b, setup.keys)
    assert code == 0 and report["ok"], report
    assert _statuses(report) == {
        "manifest": "ok", "keys": "ok", "epochs": "ok", "checkpoint": "ok",
        "previous": "skipped", "custodial": "ok", "proofs": "ok", "range": "skipped",
        "witnesses": "skipped", "timestamps": "skipped"}
    assert (report["size"], report["epoch"], report["origin"]) == (cp.size, 2, ORIGIN)
    code, alone = _standalone(b, setup.keys, setup.outside)
    assert code == 0 and _statuses(alone) == _statuses(report), alone
    res = cli("verify", b, "--trusted-keys", setup.keys)  # the readable report
    assert res.returncode == 0 and res.stdout.splitlines()[-1].startswith("OK: the bundle "
                                                                          "verifies")
    assert "custodial   ok" in res.stdout
    assert _size(setup.root) == cp.size + 1  # the anchor record
    assert verify_dir(setup.root, jobs=1).ok  # the anchor record is a valid record


def test_next_export_links_to_the_last_and_copies_only_what_is_new(setup: Setup) -> None:
    first = _export(setup.root, setup.media, "--custodial")
    _grow(setup.root, 1, start=100)
    second = _export(setup.root, setup.media, "--custodial")
    prev = cpmod.Checkpoint.parse_text(note.split((first / "checkpoint").read_bytes())[0])
    assert (second / "previous-checkpoint").read_bytes() == (first / "checkpoint").read_bytes()
    assert (second / "consistency").read_text().startswith(
        f"vantio.appliance/consistency-proof@v1\nold {prev.size}\n")
    copied = sorted(p.name for p in (second / "segments").glob("*.worm"))
    # the segment that was active at the first export, now sealed: nothing already copied
    assert copied == [segments(setup.root)[-2].name]
    assert not set(copied) & {p.name for p in (first / "segments").glob("*.worm")}
    code, report = _verify(second, setup.keys)
    assert code == 0 and _statuses(report)["previous"] == "ok", report
    assert _statuses(_standalone(second, setup.keys, setup.outside)[1]) == _statuses(report)
    # --since 0 copies every sealed segment
    _grow(setup.root, 0, start=200)
    third = _export(setup.root, setup.media, "--custodial", "--since", "0")
    assert sorted(p.name for p in (third / "segments").glob("*.worm")) == [
        p.name for p in segments(setup.root)[:-1]]
    assert (third / "segments" / "edge").read_text() == (
        "vantio.appliance/compact-range@v1\nsize 0\n")
    assert _verify(third, setup.keys)[0] == 0
    assert len(_anchor_records(setup.root)) == 3


def _snapshot(root: Path, to: Path) -> Path:
    """A copy of the ledger directory as it is now (the flags are not copied)."""
    shutil.copytree(root, to, symlinks=True)
    (to / "lock").unlink()
    return to


def _refused(res: subprocess.CompletedProcess[str], what: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refused, nothing written" in res.stderr and what in res.stderr, res.stderr


def test_export_refuses_a_rollback(setup: Setup, tmp_path: Path) -> None:
    old = _snapshot(setup.root, tmp_path / "old")
    _grow(setup.root, 1, start=50)
    _export(setup.root, setup.media)
    _copy_last(setup.root, old)  # the snapshot predates every export
    before = sorted(setup.media.iterdir())
    size = _size(old)
    res = cli("anchor", "export", "--dir", old, "--to", setup.media)
    _refused(res, "rollback")
    assert sorted(setup.media.iterdir()) == before
    assert _size(old) == size and not _anchor_records(old)


def _copy_last(src: Path, dst: Path) -> None:
    (dst / "anchors").mkdir()
    shutil.copy(src / "anchors" / "last-export", dst / "anchors" / "last-export")


def test_export_refuses_a_fork(setup: Setup, tmp_path: Path) -> None:
    fork = _snapshot(setup.root, tmp_path / "fork")
    _grow(setup.root, 1, start=50)
    exported = _export(setup.root, setup.media)
    size = cpmod.Checkpoint.parse_text(note.split((exported / "checkpoint").read_bytes())[0]).size
    _copy_last(setup.root, fork)
    # the fork: the same keys, other records, grown past the exported size
    with writer.Ledger(fork) as ledger:
        while ledger.size < size + 3:
            append_events(ledger, 1, start=900)
    before = sorted(setup.media.iterdir())
    last = (fork / "anchors" / "last-export").read_bytes()
    res = cli("anchor", "export", "--dir", fork, "--to", setup.media)
    _refused(res, "fork")
    assert sorted(setup.media.iterdir()) == before
    assert (fork / "anchors" / "last-export").read_bytes() == last and not _anchor_records(fork)


def test_export_refuses_the_same_size_with_another_root(setup: Setup, tmp_path: Path) -> None:
    fork = _snapshot(setup.root, tmp_path / "fork")
    with writer.Ledger(setup.root) as ledger:
        append_events(ledger, 1)
    exported = _export(setup.root, setup.media)
    size = cpmod.Checkpoint.parse_text(note.split((exported / "checkpoint").read_bytes())[0]).size
    _copy_last(setup.root, fork)
    with writer.Ledger(fork) as ledger:
        ledger.anchor("import", 1, b"\x07" * 32, evidence=["a record the original lacks"])
        assert ledger.size == size
    res = cli("anchor", "export", "--dir", fork, "--to", setup.media)
    _refused(res, f"fork: size {size} has another root")


def test_export_while_the_writer_is_held_is_exit_2(setup: Setup) -> None:
    with writer.Ledger(setup.root):
        res = cli("anchor", "export", "--dir", setup.root, "--to", setup.media)
    assert res.returncode == 2, res
    assert "needs the writer lock" in res.stderr and f"pid {os.getpid()}" in res.stderr
    assert list(setup.media.iterdir()) == []


def test_export_usage_errors(setup: Setup, tmp_path: Path) -> None:
    res = cli("anchor", "export", "--dir", setup.root, "--to", tmp_path / "not-mounted")
    assert res.returncode == 2 and "is not a directory" in res.stderr
    res = cli("anchor", "export", "--dir", setup.root, "--to", setup.media, "--since", "3")
    assert res.returncode == 2 and "--custodial" in res.stderr
    res = cli("anchor", "export", "--dir", setup.root, "--to", setup.media, "--custodial",
              "--since", "99999")
    assert res.returncode == 2 and "not a tree size" in res.stderr
    assert list(setup.media.iterdir()) == []


def test_refusal_is_pure_and_names_both_sizes() -> None:
    a = cpmod.Checkpoint(ORIGIN, 10, b"a" * 32)
    assert anchor.refusal(None, a, None) is None
    assert anchor.refusal(a, cpmod.Checkpoint(ORIGIN, 12, b"b" * 32), b"a" * 32) is None
    assert "rollback" in str(anchor.refusal(a, cpmod.Checkpoint(ORIGIN, 9, b"c" * 32), None))
    assert "fork: size 10" in str(anchor.refusal(a, cpmod.Checkpoint(ORIGIN, 10, b"c" * 32),
                                                  b"c" * 32))
    assert "fork" in str(anchor.refusal(a, cpmod.Checkpoint(ORIGIN, 12, b"b" * 32), b"x" * 32))


# -- third-party verification: tampering -------------------------------------------------------


@pytest.fixture
def pair(setup: Setup) -> tuple[Path, Path]:
    """Two exports of the same ledger, the second with a custodial copy."""
    first = _export(setup.root, setup.media, "--custodial")
    _grow(setup.root, 1, start=100)
    return first, _export(setup.root, setup.media, "--custodial")


def _tampered(setup: Setup, b: Path, edit: Callable[[Path], None]) -> Path:
    copy = setup.media.parent / f"tampered-{b.name}"
    shutil.copytree(b, copy)
    edit(copy)
    return copy


def _edit_readme(b: Path) -> None:
    p = b / "README.txt"
    p.write_bytes(p.read_bytes().replace(b"vantio", b"vantiO", 1))


def _extra_file(b: Path) -> None:
    (b / "notes.txt").write_text("added after export\n")


def _rollback(b: Path) -> None:
    """The older checkpoint presented as the exported one (and the newer as previous)."""
    old, new = (b / "previous-checkpoint").read_bytes(), (b / "checkpoint").read_bytes()
    (b / "checkpoint").write_bytes(old)
    (b / "previous-checkpoint").write_bytes(new)
    _remanifest(b)


def _bad_consistency(b: Path) -> None:
    lines = (b / "consistency").read_text().split("\n")
    lines[3] = base64.b64encode(hashlib.sha256(b"forged").digest()).decode()
    (b / "consistency").write_text("\n".join(lines))
    _remanifest(b)


def _modified_custodial_record(b: Path) -> None:
    seg = sorted((b / "segments").glob("*.worm"))[0]
    lines = seg.read_bytes().splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if b'"kind":"event"' in ln)
    rec = decode(lines[i].rstrip(b"\n"))
    rec["bytes_severed"] += 1
    lines[i] = encode(rec) + b"\n"
    seg.write_bytes(b"".join(lines))
    _remanifest(b)


def _injected_field(b: Path) -> None:
    seg = sorted((b / "segments").glob("*.worm"))[0]
    lines = seg.read_bytes().splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if b'"kind":"event"' in ln)
    rec = decode(lines[i].rstrip(b"\n"))
    rec["prompt"] = "summarize the merger memo"
    lines[i] = encode(rec) + b"\n"
    seg.write_bytes(b"".join(lines))
    _remanifest(b)


def _dropped_custodial_line(b: Path) -> None:
    seg = sorted((b / "segments").glob("*.worm"))[-1]
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join([*lines[:2], *lines[3:]]))
    _remanifest(b)


def _edge_changed(b: Path) -> None:
    lines = (b / "segments" / "edge").read_text().split("\n")
    lines[2] = base64.b64encode(b"\x01" * 32).decode()
    (b / "segments" / "edge").write_text("\n".join(lines))
    _remanifest(b)


def _epoch_dropped(b: Path) -> None:
    lines = (b / "epochs").read_bytes().splitlines(keepends=True)
    (b / "epochs").write_bytes(b"".join(lines[:-1]))
    _remanifest(b)


def _other_log_key(b: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (b / "keys" / "log.vkey").write_text(f"{note.Signer(ORIGIN, key).verifier}\n")
    _remanifest(b)


TAMPERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (edit, the check that must fail, words its first finding holds)
    "manifest-mismatch": (_edit_readme, "manifest", "README.txt does not match its SHA-256"),
    "file-outside-manifest": (_extra_file, "manifest", "notes.txt is not in the manifest"),
    "rollback": (_rollback, "previous", "rollback"),
    "bad-consistency-proof": (_bad_consistency, "previous", "fork"),
    "modified-custodial-record": (_modified_custodial_record, "custodial",
                                  "seal checkpoint does not match the records before it"),
    "dropped-custodial-line": (_dropped_custodial_line, "custodial", "expected seq"),
    "field-injected-in-custodial-record": (_injected_field, "custodial",
                                           "prompt: field not allowed"),
    "edge-changed": (_edge_changed, "custodial", "seal checkpoint does not match"),
    "epoch-record-dropped": (_epoch_dropped, "checkpoint", "not signed by epoch key"),
    "bundle-key-replaced": (_other_log_key, "keys", "keys/log.vkey is not the trusted key"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_bundle_is_refused_by_both_verifiers(setup: Setup, pair: tuple[Path, Path],
                                                      case: str) -> None:
    edit, check, words = TAMPERS[case]
    b = _tampered(setup, pair[1], edit)
    code, report = _verify(b, setup.keys)
    assert code == 1 and not report["ok"]
    failed = _failed(report)
    assert check in failed, report
    assert any(words in f for f in failed[check]), failed[check]
    res = cli("verify", b, "--trusted-keys", setup.keys)
    assert res.returncode == 1 and res.stdout.splitlines()[-1].startswith("FAILED: ")
    code2, alone = _standalone(b, setup.keys, setup.outside)
    assert code2 == 1
    assert set(_failed(alone)) == set(failed), (alone, report)  # the two agree, check by check
    # and the untouched bundle still verifies with both
    assert _verify(pair[1], setup.keys)[0] == 0


def test_records_after_an_unfinished_seal_are_a_finding_for_both_verifiers(
        ledger_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A custodial segment that went on taking records after its seal record (a seal
    never finished) is refused by `vantio verify` and by the bundle's verify.py alike."""
    media, outside = tmp_path / "media", tmp_path / "elsewhere"
    media.mkdir()
    outside.mkdir()
    with writer.Ledger(ledger_dir) as w:
        unfinished_seal(w, monkeypatch)
        w.seal()
        append_events(w, 1, start=5)
    b = _export(ledger_dir, media, "--custodial")
    trusted = _trusted(ledger_dir, tmp_path / "trusted.keys")
    for code, report in (_verify(b, trusted), _standalone(b, trusted, outside)):
        assert code == 1, report
        assert any("records follow the seal record" in f
                   for f in _failed(report)["custodial"]), report


def test_fork_presented_as_previous_is_refused(setup: Setup, pair: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """A previous checkpoint of the same size from another history, signed by the host's
    own keys (a fork): no consistency proof links it to the exported tree."""
    first, second = pair
    prev = cpmod.Checkpoint.parse_text(note.split((first / "checkpoint").read_bytes())[0])
    layout = Layout(setup.root)
    identity = note.Signer(ORIGIN, keys.load_identity(layout.identity))
    stolen = note.Signer(epoch.key_name(ORIGIN, 3), keys.load_key(layout.epoch_key))
    # the key of the epoch in force at that size is destroyed: the thief signs with the
    # identity key and the current epoch key, which is not that epoch's
    forged = cpmod.Checkpoint(ORIGIN, prev.size, hashlib.sha256(b"other history").digest())

    def edit(b: Path) -> None:
        (b / "previous-checkpoint").write_bytes(cpmod.sign(forged, identity, stolen))
        _remanifest(b)

    b = _tampered(setup, second, edit)
    code, report = _verify(b, setup.keys)
    assert code == 1 and "not signed by epoch key" in _failed(report)["previous"][0]
    assert set(_failed(_standalone(b, setup.keys, setup.outside)[1])) == {"previous"}


def test_resigned_history_is_refused(setup: Setup, tmp_path: Path) -> None:
    """Part A's compromise, carried into a bundle: the host's keys stolen, an earlier
    sealed segment rewritten, the state cache removed so that the writer signs the forged
    tree with the keys it holds, and exported. The epoch chain gives it away."""
    root = setup.root
    layout = Layout(root)
    seg = segments(root)[1]  # sealed, epoch 1's
    lines = seg.read_bytes().splitlines()
    rec = decode(lines[2])
    assert rec["kind"] == "event"
    rec["action"] = "permit" if rec["action"] != "permit" else "block"
    lines[2] = encode(rec)
    identity = note.Signer(ORIGIN, keys.load_identity(layout.identity))
    stolen = note.Signer(epoch.key_name(ORIGIN, 2), keys.load_key(layout.epoch_key))
    with unlocked(seg):
        seg.write_bytes(b"".join(ln + b"\n" for ln in lines))
    # re-sign the seal of the rewritten segment with what the thief holds
    seal_seq = int(seg.name[:16]) + len(lines) - 1
    leaves = [merkle.leaf_hash(ln.data) for ln in reader.lines(layout, seal_seq)]
    seal = decode(lines[-1])
    seal["checkpoint"] = cpmod.sign(cpmod.Checkpoint(ORIGIN, seal_seq, merkle.root_of(leaves)),
                                    identity, stolen).decode()
    lines[-1] = encode(seal)
    with unlocked(seg):
        seg.write_bytes(b"".join(ln + b"\n" for ln in lines))
    layout.state.unlink()  # the writer rehashes the forged files
    b = _export(root, setup.media, "--custodial")
    code, report = _verify(b, setup.keys)
    assert code == 1
    failed = _failed(report)
    assert any("epoch 2: the record commits to a tree of" in f for f in failed["epochs"]), failed
    assert any("epoch 1: seal checkpoint at size" in f for f in failed["custodial"]), failed
    code, alone = _standalone(b, setup.keys, setup.outside)
    assert code == 1 and set(_failed(alone)) == set(failed), (alone, failed)


def test_wrong_trusted_keys(setup: Setup, pair: tuple[Path, Path], tmp_path: Path) -> None:
    b = pair[1]
    other = tmp_path / "other.keys"
    other.write_text(f"{note.Signer(ORIGIN, Ed25519PrivateKey.generate()).verifier}\n"
                     f"{(setup.root / 'epoch0.vkey').read_text()}")
    code, report = _verify(b, other)
    assert code == 1 and "no signature by a trusted key" in _failed(report)["checkpoint"][0]
    wrong0 = tmp_path / "wrong0.keys"
    impostor = note.Signer(epoch.key_name(ORIGIN, 0), Ed25519PrivateKey.generate())
    wrong0.write_text(f"{(setup.root / 'vkey').read_text()}{impostor.verifier}\n")
    code, report = _verify(b, wrong0)
    assert code == 1
    assert _failed(report)["epochs"][0] == ("epoch 0: the record's key is not the trusted "
                                            "epoch-0 key")
    assert set(_failed(_standalone(b, wrong0, setup.outside)[1])) == set(_failed(report))
    unrelated = tmp_path / "unrelated.keys"
    unrelated.write_text(f"{note.Signer('x/ledger', Ed25519PrivateKey.generate()).verifier}\n")
    res = cli("verify", b, "--trusted-keys", unrelated)
    assert res.returncode == 2 and "no identity key for the log" in res.stderr
    res = cli("verify", tmp_path / "no-such-bundle", "--trusted-keys", setup.keys)
    assert res.returncode == 2 and "is not a directory" in res.stderr
    res = cli("verify", b, "--trusted-keys", tmp_path / "missing.keys")
    assert res.returncode == 2


def test_tlog_proofs_added_to_a_bundle_are_checked(setup: Setup, pair: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    """A record's tlog-proof and line beside it (X.tlog-proof, X.record), re-manifested."""
    proof, record = tmp_path / "r.tlog-proof", tmp_path / "r.record"
    res = cli("ledger", "proof", "--dir", setup.root, "--seq", "3", "-o", proof,
              "--record", record)
    assert res.returncode == 0, res.stderr

    def add(b: Path) -> None:
        (b / "records").mkdir()
        shutil.copy(proof, b / "records" / "r.tlog-proof")
        shutil.copy(record, b / "records" / "r.record")
        _remanifest(b)

    b = _tampered(setup, pair[1], add)
    code, report = _verify(b, setup.keys)
    assert code == 0 and "1 with their record included" in next(
        c["detail"] for c in report["checks"] if c["name"] == "proofs"), report
    assert _standalone(b, setup.keys, setup.outside)[0] == 0

    def change(b2: Path) -> None:
        r = b2 / "records" / "r.record"
        r.write_bytes(r.read_bytes().replace(b'"action":"', b'"action":"x', 1))
        _remanifest(b2)

    bad = _tampered(setup, b, change)
    code, report = _verify(bad, setup.keys)
    assert code == 1 and "proofs" in _failed(report)
    assert set(_failed(_standalone(bad, setup.keys, setup.outside)[1])) == {"proofs"}


# -- witnesses and time stamps --------------------------------------------------------------


def _witness(state: Path, name: str, log_key: Path) -> str:
    """`vantio witness init`: the witness's verifier key text."""
    res = cli("witness", "init", "--state", state, "--name", name, "--log-key", log_key)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_witness_quorum(setup: Setup, pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Two witnesses cosign with `vantio witness cosign` (the real command, the first
    bundle then the second, as an anchor station would); the verifier counts them."""
    first, second = pair
    keys_file = tmp_path / "with-witnesses.keys"
    lines = [setup.keys.read_text()]
    for name in ("witness.example/w1", "witness.example/w2"):
        state = tmp_path / name.replace("/", "_")
        lines.append(_witness(state, name, setup.root / "vkey") + "\n")
        for b in (first, second):
            res = cli("witness", "cosign", "--state", state, b)
            assert res.returncode == 0, res.stdout + res.stderr
    keys_file.write_text("".join(lines))
    assert sorted(p.name for p in (second / "cosignatures").iterdir()) == [
        "witness.example%2Fw1.cosig", "witness.example%2Fw2.cosig"]
    code, report = _verify(second, keys_file, "--quorum", "2")
    assert code == 0, report
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "witnesses")
    assert detail.startswith("2 trusted witnesses cosigned (witness.example/w1, "
                             "witness.example/w2)"), detail
    assert _statuses(report)["manifest"] == "ok"  # the returns are outside the manifest
    code, report = _verify(second, keys_file, "--quorum", "3")
    assert code == 1 and "quorum not met: 2 of 3" in _failed(report)["witnesses"][0]
    code, report = _verify(second, setup.keys, "--quorum", "1")  # witnesses not trusted
    assert code == 1 and "quorum not met: 0 of 1" in _failed(report)["witnesses"][0]
    # the standalone script does not check cosignatures, and says so (a quorum fails)
    code, alone = _standalone(second, keys_file, setup.outside)
    assert code == 0 and _statuses(alone)["witnesses"] == "not checked"

    def forge(b: Path) -> None:  # a line under w1's name and key id, signed by another key
        cosig = b / "cosignatures" / "witness.example%2Fw1.cosig"
        text = cosig.read_text()
        name, blob = text.split(" ")[1], bytearray(base64.b64decode(text.split(" ")[2]))
        blob[-1] ^= 1
        cosig.write_text(f"\u2014 {name} {base64.b64encode(bytes(blob)).decode()}\n")

    bad = _tampered(setup, second, forge)
    code, report = _verify(bad, keys_file, "--quorum", "1")
    assert code == 1 and any("does not verify" in f for f in _failed(report)["witnesses"])


def test_timestamp_tokens(setup: Setup, pair: tuple[Path, Path], tmp_path: Path) -> None:
    """A real TSA (openssl ts) stamps the bundle's checkpoint; vantio verify checks the
    token with --tsa-cert, reports it unchecked without, and refuses another TSA's."""
    from test_timestamp import make_tsa

    b = pair[1]
    tsa, other = make_tsa(tmp_path, "tsa"), make_tsa(tmp_path, "other")
    res = cli("timestamp", "request", b, "--out", tmp_path / "q.tsq")
    assert res.returncode == 0, res.stderr
    (b / "timestamps").mkdir()
    (b / "timestamps" / "tsa.tsr").write_bytes(tsa.reply((tmp_path / "q.tsq").read_bytes()))
    code, report = _verify(b, setup.keys)
    assert code == 0 and _statuses(report)["timestamps"] == "not checked"
    code, report = _verify(b, setup.keys, "--tsa-cert", str(tsa.root))
    assert code == 0 and _statuses(report)["timestamps"] == "ok", report
    code, report = _verify(b, setup.keys, "--tsa-cert", str(other.root))
    assert code == 1 and "timestamps" in _failed(report)

    def token_over_other_data(b2: Path) -> None:
        (b2 / "timestamps" / "tsa.tsr").write_bytes(tsa.stamp(b"not this checkpoint"))

    bad = _tampered(setup, b, token_over_other_data)
    code, report = _verify(bad, setup.keys, "--tsa-cert", str(tsa.root))
    assert code == 1 and "timestamps" in _failed(report)


# -- the standalone script -------------------------------------------------------------------


def test_standalone_script_imports_nothing_of_vantio() -> None:
    source = (REPO / "vantio_appliance" / "data" / "bundle_verify.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "argparse", "base64", "binascii", "hashlib", "json", "os",
                        "re", "sys", "dataclasses", "pathlib", "typing", "cryptography"}, imported


def test_standalone_script_defaults_to_its_own_directory(setup: Setup) -> None:
    b = _export(setup.root, setup.media, "--custodial")
    res = subprocess.run(["/usr/bin/python3", "-I", "verify.py", "--trusted-keys",
                          str(setup.keys)], cwd=b, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1] == "OK: the bundle verifies"


# -- real removable media ----------------------------------------------------------------------


@pytest.mark.root
def test_export_to_removable_media_and_verify_after_remount(setup: Setup, removable_media: Media,
                                                            needs_root_flags: None) -> None:
    mnt = removable_media.mount()
    fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", str(mnt)], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert fstype == ("vfat" if removable_media.fstype == "vfat" else "fuseblk")
    b = _export(setup.root, mnt, "--custodial")
    _grow(setup.root, 1, start=300)
    b2 = _export(setup.root, mnt, "--custodial")
    removable_media.umount()  # as the operator pulls the stick
    assert not b.exists()
    mnt = removable_media.mount()  # ...and the auditor plugs it in
    assert sorted(p.name for p in mnt.iterdir() if p.name.startswith("vantio")) == sorted(
        [b.name, b2.name])
    for path in (b, b2):
        code, report = _verify(path, setup.keys)
        assert code == 0, report
        assert _statuses(report)["custodial"] == "ok"
        assert _standalone(path, setup.keys, setup.outside)[0] == 0
    removable_media.umount()
    if removable_media.fstype == "vfat":
        fsck = subprocess.run(["fsck.vfat", "-n", str(removable_media.image)],
                              capture_output=True, text=True, check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
