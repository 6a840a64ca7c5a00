"""RFC 6962 Merkle trees: published reference vectors, and properties against a reference.

Reference values come from outside this project:

* Leaves, roots, inclusion and consistency proofs: the RFC 6962 test vectors of
  certificate-transparency / Trillian, as kept in github.com/transparency-dev/merkle,
  proof/verify_test.go (``leaves``, ``roots``, ``inclusionProofs``,
  ``consistencyProofs``, and its ``corruptInclusionProof`` /
  ``corruptConsistencyProof`` probes, reproduced below).
* Hasher vectors: transparency-dev/merkle, rfc6962/rfc6962_test.go.
* Proof shapes for larger trees (node ids): transparency-dev/merkle,
  proof/proof_test.go (``TestInclusion``, ``TestConsistency``).
* The reference MTH / PATH / PROOF below are written straight from the recursive
  definitions of RFC 6962 section 2.1 (hashlib only), and are themselves checked
  against the published vectors before being used as an oracle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vantio_appliance import merkle
from vantio_appliance.merkle import CompactRange, ProofError, Tree

# --- an independent RFC 6962 section 2.1 implementation (the oracle) ---------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(data: bytes) -> bytes:
    return _sha(b"\x00" + data)


def ref_node(left: bytes, right: bytes) -> bytes:
    return _sha(b"\x01" + left + right)


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1), found by counting up."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *hashes* d (RFC 6962 2.1, with the leaf hashing done)."""
    n = len(d)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return d[0]
    k = _k(n)
    return ref_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 2.1.1."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 2.1.2 (empty for m == 0 or m == n, as in RFC 9162)."""
    if m in (0, len(d)):
        return []
    return ref_subproof(m, d, True)


# --- published vectors (transparency-dev/merkle proof/verify_test.go) --------------

LEAVES: list[bytes] = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]

