// fleetid operator ...: the command line as a client of the operator API (docs/cli.md). bootstrap
// and enroll make the operator's key in their own token and exchange a one-time code for its
// certificate; renew replaces key and certificate; whoami, list, show, invite, grant and revoke
// are the API's operator routes. The devices and policy commands come here too when a server is
// configured (RemoteDevice*, RemotePolicy*).
#include <openssl/objects.h>

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>

#include "apps/cli/cli.h"
#include "crypto/csr.h"
#include "crypto/jws.h"
#include "crypto/x509.h"
#include "operators/approval.h"

namespace fleetid::cli {
namespace {

namespace fs = std::filesystem;

struct JoinFlags {
  std::string ca_file;
  std::string name;
  std::string code_file;
  std::string code_env;
  std::string module;
  std::string token_label = "fleetid-operator";
  std::string pin_file;
  std::string pin_env;
  bool file_key = false;
};

struct OperatorFlags {
  std::string name;
  std::vector<std::string> grants;
  std::int64_t expires_in = 0;
  std::string code_out;
  std::string reason;
};

std::string Text(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const Json& v = j[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// ScopeText is a scope as people read it: "everywhere" or "region=eu,tenant=acme".
std::string ScopeText(const Json& scope) {
  std::string out;
  auto add = [&](std::string_view key, const Json& values) {
    for (const Json& v : values) {
      if (!out.empty()) out += ",";
      out += fmt::format("{}={}", key, v.is_string() ? v.get<std::string>() : v.dump());
    }
  };
  if (scope.is_object()) {
    if (scope.contains("tenants")) add("tenant", scope["tenants"]);
    if (scope.contains("regions")) add("region", scope["regions"]);
    if (scope.contains("models")) add("model", scope["models"]);
    if (scope.contains("labels") && scope["labels"].is_object()) {
      for (const auto& [k, v] : scope["labels"].items()) {
        if (!out.empty()) out += ",";
        out += fmt::format("label.{}={}", k, v.is_string() ? v.get<std::string>() : v.dump());
      }
    }
  }
  return out.empty() ? "everywhere" : out;
}

std::string GrantsText(const Json& grants) {
  std::string out;
  for (const Json& g : grants) {
    if (!out.empty()) out += "; ";
    out += Text(g, "role");
    const std::string where = ScopeText(g.value("scope", Json::object()));
    if (where != "everywhere") out += "@" + where;
  }
  return out.empty() ? "-" : out;
}

// ParseGrantText reads ROLE or ROLE@KEY=VALUE[,KEY=VALUE...], KEY one of tenant, region, model
// or label.NAME (a key may repeat), as the API's {role, scope}.
Result<Json> ParseGrantText(std::string_view text) {
  const std::size_t at = text.find('@');
  Json grant{{"role", std::string(text.substr(0, at))}, {"scope", Json::object()}};
  if (at == std::string_view::npos) return grant;
  std::string_view rest = text.substr(at + 1);
  Json& scope = grant["scope"];
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view pair = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == pair.size()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "'{}': a scope is KEY=VALUE pairs (tenant, region, model, label.NAME)",
                       text);
    }
    const std::string key(pair.substr(0, eq));
    const std::string value(pair.substr(eq + 1));
    if (key == "tenant" || key == "region" || key == "model") {
      scope[key + "s"].push_back(value);
    } else if (key.starts_with("label.") && key.size() > 6) {
      scope["labels"][key.substr(6)] = value;
    } else {
      return MakeError(ErrorCode::kInvalidArgument,
                       "'{}': unknown scope key '{}' (tenant, region, model, label.NAME)", text,
                       key);
    }
  }
  return grant;
}

Result<void> WriteNew(const fs::path& path, std::string_view data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot create '{}': {}", path.string(),
                     std::strerror(errno));
  }
  const bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  return {};
}

