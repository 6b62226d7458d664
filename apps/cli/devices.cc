// fleetid devices: the device registry (import, show, history, list, counts, provision), a
// factory's signed manifest (import-manifest) and the operator's lifecycle events.
#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <tuple>

#include "apps/cli/cli.h"
#include "enroll/service.h"
#include "registry/registry.h"

namespace fleetid::cli {
namespace {

struct DevicesFlags {
  std::string in_path;
  std::string batch_id;
  std::string serial;
  std::string state_name;
  std::string tenant;
  std::string region;
  std::string reason;
  std::string model;
  std::string label;  // KEY:VALUE
  std::int64_t expires_within = 0;
  int limit = 100;
  std::int64_t after = 0;
};

Json DeviceJson(const registry::Device& d) {
  Json j{{"serial", d.serial},
         {"state", registry::StateName(d.state)},
         {"version", d.version},
         {"model", d.model},
         {"manufacturer", d.manufacturer},
         {"idevid_fingerprint", d.idevid_fingerprint},
         {"firmware_version", d.firmware_version},
         {"firmware_digest", d.firmware_digest},
         {"tenant", d.tenant},
         {"region", d.region},
         {"labels", d.labels},
         {"batch", d.batch},
         {"station", d.station},
         {"manufactured_at", Iso8601(d.manufactured_at)},
         {"updated_at", Iso8601(d.updated_at)}};
  if (d.grace_until) j["grace_until"] = Iso8601(*d.grace_until);
  return j;
}

registry::Actor OperatorActor(const Context& context) {
  return registry::Actor{registry::kOperator, context.operator_name, {"admin"}};
}

// OpenRegistry opens the database and the registry without the CA: transitions that act on
// credentials are refused with `unavailable` rather than half-applied.
Result<registry::Registry*> OpenRegistry(Context& context) {
  FLEETID_TRY(node, context.Open({.database = true}));
  return &node->registry();
}

int Import(Context& context, DevicesFlags& flags) {
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  auto text = ReadAll(flags.in_path);
  if (!text) return Fail(text.error());
  auto records = registry::ParseBatch(*text);
  if (!records) return Fail(records.error().Wrap(flags.in_path));
  if (flags.batch_id.empty()) {
    flags.batch_id = std::filesystem::path(flags.in_path).filename().string();
  }
  auto report = (*reg)->Import(flags.batch_id, *records, OperatorActor(context));
  if (!report) return Fail(report.error().Wrap(flags.in_path));
  PrintJson(Json{{"batch", flags.batch_id},
                 {"imported", report->imported},
                 {"already_present", report->already_present}});
  return 0;
}

int Show(Context& context, const DevicesFlags& flags) {
  if (context.remote.Enabled()) return RemoteDeviceShow(context, flags.serial);
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  auto d = (*reg)->Get(flags.serial);
  if (!d) return Fail(d.error());
  PrintJson(DeviceJson(*d));
  return 0;
}

int History(Context& context, const DevicesFlags& flags) {
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  auto h = (*reg)->History(flags.serial);
  if (!h) return Fail(h.error());
  Json out = Json::array();
  for (const auto& t : *h) {
    out.push_back({{"version", t.version},
                   {"event", registry::EventName(t.event)},
                   {"from", registry::StateName(t.from)},
                   {"to", registry::StateName(t.to)},
                   {"actor", t.actor},
                   {"reason", t.reason},
                   {"at", Iso8601(t.at)},
                   {"policy_version", t.policy_version},
                   {"evidence_digest", t.evidence_digest}});
  }
  PrintJson(out);
  return 0;
}

int List(Context& context, const DevicesFlags& flags) {
  if (context.remote.Enabled()) {
    std::vector<std::pair<std::string, std::string>> query = {{"state", flags.state_name},
                                                              {"tenant", flags.tenant},
                                                              {"region", flags.region},
                                                              {"model", flags.model},
                                                              {"label", flags.label}};
    if (flags.expires_within > 0) {
      query.emplace_back("expires_within", std::to_string(flags.expires_within));
    }
    query.emplace_back("limit", std::to_string(flags.limit));
    if (flags.after > 0) query.emplace_back("after", std::to_string(flags.after));
    return RemoteDeviceList(context, query);
  }
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  registry::DeviceQuery q;
  if (!flags.state_name.empty()) {
    auto st = registry::ParseState(flags.state_name);
    if (!st) return Fail(st.error());
    q.state = *st;
  }
  q.tenant = flags.tenant;
  q.region = flags.region;
  q.model = flags.model;
  if (const std::size_t colon = flags.label.find(':'); colon != std::string::npos) {
    q.label_key = flags.label.substr(0, colon);
    q.label_value = flags.label.substr(colon + 1);
  }
  if (flags.expires_within > 0) {
    q.expires_before = SystemClock::Instance().Now() + std::chrono::seconds(flags.expires_within);
  }
  q.limit = flags.limit;
  q.after = flags.after;
  auto page = (*reg)->Query(q);
  if (!page) return Fail(page.error());
  Json out{{"devices", Json::array()}, {"next", page->next}};
  for (const auto& d : page->devices) out["devices"].push_back(DeviceJson(d));
  PrintJson(out);
  return 0;
}

int Counts(Context& context) {
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  auto c = (*reg)->CountByState();
  if (!c) return Fail(c.error());
  Json out = Json::object();
  for (const auto& [st, n] : *c) out[std::string(registry::StateName(st))] = n;
  PrintJson(out);
  return 0;
}

// Transition applies |event| to the device at its current version and prints the device.
int Transition(registry::Registry& reg, registry::TransitionRequest req) {
  auto d = reg.Get(req.serial);
  if (!d) return Fail(d.error());
  req.expected_version = d->version;
  auto next = reg.Transition(req);
  if (!next) return Fail(next.error());
  PrintJson(DeviceJson(*next));
  return 0;
}

int Provision(Context& context, const DevicesFlags& flags) {
  if (context.remote.Enabled()) {
    Json body{{"tenant", flags.tenant}, {"region", flags.region}};
    if (!flags.reason.empty()) body["reason"] = flags.reason;
    return RemoteDeviceAction(context, flags.serial, "provision", body);
  }
  auto reg = OpenRegistry(context);
  if (!reg) return Fail(reg.error());
  registry::TransitionRequest req;
  req.serial = flags.serial;
  req.event = registry::Event::kProvision;
  req.actor = OperatorActor(context);
  req.tenant = flags.tenant;
  req.region = flags.region;
  req.reason = flags.reason;
  return Transition(**reg, std::move(req));
}

// Lifecycle events act on the device's credentials through the CA.
int Lifecycle(Context& context, const DevicesFlags& flags, registry::Event event) {
  if (context.remote.Enabled()) {
    // The API's path: cancel-decommission, clear-quarantine.
    std::string path(event == registry::Event::kClear ? "clear-quarantine"
                                                      : registry::EventName(event));
    std::ranges::replace(path, '_', '-');
    return RemoteDeviceAction(context, flags.serial, path, {{"reason", flags.reason}});
  }
  auto node = context.Open({.authority = true});
  if (!node) return Fail(node.error());
  registry::TransitionRequest req;
  req.serial = flags.serial;
  req.event = event;
  req.actor = OperatorActor(context);
  req.reason = flags.reason;
  return Transition((*node)->registry(), std::move(req));
}

int ImportManifest(Context& context, const DevicesFlags& flags) {
  auto text = ReadAll(flags.in_path);
  if (!text) return context.remote.Enabled() ? FailRemote(text.error()) : Fail(text.error());
  while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
  if (context.remote.Enabled()) {
    return RemoteCall(context, "POST", "manifests", Json{{"manifest", *text}}, [](const Json& r) {
      PrintJson(Json{{"imported", r.value("imported", 0)},
                     {"already_present", r.value("already_present", 0)}});
    });
  }
  auto node = context.Open({.authority = true});
  if (!node) return Fail(node.error());
  auto report = (*node)->enrollment().ImportManifest(*text, "operator:" + context.operator_name);
  if (!report) return Fail(report.error().Wrap(flags.in_path));
  PrintJson(Json{{"imported", report->imported}, {"already_present", report->already_present}});
  return 0;
}

void AddRegistryCommands(CLI::App* devices, Context& context,
                         const std::shared_ptr<DevicesFlags>& flags) {
  auto* import = devices->add_subcommand("import", "import a factory batch file (JSON Lines)");
  import->add_option("file", flags->in_path, "batch file")->required();
  import->add_option("--batch", flags->batch_id, "batch id (default: the file name)");
  context.OnParsed(import, [&context, flags] { return Import(context, *flags); });
  auto* show = devices->add_subcommand("show", "show one device");
  show->add_option("serial", flags->serial)->required();
  context.OnParsed(show, [&context, flags] { return Show(context, *flags); });
  auto* history = devices->add_subcommand("history", "a device's lifecycle history");
  history->add_option("serial", flags->serial)->required();
  context.OnParsed(history, [&context, flags] { return History(context, *flags); });
  auto* list = devices->add_subcommand("list", "list devices, a page at a time");
  list->add_option("--state", flags->state_name, "only devices in this state");
  list->add_option("--tenant", flags->tenant, "only this tenant's devices");
  list->add_option("--region", flags->region, "only devices in this region");
  list->add_option("--model", flags->model, "only this model");
  list->add_option("--label", flags->label, "only devices with this label (KEY:VALUE)");
  list->add_option("--expires-within", flags->expires_within,
                   "only devices whose credential expires within this many seconds");
  list->add_option("--limit", flags->limit, "page size (1-1000)");
  list->add_option("--after", flags->after, "cursor printed by the previous page");
  context.OnParsed(list, [&context, flags] { return List(context, *flags); });
  auto* counts = devices->add_subcommand("counts", "devices per state");
  context.OnParsed(counts, [&context] { return Counts(context); });
  auto* provision = devices->add_subcommand("provision", "bind a device to a tenant and region");
  provision->add_option("serial", flags->serial)->required();
  provision->add_option("--tenant", flags->tenant)->required();
  provision->add_option("--region", flags->region)->required();
  provision->add_option("--reason", flags->reason);
  context.OnParsed(provision, [&context, flags] { return Provision(context, *flags); });
  for (auto* sub : {import, provision}) AddOperatorOption(sub, context, "history");
}

void AddLifecycleCommands(CLI::App* devices, Context& context,
                          const std::shared_ptr<DevicesFlags>& flags) {
  for (const auto& [cmd, event, help] :
       std::initializer_list<std::tuple<const char*, registry::Event, const char*>>{
           {"suspend", registry::Event::kSuspend, "suspend: credentials on hold"},
           {"resume", registry::Event::kResume, "resume: holds lifted"},
           {"quarantine", registry::Event::kQuarantine,
            "quarantine: credentials revoked (keyCompromise)"},
           {"clear-quarantine", registry::Event::kClear,
            "lift a quarantine: the device enrolls afresh with a new key"},
           {"decommission", registry::Event::kDecommission,
            "order decommissioning (the device erases its keys at its next contact)"},
           {"cancel-decommission", registry::Event::kCancelDecommission,
            "cancel decommissioning within the grace period"}}) {
    auto* sub = devices->add_subcommand(cmd, help);
    sub->add_option("serial", flags->serial)->required();
    sub->add_option("--reason", flags->reason, "why (recorded)")->required();
    AddOperatorOption(sub, context, "audit log");
    const registry::Event e = event;
    context.OnParsed(sub, [&context, flags, e] { return Lifecycle(context, *flags, e); });
  }
}

}  // namespace

void AddDevicesCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<DevicesFlags>();
  auto* devices = app.add_subcommand("devices", "the device registry")->require_subcommand(1);
  AddRegistryCommands(devices, context, flags);
  auto* import_manifest = devices->add_subcommand(
      "import-manifest", "verify and import a signed factory batch manifest");
  import_manifest->add_option("manifest", flags->in_path, "manifest.jws")->required();
  AddOperatorOption(import_manifest, context, "audit log");
  context.OnParsed(import_manifest, [&context, flags] { return ImportManifest(context, *flags); });
  AddLifecycleCommands(devices, context, flags);
}

}  // namespace fleetid::cli
