// The CA on a real SoftHSM2 token and a real SQLite file: hierarchy, issuance, revocation, OCSP
// and CRLs, each checked with OpenSSL's own verification (and the openssl command line).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "pki/internal/ocsp_responder.h"
#include "pki/pki.h"
#include "testing/certs.h"
#include "testing/command.h"
#include "testing/db.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::pki {
namespace {

using namespace std::chrono_literals;
using crypto::EvpPkeyPtr;
using crypto::OcspRequestPtr;
using crypto::OcspResponsePtr;
using crypto::X509CrlPtr;
using crypto::X509Ptr;
using crypto::X509StorePtr;
using OcspBasicPtr = crypto::OcspBasicRespPtr;

X509Ptr Parse(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  return X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::vector<std::uint8_t> MakeCsr(EVP_PKEY* key) {
  return test::MakeCsr(key, {.common_name = "ignored-by-the-ca"});
}

// Shell runs |cmd| (the real openssl command line) and returns what it printed.
std::string Shell(const std::string& cmd) { return test::RunCommand(cmd).output; }

std::string Pem(const std::vector<std::uint8_t>& der) {
  X509Ptr cert = Parse(der);
  crypto::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

class PkiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::DataDir() / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    auto db = store::Database::Open("sqlite:" + (dir_ / "pki.db").string());
    ASSERT_TRUE(db) << db.error();
    db_ = std::move(*db);
    Open();
  }

  void Open() {
    AuthorityOptions options = options_;
    options.issuing_suites = {crypto::SuiteId::kEcdsaP256Sha256, crypto::SuiteId::kEd25519};
    // Labels are per test so tests sharing the token do not share CA keys.
    auto authority = Authority::Open(test::Opened().token, *db_, clock_,
                                     crypto::OpenSslRng::Instance(), options);
    ASSERT_TRUE(authority) << authority.error();
    authority_ = std::move(*authority);
  }

  CertificateRecord IssueOne(EVP_PKEY* device_key, const std::string& serial = "GW-0001") {
    auto rec = authority_->Issue(MakeCsr(device_key), {serial, "acme"}, policy_);
    EXPECT_TRUE(rec) << rec.error();
    return rec ? *rec : CertificateRecord{};
  }

  // Status asks the responder about |record| and verifies the answer like a relying party would.
  int Status(const CertificateRecord& record, int* reason = nullptr, bool nonce = false) {
    X509Ptr leaf = Parse(record.der);
    X509Ptr issuer = Parse(*authority_->CaCertificate(record.issuer));
    OCSP_CERTID* id = OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get());
    OcspRequestPtr req(OCSP_REQUEST_new());
    OCSP_request_add0_id(req.get(), id);
    if (nonce) OCSP_request_add1_nonce(req.get(), nullptr, -1);
    const int len = i2d_OCSP_REQUEST(req.get(), nullptr);
    std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
    unsigned char* p = der.data();
    i2d_OCSP_REQUEST(req.get(), &p);
    OcspAnswer answer = authority_->Ocsp(der);
    const unsigned char* q = answer.der.data();
    OcspResponsePtr resp(d2i_OCSP_RESPONSE(nullptr, &q, static_cast<long>(answer.der.size())));
    EXPECT_EQ(OCSP_response_status(resp.get()), OCSP_RESPONSE_STATUS_SUCCESSFUL);
    OcspBasicPtr basic(OCSP_response_get1_basic(resp.get()));
    X509StorePtr store(X509_STORE_new());
    X509Ptr root = Parse(authority_->RootDer());
    X509_STORE_add_cert(store.get(), root.get());
    STACK_OF(X509)* chain = sk_X509_new_null();
    sk_X509_push(chain, issuer.get());
    EXPECT_EQ(OCSP_basic_verify(basic.get(), chain, store.get(), 0), 1) << "response signature";
    sk_X509_free(chain);
    if (nonce) {
      EXPECT_EQ(OCSP_check_nonce(req.get(), basic.get()), 1);
    }
    int status = -1;
    int why = -1;
    ASN1_GENERALIZEDTIME* rev = nullptr;
    ASN1_GENERALIZEDTIME* thisupd = nullptr;
    ASN1_GENERALIZEDTIME* nextupd = nullptr;
    EXPECT_EQ(OCSP_resp_find_status(basic.get(), id, &status, &why, &rev, &thisupd, &nextupd), 1);
    EXPECT_EQ(OCSP_check_validity(thisupd, nextupd, 300, -1), 1);
    if (reason != nullptr) *reason = why;
    return status;
  }

  std::filesystem::path dir_;
  AuthorityOptions options_;
  std::unique_ptr<store::Database> db_;
  FakeClock clock_{SystemClock::Instance().Now()};
  crypto::SuitePolicy policy_;
  std::unique_ptr<Authority> authority_;
};

TEST_F(PkiTest, HierarchyIsBuiltInTheTokenAndReloaded) {
  X509Ptr root = Parse(authority_->RootDer());
  ASSERT_TRUE(root);
  EvpPkeyPtr root_pub(X509_get_pubkey(root.get()));
  EXPECT_EQ(X509_verify(root.get(), root_pub.get()), 1);
  EXPECT_EQ(X509_check_ca(root.get()), 1);
  for (const std::string name : {"ecdsa-p256-sha256", "ed25519"}) {
    X509Ptr issuing = Parse(*authority_->CaCertificate(name));
    EXPECT_EQ(X509_verify(issuing.get(), root_pub.get()), 1) << name;
    auto* bc = static_cast<BASIC_CONSTRAINTS*>(
        X509_get_ext_d2i(issuing.get(), NID_basic_constraints, nullptr, nullptr));
    ASSERT_NE(bc, nullptr);
    EXPECT_TRUE(bc->ca);
    EXPECT_EQ(ASN1_INTEGER_get(bc->pathlen), 0);
    BASIC_CONSTRAINTS_free(bc);
    X509Ptr ocsp = Parse(*authority_->CaCertificate("ocsp-" + name));
    EvpPkeyPtr issuing_pub(X509_get_pubkey(issuing.get()));
    EXPECT_EQ(X509_verify(ocsp.get(), issuing_pub.get()), 1);
    EXPECT_TRUE(X509_get_extension_flags(ocsp.get()) & EXFLAG_XKUSAGE);
    EXPECT_TRUE(X509_get_extended_key_usage(ocsp.get()) & XKU_OCSP_SIGN);
    EXPECT_GE(X509_get_ext_by_NID(ocsp.get(), NID_id_pkix_OCSP_noCheck, -1), 0);
  }
  // The CA keys are in the token, sensitive and never extractable.
  auto keys = test::Opened().token->ListKeys();
  ASSERT_TRUE(keys);
  int ca_keys = 0;
  for (const auto& k : *keys) {
    if (k.label.starts_with("fleetid-")) {
      ++ca_keys;
      EXPECT_TRUE(k.HeldInHardware()) << k.label;
    }
  }
  EXPECT_GE(ca_keys, 5);
  const std::vector<std::uint8_t> before = authority_->RootDer();
  authority_.reset();
  Open();
  EXPECT_EQ(authority_->RootDer(), before) << "a second start reuses the hierarchy";
}

TEST_F(PkiTest, IssuedCertificatesVerifyWithOpensslAndCarryTheProfile) {
  for (const char* type : {"P-256", "ED25519"}) {
    EvpPkeyPtr device(std::string(type) == "P-256"
                          ? EVP_EC_gen("P-256")
                          : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    // A hostile serial is refused (the registry's identifier character set, checked by the CA).
    auto hostile =
        authority_->Issue(MakeCsr(device.get()), {"GW-0001/x,URI:evil", "acme"}, policy_);
    ASSERT_FALSE(hostile);
    EXPECT_THAT(hostile, test::HasCode(ErrorCode::kInvalidArgument));
    CertificateRecord rec = IssueOne(device.get(), "GW-0001.x_y");
    X509Ptr leaf = Parse(rec.der);
    ASSERT_TRUE(leaf);
    EXPECT_EQ(rec.serial.size(), 32u);
    EXPECT_EQ(rec.issuer, std::string(type) == "P-256" ? "ecdsa-p256-sha256" : "ed25519");
    // Subject and SAN come from the device record; the CSR's CN is ignored.
    char cn[128] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(leaf.get()), NID_commonName, cn, sizeof(cn));
    EXPECT_STREQ(cn, "GW-0001.x_y");
    auto* sans = static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(leaf.get(), NID_subject_alt_name, nullptr, nullptr));
    ASSERT_NE(sans, nullptr);
    ASSERT_EQ(sk_GENERAL_NAME_num(sans), 1);
    const GENERAL_NAME* san = sk_GENERAL_NAME_value(sans, 0);
    ASSERT_EQ(san->type, GEN_URI);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(
                  ASN1_STRING_get0_data(san->d.uniformResourceIdentifier))),
              "urn:fleetid:device:GW-0001.x_y");
    GENERAL_NAMES_free(sans);
    EXPECT_TRUE(X509_get_extended_key_usage(leaf.get()) & XKU_SSL_CLIENT);
    EXPECT_EQ(X509_check_ca(leaf.get()), 0);
    const auto lifetime = rec.not_after - rec.not_before;
    EXPECT_EQ(lifetime, 24h + 5min);
    // openssl verify, with the chain the CA publishes.
    const auto root = dir_ / "root.pem";
    const auto issuing = dir_ / "issuing.pem";
    const auto leaf_pem = dir_ / "leaf.pem";
    std::ofstream(root) << Pem(authority_->RootDer());
    std::ofstream(issuing) << Pem(*authority_->CaCertificate(rec.issuer));
    std::ofstream(leaf_pem) << Pem(rec.der);
    const std::string out = Shell("openssl verify -purpose sslclient -CAfile " + root.string() +
                                  " -untrusted " + issuing.string() + " " + leaf_pem.string());
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  }
}

