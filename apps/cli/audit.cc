// fleetid audit head|key|export|archive|proof|verify: the tamper-evident audit log.
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>

#include "apps/cli/cli.h"
#include "apps/cli/pem.h"
#include "audit/export.h"
#include "audit/log.h"
#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "operators/approval.h"

namespace fleetid::cli {
namespace {

struct AuditFlags {
  std::string out;
  std::vector<std::string> in;
  std::string key_path;
  std::string saved_head_path;
  std::string operators_root;
  std::uint64_t archive_before = 0;
  std::uint64_t proof_seq = 0;
  std::uint64_t proof_size = 0;
};

// ReadExports reads the export files |in_paths|, in order, as one export.
Result<audit::Export> ReadExports(const std::vector<std::string>& in_paths) {
  audit::Export exported;
  for (const std::string& in_path : in_paths) {
    std::ifstream in(in_path, std::ios::binary);
    if (!in) return MakeError(Error(ErrorCode::kNotFound, "cannot read " + in_path));
    auto part = audit::ReadExport(in);
    if (!part) return MakeError(part.error().Wrap(in_path));
    std::move(part->entries.begin(), part->entries.end(), std::back_inserter(exported.entries));
    std::move(part->heads.begin(), part->heads.end(), std::back_inserter(exported.heads));
  }
  return exported;
}

Result<crypto::EvpPkeyPtr> ReadPublicKey(const std::string& key_path) {
  FLEETID_TRY(key_text, ReadAll(key_path));
  crypto::BioPtr bio(BIO_new_mem_buf(key_text.data(), static_cast<int>(key_text.size())));
  crypto::EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return MakeError(Error(ErrorCode::kInvalidArgument, key_path + " is not a PEM public key"));
  }
  return key;
}

Result<std::optional<audit::TreeHead>> ReadSavedHead(const std::string& saved_path) {
  if (saved_path.empty()) return std::optional<audit::TreeHead>();
  FLEETID_TRY(text, ReadAll(saved_path));
  auto head = audit::ParseHeadJson(text);
  if (!head) return MakeError(head.error().Wrap(saved_path));
  return std::optional<audit::TreeHead>(*head);
}

struct ApprovalReport {
  int signed_verified = 0;
  int unsigned_only = 0;  // approvals made through a mutual-TLS session without a signature
  std::vector<std::string> problems;
};

// CheckChain verifies |chain_der| (leaf first) up to |root| as a TLS client's chain at |when|,
// and that the leaf names |name| with serial |serial_hex|.
Result<void> CheckChain(const std::vector<std::vector<std::uint8_t>>& chain_der, X509* root,
                        std::int64_t when, std::string_view name, std::string_view serial_hex) {
  std::vector<crypto::X509Ptr> certs;
  for (const auto& der : chain_der) {
    FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
    certs.push_back(std::move(cert));
  }
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
  auto free_stack = [](STACK_OF(X509) * stack) { sk_X509_free(stack); };  // not the certs
  std::unique_ptr<STACK_OF(X509), decltype(free_stack)> untrusted(sk_X509_new_null(), free_stack);
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(),
                                                                      X509_STORE_CTX_free);
  if (!store || !untrusted || !ctx || X509_STORE_add_cert(store.get(), root) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "certificate store"));
  }
  for (std::size_t i = 1; i < certs.size(); ++i) sk_X509_push(untrusted.get(), certs[i].get());
  if (X509_STORE_CTX_init(ctx.get(), store.get(), certs.front().get(), untrusted.get()) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "certificate store"));
  }
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(when));
  if (X509_verify_cert(ctx.get()) != 1) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the signer's certificate does not chain to the "
                     "root: {}",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get())));
  }
  FLEETID_TRY(serial, crypto::SerialHex(X509_get0_serialNumber(certs.front().get())));
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(certs.front().get()), NID_commonName, cn,
                            sizeof(cn));
  if (serial != serial_hex || name != cn) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the signature is by {} (certificate {}), the entry names {} ({})", cn, serial,
                     name, serial_hex);
  }
  return {};
}

