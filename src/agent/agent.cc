#include "agent/agent.h"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/failpoint.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "crypto/x509.h"
#include "custody/provider.h"
#include "custody/store.h"
#include "enroll/claims.h"

namespace fleetid::agent {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using enroll::kEvidenceProfile;
using enroll::kEvidenceType;
using enroll::kReceiptType;

Result<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read '{}'", path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// WriteFileAtomic writes through a temporary file, fsync and rename: a crash leaves the old
// file or the new one, never half of either.
Result<void> WriteFileAtomic(const fs::path& path, std::string_view data) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", tmp.string());
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == data.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  }
  return {};
}

// ReadPemCerts reads a file of PEM certificates and nothing else (crypto::ParseCertificatesPem).
Result<std::vector<crypto::X509Ptr>> ReadPemCerts(const fs::path& path) {
  FLEETID_TRY(text, ReadFile(path));
  auto certs = crypto::ParseCertificatesPem(text);
  if (!certs) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}': {}", path.string(),
                     certs.error().message());
  }
  return certs;
}

// WritePem writes |cert| to |path| as PEM, atomically.
Result<void> WritePem(const fs::path& path, X509* cert) {
  FLEETID_TRY(pem, crypto::CertificatePem(cert));
  return WriteFileAtomic(path, pem);
}

// CertsFromEst decodes an EST certs-only answer (base64 of a CMS SignedData).
Result<std::vector<crypto::X509Ptr>> CertsFromEst(std::string_view body) {
  FLEETID_TRY(der, crypto::Base64Decode(body));
  const unsigned char* p = der.data();
  crypto::Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der.size())));
  if (!p7 || PKCS7_type_is_signed(p7.get()) == 0 || p7->d.sign == nullptr ||
      p7->d.sign->cert == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "the EST answer is not a certs-only CMS");
  }
  std::vector<crypto::X509Ptr> out;
  for (int i = 0; i < sk_X509_num(p7->d.sign->cert); ++i) {
    X509* c = sk_X509_value(p7->d.sign->cert, i);
    X509_up_ref(c);
    out.emplace_back(c);
  }
  if (out.empty())
    return MakeError(ErrorCode::kInvalidArgument, "the EST answer holds no certificate");
  return out;
}

Error ReplyError(std::string_view what, const HttpReply& reply) {
  const ErrorCode code = reply.status == 401   ? ErrorCode::kUnauthenticated
                         : reply.status == 403 ? ErrorCode::kPermissionDenied
                         : reply.status == 404 ? ErrorCode::kNotFound
                         : reply.status == 409 ? ErrorCode::kConflict
                         : reply.status < 500  ? ErrorCode::kInvalidArgument
                                               : ErrorCode::kUnavailable;
  std::string body = reply.body.substr(0, 400);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  return Error(code, fmt::format("{}: HTTP {}: {}", what, reply.status, body));
}

// SameSerial compares two hex serials as numbers written in hex.
bool SameSerial(std::string_view a, std::string_view b) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == '0') s.remove_prefix(1);
    return s;
  };
  a = trim(a);
  b = trim(b);
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

void FreeX509Stack(STACK_OF(X509) * certs) { sk_X509_free(certs); }
// X509StackPtr owns the stack only, not the certificates it points to.
using X509StackPtr = std::unique_ptr<STACK_OF(X509), crypto::Deleter<&FreeX509Stack>>;

// The skew allowed between the OCSP responder's clock and the device's (thisUpdate, nextUpdate).
constexpr std::chrono::minutes kOcspSkew{5};

Result<std::string> SerialOf(X509* cert) { return crypto::SerialHex(X509_get0_serialNumber(cert)); }

// TimeOf converts a certificate's notBefore or notAfter, or an OCSP answer's times.
Result<TimePoint> TimeOf(const ASN1_TIME* t) {
  FLEETID_TRY(seconds, crypto::Asn1TimeToUnix(t));
  return FromUnixSeconds(seconds);
}

}  // namespace

Result<std::shared_ptr<custody::Module>> OpenSecureElements(const fs::path& batch) {
  return custody::OpenSoftHsmStore(batch / "se");
}

