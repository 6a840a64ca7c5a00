"""The ingest API: the handler of the service's HTTP server, in front of the one ledger writer.

Structural payload quarantine: a record is decoded straight into the
whitelist's Structs, so a prompt, a completion or any unknown field is
refused (422, naming the field) before anything is queued, and a 201 is sent
only after the record's group is fdatasync'd. Large batches are decoded and
prepared in helper processes (``prepare_batch``), so that their Python work
uses the other cores. No framework: the routes are few and the hot path is
measured in microseconds (``_internal/http1.py`` says why the server is our own
loop's).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC
from msgspec import UNSET, Meta, UnsetType

from . import __version__, keys, reader
from . import checkpoint as cpmod
from ._internal.helpers import Helpers, HelpersGone
from .commit import Busy, GroupCommitter
from .index import Index
from .records import EventFields, GapFields, Time, validation_error
from .records import Tenant as TenantName
from .writer import (
    DEFAULT_EPOCH_S,
    DEFAULT_SEGMENT_AGE_S,
    DEFAULT_SEGMENT_BYTES,
    Ack,
    EpochKeyGone,
    Ledger,
    LedgerUnavailable,
    Prepared,
    Submission,
    prepare,
)

if TYPE_CHECKING:  # the server's modules load in the service only
    from ._internal.http1 import Request, Scope


log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024
MAX_BATCH: Final = 1000
MAX_BATCH_BODY: Final = 4 * 2**20
DRAIN_LIMIT: Final = 2 * MAX_BATCH_BODY
#: Smaller batches are parsed on the loop: in bench/ingest_app.py a helper's round trip
#: slowed batches of 100 (56 KB) by a fifth and sped those of 1000 (565 KB) up.
HELPER_MIN_BODY: Final = 128 * 1024
JSON: Final = "application/json"
#: The committer thread, back from fdatasync, must not wait the default 5 ms for the GIL
#: while the event loop parses the next group: that wait, not the disk, set the pace.
SWITCH_INTERVAL_S: Final = 0.0002

Headers = list[tuple[str, str]]
Response = tuple[int, bytes, Headers]
JSON_TYPE: Final = ("content-type", "application/json")


class ApiEvent(EventFields):
    """A submitted event; ``tenant``, when given, must be the key's own tenant."""

    tenant: TenantName | UnsetType = UNSET


class ApiGap(GapFields):
    """A submitted gap (``"kind": "gap"``); ``tenant`` as for an event."""

    tenant: TenantName | UnsetType = UNSET


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch request: 1 to 1000 records, committed together."""

    records: Annotated[list[ApiEvent], Meta(min_length=1, max_length=MAX_BATCH)]


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    """A batch holding a gap: its records are parsed one by one (a gap is rare)."""

    records: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


class _Kind(msgspec.Struct):
    kind: Any = UNSET


def _is_gap(body: bytes) -> bool:
    """Whether a JSON object says ``"kind": "gap"`` (only asked once it failed as an event)."""
    try:
        return bool(_KIND.decode(body).kind == "gap")
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return False


_EVENT: Final = msgspec.json.Decoder(ApiEvent)
_KIND: Final = msgspec.json.Decoder(_Kind)
_GAP: Final = msgspec.json.Decoder(ApiGap)
_BATCH: Final = msgspec.json.Decoder(Batch)
_RAW_BATCH: Final = msgspec.json.Decoder(_RawBatch)
_ENCODE: Final = msgspec.json.Encoder().encode


class HTTPError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None,
                 headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.headers = status, error, field, headers

    def response(self) -> Response:
        """The refusal as sent: ``{"error": ..., "field": ...}`` with its headers."""
        err = {"error": self.error} if self.field is None else {"error": self.error,
                                                                "field": self.field}
        return self.status, _ENCODE(err), [JSON_TYPE, *self.headers]


Pairs = list[tuple[str, Any]]


def _duplicate(value: Any, path: str = "") -> str | None:
    """The dotted path of the first duplicate key in a pairs-preserving parse, if any."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        seen: set[str] = set()
        for key, item in value:
            here = f"{path}.{key}" if path else key
            if key in seen:
                return here
            seen.add(key)
            if (found := _duplicate(item, here)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _duplicate(item, f"{path}[{i}]")) is not None:
                return found
    return None