// KeepCertificate writes the issued certificate and its chain (an exchange's answer) as the
// profile's chain.pem.
Result<void> KeepCertificate(const Profile& profile, const Json& issued) {
  std::string pem = Text(issued, "certificate");
  for (const Json& c : issued.value("chain", Json::array())) {
    if (c.is_string()) pem += c.get<std::string>();
  }
  FLEETID_TRY(parsed, crypto::ParseCertificatesPem(pem));
  static_cast<void>(parsed);
  const fs::path tmp = profile.ChainPath().string() + ".new";
  ::unlink(tmp.c_str());
  FLEETID_CHECK_OK(WriteNew(tmp, pem, 0644));
  if (::rename(tmp.c_str(), profile.ChainPath().c_str()) != 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", profile.ChainPath().string());
  }
  return {};
}

void PrintIssued(const Context& context, const Profile& profile, const Json& issued,
                 std::string_view what) {
  if (context.remote.json) {
    PrintJson({{"operator", issued.value("operator", "")},
               {"serial", issued.value("serial", "")},
               {"not_after", issued.value("not_after", "")},
               {"profile", profile.dir.string()},
               {"request_id", issued.value("request_id", "")}});
    return;
  }
  std::cout << fmt::format("{} {}: certificate {} until {}; profile {}\n", what,
                           Text(issued, "operator"), Text(issued, "serial"),
                           Text(issued, "not_after"), profile.dir.string());
}

// Join is bootstrap and enroll: a new profile, a key made in the operator's token, and a one-time
// code exchanged with the key's CSR for the operator's certificate.
int Join(Context& context, const JoinFlags& flags, bool bootstrap) {
  const fs::path dir = context.remote.ProfileDir();
  if (auto existing = LoadProfile(dir); existing && !existing->key_label.empty()) {
    return FailRemote(Error(ErrorCode::kConflict,
                            fmt::format("'{}' already holds operator {}'s profile; give another "
                                        "--profile",
                                        dir.string(), existing->name)));
  }
  Profile profile;
  profile.dir = dir;
  profile.server = context.remote.server;
  profile.module = flags.module;
  profile.token_label = flags.token_label;
  profile.pin_file = flags.pin_file.empty() ? "" : fs::absolute(flags.pin_file).string();
  profile.pin_env = flags.pin_env;
  profile.file_key = flags.file_key;
  if (profile.server.empty()) {
    return FailRemote(Error(ErrorCode::kInvalidArgument, "--server URL is needed"));
  }
  auto anchors = ReadAll(flags.ca_file);
  if (!anchors) return FailRemote(anchors.error());
  if (auto parsed = crypto::ParseCertificatesPem(*anchors); !parsed) {
    return FailRemote(parsed.error().Wrap(flags.ca_file));
  }
  auto code = ReadSecret(flags.code_file, flags.code_env,
                         bootstrap ? "bootstrap code" : "invitation code", false);
  if (!code) return FailRemote(code.error());
  if (auto saved = SaveProfile(profile); !saved) return FailRemote(saved.error());
  {
    const fs::path anchor = profile.AnchorPath();
    ::unlink(anchor.c_str());
    if (auto written = WriteNew(anchor, *anchors, 0644); !written) {
      return FailRemote(written.error());
    }
  }
  std::shared_ptr<custody::Token> token;
  const std::string label = "operator-1";
  if (!profile.file_key) {
    auto pin = ReadSecret(profile.pin_file, profile.pin_env, "new operator token PIN", true);
    if (!pin) return FailRemote(pin.error());
    auto opened = OpenOperatorToken(profile, *pin, true);
    if (!opened) return FailRemote(opened.error());
    token = *opened;
    // A key left by an exchange that failed was never certified: make a fresh one.
    if (token->FindKey(label)) static_cast<void>(token->DestroyKey(label));
  }
  auto key = NewKey(profile, token, label);
  if (!key) return FailRemote(key.error());
  auto csr = crypto::MakeCsr(key->public_key.get(), key->signing_key.get(), NID_commonName,
                             flags.name.empty() ? "operator" : flags.name);
  if (!csr) return FailRemote(csr.error());
  auto api = Api::Connect(profile, nullptr);
  if (!api) return FailRemote(api.error());
  Json body{{"code", std::string(reinterpret_cast<const char*>(code->data()), code->size())},
            {"csr", crypto::Base64Encode(*csr)}};
  if (bootstrap) body["name"] = flags.name;
  auto issued = (*api)->Call("POST", bootstrap ? "operators/bootstrap" : "operators/enroll", body);
  body.clear();
  if (!issued) return FailRemote(issued.error());
  if (auto kept = KeepCertificate(profile, *issued); !kept) return FailRemote(kept.error());
  profile.name = Text(*issued, "operator");
  profile.key_label = label;
  profile.generation = 1;
  if (auto saved = SaveProfile(profile); !saved) return FailRemote(saved.error());
  PrintIssued(context, profile, *issued, bootstrap ? "bootstrapped" : "enrolled");
  return kExitOk;
}

