// The audit log's read API dispatched through the Router, against a real log whose heads are
// signed with the audit key in a SoftHSM2 token.
#include <gmock/gmock.h>

#include <nlohmann/json.hpp>

#include "api/routes_test_util.h"
#include "audit/export.h"

namespace fleetid::api::testing {
namespace {

using Json = nlohmann::json;
using server::HttpResponse;

class AuditRoutesTest : public RoutesTest {
 protected:
  // Size signs a head and returns the tree's size.
  std::uint64_t Size() {
    auto head = audit_log_->SignHead();
    if (!head) ADD_FAILURE() << head.error();
    return head ? head->size : 0;
  }
};

TEST_F(AuditRoutesTest, KeyIsThePem) {
  const HttpResponse r = Call(Req("GET", "/audit/v1/key"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/x-pem-file");
  EXPECT_EQ(r.body, audit_pem_);
  EXPECT_TRUE(r.body.starts_with("-----BEGIN PUBLIC KEY-----"));
}

TEST_F(AuditRoutesTest, SthIsTheLatestSignedHead) {
  const HttpResponse before = Call(Req("GET", "/audit/v1/sth"));
  auto none = audit_log_->LatestHead();
  ASSERT_FALSE(none);
  EXPECT_EQ(before.status, 404);
  EXPECT_EQ(before.body, HttpResponse::FromError(none.error()).body);

  ASSERT_GT(Size(), 0u);
  auto head = audit_log_->LatestHead();
  if (!head.has_value()) GTEST_FAIL() << head.error();
  const HttpResponse r = Call(Req("GET", "/audit/v1/sth"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, Json::parse(audit::HeadJson(*head)).dump());
}

TEST_F(AuditRoutesTest, EntriesByRange) {
  ASSERT_GE(Size(), 2u);
  const HttpResponse r = Call(Req("GET", "/audit/v1/entries?start=0&end=2").Chain(AdminChain()));
  auto entries = audit_log_->Entries(0, 2);
  if (!entries.has_value()) GTEST_FAIL() << entries.error();
  Json list = Json::array();
  for (const audit::StoredEntry& e : *entries) {
    list.push_back({{"seq", e.seq}, {"leaf_hash", audit::HashHex(e.leaf_hash)}, {"body", e.body}});
  }
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, (Json{{"entries", list}}.dump()));
  EXPECT_FALSE(list.empty());
}

TEST_F(AuditRoutesTest, InclusionAndConsistencyProofs) {
  const std::uint64_t size = Size();
  ASSERT_GE(size, 2u);
  const HttpResponse inclusion =
      Call(Req("GET", fmt::format("/audit/v1/proof/inclusion?seq=1&size={}", size)));
  auto path = audit_log_->InclusionProof(1, size);
  if (!path.has_value()) GTEST_FAIL() << path.error();
  Json hashes = Json::array();
  for (const audit::Hash& h : *path) hashes.push_back(audit::HashHex(h));
  EXPECT_EQ(inclusion.status, 200);
  EXPECT_EQ(inclusion.body, (Json{{"seq", 1}, {"size", size}, {"path", hashes}}.dump()));

  const HttpResponse consistency =
      Call(Req("GET", fmt::format("/audit/v1/proof/consistency?second={}&first=1", size)));
  auto proof = audit_log_->ConsistencyProof(1, size);
  if (!proof.has_value()) GTEST_FAIL() << proof.error();
  Json steps = Json::array();
  for (const audit::Hash& h : *proof) steps.push_back(audit::HashHex(h));
  EXPECT_EQ(consistency.status, 200);
  EXPECT_EQ(consistency.body, (Json{{"first", 1}, {"second", size}, {"path", steps}}.dump()));
}

TEST_F(AuditRoutesTest, QueriesMustBeExactlyTheNamedUnsignedIntegers) {
  const struct {
    const char* target;
    const char* message;
  } cases[] = {
      {"/audit/v1/entries", "query parameter 'start' is required"},
      {"/audit/v1/entries?start=0", "query parameter 'end' is required"},
      {"/audit/v1/entries?start=0&end=1&x=2", "unknown query parameter"},
      {"/audit/v1/entries?start=0&start=1&end=2",
       "query parameter 'start' must be one unsigned integer"},
      {"/audit/v1/entries?start=-1&end=2", "query parameter 'start' must be one unsigned integer"},
      {"/audit/v1/entries?start&end=2", "query parameter 'start' must be one unsigned integer"},
      {"/audit/v1/proof/inclusion?seq=1", "query parameter 'size' is required"},
      {"/audit/v1/proof/consistency?first=1&second=2x",
       "query parameter 'second' must be one unsigned integer"},
  };
  for (const auto& c : cases) {
    const HttpResponse r = Call(Req("GET", c.target).Chain(AdminChain()));
    EXPECT_EQ(r.status, 400) << c.target;
    EXPECT_EQ(r.body, (Json{{"error", "invalid_argument"}, {"message", c.message}}.dump()))
        << c.target;
  }
}

TEST_F(AuditRoutesTest, EntriesAreForOperatorsAllowedAuditReadWhileHeadsAndProofsArePublic) {
  const std::uint64_t size = Size();
  ASSERT_GE(size, 2u);
  const std::string entries = "/audit/v1/entries?start=0&end=2";
  const HttpResponse plain = Call(Req("GET", entries));
  EXPECT_EQ(plain.status, 400);
  EXPECT_THAT(plain.body, ::testing::HasSubstr("over HTTPS to operators allowed audit.read"));
  EXPECT_EQ(Call(Req("GET", entries).Tls()).status, 401);
  const Device device = MakeDevice("GW-AUDIT-1");
  EXPECT_EQ(Call(Req("GET", entries).Chain(device.idevid_chain)).status, 401)
      << "a device is never an operator";
  // An auditor scoped to one region reads the entries about devices there; every other entry
  // is served withheld (its seq and leaf hash, no body).
  policy::Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  const enroll::ClientChain scoped = OperatorChain("audrey", {{.role = "auditor", .scope = eu}});
  const enroll::ClientChain auditor = OperatorChain("aubrey", {{.role = "auditor", .scope = {}}});
  EXPECT_EQ(Call(Req("GET", entries).Chain(auditor)).status, 200);
  EXPECT_EQ(Call(Req("GET", entries).Chain(AdminChain())).status, 200);
  MakeDevice("GW-AUDIT-EU", "acme", "eu");
  MakeDevice("GW-AUDIT-US", "acme", "us");
  const std::uint64_t grown = Size();
  const HttpResponse read =
      Call(Req("GET", fmt::format("/audit/v1/entries?start=0&end={}", grown)).Chain(scoped));
  ASSERT_EQ(read.status, 200) << read.body;
  const Json served = Json::parse(read.body)["entries"];
  auto stored = audit_log_->Entries(0, grown);
  ASSERT_TRUE(stored) << stored.error();
  ASSERT_EQ(served.size(), stored->size());
  int shown = 0;
  int withheld = 0;
  for (std::size_t i = 0; i < served.size(); ++i) {
    const audit::StoredEntry& e = (*stored)[i];
    const std::string subject = Json::parse(e.body)["subject"].get<std::string>();
    EXPECT_EQ(served[i]["seq"], e.seq);
    EXPECT_EQ(served[i]["leaf_hash"], audit::HashHex(e.leaf_hash));
    if (subject == "GW-AUDIT-EU") {
      EXPECT_EQ(served[i].value("body", ""), e.body) << subject;
      ++shown;
    } else if (subject == "GW-AUDIT-US" || subject == "audrey" || subject == "aubrey") {
      EXPECT_FALSE(served[i].contains("body")) << subject;
      EXPECT_EQ(served[i].value("withheld", false), true) << subject;
      ++withheld;
    }
  }
  EXPECT_GT(shown, 0);
  EXPECT_GT(withheld, 2);
  // An operator whose roles permit audit.read nowhere is refused, and the refusal is an entry.
  const enroll::ClientChain none = OperatorChain("audra", {});
  const HttpResponse refused = Call(Req("GET", entries).Chain(none));
  EXPECT_EQ(refused.status, 403);
  EXPECT_THAT(refused.body, ::testing::HasSubstr("audit.read"));
  const std::uint64_t after = Size();
  auto last = audit_log_->Entries(grown, after);
  ASSERT_TRUE(last) << last.error();
  bool denied = false;
  for (const audit::StoredEntry& e : *last) {
    const Json body = Json::parse(e.body);
    denied = denied || (body["action"] == "access.denied" &&
                        body["actor"].get<std::string>().find("audra") != std::string::npos);
  }
  EXPECT_TRUE(denied);
  EXPECT_EQ(Call(Req("GET", "/audit/v1/sth")).status, 200);
  EXPECT_EQ(Call(Req("GET", fmt::format("/audit/v1/proof/inclusion?seq=0&size={}", after))).status,
            200);
}

TEST_F(AuditRoutesTest, RangesBeyondTheTreeAreTheLogsErrors) {
  const std::uint64_t size = Size();
  const HttpResponse r =
      Call(Req("GET", fmt::format("/audit/v1/proof/inclusion?seq={}&size={}", size + 5, size)));
  auto expected = audit_log_->InclusionProof(size + 5, size);
  ASSERT_FALSE(expected);
  EXPECT_EQ(r.status, HttpStatus(expected.error().code()));
  EXPECT_GE(r.status, 400);
  EXPECT_EQ(r.body, HttpResponse::FromError(expected.error()).body);
}

TEST_F(AuditRoutesTest, WrongMethodsAre405) {
  const HttpResponse r = Call(Req("POST", "/audit/v1/sth").Body("{}"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(HeaderOf(r, "Allow"), "GET, HEAD");
  const HttpResponse head = Call(Req("HEAD", "/audit/v1/key"));
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, audit_pem_);  // the server sends no body for HEAD; its length is this one's
}

}  // namespace
}  // namespace fleetid::api::testing
