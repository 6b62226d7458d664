// The enrollment service against a real SoftHSM2 token (the CA's keys), real SQLite and
// PostgreSQL databases and a fake clock. Devices and manufacturers use in-memory keys here; the
// integration tests drive real secure elements (tokens) through fleetid-agent and curl.
#include "enroll/service.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "custody/test_token.h"
#include "enroll/factory.h"
#include "store/test_db.h"

namespace fleetid::enroll {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using store::testing::Backend;

constexpr std::string_view kModel = "sensor-1";
const std::string kFirmware(64, 'a');

crypto::EvpPkeyPtr NewKey() { return crypto::EvpPkeyPtr(EVP_EC_gen("P-256")); }

std::vector<std::uint8_t> Csr(EVP_PKEY* key, EVP_PKEY* signer = nullptr) {
  crypto::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), signer != nullptr ? signer : key, EVP_sha256());
  const int len = i2d_X509_REQ(req.get(), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

std::string KeyHash(EVP_PKEY* key) {
  auto spki = crypto::PublicKeyDer(key);
  return crypto::Hex(crypto::Sha256(*spki));
}

struct TestDevice {
  std::string serial;
  crypto::EvpPkeyPtr idevid_key;
  ClientChain idevid_chain;
};

class EnrollTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<store::testing::TestDb>(GetParam());
    ASSERT_TRUE(Service::Migrate(db()));
    auto authority = pki::Authority::Open(custody::testing::Opened().token, db(), clock_, rng_, {});
    ASSERT_TRUE(authority) << authority.error();
    authority_ = std::move(*authority);
    effects_ = std::make_unique<PkiEffects>(*authority_);
    registry_ = std::make_unique<registry::Registry>(db(), clock_, effects_.get(),
                                                     registry::RegistryOptions{});
    service_ = std::make_unique<Service>(db(), *registry_, *authority_, *effects_, clock_, rng_,
                                         ServiceOptions{});
    maker_key_ = NewKey();
    auto ca = MakeManufacturerCa(maker_key_.get(), "Acme", clock_, rng_);
    ASSERT_TRUE(ca);
    maker_ca_ = *ca;
    ASSERT_TRUE(service_->AddManufacturer(maker_ca_, "Acme", "operator:test"));
    ASSERT_TRUE(service_->AddReferenceValue(kModel, kFirmware, "operator:test"));
  }

  store::Database& db() { return db_->db(); }

  // MakeDevices runs the factory for |n| devices, imports the signed manifest and provisions them.
  std::vector<TestDevice> MakeDevices(int n, const std::string& prefix = "SN") {
    std::vector<TestDevice> out;
    Manifest m{"batch-" + prefix, "Acme", std::string(kModel), "line-1", 1'700'000'000, {}};
    for (int i = 0; i < n; ++i) {
      TestDevice d;
      d.serial = fmt::format("{}-{:03d}", prefix, i);
      d.idevid_key = NewKey();
      auto cert = IssueIdevid(maker_key_.get(), maker_ca_, Csr(d.idevid_key.get()),
                              {d.serial, std::string(kModel), "Acme"}, clock_, rng_);
      EXPECT_TRUE(cert);
      d.idevid_chain = {*cert, maker_ca_};
      m.devices.push_back({d.serial, crypto::Hex(crypto::Sha256(*cert)), "1.0", kFirmware});
      out.push_back(std::move(d));
    }
    auto jws = SignManifest(maker_key_.get(), maker_ca_, m);
    EXPECT_TRUE(jws);
    auto imported = service_->ImportManifest(*jws, "test");
    EXPECT_TRUE(imported) << imported.error();
    for (const TestDevice& d : out) {
      auto dev = registry_->Get(d.serial);
      registry::TransitionRequest req;
      req.serial = d.serial;
      req.event = registry::Event::kProvision;
      req.expected_version = dev->version;
      req.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
      req.tenant = "acme";
      req.region = "eu";
      EXPECT_TRUE(registry_->Transition(req));
    }
    return out;
  }

  // Evidence asks for a nonce over |chain| and signs claims with |signer| naming |new_key|.
  std::string Evidence(const ClientChain& chain, EVP_PKEY* signer, EVP_PKEY* new_key,
                       Purpose purpose, const std::string& serial,
                       const std::string& firmware = kFirmware) {
    auto nonce = service_->IssueNonce(chain, purpose);
    EXPECT_TRUE(nonce) << nonce.error();
    const Json claims{{"eat_profile", kEvidenceProfile}, {"eat_nonce", nonce ? nonce->value : ""},
                      {"serial", serial},                {"fw_sha256", firmware},
                      {"key_sha256", KeyHash(new_key)}};
    auto jws = crypto::SignJws(signer, {{"typ", kEvidenceType}}, claims.dump());
    EXPECT_TRUE(jws);
    return *jws;
  }

  // Enroll runs nonce, evidence and simpleenroll for |d| with |key| as its first LDevID key.
  Result<pki::CertificateRecord> Enroll(TestDevice& d, EVP_PKEY* key) {
    const std::string ev = Evidence(d.idevid_chain, d.idevid_key.get(), key, Purpose::kEnroll, d.serial);
    FLEETID_TRY(appraisal, service_->Appraise(d.idevid_chain, ev));
    (void)appraisal;
    return service_->Enroll(d.idevid_chain, Csr(key));
  }

  ClientChain LdevidChain(const pki::CertificateRecord& r) { return {r.der, authority_->RootDer()}; }

  // Snapshot is what a refused request must leave unchanged.
  struct Snapshot {
    std::string state;
    std::int64_t version = 0;
    std::int64_t certificates = 0;
    std::int64_t good = 0;
    bool operator==(const Snapshot&) const = default;
  };
  Snapshot Snap(const std::string& serial) {
    Snapshot s;
    auto d = registry_->Get(serial);
    s.state = std::string(registry::StateName(d->state));
    s.version = d->version;
    auto tx = db().Begin(store::TxMode::kRead);
    auto rows = (*tx)->Query("SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'good' THEN 1 ELSE 0 END), 0) "
                             "FROM certificates WHERE device = ?",
                             {serial});
    s.certificates = (*rows)[0].Int(0);
    s.good = (*rows)[0].Int(1);
    return s;
  }

  // UsableCredentials counts certificates that are current in the registry and good at the CA.
  std::int64_t Usable(const std::string& serial) {
    auto tx = db().Begin(store::TxMode::kRead);
    auto rows = (*tx)->Query(
        "SELECT COUNT(*) FROM credentials c JOIN devices d ON d.id = c.device_id JOIN certificates r "
        "ON r.serial = c.cert_serial WHERE d.serial = ? AND c.role = 'current' AND r.status = 'good'",
        {serial});
    return (*rows)[0].Int(0);
  }

  FakeClock clock_{TimePoint(std::chrono::seconds(1'795'000'000))};
  crypto::OpenSslRng& rng_ = crypto::OpenSslRng::Instance();
  std::unique_ptr<store::testing::TestDb> db_;
  std::unique_ptr<pki::Authority> authority_;
  std::unique_ptr<PkiEffects> effects_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Service> service_;
  crypto::EvpPkeyPtr maker_key_;
  std::vector<std::uint8_t> maker_ca_;
};

TEST_P(EnrollTest, EnrollRotateDecommissionAndNeverAgain) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kProvisioned);
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first) << first.error();
  EXPECT_EQ(first->status, pki::Status::kGood);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kActive);
  EXPECT_EQ(Usable(d.serial), 1);

  // Rotation: the new certificate is pending (on hold) until the new key proves itself.
  auto k2 = NewKey();
  const ClientChain l1 = LdevidChain(*first);
  ASSERT_TRUE(service_->Appraise(l1, Evidence(l1, k1.get(), k2.get(), Purpose::kReenroll, d.serial)));
  auto pending = service_->Reenroll(l1, Csr(k2.get()));
  ASSERT_TRUE(pending) << pending.error();
  EXPECT_EQ(pending->status, pki::Status::kOnHold);
  EXPECT_EQ(Usable(d.serial), 1);
  auto confirmed = service_->Confirm(LdevidChain(*pending));
  ASSERT_TRUE(confirmed) << confirmed.error();
  EXPECT_EQ(confirmed->status, pki::Status::kGood);
  auto old = authority_->Get(first->serial);
  EXPECT_EQ(old->status, pki::Status::kRevoked);
  EXPECT_EQ(old->reason, pki::Reason::kSuperseded);
  EXPECT_EQ(Usable(d.serial), 1);
  // A retried confirmation (its answer lost) changes nothing.
  const Snapshot before_retry = Snap(d.serial);
  ASSERT_TRUE(service_->Confirm(LdevidChain(*pending)));
  EXPECT_EQ(Snap(d.serial), before_retry);
  auto history = registry_->History(d.serial);
  EXPECT_EQ(registry::EventName(history->back().event), "rotated");

  // Decommissioning: ordered by an operator, completed by the device's signed receipt.
  auto dev = registry_->Get(d.serial);
  registry::TransitionRequest order;
  order.serial = d.serial;
  order.event = registry::Event::kDecommission;
  order.expected_version = dev->version;
  order.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
  order.reason = "end of life";
  ASSERT_TRUE(registry_->Transition(order));
  auto status = service_->Status(LdevidChain(*pending));
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->decommission_ordered);
  const Json claims{{"serial", d.serial}, {"destroyed", Json::array({KeyHash(k2.get())})}};
  // A superseded key no longer speaks for the device.
  auto stale = crypto::SignJws(k1.get(), {{"typ", kReceiptType}, {"kid", first->serial}}, claims.dump());
  EXPECT_EQ(service_->RecordReceipt(*stale).error().code(), ErrorCode::kPermissionDenied);
  auto receipt = crypto::SignJws(k2.get(), {{"typ", kReceiptType}, {"kid", pending->serial}}, claims.dump());
  auto done = service_->RecordReceipt(*receipt);
  ASSERT_TRUE(done) << done.error();
  EXPECT_EQ(done->state, registry::State::kDecommissioned);
  for (const auto& serial : {first->serial, pending->serial}) {
    auto r = authority_->Get(serial);
    EXPECT_EQ(r->status, pki::Status::kRevoked) << serial;
  }
  EXPECT_EQ(authority_->Get(pending->serial)->reason, pki::Reason::kCessationOfOperation);
  EXPECT_TRUE(service_->RecordReceipt(*receipt));  // delivered twice: recorded once

  // The IDevID can never enroll again: no nonce, and no certificate even for a CSR.
  const Snapshot before = Snap(d.serial);
  auto nonce = service_->IssueNonce(d.idevid_chain, Purpose::kEnroll);
  ASSERT_FALSE(nonce);
  EXPECT_EQ(nonce.error().code(), ErrorCode::kPermissionDenied);
  auto k3 = NewKey();
  auto again = service_->Enroll(d.idevid_chain, Csr(k3.get()));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(again.error().message().find("never enroll again"), std::string::npos) << again.error();
  EXPECT_EQ(Snap(d.serial), before);
}

