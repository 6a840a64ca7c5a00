"""Benchmark: the ingest API over its unix socket, acknowledged (durable) records per second.

One run, four servers, the same four loads each, from bench/loadgen.c (C,
epoll, one thread: client and server share the machine's cores), compiled
at run time with gcc -O2 into the work directory:

  vantio     `vantio serve` as shipped (its own HTTP/1.1 server on uvloop,
             one process, its batch helpers, the unix socket) on a new
             ledger; a 201 means the record's group is fdatasync'd.
  granian    the same app (ingest.App, with its batch helpers) under granian
             (RSGI, one worker, uvloop: the service's HTTP server until
             2026-12-08; bench/granian_app.py) on a ledger of its own: the
             choice of HTTP server, measured. Skipped, loudly, when granian
             is not installed (it is in the dev extra).
  SQLite     bench/sqlite_ingest_app.py on the same HTTP server
             (vantio_appliance._internal.http1 on uvloop, one process, the
             socket options of serve.py): the same key lookup and msgspec
             validation (ingest.parse_event/parse_batch), the same canonical
             record bytes, group commit into SQLite (WAL, synchronous=FULL),
             201 after COMMIT; no batch helpers.
  no store   the same app and server acknowledging at once, storing nothing:
             the ceiling of HTTP + authentication + validation on this host.

The loads, each after --warmup seconds that are not measured:

  single     POST /v1/records, one enforcer-like event per request (as
             vantio_appliance.demo.event makes them), 64 keep-alive
             connections, closed loop: requests/s, latency p50/p99 (send to
             full response).
  open       the same requests at a fixed 5,000/s offered, spread over the 64
             connections (open loop): latency p50/p99/p99.9 measured from each
             request's scheduled send time (no coordinated omission), and the
             rate achieved.
  batch1000  POST /v1/records:batch, 1000 records per request, 4 connections:
  batch100   and 100 records per request: records/s.

Correctness is counted, not assumed: the 201s and the records in their
bodies, one response of each load checked against the tenant key (receipt
and x-vantio-signature recomputed); after the vantio server has stopped,
`vantio ledger verify` must pass and count acknowledged + system records;
the SQLite table must hold the acknowledged records with an intact hash
chain. Targets (issue 3, for vantio): >= 20,000 acknowledged single-record
requests/s; p99 < 10 ms at 5,000 requests/s offered; >= 100,000 records/s
through the batch endpoint. Figures and verdicts only; nothing is asserted.

    .venv/bin/python bench/ingest.py [--repeat N] [--duration S] [--warmup S] [--json]
    .venv/bin/python bench/ingest.py --profile [--profile-seconds S]

For vantio, the service's fdatasync histogram (/metrics) is read before and
after each load: how many group writes it made, and how many of them took
over 5 and over 10 ms (summed over the runs). A 201 waits for its group's fdatasync, so a disk that
stalls sets the latency tail whatever the server does.

The host's other work is measured beside each load ("other processes,
cores": CPU the host spent outside the server and the load generator);
figures taken while it is well above zero are low. The single-record figures
vary by +-20% between runs on the 2-core VM even when it is quiet: use
--repeat 3 (medians and ranges are printed) before comparing two builds.

--profile: py-spy (pip install py-spy) samples the `vantio serve` process
(its event loop and commit threads; not the batch helpers, which the
single-record load does not use), native frames included, while the
single-record load runs; prints where its threads spend their samples.

Everything the run creates is in one temporary directory (servers stopped,
inode flags cleared, removed at the end). Needs root for the ledger's inode
flags (without root the ledger runs with --no-flags).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import msgspec

# Benchmark the checkout this script belongs to, also when it is not installed.
REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _metrics import metrics_text  # noqa: E402
from _proc import cpu_seconds, descendants  # noqa: E402
from _workdir import checkout, default_base, filesystem_of, remove  # noqa: E402

from vantio_appliance import demo  # noqa: E402
from vantio_appliance.ingest import parse_batch, parse_event  # noqa: E402
from vantio_appliance.records import receipt  # noqa: E402

LOADGEN_C: Final = REPO / "bench" / "loadgen.c"
VANTIO: Final = [sys.executable, "-m", "vantio_appliance.cli"]
#: the SQLite and no-store servers: `SQLITE_APP --socket PATH {app,null}`
SQLITE_APP: Final = [sys.executable, str(REPO / "bench" / "sqlite_ingest_app.py")]
TENANT: Final = "bench"
ORIGIN: Final = "vantio.appliance/bench/ingest"
POOL: Final = 1024  # distinct enforcer events, cycled
BATCH_BODIES: Final = 16  # distinct batch bodies per size, cycled
TARGET_RPS: Final = 20_000
TARGET_P99_MS: Final = 10.0
TARGET_BATCH: Final = 100_000
SERVERS: Final = ("vantio", "granian", "sqlite", "null")
LOADS: Final = ("single", "open", "batch1000", "batch100")
LABELS: Final = {"vantio": "vantio", "granian": "granian", "sqlite": "SQLite",
                  "null": "no store"}
#: ingest.App under granian (bench/granian_app.py), with the options serve.py gave it
GRANIAN: Final = [sys.executable, "-m", "granian", "--interface", "rsgi", "--workers", "1",
                  "--loop", "uvloop", "--no-access-log", "--backlog", "1024",
                  "--uds-permissions", "660", "--log-level", "warning",
                  "--working-dir", str(REPO / "bench"), "granian_app:app"]


def say(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


# -- the work directory (as bench/ledger_append.py) ------------------------------------

def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version
    out = [f"python {sys.version.split()[0]}", f"sqlite {sqlite3.sqlite_version}"]
    for pkg in ("httptools", "uvloop", "msgspec"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{pkg} {version(pkg)}")
    return ", ".join(out)


def compile_loadgen(work: Path) -> Path:
    exe = work / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(LOADGEN_C)], check=True,
                   timeout=120)
    return exe


# -- requests --------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    key: str
    label: str
    batch: int  # records per request; 1: POST /v1/records
    conns: int
    rate: float  # requests/s offered; 0: closed loop

    @property
    def path(self) -> str:
        return "/v1/records" if self.batch == 1 else "/v1/records:batch"


def make_loads(args: argparse.Namespace) -> list[Load]:
    loads = [
        Load("single", f"single, {args.conns} conns, closed loop", 1, args.conns, 0),
        Load("open", f"single, {args.rate:,.0f}/s offered, open loop", 1, args.conns,
             args.rate),
        Load("batch1000", f"batch of 1000, {args.batch_conns} conns", 1000, args.batch_conns,
             0),
        Load("batch100", f"batch of 100, {args.batch_conns} conns", 100, args.batch_conns, 0),
    ]
    return [ld for ld in loads if not args.loads or ld.key in args.loads]


def event_bodies() -> list[bytes]:
    """POOL enforcer events, JSON-encoded as a client would send them, each validated here."""
    rng = random.Random(7)  # benchmark data, not secrets
    bodies = [msgspec.json.encode(demo.event(rng)) for _ in range(POOL)]
    for body in bodies:
        parse_event(body)
    return bodies


def http_request(path: str, api_key: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: vantio\r\nauthorization: Bearer {api_key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode() + body


def write_requests(work: Path, api_key: str, loads: list[Load]) -> dict[int, Path]:
    """One request file per batch size, in loadgen's framing: b"<length>\\n<request>"."""
    events = event_bodies()
    files: dict[int, Path] = {}
    for batch in sorted({ld.batch for ld in loads}):
        if batch == 1:
            bodies = events
        else:
            bodies = []
            for k in range(BATCH_BODIES):
                start = k * batch
                body = (b'{"records":[' + b",".join(events[(start + i) % POOL]
                                                     for i in range(batch)) + b"]}")
                bodies.append(body)
            assert len(parse_batch(bodies[0])) == batch
        path = work / f"requests-{batch}.bin"
        path_name = "/v1/records" if batch == 1 else "/v1/records:batch"
        with open(path, "wb") as f:
            for body in bodies:
                req = http_request(path_name, api_key, body)
                f.write(b"%d\n" % len(req) + req)
        files[batch] = path
    return files


