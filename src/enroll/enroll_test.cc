// The enrollment service against a real SoftHSM2 token (the CA's keys), real SQLite and
// PostgreSQL databases and a fake clock. Devices and manufacturers use in-memory keys here; the
// integration tests drive real secure elements (tokens) through fleetid-agent and curl.
#include "enroll/service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "enroll/csr_check.h"
#include "enroll/factory.h"
#include "policy/policy.h"
#include "testing/certs.h"
#include "testing/db.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::enroll {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::Backend;

constexpr std::string_view kModel = "sensor-1";
const std::string kFirmware(64, 'a');

crypto::EvpPkeyPtr NewKey() { return crypto::EvpPkeyPtr(EVP_EC_gen("P-256")); }

std::vector<std::uint8_t> Csr(EVP_PKEY* key, EVP_PKEY* signer = nullptr) {
  return test::MakeCsr(key, {.signer = signer});
}

std::string KeyHash(EVP_PKEY* key) {
  auto spki = crypto::PublicKeyDer(key);
  return crypto::Hex(crypto::Sha256(*spki));
}

// A minimal DER encoder for hand-made requests (keys and signatures no library would make).
std::vector<std::uint8_t> Der(std::uint8_t tag, const std::vector<std::uint8_t>& content) {
  std::vector<std::uint8_t> out = {tag};
  const std::size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<std::uint8_t>(n));
  } else if (n < 0x100) {
    out.insert(out.end(), {0x81, static_cast<std::uint8_t>(n)});
  } else {
    out.insert(out.end(), {0x82, static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)});
  }
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

