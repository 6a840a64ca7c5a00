"""The service's HTTP/1.1 server (vantio_appliance/_internal/http1.py) on a real unix socket.

A server runs on a uvloop loop in a thread; the tests speak raw HTTP to it over
the socket, so that framing, pipelining and the bounds are what a client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from vantio_appliance._internal import http1

MAX_BODY = 1000


async def _handler(scope: http1.Scope, request: http1.Request) -> None:
    """Echo what the app sees; /fail raises; /early answers before reading the body;
    /count counts a body's chunks."""
    if scope.path == "/fail":
        raise ValueError("the handler failed")
    if scope.path == "/early":
        request.response_bytes(403, [], b"refused")
        return
    if scope.path == "/count":  # as the app reads a chunked body: counting, with a bound
        size = 0
        async for chunk in request:
            size += len(chunk)
        request.response_bytes(413 if size > MAX_BODY else 200, [], b"%d" % size)
        return
    if scope.path == "/slow":
        await asyncio.sleep(0.3)
    body = await request()
    answer = {"method": scope.method, "path": scope.path, "body": body.decode(),
              "x": scope.headers.get("x-test")}
    request.response_bytes(200, [("content-type", "application/json")],
                           json.dumps(answer).encode())


class Running:
    """A server on its own loop and thread; ``stop`` closes it as `vantio serve` does."""

    def __init__(self, sock: Path, **options: float) -> None:
        self.sock, self.options = sock, options
        self.loop = uvloop.new_event_loop()
        self.server: http1.Server | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = http1.Server(_handler, max_body=MAX_BODY, **self.options)  # type: ignore[arg-type]
            await self.server.listen_unix(self.sock, 0o600)
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self, timeout: float = 5.0) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.close(timeout), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = Running(tmp_path / "h.sock")
    yield running
    running.stop()


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return s


