// node::Node: the components of one authority node, opened in dependency order and owned
// together: the token (creating the embedded store on first start), the registry database
// (creating or migrating its schema, the audit log's included), the CA (creating its hierarchy
// on first start), the audit log (creating the audit key and signing a first head), and the
// registry and enrollment service wired through the CA. Each step is logged without secrets.
// fleetid-server opens every part; the operator tool opens only what one command needs
// (OpenOptions::Command).
#ifndef FLEETID_NODE_NODE_H_
#define FLEETID_NODE_NODE_H_

#include <cstdlib>
#include <memory>
#include <string>

#include "audit/log.h"
#include "common/log.h"
#include "custody/store.h"
#include "enroll/service.h"
#include "node/config.h"
#include "pki/pki.h"
#include "operators/operators.h"
#include "policy/versions.h"
#include "registry/registry.h"
#include "store/store.h"

namespace fleetid::node {

// Parts names the components a caller of Node::Open needs. The authority and the audit log need
// the token and the database, and Open opens those with them.
struct Parts {
  bool token = false;
  // The database and the registry on it. Without the authority, the registry's transitions that
  // act on credentials are refused with `unavailable` rather than half-applied.
  bool database = false;
  // The CA, with the registry and the enrollment service acting on credentials through it.
  bool authority = false;
  bool audit_log = false;
};

struct OpenOptions {
  Parts parts{.token = true, .database = true, .authority = true, .audit_log = true};
  // Connections in the database pool; 0 is config.threads + 2 (the server's threads and its
  // maintenance).
  int database_connections = 0;
  // A serving node signs a first audit head at start, so /audit/v1/sth has one to serve.
  bool sign_first_head = true;
  // The level each opening step is logged at.
  log::Level step_log_level = log::Level::kInfo;

  // Command is the light mode of one operator command: only |parts|, two connections, no head
  // signed on the way (opening the log appends nothing), and the steps logged at debug so that
  // the command's output is its answer alone.
  static OpenOptions Command(Parts parts) {
    return {.parts = parts,
            .database_connections = 2,
            .sign_first_head = false,
            .step_log_level = log::Level::kDebug};
  }
};

class Node {
 public:
  // Open opens the parts |options| names for |config|. When the database is opened, data_dir
  // exists and is absolute (apps::PrepareDataDir); the token alone finds its embedded store from
  // a relative data_dir too.
  [[nodiscard]] static Result<std::unique_ptr<Node>> Open(const ServerConfig& config,
                                                          const OpenOptions& options = {});

  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The accessors of the parts; asking for a part that was not opened is a bug and aborts.
  custody::Token& token() { return Opened(custody_.token.get()); }
  store::Database& database() { return Opened(db_.get()); }
  registry::Registry& registry() { return Opened(registry_.get()); }
  pki::Authority& authority() { return Opened(authority_.get()); }
  audit::Log& audit_log() { return Opened(audit_log_.get()); }
  // audit_public_key_pem is the audit key's public half, for /audit/v1/key.
  const std::string& audit_public_key_pem() const { return audit_pem_; }
  enroll::Service& enrollment() { return Opened(enrollment_.get()); }
  // The policy's versions and the active one, opened with the database (installing the built-in
  // first policy on first start).
  policy::Versions& policy() { return Opened(policy_.get()); }
  // The operators, with the CA (their certificates come from its operators' CA).
  operators::Operators& operators() { return Opened(operators_.get()); }

 private:
  explicit Node(log::Level step_log_level) : step_log_level_(step_log_level) {}
  template <typename T>
  static T& Opened(T* part) {
    if (part == nullptr) std::abort();
    return *part;
  }
  [[nodiscard]] Result<void> OpenParts(const ServerConfig& config, const OpenOptions& options);
  [[nodiscard]] Result<void> OpenCustody(const ServerConfig& config);
  [[nodiscard]] Result<void> OpenDatabase(const ServerConfig& config, int connections);
  [[nodiscard]] Result<void> OpenAuthority(const ServerConfig& config);
  [[nodiscard]] Result<void> OpenAuditLog(bool sign_first_head);
  void OpenEnrollment();
  // PolicyVersion names the active policy version, for every audit record the parts write.
  PolicyVersionFn PolicyVersion();

 public:
  // CredentialTerms answers a device's credential terms from the active policy version's
  // credential classes, for the enrollment service, the CA's device issuance and `ca issue`.
  enroll::CredentialTermsFn CredentialTerms();

 private:

  log::Level step_log_level_;
  // Destroyed in reverse: the users of the database, CA and token before them.
  custody::OpenedToken custody_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<policy::Versions> policy_;
  std::unique_ptr<pki::Authority> authority_;
  std::string audit_pem_;
  std::unique_ptr<audit::Log> audit_log_;
  std::unique_ptr<enroll::PkiEffects> effects_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<enroll::Service> enrollment_;
  std::unique_ptr<operators::Operators> operators_;
};

}  // namespace fleetid::node

#endif  // FLEETID_NODE_NODE_H_