def check_sample(path: Path, api_key: str, batch: int) -> bool:
    """A 201 the load received: its receipts and x-vantio-signature, recomputed from the key."""
    if not path.exists():
        return False
    head, _, body = path.read_bytes().partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().decode()
    sig = headers.get(b"x-vantio-signature", "")
    try:
        doc = msgspec.json.decode(body)
        if batch == 1:
            return hmac.compare_digest(sig, receipt(api_key, doc["trace_id"]))
        recs = doc["records"]
        tids = [r["trace_id"] for r in recs]
        joined = hmac.digest(api_key.encode(), "\n".join(tids).encode(), "sha256").hex()
        return (len(recs) == batch and hmac.compare_digest(sig, joined)
                and all(r["receipt"] == receipt(api_key, r["trace_id"]) for r in recs))
    except (msgspec.DecodeError, KeyError, TypeError):
        return False


# -- servers ---------------------------------------------------------------------

def host_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole host since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class Server:
    """A server process (and its batch helpers, for vantio) that this benchmark started."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], sock: Path,
                 log: Path) -> None:
        self.name, self.cmd, self.sock, self.log = name, cmd, sock, log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, cwd=sock.parent, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited ({self.proc.returncode}):\n"
                                   f"{self.log_tail()}")
            if healthz(self.sock):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} server not ready after {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU of the server's processes alive now (helpers included), since they started."""
        return cpu_seconds([self.proc.pid, *descendants(self.proc.pid)])

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM (the service drains its queue), then SIGKILL to its group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"  {self.name} server did not stop in {timeout:.0f} s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self._log.close()
        return self.proc.returncode