Result<int> SeInit(const fs::path& batch, const crypto::Suite& suite, Rng& rng) {
  FLEETID_TRY(list, ReadFile(batch / "serials.txt"));
  FLEETID_TRY(module, OpenSecureElements(batch));
  int made = 0;
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t nl = list.find('\n', pos);
    if (nl == std::string::npos) nl = list.size();
    const std::string serial = list.substr(pos, nl - pos);
    pos = nl + 1;
    if (serial.empty()) continue;
    const fs::path dir = batch / "devices" / serial;
    FLEETID_TRY(opened, custody::OpenOrCreateToken(module, serial, dir, rng, true));
    if (!opened.token->FindKey(kIdevidLabel)) {
      FLEETID_TRY(key, opened.token->GenerateKey(kIdevidLabel, suite, rng));
      (void)key;
    }
    FLEETID_TRY(pub, opened.token->PublicKey(kIdevidLabel));
    FLEETID_TRY(signer, opened.token->GetSigner(kIdevidLabel));
    FLEETID_TRY(pkey, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
    FLEETID_TRY(der, crypto::MakeCsr(pub.get(), pkey.get(), NID_serialNumber, serial));
    FLEETID_CHECK_OK(
        WriteFileAtomic(dir / "idevid.csr",
                        std::string_view(reinterpret_cast<const char*>(der.data()), der.size())));
    ++made;
  }
  return made;
}

Result<std::unique_ptr<Agent>> Agent::Open(const std::shared_ptr<custody::Module>& module,
                                           const fs::path& device_dir, AgentOptions options,
                                           Clock& clock, Rng& rng) {
  FLEETID_TRY(text, ReadFile(device_dir / "device.json"));
  const Json device = Json::parse(text, nullptr, false);
  if (!device.is_object() || !device.contains("serial")) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}' is not a device description",
                     (device_dir / "device.json").string());
  }
  const std::string serial = device.value("serial", "");
  FLEETID_TRY(opened, custody::OpenOrCreateToken(module, serial, device_dir, rng, false));
  std::unique_ptr<Agent> agent(new Agent(opened.token, device_dir, std::move(options), clock, rng));
  agent->serial_ = serial;
  agent->model_ = device.value("model", "");
  agent->firmware_sha256_ =
      agent->options_.firmware_sha256.value_or(device.value("firmware_sha256", ""));
  FLEETID_TRY(idevid, ReadPemCerts(device_dir / "idevid.pem"));
  FLEETID_TRY(idevid_der, crypto::CertificateDer(idevid.front().get()));
  agent->idevid_der_ = std::move(idevid_der);
  FLEETID_TRY(url, ParseUrl(agent->options_.server));
  agent->url_ = url;
  FLEETID_TRY(anon, ClientTls::Make({agent->options_.trust_anchor}));
  agent->anonymous_ = anon;
  if (auto saved = ReadFile(device_dir / "state.json")) {
    const Json s = Json::parse(*saved, nullptr, false);
    if (!s.is_object()) return MakeError(ErrorCode::kInvalidArgument, "state.json is corrupt");
    AgentState& st = agent->state_;
    st.generation = s.value("generation", 0);
    st.current_label = s.value("current_label", "");
    st.current_cert = s.value("current_cert", "");
    st.pending_label = s.value("pending_label", "");
    st.pending_cert = s.value("pending_cert", "");
    st.renew_at = s.value("renew_at", std::int64_t{0});
    st.renew_at_percent = s.value("renew_at_percent", 0);
    st.decommissioned = s.value("decommissioned", false);
    st.receipt_delivered = s.value("receipt_delivered", false);
    st.device_state = s.value("device_state", "");
  }
  return agent;
}

Result<void> Agent::SaveState() {
  const Json s{
      {"generation", state_.generation},         {"current_label", state_.current_label},
      {"current_cert", state_.current_cert},     {"pending_label", state_.pending_label},
      {"pending_cert", state_.pending_cert},     {"renew_at", state_.renew_at},
      {"renew_at_percent", state_.renew_at_percent},
      {"decommissioned", state_.decommissioned}, {"receipt_delivered", state_.receipt_delivered},
      {"device_state", state_.device_state}};
  return WriteFileAtomic(dir_ / "state.json", s.dump(2) + "\n");
}

// FollowRenewalPoint takes the renewal point the authority's status answer names (the device's
// credential class: 10 to 95 % of the lifetime); when it changed, the current LDevID's renewal
// time is computed afresh. Anything else in its place is ignored.
Result<void> Agent::FollowRenewalPoint(const Json& percent) {
  if (!percent.is_number_integer()) return {};
  const auto value = percent.get<std::int64_t>();
  if (value < 10 || value > 95 || value == state_.renew_at_percent) return {};
  state_.renew_at_percent = static_cast<int>(value);
  if (!state_.current_cert.empty()) {
    FLEETID_TRY(der, ReadCert(state_.current_cert));
    FLEETID_CHECK_OK(ComputeRenewal(der));
  }
  return SaveState();
}

