"""RFC 3161 time-stamp tokens over an anchor bundle's checkpoint (pure).

A time-stamping authority (TSA) signs "this SHA-256 existed at genTime": with
a token over the exported checkpoint, history older than that time cannot be
re-signed later without the TSA. Parsing and CMS/chain verification are done by
``rfc3161-client`` (Trail of Bits; sigstore uses it), which checks that the
response was granted, the CMS signature, the chain up to a trusted root at
genTime, the critical ``timeStamping`` extended key usage of the signer, and
the message imprint; this module adds the trust setup and the bundle's rules
(SHA-256 only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import rfc3161_client
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

SHA256_OID: Final = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")


class TimestampError(ValueError):
    """A token that does not verify, or a TSA certificate file we cannot use."""


@dataclass(frozen=True)
class TokenInfo:
    """What a verified token vouches for."""

    gen_time: datetime  # UTC
    serial: int  # the TSA's serial number of the token
    policy: str  # dotted OID of the TSA policy
    tsa: str  # subject of the certificate that signed it (RFC 4514)
    nonce: int | None


def request(data: bytes, nonce: bool = True) -> tuple[bytes, int | None]:
    """A DER TimeStampReq over SHA-256(data), asking for the TSA's certificate; and its nonce."""
    req = (rfc3161_client.TimestampRequestBuilder().data(data)
           .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256).nonce(nonce=nonce)
           .cert_request(cert_request=True).build())
    return req.as_bytes(), req.nonce


