// EST, attestation and device routes dispatched through the Router: a device's whole life
// (nonce, evidence, enrollment, status, rotation, decommissioning receipt) and every refusal.
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "api/http_util.h"
#include "api/routes_test_util.h"
#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "crypto/keys.h"

namespace fleetid::api::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using server::HttpResponse;

constexpr std::string_view kTlsOnly = "EST and device calls are served over HTTPS only";
constexpr std::string_view kCertsOnly = "application/pkcs7-mime; smime-type=certs-only";

Json RecordJson(const pki::CertificateRecord& r) {
  Json j{{"serial", r.serial},
         {"status", pki::StatusName(r.status)},
         {"not_before", UnixSeconds(r.not_before)},
         {"not_after", UnixSeconds(r.not_after)}};
  if (r.reason) j["reason"] = pki::ReasonName(*r.reason);
  return j;
}

class EstRoutesTest : public RoutesTest {
 protected:
  // NonceFor asks /attest/v1/nonce over |chain| and returns the nonce ("" on failure).
  std::string NonceFor(const enroll::ClientChain& chain, std::string_view purpose) {
    const HttpResponse r =
        Call(Req("POST", "/attest/v1/nonce").Body(Json{{"purpose", purpose}}.dump()).Chain(chain));
    EXPECT_EQ(r.status, 200) << r.body;
    const Json body = Json::parse(r.body, nullptr, false);
    EXPECT_EQ(body.size(), 2u);
    EXPECT_EQ(body.value("expires_at", std::int64_t{0}), UnixSeconds(clock_.Now() + 60s));
    return body.value("nonce", std::string());
  }

  // Attest posts evidence over |chain| signed by |signer| for |new_key| and checks the answer.
  void Attest(const Device& d, const enroll::ClientChain& chain, std::string_view purpose,
              EVP_PKEY* signer, EVP_PKEY* new_key) {
    const std::string evidence = Evidence(d.serial, NonceFor(chain, purpose), signer, new_key);
    const HttpResponse r =
        Call(Req("POST", "/attest/v1/evidence").Body(evidence + "\r\n").Chain(chain));
    EXPECT_EQ(r.status, 200) << r.body;
    const Json body = Json::parse(r.body, nullptr, false);
    EXPECT_EQ(body["result"], "pass");
    EXPECT_EQ(body["evidence_sha256"], crypto::Hex(crypto::Sha256(Bytes(evidence))));
    EXPECT_TRUE(body["appraisal"].is_number_integer());
  }

  // PostCsr posts |key|'s CSR to |route| over |chain| and returns the answer.
  HttpResponse PostCsr(std::string_view route, const enroll::ClientChain& chain, EVP_PKEY* key) {
    return Call(Req("POST", "/.well-known/est/" + std::string(route))
                    .Body(internal::Base64Lines(Csr(key)))
                    .Headers({{"Content-Type", "application/pkcs10"}})
                    .Chain(chain));
  }

  // Current is the device's current credential, as the service knows it.
  pki::CertificateRecord Current(const enroll::ClientChain& chain) {
    auto status = service_->Status(chain);
    if (!status) ADD_FAILURE() << status.error();
    if (!status) return {};
    const std::optional<pki::CertificateRecord>& current = status->current;
    if (!current.has_value()) ADD_FAILURE() << "no current credential";
    return current.value_or(pki::CertificateRecord{});
  }

