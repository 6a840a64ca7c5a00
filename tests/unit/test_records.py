"""The record whitelist (FORMATS.md section 1), receipts, and canonical JSON (RFC 8785).

Independent references: RFC 4122 via the standard ``uuid`` module, RFC 2104/4231 via
``hmac`` (and the RFC 4231 test case 2 vector), RFC 8785 via ``json.dumps`` with sorted
keys, no white space and ``ensure_ascii=False`` (whose string escaping is exactly the
RFC 8785 one: the short escapes for \\b \\t \\n \\f \\r \\" \\\\ and lower-case \\u00xx for the
other control characters, everything else as UTF-8), and the RFC 8785 section 3.2.3
example.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantio_appliance import canonical, records
from vantio_appliance.canonical import CanonicalError
from vantio_appliance.records import RecordError

TRACE = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"  # a version-4 UUID, lower case
FULL: dict[str, Any] = {
    "action": "block",
    "trace_id": TRACE,
    "proc": {"pid": 4242, "tgid": 4242, "uid": 1000, "gid": 1000, "comm": "python3",
             "cgroup": "/system.slice/agent.service", "cgroup_ancestry": [1, 17, 4242]},
    "syscall": {"name": "connect",
                "args": {"family": "inet6", "address": "2001:db8::1", "port": 443,
                         "proto": "tcp", "size": 0, "flags": 2048, "argc": 3}},
    "target_host": "[2001:db8::1]:443",
    "bytes_severed": 1 << 40,
}


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (FULL) with the dotted ``path`` set to ``value``."""
    d = copy.deepcopy(FULL if base is None else base)
    node = d
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return d


def _is_v4(s: str) -> bool:
    u = uuid.UUID(s)
    return u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == s


# --- refusals name the field -------------------------------------------------------------

REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    # content has no field to travel in
    ("prompt", _with("prompt", "tell me a secret"), "prompt"),
    ("completion", _with("completion", "..."), "completion"),
    ("message body", _with("body", "..."), "body"),
    ("proc.prompt", _with("proc.prompt", "x"), "proc.prompt"),
    ("proc.cmdline", _with("proc.cmdline", "curl -d @secrets"), "proc.cmdline"),
    ("syscall.args.buffer", _with("syscall.args.buffer", "payload"), "syscall.args.buffer"),
    ("syscall.args.data", _with("syscall.args.data", [1, 2]), "syscall.args.data"),
    # fields the ledger adds itself
    ("receipt", _with("receipt", "a" * 64), "receipt"),
    ("v", _with("v", 1), "v"),
    ("seq", _with("seq", 0), "seq"),
    ("kind", _with("kind", "event"), "kind"),
    ("tenant", _with("tenant", "acme"), "tenant"),
    ("time", _with("time", {"mono_ns": 1, "real_ns": 1, "earliest_ns": 1, "latest_ns": 1}),
     "time"),
    # numbers: floats, bools, negatives, out of range
    ("float pid", _with("proc.pid", 1.0), "proc.pid"),
    ("float bytes", _with("bytes_severed", 1.0), "bytes_severed"),
    ("nan bytes", _with("bytes_severed", float("nan")), "bytes_severed"),
    ("float size", _with("syscall.args.size", 0.0), "syscall.args.size"),
    ("float in list", _with("proc.cgroup_ancestry", [1, 2.0]), "proc.cgroup_ancestry[1]"),
    ("bool pid", _with("proc.pid", True), "proc.pid"),
    ("bool port", _with("syscall.args.port", False), "syscall.args.port"),
    ("bool bytes", _with("bytes_severed", True), "bytes_severed"),
    ("string pid", _with("proc.pid", "1"), "proc.pid"),
    ("negative pid", _with("proc.pid", -1), "proc.pid"),
    ("negative uid", _with("proc.uid", -1), "proc.uid"),
    ("negative bytes", _with("bytes_severed", -1), "bytes_severed"),
    ("negative port", _with("syscall.args.port", -1), "syscall.args.port"),
    ("negative in list", _with("proc.cgroup_ancestry", [1, -2]), "proc.cgroup_ancestry[1]"),
    ("pid over u32", _with("proc.pid", 2**32), "proc.pid"),
    ("port over u16", _with("syscall.args.port", 65536), "syscall.args.port"),
    ("bytes over i64", _with("bytes_severed", 2**63), "bytes_severed"),
    # trace ids
    ("trace v1", _with("trace_id", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "trace_id"),
    ("trace upper", _with("trace_id", TRACE.upper()), "trace_id"),
    ("trace variant", _with("trace_id", "6ba7b810-9dad-41d1-c0b4-00c04fd430c8"), "trace_id"),
    ("trace no hyphens", _with("trace_id", TRACE.replace("-", "")), "trace_id"),
    ("trace braces", _with("trace_id", "{" + TRACE + "}"), "trace_id"),
    ("trace urn", _with("trace_id", "urn:uuid:" + TRACE), "trace_id"),
    ("trace short", _with("trace_id", TRACE[:-1]), "trace_id"),
    ("trace newline", _with("trace_id", TRACE + "\n"), "trace_id"),
    ("trace int", _with("trace_id", 1234), "trace_id"),
    ("trace null", _with("trace_id", None), "trace_id"),
    # actions
    ("action allow", _with("action", "allow"), "action"),
    ("action upper", _with("action", "PERMIT"), "action"),
    ("action empty", _with("action", ""), "action"),
    ("action missing", {k: v for k, v in FULL.items() if k != "action"}, "action"),
    # target_host
    ("host no port", _with("target_host", "example.com"), "target_host"),
    ("host empty port", _with("target_host", "example.com:"), "target_host"),
    ("host only port", _with("target_host", ":443"), "target_host"),
    ("host bare ipv6", _with("target_host", "2001:db8::1:443"), "target_host"),
    ("host ipv6 no port", _with("target_host", "[2001:db8::1]"), "target_host"),
    ("host port too big", _with("target_host", "example.com:99999"), "target_host"),
    ("host port 65536", _with("target_host", "example.com:65536"), "target_host"),
    ("host negative port", _with("target_host", "example.com:-1"), "target_host"),
    ("host space", _with("target_host", "exa mple.com:443"), "target_host"),
    ("host url", _with("target_host", "https://example.com:443"), "target_host"),
    ("host userinfo", _with("target_host", "user@example.com:443"), "target_host"),
    ("host path", _with("target_host", "example.com:443/x"), "target_host"),
    ("host newline", _with("target_host", "example.com:443\n"), "target_host"),
    ("host too long", _with("target_host", "[" + "1" * 257 + "]:443"), "target_host"),
    ("host name too long", _with("target_host", "a" * 254 + ":443"), "target_host"),
    # strings: too long, empty, wrong alphabet
    ("comm 17", _with("proc.comm", "x" * 17), "proc.comm"),
    ("comm empty", _with("proc.comm", ""), "proc.comm"),
    ("cgroup 4097", _with("proc.cgroup", "/" * 4097), "proc.cgroup"),
    ("address 256", _with("syscall.args.address", "a" * 256), "syscall.args.address"),
    ("path 4097", _with("syscall.args.path", "p" * 4097), "syscall.args.path"),
    ("syscall name 33", _with("syscall.name", "a" * 33), "syscall.name"),
    ("syscall name upper", _with("syscall.name", "Connect"), "syscall.name"),
    ("syscall name newline", _with("syscall.name", "connect\n"), "syscall.name"),
    ("syscall no name", _with("syscall", {"args": {"port": 1}}), "syscall.name"),
    ("ancestry 65", _with("proc.cgroup_ancestry", list(range(65))), "proc.cgroup_ancestry"),
    # enums and shapes
    ("family", _with("syscall.args.family", "inet4"), "syscall.args.family"),
    ("proto", _with("syscall.args.proto", "sctp"), "syscall.args.proto"),
    ("proc list", _with("proc", [1, 2]), "proc"),
    ("proc null", _with("proc", None), "proc"),
    ("args string", _with("syscall.args", "fd=3"), "syscall.args"),
    ("comm int", _with("proc.comm", 7), "proc.comm"),
]


