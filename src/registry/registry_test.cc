// The registry suite, run against SQLite and a throwaway PostgreSQL 15.
#include "registry/registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "audit/log.h"
#include "testing/db.h"
#include "testing/matchers.h"

namespace fleetid::registry {
namespace {

using namespace std::chrono_literals;
using test::Backend;
using test::TestDb;

const TimePoint kStart = std::chrono::sys_days{std::chrono::year{2030} / 3 / 1};
// The active policy version's hash as the node would give it (policy::Versions::CurrentHash).
constexpr std::string_view kPolicyVersion =
    "52c67c6656dc0e6707ae4b2ab60ed4e126ad0b50f60256862f98cf57306a0b65";

class RecordingEffects : public CredentialEffects {
 public:
  Result<void> Apply(store::Transaction&, const Device& device, CredentialAction action,
                     const TransitionRequest&) override {
    if (fail) return MakeError(ErrorCode::kUnavailable, "PKI down");
    std::lock_guard lock(mu);
    applied.emplace_back(device.serial, action);
    return {};
  }
  std::mutex mu;
  std::vector<std::pair<std::string, CredentialAction>> applied;
  bool fail = false;
};

std::string Fingerprint(int n) { return fmt::format("{:064x}", n + 1); }

ManufacturingRecord Record(int n) {
  ManufacturingRecord r;
  r.serial = fmt::format("SN-{:06d}", n);
  r.model = n % 2 == 0 ? "gw-100" : "sensor-7";
  r.manufacturer = "acme";
  r.idevid_fingerprint = Fingerprint(n);
  r.firmware_version = "1.0.0";
  r.firmware_digest = std::string(64, 'a');
  r.station = "line-3";
  r.manufactured_at = kStart - 24h;
  r.labels = {{"color", n % 3 == 0 ? "red" : "blue"}};
  return r;
}

const Actor kAdmin{kOperator, "alice", {"admin"}};
const Actor kScheduler_{kScheduler, "scheduler", {}};
Actor DeviceActor(const std::string& serial) { return Actor{kDevice, serial, {}}; }

class RegistryTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<TestDb>(GetParam());
    ASSERT_TRUE(Registry::Migrate(db_->db()));
    RegistryOptions options;
    options.policy_version = [] { return std::string(kPolicyVersion); };
    registry_ = std::make_unique<Registry>(db_->db(), clock_, &effects_, options);
  }

  void ImportN(int n, const std::string& batch = "batch-1") {
    std::vector<ManufacturingRecord> records;
    records.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) records.push_back(Record(i));
    auto report = registry_->Import(batch, records, kAdmin);
    ASSERT_TRUE(report) << report.error();
  }

  TransitionRequest Request(const std::string& serial, Event event, const Actor& actor) {
    auto d = registry_->Get(serial);
    EXPECT_TRUE(d) << d.error();
    TransitionRequest r;
    r.serial = serial;
    r.event = event;
    r.expected_version = d ? d->version : 0;
    r.actor = actor;
    r.reason = "test";
    r.evidence_digest = std::string(64, 'e');
    r.tenant = "tenant-a";
    r.region = "eu-west";
    r.firmware_version = "1.1.0";
    r.firmware_digest = std::string(64, 'b');
    return r;
  }

  Result<Device> Apply(const std::string& serial, Event event) {
    const Actor actor = event == Event::kActivate || event == Event::kReattest ||
                                event == Event::kRotate || event == Event::kErased
                            ? DeviceActor(serial)
                        : event == Event::kFinalizeDecommission ? kScheduler_
                                                                : kAdmin;
    return registry_->Transition(Request(serial, event, actor));
  }

  // Reach brings |serial| (freshly imported) to |state| through allowed transitions.
  void Reach(const std::string& serial, State state) {
    auto step = [&](Event e) { ASSERT_TRUE(Apply(serial, e)) << EventName(e); };
    switch (state) {
      case State::kManufactured:
        return;
      case State::kProvisioned:
        return step(Event::kProvision);
      case State::kActive:
        step(Event::kProvision);
        return step(Event::kActivate);
      case State::kSuspended:
        Reach(serial, State::kActive);
        return step(Event::kSuspend);
      case State::kQuarantined:
        Reach(serial, State::kActive);
        return step(Event::kQuarantine);
      case State::kDecommissioning:
        return step(Event::kDecommission);
      case State::kDecommissioned:
        step(Event::kDecommission);
        clock_.Advance(RegistryOptions{}.decommission_grace + 1s);
        return step(Event::kFinalizeDecommission);
    }
  }

  std::unique_ptr<TestDb> db_;
  FakeClock clock_{kStart};
  RecordingEffects effects_;
  std::unique_ptr<Registry> registry_;
};

