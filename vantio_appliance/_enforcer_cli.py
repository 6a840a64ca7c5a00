"""`vantio enforcer ...` and `vantio run --agent NAME -- CMD` (see docs/enforcer.md).

Kept apart from cli.py so that the enforcer's commands (and bcc, imported only
when a command needs it) stay out of the ledger commands' way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import enforcer, policy
from .cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _api_key, _die, _print_json
from .layout import DEFAULT_SOCKET


def _paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=enforcer.DEFAULT_STATE,
                   help=f"status file and control socket (default {enforcer.DEFAULT_STATE})")
    p.add_argument("--pin-dir", type=Path, default=enforcer.DEFAULT_PINS,
                   help=f"bpffs directory of the pins (default {enforcer.DEFAULT_PINS})")
    p.add_argument("--cgroup-root", type=Path, default=enforcer.DEFAULT_ROOT,
                   help=f"the agents' slice in cgroup v2 (default {enforcer.DEFAULT_ROOT})")


#: The API key as a systemd credential: LoadCredential=vantio-api-key:FILE.
CREDENTIAL = "vantio-api-key"


def cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="vantio enforcer: %(message)s")
    key = None
    credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent")) / CREDENTIAL
    if not args.no_ledger and args.api_key_file is None and "VANTIO_API_KEY" not in os.environ \
            and credential.is_file():  # systemd's LoadCredential= (vantio-enforcer.service)
        args.api_key_file = str(credential)
    if not args.no_ledger:
        key = _api_key(args)
    opts = enforcer.Options(args.policy, None if args.no_ledger else args.ledger_socket, key,
                            root=args.cgroup_root, pins=args.pin_dir, state=args.state_dir,
                            ringbuf_pages=args.ringbuf_pages, drop_caps=not args.keep_caps)
    try:
        enforcer.Enforcer(opts).run()
    except policy.PolicyError as exc:
        _die(f"policy refused: {exc}")
    except enforcer.EnforcerError as exc:
        _die(str(exc))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a policy file without loading anything (host names are resolved)."""
    opts = enforcer.Options(args.policy, None, None)
    try:
        pol = policy.parse(args.policy.read_bytes(), str(args.policy), opts.resolver)
    except OSError as exc:
        _die(f"cannot read {args.policy}: {exc.strerror}")
    except policy.PolicyError as exc:
        print(f"vantio: policy refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_json(pol.summary())
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    try:
        st = enforcer.read_status(args.state_dir, args.pin_dir)
    except enforcer.EnforcerError as exc:
        _die(str(exc))
    if args.json:
        _print_json(st)
        return EXIT_OK
    pol: dict[str, Any] = st["policy"]
    print(f"enforcer   {'running, pid ' + str(st['pid']) if st['running'] else 'NOT running'}"
          f" (pinned: {', '.join(st['pinned']) or 'nothing'})")
    print(f"policy     {pol['source']} sha256:{pol['sha256'][:16]} generation {st['generation']}")
    print(f"lockdown   {st['lockdown']}\nrecorded   {st['recorded']} decisions, "
          f"{st['pending_bytes']} bytes pending in the ring buffer")
    for name, addrs in pol["resolutions"].items():
        print(f"resolved   {name} -> {', '.join(addrs)}")
    for a in st["agents"]:
        q = f"QUARANTINED ({a['bytes_severed']} bytes severed)" if a["quarantined"] else "ok"
        print(f"agent      {a['name']:20} {a['mode']:8} default {a['default']:10} {q}  "
              f"{a['cgroup']}")
    lost = st.get("lost_now") or st["lost"]
    for stage, n in sorted({**st["lost"], **lost}.items()):
        print(f"lost       {stage:20} {n}")
    return EXIT_OK


def _control(args: argparse.Namespace, op: str) -> int:
    try:
        _print_json(enforcer.control(args.state_dir, op, args.name))
    except enforcer.EnforcerError as exc:
        _die(str(exc))
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    return _control(args, "release")


def cmd_quarantine(args: argparse.Namespace) -> int:
    return _control(args, "quarantine")


def cmd_uninstall(args: argparse.Namespace) -> int:
    for line in enforcer.uninstall(args.pin_dir, args.cgroup_root):
        print(line)
    return EXIT_OK


def cmd_agent_run(args: argparse.Namespace) -> int:
    """Move this process into the agent's cgroup, then become CMD (same pid)."""
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        _die("give the command after --, e.g. vantio run --agent NAME -- CMD ARGS")
    try:
        st = enforcer.read_status(args.state_dir, args.pin_dir)
    except enforcer.EnforcerError as exc:
        _die(str(exc))
    cgroups = {a["name"]: Path(a["cgroup"]) for a in st["agents"]}
    if args.agent not in cgroups:
        _die(f"no agent {args.agent!r} in the loaded policy (agents: "
             f"{', '.join(sorted(cgroups)) or 'none'})")
    try:
        enforcer.enroll(cgroups[args.agent], os.getpid())
    except OSError as exc:
        _die(f"cannot enter {cgroups[args.agent]}: {exc.strerror}")
    try:
        os.execvp(cmd[0], cmd)  # noqa: S606 (the operator's command, as given)
    except OSError as exc:
        print(f"vantio: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return EXIT_USAGE  # not reached


def add_commands(top: Any) -> None:
    """Register `vantio enforcer ...` and `vantio run` on the top-level parser."""
    group = top.add_parser("enforcer", help="the eBPF enforcer: egress decisions for agents",
                           description="The eBPF enforcer: in-kernel egress decisions for "
                           "AI-agent cgroups, every decision recorded in the ledger.")
    sub = group.add_subparsers(dest="enforcer_command", required=True, metavar="COMMAND")

    def cmd(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = cmd("run", cmd_run, "load the programs, apply the policy and record decisions, in the "
            "foreground; SIGHUP reloads the policy atomically, SIGTERM stops (enforcement "
            "stays pinned)")
    p.add_argument("--policy", type=Path, required=True, help="policy file (YAML)")
    p.add_argument("--ledger-socket", type=Path, default=DEFAULT_SOCKET,
                   help=f"the ledger service's socket (default {DEFAULT_SOCKET})")
    p.add_argument("--api-key-file", help="the tenant's API key (or $VANTIO_API_KEY, or the "
                   f"systemd credential {CREDENTIAL})")
    p.add_argument("--no-ledger", action="store_true",
                   help="record nothing (testing only: decisions are still enforced)")
    p.add_argument("--ringbuf-pages", type=int, default=enforcer.RINGBUF_PAGES,
                   help=argparse.SUPPRESS)
    p.add_argument("--keep-caps", action="store_true", help=argparse.SUPPRESS)
    _paths(p)
    p = cmd("check", cmd_check, "validate a policy file; exit 0 valid, 1 refused (the line "
            "is named)")
    p.add_argument("policy", type=Path)
    p = cmd("status", cmd_status, "the loaded policy, the agents, the loss counters per stage")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _paths(p)
    p = cmd("release", cmd_release, "lift an agent's quarantine (thaw, egress restored); "
            "recorded")
    p.add_argument("name")
    _paths(p)
    p = cmd("quarantine", cmd_quarantine, "quarantine an agent now (freeze, egress severed); "
            "recorded")
    p.add_argument("name")
    _paths(p)
    p = cmd("uninstall", cmd_uninstall, "detach the pinned programs and remove the pins: "
            "enforcement ENDS")
    _paths(p)

    p = top.add_parser("run", help="run a command as an agent (inside its cgroup)",
                       description="Run CMD inside the agent's cgroup under "
                       "vantio-agents.slice, as the same process (exec).")
    p.set_defaults(func=cmd_agent_run)
    p.add_argument("--agent", required=True, help="agent name from the loaded policy")
    _paths(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
