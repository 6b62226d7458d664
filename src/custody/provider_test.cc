// The fleetid-token provider against a real SoftHSM2 token: plain OpenSSL calls (EVP_DigestSign,
// X509_sign, X509_REQ_sign, X509_CRL_sign, OCSP_basic_sign, TLS 1.3 in libssl) sign with keys that
// stay in the token, and what they make verifies with the exported public key and the openssl CLI.
#include "custody/provider.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "testing/certs.h"
#include "testing/command.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::custody {
namespace {

using crypto::AsBytes;
using crypto::Suite;
using crypto::SuiteId;

using SslCtxPtr = std::unique_ptr<SSL_CTX, crypto::Deleter<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, crypto::Deleter<&SSL_free>>;
using crypto::OcspBasicRespPtr;
using crypto::X509CrlPtr;
using crypto::X509ExtensionPtr;
using crypto::X509RevokedPtr;
using crypto::X509StorePtr;
using crypto::OcspCertIdPtr;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, crypto::Deleter<&ASN1_TIME_free>>;
using EvpKeymgmtPtr = std::unique_ptr<EVP_KEYMGMT, crypto::Deleter<&EVP_KEYMGMT_free>>;
using EvpSignaturePtr = std::unique_ptr<EVP_SIGNATURE, crypto::Deleter<&EVP_SIGNATURE_free>>;

using test::TheToken;

std::string ProviderLabel(std::string_view base) {
  return test::UniqueLabel(fmt::format("provider-{}", base));
}

const EVP_MD* SuiteMd(const Suite& suite) {
  if (suite.digest_name.empty()) return nullptr;
  return EVP_get_digestbyname(std::string(suite.digest_name).c_str());
}

std::shared_ptr<Signer> NewSigner(const Suite& suite, std::string_view base) {
  const std::string label = ProviderLabel(base);
  auto attrs = TheToken()->GenerateKey(label, suite, crypto::OpenSslRng::Instance());
  EXPECT_TRUE(attrs) << attrs.error();
  auto signer = TheToken()->GetSigner(label);
  EXPECT_TRUE(signer) << signer.error();
  if (!signer) return nullptr;
  return std::shared_ptr<Signer>(std::move(*signer));
}

void AddExtension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  ASSERT_TRUE(ext);
  ASSERT_EQ(X509_add_ext(cert, ext.get(), -1), 1);
}

// UnsignedCert returns a self-issued CA certificate for |key|, ready for X509_sign.
crypto::X509Ptr UnsignedCert(EVP_PKEY* key, std::string_view common_name) {
  crypto::X509Ptr cert(X509_new());
  static std::atomic<long> serial{1};
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.data()),
                             static_cast<int>(common_name.size()), -1, 0);
  X509_set_issuer_name(cert.get(), name);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  EXPECT_EQ(X509_set_pubkey(cert.get(), key), 1) << test::OpensslErrors();
  AddExtension(cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign");
  AddExtension(cert.get(), NID_subject_key_identifier, "hash");
  return cert;
}

// SelfSigned returns UnsignedCert signed by |key| itself, or null.
crypto::X509Ptr SelfSigned(EVP_PKEY* key, const EVP_MD* md, std::string_view common_name) {
  crypto::X509Ptr cert = UnsignedCert(key, common_name);
  if (X509_sign(cert.get(), key, md) <= 0) {
    ADD_FAILURE() << "X509_sign: " << test::OpensslErrors();
    return nullptr;
  }
  return cert;
}

std::vector<std::uint8_t> Der(const X509_ALGOR* algor) {
  unsigned char* out = nullptr;
  const int len = i2d_X509_ALGOR(algor, &out);
  std::vector<std::uint8_t> der(out, out + std::max(len, 0));
  OPENSSL_free(out);
  return der;
}

std::vector<std::uint8_t> SpkiDer(EVP_PKEY* key) {
  unsigned char* out = nullptr;
  const int len = i2d_PUBKEY(key, &out);
  std::vector<std::uint8_t> der(out, out + std::max(len, 0));
  OPENSSL_free(out);
  return der;
}

