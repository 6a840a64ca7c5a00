"""Retention (docs/ledger.md "Retention"): sealed segments go warm (gzip, +i by real
chattr) after --warm-after and stay verifiable; nothing is deleted before --retain-for;
`vantio ledger expire` deletes the oldest after their end and the rest still verifies.
"now" is injected with --now, never slept for."""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from ledger_helpers import FS_IMMUTABLE_FL, append_events, cli, lsattr, raw_flags
from service_helpers import add_tenant, auth, canonical, request, running
from test_anchor import _failed, _remanifest, _standalone, _statuses, _trusted, _verify

from vantio_appliance import reader, retention, writer
from vantio_appliance.layout import Layout

pytestmark = pytest.mark.root
YEAR = 365.25 * 86_400


def _at(years: float) -> str:
    """An ISO date ``years`` from now, for --now."""
    return dt.datetime.fromtimestamp(dt.datetime.now(dt.UTC).timestamp() + years * YEAR,
                                     dt.UTC).isoformat()


@pytest.fixture
def sealed(ledger_dir: Path) -> list[str]:
    """Three sealed segments and an active one; returns the sealed segments' names."""
    with writer.Ledger(ledger_dir) as ledger:
        names = []
        for i in range(3):
            append_events(ledger, 4, start=i * 4)
            names.append(ledger.active)
            ledger.seal()
        append_events(ledger, 2, start=100)
    return names


def _retain(root: Path, *args: str) -> list[dict[str, int | str]]:
    res = cli("ledger", "retain", "--dir", root, "--json", *args)
    assert res.returncode == 0, res.stderr
    moved: list[dict[str, int | str]] = json.loads(res.stdout)
    return moved


def _ledger_verify(root: Path) -> dict[str, object]:
    res = cli("ledger", "verify", "--dir", root, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report: dict[str, object] = json.loads(res.stdout)
    return report


def test_nothing_moves_before_warm_after(ledger_dir: Path, sealed: list[str]) -> None:
    assert _retain(ledger_dir, "--now", _at(2.9)) == []
    assert _retain(ledger_dir, "--now", _at(5), "--warm-after", "6y") == []
    assert Layout(ledger_dir).warm_names() == []


def test_due_segments_go_warm_immutable_and_stay_verifiable(
        ledger_dir: Path, sealed: list[str], tmp_path: Path, needs_root_flags: None) -> None:
    layout = Layout(ledger_dir)
    before = {n: (layout.segments / n).read_bytes() for n in sealed}
    lines_before = [ln.data for ln in reader.lines(layout)]
    moved = _retain(ledger_dir, "--now", _at(3.01))
    assert [m["segment"] for m in moved] == sealed
    assert layout.hot_names() == [layout.segment_names()[-1]]  # only the active one is hot
    for n in sealed:
        warm = layout.warm_path(n)
        assert gzip.decompress(warm.read_bytes()) == before[n]
        assert raw_flags(warm) & FS_IMMUTABLE_FL and "i" in lsattr(warm)
        with pytest.raises(PermissionError) as err:  # WORM: not even root deletes it
            warm.unlink()
        assert err.value.errno == errno.EPERM
    report = _ledger_verify(ledger_dir)
    segs = report["segments"]
    assert isinstance(segs, list) and [s["flags"] for s in segs] == ["+i"] * 3 + ["+a"]
    assert report["warnings"] == []
    assert [ln.data for ln in reader.lines(layout)] == lines_before
    # a proof of a warm record, and an anchor bundle with a custodial copy of warm segments
    assert cli("ledger", "proof", "--dir", ledger_dir, "--seq", "3").returncode == 0
    res = cli("anchor", "export", "--dir", ledger_dir, "--to", tmp_path, "--custodial",
              "--json")
    assert res.returncode == 0, res.stderr
    b = Path(json.loads(res.stdout)["bundle"])
    assert (b / "segments" / sealed[0]).read_bytes() == before[sealed[0]]
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report2 = _verify(b, keys)
    assert code == 0 and _statuses(report2)["custodial"] == "ok", report2
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _standalone(b, keys, outside)[0] == 0
    # and the writer opens without its state cache, rehashing warm segments
    layout.state.unlink()
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 1, start=200)
    _ledger_verify(ledger_dir)


