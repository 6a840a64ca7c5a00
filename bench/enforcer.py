"""The enforcer's cost on connect(), and the rate of decisions it gets into the ledger.

Run as root: `.venv/bin/python bench/enforcer.py [--quick]`. Two parts:

1. connect() latency, p50/p99 in microseconds, of a loopback TCP connect() from
   this process: outside any agent cgroup, and enrolled in an agent whose policy
   has 10 or 10,000 rules (the allowed address is the last rule). Blocks of
   connects alternate between the two, so load from others on the machine hits
   both alike. Decisions are recorded nowhere (--no-ledger). Each policy is
   measured twice: with the daemon reading the ring buffer (the full cost), and
   with the daemon stopped (SIGSTOP: the kernel programs alone; the ring buffer
   holds the events meanwhile). The programs' own run time, as the kernel counts
   it (kernel.bpf_stats_enabled), is taken in a separate pass: the counting adds
   two clock reads to every program run, which the wall-clock blocks do not pay.
2. End to end: a real ledger, `vantio serve` on its unix socket, the enforcer
   sending batches through the ingest API. An agent process calls connect() on
   a UDP socket (one decision each, no packet); first as fast as it can (the
   ring buffer, sized to hold every event, absorbs the difference: the rate at
   which the ledger then receives them is the pipeline's sustained rate), then
   paced at the target rate, checking that every decision reached the ledger
   (no gap) and how far behind the ledger was when the agent stopped.

Targets (docs/enforcer.md): at most +1 us at p50 with 10,000 rules; at least
50,000 recorded decisions per second end to end. The machine is shared: the
figures are noisy; read them as such. Everything it makes goes under the
system temp directory, bpffs and cgroup v2, and is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _metrics import metrics_text  # noqa: E402
from _proc import cpu_seconds, descendants  # noqa: E402
from _workdir import checkout, remove  # noqa: E402

from vantio_appliance import client, enforcer  # noqa: E402
from vantio_appliance._internal import bpfkit  # noqa: E402

CG2: Final = enforcer.CGROUP2
VANTIO: Final = [sys.executable, "-m", "vantio_appliance.cli"]
TARGET_RATE: Final = 50_000

GENERATOR: Final = """
import socket, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr = ("127.0.0.2", 9)
t0 = time.perf_counter()
for i in range(n):
    s.connect(addr)
    if rate and i % 64 == 0:
        ahead = i / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
print(time.perf_counter() - t0, flush=True)
"""


def say(msg: str) -> None:
    print(msg, flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


class Daemon:
    """`vantio enforcer run` on a slice and pin directory of its own."""

    def __init__(self, work: Path, policy: str, *, api_key: str | None = None,
                 sock: Path | None = None, pages: int = enforcer.RINGBUF_PAGES) -> None:
        slug = uuid.uuid4().hex[:8]
        self.root = CG2 / f"vantio-bench-{slug}.slice"
        self.pins = Path(f"/sys/fs/bpf/vantio-bench-{slug}")
        self.state = work / f"state-{slug}"
        (work / "policy.yaml").write_text(policy)
        ledger = ["--no-ledger"] if api_key is None else [
            "--ledger-socket", str(sock), "--api-key-file", str(work / "key")]
        if api_key is not None:
            (work / "key").write_text(api_key)
        self.log = (work / f"enforcer-{slug}.log").open("w+")
        self.proc = subprocess.Popen(
            [*VANTIO, "enforcer", "run", "--policy", str(work / "policy.yaml"), *ledger,
             "--ringbuf-pages", str(pages), *self.paths()],
            stdout=self.log, stderr=subprocess.STDOUT, env=env())
        deadline = time.monotonic() + 120
        while "armed, generation" not in (work / f"enforcer-{slug}.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / f"enforcer-{slug}.log").read_text())
            time.sleep(0.1)

    def paths(self) -> list[str]:
        return ["--state-dir", str(self.state), "--pin-dir", str(self.pins),
                "--cgroup-root", str(self.root)]

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)
        enforcer.uninstall(self.pins, self.root)
        for d in self.root.iterdir():
            if d.is_dir():
                d.rmdir()
        self.root.rmdir()
        self.log.close()


@contextlib.contextmanager
def enrolled(cgroup: Path) -> Iterator[None]:
    """This process inside ``cgroup``, then back where it was."""
    text = Path("/proc/self/cgroup").read_text()
    home = next((line.split("::", 1)[1] for line in text.splitlines() if "::" in line), "/")
    enforcer.enroll(cgroup, os.getpid())
    try:
        yield
    finally:
        enforcer.enroll(CG2 / home.strip().lstrip("/"), os.getpid())


BPF_STATS: Final = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """Programs' run time counted by the kernel (a sysctl), set back as it was after."""
    before = BPF_STATS.read_text()
    BPF_STATS.write_text("1")
    try:
        yield
    finally:
        BPF_STATS.write_text(before)


