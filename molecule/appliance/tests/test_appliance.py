"""site.yml's real effect on both appliance containers (testinfra, podman:// hosts; every test
runs on each): the hardening in place (sysctls, sshd, nftables, auditd rules), the ledger
service with +a on ledger.worm taking a record through its socket and verifying, the enforcer's
programs pinned and a real unit in vantio-agents.slice enforced, the export timer armed. The
hardening role's own scenario checks it in depth; this one checks that the roles hold together."""

from __future__ import annotations

import json
import time

import pytest

LEDGER = "/var/log/vantio"
RECORD = json.dumps({
    "proc": {"pid": 4242, "tgid": 4242, "uid": 1001, "gid": 1001, "comm": "appliance",
             "cgroup": "/vantio-agents.slice/molecule.scope", "cgroup_ancestry": [1, 2, 3]},
    "syscall": {"name": "connect", "args": {"family": "inet", "address": "192.0.2.8",
                                            "port": 8443, "proto": "tcp"}},
    "target_host": "192.0.2.8:8443",
    "action": "permit",
    "bytes_severed": 0,
})


# --- hardening --------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value", [("net.ipv4.ip_forward", 0),
                                       ("net.ipv4.conf.all.rp_filter", 1),
                                       ("net.ipv4.tcp_syncookies", 1)])
def test_network_sysctls(host, key: str, value: int) -> None:
    assert host.sysctl(key) == value


def test_kernel_sysctls_persisted(host) -> None:
    conf = host.file("/etc/sysctl.d/90-vantio-kernel.conf").content_string.splitlines()
    assert "kernel.unprivileged_bpf_disabled = 1" in conf
    assert "kernel.kptr_restrict = 2" in conf


def test_sshd(host) -> None:
    effective = dict(line.split(" ", 1) for line in
                     host.check_output("sshd -T -C user=vantio-admin,host=localhost,"
                                       "addr=127.0.0.1").splitlines() if " " in line)
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert host.service("ssh").is_running


def test_nftables_default_deny(host) -> None:
    data = json.loads(host.check_output("nft -j list ruleset"))
    chains = {item["chain"]["name"]: item["chain"] for item in data["nftables"]
              if "chain" in item and item["chain"]["table"] == "vantio_filter"}
    assert {chains[c]["policy"] for c in ("input", "forward", "output")} == {"drop"}


def test_auditd_rules_watch_the_ledger_keys_and_policy(host) -> None:
    rules = host.file("/etc/audit/audit.rules").content_string.splitlines()
    for watch in ("-w /etc/vantio -p wa -k vantio-policy",):
        assert watch in rules
    assert any("/var/log/vantio" in rule for rule in rules)
    assert "No change" in host.run("augenrules --check").stdout


# --- ledger -------------------------------------------------------------------------------------


def test_ledger_service_and_worm(host) -> None:
    assert host.service("vantio-ledger.service").is_running
    target = host.check_output(f"readlink -f {LEDGER}/ledger.worm")
    assert "a" in host.check_output(f"lsattr -d {target}").split()[0]


def test_record_through_the_socket_and_verified(host) -> None:
    done = host.run(f"echo '{RECORD}' | vantio ingest --api-key-file /etc/vantio/molecule.key")
    assert done.rc == 0, done.stderr
    trace_id = json.loads(done.stdout.splitlines()[0])["trace_id"]
    verified = host.run(f"vantio ledger verify --dir {LEDGER} --json")
    assert verified.rc == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    shown = host.run(f"vantio ledger show --dir {LEDGER} --trace-id {trace_id} --json")
    assert json.loads(shown.stdout)["target_host"] == "192.0.2.8:8443"


def test_each_host_has_its_own_ledger(host) -> None:
    # the origin names the host: two appliances, two logs
    vkey = host.file(f"{LEDGER}/vkey").content_string
    assert f"vantio.appliance/{host.check_output('hostname')}/ledger" in vkey


# --- enforcer -----------------------------------------------------------------------------------


def test_enforcer_pinned_and_agent_enforced(host) -> None:
    assert host.service("vantio-enforcer.service").is_running
    pinned = set(host.check_output("ls /sys/fs/bpf/vantio").split())
    assert {"prog_connect4", "prog_connect6", "map_agents"} <= pinned
    last = {}
    for _ in range(10):
        lines = host.run("cat /run/molecule-agent/rounds").stdout.splitlines()
        if lines:
            last = json.loads(lines[-1])
            break
        time.sleep(1)
    assert last == {"allowed": "ECONNREFUSED", "denied": "EPERM"}


# --- anchor -------------------------------------------------------------------------------------


def test_export_timer(host) -> None:
    timer = host.service("vantio-anchor-export.timer")
    assert timer.is_enabled and timer.is_running
    keys = host.file("/etc/vantio/trusted.keys").content_string
    assert host.file(f"{LEDGER}/vkey").content_string.strip() in keys