// VerifyApprovals checks every signed approval in |exported| (audit entries "policy.approve"
// that carry one): the JWS over the proposal's digest, its certificate chained to the operators'
// root when it was made, and that certificate naming the approver the entry names.
Result<ApprovalReport> VerifyApprovals(const audit::Export& exported,
                                       const std::string& root_path) {
  FLEETID_TRY(root_der, CertDerFromFile(root_path));
  FLEETID_TRY(root, crypto::ParseCertificateDer(root_der));
  ApprovalReport report;
  for (const audit::ExportedEntry& e : exported.entries) {
    const Json entry = Json::parse(e.body, nullptr, false);
    if (!entry.is_object() || entry.value("action", "") != "policy.approve") continue;
    const Json after = entry.value("after", Json::object());
    const Json approval = after.is_object() ? after.value("approval", Json::object()) : Json();
    const std::string signature = approval.is_object() ? approval.value("signature", "") : "";
    if (signature.empty()) {
      ++report.unsigned_only;
      continue;
    }
    // "operator:NAME#SERIAL"
    const std::string actor = entry.value("actor", "");
    const std::size_t hash = actor.find('#');
    const std::string name = actor.starts_with("operator:") && hash != std::string::npos
                                 ? actor.substr(9, hash - 9)
                                 : "";
    const std::string serial = hash == std::string::npos ? "" : actor.substr(hash + 1);
    const std::string request = fmt::format("policy proposal {}", after.value("id", 0));
    auto checked = [&]() -> Result<void> {
      FLEETID_TRY(verified, operators::VerifyApproval(
                                signature, request, entry.value("evidence_digest", ""), "approve"));
      return CheckChain(verified.chain_der, root.get(), entry.value("time", std::int64_t{0}) / 1000,
                        name, serial);
    }();
    if (checked) {
      ++report.signed_verified;
    } else {
      report.problems.push_back(fmt::format("entry {}: the approval of {}: {}", e.seq, request,
                                            checked.error().message()));
    }
  }
  return report;
}

// Verify checks an export offline: it needs the export, the audit public key and, optionally, a
// head saved earlier; no data directory, token or database. Exit 0 when everything verifies, 1
// with every problem named otherwise.
int Verify(const AuditFlags& flags) {
  auto exported = ReadExports(flags.in);
  if (!exported) return Fail(exported.error());
  auto key = ReadPublicKey(flags.key_path);
  if (!key) return Fail(key.error());
  auto saved = ReadSavedHead(flags.saved_head_path);
  if (!saved) return Fail(saved.error());
  audit::VerifyReport report = audit::VerifyExport(*exported, key->get(), *saved);
  Json out{{"entries", report.entries}, {"heads_verified", report.heads_verified}};
  if (!flags.operators_root.empty()) {
    auto approvals = VerifyApprovals(*exported, flags.operators_root);
    if (!approvals) return Fail(approvals.error());
    out["approvals"] = {{"signed_verified", approvals->signed_verified},
                        {"unsigned", approvals->unsigned_only}};
    std::ranges::move(approvals->problems, std::back_inserter(report.problems));
  }
  out["ok"] = report.ok();
  out["problems"] = report.problems;
  PrintJson(out);
  return report.ok() ? 0 : 1;
}

Result<node::Node*> OpenLog(Context& context) { return context.Open({.audit_log = true}); }

int Key(Context& context) {
  auto node = OpenLog(context);
  if (!node) return Fail(node.error());
  std::cout << (*node)->audit_public_key_pem();
  return 0;
}

int Head(Context& context) {
  auto node = OpenLog(context);
  if (!node) return Fail(node.error());
  auto head = (*node)->audit_log().SignHead();
  if (!head) return Fail(head.error());
  std::cout << audit::HeadJson(*head) << "\n";
  return 0;
}

int ExportLog(Context& context, const AuditFlags& flags) {
  auto node = OpenLog(context);
  if (!node) return Fail(node.error());
  std::ofstream out(flags.out, std::ios::binary | std::ios::trunc);
  if (!out) return Fail(Error(ErrorCode::kInvalidArgument, "cannot write " + flags.out));
  auto written = audit::WriteExport((*node)->audit_log(), out);
  if (!written) return Fail(written.error());
  std::cerr << Json{{"entries", *written}, {"file", flags.out}}.dump() << "\n";
  return 0;
}

