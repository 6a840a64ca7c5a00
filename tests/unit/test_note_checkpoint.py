"""C2SP signed-note, tlog-checkpoint, tlog-proof and the consistency-proof file.

External reference values:

* golang.org/x/mod/sumdb/note, note_test.go (github.com/golang/mod): the PeterNeumann
  and EnochRoot keys, the signed note of ``TestSign`` / ``TestOpen``, and the
  mangled-key and bad-message cases of ``TestNewVerifier`` / ``TestOpen``.
  Ed25519 signing is deterministic (RFC 8032), so our signer must reproduce the Go
  output byte for byte.
* C2SP signed-note, tlog-checkpoint and tlog-proof (github.com/C2SP/C2SP): the
  formats, and the example checkpoint text and tlog-proof header lines.
* FORMATS.md sections 3 and 4.

Everything else that is expected (key ids, signatures, file bytes) is computed here
with hashlib, base64 and cryptography directly, never with the code under test.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from vantio_appliance import checkpoint, merkle, note
from vantio_appliance.checkpoint import Checkpoint, FormatError
from vantio_appliance.merkle import ProofError
from vantio_appliance.note import NoteError, Signer, Verifier

EM_DASH = "\u2014"

# --- golang.org/x/mod/sumdb/note note_test.go ---------------------------------------------
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (b"If you think cryptography is the answer to your problem,\n"
           b"then you don't know what your problem is.\n")
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
             "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n").encode()
ENOCH_SIG = ("\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5o"
             "vTG01oOTGwnWLox33WWd1RvMc+QQ=\n").encode()
GO_NOTE = GO_TEXT + b"\n" + PETER_SIG


def _peter_private() -> Ed25519PrivateKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == 0x01 and len(raw) == 33
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ref_key_id(name: str, public: bytes) -> bytes:
    """FORMATS.md section 3 / C2SP signed-note: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\x0a" + b"\x01" + public).digest()[:4]


def ref_vkey(name: str, public: bytes) -> str:
    key = base64.b64encode(bytes([0x01]) + public).decode()
    return f"{name}+{ref_key_id(name, public).hex()}+{key}"


def ref_sig_line(name: str, key: Ed25519PrivateKey, text: bytes) -> bytes:
    blob = ref_key_id(name, _raw(key)) + key.sign(text)
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n".encode()


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test key %d" % seed).digest())


LOG_NAME = "vantio.appliance/test-host/ledger"
LOG_KEY = _key(1)
LOG_SIGNER = Signer(LOG_NAME, LOG_KEY)
OTHER_KEY = _key(2)


# --- key ids and verifier keys ---------------------------------------------------------------


def test_go_vector_key_ids() -> None:
    peter_pub = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]
    enoch_pub = base64.b64decode(ENOCH_VKEY.split("+", 2)[2])[1:]
    assert ref_key_id("PeterNeumann", peter_pub).hex() == "c74f20a3"
    assert ref_key_id("EnochRoot", enoch_pub).hex() == "af0cfe78"
    assert note.key_id("PeterNeumann", peter_pub) == bytes.fromhex("c74f20a3")
    assert note.key_id("EnochRoot", enoch_pub) == bytes.fromhex("af0cfe78")
    assert _raw(_peter_private()) == peter_pub


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc", "Cs"],
                             exclude_characters="+"), min_size=1, max_size=40),
       st.binary(min_size=32, max_size=32))