def test_a_regulator_export_reads_warm_segments(ledger_dir: Path, sealed: list[str],
                                                tmp_path: Path) -> None:
    _retain(ledger_dir, "--now", _at(3.5))
    assert Layout(ledger_dir).hot_names() == [Layout(ledger_dir).segment_names()[-1]]
    res = cli("export", "--dir", ledger_dir, "--from", "2000-01-01", "--to", _at(1),
              "--out", tmp_path / "r", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["first"] == 0
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(tmp_path / "r", keys)
    assert code == 0 and _statuses(report)["range"] == "ok", report


def test_a_tampered_warm_segment_is_found(ledger_dir: Path, sealed: list[str]) -> None:
    layout = Layout(ledger_dir)
    _retain(ledger_dir, "--now", _at(4))
    warm = layout.warm_path(sealed[1])
    data = gzip.decompress(warm.read_bytes()).replace(b'"pid":', b'"pid":7', 1)
    retention._clear_flags(warm)
    warm.write_bytes(gzip.compress(data))
    res = cli("ledger", "verify", "--dir", ledger_dir)
    assert res.returncode == 1 and sealed[1] in res.stdout


def test_a_move_cut_short_is_finished(ledger_dir: Path, sealed: list[str]) -> None:
    """A crash after the warm copy, before the hot file went: both exist; readers count
    the segment once, and the next run drops the hot file."""
    layout = Layout(ledger_dir)
    layout.warm.mkdir()
    data = (layout.segments / sealed[0]).read_bytes()
    layout.warm_path(sealed[0]).write_bytes(gzip.compress(data))
    assert layout.segment_names().count(sealed[0]) == 1
    _ledger_verify(ledger_dir)
    assert _retain(ledger_dir, "--now", _at(1)) == []  # none due, the cut move finished
    assert sealed[0] not in layout.hot_names() and sealed[0] in layout.warm_names()
    _ledger_verify(ledger_dir)


def test_no_deletion_before_the_retention_end(ledger_dir: Path, sealed: list[str]) -> None:
    layout = Layout(ledger_dir)
    _retain(ledger_dir, "--now", _at(3.5))
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(5.9), "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == []
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(5.9), "--upto", sealed[0])
    assert res.returncode == 1 and "is retained until" in res.stderr
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(7), "--retain-for", "10y",
              "--upto", sealed[2])
    assert res.returncode == 1 and "nothing deleted" in res.stderr
    assert layout.warm_names() == sealed


def test_a_hot_segment_is_not_deleted(ledger_dir: Path, sealed: list[str]) -> None:
    """Expired but never moved warm (retain not run): refused, nothing deleted."""
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(7))
    assert res.returncode == 1 and "not in warm storage yet" in res.stderr
    assert Layout(ledger_dir).hot_names()[:3] == sealed


def test_deletion_after_the_end_leaves_a_verifiable_ledger(ledger_dir: Path,
                                                           sealed: list[str]) -> None:
    layout = Layout(ledger_dir)
    _retain(ledger_dir, "--now", _at(3.5))
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(6.5), "--upto", sealed[1],
              "--json")
    assert res.returncode == 0, res.stderr
    assert [g["segment"] for g in json.loads(res.stdout)] == sealed[:2]
    assert layout.warm_names() == [sealed[2]]
    edge = retention.expired_edge(layout)
    assert edge.size == int(sealed[2][:16])
    report = _ledger_verify(ledger_dir)
    notices = report["notices"]
    assert isinstance(notices, list) and any("deleted after their retention end" in n
                                             for n in notices)
    layout.state.unlink()  # the writer resumes from the edge
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 1, start=300)
        ledger.seal()
    _ledger_verify(ledger_dir)


def test_a_forged_edge_is_found(ledger_dir: Path, sealed: list[str]) -> None:
    layout = Layout(ledger_dir)
    _retain(ledger_dir, "--now", _at(3.5))
    assert cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(6.5), "--upto",
               sealed[0]).returncode == 0
    text = layout.expired.read_text().split("\n")
    text[2] = "A" * 43 + "="
    layout.expired.write_text("\n".join(text))
    res = cli("ledger", "verify", "--dir", ledger_dir)
    assert res.returncode == 1 and "seal checkpoint does not match" in res.stdout