TEST_P(RegistryTest, ImportIsIdempotentAndWhole) {
  ImportN(50);
  auto d = registry_->Get("SN-000007");
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->state, State::kManufactured);
  EXPECT_EQ(d->model, "sensor-7");
  EXPECT_EQ(d->labels.at("color"), "blue");
  EXPECT_EQ(d->batch, "batch-1");
  EXPECT_EQ(d->version, 1);

  std::vector<ManufacturingRecord> again;
  again.reserve(60);
  for (int i = 0; i < 60; ++i) again.push_back(Record(i));
  auto report = registry_->Import("batch-1b", again, kAdmin);
  ASSERT_TRUE(report) << report.error();
  EXPECT_EQ(report->imported, 10);
  EXPECT_EQ(report->already_present, 50);

  // One bad record (a known serial with another IDevID) fails the whole batch.
  std::vector<ManufacturingRecord> bad;
  for (int i = 100; i < 110; ++i) bad.push_back(Record(i));
  bad.push_back(Record(3));
  bad.back().idevid_fingerprint = Fingerprint(999);
  auto refused = registry_->Import("batch-2", bad, kAdmin);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kConflict));
  EXPECT_NE(refused.error().message().find("record 10"), std::string::npos) << refused.error();
  EXPECT_THAT(registry_->Get("SN-000100"), test::HasCode(ErrorCode::kNotFound));
  auto counts = registry_->CountByState();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->at(State::kManufactured), 60);
}

TEST_P(RegistryTest, ImportRejectsMalformedRecordsByIndex) {
  std::vector<ManufacturingRecord> records = {Record(0), Record(1)};
  records[1].idevid_fingerprint = "not-a-digest";
  auto r = registry_->Import("b", records, kAdmin);
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(r.error().message().find("record 1"), std::string::npos);
  EXPECT_THAT(registry_->Get("SN-000000"), test::HasCode(ErrorCode::kNotFound));
}

// Every row of the lifecycle table, from its |from| state with an allowed actor.
TEST_P(RegistryTest, EveryAllowedTransition) {
  int n = 0;
  for (const TransitionRule& rule : Transitions()) {
    const ManufacturingRecord rec = Record(1000 + n++);
    ASSERT_TRUE(registry_->Import("walk-" + rec.serial, std::span(&rec, 1), kAdmin));
    Reach(rec.serial, rule.from);
    if (rule.event == Event::kFinalizeDecommission) {
      clock_.Advance(RegistryOptions{}.decommission_grace + 1s);
    }
    const std::size_t effects_before = effects_.applied.size();
    auto before = registry_->Get(rec.serial);
    ASSERT_TRUE(before);
    auto after = Apply(rec.serial, rule.event);
    ASSERT_TRUE(after) << EventName(rule.event) << " from " << StateName(rule.from) << ": "
                       << after.error();
    const State expected =
        rule.event == Event::kCancelDecommission ? before->resume_state : rule.to;
    EXPECT_EQ(after->state, expected) << EventName(rule.event);
    EXPECT_EQ(after->version, before->version + 1);
    auto history = registry_->History(rec.serial);
    ASSERT_TRUE(history);
    ASSERT_FALSE(history->empty());
    const TransitionRecord& last = history->back();
    EXPECT_EQ(last.event, rule.event);
    EXPECT_EQ(last.from, rule.from);
    EXPECT_EQ(last.to, expected);
    EXPECT_EQ(last.version, after->version);
    EXPECT_EQ(last.policy_version, kPolicyVersion) << "the version the registry was given";
    EXPECT_FALSE(last.actor.empty());
    // The record names the audit entry appended with it.
    if (!last.audit_index.has_value()) GTEST_FAIL() << "no audit index";
    const auto index = static_cast<std::uint64_t>(*last.audit_index);
    audit::Log log(db_->db(), nullptr, clock_);
    auto entries = log.Entries(index, index + 1);
    ASSERT_TRUE(entries) << entries.error();
    ASSERT_EQ(entries->size(), 1u);
    EXPECT_EQ(nlohmann::json::parse(entries->front().body).at("action"),
              "registry." + std::string(EventName(rule.event)));
    EXPECT_EQ(nlohmann::json::parse(entries->front().body).at("subject"), rec.serial);
    EXPECT_EQ(nlohmann::json::parse(entries->front().body).at("policy_version"), kPolicyVersion);
    EXPECT_EQ(effects_.applied.size(),
              effects_before + (rule.action == CredentialAction::kNone ? 0 : 1));
  }
}

