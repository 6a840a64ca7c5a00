"""CPU time of a server's process tree, from /proc: shared by the benchmarks.

The ingest service is several processes (`vantio serve`, its batch helpers:
``python -m vantio_appliance._internal.helpers``, and the TLS front when it has
one); a figure per record must count them all.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (of any of its threads)."""
    out = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes since they started (0 for one that is gone)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