def test_a_forged_expired_epoch_is_found(ledger_dir: Path, sealed: list[str]) -> None:
    layout = Layout(ledger_dir)
    _retain(ledger_dir, "--now", _at(3.5))
    assert cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(6.5), "--upto",
               sealed[1]).returncode == 0
    data = layout.expired_epochs.read_bytes()
    at = data.index(b'"signature":"') + len(b'"signature":"')
    forged = data[:at] + (b"B" if data[at:at + 1] != b"B" else b"C") + data[at + 1:]
    layout.expired_epochs.write_bytes(forged)
    res = cli("ledger", "verify", "--dir", ledger_dir)
    assert res.returncode == 1 and "expired.epochs" in res.stdout, res.stdout + res.stderr


def test_durations_and_the_pure_rules() -> None:
    day = 86_400 * 10**9
    assert retention.parse_duration("6y") == 6 * retention.YEAR_NS
    assert retention.parse_duration("1095d") == 1095 * day
    for bad in ("6", "0y", "-1y", "3 years"):
        with pytest.raises(ValueError):
            retention.parse_duration(bad)
    segs = [retention.Segment(f"{i:016d}.worm", i * day, warm=i == 0) for i in range(4)]
    assert [s.name for s in retention.due(segs, 3 * day, 2 * day)] == [segs[1].name]
    assert retention.expired(segs, 3 * day, 2 * day) == segs[:2]
    assert retention.expired([segs[1], segs[0]], 3 * day, 2 * day) == [segs[1], segs[0]]
    assert retention.expired(segs, day, 2 * day) == []


def test_usage(ledger_dir: Path, tmp_path: Path) -> None:
    res = cli("ledger", "retain", "--dir", ledger_dir, "--warm-after", "soon")
    assert res.returncode == 2 and "duration" in res.stderr
    res = cli("ledger", "expire", "--dir", ledger_dir, "--now", "tomorrow")
    assert res.returncode == 2 and "--now" in res.stderr
    res = cli("ledger", "expire", "--dir", ledger_dir, "--upto", "0000000000000099.worm")
    assert res.returncode == 2 and "not a sealed segment" in res.stderr
    shutil.rmtree(tmp_path / "none", ignore_errors=True)
    res = cli("ledger", "retain", "--dir", tmp_path / "none")
    assert res.returncode == 2 and "not a ledger" in res.stderr
    assert os.path.exists(ledger_dir)


# -- reading after an expire: proofs, exports and the service start from the edge ------


def _expire_first(root: Path, sealed: list[str]) -> int:
    """Retain everything due, expire the first sealed segment; the first kept seq."""
    _retain(root, "--now", _at(3.5))
    res = cli("ledger", "expire", "--dir", root, "--now", _at(6.5), "--upto", sealed[0])
    assert res.returncode == 0, res.stderr
    first = retention.expired_edge(Layout(root)).size
    assert first == int(sealed[1][:16]) > 0
    return first


def _verify_proof(root: Path, proof: Path, record: Path) -> None:
    res = cli("ledger", "verify-proof", proof, "--vkey", root / "vkey", "--record", record)
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr


def test_a_proof_of_a_kept_record_after_an_expire(ledger_dir: Path, sealed: list[str],
                                                  tmp_path: Path) -> None:
    first = _expire_first(ledger_dir, sealed)
    for seq in (first, first + 2, int(sealed[2][:16]) + 1):  # warm, and in the active one
        proof, record = tmp_path / f"{seq}.tlog-proof", tmp_path / f"{seq}.record"
        res = cli("ledger", "proof", "--dir", ledger_dir, "--seq", str(seq), "-o", proof,
                  "--record", record)
        assert res.returncode == 0, res.stderr
        assert proof.read_text().startswith(f"c2sp.org/tlog-proof@v1\nindex {seq}\n")
        _verify_proof(ledger_dir, proof, record)
    res = cli("ledger", "proof", "--dir", ledger_dir, "--seq", "2")
    assert res.returncode == 2 and "seq 2 expired on " in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    res = cli("ledger", "consistency", "--dir", ledger_dir, "--old", "3")
    assert res.returncode == 2 and "expired" in res.stderr and "Traceback" not in res.stderr
    assert cli("ledger", "consistency", "--dir", ledger_dir, "--old",
               str(first)).returncode == 0


