// The authority node's background maintenance, on one thread, every second: CRLs that relying
// parties fetch are rebuilt when due (so a fetch rarely waits for a build); the HTTPS
// certificate is renewed at two thirds of its life, and within a second of its revocation;
// manufacturers registered while the node runs (`fleetid manufacturer add`) become client trust
// anchors of the HTTPS front within a second; the audit log is integrated and its head signed
// every kAuditHeadSeconds; expired nonces and idle rate buckets are pruned every minute; a
// policy version activated by another process is taken up within a second.
#ifndef FLEETID_NODE_MAINTENANCE_H_
#define FLEETID_NODE_MAINTENANCE_H_

#include <cstddef>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "audit/log.h"
#include "common/mutex.h"
#include "custody/custody.h"
#include "enroll/service.h"
#include "node/https_front.h"
#include "pki/pki.h"
#include "policy/versions.h"
#include "server/http_server.h"

namespace fleetid::node {

inline constexpr int kAuditHeadSeconds = 5;

// MaintenanceTargets is what the thread works on; every reference must outlive the Maintenance.
// |https| and |https_identity| are null when the HTTPS front is off; the thread is the only
// user of |https_identity| once started.
struct MaintenanceTargets {
  pki::Authority& authority;
  audit::Log& audit_log;
  enroll::Service& enrollment;
  policy::Versions& policy;
  custody::Token& token;
  server::HttpServer* https = nullptr;
  HttpsIdentity* https_identity = nullptr;
  std::vector<std::string> tls_names;
  std::size_t known_manufacturers = 0;  // the HTTPS front's manufacturer anchors at start
};

// Maintenance runs the thread from construction until Stop() or destruction.
class Maintenance {
 public:
  explicit Maintenance(MaintenanceTargets targets);
  ~Maintenance();
  Maintenance(const Maintenance&) = delete;
  Maintenance& operator=(const Maintenance&) = delete;

  // Stop asks the thread to stop and waits for its current tick to finish.
  void Stop();

  // TrustNewManufacturers makes the HTTPS front trust the manufacturer CAs registered since it
  // last looked (their devices' IDevIDs). The thread does it every second; the operator API
  // calls it as soon as it has registered one, so that the call is answered only once the
  // manufacturer's devices can connect. Thread-safe.
  void TrustNewManufacturers();

 private:
  void Run(const std::stop_token& stop);
  void Tick(int tick);

  Mutex trust_mu_;  // serializes TrustNewManufacturers (targets_.known_manufacturers)
  MaintenanceTargets targets_;
  std::jthread thread_;  // last: started once the members above exist
};

}  // namespace fleetid::node

#endif  // FLEETID_NODE_MAINTENANCE_H_