  // ExpectCertsOnly checks an EST answer carrying exactly |record|'s certificate.
  static void ExpectCertsOnly(const HttpResponse& r, const pki::CertificateRecord& record) {
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type, kCertsOnly);
    EXPECT_EQ(r.headers, (Headers{{"Content-Transfer-Encoding", "base64"}}));
    const std::vector<std::vector<std::uint8_t>> certs{record.der};
    auto p7 = enroll::CertsOnly(certs);
    if (!p7.has_value()) GTEST_FAIL() << p7.error();
    EXPECT_EQ(r.body, internal::Base64Lines(*p7));
  }

  enroll::ClientChain Chain(const pki::CertificateRecord& r) {
    return {r.der, authority_->RootDer()};
  }

  // Receipt signs a decommissioning receipt for |order| with |key| (certificate |kid|).
  std::string Receipt(EVP_PKEY* key, const pki::CertificateRecord& cert, const std::string& serial,
                      const std::string& order, EVP_PKEY* destroyed) {
    auto spki = crypto::PublicKeyDer(destroyed);
    const Json claims{
        {"serial", serial},
        {"order", order},
        {"destroyed", Json::array({{{"label", "ldevid-2"},
                                    {"key_sha256", crypto::Hex(crypto::Sha256(*spki))}}})},
        {"iat", UnixSeconds(clock_.Now())}};
    auto jws =
        crypto::SignJws(key, {{"typ", enroll::kReceiptType}, {"kid", cert.serial}}, claims.dump());
    return jws ? *jws : std::string();
  }

  // Issued is the record of the one certificate in an EST certs-only answer.
  pki::CertificateRecord Issued(const HttpResponse& r) {
    auto der = crypto::Base64Decode(r.body);
    if (!der) ADD_FAILURE() << der.error();
    if (!der) return {};
    const unsigned char* p = der->data();
    crypto::Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der->size())));
    if (!p7 || PKCS7_type_is_signed(p7.get()) == 0 || sk_X509_num(p7->d.sign->cert) != 1) {
      ADD_FAILURE() << "not a certs-only answer";
      return {};
    }
    const ASN1_INTEGER* serial = X509_get0_serialNumber(sk_X509_value(p7->d.sign->cert, 0));
    auto record = authority_->Get(crypto::Hex(
        {ASN1_STRING_get0_data(serial), static_cast<std::size_t>(ASN1_STRING_length(serial))}));
    if (!record) ADD_FAILURE() << record.error();
    return record ? *record : pki::CertificateRecord{};
  }

  // ConfirmAndDecommission confirms the rotation to |pending| (whose key is |key|), then has an
  // operator order decommissioning and the device answer it with its receipt.
  void ConfirmAndDecommission(const Device& d, const pki::CertificateRecord& first,
                              const pki::CertificateRecord& pending, EVP_PKEY* key) {
    const HttpResponse confirmed =
        Call(Req("POST", "/device/v1/rotation/confirm").Chain(Chain(pending)));
    auto current = authority_->Get(pending.serial);
    if (!current.has_value()) GTEST_FAIL() << current.error();
    EXPECT_EQ(current->status, pki::Status::kGood);
    EXPECT_EQ(confirmed.status, 200);
    EXPECT_EQ(confirmed.body, (Json{{"current", RecordJson(*current)}}.dump()));
    auto old = authority_->Get(first.serial);
    EXPECT_TRUE(old && old->status == pki::Status::kRevoked);

    OrderDecommission(d.serial);
    const HttpResponse ordered = Call(Req("GET", "/device/v1/status").Chain(Chain(pending)));
    auto status = service_->Status(Chain(pending));
    if (!status.has_value()) GTEST_FAIL() << status.error();
    const std::optional<pki::CertificateRecord>& held = status->current;
    if (!held.has_value()) GTEST_FAIL() << "no current credential";
    EXPECT_EQ(held->reason, pki::Reason::kCertificateHold);  // held while ordered
    EXPECT_EQ(ordered.status, 200);
    EXPECT_EQ(ordered.body, (Json{{"serial", d.serial},
                                  {"state", registry::StateName(status->device.state)},
                                  {"order", "decommission"},
                                  {"order_id", status->order_id},
                                  {"current", RecordJson(*held)},
                                  {"renew_at_percent", 66}}
                                 .dump()));
    const HttpResponse done =
        Call(Req("POST", "/device/v1/receipt")
                 .Body(Receipt(key, pending, d.serial, status->order_id, key) + "\n")
                 .Chain(Chain(pending)));
    EXPECT_EQ(done.status, 200) << done.body;
    EXPECT_EQ(done.body, R"({"serial":")" + d.serial + R"(","state":"decommissioned"})");
  }

  void OrderDecommission(const std::string& serial) {
    auto dev = registry_->Get(serial);
    if (!dev) ADD_FAILURE() << dev.error();
    if (!dev) return;
    registry::TransitionRequest order;
    order.serial = serial;
    order.event = registry::Event::kDecommission;
    order.expected_version = dev->version;
    order.actor = registry::Actor{registry::kOperator, "test", {"admin"}};
    order.reason = "end of life";
    EXPECT_TRUE(registry_->Transition(order));
  }
};

TEST_F(EstRoutesTest, CaCertsAndCsrAttrsAreBase64DerInLinesOf64) {
  const HttpResponse cacerts = Call(Req("GET", "/.well-known/est/cacerts").Tls());
  EXPECT_EQ(cacerts.status, 200);
  EXPECT_EQ(cacerts.content_type, "application/pkcs7-mime");
  EXPECT_EQ(cacerts.headers, (Headers{{"Content-Transfer-Encoding", "base64"}}));
  auto p7 = service_->CaCerts();
  if (!p7.has_value()) GTEST_FAIL() << p7.error();
  EXPECT_EQ(cacerts.body, internal::Base64Lines(*p7));
  EXPECT_EQ(cacerts.body.find("\r\n"), 64u);
  EXPECT_TRUE(cacerts.body.ends_with("\r\n"));

  const HttpResponse attrs = Call(Req("GET", "/.well-known/est/csrattrs").Tls());
  EXPECT_EQ(attrs.status, 200);
  EXPECT_EQ(attrs.content_type, "application/csrattrs");
  auto der = enroll::Service::CsrAttrs();
  if (!der.has_value()) GTEST_FAIL() << der.error();
  EXPECT_EQ(attrs.body, internal::Base64Lines(*der));
}