def healthz(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            return s.recv(4096).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def fsync_buckets(sock: Path) -> dict[str, float]:
    """The service's fdatasync histogram from /metrics: cumulative count by bound ("le")."""
    out = {}
    for line in metrics_text(sock).splitlines():
        if line.startswith('vantio_fsync_seconds_bucket{le="'):
            name, value = line.rsplit(" ", 1)
            out[name.split('"')[1]] = float(value)
    return out


def fsync_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """fdatasyncs during a load: how many, and how many took over 5 and 10 ms."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    count = delta.get("+Inf", 0.0)
    return {"count": int(count), "over_5ms": int(count - delta.get("0.005", count)),
            "over_10ms": int(count - delta.get("0.01", count))}


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VANTIO_")}
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "bench"),
                                         *filter(None, [env.get("PYTHONPATH")])])
    return env


def use_flags() -> bool:
    return os.geteuid() == 0


def init_ledger(root: Path) -> str:
    """A new ledger with a writer tenant; its API key."""
    flags = [] if use_flags() else ["--no-flags"]
    subprocess.run([*VANTIO, "ledger", "init", "--dir", str(root), "--origin", ORIGIN, *flags],
                   check=True, capture_output=True, timeout=60, env=base_env())
    out = subprocess.run([*VANTIO, "ledger", "tenant", "add", "--dir", str(root), TENANT],
                         check=True, capture_output=True, text=True, timeout=60, env=base_env())
    return out.stdout.strip()


def start_vantio(work: Path, ledger: Path, sock: Path) -> Server:
    cmd = [*VANTIO, "serve", "--dir", str(ledger), "--socket", str(sock),
           "--log-level", "warning", *([] if use_flags() else ["--no-flags"])]
    return Server("vantio", cmd, base_env(), sock, work / "vantio-serve.log")


def start_granian(work: Path, ledger: Path, sock: Path) -> Server:
    env = {"VANTIO_LEDGER_DIR": str(ledger), "VANTIO_NO_FLAGS": "0" if use_flags() else "1"}
    return Server("granian", [*GRANIAN[:-1], "--uds", str(sock), GRANIAN[-1]],
                  {**base_env(), **env}, sock, work / "granian-server.log")


def start_sqlite(name: str, work: Path, ledger: Path, sock: Path) -> Server:
    """bench/sqlite_ingest_app.py: "sqlite" stores in work/s.db, "null" stores nothing."""
    cmd = [*SQLITE_APP, "--socket", str(sock), "app" if name == "sqlite" else "null"]
    env = {"SQLITE_INGEST_LEDGER": str(ledger), "SQLITE_INGEST_DB": str(work / "s.db")}
    return Server(name, cmd, {**base_env(), **env}, sock, work / f"{name}-server.log")


# -- loads -----------------------------------------------------------------------

def run_load(loadgen: Path, server: Server, load: Load, requests: Path, api_key: str,
             args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sample = work / f"sample-{server.name}-{load.key}.http"
    sample.unlink(missing_ok=True)
    cmd = [str(loadgen), "--socket", str(server.sock), "--requests", str(requests),
           "--conns", str(load.conns), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--drain", "60", "--sample", str(sample)]
    if load.rate:
        cmd += ["--rate", str(load.rate)]
    say(f"  {LABELS.get(server.name, server.name)}: {load.label} "
        f"({args.warmup:g} s warm-up + {args.duration:g} s) ...", end="")
    cpu0, t0, host0 = server.cpu_seconds(), time.perf_counter(), host_cpu()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    fsync0 = fsync_buckets(server.sock) if server.name in ("vantio", "granian") else None
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=args.warmup + args.duration + 180)
    wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - cpu0
    host1, kids1 = host_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    loadgen_cpu = (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr.strip()}\n"
                           f"server log:\n{server.log_tail()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["loadgen_stderr"] = proc.stderr.strip()
    result["batch"] = load.batch
    if fsync0 is not None:
        result["fsync"] = fsync_figures(fsync0, fsync_buckets(server.sock))
    result["server_cpu_cores"] = cpu / wall
    # CPU the host spent on anything but this server and the load generator: other
    # processes share the cores (and the disk), and figures taken beside them are lower
    result["other_cpu_cores"] = max(0.0, (host1[0] - host0[0]) - cpu - loadgen_cpu) / wall
    result["steal_cores"] = (host1[1] - host0[1]) / wall
    result["server_cpu_us_per_record"] = 1e6 * cpu / max(1, result["acked_records"])
    result["sample_ok"] = check_sample(sample, api_key, load.batch)
    result["ok_201"] = result["statuses"].get("201", 0)
    result["refused"] = result["responses_total"] - result["ok_201"]
    lat = result["latency_ms"]
    say(f" {result['rps']:,.0f} req/s, {result['records_per_s']:,.0f} records/s, "
        f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; other processes "
        f"{result['other_cpu_cores']:.2f} cores")
    if result["loadgen_stderr"]:
        say("    " + result["loadgen_stderr"].replace("\n", "\n    "))
    return result


def run_loads(loadgen: Path, server: Server, loads: list[Load], files: dict[int, Path],
              api_key: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return {ld.key: run_load(loadgen, server, ld, files[ld.batch], api_key, args, work)
            for ld in loads}


def totals(results: dict[str, Any]) -> dict[str, int]:
    return {"responses": sum(r["responses_total"] for r in results.values()),
            "ok_201": sum(r["ok_201"] for r in results.values()),
            "refused": sum(r["refused"] for r in results.values()),
            "acked_records": sum(r["acked_records"] for r in results.values()),
            "conn_errors": sum(r["conn_errors"] for r in results.values()),
            "abandoned": sum(r["abandoned"] for r in results.values()),
            "samples_checked": sum(r["sample_ok"] for r in results.values()),
            "samples": len(results)}


# -- checks after a run ------------------------------------------------------------

def check_ledger(root: Path, acked: int) -> dict[str, Any]:
    """`vantio ledger verify`, and its record count against acknowledged + system records."""
    say("  vantio ledger verify ...", end="")
    t0 = time.perf_counter()
    proc = subprocess.run([*VANTIO, "ledger", "verify", "--dir", str(root), "--json"],
                          capture_output=True, text=True, timeout=1800, env=base_env())
    seconds = time.perf_counter() - t0
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        say(f" no report: {proc.stderr.strip()[-500:]}")
        return {"verify_ok": False, "match": False, "error": proc.stderr.strip()[-500:]}
    system = 0
    for seg in sorted((root / "segments").iterdir()):
        with open(seg, "rb") as f:
            while chunk := f.read(64 * 2**20):
                system += chunk.count(b'"tenant":"_system"')
    records = int(report["records"])
    out = {"verify_ok": bool(report["ok"]) and proc.returncode == 0, "records": records,
           "system_records": system, "event_records": records - system, "acknowledged": acked,
           "match": records == acked + system, "segments": len(report["segments"]),
           "findings": [f["message"] for f in report["findings"][:5]],
           "verify_seconds": seconds}
    say(f" {'OK' if out['verify_ok'] else 'FAILED'}: {records:,} records = {acked:,} "
        f"acknowledged + {system} system: {'yes' if out['match'] else 'NO'} ({seconds:.1f} s)")
    return out


def check_sqlite(db: Path, acked: int) -> dict[str, Any]:
    """Rows against acknowledged records; seq contiguous; leaf hashes and chain recomputed."""
    say("  SQLite table check ...", end="")
    con = sqlite3.connect(db)
    try:
        rows, chain_ok, prev = 0, True, b"\0" * 32
        sha = hashlib.sha256
        cursor = con.execute("SELECT seq, record, leaf, chain FROM records ORDER BY seq")
        for expect, (seq, record, leaf, chain) in enumerate(cursor):
            good_leaf = sha(b"\x00" + record).digest()
            prev = sha(prev + good_leaf).digest()
            chain_ok &= seq == expect and leaf == good_leaf and chain == prev
            rows += 1
    finally:
        con.close()
    out = {"rows": rows, "acknowledged": acked, "match": rows == acked, "chain_ok": chain_ok}
    say(f" {rows:,} rows = {acked:,} acknowledged: {'yes' if out['match'] else 'NO'}; "
        f"hash chain {'intact' if chain_ok else 'BROKEN'}")
    return out


# -- the main run ------------------------------------------------------------------

def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One load over repeated runs: the median of each figure, the runs' figures beside it."""
    out = dict(runs[-1])
    for key in ("rps", "records_per_s", "server_cpu_cores", "server_cpu_us_per_record",
                "client_cpu_s", "other_cpu_cores", "steal_cores"):
        out[key] = statistics.median(r[key] for r in runs)
    out["latency_ms"] = {k: statistics.median(r["latency_ms"][k] for r in runs)
                         for k in runs[0]["latency_ms"]}
    out["runs"] = len(runs)
    out["runs_rps"] = [r["rps"] for r in runs]
    out["runs_records_per_s"] = [r["records_per_s"] for r in runs]
    out["runs_p99_ms"] = [r["latency_ms"]["p99"] for r in runs]
    out["sample_ok"] = all(r["sample_ok"] for r in runs)
    if "fsync" in runs[0]:
        out["runs_fsync"] = [r["fsync"] for r in runs]
    return out


def serve_and_load(name: str, work: Path, ledger: Path, loadgen: Path, loads: list[Load],
                   files: dict[int, Path], api_key: str, args: argparse.Namespace
                   ) -> dict[str, Any]:
    """Start one of SERVERS, run the loads, stop it, check what it stored."""
    sock = work / f"{name}.sock"
    say(f"{LABELS[name]} server")
    if name == "vantio":
        server = start_vantio(work, ledger, sock)
    elif name == "granian":
        server = start_granian(work, ledger, sock)
    else:
        server = start_sqlite(name, work, ledger, sock)
    try:
        server.wait_ready()
        results = run_loads(loadgen, server, loads, files, api_key, args, work)
    finally:
        code = server.stop()
    entry: dict[str, Any] = {"command": " ".join(server.cmd), "loads": results,
                             "totals": totals(results), "exit_code": code}
    acked = entry["totals"]["acked_records"]
    if name in ("vantio", "granian"):
        entry["check"] = check_ledger(ledger, acked)
        entry["check_ok"] = bool(entry["check"]["verify_ok"] and entry["check"]["match"])
    elif name == "sqlite":
        entry["check"] = check_sqlite(work / "s.db", acked)
        entry["check_ok"] = bool(entry["check"]["match"] and entry["check"]["chain_ok"])
        for p in work.glob("s.db*"):
            p.unlink()
    else:
        entry["check_ok"] = True
    return entry


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    loadgen = compile_loadgen(work)
    loads = make_loads(args)
    names = [s for s in SERVERS if s not in args.skip]
    if "granian" in names and importlib.util.find_spec("granian") is None:
        say("SKIPPED granian: not installed (.venv/bin/pip install -c constraints.txt granian)")
        names.remove("granian")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(args.repeat):
        if args.repeat > 1:
            say(f"run {rep + 1} of {args.repeat}")
        ledger = work / f"ledger-{rep}"
        api_key = init_ledger(ledger)
        twin = work / f"ledger-{rep}-granian"  # the same tenant key, a ledger of its own
        if "granian" in names:
            shutil.copytree(ledger, twin)
        files = write_requests(work, api_key, loads)
        for name in names:
            runs[name].append(serve_and_load(name, work, twin if name == "granian" else ledger,
                                             loadgen, loads, files, api_key, args))
        remove(ledger)
        if twin.exists():
            remove(twin)
    out: dict[str, Any] = {"servers": {}, "repeat": args.repeat}
    for name in names:
        entries = runs[name]
        out["servers"][name] = {
            "command": entries[0]["command"],
            "loads": {ld.key: summarize([e["loads"][ld.key] for e in entries]) for ld in loads},
            "totals": {k: sum(e["totals"][k] for e in entries) for k in entries[0]["totals"]},
            "checks": [e.get("check") for e in entries],
            "check_ok": all(e["check_ok"] for e in entries),
            "exit_codes": [e["exit_code"] for e in entries]}
    out.update({
        "unit": "acknowledged requests/s and records/s (201 only after the commit is durable)",
        "loads": [ld.__dict__ for ld in loads], "duration_s": args.duration,
        "warmup_s": args.warmup,
        "targets": {"single_min_requests_per_second": TARGET_RPS,
                    "open_loop_rate": args.rate, "open_loop_p99_max_ms": TARGET_P99_MS,
                    "batch_min_records_per_second": TARGET_BATCH},
        "host": {"cpus": os.cpu_count(), "filesystem": filesystem_of(work),
                 "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
                 "versions": versions()},
        "checkout": f"{REPO} at {checkout()}"})
    out["verdicts"] = verdicts(out)
    return out


def verdicts(result: dict[str, Any]) -> dict[str, str]:
    v = result["servers"].get("vantio")
    if v is None:
        return {}
    loads, rate = v["loads"], result["targets"]["open_loop_rate"]
    out: dict[str, str] = {}
    if "single" in loads:
        rps = loads["single"]["rps"]
        out["single"] = ("meets target" if rps >= TARGET_RPS
                         else f"below target ({rps / TARGET_RPS:.0%} of {TARGET_RPS:,}/s)")
    if "open" in loads:
        o = loads["open"]
        p99, kept = o["latency_ms"]["p99"], o["rps"] >= 0.99 * rate
        why = [*([] if p99 < TARGET_P99_MS else [f"p99 {p99:.1f} ms >= {TARGET_P99_MS:g}"]),
               *([] if kept else [f"achieved {o['rps']:,.0f}/s < offered"])]
        out["open"] = "meets target" if not why else f"below target ({', '.join(why)})"
    if "batch1000" in loads:
        rec = loads["batch1000"]["records_per_s"]
        out["batch1000"] = ("meets target" if rec >= TARGET_BATCH
                            else f"below target ({rec / TARGET_BATCH:.0%} of "
                                 f"{TARGET_BATCH:,}/s)")
    if "batch100" in loads:
        out["batch100"] = "(no target)"
    t = v["totals"]
    correct = (t["refused"] == 0 and t["conn_errors"] == 0 and t["abandoned"] == 0
               and t["samples_checked"] == t["samples"] and v["check_ok"])
    out["correctness"] = "OK" if correct else "FAILED"
    return out


def _fsyncs(load: dict[str, Any]) -> str:
    """The fdatasyncs of a load, summed over its runs (vantio only)."""
    if "runs_fsync" not in load:
        return "-"
    n, over5, over10 = (sum(f[k] for f in load["runs_fsync"])
                        for k in ("count", "over_5ms", "over_10ms"))
    return f"{n:,}/{over5}/{over10}"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict[str, Any], work: Path) -> None:
    host, servers, verdict = result["host"], result["servers"], result["verdicts"]
    names = list(servers)
    print(f"\nIngest over the unix socket: acknowledged requests/s and records/s "
          f"(201 only once durable), {result['warmup_s']:g} s warm-up + "
          f"{result['duration_s']:g} s measured per load"
          + (f"; medians of {result['repeat']} runs" if result["repeat"] > 1 else "")
          + ".\n"
          f"Work dir {work} ({host['filesystem']}), {host['cpus']} CPUs shared by the "
          f"servers and the C load generator; {host['versions']}; code: {result['checkout']}.\n"
          f"1-minute load average {host['load_1min_before']:.2f} before, "
          f"{host['load_1min_after']:.2f} after.\n"
          f"Servers: vantio = `vantio serve` (its own HTTP/1.1 server on uvloop, one "
          f"process, batch helpers); granian = the same app and helpers under granian "
          f"(RSGI, one worker: the server until 2026-12-08), a ledger of its own; "
          f"SQLite = bench/sqlite_ingest_app.py (same validation "
          f"and record bytes, WAL + synchronous=FULL, group commit); no store = the same app "
          f"answering 201 at once (ceiling of HTTP + validation). SQLite and no store run on "
          f"the same HTTP server and validation as vantio, in one process without helpers.\n"
          f"Targets (vantio): >= {TARGET_RPS:,} single-record requests/s; p99 < "
          f"{TARGET_P99_MS:g} ms at {result['targets']['open_loop_rate']:,.0f}/s offered; "
          f">= {TARGET_BATCH:,} records/s through the batch endpoint.\n")
    width = 22
    head = f"{'load':<38} {'figure':<22}" + "".join(f"{LABELS[n]:>{width}}" for n in names)
    print(head + "   target        verdict")
    print("-" * (len(head) + 40))
    first = servers[names[0]]["loads"]

    def row(label: str, figure: str, cells: list[str], target: str = "", verdict_: str = ""
            ) -> None:
        print(f"{label:<38} {figure:<22}" + "".join(f"{c:>{width}}" for c in cells)
              + (f"   {target:<13} {verdict_}" if target or verdict_ else ""))

    for key in first:
        loads = [servers[n]["loads"][key] for n in names]
        conns = loads[0]["conns"]
        batch = loads[0]["batch"]
        if key == "open":
            label = f"single, {loads[0]['offered_rps']:,.0f}/s offered, {conns} conns"
            row(label, "achieved requests/s", [_fmt(r["rps"]) for r in loads])
            row("", "latency p50/p99/p99.9",
                [f"{r['latency_ms']['p50']:.2f}/{r['latency_ms']['p99']:.2f}/"
                 f"{r['latency_ms']['p999']:.1f}" for r in loads],
                f"p99 < {TARGET_P99_MS:g} ms", verdict.get(key, ""))
        elif batch == 1:
            row(f"single, {conns} conns, closed loop", "requests/s",
                [_fmt(r["rps"]) for r in loads], f">= {TARGET_RPS:,}", verdict.get(key, ""))
            row("", "latency p50/p99 ms",
                [f"{r['latency_ms']['p50']:.2f}/{r['latency_ms']['p99']:.2f}" for r in loads])
        else:
            target = f">= {TARGET_BATCH:,}" if key == "batch1000" else ""
            row(f"batch of {batch}, {conns} conns, closed loop", "records/s",
                [_fmt(r["records_per_s"]) for r in loads], target, verdict.get(key, ""))
            row("", "requests/s, p50/p99 ms",
                [f"{r['rps']:,.0f}, {r['latency_ms']['p50']:.1f}/{r['latency_ms']['p99']:.1f}"
                 for r in loads])
        row("", "server CPU: cores, us/rec",
            [f"{r['server_cpu_cores']:.2f}, {r['server_cpu_us_per_record']:.1f}" for r in loads])
        row("", "fdatasyncs: n/>5 ms/>10 ms", [_fsyncs(r) for r in loads])
        row("", "loadgen CPU s", [f"{r['client_cpu_s']:.2f}" for r in loads])
        row("", "other processes, cores", [f"{r['other_cpu_cores']:.2f}" for r in loads])
        if result["repeat"] > 1:
            field = "runs_records_per_s" if batch > 1 else "runs_rps"
            row("", f"range of {result['repeat']} runs",
                [f"{min(r[field]):,.0f}-{max(r[field]):,.0f}" for r in loads])
            if key == "open":
                row("", "range of p99 ms",
                    [f"{min(r['runs_p99_ms']):.1f}-{max(r['runs_p99_ms']):.1f}" for r in loads])
    print()
    if "vantio" in servers and "sqlite" in servers:
        v, s = servers["vantio"]["loads"], servers["sqlite"]["loads"]
        ratios = ", ".join(
            f"{k} {v[k]['records_per_s'] / max(1.0, s[k]['records_per_s']):.2f}x"
            for k in v if k in s)
        print(f"vantio / SQLite (records/s): {ratios}")
    print("\nCorrectness:")
    for n in names:
        t = servers[n]["totals"]
        line = (f"  {LABELS[n]:<9} {t['responses']:>10,} responses: {t['ok_201']:,} 201, "
                f"{t['refused']:,} other; {t['acked_records']:,} records acknowledged; "
                f"{t['conn_errors']} connection errors, {t['abandoned']} left in flight; "
                f"receipts/signatures recomputed on {t['samples_checked']}/{t['samples']} "
                f"loads")
        print(line)
        for check in servers[n]["checks"]:
            if check is None:
                continue
            if "records" in check:
                print(f"            vantio ledger verify: "
                      f"{'OK' if check.get('verify_ok') else 'FAILED'}, "
                      f"{check.get('records', 0):,} records in {check.get('segments', 0)} "
                      f"segments = {check.get('acknowledged', 0):,} acknowledged + "
                      f"{check.get('system_records', 0)} system: "
                      f"{'yes' if check.get('match') else 'NO'}"
                      + (f"; findings: {check['findings']}" if check.get("findings") else ""))
            elif "rows" in check:
                print(f"            SQLite: {check['rows']:,} rows = acknowledged: "
                      f"{'yes' if check['match'] else 'NO'}; hash chain "
                      f"{'intact' if check['chain_ok'] else 'BROKEN'}")
    print(f"\nverdict: single {verdict.get('single', '-')}; open loop "
          f"{verdict.get('open', '-')}; batch {verdict.get('batch1000', '-')}; "
          f"correctness {verdict.get('correctness', '-')}")


