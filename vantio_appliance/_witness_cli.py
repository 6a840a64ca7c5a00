"""`vantio witness` and `vantio timestamp`: the anchor station's side of a bundle.

The file handling around the pure cores ``witness`` and ``timestamp``:
the witness's state directory, the bundle's files, and durable writes in an
order that never lets the state claim a cosignature the bundle does not hold.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from . import checkpoint as cpmod
from . import keys, note, timestamp, witness
from ._internal import osutil
from .cli import (
    EXIT_FAILED,
    EXIT_OK,
    _command,
    _die,
    _read,
    _verifier,
    _write_out,
)

KEY: Final = "witness.key"  # Ed25519 PKCS#8 PEM, 0600
VKEY: Final = "witness.vkey"  # the witness's verifier key (type 0x04): its name and public key
LOG_VKEY: Final = "log.vkey"  # the log's verifier key (type 0x01)
ORIGINS: Final = "origins"  # origins/<sha256 hex of origin>: the last cosigned checkpoint
LOCK: Final = "lock"


def cosig_file_name(name: str) -> str:
    """``<witness name>.cosig`` with the name percent-encoded (it may hold '/')."""
    return quote(name, safe="") + ".cosig"


# -- witness ------------------------------------------------------------------------------


def cmd_witness_init(args: argparse.Namespace) -> int:
    note.check_name(args.name)
    log = _verifier(args.log_key)
    state: Path = args.state
    if (state / KEY).exists():
        _die(f"{state / KEY} exists already: a witness keeps its key (refusing to overwrite)")
    keys.make_private_dir(state)
    try:
        key = keys.generate_identity(state / KEY)
    except FileExistsError:
        _die(f"{state / KEY} exists already: a witness keeps its key (refusing to overwrite)")
    cosigner = witness.Cosigner(args.name, key)
    osutil.replace_file(state / LOG_VKEY, f"{log}\n".encode(), durable=True)
    osutil.replace_file(state / VKEY, f"{cosigner.verifier}\n".encode(), durable=True)
    keys.make_private_dir(state / ORIGINS)
    print(f"witness {args.name} initialized in {state}, for log {log.name}", file=sys.stderr)
    print(cosigner.verifier)
    return EXIT_OK


class _Station:
    """A witness's state directory, loaded and checked for consistency."""

    def __init__(self, state: Path) -> None:
        if not (state / KEY).is_file():
            _die(f"{state} is not a witness state directory (no {KEY}); "
                 "create one with vantio witness init")
        self.dir = state
        key = keys.load_identity(state / KEY)
        self.log = _verifier(state / LOG_VKEY)
        try:
            public = witness.CosignatureVerifier.parse((state / VKEY).read_text())
        except OSError as exc:
            _die(f"cannot read {state / VKEY}: {exc.strerror}")
        except note.NoteError as exc:
            _die(f"{state / VKEY}: {exc}")
        self.cosigner = witness.Cosigner(public.name, key)
        if self.cosigner.verifier != public:
            _die(f"{state / VKEY} does not belong to {state / KEY}")

    def origin_path(self, origin: str) -> Path:
        return self.dir / ORIGINS / hashlib.sha256(origin.encode()).hexdigest()

    def last(self, origin: str) -> cpmod.Checkpoint | None:
        """The last checkpoint cosigned for ``origin``; None only when there is none.

        A damaged state file is an error, never a first use: that would let a
        corrupted file reset the witness's memory of the log.
        """
        path = self.origin_path(origin)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _die(f"cannot read witness state {path}: {exc.strerror}")
        try:
            body, sigs = note.split(data)
            me = self.cosigner.verifier
            mine = [witness.parse_cosignature(s) for s in sigs if me.matches(s)]
            if not mine or not all(me.verify(body, c) for c in mine):
                raise note.NoteError("not cosigned by this witness")
            cp = cpmod.Checkpoint.parse_text(body)
        except (note.NoteError, cpmod.FormatError) as exc:
            _die(f"witness state {path} is damaged: {exc}")
        if cp.origin != origin:
            _die(f"witness state {path} is for origin {cp.origin!r}, not {origin!r}")
        return cp


