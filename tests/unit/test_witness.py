"""C2SP tlog-cosignature v1, the witness's decision and the verifiers' quorum check.

External reference values: the example checkpoint and its cosignature line in
C2SP tlog-cosignature (github.com/C2SP/C2SP, tlog-cosignature.md), whose signed
message the spec spells out with ``time 1679315147``; the spec does not publish
the witness's public key, so for that line we check the key id and time fields.
Everything else expected here (key ids, messages, signatures) is computed with
hashlib, base64 and cryptography directly, never with the code under test.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from vantio_appliance import checkpoint, merkle, note, witness
from vantio_appliance.checkpoint import Checkpoint
from vantio_appliance.note import NoteError, Signer
from vantio_appliance.witness import CosignatureVerifier, Cosigner, Outcome, Proof

EM_DASH = "\u2014"

# --- C2SP tlog-cosignature.md ---------------------------------------------------------------
SPEC_BODY = (b"example.com/behind-the-sofa\n20852163\n"
             b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
SPEC_LOG_LINE = ("\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRD"
                 "eOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=")
SPEC_COSIG_LINE = ("\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeol"
                   "MI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
SPEC_MESSAGE = (b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
                b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
SPEC_NOTE = SPEC_BODY + b"\n" + f"{SPEC_LOG_LINE}\n{SPEC_COSIG_LINE}\n".encode()


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"witness key %d" % seed).digest())


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ref_key_id(name: str, public: bytes) -> bytes:
    """C2SP: SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\x0a" + b"\x04" + public).digest()[:4]


def ref_vkey(name: str, public: bytes) -> str:
    key = base64.b64encode(bytes([0x04]) + public).decode()
    return f"{name}+{ref_key_id(name, public).hex()}+{key}"


def ref_cosig_line(name: str, key: Ed25519PrivateKey, body: bytes, t: int) -> bytes:
    message = b"cosignature/v1\ntime " + str(t).encode() + b"\n" + body
    blob = ref_key_id(name, _raw(key)) + t.to_bytes(8, "big") + key.sign(message)
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n".encode()


LOG_NAME = "vantio.appliance/test-host/ledger"
LOG = Signer(LOG_NAME, _key(100))
W = [Cosigner(f"witness.example/w{i}", _key(i)) for i in range(4)]


def _signed(size: int = 5, seed: bytes = b"r") -> bytes:
    return checkpoint.sign(Checkpoint(LOG_NAME, size, hashlib.sha256(seed).digest()), LOG)


def _body(signed: bytes) -> bytes:
    return note.split(signed)[0]


# --- the spec's example --------------------------------------------------------------------


def test_spec_example_fields() -> None:
    body, sigs = note.split(SPEC_NOTE)
    assert body == SPEC_BODY
    log, cosig_sig = sigs
    assert log.key_id.hex() == "033de0ae" and len(log.signature) == 64
    cosig = witness.parse_cosignature(cosig_sig)
    assert cosig.name == "witness.example.com/w1"
    assert cosig.key_id.hex() == "8d66cf3f"
    assert cosig.timestamp == 1679315147  # the "time" line of the spec's signed message
    assert len(cosig.signature) == 64
    assert witness.cosigned_message(body, cosig.timestamp) == SPEC_MESSAGE
    # a plain note signature of the log key is not a cosignature: wrong length
    with pytest.raises(NoteError, match="not a v1 cosignature"):
        witness.parse_cosignature(log)


def test_spec_example_cosignature_is_ignored_without_its_key() -> None:
    q = witness.check_quorum(SPEC_NOTE, [], [W[0].verifier], 1)
    assert (q.count, q.ok, q.ignored, q.invalid) == (0, False, 2, [])
    # a verifier that claims the spec's name and key id but holds another key: invalid
    impostor = CosignatureVerifier("witness.example.com/w1", _raw(_key(7)))
    assert impostor.key_id != bytes.fromhex("8d66cf3f")  # so it does not even match
    assert witness.check_quorum(SPEC_NOTE, [], [impostor], 1).ignored == 2


# --- cosignatures ------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc", "Cs"],
                             exclude_characters="+"), min_size=1, max_size=30),
       st.binary(min_size=32, max_size=32), st.integers(0, 2**63 - 1))