Result<std::vector<std::uint8_t>> Agent::ReadCert(const std::string& name) const {
  FLEETID_TRY(certs, ReadPemCerts(dir_ / name));
  return crypto::CertificateDer(certs.front().get());
}

Result<EVP_PKEY*> Agent::Key(const std::string& label) {
  auto it = keys_.find(label);
  if (it == keys_.end()) {
    FLEETID_TRY(signer, token_->GetSigner(label));
    FLEETID_TRY(pkey, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
    it = keys_.emplace(label, std::move(pkey)).first;
  }
  return it->second.get();
}

Result<std::vector<std::uint8_t>> Agent::Spki(const std::string& label) {
  auto it = spkis_.find(label);
  if (it == spkis_.end()) {
    FLEETID_TRY(pub, token_->PublicKey(label));
    FLEETID_TRY(spki, crypto::PublicKeyDer(pub.get()));
    it = spkis_.emplace(label, std::move(spki)).first;
  }
  return it->second;
}

Result<void> Agent::Forget(const std::string& label) {
  keys_.erase(label);
  spkis_.erase(label);
  std::erase_if(tls_, [&](const auto& entry) { return entry.first.starts_with(label + "/"); });
  return token_->DestroyKey(label);
}

Result<std::unique_ptr<Connection>> Agent::Connect(const std::string& key_label,
                                                   const std::vector<std::uint8_t>& cert) {
  const std::string id = key_label + "/" + crypto::Hex(crypto::Sha256(cert));
  auto it = tls_.find(id);
  if (it == tls_.end()) {
    FLEETID_TRY(key, Key(key_label));
    EVP_PKEY_up_ref(key);
    FLEETID_TRY(tls, ClientTls::Make({options_.trust_anchor}, {cert}, crypto::EvpPkeyPtr(key)));
    it = tls_.emplace(id, std::move(tls)).first;
  }
  return Connection::Connect(url_.host, url_.port, it->second);
}

Result<void> Agent::EnsureKey(const std::string& label) {
  auto found = token_->FindKey(label);
  if (found) return {};
  if (found.error().code() != ErrorCode::kNotFound) return MakeError(found.error());
  FLEETID_TRY(
      made, token_->GenerateKey(label, crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256), rng_));
  (void)made;
  return {};
}

Result<std::vector<std::uint8_t>> Agent::Csr(const std::string& label) {
  if (label == prepared_label_ && !prepared_csr_.empty()) return prepared_csr_;
  FLEETID_TRY(spki, Spki(label));
  FLEETID_TRY(pub, crypto::PublicKeyFromDer(spki));
  FLEETID_TRY(pkey, Key(label));
  return crypto::MakeCsr(pub.get(), pkey, NID_commonName, serial_);
}

Result<std::string> Agent::Evidence(
    Connection& conn, std::string_view purpose, const std::string& signing_label,
    const std::string& new_label,
    const std::function<Result<std::unique_ptr<Connection>>()>& reconnect, bool fresh_per_request) {
  FLEETID_TRY(reply, conn.Request("POST", "/attest/v1/nonce", Json{{"purpose", purpose}}.dump(),
                                  "application/json"));
  if (reply.status != 200) return MakeError(ReplyError("nonce", reply));
  const Json nonce = Json::parse(reply.body, nullptr, false);
  if (!nonce.is_object() || !nonce.contains("nonce")) {
    return MakeError(ErrorCode::kUnavailable, "the nonce answer is malformed");
  }
  FLEETID_TRY(spki, Spki(new_label));
  const Json claims{{"eat_profile", kEvidenceProfile},
                    {"eat_nonce", nonce["nonce"]},
                    {"serial", serial_},
                    {"hwmodel", model_},
                    {"fw_sha256", firmware_sha256_},
                    {"swname", "fleetid-agent"},
                    {"swversion", kAgentVersion},
                    {"key_sha256", crypto::Hex(crypto::Sha256(spki))},
                    {"iat", UnixSeconds(clock_.Now())}};
  FLEETID_TRY(pkey, Key(signing_label));
  FLEETID_TRY(jws, crypto::SignJws(pkey, {{"typ", kEvidenceType}}, claims.dump()));
  Connection* use = &conn;
  std::unique_ptr<Connection> fresh;
  if (fresh_per_request) {
    FLEETID_TRY(c, reconnect());
    fresh = std::move(c);
    use = fresh.get();
  }
  FLEETID_TRY(appraised, use->Request("POST", "/attest/v1/evidence", jws, "application/jose"));
  if (appraised.status != 200) return MakeError(ReplyError("evidence", appraised));
  return jws;
}