// Every (event, state) pair the table does not list is refused and changes nothing.
TEST_P(RegistryTest, EveryForbiddenTransitionIsRefusedAndChangesNothing) {
  const State states[] = {State::kManufactured, State::kProvisioned,     State::kActive,
                          State::kSuspended,    State::kQuarantined,     State::kDecommissioning,
                          State::kDecommissioned};
  int n = 0;
  for (State state : states) {
    const ManufacturingRecord rec = Record(2000 + n++);
    ASSERT_TRUE(registry_->Import("forbid-" + rec.serial, std::span(&rec, 1), kAdmin));
    Reach(rec.serial, state);
    for (int e = 0; e <= static_cast<int>(Event::kClear); ++e) {
      const auto event = static_cast<Event>(e);
      if (FindRule(event, state)) continue;
      auto before = registry_->Get(rec.serial);
      auto history_before = registry_->History(rec.serial);
      auto r = Apply(rec.serial, event);
      ASSERT_FALSE(r) << EventName(event) << " from " << StateName(state);
      EXPECT_THAT(r, test::HasCode(ErrorCode::kConflict));
      EXPECT_NE(r.error().message().find("is not allowed from state"), std::string::npos);
      auto after = registry_->Get(rec.serial);
      EXPECT_EQ(after->version, before->version);
      EXPECT_EQ(after->state, before->state);
      EXPECT_EQ(registry_->History(rec.serial)->size(), history_before->size());
    }
  }
}

TEST_P(RegistryTest, WhoMayCauseATransition) {
  ImportN(1);
  const std::string s = "SN-000000";
  auto by_device = registry_->Transition(Request(s, Event::kProvision, DeviceActor(s)));
  ASSERT_FALSE(by_device);
  EXPECT_THAT(by_device, test::HasCode(ErrorCode::kPermissionDenied));
  const Actor viewer{kOperator, "bob", {"viewer"}};
  auto no_role = registry_->Transition(Request(s, Event::kProvision, viewer));
  ASSERT_FALSE(no_role);
  EXPECT_THAT(no_role, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(no_role.error().message().find("role 'provisioner'"), std::string::npos);
  const Actor provisioner{kOperator, "carol", {"provisioner"}};
  ASSERT_TRUE(registry_->Transition(Request(s, Event::kProvision, provisioner)));
  auto other_device = registry_->Transition(Request(s, Event::kActivate, DeviceActor("SN-9")));
  ASSERT_FALSE(other_device);
  EXPECT_THAT(other_device, test::HasCode(ErrorCode::kPermissionDenied));
  auto no_evidence = Request(s, Event::kActivate, DeviceActor(s));
  no_evidence.evidence_digest.clear();
  auto r = registry_->Transition(no_evidence);
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kInvalidArgument));
  ASSERT_TRUE(Apply(s, Event::kActivate));
  auto no_reason = Request(s, Event::kSuspend, kAdmin);
  no_reason.reason.clear();
  EXPECT_THAT(registry_->Transition(no_reason), test::HasCode(ErrorCode::kInvalidArgument));
}

TEST_P(RegistryTest, StaleVersionIsAConflict) {
  ImportN(1);
  auto stale = Request("SN-000000", Event::kProvision, kAdmin);
  ASSERT_TRUE(Apply("SN-000000", Event::kDecommission));
  auto r = registry_->Transition(stale);
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kConflict));
  EXPECT_NE(r.error().message().find("changed since it was read"), std::string::npos);
}

TEST_P(RegistryTest, ConcurrentConflictingTransitionsExactlyOneWins) {
  ImportN(20);
  for (int i = 0; i < 20; ++i) Reach(fmt::format("SN-{:06d}", i), State::kActive);
  for (int i = 0; i < 20; ++i) {
    const std::string s = fmt::format("SN-{:06d}", i);
    auto suspend = Request(s, Event::kSuspend, kAdmin);
    auto decommission = Request(s, Event::kDecommission, kAdmin);
    std::atomic<int> wins{0};
    std::atomic<int> conflicts{0};
    auto run = [&](const TransitionRequest& req) {
      auto r = registry_->Transition(req);
      if (r) {
        ++wins;
      } else if (r.error().code() == ErrorCode::kConflict) {
        ++conflicts;
      }
    };
    std::thread a(run, suspend);
    std::thread b(run, decommission);
    a.join();
    b.join();
    EXPECT_EQ(wins.load(), 1) << s;
    EXPECT_EQ(conflicts.load(), 1) << s;
    EXPECT_EQ(registry_->Get(s)->version, suspend.expected_version + 1);
    EXPECT_EQ(registry_->History(s)->size(), 3u);
  }
}

