"""`vantio serve` seals segments at the sizes and ages it is given, as options or through the
environment the packaged unit's drop-ins set (VANTIO_SEGMENT_BYTES, ...): a real service on a
unix socket, real +i on the sealed segments, and a ledger that verifies afterwards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ledger_helpers import FS_IMMUTABLE_FL, raw_flags
from service_helpers import auth, check_single, fresh_service, good_record, request

from vantio_appliance.verify import verify_dir

RECORDS = 12


@pytest.mark.parametrize(("env", "args"), [
    ({}, ("--segment-bytes", "2048")),
    ({"VANTIO_SEGMENT_BYTES": "2048"}, ()),
], ids=["option", "environment"])
def test_tiny_segment_bytes_seal_segments(tmp_path: Path, env: dict[str, str],
                                          args: tuple[str, ...], needs_root_flags: None) -> None:
    with fresh_service(tmp_path, env, args) as (root, sock, _server, key, _reader):
        for i in range(RECORDS):
            check_single(request(sock, "POST", "/v1/records",
                                 json.dumps(good_record("sealing", i)).encode(), auth(key)), key)
        report = verify_dir(root, jobs=1)  # (before the flags are cleared on the way out)
        assert report.ok, report.findings
        sealed = [s for s in report.segments if s.state == "sealed"]
        # a record is some 500 bytes: 2 KiB segments hold a few each
        assert len(sealed) >= 2, [(s.name, s.bytes) for s in report.segments]
        for s in sealed:
            assert raw_flags(root / "segments" / s.name) & FS_IMMUTABLE_FL, s.name
            assert s.bytes < 2048 + 2048, (s.name, s.bytes)  # sealed soon past the threshold
        assert report.records >= RECORDS


def test_segment_age_seals_an_idle_segment(tmp_path: Path, needs_root_flags: None) -> None:
    with fresh_service(tmp_path, args=("--segment-age", "0.5")) as (root, sock, _s, key, _r):
        check_single(request(sock, "POST", "/v1/records",
                             json.dumps(good_record("age")).encode(), auth(key)), key)
        time.sleep(2.5)  # the committer's idle tick (1 s) seals the 0.5 s old segment
        report = verify_dir(root, jobs=1)
        assert report.ok, report.findings
        sealed = [s for s in report.segments if s.state == "sealed"]
        assert sealed, report.segments
        assert raw_flags(root / "segments" / sealed[0].name) & FS_IMMUTABLE_FL


def test_bad_sealing_settings_are_refused(tmp_path: Path) -> None:
    from ledger_helpers import cli

    bad = cli("serve", "--dir", tmp_path / "l", "--segment-bytes", "0")
    assert bad.returncode == 2 and "--segment-bytes" in bad.stderr
