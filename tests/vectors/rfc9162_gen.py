#!/usr/bin/env python3
"""Independent RFC 9162 (Certificate Transparency v2) Merkle tree test vectors.

Usage:  python3 tests/vectors/rfc9162_gen.py > tests/vectors/rfc9162.json

This is a deliberately naive, literal transcription of RFC 9162 section 2.1
(identical to RFC 6962 section 2.1):

  2.1.1    MTH({})       = HASH()
           MTH({d(0)})   = HASH(0x00 || d(0))
           MTH(D[n])     = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])),
                           k = largest power of two smaller than n (k < n <= 2k)
  2.1.3.1  PATH(0, {d(0)}) = {}
           PATH(m, D[n])   = PATH(m, D[0:k]) : MTH(D[k:n])        for m < k
           PATH(m, D[n])   = PATH(m - k, D[k:n]) : MTH(D[0:k])    for m >= k
  2.1.4.1  PROOF(m, D[n])  = SUBPROOF(m, D[n], true)
           SUBPROOF(m, D[m], true)  = {}
           SUBPROOF(m, D[m], false) = {MTH(D[m])}
           SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          m <= k
           SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  m > k

Everything is recomputed from the leaves by plain recursion on list slices: no
caching, no compact ranges, no index arithmetic.  It is slow on purpose; the
point is that it can be checked against the RFC text line by line.

As an extra self-check (not used to produce any output), every emitted proof
is verified with the RFC 9162 verification procedures (2.1.3.2 and 2.1.4.2),
which are a different algorithm (bit arithmetic on the indices) from the one
that generated the proofs.

Python 3 standard library only.  Output is deterministic.
"""

import hashlib
import json
import sys

GENERATOR = "tests/vectors/rfc9162_gen.py (literal recursive RFC 9162 section 2.1, Python stdlib)"
LEAF_RULE = ('entry i (0-based) is the UTF-8 encoding of "fleetid-audit-vector-" followed by '
             'i in decimal without padding, e.g. entry 0 = b"fleetid-audit-vector-0", '
             'entry 1000 = b"fleetid-audit-vector-1000"; the tree of size n has entries 0..n-1')

SMALL_MAX = 70  # every size 1..SMALL_MAX gets every inclusion and consistency proof
LARGE_SIZES = [127, 128, 129, 255, 256, 257, 1000, 1023, 1025]


# ---------------------------------------------------------------------------
# RFC 9162 section 2.1.1: Merkle Tree Hash
# ---------------------------------------------------------------------------

def HASH(data):
    return hashlib.sha256(data).digest()


