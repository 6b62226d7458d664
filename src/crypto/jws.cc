#include "crypto/jws.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <array>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/suite.h"

namespace fleetid::crypto {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kUrlAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string Encode(std::span<const std::uint8_t> data, std::string_view alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            data[i + 2];
    for (int shift : {18, 12, 6, 0}) out.push_back(alphabet[(v >> shift) & 63]);
  }
  const std::size_t rest = data.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::uint32_t{data[i]} << 16;
    if (rest == 2) v |= std::uint32_t{data[i + 1]} << 8;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (rest == 2) out.push_back(alphabet[(v >> 6) & 63]);
    if (pad) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

// Decode takes symbols only (whitespace and padding already handled by the caller).
Result<std::vector<std::uint8_t>> Decode(std::string_view symbols, std::string_view alphabet) {
  std::array<int, 256> value{};
  value.fill(-1);
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    value[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  }
  if (symbols.size() % 4 == 1) {
    return MakeError(ErrorCode::kInvalidArgument, "base64 text has an impossible length");
  }
  std::vector<std::uint8_t> out;
  out.reserve(symbols.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : symbols) {
    const int v = value[static_cast<unsigned char>(c)];
    if (v < 0) return MakeError(ErrorCode::kInvalidArgument, "invalid base64 character");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
    }
  }
  // The bits left over must be zero (RFC 4648 §3.5: canonical encoding).
  if ((acc & ((1u << bits) - 1)) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "base64 text is not canonical");
  }
  return out;
}

struct AlgSpec {
  std::string_view alg;
  const char* md;         // nullptr for pure EdDSA
  std::size_t ec_size;    // bytes of R and of S; 0 for non-ECDSA
  bool pss = false;
};

Result<AlgSpec> SpecFor(const EVP_PKEY* key) {
  FLEETID_TRY(suite, SuiteOfPublicKey(key));
  switch (suite->id) {
    case SuiteId::kEcdsaP256Sha256:
      return AlgSpec{"ES256", "SHA256", 32};
    case SuiteId::kEcdsaP384Sha384:
      return AlgSpec{"ES384", "SHA384", 48};
    case SuiteId::kEd25519:
      return AlgSpec{"EdDSA", nullptr, 0};
    case SuiteId::kRsa3072PssSha256:
      return AlgSpec{"PS256", "SHA256", 0, true};
  }
  return MakeError(ErrorCode::kInvalidArgument, "no JWS algorithm for this key");
}

Result<void> SetPss(EVP_PKEY_CTX* pctx) {
  if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", nullptr) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "RSA-PSS parameters"));
  }
  return {};
}

}  // namespace

std::string Base64Encode(std::span<const std::uint8_t> data) { return Encode(data, kAlphabet, true); }

Result<std::vector<std::uint8_t>> Base64Decode(std::string_view text) {
  std::string symbols;
  symbols.reserve(text.size());
  std::size_t padding = 0;
  for (char c : text) {
    if (c == '\r' || c == '\n' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding > 0) return MakeError(ErrorCode::kInvalidArgument, "base64 data after padding");
    symbols.push_back(c);
  }
  if (padding > 2 || (padding > 0 && (symbols.size() + padding) % 4 != 0)) {
    return MakeError(ErrorCode::kInvalidArgument, "base64 padding is wrong");
  }
  if (symbols.empty()) return MakeError(ErrorCode::kInvalidArgument, "base64 text is empty");
  return Decode(symbols, kAlphabet);
}

std::string Base64UrlEncode(std::span<const std::uint8_t> data) {
  return Encode(data, kUrlAlphabet, false);
}

Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text) {
  return Decode(text, kUrlAlphabet);
}

Result<std::string_view> JwsAlgorithm(const EVP_PKEY* key) {
  FLEETID_TRY(spec, SpecFor(key));
  return spec.alg;
}

