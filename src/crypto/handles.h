// One RAII owner per OpenSSL handle type. Each alias owns exactly one reference and frees it with
// the matching *_free function through a zero-size deleter.
#ifndef FLEETID_CRYPTO_HANDLES_H_
#define FLEETID_CRYPTO_HANDLES_H_

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/param_build.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace fleetid::crypto {

template <auto Fn>
struct Deleter {
  void operator()(auto* p) const noexcept { Fn(p); }
};

using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<&EVP_PKEY_free>>;
using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<&EVP_PKEY_CTX_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<&EVP_MD_CTX_free>>;
using EvpMdPtr = std::unique_ptr<EVP_MD, Deleter<&EVP_MD_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<&BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<&BN_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, Deleter<&ECDSA_SIG_free>>;
using OsslParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Deleter<&OSSL_PARAM_BLD_free>>;
using OsslParamPtr = std::unique_ptr<OSSL_PARAM, Deleter<&OSSL_PARAM_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<&X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, Deleter<&X509_REQ_free>>;
using X509AlgorPtr = std::unique_ptr<X509_ALGOR, Deleter<&X509_ALGOR_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, Deleter<&X509_NAME_free>>;
using Asn1ObjectPtr = std::unique_ptr<ASN1_OBJECT, Deleter<&ASN1_OBJECT_free>>;
using Asn1OctetStringPtr = std::unique_ptr<ASN1_OCTET_STRING, Deleter<&ASN1_OCTET_STRING_free>>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, Deleter<&ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, Deleter<&ASN1_TIME_free>>;
using Asn1EnumeratedPtr = std::unique_ptr<ASN1_ENUMERATED, Deleter<&ASN1_ENUMERATED_free>>;
using Asn1BitStringPtr = std::unique_ptr<ASN1_BIT_STRING, Deleter<&ASN1_BIT_STRING_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<&X509_EXTENSION_free>>;
using Pkcs7Ptr = std::unique_ptr<PKCS7, Deleter<&PKCS7_free>>;
using X509AttributePtr = std::unique_ptr<X509_ATTRIBUTE, Deleter<&X509_ATTRIBUTE_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, Deleter<&X509_CRL_free>>;
using X509RevokedPtr = std::unique_ptr<X509_REVOKED, Deleter<&X509_REVOKED_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, Deleter<&X509_STORE_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<&GENERAL_NAMES_free>>;
using OcspRequestPtr = std::unique_ptr<OCSP_REQUEST, Deleter<&OCSP_REQUEST_free>>;
using OcspResponsePtr = std::unique_ptr<OCSP_RESPONSE, Deleter<&OCSP_RESPONSE_free>>;
using OcspBasicRespPtr = std::unique_ptr<OCSP_BASICRESP, Deleter<&OCSP_BASICRESP_free>>;
using OcspCertIdPtr = std::unique_ptr<OCSP_CERTID, Deleter<&OCSP_CERTID_free>>;

// Bytes OpenSSL allocated for the caller (i2d_* with *out == nullptr).
inline void OpenSslFree(void* p) { OPENSSL_free(p); }
using OpenSslBytesPtr = std::unique_ptr<unsigned char, Deleter<&OpenSslFree>>;

// A generic DER SEQUENCE decoded one level deep (d2i_ASN1_SEQUENCE_ANY): each element an
// ASN1_TYPE, constructed elements kept as their whole encoding.
inline void FreeAsn1Sequence(ASN1_SEQUENCE_ANY* seq) { sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free); }
using Asn1SequencePtr = std::unique_ptr<ASN1_SEQUENCE_ANY, Deleter<&FreeAsn1Sequence>>;

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_HANDLES_H_
