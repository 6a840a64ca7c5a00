"""`vantio anchor import`, `vantio export`, `vantio ledger retain|expire`: the CLI around
``anchor_import``, ``regulator`` and ``retention``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import anchor_import, regulator, retention
from .anchor import AnchorError
from .cli import EXIT_FAILED, EXIT_OK, Progress, _command, _die, _print_json


def cmd_anchor_import(args: argparse.Namespace) -> int:
    try:
        outcomes = anchor_import.import_bundles(
            args.dir, args.source, witness_keys=args.witness_keys, quorum=args.quorum,
            tsa_cert=args.tsa_cert, use_flags=not args.no_flags)
    except AnchorError as exc:
        _die(str(exc))
    if args.json:
        _print_json([o.as_dict() for o in outcomes])
    for o in outcomes:
        if o.refused is not None:
            print(f"REFUSED {o.bundle}: {o.refused}; nothing recorded", file=sys.stderr)
        elif o.seq is None:
            print(f"{o.bundle}: its evidence ({o.already}) was recorded before",
                  file=sys.stderr)
        else:
            what = ", ".join(" ".join(e.split(" ")[:2]) for e in o.evidence)
            print(f"{o.bundle}: size {o.size}: recorded evidence "
                  f"({what}) in the anchor record at seq {o.seq}", file=sys.stderr)
    return EXIT_FAILED if any(o.refused for o in outcomes) else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    try:
        start, end = regulator.parse_time(args.start), regulator.parse_time(args.end)
    except ValueError as exc:
        _die(str(exc))
    progress = Progress("export")
    try:
        out = regulator.export(args.dir, start, end, args.out,
                               progress=lambda d, t: progress(d, t))
    except regulator.NothingInRange as exc:
        print(f"vantio: refused, nothing written: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except AnchorError as exc:
        _die(str(exc))
    progress.done()
    result = {"bundle": str(out.path), "from": regulator.iso(out.range.start_ns),
              "to": regulator.iso(out.range.end_ns), "first": out.range.first,
              "last": out.range.last, "records": out.records, "checkpoint_size": out.size,
              "files": out.files, "bytes": out.bytes, "manifest_sha256": out.manifest_sha256}
    if args.json:
        _print_json(result)
    else:
        print(f"exported {out.records} records (seq {out.range.first} to {out.range.last}), "
              f"each with its proof in the checkpoint of size {out.size}, to {out.path}: "
              f"{out.files} files, {out.bytes} bytes", file=sys.stderr)
        print(out.path)
    return EXIT_OK


def _now(args: argparse.Namespace) -> int:
    if args.now is None:
        return time.time_ns()
    try:
        return regulator.parse_time(args.now)
    except ValueError as exc:
        _die(f"--now: {exc}")


def _duration(text: str, option: str) -> int:
    try:
        return retention.parse_duration(text)
    except ValueError as exc:
        _die(f"{option}: {exc}")


def cmd_retain(args: argparse.Namespace) -> int:
    progress = Progress("warm")
    try:
        moved = retention.retain(args.dir, now_ns=_now(args),
                                 warm_after_ns=_duration(args.warm_after, "--warm-after"),
                                 use_flags=not args.no_flags,
                                 progress=lambda d, t: progress(d, t, "segments"))
    except retention.RetentionError as exc:
        _die(str(exc))
    progress.done()
    if args.json:
        _print_json([{"segment": m.name, "bytes": m.bytes_before, "warm_bytes": m.bytes_after}
                     for m in moved])
    for m in moved:
        print(f"{m.name}: moved to warm storage, {m.bytes_before} -> {m.bytes_after} bytes",
              file=sys.stderr)
    print(f"{len(moved)} segments moved to warm storage", file=sys.stderr)
    return EXIT_OK


def cmd_expire(args: argparse.Namespace) -> int:
    retain_for = _duration(args.retain_for, "--retain-for")
    try:
        gone = retention.expire(args.dir, now_ns=_now(args), retain_for_ns=retain_for,
                                upto=args.upto)
    except retention.RetentionRefused as exc:
        print(f"vantio: refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except retention.RetentionError as exc:
        _die(str(exc))
    if args.json:
        _print_json([{"segment": s.name, "sealed": regulator.iso(s.sealed_ns),
                      "retained_until": regulator.iso(retention.retention_end(s, retain_for))}
                     for s in gone])
    for s in gone:
        print(f"{s.name}: deleted (retained until "
              f"{regulator.iso(retention.retention_end(s, retain_for))})", file=sys.stderr)
    print(f"{len(gone)} expired segments deleted", file=sys.stderr)
    return EXIT_OK


def add_commands(top: Any, *, ledger: Any, anchor: Any) -> None:
    """Register the commands on the top-level, `ledger` and `anchor` parsers."""
    p = _command(anchor, "import", cmd_anchor_import,
                 "verify the witness cosignatures and RFC 3161 tokens a bundle brought back "
                 "and record them as anchor records; refuses (exit 1, nothing recorded for "
                 "that bundle) a bundle this ledger did not export or any return that does "
                 "not verify; needs the writer lock")
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="MEDIA",
                   help="a bundle directory, or the media holding vantio-anchor-SIZE bundles")
    p.add_argument("--witness-keys", type=Path, metavar="FILE",
                   help="trusted witness verifier keys, one a line (default "
                   f"DIR/anchors/{anchor_import.WITNESSES})")
    p.add_argument("--quorum", type=int, default=anchor_import.DEFAULT_QUORUM, metavar="K",
                   help="distinct trusted witnesses that must have cosigned (default "
                   f"{anchor_import.DEFAULT_QUORUM}; 0 to import time stamps alone)")
    p.add_argument("--tsa-cert", type=Path, metavar="PEM",
                   help="the TSA roots (and TSA certificates to pin) trusted for the tokens "
                   f"(default DIR/anchors/{anchor_import.TSA_CERT})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)

    p = _command(top, "export", cmd_export,
                 "write a regulator bundle: the records stamped in a period, each with its "
                 "inclusion proof in the latest checkpoint, verifier keys and a manifest; "
                 "exit 1 when no record falls in the period")
    p.add_argument("--from", dest="start", required=True, metavar="DATE",
                   help="start of the period, ISO 8601 (2026-11-01 or 2026-11-01T08:00:00Z), UTC "
                   "unless it says")
    p.add_argument("--to", dest="end", required=True, metavar="DATE",
                   help="end of the period, excluded")
    p.add_argument("--out", type=Path, required=True, metavar="PATH",
                   help="the bundle directory to create")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(ledger, "retain", cmd_retain,
                 "move sealed segments older than --warm-after to warm storage (DIR/warm, "
                 "gzip, +i); they stay verifiable")
    p.add_argument("--warm-after", default="3y", metavar="AGE",
                   help="age since the seal, e.g. 3y or 1095d (default 3y)")
    p.add_argument("--now", metavar="DATE", help="take DATE as the current time (ISO 8601; "
                   "to plan ahead or test)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)

    p = _command(ledger, "expire", cmd_expire,
                 "delete warm segments whose retention has ended (the oldest first); "
                 "refuses (exit 1, nothing deleted) any segment before its end")
    p.add_argument("--retain-for", default="6y", metavar="AGE",
                   help="retention after the seal, e.g. 6y (default 6y)")
    p.add_argument("--upto", metavar="SEGMENT",
                   help="delete up to this segment (e.g. 0000000000000000.worm) or refuse")
    p.add_argument("--now", metavar="DATE", help="take DATE as the current time (ISO 8601; "
                   "to plan ahead or test)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


__all__ = ["add_commands"]
