// fleetid policy show|versions|proposals|check: the policy's versions, the active one and the
// proposals, read from the database, or through the API when a server is configured; `check`
// reads a document and says what it would change. propose|approve|reject|withdraw are operator
// actions and go through the API only (docs/policy.md § Versions, docs/cli.md).
#include <iostream>
#include <memory>

#include "apps/cli/cli.h"
#include "policy/versions.h"

namespace fleetid::cli {
namespace {

struct PolicyFlags {
  std::int64_t version = 0;  // 0: the active one
  bool all = false;
  std::string file;
  std::int64_t base = 0;  // 0: the active one
  std::int64_t id = 0;
  std::string reason;
};

Result<policy::Versions*> OpenVersions(Context& context) {
  FLEETID_TRY(node, context.Open({.database = true}));
  return &node->policy();
}

int Show(Context& context, const PolicyFlags& flags) {
  if (context.remote.Enabled()) {
    return RemotePolicy(context, "GET",
                        flags.version == 0 ? std::string("policy")
                                           : fmt::format("policy/versions/{}", flags.version),
                        nullptr);
  }
  auto versions = OpenVersions(context);
  if (!versions) return Fail(versions.error());
  const policy::Active active = (*versions)->Current();
  std::shared_ptr<const policy::Policy> shown = active.policy;
  std::int64_t number = active.number;
  if (flags.version != 0 && flags.version != active.number) {
    auto stored = (*versions)->Version(flags.version);
    if (!stored) return Fail(stored.error());
    shown = *stored;
    number = flags.version;
  }
  PrintJson({{"version", number},
             {"hash", shown->Hash()},
             {"active", number == active.number},
             {"document", Json::parse(shown->Canonical())}});
  return 0;
}

int ListVersions(Context& context) {
  if (context.remote.Enabled()) return RemotePolicy(context, "GET", "policy/versions", nullptr);
  auto versions = OpenVersions(context);
  if (!versions) return Fail(versions.error());
  auto listed = (*versions)->List();
  if (!listed) return Fail(listed.error());
  const std::int64_t active = (*versions)->Current().number;
  Json out = Json::array();
  for (const policy::VersionInfo& v : *listed) {
    out.push_back({{"version", v.number},
                   {"hash", v.hash},
                   {"created_at", Iso8601(v.created_at)},
                   {"created_by", v.created_by},
                   {"active", v.number == active}});
  }
  PrintJson(out);
  return 0;
}

int ListProposals(Context& context, const PolicyFlags& flags) {
  if (context.remote.Enabled()) {
    return RemotePolicy(context, "GET",
                        flags.all ? "policy/proposals?all=true" : "policy/proposals", nullptr);
  }
  auto versions = OpenVersions(context);
  if (!versions) return Fail(versions.error());
  auto listed = (*versions)->Proposals(/*pending_only=*/!flags.all);
  if (!listed) return Fail(listed.error());
  Json out = Json::array();
  for (const policy::Proposal& p : *listed) out.push_back(policy::ProposalView(p));
  PrintJson(out);
  return 0;
}

// Check reads a document as a proposal would be read and says what activating it would change.
int Check(Context& context, const PolicyFlags& flags) {
  auto text = ReadAll(flags.file);
  if (!text) return Fail(text.error());
  auto parsed = policy::Policy::Parse(*text);
  if (!parsed) return Fail(parsed.error());
  auto versions = OpenVersions(context);
  if (!versions) return Fail(versions.error());
  const policy::Active active = (*versions)->Current();
  PrintJson({{"hash", (*parsed)->Hash()},
             {"against", {{"version", active.number}, {"hash", active.policy->Hash()}}},
             {"diff", policy::Diff(*active.policy, **parsed)}});
  return 0;
}

}  // namespace

void AddPolicyCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<PolicyFlags>();
  auto* group = app.add_subcommand("policy", "the policy's versions, the active one and proposals")
                    ->require_subcommand(1);
  auto* show = group->add_subcommand("show", "print a version's canonical document");
  show->add_option("--version", flags->version, "the version's number (default: the active one)");
  context.OnParsed(show, [&context, flags] { return Show(context, *flags); });
  auto* list = group->add_subcommand("versions", "list every version, the active one marked");
  context.OnParsed(list, [&context] { return ListVersions(context); });
  auto* proposals = group->add_subcommand("proposals", "list pending proposals with their diffs");
  proposals->add_flag("--all", flags->all, "every proposal, not only the pending ones");
  context.OnParsed(proposals, [&context, flags] { return ListProposals(context, *flags); });
  auto* check = group->add_subcommand(
      "check", "read a policy document strictly; print its hash and its diff from the active one");
  check->add_option("file", flags->file, "the policy document (JSON)")->required();
  context.OnParsed(check, [&context, flags] { return Check(context, *flags); });
  auto* propose = group->add_subcommand(
      "propose", "propose a policy document (API): it applies once its approvals are in");
  propose->add_option("file", flags->file, "the policy document (JSON)")->required();
  propose->add_option("--base", flags->base,
                      "the version it changes (default: the active one); a proposal made against "
                      "a version no longer active is refused");
  propose->add_option("--reason", flags->reason, "why (recorded)");
  context.OnParsed(propose, [&context, flags] {
    auto text = ReadAll(flags->file);
    if (!text) return FailRemote(text.error());
    Json document = Json::parse(*text, nullptr, false);
    if (!document.is_object()) {
      return FailRemote(Error(ErrorCode::kInvalidArgument,
                              fmt::format("'{}' is not a JSON object", flags->file)));
    }
    return RemotePropose(context, document, flags->base, flags->reason);
  });
  for (const char* decision : {"approve", "reject", "withdraw"}) {
    auto* sub = group->add_subcommand(
        decision, std::string_view(decision) == "approve"
                      ? "approve a pending proposal (API), signed with your operator key"
                      : fmt::format("{} a pending proposal (API)", decision));
    sub->add_option("id", flags->id, "the proposal")->required();
    sub->add_option("--reason", flags->reason, "why (recorded)");
    const std::string what = decision;
    context.OnParsed(sub, [&context, flags, what] {
      if (what == "approve") return RemoteApprove(context, flags->id, flags->reason);
      Json body = Json::object();
      if (!flags->reason.empty()) body["reason"] = flags->reason;
      return RemotePolicy(context, "POST", fmt::format("policy/proposals/{}/{}", flags->id, what),
                          body);
    });
  }
}

}  // namespace fleetid::cli
