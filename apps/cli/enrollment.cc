// fleetid manufacturer add|list and fleetid attest reference|counters: what the enrollment
// service trusts (manufacturer CAs, firmware measurements) and what it counted.
#include <memory>

#include "apps/cli/cli.h"
#include "apps/cli/pem.h"
#include "crypto/crypto.h"
#include "enroll/service.h"

namespace fleetid::cli {
namespace {

struct EnrollmentFlags {
  std::string maker_cert;
  std::string maker_name = "Example Devices";
  std::string ref_model;
  std::string ref_digest;
  std::string ref_firmware;
};

Result<enroll::Service*> OpenEnrollment(Context& context) {
  FLEETID_TRY(node, context.Open({.authority = true}));
  return &node->enrollment();
}

// PrintAnswer prints the API's answer without its request id, as the local command prints.
void PrintAnswer(Json answer) {
  answer.erase("request_id");
  PrintJson(answer);
}

int AddManufacturer(Context& context, const EnrollmentFlags& flags) {
  auto der = CertDerFromFile(flags.maker_cert);
  if (!der) return context.remote.Enabled() ? FailRemote(der.error()) : Fail(der.error());
  if (context.remote.Enabled()) {
    return RemoteCall(context, "POST", "manufacturers",
                      Json{{"name", flags.maker_name}, {"certificate", CertPem(*der)}},
                      [](const Json& m) {
                        PrintJson(Json{{"manufacturer", m.value("name", "")},
                                       {"fingerprint", m.value("fingerprint", "")}});
                      });
  }
  auto service = OpenEnrollment(context);
  if (!service) return Fail(service.error());
  auto m = (*service)->AddManufacturer(*der, flags.maker_name, "operator:" + context.operator_name);
  if (!m) return Fail(m.error());
  PrintJson(Json{{"manufacturer", m->name}, {"fingerprint", m->fingerprint}});
  return 0;
}

int ListManufacturers(Context& context) {
  if (context.remote.Enabled()) {
    return RemoteCall(context, "GET", "manufacturers", nullptr, [](const Json& answer) {
      Json out = Json::array();
      for (const Json& m : answer.value("manufacturers", Json::array())) {
        out.push_back({{"manufacturer", m.value("name", "")},
                       {"fingerprint", m.value("fingerprint", "")}});
      }
      PrintJson(out);
    });
  }
  auto service = OpenEnrollment(context);
  if (!service) return Fail(service.error());
  auto all = (*service)->Manufacturers();
  if (!all) return Fail(all.error());
  Json out = Json::array();
  for (const auto& m : *all) {
    out.push_back({{"manufacturer", m.name}, {"fingerprint", m.fingerprint}});
  }
  PrintJson(out);
  return 0;
}

int AddReference(Context& context, const EnrollmentFlags& flags) {
  std::string digest = flags.ref_digest;
  if (!flags.ref_firmware.empty()) {
    auto fw = ReadAll(flags.ref_firmware);
    if (!fw) return context.remote.Enabled() ? FailRemote(fw.error()) : Fail(fw.error());
    digest = crypto::Hex(crypto::Sha256(*fw));
  }
  if (context.remote.Enabled()) {
    return RemoteCall(context, "POST", "reference-values",
                      Json{{"model", flags.ref_model}, {"firmware_sha256", digest}}, PrintAnswer);
  }
  auto service = OpenEnrollment(context);
  if (!service) return Fail(service.error());
  if (auto r = (*service)->AddReferenceValue(flags.ref_model, digest,
                                             "operator:" + context.operator_name);
      !r) {
    return Fail(r.error());
  }
  PrintJson(Json{{"model", flags.ref_model}, {"firmware_sha256", digest}});
  return 0;
}

int Counters(Context& context) {
  auto service = OpenEnrollment(context);
  if (!service) return Fail(service.error());
  auto c = (*service)->Counters();
  if (!c) return Fail(c.error());
  PrintJson(Json(*c));
  return 0;
}

}  // namespace

void AddEnrollmentCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<EnrollmentFlags>();
  auto* maker =
      app.add_subcommand("manufacturer", "manufacturers whose IDevIDs the authority trusts")
          ->require_subcommand(1);
  auto* add = maker->add_subcommand("add", "register a manufacturer CA certificate");
  add->add_option("--cert", flags->maker_cert, "the manufacturer CA certificate (PEM or DER)")
      ->required();
  add->add_option("--name", flags->maker_name, "manufacturer name (as its manifests say)")
      ->required();
  AddOperatorOption(add, context, "audit log");
  context.OnParsed(add, [&context, flags] { return AddManufacturer(context, *flags); });
  auto* list = maker->add_subcommand("list", "list registered manufacturers");
  context.OnParsed(list, [&context] { return ListManufacturers(context); });

  auto* attest = app.add_subcommand("attest", "attestation: reference values and counters")
                     ->require_subcommand(1);
  auto* reference =
      attest->add_subcommand("reference", "accept a firmware measurement for a model");
  reference->add_option("--model", flags->ref_model)->required();
  reference->add_option("--digest", flags->ref_digest, "hex SHA-256 of the firmware image");
  reference->add_option("--firmware", flags->ref_firmware, "the firmware image (hashed here)");
  AddOperatorOption(reference, context, "audit log");
  context.OnParsed(reference, [&context, flags] { return AddReference(context, *flags); });
  auto* counters = attest->add_subcommand("counters", "refused nonces and appraisal results");
  context.OnParsed(counters, [&context] { return Counters(context); });
}

}  // namespace fleetid::cli
