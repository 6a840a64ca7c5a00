"""The enforcer role's real effect on a privileged converged container (testinfra, podman://
host): bcc and headers in place, bpffs mounted by its unit, the enforcer's programs loaded into
the host's kernel and pinned under /sys/fs/bpf/vantio, and a real systemd unit placed in
vantio-agents.slice (molecule-agent.service, see files/) enforced: the destination its policy
allows is reached (ECONNREFUSED: nothing listens), the other refused in the kernel (EPERM), and
each decision recorded in the ledger, which verifies; restarted by systemd (a new cgroup, a new
id), the agent is blocked until the enforcer re-keys its policy, then enforced again."""

from __future__ import annotations

import json
import time

PINS = "/sys/fs/bpf/vantio"


def rounds(host) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    text = host.run("cat /run/molecule-agent/rounds").stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bcc_and_headers_installed(host) -> None:
    assert host.package("python3-bpfcc").is_installed
    assert host.package("bpfcc-tools").is_installed
    kernel = host.run("uname -r").stdout.strip()
    assert host.file(f"/lib/modules/{kernel}/build/Makefile").exists


def test_bpffs_mounted_by_its_unit(host) -> None:
    unit = host.service("vantio-bpffs.service")
    assert unit.is_enabled
    assert unit.is_running  # RemainAfterExit: active (exited)
    mount = host.mount_point("/sys/fs/bpf")
    assert mount.filesystem == "bpf"
    assert "mode=700" in mount.options


def test_policy_file(host) -> None:
    policy = host.file("/etc/vantio/policy.yml")
    assert policy.mode == 0o640
    assert "molecule-agent.service" in policy.content_string
    assert host.run("vantio enforcer check /etc/vantio/policy.yml").rc == 0


def test_services_active(host) -> None:
    for unit in ["vantio-ledger.service", "vantio-enforcer.service", "molecule-agent.service"]:
        assert host.service(unit).is_running, unit
    assert host.service("vantio-enforcer.service").is_enabled


def test_programs_and_maps_pinned(host) -> None:
    pinned = set(host.run(f"ls {PINS}").stdout.split())
    for name in ["prog_connect4", "prog_connect6", "prog_sendmsg4", "prog_sendmsg6",
                 "prog_egress", "map_agents", "map_rules4", "map_config"]:
        assert name in pinned, name
    assert host.mount_point("/sys/fs/bpf").exists


def test_agent_unit_is_in_the_agents_slice(host) -> None:
    cgroup = host.run("systemctl show -p ControlGroup --value molecule-agent.service").stdout
    assert cgroup.strip().endswith("/vantio-agents.slice/molecule-agent.service")


def test_agent_is_enforced_in_the_kernel(host) -> None:
    seen = rounds(host)
    assert seen, "the agent has not run a round"
    last = seen[-1]
    assert last["denied"] == "EPERM"  # refused by the cgroup/connect4 program
    assert last["allowed"] == "ECONNREFUSED"  # permitted: the kernel reached the empty port


def test_outside_the_slice_nothing_is_decided(host) -> None:
    # The same connect() from outside vantio-agents.slice meets the container's missing
    # network, not the enforcer.
    out = host.run("python3 -c \"import socket,errno\n"
                   "try: socket.create_connection(('192.0.2.1', 443), 2)\n"
                   "except OSError as e: print(errno.errorcode[e.errno])\"")
    assert out.stdout.strip() in {"ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT"}


def test_decisions_are_recorded_in_the_ledger(host) -> None:
    found = []
    for _ in range(20):  # the enforcer sends in batches
        out = host.run("vantio ledger show --dir /var/log/vantio --tail 200 --json")
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        found = [r for r in records if r.get("kind") == "event"
                 and r.get("target_host") == "192.0.2.1:443"
                 and r.get("proc", {}).get("cgroup", "").endswith("molecule-agent.service")]
        if found:
            break
        time.sleep(1)
    assert found, "no event record of the agent's refused connect"
    assert found[-1]["action"] == "block"
    verified = host.run("vantio ledger verify --dir /var/log/vantio")
    assert verified.rc == 0, verified.stdout + verified.stderr


def test_agent_restarted_stays_enforced(host) -> None:
    # systemd gives the restarted unit a new cgroup (a new id): the kernel blocks it until the
    # enforcer re-keys the agent's policy to it (fail closed), then the policy applies again.
    assert host.run("systemctl restart molecule-agent.service").rc == 0
    seen: list[dict[str, str]] = []
    for _ in range(20):  # RuntimeDirectory=: the restart starts a new rounds file
        time.sleep(0.5)
        seen = rounds(host)
        if seen and seen[-1]["allowed"] == "ECONNREFUSED":
            break
    assert seen, "the restarted agent has not run a round"
    assert all(r["denied"] == "EPERM" for r in seen), seen
    assert all(r["allowed"] in {"EPERM", "ECONNREFUSED"} for r in seen), seen  # never through
    assert seen[-1]["allowed"] == "ECONNREFUSED", seen  # re-keyed: its policy applies
    out = host.run("vantio ledger show --dir /var/log/vantio --tail 400 --json")
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    rekeys = [r for r in records if r.get("syscall", {}).get("name") == "vantio_rekey"
              and r.get("proc", {}).get("cgroup", "").endswith("molecule-agent.service")]
    assert rekeys, "no vantio_rekey record of the restarted agent"


def _caps(host, pid: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    status = host.file(f"/proc/{pid}/status").content_string
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status.splitlines()
                                        if line.startswith("Cap"))}


def test_enforcer_restarted_over_its_pins_arms_with_the_units_capabilities(host) -> None:
    # The restart that once needed CAP_SYS_ADMIN (bcc reopened the pinned maps by id): under
    # systemd, with the unit's bounding set, the daemon re-arms from its pins, then keeps
    # CAP_BPF alone, and the agent stays enforced throughout.
    since = host.run("date +%s").stdout.strip()
    assert host.run("systemctl restart vantio-enforcer.service").rc == 0
    journal = ""
    for _ in range(60):
        time.sleep(0.5)
        journal = host.run(f"journalctl -u vantio-enforcer.service -o cat --since @{since}").stdout
        if "vantio enforcer: armed" in journal:
            break
    assert "vantio enforcer: armed" in journal, journal
    assert "Operation not permitted" not in journal, journal
    pid = host.run("systemctl show -p MainPID --value vantio-enforcer.service").stdout.strip()
    bpf, perfmon, net_admin = 1 << 39, 1 << 38, 1 << 12
    caps = _caps(host, pid)
    for _ in range(20):  # the daemon drops the rest right after arming
        if caps["CapEff"] == bpf:
            break
        time.sleep(0.25)
        caps = _caps(host, pid)
    assert caps["CapBnd"] == bpf | perfmon | net_admin, {k: hex(v) for k, v in caps.items()}
    assert caps["CapEff"] == caps["CapPrm"] == bpf, {k: hex(v) for k, v in caps.items()}
    time.sleep(1.5)  # rounds of the agent made under the restarted daemon
    last = rounds(host)[-1]
    assert (last["allowed"], last["denied"]) == ("ECONNREFUSED", "EPERM"), last
