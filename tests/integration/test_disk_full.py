"""A full disk: the writer refuses, acknowledges nothing it did not make durable, and
recovers by itself once space returns. On a real, tiny ext4 file system on a loop device."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vantio_appliance import reader, writer
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir

pytestmark = pytest.mark.root


def _needs(tool: str) -> None:
    if os.geteuid() != 0 or shutil.which(tool) is None:
        pytest.skip(f"LOUD SKIP: needs root and {tool} to mount a loop file system")


def test_disk_full_then_recovery(small_fs: Path) -> None:
    root = small_fs / "l"
    writer.init(root, "vantio.appliance/test/full")
    filler = small_fs / "filler"
    acked: list[writer.Ack] = []
    fields = {"action": "block", "proc": {"cgroup": "/vantio-agents.slice/" + "x" * 3000}}
    with writer.Ledger(root) as ledger:
        with filler.open("wb") as f:  # all but ~200 KiB goes to another file
            st = os.statvfs(small_fs)
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 200 * 2**10))
            f.flush()
            os.fsync(f.fileno())
        with pytest.raises(writer.LedgerUnavailable):
            for _ in range(10_000):
                acked += ledger.append([writer.submission("default", fields) for _ in range(8)])
        assert acked, "the disk filled before the first commit"
        with pytest.raises(writer.LedgerUnavailable):  # repairs, fills the last block, refuses
            for _ in range(100):
                acked += ledger.append([writer.submission("default", fields)])
        filler.unlink()  # space returns
        after = ledger.append([writer.submission("default", {"action": "permit"})])
    layout = Layout(root)
    for ack in acked:  # nothing acknowledged is lost
        assert ack.trace_id.encode() in reader.find(layout, seq=ack.seq).data
    assert after[0].seq > acked[-1].seq
    report = verify_dir(root, jobs=1)
    assert report.ok, report.findings
