"""`vantio witness init` and `vantio witness cosign` on real files, through the real command.

Bundles are made by hand here, as `vantio anchor export` lays them out (docs/
anchoring.md section 2): a checkpoint signed by the log's identity key and by an
epoch key (which the witness does not know and must ignore), and a consistency
proof from the merkle module. Cosignatures are checked against C2SP with hashlib
and cryptography directly.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from ledger_helpers import ORIGIN, cli

from vantio_appliance import checkpoint, merkle, note, witness
from vantio_appliance.checkpoint import Checkpoint
from vantio_appliance.cli import build_parser

IDENTITY = note.Signer(ORIGIN, Ed25519PrivateKey.generate())
EPOCH = note.Signer(f"{ORIGIN}/epoch/0", Ed25519PrivateKey.generate())
NAME = "witness.example/w1"
TREE = merkle.Tree([merkle.leaf_hash(b"record %d" % i) for i in range(40)])
OTHER = merkle.Tree([merkle.leaf_hash(b"rewritten %d" % i) for i in range(40)])


def _signed(tree: merkle.Tree, size: int, signers: tuple[note.Signer, ...] = (IDENTITY, EPOCH),
            origin: str = ORIGIN) -> bytes:
    text = Checkpoint(origin, size, tree.root(size)).text()
    return text + b"\n" + b"".join(s.signature_line(text) for s in signers)


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.vkey = tmp / "vkey"
        self.vkey.write_text(f"{IDENTITY.verifier}\n")
        self.state = tmp / "state"
        self.n = 0

    def init(self, name: str = NAME, state: Path | None = None) -> witness.CosignatureVerifier:
        res = cli("witness", "init", "--state", state or self.state, "--name", name,
                  "--log-key", self.vkey)
        assert res.returncode == 0, res.stderr
        return witness.CosignatureVerifier.parse(res.stdout)

    def bundle(self, size: int, old: int | None = None, tree: merkle.Tree = TREE,
               proof_tree: merkle.Tree | None = None, signed: bytes | None = None) -> Path:
        self.n += 1
        b = self.tmp / f"bundle{self.n}"
        b.mkdir()
        (b / "checkpoint").write_bytes(signed or _signed(tree, size))
        if old is not None:
            proof = (proof_tree or tree).consistency_proof(old, size)
            (b / "consistency").write_bytes(checkpoint.format_consistency(old, size, proof))
        return b

    def cosign(self, bundle: Path, state: Path | None = None) -> tuple[int, str, str]:
        res = cli("witness", "cosign", "--state", state or self.state, bundle)
        return res.returncode, res.stdout, res.stderr

    def state_file(self) -> Path:
        return self.state / "origins" / hashlib.sha256(ORIGIN.encode()).hexdigest()


@pytest.fixture
def st(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def ref_check(line: bytes, body: bytes, verifier_text: str) -> int:
    """C2SP tlog-cosignature v1, checked from the spec; returns the cosignature's time."""
    name, kid_hex, b64 = verifier_text.strip().split("+", 2)
    raw = base64.b64decode(b64)
    assert raw[0] == 0x04
    assert hashlib.sha256(name.encode() + b"\n\x04" + raw[1:]).digest()[:4].hex() == kid_hex
    dash, line_name, sig_b64 = line.decode().rstrip("\n").split(" ")
    assert (dash, line_name) == ("\u2014", name)
    blob = base64.b64decode(sig_b64)
    assert len(blob) == 4 + 8 + 64 and blob[:4].hex() == kid_hex
    t = int.from_bytes(blob[4:12], "big")
    message = b"cosignature/v1\ntime %d\n" % t + body
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[12:], message)  # raises if bad
    return t


def _cosig(bundle: Path, name: str = NAME) -> Path:
    return bundle / "cosignatures" / (name.replace("/", "%2F") + ".cosig")


# -- init -------------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    parser = build_parser()
    subs = {a.dest: a for a in parser._actions if isinstance(a, argparse._SubParsersAction)}
    top = subs["command"].choices
    for group, commands in (("witness", {"init", "cosign"}), ("timestamp", {"request", "verify"})):
        (action,) = [a for a in top[group]._actions if isinstance(a, argparse._SubParsersAction)]
        assert set(action.choices) == commands
    res = cli("witness", "cosign", "--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: vantio witness cosign")


