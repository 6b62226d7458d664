// RFC 9162 §2.1 Merkle trees: leaf and node hashing, roots, inclusion and consistency proofs
// computed from stored perfect subtrees in O(log n) reads, their verification, and a compact range
// that appends in O(1) amortised hashing with O(log n) memory.
#ifndef FLEETID_AUDIT_MERKLE_H_
#define FLEETID_AUDIT_MERKLE_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace fleetid::audit {

using Hash = std::array<std::uint8_t, 32>;

Hash LeafHash(std::span<const std::uint8_t> entry);  // SHA-256(0x00 || entry)
Hash NodeHash(const Hash& left, const Hash& right);  // SHA-256(0x01 || left || right)
Hash EmptyRoot();                                     // SHA-256 of nothing
std::string HashHex(const Hash& hash);
[[nodiscard]] Result<Hash> HashFromHex(std::string_view hex);

// A perfect subtree: level L, index i covers leaves [i << L, (i + 1) << L).
struct NodeId {
  int level = 0;
  std::uint64_t index = 0;
  bool operator==(const NodeId&) const = default;
};

// NodeReader reads perfect subtrees of a log that hold at least the leaves asked about.
class NodeReader {
 public:
  virtual ~NodeReader() = default;
  [[nodiscard]] virtual Result<Hash> Node(NodeId id) = 0;
};

// Each reads O(log n) nodes.
[[nodiscard]] Result<Hash> Root(NodeReader& nodes, std::uint64_t size);
// PATH(index, D[size]) of RFC 9162 §2.1.3.1, the leaf's sibling first.
[[nodiscard]] Result<std::vector<Hash>> InclusionProof(NodeReader& nodes, std::uint64_t index,
                                                       std::uint64_t size);
// PROOF(first, D[second]) of §2.1.4.1; empty when first is 0 or equals second.
[[nodiscard]] Result<std::vector<Hash>> ConsistencyProof(NodeReader& nodes, std::uint64_t first,
                                                         std::uint64_t second);

// Verification as RFC 9162 §2.1.3.2 and §2.1.4.2 describe it, for clients that hold only a
// signed tree head.
bool VerifyInclusion(const Hash& leaf, std::uint64_t index, std::uint64_t size,
                     std::span<const Hash> proof, const Hash& root);
bool VerifyConsistency(std::uint64_t first, std::uint64_t second, const Hash& first_root,
                       const Hash& second_root, std::span<const Hash> proof);

// CompactRange is the right edge of a tree of |size| leaves: one perfect subtree per set bit of
// the size, largest first. Appending a leaf completes O(1) subtrees amortised, each reported
// to |on_node| so a log can store it.
class CompactRange {
 public:
  CompactRange() = default;
  // From the perfect subtrees of a tree of |size| leaves (see Decompose).
  CompactRange(std::uint64_t size, std::vector<Hash> subtrees);

  template <typename OnNode>
  void Append(const Hash& leaf, OnNode&& on_node) {
    Hash hash = leaf;
    NodeId id{0, size_};
    on_node(id, hash);
    // A leaf at an odd index completes its parent; so on up while the new subtree is a right child.
    while ((id.index & 1U) == 1U) {
      hash = NodeHash(subtrees_.back(), hash);
      subtrees_.pop_back();
      id = {id.level + 1, id.index >> 1U};
      on_node(id, hash);
    }
    subtrees_.push_back(hash);
    ++size_;
  }
  void Append(const Hash& leaf) {
    Append(leaf, [](NodeId, const Hash&) {});
  }

  std::uint64_t size() const { return size_; }
  Hash Root() const;

  // Decompose lists the perfect subtrees of a tree of |size| leaves, largest first.
  static std::vector<NodeId> Decompose(std::uint64_t size);

 private:
  std::uint64_t size_ = 0;
  std::vector<Hash> subtrees_;  // largest (leftmost) first
};

}  // namespace fleetid::audit

#endif  // FLEETID_AUDIT_MERKLE_H_