# roots[i] is the root of the tree of the first i + 1 leaves; size 0 is SHA-256("").
ROOTS: list[bytes] = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
EMPTY_TREE_HASH = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hs(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf index, tree size, proof); the Go vectors number leaves from 1, these from 0.
INCLUSION_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (0, 1, []),
    (0, 8, _hs("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, _hs("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, _hs("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _hs("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]

CONSISTENCY_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (1, 1, []),
    (1, 8, _hs("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, _hs("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, _hs("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, _hs("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]

LEAF_HASHES = [ref_leaf(x) for x in LEAVES]


def root_for(size: int) -> bytes:
    return EMPTY_TREE_HASH if size == 0 else ROOTS[size - 1]


def _ids(vectors: list[tuple[int, int, list[bytes]]]) -> list[str]:
    return [f"{a}-{b}" for a, b, _ in vectors]


# --- hashing -----------------------------------------------------------------------


def test_rfc6962_hasher_vectors() -> None:
    # transparency-dev/merkle rfc6962/rfc6962_test.go
    assert merkle.EMPTY_ROOT == EMPTY_TREE_HASH
    assert merkle.leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert merkle.leaf_hash(b"L123456") == bytes.fromhex(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert merkle.node_hash(b"N123", b"N456") == bytes.fromhex(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    h1, h2 = merkle.leaf_hash(b"Hello"), merkle.leaf_hash(b"World")
    assert h1 != h2
    assert merkle.node_hash(h1, h2) != merkle.leaf_hash(h1 + h2)
    assert merkle.node_hash(h1, h2) != merkle.node_hash(h2, h1)


def test_reference_implementation_matches_published_roots() -> None:
    # The oracle used by the property tests must itself reproduce the vectors.
    for size in range(9):
        assert ref_mth(LEAF_HASHES[:size]) == root_for(size)
    for index, size, proof in INCLUSION_PROOFS:
        assert ref_path(index, LEAF_HASHES[:size]) == proof
    for old, new, proof in CONSISTENCY_PROOFS:
        assert ref_proof(old, LEAF_HASHES[:new]) == proof


@pytest.mark.parametrize("size", range(9))
def test_published_roots(size: int) -> None:
    leaves = LEAF_HASHES[:size]
    assert merkle.root_of(leaves) == root_for(size)
    cr = CompactRange()
    cr.extend(leaves)
    assert cr.size == size
    assert cr.root() == root_for(size)
    assert Tree(leaves).root() == root_for(size)
    assert Tree(LEAF_HASHES).root(size) == root_for(size)


def test_empty_tree() -> None:
    assert merkle.root_of([]) == EMPTY_TREE_HASH
    assert CompactRange().root() == EMPTY_TREE_HASH
    assert Tree([]).root() == EMPTY_TREE_HASH
    assert Tree([]).size == 0


# --- published inclusion proofs ------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS, ids=_ids(INCLUSION_PROOFS))
def test_published_inclusion_proof_is_generated(index: int, size: int, proof: list[bytes]) -> None:
    assert Tree(LEAF_HASHES).inclusion_proof(index, size) == proof
    assert Tree(LEAF_HASHES[:size]).inclusion_proof(index, size) == proof


def _corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes,
                       leaf: bytes) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    """corruptInclusionProof of verify_test.go: (desc, index, size, leaf, proof, root)."""
    probes = [
        ("leafIndex - 1", index - 1, size, leaf, proof, root),
        ("leafIndex + 1", index + 1, size, leaf, proof, root),
        ("leafIndex ^ 2", index ^ 2, size, leaf, proof, root),
        ("treeSize * 2", index, size * 2, leaf, proof, root),
        ("treeSize / 2", index, size // 2, leaf, proof, root),
        ("wrong leaf", index, size, b"WrongLeaf", proof, root),
        ("empty root", index, size, leaf, proof, EMPTY_TREE_HASH),
        ("random root", index, size, leaf, proof, SOME_HASH),
        ("trailing garbage", index, size, leaf, [*proof, b""], root),
        ("trailing root", index, size, leaf, [*proof, root], root),
        ("preceding garbage", index, size, leaf, [b"", *proof], root),
        ("preceding root", index, size, leaf, [root, *proof], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 3", index, size, leaf, wrong, root))
    if proof:
        probes.append(("removed component", index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        probes.append(("inserted component", index, size, leaf,
                       [proof[0], SOME_HASH, *proof[1:]], root))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS, ids=_ids(INCLUSION_PROOFS))
def test_published_inclusion_proof_verifies_and_corruptions_fail(
        index: int, size: int, proof: list[bytes]) -> None:
    leaf, root = LEAF_HASHES[index], root_for(size)
    merkle.verify_inclusion(index, size, leaf, proof, root)
    accepted = []
    for desc, i, n, lf, p, r in _corrupt_inclusion(index, size, proof, root, leaf):
        try:
            merkle.verify_inclusion(i, n, lf, p, r)
        except ProofError:
            continue
        accepted.append(desc)
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_out_of_range_or_wrong_hashes(index: int, size: int) -> None:
    # verify_test.go TestVerifyInclusion
    for leaf, root in ((SOME_HASH, b""), (b"", EMPTY_TREE_HASH), (SOME_HASH, EMPTY_TREE_HASH)):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, [], root)


def test_inclusion_single_entry() -> None:
    # verify_test.go TestVerifyInclusionSingleEntry
    h = merkle.leaf_hash(b"data")
    assert h == ref_leaf(b"data")
    merkle.verify_inclusion(0, 1, h, [], h)
    for root, leaf in ((h, b""), (b"", h)):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(0, 1, leaf, [], root)


def test_inclusion_refuses_hashes_that_are_not_sha256() -> None:
    # verify_test.go TestVerifyInclusionSingleEntry, case {emptyHash, emptyHash, true}
    # ("Wrong hash size"): a leaf hash and a root must be 32 bytes, even when equal.
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, 1, b"", [], b"")


# --- published consistency proofs ------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_PROOFS,
                         ids=_ids(CONSISTENCY_PROOFS))
def test_published_consistency_proof_is_generated(old: int, new: int, proof: list[bytes]) -> None:
    assert Tree(LEAF_HASHES).consistency_proof(old, new) == proof
    assert Tree(LEAF_HASHES[:new]).consistency_proof(old, new) == proof


def _corrupt_consistency(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
                         ) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """corruptConsistencyProof of verify_test.go: (desc, old, new, root1, root2, proof)."""
    probes = [
        ("size1 - 1", old - 1, new, r1, r2, proof),
        ("size1 + 1", old + 1, new, r1, r2, proof),
        ("size1 ^ 2", old ^ 2, new, r1, r2, proof),
        ("size2 * 2", old, new * 2, r1, r2, proof),
        ("size2 / 2", old, new // 2, r1, r2, proof),
        ("wrong root1", old, new, b"WrongRoot", r2, proof),
        ("wrong root2", old, new, r1, b"WrongRoot", proof),
        ("swapped roots", old, new, r2, r1, proof),
        ("empty proof", old, new, r1, r2, []),
        ("trailing garbage", old, new, r1, r2, [*proof, b""]),
        ("trailing root1", old, new, r1, r2, [*proof, r1]),
        ("trailing root2", old, new, r1, r2, [*proof, r2]),
        ("preceding garbage", old, new, r1, r2, [b"", *proof]),
        ("preceding root1", old, new, r1, r2, [r1, *proof]),
        ("preceding root2", old, new, r1, r2, [r2, *proof]),
        ("preceding proof[0]", old, new, r1, r2, [proof[0], *proof]),
        ("truncated proof", old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 4", old, new, r1, r2, wrong))
    return probes


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_PROOFS,
                         ids=_ids(CONSISTENCY_PROOFS))
def test_published_consistency_proof_verifies_and_corruptions_fail(
        old: int, new: int, proof: list[bytes]) -> None:
    r1, r2 = root_for(old), root_for(new)
    merkle.verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    accepted = []
    for desc, a, b, x, y, p in _corrupt_consistency(old, new, r1, r2, proof):
        try:
            merkle.verify_consistency(a, b, x, y, p)
        except ProofError:
            continue
        accepted.append(desc)
    assert accepted == []


_R1, _R2 = b"don't care 1", b"don't care 2"


@pytest.mark.parametrize(("old", "new", "r1", "r2", "proof", "ok"), [
    # verify_test.go TestVerifyConsistency
    (0, 0, _R1, _R2, [], False),
    (1, 1, _R1, _R2, [], False),
    (0, 0, _R1, _R1, [], True),
    (0, 1, _R1, _R2, [], True),
    (1, 1, _R2, _R2, [], True),
    (1, 0, _R1, _R2, [], False),
    (2, 1, _R1, _R2, [], False),
    (1, 2, _R1, _R2, [], False),
    (0, 0, EMPTY_TREE_HASH, _R2, [], False),
    (1, 1, EMPTY_TREE_HASH, _R2, [], False),
    (0, 0, EMPTY_TREE_HASH, EMPTY_TREE_HASH, [EMPTY_TREE_HASH], False),
    (0, 1, EMPTY_TREE_HASH, EMPTY_TREE_HASH, [EMPTY_TREE_HASH], False),
    (1, 1, EMPTY_TREE_HASH, EMPTY_TREE_HASH, [EMPTY_TREE_HASH], False),
])
def test_consistency_edge_cases(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes],
                                ok: bool) -> None:
    if ok:
        merkle.verify_consistency(old, new, r1, r2, proof)
    else:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, r1, r2, proof)


# --- proof shapes for larger trees (transparency-dev/merkle proof/proof_test.go) ------------

# (level, index) node ids; a "rehash" block [begin, end) is folded into one ephemeral node.
NodeIds = list[tuple[int, int]]
SHAPE_LEAVES = [ref_leaf(f"shape leaf {i}".encode()) for i in range(128)]


def _node(level: int, index: int) -> bytes:
    return ref_mth(SHAPE_LEAVES[index << level:(index + 1) << level])


def _expected(ids: NodeIds, rehash: tuple[int, int] | None = None) -> list[bytes]:
    hashes = [_node(level, index) for level, index in ids]
    if rehash is None:
        return hashes
    begin, end = rehash
    acc = hashes[begin]
    for h in hashes[begin + 1:end]:
        acc = ref_node(h, acc)
    return [*hashes[:begin], acc, *hashes[end:]]


INCLUSION_SHAPES: list[tuple[int, int, NodeIds, tuple[int, int] | None]] = [
    (2, 0, [(0, 1)], None),
    (2, 1, [(0, 0)], None),
    (3, 1, [(0, 0), (0, 2)], None),
    (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)], (2, 4)),
    (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)], (2, 4)),
    (7, 4, [(0, 5), (0, 6), (2, 0)], None),
    (7, 5, [(0, 4), (0, 6), (2, 0)], None),
    (7, 6, [(1, 2), (2, 0)], None),
    (4, 2, [(0, 3), (1, 0)], None),
    (5, 3, [(0, 2), (1, 0), (0, 4)], None),
    (6, 3, [(0, 2), (1, 0), (1, 2)], None),
    (6, 4, [(0, 5), (2, 0)], None),
    (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)], (2, 4)),
    (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)], (2, 4)),
    (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)], (3, 6)),
]

