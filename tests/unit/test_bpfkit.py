"""bpfkit's bytecode rewrite: which instructions name a map, and only those change."""

from __future__ import annotations

import struct

from vantio_appliance._internal import bpfkit


def _insn(code: int, regs: int, imm: int, off: int = 0) -> bytes:
    return struct.pack("<BBhi", code, regs, off, imm)


def _ld_map(dst: int, src_kind: int, fd: int) -> bytes:
    """ld_imm64 dst, <map fd>: two slots, the second with opcode 0."""
    return _insn(0x18, src_kind << 4 | dst, fd) + _insn(0, 0, 0)


def test_only_map_references_to_the_swapped_fds_change() -> None:
    code = b"".join([
        _ld_map(1, 1, 7),           # BPF_PSEUDO_MAP_FD 7: swapped
        _insn(0xb7, 0x02, 7),       # r2 = 7: an immediate, not a map
        _ld_map(1, 1, 8),           # another map, not swapped
        _ld_map(1, 2, 7),           # BPF_PSEUDO_MAP_VALUE of map 7: swapped
        _insn(0x18, 0x01, 7) + _insn(0, 0, 0),  # ld_imm64 of the constant 7: kept
        _insn(0x95, 0, 0),          # exit
    ])
    out = bpfkit.swap_map_fds(code, {7: 42})
    assert len(out) == len(code)
    imms = [struct.unpack_from("<i", out, at + 4)[0] for at in range(0, len(out), 8)]
    assert imms == [42, 0, 7, 8, 0, 42, 0, 7, 0, 0]
    assert bpfkit.swap_map_fds(code, {}) == code