def test_anchor_export_after_an_expire_verifies(ledger_dir: Path, sealed: list[str],
                                                tmp_path: Path) -> None:
    _expire_first(ledger_dir, sealed)
    media = tmp_path / "media"
    media.mkdir()
    res = cli("anchor", "export", "--dir", ledger_dir, "--to", media, "--custodial", "--json")
    assert res.returncode == 0, res.stderr
    b = Path(json.loads(res.stdout)["bundle"])
    assert (b / "expired").read_bytes() == Layout(ledger_dir).expired.read_bytes()
    assert not (b / "epochs.proofs" / "0.tlog-proof").exists()  # epoch 0's record expired
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(b, keys)
    assert code == 0 and _statuses(report)["epochs"] == "ok", report
    assert _statuses(report)["custodial"] == "ok", report
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _standalone(b, keys, outside)[0] == 0
    # an edge that does not lead to the checkpoint is found by both verifiers
    forged = (b / "expired").read_text().split("\n")
    forged[2] = "A" * 43 + "="
    (b / "expired").write_text("\n".join(forged))
    _remanifest(b)
    code, report = _verify(b, keys)
    assert code == 1 and any("expired records' edge" in f
                             for f in _failed(report)["epochs"]), report
    assert _standalone(b, keys, outside)[0] == 1
    # a second export extends the first, from the kept records
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 2, start=400)
    res = cli("anchor", "export", "--dir", ledger_dir, "--to", media, "--json")
    assert res.returncode == 0, res.stderr
    code, report = _verify(Path(json.loads(res.stdout)["bundle"]), keys)
    assert code == 0 and _statuses(report)["previous"] == "ok", report


def test_a_regulator_export_after_an_expire_verifies(ledger_dir: Path, sealed: list[str],
                                                     tmp_path: Path) -> None:
    first = _expire_first(ledger_dir, sealed)
    res = cli("export", "--dir", ledger_dir, "--from", "2000-01-01", "--to", _at(1),
              "--out", tmp_path / "r", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["first"] == first  # the kept records of the period
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(tmp_path / "r", keys)
    assert code == 0 and _statuses(report)["range"] == "ok", report
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _standalone(tmp_path / "r", keys, outside)[0] == 0
    res = cli("export", "--dir", ledger_dir, "--from", "2000-01-01", "--to", "2001-01-01",
              "--out", tmp_path / "none")
    assert res.returncode == 1 and f"records before seq {first} expired" in res.stderr


def _trace_ids(root: Path) -> dict[int, str]:
    return {ln.seq: json.loads(ln.data)["trace_id"] for ln in reader.lines(Layout(root))}


def _get_and_verify(sock: Path, key: str, root: Path, trace_id: str, seq: int,
                    tmp_path: Path) -> None:
    reply = request(sock, "GET", f"/v1/records/{trace_id}", None, auth(key, None))
    assert reply.status == 200, str(reply)
    got = reply.json()
    assert got["seq"] == seq
    proof, record = tmp_path / f"{seq}.tlog-proof", tmp_path / f"{seq}.record"
    proof.write_text(got["proof"])
    record.write_bytes(canonical(got["record"]) + b"\n")
    _verify_proof(root, proof, record)


def test_the_service_serves_warm_and_kept_records(ledger_dir: Path, sealed: list[str],
                                                  tmp_path: Path) -> None:
    key = add_tenant(ledger_dir, "auditor", "reader")
    _retain(ledger_dir, "--now", _at(3.5))
    ids = _trace_ids(ledger_dir)
    gone, warm = 2, int(sealed[2][:16]) + 1
    sock, log = tmp_path / "ingest.sock", tmp_path / "server.log"
    with running(ledger_dir, sock, log):
        _get_and_verify(sock, key, ledger_dir, ids[warm], warm, tmp_path)
        _get_and_verify(sock, key, ledger_dir, ids[gone], gone, tmp_path)
        # an expire while it serves: the expired record is no more, the rest still is
        res = cli("ledger", "expire", "--dir", ledger_dir, "--now", _at(6.5), "--upto",
                  sealed[0])
        assert res.returncode == 0, res.stderr
        reply = request(sock, "GET", f"/v1/records/{ids[gone]}", None, auth(key, None))
        first = retention.expired_edge(Layout(ledger_dir)).size
        assert reply.status == 404, str(reply)
        assert f"the records before seq {first} expired" in reply.json()["error"], str(reply)
        _get_and_verify(sock, key, ledger_dir, ids[warm], warm, tmp_path)
    with running(ledger_dir, sock, log):  # loaded from the edge
        _get_and_verify(sock, key, ledger_dir, ids[first], first, tmp_path)
        _get_and_verify(sock, key, ledger_dir, ids[warm], warm, tmp_path)
        reply = request(sock, "GET", f"/v1/records/{ids[gone]}", None, auth(key, None))
        assert reply.status == 404, str(reply)