@dataclass(frozen=True)
class TsaTrust:
    """Certificates from the caller's PEM file, sorted into what the verifier needs.

    Roots are the self-signed ones: OpenSSL, which checks the chain, accepts
    only a chain ending in a self-signed certificate, so the file must hold the
    root of every TSA it trusts. Certificates with the ``timeStamping`` purpose
    are *pinned*: when the file holds any, a token must be signed by one of
    them, not by another TSA under the same root. With none, any TSA certified
    under a root is accepted.
    """

    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    tsas: list[x509.Certificate]

    @classmethod
    def from_pem(cls, pem: bytes) -> TsaTrust:
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise TimestampError(f"no PEM certificates: {exc}") from None
        roots = [c for c in certs if _self_signed(c)]
        if not roots:
            raise TimestampError("the TSA certificate file has no self-signed (root) "
                                 "certificate: add the root of the TSA's chain")
        tsas = [c for c in certs if _time_stamping(c)]
        return cls(roots, [c for c in certs if c not in roots and c not in tsas], tsas)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _time_stamping(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.TIME_STAMPING in eku


def verify(response: bytes, data: bytes, trust: TsaTrust, nonce: int | None = None) -> TokenInfo:
    """Verify a DER TimeStampResp over SHA-256(data); raises TimestampError.

    The nonce is checked only when given (a bundle keeps the response, not the
    request it answered).
    """
    try:
        resp = rfc3161_client.decode_timestamp_response(_der_certificate_order(response))
    except ValueError as exc:
        raise TimestampError(f"not an RFC 3161 TimeStampResp: {exc}") from None
    if resp.status != rfc3161_client.PKIStatus.GRANTED:
        raise TimestampError(f"the TSA did not grant it (status {resp.status})")
    info = resp.tst_info
    if info.message_imprint.hash_algorithm != SHA256_OID:
        raise TimestampError("the token is not over a SHA-256 hash")
    signers = list(resp.signed_data.signer_infos)
    if len(signers) != 1:
        raise TimestampError(f"the token has {len(signers)} signers, not one")
    sid = signers[0]
    pin = None
    if trust.tsas:
        pin = next((c for c in trust.tsas if (c.issuer, c.serial_number) ==
                    (sid.issuer, sid.serial_number)), None)
        if pin is None:
            raise TimestampError(
                f"not signed by a TSA certificate of the file (signer: serial "
                f"{sid.serial_number:#x} of {sid.issuer.rfc4514_string()})")
    builder = rfc3161_client.VerifierBuilder(
        roots=list(trust.roots), intermediates=list(trust.intermediates),
        tsa_certificate=pin, nonce=nonce)
    try:
        builder.build().verify(resp, hashlib.sha256(data).digest())
    except rfc3161_client.VerificationError as exc:
        raise TimestampError(_reason(str(exc))) from None
    embedded = [x509.load_der_x509_certificate(c) for c in resp.signed_data.certificates]
    signer = pin or next((c for c in embedded if (c.issuer, c.serial_number) ==
                          (sid.issuer, sid.serial_number)), None)
    return TokenInfo(info.gen_time, info.serial_number, info.policy.dotted_string,
                     signer.subject.rfc4514_string() if signer else "?", info.nonce)


def _reason(message: str) -> str:
    if message == "Mismatch between messages":
        return "the token is over other data than this checkpoint"
    if "certificate verify error" in message or "signer certificate not found" in message:
        return f"not signed by a TSA the certificate file trusts ({message})"
    return message


# -- DER order of the CMS certificate set ---------------------------------------------------


def _der_certificate_order(response: bytes) -> bytes:
    """The response with SignedData.certificates in DER (sorted) order; else unchanged.

    RFC 3161 responses are DER, and ``rfc3161-client`` parses strictly, but
    OpenSSL's TSA (``openssl ts -reply`` with ``certs =``) writes that SET OF in
    chain order, which DER sorting may not match: the same valid token would be
    refused or not depending on the certificates' bytes. The certificate set is
    not covered by the signature (RFC 5652 section 5.4), so sorting it changes
    nothing that is verified; every other byte stays as it is. Any structure
    other than expected is returned unchanged for the parser to judge.
    """
    try:
        # TimeStampResp ::= SEQUENCE { status, timeStampToken ContentInfo }
        resp = _children(response, 0, len(response), 0x30)
        token = _children(response, *resp[1][1:], 0x30)
        # ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT SignedData }
        explicit = _children(response, *token[1][1:], 0xA0)
        signed = _children(response, *explicit[0][1:], 0x30)
        # SignedData: version, digestAlgorithms, encapContentInfo, [0] certificates, ...
        if len(signed) < 4 or signed[3][0] != 0xA0:
            return response
        certs = _children(response, *signed[3][1:], 0xA0)
    except (IndexError, ValueError):
        return response
    if not certs:
        return response
    start, end = certs[0][1], certs[-1][2]
    items = [response[s:e] for _, s, e in certs]
    return response[:start] + b"".join(sorted(items)) + response[end:]


def _children(buf: bytes, start: int, end: int, tag: int) -> Sequence[tuple[int, int, int]]:
    """The elements inside buf[start:end], which must be one element with ``tag``."""
    (found, content, stop), = _tlvs(buf, start, end, contents=True)
    if found != tag:
        raise ValueError("unexpected structure")
    return _tlvs(buf, content, stop)


def _tlvs(buf: bytes, start: int, end: int,
          contents: bool = False) -> Sequence[tuple[int, int, int]]:
    """DER elements in buf[start:end] as (tag, start, end), or (tag, content start, end)."""
    out = []
    pos = start
    while pos < end:
        tag, first = buf[pos], buf[pos + 1]
        if tag & 0x1F == 0x1F:
            raise ValueError("high tag numbers are not expected here")
        if first < 0x80:
            length, head = first, 2
        elif 0x81 <= first <= 0x84:
            n = first - 0x80
            length, head = int.from_bytes(buf[pos + 2:pos + 2 + n], "big"), 2 + n
        else:
            raise ValueError("indefinite or oversized length")
        stop = pos + head + length
        if stop > end:
            raise ValueError("element runs past its container")
        out.append((tag, pos + head if contents else pos, stop))
        pos = stop
    return out