// Renew makes a new key beside the current one, has it certified (the server revokes the old
// certificate as superseded), then forgets the old key.
int Renew(Context& context) {
  auto session = OpenSession(context.remote);
  if (!session) return FailRemote(session.error());
  Profile& profile = session->profile;
  const std::string next = fmt::format("operator-{}", profile.generation + 1);
  const std::shared_ptr<custody::Token>& token = session->key.token;
  if (token && token->FindKey(next)) static_cast<void>(token->DestroyKey(next));
  Profile staged = profile;
  staged.key_label = next;
  auto key = NewKey(staged, token, next);
  if (!key) return FailRemote(key.error());
  auto csr =
      crypto::MakeCsr(key->public_key.get(), key->signing_key.get(), NID_commonName, profile.name);
  if (!csr) return FailRemote(csr.error());
  auto issued =
      session->api->Call("POST", "operators/renew", {{"csr", crypto::Base64Encode(*csr)}});
  if (!issued) return FailRemote(issued.error());
  if (auto kept = KeepCertificate(profile, *issued); !kept) return FailRemote(kept.error());
  const std::string old = profile.key_label;
  staged.generation = profile.generation + 1;
  if (auto saved = SaveProfile(staged); !saved) return FailRemote(saved.error());
  if (token) {
    static_cast<void>(token->DestroyKey(old));
  } else {
    std::error_code ignored;
    fs::remove(profile.FileKeyPath(old), ignored);
  }
  PrintIssued(context, staged, *issued, "renewed");
  return kExitOk;
}

// Get runs one call as the profile's operator and prints its answer: JSON with --json, else
// what |human| makes of it.
int Get(Context& context, std::string_view method, const std::string& path, const Json& body,
        const std::function<void(const Json&)>& human) {
  auto session = OpenSession(context.remote);
  if (!session) return FailRemote(session.error());
  auto answer = session->api->Call(method, path, body);
  if (!answer) return FailRemote(answer.error());
  if (context.remote.json) {
    PrintJson(*answer);
  } else {
    human(*answer);
  }
  return kExitOk;
}

void PrintOperator(const Json& op) {
  std::cout << fmt::format("operator {} ({}), created {} by {}\n", Text(op, "name"),
                           Text(op, "state"), Text(op, "created_at"), Text(op, "created_by"));
  std::vector<std::vector<std::string>> rows;
  for (const Json& g : op.value("grants", Json::array())) {
    rows.push_back({Text(g, "role"), ScopeText(g.value("scope", Json::object())),
                    Text(g, "granted_by"), Text(g, "granted_at")});
  }
  PrintTable({"ROLE", "SCOPE", "GRANTED BY", "AT"}, rows);
}

int WhoAmI(Context& context) {
  return Get(context, "GET", "whoami", nullptr, [](const Json& me) {
    std::cout << fmt::format("{} (certificate {}); policy version {}\ngrants: {}\n",
                             Text(me, "operator"), Text(me, "serial"),
                             me.contains("policy") ? Text(me["policy"], "version") : "-",
                             GrantsText(me.value("grants", Json::array())));
  });
}

int List(Context& context) {
  return Get(context, "GET", "operators", nullptr, [](const Json& answer) {
    std::vector<std::vector<std::string>> rows;
    for (const Json& op : answer.value("operators", Json::array())) {
      rows.push_back({Text(op, "name"), Text(op, "state"),
                      GrantsText(op.value("grants", Json::array())), Text(op, "created_by")});
    }
    PrintTable({"NAME", "STATE", "GRANTS", "CREATED BY"}, rows);
  });
}

