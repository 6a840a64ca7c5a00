"""RFC 3161 time stamps over a bundle's checkpoint, against a real TSA: ``openssl ts``.

Each TSA here is a throwaway CA and a time-stamping certificate (extended key
usage timeStamping, critical) made with ``openssl``, answering requests with
``openssl ts -reply`` from an openssl.cnf ``[tsa]`` section, all in a temporary
directory. What the tokens say (serial, time) is read back with ``openssl ts
-reply -text``, and tokens we accept are cross-checked with ``openssl ts -verify``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc3161_client
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger_helpers import cli

from vantio_appliance import checkpoint, note, timestamp
from vantio_appliance.checkpoint import Checkpoint
from vantio_appliance.timestamp import TimestampError, TsaTrust

DATA = b"vantio.appliance/test-host/ledger\n5\n" + b"x" * 43 + b"=\n"


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    res = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, check=False, timeout=60)
    assert res.returncode == 0, f"openssl {args}: {res.stderr}"
    return res.stdout


_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[tsa_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
[tsa]
default_tsa = tsa_config
[tsa_config]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
{certs}
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_alg = sha256
"""


@dataclass
class Tsa:
    """A time-stamping authority in a directory: root, TSA certificate, openssl.cnf."""

    dir: Path
    root: Path  # the self-signed root (the TSA certificate itself when self_signed)
    cert: Path  # the TSA's certificate

    def reply(self, tsq: bytes) -> bytes:
        (self.dir / "req.tsq").write_bytes(tsq)
        _run("ts", "-reply", "-config", self.dir / "openssl.cnf", "-queryfile",
             self.dir / "req.tsq", "-out", self.dir / "resp.tsr")
        return (self.dir / "resp.tsr").read_bytes()

    def query(self, data: bytes, *, digest: str = "sha256", cert: bool = True) -> bytes:
        """A request made by openssl itself (not by the code under test)."""
        (self.dir / "data").write_bytes(data)
        _run("ts", "-query", "-data", self.dir / "data", f"-{digest}", *(["-cert"] if cert else []),
             "-out", self.dir / "q.tsq")
        return (self.dir / "q.tsq").read_bytes()

    def stamp(self, data: bytes, **kw: bool | str) -> bytes:
        return self.reply(self.query(data, **kw))  # type: ignore[arg-type]


def make_tsa(where: Path, name: str, *, ca: Tsa | None = None, self_signed: bool = False,
             chain: bool = True, long_subject: bool = False) -> Tsa:
    """A CA and a TSA certificate under it (or under ``ca``'s root), or one self-signed TSA."""
    d = where / name
    d.mkdir()
    certs = f"certs = {d}/ca.pem" if chain and not self_signed else ""
    (d / "openssl.cnf").write_text(_CNF.format(dir=d, certs=certs))
    (d / "serial").write_text("01\n")
    cnf = d / "openssl.cnf"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    # a long organization makes the TSA certificate longer than the root, so that
    # OpenSSL's chain order (signer first) is not the DER order of the certificate set
    units = [f"/OU=unit {i} of a long subject name" for i in range(6)] if long_subject else []
    subject = f"/CN={name} TSA" + "".join(units)
    if self_signed:
        _run("req", "-x509", *ec, "-keyout", d / "tsa.key", "-out", d / "tsa.pem", "-days", "30",
             "-subj", subject, "-config", cnf, "-extensions", "tsa_ext")
        return Tsa(d, d / "tsa.pem", d / "tsa.pem")
    if ca is None:
        _run("req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "30",
             "-subj", f"/CN={name} Root", "-config", cnf, "-extensions", "ca_ext")
        ca_dir = d
    else:
        ca_dir = ca.dir
        (d / "ca.pem").write_bytes((ca.dir / "ca.pem").read_bytes())
    _run("req", "-new", *ec, "-keyout", d / "tsa.key", "-out", d / "tsa.csr", "-subj", subject,
         "-config", cnf)
    _run("x509", "-req", "-in", d / "tsa.csr", "-CA", ca_dir / "ca.pem", "-CAkey",
         ca_dir / "ca.key", "-set_serial", f"0x{secrets.token_hex(8)}", "-out", d / "tsa.pem",
         "-days", "30", "-extfile", cnf, "-extensions", "tsa_ext")
    return Tsa(d, d / "ca.pem", d / "tsa.pem")


@pytest.fixture(scope="module")
def tsas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tsa]:
    where = tmp_path_factory.mktemp("tsa")
    main = make_tsa(where, "main", long_subject=True)
    return {
        "main": main,  # signs with its chain embedded, in non-DER order
        "sibling": make_tsa(where, "sibling", ca=main),  # another TSA under main's root
        "other": make_tsa(where, "other"),  # another TSA, another root
        "self": make_tsa(where, "self", self_signed=True),
        "bare": make_tsa(where, "bare", chain=False),  # embeds only its own certificate
    }


def _trust(*pems: Path) -> TsaTrust:
    return TsaTrust.from_pem(b"".join(p.read_bytes() for p in pems))


