"""The ingest job through SQLite, for scale: a minimal ingest server for bench/ingest.py.

Served the way `vantio serve` serves the ledger (the service's own HTTP/1.1
server, vantio_appliance._internal.http1, on a uvloop loop in one process, a
unix socket of mode 0660), it does the same job as vantio_appliance.ingest
with SQLite as the store:

- the same Bearer key lookup (vantio_appliance.ingest.TenantKeys over the
  bench ledger's tenant store) and the same validation (parse_event /
  parse_batch: the msgspec whitelist Structs, duplicate keys);
- the same record bytes: records.Event encoded canonically with a trace id,
  the group's time and the HMAC receipt, and the RFC 6962 leaf hash of each
  line, chained (sha256(previous || leaf)) into a column;
- group commit as in vantio_appliance.commit: one writer thread, one
  transaction per group (journal_mode=WAL, synchronous=FULL, so COMMIT
  returns after fsync), callers waiting on a concurrent Future wrapped for
  asyncio; 201 only after COMMIT returned.

What it leaves out: the Merkle tree, signed checkpoints, segments and inode
flags, the hot index, metrics, batch helpers. Settings come from the
environment: SQLITE_INGEST_DB (the database file) and SQLITE_INGEST_LEDGER
(the ledger directory whose tenant keys are accepted).

``null`` is the ceiling of the stack: the same authentication and
validation, a 201 of the same shape at once, nothing stored.

    python bench/sqlite_ingest_app.py --socket PATH {app,null}

serves until SIGTERM or SIGINT (then, as `vantio serve`: stop accepting, let
the requests in the app be answered, close the database), and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Final

import msgspec
import uvloop
from msgspec import UNSET

# Serve the checkout this script belongs to, also when it is not installed.
REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vantio_appliance import keys  # noqa: E402
from vantio_appliance._internal import http1, osutil  # noqa: E402
from vantio_appliance._internal.http1 import Request, Scope  # noqa: E402
from vantio_appliance.canonical import encode_lines  # noqa: E402
from vantio_appliance.ingest import (  # noqa: E402
    JSON_TYPE,
    MAX_BATCH_BODY,
    MAX_BODY,
    ApiEvent,
    HTTPError,
    Response,
    TenantKeys,
    accepted,
    batch_body,
    parse_batch,
    parse_event,
    read_body,
)
from vantio_appliance.layout import Layout  # noqa: E402
from vantio_appliance.records import Event, Time, new_trace_ids  # noqa: E402
from vantio_appliance.serve import DRAIN_TIMEOUT_S  # noqa: E402
from vantio_appliance.writer import Ack  # noqa: E402

MAX_GROUP: Final = 1024  # records per transaction, as GroupCommitter's max_batch
MAX_PENDING: Final = 65536
_ENCODE: Final = msgspec.json.Encoder().encode


Entry = tuple[str, Sequence[ApiEvent], "Future[list[Ack]]"]


class SqliteCommitter:
    """One writer thread, one transaction per group of waiting requests."""

    def __init__(self, path: Path, tenants: keys.TenantStore) -> None:
        self.path = path
        self.tenants = tenants
        self._macs: dict[str, hmac.HMAC] = {}
        self._pending: list[Entry] = []
        self._depth = 0
        self._cv = threading.Condition()
        self._closing = False
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="sqlite-commit", daemon=True)
        self._thread.start()
        self._ready.result()  # the database is open (or the error is raised here)

    def submit(self, tenant: str, events: Sequence[ApiEvent]) -> Future[list[Ack]]:
        fut: Future[list[Ack]] = Future()
        with self._cv:
            if self._closing or self._depth + len(events) > MAX_PENDING:
                raise HTTPError(429, "busy", headers=[("retry-after", "1")])
            self._pending.append((tenant, events, fut))
            self._depth += len(events)
            self._cv.notify()
        return fut

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)  # BEGIN/COMMIT issued here
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL mode ({mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, "
                   "record BLOB NOT NULL, leaf BLOB NOT NULL, chain BLOB NOT NULL)")
        return db

    def _take(self) -> list[Entry] | None:
        with self._cv:
            while not self._pending and not self._closing:
                self._cv.wait()
            if not self._pending:
                return None
            n, count = 0, 0
            while n < len(self._pending) and (
                    n == 0 or count + len(self._pending[n][1]) <= MAX_GROUP):
                count += len(self._pending[n][1])
                n += 1
            group, self._pending = self._pending[:n], self._pending[n:]
            self._depth -= count
            return group

    def _mac(self, tenant: str) -> hmac.HMAC:
        mac = self._macs.get(tenant)
        if mac is None:
            key = self.tenants.get(tenant).api_key.encode()
            mac = self._macs[tenant] = hmac.new(key, digestmod=hashlib.sha256)
        return mac

    def _run(self) -> None:
        try:
            db = self._open()
            row = db.execute("SELECT seq, chain FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            seq, chain = (row[0] + 1, row[1]) if row else (0, b"\0" * 32)
        except Exception as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        insert = "INSERT INTO records (seq, record, leaf, chain) VALUES (?, ?, ?, ?)"
        sha = hashlib.sha256
        while (group := self._take()) is not None:
            mono, real = osutil.now()
            err = osutil.clock_error_ns()
            t = Time(mono_ns=mono, real_ns=real, earliest_ns=real - err, latest_ns=real + err)
            count = sum(len(evs) for _, evs, _ in group)
            ids = iter(new_trace_ids(count))
            events: list[Event] = []
            first = seq
            for tenant, evs, _ in group:
                base = self._mac(tenant)
                for f in evs:
                    new_id = next(ids)
                    tid = new_id if f.trace_id is UNSET else f.trace_id
                    mac = base.copy()
                    mac.update(tid.encode())
                    events.append(Event(v=1, seq=seq, trace_id=tid, tenant=tenant, time=t,
                                        action=f.action, receipt=mac.hexdigest(), proc=f.proc,
                                        syscall=f.syscall, target_host=f.target_host,
                                        bytes_severed=f.bytes_severed))
                    seq += 1
            lines = encode_lines(events).split(b"\n")[:-1]
            rows = []
            for e, line in zip(events, lines, strict=True):
                leaf = sha(b"\x00" + line).digest()
                chain = sha(chain + leaf).digest()
                rows.append((e.seq, line, leaf, chain))
            try:
                db.execute("BEGIN")
                db.executemany(insert, rows)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                seq, chain = first, self._last_chain(db)
                for _, _, fut in group:
                    fut.set_exception(HTTPError(503, f"commit failed: {exc}"))
                continue
            acks = [Ack(e.seq, e.trace_id, e.receipt, r[2], t)
                    for e, r in zip(events, rows, strict=True)]
            start = 0
            for _, evs, fut in group:
                fut.set_result(acks[start:start + len(evs)])
                start += len(evs)
        db.close()

    @staticmethod
    def _last_chain(db: sqlite3.Connection) -> bytes:
        row = db.execute("SELECT chain FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return bytes(row[0]) if row else b"\0" * 32



def _null_ack(api_key: str, seq: int, tid: str) -> Ack:
    mono, real = osutil.now()
    return Ack(seq, tid, hmac.digest(api_key.encode(), tid.encode(), "sha256").hex(),
               b"\0" * 32, Time(mono_ns=mono, real_ns=real, earliest_ns=real, latest_ns=real))


class App:
    """The handler: POST /v1/records, POST /v1/records:batch, GET /healthz."""

    def __init__(self, store: bool = True) -> None:
        self.store = store
        self.tenants: TenantKeys | None = None
        self.committer: SqliteCommitter | None = None
        self._null_seq = 0

    def start(self) -> None:
        layout = Layout(Path(os.environ["SQLITE_INGEST_LEDGER"]))
        store = keys.TenantStore(layout.tenants)
        self.tenants = TenantKeys(store)
        if self.store:
            self.committer = SqliteCommitter(Path(os.environ["SQLITE_INGEST_DB"]), store)

    def stop(self) -> None:
        """Commit what was accepted and close the database."""
        if self.committer is not None:
            self.committer.close()
            self.committer = None

    async def handle(self, scope: Scope, proto: Request) -> None:
        """Answer one request (``http1.Server``'s handler)."""
        try:
            status, body, headers = await self._route(scope, proto)
        except HTTPError as exc:
            status, body, headers = exc.response()
        proto.response_bytes(status, headers, body)

    async def _route(self, scope: Scope, proto: Request) -> Response:
        method, path = scope.method, scope.path
        if path == "/healthz" and method == "GET":
            return 200, b'{"status":"ok"}', [JSON_TYPE]
        if method != "POST" or path not in ("/v1/records", "/v1/records:batch"):
            raise HTTPError(404, "not found")
        tenant = self._auth(scope)
        if path == "/v1/records":
            events = [parse_event(await read_body(scope, proto, MAX_BODY))]
        else:
            events = parse_batch(await read_body(scope, proto, MAX_BATCH_BODY))
        only_events = [ev for ev in events if isinstance(ev, ApiEvent)]
        if len(only_events) != len(events):
            raise HTTPError(422, "this comparison app stores events only", "kind")
        for i, ev in enumerate(only_events):
            if ev.tenant is not UNSET and ev.tenant != tenant.name:
                raise HTTPError(403, "records for another tenant", f"records[{i}].tenant")
        acks = await self._commit(tenant, only_events)
        if path == "/v1/records":
            return 201, _ENCODE(accepted(acks[0])), [JSON_TYPE,
                                                     ("x-vantio-signature", acks[0].receipt)]
        signature = hmac.digest(tenant.api_key.encode(),
                                "\n".join(a.trace_id for a in acks).encode(), "sha256").hex()
        return 201, batch_body(acks), [JSON_TYPE, ("x-vantio-signature", signature)]

    async def _commit(self, tenant: keys.Tenant, events: list[ApiEvent]) -> list[Ack]:
        if self.committer is None:  # null: acknowledge at once, store nothing
            acks = []
            for ev, tid in zip(events, new_trace_ids(len(events)), strict=True):
                self._null_seq += 1
                acks.append(_null_ack(tenant.api_key, self._null_seq,
                                      tid if ev.trace_id is UNSET else ev.trace_id))
            return acks
        return await asyncio.wrap_future(self.committer.submit(tenant.name, events))

    def _auth(self, scope: Scope) -> keys.Tenant:
        value: str = scope.headers.get("authorization", "")
        token = value[7:].strip().encode() if value[:7].lower() == "bearer " else b""
        assert self.tenants is not None
        tenant = self.tenants.lookup(token) if token else None
        if tenant is None:
            raise HTTPError(401, "missing or unknown API key")
        if tenant.role != "writer":
            raise HTTPError(403, f"a {tenant.role} key cannot do this")
        return tenant


async def serve(app: App, sock: Path) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT, as vantio_appliance.serve._serve does."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        app.start()
        server = http1.Server(app.handle, max_body=MAX_BATCH_BODY)
        await server.listen_unix(sock, 0o660)
        await stop.wait()
        await server.close(timeout=DRAIN_TIMEOUT_S)
    finally:
        app.stop()  # commits everything accepted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", type=Path, required=True, metavar="PATH",
                    help="the unix socket to listen on (made here, removed on exit)")
    ap.add_argument("app", choices=("app", "null"),
                    help="app: store in SQLite; null: acknowledge at once, store nothing")
    args = ap.parse_args()
    try:
        uvloop.run(serve(App(store=args.app == "app"), args.socket))
    finally:
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
