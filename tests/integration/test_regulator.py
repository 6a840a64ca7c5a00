"""`vantio export` (docs/anchoring.md §7): the records of a period with a proof for each,
checked by `vantio verify` and by the bundle's own verify.py; every tampering refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import append_events, cli
from test_anchor import _failed, _remanifest, _standalone, _statuses, _trusted, _verify

from vantio_appliance import reader, writer
from vantio_appliance.canonical import decode
from vantio_appliance.layout import Layout


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


def _floor_us(ns: int) -> int:
    return ns // 1000 * 1000


@pytest.fixture
def groups(ledger_dir: Path) -> list[list[int]]:
    """Three groups of records, each committed at its own moment (a seal between the
    first two, so the period spans segments); returns each group's seqs."""
    out = []
    with writer.Ledger(ledger_dir) as ledger:
        out.append([a.seq for a in append_events(ledger, 3)])
        ledger.seal()
        out.append([a.seq for a in append_events(ledger, 4, start=3)])
        out.append([a.seq for a in append_events(ledger, 3, start=7)])
    return out


def _time(root: Path, seq: int) -> int:
    return int(decode(reader.find(Layout(root), seq=seq).data)["time"]["real_ns"])


def _export(root: Path, out: Path, start: int, end: int) -> dict[str, Any]:
    res = cli("export", "--dir", root, "--from", _iso(start), "--to", _iso(end), "--out", out,
              "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    result: dict[str, Any] = json.loads(res.stdout)
    return result


@pytest.fixture
def exported(ledger_dir: Path, groups: list[list[int]], tmp_path: Path) -> Path:
    """The export of the period from the first record through the second group: the
    system records between them (seal, epoch) are inside it too."""
    start = _floor_us(_time(ledger_dir, groups[0][0]))
    end = _floor_us(_time(ledger_dir, groups[1][0])) + 1000
    out = tmp_path / "regulator"
    result = _export(ledger_dir, out, start, end)
    assert (result["first"], result["last"]) == (groups[0][0], groups[1][-1])
    return out


def test_export_holds_every_record_of_the_period_with_its_proof(
        ledger_dir: Path, groups: list[list[int]], exported: Path, tmp_path: Path) -> None:
    records = sorted(p.relative_to(exported).as_posix() for p in _files(exported / "records"))
    seqs = range(groups[0][0], groups[1][-1] + 1)
    assert records == sorted([f"records/0000000000000/{s:016d}.record" for s in seqs]
                             + [f"records/0000000000000/{s:016d}.tlog-proof" for s in seqs])
    assert not any(f"{s:016d}" in " ".join(records) for s in groups[2])
    line = reader.find(Layout(ledger_dir), seq=groups[1][0]).data
    assert (exported / "records" / "0000000000000" / f"{groups[1][0]:016d}.record"
            ).read_bytes() == line + b"\n"
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(exported, keys)
    assert code == 0, report
    st = _statuses(report)
    assert (st["manifest"], st["epochs"], st["checkpoint"], st["proofs"], st["range"]) == (
        "ok", "ok", "ok", "ok", "ok")
    assert f"{len(seqs)} with their record included" in next(
        c["detail"] for c in report["checks"] if c["name"] == "proofs")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code, alone = _standalone(exported, keys, outside)
    assert code == 0 and _statuses(alone)["range"] == "ok", alone


def _files(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_file()]


def test_records_are_filed_1000_a_directory(ledger_dir: Path, tmp_path: Path) -> None:
    """A period of 2,500 records spans directories of at most 1000 records (vfat media
    take about 10,000 long names a directory), and both verifiers find every one."""
    with writer.Ledger(ledger_dir) as ledger:
        seqs = [a.seq for a in append_events(ledger, 2500)]
    out = tmp_path / "r"
    result = _export(ledger_dir, out, _floor_us(_time(ledger_dir, seqs[0])),
                     _floor_us(_time(ledger_dir, seqs[-1])) + 1000)
    assert (result["first"], result["last"]) == (seqs[0], seqs[-1])
    dirs = sorted((out / "records").iterdir())
    assert [d.name for d in dirs] == [f"{k:013d}" for k in range(seqs[0] // 1000,
                                                                seqs[-1] // 1000 + 1)]
    for d in dirs:
        names = sorted(p.name for p in d.iterdir())
        assert len(names) <= 2000 and all(n.startswith(d.name) for n in names), d
    assert len(_files(out / "records")) == 2 * len(seqs)
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(out, keys)
    assert code == 0 and _statuses(report)["range"] == "ok", report
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code, alone = _standalone(out, keys, outside)
    assert code == 0 and _statuses(alone)["range"] == "ok", alone


def test_a_period_inside_one_group(ledger_dir: Path, groups: list[list[int]],
                                   tmp_path: Path) -> None:
    t = _floor_us(_time(ledger_dir, groups[2][0]))
    result = _export(ledger_dir, tmp_path / "r", t, t + 1000)
    assert (result["first"], result["last"], result["records"]) == (
        groups[2][0], groups[2][-1], 3)


def _tamper_record(b: Path) -> None:
    r = next((b / "records").glob("*/*.record"))
    r.write_bytes(r.read_bytes().replace(b'"pid":', b'"pid":9', 1))


def _swap_proofs(b: Path) -> None:
    a, c = sorted((b / "records").glob("*/*.tlog-proof"))[-2:]
    data = a.read_bytes()
    a.write_bytes(c.read_bytes())
    c.write_bytes(data)


def _drop_record(b: Path) -> None:
    victim = sorted((b / "records").glob("*/*.record"))[-1]
    victim.unlink()
    victim.with_suffix(".tlog-proof").unlink()


def _extra(b: Path) -> None:
    (b / "records" / "extra.record").write_bytes(b"{}\n")


def _remanifested(edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(b: Path) -> None:
        edit(b)
        _remanifest(b)
    return both


TAMPERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "tampered-record": (_tamper_record, "manifest", "does not match its SHA-256"),
    "tampered-record-remanifested": (_remanifested(_tamper_record), "proofs",
                                     "inclusion"),
    "proof-mismatch": (_remanifested(_swap_proofs), "proofs", ""),
    "manifest-mismatch": (lambda b: _extra(b), "manifest", "is not in the manifest"),
    "record-dropped": (_remanifested(_drop_record), "range", "is missing"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_export_is_refused_by_both_verifiers(ledger_dir: Path, exported: Path,
                                                      tmp_path: Path, case: str) -> None:
    edit, check, words = TAMPERS[case]
    b = tmp_path / "tampered"
    shutil.copytree(exported, b)
    edit(b)
    keys = _trusted(ledger_dir, tmp_path / "trusted.keys")
    code, report = _verify(b, keys)
    assert code == 1, report
    failed = _failed(report)
    assert check in failed and any(words in f for f in failed[check]), failed
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code2, alone = _standalone(b, keys, outside)
    assert code2 == 1 and check in _failed(alone), alone


def test_export_refusals_and_usage(ledger_dir: Path, groups: list[list[int]],
                                   tmp_path: Path) -> None:
    res = cli("export", "--dir", ledger_dir, "--from", "2001-01-01", "--to", "2001-01-02",
              "--out", tmp_path / "empty")
    assert res.returncode == 1 and "no record stamped" in res.stderr
    assert not (tmp_path / "empty").exists()
    res = cli("export", "--dir", ledger_dir, "--from", "yesterday", "--to", "2001-01-02",
              "--out", tmp_path / "x")
    assert res.returncode == 2 and "not an ISO 8601 date" in res.stderr
    res = cli("export", "--dir", ledger_dir, "--from", "2001-01-02", "--to", "2001-01-01",
              "--out", tmp_path / "x")
    assert res.returncode == 2 and "--from must be before --to" in res.stderr
    res = cli("export", "--dir", ledger_dir, "--from", "2001-01-01", "--to", "2100-01-01",
              "--out", tmp_path)
    assert res.returncode == 2 and "exists already" in res.stderr