int Invite(Context& context, const OperatorFlags& flags) {
  Json grants = Json::array();
  for (const std::string& text : flags.grants) {
    auto grant = ParseGrantText(text);
    if (!grant) return FailRemote(grant.error());
    grants.push_back(*grant);
  }
  Json body{{"name", flags.name}, {"grants", grants}};
  if (flags.expires_in > 0) body["lifetime_seconds"] = flags.expires_in;
  auto session = OpenSession(context.remote);
  if (!session) return FailRemote(session.error());
  // Nothing is asked of the server before the code's file is known to be writable.
  const int probe =
      ::open(flags.code_out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (probe < 0) {
    return FailRemote(Error(
        ErrorCode::kInvalidArgument,
        fmt::format("cannot create '{}' for the code: {}", flags.code_out, std::strerror(errno))));
  }
  ::close(probe);
  ::unlink(flags.code_out.c_str());
  auto answer = session->api->Call("POST", "operators/invitations", body);
  if (!answer) return FailRemote(answer.error());
  const std::string code = Text(*answer, "code");
  if (auto written = WriteNew(flags.code_out, code + "\n", 0600); !written) {
    return FailRemote(written.error());
  }
  answer->erase("code");
  (*answer)["code_file"] = flags.code_out;
  if (context.remote.json) {
    PrintJson(*answer);
  } else {
    std::cout << fmt::format(
        "invited {} as {} until {}; the one-time code is in {} (0600): hand it over privately\n",
        Text(*answer, "operator"), GrantsText(answer->value("grants", Json::array())),
        Text(*answer, "expires_at"), flags.code_out);
  }
  return kExitOk;
}

void AddJoinCommand(CLI::App* group, Context& context, bool bootstrap) {
  auto flags = std::make_shared<JoinFlags>();
  auto* sub = group->add_subcommand(
      bootstrap ? "bootstrap" : "enroll",
      bootstrap ? "become the first administrator with the server's one-time bootstrap code"
                : "become an operator with an invitation's one-time code");
  sub->add_option("--ca-file", flags->ca_file,
                  "the authority's root certificate (PEM): the server must chain to it")
      ->required();
  if (bootstrap) sub->add_option("--name", flags->name, "your operator name")->required();
  sub->add_option("--code-file", flags->code_file,
                  "file holding the one-time code (mode 0600; default: prompted for)");
  sub->add_option("--code-env", flags->code_env, "environment variable holding the code");
  sub->add_option("--module", flags->module,
                  "PKCS#11 module of your token, e.g. OpenSC's for a smart card (default: an "
                  "embedded SoftHSM2 token in the profile directory)");
  sub->add_option("--token", flags->token_label, "label of your token")->capture_default_str();
  sub->add_option("--pin-file", flags->pin_file,
                  "file holding your token's PIN (mode 0600; default: prompted for)");
  sub->add_option("--pin-env", flags->pin_env, "environment variable holding the PIN");
  sub->add_flag("--service-account-file-key", flags->file_key,
                "keep the key in a 0600 file instead of a token: for service accounts only");
  context.OnParsed(sub, [&context, flags, bootstrap] { return Join(context, *flags, bootstrap); });
}

}  // namespace

