"""connect() latency with and without the enforcer, for policies of 10 and 10,000 rules.

Run as root: `.venv/bin/python bench/enforcer.py`. Prints p50/p99 in microseconds
of a loopback TCP connect() from this process, first outside any agent cgroup,
then enrolled in an agent whose policy has N rules (the allowed address is the
last rule). Decisions are recorded nowhere (--no-ledger) so only the kernel
path is measured. The end-to-end recorded-decision rate is NOT measured yet.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from vantio_appliance import enforcer

CG2 = Path("/sys/fs/cgroup/unified")


def latencies(port: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        s = socket.socket()
        t = time.perf_counter_ns()
        s.connect(("127.0.0.2", port))
        out.append((time.perf_counter_ns() - t) / 1000)
        s.close()
    return sorted(out)


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.2", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    import threading

    def accept() -> None:
        while True:
            c, _ = lst.accept()
            c.close()

    threading.Thread(target=accept, daemon=True).start()
    n = 20000
    base = latencies(port, n)
    print(f"no enforcement      p50 {pct(base, .5):7.2f} us  p99 {pct(base, .99):7.2f} us")
    for rules in (10, 10_000):
        slug = uuid.uuid4().hex[:8]
        root, pins = CG2 / f"vantio-bench-{slug}.slice", Path(f"/sys/fs/bpf/vantio-bench-{slug}")
        tmp = Path(tempfile.mkdtemp())
        lines = ["agents:", "  - name: bench", "    egress:"]
        for i in range(rules - 1):
            lines.append(f"      - to: {ipaddress.IPv4Address(0x0A000000 + i)}")
            lines.append("        ports: [443]")
        lines += ["      - to: 127.0.0.2", f"        ports: [{port}]"]
        (tmp / "p.yaml").write_text("\n".join(lines) + "\n")
        d = subprocess.Popen([sys.executable, "-m", "vantio_appliance.cli", "enforcer", "run",
                              "--policy", str(tmp / "p.yaml"), "--no-ledger", "--state-dir",
                              str(tmp / "s"), "--pin-dir", str(pins), "--cgroup-root", str(root)],
                             stdout=subprocess.PIPE, text=True)
        assert d.stdout is not None
        while "armed" not in d.stdout.readline():
            assert d.poll() is None
        me = Path("/proc/self/cgroup").read_text()
        enforcer.enroll(root / "bench", os.getpid())
        try:
            lat = latencies(port, n)
        finally:
            orig = me.strip().split("::")[-1] if "::" in me else "/"
            enforcer.enroll(CG2 / orig.lstrip("/"), os.getpid())
            os.kill(d.pid, signal.SIGTERM)
            d.wait(30)
            enforcer.uninstall(pins, root)
            (root / "bench").rmdir()
            root.rmdir()
        print(f"enforced {rules:6} rules p50 {pct(lat, .5):7.2f} us  p99 {pct(lat, .99):7.2f} us"
              f"  (added at p50: {pct(lat, .5) - pct(base, .5):+.2f} us)")


if __name__ == "__main__":
    main()
