// The CA's relying-party routes (OCSP, CRLs, CA certificates) and /healthz, dispatched through
// the Router against a real CA in a SoftHSM2 token.
#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include "api/http_util.h"
#include "api/routes_test_util.h"
#include "crypto/jws.h"

namespace fleetid::api::testing {
namespace {

using server::HttpResponse;

std::vector<std::uint8_t> OcspRequestFor(const pki::CertificateRecord& record,
                                         std::span<const std::uint8_t> issuer_der) {
  crypto::X509Ptr leaf = ParseX509(record.der);
  crypto::X509Ptr issuer = ParseX509(issuer_der);
  crypto::OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_request_add0_id(req.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
  const int len = i2d_OCSP_REQUEST(req.get(), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_OCSP_REQUEST(req.get(), &p);
  return der;
}

int OcspStatus(const std::string& body) {
  const auto* p = reinterpret_cast<const unsigned char*>(body.data());
  crypto::OcspResponsePtr resp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(body.size())));
  return resp ? OCSP_response_status(resp.get()) : -1;
}

std::string Text(std::span<const std::uint8_t> der) { return {der.begin(), der.end()}; }

std::string CacheControl(TimePoint now, TimePoint next_update) {
  return fmt::format("max-age={}, public, no-transform, must-revalidate",
                     std::chrono::duration_cast<std::chrono::seconds>(next_update - now).count());
}

class PkiRoutesTest : public RoutesTest {
 protected:
  // Issued is a good certificate of the default issuing CA, with that CA's DER.
  pki::CertificateRecord Issued() {
    auto key = NewKey();
    auto record = authority_->Issue(Csr(key.get()), {"GW-0001", "acme"}, crypto::SuitePolicy{});
    if (!record) ADD_FAILURE() << record.error();
    return record ? *record : pki::CertificateRecord{};
  }

