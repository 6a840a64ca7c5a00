"""`vantio anchor import` (docs/anchoring.md §2): what a bundle brings back from the anchor
station (cosignatures by `vantio witness cosign`, tokens by a real TSA, ``openssl ts``) is
verified and recorded as an `anchor` record, and every bad return is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import append_events, cli
from test_timestamp import Tsa, make_tsa

from vantio_appliance import bundle, reader, writer
from vantio_appliance.canonical import decode
from vantio_appliance.layout import Layout

W1, W2 = "witness.example/w1", "witness.example/w2"


@pytest.fixture(scope="module")
def tsas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tsa]:
    where = tmp_path_factory.mktemp("tsa")
    return {"main": make_tsa(where, "main"), "other": make_tsa(where, "other")}


@dataclass
class Station:
    root: Path
    media: Path
    bundle: Path
    witness_keys: Path  # both witnesses' verifier keys
    tsa: Tsa
    tmp: Path


def _anchors(root: Path) -> list[dict[str, Any]]:
    return [r for r in (decode(ln.data) for ln in reader.lines(Layout(root)))
            if r["kind"] == "anchor"]


def _stamp(b: Path, tsa: Tsa, tmp: Path, name: str = "tsa") -> Path:
    res = cli("timestamp", "request", b, "--out", tmp / "q.tsq")
    assert res.returncode == 0, res.stderr
    (b / "timestamps").mkdir(exist_ok=True)
    out = b / "timestamps" / f"{name}.tsr"
    out.write_bytes(tsa.reply((tmp / "q.tsq").read_bytes()))
    return out


@pytest.fixture
def station(ledger_dir: Path, tmp_path: Path, tsas: dict[str, Tsa]) -> Station:
    """A ledger, its exported bundle, cosigned by two witnesses and stamped by a TSA."""
    media = tmp_path / "media"
    media.mkdir()
    with writer.Ledger(ledger_dir) as ledger:
        append_events(ledger, 5)
        ledger.seal()
        append_events(ledger, 3, start=5)
    res = cli("anchor", "export", "--dir", ledger_dir, "--to", media, "--json")
    assert res.returncode == 0, res.stderr
    b = Path(json.loads(res.stdout)["bundle"])
    keys = []
    for name in (W1, W2):
        state = tmp_path / name.replace("/", "_")
        res = cli("witness", "init", "--state", state, "--name", name, "--log-key",
                  ledger_dir / "vkey")
        assert res.returncode == 0, res.stderr
        keys.append(res.stdout)
        res = cli("witness", "cosign", "--state", state, b)
        assert res.returncode == 0, res.stdout + res.stderr
    witness_keys = tmp_path / "witnesses.keys"
    witness_keys.write_text("".join(keys))
    _stamp(b, tsas["main"], tmp_path)
    return Station(ledger_dir, media, b, witness_keys, tsas["main"], tmp_path)


def _import(s: Station, source: Path | None = None, *extra: str | Path,
            quorum: int = 2) -> subprocess.CompletedProcess[str]:
    return cli("anchor", "import", "--dir", s.root, "--from", source or s.bundle,
               "--witness-keys", s.witness_keys, "--quorum", str(quorum),
               "--tsa-cert", s.tsa.root, "--json", *extra)


def test_import_records_cosignatures_and_tokens(station: Station) -> None:
    s = station
    exported = _anchors(s.root)
    assert [a["direction"] for a in exported] == ["export"]
    res = _import(s)
    assert res.returncode == 0, res.stdout + res.stderr
    [out] = json.loads(res.stdout)
    anchors = _anchors(s.root)
    assert [a["direction"] for a in anchors] == ["export", "import"]
    rec = anchors[-1]
    assert rec["seq"] == out["anchor_seq"]
    assert (rec["size"], rec["root"], rec["manifest"]) == (
        exported[0]["size"], exported[0]["root"], exported[0]["manifest"])
    token = (s.bundle / "timestamps" / "tsa.tsr").read_bytes()
    kinds = sorted(" ".join(e.split(" ")[:2]) for e in rec["evidence"])
    assert kinds == [f"cosignature {W1}", f"cosignature {W2}",
                     f"timestamp {hashlib.sha256(token).hexdigest()}"]
    assert cli("ledger", "verify", "--dir", s.root).returncode == 0
    # the same evidence again: nothing new is recorded
    res = _import(s)
    assert res.returncode == 0 and json.loads(res.stdout)[0]["already"] == 3
    assert len(_anchors(s.root)) == 2
    # a new token over the same checkpoint is new evidence, recorded alone
    _stamp(s.bundle, s.tsa, s.tmp, "again")
    res = _import(s)
    assert res.returncode == 0, res.stderr
    assert len(_anchors(s.root)[-1]["evidence"]) == 1


def test_defaults_from_the_ledger_dir_and_a_whole_media(station: Station) -> None:
    """Trusted witness keys and TSA roots kept in DIR/anchors; --from the media itself."""
    s = station
    shutil.copy(s.witness_keys, s.root / "anchors" / "witnesses")
    shutil.copy(s.tsa.root, s.root / "anchors" / "tsa.pem")
    res = cli("anchor", "import", "--dir", s.root, "--from", s.media)
    assert res.returncode == 0, res.stderr
    assert f"recorded evidence (cosignature {W1}, cosignature {W2}, timestamp " in res.stderr
    assert len(_anchors(s.root)[-1]["evidence"]) == 3


def _flip_cosignature(b: Path) -> None:
    cosig = b / "cosignatures" / "witness.example%2Fw1.cosig"
    _dash, name, blob64 = cosig.read_text().split(" ")
    blob = bytearray(base64.b64decode(blob64))
    blob[-1] ^= 1
    cosig.write_text(f"\u2014 {name} {base64.b64encode(bytes(blob)).decode()}\n")


def _garbage_token(b: Path) -> None:
    (b / "timestamps" / "tsa.tsr").write_bytes(b"\x30\x03\x02\x01\x00")


def _remanifest(b: Path) -> None:
    digests = {str(p.relative_to(b)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in b.rglob("*") if p.is_file() and p.name != bundle.MANIFEST
               and not str(p.relative_to(b)).startswith(bundle.RETURNS)}
    (b / bundle.MANIFEST).write_bytes(bundle.format_manifest(digests))


def _readme_edited_and_remanifested(b: Path) -> None:
    (b / bundle.README).write_text("nothing to see\n")
    _remanifest(b)


def _readme_edited(b: Path) -> None:
    (b / bundle.README).write_text("nothing to see\n")


Edit = Callable[[Station, Path], None]

REFUSALS: dict[str, tuple[Edit, str]] = {
    "bad-token": (lambda s, b: _garbage_token(b), "not an RFC 3161 TimeStampResp"),
    "foreign-token": (lambda s, b: _foreign_token(s, b), "not signed by a TSA"),
    "token-over-another-checkpoint": (lambda s, b: _token_over_other(s, b),
                                      "over other data than this checkpoint"),
    "bad-cosignature": (lambda s, b: _flip_cosignature(b), "bad cosignature"),
    "missing-quorum": (lambda s, b: (b / "cosignatures" / "witness.example%2Fw2.cosig")
                       .unlink(), "quorum not met: 1 of 2"),
    "unknown-checkpoint": (lambda s, b: _unexported_checkpoint(s, b), "unknown checkpoint"),
    "foreign-checkpoint": (lambda s, b: _foreign_checkpoint(s, b), "not one of this log"),
    "manifest-mismatch": (lambda s, b: _readme_edited_and_remanifested(b),
                          "manifest mismatch"),
    "file-changed-after-export": (lambda s, b: _readme_edited(b), "manifest: README.txt does "
                             "not match"),
    "nothing-came-back": (lambda s, b: _no_returns(b), "nothing came back"),
}


def _no_returns(b: Path) -> None:
    shutil.rmtree(b / "cosignatures")
    shutil.rmtree(b / "timestamps")


def _foreign_token(s: Station, b: Path) -> None:
    other = make_tsa(s.tmp, "stranger")
    (b / "timestamps" / "tsa.tsr").unlink()
    _stamp(b, other, s.tmp)


def _token_over_other(s: Station, b: Path) -> None:
    (b / "timestamps" / "tsa.tsr").write_bytes(s.tsa.stamp(b"another checkpoint\n"))


def _unexported_checkpoint(s: Station, b: Path) -> None:
    with writer.Ledger(s.root) as ledger:  # signed by this log, never exported
        append_events(ledger, 2, start=50)
        (b / bundle.CHECKPOINT).write_bytes(ledger.signed_checkpoint())


def _foreign_checkpoint(s: Station, b: Path) -> None:
    other = s.tmp / "other-ledger"
    writer.init(other, "vantio.appliance/other/ledger")
    (b / bundle.CHECKPOINT).write_bytes((other / "checkpoint").read_bytes())


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_record_nothing(station: Station, case: str) -> None:
    edit, words = REFUSALS[case]
    b = station.tmp / "copy" / station.bundle.name
    shutil.copytree(station.bundle, b)
    edit(station, b)
    before = _anchors(station.root)
    res = _import(station, b)
    assert res.returncode == 1, res.stdout + res.stderr
    [out] = json.loads(res.stdout)
    assert words in out["refused"], out
    assert f"REFUSED {b}" in res.stderr and "nothing recorded" in res.stderr
    assert _anchors(station.root) == before


def test_one_refused_bundle_does_not_stop_the_others(station: Station) -> None:
    """A media with a good bundle and a bad one: the good one is recorded, exit 1."""
    s = station
    bad = s.media / "vantio-anchor-1"
    shutil.copytree(s.bundle, bad)
    _flip_cosignature(bad)
    res = _import(s, s.media)
    assert res.returncode == 1
    outs = {Path(o["bundle"]).name: o for o in json.loads(res.stdout)}
    assert "bad cosignature" in outs["vantio-anchor-1"]["refused"]
    assert outs[s.bundle.name]["anchor_seq"] is not None
    assert [a["direction"] for a in _anchors(s.root)] == ["export", "import"]


def test_usage_errors_are_exit_2(station: Station) -> None:
    s = station
    res = cli("anchor", "import", "--dir", s.root, "--from", s.bundle, "--witness-keys",
              s.witness_keys)
    assert res.returncode == 2 and "--tsa-cert" in res.stderr  # tokens, no TSA to trust
    res = cli("anchor", "import", "--dir", s.root, "--from", s.bundle, "--tsa-cert",
              s.tsa.root)
    assert res.returncode == 2 and "needs trusted witness keys" in res.stderr
    res = _import(s, s.tmp / "nowhere")
    assert res.returncode == 2 and "not a directory" in res.stderr
    res = _import(s, s.tmp)  # a directory with no bundle
    assert res.returncode == 2 and "no anchor bundle" in res.stderr
    with writer.Ledger(s.root):  # the service holds the writer lock
        res = _import(s)
    assert res.returncode == 2 and "writer lock" in res.stderr
    assert [a["direction"] for a in _anchors(s.root)] == ["export"]