std::vector<std::uint8_t> Cat(std::initializer_list<std::vector<std::uint8_t>> parts) {
  std::vector<std::uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// RsaCsr is a request for an RSA key with a 3072-bit modulus and the public exponent |e| (big
// endian, top bit set), whose signature is 384 bytes of junk.
std::vector<std::uint8_t> RsaCsr(const std::vector<std::uint8_t>& e) {
  std::vector<std::uint8_t> n(384, 0xc5);
  n.back() = 0xc7;
  const auto integer = [](const std::vector<std::uint8_t>& magnitude) {
    return (magnitude[0] & 0x80) != 0 ? Der(0x02, Cat({{0x00}, magnitude})) : Der(0x02, magnitude);
  };
  const std::vector<std::uint8_t> rsa_oid = {0x06, 0x09, 0x2a, 0x86, 0x48,
                                             0x86, 0xf7, 0x0d, 0x01, 0x01};
  const auto spki =
      Der(0x30, Cat({Der(0x30, Cat({rsa_oid, {0x01, 0x05, 0x00}})),
                     Der(0x03, Cat({{0x00}, Der(0x30, Cat({integer(n), integer(e)}))}))}));
  const auto info = Der(0x30, Cat({{0x02, 0x01, 0x00}, {0x30, 0x00}, spki, {0xa0, 0x00}}));
  const auto sig_alg = Der(0x30, Cat({rsa_oid, {0x0b, 0x05, 0x00}}));
  return Der(0x30,
             Cat({info, sig_alg, Der(0x03, Cat({{0x00}, std::vector<std::uint8_t>(384, 0x5a)}))}));
}

// Ber re-encodes |der|'s outermost length with one byte more than DER allows.
std::vector<std::uint8_t> Ber(const std::vector<std::uint8_t>& der) {
  const std::size_t n = (der[1] & 0x80) != 0 ? der[1] & 0x7f : 0;
  std::vector<std::uint8_t> out = {der[0]};
  if (n == 0) {
    out.insert(out.end(), {0x81, der[1]});
  } else {
    out.push_back(static_cast<std::uint8_t>(0x80 | (n + 1)));
    out.push_back(0x00);
    out.insert(out.end(), der.begin() + 2, der.begin() + 2 + static_cast<std::ptrdiff_t>(n));
  }
  out.insert(out.end(), der.begin() + 2 + static_cast<std::ptrdiff_t>(n), der.end());
  return out;
}

struct TestDevice {
  std::string serial;
  crypto::EvpPkeyPtr idevid_key;
  ClientChain idevid_chain;
};

class EnrollTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<test::TestDb>(GetParam());
    ASSERT_TRUE(Service::Migrate(db()));
    auto authority = pki::Authority::Open(test::Opened().token, db(), clock_, rng_, {});
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
                       const std::string& firmware = kFirmware,
                       const Json& extra = Json::object()) {
    auto nonce = service_->IssueNonce(chain, purpose);
    EXPECT_TRUE(nonce) << nonce.error();
    Json claims{{"eat_profile", kEvidenceProfile},
                {"eat_nonce", nonce ? nonce->value : ""},
                {"serial", serial},
                {"fw_sha256", firmware},
                {"key_sha256", KeyHash(new_key)}};
    claims.update(extra);
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

  // Resume is an operator's `fleetid devices resume` of |serial|.
  Result<registry::Device> Resume(const std::string& serial, const registry::Actor& op) {
    FLEETID_TRY(dev, registry_->Get(serial));
    registry::TransitionRequest req;
    req.serial = serial;
    req.event = registry::Event::kResume;
    req.expected_version = dev.version;
    req.actor = op;
    req.reason = "lifted";
    return registry_->Transition(req);
  }

  std::int64_t AuditEntries() { return Rows("audit_entries"); }

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
  std::int64_t Rows(std::string_view table) {
    auto tx = db().Begin(store::TxMode::kRead);
    auto rows = (*tx)->Query(fmt::format("SELECT COUNT(*) FROM {}", table));
    return (*rows)[0].Int(0);
  }

  // Receipt signs a decommissioning receipt with |key| (certificate |kid|) answering |order|.
  static std::string Receipt(EVP_PKEY* key, const std::string& kid, const std::string& serial,
                      const std::string& order, const Json& destroyed, std::int64_t iat) {
    const Json claims{{"serial", serial}, {"order", order}, {"destroyed", destroyed}, {"iat", iat}};
    return *crypto::SignJws(key, {{"typ", kReceiptType}, {"kid", kid}}, claims.dump());
  }

  std::int64_t Now() {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.Now().time_since_epoch())
        .count();
  }

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
  std::unique_ptr<test::TestDb> db_;
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
  ASSERT_EQ(status->order_id.size(), 64u);
  const Json destroyed = Json::array({{{"label", "ldevid-2"}, {"key_sha256", KeyHash(k2.get())}}});
  // A superseded key no longer speaks for the device.
  auto stale = Receipt(k1.get(), first->serial, d.serial, status->order_id, destroyed, Now());
  EXPECT_THAT(service_->RecordReceipt(stale), test::HasCode(ErrorCode::kPermissionDenied));
  const std::string receipt =
      Receipt(k2.get(), pending->serial, d.serial, status->order_id, destroyed, Now());
  auto done = service_->RecordReceipt(receipt);
  ASSERT_TRUE(done) << done.error();
  EXPECT_EQ(done->state, registry::State::kDecommissioned);
  for (const auto& serial : {first->serial, pending->serial}) {
    auto r = authority_->Get(serial);
    EXPECT_EQ(r->status, pki::Status::kRevoked) << serial;
  }
  EXPECT_EQ(authority_->Get(pending->serial)->reason, pki::Reason::kCessationOfOperation);
  EXPECT_TRUE(service_->RecordReceipt(receipt));  // delivered twice: recorded once

  // The IDevID can never enroll again: no nonce, and no certificate even for a CSR.
  const Snapshot before = Snap(d.serial);
  auto nonce = service_->IssueNonce(d.idevid_chain, Purpose::kEnroll);
  ASSERT_FALSE(nonce);
  EXPECT_THAT(nonce, test::HasCode(ErrorCode::kPermissionDenied));
  auto k3 = NewKey();
  auto again = service_->Enroll(d.idevid_chain, Csr(k3.get()));
  ASSERT_FALSE(again);
  EXPECT_THAT(again, test::HasCode(ErrorCode::kPermissionDenied));
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
  EXPECT_THAT(replay, test::HasCode(ErrorCode::kPermissionDenied));
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
  EXPECT_THAT(wrong_key, test::HasCode(ErrorCode::kPermissionDenied));
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
  EXPECT_THAT(forged, test::HasCode(ErrorCode::kUnauthenticated));
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
  EXPECT_THAT(forged_csr, test::HasCode(ErrorCode::kInvalidArgument));
  const std::vector<std::uint8_t> junk = {0x30, 0x03, 0x02, 0x01};
  EXPECT_THAT(service_->Enroll(d.idevid_chain, junk), test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(service_->Appraise(d.idevid_chain, "not.a-jws"),
              test::HasCode(ErrorCode::kInvalidArgument));

  // An IDevID from a manufacturer that was never registered.
  auto rogue_key = NewKey();
  auto rogue_ca = MakeManufacturerCa(rogue_key.get(), "Rogue", clock_, rng_);
  auto rogue_cert = IssueIdevid(rogue_key.get(), *rogue_ca, Csr(d.idevid_key.get()),
                                {d.serial, std::string(kModel), "Rogue"}, clock_, rng_);
  const ClientChain rogue = {*rogue_cert, *rogue_ca};
  auto unregistered = service_->IssueNonce(rogue, Purpose::kEnroll);
  ASSERT_FALSE(unregistered);
  EXPECT_NE(unregistered.error().message().find("registered manufacturer"), std::string::npos);
  EXPECT_THAT(service_->Enroll(rogue, Csr(key.get())), test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Enroll({}, Csr(key.get())), test::HasCode(ErrorCode::kUnauthenticated));

  // Identities never cross: an operator's certificate (from the operators' CA, in the same
  // hierarchy) neither enrolls, renews nor asks for a nonce.
  auto operator_key = NewKey();
  auto operator_csr = crypto::VerifyCsr(Csr(operator_key.get()));
  ASSERT_TRUE(operator_csr) << operator_csr.error();
  auto tx = db().Begin(store::TxMode::kWrite);
  ASSERT_TRUE(tx) << tx.error();
  auto operator_cert = authority_->IssueOperatorIn(**tx, *operator_csr, "alice",
                                                   std::chrono::hours(24), "system");
  ASSERT_TRUE(operator_cert) << operator_cert.error();
  ASSERT_TRUE((*tx)->Commit());
  const ClientChain operator_chain = {operator_cert->der,
                                      *authority_->CaCertificate(std::string(pki::kOperatorCa)),
                                      authority_->RootDer()};
  for (const auto& refused :
       {service_->Enroll(operator_chain, Csr(key.get())),
        service_->Reenroll(operator_chain, Csr(key.get()))}) {
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied));
    EXPECT_THAT(refused.error().message(), ::testing::HasSubstr("operator certificate"));
  }
  EXPECT_THAT(service_->IssueNonce(operator_chain, Purpose::kEnroll),
              test::HasCode(ErrorCode::kPermissionDenied));

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
  EXPECT_THAT(renewed, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Enroll(devices[0].idevid_chain, Csr(k2.get())),
              test::HasCode(ErrorCode::kPermissionDenied));
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
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied));
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
  // While the LDevID is valid, the IDevID gets no nonce (it could not be used) and no certificate.
  auto early_nonce = service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll);
  ASSERT_FALSE(early_nonce);
  EXPECT_THAT(early_nonce, test::HasCode(ErrorCode::kConflict));
  auto early = service_->Enroll(devices[0].idevid_chain, Csr(k2.get()));
  ASSERT_FALSE(early);
  EXPECT_THAT(early, test::HasCode(ErrorCode::kConflict));
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
  EXPECT_THAT(service_->Confirm(LdevidChain(*lost)), test::HasCode(ErrorCode::kConflict));
  EXPECT_EQ(Usable(d.serial), 1);
  ASSERT_TRUE(service_->Confirm(LdevidChain(*kept)));
  EXPECT_EQ(Usable(d.serial), 1);
  // The superseded LDevID can no longer renew.
  auto k3 = NewKey();
  auto stale = service_->Reenroll(l1, Csr(k3.get()));
  ASSERT_FALSE(stale);
  EXPECT_THAT(stale, test::HasCode(ErrorCode::kPermissionDenied));
}

