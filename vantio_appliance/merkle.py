"""RFC 6962 Merkle tree hashing and proofs (the same as RFC 9162 section 2.1).

Pure functions over leaf hashes. ``CompactRange`` is what a writer or a
streaming verifier keeps: one hash per set bit of the tree size, enough to
extend the tree and compute its root. ``Tree`` keeps every level and answers
inclusion and consistency proofs; the verify functions need only the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof is malformed or does not lead to the expected root."""


class BeforeFirst(ValueError):
    """A leaf or size before the first leaf a tree started from an edge holds."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The right edge of a tree: the roots of its maximal perfect subtrees."""

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} subtree roots")
        self.size = size
        self._stack = list(stack)

    @property
    def hashes(self) -> list[bytes]:
        return list(self._stack)

    def append(self, leaf: bytes) -> None:
        stack, size, h = self._stack, self.size, leaf
        while size & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            size >>= 1
        stack.append(h)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves, hashing them pairwise in subtrees (fewer Python calls)."""
        for level, h in subtrees(self.size, leaves):
            self.append_subtree(level, h)

    def append_subtree(self, level: int, h: bytes) -> None:
        """Append a perfect subtree of 2**level leaves; the size must be aligned to it."""
        if self.size & ((1 << level) - 1):
            raise ValueError(f"a subtree of level {level} cannot start at {self.size}")
        stack, units = self._stack, self.size >> level
        while units & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            units >>= 1
        stack.append(h)
        self.size += 1 << level

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self._stack)


class Tree:
    """All levels of a tree: answers proofs for any size up to its own, and grows.

    Levels are packed 32-byte hashes in bytearrays (64 bytes a leaf in all),
    so a service can keep the tree of a large ledger in memory.
    """

    def __init__(self, leaves: Sequence[bytes] = (), start: CompactRange | None = None) -> None:
        """The tree of ``leaves``, or, with ``start`` (the right edge at size n), of the
        leaves n.. that follow a prefix whose leaves are gone (expired segments).

        Every node a root, inclusion or consistency proof needs at sizes and leaves >= n
        either lies wholly at or after n, straddles n (hashed here from edge nodes and
        later leaves), or is one of the edge's maximal subtrees: a perfect subtree left
        of a leaf i >= n, ending by n, has i's and n's high bits, so it is n's subtree of
        that level. So level L keeps nodes from index 2 * (n >> L + 1): the edge's node
        of level L first when bit L of n is set, then the nodes hashed from the leaves.
        Pairs stay aligned, and appending works as for a tree from leaf 0.
        """
        self.first = 0 if start is None else start.size
        self._levels: list[bytearray] = [bytearray()]
        if start is not None:
            edge = iter(start.hashes)  # largest subtree first
            top = start.size.bit_length()
            self._levels = [bytearray() for _ in range(max(top, 1))]
            for level in reversed(range(top)):
                if start.size >> level & 1:
                    self._levels[level] += next(edge)
        self.extend(leaves)

    def _offset(self, level: int) -> int:
        """The index of the first node kept at ``level``."""
        return (self.first >> (level + 1)) << 1

    @property
    def size(self) -> int:
        return self._offset(0) + len(self._levels[0]) // 32

    def append(self, leaf: bytes) -> None:
        levels, h, level = self._levels, leaf, 0
        while True:
            if level == len(levels):
                levels.append(bytearray())
            row = levels[level]
            row += h
            n = len(row)
            if n % 64:  # odd count at this level: no parent yet
                return
            h = _sha256(b"\x01" + row[n - 64:n]).digest()
            level += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves: each level is hashed in one pass, not one leaf at a time."""
        levels, new, level = self._levels, b"".join(leaves), 0
        while new:
            if level == len(levels):
                levels.append(bytearray())
            row = levels[level]
            start = len(row) - len(row) % 64  # the first pair not yet hashed into a parent
            row += new
            end = len(row) - len(row) % 64
            new = b"".join([_sha256(b"\x01" + row[i:i + 64]).digest()
                            for i in range(start, end, 64)])
            level += 1

    def _node(self, level: int, index: int) -> bytes:
        at = 32 * (index - self._offset(level))
        if at < 0:  # unreachable through the public methods, which check sizes first
            raise ValueError(f"node {index} of level {level} lies before leaf {self.first}")
        return bytes(self._levels[level][at:at + 32])

    def _hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:  # a perfect, aligned subtree: stored
            return self._node(n.bit_length() - 1, lo // n)
        k = _split(n)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self._hash(0, self.size if size is None else self._size(size))

    def _size(self, size: int) -> int:
        if 0 <= size < self.first:
            raise BeforeFirst(f"tree size {size} is before the first leaf this tree holds "
                              f"({self.first})")
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside {self.first}..{self.size}")
        return size

    def compact_range(self, size: int) -> CompactRange:
        """The right edge of the tree of the first ``size`` leaves."""
        self._size(size)
        stack, lo = [], 0
        for bit in reversed(range(size.bit_length())):
            if size >> bit & 1:
                stack.append(self._hash(lo, lo + (1 << bit)))
                lo += 1 << bit
        return CompactRange(size, stack)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 section 2.1.1."""
        self._size(size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} not in a tree of size {size}")
        if index < self.first:
            raise BeforeFirst(f"leaf {index} is before the first leaf this tree holds "
                              f"({self.first})")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo += k
        proof.reverse()
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """PROOF(old, D[0:new]) of RFC 6962 section 2.1.2."""
        self._size(new)
        if not 0 <= old <= new:
            raise ValueError(f"old size {old} not in 0..{new}")
        if old in (0, new):
            return []
        self._size(old)
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new, old, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._hash(lo, hi))
        proof.reverse()
        return proof


def _perfect_root(leaves: Sequence[bytes]) -> bytes:
    level = list(leaves)
    while len(level) > 1:
        level = [_sha256(b"\x01" + level[i] + level[i + 1]).digest()
                 for i in range(0, len(level), 2)]
    return level[0]


def subtrees(start: int, leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Leaves ``start..start+len`` as maximal aligned perfect subtrees, left to right.

    Lets independent workers hash disjoint ranges of one tree; the results are
    joined with ``CompactRange.append_subtree`` in O(log n) per range.
    """
    out, pos, end = [], start, start + len(leaves)
    while pos < end:
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
        while 1 << level > end - pos:
            level -= 1
        out.append((level, _perfect_root(leaves[pos - start:pos - start + (1 << level)])))
        pos += 1 << level
    return out


def root_of(leaves: Iterable[bytes]) -> bytes:
    cr = CompactRange()
    cr.extend(list(leaves))
    return cr.root()


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != 32 for h in hashes):
        raise ProofError("wrong hash size (SHA-256 hashes are 32 bytes)")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """RFC 9162 section 2.1.3.2; raises ProofError unless ``leaf`` is at ``index``."""
    _check_hashes(leaf, root, *proof)
    if not 0 <= index < size:
        raise ProofError(f"index {index} not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def prefix_root(index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """MTH(D[0:index]) from an inclusion proof of leaf ``index`` in a tree of ``size``.

    The audit path's left siblings (the hashes RFC 9162 section 2.1.3.2 step
    3b combines as HASH(0x01 || p || r)) are the perfect subtrees that make
    up the first ``index`` leaves, smallest first; folding them gives that
    tree's root. Once the proof itself verifies against a signed root, this
    is the root of the signed tree's prefix: no consistency proof needed.
    Does not verify the proof; raises ProofError if it has the wrong length.
    """
    _check_hashes(*proof)
    if not 0 <= index < size:
        raise ProofError(f"index {index} not in a tree of size {size}")
    fn, sn, r = index, size - 1, None
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = p if r is None else node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    return EMPTY_ROOT if r is None else r


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """RFC 9162 section 2.1.4.2; raises ProofError unless tree ``new`` extends tree ``old``."""
    if not 0 <= old <= new:
        raise ProofError(f"old size {old} is larger than new size {new}")
    if old == new:
        if proof:
            raise ProofError("proof must be empty for equal sizes")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots")
        return
    if old == 0:
        if proof:
            raise ProofError("proof must be empty from the empty tree")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