def test_key_id_and_vkey_text_match_formats_md(name: str, seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = _raw(key)
    assert note.key_id(name, pub) == ref_key_id(name, pub)
    v = Verifier(name, pub)
    assert v.key_id == ref_key_id(name, pub)
    assert str(v) == ref_vkey(name, pub)
    assert Verifier.parse(str(v)) == v
    s = Signer(name, key)
    assert s.verifier == v


def test_vkey_round_trip_of_go_keys() -> None:
    for text in (PETER_VKEY, ENOCH_VKEY):
        v = Verifier.parse(text)
        assert str(v) == text
        assert v.name == text.split("+")[0]
        assert v.key_id.hex() == text.split("+")[1]
    assert Verifier.parse(PETER_VKEY + "\n") == Verifier.parse(PETER_VKEY)


def test_vkey_whose_base64_contains_plus() -> None:
    # Find a key whose base64 has a '+' so that splitting on '+' is exercised.
    for seed in range(1000):
        pub = _raw(_key(seed))
        text = ref_vkey("example.com/plus", pub)
        if "+" in text.split("+", 2)[2]:
            assert Verifier.parse(text).public == pub
            assert str(Verifier.parse(text)) == text
            return
    pytest.fail("no key with '+' in its base64 among 1000")


def test_signer_verifier_is_the_vkey_of_its_key() -> None:
    assert str(Signer("PeterNeumann", _peter_private()).verifier) == PETER_VKEY
    assert str(LOG_SIGNER.verifier) == ref_vkey(LOG_NAME, _raw(LOG_KEY))


def _manglings(vkey: str) -> list[str]:
    """TestNewVerifier: every proper substring, and every single-byte increment."""
    b = vkey.encode()
    out = {b[i:j].decode() for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1)
           if (i, j) != (0, len(b))}
    for i in range(len(b)):
        out.add((b[:i] + bytes([b[i] + 1]) + b[i + 1:]).decode())
    return sorted(out)


def test_mangled_go_vkeys_are_refused() -> None:
    accepted = []
    for text in _manglings(PETER_VKEY):
        try:
            Verifier.parse(text)
        except NoteError:
            continue
        accepted.append(text)
    assert accepted == []


@pytest.mark.parametrize("text", [
    # TestNewVerifier: wrong length key, and unknown algorithm, each with a matching key hash
    "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
    "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    # bad key id: wrong value, too short, too long, not hex, not 8 hex digits
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20a300+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+c7 4f 20 a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann++ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    # bad base64
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW==",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW",
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!",
    "PeterNeumann+c74f20a3+",
    # bad names
    "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    # missing parts
    "PeterNeumann+c74f20a3",
    "PeterNeumann",
    "",
])
def test_bad_vkeys_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(text)


@pytest.mark.parametrize("name", ["with space", "with+plus", "tab\tname", "nbsp\u00a0name",
                                  "line\nbreak", ""])
def test_names_with_space_or_plus_are_refused(name: str) -> None:
    pub = _raw(LOG_KEY)
    with pytest.raises(NoteError):
        Signer(name, LOG_KEY)
    with pytest.raises(NoteError):
        Verifier.parse(ref_vkey(name, pub))


# --- signed notes: the Go vectors --------------------------------------------------------------


def test_signer_reproduces_go_signed_note() -> None:
    assert Signer("PeterNeumann", _peter_private()).sign(GO_TEXT) == GO_NOTE


def test_go_note_verifies() -> None:
    peter = Verifier.parse(PETER_VKEY)
    text, good = note.verify(GO_NOTE, [peter])
    assert text == GO_TEXT
    assert good == [peter]


def test_unknown_key_signatures_are_ignored() -> None:
    peter, enoch = Verifier.parse(PETER_VKEY), Verifier.parse(ENOCH_VKEY)
    both = GO_TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    assert note.verify(both, [peter]) == (GO_TEXT, [peter])
    assert note.verify(both, [enoch]) == (GO_TEXT, [enoch])
    text, good = note.verify(both, [peter, enoch])
    assert text == GO_TEXT and set(good) == {peter, enoch}
    with pytest.raises(NoteError):
        note.verify(both, [])
    # An unknown key's line may be anything well-formed: its signature is not checked.
    enoch_bad = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    assert note.verify(GO_TEXT + b"\n" + PETER_SIG + enoch_bad, [peter]) == (GO_TEXT, [peter])


