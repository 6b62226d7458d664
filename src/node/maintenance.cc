#include "node/maintenance.h"

#include <openssl/x509.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "common/log.h"
#include "crypto/handles.h"
#include "crypto/x509.h"

namespace fleetid::node {

Maintenance::Maintenance(MaintenanceTargets targets)
    : targets_(std::move(targets)), thread_([this](const std::stop_token& stop) { Run(stop); }) {}

Maintenance::~Maintenance() { Stop(); }

void Maintenance::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void Maintenance::Run(const std::stop_token& stop) {
  std::mutex mu;
  std::condition_variable_any wake;
  std::unique_lock lock(mu);
  for (int tick = 1;; ++tick) {
    wake.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
    if (stop.stop_requested()) return;
    Tick(tick);
  }
}

void Maintenance::Tick(int tick) {
  if (auto refreshed = targets_.policy.Refresh(); !refreshed) {
    log::Warn("policy: reading the active version failed",
              {{"error", refreshed.error().ToString()}});
  }
  targets_.authority.RefreshCrls();
  if (targets_.https != nullptr && targets_.https_identity != nullptr) {
    RenewHttpsCertificate(targets_.token, targets_.authority, *targets_.https,
                          *targets_.https_identity, targets_.tls_names);
  }
  TrustNewManufacturers();
  if (tick % kAuditHeadSeconds == 0) {
    if (auto head = targets_.audit_log.SignHead(); !head) {
      log::Warn("audit: signing a tree head failed", {{"error", head.error().ToString()}});
    }
  }
  if (tick % 60 == 0) {  // expired nonces and idle rate buckets (docs/security.md)
    if (auto pruned = targets_.enrollment.Prune(); !pruned) {
      log::Warn("enroll: pruning failed", {{"error", pruned.error().ToString()}});
    }
  }
}

void Maintenance::TrustNewManufacturers() {
  MutexLock lock(trust_mu_);
  auto makers = targets_.enrollment.Manufacturers();
  if (targets_.https == nullptr || !makers || makers->size() == targets_.known_manufacturers) {
    return;
  }
  for (const enroll::Manufacturer& m : *makers) {
    auto cert = crypto::ParseCertificateDer(m.der);
    if (!cert) continue;
    if (auto added = targets_.https->AddClientTrustAnchor(server::X509Ref(cert->get())); !added) {
      log::Warn("enroll: a manufacturer CA could not be trusted",
                {{"manufacturer", m.name}, {"error", added.error().ToString()}});
    }
  }
  targets_.known_manufacturers = makers->size();
  log::Info("enroll: manufacturer trust anchors", {{"count", targets_.known_manufacturers}});
}

}  // namespace fleetid::node
