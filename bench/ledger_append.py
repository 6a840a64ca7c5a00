"""Benchmark: durable records/s of `Ledger.append`, next to SQLite and the raw fdatasync ceiling.

"Durable" means acknowledged only after fdatasync returned. For batch sizes
1, 64 and 1024, one group commit per batch, the same records side by side:

  vantio   Ledger.append with everything the real writer does: whitelist
           validation (writer.submission), canonical encoding, receipts,
           leaf hashes, the Merkle tree, signed checkpoints (the file replaced
           at most every 10 ms), sealing of full segments (chattr +i).
  SQLite   python's sqlite3, journal_mode=WAL, synchronous=FULL, one
           transaction per batch with a prepared executemany; each row holds
           the record's canonical bytes (built in the loop like the writer's:
           the same whitelist validation, trace id, time, receipt, msgspec with
           sorted keys) and a hash chain column, sha256(prev_hash || bytes).
  raw      the ledger's own record bytes, pre-joined per batch, written with
           os.write to an O_APPEND file and fdatasync'd: nothing else.

Targets: at least 100,000 durable records/s at batch 1024, and ahead of
SQLite at every batch size. Figures only; nothing is asserted.

With --profile, instead: cProfile over Ledger.append at batch 1024 (about
100,000 records), the top 25 functions by tottime, per record.

    .venv/bin/python bench/ledger_append.py [--records-scale F] [--repeat N] [--dir DIR] [--json]
    .venv/bin/python bench/ledger_append.py --profile [--profile-batch N] [--records-scale F]

Needs root for the inode flags the writer sets (+a, +i); everything the run
creates is in one temporary directory, flags cleared and removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import json
import os
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import msgspec

# Benchmark the checkout this script belongs to, also when it is not installed.
REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _workdir import checkout, default_base, filesystem_of, remove  # noqa: E402

from vantio_appliance import demo, writer  # noqa: E402
from vantio_appliance._internal import osutil  # noqa: E402
from vantio_appliance.keys import TenantStore  # noqa: E402
from vantio_appliance.layout import Layout  # noqa: E402

BATCHES: Final = (1, 64, 1024)
#: records per batch size at scale 1.0: about 2-4 s for Ledger.append on the reference host
RECORDS: Final = {1: 10_000, 64: 120_000, 1024: 204_800}
PROFILE_RECORDS: Final = 102_400
WARMUP_RECORDS: Final = 1024  # per measurement, committed but not timed
TARGET_1024: Final = 100_000
TENANT: Final = "default"
ORIGIN: Final = "vantio.appliance/bench/ledger"
POOL: Final = 1024  # distinct enforcer events, cycled
METHODS: Final = ("vantio", "sqlite", "raw")
LABELS: Final = {"vantio": "vantio Ledger.append", "sqlite": "SQLite WAL+FULL",
                 "raw": "raw write+fdatasync"}


def say(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


class Progress:
    """A throttled progress line on stderr (at most ~4 updates a second)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self._next = label, total, 0.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now >= self._next or done >= self.total:
            self._next = now + 0.25
            say(f"\r  {self.label}: {done:,}/{self.total:,}", end="")
            if done >= self.total:
                say("")


def event_pool() -> list[dict[str, Any]]:
    rng = random.Random(7)  # benchmark data, not secrets
    return [demo.event(rng) for _ in range(POOL)]