def test_cosignature_matches_the_spec(name: str, seed: bytes, t: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    cosigner = Cosigner(name, key)
    assert str(cosigner.verifier) == ref_vkey(name, _raw(key))
    assert CosignatureVerifier.parse(ref_vkey(name, _raw(key))) == cosigner.verifier
    body = _body(_signed())
    line = cosigner.cosign(body, t)
    assert line == ref_cosig_line(name, key, body, t)  # Ed25519 is deterministic
    cosig = witness.parse_cosignature(note.parse_signature_line(line.rstrip(b"\n")))
    assert cosig.timestamp == t
    assert cosigner.verifier.verify(body, cosig)


def test_cosignature_does_not_verify_over_anything_else() -> None:
    body = _body(_signed())
    line = W[0].cosign(body, 1_700_000_000)
    cosig = witness.parse_cosignature(note.parse_signature_line(line.rstrip(b"\n")))
    v = W[0].verifier
    assert v.verify(body, cosig)
    assert not v.verify(_body(_signed(6)), cosig)
    assert not v.verify(body, witness.Cosignature(cosig.name, cosig.key_id,
                                                  cosig.timestamp + 1, cosig.signature))
    assert not W[1].verifier.verify(body, cosig)
    # the same key, signing the body as a plain note (type 0x01), is not a cosignature
    plain = _key(0).sign(body)
    assert not v.verify(body, witness.Cosignature(v.name, v.key_id, 0, plain))


def test_cosignature_time_bounds() -> None:
    body = _body(_signed())
    with pytest.raises(ValueError):
        W[0].cosign(body, 2**63)
    with pytest.raises(ValueError):
        W[0].cosign(body, -1)
    blob = W[0].verifier.key_id + (2**64 - 1).to_bytes(8, "big") + bytes(64)
    sig = note.Signature(W[0].name, blob[:4], blob[4:])
    assert not W[0].verifier.verify(body, witness.parse_cosignature(sig))


def test_cosignature_key_text_is_type_04() -> None:
    text = str(W[0].verifier)
    assert base64.b64decode(text.split("+", 2)[2])[0] == 0x04
    with pytest.raises(NoteError, match="type 0x04"):
        CosignatureVerifier.parse(str(LOG.verifier))  # a log key (0x01)
    with pytest.raises(NoteError, match="Ed25519"):
        note.Verifier.parse(text)
    name, kid, b64 = text.split("+", 2)
    with pytest.raises(NoteError, match="key id"):
        CosignatureVerifier.parse(f"{name}+{'0' * 8 if kid != '0' * 8 else '1' * 8}+{b64}")
    with pytest.raises(NoteError):
        CosignatureVerifier.parse(f"bad name+{kid}+{b64}")


# --- the witness's decision -------------------------------------------------------------


def _tree(n: int, salt: bytes = b"") -> merkle.Tree:
    return merkle.Tree([merkle.leaf_hash(salt + b"%d" % i) for i in range(n)])


def _cp(tree: merkle.Tree, size: int) -> Checkpoint:
    return Checkpoint(LOG_NAME, size, tree.root(size))


def _proof(tree: merkle.Tree, old: int, new: int) -> Proof:
    return Proof(old, new, tree.consistency_proof(old, new))


def test_first_use_is_trusted_and_said_so() -> None:
    t = _tree(10)
    d = witness.decide(None, _cp(t, 10), None)
    assert d.outcome is Outcome.FIRST_USE and d.cosign
    assert "trusted on first use" in d.reason and LOG_NAME in d.reason


def test_same_checkpoint_is_cosigned_again() -> None:
    t = _tree(10)
    d = witness.decide(_cp(t, 10), _cp(t, 10), None)
    assert d.outcome is Outcome.SAME and d.cosign


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 10), (4, 8), (7, 8), (1, 1000), (999, 1000)])
def test_extension_with_a_proof_from_exactly_the_last_size(old: int, new: int) -> None:
    t = _tree(new)
    d = witness.decide(_cp(t, old), _cp(t, new), _proof(t, old, new))
    assert d.outcome is Outcome.EXTENDS and d.cosign, d.reason


def test_rollback() -> None:
    t = _tree(10)
    d = witness.decide(_cp(t, 10), _cp(t, 7), _proof(t, 7, 10))
    assert d.outcome is Outcome.ROLLBACK and not d.cosign
    assert "7" in d.reason and "10" in d.reason


def test_fork_same_size_other_root() -> None:
    d = witness.decide(_cp(_tree(10), 10), _cp(_tree(10, b"x"), 10), None)
    assert d.outcome is Outcome.FORK and not d.cosign


def test_fork_when_the_proof_fails() -> None:
    ours, theirs = _tree(20), _tree(20, b"x")
    # their tree of 20 does not extend our tree of 10; the proof is theirs, honestly made
    d = witness.decide(_cp(ours, 10), _cp(theirs, 20), _proof(theirs, 10, 20))
    assert d.outcome is Outcome.FORK and not d.cosign
    assert "10" in d.reason and "20" in d.reason
    # a damaged proof of a real extension is refused the same way
    t = _tree(20)
    bad = _proof(t, 10, 20)
    hashes = list(bad.hashes)
    hashes[0] = bytes(32)
    d = witness.decide(_cp(t, 10), _cp(t, 20), Proof(10, 20, hashes))
    assert d.outcome is Outcome.FORK


def test_gap_names_both_sizes() -> None:
    t = _tree(30)
    d = witness.decide(_cp(t, 10), _cp(t, 30), _proof(t, 20, 30))  # a valid proof, wrong start
    assert d.outcome is Outcome.GAP and not d.cosign
    assert "20" in d.reason and "10" in d.reason and "30" in d.reason
    d = witness.decide(_cp(t, 10), _cp(t, 30), None)
    assert d.outcome is Outcome.GAP and "10" in d.reason and "30" in d.reason
    d = witness.decide(_cp(t, 10), _cp(t, 30), _proof(t, 10, 29))  # proof for another size
    assert d.outcome is Outcome.GAP