TEST_P(EnrollTest, ManifestsMustBeSignedByTheRegisteredManufacturer) {
  Manifest m{"batch-x", "Acme", std::string(kModel), "line-1", 1'700'000'000,
             {{"X-1", std::string(64, 'c'), "1.0", kFirmware}}};
  auto rogue_key = NewKey();
  auto rogue_ca = MakeManufacturerCa(rogue_key.get(), "Acme", clock_, rng_);
  auto unregistered = service_->ImportManifest(*SignManifest(rogue_key.get(), *rogue_ca, m), "test");
  ASSERT_FALSE(unregistered);
  EXPECT_THAT(unregistered, test::HasCode(ErrorCode::kPermissionDenied));
  // Signed by another key while naming the registered certificate.
  auto forged = service_->ImportManifest(*SignManifest(rogue_key.get(), maker_ca_, m), "test");
  ASSERT_FALSE(forged);
  EXPECT_THAT(forged, test::HasCode(ErrorCode::kPermissionDenied));
  m.manufacturer = "Someone Else";
  auto renamed = service_->ImportManifest(*SignManifest(maker_key_.get(), maker_ca_, m), "test");
  ASSERT_FALSE(renamed);
  EXPECT_THAT(registry_->Get("X-1"), test::HasCode(ErrorCode::kNotFound));
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

// docs/registry.md, "Operator actions on a device's certificate": an operator's hold or keyCompromise of a device's certificate is a lifecycle
// event of the device, which the device cannot undo by enrolling again with its IDevID.
TEST_P(EnrollTest, OperatorHoldAndCompromiseAreStickyLifecycleEvents) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first);
  const registry::Actor op{registry::kOperator, "alice", {"admin"}};

  auto held =
      service_->ChangeCertificateStatus(first->serial, pki::Reason::kCertificateHold, op, "t");
  ASSERT_TRUE(held) << held.error();
  ASSERT_TRUE(*held);
  EXPECT_EQ((*held)->status, pki::Status::kOnHold);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kSuspended);
  EXPECT_EQ(registry::EventName(registry_->History(d.serial)->back().event), "suspend");
  // The attack: re-enroll with the IDevID. No nonce, no certificate, the hold stays.
  const Snapshot suspended = Snap(d.serial);
  auto nonce = service_->IssueNonce(d.idevid_chain, Purpose::kEnroll);
  ASSERT_FALSE(nonce);
  EXPECT_THAT(nonce, test::HasCode(ErrorCode::kPermissionDenied));
  auto k2 = NewKey();
  auto undo = service_->Enroll(d.idevid_chain, Csr(k2.get()));
  ASSERT_FALSE(undo);
  EXPECT_THAT(undo, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_EQ(Snap(d.serial), suspended);
  EXPECT_EQ(authority_->Get(first->serial)->status, pki::Status::kOnHold);

  // Releasing it is resuming the device; releasing a good certificate is refused.
  auto released = service_->ChangeCertificateStatus(first->serial, std::nullopt, op, "t");
  ASSERT_TRUE(released) << released.error();
  ASSERT_TRUE(*released);
  EXPECT_EQ((*released)->status, pki::Status::kGood);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kActive);
  EXPECT_THAT(service_->ChangeCertificateStatus(first->serial, std::nullopt, op, "t"),
              test::HasCode(ErrorCode::kConflict));

  // keyCompromise quarantines the device: no enrollment until an operator clears it, and the
  // compromised key is never certified again.
  auto compromised =
      service_->ChangeCertificateStatus(first->serial, pki::Reason::kKeyCompromise, op, "t");
  ASSERT_TRUE(compromised) << compromised.error();
  EXPECT_EQ((*compromised)->reason, pki::Reason::kKeyCompromise);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kQuarantined);
  const Snapshot quarantined = Snap(d.serial);
  EXPECT_THAT(service_->IssueNonce(d.idevid_chain, Purpose::kEnroll),
              test::HasCode(ErrorCode::kPermissionDenied));
  for (EVP_PKEY* k : {k1.get(), k2.get()}) {
    auto refused = service_->Enroll(d.idevid_chain, Csr(k));
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied));
  }
  EXPECT_EQ(Snap(d.serial), quarantined);
  auto dev = registry_->Get(d.serial);
  registry::TransitionRequest clear;
  clear.serial = d.serial;
  clear.event = registry::Event::kClear;
  clear.expected_version = dev->version;
  clear.actor = op;
  clear.reason = "investigated";
  ASSERT_TRUE(registry_->Transition(clear));
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kProvisioned);
  ASSERT_TRUE(service_->Appraise(d.idevid_chain, Evidence(d.idevid_chain, d.idevid_key.get(),
                                                          k1.get(), Purpose::kEnroll, d.serial)));
  auto same_key = service_->Enroll(d.idevid_chain, Csr(k1.get()));
  ASSERT_FALSE(same_key);
  EXPECT_THAT(same_key, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(same_key.error().message().find("keyCompromise"), std::string::npos)
      << same_key.error();
  auto fresh = Enroll(d, k2.get());
  ASSERT_TRUE(fresh) << fresh.error();
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kActive);

  // A hold put on at the CA alone, past the lifecycle, still stops the IDevID.
  ASSERT_TRUE(authority_->Revoke(fresh->serial, pki::Reason::kCertificateHold, "operator:bob"));
  auto k3 = NewKey();
  EXPECT_THAT(service_->IssueNonce(d.idevid_chain, Purpose::kEnroll),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Enroll(d.idevid_chain, Csr(k3.get())),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_EQ(authority_->Get(fresh->serial)->status, pki::Status::kOnHold);

  // Another reason revokes the credential and suspends the device (it used to leave it active,
  // free to enroll again at once): only after an operator resumes it does the device attest
  // afresh for a new credential.
  ASSERT_TRUE(authority_->Release(fresh->serial, "operator:bob"));
  auto withdrawn =
      service_->ChangeCertificateStatus(fresh->serial, pki::Reason::kAffiliationChanged, op, "t");
  ASSERT_TRUE(withdrawn && *withdrawn);
  EXPECT_EQ((*withdrawn)->status, pki::Status::kRevoked);
  EXPECT_EQ((*withdrawn)->reason, pki::Reason::kAffiliationChanged);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kSuspended);
  EXPECT_THAT(service_->Enroll(d.idevid_chain, Csr(k3.get())),
              test::HasCode(ErrorCode::kPermissionDenied));
  clock_.Advance(1s);
  ASSERT_TRUE(Resume(d.serial, op));
  EXPECT_TRUE(Enroll(d, k3.get()));

  // A certificate that is no device's credential is the CA's alone.
  auto unknown =
      service_->ChangeCertificateStatus("abcdef", pki::Reason::kCertificateHold, op, "t");
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(*unknown);
}