def test_same_name_other_id_or_same_id_other_name_is_unknown() -> None:
    peter = Verifier.parse(PETER_VKEY)
    misnamed = PETER_SIG.replace(b"PeterNeumann", b"CarmenSandiego")
    wrong_id = PETER_SIG.replace(b"x08g", b"xxxx")
    for line in (misnamed, wrong_id):
        with pytest.raises(NoteError):  # the only signature is not by a known key
            note.verify(GO_TEXT + b"\n" + line, [peter])
        assert note.verify(GO_TEXT + b"\n" + line + PETER_SIG, [peter]) == (GO_TEXT, [peter])


def test_bad_signature_by_known_key_is_refused() -> None:
    peter = Verifier.parse(PETER_VKEY)
    corrupt = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError):
        note.verify(GO_TEXT + b"\n" + corrupt, [peter])
    with pytest.raises(NoteError):  # even next to a good signature by another known key
        note.verify(GO_TEXT + b"\n" + ENOCH_SIG + corrupt,
                    [Verifier.parse(ENOCH_VKEY), peter])


@pytest.mark.parametrize("msg", [
    # TestOpen badMsgs
    GO_TEXT,
    GO_TEXT + b"\n",
    GO_TEXT + b"\n" + PETER_SIG[:-1],
    b"\x01" + GO_TEXT + b"\n" + PETER_SIG,
    b"\xff" + GO_TEXT + b"\n" + PETER_SIG,
    GO_TEXT + b"\n" + ("\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F"
                       "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=").encode(),
    GO_TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
    # more: hyphen instead of em dash, missing space, bad base64, too short a signature
    GO_TEXT + b"\n" + PETER_SIG.replace("\u2014".encode(), b"-"),
    GO_TEXT + b"\n" + PETER_SIG.replace("\u2014 ".encode(), "\u2014".encode()),
    GO_TEXT + b"\n" + PETER_SIG.replace(b"x08go", b"x08g!"),
    GO_TEXT + b"\n" + "\u2014 PeterNeumann x08goA==\n".encode(),
    GO_TEXT + b"\n" + PETER_SIG + b"\n",
    b"",
])
def test_malformed_notes_are_refused(msg: bytes) -> None:
    with pytest.raises(NoteError):
        note.verify(msg, [Verifier.parse(PETER_VKEY)])


@pytest.mark.parametrize("text", [b"a\x01b\n", b"tab\there\n", b"cr\r\n", b"nul\x00\n",
                                  b"\xff\xfe\n", b"\xed\xa0\x80\n"])
def test_notes_with_control_characters_or_bad_utf8_are_refused(text: bytes) -> None:
    # C2SP signed-note: "Signed notes MUST be valid UTF-8 and MUST NOT contain any ASCII
    # control characters (those below U+0020) other than newline." The signature itself is
    # genuine (made here with cryptography), so only that rule can refuse the note.
    signed = text + b"\n" + ref_sig_line(LOG_NAME, LOG_KEY, text)
    with pytest.raises(NoteError):
        note.verify(signed, [LOG_SIGNER.verifier])


def test_note_text_may_contain_empty_lines() -> None:
    text = b"first\n\nafter an empty line\n"
    signed = LOG_SIGNER.sign(text)
    assert signed == text + b"\n" + ref_sig_line(LOG_NAME, LOG_KEY, text)
    assert note.verify(signed, [LOG_SIGNER.verifier]) == (text, [LOG_SIGNER.verifier])


def test_signer_refuses_text_without_final_newline() -> None:
    with pytest.raises(NoteError):
        LOG_SIGNER.sign(b"no newline")


def test_note_signed_by_a_different_key_fails() -> None:
    signed = Signer(LOG_NAME, OTHER_KEY).sign(b"text\n")
    # same name, other key: the key id differs, so the line is not ours and nothing verifies
    with pytest.raises(NoteError):
        note.verify(signed, [LOG_SIGNER.verifier])
    # same name and key id (forged line with another key's signature): must not verify
    forged = b"text\n\n" + (f"{EM_DASH} {LOG_NAME} ".encode() + base64.b64encode(
        ref_key_id(LOG_NAME, _raw(LOG_KEY)) + OTHER_KEY.sign(b"text\n")) + b"\n")
    with pytest.raises(NoteError):
        note.verify(forged, [LOG_SIGNER.verifier])


