"""The ledger role's real effect on a converged container (testinfra, podman:// host): the
service runs sandboxed under its own user, the active segment is append-only, keys are private,
and a record submitted through the unix socket lands in a ledger that verifies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vantio_appliance import keys, note

LEDGER = "/var/log/vantio"
SOCKET = "/run/vantio/ingest.sock"
RECORD = {
    "proc": {"pid": 4242, "tgid": 4242, "uid": 1001, "gid": 1001, "comm": "molecule",
             "cgroup": "/vantio-agents.slice/molecule.scope", "cgroup_ancestry": [1, 2, 3]},
    "syscall": {"name": "connect", "args": {"family": "inet", "address": "192.0.2.7",
                                            "port": 443, "proto": "tcp"}},
    "target_host": "192.0.2.7:443",
    "action": "block",
    "bytes_severed": 0,
}


def ingest(host, key_file: str, as_user: str | None = None):  # type: ignore[no-untyped-def]
    line = json.dumps(RECORD)
    prefix = (f"setpriv --reuid {as_user} --regid {as_user} --clear-groups " if as_user else "")
    return host.run(f"echo '{line}' | VANTIO_API_KEY=\"$(cat {key_file})\" {prefix}vantio ingest")


def test_service_active_and_enabled(host) -> None:
    svc = host.service("vantio-ledger.service")
    assert svc.is_running
    assert svc.is_enabled


def test_service_runs_as_its_own_user_with_one_capability(host) -> None:
    out = host.run("systemctl show -p MainPID --value vantio-ledger.service")
    pid = out.stdout.strip()
    status = host.file(f"/proc/{pid}/status").content_string
    uid = host.user("vantio-ledger").uid
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
    # CAP_LINUX_IMMUTABLE is bit 9: the effective set holds it and nothing else
    assert "CapEff:\t0000000000000200" in status


def test_socket_is_the_ingest_groups(host) -> None:
    sock = host.file(SOCKET)
    assert sock.is_socket
    assert sock.group == "vantio-ingest"
    assert sock.mode == 0o660


def test_users_and_groups(host) -> None:
    user = host.user("vantio-ledger")
    assert user.shell == "/usr/sbin/nologin"
    assert "vantio-ingest" in user.groups
    assert host.group("vantio-ingest").exists


def test_active_segment_is_append_only(host) -> None:
    target = host.run(f"readlink -f {LEDGER}/ledger.worm").stdout.strip()
    flags = host.run(f"lsattr -d {target}").stdout.split()[0]
    assert "a" in flags
    assert "i" not in flags
    # append-only really: root cannot overwrite it either
    assert host.run(f"printf x > {target}").rc != 0


@pytest.mark.parametrize("name", ["identity.key", "epoch.key"])
def test_private_keys_are_0600(host, name: str) -> None:
    key = host.file(f"{LEDGER}/keys/{name}")
    assert key.mode == 0o600
    assert key.user == "vantio-ledger"
    assert host.file(f"{LEDGER}/keys").mode == 0o700


def test_verifier_keys_are_public(host) -> None:
    assert host.file(f"{LEDGER}/vkey").mode == 0o644
    assert host.file(f"{LEDGER}/epoch0.vkey").mode == 0o644


def test_tenant_key_files_are_0600(host) -> None:
    for path in ["/etc/vantio/enforcer.key", "/etc/vantio/molecule.key"]:
        key = host.file(path)
        assert key.mode == 0o600
        assert key.user == "root"
        assert key.content_string.startswith("vt_")


def test_sealing_and_rotation_drop_in_in_effect(host) -> None:
    # the packaged command line, unchanged; the settings reach vantio serve through its environment
    cmd = host.run("systemctl show -p ExecStart --value vantio-ledger.service").stdout
    assert "vantio serve --dir /var/log/vantio" in cmd and "--segment" not in cmd
    pid = host.run("systemctl show -p MainPID --value vantio-ledger.service").stdout.strip()
    environ = host.run(f"cat /proc/{pid}/environ").stdout.split("\0")
    for setting in ["VANTIO_SEGMENT_BYTES=1048576", "VANTIO_SEGMENT_AGE=86400",
                    "VANTIO_EPOCH_SECONDS=900"]:
        assert setting in environ, setting


def test_identity_key_imported_from_the_controller(host) -> None:
    # converge.yml made the key on the controller: the ledger's vkey is its verifier key
    key = keys.load_identity(Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "identity.key")
    vkey = host.file(f"{LEDGER}/vkey").content_string.strip()
    assert str(note.Signer(note.Verifier.parse(vkey).name, key).verifier) == vkey
    assert not host.file(f"{LEDGER}/.identity-import.key").exists  # only in keys/, 0600


def test_record_ingested_through_the_socket_and_ledger_verifies(host) -> None:
    before = host.run(f"vantio ledger verify --dir {LEDGER} --json")
    assert before.rc == 0, before.stderr
    records_before = json.loads(before.stdout)["records"]
    done = ingest(host, "/etc/vantio/molecule.key")
    assert done.rc == 0, done.stderr
    ack = json.loads(done.stdout.splitlines()[0])
    after = host.run(f"vantio ledger verify --dir {LEDGER} --vkey {LEDGER}/vkey --json")
    assert after.rc == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["records"] == records_before + 1
    shown = host.run(f"vantio ledger show --dir {LEDGER} --trace-id {ack['trace_id']} --json")
    assert shown.rc == 0, shown.stderr
    assert json.loads(shown.stdout)["target_host"] == "192.0.2.7:443"


def test_socket_refuses_users_outside_the_ingest_group(host) -> None:
    refused = ingest(host, "/etc/vantio/molecule.key", as_user="nobody")
    assert refused.rc != 0
    assert refused.stdout.strip() == ""


def test_a_bad_api_key_is_refused(host) -> None:
    host.run("echo vt_not-a-key > /tmp/bad.key")
    refused = ingest(host, "/tmp/bad.key")
    assert refused.rc != 0
