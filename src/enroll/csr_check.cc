#include "enroll/csr_check.h"

#include <algorithm>
#include <array>

namespace fleetid::enroll {
namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::uint8_t kSequence = 0x30;
constexpr std::uint8_t kSet = 0x31;
constexpr std::uint8_t kInteger = 0x02;
constexpr std::uint8_t kBitString = 0x03;
constexpr std::uint8_t kNull = 0x05;
constexpr std::uint8_t kOid = 0x06;
constexpr std::uint8_t kAttributes = 0xa0;  // [0] IMPLICIT SET OF Attribute
constexpr int kMaxDepth = 32;

// Object identifiers, their DER contents.
constexpr std::array<std::uint8_t, 7> kEcPublicKey = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
constexpr std::array<std::uint8_t, 8> kP256 = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr std::array<std::uint8_t, 5> kP384 = {0x2b, 0x81, 0x04, 0x00, 0x22};
constexpr std::array<std::uint8_t, 3> kEd25519 = {0x2b, 0x65, 0x70};
constexpr std::array<std::uint8_t, 9> kRsaEncryption = {0x2a, 0x86, 0x48, 0x86, 0xf7,
                                                        0x0d, 0x01, 0x01, 0x01};
constexpr std::array<std::uint8_t, 9> kRsaPss = {0x2a, 0x86, 0x48, 0x86, 0xf7,
                                                 0x0d, 0x01, 0x01, 0x0a};

struct Tlv {
  std::uint8_t tag = 0;
  Bytes content;
  Bytes whole;
};

std::unexpected<Error> NotDer(std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "the CSR is not DER: {}", what);
}

std::unexpected<Error> BadKey(std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "the CSR's key is refused: {}", what);
}

// ReadTlv takes one TLV off the front of |in|; X.690 §10.1: definite, minimal lengths.
Result<Tlv> ReadTlv(Bytes& in) {
  if (in.size() < 2) return NotDer("truncated");
  Tlv t;
  t.tag = in[0];
  if ((t.tag & 0x1f) == 0x1f) return NotDer("high tag numbers are not used in a CSR");
  std::size_t pos = 2;
  std::size_t len = in[1];
  if (len == 0x80) return NotDer("indefinite length");
  if (len > 0x80) {
    const std::size_t n = len & 0x7f;
    if (n > 4 || in.size() < 2 + n) return NotDer("bad length");
    if (in[2] == 0) return NotDer("length with a leading zero");
    len = 0;
    for (std::size_t i = 0; i < n; ++i) len = (len << 8) | in[2 + i];
    if (len < 0x80) return NotDer("long form for a short length");
    pos += n;
  }
  if (len > in.size() - pos) return NotDer("length past the end");
  t.content = in.subspan(pos, len);
  t.whole = in.subspan(0, pos + len);
  in = in.subspan(pos + len);
  return t;
}

Result<void> CheckTlv(const Tlv& t, int depth) {
  const bool universal = (t.tag & 0xc0) == 0;
  const bool constructed = (t.tag & 0x20) != 0;
  const int number = t.tag & 0x1f;
  const Bytes c = t.content;
  if (universal) {
    const bool structured = number == 16 || number == 17;
    if (constructed != structured) return NotDer("constructed string or primitive SEQUENCE");
    switch (number) {
      case 0:
        return NotDer("end-of-contents");
      case 1:
        if (c.size() != 1 || (c[0] != 0 && c[0] != 0xff)) return NotDer("BOOLEAN not 00 or FF");
        break;
      case 2:
        if (c.empty() || (c.size() > 1 && ((c[0] == 0 && c[1] < 0x80) ||
                                           (c[0] == 0xff && c[1] >= 0x80)))) {
          return NotDer("INTEGER not minimal");
        }
        break;
      case 3:
        if (c.empty() || c[0] > 7 || (c.size() == 1 && c[0] != 0) ||
            (c.size() > 1 && (c.back() & ((1U << c[0]) - 1)) != 0)) {
          return NotDer("BIT STRING padding");
        }
        break;
      case 5:
        if (!c.empty()) return NotDer("NULL with contents");
        break;
      default:
        break;
    }
  }
  if (!constructed) return {};
  if (depth >= kMaxDepth) return NotDer("nested too deeply");
  Bytes rest = c;
  Bytes previous;
  while (!rest.empty()) {
    FLEETID_TRY(child, ReadTlv(rest));
    FLEETID_CHECK_OK(CheckTlv(child, depth + 1));
    // X.690 §11.6: the elements of a SET OF in ascending order of their encodings.
    if ((t.tag == kSet || t.tag == kAttributes) && !previous.empty() &&
        std::ranges::lexicographical_compare(child.whole, previous)) {
      return NotDer("SET OF not sorted");
    }
    previous = child.whole;
  }
  return {};
}

Result<std::vector<Tlv>> Children(const Tlv& t) {
  std::vector<Tlv> out;
  Bytes rest = t.content;
  while (!rest.empty()) {
    FLEETID_TRY(child, ReadTlv(rest));
    out.push_back(child);
  }
  return out;
}

bool Is(const Tlv& t, std::uint8_t tag, Bytes content) {
  return t.tag == tag && std::ranges::equal(t.content, content);
}

std::size_t IntegerBits(Bytes c) {
  while (!c.empty() && c.front() == 0) c = c.subspan(1);
  if (c.empty()) return 0;
  std::size_t bits = c.size() * 8;
  for (std::uint8_t top = c.front(); (top & 0x80) == 0; top = static_cast<std::uint8_t>(top << 1)) {
    --bits;
  }
  return bits;
}