Result<void> Agent::ComputeRenewal(const std::vector<std::uint8_t>& der) {
  FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
  FLEETID_TRY(nb, TimeOf(X509_get0_notBefore(cert.get())));
  FLEETID_TRY(na, TimeOf(X509_get0_notAfter(cert.get())));
  const auto life = std::chrono::duration_cast<std::chrono::seconds>(na - nb);
  const double fraction =
      state_.renew_at_percent > 0 ? state_.renew_at_percent / 100.0 : options_.renew_fraction;
  FLEETID_TRY(r, rng_.Bytes(4));
  const double u = static_cast<double>((std::uint32_t{r[0]} << 24) | (std::uint32_t{r[1]} << 16) |
                                       (std::uint32_t{r[2]} << 8) | r[3]) /
                   4294967296.0;
  const auto at = nb + std::chrono::seconds(static_cast<std::int64_t>(
                           static_cast<double>(life.count()) *
                           (fraction - options_.jitter_fraction * u)));
  state_.renew_at = UnixSeconds(at);
  return {};
}

bool Agent::CurrentUsable() const {
  if (state_.current_label.empty()) return false;
  auto der = ReadCert(state_.current_cert);
  if (!der) return false;
  auto cert = crypto::ParseCertificateDer(*der);
  if (!cert) return false;
  auto na = TimeOf(X509_get0_notAfter(cert->get()));
  return na && clock_.Now() < *na;
}

Result<void> Agent::PrepareEnrollment() {
  // A fresh key made earlier and never certified (an interrupted enrollment or rotation) is used;
  // a pending certificate's key is abandoned with its rotation; otherwise a new generation.
  if (state_.pending_label.empty() || !state_.pending_cert.empty()) {
    if (!state_.pending_label.empty()) {
      static_cast<void>(Forget(state_.pending_label));
    }
    state_.generation += 1;
    state_.pending_label = fmt::format("ldevid-{}", state_.generation);
    state_.pending_cert.clear();
    FLEETID_CHECK_OK(SaveState());
  }
  FLEETID_CHECK_OK(EnsureKey(state_.pending_label));
  FLEETID_TRY(csr, Csr(state_.pending_label));
  prepared_label_ = state_.pending_label;
  prepared_csr_ = std::move(csr);
  return {};
}

Result<void> Agent::Enroll(bool fresh_per_request) {
  if (prepared_label_.empty() || prepared_label_ != state_.pending_label) {
    FLEETID_CHECK_OK(PrepareEnrollment());
  }
  const std::string label = state_.pending_label;
  const std::vector<std::uint8_t> csr = prepared_csr_;
  auto reconnect = [this]() { return Connect(std::string(kIdevidLabel), idevid_der_); };
  FLEETID_TRY(conn, reconnect());
  FLEETID_TRY(evidence, Evidence(*conn, "enroll", std::string(kIdevidLabel), label, reconnect,
                                 fresh_per_request));
  (void)evidence;
  if (fresh_per_request) {
    FLEETID_TRY(c, reconnect());
    conn = std::move(c);
  }
  FLEETID_TRY(reply, conn->Request("POST", "/.well-known/est/simpleenroll",
                                   crypto::Base64Encode(csr), "application/pkcs10"));
  if (reply.status != 200) return MakeError(ReplyError("simpleenroll", reply));
  FLEETID_TRY(certs, CertsFromEst(reply.body));
  const std::string file = label + ".pem";
  FLEETID_TRY(leaf_der, crypto::CertificateDer(certs.front().get()));
  FLEETID_CHECK_OK(WritePem(dir_ / file, certs.front().get()));
  const std::string old = state_.current_label;
  state_.current_label = label;
  state_.current_cert = file;
  state_.pending_label.clear();
  state_.pending_cert.clear();
  prepared_label_.clear();
  prepared_csr_.clear();
  FLEETID_CHECK_OK(ComputeRenewal(leaf_der));
  FLEETID_CHECK_OK(SaveState());
  if (!old.empty() && old != label) static_cast<void>(Forget(old));
  // The authority's chain, for verifying it and relying parties offline.
  auto cacerts = conn->Request("GET", "/.well-known/est/cacerts");
  if (cacerts && cacerts->status == 200) {
    if (auto chain = CertsFromEst(cacerts->body)) {
      std::string pem;
      for (const crypto::X509Ptr& c : *chain) {
        FLEETID_TRY(one, crypto::CertificatePem(c.get()));
        pem += one;
      }
      auto kept = ReadFile(dir_ / "ca.pem");
      if (!kept || *kept != pem) FLEETID_CHECK_OK(WriteFileAtomic(dir_ / "ca.pem", pem));
    }
  }
  log::Info("agent: enrolled", {{"device", serial_}, {"key", label}});
  return {};
}