std::vector<std::uint8_t> SignatureAlgorithmDer(const Suite& suite) {
  return {suite.signature_algorithm_der.begin(), suite.signature_algorithm_der.end()};
}

// --- TLS over a BIO pair -----------------------------------------------------------------------

SslCtxPtr TlsContext(bool server, int version = TLS1_3_VERSION) {
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  EXPECT_TRUE(ctx);
  SSL_CTX_set_min_proto_version(ctx.get(), version);
  SSL_CTX_set_max_proto_version(ctx.get(), version);
  return ctx;
}

// Handshake runs both ends of a TLS connection in this thread, then sends one message each way.
// Returns "" or what went wrong.
std::string Handshake(SSL_CTX* client_ctx, SSL_CTX* server_ctx, SslPtr* client_out = nullptr) {
  SslPtr client(SSL_new(client_ctx));
  SslPtr server(SSL_new(server_ctx));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  if (!client || !server || BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) != 1) {
    return "setup: " + test::OpensslErrors();
  }
  SSL_set_bio(client.get(), client_bio, client_bio);  // each SSL takes its BIO
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 50 && !(client_done && server_done); ++round) {
    for (auto [ssl, done, who] : {std::tuple{client.get(), &client_done, "client"},
                                  std::tuple{server.get(), &server_done, "server"}}) {
      if (*done) continue;
      const int rc = SSL_do_handshake(ssl);
      if (rc == 1) {
        *done = true;
      } else if (const int err = SSL_get_error(ssl, rc);
                 err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
        return fmt::format("{} handshake failed (SSL_get_error {}, verify {}): {}", who, err,
                           X509_verify_cert_error_string(SSL_get_verify_result(ssl)),
                           test::OpensslErrors());
      }
    }
  }
  if (!client_done || !server_done) return "handshake did not finish";
  std::array<char, 16> buffer{};
  if (SSL_write(client.get(), "ping", 4) != 4 ||
      SSL_read(server.get(), buffer.data(), buffer.size()) != 4 ||
      std::string_view(buffer.data(), 4) != "ping") {
    return "client to server: " + test::OpensslErrors();
  }
  if (SSL_write(server.get(), "pong", 4) != 4 ||
      SSL_read(client.get(), buffer.data(), buffer.size()) != 4 ||
      std::string_view(buffer.data(), 4) != "pong") {
    return "server to client: " + test::OpensslErrors();
  }
  if (client_out != nullptr) *client_out = std::move(client);
  return "";
}

// --- The suite-parameterised tests ---------------------------------------------------------------

class ProviderTest : public ::testing::TestWithParam<SuiteId> {
 protected:
  struct Key {
    std::shared_ptr<Signer> signer;
    crypto::EvpPkeyPtr pkey;
  };

  static const Suite& suite() { return crypto::GetSuite(GetParam()); }
  static const EVP_MD* md() { return SuiteMd(suite()); }

  // TheKey is one token key per suite, made on first use (RSA-3072 generation is slow).
  static Key& TheKey() {
    Key& key = keys_[GetParam()];
    if (!key.signer) {
      key.signer = NewSigner(suite(), suite().name);
      auto pkey = TokenPkey(key.signer);
      EXPECT_TRUE(pkey) << pkey.error();
      if (pkey) key.pkey = std::move(*pkey);
    }
    return key;
  }
  static EVP_PKEY* token_pkey() { return TheKey().pkey.get(); }
  static EVP_PKEY* public_key() { return TheKey().signer->public_key(); }

  // Signers hold the token open; they must go before the test environment closes it.
  static void TearDownTestSuite() { keys_.clear(); }

  void SetUp() override {
    ASSERT_NE(token_pkey(), nullptr);
    ERR_clear_error();
  }

  static inline std::map<SuiteId, Key> keys_;
};