// simpleenroll authenticates the client, then checks the key, and only then verifies the
// signature: a CSR whose signature is junk tells which step refused it.
TEST_P(EnrollTest, CsrIsVerifiedOnlyAfterTheClientAndTheKeyAreChecked) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  std::vector<std::uint8_t> huge_e(375, 0xa5);  // a 3,000-bit public exponent
  huge_e.front() = 0x80;
  const auto slow = RsaCsr(huge_e);
  const Snapshot before = Snap(d.serial);

  auto anonymous = service_->Enroll({}, slow);
  ASSERT_FALSE(anonymous);
  EXPECT_THAT(anonymous, test::HasCode(ErrorCode::kUnauthenticated));
  auto rogue_key = NewKey();
  auto rogue_ca = MakeManufacturerCa(rogue_key.get(), "Rogue", clock_, rng_);
  auto rogue_cert = IssueIdevid(rogue_key.get(), *rogue_ca, Csr(rogue_key.get()),
                                {"R-1", std::string(kModel), "Rogue"}, clock_, rng_);
  auto unknown = service_->Enroll({*rogue_cert, *rogue_ca}, slow);
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Reenroll({}, slow), test::HasCode(ErrorCode::kUnauthenticated));

  // A known device: the key is refused before any signature check.
  auto refused = service_->Enroll(d.idevid_chain, slow);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(refused.error().message().find("exponent"), std::string::npos) << refused.error();
  // An allowed key (e = 65537) gets its (junk) signature checked.
  auto junk = service_->Enroll(d.idevid_chain, RsaCsr({0x01, 0x00, 0x01}));
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message().find("signature"), std::string::npos) << junk.error();
  EXPECT_EQ(Snap(d.serial), before);
}

// Only DER is accepted, and the key a rotation asks for is compared as DER.
TEST_P(EnrollTest, BerRequestsAndRotationsToTheCurrentKeyAreRefused) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  const auto ber = Ber(Csr(k1.get()));
  ASSERT_TRUE(service_->Appraise(d.idevid_chain, Evidence(d.idevid_chain, d.idevid_key.get(),
                                                          k1.get(), Purpose::kEnroll, d.serial)));
  auto refused = service_->Enroll(d.idevid_chain, ber);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(refused.error().message().find("not DER"), std::string::npos) << refused.error();
  auto first = service_->Enroll(d.idevid_chain, Csr(k1.get()));
  ASSERT_TRUE(first) << first.error();

  const ClientChain l1 = LdevidChain(*first);
  ASSERT_TRUE(
      service_->Appraise(l1, Evidence(l1, k1.get(), k1.get(), Purpose::kReenroll, d.serial)));
  const Snapshot before = Snap(d.serial);
  for (const auto& csr : {Csr(k1.get()), Ber(Csr(k1.get()))}) {
    auto same = service_->Reenroll(l1, csr);
    ASSERT_FALSE(same);
    EXPECT_THAT(same, test::HasCode(ErrorCode::kInvalidArgument));
  }
  EXPECT_EQ(Snap(d.serial), before);
}

TEST_P(EnrollTest, NoncesAreRateLimitedPerDevice) {
  auto devices = MakeDevices(2);
  const ServiceOptions options;
  for (int i = 0; i < options.nonce_burst; ++i) {
    ASSERT_TRUE(service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll)) << i;
  }
  const std::int64_t nonces = Rows("attest_nonces");
  Throttled throttled;
  auto over = service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll, &throttled);
  ASSERT_FALSE(over);
  EXPECT_THAT(over, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_EQ(throttled.retry_after, options.nonce_refill);
  EXPECT_EQ(Rows("attest_nonces"), nonces);
  EXPECT_TRUE(service_->IssueNonce(devices[1].idevid_chain, Purpose::kEnroll));  // its own bucket
  clock_.Advance(options.nonce_refill);
  EXPECT_TRUE(service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll));
  EXPECT_FALSE(service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll));

  // Expired nonces are pruned once their retention has passed.
  clock_.Advance(BuiltInTerms().nonce_ttl + options.nonce_retention + 1s);
  auto pruned = service_->Prune();
  ASSERT_TRUE(pruned) << pruned.error();
  EXPECT_EQ(pruned->nonces, nonces + 2);
  EXPECT_EQ(pruned->buckets, 2);
  EXPECT_EQ(Rows("attest_nonces"), 0);
  EXPECT_TRUE(service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll));
}

TEST_P(EnrollTest, DeviceClaimsAreBoundedAndNothingIsStoredForOversizedOnes) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  auto key = NewKey();
  for (const Json& extra :
       {Json{{"swversion", std::string(std::size_t{40} * 1024, 'x')}}, Json{{"swversion", "1.0\n"}},
        Json{{"hwmodel", "a,b=c"}}, Json{{"swname", 7}}}) {
    const std::string ev = Evidence(d.idevid_chain, d.idevid_key.get(), key.get(), Purpose::kEnroll,
                                    d.serial, kFirmware, extra);
    const std::int64_t audited = Rows("audit_entries");
    const std::int64_t appraisals = Rows("appraisals");
    auto refused = service_->Appraise(d.idevid_chain, ev);
    ASSERT_FALSE(refused) << extra.dump().substr(0, 40);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
    EXPECT_EQ(Rows("audit_entries"), audited);
    EXPECT_EQ(Rows("appraisals"), appraisals);
  }
  EXPECT_TRUE(service_->Appraise(
      d.idevid_chain, Evidence(d.idevid_chain, d.idevid_key.get(), key.get(), Purpose::kEnroll,
                               d.serial, kFirmware, Json{{"swversion", "0.1.0"}})));
}

TEST_P(EnrollTest, ReceiptsMustAnswerTheOrderAndNameTheKeys) {
  auto devices = MakeDevices(1);
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  auto cert = Enroll(d, k1.get());
  ASSERT_TRUE(cert);
  auto dev = registry_->Get(d.serial);
  registry::TransitionRequest order;
  order.serial = d.serial;
  order.event = registry::Event::kDecommission;
  order.expected_version = dev->version;
  order.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
  order.reason = "end of life";
  ASSERT_TRUE(registry_->Transition(order));
  clock_.Advance(10s);
  const ClientChain l1 = LdevidChain(*cert);
  auto status = service_->Status(l1);
  ASSERT_TRUE(status);
  const std::string id = status->order_id;
  const Json keys = Json::array({{{"label", "ldevid-1"}, {"key_sha256", KeyHash(k1.get())}}});
  const auto other = NewKey();
  const Json wrong_keys =
      Json::array({{{"label", "ldevid-9"}, {"key_sha256", KeyHash(other.get())}}});
  const Snapshot before = Snap(d.serial);
  const std::pair<std::string, ErrorCode> refusals[] = {
      {Receipt(k1.get(), cert->serial, d.serial, id, Json::array(), Now()),
       ErrorCode::kInvalidArgument},
      {Receipt(k1.get(), cert->serial, d.serial, id, keys, 0), ErrorCode::kPermissionDenied},
      {Receipt(k1.get(), cert->serial, d.serial, id, keys, Now() - 3600),
       ErrorCode::kPermissionDenied},
      {Receipt(k1.get(), cert->serial, d.serial, std::string(64, '0'), keys, Now()),
       ErrorCode::kPermissionDenied},
      {Receipt(k1.get(), cert->serial, d.serial, id, wrong_keys, Now()),
       ErrorCode::kPermissionDenied},
  };
  for (const auto& [receipt, code] : refusals) {
    auto refused = service_->RecordReceipt(receipt);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code(), code) << refused.error();
  }
  EXPECT_EQ(Snap(d.serial), before);
  auto done = service_->RecordReceipt(Receipt(k1.get(), cert->serial, d.serial, id, keys, Now()));
  ASSERT_TRUE(done) << done.error();
  EXPECT_EQ(done->state, registry::State::kDecommissioned);

  // Revoked and tombstoned credentials read nothing.
  EXPECT_THAT(service_->Status(l1), test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Status(d.idevid_chain), test::HasCode(ErrorCode::kPermissionDenied));
}