TEST_F(PkiTest, BadCsrsAreRefusedAndNothingIsStored) {
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  auto garbage =
      authority_->Issue(std::vector<std::uint8_t>{0x30, 0x03, 0x01, 0x02}, {"GW-1", ""}, policy_);
  ASSERT_FALSE(garbage);
  EXPECT_THAT(garbage, test::HasCode(ErrorCode::kInvalidArgument));
  auto csr = MakeCsr(device.get());
  csr[csr.size() - 5] ^= 0x01;  // inside the signature
  auto bad_sig = authority_->Issue(csr, {"GW-1", ""}, policy_);
  ASSERT_FALSE(bad_sig);
  EXPECT_THAT(bad_sig, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(bad_sig.error().message().find("does not verify"), std::string::npos);
  crypto::SuitePolicy no_ed;
  no_ed.Set(crypto::SuiteId::kEd25519, crypto::SuiteStatus::kDisabled);
  EvpPkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  auto forbidden = authority_->Issue(MakeCsr(ed.get()), {"GW-1", ""}, no_ed);
  ASSERT_FALSE(forbidden);
  EXPECT_THAT(forbidden, test::HasCode(ErrorCode::kPermissionDenied));
  EvpPkeyPtr p384(EVP_EC_gen("P-384"));
  auto no_ca = authority_->Issue(MakeCsr(p384.get()), {"GW-1", ""}, policy_);
  ASSERT_FALSE(no_ca);
  EXPECT_THAT(no_ca, test::HasCode(ErrorCode::kInvalidArgument));
  auto tx = db_->Begin(store::TxMode::kRead);
  EXPECT_EQ((*(*tx)->Query("SELECT COUNT(*) FROM certificates"))[0].Int(0), 0);
}

// Operator certificates come from the operators' CA only, name the operator, are clientAuth
// certificates that openssl verifies to the root, and are revocable like any other; device
// certificates never come from it, and neither identity passes for the other.
TEST_F(PkiTest, OperatorCertificatesComeFromTheOperatorsCaOnly) {
  EXPECT_THAT(authority_->CaNames(), ::testing::Contains(std::string(kOperatorCa)));
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  auto csr = crypto::VerifyCsr(MakeCsr(key.get()));
  ASSERT_TRUE(csr) << csr.error();
  auto tx = db_->Begin(store::TxMode::kWrite);
  ASSERT_TRUE(tx) << tx.error();
  auto rec = authority_->IssueOperatorIn(**tx, *csr, "alice", std::chrono::hours(24 * 7),
                                         "operator:bootstrap");
  ASSERT_TRUE(rec) << rec.error();
  ASSERT_TRUE((*tx)->Commit());
  EXPECT_EQ(rec->issuer, kOperatorCa);
  EXPECT_EQ(rec->device, "operator:alice");
  EXPECT_EQ(rec->not_after - clock_.Now(), std::chrono::hours(24 * 7));
  X509Ptr leaf = Parse(rec->der);
  EXPECT_TRUE(authority_->IsOperatorCertificate(leaf.get()));
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "root.pem") << Pem(authority_->RootDer());
  std::ofstream(dir_ / "operators.pem") << Pem(*authority_->CaCertificate(std::string(kOperatorCa)));
  std::ofstream(dir_ / "alice.pem") << Pem(rec->der);
  const std::string verified =
      Shell(fmt::format("openssl verify -purpose sslclient -CAfile {0}/root.pem -untrusted "
                        "{0}/operators.pem {0}/alice.pem 2>&1",
                        dir_.string()));
  EXPECT_THAT(verified, ::testing::HasSubstr("alice.pem: OK"));
  const std::string text = Shell(fmt::format("openssl x509 -noout -text -in {}/alice.pem", dir_.string()));
  EXPECT_THAT(text, ::testing::HasSubstr("CN = alice"));
  EXPECT_THAT(text, ::testing::HasSubstr("URI:urn:fleetid:operator:alice"));
  EXPECT_THAT(text, ::testing::HasSubstr("Issuer: O = fleetid, CN = fleetid Operator CA"));
  EXPECT_THAT(text, ::testing::HasSubstr("TLS Web Client Authentication"));

  // A device certificate of the same suite comes from the device CA and is not an operator's.
  CertificateRecord device = IssueOne(key.get(), "GW-0009");
  EXPECT_EQ(device.issuer, "ecdsa-p256-sha256");
  X509Ptr device_leaf = Parse(device.der);
  EXPECT_FALSE(authority_->IsOperatorCertificate(device_leaf.get()));
  EXPECT_FALSE(authority_->IsOperatorCertificate(nullptr));

  // Revocable like any other, and answered for by OCSP.
  EXPECT_EQ(Status(*rec), V_OCSP_CERTSTATUS_GOOD);
  ASSERT_TRUE(authority_->Revoke(rec->serial, Reason::kCessationOfOperation));
  EXPECT_EQ(Status(*rec), V_OCSP_CERTSTATUS_REVOKED);

  // Names and lifetimes out of bounds are refused and nothing is stored.
  auto again = db_->Begin(store::TxMode::kWrite);
  ASSERT_TRUE(again) << again.error();
  EXPECT_THAT(authority_->IssueOperatorIn(**again, *csr, "alice,O=evil", std::chrono::hours(1), "x"),
              test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(authority_->IssueOperatorIn(**again, *csr, "bob", std::chrono::hours(24 * 31), "x"),
              test::HasCode(ErrorCode::kInvalidArgument));
}

TEST_F(PkiTest, OcspFollowsRevocationHoldAndRelease) {
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  EXPECT_EQ(Status(rec), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(Status(rec, nullptr, /*nonce=*/true), V_OCSP_CERTSTATUS_GOOD);
  ASSERT_TRUE(authority_->Revoke(rec.serial, Reason::kCertificateHold));
  int reason = -1;
  EXPECT_EQ(Status(rec, &reason), V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(reason, OCSP_REVOKED_STATUS_CERTIFICATEHOLD);
  ASSERT_TRUE(authority_->Release(rec.serial));
  EXPECT_EQ(Status(rec), V_OCSP_CERTSTATUS_GOOD);
  ASSERT_TRUE(authority_->Revoke(rec.serial, Reason::kKeyCompromise));
  EXPECT_EQ(Status(rec, &reason), V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
  EXPECT_THAT(authority_->Revoke(rec.serial, Reason::kSuperseded),
              test::HasCode(ErrorCode::kConflict));
  EXPECT_THAT(authority_->Release(rec.serial), test::HasCode(ErrorCode::kConflict));
  EXPECT_THAT(authority_->Revoke("00ff", Reason::kSuperseded), test::HasCode(ErrorCode::kNotFound));
}

// docs/pki.md: the pre-signed answers are bounded (ocsp_cache_max_entries); past the bound
// the answer signed longest ago is evicted, and signed again when it is next asked for.
TEST_F(PkiTest, OcspCacheHoldsAtMostItsBoundAndReSignsAnEvictedAnswer) {
  options_.ocsp_cache_max_entries = 2;
  Open();
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  const CertificateRecord a = IssueOne(device.get(), "GW-A");
  const CertificateRecord b = IssueOne(device.get(), "GW-B");
  const CertificateRecord c = IssueOne(device.get(), "GW-C");
  const std::uint64_t before = authority_->OcspSignatures();
  EXPECT_EQ(Status(a), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(Status(b), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(Status(a), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspSignatures() - before, 2u) << "a's second answer is the cached one";
  EXPECT_EQ(authority_->OcspCacheSize(), 2u);
  // c's answer evicts a's, signed first (being served again does not make an answer younger).
  EXPECT_EQ(Status(c), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspCacheSize(), 2u);
  EXPECT_EQ(Status(b), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspSignatures() - before, 3u) << "b stayed cached";
  EXPECT_EQ(Status(a), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspSignatures() - before, 4u) << "the evicted answer is signed again";
  EXPECT_EQ(Status(a), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspSignatures() - before, 4u) << "and cached again";
  EXPECT_EQ(authority_->OcspCacheSize(), 2u);
  // A revocation signs both CertID forms at once; the bound holds, and the answer is revoked.
  ASSERT_TRUE(authority_->Revoke(b.serial, Reason::kSuperseded));
  EXPECT_EQ(authority_->OcspSignatures() - before, 6u);
  EXPECT_EQ(authority_->OcspCacheSize(), 2u);
  EXPECT_EQ(Status(b), V_OCSP_CERTSTATUS_REVOKED);
  // Served from the refreshed cache, unless the change feed's poll (every 50 ms of wall time, as
  // slow under ASan as the revocation's two signatures) has meanwhile read the revocation back
  // and forgotten both answers (it cannot tell this process's changes from another's): then it
  // is signed once more. Either way the bound holds.
  EXPECT_LE(authority_->OcspSignatures() - before, 7u);
  EXPECT_LE(authority_->OcspCacheSize(), 2u);
}

TEST_F(PkiTest, OcspAnswersGarbageWithMalformedRequestAndStrangersWithUnauthorized) {
  auto status_of = [&](std::span<const std::uint8_t> der) {
    OcspAnswer a = authority_->Ocsp(der);
    const unsigned char* p = a.der.data();
    OcspResponsePtr r(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(a.der.size())));
    return r ? OCSP_response_status(r.get()) : -1;
  };
  EXPECT_EQ(status_of({}), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  std::vector<std::uint8_t> random(300);
  ASSERT_TRUE(crypto::OpenSslRng::Instance().Fill(random));
  EXPECT_EQ(status_of(random), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  // A valid request, truncated, and with trailing bytes.
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  X509Ptr leaf = Parse(rec.der);
  X509Ptr issuer = Parse(*authority_->CaCertificate(rec.issuer));
  OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_request_add0_id(req.get(), OCSP_cert_to_id(EVP_sha256(), leaf.get(), issuer.get()));
  std::vector<std::uint8_t> der(static_cast<std::size_t>(i2d_OCSP_REQUEST(req.get(), nullptr)));
  unsigned char* p = der.data();
  i2d_OCSP_REQUEST(req.get(), &p);
  EXPECT_EQ(status_of(der), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(status_of(std::span(der).first(der.size() - 3)), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  auto longer = der;
  longer.push_back(0);
  EXPECT_EQ(status_of(longer), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  // A CertID for an issuer fleetid does not run.
  OcspRequestPtr stranger(OCSP_REQUEST_new());
  OCSP_request_add0_id(stranger.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), leaf.get()));
  std::vector<std::uint8_t> sder(
      static_cast<std::size_t>(i2d_OCSP_REQUEST(stranger.get(), nullptr)));
  p = sder.data();
  i2d_OCSP_REQUEST(stranger.get(), &p);
  EXPECT_EQ(status_of(sder), OCSP_RESPONSE_STATUS_UNAUTHORIZED);
}

TEST_F(PkiTest, CrlListsRevokedAndHeldCertificatesOfItsPartition) {
  EvpPkeyPtr k1(EVP_EC_gen("P-256"));
  EvpPkeyPtr k2(EVP_EC_gen("P-256"));
  EvpPkeyPtr k3(EVP_EC_gen("P-256"));
  CertificateRecord a = IssueOne(k1.get(), "A");
  CertificateRecord b = IssueOne(k2.get(), "B");
  CertificateRecord c = IssueOne(k3.get(), "C");
  ASSERT_TRUE(authority_->Revoke(a.serial, Reason::kKeyCompromise));
  ASSERT_TRUE(authority_->Revoke(b.serial, Reason::kCertificateHold));
  auto crl_answer = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(crl_answer) << crl_answer.error();
  const unsigned char* p = crl_answer->der.data();
  X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_answer->der.size())));
  ASSERT_TRUE(crl);
  X509Ptr issuer = Parse(*authority_->CaCertificate(a.issuer));
  EvpPkeyPtr issuer_pub(X509_get_pubkey(issuer.get()));
  EXPECT_EQ(X509_CRL_verify(crl.get(), issuer_pub.get()), 1);
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get())), 2);
  X509_REVOKED* entry = nullptr;
  X509Ptr leaf_c = Parse(c.der);
  EXPECT_EQ(X509_CRL_get0_by_cert(crl.get(), &entry, leaf_c.get()), 0) << "good cert listed";
  // Release the hold: a full CRL coalesces changes for crl_min_interval, then drops it.
  ASSERT_TRUE(authority_->Release(b.serial));
  auto same = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(same);
  EXPECT_EQ(same->number, crl_answer->number) << "rebuilt inside the coalescing interval";
  clock_.Advance(AuthorityOptions{}.crl_min_interval);
  auto again = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(again);
  EXPECT_GT(again->number, crl_answer->number);
  p = again->der.data();
  X509CrlPtr crl2(d2i_X509_CRL(nullptr, &p, static_cast<long>(again->der.size())));
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl2.get())), 1);
  // And openssl verify -crl_check rejects the revoked certificate with it.
  const auto root = dir_ / "root.pem";
  const auto chain = dir_ / "chain.pem";
  const auto crls = dir_ / "crl.pem";
  std::ofstream(root) << Pem(authority_->RootDer());
  std::ofstream(chain) << Pem(*authority_->CaCertificate(a.issuer));
  {
    crypto::BioPtr bio(BIO_new_file(crls.c_str(), "w"));
    PEM_write_bio_X509_CRL(bio.get(), crl2.get());
  }
  const auto leaf_a = dir_ / "a.pem";
  std::ofstream(leaf_a) << Pem(a.der);
  const std::string out =
      Shell("openssl verify -crl_check -CAfile " + root.string() + " -untrusted " + chain.string() +
            " -CRLfile " + crls.string() + " " + leaf_a.string());
  EXPECT_NE(out.find("certificate revoked"), std::string::npos) << out;
}

