// The Merkle tree against RFC 9162 test vectors produced by an independent implementation
// (tests/vectors/rfc9162_gen.py, which also checks the Certificate Transparency projects' published
// vectors): roots, inclusion and consistency proofs over sizes 0..70 and larger odd sizes, each
// proof generated from stored subtrees and verified by the RFC's client algorithms.
#include "audit/merkle.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

namespace fleetid::audit {
namespace {

using Json = nlohmann::json;

// MemoryNodes keeps every node a CompactRange reports, as a log's node table would.
class MemoryNodes : public NodeReader {
 public:
  void Append(std::span<const std::uint8_t> entry) {
    range_.Append(LeafHash(entry), [this](NodeId id, const Hash& hash) {
      nodes_[{id.level, id.index}] = hash;
    });
  }
  Result<Hash> Node(NodeId id) override {
    ++reads_;
    auto it = nodes_.find({id.level, id.index});
    if (it == nodes_.end()) return MakeError(ErrorCode::kNotFound, "no node {}/{}", id.level, id.index);
    return it->second;
  }
  const CompactRange& range() const { return range_; }
  int reads_ = 0;

 private:
  CompactRange range_;
  std::map<std::pair<int, std::uint64_t>, Hash> nodes_;
};

std::vector<std::uint8_t> VectorEntry(std::uint64_t i) {
  const std::string text = "fleetid-audit-vector-" + std::to_string(i);
  return {text.begin(), text.end()};
}

Hash H(const Json& hex) {
  auto hash = HashFromHex(hex.get<std::string>());
  EXPECT_TRUE(hash);
  return hash ? *hash : Hash{};
}

std::vector<Hash> Path(const Json& list) {
  std::vector<Hash> out;
  for (const Json& h : list) out.push_back(H(h));
  return out;
}

const Json& Vectors() {
  static const Json doc = [] {
    std::ifstream in(std::string(FLEETID_SOURCE_DIR) + "/tests/vectors/rfc9162.json");
    return Json::parse(in);
  }();
  return doc;
}

TEST(MerkleTest, RootsAndProofsMatchTheVectors) {
  const Json& trees = Vectors().at("trees");
  ASSERT_GT(trees.size(), 70u);
  MemoryNodes log;
  std::map<std::uint64_t, Hash> roots;
  int proofs = 0;
  for (const Json& tree : trees) {
    const std::uint64_t size = tree.at("size").get<std::uint64_t>();
    while (log.range().size() < size) log.Append(VectorEntry(log.range().size()));
    const Hash root = H(tree.at("root"));
    roots[size] = root;
    EXPECT_EQ(log.range().Root(), root) << "compact range, size " << size;
    auto stored = Root(log, size);
    ASSERT_TRUE(stored) << stored.error();
    EXPECT_EQ(*stored, root) << "stored nodes, size " << size;
    for (const Json& inc : tree.value("inclusion", Json::array())) {
      const std::uint64_t index = inc.at("index").get<std::uint64_t>();
      const std::vector<Hash> want = Path(inc.at("path"));
      auto got = InclusionProof(log, index, size);
      ASSERT_TRUE(got) << got.error();
      EXPECT_EQ(*got, want) << "inclusion " << index << " in " << size;
      EXPECT_TRUE(VerifyInclusion(LeafHash(VectorEntry(index)), index, size, want, root))
          << "verify inclusion " << index << " in " << size;
      ++proofs;
    }
    for (const Json& con : tree.value("consistency", Json::array())) {
      const std::uint64_t first = con.at("first").get<std::uint64_t>();
      const std::vector<Hash> want = Path(con.at("path"));
      auto got = ConsistencyProof(log, first, size);
      ASSERT_TRUE(got) << got.error();
      EXPECT_EQ(*got, want) << "consistency " << first << " to " << size;
      auto first_root = Root(log, first);
      ASSERT_TRUE(first_root);
      if (roots.contains(first)) {
        EXPECT_EQ(*first_root, roots.at(first)) << "root of " << first;
      }
      EXPECT_TRUE(VerifyConsistency(first, size, *first_root, root, want))
          << "verify consistency " << first << " to " << size;
      ++proofs;
    }
  }
  EXPECT_GT(proofs, 5000);
}

TEST(MerkleTest, PublishedCertificateTransparencyVectors) {
  const Json& ct = Vectors().at("ct_vectors");
  std::vector<std::vector<std::uint8_t>> leaves;
  for (const Json& hex : ct.at("leaves_hex")) {
    std::vector<std::uint8_t> bytes;
    const std::string s = hex.get<std::string>();
    for (std::size_t i = 0; i + 1 < s.size(); i += 2) {
      bytes.push_back(static_cast<std::uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
    }
    leaves.push_back(bytes);
  }
  for (const Json& r : ct.at("roots")) {
    const std::uint64_t size = r.at("size").get<std::uint64_t>();
    CompactRange range;
    for (std::uint64_t i = 0; i < size; ++i) range.Append(LeafHash(leaves[i]));
    EXPECT_EQ(range.Root(), H(r.at("root"))) << "CT root of " << size;
  }
}

TEST(MerkleTest, ProofsCostLogarithmicReads) {
  MemoryNodes log;
  for (std::uint64_t i = 0; i < 100000; ++i) log.Append(VectorEntry(i));
  log.reads_ = 0;
  ASSERT_TRUE(InclusionProof(log, 54321, 99999));
  EXPECT_LE(log.reads_, 2 * 17 * 2);
  log.reads_ = 0;
  ASSERT_TRUE(ConsistencyProof(log, 12345, 99999));
  EXPECT_LE(log.reads_, 2 * 17 * 2);
}

TEST(MerkleTest, TamperedProofsFail) {
  MemoryNodes log;
  for (std::uint64_t i = 0; i < 37; ++i) log.Append(VectorEntry(i));
  const Hash root = log.range().Root();
  auto proof = InclusionProof(log, 11, 37);
  ASSERT_TRUE(proof);
  const Hash leaf = LeafHash(VectorEntry(11));
  EXPECT_TRUE(VerifyInclusion(leaf, 11, 37, *proof, root));
  EXPECT_FALSE(VerifyInclusion(leaf, 12, 37, *proof, root)) << "wrong index";
  // (A size with the same path shape, such as 38, verifies against the same root: the root binds
  // the size, as RFC 9162 intends. One with another shape does not.)
  EXPECT_FALSE(VerifyInclusion(leaf, 11, 70, *proof, root)) << "wrong size";
  EXPECT_FALSE(VerifyInclusion(LeafHash(VectorEntry(12)), 11, 37, *proof, root)) << "wrong leaf";
  auto bad = *proof;
  bad[1][0] ^= 1;
  EXPECT_FALSE(VerifyInclusion(leaf, 11, 37, bad, root)) << "changed hash";
  bad = *proof;
  bad.pop_back();
  EXPECT_FALSE(VerifyInclusion(leaf, 11, 37, bad, root)) << "short proof";
  auto old_root = Root(log, 20);
  auto consistency = ConsistencyProof(log, 20, 37);
  ASSERT_TRUE(old_root && consistency);
  EXPECT_TRUE(VerifyConsistency(20, 37, *old_root, root, *consistency));
  EXPECT_FALSE(VerifyConsistency(21, 37, *old_root, root, *consistency));
  Hash other = *old_root;
  other[5] ^= 1;
  EXPECT_FALSE(VerifyConsistency(20, 37, other, root, *consistency)) << "a rewritten past";
  EXPECT_FALSE(VerifyConsistency(37, 20, root, *old_root, *consistency)) << "a shrunk log";
  EXPECT_FALSE(InclusionProof(log, 37, 37)) << "index past the end";
  EXPECT_FALSE(ConsistencyProof(log, 38, 37));
}

}  // namespace
}  // namespace fleetid::audit
