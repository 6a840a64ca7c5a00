"""HTTP/1.1 on the event loop's own thread: llhttp (httptools) parses, the app answers.

Why not granian, which served the socket until 2026-12: its HTTP runs on Rust
threads and hands each request to the Python loop thread and back, and those
hand-offs (wake-ups, the interpreter's lock) cost more CPU per single request
than the app itself (bench/ingest.py, docs/ingest.md). Here a request is parsed,
answered and written in one pass of one thread, and many connections' requests
share each epoll wake-up. The parser is llhttp (Node.js's), through httptools
(MagicStack, the parser of uvicorn and sanic): the bytes on the wire are judged
by a well-kept parser, not by this module.

The app sees a small subset of RSGI (what ``ingest.App`` used of granian):
``scope.method``, ``scope.path``, ``scope.headers``; ``await request()`` for the
body, ``async for chunk in request`` for it in pieces, and
``request.response_bytes(status, headers, body)``.

Bounds: headers (count and bytes), a body past ``max_body`` is not buffered
(the app refuses it by its length), pipelined requests wait their turn (at most
``_PIPELINE`` before reading pauses), connections (``max_connections``) and
idle time (``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Final, cast
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

MAX_HEADERS: Final = 64
MAX_HEADER_BYTES: Final = 16 * 1024
_PIPELINE: Final = 16  # requests read ahead on one connection before reading pauses
_REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}


class Scope:
    """What the app reads of a request besides its body (header names in lower case)."""

    __slots__ = ("headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method, self.path, self.headers = method, path, headers


Handler = Callable[[Scope, "Request"], Awaitable[None]]


class Request:
    """One request's body, as it arrives, and the way to answer it."""

    __slots__ = ("_chunks", "_conn", "_continue", "_size", "_waiter", "complete", "keep_alive",
                 "responded", "scope")

    def __init__(self, conn: _Connection, scope: Scope, keep_alive: bool) -> None:
        self._conn, self.scope, self.keep_alive = conn, scope, keep_alive
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self.complete = self.responded = False
        # a client that asked to be told before it sends the body hears it when it is read
        self._continue = scope.headers.get("expect", "").lower() == "100-continue"

    async def __call__(self) -> bytes:
        """The whole body (the app has checked its length against its bound)."""
        while not self.complete:
            await self._wait()
        if self._size > self._conn.server.max_body:
            raise RuntimeError("a body past max_body is not kept: read it in chunks")
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks.popleft()
        body = b"".join(chunks)
        chunks.clear()
        return body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        """The body's chunks; past ``max_body`` it ends early (the rest is not kept)."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self.complete or self._size > self._conn.server.max_body:
                return
            await self._wait()

    async def _wait(self) -> None:
        conn = self._conn
        if conn.lost:
            raise ConnectionResetError("the client closed the connection")
        if self._continue:
            self._continue = False
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._waiter = conn.loop.create_future()
        conn.resume_body()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def feed(self, chunk: bytes) -> None:
        if self._size <= self._conn.server.max_body:  # past it: counted, not kept
            self._chunks.append(chunk)
        self._size += len(chunk)
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send the answer; the connection is kept only if the whole request was read."""
        if self.responded:
            raise RuntimeError("this request was answered already")
        self.responded = True
        conn = self._conn
        keep = self.keep_alive and self.complete and not (conn.broken or conn.server.closing)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers]
        head.append(b"content-length: %d\r\n%s\r\n" % (
            len(body), b"" if keep else b"connection: close\r\n"))
        conn.answered(self, b"".join(head) + body, keep)


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue (pipelining), hand requests to the app in order."""

    def __init__(self, server: Server) -> None:
        self.server, self.loop = server, server.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._receiving: Request | None = None  # whose body the parser is reading
        self._queue: deque[Request] = deque()  # read, waiting for the one before to be answered
        self._active: Request | None = None  # with the app
        self._paused: set[str] = set()  # why reading is paused: pipeline, write, body, broken
        self.lost = self.broken = False
        self.last_data = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's: not a subclass
        if len(self.server.connections) >= self.server.max_connections:
            self._transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        for request in (self._active, self._receiving, *self._queue):
            if request is not None:
                request._wake()  # a body reader raises ConnectionResetError
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered as HTTP/1.1; what follows is not
            self._refuse(400, "protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback below raised
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.reason)
            else:
                self._refuse(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._pause("write")

    def resume_writing(self) -> None:
        self._resume("write")

    # -- llhttp callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._header_bytes = b"", {}, 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if len(self._headers) >= MAX_HEADERS:
            raise _Refused(431, "too many request headers")
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        raw, _, _ = self._url.partition(b"?")
        path = raw.decode("latin-1")
        if "%" in path:
            try:
                path = unquote(raw.decode("ascii"), errors="strict")
            except UnicodeDecodeError:
                raise _Refused(400, "the path is not UTF-8") from None
        scope = Scope(self._parser.get_method().decode("latin-1"), path, self._headers)
        request = Request(self, scope, self._parser.should_keep_alive())
        self._receiving = request
        if self._active is None:
            self._start(request)
        else:
            self._queue.append(request)
            if len(self._queue) >= _PIPELINE:
                self._pause("pipeline")

    def on_body(self, body: bytes) -> None:
        request = self._receiving
        assert request is not None
        request.feed(body)
        if request is not self._active or len(request._chunks) > 1:
            self._pause("body")  # until the app reads it (resume_body)

    def on_message_complete(self) -> None:
        request = self._receiving
        assert request is not None
        self._receiving = None
        request.finish()

    # -- requests ----------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Refused(431, "request headers too large")

    def _start(self, request: Request) -> None:
        self._active = request
        self.loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self.server.handler(request.scope, request)
        except ConnectionResetError:
            pass
        except Exception:
            log.exception("%s %s failed", request.scope.method, request.scope.path)
            if not request.responded:
                request.response_bytes(500, [("content-type", "application/json")],
                                       b'{"error":"internal error"}')
        if not request.responded and not self.lost:
            request.response_bytes(500, [], b"")

    def write(self, data: bytes) -> None:
        if not self.lost and self._transport is not None:
            self._transport.write(data)

    def answered(self, request: Request, data: bytes, keep: bool) -> None:
        transport = self._transport
        if self.lost or transport is None:
            return
        transport.write(data)
        self._active = None
        if not keep:
            self._queue.clear()
            transport.close()
            return
        self._resume("body")
        if self._queue:
            self._start(self._queue.popleft())
            if len(self._queue) < _PIPELINE:
                self._resume("pipeline")

    def resume_body(self) -> None:
        self._resume("body")

    def _pause(self, why: str) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        if why in self._paused:
            self._paused.discard(why)
            if not self._paused and self._transport is not None and not self.lost:
                self._transport.resume_reading()

    def _refuse(self, status: int, reason: str) -> None:
        """A request the parser cannot frame: answer if nothing else is, then close."""
        transport = self._transport
        if transport is None or self.lost:
            return
        self._queue.clear()
        if self._active is not None:  # its answer goes first, then the connection closes
            self.broken = True
            self._pause("broken")
            return
        body = json.dumps({"error": reason}).encode()
        transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                        % (status, _REASONS[status], len(body), body))
        transport.close()

    def idle_for(self, now: float) -> float:
        """Seconds without data and with no request in the app (0 while one is)."""
        return 0.0 if self._active is not None else now - self.last_data

    def close_when_idle(self) -> None:
        if self._active is None and self._transport is not None:
            self._transport.close()


class _Refused(Exception):
    """Raised in a parser callback: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Server:
    """The HTTP/1.1 server of one handler, on a unix socket or on TCP with TLS."""

    def __init__(self, handler: Handler, *, max_body: int, max_connections: int = 1024,
                 idle_timeout: float = 60.0) -> None:
        self.handler, self.max_body = handler, max_body
        self.max_connections, self.idle_timeout = max_connections, idle_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.closing = False
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def listen_unix(self, path: Path, mode: int, backlog: int = 1024) -> None:
        """Bind ``path`` with ``mode`` from the start (no window with the umask's mode)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, mode)
        sock.listen(backlog)
        self._servers.append(await self.loop.create_unix_server(
            lambda: _Connection(self), sock=sock, backlog=backlog))
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext,
                         backlog: int = 1024) -> None:
        """TCP on ``host:port``, TLS only (the handshake precedes any HTTP)."""
        self._servers.append(await self.loop.create_server(
            lambda: _Connection(self), host, port, ssl=context, backlog=backlog))
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.idle_timeout / 4)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.idle_for(now) > self.idle_timeout:
                    conn.close_when_idle()

    async def close(self, timeout: float) -> None:
        """Stop accepting, let the requests in the app finish (up to ``timeout``), close."""
        self.closing = True
        for srv in self._servers:
            srv.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            for conn in list(self.connections):
                conn.close_when_idle()
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.abort()
