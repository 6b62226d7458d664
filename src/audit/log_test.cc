// The audit log on a real SQLite file with its tree heads signed by a key in a real SoftHSM2
// token: appends commit or roll back with the caller's transaction, concurrent appends become one
// tree update, and every entry's inclusion proof and every pair of heads' consistency proof
// verify against signed heads.
#include "audit/log.h"

#include <gtest/gtest.h>

#include <limits>

#include <algorithm>
#include <atomic>
#include <sstream>
#include <thread>

#include "audit/export.h"
#include "crypto/crypto.h"
#include "testing/db.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::audit {
namespace {

using test::Backend;
using test::TestDb;

class LogTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    test_db_ = std::make_unique<TestDb>(GetParam());
    db_ = &test_db_->db();
    ASSERT_TRUE(Log::Migrate(*db_));
    auto& token = *test::Opened().token;
    const std::string label =
        "audit-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto key = token.GenerateKey(label, crypto::GetSuite(crypto::SuiteId::kEd25519),
                                 crypto::OpenSslRng::Instance());
    ASSERT_TRUE(key) << key.error();
    auto signer = token.GetSigner(label);
    ASSERT_TRUE(signer) << signer.error();
    auto pub = token.PublicKey(label);
    ASSERT_TRUE(pub);
    public_key_ = std::move(*pub);
    log_ = std::make_unique<Log>(*db_, std::shared_ptr<custody::Signer>(std::move(*signer)), clock_);
  }

  std::uint64_t AppendOne(const std::string& subject) {
    auto tx = db_->Begin(store::TxMode::kWrite);
    EXPECT_TRUE(tx);
    Entry entry{.actor = "operator:alice",
                .action = "registry.transition",
                .subject = subject,
                .before = "manufactured",
                .after = "provisioned",
                .reason = "",
                .policy_version = "policy-1",
                .evidence_digest = ""};
    auto seq = Log::Append(**tx, entry, clock_);
    EXPECT_TRUE(seq) << seq.error();
    EXPECT_TRUE((*tx)->Commit());
    return seq ? *seq : 0;
  }

  std::unique_ptr<TestDb> test_db_;
  store::Database* db_ = nullptr;
  FakeClock clock_{TimePoint(std::chrono::milliseconds(1798000000123))};
  crypto::EvpPkeyPtr public_key_;
  std::unique_ptr<Log> log_;
};