Result<void> Agent::Rotate() {
  if (state_.current_label.empty()) return MakeError(ErrorCode::kConflict, "not enrolled");
  if (state_.pending_label.empty()) {
    state_.generation += 1;
    state_.pending_label = fmt::format("ldevid-{}", state_.generation);
    state_.pending_cert.clear();
    FLEETID_CHECK_OK(SaveState());  // before the key exists: a crash leaves a known label
    FLEETID_CHECK_OK(EnsureKey(state_.pending_label));
    Failpoint("agent-after-keygen");
  }
  return FinishRotation();
}

Result<void> Agent::FinishRotation() {
  const std::string label = state_.pending_label;
  FLEETID_CHECK_OK(EnsureKey(label));
  if (state_.pending_cert.empty()) {
    FLEETID_TRY(current, ReadCert(state_.current_cert));
    auto reconnect = [this, current]() { return Connect(state_.current_label, current); };
    FLEETID_TRY(conn, reconnect());
    FLEETID_TRY(csr, Csr(label));
    FLEETID_TRY(evidence,
                Evidence(*conn, "reenroll", state_.current_label, label, reconnect, false));
    (void)evidence;
    FLEETID_TRY(reply, conn->Request("POST", "/.well-known/est/simplereenroll",
                                     crypto::Base64Encode(csr), "application/pkcs10"));
    if (reply.status != 200) return MakeError(ReplyError("simplereenroll", reply));
    FLEETID_TRY(certs, CertsFromEst(reply.body));
    const std::string file = label + ".pem";
    FLEETID_CHECK_OK(WritePem(dir_ / file, certs.front().get()));
    state_.pending_cert = file;
    FLEETID_CHECK_OK(SaveState());
    Failpoint("agent-after-issue");
  }
  // Proof of possession: a TLS handshake signed by the new key, presenting the new certificate.
  FLEETID_TRY(pending, ReadCert(state_.pending_cert));
  FLEETID_TRY(conn, Connect(label, pending));
  FLEETID_TRY(reply,
              conn->Request("POST", "/device/v1/rotation/confirm", "{}", "application/json"));
  if (reply.status == 409) {
    // The authority replaced this pending certificate with a later one (or never kept it):
    // drop it; the next rotation starts afresh.
    static_cast<void>(Forget(label));
    state_.pending_label.clear();
    state_.pending_cert.clear();
    FLEETID_CHECK_OK(SaveState());
    return MakeError(ReplyError("confirm", reply));
  }
  if (reply.status != 200) return MakeError(ReplyError("confirm", reply));
  Failpoint("agent-after-confirm");
  const std::string old = state_.current_label;
  state_.current_label = label;
  state_.current_cert = state_.pending_cert;
  state_.pending_label.clear();
  state_.pending_cert.clear();
  FLEETID_CHECK_OK(ComputeRenewal(pending));
  FLEETID_CHECK_OK(SaveState());
  // Only now, with the new credential current on both sides, does the old key go.
  if (!old.empty() && old != label) {
    if (auto gone = Forget(old); !gone && gone.error().code() != ErrorCode::kNotFound) {
      return MakeError(gone.error());
    }
  }
  log::Info("agent: rotated", {{"device", serial_}, {"key", label}});
  return {};
}

Result<PollResult> Agent::Poll() {
  std::unique_ptr<Connection> conn;
  const bool with_ldevid = CurrentUsable();
  if (with_ldevid) {
    FLEETID_TRY(current, ReadCert(state_.current_cert));
    FLEETID_TRY(c, Connect(state_.current_label, current));
    conn = std::move(c);
  } else {
    FLEETID_TRY(c, Connect(std::string(kIdevidLabel), idevid_der_));
    conn = std::move(c);
  }
  FLEETID_TRY(reply, conn->Request("GET", "/device/v1/status"));
  const bool refused = reply.status == 403 && with_ldevid;
  if (refused) {
    FLEETID_TRY(c, Connect(std::string(kIdevidLabel), idevid_der_));
    conn = std::move(c);
    FLEETID_TRY(again, conn->Request("GET", "/device/v1/status"));
    reply = std::move(again);
  }
  if (reply.status != 200) return MakeError(ReplyError("status", reply));
  const Json status = Json::parse(reply.body, nullptr, false);
  if (!status.is_object() || !status.contains("state") || !status["state"].is_string()) {
    return MakeError(ErrorCode::kUnavailable, "the status answer is malformed");
  }
  PollResult out{.state = status["state"].get<std::string>(), .current_refused = false};
  FLEETID_CHECK_OK(FollowRenewalPoint(status.value("renew_at_percent", Json())));
  if (status.value("order", Json()).is_string() && status["order"] == "decommission" &&
      status.value("order_id", Json()).is_string() && !state_.current_label.empty()) {
    FLEETID_CHECK_OK(Decommission(status["order_id"].get<std::string>()));
    out.state = "decommissioned";
    return out;
  }
  if (refused) {
    // The LDevID was refused, the IDevID answered: unless the authority names this very
    // certificate as the device's credential and not revoked (then the refusal is not about
    // revocation, and nothing is destroyed on its word), the LDevID is revoked or unknown.
    FLEETID_TRY(der, ReadCert(state_.current_cert));
    FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
    FLEETID_TRY(serial, SerialOf(cert.get()));
    const Json current = status.value("current", Json());
    if (current.is_object() && current.value("serial", Json()).is_string() &&
        SameSerial(current["serial"].get<std::string>(), serial) &&
        current.value("status", Json()) != "revoked") {
      return MakeError(ErrorCode::kUnavailable,
                       "the authority refused LDevID {} yet names it as the device's credential",
                       serial);
    }
    out.current_refused = true;
  }
  return out;
}