# --- signed checkpoints -----------------------------------------------------------------------

ROOT = hashlib.sha256(b"some root").digest()


def _expected_signed_checkpoint(origin: str, size: int, root: bytes, name: str,
                                key: Ed25519PrivateKey) -> bytes:
    text = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
    blob = ref_key_id(name, _raw(key)) + key.sign(text)
    return text + b"\n" + f"\u2014 {name} {base64.b64encode(blob).decode()}\n".encode()


@pytest.mark.parametrize("size", [0, 1, 7, 2**40 + 3])
def test_signed_checkpoint_bytes_exactly(size: int) -> None:
    cp = Checkpoint(LOG_NAME, size, ROOT)
    signed = checkpoint.sign(cp, LOG_SIGNER)
    assert signed == _expected_signed_checkpoint(LOG_NAME, size, ROOT, LOG_NAME, LOG_KEY)
    assert checkpoint.open_signed(signed, [LOG_SIGNER.verifier]) == cp


def test_checkpoint_signature_verifies_with_cryptography_directly() -> None:
    cp = Checkpoint(LOG_NAME, 42, ROOT)
    signed = checkpoint.sign(cp, LOG_SIGNER)
    text, sep, sigline = signed.partition(b"\n\n")
    assert sep and sigline.endswith(b"\n")
    text += b"\n"
    assert text == b"%s\n42\n%s\n" % (LOG_NAME.encode(), base64.b64encode(ROOT))
    prefix = f"{EM_DASH} {LOG_NAME} ".encode()
    assert sigline.startswith(prefix)
    blob = base64.b64decode(sigline[len(prefix):-1], validate=True)
    assert len(blob) == 4 + 64
    assert blob[:4] == ref_key_id(LOG_NAME, _raw(LOG_KEY))
    Ed25519PublicKey.from_public_bytes(_raw(LOG_KEY)).verify(blob[4:], text)


def test_checkpoint_with_cosignature_lines_from_unknown_keys() -> None:
    cp = Checkpoint(LOG_NAME, 9, ROOT)
    signed = checkpoint.sign(cp, LOG_SIGNER)
    witness = ref_sig_line("witness.example/w1", OTHER_KEY, cp.text())
    garbage = f"{EM_DASH} witness.example/w2 AAAAAAAA\n".encode()
    assert checkpoint.open_signed(signed + witness + garbage, [LOG_SIGNER.verifier]) == cp
    # the witness alone is trusted: the log's line is then the unknown one
    wv = Verifier("witness.example/w1", _raw(OTHER_KEY))
    assert checkpoint.open_signed(signed + witness, [wv]) == cp


@pytest.mark.parametrize(("old", "new"), [
    (b"\n9\n", b"\n8\n"),
    (b"\n9\n", b"\n90\n"),
    (LOG_NAME.encode(), b"vantio.appliance/other-host/ledger"),
    (base64.b64encode(ROOT)[:10], base64.b64encode(hashlib.sha256(b"x").digest())[:10]),
])
def test_tampered_checkpoint_text_fails(old: bytes, new: bytes) -> None:
    signed = checkpoint.sign(Checkpoint(LOG_NAME, 9, ROOT), LOG_SIGNER)
    assert old in signed
    with pytest.raises(NoteError):
        checkpoint.open_signed(signed.replace(old, new, 1), [LOG_SIGNER.verifier])


def test_checkpoint_signed_by_other_key_fails() -> None:
    signed = checkpoint.sign(Checkpoint(LOG_NAME, 9, ROOT), Signer(LOG_NAME, OTHER_KEY))
    with pytest.raises(NoteError):
        checkpoint.open_signed(signed, [LOG_SIGNER.verifier])