def _openssl_says(tsr: Path) -> tuple[int, datetime]:
    text = _run("ts", "-reply", "-in", tsr, "-text")
    serial = int(re.search(r"Serial number: 0x([0-9A-F]+)", text).group(1), 16)  # type: ignore[union-attr]
    when = re.search(r"Time stamp: (.+ GMT)", text).group(1)  # type: ignore[union-attr]
    return serial, datetime.strptime(when, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def _openssl_verifies(tsr: bytes, data: bytes, root: Path, where: Path) -> bool:
    (where / "v.tsr").write_bytes(tsr)
    (where / "v.data").write_bytes(data)
    res = subprocess.run(["openssl", "ts", "-verify", "-in", where / "v.tsr", "-data",
                          where / "v.data", "-CAfile", root], capture_output=True, check=False)
    return res.returncode == 0


# -- tokens that hold ----------------------------------------------------------------------


def test_token_with_its_chain_verifies(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    before = datetime.now(UTC).replace(microsecond=0)
    tsr = tsa.stamp(DATA)
    after = datetime.now(UTC)
    # the premise: OpenSSL wrote the certificate set in chain order, which strict DER
    # parsing refuses; the module must still accept this genuine token
    with pytest.raises(ValueError, match="InvalidSetOrdering"):
        rfc3161_client.decode_timestamp_response(tsr)
    info = timestamp.verify(tsr, DATA, _trust(tsa.root))
    (tsa.dir / "good.tsr").write_bytes(tsr)
    serial, when = _openssl_says(tsa.dir / "good.tsr")
    assert (info.serial, info.gen_time) == (serial, when)
    assert before <= info.gen_time <= after
    assert info.policy == "1.2.3.4.1"
    assert info.tsa.endswith("CN=main TSA")
    assert _openssl_verifies(tsr, DATA, tsa.root, tsa.dir)
    # the root and the TSA's own certificate (pinned), in either order
    assert timestamp.verify(tsr, DATA, _trust(tsa.root, tsa.cert)).serial == serial
    assert timestamp.verify(tsr, DATA, _trust(tsa.cert, tsa.root)).serial == serial


def test_token_without_certificates_needs_the_tsa_certificate(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["bare"]
    tsr = tsa.stamp(DATA, cert=False)
    assert timestamp.verify(tsr, DATA, _trust(tsa.root, tsa.cert)).tsa == "CN=bare TSA"
    with pytest.raises(TimestampError):
        timestamp.verify(tsr, DATA, _trust(tsa.root))
    with_cert = tsa.stamp(DATA)  # one embedded certificate: the root alone suffices
    assert timestamp.verify(with_cert, DATA, _trust(tsa.root)).tsa == "CN=bare TSA"


def test_self_signed_tsa(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["self"]
    tsr = tsa.stamp(DATA)
    assert timestamp.verify(tsr, DATA, _trust(tsa.cert)).tsa == "CN=self TSA"
    assert _openssl_verifies(tsr, DATA, tsa.cert, tsa.dir)


def test_our_request_is_answered_and_its_nonce_checked(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    tsq, nonce = timestamp.request(DATA)
    assert nonce is not None
    text = _run("ts", "-query", "-in", _write(tsa.dir / "ours.tsq", tsq), "-text")
    assert "sha256" in text and hashlib.sha256(DATA).hexdigest()[:4] in text.replace(" ", "")
    assert re.search(r"Certificate required: yes", text)
    tsr = tsa.reply(tsq)
    assert timestamp.verify(tsr, DATA, _trust(tsa.root), nonce=nonce).nonce == nonce
    with pytest.raises(TimestampError, match="Nonce mismatch"):
        timestamp.verify(tsr, DATA, _trust(tsa.root), nonce=nonce + 1)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- tokens that must be refused -------------------------------------------------------------


def test_token_over_other_data(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    tsr = tsa.stamp(DATA + b"\n")
    with pytest.raises(TimestampError, match="other data"):
        timestamp.verify(tsr, DATA, _trust(tsa.root))


def test_token_from_another_tsa(tsas: dict[str, Tsa]) -> None:
    main, other, sibling = tsas["main"], tsas["other"], tsas["self"]
    for stranger in (other, sibling):
        tsr = stranger.stamp(DATA)
        with pytest.raises(TimestampError, match="not signed by a TSA"):
            timestamp.verify(tsr, DATA, _trust(main.root))
        assert not _openssl_verifies(tsr, DATA, main.root, main.dir)


def test_pinned_tsa_refuses_a_sibling_under_the_same_root(tsas: dict[str, Tsa]) -> None:
    main, sibling = tsas["main"], tsas["sibling"]
    tsr = sibling.stamp(DATA)
    assert timestamp.verify(tsr, DATA, _trust(main.root)).tsa == "CN=sibling TSA"  # root only
    with pytest.raises(TimestampError):
        timestamp.verify(tsr, DATA, _trust(main.root, main.cert))


def test_corrupted_tokens(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    tsr = tsa.stamp(DATA)
    when = _openssl_says(_write(tsa.dir / "c.tsr", tsr))[1].strftime("%Y%m%d%H%M%S").encode()
    at = tsr.index(when)  # genTime inside the signed TSTInfo
    later = bytearray(tsr)
    later[at + 3] = ord("9") if later[at + 3] != ord("9") else ord("8")  # another year
    cases = {
        "genTime": bytes(later),
        "signature": tsr[:-5] + bytes([tsr[-5] ^ 0x01]) + tsr[-4:],
        "truncated": tsr[: len(tsr) // 2],
        "empty": b"",
        "garbage": b"\x30\x03\x02\x01\x00",
    }
    for what, bad in cases.items():
        with pytest.raises(TimestampError):
            timestamp.verify(bad, DATA, _trust(tsa.root))
            pytest.fail(f"{what} accepted")
        assert not _openssl_verifies(bad, DATA, tsa.root, tsa.dir), what


def test_refusal_and_other_hash(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    rejected = tsa.reply(tsa.query(DATA, digest="sha1"))  # not among the TSA's digests
    with pytest.raises(TimestampError, match="did not grant"):
        timestamp.verify(rejected, DATA, _trust(tsa.root))
    sha512 = tsa.stamp(DATA, digest="sha512")
    with pytest.raises(TimestampError, match="SHA-256"):
        timestamp.verify(sha512, DATA, _trust(tsa.root))


def test_tsa_certificate_file_needs_a_root(tsas: dict[str, Tsa]) -> None:
    tsa = tsas["main"]
    with pytest.raises(TimestampError, match="self-signed"):
        _trust(tsa.cert)
    with pytest.raises(TimestampError, match="PEM"):
        TsaTrust.from_pem(b"not a certificate")
    trust = _trust(tsa.cert, tsa.root, tsas["other"].root)
    assert (len(trust.roots), len(trust.tsas), trust.intermediates) == (2, 1, [])


# -- the command ------------------------------------------------------------------------------


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    signer = note.Signer("vantio.appliance/test-host/ledger", Ed25519PrivateKey.generate())
    cp = Checkpoint(signer.name, 5, hashlib.sha256(b"root").digest())
    (bundle / "checkpoint").write_bytes(checkpoint.sign(cp, signer))
    return bundle


def test_cli_request_and_verify(tsas: dict[str, Tsa], tmp_path: Path) -> None:
    tsa = tsas["main"]
    bundle = _bundle(tmp_path)
    res = cli("timestamp", "request", bundle, "--out", tmp_path / "req.tsq")
    assert res.returncode == 0, res.stderr
    assert hashlib.sha256((bundle / "checkpoint").read_bytes()).hexdigest() in res.stderr
    (bundle / "timestamps").mkdir()
    (bundle / "timestamps" / "main.tsr").write_bytes(tsa.reply((tmp_path / "req.tsq").read_bytes()))
    (bundle / "timestamps" / "self.tsr").write_bytes(
        tsas["self"].stamp((bundle / "checkpoint").read_bytes()))
    both = _write(tmp_path / "both.pem", tsa.root.read_bytes() + tsa.cert.read_bytes()
                  + tsas["self"].cert.read_bytes())
    res = cli("timestamp", "verify", bundle, "--tsa-cert", both)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("OK ") == 2 and "serial" in res.stdout
    # TSA certificates in the file pin: main's root without main's certificate, beside
    # the self-signed TSA's certificate, trusts only the latter
    pinned = _write(tmp_path / "pinned.pem", tsa.root.read_bytes()
                    + tsas["self"].cert.read_bytes())
    res = cli("timestamp", "verify", bundle, "--tsa-cert", pinned)
    assert res.returncode == 1
    assert "FAILED main.tsr: not signed by a TSA certificate of the file" in res.stdout
    # with one TSA trusted, the other's token fails: exit 1, each named
    res = cli("timestamp", "verify", bundle, "--tsa-cert", tsa.root)
    assert res.returncode == 1
    assert "OK main.tsr" in res.stdout and "FAILED self.tsr" in res.stdout
    # a token over another checkpoint
    (bundle / "timestamps" / "self.tsr").unlink()
    (bundle / "timestamps" / "old.tsr").write_bytes(tsa.stamp(b"another checkpoint\n"))
    res = cli("timestamp", "verify", bundle, "--tsa-cert", tsa.root)
    assert res.returncode == 1 and "FAILED old.tsr: the token is over other data" in res.stdout


def test_cli_verify_input_errors(tsas: dict[str, Tsa], tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    res = cli("timestamp", "verify", bundle, "--tsa-cert", tsas["main"].root)
    assert res.returncode == 1 and "no time-stamp tokens" in res.stdout
    res = cli("timestamp", "verify", bundle, "--tsa-cert", tsas["main"].cert)
    assert res.returncode == 2 and "self-signed" in res.stderr
    res = cli("timestamp", "verify", bundle, "--tsa-cert", tmp_path / "missing.pem")
    assert res.returncode == 2
    res = cli("timestamp", "verify", tmp_path / "nobundle", "--tsa-cert", tsas["main"].root)
    assert res.returncode == 2 and "checkpoint" in res.stderr