TEST_P(EnrollTest, RefusalsChangeNothing) {
  auto devices = MakeDevices(2);
  TestDevice& d = devices[0];
  auto key = NewKey();
  auto other = NewKey();
  const Snapshot start = Snap(d.serial);

  // Replayed nonce: the second use is refused and counted.
  const std::string ev = Evidence(d.idevid_chain, d.idevid_key.get(), key.get(), Purpose::kEnroll, d.serial);
  ASSERT_TRUE(service_->Appraise(d.idevid_chain, ev));
  auto replay = service_->Appraise(d.idevid_chain, ev);
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(replay.error().message().find("replay"), std::string::npos);
  EXPECT_EQ(service_->Counters()->at("nonce_replayed"), 1);

  // Expired nonce.
  auto stale = Evidence(d.idevid_chain, d.idevid_key.get(), key.get(), Purpose::kEnroll, d.serial);
  clock_.Advance(61s);
  auto expired = service_->Appraise(d.idevid_chain, stale);
  ASSERT_FALSE(expired);
  EXPECT_NE(expired.error().message().find("expired"), std::string::npos);
  EXPECT_EQ(service_->Counters()->at("nonce_expired"), 1);

  // Evidence for another key than the CSR's (the passing appraisal above names |key|).
  auto wrong_key = service_->Enroll(d.idevid_chain, Csr(other.get()));
  ASSERT_FALSE(wrong_key);
  EXPECT_EQ(wrong_key.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(wrong_key.error().message().find("names the key in this CSR"), std::string::npos);

  // Unknown firmware: the appraisal fails, and its result is recorded.
  auto bad_fw = service_->Appraise(
      d.idevid_chain, Evidence(d.idevid_chain, d.idevid_key.get(), other.get(), Purpose::kEnroll,
                               d.serial, std::string(64, 'b')));
  ASSERT_FALSE(bad_fw);
  EXPECT_NE(bad_fw.error().message().find("firmware"), std::string::npos);
  EXPECT_EQ(service_->Counters()->at("appraisals_fail"), 1);
  EXPECT_FALSE(service_->Enroll(d.idevid_chain, Csr(other.get())));

  // Evidence signed by a key other than the client certificate's; evidence naming another device.
  auto forged = service_->Appraise(
      d.idevid_chain, Evidence(d.idevid_chain, other.get(), other.get(), Purpose::kEnroll, d.serial));
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_FALSE(service_->Appraise(
      d.idevid_chain,
      Evidence(d.idevid_chain, d.idevid_key.get(), other.get(), Purpose::kEnroll, devices[1].serial)));

  // A nonce issued to one device cannot carry another's evidence.
  auto theirs = service_->IssueNonce(devices[1].idevid_chain, Purpose::kEnroll);
  const Json claims{{"eat_profile", kEvidenceProfile}, {"eat_nonce", theirs->value}, {"serial", d.serial},
                    {"fw_sha256", kFirmware}, {"key_sha256", KeyHash(other.get())}};
  auto misbound = service_->Appraise(
      d.idevid_chain, *crypto::SignJws(d.idevid_key.get(), {{"typ", kEvidenceType}}, claims.dump()));
  ASSERT_FALSE(misbound);
  EXPECT_NE(misbound.error().message().find("another device"), std::string::npos);

  // A CSR whose signature was made by another key; malformed DER; malformed evidence.
  auto forged_csr = service_->Enroll(d.idevid_chain, Csr(key.get(), other.get()));
  ASSERT_FALSE(forged_csr);
  EXPECT_EQ(forged_csr.error().code(), ErrorCode::kInvalidArgument);
  const std::vector<std::uint8_t> junk = {0x30, 0x03, 0x02, 0x01};
  EXPECT_EQ(service_->Enroll(d.idevid_chain, junk).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->Appraise(d.idevid_chain, "not.a-jws").error().code(), ErrorCode::kInvalidArgument);

  // An IDevID from a manufacturer that was never registered.
  auto rogue_key = NewKey();
  auto rogue_ca = MakeManufacturerCa(rogue_key.get(), "Rogue", clock_, rng_);
  auto rogue_cert = IssueIdevid(rogue_key.get(), *rogue_ca, Csr(d.idevid_key.get()),
                                {d.serial, std::string(kModel), "Rogue"}, clock_, rng_);
  const ClientChain rogue = {*rogue_cert, *rogue_ca};
  auto unregistered = service_->IssueNonce(rogue, Purpose::kEnroll);
  ASSERT_FALSE(unregistered);
  EXPECT_NE(unregistered.error().message().find("registered manufacturer"), std::string::npos);
  EXPECT_EQ(service_->Enroll(rogue, Csr(key.get())).error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(service_->Enroll({}, Csr(key.get())).error().code(), ErrorCode::kUnauthenticated);

  EXPECT_EQ(Snap(d.serial), start);
  // And after all that, the right evidence still enrolls.
  auto good = NewKey();
  EXPECT_TRUE(Enroll(d, good.get()));
}

TEST_P(EnrollTest, SuspendedAndDecommissioningDevicesAreRefused) {
  auto devices = MakeDevices(2);
  auto k1 = NewKey();
  auto cert = Enroll(devices[0], k1.get());
  ASSERT_TRUE(cert);
  auto dev = registry_->Get(devices[0].serial);
  registry::TransitionRequest suspend;
  suspend.serial = dev->serial;
  suspend.event = registry::Event::kSuspend;
  suspend.expected_version = dev->version;
  suspend.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
  suspend.reason = "lost";
  ASSERT_TRUE(registry_->Transition(suspend));
  EXPECT_EQ(authority_->Get(cert->serial)->status, pki::Status::kOnHold);
  const ClientChain l1 = LdevidChain(*cert);
  const Snapshot before = Snap(dev->serial);
  auto nonce = service_->IssueNonce(l1, Purpose::kReenroll);
  ASSERT_FALSE(nonce);  // refused early: no evidence can be made
  EXPECT_NE(nonce.error().message().find("suspended"), std::string::npos) << nonce.error();
  auto k2 = NewKey();
  auto renewed = service_->Reenroll(l1, Csr(k2.get()));
  ASSERT_FALSE(renewed);
  EXPECT_EQ(renewed.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(service_->Enroll(devices[0].idevid_chain, Csr(k2.get())).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(Snap(dev->serial), before);

  // The second device is ordered decommissioned before it ever enrolled.
  auto dev2 = registry_->Get(devices[1].serial);
  registry::TransitionRequest order;
  order.serial = dev2->serial;
  order.event = registry::Event::kDecommission;
  order.expected_version = dev2->version;
  order.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
  order.reason = "recalled";
  ASSERT_TRUE(registry_->Transition(order));
  const Snapshot before2 = Snap(dev2->serial);
  auto k3 = NewKey();
  EXPECT_FALSE(service_->IssueNonce(devices[1].idevid_chain, Purpose::kEnroll));
  auto refused = service_->Enroll(devices[1].idevid_chain, Csr(k3.get()));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.error().message().find("decommissioning"), std::string::npos) << refused.error();
  EXPECT_EQ(Snap(dev2->serial), before2);
}

// After an outage longer than the LDevID's life, the IDevID and fresh evidence enroll again;
// while the LDevID is valid they may not.
TEST_P(EnrollTest, IdevidReenrollsOnlyAfterTheLdevidLapsed) {
  auto devices = MakeDevices(1);
  auto k1 = NewKey();
  auto first = Enroll(devices[0], k1.get());
  ASSERT_TRUE(first);
  auto k2 = NewKey();
  auto early = Enroll(devices[0], k2.get());
  ASSERT_FALSE(early);
  EXPECT_EQ(early.error().code(), ErrorCode::kConflict);
  clock_.Advance(25h);
  auto late = Enroll(devices[0], k2.get());
  ASSERT_TRUE(late) << late.error();
  EXPECT_EQ(authority_->Get(first->serial)->reason, pki::Reason::kSuperseded);
  EXPECT_EQ(registry::EventName(registry_->History(devices[0].serial)->back().event), "reattest");
  EXPECT_EQ(Usable(devices[0].serial), 1);
}

// A rotation interrupted at any step leaves exactly one usable credential, and a retry completes.
TEST_P(EnrollTest, InterruptedRotationsLeaveOneUsableCredential) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first);
  const ClientChain l1 = LdevidChain(*first);
  // The device got a pending certificate but lost it (crash before storing it), and asks again
  // with the same new key: the first pending one is abandoned (revoked, superseded).
  auto k2 = NewKey();
  ASSERT_TRUE(service_->Appraise(l1, Evidence(l1, k1.get(), k2.get(), Purpose::kReenroll, d.serial)));
  auto lost = service_->Reenroll(l1, Csr(k2.get()));
  ASSERT_TRUE(lost);
  EXPECT_EQ(Usable(d.serial), 1);
  ASSERT_TRUE(service_->Appraise(l1, Evidence(l1, k1.get(), k2.get(), Purpose::kReenroll, d.serial)));
  auto kept = service_->Reenroll(l1, Csr(k2.get()));
  ASSERT_TRUE(kept);
  EXPECT_EQ(authority_->Get(lost->serial)->status, pki::Status::kRevoked);
  EXPECT_EQ(Usable(d.serial), 1);
  // The abandoned certificate cannot complete a rotation; the kept one can, once.
  EXPECT_EQ(service_->Confirm(LdevidChain(*lost)).error().code(), ErrorCode::kConflict);
  EXPECT_EQ(Usable(d.serial), 1);
  ASSERT_TRUE(service_->Confirm(LdevidChain(*kept)));
  EXPECT_EQ(Usable(d.serial), 1);
  // The superseded LDevID can no longer renew.
  auto k3 = NewKey();
  auto stale = service_->Reenroll(l1, Csr(k3.get()));
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code(), ErrorCode::kPermissionDenied);
}

