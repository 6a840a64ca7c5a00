"""`vantio demo`: a local ledger fed with enforcer-like records, sealed, verified, proved.

It is the newcomer's first look at the product, so it prints each step with
the equivalent `vantio ledger` command.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from . import checkpoint as cpmod
from . import note, reader, writer
from .layout import Layout
from .verify import verify_dir

_AGENTS: Final = (("research-agent", "python3"), ("code-agent", "node"),
                  ("browser-agent", "chrome"))
_TARGETS: Final = (("10.20.0.15", 443, "permit"), ("10.20.4.2", 8443, "permit"),
                   ("203.0.113.7", 443, "block"), ("198.51.100.23", 22, "block"),
                   ("192.0.2.99", 443, "quarantine"))


def event(rng: random.Random) -> dict[str, Any]:
    """One record as the enforcer would submit it: metadata only."""
    agent, comm = rng.choice(_AGENTS)
    address, port, action = rng.choice(_TARGETS)
    pid = rng.randint(2000, 60000)
    return {
        "proc": {"pid": pid, "tgid": pid, "uid": 1001, "gid": 1001, "comm": comm,
                 "cgroup": f"/vantio-agents.slice/{agent}.scope",
                 "cgroup_ancestry": [1, 2107, 2200 + _AGENTS.index((agent, comm))]},
        "syscall": {"name": "connect", "args": {"family": "inet", "address": address,
                                                "port": port, "proto": "tcp"}},
        "target_host": f"{address}:{port}",
        "action": action,
        "bytes_severed": rng.randint(1, 65536) if action == "quarantine" else 0,
    }


def _step(text: str, command: str) -> None:
    print(f"\n== {text}\n   $ {command}")


def run(root: Path, records: int, progress: Callable[[int], None]) -> int:
    rng = random.Random()  # noqa: S311 - demo data, not secrets
    layout = Layout(root)
    if not layout.identity.exists():
        _step("create the ledger", f"vantio ledger init --dir {root}")
        origin = f"vantio.appliance/{socket.gethostname()}/demo"
        print(f"   verifier key: {writer.init(root, origin)}")
        print(f"   epoch-0 key:  {writer.epoch0_verifier(root)}")
    _step(f"append {records} records in group commits",
          f"vantio ledger append --dir {root} records.jsonl")
    started, done = time.perf_counter(), 0
    with writer.Ledger(root) as ledger:
        while done < records:
            n = min(256, records - done)
            ledger.append([writer.submission("default", event(rng)) for _ in range(n)])
            done += n
            progress(done)
        rate = records / (time.perf_counter() - started)
        print(f"   {records} durable records ({rate:,.0f}/s, each fdatasync'd before its ack)")
        _step("seal the active segment (+a becomes +i)", f"vantio ledger seal --dir {root}")
        sealed = ledger.active
        ledger.seal()
        print(f"   sealed segments/{sealed}; ledger.worm -> segments/{ledger.active}")
        acks = ledger.append([writer.submission("default", event(rng)) for _ in range(10)])
    _step("verify everything offline", f"vantio ledger verify --dir {root}")
    report = verify_dir(root)
    for s in report.segments:
        print(f"   {s.name}  {s.state:6}  {s.records:>7} records  flags {s.flags}")
    print(f"   {'OK' if report.ok else 'FAILED'}: {report.records} records, "
          f"{len(report.findings)} findings, {report.records / report.seconds:,.0f} records/s")
    last = acks[-1]
    _step(f"prove record {last.seq} is in the signed tree",
          f"vantio ledger proof --dir {root} --trace-id {last.trace_id}")
    verifier = note.Verifier.parse(layout.vkey.read_text())
    line = reader.find(layout, seq=last.seq)
    proof = reader.inclusion_proof(layout, verifier, line)
    print("   " + proof.decode().replace("\n", "\n   ").rstrip())
    cp = cpmod.verify_inclusion(proof, line.data, [verifier])
    print(f"   OK: inclusion proof holds against the checkpoint of size {cp.size}; "
          f"receipt {last.receipt[:16]}...")
    print(f"\nThe ledger is in {root}/ (sealed files are immutable: "
          f"`chattr -R -ia {root}/segments && rm -rf {root}` removes it).")
    return 0 if report.ok else 1
