"""Benchmark: `vantio ledger verify` speed, next to re-checking a SQLite hash chain.

Builds a ledger of N records (realistic enforcer events from the demo), then
times full verification (canonical form, schema, sequence, seals, Merkle
tree, checkpoint) with 1 process and with all cores, and the CLI end to end
(start-up included). For scale, the same records in SQLite with a SHA-256
hash chain, and the time to re-read and re-check that chain (a weaker check:
no schema, no signatures). Target: at least 300,000 records/s.

    .venv/bin/python bench/ledger_verify.py [--records N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _workdir import clear_flags, default_base

from vantio_appliance import demo, writer
from vantio_appliance.verify import verify_dir

TARGET = 300_000


def build(root: Path, n: int) -> list[bytes]:
    writer.init(root, "vantio.appliance/bench/ledger")
    rng = random.Random(7)
    done = 0
    with writer.Ledger(root) as ledger:
        while done < n:
            k = min(4096, n - done)
            ledger.append([writer.submission("default", demo.event(rng)) for _ in range(k)])
            done += k
            print(f"\rbuilding ledger: {done}/{n}", end="", file=sys.stderr)
    print(file=sys.stderr)
    lines = []
    for seg in sorted((root / "segments").iterdir()):
        lines.extend(seg.read_bytes().split(b"\n")[:-1])
    return lines


def sqlite_chain(path: Path, lines: list[bytes]) -> float:
    """Store the lines with a hash chain, then time re-reading and re-checking it."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, data BLOB, chain BLOB)")
    prev = b"\0" * 32
    rows = []
    for i, line in enumerate(lines):
        prev = hashlib.sha256(prev + line).digest()
        rows.append((i, line, prev))
    db.executemany("INSERT INTO r VALUES (?, ?, ?)", rows)
    db.commit()
    started = time.perf_counter()
    prev, ok = b"\0" * 32, True
    for _seq, data, chain in db.execute("SELECT seq, data, chain FROM r ORDER BY seq"):
        json.loads(data)
        prev = hashlib.sha256(prev + data).digest()
        ok &= prev == chain
    seconds = time.perf_counter() - started
    db.close()
    assert ok
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="work directory (default: the system temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-", dir=args.dir or default_base()) as tmp:
        root = Path(tmp) / "ledger"
        try:
            lines = build(root, args.records)
            n = len(lines)
            results = {}
            for label, jobs in (("verify, 1 process", 1), (f"verify, {os.cpu_count()} processes",
                                                           None)):
                report = verify_dir(root, jobs=jobs)
                assert report.ok, report.findings[:3]
                results[label] = n / report.seconds
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vantio_appliance.cli", "ledger", "verify",
                            "--dir", str(root)], check=True, stdout=subprocess.DEVNULL)
            results["vantio ledger verify (CLI, start-up included)"] = n / (
                time.perf_counter() - started)
            results["SQLite hash chain re-check (weaker)"] = n / sqlite_chain(
                Path(tmp) / "chain.db", lines)
        finally:
            clear_flags(root)
    if args.json:
        print(json.dumps({"records": n, "records_per_second": results, "target": TARGET}))
        return 0
    print(f"\nverification of {n:,} records (target {TARGET:,} records/s)\n")
    for label, rate in results.items():
        verdict = "" if "SQLite" in label else (
            "meets target" if rate >= TARGET else "below target")
        print(f"  {label:48} {rate:>12,.0f} records/s  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