def largest_power_of_two_smaller_than(n):
    """k such that k < n <= 2k (n > 1)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k = k * 2
    return k


def MTH(D):
    """Merkle Tree Hash of the list of entries D (a list of bytes)."""
    n = len(D)
    if n == 0:
        return HASH(b"")
    if n == 1:
        return HASH(b"\x00" + D[0])
    k = largest_power_of_two_smaller_than(n)
    return HASH(b"\x01" + MTH(D[0:k]) + MTH(D[k:n]))


# ---------------------------------------------------------------------------
# RFC 9162 section 2.1.3.1: inclusion proof PATH(m, D[n]), 0 <= m < n
# ---------------------------------------------------------------------------

def PATH(m, D):
    n = len(D)
    assert 0 <= m < n
    if n == 1:
        return []
    k = largest_power_of_two_smaller_than(n)
    if m < k:
        return PATH(m, D[0:k]) + [MTH(D[k:n])]
    return PATH(m - k, D[k:n]) + [MTH(D[0:k])]


# ---------------------------------------------------------------------------
# RFC 9162 section 2.1.4.1: consistency proof PROOF(m, D[n])
# ---------------------------------------------------------------------------

def PROOF(m, D):
    # The RFC defines PROOF for 0 < m < n.  Applying the same definition to
    # m == n gives SUBPROOF(n, D[n], true) = {} (the empty proof), which is
    # what these vectors record for first == size.
    assert 0 < m <= len(D)
    return SUBPROOF(m, D, True)


def SUBPROOF(m, D, b):
    n = len(D)
    if m == n:
        if b:
            return []
        return [MTH(D)]
    assert m < n
    k = largest_power_of_two_smaller_than(n)
    if m <= k:
        return SUBPROOF(m, D[0:k], b) + [MTH(D[k:n])]
    return SUBPROOF(m - k, D[k:n], False) + [MTH(D[0:k])]


# ---------------------------------------------------------------------------
# RFC 9162 sections 2.1.3.2 and 2.1.4.2: verification (self-check only)
# ---------------------------------------------------------------------------

def node(left, right):
    return HASH(b"\x01" + left + right)


def verify_inclusion(leaf_index, tree_size, leaf_hash, path, root):
    if leaf_index >= tree_size:
        return False
    fn = leaf_index
    sn = tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn = fn // 2
                    sn = sn // 2
        else:
            r = node(r, p)
        fn = fn // 2
        sn = sn // 2
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, path):
    if first == second:
        return path == [] and first_hash == second_hash
    if first == 0 or first > second or not path:
        return False
    path = list(path)
    if first & (first - 1) == 0:  # first is an exact power of two
        path.insert(0, first_hash)
    fn = first - 1
    sn = second - 1
    while fn % 2 == 1:
        fn = fn // 2
        sn = sn // 2
    fr = path[0]
    sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn = fn // 2
                    sn = sn // 2
        else:
            sr = node(sr, c)
        fn = fn // 2
        sn = sn // 2
    return fr == first_hash and sr == second_hash and sn == 0


# ---------------------------------------------------------------------------
# Published Certificate Transparency test vectors (data only).
#
# Leaves and roots for sizes 1..8:
#   google/certificate-transparency  cpp/merkletree/merkle_tree_test.cc
#       kInputs, kSHA256Roots, kSHA256EmptyTreeHash, kSHA256Paths, kSHA256Proofs
#   google/certificate-transparency-go  merkletree/merkle_verifier_test.go
#       getInputs, getRoots, getInclusionTestVector, getConsistencyProofs
#   transparency-dev/merkle  testonly/constants.go
#       LeafInputs, RootHashes, NodeHashes, EmptyRootHash
#   transparency-dev/merkle  proof/verify_test.go
#       leaves, roots, inclusionProofs, consistencyProofs (adds 6 -> 7)
#
# NOTE: in all of those sources the inclusion vectors give the leaf as a
# 1-BASED number ({1, 8, ...} is leaf index 0 of the size-8 tree; the tests
# call the verifier with leaf-1).  Below they are converted to 0-based
# "index" values; the upstream number is kept as "upstream_leaf".
# ---------------------------------------------------------------------------

CT_LEAVES_HEX = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]

CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Root of the tree of the first n leaves, n = 1..8 (index 0 is size 1).
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# transparency-dev/merkle testonly/constants.go NodeHashes(): hashes of every
# complete subtree of the 8-leaf tree; level 0 = leaf hashes.
CT_NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    [
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
]

# (upstream 1-based leaf number, tree size, path) -- kSHA256Paths[1..5] /
# inclusionProofs[1..5]; entry {0, 0, nil} is an invalid-input probe upstream
# and is not a proof, so it is left out.
CT_INCLUSION = [
    (1, 1, []),
    (1, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (6, 8, [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
    (3, 3, [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    ]),
    (2, 5, [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]),
]

# (first size, second size, path) -- kSHA256Proofs / consistencyProofs.
# (6, 7) appears only in transparency-dev/merkle proof/verify_test.go.
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (6, 8, [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
    (2, 5, [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]),
    (6, 7, [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
]

CT_SOURCES = [
    "google/certificate-transparency cpp/merkletree/merkle_tree_test.cc "
    "(kInputs, kSHA256EmptyTreeHash, kSHA256Roots, kSHA256Paths, kSHA256Proofs)",
    "google/certificate-transparency-go merkletree/merkle_verifier_test.go "
    "(getInputs, getRoots, getInclusionTestVector, getConsistencyProofs)",
    "transparency-dev/merkle testonly/constants.go "
    "(LeafInputs, RootHashes, NodeHashes, EmptyRootHash)",
    "transparency-dev/merkle proof/verify_test.go "
    "(leaves, roots, inclusionProofs, consistencyProofs incl. 6->7)",
]


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def hexs(hashes):
    return [h.hex() for h in hashes]


def self_check():
    """Assert the published CT vectors and the RFC's own worked example."""
    # The RFC's hash primitives.
    check(MTH([]).hex() == CT_EMPTY_ROOT, "MTH({}) != SHA-256 of the empty string")

    leaves = [bytes.fromhex(x) for x in CT_LEAVES_HEX]

    # Roots of sizes 1..8.
    for n in range(1, 9):
        got = MTH(leaves[:n]).hex()
        check(got == CT_ROOTS[n - 1], "CT root of size %d: got %s want %s" % (n, got, CT_ROOTS[n - 1]))

    # Every complete subtree hash of the 8-leaf tree.
    for level, row in enumerate(CT_NODE_HASHES):
        width = 2 ** level
        for i, want in enumerate(row):
            got = MTH(leaves[i * width:(i + 1) * width]).hex()
            check(got == want, "CT node hash level %d index %d: got %s want %s" % (level, i, got, want))

    # Inclusion proofs (upstream leaf numbers are 1-based).
    for leaf1, size, want in CT_INCLUSION:
        index = leaf1 - 1
        got = hexs(PATH(index, leaves[:size]))
        check(got == want, "CT inclusion leaf %d (index %d) size %d: got %s want %s"
              % (leaf1, index, size, got, want))
        check(verify_inclusion(index, size, MTH([leaves[index]]), [bytes.fromhex(h) for h in want],
                               bytes.fromhex(CT_ROOTS[size - 1])),
              "CT inclusion leaf %d size %d does not verify" % (leaf1, size))

    # Consistency proofs.
    for first, second, want in CT_CONSISTENCY:
        got = hexs(PROOF(first, leaves[:second]))
        check(got == want, "CT consistency %d -> %d: got %s want %s" % (first, second, got, want))
        check(verify_consistency(first, second, bytes.fromhex(CT_ROOTS[first - 1]),
                                 bytes.fromhex(CT_ROOTS[second - 1]), [bytes.fromhex(h) for h in want]),
              "CT consistency %d -> %d does not verify" % (first, second))

    # The worked example of RFC 9162 section 2.1.5 (RFC 6962 2.1.3), the
    # 7-leaf tree, written with the CT leaves d0..d6.  Node names are the RFC's:
    #   a..f = leaf hashes of d0..d5, g = MTH(d0,d1), h = MTH(d2,d3),
    #   i = MTH(d4,d5), j = leaf hash of d6, k = MTH(d0..d3), l = MTH(d4..d6).
    D = leaves[:7]
    a, b, c, d, e, f = (MTH([x]) for x in D[0:6])
    g, h, i = MTH(D[0:2]), MTH(D[2:4]), MTH(D[4:6])
    j, k, l = MTH(D[6:7]), MTH(D[0:4]), MTH(D[4:7])
    check(PATH(0, D) == [b, h, l], "RFC example: inclusion proof for d0 != [b, h, l]")
    check(PATH(3, D) == [c, g, l], "RFC example: inclusion proof for d3 != [c, g, l]")
    check(PATH(4, D) == [f, j, k], "RFC example: inclusion proof for d4 != [f, j, k]")
    check(PATH(6, D) == [i, k], "RFC example: inclusion proof for d6 != [i, k]")
    check(PROOF(3, D) == [c, d, g, l], "RFC example: PROOF(3, D[7]) != [c, d, g, l]")
    check(PROOF(4, D) == [l], "RFC example: PROOF(4, D[7]) != [l]")
    check(PROOF(6, D) == [i, j, k], "RFC example: PROOF(6, D[7]) != [i, j, k]")
    check(MTH(D) == node(k, l), "RFC example: hash != HASH(0x01 || k || l)")
    check(a == HASH(b"\x00" + D[0]) and e == HASH(b"\x00" + D[4]), "RFC example: leaf hashes")