X509CrlPtr ParseCrl(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  return X509CrlPtr(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
}

void WriteCrl(const std::filesystem::path& path, const std::vector<X509_CRL*>& crls) {
  crypto::BioPtr bio(BIO_new_file(path.c_str(), "w"));
  for (X509_CRL* crl : crls) PEM_write_bio_X509_CRL(bio.get(), crl);
}

int ReasonOf(X509_CRL* crl, X509* cert) {
  X509_REVOKED* entry = nullptr;
  if (X509_CRL_get0_by_cert(crl, &entry, cert) == 0) return -1;
  auto* reason = static_cast<ASN1_ENUMERATED*>(
      X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, nullptr, nullptr));
  const int value = reason != nullptr ? static_cast<int>(ASN1_ENUMERATED_get(reason)) : 0;
  ASN1_ENUMERATED_free(reason);
  return value;
}

TEST_F(PkiTest, DeltaCrlCarriesChangesSinceItsBaseAndRemoveFromCrl) {
  EvpPkeyPtr k1(EVP_EC_gen("P-256"));
  EvpPkeyPtr k2(EVP_EC_gen("P-256"));
  CertificateRecord a = IssueOne(k1.get(), "A");
  CertificateRecord b = IssueOne(k2.get(), "B");
  X509Ptr leaf_a = Parse(a.der);
  X509Ptr leaf_b = Parse(b.der);
  X509Ptr issuer = Parse(*authority_->CaCertificate(a.issuer));
  EvpPkeyPtr issuer_pub(X509_get_pubkey(issuer.get()));

  // b goes on hold and the base CRL (built after the interval) lists it.
  ASSERT_TRUE(authority_->Revoke(b.serial, Reason::kCertificateHold));
  auto base_answer = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(base_answer) << base_answer.error();
  X509CrlPtr base = ParseCrl(base_answer->der);
  ASSERT_TRUE(base);
  EXPECT_EQ(X509_CRL_verify(base.get(), issuer_pub.get()), 1);
  EXPECT_EQ(ReasonOf(base.get(), leaf_b.get()), CRL_REASON_CERTIFICATE_HOLD);
  EXPECT_GE(X509_CRL_get_ext_by_NID(base.get(), NID_freshest_crl, -1), 0) << "base names its delta";
  EXPECT_GE(X509_CRL_get_ext_by_NID(base.get(), NID_issuing_distribution_point, -1), 0);

  // Then a is revoked and b released: the delta lists both, b as removeFromCRL, against the
  // base it names by number.
  ASSERT_TRUE(authority_->Revoke(a.serial, Reason::kKeyCompromise));
  ASSERT_TRUE(authority_->Release(b.serial));
  auto delta_answer = authority_->Crl(a.issuer, a.partition, /*delta=*/true);
  ASSERT_TRUE(delta_answer) << delta_answer.error();
  X509CrlPtr delta = ParseCrl(delta_answer->der);
  ASSERT_TRUE(delta);
  EXPECT_EQ(X509_CRL_verify(delta.get(), issuer_pub.get()), 1);
  EXPECT_GT(delta_answer->number, base_answer->number);
  auto* indicator = static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(delta.get(), NID_delta_crl, nullptr, nullptr));
  ASSERT_NE(indicator, nullptr);
  EXPECT_EQ(ASN1_INTEGER_get(indicator), base_answer->number);
  ASN1_INTEGER_free(indicator);
  EXPECT_EQ(ReasonOf(delta.get(), leaf_a.get()), CRL_REASON_KEY_COMPROMISE);
  EXPECT_EQ(ReasonOf(delta.get(), leaf_b.get()), CRL_REASON_REMOVE_FROM_CRL);
  // The full CRL is still the base: it coalesces changes, the delta carries them.
  auto full = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->number, base_answer->number);

  // openssl verify with base and delta: a is revoked, b is good again; with the base alone
  // b is still on hold.
  const auto root = dir_ / "root.pem";
  const auto chain = dir_ / "chain.pem";
  const auto with_delta = dir_ / "base-and-delta.pem";
  const auto base_only = dir_ / "base.pem";
  std::ofstream(root) << Pem(authority_->RootDer());
  std::ofstream(chain) << Pem(*authority_->CaCertificate(a.issuer));
  WriteCrl(with_delta, {base.get(), delta.get()});
  WriteCrl(base_only, {base.get()});
  const auto pem_a = dir_ / "a.pem";
  const auto pem_b = dir_ / "b.pem";
  std::ofstream(pem_a) << Pem(a.der);
  std::ofstream(pem_b) << Pem(b.der);
  auto verify = [&](const std::filesystem::path& crls, const std::filesystem::path& leaf) {
    // -extended_crl: without it OpenSSL 3.0 may score a delta CRL as a complete one.
    return Shell("openssl verify -crl_check -extended_crl -use_deltas -CAfile " + root.string() +
                 " -untrusted " + chain.string() + " -CRLfile " + crls.string() + " " +
                 leaf.string());
  };
  const std::string a_out = verify(with_delta, pem_a);
  EXPECT_NE(a_out.find("certificate revoked"), std::string::npos) << a_out;
  const std::string b_out = verify(with_delta, pem_b);
  EXPECT_NE(b_out.find(": OK"), std::string::npos) << b_out;
  const std::string b_base = verify(base_only, pem_b);
  EXPECT_NE(b_base.find("certificate revoked"), std::string::npos) << b_base;

  // Once the interval has passed the full CRL is rebuilt with both changes, and becomes the
  // base of an empty delta.
  clock_.Advance(AuthorityOptions{}.crl_min_interval);
  auto rebuilt = authority_->Crl(a.issuer, a.partition);
  ASSERT_TRUE(rebuilt);
  X509CrlPtr rebuilt_crl = ParseCrl(rebuilt->der);
  EXPECT_EQ(ReasonOf(rebuilt_crl.get(), leaf_a.get()), CRL_REASON_KEY_COMPROMISE);
  EXPECT_EQ(ReasonOf(rebuilt_crl.get(), leaf_b.get()), -1);
  auto empty_delta = authority_->Crl(a.issuer, a.partition, /*delta=*/true);
  ASSERT_TRUE(empty_delta);
  EXPECT_EQ(empty_delta->entries, 0u);
}

