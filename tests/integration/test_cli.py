"""The `vantio` command contract, through real subprocesses.

Exit codes: 0 success; 1 evidence does not verify or some input was refused (the
rest processed); 2 usage errors, unreadable input, a ledger that cannot be opened.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from ledger_helpers import ORIGIN, all_bytes_under, cli, cli_env, event, segments

from vantio_appliance import checkpoint as cpmod
from vantio_appliance import keys, note, writer
from vantio_appliance.cli import build_parser
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(x) + "\n" for x in lines)


# -- --help ----------------------------------------------------------------------------


def _command_paths(parser: argparse.ArgumentParser,
                   prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


def test_help_for_every_command_and_subcommand() -> None:
    paths = _command_paths(build_parser())
    commands = ("init", "append", "seal", "status", "show", "verify", "proof", "consistency",
                "verify-proof")
    expected: set[tuple[str, ...]] = {("ledger", c) for c in commands}
    expected |= {("ledger", "tenant", "add"), ("ledger", "tenant", "list"), ("ledger",),
                 ("ledger", "tenant"), (), ("demo",)}
    assert expected <= set(paths), sorted(expected - set(paths))
    procs = {p: subprocess.Popen(
        [sys.executable, "-m", "vantio_appliance.cli", *p, "--help"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        for p in paths}
    for path, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (path, err)
        assert out.startswith("usage: vantio"), (path, out)
        assert " ".join(("vantio", *path)) in out.splitlines()[0], (path, out)
        assert err == ""


# -- init and tenants ------------------------------------------------------------------


def test_init_prints_the_vkey_and_keeps_keys_private(tmp_path: Path) -> None:
    root = tmp_path / "l"
    res = _ok(cli("ledger", "init", "--dir", root, "--origin", ORIGIN, umask=0))
    assert res.stdout.count("\n") == 2  # the identity key, then the epoch-0 key
    vkey_text, epoch0_text = res.stdout.splitlines()
    verifier = note.Verifier.parse(vkey_text)
    assert verifier.name == ORIGIN
    assert (root / "vkey").read_text().strip() == vkey_text
    assert note.Verifier.parse(epoch0_text).name == f"{ORIGIN}/epoch/0"
    assert (root / "epoch0.vkey").read_text().strip() == epoch0_text
    assert "epoch0.vkey" in res.stderr
    layout = Layout(root)
    # keys 0700, the files in them 0600, whatever the umask (this ran with umask 0)
    assert _mode(layout.keys) == 0o700
    assert _mode(layout.tenants) == 0o700
    private = [p for p in layout.keys.rglob("*") if p.is_file()]
    assert {p.relative_to(layout.keys).as_posix() for p in private} == {
        "identity.key", "epoch.key", "tenants/default.json"}
    for p in private:
        assert _mode(p) == 0o600, (p, oct(_mode(p)))
    assert not _mode(root / "vkey") & 0o022
    assert not _mode(root / "epoch0.vkey") & 0o022
    # the checkpoint is signed by the printed key and covers the genesis and epoch-0 records
    cp = cpmod.open_signed((root / "checkpoint").read_bytes(), [verifier])
    assert (cp.origin, cp.size) == (ORIGIN, 2)
    genesis, first = map(json.loads, segments(root)[0].read_bytes().splitlines())
    assert (genesis["kind"], genesis["vkey"], genesis["origin"]) == ("genesis", vkey_text, ORIGIN)
    assert (first["kind"], first["epoch"], first["vkey"]) == ("epoch", 0, epoch0_text)
    assert os.readlink(layout.link) == f"segments/{segments(root)[0].name}"
    # not twice
    again = cli("ledger", "init", "--dir", root, "--origin", ORIGIN)
    assert again.returncode == 2 and "already" in again.stderr and again.stdout == ""
    assert (root / "vkey").read_text().strip() == vkey_text


def test_init_imports_an_identity_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    source = tmp_path / "identity.pem"
    source.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    root = tmp_path / "l"
    res = _ok(cli("ledger", "init", "--dir", root, "--origin", ORIGIN,
                  "--identity-key", source, umask=0))
    # the printed vkey and the vkey file are the imported key's verifier
    expected = str(note.Signer(ORIGIN, key).verifier)
    assert res.stdout.splitlines()[0] == expected
    assert (root / "vkey").read_text().strip() == expected
    identity = Layout(root).identity
    assert _mode(identity) == 0o600
    copied = keys.load_identity(identity)
    assert copied.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    cp = cpmod.open_signed((root / "checkpoint").read_bytes(), [note.Verifier.parse(expected)])
    assert cp.size == 2
    assert verify_dir(root, note.Verifier.parse(expected)).ok


@pytest.mark.parametrize("content", [
    b"not a key\n",
    Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret")),
    ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
], ids=["garbage", "encrypted", "not-ed25519"])
def test_init_refuses_a_bad_identity_key(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "identity.pem"
    source.write_bytes(content)
    root = tmp_path / "l"
    res = cli("ledger", "init", "--dir", root, "--origin", ORIGIN, "--identity-key", source)
    assert res.returncode == 2 and str(source) in res.stderr and res.stdout == ""
    assert not root.exists()  # nothing made before the key was checked
    missing = cli("ledger", "init", "--dir", root, "--identity-key", tmp_path / "absent.pem")
    assert missing.returncode == 2 and "absent.pem" in missing.stderr


def test_tenant_add_prints_the_key_once(ledger_dir: Path) -> None:
    res = _ok(cli("ledger", "tenant", "add", "acme", "--dir", ledger_dir, umask=0))
    assert res.stdout.endswith("\n") and res.stdout.count("\n") == 1
    key = res.stdout.strip()
    assert key.startswith("vt_") and len(key) > 40
    path = Layout(ledger_dir).tenants / "acme.json"
    assert _mode(path) == 0o600
    assert json.loads(path.read_bytes())["api_key"] == key
    assert key not in res.stderr

    twice = cli("ledger", "tenant", "add", "acme", "--dir", ledger_dir)
    assert twice.returncode == 2, twice
    assert "exists" in twice.stderr and twice.stdout == ""
    assert json.loads(path.read_bytes())["api_key"] == key  # not replaced

    listed = _ok(cli("ledger", "tenant", "list", "--dir", ledger_dir)).stdout
    assert listed.splitlines() == ["acme\twriter", "default\twriter"]
    assert key not in listed


# -- append -----------------------------------------------------------------------------


def _add_tenant(root: Path, name: str) -> str:
    return _ok(cli("ledger", "tenant", "add", name, "--dir", root)).stdout.strip()


def test_append_acks_with_receipts(ledger_dir: Path) -> None:
    key = _add_tenant(ledger_dir, "acme")
    own_id = "3b0c5f0e-8a47-4c2b-9d51-6a2f0e1c7d39"
    records = [event(i) for i in range(5)] + [{"action": "permit", "trace_id": own_id}]
    res = _ok(cli("ledger", "append", "--dir", ledger_dir, "--tenant", "acme",
                  stdin=_jsonl(records)))
    acks = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert len(acks) == 6
    assert [a["seq"] for a in acks] == list(range(2, 8))
    assert acks[-1]["trace_id"] == own_id
    for a in acks:
        assert set(a) == {"trace_id", "seq", "receipt"}
        assert UUID4.match(a["trace_id"]), a
        want = hmac.new(key.encode(), a["trace_id"].encode(), hashlib.sha256).hexdigest()
        assert a["receipt"] == want, a
        stored = json.loads(_ok(cli("ledger", "show", "--dir", ledger_dir, "--seq",
                                    str(a["seq"]), "--json")).stdout)
        assert (stored["trace_id"], stored["receipt"], stored["tenant"]) == (
            a["trace_id"], want, "acme")
    assert "appended 6 records, refused 0" in res.stderr
    # the receipt depends on the tenant's key: the default tenant's differs
    default_key = keys.TenantStore(Layout(ledger_dir).tenants).get("default").api_key
    assert acks[0]["receipt"] != hmac.new(default_key.encode(), acks[0]["trace_id"].encode(),
                                          hashlib.sha256).hexdigest()


SECRET_PROMPT = "SECRET-PROMPT-7f3a: summarize the merger memo"
BAD_TRACE_ID = "not-a-uuid-c0ffee"
BAD_LINES: list[tuple[int, str, str]] = [  # line number, field named, JSON line
    (2, "prompt", json.dumps({"action": "block", "prompt": SECRET_PROMPT})),
    (3, "proc.pid", '{"action":"block","proc":{"pid":31337.5}}'),
    (5, "trace_id", json.dumps({"action": "permit", "trace_id": BAD_TRACE_ID})),
    (6, "completion", json.dumps({"action": "permit", "completion": SECRET_PROMPT[::-1]})),
]


@pytest.mark.parametrize("batch", [1024, 2, 1])
def test_append_refuses_bad_lines_and_keeps_good_ones(ledger_dir: Path, batch: int) -> None:
    good = {1: event(1), 4: event(4), 7: {"action": "quarantine", "proc": {"pid": 4242}}}
    lines = dict(good)
    text_lines = {n: json.dumps(x) for n, x in lines.items()}
    text_lines.update({n: line for n, _, line in BAD_LINES})
    stdin = "".join(text_lines[n] + "\n" for n in sorted(text_lines))
    res = cli("ledger", "append", "--dir", ledger_dir, "--batch", str(batch), stdin=stdin)
    assert res.returncode == 1, res
    refusals = [ln for ln in res.stderr.splitlines() if "refused line" in ln]
    assert len(refusals) == len(BAD_LINES), res.stderr
    for (number, field, _), msg in zip(BAD_LINES, refusals, strict=True):
        assert msg.startswith(f"vantio: refused line {number}: {field}:"), msg
    assert "appended 3 records, refused 4" in res.stderr
    acks = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert [a["seq"] for a in acks] == [2, 3, 4]
    for a in acks:
        shown = _ok(cli("ledger", "show", "--dir", ledger_dir, "--trace-id", a["trace_id"],
                        "--json")).stdout
        assert json.loads(shown)["seq"] == a["seq"]
    stored = [json.loads(ln) for ln in segments(ledger_dir)[0].read_bytes().splitlines()]
    assert [r.get("proc", {}).get("pid") for r in stored[2:]] == [1001, 1004, 4242]
    # what was refused never reached the disk
    everything = all_bytes_under(ledger_dir, exclude=("identity.key",))
    for needle in (SECRET_PROMPT, SECRET_PROMPT[::-1], "prompt", "completion", "31337",
                   BAD_TRACE_ID):
        assert needle.encode() not in everything, needle
    assert verify_dir(ledger_dir, jobs=1).ok


# -- seal, status, show -------------------------------------------------------------------


def test_seal_status_show(ledger_dir: Path, needs_root_flags: None) -> None:
    ids = [json.loads(ln)["trace_id"] for ln in _ok(cli(
        "ledger", "append", "--dir", ledger_dir, stdin=_jsonl([event(i) for i in range(4)])
    )).stdout.splitlines()]
    verifier = note.Verifier.parse((ledger_dir / "vkey").read_text())

    res = _ok(cli("ledger", "seal", "--dir", ledger_dir))
    cp = cpmod.open_signed(res.stdout.encode(), [verifier])
    # genesis, epoch 0, 4 events: the seal record's checkpoint covers what precedes it
    assert cp.size == 6
    res = _ok(cli("ledger", "seal", "--dir", ledger_dir, "--json"))
    sealed = json.loads(res.stdout)
    # the first seal began epoch 1 (seq 7) in the new segment; this one seals it at seq 8
    assert (sealed["sealed"], sealed["active"]) == ("0000000000000007.worm",
                                                    "0000000000000009.worm")
    assert cpmod.open_signed(sealed["checkpoint"].encode(), [verifier]).size == 8

    status = json.loads(_ok(cli("ledger", "status", "--dir", ledger_dir, "--json")).stdout)
    assert status["records"] == 10 and status["origin"] == ORIGIN
    assert status["vkey"] == str(verifier)
    assert status["tenants"] == ["default"]
    assert [(s["name"], s["state"], s["flags"]) for s in status["segments"]] == [
        ("0000000000000000.worm", "sealed", "+i"), ("0000000000000007.worm", "sealed", "+i"),
        ("0000000000000009.worm", "active", "+a")]
    assert status["checkpoint"] == (ledger_dir / "checkpoint").read_text()
    text = _ok(cli("ledger", "status", "--dir", ledger_dir)).stdout
    assert "records    10" in text and "0000000000000009.worm active" in text

    by_seq = json.loads(_ok(cli("ledger", "show", "--dir", ledger_dir, "--seq", "3",
                                "--json")).stdout)
    assert (by_seq["seq"], by_seq["trace_id"]) == (3, ids[1])
    line = _ok(cli("ledger", "show", "--dir", ledger_dir, "--trace-id", ids[2], "--json")).stdout
    assert line.encode() == segments(ledger_dir)[0].read_bytes().splitlines(keepends=True)[4]
    tail = _ok(cli("ledger", "show", "--dir", ledger_dir, "--tail", "5", "--json")).stdout
    assert [json.loads(ln)["kind"] for ln in tail.splitlines()] == [
        "event", "seal", "epoch", "seal", "epoch"]
    assert [json.loads(ln)["seq"] for ln in tail.splitlines()] == [5, 6, 7, 8, 9]
    table = _ok(cli("ledger", "show", "--dir", ledger_dir, "--tail", "2")).stdout.splitlines()
    assert table[0].split()[:2] == ["seq", "time"] and len(table) == 3
    assert table[1].split()[0] == "8" and "seal" in table[1]
    missing = cli("ledger", "show", "--dir", ledger_dir, "--seq", "99")
    assert missing.returncode == 2 and "no record" in missing.stderr


def test_second_writer_is_refused_and_names_the_holder(ledger_dir: Path) -> None:
    with writer.Ledger(ledger_dir):
        res = cli("ledger", "append", "--dir", ledger_dir, stdin='{"action":"block"}\n')
        assert res.returncode == 2, res
        assert f"pid {os.getpid()}" in res.stderr and res.stdout == ""
        res = cli("ledger", "seal", "--dir", ledger_dir)
        assert res.returncode == 2 and f"pid {os.getpid()}" in res.stderr
    assert verify_dir(ledger_dir, jobs=1).records == 2


# -- proofs ------------------------------------------------------------------------------


def _append(root: Path, n: int, start: int = 0) -> list[dict[str, Any]]:
    out = _ok(cli("ledger", "append", "--dir", root,
                  stdin=_jsonl([event(start + i) for i in range(n)]))).stdout
    return [json.loads(ln) for ln in out.splitlines()]


def test_inclusion_proof_roundtrip(ledger_dir: Path, tmp_path: Path) -> None:
    acks = _append(ledger_dir, 9)
    _ok(cli("ledger", "seal", "--dir", ledger_dir))
    _append(ledger_dir, 3, start=9)
    vkey = tmp_path / "trusted.vkey"
    shutil.copyfile(ledger_dir / "vkey", vkey)
    proof, record = tmp_path / "r.tlog-proof", tmp_path / "r.json"
    _ok(cli("ledger", "proof", "--dir", ledger_dir, "--seq", "5", "-o", proof,
            "--record", record))
    assert proof.read_text().startswith("c2sp.org/tlog-proof@v1\nindex 5\n")
    assert json.loads(record.read_bytes())["trace_id"] == acks[3]["trace_id"]
    assert record.read_bytes() in segments(ledger_dir)[0].read_bytes()
    res = _ok(cli("ledger", "verify-proof", proof, "--vkey", vkey, "--record", record))
    # genesis, epoch 0, 9 events, seal, epoch 1, 3 events
    assert res.stdout.startswith("OK: record 5 is in the tree of size 16")
    # the proof's checkpoint carries the identity and the epoch-1 signature
    signed = proof.read_bytes().split(b"\n\n", 1)[1]
    assert [s.name for s in note.split(signed)[1]] == [ORIGIN, f"{ORIGIN}/epoch/1"]

    by_id = tmp_path / "by-id.tlog-proof"
    _ok(cli("ledger", "proof", "--dir", ledger_dir, "--trace-id", acks[8]["trace_id"],
            "-o", by_id, "--record", tmp_path / "r9.json"))
    _ok(cli("ledger", "verify-proof", by_id, "--vkey", vkey, "--record", tmp_path / "r9.json"))

    # a modified record does not verify
    changed = tmp_path / "changed.json"
    changed.write_bytes(record.read_bytes().replace(b'"pid":1003', b'"pid":1004'))
    assert changed.read_bytes() != record.read_bytes()
    res = cli("ledger", "verify-proof", proof, "--vkey", vkey, "--record", changed)
    assert res.returncode == 1 and res.stdout.startswith("FAILED"), res
    # nor another record against this proof
    res = cli("ledger", "verify-proof", proof, "--vkey", vkey, "--record", tmp_path / "r9.json")
    assert res.returncode == 1, res
    # nor the proof under another key
    other = tmp_path / "other.vkey"
    other.write_text(f"{note.Signer(ORIGIN, Ed25519PrivateKey.generate()).verifier}\n")
    res = cli("ledger", "verify-proof", proof, "--vkey", other, "--record", record)
    assert res.returncode == 1, res
    # nor a proof whose audit path was altered
    lines = proof.read_text().split("\n")
    lines[2] = base64.b64encode(b"\x42" * 32).decode()
    bad = tmp_path / "bad.tlog-proof"
    bad.write_text("\n".join(lines))
    res = cli("ledger", "verify-proof", bad, "--vkey", vkey, "--record", record)
    assert res.returncode == 1, res
    # an inclusion proof without its record is a usage error
    res = cli("ledger", "verify-proof", proof, "--vkey", vkey)
    assert res.returncode == 2, res


def test_consistency_proof_roundtrip(ledger_dir: Path, tmp_path: Path) -> None:
    vkey = tmp_path / "trusted.vkey"
    shutil.copyfile(ledger_dir / "vkey", vkey)
    _append(ledger_dir, 6)
    old_cp = tmp_path / "old.checkpoint"
    shutil.copyfile(ledger_dir / "checkpoint", old_cp)  # genesis, epoch 0, 6 events: size 8
    _ok(cli("ledger", "seal", "--dir", ledger_dir))  # the seal, and epoch 1 begins
    _append(ledger_dir, 5, start=6)
    new_cp = tmp_path / "new.checkpoint"
    shutil.copyfile(ledger_dir / "checkpoint", new_cp)  # size 15
    proof = tmp_path / "c.proof"
    _ok(cli("ledger", "consistency", "--dir", ledger_dir, "--old", "8", "-o", proof))
    assert proof.read_text().startswith(
        "vantio.appliance/consistency-proof@v1\nold 8\nnew 15\n")
    res = _ok(cli("ledger", "verify-proof", proof, "--vkey", vkey, "--old", old_cp,
                  "--new", new_cp))
    assert res.stdout.startswith("OK: tree 15 extends tree 8")

    swapped = cli("ledger", "verify-proof", proof, "--vkey", vkey, "--old", new_cp,
                  "--new", old_cp)
    assert swapped.returncode == 1, swapped

    lines = proof.read_text().split("\n")
    lines[3] = base64.b64encode(hashlib.sha256(b"forged").digest()).decode()
    forged_proof = tmp_path / "forged.proof"
    forged_proof.write_text("\n".join(lines))
    res = cli("ledger", "verify-proof", forged_proof, "--vkey", vkey, "--old", old_cp,
              "--new", new_cp)
    assert res.returncode == 1, res

    # a fork: a checkpoint of size 15 with another root, even signed by the host's own key
    signer = note.Signer(ORIGIN, keys.load_identity(Layout(ledger_dir).identity))
    fork = tmp_path / "fork.checkpoint"
    fork.write_bytes(cpmod.sign(cpmod.Checkpoint(ORIGIN, 15, hashlib.sha256(b"x").digest()),
                                signer))
    res = cli("ledger", "verify-proof", proof, "--vkey", vkey, "--old", old_cp, "--new", fork)
    assert res.returncode == 1, res
    # and one signed by an attacker's key does not even open
    attacker = note.Signer(ORIGIN, Ed25519PrivateKey.generate())
    cp_text = cpmod.open_signed(new_cp.read_bytes(), [note.Verifier.parse(vkey.read_text())])
    forged_cp = tmp_path / "attacker.checkpoint"
    forged_cp.write_bytes(cpmod.sign(cp_text, attacker))
    res = cli("ledger", "verify-proof", proof, "--vkey", vkey, "--old", old_cp,
              "--new", forged_cp)
    assert res.returncode == 1, res


# -- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["status"], ["status", "--json"], ["show"], ["show", "--seq", "0"], ["verify"],
    ["seal"], ["append"], ["tenant", "list"], ["tenant", "add", "acme"],
    ["proof", "--seq", "0"], ["consistency", "--old", "0"],
], ids=lambda c: " ".join(c))
def test_missing_ledger_dir_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such-ledger"
    res = cli("ledger", *command, "--dir", missing, stdin='{"action":"block"}\n')
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stderr.startswith("vantio: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not missing.exists(), f"{' '.join(command)} created {missing}"


def test_nonexistent_tenant_is_a_usage_error(ledger_dir: Path) -> None:
    res = cli("ledger", "append", "--dir", ledger_dir, "--tenant", "ghost",
              stdin='{"action":"block"}\n')
    assert res.returncode == 2 and "ghost" in res.stderr and res.stdout == ""
    assert verify_dir(ledger_dir, jobs=1).records == 2  # nothing appended
    res = cli("ledger", "append", "--dir", ledger_dir, "--tenant", "_system",
              stdin='{"action":"block"}\n')
    assert res.returncode == 2, res  # not a tenant name: nobody writes as the ledger


def test_unreadable_inputs_are_usage_errors(ledger_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    res = cli("ledger", "append", missing, "--dir", ledger_dir)
    assert res.returncode == 2 and str(missing) in res.stderr, res
    res = cli("ledger", "append", tmp_path, "--dir", ledger_dir)  # a directory
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    res = cli("ledger", "verify-proof", missing, "--vkey", ledger_dir / "vkey")
    assert res.returncode == 2 and str(missing) in res.stderr, res
    res = cli("ledger", "verify", "--dir", ledger_dir, "--vkey", missing)
    assert res.returncode == 2 and str(missing) in res.stderr, res
    garbage = tmp_path / "garbage"
    garbage.write_text("hello\n")
    res = cli("ledger", "verify-proof", garbage, "--vkey", ledger_dir / "vkey")
    assert res.returncode == 2, res
    res = cli("ledger", "verify", "--dir", ledger_dir, "--vkey", garbage)
    assert res.returncode == 2, res
    assert cli("ledger").returncode == 2  # no subcommand
    assert cli("ledger", "frobnicate").returncode == 2
    assert cli("ledger", "show", "--dir", ledger_dir, "--seq", "x").returncode == 2
    assert verify_dir(ledger_dir, jobs=1).records == 2