Result<std::string> SignJws(EVP_PKEY* key, nlohmann::json header, std::string_view payload) {
  FLEETID_TRY(spec, SpecFor(key));
  if (!header.is_object()) return MakeError(ErrorCode::kInvalidArgument, "a JWS header is an object");
  header["alg"] = spec.alg;
  std::string input = Base64UrlEncode(AsBytes(header.dump())) + "." + Base64UrlEncode(AsBytes(payload));
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), &pctx, spec.md, nullptr, nullptr, key, nullptr) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "JWS signing"));
  }
  if (spec.pss) FLEETID_CHECK_OK(SetPss(pctx));
  std::size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "JWS signing"));
  }
  std::vector<std::uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, in, input.size()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "JWS signing"));
  }
  sig.resize(len);
  if (spec.ec_size > 0) {
    const unsigned char* p = sig.data();
    EcdsaSigPtr ecdsa(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
    if (!ecdsa) return MakeError(OpenSslError(ErrorCode::kInternal, "ECDSA signature"));
    std::vector<std::uint8_t> raw(2 * spec.ec_size);
    const int n = static_cast<int>(spec.ec_size);
    if (BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa.get()), raw.data(), n) != n ||
        BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa.get()), raw.data() + n, n) != n) {
      return MakeError(ErrorCode::kInternal, "ECDSA signature does not fit its curve");
    }
    sig = std::move(raw);
  }
  return input + "." + Base64UrlEncode(sig);
}

Result<Jws> ParseJws(std::string_view compact, std::size_t max_bytes) {
  if (compact.size() > max_bytes) {
    return MakeError(ErrorCode::kInvalidArgument, "JWS over {} bytes", max_bytes);
  }
  const std::size_t a = compact.find('.');
  const std::size_t b = a == std::string_view::npos ? a : compact.find('.', a + 1);
  if (b == std::string_view::npos || compact.find('.', b + 1) != std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "a compact JWS has exactly three parts");
  }
  auto header_bytes = Base64UrlDecode(compact.substr(0, a));
  auto payload = Base64UrlDecode(compact.substr(a + 1, b - a - 1));
  auto signature = Base64UrlDecode(compact.substr(b + 1));
  if (!header_bytes || !payload || !signature) {
    return MakeError(ErrorCode::kInvalidArgument, "a JWS part is not base64url");
  }
  Jws out;
  out.header = nlohmann::json::parse(header_bytes->begin(), header_bytes->end(), nullptr, false);
  if (!out.header.is_object() || !out.header.contains("alg") || !out.header["alg"].is_string()) {
    return MakeError(ErrorCode::kInvalidArgument, "the JWS header is not a JSON object with an alg");
  }
  if (out.header.contains("crit")) {
    return MakeError(ErrorCode::kInvalidArgument, "the JWS header names critical extensions");
  }
  out.payload.assign(payload->begin(), payload->end());
  out.signing_input = std::string(compact.substr(0, b));
  out.signature = std::move(*signature);
  return out;
}

Result<void> VerifyJws(const Jws& jws, EVP_PKEY* key) {
  FLEETID_TRY(spec, SpecFor(key));
  if (jws.header.value("alg", "") != spec.alg) {
    return MakeError(ErrorCode::kUnauthenticated, "the JWS alg is not {}, the key's", spec.alg);
  }
  std::vector<std::uint8_t> sig = jws.signature;
  if (spec.ec_size > 0) {
    if (sig.size() != 2 * spec.ec_size) {
      return MakeError(ErrorCode::kUnauthenticated, "the {} signature is not {} bytes", spec.alg,
                       2 * spec.ec_size);
    }
    const int n = static_cast<int>(spec.ec_size);
    EcdsaSigPtr ecdsa(ECDSA_SIG_new());
    BIGNUM* r = BN_bin2bn(sig.data(), n, nullptr);
    BIGNUM* s = BN_bin2bn(sig.data() + n, n, nullptr);
    if (!ecdsa || r == nullptr || s == nullptr || ECDSA_SIG_set0(ecdsa.get(), r, s) != 1) {
      BN_free(r);
      BN_free(s);
      return MakeError(OpenSslError(ErrorCode::kInternal, "ECDSA signature"));
    }
    unsigned char* der = nullptr;
    const int len = i2d_ECDSA_SIG(ecdsa.get(), &der);
    const OpenSslBytesPtr owner(der);
    if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "ECDSA signature"));
    sig.assign(der, der + len);
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), &pctx, spec.md, nullptr, nullptr, key, nullptr) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "JWS verification"));
  }
  if (spec.pss) FLEETID_CHECK_OK(SetPss(pctx));
  const int ok = EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                                  reinterpret_cast<const unsigned char*>(jws.signing_input.data()),
                                  jws.signing_input.size());
  ERR_clear_error();
  if (ok != 1) return MakeError(ErrorCode::kUnauthenticated, "the JWS signature does not verify");
  return {};
}

}  // namespace fleetid::crypto