TEST_F(PkiTest, PartitionCrlsAreNotInterchangeable) {
  // A certificate checked against another partition's CRL is not "good": the CRL's issuing
  // distribution point does not match the certificate's distribution point.
  EvpPkeyPtr k1(EVP_EC_gen("P-256"));
  CertificateRecord a = IssueOne(k1.get(), "A");
  clock_.Advance(AuthorityOptions{}.partition_span);
  EvpPkeyPtr k2(EVP_EC_gen("P-256"));
  CertificateRecord b = IssueOne(k2.get(), "B");
  ASSERT_NE(a.partition, b.partition);
  auto other = authority_->Crl(b.issuer, b.partition);
  ASSERT_TRUE(other);
  const auto root = dir_ / "root.pem";
  const auto chain = dir_ / "chain.pem";
  const auto crl = dir_ / "other.pem";
  const auto pem_a = dir_ / "a.pem";
  std::ofstream(root) << Pem(authority_->RootDer());
  std::ofstream(chain) << Pem(*authority_->CaCertificate(a.issuer));
  std::ofstream(pem_a) << Pem(a.der);
  X509CrlPtr parsed = ParseCrl(other->der);
  WriteCrl(crl, {parsed.get()});
  const std::string out =
      Shell("openssl verify -crl_check -CAfile " + root.string() + " -untrusted " + chain.string() +
            " -CRLfile " + crl.string() + " " + pem_a.string());
  EXPECT_NE(out.find("different CRL scope"), std::string::npos) << out;
  // The root publishes one CRL, partition 0, and no delta.
  EXPECT_TRUE(authority_->Crl("root", 0));
  EXPECT_THAT(authority_->Crl("root", 1), test::HasCode(ErrorCode::kNotFound));
  EXPECT_THAT(authority_->Crl("root", 0, true), test::HasCode(ErrorCode::kNotFound));
}

TEST_F(PkiTest, ServerCertificatesNameTheirHostsAndVerifyForTls) {
  auto key = test::Opened().token->GenerateKey(
      "server-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()),
      crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256), crypto::OpenSslRng::Instance());
  ASSERT_TRUE(key) << key.error();
  auto pub = test::Opened().token->PublicKey(key->label);
  ASSERT_TRUE(pub);
  auto spki = crypto::PublicKeyDer(pub->get());
  ASSERT_TRUE(spki);
  auto rec = authority_->IssueServer(*spki, {"localhost", "127.0.0.1"});
  ASSERT_TRUE(rec) << rec.error();
  EXPECT_EQ(rec->device, "server:localhost");
  X509Ptr cert = Parse(rec->der);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_TRUE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER);
  const auto root = dir_ / "root.pem";
  const auto chain = dir_ / "chain.pem";
  const auto leaf = dir_ / "server.pem";
  std::ofstream(root) << Pem(authority_->RootDer());
  std::ofstream(chain) << Pem(*authority_->CaCertificate(rec->issuer));
  std::ofstream(leaf) << Pem(rec->der);
  const std::string out = Shell(
      "openssl verify -purpose sslserver -verify_hostname localhost "
      "-CAfile " +
      root.string() + " -untrusted " + chain.string() + " " + leaf.string());
  EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  EXPECT_THAT(authority_->IssueServer(*spki, {}), test::HasCode(ErrorCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------------
// Hardening (docs/security.md)

std::vector<std::uint8_t> RequestDer(OCSP_REQUEST* req) {
  std::vector<std::uint8_t> der(static_cast<std::size_t>(i2d_OCSP_REQUEST(req, nullptr)));
  unsigned char* p = der.data();
  i2d_OCSP_REQUEST(req, &p);
  return der;
}

// SerialRequest asks about |serial| (big-endian magnitude, |negative| sign) of |issuer|; the
// CertID is added to |req| and returned (owned by |req|).
OCSP_CERTID* AddSerial(OCSP_REQUEST* req, X509* issuer, std::span<const std::uint8_t> magnitude,
                       bool negative = false) {
  crypto::BignumPtr bn(BN_bin2bn(magnitude.data(), static_cast<int>(magnitude.size()), nullptr));
  BN_set_negative(bn.get(), negative ? 1 : 0);
  crypto::Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  OCSP_CERTID* id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
                                     X509_get0_pubkey_bitstr(issuer), serial.get());
  OCSP_request_add0_id(req, id);
  return id;
}

struct Answer {
  int status = -1;  // OCSPResponseStatus
  OcspBasicPtr basic;
};

Answer Ask(Authority& authority, OCSP_REQUEST* req) {
  OcspAnswer a = authority.Ocsp(RequestDer(req));
  const unsigned char* p = a.der.data();
  OcspResponsePtr r(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(a.der.size())));
  Answer out;
  if (!r) return out;
  out.status = OCSP_response_status(r.get());
  if (out.status == OCSP_RESPONSE_STATUS_SUCCESSFUL)
    out.basic.reset(OCSP_response_get1_basic(r.get()));
  return out;
}

