"""LatestFile: the file holds the latest bytes put, never older ones; failures are reported."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vantio_appliance._internal.latest import LatestFile


def test_waited_put_is_in_place(tmp_path: Path) -> None:
    latest = LatestFile(tmp_path / "checkpoint", 0o640)
    try:
        assert latest.put(b"one\n", wait=True)
        assert (tmp_path / "checkpoint").read_bytes() == b"one\n"
        assert (tmp_path / "checkpoint").stat().st_mode & 0o777 == 0o640
    finally:
        latest.close()


def test_never_goes_back(tmp_path: Path) -> None:
    """Many puts from racing threads: every value read is one put, read values only grow."""
    path = tmp_path / "checkpoint"
    latest = LatestFile(path)
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if path.exists():
                seen.append(int(path.read_bytes()))

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        for n in range(1, 3001):
            latest.put(b"%d" % n)
        latest.put(b"3001", wait=True)
    finally:
        stop.set()
        watcher.join()
        latest.close()
    assert path.read_bytes() == b"3001"
    assert seen == sorted(seen) and set(seen) <= set(range(1, 3002))


def test_close_writes_what_is_pending(tmp_path: Path) -> None:
    latest = LatestFile(tmp_path / "checkpoint")
    for n in range(100):
        latest.put(b"%d" % n)
    latest.close()
    assert (tmp_path / "checkpoint").read_bytes() == b"99"
    with pytest.raises(RuntimeError, match="closed"):
        latest.put(b"late")


def test_failure_is_reported_then_cleared(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    """A write that fails (here: the directory is gone): False, failed, a warning; the
    next put that can land clears it."""
    folder = tmp_path / "gone"
    latest = LatestFile(folder / "checkpoint")
    try:
        assert not latest.put(b"refused", wait=True)
        assert latest.failed
        assert "not replaced" in caplog.text
        folder.mkdir()
        assert latest.put(b"ok", wait=True) and not latest.failed
        assert (folder / "checkpoint").read_bytes() == b"ok"
    finally:
        latest.close()