# -- --profile -----------------------------------------------------------------------

_WAITS: Final = ("Condition.wait", "EpollSelector.select", "GroupCommitter._take",
                 "Thread.join", "Event.wait", "SqliteCommitter._take")
_SYSCALLS: Final = ("fdatasync", "fsync", "write", "send", "sendto", "recv", "read",
                    "rename", "epoll_wait", "openat", "open64", "close", "unlink", "getpid",
                    "sched_yield", "syscall", "futex", "ioctl", "fstat")


def _short(frame: str) -> str:
    """'func (path/file.py:12)' -> 'func (file.py:12)'; native 'sym (lib.so)' kept short."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    return f"{name} ({Path(where).name})" if where else name


def _is_python(frame: str) -> bool:
    return ".py:" in frame


#: the HTTP server is among the app's own (vantio_appliance/_internal/http1.py)
_LISTED: Final = ("vantio_appliance/", "asyncio/futures.py", "concurrent/futures/",
                   "asyncio/selector_events.py", "asyncio/events.py", "json/")


def _worth_listing(frame: str) -> bool:
    """Frames for the inclusive list: the app's own and the hand-offs, not the boot chain."""
    return (_is_python(frame) and any(k in frame for k in _LISTED)
            and not any(k in frame for k in ("vantio_appliance/cli.py",
                                             "vantio_appliance/serve.py")))


