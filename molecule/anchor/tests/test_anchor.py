"""The anchor role's real effect on a converged container (testinfra, podman:// host): the
export timer is armed, the media's mount unit is there, the trusted keys file holds the ledger's
and the witnesses' keys, and the export service, started as the timer would, writes a bundle onto
the media (a tmpfs stands in for the stick) that `vantio verify` accepts, and the ledger service
comes back afterwards."""

from __future__ import annotations

import json
import time
from pathlib import Path

MEDIA = "/media/vantio-anchor"
WITNESS = (Path(__file__).parent.parent / "witness.vkey").read_text().strip()


def test_timer_enabled_and_armed(host) -> None:
    timer = host.service("vantio-anchor-export.timer")
    assert timer.is_enabled
    assert timer.is_running
    show = host.run("systemctl show -p TimersCalendar --value vantio-anchor-export.timer").stdout
    assert "03:00:00" in show
    assert host.run("systemctl list-timers --all --no-legend vantio-anchor-export.timer").stdout


def test_media_mount_unit(host) -> None:
    out = host.run("systemctl show -p What -p Options -p Where 'media-vantio\\x2danchor.mount'")
    assert "What=/dev/disk/by-label/VANTIO-ANCHOR" in out.stdout
    assert f"Where={MEDIA}" in out.stdout
    assert "noexec" in out.stdout
    assert host.file(MEDIA).is_directory


def test_trusted_keys_hold_the_ledger_and_the_witness(host) -> None:
    keys = host.file("/etc/vantio/trusted.keys").content_string.splitlines()
    assert host.file("/var/log/vantio/vkey").content_string.strip() in keys
    assert host.file("/var/log/vantio/epoch0.vkey").content_string.strip() in keys
    assert WITNESS in keys


def test_export_service_writes_a_bundle_that_verifies(host) -> None:
    uid = host.user("vantio-ledger").uid
    mounted = host.run(f"mount -t tmpfs -o size=64m,uid={uid},gid={uid},mode=0700 anchor {MEDIA}")
    assert mounted.rc == 0, mounted.stderr
    try:
        run = host.run("systemctl start vantio-anchor-export.service")
        assert run.rc == 0, host.run("journalctl -u vantio-anchor-export -n 30 --no-pager").stdout
        bundles = host.run(f"ls -d {MEDIA}/vantio-anchor-*").stdout.split()
        assert len(bundles) == 1
        verified = host.run(
            f"vantio verify {bundles[0]} --trusted-keys /etc/vantio/trusted.keys --json")
        assert verified.rc == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        for _ in range(30):  # ExecStopPost starts the ledger again (--no-block)
            if host.service("vantio-ledger.service").is_running:
                break
            time.sleep(1)
        assert host.service("vantio-ledger.service").is_running
    finally:
        host.run(f"umount {MEDIA}")


def test_export_refuses_media_that_is_not_mounted(host) -> None:
    # the drive is empty: the mount unit cannot mount the label, the export does not run
    assert host.run("systemctl start vantio-anchor-export.service").rc != 0
    assert host.run(f"ls {MEDIA}").stdout.strip() == ""
    for _ in range(30):
        if host.service("vantio-ledger.service").is_running:
            break
        time.sleep(1)
    assert host.service("vantio-ledger.service").is_running
