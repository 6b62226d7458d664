// Reading a policy document strictly, writing its canonical form, and the semantic diff.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "crypto/crypto.h"
#include "crypto/suite.h"
#include "policy/policy.h"

namespace fleetid::policy {
namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxValueLength = 128;
constexpr std::size_t kMaxTextLength = 1024;
constexpr std::size_t kMaxListLength = 1000;
constexpr std::int64_t kHour = 3600;
constexpr std::int64_t kDay = 24 * kHour;

// The credential defaults a class that omits a field gets: today's built-in behaviour.
constexpr std::int64_t kDefaultLdevidLifetime = kDay;
constexpr int kDefaultRenewAtPercent = 66;
constexpr std::int64_t kDefaultNonceLifetime = 60;
constexpr std::int64_t kDefaultEvidenceLifetime = 300;

// Shown is |text| as an error message may quote it: at most kMaxNameLength bytes, each byte
// outside printable ASCII replaced by '?' (keys come from whoever proposed the document).
std::string Shown(std::string_view text) {
  std::string out(text.substr(0, kMaxNameLength));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

bool IsName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  auto ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  };
  return std::all_of(name.begin(), name.end(), ok) && name.front() != '-' && name.front() != '.';
}

}  // namespace

// ParseStrictJson parses |text| as JSON, refusing comments and a key repeated in one object
// (which nlohmann would otherwise resolve silently, last one wins).
Result<Json> ParseStrictJson(std::string_view text, std::string_view what) {
  std::vector<std::set<std::string>> open_objects;
  bool duplicate = false;
  std::string duplicate_key;
  const Json::parser_callback_t track = [&](int /*depth*/, Json::parse_event_t event,
                                            Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second) {
          if (!duplicate) duplicate_key = parsed.get<std::string>();
          duplicate = true;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json doc = Json::parse(text, track, /*allow_exceptions=*/false, /*ignore_comments=*/false);
  if (doc.is_discarded()) return MakeError(ErrorCode::kInvalidArgument, "{} is not valid JSON", what);
  if (duplicate) {
    return MakeError(ErrorCode::kInvalidArgument, "{} repeats the key '{}' in one object",
                     what, Shown(duplicate_key));
  }
  return doc;
}

// Reader turns a parsed document into a Policy, naming each problem by its JSON pointer.
class Reader {
 public:
  // A scope on its own (a grant's), read and written as in a document.
  static Result<Scope> ReadScope(const Json& value, const std::string& where) {
    return ScopeAt(value, where);
  }
  static Json WriteScope(const Scope& scope) { return ScopeJson(scope); }
  Result<std::shared_ptr<const Policy>> Read(const Json& doc) {
    auto policy = std::shared_ptr<Policy>(new Policy());
    FLEETID_CHECK_OK(Object(doc, "", {"schema", "description", "roles", "credentials", "approvals"},
                            {"schema", "roles", "credentials"}));
    FLEETID_TRY(schema, Text(doc.at("schema"), "/schema", kMaxNameLength));
    if (schema != kSchema) {
      return Problem("/schema", fmt::format("must be \"{}\"", kSchema));
    }
    if (doc.contains("description")) {
      FLEETID_TRY(description, Text(doc.at("description"), "/description", kMaxTextLength));
      description_ = std::move(description);
    }
    FLEETID_CHECK_OK(Roles(doc.at("roles"), *policy));
    FLEETID_CHECK_OK(Credentials(doc.at("credentials"), *policy));
    if (doc.contains("approvals")) FLEETID_CHECK_OK(Approvals(doc.at("approvals"), *policy));
    policy->Compile();
    policy->canonical_ = Canonical(*policy).dump();
    policy->hash_ = crypto::Hex(crypto::Sha256(policy->canonical_));
    return std::shared_ptr<const Policy>(std::move(policy));
  }

 private:
  static std::unexpected<Error> Problem(const std::string& where, std::string_view what) {
    return MakeError(ErrorCode::kInvalidArgument, "policy {}: {}", where.empty() ? "/" : where,
                     what);
  }

  // Pointer is |base| extended by |key|, escaped as RFC 6901 says (and as Shown says).
  static std::string Pointer(const std::string& base, std::string_view key) {
    std::string out = base + "/";
    for (char c : Shown(key)) {
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
    return out;
  }

  static Result<void> Object(const Json& value, const std::string& where,
                             std::initializer_list<std::string_view> allowed,
                             std::initializer_list<std::string_view> required) {
    if (!value.is_object()) return Problem(where, "must be an object");
    for (const auto& [key, unused] : value.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return Problem(Pointer(where, key), "is not a known key");
      }
    }
    for (std::string_view key : required) {
      if (!value.contains(key)) return Problem(Pointer(where, key), "is required");
    }
    return {};
  }

  static Result<std::string> Text(const Json& value, const std::string& where,
                                  std::size_t max_length) {
    if (!value.is_string()) return Problem(where, "must be a string");
    const auto& text = value.get_ref<const std::string&>();
    if (text.size() > max_length) {
      return Problem(where, fmt::format("is longer than {} bytes", max_length));
    }
    return text;
  }

  static Result<std::string> NameAt(const Json& value, const std::string& where) {
    FLEETID_TRY(name, Text(value, where, kMaxNameLength));
    if (!IsName(name)) {
      return Problem(where, "must be 1 to 64 of a-z, 0-9, '-', '_', '.' (not first: '-', '.')");
    }
    return name;
  }

  static Result<std::int64_t> Integer(const Json& value, const std::string& where,
                                      std::int64_t min, std::int64_t max) {
    if (!value.is_number_integer()) return Problem(where, "must be an integer");
    const bool fits = value.is_number_unsigned()
                          ? value.get<std::uint64_t>() <= static_cast<std::uint64_t>(max)
                          : value.get<std::int64_t>() <= max;
    if (!fits || value.get<std::int64_t>() < min) {
      return Problem(where, fmt::format("must be from {} to {}", min, max));
    }
    return value.get<std::int64_t>();
  }

  static Result<bool> Boolean(const Json& value, const std::string& where) {
    if (!value.is_boolean()) return Problem(where, "must be true or false");
    return value.get<bool>();
  }

  // Strings reads a non-empty list of strings, each checked by |check|; sorted, duplicates
  // dropped (their order and repetition mean nothing, so the canonical form ignores them).
  template <typename Check>
  static Result<std::vector<std::string>> Strings(const Json& value, const std::string& where,
                                                  Check check) {
    if (!value.is_array() || value.empty() || value.size() > kMaxListLength) {
      return Problem(where, fmt::format("must be a list of 1 to {} strings", kMaxListLength));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < value.size(); ++i) {
      FLEETID_TRY(item, check(value[i], Pointer(where, std::to_string(i))));
      out.push_back(std::move(item));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  static Result<std::string> Value(const Json& value, const std::string& where) {
    FLEETID_TRY(text, Text(value, where, kMaxValueLength));
    if (text.empty()) return Problem(where, "must not be empty");
    return text;
  }

  static Result<std::string> ActionName(const Json& value, const std::string& where) {
    FLEETID_TRY(action, Text(value, where, kMaxNameLength));
    if (action == "*" || ActionId(action)) return action;
    if (action.ends_with(".*")) {
      const std::string family = action.substr(0, action.size() - 1);  // "device."
      for (std::string_view known : Actions()) {
        if (known.starts_with(family)) return action;
      }
    }
    return Problem(where, "is not a known action (docs/policy.md lists them)");
  }

  static Result<Scope> ScopeAt(const Json& value, const std::string& where) {
    FLEETID_CHECK_OK(Object(value, where, {"tenants", "regions", "models", "labels"}, {}));
    Scope scope;
    const std::pair<const char*, std::optional<std::vector<std::string>>*> lists[] = {
        {"tenants", &scope.tenants}, {"regions", &scope.regions}, {"models", &scope.models}};
    for (const auto& [key, field] : lists) {
      if (!value.contains(key)) continue;
      FLEETID_TRY(values, Strings(value.at(key), Pointer(where, key), Value));
      *field = std::move(values);
    }
    if (value.contains("labels")) {
      const Json& labels = value.at("labels");
      const std::string at = Pointer(where, "labels");
      if (!labels.is_object() || labels.empty() || labels.size() > kMaxListLength) {
        return Problem(at, "must be an object of 1 or more label values");
      }
      for (const auto& [key, label] : labels.items()) {
        if (key.empty() || key.size() > kMaxValueLength) {
          return Problem(Pointer(at, key), "label names are 1 to 128 bytes");
        }
        FLEETID_TRY(text, Value(label, Pointer(at, key)));
        scope.labels.emplace(key, std::move(text));
      }
    }
    return scope;
  }

  static Result<Rule> RuleAt(const Json& value, const std::string& where, Effect effect) {
    FLEETID_CHECK_OK(Object(value, where, {"actions", "scope", "why"}, {"actions"}));
    Rule rule;
    rule.effect = effect;
    FLEETID_TRY(actions, Strings(value.at("actions"), Pointer(where, "actions"), ActionName));
    rule.actions = std::move(actions);
    if (value.contains("scope")) {
      FLEETID_TRY(scope, ScopeAt(value.at("scope"), Pointer(where, "scope")));
      rule.scope = std::move(scope);
    }
    if (value.contains("why")) {
      FLEETID_TRY(why, Text(value.at("why"), Pointer(where, "why"), kMaxTextLength));
      rule.why = std::move(why);
    }
    return rule;
  }

  static Result<void> Roles(const Json& value, Policy& policy) {
    if (!value.is_object() || value.size() > kMaxRoles) {
      return Problem("/roles", fmt::format("must be an object of at most {} roles", kMaxRoles));
    }
    for (const auto& [name, body] : value.items()) {
      const std::string where = Pointer("/roles", name);
      if (!IsName(name)) return Problem(where, "is not a valid role name");
      FLEETID_CHECK_OK(Object(body, where, {"description", "permit", "forbid"}, {}));
      Role role;
      role.name = name;
      if (body.contains("description")) {
        FLEETID_TRY(text, Text(body.at("description"), Pointer(where, "description"),
                               kMaxTextLength));
        role.description = std::move(text);
      }
      for (const auto& [key, effect] : {std::pair{"permit", Effect::kPermit},
                                        std::pair{"forbid", Effect::kForbid}}) {
        if (!body.contains(key)) continue;
        const Json& rules = body.at(key);
        const std::string at = Pointer(where, key);
        if (!rules.is_array() || rules.size() > kMaxRulesPerRole - role.rules.size()) {
          return Problem(at, fmt::format("must be a list; a role has at most {} rules",
                                         kMaxRulesPerRole));
        }
        for (std::size_t i = 0; i < rules.size(); ++i) {
          FLEETID_TRY(rule, RuleAt(rules[i], Pointer(at, std::to_string(i)), effect));
          role.rules.push_back(std::move(rule));
        }
      }
      policy.roles_.push_back(std::move(role));
    }
    return {};
  }

  static Result<void> Credentials(const Json& value, Policy& policy) {
    if (!value.is_array() || value.empty() || value.size() > kMaxListLength) {
      return Problem("/credentials", "must be a list of 1 or more credential classes");
    }
    std::set<std::string> names;
    for (std::size_t i = 0; i < value.size(); ++i) {
      const std::string where = Pointer("/credentials", std::to_string(i));
      const Json& body = value[i];
      FLEETID_CHECK_OK(Object(body, where,
                              {"name", "match", "suites", "preferred_suite",
                               "ldevid_lifetime_seconds", "renew_at_percent",
                               "attestation_required", "idevid_reenroll_after_lapse",
                               "nonce_lifetime_seconds", "evidence_lifetime_seconds"},
                              {"name", "suites"}));
      CredentialClass c;
      FLEETID_TRY(name, NameAt(body.at("name"), Pointer(where, "name")));
      if (!names.insert(name).second) {
        return Problem(Pointer(where, "name"), "names a class already defined");
      }
      c.name = std::move(name);
      if (body.contains("match")) {
        FLEETID_TRY(match, ScopeAt(body.at("match"), Pointer(where, "match")));
        c.match = std::move(match);
      }
      auto suite = [](const Json& item, const std::string& at) -> Result<std::string> {
        FLEETID_TRY(text, Text(item, at, kMaxNameLength));
        if (!crypto::FindSuite(text)) return Problem(at, "is not a known suite");
        return text;
      };
      FLEETID_TRY(suites, Strings(body.at("suites"), Pointer(where, "suites"), suite));
      c.suites = std::move(suites);
      c.preferred_suite = c.suites.front();
      if (body.contains("preferred_suite")) {
        const std::string at = Pointer(where, "preferred_suite");
        FLEETID_TRY(preferred, suite(body.at("preferred_suite"), at));
        if (std::find(c.suites.begin(), c.suites.end(), preferred) == c.suites.end()) {
          return Problem(at, "must be one of the class's suites");
        }
        c.preferred_suite = std::move(preferred);
      }
      FLEETID_CHECK_OK(IntegerField(body, where, "ldevid_lifetime_seconds", kHour, 825 * kDay,
                                    kDefaultLdevidLifetime, c.ldevid_lifetime_seconds));
      std::int64_t renew = 0;
      FLEETID_CHECK_OK(
          IntegerField(body, where, "renew_at_percent", 10, 95, kDefaultRenewAtPercent, renew));
      c.renew_at_percent = static_cast<int>(renew);
      FLEETID_CHECK_OK(IntegerField(body, where, "nonce_lifetime_seconds", 10, kHour,
                                    kDefaultNonceLifetime, c.nonce_lifetime_seconds));
      FLEETID_CHECK_OK(IntegerField(body, where, "evidence_lifetime_seconds", 10, kDay,
                                    kDefaultEvidenceLifetime, c.evidence_lifetime_seconds));
      FLEETID_CHECK_OK(
          BooleanField(body, where, "attestation_required", true, c.attestation_required));
      FLEETID_CHECK_OK(BooleanField(body, where, "idevid_reenroll_after_lapse", true,
                                    c.idevid_reenroll_after_lapse));
      policy.credentials_.push_back(std::move(c));
    }
    return {};
  }

  static Result<void> IntegerField(const Json& body, const std::string& where, const char* key,
                                   std::int64_t min, std::int64_t max, std::int64_t fallback,
                                   std::int64_t& out) {
    if (!body.contains(key)) {
      out = fallback;
      return {};
    }
    FLEETID_TRY(value, Integer(body.at(key), Pointer(where, key), min, max));
    out = value;
    return {};
  }

  static Result<void> BooleanField(const Json& body, const std::string& where, const char* key,
                                   bool fallback, bool& out) {
    if (!body.contains(key)) {
      out = fallback;
      return {};
    }
    FLEETID_TRY(value, Boolean(body.at(key), Pointer(where, key)));
    out = value;
    return {};
  }

  static Result<void> Approvals(const Json& value, Policy& policy) {
    if (!value.is_array() || value.size() > kMaxListLength) {
      return Problem("/approvals", "must be a list of approval rules");
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      const std::string where = Pointer("/approvals", std::to_string(i));
      const Json& body = value[i];
      FLEETID_CHECK_OK(Object(
          body, where, {"actions", "approvals", "from_roles", "lifetime_seconds", "min_devices"},
          {"actions", "from_roles"}));
      ApprovalRule rule;
      FLEETID_TRY(actions, Strings(body.at("actions"), Pointer(where, "actions"), ActionName));
      rule.actions = std::move(actions);
      auto role = [&](const Json& item, const std::string& at) -> Result<std::string> {
        FLEETID_TRY(name, NameAt(item, at));
        const bool defined = std::any_of(policy.roles_.begin(), policy.roles_.end(),
                                         [&](const Role& r) { return r.name == name; });
        if (!defined) return Problem(at, "is not a role of this policy");
        return name;
      };
      FLEETID_TRY(roles, Strings(body.at("from_roles"), Pointer(where, "from_roles"), role));
      rule.from_roles = std::move(roles);
      std::int64_t approvals = 0;
      FLEETID_CHECK_OK(IntegerField(body, where, "approvals", 1, 10, 1, approvals));
      rule.approvals = static_cast<int>(approvals);
      FLEETID_CHECK_OK(IntegerField(body, where, "lifetime_seconds", 60, 30 * kDay, kDay,
                                    rule.lifetime_seconds));
      FLEETID_CHECK_OK(IntegerField(body, where, "min_devices", 0, std::int64_t{1} << 40, 0,
                                    rule.min_devices));
      policy.approvals_.push_back(std::move(rule));
    }
    return {};
  }

  static Json ScopeJson(const Scope& scope) {
    Json out = Json::object();
    if (scope.tenants) out["tenants"] = *scope.tenants;
    if (scope.regions) out["regions"] = *scope.regions;
    if (scope.models) out["models"] = *scope.models;
    if (!scope.labels.empty()) out["labels"] = scope.labels;
    return out;
  }

  // Canonical writes every field, defaults included, so that two documents meaning the same
  // policy have the same bytes and so the same hash.
  Json Canonical(const Policy& policy) const {
    Json roles = Json::object();
    for (const Role& role : policy.roles_) {
      Json permit = Json::array();
      Json forbid = Json::array();
      for (const Rule& rule : role.rules) {
        Json r = {{"actions", rule.actions}, {"scope", ScopeJson(rule.scope)}, {"why", rule.why}};
        (rule.effect == Effect::kPermit ? permit : forbid).push_back(std::move(r));
      }
      roles[role.name] = {{"description", role.description}, {"permit", permit}, {"forbid", forbid}};
    }
    Json credentials = Json::array();
    for (const CredentialClass& c : policy.credentials_) {
      credentials.push_back({{"name", c.name},
                             {"match", ScopeJson(c.match)},
                             {"suites", c.suites},
                             {"preferred_suite", c.preferred_suite},
                             {"ldevid_lifetime_seconds", c.ldevid_lifetime_seconds},
                             {"renew_at_percent", c.renew_at_percent},
                             {"attestation_required", c.attestation_required},
                             {"idevid_reenroll_after_lapse", c.idevid_reenroll_after_lapse},
                             {"nonce_lifetime_seconds", c.nonce_lifetime_seconds},
                             {"evidence_lifetime_seconds", c.evidence_lifetime_seconds}});
    }
    Json approvals = Json::array();
    for (const ApprovalRule& a : policy.approvals_) {
      approvals.push_back({{"actions", a.actions},
                           {"approvals", a.approvals},
                           {"from_roles", a.from_roles},
                           {"lifetime_seconds", a.lifetime_seconds},
                           {"min_devices", a.min_devices}});
    }
    return {{"schema", kSchema},
            {"description", description_},
            {"roles", roles},
            {"credentials", credentials},
            {"approvals", approvals}};
  }

  std::string description_;
};

Result<std::shared_ptr<const Policy>> Policy::Parse(std::string_view json) {
  if (json.size() > kMaxDocumentBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "policy is larger than {} bytes",
                     kMaxDocumentBytes);
  }
  FLEETID_TRY(doc, ParseStrictJson(json, "policy"));
  return Reader().Read(doc);
}

Result<Scope> ParseScope(std::string_view json) {
  if (json.size() > kMaxDocumentBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "scope is larger than {} bytes",
                     kMaxDocumentBytes);
  }
  FLEETID_TRY(doc, ParseStrictJson(json, "scope"));
  return ScopeFromJson(doc);
}

Result<Scope> ScopeFromJson(const nlohmann::json& value) {
  FLEETID_TRY(scope, Reader::ReadScope(value, "scope"));
  scope.Normalize();
  return scope;
}

std::string ScopeToJson(const Scope& scope) { return Reader::WriteScope(scope).dump(); }

namespace {

// Atoms are a role's rules as (effect, action, scope) lines, the unit a diff speaks of.
std::set<std::string> Atoms(const Role& role, Effect effect) {
  std::set<std::string> out;
  for (const Rule& rule : role.rules) {
    if (rule.effect != effect) continue;
    for (const std::string& action : rule.actions) {
      out.insert(fmt::format("{} {}", action, rule.scope.Describe()));
    }
  }
  return out;
}

void DiffRole(const Role& before, const Role& after, std::vector<std::string>& out) {
  struct Change {
    Effect effect;
    const char* gained;
    const char* lost;
  };
  for (const Change& c : {Change{Effect::kPermit, "gains", "loses"},
                          Change{Effect::kForbid, "is newly forbidden", "is no longer forbidden"}}) {
    const std::set<std::string> old_atoms = Atoms(before, c.effect);
    const std::set<std::string> new_atoms = Atoms(after, c.effect);
    for (const std::string& atom : new_atoms) {
      if (!old_atoms.contains(atom)) out.push_back(fmt::format("role {} {} {}", after.name, c.gained, atom));
    }
    for (const std::string& atom : old_atoms) {
      if (!new_atoms.contains(atom)) out.push_back(fmt::format("role {} {} {}", after.name, c.lost, atom));
    }
  }
  if (before.description != after.description) {
    out.push_back(fmt::format("role {}: description changed", after.name));
  }
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void DiffClass(const CredentialClass& before, const CredentialClass& after,
               std::vector<std::string>& out) {
  auto field = [&](std::string_view what, const auto& old_value, const auto& new_value) {
    if (old_value != new_value) {
      out.push_back(fmt::format("credential class {}: {} {} -> {}", after.name, what, old_value,
                                new_value));
    }
  };
  field("applies to", before.match.Describe(), after.match.Describe());
  field("suites", Join(before.suites), Join(after.suites));
  field("preferred suite", before.preferred_suite, after.preferred_suite);
  field("LDevID lifetime (s)", before.ldevid_lifetime_seconds, after.ldevid_lifetime_seconds);
  field("renews at (% of lifetime)", before.renew_at_percent, after.renew_at_percent);
  field("attestation required", before.attestation_required, after.attestation_required);
  field("IDevID re-enrollment after a lapse", before.idevid_reenroll_after_lapse,
        after.idevid_reenroll_after_lapse);
  field("nonce lifetime (s)", before.nonce_lifetime_seconds, after.nonce_lifetime_seconds);
  field("evidence lifetime (s)", before.evidence_lifetime_seconds,
        after.evidence_lifetime_seconds);
}

std::string DescribeApproval(const ApprovalRule& a) {
  return fmt::format("{} need {} approval(s) from {} within {} s{}", Join(a.actions), a.approvals,
                     Join(a.from_roles), a.lifetime_seconds,
                     a.min_devices > 0 ? fmt::format(" (from {} devices)", a.min_devices) : "");
}

}  // namespace

std::vector<std::string> Diff(const Policy& before, const Policy& after) {
  std::vector<std::string> out;
  if (before.Hash() == after.Hash()) return out;
  for (const Role& role : before.Roles()) {
    if (after.FindRole(role.name) == nullptr) out.push_back(fmt::format("role {} removed", role.name));
  }
  for (const Role& role : after.Roles()) {
    const Role* old_role = before.FindRole(role.name);
    if (old_role == nullptr) {
      out.push_back(fmt::format("role {} added", role.name));
      DiffRole(Role{.name = role.name, .description = role.description, .rules = {}}, role, out);
    } else {
      DiffRole(*old_role, role, out);
    }
  }
  auto find_class = [](const Policy& p, const std::string& name) -> const CredentialClass* {
    for (const CredentialClass& c : p.Credentials()) {
      if (c.name == name) return &c;
    }
    return nullptr;
  };
  for (const CredentialClass& c : before.Credentials()) {
    if (find_class(after, c.name) == nullptr) {
      out.push_back(fmt::format("credential class {} removed", c.name));
    }
  }
  std::vector<std::string> old_order;
  std::vector<std::string> new_order;
  for (const CredentialClass& c : before.Credentials()) old_order.push_back(c.name);
  for (const CredentialClass& c : after.Credentials()) {
    new_order.push_back(c.name);
    const CredentialClass* old_class = find_class(before, c.name);
    if (old_class == nullptr) {
      out.push_back(fmt::format("credential class {} added (applies to {})", c.name,
                                c.match.Describe()));
    } else {
      DiffClass(*old_class, c, out);
    }
  }
  if (old_order != new_order) {
    out.push_back(fmt::format("credential classes are tried in the order {}", Join(new_order)));
  }
  std::set<std::string> old_approvals;
  std::set<std::string> new_approvals;
  for (const ApprovalRule& a : before.Approvals()) old_approvals.insert(DescribeApproval(a));
  for (const ApprovalRule& a : after.Approvals()) new_approvals.insert(DescribeApproval(a));
  for (const std::string& a : new_approvals) {
    if (!old_approvals.contains(a)) out.push_back("approval rule added: " + a);
  }
  for (const std::string& a : old_approvals) {
    if (!new_approvals.contains(a)) out.push_back("approval rule removed: " + a);
  }
  if (out.empty()) out.emplace_back("description changed");
  return out;
}

}  // namespace fleetid::policy