CONSISTENCY_SHAPES: list[tuple[int, int, NodeIds, tuple[int, int] | None]] = [
    (1, 2, [(0, 1)], None),
    (1, 4, [(0, 1), (1, 1)], None),
    (1, 6, [(0, 1), (1, 1), (1, 2)], None),
    (2, 3, [(0, 2)], None),
    (2, 8, [(1, 1), (2, 1)], None),
    (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)], (3, 5)),
    (4, 7, [(0, 6), (1, 2)], (0, 2)),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)], None),
    (6, 7, [(1, 2), (0, 6), (2, 0)], None),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)], None),
    (2, 4, [(1, 1)], None),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)], None),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)], None),
    (4, 6, [(1, 2)], None),
    (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)], (2, 4)),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)], (2, 4)),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)], (1, 4)),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)],
     (4, 7)),
]


@pytest.mark.parametrize(("size", "index", "ids", "rehash"), INCLUSION_SHAPES)
def test_inclusion_proof_shape(size: int, index: int, ids: NodeIds,
                               rehash: tuple[int, int] | None) -> None:
    tree = Tree(SHAPE_LEAVES)
    proof = tree.inclusion_proof(index, size)
    assert proof == _expected(ids, rehash)
    merkle.verify_inclusion(index, size, SHAPE_LEAVES[index], proof, tree.root(size))