Result<std::vector<std::string>> Agent::LdevidKeys() {
  FLEETID_TRY(keys, token_->ListKeys());
  std::vector<std::string> out;
  for (const custody::KeyAttributes& k : keys) {
    if (k.label.starts_with("ldevid-")) out.push_back(k.label);
  }
  return out;
}

Result<void> Agent::Decommission(const std::string& order_id) {
  FLEETID_TRY(current, ReadCert(state_.current_cert));
  FLEETID_TRY(cert, crypto::ParseCertificateDer(current));
  FLEETID_TRY(kid, SerialOf(cert.get()));
  FLEETID_TRY(labels, LdevidKeys());
  Json destroyed = Json::array();
  for (const std::string& label : labels) {
    FLEETID_TRY(spki, Spki(label));
    destroyed.push_back({{"label", label}, {"key_sha256", crypto::Hex(crypto::Sha256(spki))}});
  }
  const Json claims{{"serial", serial_},
                    {"order", order_id},
                    {"destroyed", destroyed},
                    {"iat", UnixSeconds(clock_.Now())}};
  // Signed while the key still exists; delivered after every LDevID key is gone.
  FLEETID_TRY(signer, token_->GetSigner(state_.current_label));
  FLEETID_TRY(pkey, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
  FLEETID_TRY(receipt,
              crypto::SignJws(pkey.get(), {{"typ", kReceiptType}, {"kid", kid}}, claims.dump()));
  pkey.reset();
  FLEETID_CHECK_OK(WriteFileAtomic(dir_ / "receipt.jws", receipt + "\n"));
  for (const std::string& label : labels) FLEETID_CHECK_OK(Forget(label));
  state_.decommissioned = true;
  state_.current_label.clear();
  state_.pending_label.clear();
  state_.pending_cert.clear();
  FLEETID_CHECK_OK(SaveState());
  Failpoint("agent-after-erase");
  log::Info("agent: keys destroyed", {{"device", serial_}, {"keys", labels.size()}});
  return DeliverReceipt();
}

Result<void> Agent::DeliverReceipt() {
  FLEETID_TRY(receipt, ReadFile(dir_ / "receipt.jws"));
  FLEETID_TRY(conn, Connection::Connect(url_.host, url_.port, anonymous_));
  FLEETID_TRY(reply, conn->Request("POST", "/device/v1/receipt", receipt, "application/jose"));
  if (reply.status != 200) return MakeError(ReplyError("receipt", reply));
  state_.receipt_delivered = true;
  FLEETID_CHECK_OK(SaveState());
  log::Info("agent: decommissioning receipt delivered", {{"device", serial_}});
  return {};
}

Result<OcspVerdict> Agent::RefreshOcsp() {
  if (state_.current_label.empty()) return MakeError(ErrorCode::kNotFound, "no current LDevID");
  FLEETID_TRY(der, ReadCert(state_.current_cert));
  FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
  FLEETID_TRY(chain, ReadPemCerts(dir_ / "ca.pem"));
  X509* issuer = nullptr;
  for (const crypto::X509Ptr& c : chain) {
    if (X509_check_issued(c.get(), cert.get()) == X509_V_OK) issuer = c.get();
  }
  STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert.get());
  const std::string url = urls != nullptr && sk_OPENSSL_STRING_num(urls) > 0
                              ? std::string(sk_OPENSSL_STRING_value(urls, 0))
                              : std::string();
  X509_email_free(urls);
  if (issuer == nullptr || url.empty()) {
    return MakeError(ErrorCode::kNotFound, "no issuer or OCSP URL for the current certificate");
  }
  FLEETID_TRY(where, ParseUrl(url));
  crypto::OcspRequestPtr req(OCSP_REQUEST_new());
  OCSP_CERTID* id = OCSP_cert_to_id(nullptr, cert.get(), issuer);
  if (!req || id == nullptr || OCSP_request_add0_id(req.get(), id) == nullptr) {
    OCSP_CERTID_free(id);
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "OCSP request"));
  }
  const int len = i2d_OCSP_REQUEST(req.get(), nullptr);
  std::string body(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(body.data());
  i2d_OCSP_REQUEST(req.get(), &p);
  FLEETID_TRY(conn, Connection::Connect(where.host, where.port, nullptr));
  FLEETID_TRY(reply, conn->Request("POST", where.path.empty() ? "/" : where.path, body,
                                   "application/ocsp-request"));
  if (reply.status != 200) return MakeError(ReplyError("ocsp", reply));
  // RFC 6960 §3.2: the answer is signed by the issuing CA or its delegated responder (§4.2.2.2),
  // which chains to the trust anchor, and is fresh; only then is it kept or believed.
  const auto* q = reinterpret_cast<const unsigned char*>(reply.body.data());
  crypto::OcspResponsePtr resp(
      d2i_OCSP_RESPONSE(nullptr, &q, static_cast<long>(reply.body.size())));
  if (!resp || OCSP_response_status(resp.get()) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
    ERR_clear_error();
    return MakeError(ErrorCode::kUnavailable, "the OCSP answer is not a successful response");
  }
  crypto::OcspBasicRespPtr basic(OCSP_response_get1_basic(resp.get()));
  FLEETID_TRY(anchor, crypto::ParseCertificateDer(options_.trust_anchor));
  crypto::X509StorePtr store(X509_STORE_new());
  X509StackPtr untrusted(sk_X509_new_null());
  if (!basic || !store || !untrusted || X509_STORE_add_cert(store.get(), anchor.get()) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "OCSP verification"));
  }
  for (const crypto::X509Ptr& c : chain) {
    if (sk_X509_push(untrusted.get(), c.get()) <= 0) {
      return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "OCSP verification"));
    }
  }
  const TimePoint now = clock_.Now();
  X509_VERIFY_PARAM_set_time(X509_STORE_get0_param(store.get()),
                             static_cast<time_t>(UnixSeconds(now)));
  if (OCSP_basic_verify(basic.get(), untrusted.get(), store.get(), 0) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kUnavailable, "the OCSP answer does not verify");
  }
  int status = V_OCSP_CERTSTATUS_UNKNOWN;
  int reason = -1;
  ASN1_GENERALIZEDTIME* this_update = nullptr;
  ASN1_GENERALIZEDTIME* next_update = nullptr;
  if (OCSP_resp_find_status(basic.get(), id, &status, &reason, nullptr, &this_update,
                            &next_update) != 1 ||
      this_update == nullptr) {
    return MakeError(ErrorCode::kUnavailable, "the OCSP answer does not answer for the LDevID");
  }
  FLEETID_TRY(produced, TimeOf(this_update));
  if (produced > now + kOcspSkew) {
    return MakeError(ErrorCode::kUnavailable, "the OCSP answer is from the future");
  }
  if (next_update != nullptr) {
    FLEETID_TRY(stale, TimeOf(next_update));
    if (stale < now - kOcspSkew) {
      return MakeError(ErrorCode::kUnavailable, "the OCSP answer is stale");
    }
  }
  FLEETID_CHECK_OK(WriteFileAtomic(dir_ / "ocsp.der", reply.body));
  if (status == V_OCSP_CERTSTATUS_GOOD) return OcspVerdict::kGood;
  if (status == V_OCSP_CERTSTATUS_REVOKED) {
    return reason == OCSP_REVOKED_STATUS_CERTIFICATEHOLD ? OcspVerdict::kHeld
                                                         : OcspVerdict::kRevoked;
  }
  return OcspVerdict::kUnknown;
}

