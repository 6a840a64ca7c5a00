"""The record model: the whitelist of FORMATS.md section 1, and nothing else.

Validation is structural: every record kind is a msgspec Struct that forbids
unknown fields, so content (a prompt, a completion, a message body) has no
field to travel in. msgspec checks types and bounds in C, which is what lets
the verifier re-validate every record at full speed. Errors name the field by
its dotted path and say why, because the operator has only the error to go on.
"""

from __future__ import annotations

import hmac
import os
import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

VERSION: Final = 1
SYSTEM_TENANT: Final = "_system"  # writes the ledger's own records; no client can be it
MAX_INT: Final = 2**63 - 1

# End of input in both Python's and ECMA-262's regexes (the OpenAPI document publishes
# these patterns): Python's $ also matches before a final newline, and \Z is Python's own.
_END: Final = r"(?![\s\S])"
TENANT_PATTERN: Final = rf"^[a-z0-9][a-z0-9_-]{{0,62}}{_END}"
TENANT_RE: Final = re.compile(TENANT_PATTERN)
TRACE_ID_PATTERN: Final = (
    rf"^[0-9a-f]{{8}}-[0-9a-f]{{4}}-4[0-9a-f]{{3}}-[89ab][0-9a-f]{{3}}-[0-9a-f]{{12}}{_END}")
TRACE_ID_RE: Final = re.compile(TRACE_ID_PATTERN)

Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
U32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Port = Annotated[int, Meta(ge=0, le=65535)]
TraceId = Annotated[str, Meta(pattern=TRACE_ID_PATTERN)]
Tenant = Annotated[str, Meta(pattern=TENANT_PATTERN)]
Action = Literal["permit", "block", "quarantine"]


Text16 = Annotated[str, Meta(min_length=1, max_length=16)]
Text64 = Annotated[str, Meta(min_length=1, max_length=64)]
Text255 = Annotated[str, Meta(min_length=1, max_length=255)]
Text512 = Annotated[str, Meta(min_length=1, max_length=512)]
Path4096 = Annotated[str, Meta(min_length=1, max_length=4096)]
Note16K = Annotated[str, Meta(min_length=1, max_length=16384)]
B64Hash = Annotated[str, Meta(min_length=44, max_length=44)]  # base64 of 32 bytes
B64Signature = Annotated[str, Meta(min_length=88, max_length=88)]  # base64 of 64 bytes
Hex256 = Annotated[str, Meta(min_length=64, max_length=64)]