def test_c2sp_example_checkpoint_text() -> None:
    # tlog-checkpoint.md example
    text = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse_text(text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.text() == text


def test_checkpoint_extension_lines_are_accepted() -> None:
    text = b"o.example/log\n3\n" + base64.b64encode(ROOT) + b"\nextension one\nextension two\n"
    assert Checkpoint.parse_text(text) == Checkpoint("o.example/log", 3, ROOT)


_R64 = base64.b64encode(ROOT)


@pytest.mark.parametrize("text", [
    b"",
    b"\n",
    b"o\n3\n" + _R64,  # no final newline
    b"o\n3\n",
    b"\n3\n" + _R64 + b"\n",  # empty origin
    b"o\n03\n" + _R64 + b"\n",
    b"o\n-3\n" + _R64 + b"\n",
    b"o\n+3\n" + _R64 + b"\n",
    b"o\n 3\n" + _R64 + b"\n",
    b"o\n3 \n" + _R64 + b"\n",
    b"o\n3.0\n" + _R64 + b"\n",
    b"o\n\n" + _R64 + b"\n",
    "o\n\uff13\n".encode() + _R64 + b"\n",  # fullwidth digit three
    b"o\n3\n" + base64.b64encode(ROOT[:31]) + b"\n",
    b"o\n3\n" + base64.b64encode(ROOT + b"\0") + b"\n",
    b"o\n3\n" + _R64.rstrip(b"=") + b"\n",
    b"o\n3\n" + base64.urlsafe_b64encode(b"\xff" * 32) + b"\n",
    b"o\n3\n" + ROOT.hex().encode() + b"\n",
    b"\xff\n3\n" + _R64 + b"\n",
    b"o\n3\n" + _R64 + b"\n\nextension after an empty line\n",  # extension lines MUST be non-empty
])
def test_malformed_checkpoint_text_is_refused(text: bytes) -> None:
    with pytest.raises(FormatError):
        Checkpoint.parse_text(text)


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]),
               min_size=1, max_size=60),
       st.integers(0, 2**64), st.binary(min_size=32, max_size=32))
def test_checkpoint_text_round_trip(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    text = cp.text()
    assert text == f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
    assert Checkpoint.parse_text(text) == cp


# --- tlog-proof -----------------------------------------------------------------------------

HEADER = b"c2sp.org/tlog-proof@v1"


def _records(n: int) -> list[bytes]:
    return [b'{"seq":%d}' % i for i in range(n)]


def _leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def _signed_tree(n: int) -> tuple[list[bytes], merkle.Tree, bytes]:
    lines = _records(n)
    tree = merkle.Tree([_leaf(x) for x in lines])
    signed = checkpoint.sign(Checkpoint(LOG_NAME, n, tree.root()), LOG_SIGNER)
    return lines, tree, signed


def _b64(h: bytes) -> bytes:
    return base64.b64encode(h)


def test_tlog_proof_bytes_exactly() -> None:
    _, tree, signed = _signed_tree(11)
    proof = tree.inclusion_proof(6, 11)
    data = checkpoint.format_inclusion(6, proof, signed)
    expected = b"c2sp.org/tlog-proof@v1\nindex 6\n" + b"".join(_b64(h) + b"\n" for h in proof)
    assert data == expected + b"\n" + signed


def test_tlog_proof_with_empty_path() -> None:
    lines, tree, signed = _signed_tree(1)
    assert tree.inclusion_proof(0, 1) == []
    data = checkpoint.format_inclusion(0, [], signed)
    assert data == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + signed
    parsed = checkpoint.parse_inclusion(data)
    assert (parsed.index, parsed.path, parsed.signed_checkpoint, parsed.extra) == (
        0, [], signed, None)
    assert checkpoint.verify_inclusion(data, lines[0], [LOG_SIGNER.verifier]).size == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**64), st.lists(st.binary(min_size=32, max_size=32), max_size=64),
       st.binary(max_size=200).map(lambda b: b"cp\n" + b))
