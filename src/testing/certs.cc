#include "testing/certs.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <array>
#include <atomic>

namespace fleetid::test {

std::string OpensslErrors() {
  std::string out;
  const char* data = nullptr;
  int flags = 0;
  while (const unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    std::array<char, 256> text{};
    ERR_error_string_n(e, text.data(), text.size());
    out += text.data();
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0) {
      out += " (";
      out += data;
      out += ")";
    }
    out += "\n";
  }
  return out;
}

namespace {

const EVP_MD* DigestFor(EVP_PKEY* signer, const EVP_MD* md) {
  if (md != nullptr) return md;
  const int id = EVP_PKEY_get_base_id(signer);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

}  // namespace

std::vector<std::uint8_t> MakeCsr(EVP_PKEY* key, const CsrOptions& options) {
  crypto::X509ReqPtr req(X509_REQ_new());
  if (!options.common_name.empty()) {
    crypto::X509NamePtr name(X509_NAME_new());
    X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(options.common_name.data()),
                               static_cast<int>(options.common_name.size()), -1, 0);
    X509_REQ_set_subject_name(req.get(), name.get());
  }
  EXPECT_EQ(X509_REQ_set_pubkey(req.get(), key), 1) << OpensslErrors();
  EVP_PKEY* signer = options.signer != nullptr ? options.signer : key;
  EXPECT_GT(X509_REQ_sign(req.get(), signer, DigestFor(signer, options.md)), 0) << OpensslErrors();
  const int len = i2d_X509_REQ(req.get(), nullptr);
  if (len <= 0) return {};
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

crypto::X509Ptr MakeCert(std::string_view common_name, EVP_PKEY* subject_key, X509* issuer,
                         EVP_PKEY* issuer_key, std::initializer_list<Extension> extensions) {
  static std::atomic<long> serial{1000};
  crypto::X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.data()),
                             static_cast<int>(common_name.size()), -1, 0);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer != nullptr ? issuer : cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  EXPECT_EQ(X509_set_pubkey(cert.get(), subject_key), 1) << OpensslErrors();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const Extension& extension : extensions) {
    const crypto::X509ExtensionPtr ext(
        X509V3_EXT_conf_nid(nullptr, &ctx, extension.nid, extension.value));
    EXPECT_TRUE(ext) << extension.value << ": " << OpensslErrors();
    if (ext) {
      EXPECT_EQ(X509_add_ext(cert.get(), ext.get(), -1), 1);
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
    ADD_FAILURE() << "X509_sign: " << OpensslErrors();
    return nullptr;
  }
  return cert;
}

crypto::X509Ptr MakeCa(std::string_view common_name, EVP_PKEY* key) {
  return MakeCert(common_name, key, nullptr, key,
                  {{NID_basic_constraints, "critical,CA:TRUE"},
                   {NID_key_usage, "critical,keyCertSign,cRLSign"},
                   {NID_subject_key_identifier, "hash"}});
}

}  // namespace fleetid::test