def test_init_keeps_the_key_private_and_prints_the_vkey(st: Setup) -> None:
    res = cli("witness", "init", "--state", st.state, "--name", NAME, "--log-key", st.vkey,
              umask=0)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1
    v = witness.CosignatureVerifier.parse(res.stdout)
    assert v.name == NAME
    assert _mode(st.state) == 0o700 and _mode(st.state / "witness.key") == 0o600
    assert _mode(st.state / "origins") == 0o700
    assert (st.state / "witness.vkey").read_text().strip() == res.stdout.strip()
    assert (st.state / "log.vkey").read_text().strip() == str(IDENTITY.verifier)
    key = (st.state / "witness.key").read_bytes()
    # never twice: the key stays
    again = cli("witness", "init", "--state", st.state, "--name", "other.example/w",
                "--log-key", st.vkey)
    assert again.returncode == 2 and "exists already" in again.stderr and again.stdout == ""
    assert (st.state / "witness.key").read_bytes() == key
    assert (st.state / "witness.vkey").read_text().strip() == res.stdout.strip()


def test_init_usage_errors_create_nothing(st: Setup) -> None:
    res = cli("witness", "init", "--state", st.state, "--name", "bad name", "--log-key", st.vkey)
    assert res.returncode == 2 and not st.state.exists()
    res = cli("witness", "init", "--state", st.state, "--name", NAME,
              "--log-key", st.tmp / "missing")
    assert res.returncode == 2 and not st.state.exists()
    (st.tmp / "wkey").write_text(str(witness.Cosigner(NAME, Ed25519PrivateKey.generate()).verifier))
    res = cli("witness", "init", "--state", st.state, "--name", NAME, "--log-key", st.tmp / "wkey")
    assert res.returncode == 2 and not st.state.exists()  # a witness key is no log key


# -- the state machine ------------------------------------------------------------------------


def test_first_use_then_same_then_extension(st: Setup) -> None:
    v = st.init()
    b5 = st.bundle(5)
    code, out, err = st.cosign(b5)
    assert code == 0, out + err
    assert "trusted on first use" in err
    line = _cosig(b5).read_bytes()
    assert out.encode() == line and line.endswith(b"\n") and line.count(b"\n") == 1
    body = Checkpoint(ORIGIN, 5, TREE.root(5)).text()
    t = ref_check(line, body, str(v))
    assert abs(t - int(os.path.getmtime(_cosig(b5)))) <= 5
    state = st.state_file()
    assert _mode(state) == 0o600
    assert state.read_bytes() == body + b"\n" + line  # the checkpoint as this witness cosigned it
    # the same checkpoint again: cosigned again
    code, out, err = st.cosign(st.bundle(5))
    assert code == 0 and "cosigned again" in err, out + err
    # a larger tree with a proof from exactly 5
    b9 = st.bundle(9, old=5)
    code, out, err = st.cosign(b9)
    assert code == 0 and "extends size 5" in err, out + err
    ref_check(_cosig(b9).read_bytes(), Checkpoint(ORIGIN, 9, TREE.root(9)).text(), str(v))
    assert state.read_bytes().startswith(Checkpoint(ORIGIN, 9, TREE.root(9)).text())
    # the quorum check of a verifier accepts what the command wrote
    q = witness.check_quorum((b9 / "checkpoint").read_bytes(), [_cosig(b9).read_bytes()], [v], 1)
    assert q.ok and q.ignored == 2  # identity and epoch lines are not witnesses


@pytest.fixture
def at9(st: Setup) -> Setup:
    """A witness that has cosigned size 5, then size 9, of TREE."""
    st.init()
    assert st.cosign(st.bundle(5))[0] == 0
    assert st.cosign(st.bundle(9, old=5))[0] == 0
    return st


def _refused(st: Setup, bundle: Path, *words: str) -> None:
    before = st.state_file().read_bytes()
    mtime = st.state_file().stat().st_mtime_ns
    code, out, err = st.cosign(bundle)
    assert code == 1, out + err
    assert out.startswith("REFUSED: "), out
    for w in words:
        assert w in out, (w, out)
    assert not (bundle / "cosignatures").exists()  # nothing written in the bundle
    assert st.state_file().read_bytes() == before  # nor in the state
    assert st.state_file().stat().st_mtime_ns == mtime


def test_rollback(at9: Setup) -> None:
    _refused(at9, at9.bundle(7, old=5), "rollback", "7", "9")


def test_fork_same_size(at9: Setup) -> None:
    _refused(at9, at9.bundle(9, tree=OTHER), "fork")


def test_fork_proof_fails(at9: Setup) -> None:
    # a rewritten history of 12, with its own honest proof from 9
    _refused(at9, at9.bundle(12, old=9, tree=OTHER), "fork", "9", "12")