def run_stats(pins: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for name in ("connect4", "egress"):
        fd = bpfkit.obj_get(pins / f"prog_{name}")
        out[name] = bpfkit.prog_run_stats(fd)
        os.close(fd)
    return out


def connects(port: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        s = socket.socket()
        t = time.perf_counter_ns()
        s.connect(("127.0.0.2", port))
        out.append((time.perf_counter_ns() - t) / 1000)
        s.close()
    return out


def latency_part(work: Path, rounds: int, block: int) -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.2", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            c.close()

    threading.Thread(target=accept, daemon=True).start()
    say("in the kernel: the programs' own run time as the kernel counts it (a pass of its "
        "own), the figure that noise does not move; wall clock: connect() as the caller sees "
        "it, with the kernel's counting off")
    say(f"connect() latency, loopback TCP, {rounds} x {block} connects per side, "
        "alternating blocks; microseconds")
    for rules in (10, 10_000):
        lines = ["agents:", "  - name: bench", "    egress:"]
        for i in range(rules - 1):
            lines += [f"      - to: {ipaddress.IPv4Address(0x0A000000 + i)}",
                      "        ports: [443]"]
        lines += ["      - to: 127.0.0.2", f"        ports: [{port}]"]
        d = Daemon(work, "\n".join(lines) + "\n")
        try:
            for label, stopped in (("daemon reading", False), ("programs only", True)):
                if stopped:
                    os.kill(d.proc.pid, signal.SIGSTOP)
                outside: list[float] = []
                inside: list[float] = []
                paired: list[float] = []  # per round: inside p50 - outside p50
                for _ in range(rounds):
                    out = connects(port, block)
                    with enrolled(d.root / "bench"):
                        ins = connects(port, block)
                    outside += out
                    inside += ins
                    paired.append(pct(ins, .5) - pct(out, .5))
                # The kernel's count, in a pass of its own: counting costs two clock reads
                # per program run, which the wall-clock blocks above must not pay.
                with bpf_stats():
                    stats0 = run_stats(d.pins)
                    with enrolled(d.root / "bench"):
                        counted = len(connects(port, rounds * block // 2))
                    stats1 = run_stats(d.pins)
                if stopped:
                    os.kill(d.proc.pid, signal.SIGCONT)
                (c_ns, c_n), (e_ns, e_n) = (
                    (stats1[k][0] - stats0[k][0], stats1[k][1] - stats0[k][1])
                    for k in ("connect4", "egress"))
                kernel = (c_ns + e_ns) / counted / 1000
                base, enf = pct(outside, .5), pct(inside, .5)
                say(f"  {rules:6} rules, {label:15} p50 {enf:7.2f} (outside {base:6.2f}; "
                    f"added {enf - base:+6.2f}, paired by round {pct(paired, .5):+6.2f})  "
                    f"p99 {pct(inside, .99):8.2f} (outside {pct(outside, .99):8.2f})  "
                    f"load {os.getloadavg()[0]:.1f}")
                say(f"  {'':28} in the kernel, per connect: {kernel:5.3f} us = connect4 "
                    f"{c_ns / max(c_n, 1):4.0f} ns x {c_n / counted:.1f} + egress "
                    f"{e_ns / max(e_n, 1):4.0f} ns x {e_n / counted:.1f} "
                    "(kernel.bpf_stats_enabled, which adds its own clock reads)")
        finally:
            d.close()
    lst.close()


def metric(sock: Path, name: str) -> int:
    """A counter from the service's /metrics (0 while it does not answer yet)."""
    with contextlib.suppress(ConnectionRefusedError, FileNotFoundError):
        return _metric(sock, name)
    return 0


def _metric(sock: Path, name: str) -> int:
    m = re.search(r"^" + re.escape(name) + r" (\d+)$", metrics_text(sock), re.M)
    return int(m[1]) if m else 0


def wait_count(sock: Path, want: int, timeout: float) -> float | None:
    """When the ledger's record count reached ``want`` (monotonic), None if not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(sock, "vantio_records_total") >= want:
            return time.monotonic()
        time.sleep(0.02)
    return None


def tree_cpu(pid: int) -> float:
    """CPU of a process and everything below it (`vantio serve`'s batch helpers)."""
    return cpu_seconds([pid, *descendants(pid)])


def ledger_events(ledger: Path) -> Iterator[bytes]:
    """Submissions equal to the events the enforcer sent (stored fields the ledger adds
    taken out)."""
    for seg in sorted((ledger / "segments").glob("*.worm")):
        for raw in seg.read_bytes().splitlines():
            rec = json.loads(raw)
            if rec["kind"] == "event" and "target_host" in rec:
                for k in ("v", "seq", "kind", "tenant", "time", "receipt", "trace_id"):
                    rec.pop(k)
                yield json.dumps(rec, separators=(",", ":")).encode()


def run_generator(d: Daemon, n: int, rate: float) -> tuple[float, float]:
    """The agent: (monotonic start, its own seconds of connect() calls)."""
    t0 = time.monotonic()
    out = subprocess.run([*VANTIO, "run", "--agent", "gen", *d.paths(), "--",
                          sys.executable, "-c", GENERATOR, str(n), str(rate)],
                         capture_output=True, text=True, env=env(), timeout=600, check=True)
    return t0, float(out.stdout.strip().splitlines()[-1])


def end_to_end_part(work: Path, n: int, paced_s: float) -> None:
    ledger, sock = work / "ledger", work / "ingest.sock"
    subprocess.run([*VANTIO, "ledger", "init", "--dir", str(ledger), "--origin",
                    "vantio.appliance/bench/enforcer"], check=True, capture_output=True,
                   env=env())
    key = subprocess.run([*VANTIO, "ledger", "tenant", "add", "--dir", str(ledger), "agents"],
                         check=True, capture_output=True, text=True, env=env()).stdout.strip()
    serve_log = (work / "serve.log").open("w")
    server = subprocess.Popen([*VANTIO, "serve", "--dir", str(ledger), "--socket", str(sock),
                               "--log-level", "warning"], stdout=serve_log,
                              stderr=subprocess.STDOUT, env=env(), start_new_session=True)
    d: Daemon | None = None
    try:
        while metric(sock, "vantio_ledger_size") == 0:
            if server.poll() is not None:
                raise RuntimeError((work / "serve.log").read_text())
            time.sleep(0.1)
        policy = ("agents:\n  - name: gen\n    egress:\n      - to: 127.0.0.2\n"
                  "        ports: [9]\n        proto: udp\n")
        pages = 1 << max(n * 112 // 4096, 1).bit_length()  # every event fits
        d = Daemon(work, policy, api_key=key, sock=sock, pages=pages)
        say(f"end to end: UDP connect() decisions -> ring buffer ({pages * 4 // 1024} MiB) -> "
            "enforcer -> ingest API batches -> ledger")
        for label, count, rate in (("as fast as the agent can", n, 0.0),
                                   (f"paced at {TARGET_RATE}/s", int(TARGET_RATE * paced_s),
                                    float(TARGET_RATE))):
            time.sleep(1)
            base = metric(sock, "vantio_records_total")
            cpu0 = tree_cpu(d.proc.pid), tree_cpu(server.pid)
            t0, gen_s = run_generator(d, count, rate)
            t_gen = t0 + gen_s  # approximately: the agent's start-up is before its t0
            done = wait_count(sock, base + count, timeout=max(60.0, count / 5000))
            st = enforcer.read_status(d.state, d.pins)
            lost = sum(st.get("lost_now", st["lost"]).values())
            if done is None:
                got = metric(sock, "vantio_records_total") - base
                say(f"  {label:26} agent {count / gen_s:9,.0f}/s; ledger got only {got:,} of "
                    f"{count:,} in time; lost (gaps) {lost}")
                continue
            cpu = ((tree_cpu(d.proc.pid) - cpu0[0]) / count * 1e6,
                   (tree_cpu(server.pid) - cpu0[1]) / count * 1e6)
            say(f"  {label:26} agent {count / gen_s:9,.0f}/s  ledger {count / (done - t0):9,.0f}"
                f" recorded/s  behind by {max(done - t_gen, 0):5.2f} s at the agent's end  "
                f"lost (gaps) {lost}\n  {'':26} CPU per decision: enforcer {cpu[0]:5.1f} us, "
                f"ingest service {cpu[1]:5.1f} us")
        # The comparison: the ingest service alone, fed the same records as the enforcer
        # sends them (IN_FLIGHT clients, each a batch at a time).
        line = next(iter(ledger_events(ledger)))
        batches = n // 10 // enforcer.BATCH
        apis = [client.Client(key, sock) for _ in range(enforcer.IN_FLIGHT)]

        def feed(api: client.Client) -> None:
            for _ in range(batches // len(apis)):
                api.submit_batch([line] * enforcer.BATCH)

        t0 = time.monotonic()
        with ThreadPoolExecutor(len(apis)) as pool:
            list(pool.map(feed, apis))
        alone = batches // len(apis) * len(apis) * enforcer.BATCH / (time.monotonic() - t0)
        for api in apis:
            api.close()
        say(f"  {'the ingest service alone':26} {alone:9,.0f} records/s (the same records, "
            f"batches of {enforcer.BATCH} from {len(apis)} clients as the enforcer sends them: "
            "the ceiling of the pipeline)")
    finally:
        if d is not None:
            d.close()
        server.send_signal(signal.SIGTERM)  # the main process drains, then stops its helpers
        server.wait(60)
        serve_log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--part", choices=("latency", "e2e", "all"), default="all")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/enforcer.py: run as root (it loads eBPF programs)")
    say(f"vantio enforcer bench, checkout {checkout()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f} (shared machine: noisy figures)")
    work = Path(tempfile.mkdtemp(prefix="vantio-bench-enforcer-"))
    try:
        if args.part in ("latency", "all"):
            # Short blocks, many rounds: each pair of blocks is close in time, so the load
            # that others put on the machine drifts less between the two sides of a pair.
            latency_part(work, 10 if args.quick else 400, 300 if args.quick else 50)
        if args.part in ("e2e", "all"):
            end_to_end_part(work, 50_000 if args.quick else 300_000, 1.0 if args.quick else 5.0)
    finally:
        remove(work)


if __name__ == "__main__":
    main()
