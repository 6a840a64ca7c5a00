"""The `vantio` command.

Exit codes scripts can trust, for every command: 0 success; 1 the evidence
does not verify, or some input was refused (the rest was processed); 2 usage
errors, unreadable input, or a ledger that cannot be opened or written.
"""

from __future__ import annotations

import argparse
import base64
import collections
import itertools
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, NoReturn, Protocol

import msgspec

from . import __version__, anchor, audit, client, demo, front, keys, merkle, note, reader, writer
from . import checkpoint as cpmod
from ._internal import osutil
from .layout import DEFAULT_DIR, DEFAULT_SOCKET, Layout
from .records import RecordError
from .verify import Report, VerifyError, verify_dir

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class CommandError(Exception):
    """Reported as ``vantio: <message>`` with exit code 2."""


def _die(message: str) -> NoReturn:
    raise CommandError(message)


class Progress:
    """Progress on standard error: a live line on a terminal, a line every 5 s otherwise."""

    def __init__(self, what: str, stream: IO[str] | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int | None = None, unit: str = "records") -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{total}" if total else ""
        text = f"{self.what}: {done}{of} {unit} ({rate:,.0f}/s)"
        self.stream.write(f"\r{text}" if self.tty else f"{text}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last != self.started:
            self.stream.write("\n")


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")


def _layout(args: argparse.Namespace) -> Layout:
    """The ledger at --dir; a usage error when there is none (nothing is created)."""
    layout = Layout(args.dir)
    if not layout.vkey.is_file():
        _die(f"{args.dir} is not a ledger (no vkey); create one with vantio ledger init")
    return layout


def _verifier(path: Path) -> note.Verifier:
    try:
        return note.Verifier.parse(path.read_text())
    except OSError as exc:
        _die(f"cannot read verifier key {path}: {exc.strerror}")
    except note.NoteError as exc:
        _die(f"{path}: {exc}")


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        _die(f"cannot read {path}: {exc.strerror}")


def _open_input(path: str) -> IO[bytes]:
    try:
        return sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        _die(f"cannot read {path}: {exc.strerror}")


class _Acked(Protocol):
    @property
    def trace_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def receipt(self) -> str: ...


def _print_acks(acks: Sequence[_Acked]) -> None:
    """One JSON line per durable record (hex and hyphens only: nothing to escape)."""
    sys.stdout.write("".join(f'{{"trace_id":"{a.trace_id}","seq":{a.seq},'
                             f'"receipt":"{a.receipt}"}}\n' for a in acks))


def _write_out(data: bytes, out: str | None) -> None:
    if out is None or out == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(out).write_bytes(data)


# -- ledger commands -------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    origin = args.origin or f"vantio.appliance/{socket.gethostname()}/ledger"
    identity = keys.load_identity(args.identity_key) if args.identity_key else None
    verifier = writer.init(args.dir, origin, use_flags=not args.no_flags, identity=identity)
    print(f"initialized ledger in {args.dir}; hand both verifier keys to the auditors "
          "(vkey, then epoch0.vkey):", file=sys.stderr)
    print(verifier)
    print(writer.epoch0_verifier(args.dir))
    return EXIT_OK


def cmd_tenant_add(args: argparse.Namespace) -> int:
    tenant = keys.TenantStore(_layout(args).tenants).add(args.name, args.role)
    print(tenant.api_key)  # alone on stdout, once: it is stored 0600 and never printed again
    return EXIT_OK


def cmd_tenant_list(args: argparse.Namespace) -> int:
    store = keys.TenantStore(_layout(args).tenants)
    for name in store.names():
        print(f"{name}\t{store.get(name).role}")
    return EXIT_OK


def _batches(stream: IO[bytes], tenant: str, size: int,
             refused: list[str]) -> Iterator[list[writer.Submission]]:
    """Batches of valid submissions; each bad line is reported by number and skipped."""
    number = 0
    while lines := list(itertools.islice(stream, size)):
        try:
            batch = writer.parse_lines(tenant, b"".join(lines))
        except RecordError:  # name every bad line, keep the good ones
            batch = []
            for i, line in enumerate(lines, number + 1):
                if not line.strip():
                    continue
                try:
                    batch.append(writer.parse(tenant, line))
                except RecordError as exc:
                    refused.append(f"line {i}: {exc}")
                    print(f"vantio: refused line {i}: {exc}", file=sys.stderr)
        number += len(lines)
        yield batch


def cmd_append(args: argparse.Namespace) -> int:
    keys.TenantStore(_layout(args).tenants).get(args.tenant)  # fail before reading input
    stream = _open_input(args.file)
    refused: list[str] = []
    progress, done = Progress("append"), 0
    with stream, _ledger(args) as ledger:
        for batch in _batches(stream, args.tenant, args.batch, refused):
            acks = ledger.append(batch) if batch else []
            _print_acks(acks)
            done += len(acks)
            progress(done)
    progress.done()
    print(f"appended {done} records, refused {len(refused)}", file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK


def _ledger(args: argparse.Namespace) -> writer.Ledger:
    return writer.Ledger(args.dir, use_flags=not getattr(args, "no_flags", False),
                         epoch_seconds=getattr(args, "epoch_seconds", writer.DEFAULT_EPOCH_S))


def cmd_seal(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        sealed = ledger.active
        signed = ledger.seal()
        active = ledger.active
    if args.json:
        _print_json({"sealed": sealed, "active": active, "checkpoint": signed.decode()})
    else:
        print(f"sealed {sealed}; active segment is now {active}", file=sys.stderr)
        sys.stdout.buffer.write(signed)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    layout = _layout(args)
    verifier = _verifier(layout.vkey)
    signed, cp = reader.signed_checkpoint(layout, verifier)
    names = layout.segment_names()
    segments = []
    for i, name in enumerate(names):
        path = layout.segment_path(name)  # hot, or warm (compressed)
        segments.append({"name": name, "bytes": path.stat().st_size,
                         "state": "active" if i == len(names) - 1 else "sealed",
                         "flags": osutil.flags_text(path)})
    tenants = keys.TenantStore(layout.tenants).names()
    status = {"dir": str(args.dir), "origin": cp.origin, "records": cp.size,
              "root": merkle.EMPTY_ROOT.hex() if not cp.size else cp.root.hex(),
              "segments": segments, "tenants": tenants,
              "vkey": str(verifier), "checkpoint": signed.decode()}
    if args.json:
        _print_json(status)
        return EXIT_OK
    print(f"ledger     {args.dir}\norigin     {cp.origin}\nrecords    {cp.size}\n"
          f"segments   {len(names)} ({names[-1]} active)\ntenants    "
          f"{', '.join(tenants)}\n\n{signed.decode()}", end="")
    for s in segments:
        print(f"  {s['name']}  {s['state']:6}  {s['bytes']:>12} bytes  {s['flags']}")
    return EXIT_OK


def _summary(line: bytes) -> str:
    """One record as a table row: seq, time, kind, tenant, action, target, trace id."""
    r = msgspec.json.decode(line)
    when = datetime.fromtimestamp(r["time"]["real_ns"] / 1e9, UTC).isoformat(
        timespec="milliseconds")
    what = r.get("action") or r.get("segment") or r.get("origin") or ""
    return (f"{r['seq']:>10}  {when}  {r['kind']:7} {r['tenant']:12} {what:12} "
            f"{r.get('target_host', ''):22} {r['trace_id']}")


def cmd_show(args: argparse.Namespace) -> int:
    layout = _layout(args)
    if args.seq is not None or args.trace_id:
        lines = [reader.find(layout, seq=args.seq, trace_id=args.trace_id).data]
    else:
        lines = [ln.data for ln in collections.deque(reader.lines(layout), maxlen=args.tail)]
    if args.json:
        sys.stdout.buffer.write(b"".join(ln + b"\n" for ln in lines))
    else:
        print(f"{'seq':>10}  {'time (UTC)':29} {'kind':7} {'tenant':12} {'action':12} "
              f"{'target':22} trace id")
        print("\n".join(map(_summary, lines)))
    return EXIT_OK


def _print_report(report: Report) -> None:
    print(f"ledger     {report.dir}\norigin     {report.origin}\nrecords    {report.records}\n"
          f"checkpoint {report.checkpoint_size}\nroot       {report.root}")
    for s in report.segments:
        mark = "ok" if s.flags_ok else "FLAGS"
        print(f"  {s.name}  {s.state:6}  {s.records:>9} records  {s.flags:11} {mark}")
    print(f"epochs     {report.epochs}")
    for w in [*report.notices, *report.warnings]:
        print(f"warning: {w}")
    rate = report.records / report.seconds if report.seconds else 0
    if report.ok:
        print(f"OK: {report.records} records verified in {report.seconds:.2f} s ({rate:,.0f}/s)")
    else:
        print(f"FAILED: {report.findings[0]}")
        for f in report.findings[1:]:
            print(f"  also: {f}")


def cmd_verify(args: argparse.Namespace) -> int:
    verifier = _verifier(args.vkey) if args.vkey else None
    epoch0 = _verifier(args.epoch_key) if args.epoch_key else None
    progress = Progress("verify")
    try:
        report = verify_dir(args.dir, verifier, epoch0=epoch0, jobs=args.jobs,
                            progress=lambda d, t: progress(d, t, "bytes"))
    except VerifyError as exc:
        _die(str(exc))
    progress.done()
    if args.json:
        _print_json(report.as_dict())
    else:
        _print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_proof(args: argparse.Namespace) -> int:
    layout = _layout(args)
    line = reader.find(layout, seq=args.seq, trace_id=args.trace_id)
    proof = reader.inclusion_proof(layout, _verifier(layout.vkey), line)
    _write_out(proof, args.output)
    if args.record:
        Path(args.record).write_bytes(line.data + b"\n")
    return EXIT_OK


def cmd_consistency(args: argparse.Namespace) -> int:
    layout = _layout(args)
    proof = reader.consistency_proof(layout, _verifier(layout.vkey), args.old, args.new)
    _write_out(proof, args.output)
    return EXIT_OK


def cmd_verify_proof(args: argparse.Namespace) -> int:
    verifier = _verifier(args.vkey)
    data = _read(args.file)
    try:
        if data.startswith(cpmod.PROOF_HEADER.encode()):
            if not args.record:
                _die("an inclusion proof needs --record FILE (the record's line)")
            line = _read(args.record).rstrip(b"\n")
            cp = cpmod.verify_inclusion(data, line, [verifier])
            what = f"record {cpmod.parse_inclusion(data).index} is in the tree of size {cp.size}"
        elif data.startswith(cpmod.CONSISTENCY_HEADER.encode()):
            if not (args.old and args.new):
                _die("a consistency proof needs --old and --new (signed checkpoint files)")
            old = cpmod.open_signed(_read(args.old), [verifier])
            new = cpmod.open_signed(_read(args.new), [verifier])
            cpmod.verify_consistency(data, old, new)
            what = f"tree {new.size} extends tree {old.size}"
        else:
            _die(f"{args.file} is neither a {cpmod.PROOF_HEADER} nor a "
                 f"{cpmod.CONSISTENCY_HEADER} file")
    except (merkle.ProofError, note.NoteError) as exc:
        print(f"FAILED: {exc}")
        return EXIT_FAILED
    except cpmod.FormatError as exc:
        _die(f"{args.file}: {exc}")
    print(f"OK: {what}, signed by {verifier.name}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from . import serve  # uvloop and httptools are imported only by the service

    _layout(args)
    tls = None
    if args.listen or args.tls_cert or args.tls_key:
        _tls_args(args)
        tls = serve.TLS(args.listen, args.tls_cert, args.tls_key)
    try:
        serve.serve(args.dir, args.socket, mode=int(args.socket_mode, 8), group=args.socket_group,
                    use_flags=not args.no_flags, log_level=args.log_level, tls=tls,
                    sealing=serve.Sealing(args.segment_bytes, args.segment_age, args.epoch_seconds),
                    helpers=args.batch_helpers)
    except RuntimeError as exc:
        _die(str(exc))
    return EXIT_OK


def _tls_args(args: argparse.Namespace) -> None:
    if not (args.listen and args.tls_cert and args.tls_key):
        _die("--listen needs --tls-cert and --tls-key: TCP is served with TLS only")
    try:
        front.parse_listen(args.listen)
    except ValueError as exc:
        _die(str(exc))


def cmd_front(args: argparse.Namespace) -> int:
    _tls_args(args)
    host, port = front.parse_listen(args.listen)
    os.environ["VANTIO_SOCKET"] = str(args.socket)
    front.main([host, str(port), str(args.tls_cert), str(args.tls_key), args.log_level])
    return EXIT_OK


def _api_key(args: argparse.Namespace) -> str:
    """From --api-key-file or $VANTIO_API_KEY: never from the command line (ps shows it)."""
    if args.api_key_file:
        return _read(args.api_key_file).decode().strip()
    key = os.environ.get("VANTIO_API_KEY", "").strip()
    if not key:
        _die("give the API key with --api-key-file FILE or $VANTIO_API_KEY")
    return key


def cmd_ingest(args: argparse.Namespace) -> int:
    """Send JSON lines to the service; bad lines are refused here, by number."""
    api = client.Client(_api_key(args), args.socket)
    stream = _open_input(args.file)
    refused: list[str] = []
    progress, done = Progress("ingest"), 0
    with stream:
        for batch in _batches(stream, "default", args.batch, refused):
            if not batch:
                continue
            try:
                receipts = api.submit_batch([msgspec.json.encode(s.fields) for s in batch])
            except client.ApiError as exc:
                _die(f"the service refused a batch after {done} records: {exc}")
            except OSError as exc:
                _die(f"cannot reach {args.socket}: {exc.strerror or exc}")
            _print_acks(receipts)
            done += len(receipts)
            progress(done)
    progress.done()
    api.close()
    print(f"ingested {done} records, refused {len(refused)}", file=sys.stderr)
    return EXIT_FAILED if refused else EXIT_OK


def cmd_anchor_export(args: argparse.Namespace) -> int:
    progress = Progress("copy")
    try:
        out = anchor.export(args.dir, args.to, custodial=args.custodial, since=args.since,
                            progress=lambda d, t: progress(d, t, "bytes"),
                            use_flags=not args.no_flags)
    except anchor.AnchorRefused as exc:
        print(f"vantio: refused, nothing written: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except anchor.AnchorError as exc:
        _die(str(exc))
    progress.done()
    result = {"bundle": str(out.path), "size": out.size,
              "root": base64.b64encode(out.root).decode(), "previous": out.previous,
              "segments": out.segments, "files": out.files, "bytes": out.bytes,
              "manifest_sha256": out.manifest_sha256, "anchor_seq": out.anchor_seq}
    if args.json:
        _print_json(result)
    else:
        since = f" (extends size {out.previous})" if out.previous is not None else \
            " (first export)"
        print(f"exported checkpoint of size {out.size}{since} to {out.path}: {out.files} "
              f"files, {out.bytes} bytes, {len(out.segments)} custodial segments; anchor "
              f"record at seq {out.anchor_seq}", file=sys.stderr)
        print(out.path)
    return EXIT_OK


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    try:
        trusted = audit.parse_trusted_keys(_read(args.trusted_keys).decode())
        tsa = _read(args.tsa_cert) if args.tsa_cert else None
        if args.quorum < 0:
            _die("--quorum cannot be negative")
        report = audit.verify_bundle(args.bundle, trusted, quorum=args.quorum, tsa_cert=tsa)
    except (audit.BundleError, UnicodeDecodeError) as exc:
        _die(str(exc))
    if args.json:
        _print_json(report.as_dict())
    else:
        print("\n".join(audit.report_lines(report)))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    return demo.run(args.dir, args.records, Progress("demo append"))


# -- parser --------------------------------------------------------------------------


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                   help=f"ledger directory (default {DEFAULT_DIR})")


def _tls_options(p: argparse.ArgumentParser, listen_help: str) -> None:
    p.add_argument("--listen", metavar="[HOST:]PORT",
                   help=f"{listen_help} (an address; loopback when only a port)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM), with --listen")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM), with --listen")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _epoch_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epoch-seconds", type=float, default=writer.DEFAULT_EPOCH_S,
                   metavar="S", help="begin a new epoch key when the current one is this old "
                   f"(default {writer.DEFAULT_EPOCH_S:g}; also at every seal)")


def _positive(conv: Callable[[str], float]) -> Callable[[str], float]:
    def check(text: str) -> float:
        value = conv(text)
        if not value > 0:
            raise ValueError(text)
        return value
    check.__name__ = conv.__name__  # argparse names the type in its error
    return check


def _helpers(text: str) -> int | None:
    """--batch-helpers: a count from 0 to 64, or empty for the default."""
    if not text:
        return None
    value = int(text)
    if not 0 <= value <= 64:
        raise ValueError(text)
    return value


def _sealing_options(p: argparse.ArgumentParser) -> None:
    """When the service seals a segment and rotates the epoch key. Each default comes from the
    environment first (VANTIO_SEGMENT_BYTES, VANTIO_SEGMENT_AGE, VANTIO_EPOCH_SECONDS: an
    Environment= drop-in of the packaged unit), checked as the option would be."""
    for option, var, conv, default, what in [
            ("--segment-bytes", "VANTIO_SEGMENT_BYTES", int, writer.DEFAULT_SEGMENT_BYTES,
             "seal the active segment once it holds this many bytes"),
            ("--segment-age", "VANTIO_SEGMENT_AGE", float, writer.DEFAULT_SEGMENT_AGE_S,
             "seal the active segment once it is this many seconds old"),
            ("--epoch-seconds", "VANTIO_EPOCH_SECONDS", float, writer.DEFAULT_EPOCH_S,
             "begin a new epoch key when the current one is this old (also at every seal)")]:
        p.add_argument(option, type=_positive(conv), default=os.environ.get(var, str(default)),
                       metavar="N" if conv is int else "S",
                       help=f"{what} (default ${var}, else {default})")


def _command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_: str,
             ledger_dir: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func)
    if ledger_dir:
        _dir_arg(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vantio", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vantio {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from ._witness_cli import add_commands  # here: it imports this module's helpers
    add_commands(top)
    from ._enforcer_cli import add_commands as add_enforcer_commands
    add_enforcer_commands(top)

    ledger = top.add_parser("ledger", help="the WORM ledger: write, seal, verify, prove",
                            description="The WORM ledger: write, seal, verify, prove.")
    sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")

    p = _command(sub, "init", cmd_init, "create a ledger: layout, identity key, vkey, "
                 "tenant 'default', genesis record; prints the verifier key")
    p.add_argument("--origin", help="checkpoint origin (default vantio.appliance/<host>/ledger)")
    p.add_argument("--identity-key", type=Path, metavar="FILE",
                   help="import this identity key (Ed25519, unencrypted PKCS#8 PEM) instead of "
                   "generating one: it is checked, copied 0600, and the vkey derived from it")
    p.add_argument("--no-flags", action="store_true",
                   help="do not set +a/+i (file systems or users without CAP_LINUX_IMMUTABLE)")

    tenant = sub.add_parser("tenant", help="tenants and their API keys",
                            description="Tenants and their API keys.")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="COMMAND")
    p = _command(tsub, "add", cmd_tenant_add,
                 "create a tenant; prints its new API key alone on stdout, once")
    p.add_argument("name")
    p.add_argument("--role", choices=keys.ROLES, default="writer",
                   help="writer keys may only write, reader keys only read (default writer)")
    _command(tsub, "list", cmd_tenant_list, "list tenants and their roles")

    p = _command(sub, "append", cmd_append, "append event records given as JSON lines; "
                 "prints one JSON line per record: trace_id, seq, receipt")
    p.add_argument("file", nargs="?", default="-", help="JSON lines (default - for stdin)")
    p.add_argument("--tenant", default="default", help="tenant the records belong to")
    p.add_argument("--batch", type=int, default=1024, help="records per group commit")
    _epoch_option(p)
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)

    p = _command(sub, "seal", cmd_seal, "seal the active segment now (+i) and start the next; "
                 "prints the sealed checkpoint")
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = _command(sub, "status", cmd_status, "size, segments, flags, tenants, latest checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _command(sub, "show", cmd_show, "print records (the last 10 by default)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seq", type=int, help="the record with this seq")
    g.add_argument("--trace-id", help="the record with this trace id")
    g.add_argument("--tail", type=int, default=10, help="the last N records")
    p.add_argument("--json", action="store_true", help="the records' canonical lines")

    p = _command(sub, "verify", cmd_verify, "verify the whole ledger offline: exit 0 intact, "
                 "1 it does not verify (first finding named), 2 unreadable")
    p.add_argument("--vkey", type=Path, help="trusted verifier key file (default DIR/vkey)")
    p.add_argument("--epoch-key", type=Path, help="trusted epoch-0 verifier key file (default "
                   "DIR/epoch0.vkey, the host's own copy: a warning says so)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--jobs", type=int, help="processes to scan segments with (default: cores)")

    p = _command(sub, "proof", cmd_proof,
                 "write a C2SP .tlog-proof for one record against the latest checkpoint")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seq", type=int)
    g.add_argument("--trace-id")
    p.add_argument("-o", "--output", help="proof file (default stdout)")
    p.add_argument("--record", help="also write the record's line to this file")

    p = _command(sub, "consistency", cmd_consistency,
                 "write a consistency proof between two tree sizes")
    p.add_argument("--old", type=int, required=True, help="the older tree size")
    p.add_argument("--new", type=int, help="the newer tree size (default: latest checkpoint)")
    p.add_argument("-o", "--output", help="proof file (default stdout)")

    p = _command(sub, "verify-proof", cmd_verify_proof,
                 "check a .tlog-proof against a record line, or a consistency proof against "
                 "two checkpoints; exit 0 holds, 1 does not, 2 unreadable", ledger_dir=False)
    p.add_argument("file", help="proof file (- for stdin)")
    p.add_argument("--vkey", type=Path, required=True, help="trusted verifier key file")
    p.add_argument("--record", help="the record's line (for an inclusion proof)")
    p.add_argument("--old", help="older signed checkpoint (for a consistency proof)")
    p.add_argument("--new", help="newer signed checkpoint (for a consistency proof)")

    p = _command(top, "serve", cmd_serve, "run the ledger service (ingest API) in the "
                 "foreground on a unix socket; SIGTERM drains the queue and stops")
    p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                   help=f"unix socket path (default {DEFAULT_SOCKET})")
    p.add_argument("--socket-mode", default="660", help="socket file mode, octal (default 660)")
    p.add_argument("--socket-group", help="group owning the socket (e.g. vantio-ingest)")
    _tls_options(p, "also serve TCP with TLS, through a front process (see vantio front)")
    _sealing_options(p)
    p.add_argument("--batch-helpers", type=_helpers, metavar="N",
                   default=os.environ.get("VANTIO_BATCH_HELPERS", ""),
                   help="processes that validate and prepare large batches beside the event "
                   "loop; 0: none (default $VANTIO_BATCH_HELPERS, else one per core beyond "
                   "the first, at most 4)")
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)

    p = _command(top, "front", cmd_front, "serve TCP with TLS in front of the service's unix "
                 "socket: a process with no ledger and no keys (its own unit)", ledger_dir=False)
    _tls_options(p, "the TCP address to serve with TLS")
    p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                   help=f"the service's unix socket (default {DEFAULT_SOCKET})")

    p = _command(top, "ingest", cmd_ingest, "send event records (JSON lines) to the ledger "
                 "service; prints one JSON line per durable record: trace_id, seq, receipt",
                 ledger_dir=False)
    p.add_argument("file", nargs="?", default="-", help="JSON lines (default - for stdin)")
    p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                   help=f"the service's unix socket (default {DEFAULT_SOCKET})")
    p.add_argument("--api-key-file", help="file holding the tenant's API key "
                   "(or set $VANTIO_API_KEY)")
    p.add_argument("--batch", type=int, default=500, help="records per request (at most 1000)")

    anchor_cmd = top.add_parser("anchor", help="carry checkpoints off the host",
                                description="Carry checkpoints off the host (sneakernet).")
    asub = anchor_cmd.add_subparsers(dest="anchor_command", required=True, metavar="COMMAND")
    from ._anchoring_cli import add_commands as add_anchoring_commands  # import, export, retain
    add_anchoring_commands(top, ledger=sub, anchor=asub)
    p = _command(asub, "export", cmd_anchor_export,
                 "write an anchor bundle of the current checkpoint to removable media and "
                 "record it; refuses (exit 1, nothing written) a rollback or fork of the last "
                 "export; needs the writer lock (exit 2 while the service runs)")
    p.add_argument("--to", type=Path, required=True, metavar="MEDIA",
                   help="directory on the media (the bundle goes in MEDIA/vantio-anchor-SIZE)")
    p.add_argument("--custodial", action="store_true",
                   help="also copy the sealed segments since the last export")
    p.add_argument("--since", type=int, metavar="SIZE",
                   help="with --custodial: copy the sealed segments holding records at seq >= "
                   "SIZE (default: the size of the last export)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-flags", action="store_true", help=argparse.SUPPRESS)

    p = _command(top, "verify", cmd_verify_bundle,
                 "verify an anchor bundle (vantio anchor export) or a regulator bundle "
                 "(vantio export) with public keys only: exit 0 verified, 1 it does not "
                 "verify, 2 unreadable", ledger_dir=False)
    p.add_argument("bundle", type=Path, help="the bundle directory (vantio-anchor-SIZE, or "
                   "the --out directory of vantio export)")
    p.add_argument("--trusted-keys", required=True, metavar="FILE",
                   help="verifier keys, one a line: the log's identity and epoch-0 keys, "
                   "witness keys")
    p.add_argument("--quorum", type=int, default=0, metavar="K",
                   help="require K distinct trusted witnesses' cosignatures (default 0: "
                   "reported only)")
    p.add_argument("--tsa-cert", metavar="PEM",
                   help="check the RFC 3161 time-stamp tokens against this TSA certificate")
    p.add_argument("--json", action="store_true", help="machine-readable report")

    p = _command(top, "demo", cmd_demo, "create a local ledger, feed it demo records, seal, "
                 "verify and prove one record, printing each step", ledger_dir=False)
    p.add_argument("--dir", type=Path, default=Path("demo-ledger"),
                   help="where to create the demo ledger (default ./demo-ledger)")
    p.add_argument("--records", type=int, default=5000, help="how many demo records")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (CommandError, writer.LedgerError, keys.KeyFileError, reader.ReadError,
            VerifyError, note.NoteError) as exc:
        print(f"vantio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":  # run the package's module, so that one CommandError class exists
    from vantio_appliance.cli import main as package_main

    sys.exit(package_main())