TEST_P(ProviderTest, KeyLooksLikeItsPublicKey) {
  EVP_PKEY* token = token_pkey();
  EXPECT_EQ(EVP_PKEY_get_bits(token), EVP_PKEY_get_bits(public_key()));
  EXPECT_EQ(EVP_PKEY_get_security_bits(token), EVP_PKEY_get_security_bits(public_key()));
  EXPECT_EQ(EVP_PKEY_get_size(token), EVP_PKEY_get_size(public_key()));
  EXPECT_EQ(EVP_PKEY_get_base_id(token), EVP_PKEY_get_base_id(public_key()));
  EXPECT_EQ(EVP_PKEY_eq(token, public_key()), 1);
  EXPECT_EQ(EVP_PKEY_eq(public_key(), token), 1);
  EXPECT_EQ(SpkiDer(token), SpkiDer(public_key())) << test::OpensslErrors();
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(token)), "fleetid-token");

  std::array<char, 64> name{};
  const int got = EVP_PKEY_get_default_digest_name(token, name.data(), name.size());
  if (suite().digest_name.empty()) {
    EXPECT_EQ(got, 2);  // mandatory: none
    EXPECT_STREQ(name.data(), "UNDEF");
  } else {
    EXPECT_GT(got, 0);
    EXPECT_EQ(name.data(), suite().digest_name);
  }
  if (suite().key_type == crypto::KeyType::kEc) {
    std::array<char, 64> group{};
    std::array<char, 64> expected{};
    ASSERT_EQ(EVP_PKEY_get_group_name(token, group.data(), group.size(), nullptr), 1);
    ASSERT_EQ(EVP_PKEY_get_group_name(public_key(), expected.data(), expected.size(), nullptr), 1);
    EXPECT_STREQ(group.data(), expected.data());
  }
  // The private half cannot be written out.
  crypto::BioPtr bio(BIO_new(BIO_s_mem()));
  EXPECT_NE(PEM_write_bio_PrivateKey(bio.get(), token, nullptr, nullptr, 0, nullptr, nullptr), 1);
  ERR_clear_error();
}

TEST_P(ProviderTest, DigestSignVerifiesWithThePublicKey) {
  const std::string message = "a tbsCertificate, more or less " + std::string(suite().name);

  crypto::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, md(), nullptr, token_pkey()), 1)
      << test::OpensslErrors();
  std::size_t len = 0;
  ASSERT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, AsBytes(message).data(), message.size()), 1);
  std::vector<std::uint8_t> sig(len);
  ASSERT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, AsBytes(message).data(), message.size()), 1)
      << test::OpensslErrors();
  sig.resize(len);
  EXPECT_TRUE(crypto::VerifySignature(suite(), public_key(), AsBytes(message), sig));

  // Verification through the token key is delegated to the public key.
  crypto::EvpMdCtxPtr vctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, md(), nullptr, token_pkey()), 1)
      << test::OpensslErrors();
  EXPECT_EQ(
      EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), AsBytes(message).data(), message.size()),
      1);
  const std::string other = message + "!";
  ASSERT_EQ(EVP_DigestVerifyInit(vctx.get(), nullptr, md(), nullptr, token_pkey()), 1);
  EXPECT_NE(
      EVP_DigestVerify(vctx.get(), sig.data(), sig.size(), AsBytes(other).data(), other.size()), 1);
  ERR_clear_error();

  if (suite().digest_name.empty()) return;  // pure EdDSA has neither streaming nor pre-hashing

  // Streaming: EVP_DigestSignUpdate in pieces, then Final (which signs the running hash).
  crypto::EvpMdCtxPtr stream(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestSignInit(stream.get(), nullptr, md(), nullptr, token_pkey()), 1);
  ASSERT_EQ(EVP_DigestSignUpdate(stream.get(), message.data(), 10), 1);
  ASSERT_EQ(EVP_DigestSignUpdate(stream.get(), message.data() + 10, message.size() - 10), 1);
  len = 0;
  ASSERT_EQ(EVP_DigestSignFinal(stream.get(), nullptr, &len), 1);
  std::vector<std::uint8_t> streamed(len);
  ASSERT_EQ(EVP_DigestSignFinal(stream.get(), streamed.data(), &len), 1) << test::OpensslErrors();
  streamed.resize(len);
  EXPECT_TRUE(crypto::VerifySignature(suite(), public_key(), AsBytes(message), streamed));

  // Pre-hashed: EVP_PKEY_sign on a digest, which reaches Signer::SignDigest.
  auto digest = crypto::Digest(suite().digest_name, AsBytes(message));
  ASSERT_TRUE(digest);
  crypto::EvpPkeyCtxPtr pctx(EVP_PKEY_CTX_new_from_pkey(nullptr, token_pkey(), nullptr));
  ASSERT_EQ(EVP_PKEY_sign_init(pctx.get()), 1) << test::OpensslErrors();
  ASSERT_EQ(EVP_PKEY_CTX_set_signature_md(pctx.get(), md()), 1) << test::OpensslErrors();
  if (suite().key_type == crypto::KeyType::kRsa) {
    ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx.get(), RSA_PKCS1_PSS_PADDING), 1)
        << test::OpensslErrors();
    ASSERT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx.get(), 32), 1) << test::OpensslErrors();
  }
  len = 0;
  ASSERT_EQ(EVP_PKEY_sign(pctx.get(), nullptr, &len, digest->data(), digest->size()), 1);
  std::vector<std::uint8_t> prehashed(len);
  ASSERT_EQ(EVP_PKEY_sign(pctx.get(), prehashed.data(), &len, digest->data(), digest->size()), 1)
      << test::OpensslErrors();
  prehashed.resize(len);
  EXPECT_TRUE(crypto::VerifySignature(suite(), public_key(), AsBytes(message), prehashed));
  ASSERT_EQ(EVP_PKEY_verify_init(pctx.get()), 1) << test::OpensslErrors();
  ASSERT_EQ(EVP_PKEY_CTX_set_signature_md(pctx.get(), md()), 1);
  EXPECT_EQ(EVP_PKEY_verify(pctx.get(), prehashed.data(), prehashed.size(), digest->data(),
                            digest->size()),
            1)
      << test::OpensslErrors();
}

