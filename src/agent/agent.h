// fleetid-agent's logic: one device's identity life on the device side. Its keys live only in
// its secure element (a PKCS#11 token; SoftHSM2 stands in for the chip), and OpenSSL uses them
// through the fleetid-token provider for CSRs, evidence and TLS client authentication.
//
// Files of a device (its directory in a factory batch): device.json (serial, model, firmware),
// the secure element's PIN files, idevid.pem, and the agent's own state: state.json, the
// LDevID certificates, ca.pem (the authority's chain from EST /cacerts), ocsp.der (the latest
// OCSP answer for the current LDevID, for offline use), receipt.jws (decommissioning).
#ifndef FLEETID_AGENT_AGENT_H_
#define FLEETID_AGENT_AGENT_H_

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/https_client.h"
#include "agent/plan.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "custody/custody.h"

namespace fleetid::agent {

inline constexpr std::string_view kAgentVersion = "0.1.0";
inline constexpr std::string_view kIdevidLabel = "idevid";

// SeInit is the factory step that runs on each new device: it initialises the device's secure
// element (a token labelled with the serial in the batch's SoftHSM2 store, PINs in the device's
// directory), generates the IDevID key inside it and writes idevid.csr (DER) signed by that key.
// Devices are the serials listed in |batch|/serials.txt.
[[nodiscard]] Result<int> SeInit(const std::filesystem::path& batch, const crypto::Suite& suite,
                                 Rng& rng);

// OpenSecureElements loads the batch's SoftHSM2 store (one per process).
[[nodiscard]] Result<std::shared_ptr<custody::Module>> OpenSecureElements(
    const std::filesystem::path& batch);

struct AgentOptions {
  std::string server;                          // https://host:port of the authority's HTTPS front
  std::string ocsp_url;                        // http://host:port/ocsp; empty: no OCSP fetch
  std::vector<std::uint8_t> trust_anchor;      // DER: the authority's root, given out of band
  std::optional<std::string> firmware_sha256;  // the measurement to report (default: device.json)
  double renew_fraction = 2.0 / 3.0;           // renew at this fraction of the lifetime ...
  double jitter_fraction = 0.05;               // ... minus up to this fraction, at random
};

struct AgentState {
  int generation = 0;           // the last LDevID key generation made
  std::string current_label;    // token label of the current LDevID key
  std::string current_cert;     // file name of its certificate
  std::string pending_label;    // a rotation in progress: the new key ...
  std::string pending_cert;     // ... and its (pending) certificate once issued
  std::int64_t renew_at = 0;    // Unix seconds
  // When to renew, in percent of an LDevID's lifetime, as the authority's status answer last
  // said (the device's credential class); 0 before it said: AgentOptions::renew_fraction.
  int renew_at_percent = 0;
  bool decommissioned = false;  // keys destroyed; receipt.jws holds the receipt
  bool receipt_delivered = false;
  std::string device_state;  // the state the authority last reported ("" before any poll)
};

// OnceReport is what the last Once found and did, for the agent's JSON output.
struct OnceReport {
  std::string device_state;                   // as the status poll reported it
  Credential credential = Credential::kNone;  // the current LDevID as Once found it
  std::string action = "none";      // "none", "waiting", "enrolled", "rotated", "decommissioned"
  std::string waiting_for;          // for "waiting": what the device waits for
  std::vector<std::string> erased;  // LDevID keys destroyed because their credential was revoked
};

// PollResult is the authority's answer to GET /device/v1/status.
struct PollResult {
  std::string state;  // the device's state ("decommissioned" once the agent obeyed an order)
  // The authority refused the current LDevID (403) and, asked with the IDevID, did not name it
  // as the device's good credential: the LDevID is revoked (or unknown to the authority).
  bool current_refused = false;
};

// OcspVerdict is the current LDevID's status in a verified, fresh OCSP answer.
enum class OcspVerdict { kGood, kHeld, kRevoked, kUnknown };

// Agent is one device. Not thread-safe; several agents may run in one process (--simulate).
class Agent {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Agent>> Open(
      const std::shared_ptr<custody::Module>& module, const std::filesystem::path& device_dir,
      AgentOptions options, Clock& clock, Rng& rng);

  const std::string& serial() const { return serial_; }
  const AgentState& state() const { return state_; }

  // Once does what is due: deliver an undelivered receipt; poll for orders (and obey a
  // decommissioning); then what Decide plans from the device state and the current LDevID:
  // destroy the key of a revoked LDevID, finish a rotation left half-done, enroll with the IDevID
  // (no usable LDevID, or the device must enroll afresh), rotate if renewal is due (or
  // |force_rotate|), or wait while the device is suspended or quarantined (no enrollment, no key
  // generation); refresh and check the OCSP answer, and if it says the current LDevID is revoked,
  // destroy its key and decide once more. |force_rotate| while waiting is kConflict.
  [[nodiscard]] Result<void> Once(bool force_rotate = false);
  // report is what the last Once found and did.
  const OnceReport& report() const { return report_; }

