"""Shared fixtures: a fresh ledger directory, and the inode-flag precondition.

Segments carry chattr +a/+i, which even root cannot delete through: every test
that may leave a flagged file under its ``tmp_path`` has the flags cleared on
teardown (one ioctl that drops both, since ext4 refuses any other change while
+i is set), so pytest can remove the directory later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from vantio_appliance import writer

FS_IOC_GETFLAGS: Final = 0x80086601
FS_IOC_SETFLAGS: Final = 0x40086602
FS_IMMUTABLE_FL: Final = 0x00000010
FS_APPEND_FL: Final = 0x00000020
WORM_FLAGS: Final = FS_IMMUTABLE_FL | FS_APPEND_FL

TEST_ORIGIN: Final = "vantio.appliance/test-host/ledger"


def _get_flags(fd: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    return int.from_bytes(buf[:4], "little")


def _set_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags.to_bytes(8, "little"))


def clear_worm_flags(root: Path) -> list[Path]:
    """Clear +i and +a (in one ioctl) on every regular file under ``root``; returns them."""
    cleared: list[Path] = []
    if not root.exists():
        return cleared
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # never follow ledger.worm or other symlinks
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                try:
                    flags = _get_flags(fd)
                except OSError:
                    continue  # a file system without inode flags: nothing to clear
                if flags & WORM_FLAGS:
                    _set_flags(fd, flags & ~WORM_FLAGS)
                    cleared.append(path)
            finally:
                os.close(fd)
    return cleared


def _flags_absent_reason(probe_dir: Path) -> str | None:
    """Why chattr +a/+i cannot be used here, or None when it works."""
    if os.geteuid() != 0:
        return (f"inode flags +a/+i are ABSENT: not root (euid {os.geteuid()}); setting them "
                "needs CAP_LINUX_IMMUTABLE")
    probe = probe_dir / "flags-probe"
    probe.write_bytes(b"")
    fd = os.open(probe, os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = _get_flags(fd)
        _set_flags(fd, before | FS_APPEND_FL)
        _set_flags(fd, before | FS_IMMUTABLE_FL)  # from +a straight to +i, one call
        _set_flags(fd, before & ~WORM_FLAGS)
    except OSError as exc:
        names = {errno.ENOTTY: "ENOTTY", errno.EOPNOTSUPP: "EOPNOTSUPP",
                 errno.EPERM: "EPERM", errno.EINVAL: "EINVAL"}
        return (f"inode flags +a/+i are ABSENT on the file system of {probe_dir}: "
                f"FS_IOC_SETFLAGS failed with {names.get(exc.errno or 0, exc.errno)} "
                f"({exc.strerror})")
    finally:
        os.close(fd)
        probe.unlink()
    return None


@pytest.fixture(scope="session")
def _flags_probe(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    return _flags_absent_reason(tmp_path_factory.mktemp("flags-probe"))


@pytest.fixture
def needs_root_flags(_flags_probe: str | None) -> None:
    """Skip, loudly, where chattr +a/+i truly cannot work (never as root on ext4)."""
    if _flags_probe is not None:
        pytest.skip(f"LOUD SKIP: {_flags_probe}; this test checks real kernel WORM behaviour")


@pytest.fixture(autouse=True)
def _no_flags_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did under its tmp_path, leave no +a/+i file behind.

    tmp_path is requested during setup, so this teardown runs before tmp_path's.
    """
    tmp: Path | None = None
    if "tmp_path" in request.fixturenames:
        tmp = request.getfixturevalue("tmp_path")
    yield
    if tmp is not None:
        clear_worm_flags(tmp)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh ledger (writer.init, flags on) in ``tmp_path/ledger``; flags cleared after."""
    root = tmp_path / "ledger"
    writer.init(root, TEST_ORIGIN)
    try:
        yield root
    finally:
        clear_worm_flags(root / "segments")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A small (8 MiB) ext4 on a loop device; unmounted, loop device gone, afterwards."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("LOUD SKIP: needs root and mkfs.ext4 to mount a loop file system")
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    with image.open("wb") as f:
        f.truncate(8 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        clear_worm_flags(mnt)
        subprocess.run(["umount", str(mnt)], check=True)  # also detaches the loop device
        left = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                              check=False).stdout
        for line in left.splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=False)
        assert not left, f"loop device left attached: {left}"


class Media:
    """A removable-media file system in an image on a loop device: vfat by the kernel's
    driver, or exFAT by the FUSE driver (exfat-fuse) where the kernel has no vfat."""

    def __init__(self, image: Path, mnt: Path, fstype: str) -> None:
        self.image, self.mnt, self.fstype = image, mnt, fstype
        self.mounted = False
        self.device: str | None = None

    def mount(self) -> Path:
        if self.fstype == "vfat":
            subprocess.run(["mount", "-t", "vfat", "-o", "loop", str(self.image),
                            str(self.mnt)], check=True, capture_output=True)
        else:
            self.device = subprocess.run(["losetup", "-f", "--show", str(self.image)],
                                         capture_output=True, text=True,
                                         check=True).stdout.strip()
            subprocess.run(["mount.exfat-fuse", self.device, str(self.mnt)], check=True,
                           capture_output=True)
        self.mounted = True
        return self.mnt

    def umount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mnt)], check=True)  # also detaches a -o loop
            self.mounted = False
        if self.device is not None:
            subprocess.run(["losetup", "-d", self.device], check=True)
            self.device = None

    def loops(self) -> list[str]:
        out = subprocess.run(["losetup", "-j", str(self.image)], capture_output=True, text=True,
                             check=False).stdout
        return [line.split(":")[0] for line in out.splitlines()]


def _kernel_has(fstype: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


@pytest.fixture(params=["vfat", "exfat-fuse"])
def removable_media(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Media]:
    """A 64 MiB vfat (mkfs.vfat) or exFAT (mkfs.exfat, mounted by FUSE) image, not yet
    mounted; afterwards unmounted and its loop device detached, whatever the test did."""
    fstype: str = request.param
    tools = {"vfat": ["mkfs.vfat"], "exfat-fuse": ["mkfs.exfat", "mount.exfat-fuse"]}[fstype]
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools):
        pytest.skip(f"LOUD SKIP: needs root and {', '.join(tools)} to mount removable media "
                    "(scripts/setup installs them)")
    image, mnt = tmp_path / "stick.img", tmp_path / "stick"
    with image.open("wb") as f:
        f.truncate(64 * 2**20)
    mkfs = ["mkfs.vfat", "-n", "ANCHOR"] if fstype == "vfat" else ["mkfs.exfat", "-L", "ANCHOR"]
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    mnt.mkdir()
    media = Media(image, mnt, "vfat" if fstype == "vfat" else "exfat")
    if fstype == "vfat":
        try:
            media.mount()
            media.umount()
        except subprocess.CalledProcessError as exc:
            media.umount()
            if not _kernel_has("vfat"):
                pytest.skip("LOUD SKIP: the running kernel has no vfat driver (not in "
                            "/proc/filesystems, and mount -t vfat failed: "
                            f"{exc.stderr.decode().strip()}); the exFAT case covers this "
                            "machine")
            raise
    try:
        yield media
    finally:
        media.umount()
        left = media.loops()
        for dev in left:
            subprocess.run(["losetup", "-d", dev], check=False)
        assert not left, f"loop device left attached: {left}"
