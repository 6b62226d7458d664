#include "node/node.h"

#include <fmt/ranges.h>

#include <chrono>

#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"

namespace fleetid::node {

Node::~Node() = default;

Result<std::unique_ptr<Node>> Node::Open(const ServerConfig& config, const OpenOptions& options) {
  std::unique_ptr<Node> node(new Node(options.step_log_level));
  FLEETID_CHECK_OK(node->OpenParts(config, options));
  return node;
}

Result<void> Node::OpenParts(const ServerConfig& config, const OpenOptions& options) {
  Parts parts = options.parts;
  if (parts.authority || parts.audit_log) parts.token = parts.database = true;
  if (parts.token) FLEETID_CHECK_OK(OpenCustody(config));
  if (parts.database) {
    const int connections =
        options.database_connections > 0 ? options.database_connections : config.threads + 2;
    FLEETID_CHECK_OK(OpenDatabase(config, connections));
  }
  if (parts.authority) FLEETID_CHECK_OK(OpenAuthority(config));
  if (parts.audit_log) FLEETID_CHECK_OK(OpenAuditLog(options.sign_first_head));
  if (parts.database) OpenEnrollment();
  return {};
}

Result<void> Node::OpenCustody(const ServerConfig& config) {
  FLEETID_TRY(opened, custody::OpenCustody(config.custody, config.data_dir,
                                           crypto::OpenSslRng::Instance()));
  custody_ = std::move(opened);
  FLEETID_TRY(keys, custody_.token->ListKeys());
  log::Write(step_log_level_, "custody ready",
             {{"module", custody_.module_path.string()},
              {"token", custody_.token->label()},
              {"embedded", custody_.embedded},
              {"store", custody_.store_dir.string()},
              {"created", custody_.created},
              {"keys", keys.size()}});
  return {};
}

Result<void> Node::OpenDatabase(const ServerConfig& config, int connections) {
  const std::string db_url = config.DatabaseUrl();
  FLEETID_TRY(db, store::Database::Open(db_url, connections));
  db_ = std::move(db);
  FLEETID_CHECK_OK(enroll::Service::Migrate(*db_));
  FLEETID_CHECK_OK(operators::Operators::Migrate(*db_));
  FLEETID_TRY(versions, policy::Versions::Open(*db_, SystemClock::Instance()));
  policy_ = std::move(versions);
  FLEETID_TRY(counts,
              registry::Registry(*db_, SystemClock::Instance(), nullptr, {}).CountByState());
  std::int64_t devices = 0;
  for (const auto& [state, n] : counts) devices += n;
  const policy::Active active = policy_->Current();
  log::Write(step_log_level_, "registry ready",
             {{"database", RedactUrl(db_url)},
              {"devices", devices},
              {"policy_version", active.number},
              {"policy_hash", active.policy->Hash()}});
  return {};
}

Result<void> Node::OpenAuthority(const ServerConfig& config) {
  pki::AuthorityOptions ca_options;
  ca_options.base_url = config.PublicUrl();
  ca_options.crl_min_interval = std::chrono::seconds(config.crl_min_interval_seconds);
  ca_options.policy_version = PolicyVersion();
  FLEETID_TRY(authority, pki::Authority::Open(custody_.token, *db_, SystemClock::Instance(),
                                              crypto::OpenSslRng::Instance(), ca_options));
  authority_ = std::move(authority);
  log::Write(step_log_level_, "certificate authority ready",
             {{"public_url", ca_options.base_url},
              {"cas", fmt::format("{}", fmt::join(authority_->CaNames(), ","))}});
  return {};
}

// The audit log: every registry transition, issuance and revocation appends to it in its own
// transaction; the node integrates and signs tree heads on a cadence (node/maintenance.h).
Result<void> Node::OpenAuditLog(bool sign_first_head) {
  FLEETID_TRY(signer, audit::AuditSigner(*custody_.token, crypto::OpenSslRng::Instance()));
  FLEETID_TRY(pem, crypto::PublicKeyPem(signer->public_key()));
  audit_pem_ = std::move(pem);
  audit_log_ = std::make_unique<audit::Log>(*db_, signer, SystemClock::Instance());
  if (!sign_first_head) {
    log::Write(step_log_level_, "audit log ready", {});
    return {};
  }
  FLEETID_TRY(first_head, audit_log_->SignHead());
  log::Write(step_log_level_, "audit log ready",
             {{"size", first_head.size}, {"root", audit::HashHex(first_head.root)}});
  return {};
}

// Enrollment: the registry acts on credentials through the CA in its own transactions. Without
// the CA the registry has no effects (Parts::database).
void Node::OpenEnrollment() {
  if (authority_) effects_ = std::make_unique<enroll::PkiEffects>(*authority_, CredentialTerms());
  registry::RegistryOptions registry_options;
  registry_options.policy_version = PolicyVersion();
  registry_ = std::make_unique<registry::Registry>(*db_, SystemClock::Instance(), effects_.get(),
                                                   registry_options);
  if (!authority_) return;
  enroll::ServiceOptions service_options;
  service_options.policy_version = PolicyVersion();
  enrollment_ = std::make_unique<enroll::Service>(*db_, *registry_, *authority_, *effects_,
                                                  SystemClock::Instance(),
                                                  crypto::OpenSslRng::Instance(), service_options);
  operators_ = std::make_unique<operators::Operators>(*db_, *authority_, *policy_,
                                                      SystemClock::Instance(),
                                                      crypto::OpenSslRng::Instance());
}

enroll::CredentialTermsFn Node::CredentialTerms() {
  policy::Versions* versions = policy_.get();
  return [versions](const registry::Device& device) {
    return enroll::TermsFor(*versions->Current().policy, device);
  };
}

PolicyVersionFn Node::PolicyVersion() {
  policy::Versions* versions = policy_.get();
  return [versions] { return versions->CurrentHash(); };
}

}  // namespace fleetid::node