def test_tlog_proof_round_trip(index: int, path: list[bytes], signed: bytes) -> None:
    data = checkpoint.format_inclusion(index, path, signed)
    parsed = checkpoint.parse_inclusion(data)
    assert (parsed.index, parsed.path, parsed.signed_checkpoint, parsed.extra) == (
        index, path, signed, None)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 10**12),
       st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_tlog_proof_with_extra_is_parsed(extra: bytes, index: int, path: list[bytes]) -> None:
    # Built by hand from c2sp.org/tlog-proof: header, "extra <b64>", "index N", hashes, "".
    signed = b"origin\n1\n" + _b64(ROOT) + b"\n\n" + "\u2014 origin AAAA\n".encode()
    data = (HEADER + b"\nextra " + _b64(extra) + b"\nindex %d\n" % index
            + b"".join(_b64(h) + b"\n" for h in path) + b"\n" + signed)
    parsed = checkpoint.parse_inclusion(data)
    assert (parsed.index, parsed.path, parsed.signed_checkpoint, parsed.extra) == (
        index, path, signed, extra)


def test_c2sp_tlog_proof_example_is_parsed() -> None:
    # The example of c2sp.org/tlog-proof (its signatures are elided there, so only parsed).
    hashes = [
        "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=",
        "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=",
        "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=",
        "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=",
        "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=",
    ]
    cp = ("example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n"
          "\u2014 example.com/fancylog hI2DJw[...]1roloI=\n")
    extra = "YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ"
    text = ("c2sp.org/tlog-proof@v1\nextra " + extra + "\nindex 73894\n"
            + "".join(h + "\n" for h in hashes) + "\n" + cp)
    parsed = checkpoint.parse_inclusion(text.encode())
    assert parsed.index == 73894
    assert parsed.extra == base64.b64decode(extra)
    assert parsed.path == [base64.b64decode(h) for h in hashes]
    assert parsed.signed_checkpoint == cp.encode()


_H = _b64(ROOT)
_CP = b"o\n1\n" + _H + b"\n\n" + "\u2014 o AAAA\n".encode()


@pytest.mark.parametrize("data", [
    b"",
    HEADER,
    HEADER + b"\nindex 0\n",  # no empty line before the checkpoint
    b"c2sp.org/tlog-proof@v2\nindex 0\n\n" + _CP,
    b"c2sp.org/tlog-proof\nindex 0\n\n" + _CP,
    b"\n" + HEADER + b"\nindex 0\n\n" + _CP,
    HEADER + b"\n\n" + _CP,  # no index
    HEADER + b"\n" + _H + b"\n\n" + _CP,  # hash where the index belongs
    HEADER + b"\nindex\n\n" + _CP,
    HEADER + b"\nindex \n\n" + _CP,
    HEADER + b"\nindex -1\n\n" + _CP,
    HEADER + b"\nindex 01\n\n" + _CP,
    HEADER + b"\nindex +1\n\n" + _CP,
    HEADER + b"\nindex 1.0\n\n" + _CP,
    HEADER + b"\nindex  1\n\n" + _CP,
    HEADER + b"\nindex 1 \n\n" + _CP,
    HEADER + b"\nindex 0x1\n\n" + _CP,
    HEADER + b"\nIndex 1\n\n" + _CP,
    HEADER + b"\nindex 1\nextra AAAA\n\n" + _CP,  # extra after index
    HEADER + b"\nextra !!!!\nindex 1\n\n" + _CP,
    HEADER + b"\nextra AAA\nindex 1\n\n" + _CP,
    HEADER + b"\nindex 1\n" + _b64(ROOT[:31]) + b"\n\n" + _CP,
    HEADER + b"\nindex 1\n" + _b64(ROOT + b"\0") + b"\n\n" + _CP,
    HEADER + b"\nindex 1\n" + _H.rstrip(b"=") + b"\n\n" + _CP,
    HEADER + b"\nindex 1\n" + ROOT.hex().encode() + b"\n\n" + _CP,
    HEADER + b"\nindex 1\n" + _H + b" \n\n" + _CP,
    HEADER + b"\r\nindex 1\r\n\r\n" + _CP,
    HEADER + b"\nindex 1\n\xff\n\n" + _CP,
])
def test_malformed_tlog_proofs_are_refused(data: bytes) -> None:
    with pytest.raises(FormatError):
        checkpoint.parse_inclusion(data)


