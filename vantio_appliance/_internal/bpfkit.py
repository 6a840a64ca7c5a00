"""A small typed wrapper around bcc, the one module that touches it.

bcc (Debian's python3-bpfcc) has no type stubs and exists only for the
system interpreter, so it is imported lazily here and everything the
enforcer needs is exposed with types: compile, load, attach to a cgroup,
pin, map updates as raw bytes, the ring buffer, per-CPU counters. Raw bytes
keep the struct layouts in one place (the enforcer packs them with
``struct``), which also lets the status command read pinned maps without bcc.
"""

from __future__ import annotations

import ctypes as ct
import errno
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

BPF_MAP_LOOKUP_ELEM: Final = 1
BPF_OBJ_GET: Final = 7
BPF_F_ALLOW_MULTI: Final = 2

# enum bpf_attach_type (uapi/linux/bpf.h)
ATTACH: Final = {"connect4": 10, "connect6": 11, "sendmsg4": 14, "sendmsg6": 15, "egress": 1}
PROG_SOCK_ADDR: Final = 18  # BPF_PROG_TYPE_CGROUP_SOCK_ADDR
PROG_SKB: Final = 8  # BPF_PROG_TYPE_CGROUP_SKB


class BpfError(OSError):
    """A bpf() operation failed; the message says which."""


def _lib() -> Any:
    lib = ct.CDLL("libbcc.so.0", use_errno=True)
    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    lib.bpf_obj_get.argtypes = [ct.c_char_p]
    lib.bpf_prog_attach.argtypes = [ct.c_int, ct.c_int, ct.c_int, ct.c_uint]
    lib.bpf_prog_detach2.argtypes = [ct.c_int, ct.c_int, ct.c_int]
    lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_ulonglong]
    lib.bpf_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
    lib.bpf_get_first_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_size_t]
    lib.bpf_obj_get_info.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    return lib


_LIB: Any = None


def lib() -> Any:
    global _LIB
    if _LIB is None:
        _LIB = _lib()
    return _LIB


def _check(res: int, what: str) -> int:
    if res < 0:
        err = ct.get_errno() or -res
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return res


def available() -> str | None:
    """None when bcc can be imported; else why not (for the start-up checks)."""
    try:
        import bcc  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError as exc:
        return f"bcc is missing ({exc}); install python3-bpfcc and use /usr/bin/python3"
    return None


def pin(fd: int, path: Path) -> None:
    path.unlink(missing_ok=True)
    _check(lib().bpf_obj_pin(fd, str(path).encode()), f"pin {path}")


def obj_get(path: Path) -> int:
    return _check(lib().bpf_obj_get(str(path).encode()), f"open pinned {path}")


def attach(prog_fd: int, cgroup_fd: int, attach_type: int) -> None:
    _check(lib().bpf_prog_attach(prog_fd, cgroup_fd, attach_type, BPF_F_ALLOW_MULTI),
           "attach to cgroup")


def detach(prog_fd: int, cgroup_fd: int, attach_type: int) -> bool:
    """Detach; False when it was not attached there."""
    res = lib().bpf_prog_detach2(prog_fd, cgroup_fd, attach_type)
    if res < 0 and (ct.get_errno() or -res) in (errno.ENOENT, errno.EBADF):
        return False
    _check(res, "detach from cgroup")
    return True


def update(map_fd: int, key: bytes, value: bytes) -> None:
    k, v = ct.create_string_buffer(key, len(key)), ct.create_string_buffer(value, len(value))
    _check(lib().bpf_update_elem(map_fd, k, v, 0), "map update")


def delete(map_fd: int, key: bytes) -> bool:
    k = ct.create_string_buffer(key, len(key))
    return bool(lib().bpf_delete_elem(map_fd, k) == 0)


def lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ct.create_string_buffer(key, len(key))
    v = ct.create_string_buffer(value_size)
    if lib().bpf_map_lookup_elem(map_fd, k, v) < 0:
        return None
    return v.raw


def empty(map_fd: int, key_size: int) -> bool:
    """Whether a hash map has no entries."""
    k = ct.create_string_buffer(key_size)
    return bool(lib().bpf_get_first_key(map_fd, k, key_size) < 0)


def possible_cpus() -> int:
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def percpu_u64_sums(map_fd: int, entries: int) -> list[int]:
    """A per-CPU array of u64, summed over CPUs, entry by entry."""
    ncpu = possible_cpus()
    out = []
    for i in range(entries):
        raw = lookup(map_fd, i.to_bytes(4, "little"), 8 * ncpu)
        out.append(sum(int.from_bytes(raw[j:j + 8], "little") for j in range(0, len(raw), 8))
                   if raw else 0)
    return out