TEST_P(RegistryTest, CredentialEffectsCommitWithTheTransitionOrNotAtAll) {
  ImportN(1);
  const std::string s = "SN-000000";
  Reach(s, State::kActive);
  effects_.fail = true;
  auto r = Apply(s, Event::kSuspend);
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_EQ(registry_->Get(s)->state, State::kActive);
  EXPECT_EQ(registry_->History(s)->size(), 2u);
}

TEST_P(RegistryTest, DecommissionedIdentitiesAreTombstonedForever) {
  ImportN(3);
  const std::string s = "SN-000001";
  Reach(s, State::kActive);
  ASSERT_TRUE(Apply(s, Event::kDecommission));
  // Reversible within the grace period: back to where it was.
  auto cancelled = Apply(s, Event::kCancelDecommission);
  ASSERT_TRUE(cancelled) << cancelled.error();
  EXPECT_EQ(cancelled->state, State::kActive);
  ASSERT_TRUE(Apply(s, Event::kDecommission));
  EXPECT_EQ(registry_->FinalizeDecommissions().value(), 0);  // grace not over
  clock_.Advance(RegistryOptions{}.decommission_grace - 1s);
  EXPECT_EQ(registry_->FinalizeDecommissions().value(), 0);
  clock_.Advance(2s);
  auto late_cancel = Apply(s, Event::kCancelDecommission);
  ASSERT_FALSE(late_cancel);
  EXPECT_THAT(late_cancel, test::HasCode(ErrorCode::kConflict));
  EXPECT_EQ(registry_->FinalizeDecommissions().value(), 1);
  EXPECT_EQ(registry_->Get(s)->state, State::kDecommissioned);

  auto enroll = registry_->CheckEnrollable(s, Fingerprint(1));
  ASSERT_FALSE(enroll);
  EXPECT_THAT(enroll, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(registry_->CheckEnrollable("SN-new", Fingerprint(1)),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_TRUE(registry_->CheckEnrollable("SN-000002", Fingerprint(2)));

  // Re-import of the same identity, even in a new batch, is refused with the record's index.
  const ManufacturingRecord again = Record(1);
  auto r = registry_->Import("later-batch", std::span(&again, 1), kAdmin);
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(r.error().message().find("decommissioned identity"), std::string::npos);
}

// Which event an IDevID enrollment is, and whether the device may rotate, come from the table.
TEST_P(RegistryTest, TheTableSaysWhichEventAnEnrollmentIs) {
  const State states[] = {State::kManufactured,    State::kProvisioned, State::kActive,
                          State::kSuspended,       State::kQuarantined, State::kDecommissioning,
                          State::kDecommissioned};
  int n = 0;
  for (const State state : states) {
    SCOPED_TRACE(std::string(StateName(state)));
    const ManufacturingRecord rec = Record(2000 + n++);
    ASSERT_TRUE(registry_->Import("enroll-" + rec.serial, std::span(&rec, 1), kAdmin));
    Reach(rec.serial, state);
    auto device = registry_->Get(rec.serial);
    ASSERT_TRUE(device) << device.error();
    auto tx = db_->db().Begin(store::TxMode::kRead);
    ASSERT_TRUE(tx) << tx.error();
    auto allowed = Registry::EnrollmentEventIn(**tx, *device, EnrollmentPolicy{});
    auto strict = Registry::EnrollmentEventIn(
        **tx, *device, EnrollmentPolicy{.idevid_reenroll_after_expiry = false});
    auto rotate = Registry::DeviceMay(*device, Event::kRotate, "rotation");
    if (state == State::kProvisioned) {
      EXPECT_EQ(allowed.value_or(Event::kClear), Event::kActivate);
      EXPECT_EQ(strict.value_or(Event::kClear), Event::kActivate);
    } else if (state == State::kActive) {
      EXPECT_EQ(allowed.value_or(Event::kClear), Event::kReattest);
      ASSERT_FALSE(strict);
      EXPECT_THAT(strict, test::HasCode(ErrorCode::kPermissionDenied));
    } else {
      ASSERT_FALSE(allowed);
      EXPECT_THAT(allowed, test::HasCode(ErrorCode::kPermissionDenied));
      EXPECT_FALSE(strict);
    }
    if (state == State::kDecommissioned) {
      EXPECT_NE(allowed.error().message().find("never enroll again"), std::string::npos);
    }
    if (state == State::kActive) {
      ASSERT_TRUE(rotate) << rotate.error();
      EXPECT_EQ((*rotate)->event, Event::kRotate);
    } else {
      ASSERT_FALSE(rotate);
      EXPECT_THAT(rotate, test::HasCode(ErrorCode::kPermissionDenied));
      EXPECT_NE(rotate.error().message().find("rotation refused"), std::string::npos);
    }
  }
}

TEST_P(RegistryTest, QueriesPageWithStableCursorsAndCount) {
  ImportN(250);
  for (int i = 0; i < 30; ++i) Reach(fmt::format("SN-{:06d}", i), State::kProvisioned);
  DeviceQuery q;
  q.limit = 100;
  std::vector<std::string> seen;
  for (;;) {
    auto page = registry_->Query(q);
    ASSERT_TRUE(page) << page.error();
    for (const Device& d : page->devices) seen.push_back(d.serial);
    if (page->next == 0) break;
    q.after = page->next;
  }
  ASSERT_EQ(seen.size(), 250u);
  EXPECT_TRUE(std::ranges::is_sorted(seen));

  DeviceQuery filtered;
  filtered.state = State::kProvisioned;
  filtered.tenant = "tenant-a";
  filtered.model = "gw-100";
  filtered.label_key = "color";
  filtered.label_value = "red";
  auto page = registry_->Query(filtered);
  ASSERT_TRUE(page);
  // i < 30, even (gw-100), multiple of 3 (red): 0, 6, 12, 18, 24.
  EXPECT_EQ(page->devices.size(), 5u);
  auto counts = registry_->CountByState();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->at(State::kManufactured), 220);
  EXPECT_EQ(counts->at(State::kProvisioned), 30);
  EXPECT_EQ(registry_->CountByState("tenant-a")->at(State::kProvisioned), 30);
  DeviceQuery bad;
  bad.limit = 0;
  EXPECT_THAT(registry_->Query(bad), test::HasCode(ErrorCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

TEST(LifecycleTest, TableIsConsistent) {
  for (const TransitionRule& r : Transitions()) {
    EXPECT_FALSE(IsFinal(r.from)) << "no transition may leave a final state";
    EXPECT_NE(r.actors, 0);
    EXPECT_EQ((r.actors & kOperator) != 0, !r.role.empty()) << EventName(r.event);
    auto found = FindRule(r.event, r.from);
    ASSERT_TRUE(found);
    EXPECT_EQ(*found, &r) << "duplicate (event, from) row";
  }
  EXPECT_EQ(ParseState("active").value(), State::kActive);
  EXPECT_EQ(ParseEvent("rotated").value(), Event::kRotate);
  EXPECT_THAT(ParseState("gone"), test::HasCode(ErrorCode::kInvalidArgument));
}

TEST(BatchFileTest, ParsesJsonLinesAndNamesTheBadLine) {
  auto ok = ParseBatch(
      "# factory batch 7\n"
      "{\"serial\":\"A1\",\"model\":\"m\",\"manufacturer\":\"acme\",\"idevid_fingerprint\":\"" +
      Fingerprint(1) + "\",\"labels\":{\"k\":\"v\"},\"manufactured_at\":1900000000}\n\n");
  ASSERT_TRUE(ok) << ok.error();
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].labels.at("k"), "v");
  auto bad = ParseBatch("{\"serial\":\"A1\",\"model\":\"m\",\"manufacturer\":\"acme\","
                        "\"idevid_fingerprint\":\"" +
                        Fingerprint(1) + "\"}\n{\"serial\": 5}\n");
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(bad.error().message().find("line 2"), std::string::npos) << bad.error();
  EXPECT_NE(ParseBatch("not json\n").error().message().find("line 1"), std::string::npos);
}

// fuzz/corpus/batch/huge_time: a manufactured_at past what a TimePoint holds overflowed it.
TEST(BatchFileTest, RefusesTimesATimePointCannotHold) {
  for (const char* at :
       {"9223372036854775807", "-9223372036854775808", "18446744073709551615", "10000000000"}) {
    auto bad =
        ParseBatch(R"({"serial":"A1","model":"m","manufacturer":"acme","idevid_fingerprint":")" +
                   Fingerprint(1) + R"(","manufactured_at":)" + at + "}\n");
    if (bad.has_value()) GTEST_FAIL() << at;
    EXPECT_THAT(bad, test::HasCode(ErrorCode::kInvalidArgument)) << at;
    EXPECT_NE(bad.error().message().find("line 1: 'manufactured_at'"), std::string::npos)
        << bad.error();
  }
}

}  // namespace
}  // namespace fleetid::registry