class _Closed(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """A JSON object that admits only its declared fields.

    gc=False: records hold only scalars, lists of ints and other records, so
    they cannot form cycles; untracked, decoding a segment runs twice as fast.
    """


class Time(_Closed):
    """When a record was accepted, and the interval the host can vouch for."""

    mono_ns: Count
    real_ns: Count
    earliest_ns: Count
    latest_ns: Count


class Proc(_Closed):
    pid: U32 | UnsetType = UNSET
    tgid: U32 | UnsetType = UNSET
    uid: U32 | UnsetType = UNSET
    gid: U32 | UnsetType = UNSET
    comm: Text16 | UnsetType = UNSET
    cgroup: Path4096 | UnsetType = UNSET
    cgroup_ancestry: Annotated[list[Count], Meta(max_length=64)] | UnsetType = UNSET


class Args(_Closed):
    """Normalized system-call arguments: addresses and sizes, never buffers."""

    family: Literal["inet", "inet6", "unix"] | UnsetType = UNSET
    address: Text255 | UnsetType = UNSET
    port: Port | UnsetType = UNSET
    proto: Literal["tcp", "udp", "icmp", "raw", "any"] | UnsetType = UNSET
    size: Count | UnsetType = UNSET
    flags: Count | UnsetType = UNSET
    path: Path4096 | UnsetType = UNSET
    argc: Port | UnsetType = UNSET


class Syscall(_Closed):
    name: Annotated[str, Meta(pattern=rf"^[a-z0-9_]{{1,32}}{_END}")]
    args: Args | UnsetType = UNSET


_PORT: Final = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HostPort = Annotated[str, Meta(max_length=262,
                               pattern=rf"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{{1,253}}):{_PORT}{_END}")]


class EventFields(_Closed):
    """What a client may submit for an event: FORMATS.md section 1, without receipt."""

    action: Action
    trace_id: TraceId | UnsetType = UNSET
    proc: Proc | UnsetType = UNSET
    syscall: Syscall | UnsetType = UNSET
    target_host: HostPort | UnsetType = UNSET
    bytes_severed: Count | UnsetType = UNSET

    def record(self, *, seq: int, trace_id: str, tenant: str, time: Time, receipt: str
               ) -> Event:
        """The stored record of this submission (the writer adds what the ledger vouches for)."""
        return Event(v=1, seq=seq, trace_id=trace_id, tenant=tenant, time=time,
                     action=self.action, receipt=receipt, proc=self.proc, syscall=self.syscall,
                     target_host=self.target_host, bytes_severed=self.bytes_severed)


Name32 = Annotated[str, Meta(pattern=rf"^[a-z0-9_]{{1,32}}{_END}")]


class Window(_Closed):
    """A CLOCK_REALTIME interval, in nanoseconds, that a gap's losses fall within."""

    start_ns: Count
    end_ns: Count


class GapFields(_Closed):
    """What a client may submit for a gap: decisions it made but could not record.

    ``kind`` is the one field that tells a gap from an event on the wire (events
    omit it); ``action`` is what happened to the lost decisions: ``block`` when
    they were refused because they could not be recorded, ``permit`` when they
    went through unrecorded.
    """

    kind: Literal["gap"]
    stage: Name32
    lost: Annotated[int, Meta(ge=1, le=MAX_INT)]
    action: Action
    window: Window
    trace_id: TraceId | UnsetType = UNSET
    agent: Text64 | UnsetType = UNSET
    cgroup: Path4096 | UnsetType = UNSET

    def record(self, *, seq: int, trace_id: str, tenant: str, time: Time, receipt: str
               ) -> Gap:
        return Gap(v=1, seq=seq, trace_id=trace_id, tenant=tenant, time=time, stage=self.stage,
                   lost=self.lost, action=self.action, window=self.window, receipt=receipt,
                   agent=self.agent, cgroup=self.cgroup)


# Records as stored. String formats (trace id, receipt, host:port) are enforced on
# input, where they are checked once; a stored record is checked for what the
# evidence rests on: the closed field set, types, bounds.

class _Record(_Closed, tag_field="kind"):
    v: Literal[1]
    seq: Count
    trace_id: Annotated[str, Meta(min_length=36, max_length=36)]
    tenant: Annotated[str, Meta(min_length=1, max_length=63)]
    time: Time


class Event(_Record, tag="event"):
    action: Action
    receipt: Annotated[str, Meta(min_length=64, max_length=64)]
    proc: Proc | UnsetType = UNSET
    syscall: Syscall | UnsetType = UNSET
    target_host: Annotated[str, Meta(min_length=1, max_length=262)] | UnsetType = UNSET
    bytes_severed: Count | UnsetType = UNSET


class Gap(_Record, tag="gap"):
    """A count of decisions that happened and could not be recorded one by one."""

    stage: Annotated[str, Meta(min_length=1, max_length=32)]
    lost: Count
    action: Action
    window: Window
    receipt: Annotated[str, Meta(min_length=64, max_length=64)]
    agent: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    cgroup: Annotated[str, Meta(min_length=1, max_length=4096)] | UnsetType = UNSET


class Genesis(_Record, tag="genesis"):
    origin: Text255
    vkey: Text512


class Seal(_Record, tag="seal"):
    segment: Text64
    checkpoint: Note16K


class Torn(_Record, tag="torn"):
    segment: Text64
    offset: Count
    length: Count


class Epoch(_Record, tag="epoch"):
    """Begins epoch ``epoch``: its key, signed by the previous epoch's (docs/anchoring.md)."""

    epoch: Count
    root: B64Hash  # of the tree of the ``seq`` records before this one
    vkey: Text512
    signature: B64Signature


class Anchor(_Record, tag="anchor"):
    """A checkpoint carried off the host (export) or evidence brought back (import)."""

    direction: Literal["export", "import"]
    size: Count
    root: B64Hash
    manifest: Hex256 | UnsetType = UNSET
    evidence: Annotated[list[Text512], Meta(max_length=256)] | UnsetType = UNSET


Record = Event | Gap | Genesis | Seal | Torn | Epoch | Anchor
Submitted = EventFields | GapFields
SystemRecord = Genesis | Seal | Torn | Epoch | Anchor


class RecordError(ValueError):
    """A record or submission breaks the schema; ``field`` is its dotted path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def validation_error(exc: msgspec.ValidationError, default: str = "record") -> RecordError:
    """Turn msgspec's ``reason - at `$.a.b``` into a RecordError naming ``a.b``."""
    m = _AT.match(str(exc))
    assert m is not None
    reason, path = m["reason"], (m["path"] or "").lstrip(".")
    unknown = _UNKNOWN.match(reason)
    if unknown:
        path = f"{path}.{unknown['name']}" if path else unknown["name"]
        reason = "field not allowed (only whitelisted metadata is accepted)"
    elif reason.startswith("Object missing required field"):
        name = reason.split("`")[1]
        path, reason = (f"{path}.{name}" if path else name), "required"
    return RecordError(path or default, reason)


_SUBMISSION_DECODER: Final = msgspec.json.Decoder(EventFields)
_RECORD_DECODER: Final = msgspec.json.Decoder(Record)


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_trace_ids(n: int) -> list[str]:
    """``n`` random RFC 4122 version 4 UUIDs, lower-case and hyphenated (one urandom call)."""
    h = os.urandom(16 * n).hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
            f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, 32 * n, 32)]


