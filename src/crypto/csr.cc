#include "crypto/csr.h"

#include <openssl/err.h>
#include <openssl/objects.h>

#include "crypto/crypto.h"
#include "crypto/keys.h"

namespace fleetid::crypto {
namespace {

std::unexpected<Error> Bad(std::string_view what) {
  ERR_clear_error();
  return MakeError(ErrorCode::kInvalidArgument, "the CSR is not a DER PKCS#10 request: {}", what);
}

// Elements of the DER SEQUENCE |der|, decoded one level deep; nothing may follow it.
Result<Asn1SequencePtr> Elements(std::span<const std::uint8_t> der, std::string_view what) {
  const unsigned char* p = der.data();
  Asn1SequencePtr seq(d2i_ASN1_SEQUENCE_ANY(nullptr, &p, static_cast<long>(der.size())));
  if (!seq || p != der.data() + der.size()) return Bad(fmt::format("{} does not parse", what));
  return seq;
}

const ASN1_TYPE* Element(const ASN1_SEQUENCE_ANY* seq, int i, int type) {
  const ASN1_TYPE* t = sk_ASN1_TYPE_value(seq, i);
  return t != nullptr && ASN1_TYPE_get(t) == type ? t : nullptr;
}

// The whole encoding (tag and length included) of a constructed element.
std::span<const std::uint8_t> Encoding(const ASN1_TYPE* t) {
  const ASN1_STRING* s = t->value.sequence;
  return {ASN1_STRING_get0_data(s), static_cast<std::size_t>(ASN1_STRING_length(s))};
}

Result<X509AlgorPtr> Algorithm(const ASN1_TYPE* t, std::string_view what) {
  const std::span<const std::uint8_t> der = Encoding(t);
  const unsigned char* p = der.data();
  X509AlgorPtr algor(d2i_X509_ALGOR(nullptr, &p, static_cast<long>(der.size())));
  if (!algor || p != der.data() + der.size()) return Bad(fmt::format("bad {}", what));
  return algor;
}

// A BIT STRING used as a byte string (a key or a signature) has no unused bits.
Result<std::span<const std::uint8_t>> Bytes(const ASN1_BIT_STRING* bits, std::string_view what) {
  if ((bits->flags & 0x07) != 0) return Bad(fmt::format("{} is not a whole number of bytes", what));
  return std::span<const std::uint8_t>(ASN1_STRING_get0_data(bits),
                                       static_cast<std::size_t>(ASN1_STRING_length(bits)));
}

struct Spki {
  Asn1SequencePtr elements;
  X509AlgorPtr algorithm;
  const ASN1_BIT_STRING* key = nullptr;  // owned by |elements|
};

Result<Spki> ParseSpki(std::span<const std::uint8_t> der) {
  Spki spki;
  FLEETID_TRY(elements, Elements(der, "SubjectPublicKeyInfo"));
  spki.elements = std::move(elements);
  const ASN1_TYPE* alg = Element(spki.elements.get(), 0, V_ASN1_SEQUENCE);
  const ASN1_TYPE* key = Element(spki.elements.get(), 1, V_ASN1_BIT_STRING);
  if (sk_ASN1_TYPE_num(spki.elements.get()) != 2 || alg == nullptr || key == nullptr) {
    return Bad("SubjectPublicKeyInfo is not {algorithm, key}");
  }
  FLEETID_TRY(algorithm, Algorithm(alg, "key algorithm"));
  spki.algorithm = std::move(algorithm);
  spki.key = key->value.bit_string;
  return spki;
}

// FastKey builds EC and Ed25519 keys straight from their raw values; nullptr for other kinds.
Result<EvpPkeyPtr> FastKey(const Spki& spki) {
  const ASN1_OBJECT* obj = nullptr;
  int param_type = V_ASN1_UNDEF;
  const void* param = nullptr;
  X509_ALGOR_get0(&obj, &param_type, &param, spki.algorithm.get());
  FLEETID_TRY(raw, Bytes(spki.key, "the public key"));
  switch (OBJ_obj2nid(obj)) {
    case NID_X9_62_id_ecPublicKey: {
      if (param_type != V_ASN1_OBJECT)
        return EvpPkeyPtr();  // explicit curves: the slow path refuses
      const int curve = OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(param));
      if (curve != NID_X9_62_prime256v1 && curve != NID_secp384r1) return EvpPkeyPtr();
      auto key = EcPublicKey(curve, raw);
      if (!key) return Bad("the EC public key is not a point on its curve");
      return std::move(*key);
    }
    case NID_ED25519: {
      if (param_type != V_ASN1_UNDEF) return Bad("Ed25519 key algorithm with parameters");
      auto key = Ed25519PublicKey(raw);
      if (!key) return Bad("bad Ed25519 public key");
      return std::move(*key);
    }
    default:
      return EvpPkeyPtr();
  }
}

Result<VerifiedCsr> VerifyWithX509Req(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  X509ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  if (!req || p != der.data() + der.size()) return Bad("it does not parse");
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (key == nullptr) return Bad("its public key does not parse");
  if (X509_REQ_verify(req.get(), key) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument,
                     "the CSR's signature does not verify with its own public key");
  }
  VerifiedCsr out;
  EVP_PKEY_up_ref(key);
  out.key.reset(key);
  unsigned char* spki = nullptr;
  const int len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req.get()), &spki);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "encoding the CSR's key"));
  out.spki.assign(spki, spki + len);
  OPENSSL_free(spki);
  out.request_sha256 = Sha256(der);
  return out;
}

}  // namespace