TEST_P(EnrollTest, ManifestsMustBeSignedByTheRegisteredManufacturer) {
  Manifest m{"batch-x", "Acme", std::string(kModel), "line-1", 1'700'000'000,
             {{"X-1", std::string(64, 'c'), "1.0", kFirmware}}};
  auto rogue_key = NewKey();
  auto rogue_ca = MakeManufacturerCa(rogue_key.get(), "Acme", clock_, rng_);
  auto unregistered = service_->ImportManifest(*SignManifest(rogue_key.get(), *rogue_ca, m), "test");
  ASSERT_FALSE(unregistered);
  EXPECT_EQ(unregistered.error().code(), ErrorCode::kPermissionDenied);
  // Signed by another key while naming the registered certificate.
  auto forged = service_->ImportManifest(*SignManifest(rogue_key.get(), maker_ca_, m), "test");
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().code(), ErrorCode::kPermissionDenied);
  m.manufacturer = "Someone Else";
  auto renamed = service_->ImportManifest(*SignManifest(maker_key_.get(), maker_ca_, m), "test");
  ASSERT_FALSE(renamed);
  EXPECT_EQ(registry_->Get("X-1").error().code(), ErrorCode::kNotFound);
}

// A factory batch of thousands of devices makes a manifest far larger than any device's JWS.
TEST_P(EnrollTest, LargeBatchesImport) {
  Manifest m{"batch-big", "Acme", std::string(kModel), "line-1", 1'700'000'000, {}};
  for (int i = 0; i < 2000; ++i) {
    m.devices.push_back({fmt::format("BIG-{:05d}", i), crypto::Hex(crypto::Sha256(std::to_string(i))),
                         "1.0", kFirmware});
  }
  auto jws = SignManifest(maker_key_.get(), maker_ca_, m);
  ASSERT_TRUE(jws);
  EXPECT_GT(jws->size(), crypto::kMaxJwsBytes);
  auto imported = service_->ImportManifest(*jws, "test");
  ASSERT_TRUE(imported) << imported.error();
  EXPECT_EQ(imported->imported, 2000);
}

TEST_P(EnrollTest, EstHelpersEncodeWhatRfc7030Says) {
  auto cacerts = service_->CaCerts();
  ASSERT_TRUE(cacerts);
  const unsigned char* p = cacerts->data();
  crypto::Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(cacerts->size())));
  ASSERT_TRUE(p7);
  EXPECT_GE(sk_X509_num(p7->d.sign->cert), 2);
  auto attrs = service_->CsrAttrs();
  ASSERT_TRUE(attrs);
  p = attrs->data();
  crypto::Asn1SequencePtr seq(d2i_ASN1_SEQUENCE_ANY(nullptr, &p, static_cast<long>(attrs->size())));
  ASSERT_TRUE(seq);
  EXPECT_EQ(sk_ASN1_TYPE_num(seq.get()), 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, EnrollTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) { return store::testing::BackendName(param_info.param); });

}  // namespace
}  // namespace fleetid::enroll