@pytest.mark.parametrize(("old", "new", "ids", "rehash"), CONSISTENCY_SHAPES)
def test_consistency_proof_shape(old: int, new: int, ids: NodeIds,
                                 rehash: tuple[int, int] | None) -> None:
    tree = Tree(SHAPE_LEAVES)
    proof = tree.consistency_proof(old, new)
    assert proof == _expected(ids, rehash)
    merkle.verify_consistency(old, new, tree.root(old), tree.root(new), proof)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (3, 0), (8, 7), (-1, 5)])
def test_inclusion_proof_of_impossible_index_is_refused(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        Tree(SHAPE_LEAVES).inclusion_proof(index, size)


@pytest.mark.parametrize(("old", "new"), [(5, 0), (9, 8), (-1, 3), (0, 129)])
def test_consistency_proof_of_impossible_sizes_is_refused(old: int, new: int) -> None:
    with pytest.raises(ValueError):
        Tree(SHAPE_LEAVES).consistency_proof(old, new)


def test_tree_root_of_size_beyond_tree_is_refused() -> None:
    with pytest.raises(ValueError):
        Tree(SHAPE_LEAVES[:5]).root(6)
    with pytest.raises(ValueError):
        Tree(SHAPE_LEAVES[:5]).root(-1)


# --- properties against the reference ------------------------------------------------------

MAX = 300
PROP_LEAVES = [ref_leaf(f"property leaf {i}".encode()) for i in range(2 * MAX)]
BIG_TREE = Tree(PROP_LEAVES)
# PREFIX_ROOTS[n] = MTH of the first n property leaves, from the reference.
PREFIX_ROOTS = [ref_mth(PROP_LEAVES[:n]) for n in range(2 * MAX + 1)]
PROP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX))
    return size, draw(st.integers(0, size - 1))


@PROP
@given(size_and_index(), st.data())
def test_inclusion_property(si: tuple[int, int], data: st.DataObject) -> None:
    size, index = si
    d = PROP_LEAVES[:size]
    tree = Tree(d)
    root = PREFIX_ROOTS[size]
    assert tree.root() == root
    proof = tree.inclusion_proof(index, size)
    assert proof == ref_path(index, d)
    assert BIG_TREE.inclusion_proof(index, size) == proof
    leaf = d[index]
    merkle.verify_inclusion(index, size, leaf, proof, root)

    # a flipped bit anywhere in the proof, the leaf or the root
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = _flip(bad[i], bit)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, bad, root)
        with pytest.raises(ProofError):  # truncated
            merkle.verify_inclusion(index, size, leaf, proof[:-1], root)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, _flip(leaf, bit), proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, proof, _flip(root, bit))
    # extended at either end
    extra = data.draw(st.sampled_from([root, leaf, SOME_HASH, b""]))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, [*proof, extra], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, [extra, *proof], root)

    # another index in the same tree
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda j: j != index))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, size, leaf, proof, root)
    # out-of-range indices
    with pytest.raises(ProofError):
        merkle.verify_inclusion(size, size, leaf, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(-1, size, leaf, proof, root)

    # another size: fails against that size's true root unless the path is the same
    other_size = data.draw(st.integers(index + 1, 2 * MAX).filter(lambda n: n != size))
    other_root = PREFIX_ROOTS[other_size]
    same = ref_path(index, PROP_LEAVES[:other_size]) == proof
    if same:
        merkle.verify_inclusion(index, other_size, leaf, proof, other_root)
    else:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, other_size, leaf, proof, other_root)


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, MAX))
    return draw(st.integers(0, new)), new