def test_state_of_another_origin_is_a_programming_error() -> None:
    t = _tree(3)
    with pytest.raises(ValueError):
        witness.decide(Checkpoint("other/log", 3, t.root()), _cp(t, 3), None)


# --- quorum -----------------------------------------------------------------------------------


def _lines(signed: bytes, *cosigners: Cosigner, t: int = 1_700_000_000) -> list[bytes]:
    return [c.cosign(_body(signed), t) for c in cosigners]


def test_quorum_k_of_n() -> None:
    signed = _signed()
    trusted = [w.verifier for w in W[:3]]
    lines = _lines(signed, W[0], W[2])
    for k, ok in ((0, True), (1, True), (2, True), (3, False)):
        q = witness.check_quorum(signed, lines, trusted, k)
        assert (q.count, q.ok) == (2, ok)
    q = witness.check_quorum(signed, lines, trusted, 2)
    assert {w.witness.name for w in q.witnessed} == {W[0].name, W[2].name}
    assert all(w.timestamp == 1_700_000_000 for w in q.witnessed)
    with pytest.raises(ValueError):
        witness.check_quorum(signed, lines, trusted, -1)


def test_quorum_counts_a_witness_once() -> None:
    signed = _signed()
    trusted = [w.verifier for w in W[:3]]
    lines = _lines(signed, W[0]) + _lines(signed, W[0], t=1_800_000_000) + _lines(signed, W[0])
    q = witness.check_quorum(signed, lines, trusted, 2)
    assert (q.count, q.ok) == (1, False)
    # the same witness listed twice in the trusted keys is still one witness
    q = witness.check_quorum(signed, lines, trusted + trusted, 2)
    assert q.count == 1
    # one public key under two trusted names counts once: v1 does not sign the name
    alias = Cosigner("alias.example/w0", _key(0))
    q = witness.check_quorum(signed, lines + _lines(signed, alias),
                             [*trusted, alias.verifier], 2)
    assert (q.count, q.ok) == (1, False)


def test_quorum_ignores_unknown_keys() -> None:
    signed = _signed()
    lines = _lines(signed, W[0], W[1], W[3])
    q = witness.check_quorum(signed, lines, [W[0].verifier], 1)
    assert (q.count, q.ok, q.ignored) == (1, True, 3)  # W[1], W[3] and the log's own line
    # lines inside the note count like separate ones
    in_note = signed + b"".join(_lines(signed, W[1]))
    q = witness.check_quorum(in_note, [], [W[0].verifier, W[1].verifier], 1)
    assert [w.witness.name for w in q.witnessed] == [W[1].name]


def test_quorum_does_not_count_forgeries() -> None:
    signed = _signed()
    trusted = [w.verifier for w in W[:3]]
    body = _body(signed)
    # W[1]'s name and key id, signed by another key
    forged = note.signature_line(W[1].name, ref_key_id(W[1].name, _raw(_key(1))) + bytes(7)
                                 + b"\x01" + _key(9).sign(b"cosignature/v1\ntime 1\n" + body))
    # W[2]'s line over another checkpoint
    replayed = _lines(_signed(6), W[2])[0]
    # W[0]'s line with its time changed
    good = _lines(signed, W[0])[0]
    raw = bytearray(base64.b64decode(good.split(b" ")[-1]))
    raw[11] ^= 1
    retimed = good.rsplit(b" ", 1)[0] + b" " + base64.b64encode(bytes(raw)) + b"\n"
    # a trusted name and key id with a blob of the wrong length
    short = note.signature_line(W[0].name, W[0].verifier.key_id + bytes(64))
    q = witness.check_quorum(signed, [forged, replayed, retimed, short], trusted, 1)
    assert (q.count, q.ok) == (0, False)
    assert len(q.invalid) == 4
    assert any(W[1].name in r for r in q.invalid)
    # forgeries do not cancel a valid cosignature of the same witness
    q = witness.check_quorum(signed, [retimed, good], trusted, 1)
    assert (q.count, q.ok, len(q.invalid)) == (1, True, 1)


def test_quorum_input_errors() -> None:
    with pytest.raises(NoteError):
        witness.check_quorum(b"not a note", [], [W[0].verifier], 0)
    with pytest.raises(NoteError):
        witness.check_quorum(_signed(), [b"no dash here"], [W[0].verifier], 0)


def test_parse_trusted_keys() -> None:
    text = (f"# trusted keys\n\n{LOG.verifier}\n  {W[0].verifier}  \n"
            f"# {W[3].verifier}\n{W[1].verifier}\n")
    logs, wits = witness.parse_trusted_keys(text)
    assert logs == [LOG.verifier]
    assert wits == [W[0].verifier, W[1].verifier]
    with pytest.raises(NoteError, match="line 2"):
        witness.parse_trusted_keys(f"{LOG.verifier}\n{str(W[0].verifier)[:-4]}\n")