def _check_duplicates(body: bytes, decoded: msgspec.Struct) -> None:
    """Refuse duplicate keys: JSON parsers, msgspec included, keep the last one silently.

    Runs after the body decoded against the whitelist, whose optional fields
    all default to UNSET: re-encoded, the Structs have exactly one key per
    field the body set, each followed by a colon, and the same string values.
    A duplicate adds a key, its colon and the colons of the value it lost, so
    a body without ``\\u`` escapes (which can spell a colon) has one only if it
    holds more colons than the re-encoding. Otherwise the exact, slower check
    decides.
    """
    if b"\\u" in body or body.count(b":") != _ENCODE(decoded).count(b":"):
        _refuse_duplicates(body)


def _refuse_duplicates(body: bytes) -> None:
    pairs: Pairs = json.loads(body, object_pairs_hook=lambda p: p)
    if (path := _duplicate(pairs)) is not None:
        raise HTTPError(422, "duplicate key", path)


def parse_event(body: bytes) -> ApiEvent | ApiGap:
    """One submitted record: whitelist, types, formats, no duplicate keys.

    An event has no ``kind``; a body that fails as an event and says
    ``"kind": "gap"`` is judged as a gap instead (the event's fast path stays
    as it was).
    """
    fields: ApiEvent | ApiGap
    try:
        fields = _EVENT.decode(body)
    except msgspec.ValidationError as exc:
        if not _is_gap(body):
            err = validation_error(exc)
            raise HTTPError(422, err.reason, err.field) from None
        try:
            fields = _GAP.decode(body)
        except msgspec.ValidationError as gap_exc:
            err = validation_error(gap_exc)
            raise HTTPError(422, err.reason, err.field) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from None
    _check_duplicates(body, fields)
    return fields


def _batch_error(exc: msgspec.ValidationError) -> HTTPError:
    err = validation_error(exc)
    return HTTPError(413 if "Expected `array` of length <=" in err.reason else 422,
                     err.reason, err.field)