def test_bad_proof_of_a_real_extension(at9: Setup) -> None:
    b = at9.bundle(12, old=9)
    lines = (b / "consistency").read_bytes().split(b"\n")
    h = bytearray(base64.b64decode(lines[3]))
    h[0] ^= 1
    lines[3] = base64.b64encode(bytes(h))
    (b / "consistency").write_bytes(b"\n".join(lines))
    _refused(at9, b, "fork")


def test_gap_names_both_sizes(at9: Setup) -> None:
    _refused(at9, at9.bundle(20, old=12), "gap", "12", "9", "20")
    _refused(at9, at9.bundle(20), "gap", "9", "20")  # no consistency file at all


def test_bad_log_signature(at9: Setup) -> None:
    impostor = note.Signer(ORIGIN, Ed25519PrivateKey.generate())
    _refused(at9, at9.bundle(12, old=9, signed=_signed(TREE, 12, (impostor, EPOCH))),
             "does not verify")
    _refused(at9, at9.bundle(12, old=9, signed=_signed(TREE, 12, (EPOCH,))), "log key")
    other = note.Signer("other.example/log", Ed25519PrivateKey.generate())
    _refused(at9, at9.bundle(12, old=9, signed=_signed(TREE, 12, (other,))), "log key")
    # signed by the log key, but over another origin line
    _refused(at9, at9.bundle(12, old=9, signed=_signed(TREE, 12, origin="other.example/log")),
             "origin")
    # a tampered checkpoint: the root changed after signing
    good = _signed(TREE, 12)
    tampered = good.replace(base64.b64encode(TREE.root(12)), base64.b64encode(OTHER.root(12)))
    _refused(at9, at9.bundle(12, old=9, signed=tampered), "does not verify")


def test_extension_after_refusals(at9: Setup) -> None:
    _refused(at9, at9.bundle(12, old=9, tree=OTHER), "fork")
    code, out, err = at9.cosign(at9.bundle(12, old=9))
    assert code == 0, out + err


# -- unreadable input and damaged state: exit 2, never a first use ------------------------------


def test_unreadable_input(at9: Setup) -> None:
    before = at9.state_file().read_bytes()
    empty = at9.tmp / "empty"
    empty.mkdir()
    assert at9.cosign(empty)[0] == 2
    b = at9.bundle(12, old=9)
    (b / "consistency").write_bytes(b"not a proof\n")
    code, _, err = at9.cosign(b)
    assert code == 2 and "consistency" in err
    assert not (b / "cosignatures").exists()
    assert at9.cosign(at9.bundle(12, old=9), state=at9.tmp / "nowhere")[0] == 2
    assert at9.state_file().read_bytes() == before


def test_damaged_state_is_an_error_not_a_first_use(at9: Setup) -> None:
    state = at9.state_file()
    good = state.read_bytes()
    for damaged in (b"", good.replace(b"\n9\n", b"\n99\n"), good[:-10] + b"AAAAAAAAA\n"):
        state.write_bytes(damaged)
        code, out, err = at9.cosign(at9.bundle(12, old=9))
        assert code == 2 and "damaged" in err, out + err
    state.write_bytes(good)
    assert at9.cosign(at9.bundle(12, old=9))[0] == 0


def test_state_is_written_only_after_the_bundle(at9: Setup) -> None:
    b = at9.bundle(12, old=9)
    (b / "cosignatures").write_text("a file where the directory should be")
    before = at9.state_file().read_bytes()
    code, _, err = at9.cosign(b)
    assert code == 2 and "cannot write" in err
    assert at9.state_file().read_bytes() == before


# -- several witnesses, one bundle ---------------------------------------------------------------


def test_quorum_of_real_witnesses(st: Setup) -> None:
    names = ["witness.example/w1", "witness.example/w2", "w3"]
    vkeys = [st.init(n, st.tmp / f"state-{i}") for i, n in enumerate(names)]
    b = st.bundle(5)
    for i in range(3):
        assert st.cosign(b, st.tmp / f"state-{i}")[0] == 0
    files = sorted((b / "cosignatures").iterdir())
    assert [f.name for f in files] == ["w3.cosig", "witness.example%2Fw1.cosig",
                                       "witness.example%2Fw2.cosig"]
    signed = (b / "checkpoint").read_bytes()
    lines = [f.read_bytes() for f in files]
    q = witness.check_quorum(signed, lines, vkeys, 3)
    assert q.ok and {w.witness.name for w in q.witnessed} == set(names)
    assert not witness.check_quorum(signed, lines, vkeys[:2], 3).ok
    assert witness.check_quorum(signed, lines + lines, vkeys[:2], 2).count == 2
