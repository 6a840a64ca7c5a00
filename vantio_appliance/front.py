"""The optional TLS listener: a front process that relays HTTP to the ledger's unix socket.

TCP is served by a second process, the same HTTP server as the service's
(``_internal/http1.py``) with the standard library's TLS. That is the safer
shape: the process that faces the network holds no ledger, no signing key and
no tenant keys; it only passes requests (Authorization included) to the socket
and answers what the service answered.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import logging
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .ingest import JSON_TYPE, MAX_BATCH_BODY

if TYPE_CHECKING:  # the server's modules load in the front process only (see main)
    from ._internal import http1

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
    """The handler: relay each request to the unix socket over a small connection pool."""

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

    async def handle(self, scope: http1.Scope, proto: http1.Request) -> None:
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > MAX_BATCH_BODY:  # the service refuses it anyway: do not buffer it
                proto.response_bytes(413, [JSON_TYPE], b'{"error":"body too large"}')
                return
            chunks.append(chunk)
        headers = {k: v for k, v in scope.headers.items() if k in _FORWARDED}
        status, out, data = await asyncio.get_running_loop().run_in_executor(
            None, self._relay, scope.method, scope.path, headers, b"".join(chunks))
        if not any(k == "content-type" for k, _ in out):
            out = [JSON_TYPE, *out]
        proto.response_bytes(status, out, data)


def spawn(listen: str, cert: Path, key: Path, sock: Path,
          log_level: str) -> subprocess.Popen[bytes]:
    """Start the front as a child process (TLS on ``listen``)."""
    host, port = parse_listen(listen)
    return subprocess.Popen(
        [sys.executable, "-m", "vantio_appliance.front", host, str(port), str(cert), str(key),
         log_level], env={**os.environ, "VANTIO_SOCKET": str(sock)})


def main(argv: list[str]) -> None:
    """``python -m vantio_appliance.front HOST PORT CERT KEY LOG_LEVEL`` (what spawn runs)."""
    import uvloop

    host, port, cert, key, level = argv
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    uvloop.run(_serve(host, int(port), context))


async def _serve(host: str, port: int, context: ssl.SSLContext) -> None:
    from ._internal import http1

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = http1.Server(Front().handle, max_body=MAX_BATCH_BODY)
    await server.listen_tls(host, port, context)
    await stop.wait()
    await server.close(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1:])