def _lock(state: Path) -> int:
    """Hold the state directory: two cosigns at once could both pass the same check."""
    fd = os.open(state / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        _die(f"{state} is in use by another vantio witness command")
    return fd


def _refuse(reason: str) -> int:
    print(f"REFUSED: {reason}")
    return EXIT_FAILED


def cmd_witness_cosign(args: argparse.Namespace) -> int:
    station = _Station(args.state)
    lock = _lock(args.state)
    try:
        return _cosign(station, args.bundle)
    finally:
        os.close(lock)


def _cosign(station: _Station, bundle: Path) -> int:
    signed = _read(str(bundle / "checkpoint"))
    try:
        body, _ = note.verify(signed, [station.log])  # other keys' lines (epochs) are ignored
    except note.NoteError as exc:
        return _refuse(f"the checkpoint does not verify with the log key {station.log.name}: "
                       f"{exc}")
    try:
        cp = cpmod.Checkpoint.parse_text(body)
    except cpmod.FormatError as exc:
        _die(f"{bundle / 'checkpoint'}: {exc}")
    if cp.origin != station.log.name:
        return _refuse(f"the checkpoint's origin {cp.origin!r} is not the log's "
                       f"({station.log.name!r})")
    proof = None
    if (bundle / "consistency").exists():
        try:
            proof = witness.Proof(*cpmod.parse_consistency(_read(str(bundle / "consistency"))))
        except cpmod.FormatError as exc:
            _die(f"{bundle / 'consistency'}: {exc}")
    decision = witness.decide(station.last(cp.origin), cp, proof)
    if not decision.cosign:
        return _refuse(decision.reason)
    line = station.cosigner.cosign(body, int(time.time()))
    # The bundle's copy first, durably; the state only after it: a crash in between
    # leaves a cosignature the state does not know of, which the next run re-issues.
    out = bundle / "cosignatures"
    try:
        if not out.is_dir():
            out.mkdir()
            osutil.fsync_dir(bundle)
        osutil.replace_file(out / cosig_file_name(station.cosigner.name), line, durable=True)
    except OSError as exc:
        _die(f"cannot write the cosignature into {out}: {exc}")
    try:
        osutil.replace_file(station.origin_path(cp.origin), body + b"\n" + line, mode=0o600,
                            durable=True)
    except OSError as exc:
        _die(f"cannot write witness state {station.origin_path(cp.origin)}: {exc}; the "
             f"cosignature in {out} stands, the state still names the previous checkpoint")
    print(f"cosigned {cp.origin} size {cp.size}: {decision.reason}", file=sys.stderr)
    sys.stdout.buffer.write(line)
    return EXIT_OK


# -- time stamps ------------------------------------------------------------------------


def cmd_timestamp_request(args: argparse.Namespace) -> int:
    data = _read(str(args.bundle / "checkpoint"))
    if not data:
        _die(f"{args.bundle / 'checkpoint'} is empty")
    tsq, nonce = timestamp.request(data)
    _write_out(tsq, args.out)
    print(f"TimeStampReq over SHA-256 {hashlib.sha256(data).hexdigest()} of "
          f"{args.bundle / 'checkpoint'}, nonce {nonce}", file=sys.stderr)
    return EXIT_OK


def cmd_timestamp_verify(args: argparse.Namespace) -> int:
    try:
        trust = timestamp.TsaTrust.from_pem(_read(str(args.tsa_cert)))
    except timestamp.TimestampError as exc:
        _die(f"{args.tsa_cert}: {exc}")
    data = _read(str(args.bundle / "checkpoint"))
    tokens = sorted((args.bundle / "timestamps").glob("*.tsr"))
    if not tokens:
        print(f"FAILED: no time-stamp tokens (*.tsr) in {args.bundle / 'timestamps'}")
        return EXIT_FAILED
    failed = 0
    for path in tokens:
        try:
            info = timestamp.verify(_read(str(path)), data, trust)
        except timestamp.TimestampError as exc:
            print(f"FAILED {path.name}: {exc}")
            failed += 1
            continue
        print(f"OK {path.name}: {info.gen_time.isoformat()} serial {info.serial} "
              f"by {info.tsa}")
    return EXIT_FAILED if failed else EXIT_OK


# -- parser ----------------------------------------------------------------------------------


def _cmd(sub: Any, name: str, func: Callable[[argparse.Namespace], int],
         help_: str) -> argparse.ArgumentParser:
    return _command(sub, name, func, help_, ledger_dir=False)


def add_commands(top: Any) -> None:
    """Register `vantio witness ...` and `vantio timestamp ...` on the top-level parser."""
    group = top.add_parser("witness", help="an offline witness: cosign anchor bundles",
                           description="An offline witness (C2SP tlog-cosignature v1): "
                           "cosigns a bundle's checkpoint only when it extends the last one "
                           "it cosigned. Exit 0 cosigned, 1 refused, 2 usage or unreadable.")
    sub = group.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    p = _cmd(sub, "init", cmd_witness_init,
             "create a witness: state directory, key; prints the witness's verifier key")
    p.add_argument("--state", type=Path, required=True, help="state directory (created 0700)")
    p.add_argument("--name", required=True, help="witness key name, e.g. witness.example/w1")
    p.add_argument("--log-key", type=Path, required=True,
                   help="the log's verifier key file (the ledger's vkey)")
    p = _cmd(sub, "cosign", cmd_witness_cosign, "cosign BUNDLE/checkpoint if it extends the "
             "last checkpoint cosigned; writes BUNDLE/cosignatures/<name>.cosig")
    p.add_argument("--state", type=Path, required=True, help="the witness's state directory")
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="anchor bundle directory")

    group = top.add_parser("timestamp", help="RFC 3161 time-stamp tokens over a bundle",
                           description="RFC 3161 time-stamp tokens over SHA-256 of a bundle's "
                           "checkpoint.")
    sub = group.add_subparsers(dest="timestamp_command", required=True, metavar="COMMAND")
    p = _cmd(sub, "request", cmd_timestamp_request,
             "write a TimeStampReq (DER) over BUNDLE/checkpoint, to carry to a TSA")
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="anchor bundle directory")
    p.add_argument("--out", required=True, help="request file (.tsq), - for stdout")
    p = _cmd(sub, "verify", cmd_timestamp_verify, "verify every BUNDLE/timestamps/*.tsr "
             "against BUNDLE/checkpoint; exit 0 all hold, 1 one does not, 2 unreadable")
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="anchor bundle directory")
    p.add_argument("--tsa-cert", type=Path, required=True,
                   help="PEM: the root of every TSA trusted; with TSA certificates in it, "
                   "only those TSAs (not others under the same root)")
