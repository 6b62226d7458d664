// fleetid ca certs|issue|status|revoke|hold|release: the certificate authority.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include "apps/cli/cli.h"
#include "apps/cli/pem.h"
#include "crypto/jws.h"
#include "enroll/service.h"
#include "pki/pki.h"
#include "pki/record_json.h"

namespace fleetid::cli {
namespace {

struct CaFlags {
  std::string device;
  std::string csr_path;
  std::string out_path;
  std::string reason_name = "unspecified";
  std::string cert_serial;
  std::string why;  // through the API: why, for the record
};

int Print(const Result<pki::CertificateRecord>& r) {
  if (!r) return Fail(r.error());
  PrintJson(pki::CertificateJson(*r));
  return 0;
}

// `openssl x509 -serial` prints upper case; fleetid stores lower case.
std::string LowerSerial(std::string serial) {
  std::transform(serial.begin(), serial.end(), serial.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return serial;
}

Result<node::Node*> OpenAuthority(Context& context) { return context.Open({.authority = true}); }

int Certs(Context& context) {
  auto node = OpenAuthority(context);
  if (!node) return Fail(node.error());
  pki::Authority& authority = (*node)->authority();
  for (const std::string& name : authority.CaNames()) {
    auto der = authority.CaCertificate(name);
    if (!der.has_value()) return Fail(der.error());
    std::cout << CertPem(*der);
  }
  return 0;
}

// WritePem writes |pem| to --out, or to stdout without it.
void WritePem(const CaFlags& flags, const std::string& pem) {
  if (flags.out_path.empty()) {
    std::cout << pem;
  } else {
    std::ofstream(flags.out_path) << pem;
  }
}

int Issue(Context& context, const CaFlags& flags) {
  auto text = ReadAll(flags.csr_path);
  if (!text) return context.remote.Enabled() ? FailRemote(text.error()) : Fail(text.error());
  if (context.remote.Enabled()) {
    auto der = CsrDer(*text);
    if (!der) return FailRemote(der.error());
    // The certificate goes where the local command writes it; its record to stderr (or, with
    // --json, the whole answer to stdout).
    return RemoteCall(context, "POST",
                      fmt::format("devices/{}/certificates", QueryEscape(flags.device)),
                      Json{{"csr", crypto::Base64Encode(*der)}}, [&flags](const Json& answer) {
                        WritePem(flags, answer.value("certificate", ""));
                        Json record = answer;
                        record.erase("certificate");
                        record.erase("request_id");
                        std::cerr << record.dump() << "\n";
                      });
  }
  auto node = OpenAuthority(context);
  if (!node) return Fail(node.error());
  auto der = CsrDer(*text);
  if (!der) return Fail(der.error());
  // The device's identity is checked in the transaction that issues (no check-then-act).
  auto issued = enroll::IssueForDevice((*node)->database(), (*node)->authority(), flags.device,
                                       *der, "operator:" + context.operator_name,
                                       (*node)->CredentialTerms());
  if (!issued) return Fail(issued.error());
  WritePem(flags, CertPem(issued->der));
  std::cerr << pki::CertificateJson(*issued).dump() << "\n";
  return 0;
}

int Status(Context& context, const CaFlags& flags) {
  if (context.remote.Enabled()) {
    return RemoteCertificate(context, "GET", LowerSerial(flags.cert_serial), "", nullptr);
  }
  auto node = OpenAuthority(context);
  if (!node) return Fail(node.error());
  return Print((*node)->authority().Get(LowerSerial(flags.cert_serial)));
}

// DeviceCertificateStatus hands an operator's hold, release or revocation of a device's
// certificate to the enrollment service, which makes it a lifecycle event of the device;
// nullopt for a certificate that is no device's credential (the CA acts alone).
std::optional<int> DeviceCertificateStatus(node::Node& node, const Context& context,
                                           const std::string& cert_serial,
                                           std::optional<pki::Reason> reason) {
  auto changed = node.enrollment().ChangeCertificateStatus(
      cert_serial, reason, registry::Actor{registry::kOperator, context.operator_name, {"admin"}},
      "fleetid ca");
  if (!changed) return Fail(changed.error());
  const auto& record = *changed;
  if (!record.has_value()) return std::nullopt;
  PrintJson(pki::CertificateJson(*record));
  return 0;
}

// ChangeStatus holds (kCertificateHold), revokes (another reason) or, with no reason, releases
// the certificate: through the device's lifecycle when it is a device's credential.
int ChangeStatus(Context& context, const CaFlags& flags, bool hold, bool revoke) {
  if (context.remote.Enabled()) {
    const std::string verb = hold ? "hold" : revoke ? "revoke" : "release";
    Json body{{"reason", flags.why.empty() ? "fleetid ca " + verb : flags.why}};
    if (revoke) body["revocation_reason"] = flags.reason_name;
    return RemoteCertificate(context, "POST", LowerSerial(flags.cert_serial), verb, body);
  }
  auto node = OpenAuthority(context);
  if (!node) return Fail(node.error());
  const std::string serial = LowerSerial(flags.cert_serial);
  std::optional<pki::Reason> reason;
  if (hold) reason = pki::Reason::kCertificateHold;
  if (revoke) {
    auto why = pki::ParseReason(flags.reason_name);
    if (!why) return Fail(why.error());
    reason = *why;
  }
  if (auto routed = DeviceCertificateStatus(**node, context, serial, reason)) return *routed;
  pki::Authority& authority = (*node)->authority();
  const std::string actor = "operator:" + context.operator_name;
  if (!reason.has_value()) return Print(authority.Release(serial, actor));
  return Print(authority.Revoke(serial, *reason, actor));
}

}  // namespace

void AddCaCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<CaFlags>();
  auto* ca = app.add_subcommand("ca", "the certificate authority")->require_subcommand(1);
  auto* certs = ca->add_subcommand("certs", "print the root and issuing CA certificates (PEM)");
  context.OnParsed(certs, [&context] { return Certs(context); });
  auto* issue = ca->add_subcommand("issue", "issue a certificate for a registered device");
  issue->add_option("--device", flags->device, "the device's serial in the registry")->required();
  issue->add_option("--csr", flags->csr_path, "PKCS#10 request, PEM or DER")->required();
  issue->add_option("--out", flags->out_path, "where to write the certificate (PEM)");
  context.OnParsed(issue, [&context, flags] { return Issue(context, *flags); });
  auto* status = ca->add_subcommand("status", "a certificate's status");
  context.OnParsed(status, [&context, flags] { return Status(context, *flags); });
  auto* revoke = ca->add_subcommand("revoke", "revoke a certificate");
  context.OnParsed(revoke,
                   [&context, flags] { return ChangeStatus(context, *flags, false, true); });
  auto* hold = ca->add_subcommand("hold", "put a certificate on hold (certificateHold)");
  context.OnParsed(hold, [&context, flags] { return ChangeStatus(context, *flags, true, false); });
  auto* release = ca->add_subcommand("release", "release a certificate from hold");
  context.OnParsed(release,
                   [&context, flags] { return ChangeStatus(context, *flags, false, false); });
  revoke->add_option("--reason", flags->reason_name,
                     "keyCompromise, superseded, cessationOfOperation, ... (RFC 5280)");
  for (auto* sub : {status, revoke, hold, release}) {
    sub->add_option("serial", flags->cert_serial, "certificate serial (hex)")->required();
  }
  for (auto* sub : {issue, revoke, hold, release}) AddOperatorOption(sub, context, "audit log");
  for (auto* sub : {revoke, hold, release}) {
    sub->add_option("--why", flags->why, "why, for the record (through the API)");
  }
}

}  // namespace fleetid::cli
