// fleetid factory init|make: a manufacturer's factory, with its own token (not the authority's):
// the manufacturer CA, and batches of devices with their IDevIDs and a signed manifest.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "apps/cli/cli.h"
#include "apps/cli/pem.h"
#include "crypto/crypto.h"
#include "custody/provider.h"
#include "custody/store.h"
#include "enroll/factory.h"

namespace fleetid::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kFactoryToken = "factory";

struct FactoryFlags {
  std::string dir = "./var/factory";
  std::string name = "Example Devices";
};

struct MakeBatch {
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

Result<void> WriteFile(const fs::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out.flush()) return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  return {};
}

// FactoryKey is the factory's own token store (|dir|/custody) and its manufacturer key.
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

int FactoryInit(const FactoryFlags& flags) {
  const fs::path dir(flags.dir);
  auto factory = OpenFactory(dir, true);
  if (!factory) return Fail(factory.error());
  const fs::path cert_path = dir / "manufacturer.pem";
  if (!fs::exists(cert_path)) {
    auto der = enroll::MakeManufacturerCa(factory->key.get(), flags.name, SystemClock::Instance(),
                                          crypto::OpenSslRng::Instance());
    if (!der) return Fail(der.error());
    if (auto w = WriteFile(cert_path, CertPem(*der)); !w) return Fail(w.error());
    if (auto w = WriteFile(dir / "manufacturer.name", flags.name); !w) return Fail(w.error());
  }
  auto der = CertDerFromFile(cert_path.string());
  if (!der) return Fail(der.error());
  PrintJson(Json{{"manufacturer", flags.name},
                 {"certificate", cert_path.string()},
                 {"fingerprint", crypto::Hex(crypto::Sha256(*der))}});
  return 0;
}

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

// Batch is a batch in the making: the manufacturer's name and CA, the firmware's measurement,
// the manifest and the devices' serials.
struct Batch {
  std::string name;
  std::vector<std::uint8_t> ca_der;
  std::string batch_hex;
  std::string firmware_sha256;
  enroll::Manifest manifest;
  std::vector<std::string> serials;
};

Result<Batch> StartBatch(const fs::path& factory_dir, const MakeBatch& b) {
  auto name = ReadAll((factory_dir / "manufacturer.name").string());
  auto ca_der = CertDerFromFile((factory_dir / "manufacturer.pem").string());
  if (!name || !ca_der) {
    return MakeError(Error(ErrorCode::kNotFound, "no manufacturer in '" + factory_dir.string() +
                                                     "': run `fleetid factory init` first"));
  }
  FLEETID_TRY(firmware, ReadAll(b.firmware_path));
  if (b.count < 0 || b.count > 100000 || (b.count == 0 && b.external.empty())) {
    return MakeError(Error(ErrorCode::kInvalidArgument, "--count is 1..100000"));
  }
  FLEETID_TRY(raw, crypto::OpenSslRng::Instance().Bytes(3));
  const std::string hex = crypto::Hex(raw);
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               SystemClock::Instance().Now().time_since_epoch())
                               .count();
  Batch batch{.name = *name,
              .ca_der = *ca_der,
              .batch_hex = hex,
              .firmware_sha256 = crypto::Hex(crypto::Sha256(firmware)),
              .manifest = {.batch = "B-" + hex,
                           .manufacturer = *name,
                           .model = b.model,
                           .station = b.station,
                           .manufactured_at = now,
                           .devices = {}},
              .serials = {}};
  return batch;
}

// MakeSecureElements has each device's secure element make its IDevID key and a CSR signed with
// it: the agent runs as the device would on the factory line, in a process (and SoftHSM2 store)
// of its own.
Result<void> MakeSecureElements(const MakeBatch& b, const fs::path& out, Batch& batch) {
  std::error_code ec;
  fs::create_directories(out / "devices", ec);
  std::string serial_list;
  for (int i = 1; i <= b.count; ++i) {
    batch.serials.push_back(fmt::format("{}-{}-{:05d}", b.prefix, batch.batch_hex, i));
    serial_list += batch.serials.back() + "\n";
  }
  FLEETID_CHECK_OK(WriteFile(out / "serials.txt", serial_list));
  std::string agent = b.agent;
  if (agent.empty()) {
    agent = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "fleetid-agent").string();
  }
  return RunAgent(agent, {"se-init", "--batch", out.string(), "--suite", b.suite});
}

// AddExternal adds the devices whose own stack made their key and CSR (--external).
Result<void> AddExternal(const MakeBatch& b, const fs::path& out, Batch& batch) {
  std::error_code ec;
  for (const std::string& ext : b.external) {
    const std::size_t eq = ext.find('=');
    if (eq == std::string::npos || eq == 0) {
      return MakeError(Error(ErrorCode::kInvalidArgument, "--external is SERIAL=CSR_PATH"));
    }
    const std::string serial = ext.substr(0, eq);
    FLEETID_TRY(text, ReadAll(ext.substr(eq + 1)));
    FLEETID_TRY(der, CsrDer(text));
    fs::create_directories(out / "devices" / serial, ec);
    FLEETID_CHECK_OK(
        WriteFile(out / "devices" / serial / "idevid.csr", std::string(der.begin(), der.end())));
    batch.serials.push_back(serial);
  }
  return {};
}