TEST_P(ProviderTest, SelfSignedCertificateAndCsrVerify) {
  crypto::X509Ptr cert = SelfSigned(token_pkey(), md(), "fleetid test CA");
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_verify(cert.get(), public_key()), 1) << test::OpensslErrors();
  EXPECT_EQ(Der(X509_get0_tbs_sigalg(cert.get())), SignatureAlgorithmDer(suite()));
  const X509_ALGOR* outer = nullptr;
  X509_get0_signature(nullptr, &outer, cert.get());
  EXPECT_EQ(Der(outer), SignatureAlgorithmDer(suite()));

  // The openssl CLI accepts it as a self-signed root.
  const auto path = test::DataDir() / fmt::format("{}.pem", suite().name);
  {
    crypto::BioPtr out(BIO_new_file(path.c_str(), "w"));
    ASSERT_TRUE(out);
    ASSERT_EQ(PEM_write_bio_X509(out.get(), cert.get()), 1);
  }
  const test::CommandResult verified = test::RunCommand(
      fmt::format("openssl verify -CAfile '{}' '{}'", path.string(), path.string()));
  ASSERT_NE(verified.status, -1) << verified.output;
  EXPECT_EQ(verified.status, 0) << verified.output;
  EXPECT_NE(verified.output.find(": OK"), std::string::npos) << verified.output;

  crypto::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_REQ_set_subject_name(req.get(), X509_get_subject_name(cert.get()));
  ASSERT_EQ(X509_REQ_set_pubkey(req.get(), token_pkey()), 1) << test::OpensslErrors();
  ASSERT_GT(X509_REQ_sign(req.get(), token_pkey(), md()), 0) << test::OpensslErrors();
  EXPECT_EQ(X509_REQ_verify(req.get(), public_key()), 1) << test::OpensslErrors();
  crypto::EvpPkeyPtr req_key(X509_REQ_get_pubkey(req.get()));
  EXPECT_EQ(EVP_PKEY_eq(req_key.get(), public_key()), 1);
}

