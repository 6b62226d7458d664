#include "api/routes_test_util.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "api/operator_api.h"

#include "audit/log.h"
#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "enroll/factory.h"
#include "testing/certs.h"
#include "testing/token.h"

namespace fleetid::api::testing {

namespace {

const std::string kFirmware(64, 'a');

std::string KeyHash(EVP_PKEY* key) {
  auto spki = crypto::PublicKeyDer(key);
  if (!spki) return {};
  return crypto::Hex(crypto::Sha256(*spki));
}

}  // namespace

crypto::EvpPkeyPtr NewKey() { return crypto::EvpPkeyPtr(EVP_EC_gen("P-256")); }

std::vector<std::uint8_t> Csr(EVP_PKEY* key) { return test::MakeCsr(key); }

crypto::X509Ptr ParseX509(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  return crypto::X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::vector<std::uint8_t> Bytes(std::string_view text) { return {text.begin(), text.end()}; }

void RoutesTest::SetUp() {
  db_ = std::make_unique<test::TestDb>(test::Backend::kSqlite);
  ASSERT_TRUE(enroll::Service::Migrate(db()));
  crypto::OpenSslRng& rng = crypto::OpenSslRng::Instance();
  auto authority = pki::Authority::Open(test::Opened().token, db(), clock_, rng, {});
  ASSERT_TRUE(authority) << authority.error();
  authority_ = std::move(*authority);
  effects_ = std::make_unique<enroll::PkiEffects>(*authority_);
  registry_ = std::make_unique<registry::Registry>(db(), clock_, effects_.get(),
                                                   registry::RegistryOptions{});
  service_ = std::make_unique<enroll::Service>(db(), *registry_, *authority_, *effects_, clock_,
                                               rng, enroll::ServiceOptions{});
  auto signer = audit::AuditSigner(*test::Opened().token, rng);
  ASSERT_TRUE(signer) << signer.error();
  auto pem = crypto::PublicKeyPem((*signer)->public_key());
  ASSERT_TRUE(pem) << pem.error();
  audit_pem_ = *pem;
  audit_log_ = std::make_unique<audit::Log>(db(), *signer, clock_);
  maker_key_ = NewKey();
  auto ca = enroll::MakeManufacturerCa(maker_key_.get(), "Acme", clock_, rng);
  ASSERT_TRUE(ca) << ca.error();
  maker_ca_ = *ca;
  ASSERT_TRUE(service_->AddManufacturer(maker_ca_, "Acme", "operator:test"));
  ASSERT_TRUE(service_->AddReferenceValue(kModel, kFirmware, "operator:test"));

  RegisterPkiRoutes(router_, *authority_, clock_);
  RegisterEstRoutes(router_, *service_);
  auto versions = policy::Versions::Open(db(), clock_);
  ASSERT_TRUE(versions) << versions.error();
  policy_ = std::move(*versions);
  ASSERT_TRUE(operators::Operators::Migrate(db()));
  operators_ = std::make_unique<operators::Operators>(db(), *authority_, *policy_, clock_, rng);
  const OperatorApi operator_api{.operators = *operators_,
                                 .policy = *policy_,
                                 .registry = *registry_,
                                 .authority = *authority_,
                                 .enrollment = *service_,
                                 .rng = rng,
                                 .clock = clock_};
  RegisterAuditRoutes(router_, *audit_log_, audit_pem_, OperatorAuditGate(operator_api));
  RegisterOperatorApi(router_, operator_api);
  RegisterHealthRoute(router_, *authority_, std::string(kVersion));
}

namespace {

enroll::ClientChain ChainOf(const operators::Issued& issued) {
  enroll::ClientChain chain = {issued.certificate.der};
  chain.insert(chain.end(), issued.chain.begin(), issued.chain.end());
  return chain;
}

}  // namespace

enroll::ClientChain RoutesTest::AdminChain() {
  if (!admin_chain_.empty()) return admin_chain_;
  const std::filesystem::path file =
      test::DataDir() /
      fmt::format("bootstrap-{}", ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove(file);
  auto waiting = operators_->PrepareBootstrap(file);
  EXPECT_TRUE(waiting && *waiting);
  std::string code;
  std::ifstream(file) >> code;
  crypto::EvpPkeyPtr key = NewKey();
  auto issued = operators_->Bootstrap(code, "alice", Csr(key.get()));
  EXPECT_TRUE(issued) << issued.error();
  if (issued) admin_chain_ = ChainOf(*issued);
  return admin_chain_;
}

enroll::ClientChain RoutesTest::OperatorChain(const std::string& name,
                                              const std::vector<policy::Grant>& grants) {
  auto alice = operators_->Authenticate(AdminChain());
  EXPECT_TRUE(alice) << alice.error();
  if (!alice) return {};
  auto invitation = operators_->Invite(*alice, name, grants, std::chrono::hours(1));
  EXPECT_TRUE(invitation) << invitation.error();
  if (!invitation) return {};
  crypto::EvpPkeyPtr key = NewKey();
  auto issued = operators_->Enroll(invitation->code, Csr(key.get()));
  EXPECT_TRUE(issued) << issued.error();
  return issued ? ChainOf(*issued) : enroll::ClientChain{};
}

server::HttpResponse RoutesTest::Call(Req request) const {
  server::HttpRequest req;
  req.method = std::move(request.method);
  req.target = std::move(request.target);
  const std::size_t question = req.target.find('?');
  req.path = req.target.substr(0, question);
  if (question != std::string::npos) req.query = req.target.substr(question + 1);
  for (auto& [name, value] : request.headers) {
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    req.headers.emplace_back(std::move(lower), std::move(value));
  }
  req.body = std::move(request.body);
  req.remote_address = "127.0.0.1:40000";
  req.tls = request.tls;
  req.client_chain = std::move(request.chain);
  return router_.Dispatch(req);
}

std::string RoutesTest::HeaderOf(const server::HttpResponse& response, std::string_view name) {
  for (const auto& [n, v] : response.headers) {
    if (n == name) return v;
  }
  return {};
}

Device RoutesTest::MakeDevice(const std::string& serial, const std::string& tenant,
                              const std::string& region) {
  crypto::OpenSslRng& rng = crypto::OpenSslRng::Instance();
  Device d{.serial = serial, .idevid_key = NewKey(), .idevid_chain = {}};
  auto cert = enroll::IssueIdevid(maker_key_.get(), maker_ca_, Csr(d.idevid_key.get()),
                                  {serial, std::string(kModel), "Acme"}, clock_, rng);
  if (!cert) ADD_FAILURE() << cert.error();
  if (!cert) return d;
  d.idevid_chain = {*cert, maker_ca_};
  enroll::Manifest m{.batch = "batch-" + serial,
                     .manufacturer = "Acme",
                     .model = std::string(kModel),
                     .station = "line-1",
                     .manufactured_at = 1'700'000'000,
                     .devices = {{serial, crypto::Hex(crypto::Sha256(*cert)), "1.0", kFirmware}}};
  auto jws = enroll::SignManifest(maker_key_.get(), maker_ca_, m);
  if (!jws) ADD_FAILURE() << jws.error();
  if (!jws) return d;
  EXPECT_TRUE(service_->ImportManifest(*jws, "test"));
  auto dev = registry_->Get(serial);
  if (!dev) ADD_FAILURE() << dev.error();
  if (!dev) return d;
  registry::TransitionRequest req;
  req.serial = serial;
  req.event = registry::Event::kProvision;
  req.expected_version = dev->version;
  req.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
  req.tenant = tenant;
  req.region = region;
  EXPECT_TRUE(registry_->Transition(req));
  return d;
}

std::string RoutesTest::Evidence(const std::string& serial, std::string_view nonce,
                                 EVP_PKEY* signer, EVP_PKEY* new_key) {
  const nlohmann::json claims{{"eat_profile", enroll::kEvidenceProfile},
                              {"eat_nonce", nonce},
                              {"serial", serial},
                              {"fw_sha256", kFirmware},
                              {"key_sha256", KeyHash(new_key)}};
  auto jws = crypto::SignJws(signer, {{"typ", enroll::kEvidenceType}}, claims.dump());
  if (!jws) ADD_FAILURE() << jws.error();
  return jws ? *jws : std::string();
}

}  // namespace fleetid::api::testing
