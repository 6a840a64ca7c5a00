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
from typing import Any

from .ingest import MAX_BATCH_BODY, Receive, Scope, Send

_FORWARDED = {b"authorization", b"content-type", b"content-length"}
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
    """ASGI app: relay each request to the unix socket over a small connection pool."""

    def __init__(self) -> None:
        self.sock = os.environ.get("VANTIO_SOCKET", "/run/vantio/ingest.sock")
        self._pool: queue.SimpleQueue[_Unix] = queue.SimpleQueue()

    def _relay(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
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
            return 503, [(b"retry-after", b"5")], b'{"error":"the ledger service is not answering"}'
        self._pool.put(conn)
        out = [(k.lower().encode(), v.encode()) for k, v in resp.getheaders()
               if k.lower() not in _HOP]
        return resp.status, out, data

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks, size = [], 0
        while True:
            msg: dict[str, Any] = await receive()
            size += len(msg.get("body", b""))
            if size > MAX_BATCH_BODY:  # the service refuses it anyway: do not buffer it
                await _answer(send, 413, [], b'{"error":"body too large"}')
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARDED}
        path = scope["path"] + (f"?{scope['query_string'].decode()}"
                                if scope.get("query_string") else "")
        status, out, data = await asyncio.get_running_loop().run_in_executor(
            None, self._relay, scope["method"], path, headers, b"".join(chunks))
        await _answer(send, status, out, data)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  body: bytes) -> None:
    if not any(k == b"content-type" for k, _ in headers):
        headers = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
    Granian("vantio_appliance.front:app", interface=Interfaces.ASGI, address=host,
            port=int(port), ssl_cert=Path(cert), ssl_key=Path(key), workers=1,
            log_level=level).serve()  # type: ignore[arg-type]


app = Front()


if __name__ == "__main__":
    main(sys.argv[1:])
