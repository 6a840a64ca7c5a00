"""The ingest API against the real server (`vantio serve`) on a real unix socket.

Receipts, leaf hashes, checkpoints and roots are recomputed here from the
tenant key printed by `vantio ledger tenant add` and from the bytes on disk.
Every refusal is checked for its status and error, and for leaving nothing on
disk: the refused request carries a unique marker that must not appear in any
file of the ledger, the segments must be byte-for-byte unchanged, and the next
good record must be the only thing that lands.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import ORIGIN, REPO, cli
from service_helpers import (
    Load,
    Reply,
    Server,
    UnixHTTPConnection,
    add_tenant,
    all_files_bytes,
    assert_in_ledger,
    auth,
    canonical,
    check_batch,
    check_single,
    chunked_request,
    fresh_service,
    good_record,
    hmac_hex,
    leaf_hash,
    ledger_lines,
    marker,
    merkle_root,
    open_checkpoint,
    raw_request,
    request,
    running,
    segments_bytes,
    send_raw,
)

from vantio_appliance import writer


@dataclass(frozen=True)
class Svc:
    root: Path
    sock: Path
    server: Server
    writer: str  # API keys, as printed by `vantio ledger tenant add`
    reader: str


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """One server for the module: the refusal table alone is a hundred requests."""
    with fresh_service(tmp_path_factory.mktemp("ingest")) as served:
        yield Svc(*served)


@pytest.fixture
def own_svc(ledger_dir: Path, tmp_path: Path) -> Iterator[Svc]:
    """A server of its own, on the shared ``ledger_dir`` fixture."""
    key, reader = add_tenant(ledger_dir, "acme"), add_tenant(ledger_dir, "auditor", "reader")
    with running(ledger_dir, tmp_path / "ingest.sock", tmp_path / "server.log") as server:
        yield Svc(ledger_dir, tmp_path / "ingest.sock", server, key, reader)


def post(s: Svc, record: dict[str, Any], key: str | None = None) -> Reply:
    return request(s.sock, "POST", "/v1/records", json.dumps(record).encode(),
                   auth(key or s.writer))


def post_batch(s: Svc, records: list[dict[str, Any]], key: str | None = None) -> Reply:
    return request(s.sock, "POST", "/v1/records:batch",
                   json.dumps({"records": records}).encode(), auth(key or s.writer))


def get(s: Svc, path: str, key: str | None = None) -> Reply:
    return request(s.sock, "GET", path, None, auth(key or s.reader, None))


# -- accepted records ------------------------------------------------------------------


def test_single_record_gets_a_receipt_over_its_durable_line(svc: Svc) -> None:
    tag = marker()
    sent = good_record(tag, 4)
    reply = post(svc, sent)
    ack = check_single(reply, svc.writer)  # 201, body fields, x-vantio-signature = HMAC
    assert reply.header("content-type") == "application/json"
    body = reply.json()
    line = ledger_lines(svc.root)[ack.seq]  # durable: on disk when the 201 arrives
    assert body["leaf_hash"] == leaf_hash(line).hex()
    rec = json.loads(line)
    assert canonical(rec) == line, "the stored line is not RFC 8785 canonical"
    assert rec == {**sent, "v": 1, "seq": ack.seq, "kind": "event", "trace_id": ack.trace_id,
                   "tenant": "acme", "time": body["time"], "receipt": ack.receipt}
    t = body["time"]
    assert set(t) == {"mono_ns", "real_ns", "earliest_ns", "latest_ns"}
    assert t["earliest_ns"] <= t["real_ns"] <= t["latest_ns"]
    assert abs(t["real_ns"] - time.time_ns()) < 60 * 10**9


def test_a_given_v4_trace_id_is_kept(svc: Svc) -> None:
    tid = str(uuid.uuid4())
    ack = check_single(post(svc, {**good_record(marker()), "trace_id": tid}), svc.writer)
    assert ack.trace_id == tid
    assert ack.receipt == hmac_hex(svc.writer, tid)
    assert json.loads(ledger_lines(svc.root)[ack.seq])["trace_id"] == tid


def test_quotes_and_colons_in_values_and_spaced_keys_are_accepted(svc: Svc) -> None:
    """What the duplicate-key check must not mistake for a second key."""
    body = (b'{ "action" : "permit", "proc" : {"cgroup": "/a\\":b\\" :c", "pid" :7},'
            b' "target_host":"h:1"}')
    reply = request(svc.sock, "POST", "/v1/records", body, auth(svc.writer))
    assert reply.status == 201, reply.body
    line = ledger_lines(svc.root)[json.loads(reply.body)["seq"]]
    assert json.loads(line)["proc"] == {"cgroup": '/a":b" :c', "pid": 7}


def test_naming_the_keys_own_tenant_is_accepted(svc: Svc) -> None:
    ack = check_single(post(svc, {**good_record(marker()), "tenant": "acme"}), svc.writer)
    assert json.loads(ledger_lines(svc.root)[ack.seq])["tenant"] == "acme"


def test_batch_gets_per_record_receipts_and_a_signature_over_all(svc: Svc) -> None:
    tid = str(uuid.uuid4())
    records = [good_record(marker(), i) for i in range(3)]
    records[1]["trace_id"] = tid
    reply = post_batch(svc, records)
    acks = check_batch(reply, svc.writer, 3)
    assert acks[1].trace_id == tid
    lines = assert_in_ledger(svc.root, acks)
    body = reply.json()["records"]
    for sent, ack, item in zip(records, acks, body, strict=True):
        rec = json.loads(lines[ack.seq])
        assert {k: rec[k] for k in sent} == sent  # in the order sent
        assert rec["time"] == item["time"] == body[0]["time"]  # one group, one moment


def test_reader_gets_the_record_and_a_proof_the_cli_accepts(svc: Svc, tmp_path: Path) -> None:
    ack = check_single(post(svc, good_record(marker())), svc.writer)
    reply = get(svc, f"/v1/records/{ack.trace_id}")  # at once: the hot tier
    assert reply.status == 200, str(reply)
    line = ledger_lines(svc.root)[ack.seq]
    got = reply.json()
    assert set(got) == {"record", "seq", "proof"}
    assert got["seq"] == ack.seq
    assert line in reply.body and canonical(got["record"]) == line  # the exact stored line
    proof = got["proof"]
    assert proof.startswith(f"c2sp.org/tlog-proof@v1\nindex {ack.seq}\n"), proof
    cp = open_checkpoint(proof.split("\n\n", 1)[1].encode(), (svc.root / "vkey").read_text())
    assert cp.origin == ORIGIN and cp.size > ack.seq
    (tmp_path / "p.tlog-proof").write_text(proof)
    (tmp_path / "record").write_bytes(line + b"\n")
    res = cli("ledger", "verify-proof", tmp_path / "p.tlog-proof", "--vkey",
              svc.root / "vkey", "--record", tmp_path / "record")
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr
    (tmp_path / "record").write_bytes(line.replace(b'"action":"permit"', b'"action":"block"')
                                      + b"\n")
    res = cli("ledger", "verify-proof", tmp_path / "p.tlog-proof", "--vkey",
              svc.root / "vkey", "--record", tmp_path / "record")
    assert res.returncode == 1, res.stdout + res.stderr


def test_checkpoint_is_signed_and_covers_the_ledger(svc: Svc) -> None:
    check_single(post(svc, good_record(marker())), svc.writer)
    reply = get(svc, "/v1/checkpoint")
    assert reply.status == 200, str(reply)
    cp = open_checkpoint(reply.body, (svc.root / "vkey").read_text())
    # and by the epoch in force (the module runs well inside epoch 0's 15 minutes)
    assert open_checkpoint(reply.body, (svc.root / "epoch0.vkey").read_text()) == cp
    lines = ledger_lines(svc.root)
    assert cp.origin == ORIGIN
    assert cp.size == len(lines)  # every durable record, nothing more
    assert cp.root == merkle_root([leaf_hash(lines[i]) for i in range(cp.size)])


def test_unknown_trace_id_is_404(svc: Svc) -> None:
    for tid in (str(uuid.uuid4()), "not-a-trace-id"):
        reply = get(svc, f"/v1/records/{tid}")
        assert reply.status == 404, str(reply)
        assert reply.json()["error"] == "no record with this trace id"  # nothing expired


def test_text_endpoints_send_one_content_type(svc: Svc) -> None:
    """A response has one Content-Type (RFC 9110 section 8.3): text for these two."""
    for path, key in (("/v1/checkpoint", svc.reader), ("/metrics", None)):
        reply = request(svc.sock, "GET", path, None, auth(key, None) if key else {})
        assert reply.status == 200
        types = reply.all("content-type")
        assert len(types) == 1 and types[0].startswith("text/plain"), (path, types)


def _metrics(s: Svc) -> dict[str, float]:
    reply = request(s.sock, "GET", "/metrics")
    assert reply.status == 200, str(reply)
    out = {}
    for line in reply.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_and_move(svc: Svc) -> None:
    before = _metrics(svc)
    for name in ("vantio_records_total", "vantio_commits_total", "vantio_queue_depth",
                 "vantio_fsync_seconds_count", "vantio_fsync_seconds_sum"):
        assert name in before, sorted(before)
    check_single(post(svc, good_record(marker())), svc.writer)
    check_single(post(svc, good_record(marker())), svc.writer)
    check_batch(post_batch(svc, [good_record(marker(), i) for i in range(3)]), svc.writer, 3)
    assert post(svc, {"action": "block", "prompt": "x"}).status == 422
    assert post(svc, {"action": "block"}, key="vt_unknown").status == 401
    assert request(svc.sock, "POST", "/v1/records", b"{}", auth(svc.writer, "text/plain")
                   ).status == 415
    after = _metrics(svc)

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert delta("vantio_records_total") == 5
    assert 1 <= delta("vantio_commits_total") <= 3  # sequential requests: one group each
    assert delta("vantio_fsync_seconds_count") >= 3
    assert delta("vantio_fsync_seconds_sum") > 0
    # the histogram's buckets are cumulative and the last one counts every fdatasync
    buckets = [v for k, v in after.items() if k.startswith("vantio_fsync_seconds_bucket")]
    assert buckets == sorted(buckets) and len(buckets) >= 2
    assert after['vantio_fsync_seconds_bucket{le="+Inf"}'] == after["vantio_fsync_seconds_count"]
    assert after["vantio_queue_depth"] == 0  # at rest
    for status in ("422", "401", "415"):
        assert delta(f'vantio_refusals_total{{status="{status}"}}') == 1, status
    if "vantio_ledger_size" in after:
        assert after["vantio_ledger_size"] == len(ledger_lines(svc.root))


def test_openapi_served_equals_the_committed_document(svc: Svc) -> None:
    reply = request(svc.sock, "GET", "/openapi.json")
    assert reply.status == 200
    committed = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert reply.json() == committed
    assert committed["paths"].keys() >= {"/v1/records", "/v1/records:batch",
                                         "/v1/records/{trace_id}", "/v1/checkpoint"}


def test_socket_is_0660(svc: Svc) -> None:
    st = svc.sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)


def test_a_tenant_added_while_running_can_write(own_svc: Svc) -> None:
    pid = own_svc.server.pid
    key = add_tenant(own_svc.root, "newco")
    deadline = time.monotonic() + 3  # the key store is re-read at most once a second
    while (reply := post(own_svc, good_record(marker()), key)).status == 401:
        assert time.monotonic() < deadline, "the new tenant's key is still unknown"
        time.sleep(0.1)
    ack = check_single(reply, key)
    assert json.loads(ledger_lines(own_svc.root)[ack.seq])["tenant"] == "newco"
    auditor = add_tenant(own_svc.root, "auditor2", "reader")
    deadline = time.monotonic() + 3
    while (reply := get(own_svc, f"/v1/records/{ack.trace_id}", auditor)).status == 401:
        assert time.monotonic() < deadline, "the new reader's key is still unknown"
        time.sleep(0.1)
    assert reply.status == 200, str(reply)
    assert own_svc.server.pid == pid and own_svc.server.proc is not None
    assert own_svc.server.proc.poll() is None  # no restart


@pytest.mark.parametrize("batch_size", [20, 1000])  # 1000: large batches go to helpers
def test_sigterm_under_load_drains_and_exits_0(own_svc: Svc, batch_size: int) -> None:
    load = Load(own_svc.sock, own_svc.writer, threads=8, batch_size=batch_size).start()
    try:
        load.wait_for(300, timeout=20)
        assert load.acked() >= 300, (load.statuses, own_svc.server.logs())
        deadline = time.monotonic() + 60  # the batches grow from 1: until helpers have some
        while batch_size == 1000 and _metrics(own_svc)["vantio_helper_batches_total"] < 3:
            assert time.monotonic() < deadline, "no batch reached a helper"
            time.sleep(0.05)
        code = own_svc.server.terminate(timeout=10)
    finally:
        load.finish()
    assert code == 0, own_svc.server.logs()
    assert own_svc.server.stopped_in is not None and own_svc.server.stopped_in < 5
    assert own_svc.server.wait_group_gone() == [], "the worker outlived the main process"
    assert not load.bad, load.bad[:5]
    assert all(s < 500 for s in load.statuses), load.statuses
    lines = assert_in_ledger(own_svc.root, load.acks)  # every 201 is on disk
    assert own_svc.root.joinpath("ledger.worm").read_bytes().endswith(b"\n")
    cp = open_checkpoint((own_svc.root / "checkpoint").read_bytes(),
                         (own_svc.root / "vkey").read_text())
    assert cp.size == len(lines)  # the queue was drained and the last checkpoint published
    res = cli("ledger", "verify", "--dir", own_svc.root)
    assert res.returncode == 0, res.stdout + res.stderr



def test_sigterm_while_the_service_opens_the_ledger_stops_it(ledger_dir: Path,
                                                              tmp_path: Path) -> None:
    """A SIGTERM while the ledger opens (before the socket is served) stops the service
    once the ledger is open: it is not lost, and nothing is served."""
    add_tenant(ledger_dir, "acme")
    with writer.Ledger(ledger_dir) as led:  # big enough that opening it takes a while
        for n in range(150):
            led.append([writer.submission("acme", good_record("big", n * 1000 + i))
                        for i in range(1000)])
    server = Server(ledger_dir, tmp_path / "s.sock", tmp_path / "server.log")
    proc = server.launch()
    try:
        lock, deadline = ledger_dir / "lock", time.monotonic() + 20
        while time.monotonic() < deadline:  # until the service holds the ledger: it is opening
            with contextlib.suppress(OSError, ValueError):
                if int(lock.read_text()) == proc.pid:
                    break
            time.sleep(0.002)
        else:
            raise AssertionError(f"the service never took the ledger lock:\n{server.logs()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            assert request(server.sock, "GET", "/healthz", timeout=0.05).status != 200, \
                "the service was already serving: the test missed its window"
        code = server.terminate(timeout=20)
        assert code is not None, "SIGTERM during start-up was lost: the service kept running"
        assert server.wait_group_gone() == []
    finally:
        if proc.poll() is None:
            server.kill()
        server.sock.unlink(missing_ok=True)


def test_serve_on_a_ledger_held_by_another_writer_exits_2(ledger_dir: Path,
                                                          tmp_path: Path) -> None:
    with writer.Ledger(ledger_dir):  # the one writer: the service must refuse, not share
        res = cli("serve", "--dir", ledger_dir, "--socket", tmp_path / "s.sock")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "held by another writer" in res.stderr
    assert "could not start" in res.stderr


@pytest.mark.parametrize("who", ["unknown-key", "reader-key", "text-plain"])
def test_an_early_refusal_still_lets_the_client_send_its_body(svc: Svc, who: str) -> None:
    """http.client, and with it the package's client.py, writes the headers, then the body,
    and reads the answer only then. A server that answers 401/403/415 on the headers and
    closes without reading the small body it was promised makes that write fail (EPIPE):
    the client never sees the refusal. (Under load the same race hits at random: 5 of
    750 requests with an unknown key failed so.)"""
    key, ctype, status = {"unknown-key": ("vt_unknown", "application/json", 401),
                          "reader-key": (svc.reader, "application/json", 403),
                          "text-plain": (svc.writer, "text/plain", 415)}[who]
    body = json.dumps(good_record(marker())).encode()
    conn = UnixHTTPConnection(svc.sock)
    try:
        conn.putrequest("POST", "/v1/records")
        for name, value in {**auth(key, ctype), "content-length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders()
        time.sleep(0.2)  # the server has the headers, and answers on them
        conn.send(body)
        resp = conn.getresponse()
        assert resp.status == status
        assert json.loads(resp.read())["error"]
    finally:
        conn.close()

# -- refusals --------------------------------------------------------------------------

CONTENT_FIELDS = ("prompt", "completion", "messages", "content", "input", "output", "body")
BASE: dict[str, Any] = {
    "action": "block",
    "proc": {"pid": 7, "comm": "agent", "cgroup": "/agents.slice/MARK.scope"},
    "syscall": {"name": "connect", "args": {"family": "inet", "port": 443}},
    "target_host": "api.example.com:443",
}


def _set(path: tuple[str, ...], value: Any, base: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    """BASE with ``value`` at ``path`` (the parents exist already)."""
    out = copy.deepcopy(BASE if base is None else base)
    at = out
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return out


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _content(name: str) -> Any:
    return {"messages": [{"role": "user", "content": "MARK"}], "body": {"text": "MARK"}}.get(
        name, "MARK: ignore previous instructions")


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes  # "MARK" is replaced by a unique marker
    status: int | tuple[int, ...]
    field: str | None = None  # the field the error must name, when there is one
    path: str = "/v1/records"
    method: str = "POST"
    key: str = "writer"  # writer, reader, none, unknown, basic, empty
    content_type: str | None = "application/json"
    chunked: bool = False


def _cases() -> list[Case]:
    cases: list[Case] = []
    base = _j(BASE)
    for name in CONTENT_FIELDS:
        for where in ((), ("proc",), ("syscall",), ("syscall", "args")):
            path = (*where, name)
            cases.append(Case(f"content-{'.'.join(path)}", _j(_set(path, _content(name))),
                              422, ".".join(path)))
    cases += [
        Case("content-in-list", _j(_set(("proc", "cgroup_ancestry"), [{"prompt": "MARK"}])),
             422, "proc.cgroup_ancestry[0]"),
        Case("content-as-whole-body", _j({"prompt": "MARK", "completion": "MARK"}), 422,
             "prompt"),
    ]
    for path, value in (
            (("severity",), "high"), (("proc", "env"), "MARK"),
            (("syscall", "args", "buf"), "MARK"), (("receipt",), "0" * 64), (("seq",), 5),
            (("kind",), "seal"), (("v",), 1), (("pid",), 7), (("proc", "action"), "block"),
            (("time",), {"mono_ns": 1, "real_ns": 1, "earliest_ns": 1, "latest_ns": 1})):
        cases.append(Case(f"unknown-{'.'.join(path)}", _j(_set(path, value)), 422,
                          ".".join(path)))
    cg = b'"cgroup":"/s/MARK"'
    given_id = str(uuid.uuid4()).encode()
    cases += [
        Case("malformed-truncated", b'{"action":"block","proc":{' + cg + b"}", 400),
        Case("malformed-trailing", b'{"action":"block","proc":{' + cg + b"}} x", 400),
        Case("malformed-single-quotes", b"{'action':'block','proc':{'cgroup':'MARK'}}", 400),
        Case("malformed-two-values", b'{"action":"block","proc":{' + cg + b"}}{}", 400),
        Case("malformed-empty", b"", 400),
        Case("malformed-invalid-utf8", b'{"action":"block","proc":{"cgroup":"/MARK\xff"}}', 400),
        Case("malformed-deep-nesting", b'{"action":"block","proc":{' + cg + b'},"syscall":'
             + b"[" * 5000 + b"]" * 5000 + b"}", (400, 422)),
        # the same with a key that occurs twice (the duplicate-key check runs first)
        Case("malformed-truncated-repeated-key",
             b'{"action":"block","proc":{' + cg + b'},"action":', 400),
        Case("malformed-invalid-utf8-repeated-key",
             b'{"action":"block","proc":{"cgroup":"/MARK\xff"},"action":"block"}', (400, 422)),
        Case("malformed-deep-nesting-repeated-key", b'{"action":"block","proc":{' + cg
             + b'},"syscall":' + b"[" * 5000 + b"]" * 5000 + b',"action":"block"}', (400, 422)),
        Case("malformed-lone-surrogate-repeated-key",
             b'{"action":"block","proc":{"cgroup":"/MARK\\ud800"},"action":"permit"}',
             (400, 422)),
    ]
    cases += [
        Case("duplicate-top", b'{"action":"block","action":"permit","proc":{' + cg + b"}}",
             422, "action"),
        Case("duplicate-top-object", b'{"action":"block","proc":{"pid":1},"proc":{' + cg
             + b"}}", 422, "proc"),
        Case("duplicate-proc.pid", b'{"action":"block","proc":{"pid":1,' + cg
             + b',"pid":2}}', 422, "proc.pid"),
        Case("duplicate-syscall.args.port", b'{"action":"block","proc":{' + cg
             + b'},"syscall":{"name":"connect","args":{"port":1,"port":2}}}', 422,
             "syscall.args.port"),
        Case("duplicate-top-escaped", b'{"action":"permit","\\u0061ction":"block","proc":{'
             + cg + b"}}", 422, "action"),
        Case("duplicate-proc.pid-escaped", b'{"action":"block","proc":{"pid":1,' + cg
             + b',"p\\u0069d":2}}', 422, "proc.pid"),
        Case("duplicate-proc.cgroup-escaped", b'{"action":"block","proc":{' + cg
             + b',"cgro\\u0075p":"/other"}}', 422, "proc.cgroup"),
        # a spaced colon would hide a key from a count of '":'; a quote in a string adds one
        Case("duplicate-top-spaced-colon", b'{"action":"block", "action" :"permit","proc":{'
             + cg + b"}}", 422, "action"),
        Case("duplicate-proc.pid-beside-quoted-colon", b'{"action":"block","proc":{'
             b'"cgroup":"/MARK\\":x","pid":1,"pid":2}}', 422, "proc.pid"),
        # keys the ledger writes into every record line itself: one given twice is refused
        # like any other, not merged with the ledger's
        Case("duplicate-tenant", b'{"action":"block","tenant":"acme","tenant":"acme","proc":{'
             + cg + b"}}", 422, "tenant"),
        Case("duplicate-trace_id", b'{"action":"block","trace_id":"' + given_id + b'","trace_id":"'
             + given_id + b'","proc":{' + cg + b"}}", 422, "trace_id"),
    ]
    for path, raw in ((("bytes_severed",), "1.5"), (("bytes_severed",), "1.0"),
                      (("bytes_severed",), "1e3"), (("proc", "pid"), "7.0"),
                      (("syscall", "args", "port"), "443.0"),
                      (("bytes_severed",), "-0.0")):
        body = _j(_set(path, "@@")).replace(b'"@@"', raw.encode())
        cases.append(Case(f"float-{'.'.join(path)}={raw}", body, 422, ".".join(path)))
    cases.append(Case("float-in-list", _j(_set(("proc", "cgroup_ancestry"), [1, 2.5])), 422,
                      "proc.cgroup_ancestry[1]"))
    for path, raw in ((("bytes_severed",), "NaN"), (("bytes_severed",), "Infinity"),
                      (("bytes_severed",), "-Infinity"), (("proc", "pid"), "NaN")):
        body = _j(_set(path, "@@")).replace(b'"@@"', raw.encode())
        # not JSON at all (RFC 8259): 400 malformed; docs/ingest.md lists NaN under 422
        cases.append(Case(f"literal-{'.'.join(path)}={raw}", body, (400, 422)))
    wrong_types: list[tuple[tuple[str, ...], Any]] = [
            (("action",), 1), (("action",), None), (("action",), "allow"),
            (("action",), ["block"]), (("proc",), []), (("proc",), "MARK"),
            (("proc", "pid"), "7"), (("proc", "pid"), -1), (("proc", "pid"), 2**32),
            (("proc", "pid"), True), (("proc", "comm"), "MARK" + "x" * 17),
            (("proc", "comm"), ""), (("proc", "cgroup"), 5),
            (("proc", "cgroup_ancestry"), "1,2"), (("proc", "cgroup_ancestry"), [1] * 65),
            (("syscall",), "connect"), (("syscall", "name"), "Connect!"),
            (("syscall", "name"), "x" * 33), (("syscall", "args", "family"), "bluetooth"),
            (("syscall", "args", "port"), 65536), (("syscall", "args", "port"), "443"),
            (("syscall", "args", "size"), -5), (("target_host",), "api.example.com"),
            (("target_host",), "api.example.com:65536"), (("target_host",), "h:443\n"),
            (("target_host",), 443), (("bytes_severed",), True),
            (("bytes_severed",), "10"), (("bytes_severed",), 2**63),
            (("bytes_severed",), -1), (("bytes_severed",), 10**30)]
    for path, wrong in wrong_types:
        cases.append(Case(f"type-{'.'.join(path)}={wrong!r:.20}", _j(_set(path, wrong)), 422,
                          ".".join(path)))
    cases += [
        Case("type-syscall-without-name", _j(_set(("syscall",), {"args": {"port": 1}})), 422,
             "syscall.name"),
        Case("type-empty-object", b"{}", 422, "action"),
        Case("type-array-body", _j([BASE]), 422),
        Case("type-string-body", b'"MARK"', 422),
        Case("type-null-body", b"null", 422),
    ]
    v4 = str(uuid.uuid4())
    for label, tid in (("v1", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
                       ("upper-case", v4.upper()), ("no-hyphens", v4.replace("-", "")),
                       ("variant-c", v4[:19] + "c" + v4[20:]), ("newline", v4 + "\n"),
                       ("braces", "{" + v4 + "}"), ("short", v4[:-1]), ("marker", "MARK"),
                       ("int", 5)):
        cases.append(Case(f"trace-id-{label}", _j(_set(("trace_id",), tid)), 422, "trace_id"))
    cases += [
        Case("tenant-other", _j(_set(("tenant",), "other")), 403, "tenant"),
        Case("tenant-existing-reader", _j(_set(("tenant",), "auditor")), 403, "tenant"),
        Case("tenant-system", _j(_set(("tenant",), "_system")), (403, 422), "tenant"),
        Case("tenant-bad-name", _j(_set(("tenant",), "Other!")), 422, "tenant"),
        Case("ctype-text-plain", base, 415, content_type="text/plain"),
        Case("ctype-missing", base, 415, content_type=None),
        Case("ctype-form", base, 415, content_type="application/x-www-form-urlencoded"),
        Case("ctype-json-seq", base, 415, content_type="application/json-seq"),
        Case("auth-missing", base, 401, key="none"),
        Case("auth-unknown-key", base, 401, key="unknown"),
        Case("auth-basic-scheme", base, 401, key="basic"),
        Case("auth-empty-bearer", base, 401, key="empty"),
        Case("auth-reader-posts", base, 403, key="reader"),
        Case("auth-reader-posts-batch", _j({"records": [BASE]}), 403, key="reader",
             path="/v1/records:batch"),
        Case("auth-writer-reads-checkpoint", b"", 403, method="GET", path="/v1/checkpoint"),
        Case("auth-writer-reads-record", b"", 403, method="GET", path="/v1/records/{TID}"),
        Case("auth-missing-reads-record", b"", 401, method="GET", key="none",
             path="/v1/records/{TID}"),
    ]
    big = _j(_set(("proc", "cgroup"), "/MARK" + "x" * 70_000))
    huge = _j({"records": [_set(("proc", "cgroup"), "/MARK/" + "x" * 4200)] * 1000})
    assert len(huge) > 4 * 2**20
    cases += [
        Case("oversize-content-length", big, 413),
        Case("oversize-chunked", big, 413, chunked=True),
        Case("oversize-batch-content-length", huge, 413, path="/v1/records:batch"),
        Case("oversize-batch-chunked", huge, 413, path="/v1/records:batch", chunked=True),
    ]
    good = _set(("proc", "cgroup"), "/MARK")
    batch = "/v1/records:batch"
    cases += [
        Case("batch-content-field", _j({"records": [good, _set(("prompt",), "MARK")]}), 422,
             "records[1].prompt", path=batch),
        Case("batch-float", _j({"records": [good, good, _set(("proc", "pid"), "@")]}).replace(
            b'"@"', b"7.5"), 422, "records[2].proc.pid", path=batch),
        Case("batch-duplicate-key", b'{"records":[' + _j(good) + b',{"action":"block",'
             b'"action":"permit","proc":{"cgroup":"/MARK"}}]}', 422, "records[1].action",
             path=batch),
        Case("batch-duplicate-key-spaced-colon", b'{"records":[' + _j(good)
             + b',{"action":"block","proc":{"cgroup":"/MARK"},"action"\n:"permit"}]}', 422,
             "records[1].action", path=batch),
        Case("batch-duplicate-key-escaped", b'{"records":[' + _j(good) + b',{"action":"block",'
             b'"\\u0061ction":"permit","proc":{"cgroup":"/MARK"}}]}', 422, "records[1].action",
             path=batch),
        Case("batch-trace-id-upper", _j({"records": [good, _set(
            ("trace_id",), v4.upper())]}), 422, "records[1].trace_id", path=batch),
        Case("batch-not-an-object", _j({"records": [good, "MARK"]}), 422, path=batch),
        Case("batch-tenant-other", _j({"records": [good, _set(("tenant",), "other")]}), 403,
             "records[1].tenant", path=batch),
        Case("batch-of-one-tenant-other", _j({"records": [_set(("tenant",), "other")]}), 403,
             "records[0].tenant", path=batch),
        Case("batch-1001", _j({"records": [good] * 1001}), 413, path=batch),
        Case("batch-empty", b'{"records":[]}', 422, "records", path=batch),
        Case("batch-extra-key", _j({"records": [good], "prompt": "MARK"}), 422, "prompt",
             path=batch),
        Case("batch-records-twice", b'{"records":[' + _j(good) + b'],"records":['
             + _j(good) + b"]}", 422, "records", path=batch),
        Case("batch-records-object", _j({"records": good}), 422, "records", path=batch),
        Case("batch-no-records", _j({"record": [good]}), 422, path=batch),
        Case("batch-malformed", b'{"records":[' + _j(good), 400, path=batch),
        Case("batch-nan", b'{"records":[' + _j(good) + b',{"action":"block","proc":{'
             b'"cgroup":"/MARK"},"bytes_severed":NaN}]}', (400, 422), path=batch),
        Case("batch-ctype", _j({"records": [good]}), 415, path=batch, content_type="text/plain"),
    ]
    return cases


CASES = _cases()


def _headers(s: Svc, case: Case) -> dict[str, str]:
    headers: dict[str, str] = {}
    token = {"writer": f"Bearer {s.writer}", "reader": f"Bearer {s.reader}",
             "unknown": "Bearer vt_" + "A" * 43, "empty": "Bearer ",
             "basic": "Basic " + base64.b64encode(f"acme:{s.writer}".encode()).decode()
             }.get(case.key)
    if token is not None:
        headers["authorization"] = token
    if case.content_type is not None and case.method == "POST":
        headers["content-type"] = case.content_type
    return headers


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_with_a_clear_error_and_nothing_written(svc: Svc, case: Case) -> None:
    mark = marker()
    body = case.body.replace(b"MARK", mark.encode())
    path = case.path
    if "{TID}" in path:  # an existing record: the genesis
        path = path.replace("{TID}", json.loads(ledger_lines(svc.root)[0])["trace_id"])
    headers = _headers(svc, case)
    before = segments_bytes(svc.root)

    data = (chunked_request(path, headers, body) if case.chunked else
            raw_request(case.method, path, headers, body if case.method == "POST" else None))
    reply = send_raw(svc.sock, data, timeout=30)

    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert reply.status in expected, f"{case.id}: expected {expected}, got {reply}"
    assert reply.header("content-type") == "application/json", str(reply)
    err = reply.json()
    assert isinstance(err.get("error"), str) and err["error"], err
    if case.field is not None:
        assert err.get("field") == case.field, f"{case.id}: {err}"
    if reply.status == 401:
        assert (reply.header("www-authenticate") or "").lower().startswith("bearer"), str(reply)

    # nothing of it on disk: segments unchanged, the marker in no file of the ledger
    assert segments_bytes(svc.root) == before, f"{case.id}: the ledger changed"
    assert mark.encode() not in all_files_bytes(svc.root), f"{case.id}: the marker is on disk"
    # and nothing of it waits in the queue: the next record is the only thing that lands
    ack = check_single(post(svc, good_record(marker())), svc.writer)
    after = segments_bytes(svc.root)
    assert after == before + ledger_lines(svc.root)[ack.seq] + b"\n", case.id
    assert mark.encode() not in all_files_bytes(svc.root)



def test_vantio_ingest_sends_lines_and_checks_receipts(own_svc: Svc, tmp_path: Path) -> None:
    """`vantio ingest`: JSON lines in, one ack line per durable record out; a bad line is
    refused by number and never sent; the key comes from a file, not the command line."""
    key_file = tmp_path / "key"
    key_file.write_text(own_svc.writer)
    mark = marker()
    lines = [json.dumps(good_record(marker(), i)) for i in range(1200)]
    lines.insert(700, json.dumps({"action": "block", "prompt": mark}))
    source = tmp_path / "records.jsonl"
    source.write_text("\n".join(lines) + "\n")
    before = len(ledger_lines(own_svc.root))
    run = subprocess.run(
        [sys.executable, "-m", "vantio_appliance.cli", "ingest", str(source), "--socket",
         str(own_svc.sock), "--api-key-file", str(key_file), "--batch", "500"],
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1, run.stderr  # some input refused, the rest processed
    assert "refused line 701: prompt" in run.stderr
    acks = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(acks) == 1200
    stored = ledger_lines(own_svc.root)
    assert len(stored) == before + 1200
    for ack in acks[::97]:
        assert ack["receipt"] == hmac_hex(own_svc.writer, ack["trace_id"])
        assert json.loads(stored[ack["seq"]])["trace_id"] == ack["trace_id"]
    assert mark.encode() not in segments_bytes(own_svc.root)
    no_key = subprocess.run([sys.executable, "-m", "vantio_appliance.cli", "ingest",
                             str(source), "--socket", str(own_svc.sock)],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={k: v for k, v in os.environ.items() if k != "VANTIO_API_KEY"})
    assert no_key.returncode == 2 and "api-key-file" in no_key.stderr
