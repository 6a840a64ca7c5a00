"""Benchmark: anchor export, witness cosign and bundle verification on a ledger of N records.

Builds a ledger of N enforcer records (default one million) with the ledger's own
API (Ledger.append in group commits of 4096; a new epoch every --rotate-every
records, as 15-minute epochs would over a busy day; segments sealed at their
usual 64 MiB), then times:

  export, first      vantio anchor export --custodial: every sealed segment copied
  export, next       after 10% more records and a seal: only the new segments
  cosign             vantio witness cosign of the first bundle (skipped, with a note,
                     when this build has no witness module)
  import             vantio anchor import of that cosignature (the CLI, start-up included;
                     it scans the ledger for its anchor records)
  regulator export   vantio export of the period of the 10% added (a record and a
                     tlog-proof file each), then its verification as above
  verify, in-process audit.verify_bundle of each bundle
  vantio verify      the CLI end to end (start-up included)
  verify.py          the bundle's standalone script under the system python3 -I

The "media" is a directory in the work directory (the file system you measure;
see --dir), not a USB stick: copy speed to real media is the stick's.
Figures only; nothing is asserted.

    .venv/bin/python bench/anchor.py [--records N] [--rotate-every N] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _workdir import checkout, default_base, filesystem_of, remove  # noqa: E402

from vantio_appliance import anchor, audit, demo, regulator, writer  # noqa: E402

ORIGIN: Final = "vantio.appliance/bench/ledger"
BATCH: Final = 4096


def say(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


def build(root: Path, n: int, rotate_every: int, start: int = 0) -> None:
    rng = random.Random(7 + start)  # benchmark data, not secrets
    pool = [writer.submission("default", demo.event(rng)) for _ in range(BATCH)]
    done, next_rotation = 0, rotate_every
    with writer.Ledger(root) as ledger:
        while done < n:
            k = min(BATCH, n - done)
            ledger.append(pool[:k])
            done += k
            if done >= next_rotation:
                ledger.rotate_epoch()
                next_rotation += rotate_every
            if done % (BATCH * 16) == 0 or done == n:
                say(f"\r  building: {start + done:,} records", end="")
        ledger.seal()
    say("")


def timed(label: str, results: dict[str, Any], fn: Any, *args: Any, **kw: Any) -> Any:
    say(f"  {label} ...")
    started = time.perf_counter()
    out = fn(*args, **kw)
    results[label] = time.perf_counter() - started
    return out


def run_cli(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "vantio_appliance.cli", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)


def has_witness_cli() -> bool:
    return subprocess.run([sys.executable, "-m", "vantio_appliance.cli", "witness", "--help"],
                          capture_output=True, cwd=REPO, check=False).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rotate-every", type=int, default=10_000, metavar="N",
                    help="begin a new epoch every N records (default 10,000)")
    ap.add_argument("--dir", type=Path, help="make the work directory in DIR (default: the "
                    "system temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-anchor-", dir=args.dir or default_base()))
    root, media = work / "ledger", work / "media"
    media.mkdir()
    results: dict[str, Any] = {}
    notes: list[str] = []
    try:
        say(f"work directory {work} ({filesystem_of(work)})")
        writer.init(root, ORIGIN)
        build(root, args.records, args.rotate_every)
        keys = work / "trusted.keys"
        keys.write_text((root / "vkey").read_text() + (root / "epoch0.vkey").read_text())
        first = timed("export, first (custodial: all sealed segments)", results, anchor.export,
                      root, media, custodial=True)
        extra = args.records // 10
        period = [time.time_ns()]
        build(root, extra, args.rotate_every, start=args.records)
        period.append(time.time_ns())
        second = timed("export, next (custodial: the new segments)", results, anchor.export,
                       root, media, custodial=True)
        if has_witness_cli():
            state = work / "witness"
            run_cli("witness", "init", "--state", state, "--name", "bench.witness/w1",
                    "--log-key", root / "vkey")
            timed("cosign (vantio witness cosign, first bundle)", results, run_cli, "witness",
                  "cosign", "--state", state, first.path)
            (work / "witnesses.keys").write_text((state / "witness.vkey").read_text())
            timed("import (vantio anchor import, first bundle)", results, run_cli, "anchor",
                  "import", "--dir", root, "--from", first.path, "--witness-keys",
                  work / "witnesses.keys", "--quorum", "1")
        else:
            notes.append("cosign: skipped, this build has no witness module (vantio witness "
                         "is built on the witness branch)")
        trusted = audit.parse_trusted_keys(keys.read_text())
        for label, out in (("first", first), ("next", second)):
            report = timed(f"verify, in-process ({label} bundle)", results,
                           audit.verify_bundle, out.path, trusted)
            assert report.ok, report.first_failure()
            timed(f"vantio verify, CLI ({label} bundle)", results, run_cli, "verify", out.path,
                  "--trusted-keys", keys)
            timed(f"verify.py, system python3 -I ({label} bundle)", results, subprocess.run,
                  ["/usr/bin/python3", "-I", out.path / "verify.py", "--trusted-keys", keys],
                  check=True, stdout=subprocess.DEVNULL)
        sizes = {"first": (first.size, len(first.segments), first.bytes),
                 "next": (second.size, len(second.segments), second.bytes)}
        out = work / "regulator"
        timed("regulator export (vantio export, the 10% added)", results, run_cli, "export",
              "--dir", root, "--from", regulator.iso(period[0]), "--to",
              regulator.iso(period[1] + 10**9), "--out", out)
        rng = regulator.Range.parse((out / regulator.RANGE).read_bytes())
        sizes["regulator"] = (rng.last - rng.first + 1, 0, sum(
            p.stat().st_size for p in out.rglob("*") if p.is_file()))
        report = timed("verify, in-process (regulator export)", results, audit.verify_bundle,
                       out, trusted)
        assert report.ok, report.first_failure()
        timed("vantio verify, CLI (regulator export)", results, run_cli, "verify", out,
              "--trusted-keys", keys)
        timed("verify.py, system python3 -I (regulator export)", results, subprocess.run,
              ["/usr/bin/python3", "-I", out / "verify.py", "--trusted-keys", keys],
              check=True, stdout=subprocess.DEVNULL)
    finally:
        remove(work)
    if args.json:
        print(json.dumps({"records": args.records, "seconds": results, "bundles": sizes,
                          "notes": notes, "code": checkout()}))
        return 0
    print(f"\nanchor bundles of a ledger of {args.records:,} records (+{extra:,}), a new epoch "
          f"every {args.rotate_every:,} records; code {checkout()}\n")
    for label, (size, segs, nbytes) in sizes.items():
        if label == "regulator":
            print(f"  regulator export: {size:,} records, each with its proof, "
                  f"{nbytes / 2**20:,.1f} MiB written")
            continue
        print(f"  bundle {label:5} tree size {size:>10,}  {segs:>3} segments copied  "
              f"{nbytes / 2**20:>9,.1f} MiB written")
    print()
    for label, seconds in results.items():
        print(f"  {label:58} {seconds:>8.2f} s")
    for n in notes:
        print(f"  note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
