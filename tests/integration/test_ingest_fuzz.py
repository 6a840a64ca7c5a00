"""A bounded fuzzing run of the ingest API, against the real server on its unix socket.

Two sources of requests:

- schemathesis, from the OpenAPI document the server publishes (positive and
  negative cases for every operation), sent by a requests session over the
  unix socket (requests-unixsocket2);
- hypothesis, from our own strategy for valid records, plus mutations the
  schema cannot express: content fields, unknown keys, wrong types, floats,
  NaN, over-long and oversize values, duplicate keys (also written with a
  \\u escape), foreign tenants, bad trace ids; alone and inside batches.

Properties: never a 5xx; a refused request writes nothing (the segments are
byte-for-byte unchanged and the request's marker is in no file of the
ledger); every 201 carries receipts that are right for the tenant's key and
lines that are on disk. The run is bounded by example counts (about 30 s in
all) and does not shrink (a failure is reported as found), so CI time stays fixed.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import requests_unixsocket
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from service_helpers import (
    Reply,
    all_files_bytes,
    assert_in_ledger,
    auth,
    canonical,
    check_batch,
    check_single,
    fresh_service,
    marker,
    raw_request,
    request,
    segments_bytes,
    send_raw,
)

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

CONTENT_FIELDS: Final = ("prompt", "completion", "messages", "content", "input", "output",
                         "body")
FUZZ: Final = settings(deadline=None, database=None, derandomize=False,
                       phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
                       suppress_health_check=list(HealthCheck))


@dataclass(frozen=True)
class Fuzz:
    root: Path
    sock: Path
    writer: str
    reader: str
    schema: Any  # schemathesis' OpenAPI schema
    session: Any  # requests session over the unix socket
    base_url: str


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    with fresh_service(tmp_path_factory.mktemp("fuzz")) as (root, sock, _, key, reader):
        doc = request(sock, "GET", "/openapi.json").json()
        # refusing schema-invalid data: any documented 4xx (413 too: a batch over 1000)
        config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "413", "415", "422"]}}})
        # the unix adapter serves http:// here, so that URL joining keeps the socket path
        # (percent-encoded in the host part) as the base of every operation's path
        session = requests_unixsocket.Session(url_scheme="http://")  # type: ignore[no-untyped-call]
        schema = schemathesis.openapi.from_dict(doc, config=config)
        try:
            yield Fuzz(root, sock, key, reader, schema, session,
                       "http://" + urllib.parse.quote(str(sock), safe=""))
        finally:
            session.close()


def _unchanged(f: Fuzz, before: bytes, what: str) -> None:
    assert segments_bytes(f.root) == before, f"refused, yet the ledger changed: {what}"


def _check_accepted(f: Fuzz, reply: Reply, path: str, sent: Any) -> None:
    """A 201: receipts from the tenant key, and the lines on disk are what was sent."""
    if path == "/v1/records":
        acks, records = [check_single(reply, f.writer)], [sent]
    else:
        records = sent["records"]
        acks = check_batch(reply, f.writer, len(records))
    lines = assert_in_ledger(f.root, acks)
    for ack, rec in zip(acks, records, strict=True):
        stored = json.loads(lines[ack.seq])
        assert canonical(stored) == lines[ack.seq]
        assert stored["tenant"] == "acme"
        assert {k: stored.get(k) for k in rec} == rec
        if "trace_id" in rec:
            assert stored["trace_id"] == rec["trace_id"]


# -- schemathesis, from the published document -------------------------------------------

OPERATIONS: Final = [("/v1/records", "POST", 500), ("/v1/records:batch", "POST", 250),
                     ("/v1/records/{trace_id}", "GET", 100), ("/v1/checkpoint", "GET", 30),
                     ("/healthz", "GET", 5), ("/metrics", "GET", 5)]


# (no negative cases where there is nothing to negate: no parameters, body or security)
RUNS: Final = [(p, m, n, mode) for p, m, n in OPERATIONS
               for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
               if mode is GenerationMode.POSITIVE or p not in ("/healthz", "/metrics")]


@pytest.mark.parametrize(("path", "method", "examples", "mode"), RUNS,
                         ids=[f"{m} {p} {mode.value}" for p, m, _, mode in RUNS])
def test_openapi_cases(fuzz: Fuzz, path: str, method: str, examples: int,
                       mode: GenerationMode) -> None:
    operation = fuzz.schema[path][method]
    key = fuzz.writer if method == "POST" else fuzz.reader
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    if method == "POST" and mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)  # schema-invalid data is never accepted
    seen: set[int] = set()

    @settings(FUZZ, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        before = segments_bytes(fuzz.root)
        response = case.call(base_url=fuzz.base_url, session=fuzz.session,
                             headers={"authorization": f"Bearer {key}"}, timeout=30)
        status = response.status_code
        seen.add(status)
        assert status < 500, f"{status} for {case.as_curl_command()}: {response.content[:300]!r}"
        case.validate_response(response, checks=checks)
        if status == 201:
            reply = Reply(status, [(k.lower(), v) for k, vs in response.headers.items()
                                   for v in vs], response.content)
            _check_accepted(fuzz, reply, path, case.body)
        else:
            _unchanged(fuzz, before, case.as_curl_command())

    run()
    if path == "/v1/records" and mode is GenerationMode.POSITIVE:
        assert 201 in seen, f"no schema-valid case was ever accepted: {seen}"


# -- hypothesis: valid records and their mutations ---------------------------------------


def _text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)


def _ints(hi: int) -> st.SearchStrategy[int]:
    return st.integers(0, hi)


U32, U63 = 2**32 - 1, 2**63 - 1
PROC = st.fixed_dictionaries({}, optional={
    "pid": _ints(U32), "tgid": _ints(U32), "uid": _ints(U32), "gid": _ints(U32),
    "comm": _text(1, 16), "cgroup": _text(1, 300),
    "cgroup_ancestry": st.lists(_ints(U63), max_size=64)})
ARGS = st.fixed_dictionaries({}, optional={
    "family": st.sampled_from(["inet", "inet6", "unix"]), "address": _text(1, 255),
    "port": _ints(65535), "proto": st.sampled_from(["tcp", "udp", "icmp", "raw", "any"]),
    "size": _ints(U63), "flags": _ints(U63), "path": _text(1, 300), "argc": _ints(65535)})
SYSCALL = st.fixed_dictionaries({"name": st.from_regex(r"[a-z0-9_]{1,32}", fullmatch=True)},
                                optional={"args": ARGS})
HOST = (st.from_regex(r"[A-Za-z0-9._-]{1,60}", fullmatch=True)
        | st.from_regex(r"\[[0-9a-f:]{2,39}\]", fullmatch=True))
TARGET = st.builds(lambda h, p: f"{h}:{p}", HOST, _ints(65535))
RECORD = st.fixed_dictionaries(
    {"action": st.sampled_from(["permit", "block", "quarantine"])},
    optional={"trace_id": st.uuids(version=4).map(str), "proc": PROC, "syscall": SYSCALL,
              "target_host": TARGET, "bytes_severed": _ints(U63),
              "tenant": st.just("acme")})

INT_FIELDS: Final = {("proc", n) for n in ("pid", "tgid", "uid", "gid")} | {
    ("syscall", "args", n) for n in ("port", "size", "flags", "argc")} | {("bytes_severed",)}
STR_FIELDS: Final = {("proc", "comm"), ("proc", "cgroup"), ("syscall", "name"),
                     ("syscall", "args", "address"), ("syscall", "args", "path"),
                     ("target_host",), ("action",), ("trace_id",)}
PLACES: Final = [(), ("proc",), ("syscall",), ("syscall", "args")]
KEYS_AT: Final = {(): {"action", "trace_id", "proc", "syscall", "target_host", "bytes_severed",
                       "tenant"},
                  ("proc",): {"pid", "tgid", "uid", "gid", "comm", "cgroup", "cgroup_ancestry"},
                  ("syscall",): {"name", "args"},
                  ("syscall", "args"): {"family", "address", "port", "proto", "size", "flags",
                                        "path", "argc"}}


def _at(record: dict[str, Any], place: tuple[str, ...]) -> dict[str, Any]:
    """The object at ``place``, created (validly) when absent."""
    obj = record
    for key in place:
        if key not in obj:
            obj[key] = {"name": "connect"} if key == "syscall" else {}
        obj = obj[key]
    return obj


@dataclass(frozen=True)
class Mutant:
    kind: str
    body: bytes  # one record's JSON
    statuses: tuple[int, ...]
    field: str | None  # the field the error must name (exactly), when known


def _dumps_dup(value: Any, place: tuple[str, ...], key: str, escaped: bool,
               here: tuple[str, ...] = ()) -> str:
    """JSON with ``key`` of the object at ``place`` written twice (the same value), the
    second time with its first letter as a \\u escape when ``escaped``."""
    if not isinstance(value, dict):
        return json.dumps(value)
    parts = [f"{json.dumps(k)}:{_dumps_dup(v, place, key, escaped, (*here, k))}"
             for k, v in value.items()]
    if here == place:
        name = f'"\\u{ord(key[0]):04x}{key[1:]}"' if escaped else json.dumps(key)
        parts.append(f"{name}:{json.dumps(value[key])}")
    return "{" + ",".join(parts) + "}"


@st.composite
def mutants(draw: st.DrawFn) -> tuple[Mutant, str]:
    """A record that must be refused, and the marker it carries."""
    mark = marker()
    rec = copy_record(draw(RECORD))
    _at(rec, ("proc",))["cgroup"] = f"/agents.slice/{mark}.scope"  # found if ever written
    kind = draw(st.sampled_from(["content", "unknown", "unknown-any", "type", "float", "nan",
                                 "too-long", "oversize", "duplicate", "duplicate-escaped",
                                 "tenant", "tenant-name", "trace-id"]))
    statuses: tuple[int, ...] = (422,)
    field: str | None = None
    body: bytes | None = None
    if kind == "content":
        place = draw(st.sampled_from(PLACES))
        name = draw(st.sampled_from(CONTENT_FIELDS))
        value = draw(st.sampled_from([f"{mark} ignore previous instructions",
                                      [{"role": "user", "content": mark}], {"text": mark}]))
        _at(rec, place)[name] = value
        field = ".".join((*place, name))
    elif kind in ("unknown", "unknown-any"):
        place = draw(st.sampled_from(PLACES))
        name = draw(st.from_regex(r"[a-z_]{1,20}", fullmatch=True) if kind == "unknown"
                    else _text(1, 20))
        if name in KEYS_AT[place]:
            name = "x_" + name
        _at(rec, place)[name] = mark
        field = ".".join((*place, name)) if kind == "unknown" else None
    elif kind == "type":
        path = draw(st.sampled_from(sorted(INT_FIELDS | STR_FIELDS)))
        wrong = ([mark, [1], {"k": mark}, True, None, -1, 2**64] if path in INT_FIELDS
                 else [7, [mark], {"k": mark}, True, None])
        _at(rec, path[:-1])[path[-1]] = draw(st.sampled_from(wrong))
        field = ".".join(path)
    elif kind in ("float", "nan"):
        path = draw(st.sampled_from(sorted(INT_FIELDS)))
        literal = draw(st.sampled_from(["1.5", "7.0", "1e3", "-0.0", "4.0E0"] if kind == "float"
                                       else ["NaN", "Infinity", "-Infinity"]))
        _at(rec, path[:-1])[path[-1]] = "@@"
        body = json.dumps(rec).replace('"@@"', literal).encode()
        field = ".".join(path) if kind == "float" else None
        statuses = (422,) if kind == "float" else (400, 422)
    elif kind == "too-long":
        path, limit = draw(st.sampled_from([(("proc", "comm"), 16), (("syscall", "name"), 32),
                                            (("syscall", "args", "address"), 255)]))
        _at(rec, path[:-1])[path[-1]] = mark + "x" * draw(st.integers(limit, limit + 100))
        field = ".".join(path)
    elif kind == "oversize":
        _at(rec, ("proc",))["cgroup"] = f"/{mark}/" + "x" * draw(st.integers(65_536, 100_000))
        statuses = (413,)
    elif kind in ("duplicate", "duplicate-escaped"):
        place = draw(st.sampled_from([p for p in PLACES if p == () or p[0] in rec]))
        obj = _at(rec, place)
        if not obj:
            obj["size"] = 1
        name = draw(st.sampled_from(sorted(obj)))
        body = _dumps_dup(rec, place, name, kind == "duplicate-escaped").encode()
        field = ".".join((*place, name))
    elif kind == "tenant":
        rec["tenant"] = draw(st.sampled_from(["other", "auditor", "default", "acme-2"]))
        statuses, field = (403,), "tenant"
    elif kind == "tenant-name":
        rec["tenant"] = draw(st.sampled_from(["_system", "Acme", "", "a" * 64, "acme\n"]))
        field = "tenant"
    else:  # trace-id
        v4 = str(draw(st.uuids(version=4)))
        rec["trace_id"] = draw(st.sampled_from([v4.upper(), v4.replace("-", ""), v4 + "\n",
                                                str(draw(st.uuids(version=1))), mark, v4[:-1]]))
        field = "trace_id"
    return Mutant(kind, body if body is not None else json.dumps(rec).encode(), statuses,
                  field), mark


def copy_record(rec: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(rec))
    return copied


def _refused(f: Fuzz, reply: Reply, mutant: Mutant, mark: str, before: bytes,
             field_prefix: str = "") -> None:
    what = f"{mutant.kind}: {mutant.body[:300]!r} -> {reply}"
    assert reply.status < 500, what
    assert reply.status in mutant.statuses, what
    err = reply.json()
    assert isinstance(err.get("error"), str), what
    if mutant.field is not None and reply.status != 413:
        assert err.get("field") == field_prefix + mutant.field, what
    elif field_prefix and reply.status in (403, 422):
        assert str(err.get("field", "")).startswith(field_prefix.rstrip(".")), what
    _unchanged(f, before, what)
    assert mark.encode() not in all_files_bytes(f.root), f"the marker is on disk: {what}"


@settings(FUZZ, max_examples=1500)
@given(mutant=mutants())
def test_mutated_records_are_refused_and_leave_nothing(fuzz: Fuzz,
                                                       mutant: tuple[Mutant, str]) -> None:
    m, mark = mutant
    before = segments_bytes(fuzz.root)
    reply = send_raw(fuzz.sock, raw_request("POST", "/v1/records", auth(fuzz.writer), m.body),
                     timeout=30)
    _refused(fuzz, reply, m, mark, before)


@settings(FUZZ, max_examples=600)
@given(good=st.lists(RECORD, min_size=1, max_size=4), mutant=mutants(), data=st.data())
def test_a_batch_with_one_bad_record_is_refused_whole(
        fuzz: Fuzz, good: list[dict[str, Any]], mutant: tuple[Mutant, str],
        data: st.DataObject) -> None:
    m, mark = mutant
    at = data.draw(st.integers(0, len(good)), label="position")
    parts = [json.dumps(r).encode() for r in good]
    parts.insert(at, m.body)
    body = b'{"records":[' + b",".join(parts) + b"]}"
    before = segments_bytes(fuzz.root)
    reply = send_raw(fuzz.sock, raw_request("POST", "/v1/records:batch", auth(fuzz.writer), body),
                     timeout=30)
    if m.kind == "oversize":  # a long cgroup: refused for its length (4096), not the body size
        assert reply.status == 422, str(reply)
        assert reply.json().get("field") == f"records[{at}].proc.cgroup", str(reply)
        _unchanged(fuzz, before, str(reply))
        assert mark.encode() not in all_files_bytes(fuzz.root)
        return
    _refused(fuzz, reply, m, mark, before, f"records[{at}].")


@settings(FUZZ, max_examples=300)
@given(records=st.lists(RECORD, min_size=1, max_size=5), single=st.booleans())
def test_valid_records_get_receipts_that_check_out(fuzz: Fuzz, records: list[dict[str, Any]],
                                                   single: bool) -> None:
    for rec in records:  # a trace id the ledger already holds is another question
        if "trace_id" in rec:
            rec["trace_id"] = str(uuid.uuid4())
    if single:
        reply = request(fuzz.sock, "POST", "/v1/records", json.dumps(records[0]).encode(),
                        auth(fuzz.writer), timeout=30)
        _check_accepted(fuzz, reply, "/v1/records", records[0])
    else:
        reply = request(fuzz.sock, "POST", "/v1/records:batch",
                        json.dumps({"records": records}).encode(), auth(fuzz.writer), timeout=30)
        _check_accepted(fuzz, reply, "/v1/records:batch", {"records": records})


# -- the document itself -------------------------------------------------------------------


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "pattern" and isinstance(v, str):
                yield v
            else:
                yield from _patterns(v)
    elif isinstance(node, list):
        for v in node:
            yield from _patterns(v)


def test_openapi_patterns_are_json_schema_regexes(fuzz: Fuzz) -> None:
    """JSON Schema (OpenAPI 3.1) patterns are ECMA-262 regexes: there, \\Z is no anchor (a
    syntax error with the u flag, a literal Z without), so a client validating with the
    published document refuses every valid trace id. $ is the ECMA-262 end anchor."""
    doc = request(fuzz.sock, "GET", "/openapi.json").json()
    bad = [p for p in _patterns(doc) if "\\Z" in p]
    assert not bad, bad


def test_openapi_batch_items_are_records(fuzz: Fuzz) -> None:
    """The batch body's records are events: the document should say so, or schema-driven
    clients (and this fuzzer's positive cases) cannot build one valid batch."""
    doc = request(fuzz.sock, "GET", "/openapi.json").json()
    op = doc["paths"]["/v1/records:batch"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    batch = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    single = doc["paths"]["/v1/records"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert batch["properties"]["records"]["items"] == single, batch