def classify(frames: list[str]) -> tuple[str, str]:
    """(python frame the sample is in, what it does there) for one py-spy stack."""
    py = [i for i, f in enumerate(frames) if _is_python(f)]
    if not py:
        native = [f for f in frames if not f.startswith("0x")]
        where = _short(native[-1]) if native else "(unnamed native code)"
        return "(no Python frame: native code)", where
    last = py[-1]
    where, below = frames[last], frames[last + 1:]
    names = [f.split(" (")[0] for f in below]
    if any(w in where for w in _WAITS):
        return _short(where), "waiting (idle)"
    if any(n.startswith(("pthread_cond_timedwait", "pthread_cond_wait", "take_gil"))
           or "PyEval_RestoreThread" in n or "PyEval_AcquireThread" in n for n in names):
        return _short(where), "waiting for the GIL"
    for n in reversed(names):
        if n in _SYSCALLS:
            return _short(where), f"in {n}()"
    if any(not n.startswith("0x") for n in names):
        return _short(where), "native code: " + next(
            _short(f) for f in reversed(below) if not f.startswith("0x"))
    return _short(where), "Python"


def profile(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    loadgen = compile_loadgen(work)
    ledger = work / "ledger"
    api_key = init_ledger(ledger)
    load = make_loads(args)[0]
    files = write_requests(work, api_key, [load])
    sock = work / "vantio.sock"
    server = start_vantio(work, ledger, sock)
    raw = work / "profile.txt"
    try:
        server.wait_ready()
        pid = server.proc.pid
        seconds = max(1, round(args.profile_seconds))  # py-spy takes whole seconds
        lg_args = argparse.Namespace(**{**vars(args), "warmup": 2.0, "duration": seconds + 3})
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(seconds),
               "--rate", str(args.profile_rate), "--format", "raw", "--output", str(raw),
               "--threads",
               "--native"]
        box: dict[str, Any] = {}

        def drive() -> None:
            try:
                box["load"] = run_load(loadgen, server, load, files[load.batch], api_key, lg_args,
                                       work)
            except Exception as exc:  # reported below
                box["error"] = exc

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(lg_args.warmup + 1)
        say(f"  py-spy on vantio serve, pid {pid}, for {seconds} s")
        spy_proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=args.profile_seconds + 120)
        driver.join()
        if "error" in box:
            raise box["error"]
        load_result = box["load"]
    finally:
        server.stop()
        remove(ledger)
    if not raw.exists():
        raise SystemExit(f"py-spy wrote no profile: {spy_proc.stderr.strip()}")
    by_thread: Counter[str] = Counter()
    by_place: Counter[tuple[str, str, str]] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        thread = frames[0]
        tname = thread.split(": ", 1)[1] if ": " in thread else "(unnamed thread)"
        by_thread[tname] += n
        where, what = classify(frames[1:])
        by_place[(tname, where, what)] += n
        for f in {_short(f) for f in frames[1:] if _worth_listing(f)}:
            inclusive[f] += n
    return {"samples": total, "seconds": seconds, "rate_hz": args.profile_rate,
            "threads": dict(by_thread.most_common()),
            "top": [{"thread": t, "where": w, "doing": d, "samples": n}
                    for (t, w, d), n in by_place.most_common(args.profile_top)],
            "inclusive": [{"function": f, "samples": n}
                          for f, n in inclusive.most_common(args.profile_top)],
            "load": load_result, "checkout": f"{REPO} at {checkout()}"}