Result<crypto::SuiteId> RsaSuite(Bytes key) {
  FLEETID_CHECK_OK(CheckDer(key));
  Bytes rest = key;
  FLEETID_TRY(seq, ReadTlv(rest));
  FLEETID_TRY(parts, Children(seq));
  if (seq.tag != kSequence || parts.size() != 2 || parts[0].tag != kInteger ||
      parts[1].tag != kInteger) {
    return BadKey("an RSA key is SEQUENCE { modulus, publicExponent }");
  }
  const Bytes n = parts[0].content;
  const Bytes e = parts[1].content;
  if ((n[0] & 0x80) != 0 || (e[0] & 0x80) != 0) return BadKey("a negative RSA integer");
  const crypto::Suite& suite = crypto::GetSuite(crypto::SuiteId::kRsa3072PssSha256);
  if (IntegerBits(n) != static_cast<std::size_t>(suite.rsa_bits)) {
    return BadKey(fmt::format("an RSA modulus has {} bits", suite.rsa_bits));
  }
  if (IntegerBits(e) > kMaxRsaExponentBits || IntegerBits(e) < 2 || (e.back() & 1) == 0) {
    return BadKey(fmt::format("the RSA public exponent must be odd, at least 3 and at most {} bits",
                              kMaxRsaExponentBits));
  }
  return crypto::SuiteId::kRsa3072PssSha256;
}

}  // namespace

Result<void> CheckDer(std::span<const std::uint8_t> der) {
  Bytes rest = der;
  FLEETID_TRY(top, ReadTlv(rest));
  if (!rest.empty()) return NotDer("bytes after the end");
  return CheckTlv(top, 0);
}

Result<CheckedCsr> CheckCsrKey(std::span<const std::uint8_t> csr_der,
                               const crypto::SuitePolicy& policy) {
  FLEETID_CHECK_OK(CheckDer(csr_der));
  Bytes rest = csr_der;
  FLEETID_TRY(outer, ReadTlv(rest));
  FLEETID_TRY(top, Children(outer));
  if (outer.tag != kSequence || top.size() != 3 || top[0].tag != kSequence ||
      top[1].tag != kSequence || top[2].tag != kBitString) {
    return NotDer("not a CertificationRequest {info, signatureAlgorithm, signature}");
  }
  FLEETID_TRY(info, Children(top[0]));
  constexpr std::array<std::uint8_t, 1> kV1 = {0};
  if (info.size() < 3 || info.size() > 4 || !Is(info[0], kInteger, kV1) ||
      info[1].tag != kSequence || info[2].tag != kSequence ||
      (info.size() == 4 && info[3].tag != kAttributes)) {
    return NotDer("not a v1 CertificationRequestInfo {version, subject, key, attributes}");
  }
  CheckedCsr out;
  out.spki.assign(info[2].whole.begin(), info[2].whole.end());
  FLEETID_TRY(spki, Children(info[2]));
  if (spki.size() != 2 || spki[0].tag != kSequence || spki[1].tag != kBitString) {
    return NotDer("not a SubjectPublicKeyInfo {algorithm, key}");
  }
  FLEETID_TRY(algorithm, Children(spki[0]));
  if (algorithm.empty() || algorithm.size() > 2 || algorithm[0].tag != kOid) {
    return NotDer("not an AlgorithmIdentifier");
  }
  const Bytes bits = spki[1].content;
  if (bits[0] != 0) return BadKey("the key is not a whole number of bytes");
  const Bytes key = bits.subspan(1);
  const bool has_params = algorithm.size() == 2;
  if (Is(algorithm[0], kOid, kEcPublicKey)) {
    if (has_params && Is(algorithm[1], kOid, kP256) && key.size() == 65 && key[0] == 0x04) {
      out.suite = crypto::SuiteId::kEcdsaP256Sha256;
    } else if (has_params && Is(algorithm[1], kOid, kP384) && key.size() == 97 && key[0] == 0x04) {
      out.suite = crypto::SuiteId::kEcdsaP384Sha384;
    } else {
      return BadKey("an EC key is an uncompressed point on P-256 or P-384");
    }
  } else if (Is(algorithm[0], kOid, kEd25519)) {
    if (has_params || key.size() != 32) return BadKey("an Ed25519 key has 32 bytes, no parameters");
    out.suite = crypto::SuiteId::kEd25519;
  } else if (Is(algorithm[0], kOid, kRsaPss)) {
    // The rsa3072-pss-sha256 suite's keys are rsaEncryption keys that sign with RSASSA-PSS; a
    // PSS-OID SPKI would be a second encoding of the same key (crypto::KeyFingerprint).
    return BadKey("an RSA key is an rsaEncryption key, not id-RSASSA-PSS");
  } else if (Is(algorithm[0], kOid, kRsaEncryption)) {
    if (!has_params || algorithm[1].tag != kNull) {
      return BadKey("rsaEncryption takes NULL parameters");
    }
    FLEETID_TRY(suite, RsaSuite(key));
    out.suite = suite;
  } else {
    return BadKey("the key algorithm is not one of fleetid's suites");
  }
  FLEETID_CHECK_OK(policy.CheckUsable(crypto::GetSuite(out.suite)));
  return out;
}

}  // namespace fleetid::enroll