@PROP
@given(old_and_new(), st.data())
def test_consistency_property(on: tuple[int, int], data: st.DataObject) -> None:
    old, new = on
    d = PROP_LEAVES[:new]
    r1, r2 = PREFIX_ROOTS[old], PREFIX_ROOTS[new]
    tree = Tree(d)
    proof = tree.consistency_proof(old, new)
    assert proof == ref_proof(old, d)
    assert BIG_TREE.consistency_proof(old, new) == proof
    merkle.verify_consistency(old, new, r1, r2, proof)
    if old in (0, new):
        assert proof == []
        if old == new:
            with pytest.raises(ProofError):
                merkle.verify_consistency(old, new, r1, _flip(r2, 0), proof)
        return

    i = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(proof)
    bad[i] = _flip(bad[i], bit)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, r1, r2, bad)
    with pytest.raises(ProofError):  # truncated
        merkle.verify_consistency(old, new, r1, r2, proof[:-1])
    extra = data.draw(st.sampled_from([r1, r2, SOME_HASH, proof[0]]))
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, r1, r2, [*proof, extra])
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, r1, r2, [extra, *proof])
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, _flip(r1, bit), r2, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, r1, _flip(r2, bit), proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, r2, r1, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(new, old, r2, r1, proof)

    # other sizes, each against its own true roots: only an identical proof may verify
    o2 = data.draw(st.integers(1, new))
    n2 = data.draw(st.integers(max(o2, 1), 2 * MAX))
    if (o2, n2) != (old, new):
        rr1, rr2 = PREFIX_ROOTS[o2], PREFIX_ROOTS[n2]
        if ref_proof(o2, PROP_LEAVES[:n2]) == proof:
            merkle.verify_consistency(o2, n2, rr1, rr2, proof)
        else:
            with pytest.raises(ProofError):
                merkle.verify_consistency(o2, n2, rr1, rr2, proof)


@PROP
@given(st.integers(0, MAX))
def test_compact_range_and_prefix_roots_match_reference(size: int) -> None:
    d = PROP_LEAVES[:size]
    cr = CompactRange()
    tree = Tree(d)
    for n in range(size + 1):
        expected = PREFIX_ROOTS[n]
        assert cr.size == n
        assert len(cr.hashes) == bin(n).count("1")
        assert cr.root() == expected
        assert tree.root(n) == expected
        assert BIG_TREE.root(n) == expected
        if n < size:
            cr.append(d[n])
    assert merkle.root_of(d) == PREFIX_ROOTS[size]


@PROP
@given(st.lists(st.integers(0, 40), max_size=8))
def test_subtrees_joined_by_append_subtree_match_reference(chunks: list[int]) -> None:
    cr, pos = CompactRange(), 0
    for n in chunks:
        for level, h in merkle.subtrees(pos, PROP_LEAVES[pos:pos + n]):
            cr.append_subtree(level, h)
        pos += n
        assert cr.size == pos
        assert cr.root() == PREFIX_ROOTS[pos]


@PROP
@given(st.lists(st.integers(0, 40), max_size=8), st.data())
def test_tree_extended_in_chunks_equals_the_reference(chunks: list[int],
                                                      data: st.DataObject) -> None:
    tree, pos = Tree(), 0
    for n in chunks:
        tree.extend(PROP_LEAVES[pos:pos + n])
        pos += n
        assert tree.size == pos
        assert tree.root() == PREFIX_ROOTS[pos]
    if pos:
        index = data.draw(st.integers(0, pos - 1))
        assert tree.inclusion_proof(index, pos) == BIG_TREE.inclusion_proof(index, pos)


