"""The optional TLS listener: a front process that relays HTTP to the ledger's unix socket.

granian serves one address per server, and the ledger has one writer, so TCP
is served by a second process. That is also the safer shape: the process
that faces the network holds no ledger, no signing key and no tenant keys;
it only passes requests (Authorization included) to the socket and answers
what the service answered.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import os
import queue
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .ingest import JSON_TYPE, MAX_BATCH_BODY

if TYPE_CHECKING:
    from granian._granian import RSGIHTTPProtocol as Protocol
    from granian.rsgi import Scope

_FORWARDED = {"authorization", "content-type", "content-length"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "date", "server"}


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT`` (loopback) or ``HOST:PORT`` / ``[V6]:PORT``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: the port must be 1..65535")
    ipaddress.ip_address(host)  # an address, not a name: no resolution inside the enclave
    return host, int(port)


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Front:
    """RSGI app: relay each request to the unix socket over a small connection pool."""

    def __init__(self) -> None:
        self.sock = os.environ.get("VANTIO_SOCKET", "/run/vantio/ingest.sock")
        self._pool: queue.SimpleQueue[_Unix] = queue.SimpleQueue()

    def _relay(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = _Unix(self.sock)
        try:
            conn.request(method, path, body or None, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return 503, [("retry-after", "5")], b'{"error":"the ledger service is not answering"}'
        self._pool.put(conn)
        out = [(k.lower(), v) for k, v in resp.getheaders()
               if k.lower() not in _HOP]
        return resp.status, out, data

    async def __rsgi__(self, scope: Scope, proto: Protocol) -> None:
        if scope.proto != "http":
            return
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > MAX_BATCH_BODY:  # the service refuses it anyway: do not buffer it
                proto.response_bytes(413, [JSON_TYPE], b'{"error":"body too large"}')
                return
            chunks.append(chunk)
        headers = {k: v for k, v in scope.headers.items() if k in _FORWARDED}
        path = scope.path + (f"?{scope.query_string}" if scope.query_string else "")
        status, out, data = await asyncio.get_running_loop().run_in_executor(
            None, self._relay, scope.method, path, headers, b"".join(chunks))
        if not any(k == "content-type" for k, _ in out):
            out = [JSON_TYPE, *out]
        proto.response_bytes(status, out, data)


def spawn(listen: str, cert: Path, key: Path, sock: Path,
          log_level: str) -> subprocess.Popen[bytes]:
    """Start the front as a child process (granian with TLS on ``listen``)."""
    host, port = parse_listen(listen)
    return subprocess.Popen(
        [sys.executable, "-m", "vantio_appliance.front", host, str(port), str(cert), str(key),
         log_level], env={**os.environ, "VANTIO_SOCKET": str(sock)})


def main(argv: list[str]) -> None:
    """``python -m vantio_appliance.front HOST PORT CERT KEY LOG_LEVEL`` (what spawn runs)."""
    from granian import Granian
    from granian.constants import Interfaces

    host, port, cert, key, level = argv
    Granian("vantio_appliance.front:app", interface=Interfaces.RSGI, address=host,
            port=int(port), ssl_cert=Path(cert), ssl_key=Path(key), workers=1,
            log_level=level).serve()  # type: ignore[arg-type]


app = Front()


if __name__ == "__main__":
    main(sys.argv[1:])