TEST_F(EstRoutesTest, ADeviceEnrollsRotatesAndIsDecommissionedThroughTheRoutes) {
  const Device d = MakeDevice("SN-001");
  auto k1 = NewKey();
  Attest(d, d.idevid_chain, "enroll", d.idevid_key.get(), k1.get());
  const HttpResponse enrolled = PostCsr("simpleenroll", d.idevid_chain, k1.get());
  const pki::CertificateRecord first = Current(d.idevid_chain);
  ExpectCertsOnly(enrolled, first);

  const HttpResponse status = Call(Req("GET", "/device/v1/status").Chain(Chain(first)));
  EXPECT_EQ(status.status, 200);
  EXPECT_EQ(status.body, (Json{{"serial", "SN-001"},
                               {"state", "active"},
                               {"order", nullptr},
                               {"current", RecordJson(first)},
                               {"renew_at_percent", 66}}
                              .dump()));

  auto k2 = NewKey();
  Attest(d, Chain(first), "reenroll", k1.get(), k2.get());
  const HttpResponse rotated = PostCsr("simplereenroll", Chain(first), k2.get());
  const pki::CertificateRecord pending = Issued(rotated);
  EXPECT_EQ(pending.status, pki::Status::kOnHold);
  ExpectCertsOnly(rotated, pending);
  ConfirmAndDecommission(d, first, pending, k2.get());
}

TEST_F(EstRoutesTest, EveryRouteRefusesPlainHttp) {
  for (const char* path : {"/.well-known/est/cacerts", "/.well-known/est/csrattrs"}) {
    const HttpResponse r = Call(Req("GET", path));
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
    EXPECT_EQ(r.body, std::string(kTlsOnly) + "\n");
  }
  for (const char* path : {"/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll"}) {
    const HttpResponse r = Call(Req("POST", path).Body("MIIB"));
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
    EXPECT_EQ(r.body, std::string(kTlsOnly) + "\n");
  }
  const std::string json_refusal =
      Json{{"error", "invalid_argument"}, {"message", kTlsOnly}}.dump();
  for (const char* path : {"/attest/v1/nonce", "/attest/v1/evidence", "/device/v1/rotation/confirm",
                           "/device/v1/receipt"}) {
    const HttpResponse r = Call(Req("POST", path).Body("{}"));
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(r.body, json_refusal) << path;
  }
  const HttpResponse status = Call(Req("GET", "/device/v1/status"));
  EXPECT_EQ(status.status, 400);
  EXPECT_EQ(status.body, json_refusal);
}

TEST_F(EstRoutesTest, CsrBodiesOfAnotherTypeOrNotBase64AreEstErrors) {
  const Device d = MakeDevice("SN-002");
  const HttpResponse typed = Call(Req("POST", "/.well-known/est/simpleenroll")
                                      .Body("MIIB")
                                      .Headers({{"Content-Type", "text/plain"}})
                                      .Chain(d.idevid_chain));
  EXPECT_EQ(typed.status, 400);
  EXPECT_EQ(typed.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(typed.body, "the body must be application/pkcs10, not text/plain\n");

  for (const std::string& body :
       {std::string("not base64!"), std::string(std::size_t{70} * 1024, '*')}) {
    const HttpResponse r =
        Call(Req("POST", "/.well-known/est/simplereenroll").Body(body).Chain(d.idevid_chain));
    auto decoded = crypto::Base64Decode(body);
    ASSERT_FALSE(decoded);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body, "the body is not base64: " + decoded.error().message() + "\n");
  }
}

TEST_F(EstRoutesTest, EnrollmentRefusedByTheServiceIsItsStatusInText) {
  const Device d = MakeDevice("SN-003");
  auto key = NewKey();
  const std::vector<std::uint8_t> csr = Csr(key.get());
  const HttpResponse r = PostCsr("simpleenroll", d.idevid_chain, key.get());
  auto expected = service_->Enroll(d.idevid_chain, csr);  // no appraisal: refused alike
  ASSERT_FALSE(expected);
  EXPECT_EQ(r.status, HttpStatus(expected.error().code()));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(r.body, expected.error().message() + "\n");
}

