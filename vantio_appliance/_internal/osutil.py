"""OS edges kept out of the domain code: inode flags, the kernel clock, fsync."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Final

FS_IOC_GETFLAGS: Final = 0x80086601
FS_IOC_SETFLAGS: Final = 0x40086602
FS_IMMUTABLE_FL: Final = 0x00000010
FS_APPEND_FL: Final = 0x00000020

_STA_UNSYNC: Final = 0x0040
_TIME_ERROR: Final = 5
#: The interval claimed when the kernel says the clock is not synchronized.
UNSYNC_BOUND_NS: Final = 86_400 * 10**9


class FlagsUnsupported(OSError):
    """The file system or our privileges do not allow inode flags here."""


def get_flags(fd: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    return int.from_bytes(buf[:4], "little")


def _set_flags(fd: int, flags: int) -> None:
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags.to_bytes(8, "little"))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            raise FlagsUnsupported(exc.errno, f"cannot set inode flags: {exc.strerror}") from None
        raise


def add_flags(fd: int, add: int = 0, remove: int = 0) -> None:
    """Set and clear inode flags (chattr +/-), as one ioctl on an open file."""
    _set_flags(fd, (get_flags(fd) | add) & ~remove)


def path_flags(path: Path) -> int | None:
    """The inode flags of ``path``, or None where the file system has none."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return get_flags(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def flags_text(path: Path) -> str:
    """``+i``, ``+a``, ``+i+a``, ``none``, or ``unsupported`` (no inode flags here)."""
    flags = path_flags(path)
    if flags is None:
        return "unsupported"
    return "".join(s for bit, s in ((FS_IMMUTABLE_FL, "+i"), (FS_APPEND_FL, "+a"))
                   if flags & bit) or "none"


def set_path_flags(path: Path, add: int = 0, remove: int = 0) -> None:
    """Change the inode flags of ``path`` and make the change durable (fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        add_flags(fd, add, remove)
        os.fsync(fd)
    finally:
        os.close(fd)


_FALLOC_FL_KEEP_SIZE: Final = 0x01


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate blocks for ``length`` bytes at ``offset`` without changing the file size.

    Allowed on append-only (+a) files. A full disk then refuses before a byte
    is written (ENOSPC), instead of part-way through a write. File systems
    without fallocate simply get no reservation.
    """
    if _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(offset),
                       ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(err, os.strerror(err))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``path`` atomically by rename; fsync file and directory when ``durable``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_error_cache: list[int] = [0, -(10**18)]  # [error_ns, read at monotonic ns]


def clock_error_ns(max_age_ns: int = 10**9) -> int:
    """The kernel's maximum error of CLOCK_REALTIME, read with adjtimex(2) at most once a
    second (it changes slowly; the call costs more than a record).

    The kernel keeps this estimate from NTP/chrony discipline; when the clock
    is unsynchronized it means little, so a wide bound is returned instead.
    """
    mono = time.monotonic_ns()
    if mono - _error_cache[1] < max_age_ns:
        return _error_cache[0]
    _error_cache[:] = [_read_clock_error(), mono]
    return _error_cache[0]


def _read_clock_error() -> int:
    tx = _Timex()
    state = _libc.adjtimex(ctypes.byref(tx))
    if state < 0:  # e.g. EPERM in a container whose seccomp filter blocks clock_adjtime
        return UNSYNC_BOUND_NS  # a clock we cannot question is one we cannot vouch for
    error = int(tx.maxerror) * 1000
    if state == _TIME_ERROR or tx.status & _STA_UNSYNC:
        return max(error, UNSYNC_BOUND_NS)
    return error


def now() -> tuple[int, int]:
    """(CLOCK_MONOTONIC, CLOCK_REALTIME) in nanoseconds."""
    return time.monotonic_ns(), time.time_ns()
