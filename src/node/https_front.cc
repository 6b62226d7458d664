#include "node/https_front.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>

#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "crypto/keys.h"
#include "custody/provider.h"

namespace fleetid::node {
namespace {

constexpr std::string_view kTlsKeyLabel = "fleetid-server-tls";

// ParseDer parses a certificate the authority stored; failure is kInternal.
Result<crypto::X509Ptr> ParseDer(std::span<const std::uint8_t> der) {
  auto cert = crypto::ParseCertificateDer(der);
  if (!cert) {
    return MakeError(ErrorCode::kInternal, "a stored certificate does not parse: {}",
                     cert.error().message());
  }
  return cert;
}

// The HTTPS key's generations: 0 is labelled kTlsKeyLabel, n > 0 kTlsKeyLabel.n. A replacement
// is the next generation, so the key in use stays until its successor is serving.
std::string TlsKeyLabel(std::uint64_t generation) {
  return generation == 0 ? std::string(kTlsKeyLabel)
                         : fmt::format("{}.{}", kTlsKeyLabel, generation);
}

std::optional<std::uint64_t> TlsKeyGeneration(std::string_view label) {
  if (label == kTlsKeyLabel) return 0;
  if (!label.starts_with(kTlsKeyLabel) || label.size() <= kTlsKeyLabel.size() + 1 ||
      label[kTlsKeyLabel.size()] != '.') {
    return std::nullopt;
  }
  std::uint64_t n = 0;
  const std::string_view digits = label.substr(kTlsKeyLabel.size() + 1);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return n;
}

// TlsKeyGenerations lists the generations of HTTPS keys in |token|, ascending.
Result<std::vector<std::uint64_t>> TlsKeyGenerations(custody::Token& token) {
  FLEETID_TRY(keys, token.ListKeys());
  std::vector<std::uint64_t> out;
  for (const custody::KeyAttributes& k : keys) {
    if (auto g = TlsKeyGeneration(k.label)) out.push_back(*g);
  }
  std::ranges::sort(out);
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// IdentityOf gets the token key |label| a certificate from the authority's own hierarchy (reused
// across restarts while it has a third of its life left). kPermissionDenied: the key was revoked
// as compromised.
Result<HttpsIdentity> IdentityOf(custody::Token& token, pki::Authority& authority,
                                 const std::vector<std::string>& names, const std::string& label) {
  FLEETID_TRY(public_key, token.PublicKey(label));
  FLEETID_TRY(spki, crypto::PublicKeyDer(public_key.get()));
  FLEETID_TRY(signer, token.GetSigner(label));
  FLEETID_TRY(key, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
  HttpsIdentity identity{label, server::PkeyRef(key.get()),
                         std::make_unique<pki::ServerCertificateKeeper>(
                             authority, SystemClock::Instance(), std::move(spki), names)};
  FLEETID_TRY(first, identity.keeper->Check());
  static_cast<void>(first);
  return identity;
}

// ServedChain is what the listener sends: the leaf and its issuing CA.
Result<std::vector<server::X509Ref>> ServedChain(pki::Authority& authority,
                                                 const pki::CertificateRecord& record) {
  FLEETID_TRY(leaf, ParseDer(record.der));
  FLEETID_TRY(issuing_der, authority.CaCertificate(record.issuer));
  FLEETID_TRY(issuing, ParseDer(issuing_der));
  std::vector<server::X509Ref> chain;
  chain.emplace_back(leaf.get());
  chain.emplace_back(issuing.get());
  return chain;
}

void LogCertificate(std::string_view what, const pki::CertificateRecord& record,
                    const std::vector<std::string>& names) {
  log::Info(what, {{"serial", record.serial},
                   {"names", fmt::format("{}", fmt::join(names, ","))},
                   {"not_after", std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                    record.not_after.time_since_epoch())
                                                    .count())}});
}

}  // namespace

// OpenHttpsIdentity returns the newest P-256 HTTPS key in the token with its certificate,
// generating the first if there is none. With |replace|, or when the newest key is refused as
// compromised (a key revoked for keyCompromise is never certified again), it generates the next
// generation instead. No key is destroyed here: the caller retires the older ones
// (RetireTlsKeys) once the new identity is serving; a new key that got no certificate is removed.
Result<HttpsIdentity> OpenHttpsIdentity(custody::Token& token, pki::Authority& authority,
                                        const std::vector<std::string>& names, bool replace) {
  FLEETID_TRY(generations, TlsKeyGenerations(token));
  if (!generations.empty() && !replace) {
    auto identity = IdentityOf(token, authority, names, TlsKeyLabel(generations.back()));
    if (identity || identity.error().code() != ErrorCode::kPermissionDenied) return identity;
    log::Warn("https key compromised: replacing it", {{"error", identity.error().ToString()}});
  }
  const std::string label = TlsKeyLabel(generations.empty() ? 0 : generations.back() + 1);
  const crypto::Suite& suite = crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256);
  FLEETID_TRY(made, token.GenerateKey(label, suite, crypto::OpenSslRng::Instance()));
  static_cast<void>(made);
  auto identity = IdentityOf(token, authority, names, label);
  if (!identity) {
    if (auto destroyed = token.DestroyKey(label); !destroyed) {
      log::Warn("an uncertified https key could not be removed",
                {{"label", label}, {"error", destroyed.error().ToString()}});
    }
  }
  return identity;
}