TEST_P(EnrollTest, IdentifiersOutsideTheCharacterSetAreRefused) {
  for (const std::string& serial :
       {std::string("A,CN=evil"), std::string("A\nB"), std::string("A\0B", 3), std::string(65, 'A'),
        std::string("-A")}) {
    Manifest m{"batch-bad", "Acme",        std::string(kModel),
               "line-1",    1'700'000'000, {{serial, std::string(64, 'c'), "1.0", kFirmware}}};
    auto refused = service_->ImportManifest(*SignManifest(maker_key_.get(), maker_ca_, m), "test");
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  }
  EXPECT_EQ(Rows("devices"), 0);
  Manifest m{"batch-ok", "Acme",        std::string(kModel),
             "line-1",   1'700'000'000, {{"P-1", std::string(64, 'c'), "1.0", kFirmware}}};
  ASSERT_TRUE(service_->ImportManifest(*SignManifest(maker_key_.get(), maker_ca_, m), "test"));
  for (const auto& [tenant, region] : {std::pair<std::string, std::string>{"acme,O=x", "eu"},
                                       {"acme", "eu\nCN=x"},
                                       {"a b", "eu"}}) {
    auto dev = registry_->Get("P-1");
    registry::TransitionRequest req;
    req.serial = "P-1";
    req.event = registry::Event::kProvision;
    req.expected_version = dev->version;
    req.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
    req.tenant = tenant;
    req.region = region;
    auto refused = registry_->Transition(req);
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
    EXPECT_EQ(registry_->Get("P-1")->state, registry::State::kManufactured);
  }
  registry::ManufacturingRecord raw;
  raw.serial = "M-1";
  raw.model = "m\r";
  raw.manufacturer = "Acme";
  raw.idevid_fingerprint = std::string(64, 'd');
  EXPECT_EQ(
      registry_
          ->Import("b", std::span(&raw, 1), registry::Actor{registry::kOperator, "t", {"admin"}})
          .error()
          .code(),
      ErrorCode::kInvalidArgument);
}

// The checks made before a CSR's signature is verified.
// Every refused appraisal is a counter update and an audit entry, so a device's credential
// spends its refusal bucket on them: replaying one evidence JWS or inventing nonces writes at
// most nonce_burst entries, then 429 (kUnavailable) with nothing written.
TEST_P(EnrollTest, RefusedAppraisalsAreRateLimitedPerDevice) {
  auto devices = MakeDevices(2);
  const ServiceOptions options;
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  const std::string evidence =
      Evidence(d.idevid_chain, d.idevid_key.get(), k1.get(), Purpose::kEnroll, d.serial);
  ASSERT_TRUE(service_->Appraise(d.idevid_chain, evidence));
  const std::int64_t entries = AuditEntries();
  for (int i = 0; i < options.nonce_burst; ++i) {
    auto replayed = service_->Appraise(d.idevid_chain, evidence);
    ASSERT_FALSE(replayed);
    EXPECT_THAT(replayed, test::HasCode(ErrorCode::kPermissionDenied)) << i;
  }
  EXPECT_EQ(AuditEntries(), entries + options.nonce_burst);
  EXPECT_EQ((*service_->Counters())["nonce_replayed"], options.nonce_burst);
  for (int i = 0; i < 3 * options.nonce_burst; ++i) {
    Throttled throttled;
    auto over = service_->Appraise(d.idevid_chain, evidence, &throttled);
    ASSERT_FALSE(over);
    EXPECT_THAT(over, test::HasCode(ErrorCode::kUnavailable)) << i;
    EXPECT_EQ(throttled.retry_after, options.nonce_refill);
  }
  EXPECT_EQ(AuditEntries(), entries + options.nonce_burst);
  EXPECT_EQ((*service_->Counters())["nonce_replayed"], options.nonce_burst);
  // The refusal bucket is not the nonce bucket: the device still gets nonces and may pass.
  auto k2 = NewKey();
  EXPECT_TRUE(service_->Appraise(d.idevid_chain, Evidence(d.idevid_chain, d.idevid_key.get(),
                                                          k2.get(), Purpose::kEnroll, d.serial)));
  // Made-up nonces from another device: its own bucket, the same bound.
  TestDevice& e = devices[1];
  const std::int64_t before_e = AuditEntries();
  int refused = 0;
  int throttled = 0;
  for (int i = 0; i < 2 * options.nonce_burst; ++i) {
    const Json claims{{"eat_profile", kEvidenceProfile},
                      {"eat_nonce", crypto::Base64UrlEncode(*rng_.Bytes(32))},
                      {"serial", e.serial},
                      {"fw_sha256", kFirmware},
                      {"key_sha256", KeyHash(k1.get())}};
    auto jws = crypto::SignJws(e.idevid_key.get(), {{"typ", kEvidenceType}}, claims.dump());
    ASSERT_TRUE(jws);
    auto answer = service_->Appraise(e.idevid_chain, *jws);
    ASSERT_FALSE(answer);
    refused += answer.error().code() == ErrorCode::kPermissionDenied ? 1 : 0;
    throttled += answer.error().code() == ErrorCode::kUnavailable ? 1 : 0;
  }
  EXPECT_EQ(refused, options.nonce_burst);
  EXPECT_EQ(throttled, options.nonce_burst);
  EXPECT_EQ(AuditEntries(), before_e + options.nonce_burst);
  // The bucket refills: one more refusal is recorded after nonce_refill.
  clock_.Advance(options.nonce_refill);
  EXPECT_THAT(service_->Appraise(d.idevid_chain, evidence),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(service_->Appraise(d.idevid_chain, evidence), test::HasCode(ErrorCode::kUnavailable));
}

// A revoked LDevID (keyCompromise here) and a tombstoned IDevID are refused before their
// evidence is verified: 403 and nothing written, however often they try.
TEST_P(EnrollTest, RevokedAndTombstonedCredentialsAppraiseNothing) {
  auto devices = MakeDevices(2);
  const registry::Actor op{registry::kOperator, "alice", {"admin"}};
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first) << first.error();
  const ClientChain l1 = LdevidChain(*first);
  auto k2 = NewKey();
  const std::string evidence = Evidence(l1, k1.get(), k2.get(), Purpose::kReenroll, d.serial);
  ASSERT_TRUE(
      service_->ChangeCertificateStatus(first->serial, pki::Reason::kKeyCompromise, op, "stolen"));
  const std::int64_t entries = AuditEntries();
  const std::int64_t appraisals = Rows("appraisals");
  const auto counters = *service_->Counters();
  for (int i = 0; i < 3 * ServiceOptions{}.nonce_burst; ++i) {
    auto refused = service_->Appraise(l1, evidence);
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied)) << i;
  }
  EXPECT_EQ(AuditEntries(), entries);
  EXPECT_EQ(Rows("appraisals"), appraisals);
  EXPECT_EQ(*service_->Counters(), counters);

  // A decommissioned device's IDevID, with evidence made while it could still enroll.
  TestDevice& e = devices[1];
  auto k3 = NewKey();
  const std::string early =
      Evidence(e.idevid_chain, e.idevid_key.get(), k3.get(), Purpose::kEnroll, e.serial);
  auto k4 = NewKey();
  auto cert = Enroll(e, k4.get());
  ASSERT_TRUE(cert) << cert.error();
  auto dev = registry_->Get(e.serial);
  registry::TransitionRequest order;
  order.serial = e.serial;
  order.event = registry::Event::kDecommission;
  order.expected_version = dev->version;
  order.actor = op;
  order.reason = "end of life";
  ASSERT_TRUE(registry_->Transition(order));
  auto status = service_->Status(LdevidChain(*cert));
  ASSERT_TRUE(status);
  const Json destroyed = Json::array({{{"label", "ldevid"}, {"key_sha256", KeyHash(k4.get())}}});
  ASSERT_TRUE(service_->RecordReceipt(
      Receipt(k4.get(), cert->serial, e.serial, status->order_id, destroyed, Now())));
  const std::int64_t after_erase = AuditEntries();
  const std::int64_t appraisals_after_erase = Rows("appraisals");
  for (int i = 0; i < 3; ++i) {
    auto refused = service_->Appraise(e.idevid_chain, early);
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied)) << i;
  }
  EXPECT_EQ(AuditEntries(), after_erase);
  EXPECT_EQ(Rows("appraisals"), appraisals_after_erase);
}