TEST_P(LogTest, EntriesAreCanonicalJson) {
  Entry entry{.actor = "operator:alice",
              .action = "pki.revoke",
              .subject = "0a1b",
              .before = nullptr,
              .after = {{"status", "revoked"}},
              .reason = "keyCompromise",
              .policy_version = "policy-7",
              .evidence_digest = std::string(64, 'e')};
  auto body = EncodeEntry(42, 1798000000123, entry);
  ASSERT_TRUE(body);
  EXPECT_EQ(*body,
            "{\"action\":\"pki.revoke\",\"actor\":\"operator:alice\",\"after\":{\"status\":\"revoked\"},"
            "\"before\":null,\"evidence_digest\":\"" + std::string(64, 'e') +
            "\",\"policy_version\":\"policy-7\",\"reason\":\"keyCompromise\",\"seq\":42,"
            "\"subject\":\"0a1b\",\"time\":1798000000123}");
  entry.subject = std::string("bad \xff utf-8");
  auto bad = EncodeEntry(1, 0, entry);
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST_P(LogTest, AppendsCommitOrRollBackWithTheCallersTransaction) {
  EXPECT_EQ(AppendOne("GW-1"), 0u);
  {
    auto tx = db_->Begin(store::TxMode::kWrite);
    ASSERT_TRUE(tx);
    const Entry ok{.actor = "system",
                   .action = "x",
                   .subject = "GW-2",
                   .before = {},
                   .after = {},
                   .reason = "",
                   .policy_version = "",
                   .evidence_digest = ""};
    ASSERT_TRUE(Log::Append(**tx, ok, clock_));
    // Destroyed without Commit: the caller's change failed, and the entry goes with it.
  }
  {
    auto tx = db_->Begin(store::TxMode::kWrite);
    Entry bad{.actor = "system",
              .action = "x",
              .subject = std::string("\xc3\x28"),
              .before = {},
              .after = {},
              .reason = "",
              .policy_version = "",
              .evidence_digest = ""};
    auto refused = Log::Append(**tx, bad, clock_);
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  }
  EXPECT_EQ(AppendOne("GW-3"), 1u) << "a rolled-back append leaves no gap";
  auto size = log_->Integrate();
  ASSERT_TRUE(size) << size.error();
  EXPECT_EQ(*size, 2u);
  auto entries = log_->Entries(0, 10);
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_NE((*entries)[1].body.find("\"subject\":\"GW-3\""), std::string::npos);
}

TEST_P(LogTest, SignedHeadsProveInclusionAndConsistency) {
  std::vector<TreeHead> heads;
  for (int batch = 0; batch < 5; ++batch) {
    for (int i = 0; i < 13 + batch * 7; ++i) AppendOne("GW-" + std::to_string(batch) + "-" + std::to_string(i));
    clock_.Advance(std::chrono::seconds(1));
    auto head = log_->SignHead();
    ASSERT_TRUE(head) << head.error();
    EXPECT_TRUE(VerifyHead(*head, public_key_.get()));
    heads.push_back(*head);
  }
  const TreeHead& last = heads.back();
  auto again = log_->SignHead();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->signature, last.signature) << "an unchanged tree keeps its head";
  TreeHead forged = last;
  forged.size += 1;
  EXPECT_FALSE(VerifyHead(forged, public_key_.get()));

  auto entries = log_->Entries(0, last.size);
  ASSERT_TRUE(entries);
  ASSERT_EQ(entries->size(), last.size);
  for (const StoredEntry& e : *entries) {
    auto proof = log_->InclusionProof(e.seq, last.size);
    ASSERT_TRUE(proof) << proof.error();
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(e.body.data());
    EXPECT_TRUE(VerifyInclusion(LeafHash({bytes, e.body.size()}), e.seq, last.size, *proof, last.root))
        << "entry " << e.seq;
  }
  for (std::size_t i = 0; i < heads.size(); ++i) {
    for (std::size_t j = i; j < heads.size(); ++j) {
      auto proof = log_->ConsistencyProof(heads[i].size, heads[j].size);
      ASSERT_TRUE(proof) << proof.error();
      EXPECT_TRUE(VerifyConsistency(heads[i].size, heads[j].size, heads[i].root, heads[j].root, *proof));
    }
  }
  EXPECT_THAT(log_->InclusionProof(0, last.size + 1), test::HasCode(ErrorCode::kInvalidArgument));
}

TEST_P(LogTest, ConcurrentAppendsBecomeOneTreeUpdate) {
  std::vector<std::thread> writers;
  writers.reserve(4);
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([this, t] {
      for (int i = 0; i < 50; ++i) AppendOne("T" + std::to_string(t) + "-" + std::to_string(i));
    });
  }
  for (auto& w : writers) w.join();
  auto size = log_->Integrate();
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, 200u);
  auto root = log_->RootAt(200);
  ASSERT_TRUE(root);
  CompactRange recomputed;
  auto entries = log_->Entries(0, 200);
  ASSERT_TRUE(entries);
  for (const StoredEntry& e : *entries) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(e.body.data());
    recomputed.Append(LeafHash({bytes, e.body.size()}));
  }
  EXPECT_EQ(recomputed.Root(), *root);
}

TEST_P(LogTest, IntegratorsOfSeveralNodesAgree) {
  // Two more logs on the same database stand for other authority nodes integrating while
  // requests append: their integrations serialise on the state row and build one tree.
  Log node_b(*db_, nullptr, clock_);
  Log node_c(*db_, nullptr, clock_);
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  auto integrate = [&](Log& log) {
    while (!done) {
      if (!log.Integrate()) ++failures;
    }
  };
  std::thread b(integrate, std::ref(node_b));
  std::thread c(integrate, std::ref(node_c));
  for (int i = 0; i < 150; ++i) AppendOne("N-" + std::to_string(i));
  done = true;
  b.join();
  c.join();
  EXPECT_EQ(failures.load(), 0);
  auto size = log_->Integrate();
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, 150u);
  CompactRange recomputed;
  auto entries = log_->Entries(0, 150);
  ASSERT_TRUE(entries);
  for (const StoredEntry& e : *entries) {
    recomputed.Append(LeafHash({reinterpret_cast<const std::uint8_t*>(e.body.data()), e.body.size()}));
  }
  auto root = log_->RootAt(150);
  ASSERT_TRUE(root);
  EXPECT_EQ(recomputed.Root(), *root);
}

