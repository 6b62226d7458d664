#include "pki/internal/cert_builder.h"

#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <cctype>

#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/keys.h"
#include "pki/internal/util.h"

namespace fleetid::pki {
namespace {

using internal::Ossl;

using crypto::Asn1TimePtr;
using crypto::X509Ptr;

// SetBasics sets version, serial, names and validity.
Result<void> SetBasics(X509* cert, const CertSpec& spec, X509* issuer) {
  crypto::Asn1IntegerPtr serial_int(ASN1_INTEGER_new());
  FLEETID_TRY(nb, crypto::UnixToAsn1Time(UnixSeconds(spec.not_before)));
  FLEETID_TRY(na, crypto::UnixToAsn1Time(spec.no_expiry ? 0 : UnixSeconds(spec.not_after)));
  // The serial is positive (its top bit is clear), so its bytes are the INTEGER's content.
  if (!serial_int ||
      (spec.no_expiry && ASN1_TIME_set_string(na.get(), "99991231235959Z") != 1) ||
      spec.serial.empty() || (spec.serial[0] & 0x80) != 0 ||
      ASN1_STRING_set(serial_int.get(), spec.serial.data(), static_cast<int>(spec.serial.size())) !=
          1 ||
      X509_set_version(cert, X509_VERSION_3) != 1 ||
      X509_set_serialNumber(cert, serial_int.get()) != 1 ||
      X509_set_subject_name(cert, spec.subject) != 1 ||
      X509_set_issuer_name(cert,
                           issuer != nullptr ? X509_get_subject_name(issuer) : spec.subject) != 1 ||
      X509_set1_notBefore(cert, nb.get()) != 1 || X509_set1_notAfter(cert, na.get()) != 1) {
    return MakeError(Ossl("building certificate"));
  }
  return {};
}

// AddKeyIds adds the subjectKeyIdentifier and the authorityKeyIdentifier.
Result<void> AddKeyIds(X509* cert, const CertSpec& spec) {
  const std::vector<std::uint8_t> key_id = KeyId(X509_get0_pubkey_bitstr(cert));
  crypto::Asn1OctetStringPtr ski(ASN1_OCTET_STRING_new());
  if (!ski ||
      ASN1_OCTET_STRING_set(ski.get(), key_id.data(), static_cast<int>(key_id.size())) != 1 ||
      X509_add1_ext_i2d(cert, NID_subject_key_identifier, ski.get(), 0, 0) != 1) {
    return MakeError(Ossl("subjectKeyIdentifier"));
  }
  if (spec.authority_key_id != nullptr) {
    if (X509_add_ext(cert, const_cast<X509_EXTENSION*>(spec.authority_key_id), -1) != 1) {
      return MakeError(Ossl("authorityKeyIdentifier"));
    }
    return {};
  }
  FLEETID_TRY(aki, AuthorityKeyIdExtension(key_id));
  if (X509_add_ext(cert, aki.get(), -1) != 1) return MakeError(Ossl("authorityKeyIdentifier"));
  return {};
}

Result<void> AddSubjectAltNames(X509* cert, const CertSpec& spec) {
  if (spec.subject_alt_names.empty()) return {};
  crypto::GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return MakeError(Ossl("building subjectAltName"));
  for (const auto& [type, value] : spec.subject_alt_names) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    ASN1_STRING* str = type == GEN_IPADD ? a2i_IPADDRESS(value.c_str()) : ASN1_IA5STRING_new();
    if (name == nullptr || str == nullptr ||
        (type != GEN_IPADD &&
         ASN1_STRING_set(str, value.data(), static_cast<int>(value.size())) != 1) ||
        sk_GENERAL_NAME_push(names.get(), name) <= 0) {
      GENERAL_NAME_free(name);
      ASN1_STRING_free(str);
      return MakeError(Ossl("building subjectAltName"));
    }
    GENERAL_NAME_set0_value(name, type, str);
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, 0) != 1) {
    return MakeError(Ossl("adding subjectAltName"));
  }
  return {};
}

}  // namespace

Result<std::vector<std::uint8_t>> RandomSerial(Rng& rng) {
  FLEETID_TRY(serial, rng.Bytes(16));
  serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x01);
  return serial;
}

Result<X509Ptr> BuildAndSign(const CertSpec& spec, X509* issuer, EVP_PKEY* signing_key,
                             const EVP_MD* signing_md) {
  X509Ptr cert(X509_new());
  if (!cert) return MakeError(Ossl("building certificate"));
  FLEETID_CHECK_OK(SetBasics(cert.get(), spec, issuer));
  FLEETID_CHECK_OK(crypto::SetSubjectPublicKey(cert.get(), spec.spki));
  for (const X509_EXTENSION* ext : spec.extensions) {
    if (X509_add_ext(cert.get(), const_cast<X509_EXTENSION*>(ext), -1) != 1) {  // copies |ext|
      return MakeError(Ossl("adding a certificate extension"));
    }
  }
  FLEETID_CHECK_OK(AddKeyIds(cert.get(), spec));
  FLEETID_CHECK_OK(AddSubjectAltNames(cert.get(), spec));
  if (X509_sign(cert.get(), signing_key, signing_md) <= 0) {
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "signing in the token"));
  }
  return cert;
}

Result<crypto::X509ExtensionPtr> ConfExtension(int nid, const std::string& value) {
  crypto::X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, nullptr, nid, value.c_str()));
  if (!ext) return MakeError(Ossl(fmt::format("certificate extension {}", OBJ_nid2sn(nid))));
  return ext;
}

std::vector<std::uint8_t> KeyId(const ASN1_BIT_STRING* key_bits) {
  unsigned char out[SHA_DIGEST_LENGTH];
  SHA1(ASN1_STRING_get0_data(key_bits), static_cast<std::size_t>(ASN1_STRING_length(key_bits)),
       out);
  return {out, out + sizeof(out)};
}

Result<crypto::X509ExtensionPtr> AuthorityKeyIdExtension(std::span<const std::uint8_t> key_id) {
  AUTHORITY_KEYID* akid = AUTHORITY_KEYID_new();
  crypto::Asn1OctetStringPtr id(ASN1_OCTET_STRING_new());
  crypto::X509ExtensionPtr ext;
  if (akid != nullptr && id &&
      ASN1_OCTET_STRING_set(id.get(), key_id.data(), static_cast<int>(key_id.size())) == 1) {
    akid->keyid = id.release();
    ext.reset(X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid));
  }
  AUTHORITY_KEYID_free(akid);
  if (!ext) return MakeError(Ossl("authorityKeyIdentifier"));
  return ext;
}

namespace internal {

crypto::X509NamePtr Name(std::string_view common_name, std::string_view organization) {
  crypto::X509NamePtr name(X509_NAME_new());
  if (!organization.empty()) {
    X509_NAME_add_entry_by_NID(name.get(), NID_organizationName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(organization.data()),
                               static_cast<int>(organization.size()), -1, 0);
  }
  X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.data()),
                             static_cast<int>(common_name.size()), -1, 0);
  return name;
}

std::string DeviceUri(std::string_view serial) {
  std::string out = "urn:fleetid:device:";
  for (unsigned char c : serial) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace internal
}  // namespace fleetid::pki