TEST_P(ProviderTest, CrlVerifies) {
  crypto::X509Ptr cert = SelfSigned(token_pkey(), md(), "fleetid CRL issuer");
  ASSERT_TRUE(cert);
  X509CrlPtr crl(X509_CRL_new());
  ASSERT_EQ(X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2), 1);
  ASSERT_EQ(X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(cert.get())), 1);
  Asn1TimePtr now(X509_gmtime_adj(nullptr, 0));
  Asn1TimePtr next(X509_gmtime_adj(nullptr, 3600));
  ASSERT_EQ(X509_CRL_set1_lastUpdate(crl.get(), now.get()), 1);
  ASSERT_EQ(X509_CRL_set1_nextUpdate(crl.get(), next.get()), 1);
  X509RevokedPtr revoked(X509_REVOKED_new());
  crypto::Asn1IntegerPtr serial(ASN1_INTEGER_new());
  ASN1_INTEGER_set(serial.get(), 4242);
  ASSERT_EQ(X509_REVOKED_set_serialNumber(revoked.get(), serial.get()), 1);
  ASSERT_EQ(X509_REVOKED_set_revocationDate(revoked.get(), now.get()), 1);
  ASSERT_EQ(X509_CRL_add0_revoked(crl.get(), revoked.release()), 1);
  ASSERT_EQ(X509_CRL_sort(crl.get()), 1);
  ASSERT_GT(X509_CRL_sign(crl.get(), token_pkey(), md()), 0) << test::OpensslErrors();
  EXPECT_EQ(X509_CRL_verify(crl.get(), public_key()), 1) << test::OpensslErrors();
  const X509_ALGOR* algorithm = nullptr;
  X509_CRL_get0_signature(crl.get(), nullptr, &algorithm);
  EXPECT_EQ(Der(algorithm), SignatureAlgorithmDer(suite()));
}

TEST_P(ProviderTest, OcspResponseVerifies) {
  crypto::X509Ptr cert = SelfSigned(token_pkey(), md(), "fleetid OCSP");
  ASSERT_TRUE(cert);
  OcspBasicRespPtr basic(OCSP_BASICRESP_new());
  OcspCertIdPtr id(OCSP_cert_to_id(EVP_sha256(), cert.get(), cert.get()));
  ASSERT_TRUE(id);
  Asn1TimePtr now(X509_gmtime_adj(nullptr, 0));
  Asn1TimePtr next(X509_gmtime_adj(nullptr, 3600));
  ASSERT_NE(OCSP_basic_add1_status(basic.get(), id.get(), V_OCSP_CERTSTATUS_GOOD, 0, nullptr,
                                   now.get(), next.get()),
            nullptr);
  ASSERT_EQ(OCSP_basic_sign(basic.get(), cert.get(), token_pkey(), md(), nullptr, 0), 1)
      << test::OpensslErrors();

  X509StorePtr store(X509_STORE_new());
  ASSERT_EQ(X509_STORE_add_cert(store.get(), cert.get()), 1);
  EXPECT_EQ(OCSP_basic_verify(basic.get(), nullptr, store.get(), 0), 1) << test::OpensslErrors();
}