def ct_vectors_json():
    return {
        "sources": CT_SOURCES,
        "leaves_hex": CT_LEAVES_HEX,
        "roots": [{"size": 0, "root": CT_EMPTY_ROOT}]
                 + [{"size": n, "root": CT_ROOTS[n - 1]} for n in range(1, 9)],
        "inclusion": [{"index": leaf1 - 1, "upstream_leaf": leaf1, "size": size, "path": path}
                      for leaf1, size, path in CT_INCLUSION],
        "consistency": [{"first": first, "second": second, "path": path}
                        for first, second, path in CT_CONSISTENCY],
        "note": "inclusion index is 0-based; the upstream sources number leaves from 1 (upstream_leaf)",
    }


# ---------------------------------------------------------------------------
# fleetid vectors
# ---------------------------------------------------------------------------

def entry(i):
    return ("fleetid-audit-vector-%d" % i).encode("utf-8")


def spread(lo, hi, n):
    """About 20 spread values in [lo, hi]: both ends, powers of two >= 16 and
    their neighbours, and a few fractions of n.  Sorted, no duplicates."""
    cands = {lo, lo + 1, hi - 1, hi, n // 3, n // 2, (2 * n) // 3}
    p = 16
    while p <= n + 1:
        cands.update({p - 1, p, p + 1})
        p = p * 2
    return sorted(x for x in cands if lo <= x <= hi)


def tree_json(n, all_leaves):
    D = all_leaves[:n]
    t = {"size": n, "root": MTH(D).hex(), "inclusion": [], "consistency": []}
    if n == 0:
        return t
    root = MTH(D)
    if n <= SMALL_MAX:
        indices = list(range(0, n))
        firsts = list(range(1, n + 1))
    else:
        indices = spread(0, n - 1, n)
        firsts = spread(1, n, n)
    for m in indices:
        path = PATH(m, D)
        check(verify_inclusion(m, n, MTH([D[m]]), path, root),
              "generated inclusion proof %d in %d does not verify" % (m, n))
        t["inclusion"].append({"index": m, "path": hexs(path)})
    for m in firsts:
        path = PROOF(m, D)
        check(verify_consistency(m, n, MTH(D[0:m]), root, path),
              "generated consistency proof %d -> %d does not verify" % (m, n))
        t["consistency"].append({"first": m, "path": hexs(path)})
    return t


def main():
    try:
        self_check()
    except CheckFailed as e:
        sys.stderr.write("rfc9162_gen.py: self-check FAILED: %s\n" % e)
        return 1

    sizes = list(range(0, SMALL_MAX + 1)) + LARGE_SIZES
    all_leaves = [entry(i) for i in range(max(sizes))]
    try:
        trees = [tree_json(n, all_leaves) for n in sizes]
    except CheckFailed as e:
        sys.stderr.write("rfc9162_gen.py: FAILED: %s\n" % e)
        return 1

    out = {
        "generator": GENERATOR,
        "spec": "RFC 9162 section 2.1 (same Merkle tree definitions as RFC 6962 section 2.1); HASH = SHA-256",
        "leaf_rule": LEAF_RULE,
        "conventions": [
            "all hashes are lowercase hex of 32 bytes",
            "root = MTH(D[size]); size 0 has the empty-tree root SHA-256(\"\") and no proofs",
            "inclusion[].path = PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf to root; index is 0-based",
            "consistency[].path = PROOF(first, D[size]) = SUBPROOF(first, D[size], true) (RFC 9162 2.1.4.1); "
            "first runs 1..size, and first == size gives the empty path",
            "sizes 1..%d carry every index and every first; larger sizes carry about 20 spread "
            "values (ends, powers of two >= 16 and neighbours, n/3, n/2, 2n/3)" % SMALL_MAX,
        ],
        "leaf_hash_examples": [
            {"index": i, "entry": entry(i).decode("utf-8"), "leaf_hash": MTH([entry(i)]).hex()}
            for i in (0, 1, 2, 1024)
        ],
        "trees": trees,
        "ct_vectors": ct_vectors_json(),
    }
    sys.stdout.write(json.dumps(out, indent=1, sort_keys=True, ensure_ascii=True))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