// A range near 2^64 must not wrap around to small sequence numbers.
TEST_P(LogTest, EntriesNearTheTopOfTheRangeDoNotWrap) {
  EXPECT_EQ(AppendOne("GW-1"), 0u);
  ASSERT_TRUE(log_->Integrate());
  constexpr std::uint64_t kTop = std::numeric_limits<std::uint64_t>::max();
  for (const auto& [start, end] : {std::pair{kTop - 5, kTop}, std::pair{kTop, kTop},
                                   std::pair<std::uint64_t, std::uint64_t>{1ULL << 63, kTop}}) {
    auto entries = log_->Entries(start, end);
    ASSERT_FALSE(entries) << start;
    EXPECT_THAT(entries, test::HasCode(ErrorCode::kInvalidArgument));
  }
  auto last = log_->Entries(std::numeric_limits<std::int64_t>::max() - 1,
                            std::numeric_limits<std::int64_t>::max());
  ASSERT_TRUE(last) << last.error();
  EXPECT_TRUE(last->empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, LogTest, ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::audit

namespace fleetid::audit {
namespace {

class TamperTest : public LogTest {
 protected:
  // A log of 60 entries with heads at 20, 40 and 60, exported and verified.
  void Build() {
    for (int head = 0; head < 3; ++head) {
      for (int i = 0; i < 20; ++i) AppendOne("GW-" + std::to_string(head * 20 + i));
      clock_.Advance(std::chrono::seconds(1));
      auto signed_head = log_->SignHead();
      ASSERT_TRUE(signed_head);
      heads_.push_back(*signed_head);
    }
  }

  VerifyReport Verify(const std::optional<TreeHead>& saved = std::nullopt) {
    std::stringstream file;
    EXPECT_TRUE(WriteExport(*log_, file));
    auto exported = ReadExport(file);
    EXPECT_TRUE(exported) << exported.error();
    return VerifyExport(*exported, public_key_.get(), saved);
  }

  void Sql(const std::string& sql, std::initializer_list<store::Value> params = {}) {
    auto tx = db_->Begin(store::TxMode::kWrite);
    ASSERT_TRUE(tx);
    auto done = (*tx)->Exec(sql, params);
    ASSERT_TRUE(done) << done.error();
    ASSERT_TRUE((*tx)->Commit());
  }

  static bool Says(const VerifyReport& report, const std::string& text) {
    return std::ranges::any_of(report.problems, [&text](const std::string& p) {
      return p.find(text) != std::string::npos;
    });
  }

  std::vector<TreeHead> heads_;
};

std::string Joined(const VerifyReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p + "\n";
  return out;
}

TEST_P(TamperTest, AnUntouchedLogVerifies) {
  Build();
  const VerifyReport report = Verify(heads_.front());
  EXPECT_TRUE(report.ok()) << Joined(report);
  EXPECT_EQ(report.entries, 60u);
  EXPECT_EQ(report.heads_verified, 4u);
}

TEST_P(TamperTest, OneChangedByteNamesTheEntry) {
  Build();
  Sql("UPDATE audit_entries SET body = REPLACE(body, 'GW-17', 'GW-18') WHERE seq = 17");
  VerifyReport report = Verify();
  EXPECT_TRUE(Says(report, "entry 17: its body is not what was appended")) << Joined(report);
  EXPECT_TRUE(Says(report, "head at size 20: its root does not match")) << Joined(report);
  // An attacker who also rewrites the recorded leaf hash is still caught by the signed heads,
  // which bound the position.
  Sql("UPDATE audit_entries SET leaf_hash = ? WHERE seq = 17", {[&] {
        auto entries = log_->Entries(17, 18);
        const std::string& body = entries->front().body;
        const Hash leaf = LeafHash({reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
        return store::Blob(leaf.begin(), leaf.end());
      }()});
  report = Verify();
  EXPECT_FALSE(Says(report, "entry 17")) << Joined(report);
  EXPECT_TRUE(Says(report, "head at size 20: its root does not match the entries: an entry at a "
                           "position from 0 to 19"))
      << Joined(report);
}

TEST_P(TamperTest, ADeletedEntryIsNamed) {
  Build();
  Sql("DELETE FROM audit_entries WHERE seq = 33");
  const VerifyReport report = Verify();
  EXPECT_TRUE(Says(report, "position 33: the entry there is seq 34")) << Joined(report);
  EXPECT_TRUE(Says(report, "head at size 40: its root does not match")) << Joined(report);
}

TEST_P(TamperTest, TwoReorderedEntriesAreNamed) {
  Build();
  Sql("UPDATE audit_entries SET seq = -1 WHERE seq = 5");
  Sql("UPDATE audit_entries SET seq = 5 WHERE seq = 6");
  Sql("UPDATE audit_entries SET seq = 6 WHERE seq = -1");
  const VerifyReport report = Verify();
  EXPECT_TRUE(Says(report, "entry 5: its body names another seq")) << Joined(report);
  EXPECT_TRUE(Says(report, "entry 6: its body names another seq")) << Joined(report);
}

TEST_P(TamperTest, ARollbackIsCaughtByASavedHead) {
  Build();
  const TreeHead saved = heads_.back();  // size 60, kept by an auditor
  Sql("DELETE FROM audit_entries WHERE seq >= 40");
  Sql("DELETE FROM audit_heads WHERE size > 40");
  Sql("UPDATE audit_state SET next_seq = 40, tree_size = 40");
  const VerifyReport report = Verify(saved);
  EXPECT_TRUE(Says(report, "saved head at size 60: the export holds only 40 entries")) << Joined(report);
  // Without the saved head the truncated log is self-consistent: that is what saved heads are for.
  EXPECT_TRUE(Verify().ok());
}

// The tampering edits the SQLite file directly, as an operator with the database file would.
INSTANTIATE_TEST_SUITE_P(Sqlite, TamperTest, ::testing::Values(Backend::kSqlite),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

// fuzz/corpus/audit/float_seq, float_time: a number beyond the integer types was converted to
// one (undefined behaviour) instead of refused.
TEST(ExportReadTest, NumbersThatAreNotIntegersAreRefused) {
  const std::string root(64, '0');
  for (const std::string& line :
       {std::string(R"({"kind":"entry","seq":1e300,"body":"{}"})"),
        std::string(R"({"kind":"entry","seq":1.5,"body":"{}"})"),
        // fuzz/corpus/audit/kind_not_string: threw from the JSON library.
        std::string(R"({"kind":0,"seq":0,"body":"{}"})"),
        R"({"kind":"head","size":1e300,"time_ms":0,"root":")" + root + R"(","signature":""})",
        R"({"kind":"head","size":1,"time_ms":-1e300,"root":")" + root + R"(","signature":""})"}) {
    std::istringstream in(line + "\n");
    const auto exported = ReadExport(in);
    if (exported.has_value()) GTEST_FAIL() << line;
    EXPECT_THAT(exported, test::HasCode(ErrorCode::kInvalidArgument)) << line;
    EXPECT_NE(exported.error().message().find("line 1"), std::string::npos)
        << exported.error().message();
  }
  const auto head =
      ParseHeadJson(R"({"size":2,"time_ms":1e19,"root":")" + root + R"(","signature":""})");
  if (head.has_value()) GTEST_FAIL();
  EXPECT_THAT(head, test::HasCode(ErrorCode::kInvalidArgument));
  std::istringstream good(R"({"kind":"entry","seq":0,"body":"{}"})"
                          "\n"
                          R"({"kind":"head","size":1,"time_ms":5,"root":")" +
                          root + R"(","signature":"00"})");
  const auto exported = ReadExport(good);
  if (!exported.has_value()) GTEST_FAIL() << exported.error();
  EXPECT_EQ(exported->entries.size(), 1U);
  EXPECT_EQ(exported->heads.size(), 1U);
}

}  // namespace
}  // namespace fleetid::audit