TEST_F(PkiTest, NeverIssuedSerialsAreNeitherCachedNorSignedBeyondTheBudget) {
  options_.ocsp_unknown_per_second = 5;
  Open();
  X509Ptr issuer = Parse(*authority_->CaCertificate("ecdsa-p256-sha256"));
  int signed_unknown = 0;
  int unauthorized = 0;
  for (std::uint32_t i = 1; i <= 200; ++i) {
    OcspRequestPtr req(OCSP_REQUEST_new());
    const std::array<std::uint8_t, 4> serial = {0x7f, static_cast<std::uint8_t>(i >> 16),
                                                static_cast<std::uint8_t>(i >> 8),
                                                static_cast<std::uint8_t>(i)};
    OCSP_CERTID* id = AddSerial(req.get(), issuer.get(), serial);
    Answer a = Ask(*authority_, req.get());
    if (a.status == OCSP_RESPONSE_STATUS_UNAUTHORIZED) {
      ++unauthorized;
      continue;
    }
    ASSERT_EQ(a.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
    int status = -1;
    ASSERT_EQ(OCSP_resp_find_status(a.basic.get(), id, &status, nullptr, nullptr, nullptr, nullptr),
              1);
    EXPECT_EQ(status, V_OCSP_CERTSTATUS_UNKNOWN);
    ++signed_unknown;
  }
  EXPECT_EQ(signed_unknown, 5) << "the burst";
  EXPECT_EQ(unauthorized, 195);
  EXPECT_EQ(authority_->OcspCacheSize(), 0u) << "never-issued serials are not cached";
  // The budget refills with time.
  clock_.Advance(1s);
  OcspRequestPtr later(OCSP_REQUEST_new());
  AddSerial(later.get(), issuer.get(), std::array<std::uint8_t, 2>{0x12, 0x34});
  EXPECT_EQ(Ask(*authority_, later.get()).status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
  // Issued serials are answered and cached whatever the budget.
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Status(rec), V_OCSP_CERTSTATUS_GOOD);
  EXPECT_EQ(authority_->OcspCacheSize(), 1u);
  // Answers older than their validity are dropped by the maintenance pass.
  clock_.Advance(options_.ocsp_validity + 1min);
  authority_->RefreshCrls();
  EXPECT_EQ(authority_->OcspCacheSize(), 0u);
}

TEST_F(PkiTest, SerialZeroAndMinusOneAreAnsweredWithTheirOwnCertId) {
  X509Ptr issuer = Parse(*authority_->CaCertificate("ecdsa-p256-sha256"));
  for (int round = 0; round < 2; ++round) {
    for (bool negative : {false, true}) {
      OcspRequestPtr req(OCSP_REQUEST_new());
      OCSP_CERTID* id =
          negative ? AddSerial(req.get(), issuer.get(), std::array<std::uint8_t, 1>{1}, true)
                   : AddSerial(req.get(), issuer.get(), {});
      Answer a = Ask(*authority_, req.get());
      ASSERT_EQ(a.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
      ASSERT_EQ(OCSP_resp_count(a.basic.get()), 1);
      // The one SingleResponse carries exactly the CertID asked about, serial and sign included.
      EXPECT_EQ(OCSP_resp_find(a.basic.get(), id, -1), 0) << (negative ? "-1" : "0");
      EXPECT_EQ(OCSP_id_cmp(OCSP_SINGLERESP_get0_id(OCSP_resp_get0(a.basic.get(), 0)), id), 0);
    }
  }
}

TEST_F(PkiTest, OcspRefusesLongSerialsLongNoncesAndUnknownCriticalExtensions) {
  X509Ptr issuer = Parse(*authority_->CaCertificate("ecdsa-p256-sha256"));
  auto status_for_serial = [&](std::size_t octets) {
    std::vector<std::uint8_t> serial(octets, 0x11);
    OcspRequestPtr req(OCSP_REQUEST_new());
    AddSerial(req.get(), issuer.get(), serial);
    return Ask(*authority_, req.get()).status;
  };
  EXPECT_EQ(status_for_serial(20), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(status_for_serial(21), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  EXPECT_EQ(status_for_serial(200), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);

  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  X509Ptr leaf = Parse(rec.der);
  auto request = [&] {
    OcspRequestPtr req(OCSP_REQUEST_new());
    OCSP_request_add0_id(req.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
    return req;
  };
  for (int len : {1, 16, 32}) {
    OcspRequestPtr req = request();
    std::vector<unsigned char> nonce(static_cast<std::size_t>(len), 0xab);
    ASSERT_EQ(OCSP_request_add1_nonce(req.get(), nonce.data(), len), 1);
    Answer a = Ask(*authority_, req.get());
    ASSERT_EQ(a.status, OCSP_RESPONSE_STATUS_SUCCESSFUL) << len;
    EXPECT_EQ(OCSP_check_nonce(req.get(), a.basic.get()), 1) << "echoed, " << len;
  }
  for (int len : {33, 64, 512}) {
    OcspRequestPtr req = request();
    std::vector<unsigned char> nonce(static_cast<std::size_t>(len), 0xab);
    ASSERT_EQ(OCSP_request_add1_nonce(req.get(), nonce.data(), len), 1);
    EXPECT_EQ(Ask(*authority_, req.get()).status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST) << len;
  }
  auto with_extension = [&](bool critical, bool single) {
    OcspRequestPtr req = request();
    crypto::Asn1OctetStringPtr value(ASN1_OCTET_STRING_new());
    ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>("\x05\x00"), 2);
    crypto::Asn1ObjectPtr oid(OBJ_txt2obj("1.3.6.1.4.1.55555.1", 1));
    X509_EXTENSION* ext =
        X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), critical ? 1 : 0, value.get());
    if (single) {
      OCSP_ONEREQ_add_ext(OCSP_request_onereq_get0(req.get(), 0), ext, -1);
    } else {
      OCSP_REQUEST_add_ext(req.get(), ext, -1);
    }
    X509_EXTENSION_free(ext);
    return Ask(*authority_, req.get()).status;
  };
  EXPECT_EQ(with_extension(false, false), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(with_extension(false, true), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(with_extension(true, false), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  EXPECT_EQ(with_extension(true, true), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
}

std::string SerialOf(const std::vector<std::uint8_t>& der) {
  X509Ptr cert = Parse(der);
  crypto::BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  char* hex = BN_bn2hex(bn.get());
  std::string out(hex);
  OPENSSL_free(hex);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

TEST_F(PkiTest, IssuingCasAndOcspSignersAreRevocableAndTheRootCrlListsThem) {
  EvpPkeyPtr p256(EVP_EC_gen("P-256"));
  EvpPkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  CertificateRecord on_revoked_ca = IssueOne(p256.get(), "A");
  CertificateRecord on_good_ca = IssueOne(ed.get(), "B");
  const std::string ca_serial = SerialOf(*authority_->CaCertificate("ecdsa-p256-sha256"));
  auto empty = authority_->Crl("root", 0);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->entries, 0u);
  auto revoked = authority_->Revoke(ca_serial, Reason::kCaCompromise, "operator:test");
  ASSERT_TRUE(revoked) << revoked.error();
  EXPECT_EQ(revoked->issuer, "root");
  EXPECT_EQ(revoked->device, "ca:ecdsa-p256-sha256");
  EXPECT_EQ(revoked->status, Status::kRevoked);
  EXPECT_THAT(authority_->Revoke(ca_serial, Reason::kCaCompromise),
              test::HasCode(ErrorCode::kConflict));
  auto root_crl = authority_->Crl("root", 0);
  ASSERT_TRUE(root_crl) << root_crl.error();
  EXPECT_EQ(root_crl->entries, 1u) << "rebuilt at once: the root CRL does not coalesce";
  X509CrlPtr crl = ParseCrl(root_crl->der);
  X509Ptr issuing = Parse(*authority_->CaCertificate("ecdsa-p256-sha256"));
  EXPECT_EQ(ReasonOf(crl.get(), issuing.get()), CRL_REASON_CA_COMPROMISE);

  // openssl verify -crl_check_all: the chain through the revoked CA is refused, the other
  // accepted.
  const auto root = dir_ / "root.pem";
  const auto crls = dir_ / "crls.pem";
  std::ofstream(root) << Pem(authority_->RootDer());
  std::vector<X509CrlPtr> owned;
  std::vector<X509_CRL*> all = {crl.get()};
  for (const CertificateRecord* rec : {&on_revoked_ca, &on_good_ca}) {
    auto answer = authority_->Crl(rec->issuer, rec->partition);
    ASSERT_TRUE(answer) << answer.error();
    owned.push_back(ParseCrl(answer->der));
    all.push_back(owned.back().get());
  }
  WriteCrl(crls, all);
  auto verify = [&](const CertificateRecord& rec) {
    const auto chain = dir_ / ("chain-" + rec.issuer + ".pem");
    const auto leaf = dir_ / ("leaf-" + rec.issuer + ".pem");
    std::ofstream(chain) << Pem(*authority_->CaCertificate(rec.issuer));
    std::ofstream(leaf) << Pem(rec.der);
    return Shell("openssl verify -crl_check_all -CAfile " + root.string() + " -untrusted " +
                 chain.string() + " -CRLfile " + crls.string() + " " + leaf.string());
  };
  const std::string bad = verify(on_revoked_ca);
  EXPECT_NE(bad.find("certificate revoked"), std::string::npos) << bad;
  const std::string good = verify(on_good_ca);
  EXPECT_NE(good.find(": OK"), std::string::npos) << good;
  // The revoked CA issues nothing more; the other one still does.
  EvpPkeyPtr next(EVP_EC_gen("P-256"));
  auto refused = authority_->Issue(MakeCsr(next.get()), {"A", "acme"}, policy_);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kUnavailable));
  EvpPkeyPtr next_ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  EXPECT_TRUE(authority_->Issue(MakeCsr(next_ed.get()), {"B", "acme"}, policy_));

  // The OCSP signer is a certificate of its issuing CA, revocable and answered for.
  X509Ptr signer = Parse(*authority_->CaCertificate("ocsp-ed25519"));
  const std::string signer_serial = SerialOf(*authority_->CaCertificate("ocsp-ed25519"));
  ASSERT_TRUE(authority_->Revoke(signer_serial, Reason::kSuperseded));
  auto signer_record = authority_->Get(signer_serial);
  ASSERT_TRUE(signer_record);
  EXPECT_EQ(signer_record->issuer, "ed25519");
  EXPECT_LT(signer_record->partition, 0) << "a long-lived certificate's partition";
  int reason = -1;
  EXPECT_EQ(Status(*signer_record, &reason), V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(reason, OCSP_REVOKED_STATUS_SUPERSEDED);
  // The records survive a restart; CAs never revoked have none.
  authority_.reset();
  Open();
  auto tx = db_->Begin(store::TxMode::kRead);
  EXPECT_EQ((*(*tx)->Query("SELECT COUNT(*) FROM certificates WHERE device LIKE 'ca:%'"))[0].Int(0),
            2);
  EXPECT_EQ(authority_->Get(ca_serial)->status, Status::kRevoked);
}

std::vector<std::uint8_t> SpkiOf(EVP_PKEY* key) {
  auto der = crypto::PublicKeyDer(key);
  EXPECT_TRUE(der);
  return der ? *der : std::vector<std::uint8_t>{};
}

TEST_F(PkiTest, KeysRevokedForKeyCompromiseAreNeverCertifiedAgain) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  EvpPkeyPtr other(EVP_EC_gen("P-256"));
  CertificateRecord first = IssueOne(key.get(), "A");
  CertificateRecord second = IssueOne(other.get(), "B");
  // Superseded does not make a key compromised.
  ASSERT_TRUE(authority_->Revoke(second.serial, Reason::kSuperseded));
  EXPECT_TRUE(authority_->Issue(MakeCsr(other.get()), {"B", "acme"}, policy_));

  ASSERT_TRUE(authority_->Revoke(first.serial, Reason::kKeyCompromise));
  {
    auto tx = db_->Begin(store::TxMode::kRead);
    auto compromised = Authority::KeyCompromisedIn(**tx, SpkiOf(key.get()));
    ASSERT_TRUE(compromised) << compromised.error();
    EXPECT_TRUE(*compromised);
  }
  for (const std::string device : {"A", "C"}) {
    auto again = authority_->Issue(MakeCsr(key.get()), {device, "acme"}, policy_);
    ASSERT_FALSE(again) << device;
    EXPECT_THAT(again, test::HasCode(ErrorCode::kPermissionDenied));
  }
  // The same key with its point compressed is the same key.
  EvpPkeyPtr compressed(EVP_PKEY_dup(key.get()));
  ASSERT_EQ(EVP_PKEY_set_utf8_string_param(compressed.get(), "point-format", "compressed"), 1);
  const std::vector<std::uint8_t> csr = MakeCsr(compressed.get());
  auto sneaky = authority_->Issue(csr, {"C", "acme"}, policy_);
  ASSERT_FALSE(sneaky);
  EXPECT_THAT(sneaky, test::HasCode(ErrorCode::kPermissionDenied));
  // Nor as a server certificate, nor inside a caller's transaction.
  auto server = authority_->IssueServer(SpkiOf(key.get()), {"localhost"});
  ASSERT_FALSE(server);
  EXPECT_THAT(server, test::HasCode(ErrorCode::kPermissionDenied));
  {
    auto tx = db_->Begin(store::TxMode::kWrite);
    auto verified = crypto::VerifyCsr(MakeCsr(key.get()));
    if (!verified.has_value()) GTEST_FAIL();
    auto in = authority_->IssueIn(**tx, *verified, {"D", "acme"}, policy_, "test", false);
    ASSERT_FALSE(in);
    EXPECT_THAT(in, test::HasCode(ErrorCode::kPermissionDenied));
  }
  // A hold turned into keyCompromise counts as well; other keys are unaffected.
  EvpPkeyPtr third(EVP_EC_gen("P-256"));
  CertificateRecord held = IssueOne(third.get(), "E");
  ASSERT_TRUE(authority_->Revoke(held.serial, Reason::kCertificateHold));
  EXPECT_TRUE(authority_->Issue(MakeCsr(third.get()), {"E", "acme"}, policy_));
  ASSERT_TRUE(authority_->Revoke(held.serial, Reason::kKeyCompromise));
  EXPECT_THAT(authority_->Issue(MakeCsr(third.get()), {"E", "acme"}, policy_),
              test::HasCode(ErrorCode::kPermissionDenied));
  EvpPkeyPtr fresh(EVP_EC_gen("P-256"));
  EXPECT_TRUE(authority_->Issue(MakeCsr(fresh.get()), {"A", "acme"}, policy_));
}

TEST_F(PkiTest, CrlPartitionsFollowTheDeviceLifetimeAndLongLivedCertificatesHaveTheirOwn) {
  const TimePoint now = clock_.Now();
  const std::int64_t hour = authority_->PartitionOf(CertificateClass::kDevice, now);
  EXPECT_TRUE(authority_->PartitionLive(hour, now));
  EXPECT_TRUE(authority_->PartitionLive(hour - 24, now));
  EXPECT_FALSE(authority_->PartitionLive(hour - 26, now)) << "past the 24-hour device lifetime";
  EXPECT_FALSE(authority_->PartitionLive(hour - std::int64_t{24} * 30, now))
      << "was live with a 30-day window";
  EXPECT_FALSE(authority_->PartitionLive(hour + 1, now));
  const std::int64_t week = authority_->PartitionOf(CertificateClass::kLongLived, now);
  EXPECT_LT(week, 0);
  EXPECT_TRUE(authority_->PartitionLive(week, now));
  EXPECT_TRUE(authority_->PartitionLive(week + 4, now)) << "a 30-day certificate of 4 weeks ago";
  EXPECT_FALSE(authority_->PartitionLive(week - 1, now)) << "next week";
  EXPECT_THAT(authority_->Crl("ecdsa-p256-sha256", hour - 26), test::HasCode(ErrorCode::kNotFound));
  EXPECT_THAT(authority_->Crl("ecdsa-p256-sha256", hour - std::int64_t{24} * 30),
              test::HasCode(ErrorCode::kNotFound));

  // A server certificate is in the long-lived class: its CDP names that partition, whose CRL
  // lists it once revoked, while the device partitions of the hour do not.
  auto key = test::Opened().token->GenerateKey("server-partition",
                                               crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256),
                                               crypto::OpenSslRng::Instance());
  ASSERT_TRUE(key) << key.error();
  auto pub = test::Opened().token->PublicKey(key->label);
  ASSERT_TRUE(pub);
  auto server = authority_->IssueServer(SpkiOf(pub->get()), {"localhost"});
  ASSERT_TRUE(server) << server.error();
  EXPECT_EQ(server->partition, week);
  X509Ptr server_cert = Parse(server->der);
  auto* cdp = static_cast<STACK_OF(DIST_POINT)*>(
      X509_get_ext_d2i(server_cert.get(), NID_crl_distribution_points, nullptr, nullptr));
  ASSERT_NE(cdp, nullptr);
  const GENERAL_NAME* uri =
      sk_GENERAL_NAME_value(sk_DIST_POINT_value(cdp, 0)->distpoint->name.fullname, 0);
  const std::string url(
      reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri->d.uniformResourceIdentifier)));
  sk_DIST_POINT_pop_free(cdp, DIST_POINT_free);
  EXPECT_TRUE(url.ends_with("/crl/ecdsa-p256-sha256/" + std::to_string(week) + ".crl")) << url;
  ASSERT_TRUE(authority_->Revoke(server->serial, Reason::kSuperseded));
  auto long_crl = authority_->Crl("ecdsa-p256-sha256", week);
  ASSERT_TRUE(long_crl) << long_crl.error();
  EXPECT_EQ(long_crl->entries, 1u);
  X509CrlPtr parsed = ParseCrl(long_crl->der);
  EXPECT_EQ(ReasonOf(parsed.get(), server_cert.get()), CRL_REASON_SUPERSEDED);
  // 29 days on, the server certificate's partition is still served.
  clock_.Advance(24h * 29);
  EXPECT_TRUE(authority_->Crl("ecdsa-p256-sha256", week));

  // Cached CRLs of partitions that can no longer hold a live certificate are dropped.
  clock_.Set(now);
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  ASSERT_TRUE(authority_->Crl(rec.issuer, rec.partition));
  ASSERT_TRUE(authority_->Crl(rec.issuer, rec.partition, true));
  const std::size_t cached = authority_->CrlCacheSize();
  EXPECT_GE(cached, 3u);
  clock_.Advance(AuthorityOptions{}.leaf_lifetime + 2h);
  authority_->RefreshCrls();
  EXPECT_EQ(authority_->CrlCacheSize(), cached - 2) << "the device partition's full and delta";
  EXPECT_THAT(authority_->Crl(rec.issuer, rec.partition), test::HasCode(ErrorCode::kNotFound));
}

TEST_F(PkiTest, ServerCertificateKeeperRenewsAtTwoThirdsOnRevocationAndAfterExpiry) {
  auto key = test::Opened().token->GenerateKey("server-keeper",
                                               crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256),
                                               crypto::OpenSslRng::Instance());
  ASSERT_TRUE(key) << key.error();
  auto pub = test::Opened().token->PublicKey(key->label);
  ASSERT_TRUE(pub);
  ServerCertificateKeeper keeper(*authority_, clock_, SpkiOf(pub->get()), {"localhost"});
  // The keeper's answer, with an error reported as a failure of the test.
  auto check = [&keeper]() -> std::optional<CertificateRecord> {
    auto answer = keeper.Check();
    if (!answer) {
      ADD_FAILURE() << answer.error();
      return std::nullopt;
    }
    return *answer;
  };
  const std::optional<CertificateRecord> first = check();
  if (!first.has_value()) GTEST_FAIL() << "the first check gets a certificate";
  const CertificateRecord& initial = *first;
  EXPECT_FALSE(check().has_value());
  const auto life = initial.not_after - initial.not_before;
  EXPECT_EQ(life, AuthorityOptions{}.server_lifetime + AuthorityOptions{}.backdate);

  // Just before two thirds of its life it stands; just after, it is replaced.
  clock_.Set(initial.not_before + life * 2 / 3 - 1min);
  EXPECT_FALSE(RenewalDue(keeper.Current(), clock_.Now()));
  EXPECT_FALSE(check().has_value());
  clock_.Set(initial.not_before + life * 2 / 3 + 5min);
  EXPECT_TRUE(RenewalDue(keeper.Current(), clock_.Now()));
  const std::optional<CertificateRecord> renewed = check();
  if (!renewed.has_value()) GTEST_FAIL();
  EXPECT_NE(renewed->serial, initial.serial);
  EXPECT_GT(renewed->not_after, initial.not_after);
  EXPECT_EQ(keeper.Current().serial, renewed->serial);

  // Revoked (by anyone, e.g. the operator tool): replaced at the next check.
  ASSERT_TRUE(authority_->Revoke(renewed->serial, Reason::kUnspecified));
  const std::optional<CertificateRecord> after_revoke = check();
  if (!after_revoke.has_value()) GTEST_FAIL();
  EXPECT_NE(after_revoke->serial, renewed->serial);
  EXPECT_EQ(after_revoke->status, Status::kGood);

  // A server that slept through the expiry gets a fresh one.
  clock_.Set(after_revoke->not_after + 1h);
  const std::optional<CertificateRecord> expired = check();
  if (!expired.has_value()) GTEST_FAIL();
  EXPECT_GT(expired->not_after, clock_.Now());

  // Revoked for keyCompromise: the key is never certified again; the caller must replace it.
  ASSERT_TRUE(authority_->Revoke(expired->serial, Reason::kKeyCompromise));
  auto compromised = keeper.Check();
  ASSERT_FALSE(compromised);
  EXPECT_THAT(compromised, test::HasCode(ErrorCode::kPermissionDenied));
}