Result<VerifiedCsr> VerifyCsr(std::span<const std::uint8_t> der) {
  // CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }
  FLEETID_TRY(outer, Elements(der, "the request"));
  const ASN1_TYPE* info = Element(outer.get(), 0, V_ASN1_SEQUENCE);
  const ASN1_TYPE* sig_alg = Element(outer.get(), 1, V_ASN1_SEQUENCE);
  const ASN1_TYPE* sig = Element(outer.get(), 2, V_ASN1_BIT_STRING);
  if (sk_ASN1_TYPE_num(outer.get()) != 3 || info == nullptr || sig_alg == nullptr ||
      sig == nullptr) {
    return Bad("it is not {info, signatureAlgorithm, signature}");
  }
  // CertificationRequestInfo ::= SEQUENCE { version INTEGER (v1 = 0), subject Name,
  //   subjectPKInfo SubjectPublicKeyInfo, attributes [0] IMPLICIT Attributes }
  const std::span<const std::uint8_t> tbs = Encoding(info);
  FLEETID_TRY(fields, Elements(tbs, "CertificationRequestInfo"));
  const int count = sk_ASN1_TYPE_num(fields.get());
  const ASN1_TYPE* version = Element(fields.get(), 0, V_ASN1_INTEGER);
  const ASN1_TYPE* spki_type = Element(fields.get(), 2, V_ASN1_SEQUENCE);
  if (count < 3 || count > 4 || version == nullptr ||
      Element(fields.get(), 1, V_ASN1_SEQUENCE) == nullptr || spki_type == nullptr ||
      (count == 4 && Element(fields.get(), 3, V_ASN1_OTHER) == nullptr)) {
    return Bad("CertificationRequestInfo is not {version, subject, key, attributes}");
  }
  if (ASN1_INTEGER_get(version->value.integer) != 0) return Bad("version is not v1 (0)");
  const std::span<const std::uint8_t> spki_der = Encoding(spki_type);
  FLEETID_TRY(spki, ParseSpki(spki_der));
  FLEETID_TRY(key, FastKey(spki));
  if (!key) return VerifyWithX509Req(der);

  FLEETID_TRY(algorithm, Algorithm(sig_alg, "signature algorithm"));
  const ASN1_OBJECT* sig_obj = nullptr;
  int param_type = V_ASN1_UNDEF;
  X509_ALGOR_get0(&sig_obj, &param_type, nullptr, algorithm.get());
  int md_nid = NID_undef;
  int pkey_nid = NID_undef;
  if (OBJ_find_sigid_algs(OBJ_obj2nid(sig_obj), &md_nid, &pkey_nid) != 1 ||
      pkey_nid != EVP_PKEY_get_base_id(key.get()) || param_type != V_ASN1_UNDEF) {
    // RFC 5758 §3.2 and RFC 8410 §3: ECDSA and EdDSA signature algorithms carry no parameters.
    return MakeError(ErrorCode::kInvalidArgument,
                     "the CSR's signature algorithm does not match its key");
  }
  FLEETID_TRY(signature, Bytes(sig->value.bit_string, "the signature"));
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const EVP_MD* md = md_nid == NID_undef ? nullptr : EVP_get_digestbynid(md_nid);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key.get()) != 1 ||
      EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), tbs.data(), tbs.size()) !=
          1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument,
                     "the CSR's signature does not verify with its own public key");
  }
  VerifiedCsr out;
  out.key = std::move(key);
  out.spki.assign(spki_der.begin(), spki_der.end());
  out.request_sha256 = Sha256(der);
  return out;
}