def chunks(pool: list[dict[str, Any]], batch: int, records: int) -> Iterator[list[dict[str, Any]]]:
    """``records // batch`` batches of enforcer events, taken round the pool."""
    for k in range(records // batch):
        start = (k * batch) % POOL
        chunk = pool[start:start + batch]
        while len(chunk) < batch:
            chunk += pool[:batch - len(chunk)]
        yield chunk


# -- (a) vantio --------------------------------------------------------------------

def run_vantio(root: Path, pool: list[dict[str, Any]], batch: int, records: int,
               progress: Callable[[int], None]) -> float:
    """Seconds for ``records`` records through submission() + Ledger.append."""
    writer.init(root, ORIGIN)
    with writer.Ledger(root) as ledger:
        for chunk in chunks(pool, batch, max(WARMUP_RECORDS, batch)):
            ledger.append([writer.submission(TENANT, f) for f in chunk])
        done = 0
        started = time.perf_counter()
        for chunk in chunks(pool, batch, records):
            ledger.append([writer.submission(TENANT, f) for f in chunk])
            done += batch
            progress(done)
        return time.perf_counter() - started


def ledger_event_lines(root: Path, records: int) -> list[bytes]:
    """The last ``records`` event lines of a ledger, as written."""
    lines: list[bytes] = []
    for seg in sorted((root / "segments").iterdir()):
        lines.extend(ln for ln in seg.read_bytes().split(b"\n") if b'"kind":"event"' in ln)
    return lines[-records:]


# -- (b) SQLite ----------------------------------------------------------------------

def trace_ids(n: int) -> list[str]:
    """``n`` random UUID v4 strings from one urandom call (as the writer makes them)."""
    h = os.urandom(16 * n).hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{'89ab'[int(h[i + 16], 16) & 3]}"
            f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, 32 * n, 32)]


class SqliteChain:
    """The same records in SQLite: canonical bytes and a SHA-256 hash chain column."""

    INSERT: Final = "INSERT INTO records (seq, record, chain) VALUES (?, ?, ?)"

    def __init__(self, path: Path, api_key: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL mode ({mode})")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, record BLOB NOT NULL, "
                        "chain BLOB NOT NULL)")
        self.mac = hmac.new(api_key.encode(), digestmod=hashlib.sha256)
        self.seq, self.prev, self.bytes = 0, b"\0" * 32, 0

    def commit(self, chunk: list[dict[str, Any]]) -> None:
        """Build, encode and chain the records of ``chunk``; durable on return."""
        seq, prev, size, base_mac = self.seq, self.prev, self.bytes, self.mac
        sha256, dumps = hashlib.sha256, msgspec.json.Encoder(order="sorted").encode
        error_ns = osutil.clock_error_ns()
        rows = []
        for f, tid in zip(chunk, trace_ids(len(chunk)), strict=True):
            writer.submission(TENANT, f)  # the same whitelist check the ledger makes
            mono, real = time.monotonic_ns(), time.time_ns()
            mac = base_mac.copy()
            mac.update(tid.encode())
            line = dumps({**f, "v": 1, "seq": seq, "kind": "event", "trace_id": tid,
                          "tenant": TENANT, "receipt": mac.hexdigest(),
                          "time": {"mono_ns": mono, "real_ns": real,
                                   "earliest_ns": real - error_ns, "latest_ns": real + error_ns}})
            prev = sha256(prev + line).digest()
            rows.append((seq, line, prev))
            size += len(line)
            seq += 1
        self.db.execute("BEGIN")
        self.db.executemany(self.INSERT, rows)
        self.db.execute("COMMIT")
        self.seq, self.prev, self.bytes = seq, prev, size

    def close(self) -> None:
        self.db.close()


def run_sqlite(path: Path, api_key: str, pool: list[dict[str, Any]], batch: int, records: int,
               progress: Callable[[int], None]) -> tuple[float, int]:
    """Seconds for ``records`` records, and the record bytes stored."""
    chain = SqliteChain(path, api_key)
    try:
        for chunk in chunks(pool, batch, max(WARMUP_RECORDS, batch)):
            chain.commit(chunk)
        chain.bytes = done = 0
        started = time.perf_counter()
        for chunk in chunks(pool, batch, records):
            chain.commit(chunk)
            done += batch
            progress(done)
        return time.perf_counter() - started, chain.bytes
    finally:
        chain.close()


# -- (c) raw ceiling -----------------------------------------------------------------