def parse_batch(body: bytes) -> list[ApiEvent | ApiGap]:
    """A batch: ``{"records": [...]}``, each record as ``parse_event`` checks it."""
    try:
        batch: Batch = _BATCH.decode(body)
    except msgspec.ValidationError as exc:
        return _parse_mixed_batch(body, _batch_error(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from None
    _check_duplicates(body, batch)
    return list(batch.records)


def _parse_mixed_batch(body: bytes, first: HTTPError) -> list[ApiEvent | ApiGap]:
    """A batch that is not all events: record by record, so a gap is judged as a gap."""
    try:
        raw: _RawBatch = _RAW_BATCH.decode(body)
    except msgspec.ValidationError as exc:
        raise _batch_error(exc) from None
    except (msgspec.DecodeError, RecursionError):
        raise first from None
    if not any(_is_gap(r) for r in raw.records):
        raise first
    _refuse_duplicates(body)
    out: list[ApiEvent | ApiGap] = []
    for i, record in enumerate(raw.records):
        try:
            out.append(parse_event(bytes(record)))
        except HTTPError as exc:
            where = f"records[{i}]" if exc.field is None else f"records[{i}].{exc.field}"
            raise HTTPError(exc.status, exc.error, where) from None
    return out


def submissions(tenant: str, records: Sequence[ApiEvent | ApiGap], batch: bool = False
                ) -> list[Submission]:
    """The records as the tenant's submissions: 403 for one that names another tenant."""
    subs = []
    for i, rec in enumerate(records):
        if rec.tenant is not UNSET and rec.tenant != tenant:
            field = f"records[{i}].tenant" if batch else "tenant"
            raise HTTPError(403, f"records for tenant {rec.tenant!r} need that tenant's key",
                            field)
        subs.append(Submission(tenant, rec))
    return subs


_PREPARED: Final = msgspec.msgpack.Decoder(list[Prepared])
_PREPARED_ENCODE: Final = msgspec.msgpack.Encoder().encode


def prepare_batch(tenant: str, api_key: str, body: bytes) -> bytes | tuple[int, str, str | None]:
    """In a helper process: a batch request's body as msgpack of its Prepared records, or
    the refusal (status, error, field) that ``parse_batch`` or ``submissions`` gives."""
    try:
        subs = submissions(tenant, parse_batch(body), batch=True)
    except HTTPError as exc:
        return exc.status, exc.error, exc.field
    mac = HMAC(api_key.encode(), SHA256())
    return _PREPARED_ENCODE(prepare(subs, lambda _: mac))


@dataclass
class Metrics:
    records: int = 0
    commits: int = 0
    helper_batches: int = 0  # prepared by a helper process
    refusals: Counter[str] = field(default_factory=Counter)  # by HTTP status


class TenantKeys:
    """API keys by their SHA-256 (a lookup by digest leaks nothing useful through timing).

    Reloaded from the key store when an unknown key arrives (at most once a
    second), so that `vantio ledger tenant add` takes effect without a restart.
    """

    def __init__(self, store: keys.TenantStore) -> None:
        self.store = store
        self._by_digest: dict[bytes, keys.Tenant] = {}
        self._loaded_at = -1e9
        self.reload()

    def reload(self) -> None:
        tenants = []
        for name in self.store.names():
            try:
                tenants.append(self.store.get(name))
            except keys.KeyFileError as exc:  # one bad file must not lock everyone out
                log.warning("tenant %s skipped: %s", name, exc)
        self._by_digest = {hashlib.sha256(t.api_key.encode()).digest(): t for t in tenants}
        self._loaded_at = time.monotonic()

    def lookup(self, token: bytes) -> keys.Tenant | None:
        digest = hashlib.sha256(token).digest()
        tenant = self._by_digest.get(digest)
        if tenant is None and time.monotonic() - self._loaded_at > 1.0:
            self.reload()
            tenant = self._by_digest.get(digest)
        return tenant


def default_helpers() -> int:
    """Helper processes for batches: one per core beyond the loop's, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class App:
    """The RSGI application. Settings come from the environment (see ``serve``)."""

    def __init__(self) -> None:
        self.ledger: Ledger | None = None
        self.committer: GroupCommitter | None = None
        self.index: Index | None = None
        self.tenants: TenantKeys | None = None
        self.helpers: Helpers | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics = Metrics()
        self.fsync = [0, 0.0]

    # -- lifespan ------------------------------------------------------------------

    def start(self, root: Path, use_flags: bool, loop: asyncio.AbstractEventLoop) -> None:
        env = os.environ.get
        ledger = Ledger(root, use_flags=use_flags,
                        segment_bytes=int(env("VANTIO_SEGMENT_BYTES") or DEFAULT_SEGMENT_BYTES),
                        segment_age_s=float(env("VANTIO_SEGMENT_AGE") or DEFAULT_SEGMENT_AGE_S),
                        epoch_seconds=float(env("VANTIO_EPOCH_SECONDS") or DEFAULT_EPOCH_S))
        index = Index(ledger.layout)
        index.load()
        ledger.observer = index.observe
        self.ledger, self.index = ledger, index
        self.tenants = TenantKeys(ledger.tenants)
        self.loop = loop
        self.committer = GroupCommitter(ledger, loop, max_pending=int(
            os.environ.get("VANTIO_MAX_PENDING", "65536")), on_commit=self._count)
        helpers = int(env("VANTIO_BATCH_HELPERS") or default_helpers())
        self.helpers = Helpers(helpers, loop) if helpers else None
        gc.collect()
        gc.freeze()  # the index is long-lived: full collections stalled requests 10-18 ms
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        log.info("ledger %s open: %d records", root, index.size)

    def stop(self) -> None:
        if self.committer is not None:
            self.committer.close()  # commits everything already accepted
        if self.helpers is not None:  # a batch still in a helper was not accepted
            self.helpers.close()
        if self.ledger is not None:
            self.ledger.close()

    def _count(self, acks: list[Ack]) -> None:
        self.metrics.records += len(acks)
        self.metrics.commits += 1

    # -- HTTP ----------------------------------------------------------------------

    async def handle(self, scope: Scope, proto: Request) -> None:
        """Answer one request (``http1.Server``'s handler)."""
        try:
            status, body, headers = await self._route(scope, proto)
        except HTTPError as exc:
            self.metrics.refusals[str(exc.status)] += 1
            status, body, headers = exc.response()
            await _drain(proto)  # a refused client still gets to send, then to read why
        proto.response_bytes(status, headers, body)

    async def _route(self, scope: Scope, proto: Request) -> Response:
        method, path = scope.method, scope.path
        if path == "/healthz" and method == "GET":
            return 200, b'{"status":"ok"}', [JSON_TYPE]
        if path == "/metrics" and method == "GET":
            return 200, self._metrics().encode(), [("content-type", "text/plain; version=0.0.4")]
        if path == "/openapi.json" and method == "GET":
            return 200, _ENCODE(openapi()), [JSON_TYPE]
        route = {("POST", "/v1/records"): self._post_one,
                 ("POST", "/v1/records:batch"): self._post_batch,
                 ("GET", "/v1/checkpoint"): self._get_checkpoint}.get((method, path))
        if route is None and method == "GET" and path.startswith("/v1/records/"):
            tenant = self._auth(scope, "reader")
            return await self._get_record(tenant, path[len("/v1/records/"):])
        if route is None:
            known = path in ("/v1/records", "/v1/records:batch", "/v1/checkpoint", "/healthz",
                             "/metrics", "/openapi.json")
            raise HTTPError(405 if known else 404, "method not allowed" if known else "not found")
        role = "writer" if method == "POST" else "reader"
        return await route(self._auth(scope, role), scope, proto)

    def _auth(self, scope: Scope, role: str) -> keys.Tenant:
        value: str = scope.headers.get("authorization", "")
        token = value[7:].strip().encode() if value[:7].lower() == "bearer " else b""
        assert self.tenants is not None
        tenant = self.tenants.lookup(token) if token else None
        if tenant is None:
            raise HTTPError(401, "missing or unknown API key",
                            headers=[("www-authenticate", 'Bearer realm="vantio"')])
        if tenant.role != role:
            raise HTTPError(403, f"a {tenant.role} key cannot do this")
        return tenant

    async def _commit(self, subs: Sequence[Submission | Prepared]) -> list[Ack]:
        assert self.committer is not None and self.loop is not None
        # self.loop, not get_running_loop(): that one costs a getpid() system call
        fut: asyncio.Future[list[Ack]] = self.loop.create_future()
        try:
            self.committer.enqueue(subs, fut)
            return await fut
        except Busy as exc:
            raise HTTPError(429, str(exc), headers=[("retry-after", "1")]) from None
        except LedgerUnavailable as exc:
            raise HTTPError(503, str(exc), headers=[("retry-after", "5")]) from None

    async def _post_one(self, tenant: keys.Tenant, scope: Scope, proto: Request) -> Response:
        event = parse_event(await read_body(scope, proto, MAX_BODY))
        [ack] = await self._commit(submissions(tenant.name, [event]))
        return 201, _ENCODE(accepted(ack)), [JSON_TYPE, ("x-vantio-signature", ack.receipt)]

    async def _post_batch(self, tenant: keys.Tenant, scope: Scope, proto: Request) -> Response:
        body = await read_body(scope, proto, MAX_BATCH_BODY)
        if self.helpers is None or len(body) < HELPER_MIN_BODY:
            acks = await self._commit(submissions(tenant.name, parse_batch(body), batch=True))
        else:
            acks = await self._commit(await self._prepared(tenant, body))
        signature = _batch_signature(tenant.api_key, [a.trace_id for a in acks])
        return 201, batch_body(acks), [JSON_TYPE, ("x-vantio-signature", signature)]

    async def _prepared(self, tenant: keys.Tenant, body: bytes) -> list[Prepared]:
        """A batch validated and prepared by a helper process (``prepare_batch``)."""
        assert self.helpers is not None
        try:
            out = await self.helpers.run(prepare_batch, tenant.name, tenant.api_key, body)
        except HelpersGone as exc:
            raise HTTPError(503, str(exc), headers=[("retry-after", "1")]) from None
        self.metrics.helper_batches += 1
        if isinstance(out, tuple):
            raise HTTPError(*out)
        return _PREPARED.decode(out)

    def _signed(self, size: int, root: bytes) -> bytes | None:
        """Identity and epoch signatures (writer.Ledger.sign_checkpoint); None when the epoch
        key of that size was destroyed while the request ran: the caller reads a newer head."""
        assert self.ledger is not None
        try:
            return self.ledger.sign_checkpoint(size, root)
        except EpochKeyGone:
            return None

    async def _get_checkpoint(self, tenant: keys.Tenant, scope: Scope, proto: Request
                              ) -> Response:
        assert self.index is not None
        for _ in range(3):
            size, root = self.index.head()
            if (signed := self._signed(size, root)) is not None:
                return 200, signed, [("content-type", "text/plain; charset=utf-8")]
        raise HTTPError(503, "epoch rotation under way", headers=[("retry-after", "1")])

    async def _get_record(self, tenant: keys.Tenant, trace_id: str) -> Response:
        assert self.index is not None
        for _ in range(3):
            found = self.index.find(trace_id)  # reader keys are auditors': they read all tenants
            if found is None:
                raise HTTPError(404, self._not_found())
            if (signed := self._signed(found.size, found.root)) is not None:
                break
        else:
            raise HTTPError(503, "epoch rotation under way", headers=[("retry-after", "1")])
        proof = cpmod.format_inclusion(found.seq, found.path, signed)
        return 200, _ENCODE({"record": msgspec.Raw(found.line), "seq": found.seq,
                             "proof": proof.decode()}), [JSON_TYPE]

    def _not_found(self) -> str:
        """A 404's reason; after an expire it says that the record may be one of those
        deleted (their trace ids are gone with them, so the service cannot tell)."""
        assert self.index is not None
        try:
            edge = reader.expired_edge(self.index.layout).size
        except reader.ReadError:
            edge = 0
        return "no record with this trace id" + (
            f" (the records before seq {edge} expired: vantio ledger expire deleted them)"
            if edge else "")

    def _metrics(self) -> str:
        assert self.committer is not None and self.ledger is not None
        lines = [
            "# TYPE vantio_records_total counter", f"vantio_records_total {self.metrics.records}",
            "# TYPE vantio_commits_total counter", f"vantio_commits_total {self.metrics.commits}",
            "# TYPE vantio_helper_batches_total counter",
            f"vantio_helper_batches_total {self.metrics.helper_batches}",
            "# TYPE vantio_helper_restarts_total counter",
            f"vantio_helper_restarts_total {self.helpers.restarts if self.helpers else 0}",
            "# TYPE vantio_queue_depth gauge", f"vantio_queue_depth {self.committer.depth}",
            "# TYPE vantio_ledger_size gauge", f"vantio_ledger_size {self.ledger.size}",
            *self.ledger.fsync_seconds.prometheus("vantio_fsync_seconds"),
            "# TYPE vantio_refusals_total counter",
            *(f'vantio_refusals_total{{status="{k}"}} {v}'
              for k, v in sorted(self.metrics.refusals.items())),
        ]
        return "\n".join(lines) + "\n"


async def _drain(proto: Request) -> None:
    """Read what is left of a refused request's body, up to a bound (past it the server closes)."""
    size = 0
    async for chunk in proto:  # nothing left if the body was read already
        size += len(chunk)
        if size > DRAIN_LIMIT:
            return


async def read_body(scope: Scope, proto: Request, limit: int) -> bytes:
    """The request body, refused before it is read when it is too large or not JSON."""
    headers = scope.headers
    if headers.get("content-type", "").split(";")[0].strip().lower() != JSON:
        raise HTTPError(415, "content-type must be application/json")
    length = headers.get("content-length")
    if length is not None:  # the HTTP layer frames the body by it: it cannot be longer
        if not length.isdigit() or int(length) > limit:
            raise HTTPError(413, f"body larger than {limit} bytes")
        return await proto()
    chunks, size = [], 0  # chunked: count while reading
    async for chunk in proto:
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Accepted(msgspec.Struct, gc=False):
    """The body of a 201 for one record (Structs: a batch's 1000 of them encode at a third
    of the cost of dicts)."""

    trace_id: str
    seq: int
    leaf_hash: str  # hex
    time: Time


class _Receipted(Accepted, gc=False):
    receipt: str  # hex, as x-vantio-signature for one record


class _Accepted(msgspec.Struct, gc=False):
    records: list[_Receipted]


def accepted(ack: Ack) -> Accepted:
    return Accepted(ack.trace_id, ack.seq, ack.leaf_hash.hex(), ack.time)


def batch_body(acks: list[Ack]) -> bytes:
    """The body of a 201 for a batch: each record's acceptance with its receipt."""
    return _ENCODE(_Accepted([_Receipted(a.trace_id, a.seq, a.leaf_hash.hex(), a.time,
                                         a.receipt) for a in acks]))


def _batch_signature(api_key: str, trace_ids: list[str]) -> str:
    """x-vantio-signature of a batch: HMAC-SHA256 over its trace ids joined by newlines."""
    return hmac.digest(api_key.encode(), "\n".join(trace_ids).encode(), "sha256").hex()


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document, its schemas generated from the record Structs."""
    (event, gap, batch), components = msgspec.json.schema_components(
        [ApiEvent, ApiGap, Batch], ref_template="#/components/schemas/{name}")
    record = {"oneOf": [event, gap]}  # an event, or a gap (which says "kind": "gap")
    components["Batch"]["properties"]["records"]["items"] = record
    error = {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}
    err = {"description": "refused", "content": {"application/json": {"schema": error}}}
    refusals = {str(s): err for s in (400, 401, 403, 413, 415, 422, 429, 503)}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    accepted = {"201": {"description": "durable: the record's group is fdatasync'd",
                        "headers": {"x-vantio-signature": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "vantio ingest API", "version": __version__},
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/records": {"post": {
                "operationId": "postRecord", "security": bearer,
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": record}}},
                "responses": {**accepted, **refusals}}},
            "/v1/records:batch": {"post": {
                "operationId": "postRecords", "security": bearer,
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": batch}}},
                "responses": {**accepted, **refusals}}},
            "/v1/records/{trace_id}": {"get": {
                "operationId": "getRecord", "security": bearer,
                "parameters": [{"name": "trace_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the record and its .tlog-proof"},
                              "404": err, "401": err, "403": err}}},
            "/v1/checkpoint": {"get": {
                "operationId": "getCheckpoint", "security": bearer,
                "responses": {"200": {"description": "the latest signed checkpoint"},
                              "401": err, "403": err}}},
            "/healthz": {"get": {"operationId": "health",
                                 "responses": {"200": {"description": "serving"}}}},
            "/metrics": {"get": {"operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text"}}}},
        },
    }


app = App()