// RetireTlsKeys destroys every HTTPS key in |token| but |identity|'s: called once |identity| is
// serving, so the server is never without a working key.
void RetireTlsKeys(custody::Token& token, const HttpsIdentity& identity) {
  auto generations = TlsKeyGenerations(token);
  if (!generations) {
    log::Warn("https keys could not be listed", {{"error", generations.error().ToString()}});
    return;
  }
  for (std::uint64_t g : *generations) {
    const std::string label = TlsKeyLabel(g);
    if (label == identity.label) continue;
    if (auto destroyed = token.DestroyKey(label); !destroyed) {
      log::Warn("a retired https key could not be destroyed",
                {{"label", label}, {"error", destroyed.error().ToString()}});
    } else {
      log::Info("retired https key destroyed", {{"label", label}});
    }
  }
}

// ServerTls sets up the HTTPS front: its key and certificate, and client certificates verified
// against the hierarchy and the registered manufacturers' CAs.
Result<server::TlsOptions> ServerTls(pki::Authority& authority, const HttpsIdentity& identity,
                                     const std::vector<std::string>& names,
                                     const std::vector<enroll::Manufacturer>& manufacturers) {
  server::TlsOptions tls;
  FLEETID_TRY(chain, ServedChain(authority, identity.keeper->Current()));
  tls.certificate_chain = std::move(chain);
  tls.private_key = identity.key;
  for (const std::string& name : authority.CaNames()) {
    FLEETID_TRY(der, authority.CaCertificate(name));
    FLEETID_TRY(anchor, ParseDer(der));
    tls.client_trust_anchors.emplace_back(anchor.get());
  }
  // IDevIDs chain to a registered manufacturer's CA; which anchor verified a chain decides what
  // the client may do (enroll with an IDevID, renew with an LDevID).
  for (const enroll::Manufacturer& m : manufacturers) {
    FLEETID_TRY(anchor, ParseDer(m.der));
    tls.client_trust_anchors.emplace_back(anchor.get());
  }
  tls.client_auth = server::TlsOptions::ClientAuth::kOptional;
  LogCertificate("https certificate", identity.keeper->Current(), names);
  return tls;
}

// RenewHttpsCertificate runs on the maintenance thread: a certificate past two thirds of its
// life, revoked or on hold is replaced, and new handshakes get the new one. A certificate
// revoked for keyCompromise cannot be renewed for the same key, so the key is replaced too.
void RenewHttpsCertificate(custody::Token& token, pki::Authority& authority,
                           server::HttpServer& https, HttpsIdentity& identity,
                           const std::vector<std::string>& names) {
  auto renewed = identity.keeper->Check();
  std::optional<HttpsIdentity> replacement;
  if (!renewed && renewed.error().code() == ErrorCode::kPermissionDenied) {
    log::Warn("https key compromised: replacing it", {{"error", renewed.error().ToString()}});
    auto replaced = OpenHttpsIdentity(token, authority, names, /*replace=*/true);
    if (!replaced) {
      log::Warn("https key replacement failed", {{"error", replaced.error().ToString()}});
      return;
    }
    renewed = replaced->keeper->Current();
    replacement = std::move(*replaced);
  }
  if (!renewed) {
    log::Warn("https certificate renewal failed", {{"error", renewed.error().ToString()}});
    return;
  }
  const auto& due = *renewed;
  if (!due.has_value()) return;
  auto chain = ServedChain(authority, *due);
  if (!chain) {
    log::Warn("https certificate renewal failed", {{"error", chain.error().ToString()}});
    return;
  }
  const server::PkeyRef& key = replacement ? replacement->key : identity.key;
  if (auto set = https.SetCertificate(std::move(*chain), key); !set) {
    log::Warn("https certificate could not be loaded", {{"error", set.error().ToString()}});
    return;
  }
  LogCertificate("https certificate renewed", *due, names);
  if (replacement) {
    identity = std::move(*replacement);
    RetireTlsKeys(token, identity);
  }
}

}  // namespace fleetid::node