def new_trace_id() -> str:
    """A random RFC 4122 version 4 UUID, lower-case and hyphenated."""
    return new_trace_ids(1)[0]


def receipt(api_key: str, trace_id: str) -> str:
    """Hex HMAC-SHA256 over the trace id, keyed with the tenant's API key (its ASCII bytes)."""
    return hmac.digest(api_key.encode(), trace_id.encode(), "sha256").hex()


def decode_submission(data: bytes) -> EventFields:
    """Parse and validate one submitted event (JSON bytes); the writer adds a missing trace id."""
    try:
        fields: EventFields = _SUBMISSION_DECODER.decode(data)
        return fields
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RecordError("record", f"not JSON: {exc}") from None


def decode_submissions(data: bytes) -> list[EventFields]:
    """Parse and validate JSON lines of submissions in one call (blank lines are skipped).

    Raises RecordError for the first bad line; callers that must name every
    bad line fall back to ``decode_submission`` line by line.
    """
    try:
        fields: list[EventFields] = _SUBMISSION_DECODER.decode_lines(data)
        return fields
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RecordError("record", f"not JSON: {exc}") from None


def submission_fields(fields: Any) -> EventFields:
    """Validate an already-parsed submission (a dict); the writer adds a missing trace id."""
    if type(fields) is not dict:
        raise RecordError("record", f"expected object, got {type(fields).__name__}")
    try:
        out: EventFields = msgspec.convert(fields, EventFields)
        return out
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


def check_submission(fields: Any) -> dict[str, Any]:
    """Validate a submission; return it as a new dict with its trace id."""
    checked = submission_fields(fields)
    if checked.trace_id is UNSET:
        checked.trace_id = new_trace_id()
    out: dict[str, Any] = msgspec.to_builtins(checked)
    return out


def decode_record(line: bytes) -> Record:
    """Parse and validate a record line (without its newline); canonical form is not checked."""
    try:
        rec: Record = _RECORD_DECODER.decode(line)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RecordError("record", f"not JSON: {exc}") from None
    return rec


def check_record(record: Any) -> None:
    """Validate a record (a dict) read back from a ledger, whatever its kind."""
    try:
        rec = msgspec.convert(record, Record)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    check_tenant(rec)


def check_tenant(rec: Record) -> None:
    """Events and gaps belong to tenants; the ledger's own records to SYSTEM_TENANT."""
    if isinstance(rec, Event | Gap):
        if not TENANT_RE.fullmatch(rec.tenant):
            raise RecordError("tenant", "not a tenant name")
    elif rec.tenant != SYSTEM_TENANT:
        raise RecordError("tenant", f"{type(rec).__name__.lower()} records belong to "
                          f"{SYSTEM_TENANT}")


def make_record(seq: int, kind: str, tenant: str, time: Time,
                fields: dict[str, Any]) -> dict[str, Any]:
    """Assemble a record as a dict; ``fields`` must already be valid for ``kind``."""
    record = dict(fields)
    record.setdefault("trace_id", new_trace_id())
    record.update(v=VERSION, seq=seq, kind=kind, tenant=tenant, time=msgspec.to_builtins(time))
    return record