// IssueIdevids issues each device's IDevID with the factory's key and writes its files.
Result<void> IssueIdevids(const MakeBatch& b, const FactoryKey& factory, const fs::path& out,
                          Batch& batch) {
  for (const std::string& serial : batch.serials) {
    const fs::path dev = out / "devices" / serial;
    FLEETID_TRY(csr, ReadAll((dev / "idevid.csr").string()));
    auto cert = enroll::IssueIdevid(factory.key.get(), batch.ca_der, crypto::AsBytes(csr),
                                    {serial, b.model, batch.name}, SystemClock::Instance(),
                                    crypto::OpenSslRng::Instance());
    if (!cert) return MakeError(cert.error().Wrap(serial));
    FLEETID_CHECK_OK(WriteFile(dev / "idevid.pem", CertPem(*cert)));
    const Json device{{"serial", serial},
                      {"model", b.model},
                      {"manufacturer", batch.name},
                      {"firmware_version", b.firmware_version},
                      {"firmware_sha256", batch.firmware_sha256}};
    FLEETID_CHECK_OK(WriteFile(dev / "device.json", device.dump(2) + "\n"));
    batch.manifest.devices.push_back(
        {serial, crypto::Hex(crypto::Sha256(*cert)), b.firmware_version, batch.firmware_sha256});
  }
  return {};
}

// SignBatch writes the manufacturer CA and the signed manifest beside the devices.
Result<void> SignBatch(const FactoryKey& factory, const fs::path& out, const Batch& batch) {
  FLEETID_CHECK_OK(WriteFile(out / "manufacturer.pem", CertPem(batch.ca_der)));
  FLEETID_TRY(jws, enroll::SignManifest(factory.key.get(), batch.ca_der, batch.manifest));
  return WriteFile(out / "manifest.jws", jws + "\n");
}

int FactoryMake(const FactoryFlags& flags, const MakeBatch& b) {
  const fs::path factory_dir(flags.dir);
  const fs::path out(b.out_dir);
  auto batch = StartBatch(factory_dir, b);
  if (!batch) return Fail(batch.error());
  if (auto r = MakeSecureElements(b, out, *batch); !r) return Fail(r.error());
  if (auto r = AddExternal(b, out, *batch); !r) return Fail(r.error());
  auto factory = OpenFactory(factory_dir, false);
  if (!factory) return Fail(factory.error());
  if (auto r = IssueIdevids(b, *factory, out, *batch); !r) return Fail(r.error());
  if (auto r = SignBatch(*factory, out, *batch); !r) return Fail(r.error());
  PrintJson(Json{{"batch", batch->manifest.batch},
                 {"devices", batch->serials},
                 {"manifest", (out / "manifest.jws").string()},
                 {"firmware_sha256", batch->firmware_sha256}});
  return 0;
}

void AddMakeOptions(CLI::App* make, MakeBatch& b) {
  make->add_option("--out", b.out_dir, "batch directory")->required();
  make->add_option("--count", b.count, "devices");
  make->add_option("--model", b.model, "device model");
  make->add_option("--firmware", b.firmware_path, "firmware image (its SHA-256 is the measurement)")
      ->required();
  make->add_option("--firmware-version", b.firmware_version);
  make->add_option("--prefix", b.prefix, "serial prefix");
  make->add_option("--station", b.station, "factory station");
  make->add_option("--suite", b.suite, "IDevID key suite");
  make->add_option("--agent", b.agent, "the fleetid-agent binary (default: beside fleetid)");
  make->add_option("--external", b.external,
                   "SERIAL=CSR: also certify a device whose own stack made its key and CSR");
}

}  // namespace

// The factory needs neither the authority's token nor its database: it opens no node.
void AddFactoryCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<FactoryFlags>();
  auto batch = std::make_shared<MakeBatch>();
  auto* factory = app.add_subcommand("factory", "a manufacturer's factory (its own token)")
                      ->require_subcommand(1);
  auto* init =
      factory->add_subcommand("init", "create the manufacturer CA (key in the factory token)");
  init->add_option("--name", flags->name, "manufacturer name");
  context.OnParsed(init, [flags] { return FactoryInit(*flags); });
  auto* make = factory->add_subcommand(
      "make", "make a batch of devices: secure elements, IDevIDs, signed manifest");
  AddMakeOptions(make, *batch);
  context.OnParsed(make, [flags, batch] { return FactoryMake(*flags, *batch); });
  for (auto* sub : {init, make}) sub->add_option("--dir", flags->dir, "factory directory");
}

}  // namespace fleetid::cli