// fleetid ca revoke with any reason but superseded (and keyCompromise, which quarantines) on a
// device's current LDevID suspends the device with that LDevID revoked; the IDevID enrolls
// again only after an operator resumes it. A revocation past the lifecycle (the CA alone) is
// as sticky: the device's IDevID is refused until an operator suspends and resumes it.
TEST_P(EnrollTest, OtherRevocationsSuspendUntilAnOperatorResumes) {
  const pki::Reason reasons[] = {pki::Reason::kPrivilegeWithdrawn, pki::Reason::kAffiliationChanged,
                                 pki::Reason::kCessationOfOperation, pki::Reason::kUnspecified};
  auto devices = MakeDevices(static_cast<int>(std::size(reasons)) + 1);
  const registry::Actor op{registry::kOperator, "alice", {"admin"}};
  for (std::size_t i = 0; i < std::size(reasons); ++i) {
    TestDevice& d = devices[i];
    SCOPED_TRACE(std::string(pki::ReasonName(reasons[i])));
    auto k1 = NewKey();
    auto first = Enroll(d, k1.get());
    ASSERT_TRUE(first) << first.error();
    auto revoked = service_->ChangeCertificateStatus(first->serial, reasons[i], op, "t");
    ASSERT_TRUE(revoked) << revoked.error();
    const std::optional<pki::CertificateRecord>& revoked_answer = *revoked;
    if (!revoked_answer.has_value()) GTEST_FAIL();
    const pki::CertificateRecord& revoked_record = *revoked_answer;
    EXPECT_EQ(revoked_record.status, pki::Status::kRevoked);
    EXPECT_EQ(revoked_record.reason, reasons[i]);
    EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kSuspended);
    EXPECT_EQ(registry::EventName(registry_->History(d.serial)->back().event), "suspend");
    const Snapshot suspended = Snap(d.serial);
    auto k2 = NewKey();
    EXPECT_THAT(service_->IssueNonce(d.idevid_chain, Purpose::kEnroll),
                test::HasCode(ErrorCode::kPermissionDenied));
    EXPECT_THAT(service_->Enroll(d.idevid_chain, Csr(k2.get())),
                test::HasCode(ErrorCode::kPermissionDenied));
    EXPECT_EQ(Snap(d.serial), suspended);
    clock_.Advance(1s);
    ASSERT_TRUE(Resume(d.serial, op));
    EXPECT_EQ(authority_->Get(first->serial)->status, pki::Status::kRevoked);
    auto fresh = Enroll(d, k2.get());
    ASSERT_TRUE(fresh) << fresh.error();
    EXPECT_EQ(Usable(d.serial), 1);
  }

  // Past the lifecycle: the CA alone revokes the current LDevID of an active device.
  TestDevice& d = devices.back();
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first) << first.error();
  ASSERT_TRUE(authority_->Revoke(first->serial, pki::Reason::kPrivilegeWithdrawn, "operator:bob"));
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kActive);
  const Snapshot active = Snap(d.serial);
  auto k2 = NewKey();
  auto nonce = service_->IssueNonce(d.idevid_chain, Purpose::kEnroll);
  ASSERT_FALSE(nonce);
  EXPECT_THAT(nonce, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(nonce.error().message().find("privilegeWithdrawn"), std::string::npos) << nonce.error();
  EXPECT_THAT(service_->Enroll(d.idevid_chain, Csr(k2.get())),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_EQ(Snap(d.serial), active);
  clock_.Advance(1s);
  auto dev = registry_->Get(d.serial);
  registry::TransitionRequest suspend;
  suspend.serial = d.serial;
  suspend.event = registry::Event::kSuspend;
  suspend.expected_version = dev->version;
  suspend.actor = op;
  suspend.reason = "looking";
  ASSERT_TRUE(registry_->Transition(suspend));
  clock_.Advance(1s);
  ASSERT_TRUE(Resume(d.serial, op));
  auto fresh = Enroll(d, k2.get());
  ASSERT_TRUE(fresh) << fresh.error();

  // The lapse path is unchanged: a good LDevID that expired lets the IDevID enroll again.
  clock_.Advance(std::chrono::duration_cast<std::chrono::seconds>(fresh->not_after - clock_.Now()) +
                 1s);
  auto k3 = NewKey();
  auto lapsed = Enroll(d, k3.get());
  ASSERT_TRUE(lapsed) << lapsed.error();
}

// An operator's hold (or suspension) of a device with a rotation in flight cancels the pending
// certificate (revoked, superseded): the device's Confirm cannot release it past the hold, not
// even after the operator resumes the device.
TEST_P(EnrollTest, OperatorHoldCancelsAPendingRotation) {
  auto devices = MakeDevices(1);
  const registry::Actor op{registry::kOperator, "alice", {"admin"}};
  TestDevice& d = devices[0];
  auto k1 = NewKey();
  auto first = Enroll(d, k1.get());
  ASSERT_TRUE(first) << first.error();
  const ClientChain l1 = LdevidChain(*first);
  // Rotate starts a rotation to |key| and answers the pending certificate.
  const auto rotate = [&](EVP_PKEY* key) -> Result<pki::CertificateRecord> {
    FLEETID_TRY(appraisal,
                service_->Appraise(l1, Evidence(l1, k1.get(), key, Purpose::kReenroll, d.serial)));
    (void)appraisal;
    return service_->Reenroll(l1, Csr(key));
  };

  // The hold names the current certificate.
  auto k2 = NewKey();
  auto pending = rotate(k2.get());
  ASSERT_TRUE(pending) << pending.error();
  EXPECT_EQ(pending->status, pki::Status::kOnHold);
  auto held = service_->ChangeCertificateStatus(first->serial, pki::Reason::kCertificateHold, op,
                                                "looking");
  ASSERT_TRUE(held && *held) << (held ? "" : held.error().message());
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kSuspended);
  auto cancelled = authority_->Get(pending->serial);
  EXPECT_EQ(cancelled->status, pki::Status::kRevoked);
  EXPECT_EQ(cancelled->reason, pki::Reason::kSuperseded);
  EXPECT_THAT(service_->Confirm(LdevidChain(*pending)), test::HasCode(ErrorCode::kConflict));
  ASSERT_TRUE(service_->ChangeCertificateStatus(first->serial, std::nullopt, op, "resolved"));
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kActive);
  const Snapshot resumed = Snap(d.serial);
  auto confirm = service_->Confirm(LdevidChain(*pending));
  ASSERT_FALSE(confirm);
  EXPECT_THAT(confirm, test::HasCode(ErrorCode::kConflict));
  EXPECT_EQ(Snap(d.serial), resumed);
  EXPECT_EQ(authority_->Get(first->serial)->status, pki::Status::kGood);
  EXPECT_EQ(Usable(d.serial), 1);

  // The hold names the pending certificate itself.
  auto k3 = NewKey();
  auto pending2 = rotate(k3.get());
  ASSERT_TRUE(pending2) << pending2.error();
  auto held2 = service_->ChangeCertificateStatus(pending2->serial, pki::Reason::kCertificateHold,
                                                 op, "looking");
  ASSERT_TRUE(held2) << held2.error();
  const std::optional<pki::CertificateRecord>& held2_answer = *held2;
  if (!held2_answer.has_value()) GTEST_FAIL();
  const pki::CertificateRecord& held2_record = *held2_answer;
  EXPECT_EQ(held2_record.status, pki::Status::kRevoked);
  EXPECT_EQ(registry_->Get(d.serial)->state, registry::State::kSuspended);
  ASSERT_TRUE(Resume(d.serial, op));
  EXPECT_THAT(service_->Confirm(LdevidChain(*pending2)), test::HasCode(ErrorCode::kConflict));
  EXPECT_EQ(authority_->Get(pending2->serial)->status, pki::Status::kRevoked);

  // Once active, the device rotates again as usual.
  auto k4 = NewKey();
  auto pending3 = rotate(k4.get());
  ASSERT_TRUE(pending3) << pending3.error();
  auto confirmed = service_->Confirm(LdevidChain(*pending3));
  ASSERT_TRUE(confirmed) << confirmed.error();
  EXPECT_EQ(confirmed->status, pki::Status::kGood);
}

