"""Helpers for the ingest service tests: a real `vantio serve` on a real unix socket.

The server runs as `python -m vantio_appliance.cli serve` in its own process
group; it is spoken to in plain HTTP/1.1 over the socket (http.client, or raw
bytes for what http.client will not send). Everything that checks the service's
answers is written here from FORMATS.md, not taken from the product: the
receipts (HMAC-SHA256), leaf hashes, the RFC 6962 root and the Ed25519 signed
note of a checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from ledger_helpers import ORIGIN, WORM_FLAGS, cli, cli_env, raw_flags, set_raw_flags

from vantio_appliance import writer

UUID4: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 15.0


# -- HTTP over the unix socket ---------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX: the request line and headers are ordinary HTTP/1.1."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in the order received
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"{self.status} {self.headers} {self.body[:500]!r}"


def _reply(resp: http.client.HTTPResponse) -> Reply:
    body = resp.read()
    return Reply(resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body)


def request(sock: Path, method: str, path: str, body: bytes | None = None,
            headers: Mapping[str, str] | None = None, *, timeout: float = 10.0) -> Reply:
    """One request on a fresh connection, its bytes written at once (see send_raw)."""
    return send_raw(sock, raw_request(method, path, headers or {}, body), timeout=timeout)


def auth(key: str, content_type: str | None = "application/json") -> dict[str, str]:
    headers = {"authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


class _Bytes:
    """Enough of a socket for http.client.HTTPResponse to parse bytes already read."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