void AddOperatorCommands(CLI::App& app, Context& context) {
  auto* group = app.add_subcommand("operator", "operators: your identity and everyone's (API)")
                    ->require_subcommand(1);
  AddJoinCommand(group, context, true);
  AddJoinCommand(group, context, false);
  auto flags = std::make_shared<OperatorFlags>();
  auto* renew = group->add_subcommand("renew", "a new key and certificate for yourself");
  context.OnParsed(renew, [&context] { return Renew(context); });
  auto* whoami = group->add_subcommand("whoami", "who the server says you are, and your grants");
  context.OnParsed(whoami, [&context] { return WhoAmI(context); });
  auto* list = group->add_subcommand("list", "every operator with their grants");
  context.OnParsed(list, [&context] { return List(context); });
  auto* show = group->add_subcommand("show", "one operator");
  show->add_option("name", flags->name)->required();
  context.OnParsed(show, [&context, flags] {
    return Get(context, "GET", "operators/" + flags->name, nullptr, PrintOperator);
  });
  auto* invite = group->add_subcommand("invite", "invite an operator with role grants");
  invite->add_option("name", flags->name, "the new operator's name")->required();
  invite
      ->add_option("--grant", flags->grants,
                   "ROLE or ROLE@KEY=VALUE,... (tenant, region, model, label.NAME); repeatable")
      ->required();
  invite->add_option("--expires-in", flags->expires_in, "seconds the code is valid (max 7 days)");
  invite->add_option("--code-out", flags->code_out, "new file (0600) for the one-time code")
      ->required();
  context.OnParsed(invite, [&context, flags] { return Invite(context, *flags); });
  auto* grant = group->add_subcommand("grant", "grant an operator one more role");
  grant->add_option("name", flags->name)->required();
  grant->add_option("--grant", flags->grants, "ROLE or ROLE@KEY=VALUE,...")->required();
  context.OnParsed(grant, [&context, flags] {
    if (flags->grants.size() != 1) {
      return FailRemote(Error(ErrorCode::kInvalidArgument, "grant one role at a time"));
    }
    auto body = ParseGrantText(flags->grants.front());
    if (!body) return FailRemote(body.error());
    return Get(context, "POST", "operators/" + flags->name + "/grants", *body, PrintOperator);
  });
  auto* revoke = group->add_subcommand("revoke", "revoke an operator and their certificates");
  revoke->add_option("name", flags->name)->required();
  revoke->add_option("--reason", flags->reason, "why (recorded)")->required();
  context.OnParsed(revoke, [&context, flags] {
    return Get(context, "POST", "operators/" + flags->name + "/revoke", {{"reason", flags->reason}},
               PrintOperator);
  });
}

// --- the devices and policy commands, when a server is configured ---

void PrintDevice(const Json& d) {
  PrintTable({"SERIAL", "STATE", "TENANT", "REGION", "MODEL", "VERSION"},
             {{Text(d, "serial"), Text(d, "state"), Text(d, "tenant"), Text(d, "region"),
               Text(d, "model"), Text(d, "version")}});
  if (!d.contains("history")) return;
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const Json& t : d["history"]) {
    rows.push_back({Text(t, "at"), Text(t, "event"), Text(t, "from") + " -> " + Text(t, "to"),
                    Text(t, "actor"), Text(t, "reason")});
  }
  PrintTable({"AT", "EVENT", "STATES", "ACTOR", "REASON"}, rows);
}

int RemoteDeviceShow(Context& context, const std::string& serial) {
  return Get(context, "GET", "devices/" + serial, nullptr, PrintDevice);
}

std::string QueryEscape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out += c;
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

int RemoteDeviceList(Context& context,
                     const std::vector<std::pair<std::string, std::string>>& query) {
  std::string path = "devices";
  char sep = '?';
  for (const auto& [name, value] : query) {
    if (value.empty()) continue;
    path += fmt::format("{}{}={}", sep, name, QueryEscape(value));
    sep = '&';
  }
  return Get(context, "GET", path, nullptr, [](const Json& page) {
    std::vector<std::vector<std::string>> rows;
    for (const Json& d : page.value("devices", Json::array())) {
      rows.push_back({Text(d, "serial"), Text(d, "state"), Text(d, "tenant"), Text(d, "region"),
                      Text(d, "model"), Text(d, "firmware_version")});
    }
    PrintTable({"SERIAL", "STATE", "TENANT", "REGION", "MODEL", "FIRMWARE"}, rows);
    if (page.value("next", std::int64_t{0}) != 0) {
      std::cout << fmt::format("more: --after {}\n", page.value("next", std::int64_t{0}));
    }
  });
}

int RemoteDeviceAction(Context& context, const std::string& serial, std::string_view action,
                       const Json& body) {
  return Get(context, "POST", fmt::format("devices/{}/{}", serial, action), body, PrintDevice);
}

