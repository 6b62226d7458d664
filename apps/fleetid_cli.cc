// fleetid: the operator's command line.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <fmt/chrono.h>
#include <nlohmann/json.hpp>
#include <openssl/pem.h>

#include "apps/options.h"
#include "audit/export.h"
#include "audit/log.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "custody/provider.h"
#include "custody/store.h"
#include "enroll/factory.h"
#include "enroll/service.h"
#include <sys/wait.h>
#include <unistd.h>
#include "pki/pki.h"
#include "registry/registry.h"
#include "store/store.h"

namespace fleetid {
namespace {

using Json = nlohmann::json;

int Fail(const Error& error) {
  std::cerr << "fleetid: " << error.ToString() << "\n";
  return 1;
}

Result<std::shared_ptr<custody::Token>> OpenToken(const apps::CommonFlags& flags) {
  FLEETID_TRY(config, apps::ResolveConfig(flags));
  FLEETID_TRY(opened,
              custody::OpenCustody(config.custody, config.data_dir, crypto::OpenSslRng::Instance()));
  return opened.token;
}

std::string Iso8601(TimePoint t) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", std::chrono::floor<std::chrono::seconds>(t));
}

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

// Devices opens the registry database named by the flags and brings its schema up to date.
struct Devices {
  std::unique_ptr<store::Database> db;
  std::unique_ptr<registry::Registry> registry;
};

Result<Devices> OpenDevices(const apps::CommonFlags& flags) {
  FLEETID_TRY(config, apps::ResolveConfig(flags));
  FLEETID_TRY(dir, apps::PrepareDataDir(config));
  config.data_dir = dir;
  FLEETID_TRY(db, store::Database::Open(config.DatabaseUrl(), 2));
  FLEETID_CHECK_OK(registry::Registry::Migrate(*db));
  Devices out;
  out.db = std::move(db);
  // No PKI is wired into the command line yet: transitions that act on credentials are refused
  // with `unavailable` rather than half-applied.
  out.registry = std::make_unique<registry::Registry>(*out.db, SystemClock::Instance(), nullptr,
                                                      registry::RegistryOptions{});
  return out;
}

// Context is what the ca and audit commands work on: the configuration, the token and the
// database (migrated, the audit log's tables included).
struct Context {
  node::ServerConfig config;
  std::shared_ptr<custody::Token> token;
  Devices devices;
};

Result<Context> OpenContext(const apps::CommonFlags& flags) {
  FLEETID_TRY(config, apps::ResolveConfig(flags));
  FLEETID_TRY(dir, apps::PrepareDataDir(config));
  config.data_dir = dir;
  FLEETID_TRY(opened,
              custody::OpenCustody(config.custody, config.data_dir, crypto::OpenSslRng::Instance()));
  FLEETID_TRY(devices, OpenDevices(flags));
  return Context{std::move(config), opened.token, std::move(devices)};
}

std::string CertPem(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  crypto::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!cert || !bio || PEM_write_bio_X509(bio.get(), cert.get()) != 1) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// CsrDer accepts a PKCS#10 request as PEM or DER.
Result<std::vector<std::uint8_t>> CsrDer(const std::string& text) {
  if (text.find("-----BEGIN") == std::string::npos) return std::vector<std::uint8_t>(text.begin(), text.end());
  crypto::BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  crypto::X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return MakeError(ErrorCode::kInvalidArgument, "the CSR file is not a PEM certificate request");
  const int len = i2d_X509_REQ(req.get(), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

Json CertJson(const pki::CertificateRecord& c) {
  Json j{{"serial", c.serial},
         {"issuer", c.issuer},
         {"device", c.device},
         {"suite", c.suite},
         {"not_before", Iso8601(c.not_before)},
         {"not_after", Iso8601(c.not_after)},
         {"status", pki::StatusName(c.status)}};
  if (c.reason) j["reason"] = pki::ReasonName(*c.reason);
  if (c.revoked_at) j["revoked_at"] = Iso8601(*c.revoked_at);
  return j;
}

Json KeyJson(const custody::KeyAttributes& k) {
  return Json{{"label", k.label},
              {"id", crypto::Hex(k.id)},
              {"suite", k.suite->name},
              {"held_in_hardware", k.HeldInHardware()},
              {"sensitive", k.sensitive},
              {"always_sensitive", k.always_sensitive},
              {"extractable", k.extractable},
              {"never_extractable", k.never_extractable},
              {"local", k.local},
              {"sign", k.can_sign},
              {"decrypt", k.can_decrypt},
              {"unwrap", k.can_unwrap},
              {"derive", k.can_derive}};
}

Result<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read '{}'", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// VerifyAuditExport checks an export offline: it needs the export, the audit public key and,
// optionally, a head saved earlier; no data directory, token or database. Exit 0 when everything
// verifies, 1 with every problem named otherwise.
int VerifyAuditExport(const std::vector<std::string>& in_paths, const std::string& key_path,
                      const std::string& saved_path) {
  audit::Export exported;
  for (const std::string& in_path : in_paths) {
    std::ifstream in(in_path, std::ios::binary);
    if (!in) return Fail(Error(ErrorCode::kNotFound, "cannot read " + in_path));
    auto part = audit::ReadExport(in);
    if (!part) return Fail(part.error().Wrap(in_path));
    std::move(part->entries.begin(), part->entries.end(), std::back_inserter(exported.entries));
    std::move(part->heads.begin(), part->heads.end(), std::back_inserter(exported.heads));
  }
  auto key_text = ReadAll(key_path);
  if (!key_text) return Fail(key_text.error());
  crypto::BioPtr bio(BIO_new_mem_buf(key_text->data(), static_cast<int>(key_text->size())));
  crypto::EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Fail(Error(ErrorCode::kInvalidArgument, key_path + " is not a PEM public key"));
  std::optional<audit::TreeHead> saved;
  if (!saved_path.empty()) {
    auto text = ReadAll(saved_path);
    if (!text) return Fail(text.error());
    auto head = audit::ParseHeadJson(*text);
    if (!head) return Fail(head.error().Wrap(saved_path));
    saved = *head;
  }
  const audit::VerifyReport report = audit::VerifyExport(exported, key.get(), saved);
  std::cout << Json{{"ok", report.ok()},
                    {"entries", report.entries},
                    {"heads_verified", report.heads_verified},
                    {"problems", report.problems}}
                   .dump(2)
            << "\n";
  return report.ok() ? 0 : 1;
}


// --- factory and enrollment ----------------------------------------------------------------

namespace fs = std::filesystem;

constexpr std::string_view kFactoryToken = "factory";

Result<std::vector<std::uint8_t>> CertDerFromFile(const std::string& path) {
  FLEETID_TRY(text, ReadAll(path));
  crypto::BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  crypto::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    cert.reset(d2i_X509(nullptr, &p, static_cast<long>(text.size())));
  }
  if (!cert) return MakeError(ErrorCode::kInvalidArgument, "'{}' is not a certificate", path);
  return enroll::CertificateDer(cert.get());
}

Result<void> WriteFile(const fs::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out.flush()) return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  return {};
}

// FactoryToken opens the factory's own token store (|dir|/custody) and its manufacturer key.
struct FactoryKey {
  std::shared_ptr<custody::Token> token;
  crypto::EvpPkeyPtr key;
};

Result<FactoryKey> OpenFactory(const fs::path& dir, bool create) {
  FLEETID_TRY(module, custody::OpenSoftHsmStore(dir / "custody"));
  FLEETID_TRY(opened, custody::OpenOrCreateToken(module, kFactoryToken, dir / "custody",
                                                 crypto::OpenSslRng::Instance(), create));
  if (create && !opened.token->FindKey(enroll::kManufacturerKeyLabel)) {
    FLEETID_TRY(made, opened.token->GenerateKey(enroll::kManufacturerKeyLabel,
                                                crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256),
                                                crypto::OpenSslRng::Instance()));
    (void)made;
  }
  FLEETID_TRY(signer, opened.token->GetSigner(enroll::kManufacturerKeyLabel));
  FLEETID_TRY(key, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
  return FactoryKey{opened.token, std::move(key)};
}

int FactoryInit(const fs::path& dir, const std::string& name) {
  auto factory = OpenFactory(dir, true);
  if (!factory) return Fail(factory.error());
  const fs::path cert_path = dir / "manufacturer.pem";
  if (!fs::exists(cert_path)) {
    auto der = enroll::MakeManufacturerCa(factory->key.get(), name, SystemClock::Instance(),
                                          crypto::OpenSslRng::Instance());
    if (!der) return Fail(der.error());
    if (auto w = WriteFile(cert_path, CertPem(*der)); !w) return Fail(w.error());
    if (auto w = WriteFile(dir / "manufacturer.name", name); !w) return Fail(w.error());
  }
  auto der = CertDerFromFile(cert_path.string());
  if (!der) return Fail(der.error());
  std::cout << Json{{"manufacturer", name},
                    {"certificate", cert_path.string()},
                    {"fingerprint", crypto::Hex(crypto::Sha256(*der))}}
                   .dump(2)
            << "\n";
  return 0;
}

struct MakeBatch {
  std::string factory_dir;
  std::string out_dir;
  int count = 1;
  std::string model = "sensor-1";
  std::string firmware_path;
  std::string firmware_version = "1.0.0";
  std::string prefix = "SN";
  std::string station = "line-1";
  std::string agent;
  std::string suite = "ecdsa-p256-sha256";
  // SERIAL=CSR_PATH: devices whose secure element is not one fleetid-agent drives (a third-party
  // device stack); their CSR comes from the element's own tooling.
  std::vector<std::string> external;
};

// RunAgent runs fleetid-agent |args| and waits for it.
Result<void> RunAgent(const std::string& agent, const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(agent.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return MakeError(ErrorCode::kUnavailable, "fork failed");
  if (pid == 0) {
    ::execv(agent.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return MakeError(ErrorCode::kUnavailable, "'{}' failed (status {})", agent, status);
  }
  return {};
}

int FactoryMake(const MakeBatch& b) {
  const fs::path factory_dir(b.factory_dir);
  const fs::path out(b.out_dir);
  auto name = ReadAll((factory_dir / "manufacturer.name").string());
  auto ca_der = CertDerFromFile((factory_dir / "manufacturer.pem").string());
  if (!name || !ca_der) {
    return Fail(Error(ErrorCode::kNotFound, "no manufacturer in '" + b.factory_dir +
                                                "': run `fleetid factory init` first"));
  }
  auto firmware = ReadAll(b.firmware_path);
  if (!firmware) return Fail(firmware.error());
  if (b.count < 0 || b.count > 100000 || (b.count == 0 && b.external.empty())) return Fail(Error(ErrorCode::kInvalidArgument, "--count is 1..100000"));
  auto raw = crypto::OpenSslRng::Instance().Bytes(3);
  if (!raw) return Fail(raw.error());
  enroll::Manifest m;
  m.batch = "B-" + crypto::Hex(*raw);
  m.manufacturer = *name;
  m.model = b.model;
  m.station = b.station;
  m.manufactured_at = std::chrono::duration_cast<std::chrono::seconds>(
                          SystemClock::Instance().Now().time_since_epoch())
                          .count();
  const std::string fw_sha256 = crypto::Hex(crypto::Sha256(*firmware));
  std::error_code ec;
  fs::create_directories(out / "devices", ec);
  std::string serial_list;
  std::vector<std::string> serials;
  for (int i = 1; i <= b.count; ++i) {
    serials.push_back(fmt::format("{}-{}-{:05d}", b.prefix, crypto::Hex(*raw), i));
    serial_list += serials.back() + "\n";
  }
  if (auto w = WriteFile(out / "serials.txt", serial_list); !w) return Fail(w.error());
  // Each device's secure element makes its IDevID key and a CSR signed with it: the agent runs
  // as the device would on the factory line, in a process (and SoftHSM2 store) of its own.
  std::string agent = b.agent;
  if (agent.empty()) agent = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "fleetid-agent").string();
  if (auto r = RunAgent(agent, {"se-init", "--batch", out.string(), "--suite", b.suite}); !r) {
    return Fail(r.error());
  }
  for (const std::string& ext : b.external) {
    const std::size_t eq = ext.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Fail(Error(ErrorCode::kInvalidArgument, "--external is SERIAL=CSR_PATH"));
    }
    const std::string serial = ext.substr(0, eq);
    auto text = ReadAll(ext.substr(eq + 1));
    if (!text) return Fail(text.error());
    auto der = CsrDer(*text);
    if (!der) return Fail(der.error());
    fs::create_directories(out / "devices" / serial, ec);
    if (auto w = WriteFile(out / "devices" / serial / "idevid.csr",
                           std::string(der->begin(), der->end()));
        !w) {
      return Fail(w.error());
    }
    serials.push_back(serial);
  }
  auto factory = OpenFactory(factory_dir, false);
  if (!factory) return Fail(factory.error());
  for (const std::string& serial : serials) {
    const fs::path dev = out / "devices" / serial;
    auto csr = ReadAll((dev / "idevid.csr").string());
    if (!csr) return Fail(csr.error());
    auto cert = enroll::IssueIdevid(factory->key.get(), *ca_der, crypto::AsBytes(*csr),
                                    {serial, b.model, *name}, SystemClock::Instance(),
                                    crypto::OpenSslRng::Instance());
    if (!cert) return Fail(cert.error().Wrap(serial));
    if (auto w = WriteFile(dev / "idevid.pem", CertPem(*cert)); !w) return Fail(w.error());
    const Json device{{"serial", serial},
                      {"model", b.model},
                      {"manufacturer", *name},
                      {"firmware_version", b.firmware_version},
                      {"firmware_sha256", fw_sha256}};
    if (auto w = WriteFile(dev / "device.json", device.dump(2) + "\n"); !w) return Fail(w.error());
    m.devices.push_back({serial, crypto::Hex(crypto::Sha256(*cert)), b.firmware_version, fw_sha256});
  }
  if (auto w = WriteFile(out / "manufacturer.pem", CertPem(*ca_der)); !w) return Fail(w.error());
  auto jws = enroll::SignManifest(factory->key.get(), *ca_der, m);
  if (!jws) return Fail(jws.error());
  if (auto w = WriteFile(out / "manifest.jws", *jws + "\n"); !w) return Fail(w.error());
  std::cout << Json{{"batch", m.batch}, {"devices", serials}, {"manifest", (out / "manifest.jws").string()},
                    {"firmware_sha256", fw_sha256}}
                   .dump(2)
            << "\n";
  return 0;
}

// Enrollment opens what the manufacturer, batch, reference and lifecycle commands work on.
struct Enrollment {
  Context context;
  std::unique_ptr<pki::Authority> authority;
  std::unique_ptr<enroll::PkiEffects> effects;
  std::unique_ptr<registry::Registry> registry;
  std::unique_ptr<enroll::Service> service;
};

Result<Enrollment> OpenEnrollment(const apps::CommonFlags& flags) {
  FLEETID_TRY(context, OpenContext(flags));
  FLEETID_CHECK_OK(enroll::Service::Migrate(*context.devices.db));
  pki::AuthorityOptions options;
  options.base_url = context.config.PublicUrl();
  FLEETID_TRY(authority, pki::Authority::Open(context.token, *context.devices.db,
                                              SystemClock::Instance(),
                                              crypto::OpenSslRng::Instance(), options));
  Enrollment e{std::move(context), std::move(authority), nullptr, nullptr, nullptr};
  e.effects = std::make_unique<enroll::PkiEffects>(*e.authority);
  e.registry = std::make_unique<registry::Registry>(*e.context.devices.db, SystemClock::Instance(),
                                                    e.effects.get(), registry::RegistryOptions{});
  e.service = std::make_unique<enroll::Service>(*e.context.devices.db, *e.registry, *e.authority,
                                                *e.effects, SystemClock::Instance(),
                                                crypto::OpenSslRng::Instance(),
                                                enroll::ServiceOptions{});
  return e;
}

// DeviceCertificateStatus hands an operator's hold, release or revocation of a device's
// certificate to the enrollment service, which makes it a lifecycle event of the device;
// nullopt for a certificate that is no device's credential (the CA acts alone).
std::optional<int> DeviceCertificateStatus(Devices& devs, pki::Authority& authority,
                                           const std::string& cert_serial,
                                           std::optional<pki::Reason> reason,
                                           const std::string& operator_name) {
  if (auto migrated = enroll::Service::Migrate(*devs.db); !migrated) return Fail(migrated.error());
  enroll::PkiEffects effects(authority);
  registry::Registry registry(*devs.db, SystemClock::Instance(), &effects,
                              registry::RegistryOptions{});
  enroll::Service service(*devs.db, registry, authority, effects, SystemClock::Instance(),
                          crypto::OpenSslRng::Instance(), enroll::ServiceOptions{});
  auto changed = service.ChangeCertificateStatus(
      cert_serial, reason, registry::Actor{registry::kOperator, operator_name, {"admin"}},
      "fleetid ca");
  if (!changed) return Fail(changed.error());
  const auto& record = *changed;
  if (!record.has_value()) return std::nullopt;
  std::cout << CertJson(*record).dump(2) << "\n";
  return 0;
}


int Run(int argc, char** argv) {
  CLI::App app{"fleetid: operate a fleetid device identity authority"};
  app.require_subcommand(1);
  apps::CommonFlags flags;
  apps::AddCommonFlags(app, flags);

  auto* suites = app.add_subcommand("suites", "list the algorithm suites fleetid supports");

  auto* keys = app.add_subcommand("keys", "keys in the authority's token")->require_subcommand(1);
  auto* list = keys->add_subcommand("list", "list the private keys on the token");
  std::string label;
  std::string suite_name = "ecdsa-p256-sha256";
  std::string in_path;
  std::string out_path;
  auto* create = keys->add_subcommand("create", "generate a key pair inside the token");
  create->add_option("label", label, "key label")->required();
  create->add_option("--suite", suite_name, "algorithm suite (see 'fleetid suites')");
  auto* show = keys->add_subcommand("show", "show a key's attributes and public key");
  show->add_option("label", label, "key label")->required();
  auto* pubkey = keys->add_subcommand("pubkey", "print a key's public key (PEM)");
  pubkey->add_option("label", label, "key label")->required();
  auto* sign = keys->add_subcommand("sign", "sign a file with a key in the token");
  sign->add_option("label", label, "key label")->required();
  sign->add_option("--in", in_path, "file to sign")->required();
  sign->add_option("--out", out_path, "where to write the signature")->required();
  auto* remove = keys->add_subcommand("delete", "destroy a key pair in the token");
  remove->add_option("label", label, "key label")->required();

  auto* devices = app.add_subcommand("devices", "the device registry")->require_subcommand(1);
  std::string batch_id;
  std::string serial;
  std::string state_name;
  std::string tenant;
  std::string region;
  std::string reason;
  std::string operator_name = std::getenv("USER") != nullptr ? std::getenv("USER") : "operator";
  int limit = 100;
  std::int64_t after = 0;
  auto* import = devices->add_subcommand("import", "import a factory batch file (JSON Lines)");
  import->add_option("file", in_path, "batch file")->required();
  import->add_option("--batch", batch_id, "batch id (default: the file name)");
  auto* dshow = devices->add_subcommand("show", "show one device");
  dshow->add_option("serial", serial)->required();
  auto* history = devices->add_subcommand("history", "a device's lifecycle history");
  history->add_option("serial", serial)->required();
  auto* dlist = devices->add_subcommand("list", "list devices, a page at a time");
  dlist->add_option("--state", state_name, "only devices in this state");
  dlist->add_option("--tenant", tenant, "only this tenant's devices");
  dlist->add_option("--limit", limit, "page size (1-1000)");
  dlist->add_option("--after", after, "cursor printed by the previous page");
  auto* counts = devices->add_subcommand("counts", "devices per state");
  auto* provision = devices->add_subcommand("provision", "bind a device to a tenant and region");
  provision->add_option("serial", serial)->required();
  provision->add_option("--tenant", tenant)->required();
  provision->add_option("--region", region)->required();
  provision->add_option("--reason", reason);
  for (auto* sub : {import, provision}) {
    sub->add_option("--operator", operator_name, "who is acting (recorded in the history)");
  }

  auto* ca = app.add_subcommand("ca", "the certificate authority")->require_subcommand(1);
  auto* ca_certs = ca->add_subcommand("certs", "print the root and issuing CA certificates (PEM)");
  std::string csr_path;
  std::string out_path_cert;
  std::string reason_name = "unspecified";
  auto* ca_issue = ca->add_subcommand("issue", "issue a certificate for a registered device");
  ca_issue->add_option("--device", serial, "the device's serial in the registry")->required();
  ca_issue->add_option("--csr", csr_path, "PKCS#10 request, PEM or DER")->required();
  ca_issue->add_option("--out", out_path_cert, "where to write the certificate (PEM)");
  auto* ca_status = ca->add_subcommand("status", "a certificate's status");
  auto* ca_revoke = ca->add_subcommand("revoke", "revoke a certificate");
  auto* ca_hold = ca->add_subcommand("hold", "put a certificate on hold (certificateHold)");
  auto* ca_release = ca->add_subcommand("release", "release a certificate from hold");
  ca_revoke->add_option("--reason", reason_name,
                        "keyCompromise, superseded, cessationOfOperation, ... (RFC 5280)");
  std::string cert_serial;
  for (auto* sub : {ca_status, ca_revoke, ca_hold, ca_release}) {
    sub->add_option("serial", cert_serial, "certificate serial (hex)")->required();
  }
  for (auto* sub : {ca_issue, ca_revoke, ca_hold, ca_release}) {
    sub->add_option("--operator", operator_name, "who is acting (recorded in the audit log)");
  }

  auto* audit_cmd = app.add_subcommand("audit", "the tamper-evident audit log")->require_subcommand(1);
  auto* audit_head = audit_cmd->add_subcommand(
      "head", "add the entries appended so far to the tree and print a signed tree head");
  auto* audit_key = audit_cmd->add_subcommand("key", "print the audit public key (PEM)");
  auto* audit_export = audit_cmd->add_subcommand("export", "write every entry and signed head");
  std::string audit_out;
  audit_export->add_option("--out", audit_out, "the export file (JSON Lines)")->required();
  auto* audit_verify = audit_cmd->add_subcommand(
      "verify", "verify an export offline with the audit public key; needs no data directory");
  std::vector<std::string> audit_in;
  std::string audit_key_path;
  std::string saved_head_path;
  audit_verify->add_option("--in", audit_in,
                           "the export file; give an archive and a later export, in order, to "
                           "verify them as one log")
      ->required();
  auto* audit_archive = audit_cmd->add_subcommand(
      "archive", "move the entries before a size to a file (proofs keep working)");
  std::uint64_t archive_before = 0;
  audit_archive->add_option("--before", archive_before, "archive entries 0 .. before-1")->required();
  audit_archive->add_option("--out", audit_out, "the archive file (an export)")->required();
  audit_verify->add_option("--key", audit_key_path, "the audit public key (PEM)")->required();
  audit_verify->add_option("--saved-head", saved_head_path,
                           "a tree head kept from earlier (`fleetid audit head` output)");
  auto* audit_proof = audit_cmd->add_subcommand("proof", "an entry's inclusion proof");
  std::uint64_t proof_seq = 0;
  std::uint64_t proof_size = 0;
  audit_proof->add_option("--seq", proof_seq, "the entry")->required();
  audit_proof->add_option("--size", proof_size, "the tree size (default: the latest head's)");


  // --- factory, manufacturers, batches, reference values, lifecycle ---
  auto* factory = app.add_subcommand("factory", "a manufacturer's factory (its own token)")->require_subcommand(1);
  std::string factory_dir = "./var/factory";
  std::string maker_name = "Example Devices";
  auto* factory_init = factory->add_subcommand("init", "create the manufacturer CA (key in the factory token)");
  factory_init->add_option("--name", maker_name, "manufacturer name");
  MakeBatch make_batch;
  auto* factory_make = factory->add_subcommand("make", "make a batch of devices: secure elements, IDevIDs, signed manifest");
  factory_make->add_option("--out", make_batch.out_dir, "batch directory")->required();
  factory_make->add_option("--count", make_batch.count, "devices");
  factory_make->add_option("--model", make_batch.model, "device model");
  factory_make->add_option("--firmware", make_batch.firmware_path, "firmware image (its SHA-256 is the measurement)")->required();
  factory_make->add_option("--firmware-version", make_batch.firmware_version);
  factory_make->add_option("--prefix", make_batch.prefix, "serial prefix");
  factory_make->add_option("--station", make_batch.station, "factory station");
  factory_make->add_option("--suite", make_batch.suite, "IDevID key suite");
  factory_make->add_option("--agent", make_batch.agent, "the fleetid-agent binary (default: beside fleetid)");
  factory_make->add_option("--external", make_batch.external,
                           "SERIAL=CSR: also certify a device whose own stack made its key and CSR");
  for (auto* sub : {factory_init, factory_make}) sub->add_option("--dir", factory_dir, "factory directory");

  auto* maker = app.add_subcommand("manufacturer", "manufacturers whose IDevIDs the authority trusts")->require_subcommand(1);
  auto* maker_add = maker->add_subcommand("add", "register a manufacturer CA certificate");
  std::string maker_cert;
  maker_add->add_option("--cert", maker_cert, "the manufacturer CA certificate (PEM or DER)")->required();
  maker_add->add_option("--name", maker_name, "manufacturer name (as its manifests say)")->required();
  auto* maker_list = maker->add_subcommand("list", "list registered manufacturers");

  auto* import_manifest = devices->add_subcommand("import-manifest", "verify and import a signed factory batch manifest");
  import_manifest->add_option("manifest", in_path, "manifest.jws")->required();

  auto* attest_cmd = app.add_subcommand("attest", "attestation: reference values and counters")->require_subcommand(1);
  auto* reference = attest_cmd->add_subcommand("reference", "accept a firmware measurement for a model");
  std::string ref_model;
  std::string ref_digest;
  std::string ref_firmware;
  reference->add_option("--model", ref_model)->required();
  reference->add_option("--digest", ref_digest, "hex SHA-256 of the firmware image");
  reference->add_option("--firmware", ref_firmware, "the firmware image (hashed here)");
  auto* attest_counters = attest_cmd->add_subcommand("counters", "refused nonces and appraisal results");

  std::vector<std::pair<CLI::App*, registry::Event>> lifecycle;
  for (const auto& [cmd, event, help] :
       std::initializer_list<std::tuple<const char*, registry::Event, const char*>>{
           {"suspend", registry::Event::kSuspend, "suspend: credentials on hold"},
           {"resume", registry::Event::kResume, "resume: holds lifted"},
           {"quarantine", registry::Event::kQuarantine, "quarantine: credentials revoked (keyCompromise)"},
           {"clear-quarantine", registry::Event::kClear, "lift a quarantine: the device enrolls afresh with a new key"},
           {"decommission", registry::Event::kDecommission, "order decommissioning (the device erases its keys at its next contact)"},
           {"cancel-decommission", registry::Event::kCancelDecommission, "cancel decommissioning within the grace period"}}) {
    auto* sub = devices->add_subcommand(cmd, help);
    sub->add_option("serial", serial)->required();
    sub->add_option("--reason", reason, "why (recorded)")->required();
    lifecycle.emplace_back(sub, event);
  }
  for (auto* sub : {maker_add, import_manifest, reference}) {
    sub->add_option("--operator", operator_name, "who is acting (recorded in the audit log)");
  }
  for (auto& [sub, event] : lifecycle) {
    sub->add_option("--operator", operator_name, "who is acting (recorded in the audit log)");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (factory_init->parsed()) return FactoryInit(factory_dir, maker_name);
  if (factory_make->parsed()) {
    make_batch.factory_dir = factory_dir;
    return FactoryMake(make_batch);
  }
  const bool lifecycle_parsed =
      std::ranges::any_of(lifecycle, [](const auto& l) { return l.first->parsed(); });
  if (maker->parsed() || import_manifest->parsed() || attest_cmd->parsed() || lifecycle_parsed) {
    auto e = OpenEnrollment(flags);
    if (!e) return Fail(e.error());
    enroll::Service& service = *e->service;
    const std::string actor = "operator:" + operator_name;
    if (maker_add->parsed()) {
      auto der = CertDerFromFile(maker_cert);
      if (!der) return Fail(der.error());
      auto m = service.AddManufacturer(*der, maker_name, actor);
      if (!m) return Fail(m.error());
      std::cout << Json{{"manufacturer", m->name}, {"fingerprint", m->fingerprint}}.dump(2) << "\n";
    } else if (maker_list->parsed()) {
      auto all = service.Manufacturers();
      if (!all) return Fail(all.error());
      Json out = Json::array();
      for (const auto& m : *all) out.push_back({{"manufacturer", m.name}, {"fingerprint", m.fingerprint}});
      std::cout << out.dump(2) << "\n";
    } else if (import_manifest->parsed()) {
      auto text = ReadAll(in_path);
      if (!text) return Fail(text.error());
      while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
      auto report = service.ImportManifest(*text, operator_name);
      if (!report) return Fail(report.error().Wrap(in_path));
      std::cout << Json{{"imported", report->imported}, {"already_present", report->already_present}}.dump(2)
                << "\n";
    } else if (reference->parsed()) {
      if (!ref_firmware.empty()) {
        auto fw = ReadAll(ref_firmware);
        if (!fw) return Fail(fw.error());
        ref_digest = crypto::Hex(crypto::Sha256(*fw));
      }
      if (auto r = service.AddReferenceValue(ref_model, ref_digest, actor); !r) return Fail(r.error());
      std::cout << Json{{"model", ref_model}, {"firmware_sha256", ref_digest}}.dump(2) << "\n";
    } else if (attest_counters->parsed()) {
      auto c = service.Counters();
      if (!c) return Fail(c.error());
      std::cout << Json(*c).dump(2) << "\n";
    } else {
      for (const auto& [sub, event] : lifecycle) {
        if (!sub->parsed()) continue;
        auto d = e->registry->Get(serial);
        if (!d) return Fail(d.error());
        registry::TransitionRequest req;
        req.serial = serial;
        req.event = event;
        req.expected_version = d->version;
        req.actor = registry::Actor{registry::kOperator, operator_name, {"admin"}};
        req.reason = reason;
        auto next = e->registry->Transition(req);
        if (!next) return Fail(next.error());
        std::cout << DeviceJson(*next).dump(2) << "\n";
      }
    }
    return 0;
  }

  if (audit_verify->parsed()) return VerifyAuditExport(audit_in, audit_key_path, saved_head_path);
  if (audit_cmd->parsed()) {
    auto context = OpenContext(flags);
    if (!context) return Fail(context.error());
    store::Database& db = *context->devices.db;
    auto signer = audit::AuditSigner(*context->token, crypto::OpenSslRng::Instance());
    if (!signer) return Fail(signer.error());
    if (audit_key->parsed()) {
      auto pem = crypto::PublicKeyPem((*signer)->public_key());
      if (!pem) return Fail(pem.error());
      std::cout << *pem;
      return 0;
    }
    audit::Log log(db, *signer, SystemClock::Instance());
    if (audit_head->parsed()) {
      auto head = log.SignHead();
      if (!head) return Fail(head.error());
      std::cout << audit::HeadJson(*head) << "\n";
      return 0;
    }
    if (audit_export->parsed()) {
      std::ofstream out(audit_out, std::ios::binary | std::ios::trunc);
      if (!out) return Fail(Error(ErrorCode::kInvalidArgument, "cannot write " + audit_out));
      auto written = audit::WriteExport(log, out);
      if (!written) return Fail(written.error());
      std::cerr << Json{{"entries", *written}, {"file", audit_out}}.dump() << "\n";
      return 0;
    }
    if (audit_archive->parsed()) {
      // The file first, complete and flushed; only then are the entries deleted.
      {
        std::ofstream out(audit_out, std::ios::binary | std::ios::trunc);
        if (!out) return Fail(Error(ErrorCode::kInvalidArgument, "cannot write " + audit_out));
        auto written = audit::WriteExport(log, out, archive_before);
        if (!written) return Fail(written.error());
        out.close();
        if (!out) return Fail(Error(ErrorCode::kUnavailable, "writing " + audit_out + " failed"));
      }
      auto archived = log.Archive(archive_before);
      if (!archived) return Fail(archived.error());
      std::cerr << Json{{"archived", *archived}, {"file", audit_out}}.dump() << "\n";
      return 0;
    }
    if (audit_proof->parsed()) {
      if (proof_size == 0) {
        auto head = log.LatestHead();
        if (!head) return Fail(head.error());
        proof_size = head->size;
      }
      auto proof = log.InclusionProof(proof_seq, proof_size);
      if (!proof) return Fail(proof.error());
      Json path = Json::array();
      for (const audit::Hash& h : *proof) path.push_back(audit::HashHex(h));
      std::cout << Json{{"seq", proof_seq}, {"size", proof_size}, {"path", path}}.dump(2) << "\n";
      return 0;
    }
    return 0;
  }

  if (ca->parsed()) {
    auto context = OpenContext(flags);
    if (!context) return Fail(context.error());
    Devices* devs = &context->devices;
    pki::AuthorityOptions options;
    options.base_url = context->config.PublicUrl();
    auto authority = pki::Authority::Open(context->token, *devs->db, SystemClock::Instance(),
                                          crypto::OpenSslRng::Instance(), options);
    if (!authority) return Fail(authority.error());
    // `openssl x509 -serial` prints upper case; fleetid stores lower case.
    std::transform(cert_serial.begin(), cert_serial.end(), cert_serial.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto print = [](const Result<pki::CertificateRecord>& r) {
      if (!r) return Fail(r.error());
      std::cout << CertJson(*r).dump(2) << "\n";
      return 0;
    };
    if (ca_certs->parsed()) {
      for (const std::string& name : (*authority)->CaNames()) {
        std::cout << CertPem(*(*authority)->CaCertificate(name));
      }
      return 0;
    }
    if (ca_issue->parsed()) {
      auto text = ReadAll(csr_path);
      if (!text) return Fail(text.error());
      auto der = CsrDer(*text);
      if (!der) return Fail(der.error());
      // The device's identity is checked in the transaction that issues (no check-then-act).
      auto issued = enroll::IssueForDevice(*devs->db, **authority, serial, *der,
                                           "operator:" + operator_name);
      if (!issued) return Fail(issued.error());
      const std::string pem = CertPem(issued->der);
      if (out_path_cert.empty()) {
        std::cout << pem;
      } else {
        std::ofstream(out_path_cert) << pem;
      }
      std::cerr << CertJson(*issued).dump() << "\n";
      return 0;
    }
    if (ca_status->parsed()) return print((*authority)->Get(cert_serial));
    const std::string actor = "operator:" + operator_name;
    if (ca_hold->parsed() || ca_release->parsed() || ca_revoke->parsed()) {
      std::optional<pki::Reason> device_reason;
      if (ca_hold->parsed()) device_reason = pki::Reason::kCertificateHold;
      if (ca_revoke->parsed()) {
        auto why = pki::ParseReason(reason_name);
        if (!why) return Fail(why.error());
        device_reason = *why;
      }
      if (auto routed = DeviceCertificateStatus(*devs, **authority, cert_serial, device_reason,
                                                operator_name)) {
        return *routed;
      }
    }
    if (ca_hold->parsed()) {
      return print((*authority)->Revoke(cert_serial, pki::Reason::kCertificateHold, actor));
    }
    if (ca_release->parsed()) return print((*authority)->Release(cert_serial, actor));
    if (ca_revoke->parsed()) {
      auto why = pki::ParseReason(reason_name);
      if (!why) return Fail(why.error());
      return print((*authority)->Revoke(cert_serial, *why, actor));
    }
    return 0;
  }

  if (devices->parsed()) {
    auto opened = OpenDevices(flags);
    if (!opened) return Fail(opened.error());
    registry::Registry& reg = *opened->registry;
    const registry::Actor actor{registry::kOperator, operator_name, {"admin"}};
    if (import->parsed()) {
      auto text = ReadAll(in_path);
      if (!text) return Fail(text.error());
      auto records = registry::ParseBatch(*text);
      if (!records) return Fail(records.error().Wrap(in_path));
      if (batch_id.empty()) batch_id = std::filesystem::path(in_path).filename().string();
      auto report = reg.Import(batch_id, *records, actor);
      if (!report) return Fail(report.error().Wrap(in_path));
      std::cout << Json{{"batch", batch_id},
                        {"imported", report->imported},
                        {"already_present", report->already_present}}
                       .dump(2)
                << "\n";
    } else if (dshow->parsed()) {
      auto d = reg.Get(serial);
      if (!d) return Fail(d.error());
      std::cout << DeviceJson(*d).dump(2) << "\n";
    } else if (history->parsed()) {
      auto h = reg.History(serial);
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
      std::cout << out.dump(2) << "\n";
    } else if (dlist->parsed()) {
      registry::DeviceQuery q;
      if (!state_name.empty()) {
        auto st = registry::ParseState(state_name);
        if (!st) return Fail(st.error());
        q.state = *st;
      }
      q.tenant = tenant;
      q.limit = limit;
      q.after = after;
      auto page = reg.Query(q);
      if (!page) return Fail(page.error());
      Json out{{"devices", Json::array()}, {"next", page->next}};
      for (const auto& d : page->devices) out["devices"].push_back(DeviceJson(d));
      std::cout << out.dump(2) << "\n";
    } else if (counts->parsed()) {
      auto c = reg.CountByState();
      if (!c) return Fail(c.error());
      Json out = Json::object();
      for (const auto& [st, n] : *c) out[std::string(registry::StateName(st))] = n;
      std::cout << out.dump(2) << "\n";
    } else if (provision->parsed()) {
      auto d = reg.Get(serial);
      if (!d) return Fail(d.error());
      registry::TransitionRequest req;
      req.serial = serial;
      req.event = registry::Event::kProvision;
      req.expected_version = d->version;
      req.actor = actor;
      req.tenant = tenant;
      req.region = region;
      req.reason = reason;
      auto next = reg.Transition(req);
      if (!next) return Fail(next.error());
      std::cout << DeviceJson(*next).dump(2) << "\n";
    }
    return 0;
  }

  if (suites->parsed()) {
    for (const crypto::Suite& s : crypto::AllSuites()) std::cout << s.name << "\n";
    return 0;
  }

  auto token = OpenToken(flags);
  if (!token) return Fail(token.error());

  if (list->parsed()) {
    auto all = (*token)->ListKeys();
    if (!all) return Fail(all.error());
    Json out = Json::array();
    for (const auto& k : *all) out.push_back(KeyJson(k));
    std::cout << out.dump(2) << "\n";
  } else if (create->parsed()) {
    auto suite = crypto::FindSuite(suite_name);
    if (!suite) return Fail(suite.error());
    auto made = (*token)->GenerateKey(label, **suite, crypto::OpenSslRng::Instance());
    if (!made) return Fail(made.error());
    std::cout << KeyJson(*made).dump(2) << "\n";
  } else if (show->parsed() || pubkey->parsed()) {
    auto attrs = (*token)->FindKey(label);
    if (!attrs) return Fail(attrs.error());
    auto pub = (*token)->PublicKey(label);
    if (!pub) return Fail(pub.error());
    auto pem = crypto::PublicKeyPem(pub->get());
    if (!pem) return Fail(pem.error());
    if (pubkey->parsed()) {
      std::cout << *pem;
    } else {
      Json out = KeyJson(*attrs);
      out["public_key_pem"] = *pem;
      std::cout << out.dump(2) << "\n";
    }
  } else if (sign->parsed()) {
    auto signer = (*token)->GetSigner(label);
    if (!signer) return Fail(signer.error());
    auto data = ReadAll(in_path);
    if (!data) return Fail(data.error());
    auto sig = (*signer)->Sign(crypto::AsBytes(*data));
    if (!sig) return Fail(sig.error());
    std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(sig->data()), static_cast<std::streamsize>(sig->size()));
    if (!out.flush()) return Fail(Error(ErrorCode::kUnavailable, "cannot write " + out_path));
  } else if (remove->parsed()) {
    if (auto r = (*token)->DestroyKey(label); !r) return Fail(r.error());
  }
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  try {
    return fleetid::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fleetid: unexpected exception: " << e.what() << "\n";
    return 70;
  }
}