TEST_P(ProviderTest, TlsServerKeyInTheToken) {
  crypto::X509Ptr cert = SelfSigned(token_pkey(), md(), "server.fleetid.test");
  ASSERT_TRUE(cert);
  SslCtxPtr server = TlsContext(/*server=*/true);
  ASSERT_EQ(SSL_CTX_use_certificate(server.get(), cert.get()), 1) << test::OpensslErrors();
  ASSERT_EQ(SSL_CTX_use_PrivateKey(server.get(), token_pkey()), 1) << test::OpensslErrors();
  ASSERT_EQ(SSL_CTX_check_private_key(server.get()), 1) << test::OpensslErrors();

  SslCtxPtr client = TlsContext(/*server=*/false);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(client.get()), cert.get()), 1);
  SSL_CTX_set_verify(client.get(), SSL_VERIFY_PEER, nullptr);
  // ECDHE on P-256: a plain "EC" key generation, which must stay with the default provider.
  ASSERT_EQ(SSL_CTX_set1_groups_list(client.get(), "P-256"), 1);

  SslPtr connection;
  const std::string failure = Handshake(client.get(), server.get(), &connection);
  ASSERT_EQ(failure, "");
  EXPECT_EQ(SSL_get_verify_result(connection.get()), X509_V_OK);
  int type_nid = NID_undef;
  ASSERT_EQ(SSL_get_peer_signature_type_nid(connection.get(), &type_nid), 1);
  switch (suite().key_type) {
    case crypto::KeyType::kEc:
      EXPECT_EQ(type_nid, NID_X9_62_id_ecPublicKey);
      break;
    case crypto::KeyType::kEd25519:
      EXPECT_EQ(type_nid, NID_ED25519);
      break;
    case crypto::KeyType::kRsa: {
      EXPECT_EQ(type_nid, NID_rsassaPss);  // rsa_pss_rsae_sha256
      int md_nid = NID_undef;
      ASSERT_EQ(SSL_get_peer_signature_nid(connection.get(), &md_nid), 1);
      EXPECT_EQ(md_nid, NID_sha256);
      break;
    }
  }
}

TEST_P(ProviderTest, Tls12ServerKeyInTheToken) {
  crypto::X509Ptr cert = SelfSigned(token_pkey(), md(), "server.fleetid.test");
  ASSERT_TRUE(cert);
  SslCtxPtr server = TlsContext(/*server=*/true, TLS1_2_VERSION);
  ASSERT_EQ(SSL_CTX_use_certificate(server.get(), cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(server.get(), token_pkey()), 1) << test::OpensslErrors();
  if (suite().key_type == crypto::KeyType::kRsa) {
    // TLS 1.2 also has rsa_pkcs1_* schemes, which a token RSA key does not sign.
    ASSERT_EQ(SSL_CTX_set1_sigalgs_list(server.get(), "rsa_pss_rsae_sha256"), 1);
  }
  SslCtxPtr client = TlsContext(/*server=*/false, TLS1_2_VERSION);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(client.get()), cert.get()), 1);
  SSL_CTX_set_verify(client.get(), SSL_VERIFY_PEER, nullptr);
  EXPECT_EQ(Handshake(client.get(), server.get()), "");
}

TEST_P(ProviderTest, TlsClientKeyInTheToken) {
  // The server has a software key; only the client's key is in the token.
  crypto::EvpPkeyPtr server_key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_TRUE(server_key) << test::OpensslErrors();
  crypto::X509Ptr server_cert = SelfSigned(server_key.get(), EVP_sha256(), "server");
  crypto::X509Ptr client_cert = SelfSigned(token_pkey(), md(), "device-0042");
  ASSERT_TRUE(server_cert && client_cert);

  SslCtxPtr server = TlsContext(/*server=*/true);
  ASSERT_EQ(SSL_CTX_use_certificate(server.get(), server_cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(server.get(), server_key.get()), 1);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(server.get()), client_cert.get()), 1);
  SSL_CTX_set_verify(server.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

  SslCtxPtr client = TlsContext(/*server=*/false);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(client.get()), server_cert.get()), 1);
  SSL_CTX_set_verify(client.get(), SSL_VERIFY_PEER, nullptr);
  ASSERT_EQ(SSL_CTX_use_certificate(client.get(), client_cert.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(client.get(), token_pkey()), 1) << test::OpensslErrors();

  EXPECT_EQ(Handshake(client.get(), server.get()), "");
}