# Kernel probes: load the smallest program of a type, create the smallest map of a type.
_SYS_BPF: Final = 321  # x86-64
_MAP_CREATE: Final = 0
_PROG_LOAD: Final = 5
_RETURN_1: Final = bytes.fromhex("b700000001000000" "9500000000000000")  # r0 = 1; exit
PROG_TRACEPOINT: Final = 5
MAP_LPM_TRIE: Final = 11
MAP_RINGBUF: Final = 27


def _sys_bpf(cmd: int, attr: bytes) -> int:
    libc = ct.CDLL(None, use_errno=True)
    buf = ct.create_string_buffer(attr, 128)
    fd = int(libc.syscall(_SYS_BPF, cmd, buf, 128))
    if fd < 0:
        return -(ct.get_errno() or 1)
    os.close(fd)
    return 0


def probe_prog(prog_type: int, attach_type: int = 0) -> int:
    """0 when the kernel loads a program of this type (attached as ``attach_type``); else
    the negative errno."""
    insns = ct.create_string_buffer(_RETURN_1, len(_RETURN_1))
    license_ = ct.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQII16sII", prog_type, len(_RETURN_1) // 8,
                       ct.addressof(insns), ct.addressof(license_), 0, 0, 0, 0, 0,
                       b"vantio_probe", 0, attach_type)
    return _sys_bpf(_PROG_LOAD, attr)


def probe_map(map_type: int, key_size: int, value_size: int, max_entries: int,
              flags: int = 0) -> int:
    """0 when the kernel creates a map of this type; else the negative errno."""
    return _sys_bpf(_MAP_CREATE, struct.pack("<IIIII", map_type, key_size, value_size,
                                             max_entries, flags))


def prog_run_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program (struct bpf_prog_info); counted only while the
    sysctl kernel.bpf_stats_enabled is 1."""
    info = ct.create_string_buffer(256)
    size = ct.c_uint32(len(info))
    _check(lib().bpf_obj_get_info(prog_fd, info, ct.byref(size)), "program info")
    return (int.from_bytes(info.raw[192:200], "little"),
            int.from_bytes(info.raw[200:208], "little"))


def prog_map_ids(prog_fd: int) -> list[int]:
    """The ids of the maps a loaded program uses (struct bpf_prog_info nr_map_ids, map_ids)."""
    ids = (ct.c_uint32 * 64)()
    info = ct.create_string_buffer(256)
    struct.pack_into("<IQ", info, 52, len(ids), ct.addressof(ids))
    size = ct.c_uint32(len(info))
    _check(lib().bpf_obj_get_info(prog_fd, info, ct.byref(size)), "program info")
    return list(ids[:min(int.from_bytes(info.raw[52:56], "little"), len(ids))])


def map_id(map_fd: int) -> int:
    info = ct.create_string_buffer(80)
    size = ct.c_uint32(len(info))
    _check(lib().bpf_obj_get_info(map_fd, info, ct.byref(size)), "map info")
    return int.from_bytes(info.raw[4:8], "little")


@dataclass(frozen=True)
class MapShape:
    """What makes two maps interchangeable for a program (struct bpf_map_info)."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


def map_shape(map_fd: int) -> MapShape:
    info = ct.create_string_buffer(80)
    size = ct.c_uint32(len(info))
    _check(lib().bpf_obj_get_info(map_fd, info, ct.byref(size)), "map info")
    # struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags (u32 each)
    mtype, _id, key, value, entries, flags = struct.unpack_from("<6I", info.raw)
    return MapShape(mtype, key, value, entries, flags)


_LD_IMM64: Final = 0x18  # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
_PSEUDO_MAP: Final = (1, 2)  # src_reg BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE: imm is a map fd


def swap_map_fds(code: bytes, swap: dict[int, int]) -> bytes:
    """Bytecode whose map references to fd ``old`` name fd ``swap[old]`` instead.

    The program loader reads map fds from the ld_imm64 instructions that load a
    map's address; pointing those at a pinned map reopened by path makes the
    program use it, with no by-id lookup (which the kernel allows CAP_SYS_ADMIN only).
    """
    out = bytearray(code)
    for at in range(0, len(out) - 15, 8):
        if out[at] == _LD_IMM64 and out[at + 1] >> 4 in _PSEUDO_MAP:
            old = int.from_bytes(out[at + 4:at + 8], "little", signed=True)
            if old in swap:
                out[at + 4:at + 8] = swap[old].to_bytes(4, "little", signed=True)
    return bytes(out)


_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_BUSY: Final = 1 << 31
_DISCARD: Final = 1 << 30
_HEADER: Final = 8  # struct bpf_ringbuf_hdr: len (with the busy and discard bits), pg_off