// WriteArchive writes the entries before |before| to |path|, complete and flushed.
Result<void> WriteArchive(audit::Log& log, const std::string& path, std::uint64_t before) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return MakeError(Error(ErrorCode::kInvalidArgument, "cannot write " + path));
  FLEETID_TRY(written, audit::WriteExport(log, out, before));
  (void)written;
  out.close();
  if (!out) return MakeError(Error(ErrorCode::kUnavailable, "writing " + path + " failed"));
  return {};
}

int Archive(Context& context, const AuditFlags& flags) {
  auto node = OpenLog(context);
  if (!node) return Fail(node.error());
  audit::Log& log = (*node)->audit_log();
  // The file first, complete and flushed; only then are the entries deleted.
  if (auto w = WriteArchive(log, flags.out, flags.archive_before); !w) return Fail(w.error());
  auto archived = log.Archive(flags.archive_before);
  if (!archived) return Fail(archived.error());
  std::cerr << Json{{"archived", *archived}, {"file", flags.out}}.dump() << "\n";
  return 0;
}

int Proof(Context& context, const AuditFlags& flags) {
  auto node = OpenLog(context);
  if (!node) return Fail(node.error());
  audit::Log& log = (*node)->audit_log();
  std::uint64_t size = flags.proof_size;
  if (size == 0) {
    auto head = log.LatestHead();
    if (!head) return Fail(head.error());
    size = head->size;
  }
  auto proof = log.InclusionProof(flags.proof_seq, size);
  if (!proof) return Fail(proof.error());
  Json path = Json::array();
  for (const audit::Hash& h : *proof) path.push_back(audit::HashHex(h));
  PrintJson(Json{{"seq", flags.proof_seq}, {"size", size}, {"path", path}});
  return 0;
}

}  // namespace

void AddAuditCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<AuditFlags>();
  auto* audit = app.add_subcommand("audit", "the tamper-evident audit log")->require_subcommand(1);
  auto* head = audit->add_subcommand(
      "head", "add the entries appended so far to the tree and print a signed tree head");
  context.OnParsed(head, [&context] { return Head(context); });
  auto* key = audit->add_subcommand("key", "print the audit public key (PEM)");
  context.OnParsed(key, [&context] { return Key(context); });
  auto* exp = audit->add_subcommand("export", "write every entry and signed head");
  exp->add_option("--out", flags->out, "the export file (JSON Lines)")->required();
  context.OnParsed(exp, [&context, flags] { return ExportLog(context, *flags); });
  auto* verify = audit->add_subcommand(
      "verify", "verify an export offline with the audit public key; needs no data directory");
  verify
      ->add_option("--in", flags->in,
                   "the export file; give an archive and a later export, in order, to "
                   "verify them as one log")
      ->required();
  context.OnParsed(verify, [flags] { return Verify(*flags); });
  auto* archive = audit->add_subcommand(
      "archive", "move the entries before a size to a file (proofs keep working)");
  archive->add_option("--before", flags->archive_before, "archive entries 0 .. before-1")
      ->required();
  archive->add_option("--out", flags->out, "the archive file (an export)")->required();
  context.OnParsed(archive, [&context, flags] { return Archive(context, *flags); });
  verify->add_option("--key", flags->key_path, "the audit public key (PEM)")->required();
  verify->add_option("--saved-head", flags->saved_head_path,
                     "a tree head kept from earlier (`fleetid audit head` output)");
  verify->add_option("--operators-root", flags->operators_root,
                     "the authority's root certificate: also verify every signed approval (its "
                     "JWS, and the approver's certificate chained to the root)");
  auto* proof = audit->add_subcommand("proof", "an entry's inclusion proof");
  proof->add_option("--seq", flags->proof_seq, "the entry")->required();
  proof->add_option("--size", flags->proof_size, "the tree size (default: the latest head's)");
  context.OnParsed(proof, [&context, flags] { return Proof(context, *flags); });
}

}  // namespace fleetid::cli