Result<void> Agent::DropCurrent(std::string_view why) {
  const std::string label = state_.current_label;
  state_.current_label.clear();
  state_.current_cert.clear();
  state_.renew_at = 0;
  // The state first: a crash in between leaves a stray key, never a current label whose key is
  // gone (which would make every later poll fail).
  FLEETID_CHECK_OK(SaveState());
  std::error_code ignored;
  fs::remove(dir_ / "ocsp.der", ignored);
  FLEETID_TRY(labels, LdevidKeys());
  for (const std::string& l : labels) {
    if (l == state_.pending_label) continue;  // an enrollment reuses an uncertified new key
    if (auto gone = Forget(l); !gone && gone.error().code() != ErrorCode::kNotFound) {
      return MakeError(gone.error());
    }
    report_.erased.push_back(l);
  }
  log::Warn("agent: LDevID revoked, its key destroyed",
            {{"device", serial_}, {"key", label}, {"why", why}});
  return {};
}

Result<void> Agent::Act(const Plan& plan, bool force_rotate) {
  switch (plan.step) {
    case Step::kNothing:
      return {};
    case Step::kWait:
      report_.action = "waiting";
      report_.waiting_for = std::string(plan.waiting_for);
      log::Info("agent: waiting",
                {{"device", serial_}, {"state", report_.device_state}, {"for", plan.waiting_for}});
      if (force_rotate) {
        return MakeError(ErrorCode::kConflict, "'{}' is {}: no rotation while it waits for {}",
                         serial_, report_.device_state, plan.waiting_for);
      }
      return {};
    case Step::kFinishRotation: {
      auto finished = FinishRotation();
      if (finished) {
        report_.action = "rotated";
        return {};
      }
      // Without a usable current LDevID, a pending certificate the authority refuses (409: it
      // was abandoned; 403: revoked) leaves enrolling afresh, which abandons the pending key.
      const ErrorCode code = finished.error().code();
      if (CurrentUsable() ||
          (code != ErrorCode::kConflict && code != ErrorCode::kPermissionDenied)) {
        return finished;
      }
      log::Warn("agent: pending rotation refused, enrolling afresh",
                {{"device", serial_}, {"error", finished.error().ToString()}});
      FLEETID_CHECK_OK(Enroll());
      report_.action = "enrolled";
      return {};
    }
    case Step::kEnroll:
      FLEETID_CHECK_OK(Enroll());
      report_.action = "enrolled";
      return {};
    case Step::kRotate:
      FLEETID_CHECK_OK(Rotate());
      report_.action = "rotated";
      return {};
  }
  return {};
}