def test_tlog_proof_verifies_for_every_record() -> None:
    lines, tree, signed = _signed_tree(13)
    for i, line in enumerate(lines):
        data = checkpoint.format_inclusion(i, tree.inclusion_proof(i, 13), signed)
        assert checkpoint.verify_inclusion(data, line, [LOG_SIGNER.verifier]) == Checkpoint(
            LOG_NAME, 13, tree.root())
        # the opaque extra line does not change what is proved
        with_extra = data.replace(b"\nindex ", b"\nextra " + _b64(b"opaque") + b"\nindex ", 1)
        assert checkpoint.verify_inclusion(with_extra, line, [LOG_SIGNER.verifier]).size == 13


def test_tlog_proof_fails_for_other_line_index_key_or_tampering() -> None:
    lines, tree, signed = _signed_tree(13)
    proof = tree.inclusion_proof(4, 13)
    data = checkpoint.format_inclusion(4, proof, signed)
    with pytest.raises(ProofError):
        checkpoint.verify_inclusion(data, lines[5], [LOG_SIGNER.verifier])
    with pytest.raises(ProofError):
        checkpoint.verify_inclusion(data, lines[4] + b" ", [LOG_SIGNER.verifier])
    with pytest.raises(ProofError):
        checkpoint.verify_inclusion(checkpoint.format_inclusion(5, proof, signed), lines[4],
                                    [LOG_SIGNER.verifier])
    with pytest.raises(ProofError):
        checkpoint.verify_inclusion(checkpoint.format_inclusion(4, proof[:-1], signed),
                                    lines[4], [LOG_SIGNER.verifier])
    with pytest.raises(NoteError):
        checkpoint.verify_inclusion(data, lines[4], [Verifier(LOG_NAME, _raw(OTHER_KEY))])
    other = checkpoint.sign(Checkpoint(LOG_NAME, 13, tree.root()), Signer(LOG_NAME, OTHER_KEY))
    with pytest.raises(NoteError):
        checkpoint.verify_inclusion(checkpoint.format_inclusion(4, proof, other), lines[4],
                                    [LOG_SIGNER.verifier])
    # a checkpoint claiming another root, honestly signed, does not match the proof
    lie = checkpoint.sign(Checkpoint(LOG_NAME, 13, ROOT), LOG_SIGNER)
    with pytest.raises(ProofError):
        checkpoint.verify_inclusion(checkpoint.format_inclusion(4, proof, lie), lines[4],
                                    [LOG_SIGNER.verifier])


def test_tlog_proof_without_checkpoint_is_refused() -> None:
    lines, tree, _ = _signed_tree(3)
    data = checkpoint.format_inclusion(0, tree.inclusion_proof(0, 3), b"")
    with pytest.raises(ValueError):
        checkpoint.verify_inclusion(data, lines[0], [LOG_SIGNER.verifier])


# --- consistency-proof file -----------------------------------------------------------------


def test_consistency_file_bytes_exactly() -> None:
    _, tree, _ = _signed_tree(20)
    proof = tree.consistency_proof(7, 20)
    data = checkpoint.format_consistency(7, 20, proof)
    header = checkpoint.CONSISTENCY_HEADER.encode()
    assert data == header + b"\nold 7\nnew 20\n" + b"".join(_b64(h) + b"\n" for h in proof)
    assert checkpoint.parse_consistency(data) == (7, 20, proof)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**64), st.integers(0, 2**64),
       st.lists(st.binary(min_size=32, max_size=32), max_size=64))
