// What the api tests share: every route registered on one Router against real components (the
// CA in a SoftHSM2 test token, a fresh SQLite database, a fake clock), requests dispatched
// without sockets, and devices made and provisioned as the factory and an operator would.
#ifndef FLEETID_API_ROUTES_TEST_UTIL_H_
#define FLEETID_API_ROUTES_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/routes.h"
#include "crypto/handles.h"
#include "operators/operators.h"
#include "policy/versions.h"
#include "testing/db.h"

namespace fleetid::api::testing {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Req is what arrives: Req("POST", "/ocsp").Body(der).Headers({{"Content-Type", ...}}), over
// TLS when Tls() or Chain() is called.
struct Req {
  Req(std::string m, std::string t) : method(std::move(m)), target(std::move(t)) {}
  Req& Body(std::string b) {
    body = std::move(b);
    return *this;
  }
  Req& Headers(testing::Headers h) {
    headers = std::move(h);
    return *this;
  }
  Req& Tls() {
    tls = true;
    return *this;
  }
  Req& Chain(enroll::ClientChain c) {
    chain = std::move(c);
    tls = true;
    return *this;
  }

  std::string method;
  std::string target;
  std::string body;
  testing::Headers headers;
  bool tls = false;
  enroll::ClientChain chain;
};

struct Device {
  std::string serial;
  crypto::EvpPkeyPtr idevid_key;
  enroll::ClientChain idevid_chain;
};

inline constexpr std::string_view kVersion = "test-version";
inline constexpr std::string_view kModel = "sensor-1";

class RoutesTest : public ::testing::Test {
 protected:
  void SetUp() override;

  // Call dispatches |request| through the router as the server would hand it to a Handler.
  server::HttpResponse Call(Req request) const;
  // HeaderOf is the value of |response|'s header |name| (exact name), or "" if it has none.
  static std::string HeaderOf(const server::HttpResponse& response, std::string_view name);

  // MakeDevice runs the factory for one device, imports its signed manifest and provisions it.
  Device MakeDevice(const std::string& serial, const std::string& tenant = "acme",
                    const std::string& region = "eu");
  // Evidence is a JWS of the device's claims over |nonce|, signed by |signer|, naming |new_key|.
  static std::string Evidence(const std::string& serial, std::string_view nonce, EVP_PKEY* signer,
                              EVP_PKEY* new_key);

  store::Database& db() { return db_->db(); }

  // AdminChain is the client chain of alice, the first administrator (bootstrapped on first
  // use); OperatorChain that of |name|, invited by alice with |grants| and enrolled.
  enroll::ClientChain AdminChain();
  enroll::ClientChain OperatorChain(const std::string& name,
                                    const std::vector<policy::Grant>& grants);

  FakeClock clock_{TimePoint(std::chrono::seconds(1'795'000'000))};
  std::unique_ptr<test::TestDb> db_;
  std::unique_ptr<pki::Authority> authority_;
  std::unique_ptr<enroll::PkiEffects> effects_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<enroll::Service> service_;
  std::unique_ptr<audit::Log> audit_log_;
  std::unique_ptr<policy::Versions> policy_;
  std::unique_ptr<operators::Operators> operators_;
  enroll::ClientChain admin_chain_;
  std::string audit_pem_;
  crypto::EvpPkeyPtr maker_key_;
  std::vector<std::uint8_t> maker_ca_;
  server::Router router_;
};

crypto::EvpPkeyPtr NewKey();
// Csr is a PKCS#10 request for |key|, signed by it.
std::vector<std::uint8_t> Csr(EVP_PKEY* key);
crypto::X509Ptr ParseX509(std::span<const std::uint8_t> der);
// Bytes is |text|'s bytes.
std::vector<std::uint8_t> Bytes(std::string_view text);

}  // namespace fleetid::api::testing

#endif  // FLEETID_API_ROUTES_TEST_UTIL_H_
