"""A small client of the ingest API over its unix socket.

The enforcer and `vantio ingest` use it. It checks every receipt it gets
back against the tenant's key, so a client learns at once if the service it
talked to is not the one holding its key.
"""

from __future__ import annotations

import hmac
import http.client
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC

from .layout import DEFAULT_SOCKET


class ApiError(RuntimeError):
    """The service refused a request; ``status`` and ``field`` say why."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(f"{status}: {field + ': ' if field else ''}{error}")
        self.status, self.error, self.field, self.retry_after = status, error, field, retry_after


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


@dataclass(frozen=True)
class Receipt:
    trace_id: str
    seq: int
    receipt: str
    leaf_hash: str


class _Accepted(msgspec.Struct):
    """What the client reads of an acknowledgement (``time`` is not needed here)."""

    trace_id: str
    seq: int
    leaf_hash: str
    receipt: str = ""


class _BatchAccepted(msgspec.Struct):
    records: list[_Accepted]


_ACCEPTED: Final = msgspec.json.Decoder(_Accepted)
_BATCH_ACCEPTED: Final = msgspec.json.Decoder(_BatchAccepted)


class Client:
    def __init__(self, api_key: str, sock: Path = DEFAULT_SOCKET, timeout: float = 30.0) -> None:
        self.api_key = api_key
        self._conn = _UnixConnection(sock, timeout)
        self._mac = HMAC(api_key.encode(), SHA256())  # keyed once, copied per receipt

    def _request(self, method: str, path: str, body: bytes | None = None
                 ) -> tuple[bytes, http.client.HTTPResponse]:
        headers = {"authorization": f"Bearer {self.api_key}"}
        if body is not None:
            headers["content-type"] = "application/json"
        try:
            self._conn.request(method, path, body, headers)
            resp = self._conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()  # a fresh connection next time
            raise
        if resp.status >= 400:
            try:
                err = msgspec.json.decode(data)
            except msgspec.DecodeError:
                err = {"error": data.decode(errors="replace")}
            retry = resp.getheader("retry-after")
            raise ApiError(resp.status, err.get("error", "?"), err.get("field"),
                           int(retry) if retry and retry.isdigit() else None)
        return data, resp

    def _checked(self, item: _Accepted, rcpt: str) -> Receipt:
        """The receipt (records.receipt: HMAC-SHA256 of the trace id under the key), checked."""
        mac = self._mac.copy()
        mac.update(item.trace_id.encode())
        if not hmac.compare_digest(mac.finalize().hex(), rcpt):
            raise ApiError(0, "receipt does not match this tenant's key", "x-vantio-signature")
        return Receipt(item.trace_id, item.seq, rcpt, item.leaf_hash)

    def submit(self, record: dict[str, Any]) -> Receipt:
        data, resp = self._request("POST", "/v1/records", msgspec.json.encode(record))
        return self._checked(_ACCEPTED.decode(data), resp.getheader("x-vantio-signature", ""))

    def submit_batch(self, records: list[dict[str, Any]] | list[bytes]) -> list[Receipt]:
        """Submit records (dicts, or JSON-encoded bytes) committed together, all or none."""
        body = (b'{"records":[' + b",".join(r if isinstance(r, bytes)
                                            else msgspec.json.encode(r) for r in records) + b"]}")
        data, _ = self._request("POST", "/v1/records:batch", body)
        return [self._checked(item, item.receipt) for item in _BATCH_ACCEPTED.decode(data).records]

    def record(self, trace_id: str) -> dict[str, Any]:
        """A record and its .tlog-proof (reader keys)."""
        data, _ = self._request("GET", f"/v1/records/{trace_id}")
        out: dict[str, Any] = msgspec.json.decode(data)
        return out

    def checkpoint(self) -> bytes:
        return self._request("GET", "/v1/checkpoint")[0]

    def close(self) -> None:
        self._conn.close()