def print_profile(result: dict[str, Any]) -> None:
    total = result["samples"]
    lo = result["load"]
    print(f"\npy-spy over `vantio serve`, {result['seconds']:g} s at {result['rate_hz']} Hz "
          f"per thread (native frames; samples py-spy judged idle are dropped; sampling "
          f"stops the process, so the rate below is lower than unprofiled), under "
          f"{lo['conns']} closed-loop connections: {lo['rps']:,.0f} requests/s, p50 "
          f"{lo['latency_ms']['p50']:.2f} ms, p99 {lo['latency_ms']['p99']:.2f} ms; "
          f"server {lo['server_cpu_cores']:.2f} cores, {lo['server_cpu_us_per_record']:.0f} "
          f"us CPU per request. Code: {result['checkout']}.\n")
    print("samples by thread: " + ", ".join(
        f"{t} {n / total:.0%}" for t, n in result["threads"].items()))
    print(f"\n{'share':>6}  {'thread':<15} {'doing':<32} where (innermost Python frame)")
    print("-" * 110)
    for e in result["top"]:
        print(f"{e['samples'] / total:>6.1%}  {e['thread'][:15]:<15} {e['doing'][:32]:<32} "
              f"{e['where']}")
    print(f"\n{'share':>6}  inclusive (samples with the function on the stack)")
    print("-" * 80)
    for e in result["inclusive"]:
        print(f"{e['samples'] / total:>6.1%}  {e['function']}")