TEST_P(ProviderTest, CheckPrivateKeyAgainstCertificates) {
  crypto::X509Ptr own = SelfSigned(token_pkey(), md(), "own");
  ASSERT_TRUE(own);
  EXPECT_EQ(X509_check_private_key(own.get(), token_pkey()), 1) << test::OpensslErrors();

  // Another key of the same type, in software.
  crypto::EvpPkeyPtr other;
  switch (suite().key_type) {
    case crypto::KeyType::kEc:
      other.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC",
                                    suite().curve_nid == NID_secp384r1 ? "P-384" : "P-256"));
      break;
    case crypto::KeyType::kEd25519:
      other.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
      break;
    case crypto::KeyType::kRsa:
      other.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048}));
      break;
  }
  ASSERT_TRUE(other) << test::OpensslErrors();
  const EVP_MD* other_md = suite().key_type == crypto::KeyType::kEd25519 ? nullptr : EVP_sha256();
  crypto::X509Ptr foreign = SelfSigned(other.get(), other_md, "other");
  ASSERT_TRUE(foreign);
  EXPECT_EQ(X509_check_private_key(foreign.get(), token_pkey()), 0);
  EXPECT_NE(EVP_PKEY_eq(other.get(), token_pkey()), 1);
  ERR_clear_error();
}

TEST_P(ProviderTest, OtherDigestsAreRefused) {
  crypto::X509Ptr cert = UnsignedCert(token_pkey(), "wrong digest");
  EXPECT_EQ(X509_sign(cert.get(), token_pkey(), EVP_sha512()), 0);
  const std::string errors = test::OpensslErrors();
  EXPECT_NE(errors.find(fmt::format("fleetid-token: key '{}'", TheKey().signer->label())),
            std::string::npos)
      << errors;
}

TEST_P(ProviderTest, ConcurrentCertificateSigning) {
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        crypto::X509Ptr cert = UnsignedCert(token_pkey(), fmt::format("thread {} cert {}", t, i));
        if (X509_sign(cert.get(), token_pkey(), md()) > 0 &&
            X509_verify(cert.get(), public_key()) == 1) {
          ++good;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(good.load(), 32) << test::OpensslErrors();
}

INSTANTIATE_TEST_SUITE_P(AllSuites, ProviderTest,
                         ::testing::Values(SuiteId::kEcdsaP256Sha256, SuiteId::kEcdsaP384Sha384,
                                           SuiteId::kEd25519, SuiteId::kRsa3072PssSha256),
                         [](const auto& param_info) {
                           std::string name(crypto::GetSuite(param_info.param).name);
                           std::erase(name, '-');
                           return name;
                         });

TEST(ProviderSignDigestTest, SignsADigestAndRefusesWhatIsNotOne) {
  const Suite& p256 = crypto::GetSuite(SuiteId::kEcdsaP256Sha256);
  auto signer = NewSigner(p256, "digest");
  ASSERT_TRUE(signer);
  const std::string message = "pre-hashed";
  auto digest = crypto::Digest("SHA256", AsBytes(message));
  ASSERT_TRUE(digest);
  auto sig = signer->SignDigest(*digest);
  ASSERT_TRUE(sig) << sig.error();
  EXPECT_TRUE(crypto::VerifySignature(p256, signer->public_key(), AsBytes(message), *sig));
  auto wrong_size = signer->SignDigest(std::vector<std::uint8_t>(48));
  ASSERT_FALSE(wrong_size);
  EXPECT_THAT(wrong_size, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(wrong_size.error().message().find("a SHA256 digest is 32 bytes, not 48"),
            std::string::npos)
      << wrong_size.error();

  auto ed = NewSigner(crypto::GetSuite(SuiteId::kEd25519), "digest-ed");
  ASSERT_TRUE(ed);
  auto refused = ed->SignDigest(*digest);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(refused.error().message().find("signs messages, not digests"), std::string::npos)
      << refused.error();
}

// --- Not per suite ---------------------------------------------------------------------------

TEST(ProviderErrorTest, NullSigner) {
  auto pkey = TokenPkey(nullptr);
  ASSERT_FALSE(pkey);
  EXPECT_THAT(pkey, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST(ProviderErrorTest, RsaPaddingOtherThanPssIsRefused) {
  auto signer = NewSigner(crypto::GetSuite(SuiteId::kRsa3072PssSha256), "pkcs1");
  ASSERT_TRUE(signer);
  auto pkey = TokenPkey(signer);
  ASSERT_TRUE(pkey) << pkey.error();
  crypto::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pkey->get()), 1);
  EXPECT_LE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 0);
  EXPECT_LE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 64), 0);
  EXPECT_LE(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()), 0);
  const std::string errors = test::OpensslErrors();
  EXPECT_NE(errors.find("RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) only"), std::string::npos)
      << errors;
  // What TLS 1.3 sets for rsa_pss_rsae_sha256 is accepted.
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1) << test::OpensslErrors();
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1)
      << test::OpensslErrors();
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()), 1) << test::OpensslErrors();
}