// A database error while looking the certificate or its device up is returned, never taken for
// "no device's certificate" (which would let the CLI hold or revoke at the CA alone).
TEST_P(EnrollTest, DatabaseErrorsAreNotTakenForACertificateOfNoDevice) {
  auto devices = MakeDevices(1);
  const registry::Actor op{registry::kOperator, "alice", {"admin"}};
  auto k1 = NewKey();
  auto first = Enroll(devices[0], k1.get());
  ASSERT_TRUE(first) << first.error();
  const auto exec = [&](const std::string& sql) {
    auto tx = db().Begin(store::TxMode::kWrite);
    ASSERT_TRUE(tx);
    ASSERT_TRUE((*tx)->Exec(sql)) << sql;
    ASSERT_TRUE((*tx)->Commit());
  };
  for (const std::string table : {"devices", "certificates"}) {
    SCOPED_TRACE(table);
    exec(fmt::format("ALTER TABLE {} RENAME TO {}_away", table, table));
    auto changed =
        service_->ChangeCertificateStatus(first->serial, pki::Reason::kCertificateHold, op, "t");
    exec(fmt::format("ALTER TABLE {}_away RENAME TO {}", table, table));
    ASSERT_FALSE(changed);
    EXPECT_NE(changed.error().code(), ErrorCode::kNotFound) << changed.error();
    EXPECT_EQ(authority_->Get(first->serial)->status, pki::Status::kGood);
    EXPECT_EQ(registry_->Get(devices[0].serial)->state, registry::State::kActive);
  }
  // Not found is still the CA's alone.
  auto unknown =
      service_->ChangeCertificateStatus("abcdef", pki::Reason::kCertificateHold, op, "t");
  ASSERT_TRUE(unknown) << unknown.error();
  EXPECT_FALSE(*unknown);
}

