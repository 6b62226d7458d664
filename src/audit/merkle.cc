#include "audit/merkle.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <bit>
#include <cstdlib>

#include "crypto/crypto.h"
#include "crypto/handles.h"

namespace fleetid::audit {
namespace {

// The largest power of two smaller than |n| (n > 1): RFC 9162's split point k.
std::uint64_t Split(std::uint64_t n) { return std::bit_floor(n - 1); }

// HashRange returns MTH(D[begin:end]). The ranges the RFC's recursions ask for are a perfect,
// aligned subtree (one read) or a right edge that splits into such subtrees.
Result<Hash> HashRange(NodeReader& nodes, std::uint64_t begin, std::uint64_t end) {
  const std::uint64_t n = end - begin;
  if (std::has_single_bit(n) && begin % n == 0) {
    return nodes.Node({std::countr_zero(n), begin >> std::countr_zero(n)});
  }
  const std::uint64_t k = Split(n);
  FLEETID_TRY(left, HashRange(nodes, begin, begin + k));
  FLEETID_TRY(right, HashRange(nodes, begin + k, end));
  return NodeHash(left, right);
}

// PATH(m, D[begin:end]), RFC 9162 §2.1.3.1.
Result<void> Path(NodeReader& nodes, std::uint64_t m, std::uint64_t begin, std::uint64_t end,
                  std::vector<Hash>& out) {
  const std::uint64_t n = end - begin;
  if (n == 1) return {};
  const std::uint64_t k = Split(n);
  if (m < k) {
    FLEETID_CHECK_OK(Path(nodes, m, begin, begin + k, out));
    FLEETID_TRY(right, HashRange(nodes, begin + k, end));
    out.push_back(right);
  } else {
    FLEETID_CHECK_OK(Path(nodes, m - k, begin + k, end, out));
    FLEETID_TRY(left, HashRange(nodes, begin, begin + k));
    out.push_back(left);
  }
  return {};
}

// SUBPROOF(m, D[begin:end], whole), RFC 9162 §2.1.4.1.
Result<void> Subproof(NodeReader& nodes, std::uint64_t m, std::uint64_t begin, std::uint64_t end,
                      bool whole, std::vector<Hash>& out) {
  const std::uint64_t n = end - begin;
  if (m == n) {
    if (!whole) {
      FLEETID_TRY(hash, HashRange(nodes, begin, end));
      out.push_back(hash);
    }
    return {};
  }
  const std::uint64_t k = Split(n);
  if (m <= k) {
    FLEETID_CHECK_OK(Subproof(nodes, m, begin, begin + k, whole, out));
    FLEETID_TRY(right, HashRange(nodes, begin + k, end));
    out.push_back(right);
  } else {
    FLEETID_CHECK_OK(Subproof(nodes, m - k, begin + k, end, false, out));
    FLEETID_TRY(left, HashRange(nodes, begin, begin + k));
    out.push_back(left);
  }
  return {};
}

bool Lsb(std::uint64_t x) { return (x & 1U) != 0; }

}  // namespace

Hash LeafHash(std::span<const std::uint8_t> entry) {
  // The digest is fetched once and a context kept per thread: hashing is the whole cost of
  // verifying an exported log.
  static const crypto::EvpMdPtr sha256(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  thread_local const crypto::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const std::uint8_t prefix = 0x00;
  Hash out;
  if (!sha256 || !ctx || EVP_DigestInit_ex(ctx.get(), sha256.get(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), &prefix, 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), entry.data(), entry.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), nullptr) != 1) {
    std::abort();  // SHA-256 is always there; failing here is memory exhaustion
  }
  return out;
}

Hash NodeHash(const Hash& left, const Hash& right) {
  std::uint8_t buf[1 + 2 * sizeof(Hash)];
  buf[0] = 0x01;
  std::copy(left.begin(), left.end(), buf + 1);
  std::copy(right.begin(), right.end(), buf + 1 + left.size());
  Hash out;
  SHA256(buf, sizeof(buf), out.data());
  return out;
}

Hash EmptyRoot() {
  Hash out;
  SHA256(nullptr, 0, out.data());
  return out;
}

std::string HashHex(const Hash& hash) { return crypto::Hex(hash); }