def test_consistency_file_round_trip(old: int, new: int, path: list[bytes]) -> None:
    assert checkpoint.parse_consistency(checkpoint.format_consistency(old, new, path)) == (
        old, new, path)


def _checkpoints(tree: merkle.Tree, old: int, new: int, origin: str = LOG_NAME
                 ) -> tuple[Checkpoint, Checkpoint]:
    return Checkpoint(origin, old, tree.root(old)), Checkpoint(origin, new, tree.root(new))


@pytest.mark.parametrize(("old", "new"), [(0, 20), (1, 20), (7, 20), (8, 20), (20, 20), (19, 20)])
def test_consistency_file_verifies(old: int, new: int) -> None:
    _, tree, _ = _signed_tree(20)
    data = checkpoint.format_consistency(old, new, tree.consistency_proof(old, new))
    a, b = _checkpoints(tree, old, new)
    checkpoint.verify_consistency(data, a, b)


def test_consistency_file_mismatches_are_refused() -> None:
    _, tree, _ = _signed_tree(20)
    proof = tree.consistency_proof(7, 20)
    data = checkpoint.format_consistency(7, 20, proof)
    a, b = _checkpoints(tree, 7, 20)
    # sizes that differ from the checkpoints'
    for x, y in ((6, 20), (7, 19), (20, 7)):
        c, d = _checkpoints(tree, x, y)
        with pytest.raises(ProofError):
            checkpoint.verify_consistency(data, c, d)
    # a file naming other sizes than its checkpoints, even with a proof that fits them
    c, d = _checkpoints(tree, 8, 20)
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(
            checkpoint.format_consistency(7, 20, tree.consistency_proof(8, 20)), c, d)
    # checkpoints whose sizes differ from the file's, though their roots fit the proof
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, a, Checkpoint(LOG_NAME, 21, b.root))
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, Checkpoint(LOG_NAME, 6, a.root), b)
    # origins differ
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, a, Checkpoint("other.example/log", 20, b.root))
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, Checkpoint("other.example/log", 7, a.root), b)
    # roots differ
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, a, Checkpoint(LOG_NAME, 20, ROOT))
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(data, Checkpoint(LOG_NAME, 7, ROOT), b)
    # tampered hash
    bad = [*proof]
    bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
    with pytest.raises(ProofError):
        checkpoint.verify_consistency(checkpoint.format_consistency(7, 20, bad), a, b)


_CH = b"vantio.appliance/consistency-proof@v1"


@pytest.mark.parametrize("data", [
    b"",
    _CH + b"\nold 1\nnew 2\n" + _H,  # no final newline
    b"c2sp.org/tlog-proof@v1\nold 1\nnew 2\n" + _H + b"\n",
    _CH + b"\nnew 2\nold 1\n" + _H + b"\n",
    _CH + b"\nold 1\n" + _H + b"\n",
    _CH + b"\nold 01\nnew 2\n" + _H + b"\n",
    _CH + b"\nold -1\nnew 2\n" + _H + b"\n",
    _CH + b"\nold 1\nnew 2.0\n" + _H + b"\n",
    _CH + b"\nold  1\nnew 2\n" + _H + b"\n",
    _CH + b"\nold 1\nnew 2\n" + _b64(ROOT[:31]) + b"\n",
    _CH + b"\nold 1\nnew 2\n" + ROOT.hex().encode() + b"\n",
    _CH + b"\nold 1\nnew 2\n" + _H + b"\n\n",
    _CH + b"\nold 1\nnew 2\n\n" + _H + b"\n",
    _CH + b"\r\nold 1\r\nnew 2\r\n" + _H + b"\r\n",
    _CH + b"\nold 1\nnew 2\n\xff\n",
])
def test_malformed_consistency_files_are_refused(data: bytes) -> None:
    with pytest.raises(FormatError):
        checkpoint.parse_consistency(data)