  // PrepareEnrollment makes the next LDevID key in the token and its CSR ahead of Enroll (at
  // boot, or before a benchmark's clock starts).
  [[nodiscard]] Result<void> PrepareEnrollment();
  // Enroll enrolls with the IDevID and fresh evidence over one mutual-TLS connection
  // (nonce, evidence, simpleenroll). |fresh_per_request| opens a new connection per request.
  [[nodiscard]] Result<void> Enroll(bool fresh_per_request = false);
  // Rotate makes a new key, has it certified (pending), proves possession, destroys the old key.
  [[nodiscard]] Result<void> Rotate();
  // Poll asks the authority for orders and the device state. A current LDevID the authority
  // refuses (revoked, e.g. superseded by a rotation whose end this device missed) is retried with
  // the IDevID. A decommissioning order is obeyed here while an LDevID key can sign the receipt.
  [[nodiscard]] Result<PollResult> Poll();
  // Decommission signs a receipt answering the order |order_id| and naming the LDevID keys,
  // destroys them, and delivers it.
  [[nodiscard]] Result<void> Decommission(const std::string& order_id);
  // RefreshOcsp fetches an OCSP answer for the current LDevID from its AIA responder, verifies it
  // (signed for the issuing CA, fresh) and keeps it as ocsp.der for stapling.
  [[nodiscard]] Result<OcspVerdict> RefreshOcsp();

  // NextWake is when Once should run again: the renewal time, capped by |poll|; a renewal time
  // already past (the device waits, or a renewal failed) waits |poll|.
  TimePoint NextWake(std::chrono::seconds poll) const;

  // LdevidKeys lists the LDevID key labels in the token.
  [[nodiscard]] Result<std::vector<std::string>> LdevidKeys();

 private:
  Agent(std::shared_ptr<custody::Token> token, std::filesystem::path dir, AgentOptions options,
        Clock& clock, Rng& rng)
      : token_(std::move(token)),
        dir_(std::move(dir)),
        options_(std::move(options)),
        clock_(clock),
        rng_(rng) {}

  [[nodiscard]] Result<void> SaveState();
  // Key returns the token key |label| as an EVP_PKEY (fleetid-token provider), made once per
  // label; Spki its public key (DER). Forget destroys the key in the token and the cached forms.
  [[nodiscard]] Result<EVP_PKEY*> Key(const std::string& label);
  [[nodiscard]] Result<std::vector<std::uint8_t>> Spki(const std::string& label);
  [[nodiscard]] Result<void> Forget(const std::string& label);
  [[nodiscard]] Result<std::unique_ptr<Connection>> Connect(const std::string& key_label,
                                                            const std::vector<std::uint8_t>& cert);
  [[nodiscard]] Result<std::string> Evidence(
      Connection& conn, std::string_view purpose, const std::string& signing_label,
      const std::string& new_label,
      const std::function<Result<std::unique_ptr<Connection>>()>& reconnect,
      bool fresh_per_request);
  [[nodiscard]] Result<std::vector<std::uint8_t>> Csr(const std::string& label);
  [[nodiscard]] Result<void> EnsureKey(const std::string& label);
  [[nodiscard]] Result<std::vector<std::uint8_t>> ReadCert(const std::string& name) const;
  [[nodiscard]] Result<void> ComputeRenewal(const std::vector<std::uint8_t>& der);
  [[nodiscard]] Result<void> FollowRenewalPoint(const nlohmann::json& percent);
  [[nodiscard]] Result<void> FinishRotation();
  [[nodiscard]] Result<void> DeliverReceipt();
  // DropCurrent forgets a revoked current LDevID and destroys its key (and any stray LDevID key
  // but the pending one, which an enrollment reuses).
  [[nodiscard]] Result<void> DropCurrent(std::string_view why);
  // Carry out Decide's step; Act reports kConflict for a forced rotation while waiting.
  [[nodiscard]] Result<void> Act(const Plan& plan, bool force_rotate);
  bool CurrentUsable() const;

  std::shared_ptr<custody::Token> token_;
  std::filesystem::path dir_;
  AgentOptions options_;
  Clock& clock_;
  Rng& rng_;
  std::string serial_;
  std::string model_;
  std::string firmware_sha256_;
  std::vector<std::uint8_t> idevid_der_;
  std::shared_ptr<ClientTls> anonymous_;
  std::map<std::string, crypto::EvpPkeyPtr> keys_;
  std::map<std::string, std::vector<std::uint8_t>> spkis_;
  std::map<std::string, std::shared_ptr<ClientTls>> tls_;  // by key label and certificate
  std::string prepared_label_;
  std::vector<std::uint8_t> prepared_csr_;
  Url url_;
  AgentState state_;
  OnceReport report_;
};

}  // namespace fleetid::agent

#endif  // FLEETID_AGENT_AGENT_H_