// docs/security.md: nonced and multi-CertID requests cannot be served from the cache, so
// each costs a signature; they are charged to ocsp_fresh_per_second.
TEST_F(PkiTest, NoncedAndMultiCertIdRequestsAreSignedOnlyWithinTheFreshBudget) {
  options_.ocsp_fresh_per_second = 10;
  Open();
  EvpPkeyPtr device(EVP_EC_gen("P-256"));
  CertificateRecord rec = IssueOne(device.get());
  X509Ptr leaf = Parse(rec.der);
  X509Ptr issuer = Parse(*authority_->CaCertificate(rec.issuer));
  X509StorePtr store(X509_STORE_new());
  X509Ptr root = Parse(authority_->RootDer());
  X509_STORE_add_cert(store.get(), root.get());
  auto nonced = [&] {
    OcspRequestPtr req(OCSP_REQUEST_new());
    OCSP_request_add0_id(req.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
    EXPECT_EQ(OCSP_request_add1_nonce(req.get(), nullptr, 16), 1);
    return req;
  };
  const std::uint64_t before = authority_->OcspSignatures();
  int echoed = 0;
  int without = 0;
  for (int i = 0; i < 200; ++i) {
    OcspRequestPtr req = nonced();
    Answer a = Ask(*authority_, req.get());
    ASSERT_EQ(a.status, OCSP_RESPONSE_STATUS_SUCCESSFUL) << i;
    STACK_OF(X509)* chain = sk_X509_new_null();
    sk_X509_push(chain, issuer.get());
    EXPECT_EQ(OCSP_basic_verify(a.basic.get(), chain, store.get(), 0), 1) << i;
    sk_X509_free(chain);
    // OCSP_check_nonce: 1 echoed, -1 in the request only (RFC 8954 §2.1 allows omitting it).
    const int nonce = OCSP_check_nonce(req.get(), a.basic.get());
    if (nonce == 1) {
      ++echoed;
    } else {
      EXPECT_EQ(nonce, -1) << i;
      ++without;
    }
  }
  EXPECT_EQ(echoed, 10) << "the burst";
  EXPECT_EQ(without, 190);
  // The budget's 10, plus one nonce-less answer signed once and then served from the cache.
  EXPECT_EQ(authority_->OcspSignatures() - before, 11u);
  EXPECT_EQ(authority_->OcspCacheSize(), 1u);

  // Past the budget a request for two CertIDs is an unsigned unauthorized.
  auto twice = [&](int count) {
    OcspRequestPtr req(OCSP_REQUEST_new());
    for (int i = 0; i < count; ++i) {
      OCSP_request_add0_id(req.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
    }
    return Ask(*authority_, req.get()).status;
  };
  EXPECT_EQ(twice(2), OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  EXPECT_EQ(authority_->OcspSignatures() - before, 11u);
  // The budget refills by the clock.
  clock_.Advance(1s);
  EXPECT_EQ(twice(Authority::kMaxOcspCertIds), OCSP_RESPONSE_STATUS_SUCCESSFUL);
  EXPECT_EQ(twice(Authority::kMaxOcspCertIds + 1), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  OcspRequestPtr req = nonced();
  EXPECT_EQ(OCSP_check_nonce(req.get(), Ask(*authority_, req.get()).basic.get()), 1);
  EXPECT_EQ(authority_->OcspSignatures() - before, 13u);
  // A nonced request answered past the budget from the cache is not remembered by its bytes:
  // asked again once the budget has refilled, it has its nonce echoed.
  int echo = 1;
  for (int i = 0; i < 20 && echo == 1; ++i) {
    echo = OCSP_check_nonce(req.get(), Ask(*authority_, req.get()).basic.get());
  }
  EXPECT_EQ(echo, -1) << "the budget ran out";
  clock_.Advance(1s);
  EXPECT_EQ(OCSP_check_nonce(req.get(), Ask(*authority_, req.get()).basic.get()), 1);
}

using X509PubkeyPtr = std::unique_ptr<X509_PUBKEY, crypto::Deleter<&X509_PUBKEY_free>>;

// PssSpki re-labels the RSA key of |rsa_spki| (rsaEncryption) as id-RSASSA-PSS, with absent
// parameters or with |params| (DER RSASSA-PSS-params).
std::vector<std::uint8_t> PssSpki(const std::vector<std::uint8_t>& rsa_spki,
                                  std::optional<std::vector<std::uint8_t>> params) {
  const unsigned char* p = rsa_spki.data();
  X509PubkeyPtr pub(d2i_X509_PUBKEY(nullptr, &p, static_cast<long>(rsa_spki.size())));
  const unsigned char* bits = nullptr;
  int bits_len = 0;
  EXPECT_EQ(X509_PUBKEY_get0_param(nullptr, &bits, &bits_len, nullptr, pub.get()), 1);
  auto* copy =
      static_cast<unsigned char*>(OPENSSL_memdup(bits, static_cast<std::size_t>(bits_len)));
  ASN1_STRING* seq = nullptr;
  if (params) {
    seq = ASN1_STRING_new();
    ASN1_STRING_set(seq, params->data(), static_cast<int>(params->size()));
  }
  X509PubkeyPtr pss(X509_PUBKEY_new());
  EXPECT_EQ(X509_PUBKEY_set0_param(pss.get(), OBJ_nid2obj(NID_rsassaPss),
                                   params ? V_ASN1_SEQUENCE : V_ASN1_UNDEF, seq, copy, bits_len),
            1);
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(pss.get(), &der);
  std::vector<std::uint8_t> out(der, der + std::max(len, 0));
  OPENSSL_free(der);
  return out;
}

// docs/security.md: an RSA key is one key whatever OID its SPKI names.
TEST_F(PkiTest, AnRsaKeyRevokedForKeyCompromiseIsRefusedUnderThePssOidToo) {
  Open();
  options_.issuing_suites = {crypto::SuiteId::kRsa3072PssSha256};
  AuthorityOptions options = options_;
  auto rsa_authority =
      Authority::Open(test::Opened().token, *db_, clock_, crypto::OpenSslRng::Instance(), options);
  ASSERT_TRUE(rsa_authority) << rsa_authority.error();
  EvpPkeyPtr key(EVP_RSA_gen(3072));
  ASSERT_TRUE(key);
  const std::vector<std::uint8_t> spki = SpkiOf(key.get());
  const std::vector<std::uint8_t> pss = PssSpki(spki, std::nullopt);
  const std::vector<std::uint8_t> pss_default_params = PssSpki(spki, {{0x30, 0x00}});
  ASSERT_NE(pss, spki);
  ASSERT_NE(pss_default_params, pss);
  auto fp = crypto::KeyFingerprint(spki);
  ASSERT_TRUE(fp) << fp.error();
  EXPECT_EQ(*crypto::KeyFingerprint(pss), *fp);
  EXPECT_EQ(*crypto::KeyFingerprint(pss_default_params), *fp);

  auto rec = (*rsa_authority)->Issue(MakeCsr(key.get()), {"R-1", "acme"}, policy_);
  ASSERT_TRUE(rec) << rec.error();
  ASSERT_TRUE((*rsa_authority)->Revoke(rec->serial, Reason::kKeyCompromise));
  {
    auto tx = db_->Begin(store::TxMode::kRead);
    for (const auto& form : {spki, pss, pss_default_params}) {
      auto compromised = Authority::KeyCompromisedIn(**tx, form);
      ASSERT_TRUE(compromised) << compromised.error();
      EXPECT_TRUE(*compromised);
    }
  }
  EXPECT_THAT((*rsa_authority)->Issue(MakeCsr(key.get()), {"R-2", "acme"}, policy_),
              test::HasCode(ErrorCode::kPermissionDenied));
  // A PSS-OID key is refused outright: no suite certifies one.
  for (const auto& form : {pss, pss_default_params}) {
    auto server = (*rsa_authority)->IssueServer(form, {"localhost"});
    ASSERT_FALSE(server);
    EXPECT_THAT(server, test::HasCode(ErrorCode::kInvalidArgument));
  }
  crypto::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA-PSS", nullptr));
  EVP_PKEY* generated = nullptr;
  ASSERT_TRUE(ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 &&
              EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 3072) == 1 &&
              EVP_PKEY_generate(ctx.get(), &generated) == 1);
  EvpPkeyPtr pss_key(generated);
  ASSERT_EQ(EVP_PKEY_get_base_id(pss_key.get()), EVP_PKEY_RSA_PSS);
  auto pss_csr = (*rsa_authority)->Issue(MakeCsr(pss_key.get()), {"R-3", "acme"}, policy_);
  ASSERT_FALSE(pss_csr);
  EXPECT_THAT(pss_csr, test::HasCode(ErrorCode::kInvalidArgument));
}

// docs/security.md: a compromise found after another revocation is still recorded.
TEST_F(PkiTest, ARevokedCertificatesReasonCanBeRaisedToKeyCompromise) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  CertificateRecord old = IssueOne(key.get(), "GW-0001");
  EvpPkeyPtr next(EVP_EC_gen("P-256"));
  IssueOne(next.get(), "GW-0001");
  auto superseded = authority_->Revoke(old.serial, Reason::kSuperseded);
  ASSERT_TRUE(superseded) << superseded.error();
  clock_.Advance(2s);
  auto raised = authority_->Revoke(old.serial, Reason::kKeyCompromise, "operator:alice");
  ASSERT_TRUE(raised) << raised.error();
  EXPECT_EQ(raised->status, Status::kRevoked);
  EXPECT_EQ(raised->reason, Reason::kKeyCompromise);
  EXPECT_EQ(raised->revoked_at, superseded->revoked_at) << "RFC 5280 §5.3.1: the date stays";
  int reason = -1;
  EXPECT_EQ(Status(old, &reason), V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(reason, static_cast<int>(Reason::kKeyCompromise)) << "published";
  {
    auto tx = db_->Begin(store::TxMode::kRead);
    EXPECT_TRUE(*Authority::KeyCompromisedIn(**tx, SpkiOf(key.get())));
  }
  auto again = authority_->Issue(MakeCsr(key.get()), {"GW-0001", "acme"}, policy_);
  ASSERT_FALSE(again);
  EXPECT_THAT(again, test::HasCode(ErrorCode::kPermissionDenied));
  // Nothing else changes a revocation: not a second compromise, not a lesser reason.
  EXPECT_THAT(authority_->Revoke(old.serial, Reason::kCaCompromise),
              test::HasCode(ErrorCode::kConflict));
  EXPECT_THAT(authority_->Revoke(old.serial, Reason::kSuperseded),
              test::HasCode(ErrorCode::kConflict));
  EXPECT_THAT(authority_->Release(old.serial), test::HasCode(ErrorCode::kConflict));
}

// docs/security.md: another good certificate of a compromised key is not reused.
TEST_F(PkiTest, ServerCertificateNeverReusesACertificateOfACompromisedKey) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  const std::vector<std::uint8_t> spki = SpkiOf(key.get());
  auto older = authority_->IssueServer(spki, {"localhost"});
  ASSERT_TRUE(older) << older.error();
  clock_.Advance(1s);
  auto newer = authority_->IssueServer(spki, {"localhost"});
  ASSERT_TRUE(newer) << newer.error();
  ASSERT_TRUE(authority_->Revoke(older->serial, Reason::kKeyCompromise));
  auto reused = authority_->ServerCertificate(spki, {"localhost"});
  ASSERT_FALSE(reused) << "reused " << reused->serial;
  EXPECT_THAT(reused, test::HasCode(ErrorCode::kPermissionDenied));
}

// docs/security.md: the CA enforces the identifier character set itself.
TEST_F(PkiTest, SubjectsOutsideTheIdentifierCharacterSetAreRefused) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  const std::vector<std::uint8_t> csr = MakeCsr(key.get());
  for (const DeviceIdentity& bad : std::vector<DeviceIdentity>{{"GW-1,O=evil", "acme"},
                                                               {"GW-1", "acme\nCN=x"},
                                                               {std::string("GW-1\0x", 6), "acme"},
                                                               {"GW-1", "a=b"},
                                                               {"-GW", "acme"},
                                                               {std::string(65, 'a'), "acme"}}) {
    auto issued = authority_->Issue(csr, bad, policy_);
    ASSERT_FALSE(issued) << bad.serial;
    EXPECT_THAT(issued, test::HasCode(ErrorCode::kInvalidArgument)) << bad.serial;
  }
  EXPECT_TRUE(authority_->Issue(csr, {"GW-1.a_b", ""}, policy_));
}

// The schema (migration 3, compromised_keys) and the statements of revocation on both backends.
class PkiDbTest : public ::testing::TestWithParam<test::Backend> {};

TEST_P(PkiDbTest, CompromisedKeysAndCaRevocationOnEitherBackend) {
  test::TestDb db(GetParam());
  FakeClock clock(SystemClock::Instance().Now());
  auto opened =
      Authority::Open(test::Opened().token, db.db(), clock, crypto::OpenSslRng::Instance(), {});
  ASSERT_TRUE(opened) << opened.error();
  Authority& authority = **opened;
  crypto::SuitePolicy policy;
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  auto first = authority.Issue(MakeCsr(key.get()), {"A", "acme"}, policy);
  ASSERT_TRUE(first) << first.error();
  ASSERT_TRUE(authority.Revoke(first->serial, Reason::kKeyCompromise));
  auto again = authority.Issue(MakeCsr(key.get()), {"B", "acme"}, policy);
  ASSERT_FALSE(again);
  EXPECT_THAT(again, test::HasCode(ErrorCode::kPermissionDenied));
  auto tx = db.db().Begin(store::TxMode::kRead);
  ASSERT_TRUE(tx);
  auto compromised = Authority::KeyCompromisedIn(**tx, SpkiOf(key.get()));
  ASSERT_TRUE(compromised) << compromised.error();
  EXPECT_TRUE(*compromised);
  tx->reset();
  const std::string ca_serial = SerialOf(*authority.CaCertificate("ecdsa-p256-sha256"));
  auto revoked = authority.Revoke(ca_serial, Reason::kCaCompromise);
  ASSERT_TRUE(revoked) << revoked.error();
  auto root_crl = authority.Crl("root", 0);
  ASSERT_TRUE(root_crl) << root_crl.error();
  EXPECT_EQ(root_crl->entries, 1u);
  EvpPkeyPtr fresh(EVP_EC_gen("P-256"));
  EXPECT_THAT(authority.Issue(MakeCsr(fresh.get()), {"C", "acme"}, policy),
              test::HasCode(ErrorCode::kUnavailable));
}

INSTANTIATE_TEST_SUITE_P(Backends, PkiDbTest,
                         ::testing::Values(test::Backend::kSqlite, test::Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

// ParseOcspRequest is a pure function of the request's bytes: it needs no CA, token or database.
TEST(ParseOcspRequestTest, ReadsCertIdsAndNonceAndRefusesWhatTheLimitsRefuse) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  crypto::X509NamePtr name(X509_NAME_new());
  X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("issuer"), -1, -1, 0);
  X509Ptr issuer(X509_new());
  X509_set_subject_name(issuer.get(), name.get());
  X509_set_pubkey(issuer.get(), key.get());

  OcspRequestPtr req(OCSP_REQUEST_new());
  AddSerial(req.get(), issuer.get(), std::array<std::uint8_t, 2>{0x12, 0x34});
  AddSerial(req.get(), issuer.get(), std::array<std::uint8_t, 1>{0x01}, /*negative=*/true);
  OCSP_request_add1_nonce(req.get(), nullptr, -1);
  auto parsed = internal::ParseOcspRequest(RequestDer(req.get()), Authority::kMaxOcspCertIds);
  if (!parsed.has_value()) GTEST_FAIL() << "status " << parsed.error();
  EXPECT_TRUE(parsed->has_nonce);
  ASSERT_EQ(parsed->ids.size(), 2u);
  EXPECT_EQ(parsed->ids[0].md_nid, NID_sha1);
  EXPECT_EQ(parsed->ids[0].Serial(), "1234");
  EXPECT_EQ(parsed->ids[0].cache_key, "02021234");
  EXPECT_EQ(parsed->ids[1].Serial(), "") << "negative serials have no hex form";
  EXPECT_EQ(parsed->ids[1].cache_key, "0201ff");

  auto limited = internal::ParseOcspRequest(RequestDer(req.get()), 1);
  ASSERT_FALSE(limited.has_value());
  EXPECT_EQ(limited.error(), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  std::vector<std::uint8_t> trailing = RequestDer(req.get());
  trailing.push_back(0);
  auto garbage = internal::ParseOcspRequest(trailing, Authority::kMaxOcspCertIds);
  ASSERT_FALSE(garbage.has_value());
  EXPECT_EQ(garbage.error(), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  OcspRequestPtr empty(OCSP_REQUEST_new());
  auto none = internal::ParseOcspRequest(RequestDer(empty.get()), Authority::kMaxOcspCertIds);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error(), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  // Debian's OpenSSL lays the CertID out as its template says, so a CertID with absent or NULL
  // hash parameters is not copied just to be checked (make bench's cached OCSP rate).
  EXPECT_TRUE(internal::CertIdCopyCheckIsFree());
}

// The cache answers a request it has seen, byte for byte, without parsing it; what it remembers
// is bounded per answer and goes with the answer.
TEST(OcspAnswerCacheTest, RemembersRequestBytesBoundedAndForgetsThemWithTheirAnswer) {
  using Cache = internal::OcspAnswerCache;
  Cache cache(2);
  const TimePoint now = SystemClock::Instance().Now();
  const Cache::Key a{"ca", NID_sha1, "0201aa"};
  const Cache::Key b{"ca", NID_sha1, "0201bb"};
  const Cache::Key c{"ca", NID_sha1, "0201cc"};
  auto answer = [&](std::uint8_t tag) {
    OcspAnswer x;
    x.der = {tag};
    x.cacheable = true;
    x.this_update = now;
    return x;
  };
  auto request = [](std::uint8_t tag, std::size_t size = 8) {
    return std::vector<std::uint8_t>(size, tag);
  };
  auto served = [&](const std::vector<std::uint8_t>& der) -> int {
    auto found = cache.FindRequest(der, now, 1h);
    return found ? found->der.front() : -1;
  };

  EXPECT_FALSE(cache.Find(a, now, 1h, request(1)));
  EXPECT_EQ(served(request(1)), -1) << "no answer for the key: nothing to remember";
  cache.Put(a, answer(0xa));
  EXPECT_EQ(served(request(1)), -1) << "nothing asked to be remembered";
  ASSERT_TRUE(cache.Find(a, now, 1h, request(1)));
  EXPECT_EQ(served(request(1)), 0xa);
  EXPECT_EQ(served(request(1, 9)), -1) << "only the exact bytes";
  EXPECT_FALSE(cache.FindRequest(request(1), now + 2h, 1h)) << "too old";
  cache.Put(a, answer(0xb));
  EXPECT_EQ(served(request(1)), 0xb) << "a re-signed answer keeps its requests";

  // At most kRequestsPerAnswer encodings per answer, the oldest dropped first, none over
  // kMaxRequestBytes.
  constexpr std::uint8_t kLast = 1 + Cache::kRequestsPerAnswer;
  for (std::uint8_t i = 2; i <= kLast; ++i) EXPECT_TRUE(cache.Find(a, now, 1h, request(i)));
  EXPECT_EQ(served(request(1)), -1);
  for (std::uint8_t i = 2; i <= kLast; ++i) EXPECT_EQ(served(request(i)), 0xb);
  const std::vector<std::uint8_t> long_request = request(9, Cache::kMaxRequestBytes + 1);
  cache.Find(a, now, 1h, long_request);
  EXPECT_EQ(served(long_request), -1);
  EXPECT_FALSE(cache.Find(a, now + 2h, 1h, request(9)));
  EXPECT_EQ(served(request(9)), -1) << "a stale answer remembers nothing";

  // Forget, eviction and Prune take the remembered requests with the answer.
  cache.Forget("ca", "0201aa");
  EXPECT_EQ(served(request(2)), -1);
  cache.Put(a, answer(0xa), request(2));
  cache.Put(b, answer(0xb), request(3));
  cache.Put(c, answer(0xc));  // evicts a, signed first
  EXPECT_EQ(served(request(2)), -1);
  EXPECT_EQ(served(request(3)), 0xb);
  cache.Prune(now + 2h, 1h);
  EXPECT_EQ(cache.Size(), 0u);
  EXPECT_EQ(served(request(3)), -1);
}

}  // namespace
}  // namespace fleetid::pki