Result<void> SetSubjectPublicKey(X509* cert, std::span<const std::uint8_t> spki_der) {
  FLEETID_TRY(spki, ParseSpki(spki_der));
  const ASN1_OBJECT* obj = nullptr;
  int param_type = V_ASN1_UNDEF;
  const void* param = nullptr;
  X509_ALGOR_get0(&obj, &param_type, &param, spki.algorithm.get());
  Asn1ObjectPtr algorithm(OBJ_dup(obj));
  void* param_copy = nullptr;
  if (param_type == V_ASN1_OBJECT) {
    param_copy = OBJ_dup(static_cast<const ASN1_OBJECT*>(param));
  } else if (param_type == V_ASN1_SEQUENCE) {
    param_copy = ASN1_STRING_dup(static_cast<const ASN1_STRING*>(param));
  } else if (param_type != V_ASN1_UNDEF && param_type != V_ASN1_NULL) {
    return Bad("unsupported key algorithm parameters");
  }
  const auto len = ASN1_STRING_length(spki.key);
  auto* bits = static_cast<unsigned char*>(
      OPENSSL_memdup(ASN1_STRING_get0_data(spki.key), static_cast<std::size_t>(len)));
  if (!algorithm ||
      (param_type == V_ASN1_OBJECT || param_type == V_ASN1_SEQUENCE) != (param_copy != nullptr) ||
      bits == nullptr ||
      X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(cert), algorithm.get(), param_type, param_copy,
                             bits, len) != 1) {
    OPENSSL_free(bits);
    if (param_type == V_ASN1_OBJECT) ASN1_OBJECT_free(static_cast<ASN1_OBJECT*>(param_copy));
    if (param_type == V_ASN1_SEQUENCE) ASN1_STRING_free(static_cast<ASN1_STRING*>(param_copy));
    return MakeError(OpenSslError(ErrorCode::kInternal, "setting the certificate's public key"));
  }
  static_cast<void>(algorithm.release());  // owned by the certificate now
  return {};
}

Result<std::vector<std::uint8_t>> MakeCsr(EVP_PKEY* public_key, EVP_PKEY* signing_key, int name_nid,
                                          std::string_view name) {
  X509ReqPtr req(X509_REQ_new());
  X509NamePtr subject(X509_NAME_new());
  const EVP_MD* md = EVP_PKEY_get_id(public_key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (!req || !subject ||
      X509_NAME_add_entry_by_NID(subject.get(), name_nid, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(name.data()),
                                 static_cast<int>(name.size()), -1, 0) != 1 ||
      X509_REQ_set_subject_name(req.get(), subject.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), public_key) != 1 ||
      X509_REQ_sign(req.get(), signing_key, md) <= 0) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "signing the certification request"));
  }
  const int len = i2d_X509_REQ(req.get(), nullptr);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "encoding the request"));
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

}  // namespace fleetid::crypto