Result<void> Agent::Once(bool force_rotate) {
  report_ = OnceReport{};
  report_.device_state = state_.device_state;
  if (state_.decommissioned) {
    report_.action = "decommissioned";
    if (!state_.receipt_delivered) return DeliverReceipt();
    return {};
  }
  // At most two rounds: the second when OCSP says the current LDevID is revoked after all.
  for (int round = 0; round < 2; ++round) {
    // Orders first: a device ordered decommissioned must not renew, whatever else is pending.
    FLEETID_TRY(polled, Poll());
    report_.device_state = polled.state;
    if (state_.device_state != polled.state) {
      state_.device_state = polled.state;
      FLEETID_CHECK_OK(SaveState());
    }
    if (state_.decommissioned) {
      report_.action = "decommissioned";
      return {};
    }
    const Credential current = state_.current_label.empty() ? Credential::kNone
                               : polled.current_refused     ? Credential::kRevoked
                               : CurrentUsable()            ? Credential::kGood
                                                            : Credential::kLapsed;
    if (report_.credential != Credential::kRevoked) report_.credential = current;
    const Plan plan = Decide({.device = ParseDeviceState(polled.state),
                              .current = current,
                              .pending_key = !state_.pending_label.empty(),
                              .pending_cert = !state_.pending_cert.empty(),
                              .renewal_due = UnixSeconds(clock_.Now()) >= state_.renew_at,
                              .force_rotate = force_rotate});
    if (plan.erase_current) {
      FLEETID_CHECK_OK(DropCurrent("refused by the authority"));
    }
    FLEETID_CHECK_OK(Act(plan, force_rotate));
    if (state_.current_label.empty()) return {};
    auto ocsp = RefreshOcsp();
    if (!ocsp) {
      log::Warn("agent: OCSP refresh failed",
                {{"device", serial_}, {"error", ocsp.error().ToString()}});
      return {};
    }
    if (*ocsp != OcspVerdict::kRevoked) return {};
    report_.credential = Credential::kRevoked;
    FLEETID_CHECK_OK(DropCurrent("revoked in a verified OCSP answer"));
  }
  return {};
}

TimePoint Agent::NextWake(std::chrono::seconds poll) const {
  const TimePoint now = clock_.Now();
  const TimePoint renew{std::chrono::seconds(state_.renew_at)};
  if (renew <= now) return now + poll;
  return std::min(renew, now + poll);
}

}  // namespace fleetid::agent