class RingReader:
    """A BPF ring buffer read through its own mmap, consumed only when the caller says so.

    libbpf (and bcc's poll on top of it) moves the consumer position past each
    record as soon as its callback returns; here ``release`` moves it, after
    the records are safely elsewhere (the ledger), so records a killed reader
    held are read again by the next one from the pinned map. No epoll: the
    programs submit without wake-ups and the reader polls on a timer. Plain
    loads suffice for the positions and headers on x86-64 (loads are not
    reordered with loads; the kernel publishes with release stores).
    """

    def __init__(self, map_fd: int) -> None:
        size = map_shape(map_fd).max_entries
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The producer page, then the data pages mapped twice: a record that wraps
        # around the end reads as one contiguous slice.
        self._data = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._page, self._mask, self.size = page, size - 1, size

    @property
    def consumed(self) -> int:
        return int(_U64.unpack_from(self._cons, 0)[0])

    def pending(self) -> int:
        """Bytes submitted (or being written) and not yet released."""
        return int(_U64.unpack_from(self._data, 0)[0]) - self.consumed

    def read(self, max_records: int, start: int | None = None) -> tuple[list[bytes], int]:
        """Up to ``max_records`` whole records after ``start`` (default: the consumer
        position; later, to read on while earlier records are not yet released), and the
        position after them (to ``release`` once they and all before them are safe)."""
        data, base, mask = self._data, self._page, self._mask
        pos = self.consumed if start is None else start
        end = _U64.unpack_from(data, 0)[0]
        out: list[bytes] = []
        while pos < end and len(out) < max_records:
            at = base + (pos & mask)
            hdr = _U32.unpack_from(data, at)[0]
            if hdr & _BUSY:
                break  # reserved, not yet submitted
            length = hdr & ~(_BUSY | _DISCARD)
            if not hdr & _DISCARD:
                out.append(data[at + _HEADER:at + _HEADER + length])
            pos += (length + _HEADER + 7) & ~7
        return out, pos

    def release(self, pos: int) -> None:
        _U64.pack_into(self._cons, 0, pos)

    def close(self) -> None:
        self._cons.close()
        self._data.close()


class Program:
    """One compiled bcc module: functions loaded by name, maps by name, a ring buffer.

    Maps that must outlive a daemon are pinned and reopened by path (BPF_OBJ_GET)
    with ``reuse``, not with bcc's pinned tables: bcc reopens those by id
    (BPF_MAP_GET_FD_BY_ID), which the kernel allows only with CAP_SYS_ADMIN.
    """

    def __init__(self, src: Path, cflags: list[str]) -> None:
        from bcc import BPF  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self._bpf: Any = BPF(src_file=str(src).encode(), cflags=cflags)
        self._BPF: Any = BPF
        self._swap: dict[int, int] = {}  # bcc's map fd -> the fd programs use instead
        self._maps: dict[str, int] = {}

    def reuse(self, name: str, fd: int) -> None:
        """Programs loaded from now on use map ``fd`` (its owner keeps it open) where the
        source names ``name``; bcc's own map of that name is left unused."""
        self._swap[self._bcc_map_fd(name)] = fd
        self._maps[name] = fd

    def load(self, name: str) -> int:
        """Load a function (with the maps ``reuse`` named swapped in); its file descriptor."""
        from bcc.libbcc import lib as bcc  # type: ignore[import-not-found,import-untyped,unused-ignore]

        if name in ATTACH:
            ptype = PROG_SKB if name == "egress" else PROG_SOCK_ADDR
            attach_type = ATTACH[name]
        else:
            ptype, attach_type = self._BPF.TRACEPOINT, -1
        module, fn = self._bpf.module, name.encode()
        code = swap_map_fds(bytes(self._bpf.dump_func(fn)), self._swap)
        insns = ct.create_string_buffer(code, len(code))
        fd = int(bcc.bcc_func_load(module, ptype, fn, insns, len(code),
                                   bcc.bpf_module_license(module),
                                   bcc.bpf_module_kern_version(module), 0, None, 0, None,
                                   attach_type))
        _check(fd, f"load program {name}")
        self._bpf.funcs[fn] = self._BPF.Function(self._bpf, fn, fd)  # bcc closes it, attaches it
        return fd

    def attach_tracepoint(self, tp: str, fn_name: str) -> None:
        self._bpf.attach_tracepoint(tp=tp.encode(), fn_name=fn_name.encode())

    def _bcc_map_fd(self, name: str) -> int:
        return int(self._bpf[name.encode()].get_fd())

    def map_fd(self, name: str) -> int:
        return self._maps.get(name) or self._bcc_map_fd(name)

    def close(self) -> None:
        self._bpf.cleanup()