  std::vector<std::uint8_t> IssuerDer(const pki::CertificateRecord& record) {
    auto der = authority_->CaCertificate(record.issuer);
    if (!der) ADD_FAILURE() << der.error();
    return der ? *der : std::vector<std::uint8_t>{};
  }
};

TEST_F(PkiRoutesTest, OcspPostAnswersTheCachedSignedResponseWithCachingHeaders) {
  const pki::CertificateRecord record = Issued();
  const std::vector<std::uint8_t> request = OcspRequestFor(record, IssuerDer(record));
  const HttpResponse r = Call(Req("POST", "/ocsp")
                                  .Body(Text(request))
                                  .Headers({{"Content-Type", "Application/OCSP-Request; x=1"}}));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/ocsp-response");
  EXPECT_EQ(OcspStatus(r.body), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  const pki::OcspAnswer answer = authority_->Ocsp(request);
  ASSERT_TRUE(answer.cacheable);
  EXPECT_EQ(r.body, Text(answer.der));
  const Headers expected = {{"Cache-Control", CacheControl(clock_.Now(), answer.next_update)},
                            {"Last-Modified", server::HttpDate(answer.this_update)},
                            {"Expires", server::HttpDate(answer.next_update)},
                            {"ETag", answer.etag}};
  EXPECT_EQ(r.headers, expected);
}

TEST_F(PkiRoutesTest, OcspPostOfAnotherMediaTypeIs415BeforeAnyParsing) {
  const std::uint64_t signatures = authority_->OcspSignatures();
  for (const Headers& headers : {Headers{}, Headers{{"Content-Type", "application/json"}},
                                 Headers{{"Content-Type", "application/ocsp-requestx"}}}) {
    const HttpResponse r = Call(Req("POST", "/ocsp").Body("junk").Headers(headers));
    EXPECT_EQ(r.status, 415);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(
        r.body,
        R"({"error":"unsupported_media_type","message":"an OCSP request is application/ocsp-request"})");
  }
  EXPECT_EQ(authority_->OcspSignatures(), signatures);
}

TEST_F(PkiRoutesTest, OcspPostOfGarbageOrAnOversizedBodyIsMalformedRequestNotCached) {
  for (const std::string& body :
       {std::string("not der"), std::string(std::size_t{70} * 1024, 'x')}) {
    const HttpResponse r = Call(
        Req("POST", "/ocsp").Body(body).Headers({{"Content-Type", "application/ocsp-request"}}));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "application/ocsp-response");
    EXPECT_EQ(OcspStatus(r.body), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(r.headers, (Headers{{"Cache-Control", "no-store"}}));
  }
}

// Found from an ocsp_request_fuzzer input: a CertID whose hashAlgorithm parameters are a
// constructed EOC parses, but OpenSSL cannot copy it into an answer (its re-encoding is a
// primitive EOC, which it refuses), so the request got internalError, as if the responder had
// failed. It is the client's malformed request.
TEST_F(PkiRoutesTest, OcspCertIdsOpenSslCannotCopyAreMalformedRequests) {
  const pki::CertificateRecord record = Issued();
  std::vector<std::uint8_t> odd = OcspRequestFor(record, IssuerDer(record));
  const std::vector<std::uint8_t> sha1_null{0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00};
  auto at = std::search(odd.begin(), odd.end(), sha1_null.begin(), sha1_null.end());
  ASSERT_NE(at, odd.end());
  at[7] = 0x20;  // parameters: a constructed EOC instead of NULL
  const std::uint64_t signatures = authority_->OcspSignatures();
  const HttpResponse r = Call(
      Req("POST", "/ocsp").Body(Text(odd)).Headers({{"Content-Type", "application/ocsp-request"}}));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(OcspStatus(r.body), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  EXPECT_EQ(authority_->OcspSignatures(), signatures);
}

TEST_F(PkiRoutesTest, OcspGetAnswersAndHonoursIfNoneMatch) {
  const pki::CertificateRecord record = Issued();
  const std::vector<std::uint8_t> request = OcspRequestFor(record, IssuerDer(record));
  std::string encoded = crypto::Base64Encode(request);
  std::string escaped;
  for (char c : encoded)
    escaped += c == '+' ? "%2B" : c == '/' ? "%2F" : c == '=' ? "%3D" : std::string(1, c);
  const HttpResponse r = Call(Req("GET", "/ocsp/" + escaped));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/ocsp-response");
  EXPECT_EQ(OcspStatus(r.body), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  const pki::OcspAnswer answer = authority_->Ocsp(request);
  EXPECT_EQ(r.body, Text(answer.der));
  EXPECT_EQ(HeaderOf(r, "ETag"), answer.etag);

  const HttpResponse again =
      Call(Req("GET", "/ocsp/" + encoded).Headers({{"If-None-Match", "\"x\", W/" + answer.etag}}));
  EXPECT_EQ(again.status, 304);
  EXPECT_EQ(again.content_type, "");
  EXPECT_EQ(again.body, "");
  EXPECT_EQ(again.headers, r.headers);
}

TEST_F(PkiRoutesTest, OcspGetOfBadBase64IsMalformedRequest) {
  for (const std::string& path : {std::string("/ocsp/"), std::string("/ocsp/%%%"),
                                  std::string("/ocsp/MEQ"), "/ocsp/" + std::string(16388, 'A')}) {
    const HttpResponse r = Call(Req("GET", path));
    EXPECT_EQ(r.status, 200) << path.substr(0, 16);
    EXPECT_EQ(OcspStatus(r.body), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST) << path.substr(0, 16);
    EXPECT_EQ(r.headers, (Headers{{"Cache-Control", "no-store"}}));
  }
}

TEST_F(PkiRoutesTest, CrlsAreServedAtTheirDistributionPoints) {
  const pki::CertificateRecord record = Issued();
  for (const bool delta : {false, true}) {
    const std::string path =
        fmt::format("/crl/{}/{}{}.crl", record.issuer, record.partition, delta ? "-delta" : "");
    const HttpResponse r = Call(Req("GET", path));
    auto crl = authority_->Crl(record.issuer, record.partition, delta);
    if (!crl.has_value()) GTEST_FAIL() << crl.error();
    EXPECT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.content_type, "application/pkix-crl");
    EXPECT_EQ(r.body, Text(crl->der));
    const Headers expected = {{"Cache-Control", CacheControl(clock_.Now(), crl->next_update)},
                              {"Last-Modified", server::HttpDate(crl->this_update)},
                              {"Expires", server::HttpDate(crl->next_update)},
                              {"ETag", crl->etag}};
    EXPECT_EQ(r.headers, expected);
    const HttpResponse held = Call(Req("GET", path).Headers({{"If-None-Match", "*"}}));
    EXPECT_EQ(held.status, 304);
    EXPECT_EQ(held.body, "");
  }
}

TEST_F(PkiRoutesTest, CrlPathsThatNameNoCrlAre404) {
  const pki::CertificateRecord record = Issued();
  const std::string issuer = record.issuer;
  const std::string no_such = R"({"error":"not_found","message":"no such CRL"})";
  for (const std::string& path :
       {std::string("/crl/"), std::string("/crl/x.crl"), "/crl/" + issuer + "/1.pem",
        "/crl/" + issuer + "/01.crl", "/crl/" + issuer + "/+1.crl", "/crl/" + issuer + "/.crl",
        "/crl/" + issuer + "/1x.crl"}) {
    const HttpResponse r = Call(Req("GET", path));
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.body, no_such) << path;
  }
  const HttpResponse unknown = Call(Req("GET", "/crl/nobody/1.crl"));
  EXPECT_EQ(unknown.status, 404);
  auto expected = authority_->Crl("nobody", 1);
  ASSERT_FALSE(expected);
  EXPECT_EQ(unknown.body, HttpResponse::FromError(expected.error()).body);
}

TEST_F(PkiRoutesTest, CaCertificatesAreServedForAia) {
  for (const std::string& name : authority_->CaNames()) {
    const HttpResponse r = Call(Req("GET", "/ca/" + name + ".crt"));
    auto der = authority_->CaCertificate(name);
    if (!der.has_value()) GTEST_FAIL() << der.error();
    EXPECT_EQ(r.status, 200) << name;
    EXPECT_EQ(r.content_type, "application/pkix-cert");
    EXPECT_EQ(r.body, Text(*der));
    EXPECT_EQ(r.headers, (Headers{{"Cache-Control", "max-age=86400, public"}}));
  }
  const HttpResponse no_suffix = Call(Req("GET", "/ca/root"));
  EXPECT_EQ(no_suffix.status, 404);
  EXPECT_EQ(no_suffix.body, R"({"error":"not_found","message":"no such certificate"})");
  const HttpResponse unknown = Call(Req("GET", "/ca/nobody.crt"));
  EXPECT_EQ(unknown.status, 404);
  auto expected = authority_->CaCertificate("nobody");
  ASSERT_FALSE(expected);
  EXPECT_EQ(unknown.body, HttpResponse::FromError(expected.error()).body);
}

TEST_F(PkiRoutesTest, WrongMethodsAre405AndUnknownPaths404) {
  const HttpResponse get_ocsp = Call(Req("GET", "/ocsp"));
  EXPECT_EQ(get_ocsp.status, 405);
  EXPECT_EQ(HeaderOf(get_ocsp, "Allow"), "POST");
  const HttpResponse post_ca = Call(Req("POST", "/ca/root.crt"));
  EXPECT_EQ(post_ca.status, 405);
  EXPECT_EQ(HeaderOf(post_ca, "Allow"), "GET, HEAD");
  const HttpResponse none = Call(Req("GET", "/nothing/here"));
  EXPECT_EQ(none.status, 404);
  EXPECT_EQ(none.body, R"({"error":"not_found","message":"no route for /nothing/here"})");
}

TEST_F(PkiRoutesTest, HealthzSaysWhoTheClientIs) {
  const HttpResponse plain = Call(Req("GET", "/healthz"));
  EXPECT_EQ(plain.status, 200);
  EXPECT_EQ(plain.content_type, "application/json");
  EXPECT_EQ(plain.body, R"({"status":"ok","version":"test-version"})");

  const pki::CertificateRecord record = Issued();
  const HttpResponse client = Call(Req("GET", "/healthz").Chain({record.der, IssuerDer(record)}));
  EXPECT_EQ(client.status, 200);
  const nlohmann::json body = nlohmann::json::parse(client.body);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["client"]["serial"], record.serial);
  EXPECT_EQ(body["client"]["certificate_status"], "good");
  EXPECT_TRUE(body["client"]["subject"].is_string());

  const HttpResponse junk = Call(Req("GET", "/healthz").Chain({Bytes("junk")}));
  EXPECT_EQ(
      junk.body,
      R"({"client":{"error":"unparsable certificate"},"status":"ok","version":"test-version"})");
}

TEST(HttpUtilTest, PercentAndOcspBase64DecodeAsBefore) {
  EXPECT_EQ(internal::PercentDecode("a%2Bb%2fc%3D%zz%4"), "a+b/c=%zz%4");
  EXPECT_EQ(internal::OcspBase64Decode("TWE="), Bytes("Ma"));
  EXPECT_EQ(internal::OcspBase64Decode("TWFu"), Bytes("Man"));
  EXPECT_EQ(internal::OcspBase64Decode("TQ=="), Bytes("M"));
  EXPECT_FALSE(internal::OcspBase64Decode(""));
  EXPECT_FALSE(internal::OcspBase64Decode("TWF"));
  EXPECT_FALSE(internal::OcspBase64Decode("TW F"));
  EXPECT_FALSE(internal::OcspBase64Decode(std::string(16388, 'A')));
  EXPECT_TRUE(internal::IsMediaType("Application/OCSP-Request ; q=1", "application/ocsp-request"));
  EXPECT_FALSE(internal::IsMediaType("application/ocsp-request2", "application/ocsp-request"));
  EXPECT_EQ(internal::WithoutLineEnds("a.b.c\r\n\n"), "a.b.c");
}

// Found by ocsp_request_fuzzer: EVP_DecodeBlock, which OcspBase64Decode used, trims whitespace
// around the text, takes '=' anywhere in it and keeps the zero bits of inner padding as data, and
// accepts non-zero bits after the last symbol; the GET form now reads as crypto::Base64Decode.
TEST(HttpUtilTest, OcspBase64DecodeRefusesWhitespacePaddingInsideAndNonCanonicalTails) {
  for (const char* text : {"    TWFu", "TWFu    ", "TQ==\n\n\n\n", "\tTWE=", "TQ==TWFu",
                           "T===", "====", "TQ=u", "TR==", "TWF=", "TW E="}) {
    EXPECT_FALSE(internal::OcspBase64Decode(text)) << text;
  }
  EXPECT_EQ(internal::OcspBase64Decode("TWFuTQ=="), Bytes("ManM"));
  EXPECT_EQ(internal::OcspBase64Decode("+/+/"), (std::vector<std::uint8_t>{0xfb, 0xff, 0xbf}));
}

}  // namespace
}  // namespace fleetid::api::testing
