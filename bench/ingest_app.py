"""Benchmark: the ingest app without HTTP, the ceiling of its own Python work.

bench/ingest.py measures the service as shipped, its HTTP/1.1 server in
front. This one calls the same handler (vantio_appliance.ingest.App.handle, a
real ledger, the real group committer with its fdatasync thread) directly on a
uvloop loop, with a minimal stand-in for the server's request object
(vantio_appliance._internal.http1.Request), from N concurrent client
coroutines. What it prints is what the app costs per record on the thread
that runs it, where the GIL is: if that alone exceeds a target's budget, no
HTTP stack and no setting of one can meet the target. Large batches are
prepared in the app's helper processes (ingest.HELPER_MIN_BODY), whose CPU is
counted apart.

    .venv/bin/python bench/ingest_app.py [--seconds S] [--json]

Loads: single records from 64 concurrent clients; batches of 100 and of 1000
from 4. Figures: records/s, the loop thread's CPU per record (thread CPU
time, little affected by other work on the host), the process's CPU per
record (the fdatasync thread and the kernel included), the helper processes'
CPU per record, records per group commit. Afterwards `vantio ledger verify`
must count every acknowledged record. Figures only; nothing is asserted.
Work files go to a temporary directory, removed at the end (inode flags
cleared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import uvloop

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _proc import cpu_seconds, descendants  # noqa: E402
from _workdir import checkout, default_base, remove  # noqa: E402

from vantio_appliance import demo, keys, writer  # noqa: E402
from vantio_appliance._internal.http1 import Scope  # noqa: E402
from vantio_appliance.ingest import App  # noqa: E402
from vantio_appliance.layout import Layout  # noqa: E402

POOL: Final = 1024


@dataclass(frozen=True)
class Load:
    name: str
    batch: int
    clients: int


LOADS: Final = (Load("single", 1, 64), Load("batch100", 100, 4), Load("batch1000", 1000, 4))


def _scope(path: str, api_key: str, length: int) -> Scope:
    """A POST's scope, as http1.Server gives it to the app (header names in lower case)."""
    return Scope("POST", path, {"authorization": f"Bearer {api_key}",
                                "content-type": "application/json",
                                "content-length": str(length)})


class _Request:
    """http1.Request, as far as the app uses it: the body whole or in pieces, the answer."""

    def __init__(self, body: bytes) -> None:
        self.body, self.status = body, 0

    async def __call__(self) -> bytes:
        return self.body

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        yield self.body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status


def bodies(batch: int) -> list[bytes]:
    rng = random.Random(7)  # benchmark data, not secrets
    events = [msgspec.json.encode(demo.event(rng)) for _ in range(POOL)]
    if batch == 1:
        return events
    return [b'{"records":[' + b",".join(events[(k * batch + i) % POOL] for i in range(batch))
            + b"]}" for k in range(16)]


async def _client(app: App, scopes: list[Scope], data: list[bytes], first: int,
                  until: float, done: list[int]) -> None:
    k = first
    while time.perf_counter() < until:
        request = _Request(data[k % len(data)])
        await app.handle(scopes[k % len(data)], request)  # type: ignore[arg-type]
        if request.status != 201:
            raise RuntimeError(f"the app answered {request.status}")
        done[0] += 1
        k += 1


def _helpers_cpu() -> float:
    """CPU seconds of this process's children so far: the app's batch helpers."""
    return cpu_seconds(descendants(os.getpid()))


async def _run(app: App, load: Load, api_key: str, seconds: float) -> dict[str, Any]:
    data = bodies(load.batch)
    path = "/v1/records" if load.batch == 1 else "/v1/records:batch"
    scopes = [_scope(path, api_key, len(b)) for b in data]
    done = [0]
    await asyncio.gather(*(_client(app, scopes, data, i, time.perf_counter() + 1.0, done)
                           for i in range(load.clients)))  # warm-up
    done[0], commits0 = 0, app.metrics.commits
    thread0, wall0 = time.thread_time(), time.perf_counter()
    usage0, helpers0 = resource.getrusage(resource.RUSAGE_SELF), _helpers_cpu()
    await asyncio.gather(*(_client(app, scopes, data, i, time.perf_counter() + seconds, done)
                           for i in range(load.clients)))
    wall, thread = time.perf_counter() - wall0, time.thread_time() - thread0
    usage1, helpers = resource.getrusage(resource.RUSAGE_SELF), _helpers_cpu() - helpers0
    process = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    records = done[0] * load.batch
    return {"load": load.name, "clients": load.clients, "records": records,
            "records_per_s": records / wall, "loop_us_per_record": 1e6 * thread / records,
            "process_us_per_record": 1e6 * process / records,
            "helpers_us_per_record": 1e6 * helpers / records,
            "records_per_group": records / max(1, app.metrics.commits - commits0)}


async def _all(root: Path, use_flags: bool, api_key: str, seconds: float
               ) -> tuple[list[dict[str, Any]], int]:
    """The loads' figures, and every record the app acknowledged (warm-ups included)."""
    app = App()
    try:
        app.start(root, use_flags, asyncio.get_running_loop())
        return ([await _run(app, load, api_key, seconds) for load in LOADS],
                app.metrics.records)
    finally:
        app.stop()  # commits everything acknowledged, stops the helpers, closes the ledger


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per load (default 5)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.seconds <= 0:
        ap.error("--seconds must be positive")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-app-", dir=default_base()))
    root = work / "ledger"
    try:
        use_flags = os.geteuid() == 0
        writer.init(root, "vantio.appliance/bench/ingest-app", use_flags=use_flags)
        api_key = keys.TenantStore(Layout(root).tenants).add("bench").api_key
        print(f"work directory {work}", file=sys.stderr)
        results, acked = uvloop.run(_all(root, use_flags, api_key, args.seconds))
        verify = subprocess.run([sys.executable, "-m", "vantio_appliance.cli", "ledger",
                                 "verify", "--dir", str(root), "--json"],
                                capture_output=True, text=True, timeout=600)
        counted = json.loads(verify.stdout).get("records", -1) if verify.stdout else -1
    finally:
        remove(work)
    if args.json:
        print(json.dumps({"results": results, "acknowledged": acked,
                          "verify_exit": verify.returncode, "ledger_records": counted,
                          "checkout": checkout()}, indent=1))
        return 0
    print(f"The ingest app without HTTP (uvloop, one process and its batch helpers), "
          f"{args.seconds:g} s a load; code {checkout()}; 1-minute load average "
          f"{os.getloadavg()[0]:.2f}.")
    print(f"{'load':<10} {'clients':>7} {'records/s':>11} {'loop us/rec':>12} "
          f"{'process us/rec':>15} {'helpers us/rec':>15} {'records/group':>14}")
    for r in results:
        print(f"{r['load']:<10} {r['clients']:>7} {r['records_per_s']:>11,.0f} "
              f"{r['loop_us_per_record']:>12.1f} {r['process_us_per_record']:>15.1f} "
              f"{r['helpers_us_per_record']:>15.1f} "
              f"{r['records_per_group']:>14.1f}")
    print(f"ledger verify: exit {verify.returncode}, {counted:,} records = {acked:,} "
          f"acknowledged (warm-ups included) + {counted - acked} of the ledger's own")
    return 0


if __name__ == "__main__":
    sys.exit(main())