def send_raw(sock: Path, data: bytes, *, timeout: float = 10.0) -> Reply:
    """Send ``data`` as it is (say, a chunked body) and parse the one response.

    The server may answer and close before it has read the whole request (413,
    and also 401/403/415, which it sends without reading a body): an error while
    sending is tolerated, and whatever arrived is parsed.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    received = bytearray()
    try:
        s.connect(str(sock))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 16):
                received += chunk
    finally:
        s.close()
    resp = http.client.HTTPResponse(_Bytes(bytes(received)))  # type: ignore[arg-type]
    resp.begin()
    return _reply(resp)


def raw_request(method: str, path: str, headers: Mapping[str, str],
                body: bytes | None = None) -> bytes:
    """The bytes of a request with a truthful Content-Length (and connection: close)."""
    head = f"{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body is not None:
        head += f"content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def chunked_request(path: str, headers: Mapping[str, str], body: bytes,
                    chunk: int = 8192) -> bytes:
    """The bytes of a request whose body is sent chunked (no Content-Length at all)."""
    head = f"POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "transfer-encoding: chunked\r\n\r\n"
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk])
             for i in range(0, len(body), chunk)]
    return head.encode() + b"".join(parts) + b"0\r\n\r\n"


# -- what the tests recompute on their own ----------------------------------------------


def hmac_hex(key: str, message: str) -> str:
    """HMAC-SHA256, key = the API key's bytes, hex: the receipt of FORMATS.md section 1."""
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def leaf_hash(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def canonical(value: Any) -> bytes:
    """RFC 8785 for the ledger's subset (ASCII keys, integers only)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def open_checkpoint(signed: bytes, vkey_text: str) -> Checkpoint:
    """Check a C2SP signed note against a verifier key (FORMATS.md section 3) and parse it."""
    name, key_id_hex, key_b64 = vkey_text.strip().split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    assert key[0] == 1 and len(key) == 33, "not an Ed25519 verifier key"
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    assert key_id.hex() == key_id_hex
    text, sep, sigs = signed.partition(b"\n\n")
    assert sep and sigs.endswith(b"\n"), signed
    text += b"\n"
    good = False
    for line in sigs.decode().splitlines():
        dash, sig_name, sig_b64 = line.split(" ")
        assert dash == "\u2014", line
        sig = base64.b64decode(sig_b64, validate=True)
        if sig_name != name or sig[:4] != key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key[1:]).verify(sig[4:], text)
        except InvalidSignature:
            raise AssertionError(f"bad checkpoint signature:\n{signed.decode()}") from None
        good = True
    assert good, f"no signature by {name}:\n{signed.decode()}"
    origin, size, root = text.decode().split("\n")[:3]
    return Checkpoint(origin, int(size), base64.b64decode(root, validate=True))


# -- the ledger on disk, read by the test ----------------------------------------------


def segment_paths(root: Path) -> list[Path]:
    seg = root / "segments"
    return sorted(p for p in seg.iterdir() if re.fullmatch(r"[0-9]{16}\.worm", p.name))


def segments_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in segment_paths(root))


def ledger_lines(root: Path) -> dict[int, bytes]:
    """seq -> record line (without newline), for every whole record line on disk.

    Torn bytes (FORMATS.md section 2), and anything else that is not a JSON
    record, are skipped (the verifier judges them; these tests look for records).
    """
    out: dict[int, bytes] = {}
    for path in segment_paths(root):
        for raw in path.read_bytes().split(b"\n")[:-1]:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("seq"), int):
                assert rec["seq"] not in out, f"{path.name}: seq {rec['seq']} twice"
                out[rec["seq"]] = raw
    return out


def all_files_bytes(root: Path) -> bytes:
    """Every regular file's bytes under ``root``, read while the service may run: a file
    that vanishes between the listing and the read (the checkpoint's temporary file,
    renamed over the checkpoint) is skipped; its bytes are in the file it became."""
    out = bytearray()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            try:
                if not path.is_symlink() and stat.S_ISREG(path.lstat().st_mode):
                    out += path.read_bytes()
            except FileNotFoundError:
                continue
    return bytes(out)


def clear_flags(root: Path) -> None:
    """Drop +a/+i (one ioctl) on every file under ``root``, so it can be removed."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            with contextlib.suppress(OSError):
                flags = raw_flags(path)
                if flags & WORM_FLAGS:
                    set_raw_flags(path, flags & ~WORM_FLAGS)


def add_tenant(root: Path, name: str, role: str = "writer") -> str:
    """`vantio ledger tenant add`: the key it prints is the one the test uses."""
    res = cli("ledger", "tenant", "add", name, "--role", role, "--dir", root)
    assert res.returncode == 0, res.stderr
    key = res.stdout.strip()
    assert key and "\n" not in key, res.stdout
    return key


def marker() -> str:
    """A value that occurs nowhere unless a test put it there."""
    return f"mk{uuid.uuid4().hex}"


# -- the server process ----------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class Server:
    """`vantio serve --dir ROOT --socket SOCK` in its own session and process group."""

    def __init__(self, root: Path, sock: Path, log: Path,
                 env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.root, self.sock, self.log = root, sock, log
        self.args = args
        self.env = {**cli_env(), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped_in: float | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve."""
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vantio_appliance.cli", "serve", "--dir", str(self.root),
                 "--socket", str(self.sock), "--log-level", "warning", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                start_new_session=True)
        return self.proc

    def start(self) -> Server:
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.logs()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request(self.sock, "GET", "/healthz", timeout=2).status == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"/healthz did not answer in {START_TIMEOUT_S} s:\n"
                                     f"{self.logs()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def members(self) -> list[int]:
        return _group_members(self.pid)  # the session leader's pid is the group id

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the main process only (as systemd's KillMode=mixed does); its exit
        code, or None if it did not exit in time (then the whole group is killed)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
                self.stopped_in = time.monotonic() - started
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the whole process group; waits until none of it is left."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.wait_group_gone()

    def wait_group_gone(self, timeout: float = 10.0) -> list[int]:
        """Wait for the group to empty; kill what is left after ``timeout``; return the pids
        that were still alive when the wait began (empty: nothing was left behind)."""
        left = self.members()
        deadline = time.monotonic() + timeout
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.members():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.members() and time.monotonic() < deadline:
                time.sleep(0.02)
        return left

    def close(self) -> None:
        """Teardown: stop by SIGTERM, SIGKILL the group after a timeout, remove the socket."""
        if self.proc is not None:
            if self.terminate() is None:
                self.kill()
            self.wait_group_gone()
        assert not self.members(), f"processes left behind: {self.members()}"
        self.sock.unlink(missing_ok=True)


@contextlib.contextmanager
def fresh_service(base: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                  ) -> Iterator[tuple[Path, Path, Server, str, str]]:
    """A new ledger in ``base`` with a writer and a reader tenant, served on a socket there
    (``vantio serve`` with ``args`` and ``env`` added): (ledger root, socket, server, writer key,
    reader key); flags cleared afterwards."""
    root = base / "ledger"
    writer.init(root, ORIGIN)
    try:
        key, reader = add_tenant(root, "acme"), add_tenant(root, "auditor", "reader")
        with running(root, base / "ingest.sock", base / "server.log", env, args) as server:
            yield root, base / "ingest.sock", server, key, reader
    finally:
        clear_flags(root)


@contextlib.contextmanager
def running(root: Path, sock: Path, log: Path, env: Mapping[str, str] | None = None,
            args: tuple[str, ...] = ()) -> Iterator[Server]:
    server = Server(root, sock, log, env, args)
    try:
        yield server.start()
    finally:
        server.close()


# -- records and load ------------------------------------------------------------------


def good_record(tag: str, i: int = 0) -> dict[str, Any]:
    """A valid submission carrying ``tag`` (in its cgroup path)."""
    return {
        "action": ("permit", "block", "quarantine")[i % 3],
        "proc": {"pid": 1000 + i, "tgid": 1000 + i, "uid": 0, "gid": 0, "comm": "agent",
                 "cgroup": f"/vantio-agents.slice/{tag}.scope", "cgroup_ancestry": [1, 2, i]},
        "syscall": {"name": "connect", "args": {"family": "inet", "address": "10.0.0.7",
                                                "port": 443, "proto": "tcp"}},
        "target_host": "api.example.com:443",
        "bytes_severed": i,
    }


@dataclass(frozen=True)
class Ack:
    trace_id: str
    seq: int
    leaf_hash: str
    receipt: str


def check_single(reply: Reply, key: str) -> Ack:
    """A 201 for one record: its body and its x-vantio-signature, recomputed."""
    assert reply.status == 201, str(reply)
    body = reply.json()
    assert set(body) == {"trace_id", "seq", "leaf_hash", "time"}, body
    assert UUID4.fullmatch(body["trace_id"]), body
    sig = reply.all("x-vantio-signature")
    assert sig == [hmac_hex(key, body["trace_id"])], (sig, body)
    return Ack(body["trace_id"], body["seq"], body["leaf_hash"], sig[0])


def check_batch(reply: Reply, key: str, n: int) -> list[Ack]:
    """A 201 for a batch: per-record receipts, and the header over the joined trace ids."""
    assert reply.status == 201, str(reply)
    items = reply.json()["records"]
    assert len(items) == n, items
    acks = []
    for item in items:
        assert set(item) == {"trace_id", "seq", "leaf_hash", "time", "receipt"}, item
        assert UUID4.fullmatch(item["trace_id"]), item
        assert item["receipt"] == hmac_hex(key, item["trace_id"]), item
        acks.append(Ack(item["trace_id"], item["seq"], item["leaf_hash"], item["receipt"]))
    assert [a.seq for a in acks] == list(range(acks[0].seq, acks[0].seq + n)), acks
    sig = reply.all("x-vantio-signature")
    assert sig == [hmac_hex(key, "\n".join(a.trace_id for a in acks))], sig
    return acks


def assert_in_ledger(root: Path, acks: list[Ack]) -> dict[int, bytes]:
    """Every acknowledged record is on disk at its seq, with its leaf hash and receipt."""
    lines = ledger_lines(root)
    for ack in acks:
        line = lines.get(ack.seq)
        assert line is not None, f"acknowledged seq {ack.seq} ({ack.trace_id}) is not on disk"
        rec = json.loads(line)
        assert rec["trace_id"] == ack.trace_id, (ack, line)
        assert rec["receipt"] == ack.receipt, (ack, line)
        assert leaf_hash(line).hex() == ack.leaf_hash, (ack, line)
    return lines


@dataclass
class Load:
    """Client threads sending single records and batches until told to stop.

    Each thread keeps its connection and opens a new one after any transport
    error (the server may be gone). Every 201 is checked against the key before it
    counts as acknowledged.
    """

    sock: Path
    key: str
    threads: int = 6
    batch_every: int = 3  # every n-th request of a thread is a batch
    batch_size: int = 20
    acks: list[Ack] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: Counter[str | None] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # 5xx bodies, receipt mismatches
    transport_errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, t: int) -> None:
        conn: UnixHTTPConnection | None = None
        n = 0
        headers = auth(self.key)
        while not self.stop.is_set():
            n += 1
            batch = self.batch_every > 0 and n % self.batch_every == 0
            size = 1 + (n * 7 + t) % self.batch_size if batch else 1
            records = [good_record(f"load-{t}-{n}-{j}", n + j) for j in range(size)]
            path = "/v1/records:batch" if batch else "/v1/records"
            body = json.dumps({"records": records} if batch else records[0]).encode()
            try:
                if conn is None:
                    conn = UnixHTTPConnection(self.sock, timeout=30)
                conn.request("POST", path, body, headers)
                reply = _reply(conn.getresponse())
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.transport_errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.005)
                continue
            try:
                acks = (check_batch(reply, self.key, size) if batch
                        else [check_single(reply, self.key)]) if reply.status == 201 else []
            except AssertionError as exc:
                with self._lock:
                    self.bad.append(f"receipt: {exc}")
                continue
            with self._lock:
                self.statuses[reply.status] += 1
                self.acks += acks
                if reply.status >= 500:
                    self.bad.append(str(reply))
                if reply.status in (429, 503):
                    self.retry_after[reply.header("retry-after")] += 1
        if conn is not None:
            conn.close()

    def acked(self) -> int:
        with self._lock:
            return len(self.acks)

    def wait_for(self, acks: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked() < acks and time.monotonic() < deadline:
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a client thread hangs"
