"""vantio-enforcer.service as systemd itself reads it (as test_systemd_unit does for the
ledger's unit): the exposure target, no warning from `systemd-analyze verify`, the
system calls the daemon makes, and the service contract. That the capability
bounding set is enough to arm, and that only CAP_BPF is left after, is shown on
the real kernel in test_enforcer.py."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Final

import pytest
from test_systemd_unit import (
    _allowed_syscalls,
    _one,
    _settings,
    _syscall_groups,
    check_exposure,
    check_verify,
)

UNIT_NAME: Final = "vantio-enforcer.service"
EXEC_START: Final = ("/usr/bin/vantio enforcer run --policy /etc/vantio/policy.yml "
                     "--ledger-socket /run/vantio/ingest.sock")
#: The target, justified in docs/enforcer.md ("The unit"): a loader of kernel programs
#: cannot reach the ledger's 2.0-or-lower band by much; it must stay in "OK".
MAX_EXPOSURE: Final = 2.0
CAPABILITIES: Final = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
#: linux/capability.h, for the ones the unit may name
CAP_NUMBERS: Final = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}

NEEDED_SYSCALLS: Final = {
    "bpf": "load programs, create and update maps, pin, attach",
    "perf_event_open": "attach the exec tracepoint",
    "capset": "drop to CAP_BPF after loading",
    "prctl": "empty the capability bounding set",
    "mmap": "read the ring buffer",
    "socket": "the ingest API client and the control socket",
    "connect": "the ingest API client",
    "bind": "the control socket",
    "mkdir": "agents' cgroups, the pin directory",
    "clone": "threads (pump, control)",
}
FORBIDDEN_SYSCALLS: Final = (
    "init_module", "finit_module", "delete_module", "kexec_load", "reboot", "mount",
    "umount2", "pivot_root", "swapon", "setuid", "setresuid", "ptrace",
    "process_vm_writev", "settimeofday", "clock_settime", "iopl", "ioperm", "chroot",
)


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("LOUD SKIP: systemd-analyze is ABSENT on this machine (apt-get install "
                    "systemd); the enforcer unit's sandbox is NOT checked")
    return path


@pytest.fixture(scope="module")
def unit_text() -> str:
    return (resources.files("vantio_appliance") / "data" / "systemd" / UNIT_NAME).read_text()


def test_exposure_meets_the_target(analyze: str, unit_text: str, tmp_path: Path) -> None:
    check_exposure(analyze, UNIT_NAME, unit_text, MAX_EXPOSURE, tmp_path)


def test_verify_has_no_warnings(analyze: str, unit_text: str, tmp_path: Path) -> None:
    check_verify(analyze, UNIT_NAME, unit_text, EXEC_START, tmp_path)


def test_the_service_contract(unit_text: str) -> None:
    s = _settings(unit_text)
    assert _one(s, "ExecStart") == EXEC_START
    assert set((_one(s, "CapabilityBoundingSet") or "").split()) == CAPABILITIES
    assert _one(s, "AmbientCapabilities") == ""
    assert _one(s, "NoNewPrivileges") == "yes"
    # Writable: the pins and the agents' slice, nothing else of /sys.
    assert _one(s, "ProtectSystem") == "strict" and _one(s, "ProtectKernelTunables") == "yes"
    assert set((_one(s, "ReadWritePaths") or "").split()) == {
        "/sys/fs/bpf", "/sys/fs/cgroup/vantio.slice/vantio-agents.slice"}
    # bcc compiles against the headers under /lib/modules, which this setting hides.
    assert _one(s, "ProtectKernelModules") in (None, "no")
    assert _one(s, "PrivateNetwork") == "yes" and _one(s, "RestrictAddressFamilies") == "AF_UNIX"
    assert _one(s, "RuntimeDirectory") == "vantio-enforcer"  # /run/vantio is the ledger's
    assert _one(s, "SupplementaryGroups") == "vantio-ingest"  # the ingest socket's group
    assert _one(s, "LoadCredential") == "vantio-api-key:/etc/vantio/enforcer.key"


def test_syscall_filter_allows_the_daemon(analyze: str, unit_text: str, tmp_path: Path) -> None:
    allowed = _allowed_syscalls(_settings(unit_text), _syscall_groups(analyze, tmp_path))
    missing = {name: why for name, why in NEEDED_SYSCALLS.items() if name not in allowed}
    assert not missing, f"filtered out, yet the daemon needs them: {missing}"
    leaked = sorted(name for name in FORBIDDEN_SYSCALLS if name in allowed)
    assert not leaked, f"allowed, yet never needed: {leaked}"


def unit_settings() -> dict[str, str]:
    """The privilege settings as shipped (for the real-kernel test in test_enforcer.py)."""
    text = (resources.files("vantio_appliance") / "data" / "systemd" / UNIT_NAME).read_text()
    s = _settings(text)
    return {k: _one(s, k) or "" for k in ("CapabilityBoundingSet", "AmbientCapabilities",
                                          "NoNewPrivileges", "SecureBits")}