# -- main --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, metavar="S",
                    help="measured seconds per load (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, metavar="S",
                    help="unmeasured seconds before each load (default 2)")
    ap.add_argument("--conns", type=int, default=64, help="connections, single-record loads")
    ap.add_argument("--rate", type=float, default=5000.0,
                    help="requests/s offered in the open loop (default 5000)")
    ap.add_argument("--batch-conns", type=int, default=4,
                    help="connections for the batch loads (default 4)")
    ap.add_argument("--skip", default="", type=lambda s: {x for x in s.split(",") if x},
                    help="servers to leave out, comma-separated: vantio,sqlite,null")
    ap.add_argument("--loads", default="", type=lambda s: {x for x in s.split(",") if x},
                    help="only these loads, comma-separated: single,open,batch1000,batch100")
    ap.add_argument("--dir", type=Path, metavar="DIR",
                    help="make the work directory in DIR (default: the system temp dir)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run everything N times (a new ledger each time), report medians")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--profile", action="store_true",
                    help="instead of the table: py-spy `vantio serve` under the "
                    "single-record closed-loop load")
    ap.add_argument("--profile-seconds", type=float, default=10.0, metavar="S")
    ap.add_argument("--profile-top", type=int, default=30, metavar="N")
    ap.add_argument("--profile-rate", type=int, default=100, metavar="HZ",
                    help="py-spy samples per second (default 100: native sampling stops "
                    "the process for each sample, so it slows what it measures)")
    args = ap.parse_args()
    if (args.duration <= 0 or args.warmup < 0 or args.conns < 1 or args.batch_conns < 1
            or args.repeat < 1):
        ap.error("--duration, --conns, --batch-conns and --repeat must be positive, "
                 "--warmup >= 0")
    if args.loads - set(LOADS):
        ap.error(f"--loads: unknown load {sorted(args.loads - set(LOADS))}")
    if args.skip - set(SERVERS):
        ap.error(f"--skip: unknown server {sorted(args.skip - set(SERVERS))}")
    if shutil.which("gcc") is None:
        ap.error("gcc is needed to build bench/loadgen.c")
    base = (args.dir or default_base()).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=base))
    say(f"work directory {work}")
    try:
        result = profile(work, args) if args.profile else measure(work, args)
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