TEST(CsrCheck, AcceptsDerOnly) {
  using Bytes = std::vector<std::uint8_t>;
  for (const Bytes& good :
       {Bytes{0x30, 0x00}, Bytes{0x30, 0x03, 0x02, 0x01, 0x7f},
        Bytes{0x30, 0x04, 0x02, 0x02, 0x00, 0x80}, Bytes{0x01, 0x01, 0xff},
        Bytes{0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02}, Bytes{0x03, 0x02, 0x01, 0x80}}) {
    EXPECT_TRUE(CheckDer(good)) << crypto::Hex(good);
  }
  for (const Bytes& bad : {
           Bytes{0x30, 0x80, 0x00, 0x00},                          // indefinite length
           Bytes{0x30, 0x81, 0x00},                                // long form for a short length
           Bytes{0x30, 0x82, 0x00, 0x01, 0x05},                    // length with a leading zero
           Bytes{0x02, 0x02, 0x00, 0x01},                          // INTEGER not minimal
           Bytes{0x02, 0x02, 0xff, 0x80},                          // negative INTEGER not minimal
           Bytes{0x01, 0x01, 0x01},                                // BOOLEAN TRUE not FF
           Bytes{0x24, 0x03, 0x04, 0x01, 0x00},                    // constructed OCTET STRING
           Bytes{0x31, 0x06, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01},  // SET OF not sorted
           Bytes{0x03, 0x02, 0x01, 0x81},                          // BIT STRING padding not zero
           Bytes{0x30, 0x00, 0x00},                                // bytes after the end
           Bytes{0x30, 0x05, 0x02, 0x01},                          // length past the end
       }) {
    auto refused = CheckDer(bad);
    ASSERT_FALSE(refused) << crypto::Hex(bad);
    EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  }
}

TEST(CsrCheck, KeysMustBelongToAnAllowedSuite) {
  crypto::SuitePolicy policy;
  auto p256 = NewKey();
  auto checked = CheckCsrKey(Csr(p256.get()), policy);
  ASSERT_TRUE(checked) << checked.error();
  EXPECT_EQ(checked->suite, crypto::SuiteId::kEcdsaP256Sha256);
  EXPECT_EQ(checked->spki, *crypto::PublicKeyDer(p256.get()));
  crypto::EvpPkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  const std::vector<std::uint8_t> ed_csr = test::MakeCsr(ed.get());
  EXPECT_EQ(CheckCsrKey(ed_csr, policy)->suite, crypto::SuiteId::kEd25519);
  EXPECT_EQ(CheckCsrKey(RsaCsr({0x01, 0x00, 0x01}), policy)->suite,
            crypto::SuiteId::kRsa3072PssSha256);
  for (const std::vector<std::uint8_t>& e :
       {std::vector<std::uint8_t>{0x01, 0x00, 0x00}, std::vector<std::uint8_t>{0x01},
        std::vector<std::uint8_t>{0x01, 0x00, 0x00, 0x00, 0x01}}) {
    auto refused = CheckCsrKey(RsaCsr(e), policy);
    ASSERT_FALSE(refused) << crypto::Hex(e);
    EXPECT_NE(refused.error().message().find("exponent"), std::string::npos) << refused.error();
  }
  policy.Set(crypto::SuiteId::kEcdsaP256Sha256, crypto::SuiteStatus::kDisabled);
  EXPECT_THAT(CheckCsrKey(Csr(p256.get()), policy), test::HasCode(ErrorCode::kPermissionDenied));
}

// docs/security.md: an RSA key under the id-RSASSA-PSS OID is the same key as under
// rsaEncryption, and would escape a comparison of SPKI bytes; no suite certifies one.
TEST(CsrCheck, RsaPssOidKeysAreRefused) {
  crypto::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA-PSS", nullptr));
  EVP_PKEY* generated = nullptr;
  ASSERT_TRUE(ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 &&
              EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 3072) == 1 &&
              EVP_PKEY_generate(ctx.get(), &generated) == 1);
  crypto::EvpPkeyPtr pss(generated);
  auto refused = CheckCsrKey(Csr(pss.get()), crypto::SuitePolicy());
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(refused.error().message().find("id-RSASSA-PSS"), std::string::npos) << refused.error();
}

// A device's credential class decides its suites, LDevID lifetime, nonce lifetime, renewal
// point and whether it needs attestation; the class comes from the policy version in force when
// it asks, and a device no class takes gets nothing.
TEST_P(EnrollTest, CredentialClassDecidesHowADeviceEnrolls) {
  auto lenient = policy::Policy::Parse(R"({"schema": "fleetid.policy/v1", "roles": {},
    "credentials": [
      {"name": "acme-sensors", "match": {"tenants": ["acme"], "models": ["sensor-1"]},
       "suites": ["ecdsa-p256-sha256"], "ldevid_lifetime_seconds": 3600,
       "renew_at_percent": 50, "attestation_required": false, "nonce_lifetime_seconds": 30},
      {"name": "default", "suites": ["ecdsa-p384-sha384"]}]})");
  ASSERT_TRUE(lenient) << lenient.error();
  auto elsewhere = policy::Policy::Parse(R"({"schema": "fleetid.policy/v1", "roles": {},
    "credentials": [{"name": "other", "match": {"tenants": ["other"]},
                     "suites": ["ecdsa-p256-sha256"]}]})");
  ASSERT_TRUE(elsewhere) << elsewhere.error();
  std::shared_ptr<const policy::Policy> active = *lenient;
  effects_ = std::make_unique<PkiEffects>(
      *authority_, [&active](const registry::Device& d) { return TermsFor(*active, d); });
  registry_ = std::make_unique<registry::Registry>(db(), clock_, effects_.get(),
                                                   registry::RegistryOptions{});
  service_ = std::make_unique<Service>(db(), *registry_, *authority_, *effects_, clock_, rng_,
                                       ServiceOptions{});
  auto devices = MakeDevices(2, "CC");

  auto nonce = service_->IssueNonce(devices[0].idevid_chain, Purpose::kEnroll);
  ASSERT_TRUE(nonce) << nonce.error();
  EXPECT_EQ(nonce->expires_at, clock_.Now() + 30s);
  // P-384 is not among the class's suites; without evidence a P-256 key enrolls.
  crypto::EvpPkeyPtr p384(EVP_EC_gen("P-384"));
  EXPECT_THAT(service_->Enroll(devices[0].idevid_chain, Csr(p384.get())),
              test::HasCode(ErrorCode::kPermissionDenied));
  auto p256 = NewKey();
  auto enrolled = service_->Enroll(devices[0].idevid_chain, Csr(p256.get()));
  ASSERT_TRUE(enrolled) << enrolled.error();
  EXPECT_EQ(enrolled->not_after, clock_.Now() + 1h);
  auto status = service_->Status(LdevidChain(*enrolled));
  ASSERT_TRUE(status) << status.error();
  EXPECT_EQ(status->renew_at_percent, 50);

  // Under a version whose classes take no device of tenant acme, the other device gets nothing.
  active = *elsewhere;
  auto refused = service_->Enroll(devices[1].idevid_chain, Csr(p256.get()));
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(refused.error().message(), ::testing::HasSubstr("no credential class"));
}

INSTANTIATE_TEST_SUITE_P(Backends, EnrollTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::enroll