@pytest.mark.parametrize(("submission", "field"), [(s, f) for _, s, f in REFUSALS],
                         ids=[d for d, _, _ in REFUSALS])
def test_refusal_names_the_field(submission: dict[str, Any], field: str) -> None:
    before = copy.deepcopy(submission)
    with pytest.raises(RecordError) as info:
        records.check_submission(submission)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert submission == before


@pytest.mark.parametrize(("submission", "field"),
                         [(s, f) for d, s, f in REFUSALS if "nan" not in d],
                         ids=[d for d, _, _ in REFUSALS if "nan" not in d])
def test_refusal_of_json_bytes_names_the_field(submission: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as info:
        records.decode_submission(json.dumps(submission).encode())
    assert info.value.field == field


@pytest.mark.parametrize("data", [
    b'{"action":"permit","bytes_severed":NaN}',
    b'{"action":"permit","bytes_severed":Infinity}',
    b'{"action":"permit",}',
    b'{"action":"permit"',
    b"",
    b"[]",
    b'"permit"',
])
def test_non_json_or_non_object_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(RecordError):
        records.decode_submission(data)


@pytest.mark.parametrize("value", [[], "x", 1, None, ("action", "permit")])
def test_non_object_submission_is_refused(value: Any) -> None:
    with pytest.raises(RecordError) as info:
        records.check_submission(value)
    assert info.value.field == "record"


# --- accepted submissions --------------------------------------------------------------------


def test_minimal_submission_gets_a_v4_trace_id() -> None:
    out = records.check_submission({"action": "permit"})
    assert set(out) == {"action", "trace_id"}
    assert out["action"] == "permit"
    assert _is_v4(out["trace_id"])


def test_json_submission_is_validated_and_its_trace_id_kept() -> None:
    # decode_submission leaves a missing trace id to the writer (records.py docstring).
    fields = records.decode_submission(b'{"action":"quarantine"}')
    assert fields.action == "quarantine"
    assert fields.trace_id is msgspec.UNSET
    given_ = records.decode_submission(json.dumps(FULL).encode())
    assert msgspec.to_builtins(given_) == FULL
    many = records.decode_submissions(b'{"action":"permit"}\n\n' + json.dumps(FULL).encode())
    assert [msgspec.to_builtins(f) for f in many] == [{"action": "permit"}, FULL]
    with pytest.raises(RecordError) as info:
        records.decode_submissions(b'{"action":"permit"}\n{"action":"permit","prompt":"x"}')
    assert info.value.field in ("prompt", "[1].prompt")  # may name the line too


@pytest.mark.parametrize("action", ["permit", "block", "quarantine"])
def test_every_action_is_accepted(action: str) -> None:
    assert records.check_submission({"action": action})["action"] == action


def test_full_submission_is_kept_as_given() -> None:
    out = records.check_submission(copy.deepcopy(FULL))
    assert out == FULL
    assert out["trace_id"] == TRACE


@pytest.mark.parametrize("host", ["example.com:443", "10.0.0.1:53", "[::1]:0",
                                  "[2001:db8::1]:65535", "a" * 253 + ":1", "under_score-x.y:8"])
def test_well_formed_target_hosts_are_accepted(host: str) -> None:
    assert records.check_submission(_with("target_host", host))["target_host"] == host


def test_given_trace_id_is_kept() -> None:
    tid = str(uuid.uuid4())
    assert records.check_submission({"action": "permit", "trace_id": tid})["trace_id"] == tid


def test_caller_dict_is_not_mutated_nor_shared() -> None:
    minimal: dict[str, Any] = {"action": "permit"}
    records.check_submission(minimal)
    assert minimal == {"action": "permit"}
    given_ = copy.deepcopy(FULL)
    out = records.check_submission(given_)
    assert given_ == FULL
    assert out is not given_
    out["proc"]["pid"] = 1
    out["proc"]["cgroup_ancestry"].append(99)
    out["syscall"]["args"]["port"] = 1
    assert given_ == FULL


@pytest.mark.parametrize("batch", [False, True])
def test_new_trace_ids_are_v4_lower_case_and_distinct(batch: bool) -> None:
    ids = records.new_trace_ids(2000) if batch else [records.new_trace_id() for _ in range(2000)]
    assert len(ids) == 2000
    assert all(_is_v4(t) for t in ids)
    assert len(set(ids)) == len(ids)
    assert {t[19] for t in ids} == set("89ab")  # every RFC 4122 variant nibble occurs
    assert {t[14] for t in ids} == {"4"}


# --- receipts -------------------------------------------------------------------------------


def test_receipt_rfc4231_test_case_2() -> None:
    # RFC 4231 section 4.3: HMAC-SHA-256, key "Jefe", data "what do ya want for nothing?"
    assert records.receipt("Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_receipt_is_hmac_sha256_of_trace_id_keyed_with_api_key(key: str) -> None:
    tid = records.new_trace_id()
    expected = hmac.new(key.encode(), tid.encode(), hashlib.sha256).hexdigest()
    assert records.receipt(key, tid) == expected
    assert len(expected) == 64


# --- stored records ---------------------------------------------------------------------------

TIME = records.Time(mono_ns=5, real_ns=1_700_000_000_000_000_000,
                    earliest_ns=1_699_999_999_999_000_000, latest_ns=1_700_000_000_001_000_000)
TIME_DICT = {"mono_ns": 5, "real_ns": 1_700_000_000_000_000_000,
             "earliest_ns": 1_699_999_999_999_000_000, "latest_ns": 1_700_000_000_001_000_000}


def _event(tenant: str = "acme", **extra: Any) -> dict[str, Any]:
    fields = records.check_submission(copy.deepcopy(FULL))
    fields["receipt"] = records.receipt("api-key", fields["trace_id"])
    fields.update(extra)
    return records.make_record(7, "event", tenant, TIME, fields)


SYSTEM_FIELDS: dict[str, dict[str, Any]] = {
    "genesis": {"origin": "vantio.appliance/h/ledger",
                "vkey": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"},
    "seal": {"segment": "0000000000000000.worm", "checkpoint": "o\n1\nAAAA\n\n\u2014 o AAAA\n"},
    "torn": {"segment": "0000000000004096.worm", "offset": 1234, "length": 17},
    "epoch": {"epoch": 3, "root": "A" * 43 + "=",
              "vkey": "PeterNeumann/epoch/3+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
              "signature": "B" * 86 + "=="},
    "anchor": {"direction": "export", "size": 9120, "root": "A" * 43 + "=",
               "manifest": "0" * 64},
}


def test_make_record_event_layout() -> None:
    rec = _event()
    expected = {**FULL, "receipt": hmac.new(b"api-key", TRACE.encode(), hashlib.sha256).hexdigest(),
                "v": 1, "seq": 7, "kind": "event", "tenant": "acme", "time": TIME_DICT}
    assert rec == expected
    records.check_record(rec)


@pytest.mark.parametrize("kind", sorted(SYSTEM_FIELDS))
def test_make_record_system_kinds_are_valid(kind: str) -> None:
    fields = copy.deepcopy(SYSTEM_FIELDS[kind])
    rec = records.make_record(3, kind, records.SYSTEM_TENANT, TIME, fields)
    assert fields == SYSTEM_FIELDS[kind]  # not mutated
    assert {k: rec[k] for k in ("v", "seq", "kind", "tenant", "time")} == {
        "v": 1, "seq": 3, "kind": kind, "tenant": "_system", "time": TIME_DICT}
    assert _is_v4(rec["trace_id"])
    records.check_record(rec)
    line = canonical.encode(rec)
    assert canonical.decode(line) == rec
    assert type(records.decode_record(line)).__name__.lower() == kind


@pytest.mark.parametrize("kind", sorted(SYSTEM_FIELDS))
@pytest.mark.parametrize("tenant", ["acme", "default", "system", "_System"])
def test_system_kinds_refuse_other_tenants(kind: str, tenant: str) -> None:
    rec = records.make_record(3, kind, tenant, TIME, copy.deepcopy(SYSTEM_FIELDS[kind]))
    with pytest.raises(RecordError) as info:
        records.check_record(rec)
    assert info.value.field == "tenant"


@pytest.mark.parametrize("tenant", ["_system", "Acme", "", "-acme", "a" * 64, "acme\n",
                                    "ac me", "acmé"])
def test_events_refuse_non_tenant_names(tenant: str) -> None:
    with pytest.raises(RecordError) as info:
        records.check_record(_event(tenant))
    assert info.value.field == "tenant"


@pytest.mark.parametrize("tenant", ["acme", "a", "0", "t-1_x", "a" * 63])
def test_events_accept_tenant_names(tenant: str) -> None:
    records.check_record(_event(tenant))


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


RECORD_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("prompt", _event(prompt="hi"), "prompt"),
    ("proc.prompt", _with("proc.prompt", "x", _event()), "proc.prompt"),
    ("time.extra", _with("time.extra", 1, _event()), "time.extra"),
    ("v 2", {**_event(), "v": 2}, "v"),
    ("v bool", {**_event(), "v": True}, "v"),
    ("seq float", {**_event(), "seq": 7.0}, "seq"),
    ("seq bool", {**_event(), "seq": True}, "seq"),
    ("seq negative", {**_event(), "seq": -1}, "seq"),
    ("seq over i64", {**_event(), "seq": 2**63}, "seq"),
    ("real_ns float", _with("time.real_ns", 1.0, _event()), "time.real_ns"),
    ("no receipt", _without(_event(), "receipt"), "receipt"),
    ("short receipt", _event(receipt="ab"), "receipt"),
    ("no time", _without(_event(), "time"), "time"),
    ("time missing field", _with("time", _without(TIME_DICT, "latest_ns"), _event()),
     "time.latest_ns"),
    ("no seq", _without(_event(), "seq"), "seq"),
    ("unknown kind", {**_event(), "kind": "whisper"}, "kind"),
    ("torn offset float", {**records.make_record(3, "torn", "_system", TIME,
                                                 SYSTEM_FIELDS["torn"]), "offset": 1.0},
     "offset"),
    ("genesis extra", {**records.make_record(0, "genesis", "_system", TIME,
                                             SYSTEM_FIELDS["genesis"]), "note": "x"}, "note"),
    ("epoch short root", {**records.make_record(5, "epoch", "_system", TIME,
                                                SYSTEM_FIELDS["epoch"]), "root": "AAAA"}, "root"),
    ("epoch no signature", _without(records.make_record(5, "epoch", "_system", TIME,
                                                        SYSTEM_FIELDS["epoch"]), "signature"),
     "signature"),
    ("epoch number negative", {**records.make_record(5, "epoch", "_system", TIME,
                                                     SYSTEM_FIELDS["epoch"]), "epoch": -1},
     "epoch"),
    ("anchor direction", {**records.make_record(5, "anchor", "_system", TIME,
                                                SYSTEM_FIELDS["anchor"]), "direction": "sideways"},
     "direction"),
    ("anchor extra", {**records.make_record(5, "anchor", "_system", TIME,
                                            SYSTEM_FIELDS["anchor"]), "bundle": "x"}, "bundle"),
]


@pytest.mark.parametrize(("record", "field"), [(r, f) for _, r, f in RECORD_REFUSALS],
                         ids=[d for d, _, _ in RECORD_REFUSALS])
def test_check_record_refusal_names_the_field(record: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as info:
        records.check_record(record)
    assert info.value.field == field


def test_new_trace_ids_of_nothing() -> None:
    assert records.new_trace_ids(0) == []


def test_make_record_keeps_given_trace_id_and_sets_ledger_fields() -> None:
    rec = records.make_record(9, "torn", "_system", TIME,
                              {**SYSTEM_FIELDS["torn"], "trace_id": TRACE})
    assert rec["trace_id"] == TRACE
    assert (rec["v"], rec["seq"], rec["kind"], rec["tenant"]) == (1, 9, "torn", "_system")


# --- canonical JSON ----------------------------------------------------------------------------


def ref_jcs(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


@pytest.mark.parametrize("line", [
    b'{"a":1, "b":2}',
    b'{"a":1,"b":2} ',
    b' {"a":1,"b":2}',
    b'{"a":1,"b":2}\n',
    b'{"a" :1,"b":2}',
    b'{\n"a":1,"b":2}',
    b'[1, 2]',
    b'{"b":1,"a":2}',
    b'{"a":{"d":1,"c":2}}',
    b'{"a":1,"a":1}',
    b'{"a":1,"a":2}',
    b'{"a":{"x":1,"x":1}}',
    b'"\\u0041"',
    b'{"\\u0061":1}',
    b'"\\/"',
    b'"\\u001F"',
    b'"\\u000a"',
    b'"\\u0008"',
    b'"\\u00e9"',
    b'"\\u2028"',
    b'"\\ud83d\\ude00"',
    b"1e2",
    b"1E2",
    b"-0",
    b"\xef\xbb\xbf{}",
    b"",
    b"nul",
    b"01",
])
def test_decode_refuses_non_canonical_lines(line: bytes) -> None:
    with pytest.raises(CanonicalError):
        canonical.decode(line)


@pytest.mark.parametrize("line", [b'"\xff"', b'{"a":"\xc0\x80"}', b'"\xed\xa0\x80"',
                                  b'{"\xfe":1}'])
def test_decode_refuses_invalid_utf8_with_canonical_error(line: bytes) -> None:
    # Callers (writer recovery, reader.find) catch CanonicalError to skip a bad line.
    with pytest.raises(CanonicalError):
        canonical.decode(line)


@pytest.mark.parametrize("line", [b"{}", b"[]", b"null", b"true", b"0", b"-1", b'""',
                                  b'{"a":[1,{"b":null,"c":false}],"d":"\\u001f\\n"}',
                                  b"9223372036854775807", "\"\u2028\U0001f600\"".encode()])
def test_decode_accepts_canonical_lines(line: bytes) -> None:
    assert canonical.encode(canonical.decode(line)) == line
    assert canonical.decode(line) == json.loads(line)


@pytest.mark.parametrize("cp", [*range(0x20), 0x22, 0x2F, 0x5C, 0x7F, 0x80, 0x9F, 0xE9,
                                0x2028, 0x2029, 0xFEFF, 0xFFFF, 0x1F600, 0x10FFFF])
def test_string_escapes_follow_rfc8785(cp: int) -> None:
    s = chr(cp)
    assert canonical.encode(s) == ref_jcs(s)
    assert canonical.encode({s: s}) == ref_jcs({s: s})
    assert canonical.decode(ref_jcs(s)) == s


def test_control_character_escapes_exactly() -> None:
    # RFC 8785 3.2.2.2 (ECMAScript JSON.stringify): short forms, else \u00xx lower case.
    short = {0x08: b"\\b", 0x09: b"\\t", 0x0A: b"\\n", 0x0C: b"\\f", 0x0D: b"\\r"}
    for cp in range(0x20):
        assert canonical.encode(chr(cp)) == b'"' + short.get(cp, b"\\u%04x" % cp) + b'"'


def test_rfc8785_example_without_numbers() -> None:
    # RFC 8785 section 3.2.3, the example input and output with the "numbers" member
    # removed (floats are outside the ledger's subset).
    source = ('{"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
              ' "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
                ).encode()
    assert canonical.encode(json.loads(source)) == expected
    assert canonical.decode(expected) == json.loads(source)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_encode_matches_reference_and_round_trips(value: Any) -> None:
    line = canonical.encode(value)
    assert line == ref_jcs(value)
    assert canonical.decode(line) == value


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=6))
def test_decode_refuses_any_reordering_of_keys(d: dict[str, int]) -> None:
    items = sorted(d.items())
    reordered = json.dumps(dict(reversed(items)), ensure_ascii=False,
                           separators=(",", ":")).encode()
    assert reordered != ref_jcs(d)
    with pytest.raises(CanonicalError):
        canonical.decode(reordered)