TEST_F(EstRoutesTest, NonceBodiesMustNameAPurpose) {
  const Device d = MakeDevice("SN-004");
  const std::string shape =
      R"({"error":"invalid_argument","message":"the body is {\"purpose\": \"enroll\" | \"reenroll\"}"})";
  for (const char* body : {"", "not json", "[]", R"({"purpose": 1})", R"({"other": "enroll"})"}) {
    const HttpResponse r = Call(Req("POST", "/attest/v1/nonce").Body(body).Chain(d.idevid_chain));
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.body, shape) << body;
  }
  const HttpResponse unknown =
      Call(Req("POST", "/attest/v1/nonce").Body(R"({"purpose": "steal"})").Chain(d.idevid_chain));
  auto expected = enroll::ParsePurpose("steal");
  ASSERT_FALSE(expected);
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(unknown.body, HttpResponse::FromError(expected.error()).body);
}

TEST_F(EstRoutesTest, NoncesOverTheRateAre429WithRetryAfter) {
  const Device d = MakeDevice("SN-005");
  const enroll::ServiceOptions options;
  for (int i = 0; i < options.nonce_burst; ++i) NonceFor(d.idevid_chain, "enroll");
  const HttpResponse r =
      Call(Req("POST", "/attest/v1/nonce").Body(R"({"purpose":"enroll"})").Chain(d.idevid_chain));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers, (Headers{{"Retry-After", std::to_string(options.nonce_refill.count())}}));
  const Json body = Json::parse(r.body, nullptr, false);
  EXPECT_EQ(body["error"], "too_many_requests");
  EXPECT_TRUE(body["message"].is_string());
}

TEST_F(EstRoutesTest, BadOrOversizedEvidenceIsRefusedAsTheServiceSays) {
  const Device d = MakeDevice("SN-006");
  auto key = NewKey();
  for (const std::string& evidence :
       {std::string("a.b.c"), std::string(), std::string(std::size_t{70} * 1024, 'e')}) {
    const HttpResponse r =
        Call(Req("POST", "/attest/v1/evidence").Body(evidence).Chain(d.idevid_chain));
    EXPECT_EQ(r.status, 400) << r.body;
    const Json body = Json::parse(r.body, nullptr, false);
    EXPECT_EQ(body["error"], "invalid_argument");
  }
}

TEST_F(EstRoutesTest, DeviceCallsWithoutACredentialAreRefused) {
  const Device d = MakeDevice("SN-007");
  const HttpResponse confirm =
      Call(Req("POST", "/device/v1/rotation/confirm").Chain(d.idevid_chain));
  auto expected = service_->Confirm(d.idevid_chain);
  ASSERT_FALSE(expected);
  EXPECT_EQ(confirm.status, HttpStatus(expected.error().code()));
  EXPECT_EQ(confirm.body, HttpResponse::FromError(expected.error()).body);

  const HttpResponse receipt =
      Call(Req("POST", "/device/v1/receipt").Body("x.y.z\n").Chain(d.idevid_chain));
  auto refused = service_->RecordReceipt("x.y.z");
  ASSERT_FALSE(refused);
  EXPECT_EQ(receipt.status, 400);
  EXPECT_EQ(receipt.body, HttpResponse::FromError(refused.error()).body);
}

TEST_F(EstRoutesTest, WrongMethodsAre405) {
  const HttpResponse get = Call(Req("GET", "/.well-known/est/simpleenroll").Tls());
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(HeaderOf(get, "Allow"), "POST");
  EXPECT_EQ(get.body, R"({"error":"method_not_allowed","message":"GET is not allowed here"})");
  const HttpResponse post = Call(Req("POST", "/device/v1/status").Tls());
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(HeaderOf(post, "Allow"), "GET, HEAD");
  const HttpResponse none = Call(Req("GET", "/.well-known/est/serverkeygen").Tls());
  EXPECT_EQ(none.status, 404);
}

// Found by est_body_fuzzer: the Content-Type was checked as a prefix, so
// "application/pkcs10t/pl..." was taken for application/pkcs10, and "Application/PKCS10"
// (media types are case-insensitive, RFC 9110 §8.3.1) was refused.
TEST(EstCsrBodyTest, ContentTypeIsTheMediaTypeApplicationPkcs10InAnyCase) {
  const auto body = [](std::string type) {
    server::HttpRequest req;
    if (!type.empty()) req.headers.emplace_back("content-type", std::move(type));
    req.body = "MIIB\r\n";
    return internal::EstCsrBody(req);
  };
  for (const char* type :
       {"", "application/pkcs10", "Application/PKCS10", "application/pkcs10 ; x=y"}) {
    EXPECT_EQ(body(type), Bytes("\x30\x82\x01")) << type;
  }
  for (const char* type : {"application/pkcs10t/plain", "application/pkcs10-x", "text/plain"}) {
    auto refused = body(type);
    ASSERT_FALSE(refused) << type;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace fleetid::api::testing
