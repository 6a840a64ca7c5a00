"""The epoch chain (pure): statements, acceptance in order, the epoch in force, and
checkpoints that need both the identity and the epoch signature."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vantio_appliance import checkpoint as cpmod
from vantio_appliance import epoch, note
from vantio_appliance.epoch import EpochChain, EpochError

ORIGIN = "vantio.appliance/unit/ledger"


def _root(i: int) -> bytes:
    return hashlib.sha256(b"tree %d" % i).digest()


@dataclass
class Rec:
    n: int
    seq: int
    root: str
    vkey: str
    signature: str


class Host:
    """What a writer holds: an identity key and a key per epoch, from which records and
    signed checkpoints are made as the writer makes them."""

    def __init__(self, epochs: int, seqs: tuple[int, ...] = (1, 10, 20, 30)) -> None:
        self.identity = Ed25519PrivateKey.generate()
        self.id_signer = note.Signer(ORIGIN, self.identity)
        self.keys = [Ed25519PrivateKey.generate() for _ in range(epochs)]
        self.signers = [note.Signer(epoch.key_name(ORIGIN, n), k) for n, k in enumerate(self.keys)]
        self.records = [self.record(n, seqs[n]) for n in range(epochs)]

    def record(self, n: int, seq: int, *, by: Ed25519PrivateKey | None = None,
               vkey: str | None = None) -> Rec:
        vkey = vkey or str(self.signers[n].verifier)
        by = by or (self.identity if n == 0 else self.keys[n - 1])
        return Rec(n, seq, base64.b64encode(_root(seq)).decode(), vkey,
                   epoch.sign_statement(by, ORIGIN, n, seq, _root(seq), vkey))

    def chain(self) -> EpochChain:
        chain = EpochChain(self.id_signer.verifier, self.signers[0].verifier)
        for r in self.records:
            chain.accept(r.n, r.seq, r.root, r.vkey, r.signature)
        return chain

    def checkpoint(self, size: int, *signers: note.Signer) -> bytes:
        cp = cpmod.Checkpoint(ORIGIN, size, _root(1000 + size))
        return cpmod.sign(cp, self.id_signer, *signers)


def test_statement_bytes_exactly() -> None:
    root = bytes(range(32))
    assert epoch.statement("o/l", 3, 9120, root, "o/l/epoch/3+01234567+AAAA") == (
        b"vantio.appliance/epoch@v1\no/l\n3\n9120\n"
        + base64.b64encode(root) + b"\no/l/epoch/3+01234567+AAAA\n")
    assert epoch.key_name("o/l", 12) == "o/l/epoch/12"


def test_a_good_chain_and_the_epoch_in_force() -> None:
    host = Host(3)
    chain = host.chain()
    assert [e.n for e in chain.epochs] == [0, 1, 2]
    # the epoch in force at size N is the latest whose record has seq < N
    assert [chain.at(n).n for n in (2, 10, 11, 20, 21, 10**9)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(EpochError, match="no epoch is in force at tree size 1"):
        chain.at(1)
    for size, n in ((10, 0), (11, 1), (21, 2)):
        cp = chain.open_checkpoint(host.checkpoint(size, host.signers[n]))
        assert cp.size == size


def test_checkpoint_signed_by_another_epoch_names_the_epoch_in_force() -> None:
    host = Host(3)
    chain = host.chain()
    with pytest.raises(EpochError) as info:  # epoch 1's key, at a size where 2 is in force
        chain.open_checkpoint(host.checkpoint(9120, host.signers[1]))
    assert str(info.value) == "epoch 2: checkpoint at size 9120 not signed by epoch key"
    assert info.value.epoch == 2
    with pytest.raises(EpochError, match="epoch 1: seal checkpoint at size 15 not signed"):
        chain.open_checkpoint(host.checkpoint(15), "seal checkpoint")  # identity only
    # a key named for epoch 1 that is not epoch 1's key
    impostor = note.Signer(epoch.key_name(ORIGIN, 1), Ed25519PrivateKey.generate())
    with pytest.raises(EpochError, match="epoch 1"):
        chain.open_checkpoint(host.checkpoint(15, impostor))


def test_checkpoint_needs_the_identity_signature_too() -> None:
    host = Host(2)
    chain = host.chain()
    cp = cpmod.Checkpoint(ORIGIN, 15, _root(1))
    only_epoch = host.signers[1].sign(cp.text())
    with pytest.raises(note.NoteError, match="no signature by a trusted key"):
        chain.open_checkpoint(only_epoch)


def test_bad_epoch_signature_line_is_not_an_epoch_signature() -> None:
    host = Host(2)
    chain = host.chain()
    signed = bytearray(host.checkpoint(15, host.signers[1]))
    last = signed.rindex(b" ") + 10  # inside the base64 of the epoch signature
    signed[last] = ord("A") if signed[last] != ord("A") else ord("B")
    with pytest.raises((EpochError, note.NoteError)):
        chain.open_checkpoint(bytes(signed))


def test_skipped_epoch_number_is_refused() -> None:
    host = Host(2)
    chain = host.chain()
    third = Ed25519PrivateKey.generate()
    vkey = str(note.Signer(epoch.key_name(ORIGIN, 3), third).verifier)
    rec = host.record(3, 40, by=host.keys[1], vkey=vkey)  # signed by epoch 1, numbered 3
    with pytest.raises(EpochError) as info:
        chain.accept(rec.n, rec.seq, rec.root, rec.vkey, rec.signature)
    assert str(info.value).startswith("epoch 3: expected epoch 2 next")


def test_tampered_record_fields_are_refused() -> None:
    host = Host(3)
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0, r1, r2 = host.records
    chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    # each field of epoch 1 changed: the signature by epoch 0 no longer holds
    for field, value in (("seq", 11), ("root", base64.b64encode(_root(99)).decode())):
        bad = {**r1.__dict__, field: value}
        with pytest.raises(EpochError, match="epoch 1: record signature does not verify with "
                                             "epoch 0's key"):
            chain.accept(bad["n"], bad["seq"], bad["root"], bad["vkey"], bad["signature"])
    sig = bytearray(base64.b64decode(r1.signature))
    sig[5] ^= 1
    with pytest.raises(EpochError, match="epoch 1: record signature does not verify"):
        chain.accept(r1.n, r1.seq, r1.root, r1.vkey, base64.b64encode(sig).decode())
    chain.accept(r1.n, r1.seq, r1.root, r1.vkey, r1.signature)
    chain.accept(r2.n, r2.seq, r2.root, r2.vkey, r2.signature)


def test_epoch_signed_by_a_later_stolen_key_is_refused() -> None:
    """The thief of epoch 2's key cannot re-sign epoch 1's statement over another root."""
    host = Host(3)
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0, r1, _ = host.records
    chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    forged = host.record(1, r1.seq, by=host.keys[2])
    with pytest.raises(EpochError, match="epoch 1: record signature does not verify"):
        chain.accept(forged.n, forged.seq, forged.root, forged.vkey, forged.signature)
    forged = host.record(1, r1.seq, by=host.identity)  # nor with the stolen identity key
    with pytest.raises(EpochError, match="epoch 1"):
        chain.accept(forged.n, forged.seq, forged.root, forged.vkey, forged.signature)


def test_wrong_epoch0_key_is_refused() -> None:
    host = Host(1)
    other = note.Signer(epoch.key_name(ORIGIN, 0), Ed25519PrivateKey.generate()).verifier
    chain = EpochChain(host.id_signer.verifier, other)
    r0 = host.records[0]
    with pytest.raises(EpochError, match="epoch 0: the record's key is not the trusted "
                                         "epoch-0 key"):
        chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    misnamed = note.Signer("another/origin/epoch/0", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(EpochError, match="epoch 0: the epoch-0 key is named"):
        EpochChain(host.id_signer.verifier, misnamed)


def test_epoch0_must_follow_genesis_and_seqs_must_increase() -> None:
    host = Host(2, seqs=(2, 10))
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0 = host.records[0]
    with pytest.raises(EpochError, match="epoch 0 directly follows genesis"):
        chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    host = Host(2, seqs=(1, 1))
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0, r1 = host.records
    chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    with pytest.raises(EpochError, match="epoch 1: record at seq 1 is not after epoch 0"):
        chain.accept(r1.n, r1.seq, r1.root, r1.vkey, r1.signature)


def test_key_named_for_another_epoch_is_refused() -> None:
    host = Host(2)
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0 = host.records[0]
    chain.accept(r0.n, r0.seq, r0.root, r0.vkey, r0.signature)
    wrong = str(note.Signer(epoch.key_name(ORIGIN, 5), host.keys[1]).verifier)
    rec = host.record(1, 10, vkey=wrong)
    with pytest.raises(EpochError, match="epoch 1: key is named"):
        chain.accept(rec.n, rec.seq, rec.root, rec.vkey, rec.signature)


@pytest.mark.parametrize(("root", "signature", "reason"), [
    ("not base64!", None, "root is not base64"),
    (base64.b64encode(b"x" * 31).decode(), None, "root is not 32 bytes"),
    (None, base64.b64encode(b"x" * 63).decode(), "signature is not 64 bytes"),
])
def test_malformed_fields_are_refused(root: str | None, signature: str | None,
                                      reason: str) -> None:
    host = Host(1)
    chain = EpochChain(host.id_signer.verifier, host.signers[0].verifier)
    r0 = host.records[0]
    with pytest.raises(EpochError, match=f"epoch 0: {reason}"):
        chain.accept(0, 1, root or r0.root, r0.vkey, signature or r0.signature)