Result<Hash> HashFromHex(std::string_view hex) {
  Hash out;
  if (!crypto::Unhex(hex, out)) {
    return MakeError(ErrorCode::kInvalidArgument, "a hash is 64 hex digits");
  }
  return out;
}

Result<Hash> Root(NodeReader& nodes, std::uint64_t size) {
  if (size == 0) return EmptyRoot();
  return HashRange(nodes, 0, size);
}

Result<std::vector<Hash>> InclusionProof(NodeReader& nodes, std::uint64_t index,
                                         std::uint64_t size) {
  if (index >= size) {
    return MakeError(ErrorCode::kInvalidArgument, "entry {} is not in a tree of {}", index, size);
  }
  std::vector<Hash> out;
  FLEETID_CHECK_OK(Path(nodes, index, 0, size, out));
  return out;
}

Result<std::vector<Hash>> ConsistencyProof(NodeReader& nodes, std::uint64_t first,
                                           std::uint64_t second) {
  if (first > second) {
    return MakeError(ErrorCode::kInvalidArgument, "a tree of {} cannot extend one of {}", second,
                     first);
  }
  std::vector<Hash> out;
  if (first == 0 || first == second) return out;
  FLEETID_CHECK_OK(Subproof(nodes, first, 0, second, true, out));
  return out;
}

bool VerifyInclusion(const Hash& leaf, std::uint64_t index, std::uint64_t size,
                     std::span<const Hash> proof, const Hash& root) {
  if (index >= size) return false;
  std::uint64_t fn = index;
  std::uint64_t sn = size - 1;
  Hash r = leaf;
  for (const Hash& p : proof) {
    if (sn == 0) return false;
    if (Lsb(fn) || fn == sn) {
      r = NodeHash(p, r);
      if (!Lsb(fn)) {
        while (!Lsb(fn) && fn != 0) {
          fn >>= 1U;
          sn >>= 1U;
        }
      }
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1U;
    sn >>= 1U;
  }
  return sn == 0 && r == root;
}

bool VerifyConsistency(std::uint64_t first, std::uint64_t second, const Hash& first_root,
                       const Hash& second_root, std::span<const Hash> proof) {
  if (first > second) return false;
  if (first == second) return proof.empty() && first_root == second_root;
  if (first == 0) return proof.empty() && first_root == EmptyRoot();
  std::vector<Hash> path(proof.begin(), proof.end());
  // A first tree that is a perfect subtree is its own first node; the proof leaves it out.
  if (std::has_single_bit(first)) path.insert(path.begin(), first_root);
  if (path.empty()) return false;
  std::uint64_t fn = first - 1;
  std::uint64_t sn = second - 1;
  while (Lsb(fn)) {
    fn >>= 1U;
    sn >>= 1U;
  }
  Hash fr = path.front();
  Hash sr = path.front();
  for (std::size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return false;
    if (Lsb(fn) || fn == sn) {
      fr = NodeHash(c, fr);
      sr = NodeHash(c, sr);
      if (!Lsb(fn)) {
        while (!Lsb(fn) && fn != 0) {
          fn >>= 1U;
          sn >>= 1U;
        }
      }
    } else {
      sr = NodeHash(sr, c);
    }
    fn >>= 1U;
    sn >>= 1U;
  }
  return sn == 0 && fr == first_root && sr == second_root;
}

CompactRange::CompactRange(std::uint64_t size, std::vector<Hash> subtrees)
    : size_(size), subtrees_(std::move(subtrees)) {}

Hash CompactRange::Root() const {
  if (subtrees_.empty()) return EmptyRoot();
  Hash root = subtrees_.back();
  for (auto it = subtrees_.rbegin() + 1; it != subtrees_.rend(); ++it) root = NodeHash(*it, root);
  return root;
}

std::vector<NodeId> CompactRange::Decompose(std::uint64_t size) {
  std::vector<NodeId> out;
  std::uint64_t covered = 0;
  for (int level = 63; level >= 0; --level) {
    const std::uint64_t bit = std::uint64_t{1} << static_cast<unsigned>(level);
    if ((size & bit) != 0) {
      out.push_back({level, covered >> static_cast<unsigned>(level)});
      covered += bit;
    }
  }
  return out;
}

}  // namespace fleetid::audit
