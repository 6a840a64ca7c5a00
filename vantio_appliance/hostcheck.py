"""Can the enforcer run fully armed on this host? The start-up checks, judged apart from I/O.

``probe`` gathers the facts (mounts, files, the kernel lockdown level, and
whether the kernel loads each program type and creates each map type the
enforcer uses); ``missing`` and ``kernel_reads_allowed`` judge them, as pure
functions, so the decision is tested on any input, not only on this kernel.
The lockdown level is only ever read: raising it cannot be undone until reboot.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ._internal import bpfkit

SECURITYFS: Final = Path("/sys/kernel/security")
TRACEPOINT: Final = "sched/sched_process_exec"

#: What the enforcer asks of the kernel: (what, why), by probe name.
KERNEL: Final = {
    "cgroup_sock_addr/connect4": "the connect4/connect6 programs (egress decisions)",
    "cgroup_sock_addr/sendmsg4": "the sendmsg4/sendmsg6 programs (UDP decisions)",
    "cgroup_skb": "the egress program (quarantine: drop and count bytes)",
    "tracepoint": "the exec lineage program",
    "ringbuf": "the BPF ring buffer (kernel 5.8 or later)",
    "lpm_trie": "the CIDR rule maps",
}


@dataclass(frozen=True)
class Host:
    """Facts about the host, as ``probe`` found them."""

    euid: int
    mounts: str  # /proc/self/mounts
    lockdown: str | None  # /sys/kernel/security/lockdown; None when unreadable
    bcc_error: str | None = None
    btf: bool = True
    headers: Path | None = None  # the kernel headers' directory when absent
    tracepoint: bool = True
    freezer: bool = True
    kernel: dict[str, int] = field(default_factory=dict)  # probe -> 0 or -errno; {} unprobed


def mount_points(mounts: str, fstype: str) -> list[Path]:
    """Where file systems of ``fstype`` are mounted (octal escapes as /proc writes them)."""
    out = []
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == fstype:
            out.append(Path(parts[1].encode().decode("unicode_escape")))
    return out


def cgroup2_root(mounts: str) -> Path:
    """Where cgroup v2 is: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
    hybrid one (our CI machines), else the first cgroup2 mount; /sys/fs/cgroup if none."""
    found = mount_points(mounts, "cgroup2")
    for usual in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if usual in found:
            return usual
    return found[0] if found else Path("/sys/fs/cgroup")


def lockdown_level(text: str | None) -> str:
    """``none``, ``integrity`` or ``confidentiality`` (the bracketed one), else ``unknown``."""
    if text is None or "[" not in text or "]" not in text:
        return "unknown"
    level = text[text.index("[") + 1:text.index("]")]
    return level if level in ("none", "integrity", "confidentiality") else "unknown"


def kernel_reads_allowed(text: str | None) -> bool:
    """Whether programs may read kernel memory (bpf_probe_read_kernel*).

    ``confidentiality`` forbids it and the load would fail; an unknown level is
    treated the same, so that the enforcer never depends on it by guess.
    """
    return lockdown_level(text) in ("none", "integrity")


def missing(host: Host, pins: Path, cgroup2: Path) -> list[str]:
    """Everything the enforcer needs and this host lacks, each with how to fix it;
    empty when the enforcer can run fully armed."""
    out = []
    if host.euid != 0:
        out.append("root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN to load and attach)")
    if host.bcc_error:
        out.append(host.bcc_error)
    bpffs = mount_points(host.mounts, "bpf")
    if not any(pins == m or m in pins.parents for m in bpffs):
        out.append(f"bpffs under {pins} (mount -t bpf bpf {pins.parent})")
    if cgroup2 not in mount_points(host.mounts, "cgroup2"):
        out.append(f"cgroup v2 at {cgroup2}")
    elif not host.freezer:
        out.append("the cgroup v2 freezer (cgroup.freeze, kernel 5.2 or later): quarantine")
    if not host.btf:
        out.append("kernel BTF (/sys/kernel/btf/vmlinux)")
    if host.headers is not None:
        out.append(f"kernel headers ({host.headers}; scripts/setup links linux-headers-amd64)")
    if not host.tracepoint:
        out.append(f"the tracepoint {TRACEPOINT.replace('/', ':')} in tracefs "
                   "(mount -t tracefs tracefs /sys/kernel/tracing)")
    for name, why in KERNEL.items():
        err = host.kernel.get(name, 0)
        if err:
            out.append(f"kernel support for {name}, {why}: {os.strerror(-err)}")
    return out


# -- I/O edge ----------------------------------------------------------------------------


def _mount_securityfs() -> None:
    """Mount securityfs (root only) so that the lockdown level can be read; it only reads."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount(b"securityfs", str(SECURITYFS).encode(), b"securityfs", 0, None)


def read_lockdown(mounts: str, euid: int) -> str | None:
    if SECURITYFS not in mount_points(mounts, "securityfs") and euid == 0:
        _mount_securityfs()
    with contextlib.suppress(OSError):
        return (SECURITYFS / "lockdown").read_text()
    return None


FREEZER_KERNEL: Final = (5, 2)  # cgroup v2's own freezer: part of cgroup v2 since 5.2


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` release such as ``6.1.0-28-amd64``; (0, 0) if none."""
    parts = re.match(r"(\d+)\.(\d+)", release)
    return (int(parts[1]), int(parts[2])) if parts else (0, 0)


def has_freezer(cgroup2: Path, root: Path, release: str) -> bool:
    """Whether cgroup v2 can freeze: cgroup.freeze exists in every non-root cgroup v2
    directory of a kernel that has it. On a fresh host no such directory may exist yet
    (the root has none), and then the kernel's version decides."""
    for d in (root, *(p for p in sorted(cgroup2.iterdir()) if p.is_dir())):
        if d.is_dir():
            return (d / "cgroup.freeze").exists()
    return kernel_version(release) >= FREEZER_KERNEL


def probe(cgroup2: Path, root: Path) -> Host:
    """Gather the facts (mounts securityfs when it is absent and we are root)."""
    mounts = Path("/proc/self/mounts").read_text()
    euid = os.geteuid()
    release = os.uname().release
    build = Path(f"/lib/modules/{release}/build")
    kernel: dict[str, int] = {}
    if euid == 0:
        kernel = {
            "cgroup_sock_addr/connect4": bpfkit.probe_prog(bpfkit.PROG_SOCK_ADDR,
                                                           bpfkit.ATTACH["connect4"]),
            "cgroup_sock_addr/sendmsg4": bpfkit.probe_prog(bpfkit.PROG_SOCK_ADDR,
                                                           bpfkit.ATTACH["sendmsg4"]),
            "cgroup_skb": bpfkit.probe_prog(bpfkit.PROG_SKB, bpfkit.ATTACH["egress"]),
            "tracepoint": bpfkit.probe_prog(bpfkit.PROG_TRACEPOINT),
            "ringbuf": bpfkit.probe_map(bpfkit.MAP_RINGBUF, 0, 0, 4096),
            "lpm_trie": bpfkit.probe_map(bpfkit.MAP_LPM_TRIE, 8, 8, 1, 1),  # BPF_F_NO_PREALLOC
        }
    return Host(
        euid=euid, mounts=mounts, lockdown=read_lockdown(mounts, euid),
        bcc_error=bpfkit.available(), btf=Path("/sys/kernel/btf/vmlinux").exists(),
        headers=None if (build / "include").is_dir() else build,
        tracepoint=(Path("/sys/kernel/tracing/events") / TRACEPOINT).is_dir(),
        freezer=cgroup2.is_dir() and has_freezer(cgroup2, root, release), kernel=kernel)