def run_raw(path: Path, lines: list[bytes], batch: int,
            progress: Callable[[int], None]) -> float:
    """Seconds to write ``lines`` in batches, one os.write loop + fdatasync per batch."""
    warm = [b"\n".join(lines[:batch]) + b"\n"] * max(1, WARMUP_RECORDS // batch)
    blobs = [b"\n".join(lines[i:i + batch]) + b"\n" for i in range(0, len(lines), batch)]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        for data in warm:
            os.write(fd, data)
            os.fdatasync(fd)
        done = 0
        started = time.perf_counter()
        for data in blobs:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
            done += batch
            progress(done)
        return time.perf_counter() - started
    finally:
        os.close(fd)


# -- the table ---------------------------------------------------------------------

def verdict(batch: int, rates: dict[str, float]) -> str:
    ahead = rates["vantio"] > rates["sqlite"]
    fast = batch != 1024 or rates["vantio"] >= TARGET_1024
    if ahead and fast:
        return "meets target"
    why = [*([] if fast else [f"< {TARGET_1024:,}/s"]), *([] if ahead else ["behind SQLite"])]
    return f"below target ({', '.join(why)})"


def measure_once(work: Path, pool: list[dict[str, Any]], batch: int,
                 records: int) -> tuple[dict[str, float], dict[str, float], bool]:
    """One run of the three methods: rates, average record bytes, sorted JSON == ledger bytes."""
    rates: dict[str, float] = {}
    ledger = work / f"ledger-{batch}"
    rates["vantio"] = records / run_vantio(ledger, pool, batch, records,
                                           Progress("vantio", records))
    lines = ledger_event_lines(ledger, records)
    api_key = TenantStore(Layout(ledger).tenants).get(TENANT).api_key
    remove(ledger)
    sorted_json = msgspec.json.Encoder(order="sorted")
    same = all(sorted_json.encode(msgspec.json.decode(ln)) == ln
               for ln in lines[:: max(1, len(lines) // 100)])
    size = {"vantio": sum(map(len, lines)) / records}
    raw = work / f"raw-{batch}.worm"
    rates["raw"] = records / run_raw(raw, lines, batch, Progress("raw", records))
    del lines
    raw.unlink()
    db = work / f"sqlite-{batch}.db"
    secs, sqlite_bytes = run_sqlite(db, api_key, pool, batch, records,
                                    Progress("SQLite", records))
    rates["sqlite"] = records / secs
    size["sqlite"] = sqlite_bytes / records
    for p in work.glob(f"sqlite-{batch}.db*"):
        p.unlink()
    return rates, size, same


def measure(work: Path, scale: float, repeat: int = 1) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    pool = event_pool()
    rows: list[dict[str, Any]] = []
    canonical_ok = True
    for batch in BATCHES:
        records = max(batch, round(RECORDS[batch] * scale / batch) * batch)
        runs: dict[str, list[float]] = {m: [] for m in METHODS}
        for rep in range(repeat):
            say(f"batch {batch}: {records:,} records"
                + (f" (run {rep + 1} of {repeat})" if repeat > 1 else ""))
            rates, size, same = measure_once(work, pool, batch, records)
            canonical_ok &= same
            for m in METHODS:
                runs[m].append(rates[m])
        median = {m: statistics.median(runs[m]) for m in METHODS}
        rows.append({"batch": batch, "records": records, "records_per_second": median,
                     "runs": runs, "record_bytes": size, "verdict": verdict(batch, median)})
    meets = all(r["verdict"] == "meets target" for r in rows)
    return {"unit": "durable records/s (acknowledged after fdatasync)", "repeat": repeat,
            "batches": rows,
            "targets": {"batch_1024_min_records_per_second": TARGET_1024,
                        "ahead_of_sqlite_at_every_batch": True},
            "meets_targets": meets, "sorted_json_matches_ledger_bytes": canonical_ok,
            "host": {"cpus": os.cpu_count(), "filesystem": filesystem_of(work),
                     "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]},
            "checkout": f"{REPO} at {checkout()}"}


def print_table(result: dict[str, Any], work: Path) -> None:
    rows = result["batches"]
    host = result["host"]
    runs = (f"; median of {result['repeat']} runs" if result["repeat"] > 1 else "")
    print(f"\nDurable records/s, acknowledged after fdatasync; one commit per batch{runs}.\n"
          f"Work dir {work} ({host['filesystem']}), {host['cpus']} CPUs, "
          f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}; "
          f"code: {result['checkout']}.\n"
          f"1-minute load average {host['load_1min_before']:.2f} before, "
          f"{host['load_1min_after']:.2f} after (other processes share the CPUs and the disk).\n"
          f"Targets: >= {TARGET_1024:,} records/s at batch 1024, and ahead of SQLite "
          f"at every batch size.\n")
    head = (f"{'batch':>5}  {'records':>9}  {LABELS['vantio']:>20}  {LABELS['sqlite']:>15}  "
            f"{LABELS['raw']:>19}  {'vs SQLite':>9}  {'vs raw':>6}  verdict")
    print(head)
    print("-" * len(head) + "-" * 22)
    for r in rows:
        rate = r["records_per_second"]
        print(f"{r['batch']:>5}  {r['records']:>9,}  {rate['vantio']:>20,.0f}  "
              f"{rate['sqlite']:>15,.0f}  {rate['raw']:>19,.0f}  "
              f"{rate['vantio'] / rate['sqlite']:>8.2f}x  {rate['vantio'] / rate['raw']:>5.0%}  "
              f"{r['verdict']}")
    print()
    for r in rows:
        us = {m: 1e6 / r["records_per_second"][m] for m in METHODS}
        print(f"  batch {r['batch']:>4}: {us['vantio']:8.2f} us/record vantio, "
              f"{us['sqlite']:8.2f} SQLite, {us['raw']:8.2f} raw; vantio above raw: "
              f"{us['vantio'] - us['raw']:8.2f} us/record, "
              f"{(us['vantio'] - us['raw']) * r['batch'] / 1000:7.2f} ms/commit")
    if result["repeat"] > 1:
        print()
        for r in rows:
            spread = ", ".join(f"{m} {min(r['runs'][m]):,.0f}-{max(r['runs'][m]):,.0f}"
                               for m in METHODS)
            print(f"  batch {r['batch']:>4} range over {result['repeat']} runs: {spread}")
    b = rows[-1]["record_bytes"]
    print(f"\n  record bytes: {b['vantio']:.0f} avg in the ledger, {b['sqlite']:.0f} avg in "
          "SQLite; sorted-keys JSON encoding reproduces the ledger's canonical lines: "
          f"{'yes' if result['sorted_json_matches_ledger_bytes'] else 'NO'}")
    ahead = sum(r["records_per_second"]["vantio"] > r["records_per_second"]["sqlite"]
                for r in rows)
    print(f"\nverdict: {'meets' if result['meets_targets'] else 'below'} target "
          f"(>= {TARGET_1024:,}/s at batch 1024: "
          f"{rows[-1]['records_per_second']['vantio']:,.0f}/s; ahead of SQLite at "
          f"{ahead} of {len(rows)} batch sizes)")


# -- --profile ---------------------------------------------------------------------

def profile(work: Path, scale: float, batch: int = 1024, top: int = 25) -> dict[str, Any]:
    """cProfile over Ledger.append; validation timed, not profiled."""
    records = max(batch, round(PROFILE_RECORDS * scale / batch) * batch)
    pool = event_pool()
    root = work / "ledger-profile"
    writer.init(root, ORIGIN)
    prof = cProfile.Profile()
    validate = appending = 0.0
    with writer.Ledger(root) as ledger:
        ledger.append([writer.submission(TENANT, f) for f in pool])  # warm-up
        say(f"profiling Ledger.append, batch {batch}: {records:,} records")
        progress, done = Progress("profile", records), 0
        for chunk in chunks(pool, batch, records):
            t0 = time.perf_counter()
            subs = [writer.submission(TENANT, f) for f in chunk]
            t1 = time.perf_counter()
            prof.enable()
            ledger.append(subs)
            prof.disable()
            appending += time.perf_counter() - t1
            validate += t1 - t0
            done += batch
            progress(done)
    remove(root)
    raw = cast("dict[tuple[str, int, str], tuple[int, int, float, float, Any]]",
               pstats.Stats(prof).stats)  # type: ignore[attr-defined]
    entries = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in raw.items():
        if file == "~":
            name = func
        else:
            p = Path(file)
            name = (f"{p.relative_to(REPO)}:{line}({func})" if p.is_relative_to(REPO)
                    else f"{p.name}:{line}({func})")
        entries.append({"function": name, "ncalls": nc if nc == cc else f"{nc}/{cc}",
                        "tottime": tt, "cumtime": ct})
    entries.sort(key=lambda e: -cast(float, e["tottime"]))
    total = sum(cast(float, e["tottime"]) for e in entries)
    return {"batch": batch, "records": records, "commits": records // batch,
            "append_seconds_profiled": appending, "profiled_tottime": total,
            "submission_seconds_unprofiled": validate, "checkout": f"{REPO} at {checkout()}",
            "top": entries[:top]}


def print_profile(result: dict[str, Any]) -> None:
    n, commits = result["records"], result["commits"]
    print(f"\ncProfile of Ledger.append, batch {result['batch']}: {n:,} records in "
          f"{commits} commits; {result['append_seconds_profiled']:.2f} s under the profiler "
          f"({1e6 * result['append_seconds_profiled'] / n:.2f} us/record, profiler overhead "
          f"included).\nwriter.submission() validation, timed outside the profile: "
          f"{1e6 * result['submission_seconds_unprofiled'] / n:.2f} us/record. "
          f"Code: {result['checkout']}.\n")
    head = (f"{'ncalls':>12} {'tottime s':>9} {'us/record':>9} {'us/commit':>10} "
            f"{'cumtime s':>9} {'cum us/rec':>10}  function")
    print(head)
    print("-" * (len(head) + 40))
    for e in result["top"]:
        tt, ct = e["tottime"], e["cumtime"]
        print(f"{e['ncalls']!s:>12} {tt:>9.3f} {1e6 * tt / n:>9.3f} {1e6 * tt / commits:>10.1f} "
              f"{ct:>9.3f} {1e6 * ct / n:>10.3f}  {e['function']}")
    print(f"\n(top {len(result['top'])} by tottime; all functions together "
          f"{result['profiled_tottime']:.2f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records-scale", type=float, default=1.0, metavar="FLOAT",
                    help="scale the record counts (default 1.0: "
                    + ", ".join(f"{v:,} at batch {k}" for k, v in RECORDS.items()) + ")")
    ap.add_argument("--dir", type=Path, metavar="DIR",
                    help="make the work directory in DIR (default: the temp dir when it is "
                    "on the current directory's file system, else the current directory; "
                    "use the file system you mean to measure)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each measurement N times and report the median (default 1)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the table: cProfile Ledger.append (batch 1024, "
                    f"{PROFILE_RECORDS:,} records times --records-scale)")
    ap.add_argument("--profile-batch", type=int, default=1024, metavar="N",
                    help="batch size for --profile (default 1024)")
    args = ap.parse_args()
    if args.records_scale <= 0:
        ap.error("--records-scale must be positive")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.profile_batch < 1:
        ap.error("--profile-batch must be at least 1")
    base = (args.dir or default_base()).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-append-", dir=base))
    say(f"work directory {work}")
    try:
        if args.profile:
            result = profile(work, args.records_scale, args.profile_batch)
        else:
            result = measure(work, args.records_scale, args.repeat)
    finally:
        remove(work)
    if args.json:
        print(json.dumps(result, indent=1))
    elif args.profile:
        print_profile(result)
    else:
        print_table(result, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