void PrintProposal(const Json& p) {
  std::cout << fmt::format(
      "proposal {} ({}) by {}: version {} -> {}; {} of {} approvals; expires {}\n", Text(p, "id"),
      Text(p, "state"), Text(p, "requester"), p.contains("base") ? Text(p["base"], "version") : "-",
      p.contains("target") ? Text(p["target"], "version") : "-",
      p.value("approvals", Json::array()).size(), Text(p, "approvals_required"),
      Text(p, "expires_at"));
  for (const Json& line : p.value("diff", Json::array())) {
    std::cout << "  " << (line.is_string() ? line.get<std::string>() : line.dump()) << "\n";
  }
}

int RemotePolicy(Context& context, std::string_view method, const std::string& path,
                 const Json& body) {
  return Get(context, method, path, body, [](const Json& answer) {
    if (answer.contains("proposals")) {
      for (const Json& p : answer["proposals"]) PrintProposal(p);
    } else if (answer.contains("versions")) {
      std::vector<std::vector<std::string>> rows;
      for (const Json& v : answer["versions"]) {
        rows.push_back({Text(v, "version"), v.value("active", false) ? "active" : "",
                        Text(v, "created_at"), Text(v, "created_by"), Text(v, "hash")});
      }
      PrintTable({"VERSION", "", "CREATED", "BY", "HASH"}, rows);
    } else if (answer.contains("digest")) {
      PrintProposal(answer);
    } else {
      PrintJson(answer);
    }
  });
}

int RemoteCertificate(Context& context, std::string_view method, const std::string& serial,
                      const std::string& verb, const Json& body) {
  const std::string path = verb.empty()
                               ? fmt::format("ca/certificates/{}", QueryEscape(serial))
                               : fmt::format("ca/certificates/{}/{}", QueryEscape(serial), verb);
  return Get(context, method, path, body, [](const Json& c) {
    PrintTable({"SERIAL", "STATUS", "REASON", "DEVICE", "NOT AFTER"},
               {{Text(c, "serial"), Text(c, "status"), Text(c, "reason"), Text(c, "device"),
                 Text(c, "not_after")}});
  });
}

int RemoteCall(Context& context, std::string_view method, const std::string& path,
               const Json& body, const std::function<void(const Json&)>& human) {
  return Get(context, method, path, body, human);
}

int RemoteApprove(Context& context, std::int64_t id, const std::string& reason) {
  auto session = OpenSession(context.remote);
  if (!session) return FailRemote(session.error());
  const std::string path = fmt::format("policy/proposals/{}", id);
  auto proposal = session->api->Call("GET", path);
  if (!proposal) return FailRemote(proposal.error());
  auto chain = PemCertsDer(session->profile.ChainPath());
  if (!chain) return FailRemote(chain.error());
  // What is signed is the digest the server shows; the server checks it is the proposal's own.
  auto signature = operators::SignApproval(session->key.signing_key.get(), *chain,
                                           fmt::format("policy proposal {}", id),
                                           Text(*proposal, "digest"), "approve");
  if (!signature) return FailRemote(signature.error());
  Json body{{"signature", *signature}};
  if (!reason.empty()) body["reason"] = reason;
  auto decided = session->api->Call("POST", path + "/approve", body);
  if (!decided) return FailRemote(decided.error());
  if (context.remote.json) {
    PrintJson(*decided);
  } else {
    PrintProposal(*decided);
  }
  return kExitOk;
}

int RemotePropose(Context& context, const Json& document, std::int64_t base,
                  const std::string& reason) {
  auto session = OpenSession(context.remote);
  if (!session) return FailRemote(session.error());
  if (base == 0) {
    auto active = session->api->Call("GET", "policy");
    if (!active) return FailRemote(active.error());
    base = active->value("version", std::int64_t{0});
  }
  Json body{{"document", document}, {"base", base}};
  if (!reason.empty()) body["reason"] = reason;
  auto proposal = session->api->Call("POST", "policy/proposals", body);
  if (!proposal) return FailRemote(proposal.error());
  if (context.remote.json) {
    PrintJson(*proposal);
  } else {
    PrintProposal(*proposal);
  }
  return kExitOk;
}

}  // namespace fleetid::cli