TEST(ProviderErrorTest, PlainKeyMaterialCannotBeImported) {
  ASSERT_TRUE(TokenProvider());
  crypto::EvpPkeyPtr software(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_TRUE(software);
  OSSL_PARAM* raw = nullptr;
  ASSERT_EQ(EVP_PKEY_todata(software.get(), EVP_PKEY_KEYPAIR, &raw), 1);
  crypto::OsslParamPtr params(raw);
  crypto::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", "provider=fleetid-token"));
  ASSERT_TRUE(ctx);
  ASSERT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  EVP_PKEY* imported = nullptr;
  EXPECT_NE(EVP_PKEY_fromdata(ctx.get(), &imported, EVP_PKEY_KEYPAIR, params.get()), 1);
  EXPECT_EQ(imported, nullptr);
  EVP_PKEY_free(imported);
  ERR_clear_error();
}

TEST(ProviderErrorTest, PlainFetchesStayWithTheDefaultProvider) {
  ASSERT_TRUE(TokenProvider());
  for (const char* name : {"EC", "ED25519", "RSA"}) {
    EvpKeymgmtPtr keymgmt(EVP_KEYMGMT_fetch(nullptr, name, nullptr));
    ASSERT_TRUE(keymgmt) << name;
    EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_KEYMGMT_get0_provider(keymgmt.get())), "default")
        << name;
  }
  for (const char* name : {"ECDSA", "ED25519", "RSA"}) {
    EvpSignaturePtr signature(EVP_SIGNATURE_fetch(nullptr, name, nullptr));
    ASSERT_TRUE(signature) << name;
    EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_SIGNATURE_get0_provider(signature.get())), "default")
        << name;
  }
  crypto::EvpPkeyPtr generated(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_TRUE(generated) << test::OpensslErrors();
}

TEST(ProviderErrorTest, SigningFailsCleanlyWhenTheTokenRefuses) {
  const Suite& suite = crypto::GetSuite(SuiteId::kEcdsaP256Sha256);
  auto signer = NewSigner(suite, "revoked-sign");
  ASSERT_TRUE(signer);
  auto pkey = TokenPkey(signer);
  ASSERT_TRUE(pkey) << pkey.error();
  crypto::X509Ptr before = SelfSigned(pkey->get(), EVP_sha256(), "before");
  ASSERT_TRUE(before);
  test::ClearCkaSign(std::string(signer->label()));

  ERR_clear_error();
  crypto::X509Ptr cert = UnsignedCert(pkey->get(), "after");
  EXPECT_EQ(X509_sign(cert.get(), pkey->get(), EVP_sha256()), 0);
  const std::string errors = test::OpensslErrors();
  EXPECT_NE(errors.find("CKR_KEY_FUNCTION_NOT_PERMITTED"), std::string::npos) << errors;

  // A TLS server with that key fails its handshake, and says why.
  SslCtxPtr server = TlsContext(/*server=*/true);
  ASSERT_EQ(SSL_CTX_use_certificate(server.get(), before.get()), 1);
  ASSERT_EQ(SSL_CTX_use_PrivateKey(server.get(), pkey->get()), 1);
  SslCtxPtr client = TlsContext(/*server=*/false);
  const std::string failure = Handshake(client.get(), server.get());
  EXPECT_NE(failure.find("server handshake failed"), std::string::npos) << failure;
  EXPECT_NE(failure.find("CKR_KEY_FUNCTION_NOT_PERMITTED"), std::string::npos) << failure;
}

}  // namespace
}  // namespace fleetid::custody