def read_response(s: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from ``s`` (``buf`` keeps what follows it)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole head: {bytes(buf)!r}")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the whole body")
        rest += chunk
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def closed(s: socket.socket, buf: bytearray) -> bool:
    """True if the server closed the connection (after whatever is in ``buf``)."""
    try:
        return not buf and s.recv(1) == b""
    except ConnectionResetError:
        return True


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def test_keep_alive_serves_requests_one_after_another(server: Running) -> None:
    with connect(server.sock) as s:
        buf = bytearray()
        for n in range(3):
            s.sendall(post("/echo", b"body%d" % n, "X-Test: yes\r\n"))
            status, headers, body = read_response(s, buf)
            assert status == 200 and "connection" not in headers
            assert json.loads(body) == {"method": "POST", "path": "/echo",
                                        "body": f"body{n}", "x": "yes"}


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    with connect(server.sock) as s:
        s.sendall(post("/slow", b"first") + post("/echo", b"second")
                  + b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        bodies = [json.loads(read_response(s, buf)[2])["body"] for _ in range(3)]
        assert bodies == ["first", "second", ""]


def test_a_chunked_body_reaches_the_handler_whole(server: Running) -> None:
    with connect(server.sock) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = read_response(s, bytearray())
        assert status == 200 and json.loads(body)["body"] == "hello world"


def test_a_percent_encoded_path_is_decoded(server: Running) -> None:
    with connect(server.sock) as s:
        s.sendall(b"GET /v1/records%3Abatch?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(read_response(s, bytearray())[2])["path"] == "/v1/records:batch"


@pytest.mark.parametrize(("raw", "status"), [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
    (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(70)) + b"\r\n", 431),
], ids=["garbage", "length-and-chunked", "path-not-utf8", "header-bytes", "header-count"])
def test_a_request_that_cannot_be_framed_gets_an_error_and_the_connection_closes(
        server: Running, raw: bytes, status: int) -> None:
    with connect(server.sock) as s:
        s.sendall(raw)
        buf = bytearray()
        got, headers, body = read_response(s, buf)
        assert got == status, body
        assert headers["connection"] == "close" and "error" in json.loads(body)
        assert closed(s, buf)
    with connect(server.sock) as s:  # the server goes on
        s.sendall(post("/echo", b"ok"))
        assert read_response(s, bytearray())[0] == 200


def test_an_upgrade_is_not_honoured_the_answer_closes_the_connection(server: Running) -> None:
    """What follows an Upgrade request would be another protocol: not served."""
    with connect(server.sock) as s:
        s.sendall(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        buf = bytearray()
        status, headers, _ = read_response(s, buf)
        assert status == 200 and headers["connection"] == "close"
        assert closed(s, buf)


def test_connection_close_and_http_1_0_close_after_the_answer(server: Running) -> None:
    for raw in (post("/echo", b"a", "Connection: close\r\n"),
                b"POST /echo HTTP/1.0\r\nContent-Length: 1\r\n\r\na"):
        with connect(server.sock) as s:
            s.sendall(raw)
            buf = bytearray()
            status, headers, _ = read_response(s, buf)
            assert status == 200 and headers["connection"] == "close"
            assert closed(s, buf)


def test_an_answer_before_the_body_is_read_closes_the_connection(server: Running) -> None:
    """The body left unread would otherwise be parsed as the next request."""
    with connect(server.sock) as s:
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert (status, body, headers["connection"]) == (403, b"refused", "close")
        assert closed(s, buf)


def test_a_failing_handler_gets_500_and_the_server_goes_on(server: Running) -> None:
    with connect(server.sock) as s:
        buf = bytearray()
        s.sendall(post("/fail", b""))
        assert read_response(s, buf)[0] == 500
        s.sendall(post("/echo", b"after"))
        assert json.loads(read_response(s, buf)[2])["body"] == "after"


def test_expect_100_continue_is_answered_when_the_body_is_read(server: Running) -> None:
    with connect(server.sock) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = bytearray()
        assert read_response(s, buf)[0] == 100
        s.sendall(b"data")
        status, _, body = read_response(s, buf)
        assert status == 200 and json.loads(body)["body"] == "data"


@pytest.mark.parametrize("framing", ["Content-Length: 6000", "Transfer-Encoding: chunked"])
def test_a_body_past_max_body_is_not_kept_and_its_reader_stops(server: Running,
                                                               framing: str) -> None:
    """A reader counting the chunks stops past the bound: the client gets its answer
    without sending the rest, and the connection closes (the rest is not parsed)."""
    chunked = framing.startswith("Transfer")
    with connect(server.sock) as s:
        s.sendall(f"POST /count HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed early
            for _ in range(10):  # pieces the server reads one by one
                s.sendall(b"258\r\n" + b"y" * 600 + b"\r\n" if chunked else b"y" * 600)
                time.sleep(0.02)
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert status == 413 and headers["connection"] == "close"
        assert MAX_BODY < int(body) <= MAX_BODY + 600
        assert closed(s, buf)


def test_a_whole_body_past_max_body_is_refused_to_the_handler(server: Running) -> None:
    """``await request()`` never returns a truncated body: the handler fails (500)."""
    with connect(server.sock) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(5):
                s.sendall(b"z" * 600)
                time.sleep(0.02)
        assert read_response(s, bytearray())[0] == 500


def test_the_socket_has_the_mode_asked_for(server: Running) -> None:
    assert stat.S_IMODE(server.sock.stat().st_mode) == 0o600


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    running = Running(tmp_path / "i.sock", idle_timeout=0.4)
    try:
        with connect(running.sock) as s:
            s.sendall(post("/echo", b"a"))
            buf = bytearray()
            assert read_response(s, buf)[0] == 200
            started = time.monotonic()
            assert closed(s, buf)
            assert 0.3 < time.monotonic() - started < 3
    finally:
        running.stop()


def test_connections_past_the_bound_are_closed_at_once(tmp_path: Path) -> None:
    running = Running(tmp_path / "c.sock", max_connections=2)
    try:
        held = [connect(running.sock) for _ in range(2)]
        for s in held:  # both are served
            s.sendall(post("/echo", b"a"))
            assert read_response(s, bytearray())[0] == 200
        with connect(running.sock) as extra:
            assert closed(extra, bytearray())
        for s in held:
            s.close()
    finally:
        running.stop()


def test_close_answers_the_request_in_flight_then_refuses_new_ones(tmp_path: Path) -> None:
    running = Running(tmp_path / "s.sock")
    with connect(running.sock) as s:
        s.sendall(post("/slow", b"in flight"))
        time.sleep(0.1)  # the handler has it
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert status == 200 and json.loads(body)["body"] == "in flight"
        assert headers["connection"] == "close"
        stopper.join(20)
    with pytest.raises(OSError):
        connect(running.sock)
