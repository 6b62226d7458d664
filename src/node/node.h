// node::Node: the components of one authority node, opened in dependency order and owned
// together: the token (creating the embedded store on first start), the registry database
// (creating or migrating its schema, the audit log's included), the CA (creating its hierarchy
// on first start), the audit log (creating the audit key and signing a first head), and the
// registry and enrollment service wired through the CA. Each step is logged without secrets.
#ifndef FLEETID_NODE_NODE_H_
#define FLEETID_NODE_NODE_H_

#include <memory>
#include <string>

#include "audit/log.h"
#include "custody/store.h"
#include "enroll/service.h"
#include "node/config.h"
#include "pki/pki.h"
#include "registry/registry.h"
#include "store/store.h"

namespace fleetid::node {

class Node {
 public:
  // Open opens every component for |config|, whose data_dir exists and is absolute
  // (apps::PrepareDataDir). The database pool has config.threads + 2 connections.
  [[nodiscard]] static Result<std::unique_ptr<Node>> Open(const ServerConfig& config);

  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  custody::Token& token() { return *custody_.token; }
  pki::Authority& authority() { return *authority_; }
  audit::Log& audit_log() { return *audit_log_; }
  // audit_public_key_pem is the audit key's public half, for /audit/v1/key.
  const std::string& audit_public_key_pem() const { return audit_pem_; }
  enroll::Service& enrollment() { return *enrollment_; }

 private:
  Node() = default;
  [[nodiscard]] Result<void> OpenCustody(const ServerConfig& config);
  [[nodiscard]] Result<void> OpenDatabase(const ServerConfig& config);
  [[nodiscard]] Result<void> OpenAuthority(const ServerConfig& config);
  [[nodiscard]] Result<void> OpenAuditLog();
  void OpenEnrollment();

  // Destroyed in reverse: the users of the database, CA and token before them.
  custody::OpenedToken custody_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<pki::Authority> authority_;
  std::string audit_pem_;
  std::unique_ptr<audit::Log> audit_log_;
  std::unique_ptr<enroll::PkiEffects> effects_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<enroll::Service> enrollment_;
};

}  // namespace fleetid::node

#endif  // FLEETID_NODE_NODE_H_