@PROP
@given(st.integers(0, MAX), st.integers(0, MAX))
def test_compact_range_copy_is_independent(a: int, b: int) -> None:
    cr = CompactRange()
    cr.extend(PROP_LEAVES[:a])
    snap = cr.copy()
    cr.extend(PROP_LEAVES[a:a + b])
    assert snap.size == a
    assert snap.root() == PREFIX_ROOTS[a]
    assert cr.root() == PREFIX_ROOTS[a + b]
    again = CompactRange(snap.size, snap.hashes)
    again.extend(PROP_LEAVES[a:a + b])
    assert again.root() == cr.root()


def test_compact_range_refuses_wrong_stack() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [SOME_HASH])
    with pytest.raises(ValueError):
        CompactRange(0, [SOME_HASH])


def test_append_subtree_refuses_misaligned_start() -> None:
    cr = CompactRange()
    cr.append(PROP_LEAVES[0])
    with pytest.raises(ValueError):
        cr.append_subtree(1, ref_node(PROP_LEAVES[1], PROP_LEAVES[2]))


@PROP
@given(size_and_index())
def test_prefix_root_from_an_inclusion_proof(si: tuple[int, int]) -> None:
    """The left siblings of leaf i's audit path fold to MTH(D[0:i]) (anchoring.md §1)."""
    size, index = si
    proof = BIG_TREE.inclusion_proof(index, size)
    assert merkle.prefix_root(index, size, proof) == PREFIX_ROOTS[index]
    assert BIG_TREE.compact_range(index).root() == PREFIX_ROOTS[index]
    assert BIG_TREE.compact_range(index).size == index


def test_prefix_root_refuses_proofs_of_the_wrong_length() -> None:
    proof = BIG_TREE.inclusion_proof(5, 12)
    with pytest.raises(ProofError, match="too long"):
        merkle.prefix_root(5, 12, [*proof, proof[0]])
    with pytest.raises(ProofError, match="too short"):
        merkle.prefix_root(5, 12, proof[:-1])
    with pytest.raises(ProofError, match="not in a tree"):
        merkle.prefix_root(12, 12, proof)


# --- a tree started from a compact range (after expired segments are deleted) ---------

@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=70),
       st.integers(min_value=0, max_value=2**32), st.booleans(), st.data())
def test_tree_from_edge_equals_tree_from_all_leaves(first: int, more: int, salt: int,
                                                    one_by_one: bool, data: st.DataObject) -> None:
    entries = [f"{salt}/{i}".encode() for i in range(first + more)]
    leaves = [merkle.leaf_hash(e) for e in entries]
    full = Tree(leaves)
    edge = CompactRange()
    edge.extend(leaves[:first])
    part = Tree(start=edge)
    if one_by_one:
        for leaf in leaves[first:]:
            part.append(leaf)
    else:
        cut = data.draw(st.integers(min_value=first, max_value=first + more))
        part.extend(leaves[first:cut])
        part.extend(leaves[cut:])
    assert (part.first, part.size) == (first, full.size)
    for size in range(first, first + more + 1):
        assert part.root(size) == full.root(size) == ref_mth(leaves[:size])
        assert part.compact_range(size).hashes == full.compact_range(size).hashes
        for index in range(first, size):
            assert part.inclusion_proof(index, size) == full.inclusion_proof(index, size)
    new = data.draw(st.integers(min_value=first, max_value=first + more))
    old = data.draw(st.integers(min_value=first, max_value=new))
    assert part.consistency_proof(old, new) == full.consistency_proof(old, new)


def test_tree_from_edge_refuses_what_lies_before_it() -> None:
    entries = [bytes([i]) for i in range(13)]
    leaves = [merkle.leaf_hash(e) for e in entries]
    edge = CompactRange()
    edge.extend(leaves[:6])
    t = Tree(leaves[6:], start=edge)
    assert t.first == 6 and t.size == 13
    with pytest.raises(merkle.BeforeFirst, match="leaf 5 is before the first leaf"):
        t.inclusion_proof(5, 13)
    with pytest.raises(merkle.BeforeFirst, match="tree size 4 is before"):
        t.root(4)
    with pytest.raises(merkle.BeforeFirst):
        t.consistency_proof(3, 13)
    with pytest.raises(merkle.BeforeFirst):
        t.compact_range(5)
    assert t.consistency_proof(0, 13) == []
    assert t.root(6) == ref_mth(leaves[:6]) and t.root() == ref_mth(leaves)
