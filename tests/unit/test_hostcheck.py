"""The enforcer's start-up decision on parsed inputs: what is missing, and lockdown."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vantio_appliance import hostcheck
from vantio_appliance.hostcheck import Host

CG2 = Path("/sys/fs/cgroup/unified")
PINS = Path("/sys/fs/bpf/vantio")
MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
bpf /sys/fs/bpf bpf rw,relatime 0 0
"""
ARMED = Host(euid=0, mounts=MOUNTS, lockdown="none [integrity] confidentiality\n",
             kernel={name: 0 for name in hostcheck.KERNEL})


def _with(**changes: object) -> Host:
    return Host(**{**ARMED.__dict__, **changes})


def test_a_fully_armed_host_misses_nothing() -> None:
    assert hostcheck.missing(ARMED, PINS, CG2) == []


@pytest.mark.parametrize(("changes", "named"), [
    ({"euid": 1000}, "root"),
    ({"bcc_error": "bcc is missing (no module)"}, "bcc is missing"),
    ({"mounts": MOUNTS.replace("bpf /sys/fs/bpf bpf", "tmpfs /sys/fs/bpf tmpfs")}, "bpffs"),
    ({"mounts": MOUNTS.replace("unified cgroup2", "unified tmpfs")}, "cgroup v2"),
    ({"freezer": False}, "freezer"),
    ({"btf": False}, "kernel BTF"),
    ({"headers": Path("/lib/modules/x/build")}, "kernel headers (/lib/modules/x/build"),
    ({"tracepoint": False}, "sched:sched_process_exec"),
    ({"kernel": {**ARMED.kernel, "ringbuf": -errno.EINVAL}}, "ringbuf"),
    ({"kernel": {**ARMED.kernel, "cgroup_skb": -errno.EPERM}}, "cgroup_skb"),
    ({"kernel": {**ARMED.kernel, "cgroup_sock_addr/connect4": -errno.EINVAL}}, "connect4"),
])
def test_each_missing_piece_is_named(changes: dict[str, object], named: str) -> None:
    found = hostcheck.missing(_with(**changes), PINS, CG2)
    assert len(found) == 1 and named in found[0], found


def test_pins_on_their_own_bpffs_mount_count() -> None:
    mounts = MOUNTS.replace("bpf /sys/fs/bpf bpf", "bpf /srv/pins bpf")
    assert hostcheck.missing(_with(mounts=mounts), Path("/srv/pins"), CG2) == []
    assert hostcheck.missing(_with(mounts=mounts), Path("/srv/pins/vantio"), CG2) == []
    assert hostcheck.missing(_with(mounts=mounts), PINS, CG2) != []


def test_mount_points_undo_proc_escapes() -> None:
    text = "bpf /srv/my\\040pins bpf rw 0 0\n"
    assert hostcheck.mount_points(text, "bpf") == [Path("/srv/my pins")]


@pytest.mark.parametrize(("text", "level", "reads"), [
    ("[none] integrity confidentiality\n", "none", True),
    ("none [integrity] confidentiality\n", "integrity", True),
    ("none integrity [confidentiality]\n", "confidentiality", False),
    (None, "unknown", False),  # securityfs unreadable: never guess that reads are allowed
    ("", "unknown", False),
    ("none integrity [weird]\n", "unknown", False),
])
def test_lockdown_decides_kernel_reads(text: str | None, level: str, reads: bool) -> None:
    assert hostcheck.lockdown_level(text) == level
    assert hostcheck.kernel_reads_allowed(text) is reads
    # Lockdown never makes the host "missing" something: the programs adapt instead.
    assert hostcheck.missing(_with(lockdown=text), PINS, CG2) == []


def test_cgroup2_is_found_where_it_is_mounted() -> None:
    assert hostcheck.cgroup2_root(MOUNTS) == CG2  # hybrid: v1 controllers, v2 beside them
    unified = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
    assert hostcheck.cgroup2_root(unified) == Path("/sys/fs/cgroup")
    assert hostcheck.cgroup2_root("cgroup2 /srv/cg cgroup2 rw 0 0\n") == Path("/srv/cg")
    assert hostcheck.cgroup2_root("") == Path("/sys/fs/cgroup")


def test_the_freezer_is_read_off_a_cgroup_or_on_a_fresh_host_off_the_kernel(
        tmp_path: Path) -> None:
    """A fresh host may have no cgroup v2 directory below the root yet (nothing has made
    one): then cgroup.freeze cannot be looked at, and the kernel's version decides."""
    cg2, agents = tmp_path / "unified", tmp_path / "unified" / "vantio-agents.slice"
    cg2.mkdir()
    assert hostcheck.has_freezer(cg2, agents, "6.1.0-28-amd64")
    assert hostcheck.has_freezer(cg2, agents, "5.2.0")
    assert not hostcheck.has_freezer(cg2, agents, "5.1.21")
    assert not hostcheck.has_freezer(cg2, agents, "weird")
    (cg2 / "other.scope").mkdir()  # a cgroup to look at: what it holds decides
    assert not hostcheck.has_freezer(cg2, agents, "6.1.0")
    (cg2 / "other.scope" / "cgroup.freeze").touch()
    assert hostcheck.has_freezer(cg2, agents, "4.19.0")
    agents.mkdir()  # the agents' own cgroup comes first
    assert not hostcheck.has_freezer(cg2, agents, "6.1.0")
    assert hostcheck.kernel_version("6.18.44-fc-v1300") == (6, 18)
