// testing/certs.h: PKCS#10 requests and X.509 certificates made with OpenSSL for tests, where
// a test needs a peer's credential that fleetid's CA did not issue (a device's request, a
// manufacturer's CA, a rogue client).
#ifndef FLEETID_TESTING_CERTS_H_
#define FLEETID_TESTING_CERTS_H_

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/handles.h"

namespace fleetid::test {

// OpensslErrors drains this thread's OpenSSL error queue into text, one error a line, with the
// data a provider attached to it.
std::string OpensslErrors();

struct CsrOptions {
  std::string_view common_name{};  // The subject's CN; empty: an empty subject.
  EVP_PKEY* signer = nullptr;      // The key that signs; null: the request's own key.
  const EVP_MD* md = nullptr;      // null: SHA-256, or none for an Ed25519/Ed448 signer.
};

// MakeCsr returns the DER of a PKCS#10 request for |key|'s public key (a signing failure is a
// test failure).
std::vector<std::uint8_t> MakeCsr(EVP_PKEY* key, const CsrOptions& options = {});

struct Extension {
  int nid;            // NID_basic_constraints, NID_key_usage, ...
  const char* value;  // openssl x509v3_config text: "critical,CA:TRUE"
};

// MakeCert issues a version 3 certificate for |subject_key| named CN=|common_name|, valid from a
// minute ago for an hour, with a fresh serial, signed with |issuer_key| (SHA-256) by |issuer|, or
// self-signed when |issuer| is null. Returns null (after a test failure) if it cannot.
crypto::X509Ptr MakeCert(std::string_view common_name, EVP_PKEY* subject_key, X509* issuer,
                         EVP_PKEY* issuer_key, std::initializer_list<Extension> extensions);

// MakeCa returns a self-signed CA certificate (keyCertSign, cRLSign) for |key|.
crypto::X509Ptr MakeCa(std::string_view common_name, EVP_PKEY* key);

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_CERTS_H_
