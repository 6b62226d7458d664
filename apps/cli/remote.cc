#include "apps/cli/remote.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <utility>

#include <fmt/format.h>

#include "apps/cli/cli.h"
#include "crypto/crypto.h"
#include "crypto/suite.h"
#include "crypto/x509.h"
#include "custody/provider.h"
#include "custody/store.h"

namespace fleetid::cli {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr std::string_view kApiPrefix = "/api/v1/";

// WritePrivate writes |data| to |path| (mode 0600) through a temporary file, fsync and rename.
Result<void> WritePrivate(const fs::path& path, std::string_view data) {
  const fs::path tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}': {}", tmp.string(),
                     std::strerror(errno));
  }
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", tmp.string());
    }
    done += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}': {}", path.string(),
                     std::strerror(errno));
  }
  return {};
}

// Prompt reads one line from the terminal without echoing it.
Result<crypto::SecretBuffer> Prompt(std::string_view prompt) {
  if (::isatty(STDIN_FILENO) == 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "{} needed: not on a terminal, so give a 0600 file or an environment "
                     "variable (docs/cli.md)",
                     prompt);
  }
  termios saved{};
  const bool quiet = ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (quiet) {
    termios silent = saved;
    silent.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent);
  }
  std::cerr << prompt << ": " << std::flush;
  crypto::SecretBuffer line(256);
  std::size_t size = 0;
  char c = 0;
  while (::read(STDIN_FILENO, &c, 1) == 1 && c != '\n') {
    if (size < line.size()) line.data()[size++] = static_cast<std::uint8_t>(c);
  }
  c = 0;
  if (quiet) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::cerr << "\n";
  if (size == 0) return MakeError(ErrorCode::kInvalidArgument, "{}: nothing was typed", prompt);
  crypto::SecretBuffer out(size);
  std::copy_n(line.data(), size, out.data());
  return out;
}

ErrorCode CodeOfStatus(int status) {
  switch (status) {
    case 400:
    case 413:
    case 422:
      return ErrorCode::kInvalidArgument;
    case 401:
      return ErrorCode::kUnauthenticated;
    case 403:
      return ErrorCode::kPermissionDenied;
    case 404:
      return ErrorCode::kNotFound;
    case 409:
      return ErrorCode::kConflict;
    default:
      return ErrorCode::kInternal;
  }
}

}  // namespace

Result<std::vector<std::vector<std::uint8_t>>> PemCertsDer(const fs::path& path) {
  FLEETID_TRY(text, ReadAll(path.string()));
  FLEETID_TRY(certs, crypto::ParseCertificatesPem(text));
  std::vector<std::vector<std::uint8_t>> out;
  out.reserve(certs.size());
  for (const crypto::X509Ptr& cert : certs) {
    FLEETID_TRY(der, crypto::CertificateDer(cert.get()));
    out.push_back(std::move(der));
  }
  return out;
}

int ExitCodeOf(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kInvalidArgument:
      return kExitInvalid;
    case ErrorCode::kPermissionDenied:
      return kExitRefused;
    case ErrorCode::kNotFound:
      return kExitNotFound;
    case ErrorCode::kConflict:
      return kExitConflict;
    case ErrorCode::kUnavailable:
      return kExitUnreachable;
    case ErrorCode::kUnauthenticated:
      return kExitUnauthenticated;
    default:
      return kExitFailed;
  }
}

bool RemoteFlags::Enabled() const {
  const char* env = std::getenv("FLEETID_PROFILE");
  return !server.empty() || !profile.empty() || (env != nullptr && *env != '\0');
}

fs::path RemoteFlags::ProfileDir() const {
  if (!profile.empty()) return profile;
  if (const char* env = std::getenv("FLEETID_PROFILE"); env != nullptr && *env != '\0') return env;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg != '\0') {
    return fs::path(xdg) / "fleetid";
  }
  const char* home = std::getenv("HOME");
  return fs::path(home != nullptr ? home : ".") / ".config" / "fleetid";
}

Result<Profile> LoadProfile(const fs::path& dir) {
  auto text = ReadAll((dir / "profile.json").string());
  if (!text) {
    return MakeError(ErrorCode::kNotFound,
                     "no operator profile in '{}': run `fleetid operator bootstrap` or `fleetid "
                     "operator enroll` first",
                     dir.string());
  }
  const Json j = Json::parse(*text, nullptr, false);
  if (!j.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}' is not JSON",
                     (dir / "profile.json").string());
  }
  Profile p;
  p.dir = dir;
  try {
    p.server = j.value("server", "");
    p.name = j.value("name", "");
    p.module = j.value("module", "");
    p.token_label = j.value("token_label", p.token_label);
    p.key_label = j.value("key_label", "");
    p.generation = j.value("generation", 0);
    p.pin_file = j.value("pin_file", "");
    p.pin_env = j.value("pin_env", "");
    p.file_key = j.value("file_key", false);
  } catch (const Json::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}': {}", (dir / "profile.json").string(),
                     e.what());
  }
  return p;
}

Result<void> SaveProfile(const Profile& p) {
  std::error_code ec;
  fs::create_directories(p.dir, ec);
  fs::permissions(p.dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable, "cannot make the profile directory '{}': {}",
                     p.dir.string(), ec.message());
  }
  const Json j{
      {"server", p.server},           {"name", p.name},           {"module", p.module},
      {"token_label", p.token_label}, {"key_label", p.key_label}, {"generation", p.generation},
      {"pin_file", p.pin_file},       {"pin_env", p.pin_env},     {"file_key", p.file_key}};
  return WritePrivate(p.dir / "profile.json", j.dump(2) + "\n");
}

Result<crypto::SecretBuffer> ReadSecret(const std::string& file, const std::string& env,
                                        std::string_view prompt, bool confirm) {
  if (!file.empty() || !env.empty()) {
    auto read = !file.empty() ? custody::ReadPinFile(file) : custody::ReadPinEnv(env);
    if (!read) return MakeError(read.error().Wrap(prompt));
    return read;
  }
  FLEETID_TRY(first, Prompt(prompt));
  if (confirm) {
    FLEETID_TRY(again, Prompt(fmt::format("{} (again)", prompt)));
    if (again.size() != first.size() || !again.Equals(first)) {
      return MakeError(ErrorCode::kInvalidArgument, "the two entries differ");
    }
  }
  return first;
}

Result<std::shared_ptr<custody::Token>> OpenOperatorToken(const Profile& profile,
                                                          const crypto::SecretBuffer& pin,
                                                          bool create) {
  std::shared_ptr<custody::Module> module;
  if (profile.module.empty()) {
    FLEETID_TRY(store, custody::OpenSoftHsmStore(profile.dir / "token"));
    module = std::move(store);
  } else {
    FLEETID_TRY(loaded, custody::Module::Load(profile.module));
    module = std::move(loaded);
  }
  auto slot = module->FindToken(profile.token_label);
  if (!slot && slot.error().code() == ErrorCode::kNotFound && create && profile.module.empty()) {
    // The SO PIN only resets a user PIN; a forgotten one means a new token and a new invitation,
    // so it is random and not kept anywhere.
    FLEETID_TRY(random, crypto::OpenSslRng::Instance().Bytes(24));
    crypto::SecretBuffer so_pin = crypto::SecretBuffer::FromString(crypto::Hex(random));
    std::fill(random.begin(), random.end(), std::uint8_t{0});
    FLEETID_TRY(made, module->InitToken(profile.token_label, so_pin, pin));
    static_cast<void>(made);
  } else if (!slot) {
    return MakeError(slot.error());
  }
  return custody::Token::Open(module, profile.token_label, pin);
}

Result<OperatorKey> NewKey(const Profile& profile, const std::shared_ptr<custody::Token>& token,
                           const std::string& label) {
  if (profile.file_key) {
    crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    crypto::BioPtr bio(BIO_new(BIO_s_secmem()));
    if (!key || !bio ||
        PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
            1) {
      return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "making the file key"));
    }
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    FLEETID_CHECK_OK(WritePrivate(profile.FileKeyPath(label),
                                  std::string_view(data, static_cast<std::size_t>(len))));
    return OpenKey(profile, token, label);
  }
  FLEETID_TRY(made, token->GenerateKey(label, crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256),
                                       crypto::OpenSslRng::Instance()));
  if (!made.HeldInHardware()) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the token made key '{}' extractable; it cannot hold an operator's key",
                     label);
  }
  return OpenKey(profile, token, label);
}

Result<OperatorKey> OpenKey(const Profile& profile, const std::shared_ptr<custody::Token>& token,
                            const std::string& label) {
  OperatorKey out;
  if (profile.file_key) {
    struct stat st {};
    if (::stat(profile.FileKeyPath(label).c_str(), &st) != 0) {
      return MakeError(ErrorCode::kNotFound, "the service account's key '{}' is missing",
                       profile.FileKeyPath(label).string());
    }
    if ((st.st_mode & 077) != 0) {
      return MakeError(ErrorCode::kPermissionDenied, "'{}' has mode {:04o}; it must be 0600",
                       profile.FileKeyPath(label).string(), st.st_mode & 07777);
    }
    crypto::BioPtr bio(BIO_new_file(profile.FileKeyPath(label).c_str(), "r"));
    crypto::EvpPkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                               : nullptr);
    if (!key) return MakeError(crypto::OpenSslError(ErrorCode::kInvalidArgument, "the file key"));
    EVP_PKEY_up_ref(key.get());
    out.public_key.reset(key.get());
    out.signing_key = std::move(key);
    return out;
  }
  FLEETID_TRY(pub, token->PublicKey(label));
  FLEETID_TRY(signer, token->GetSigner(label));
  FLEETID_TRY(pkey, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
  out.token = token;
  out.public_key = std::move(pub);
  out.signing_key = std::move(pkey);
  return out;
}

Result<std::unique_ptr<Api>> Api::Connect(const Profile& profile, const OperatorKey* key) {
  FLEETID_TRY(url, agent::ParseUrl(profile.server));
  if (url.scheme != "https") {
    return MakeError(ErrorCode::kInvalidArgument, "the operator API is served over HTTPS only");
  }
  FLEETID_TRY(anchors, PemCertsDer(profile.AnchorPath()));
  std::vector<std::vector<std::uint8_t>> chain;
  crypto::EvpPkeyPtr signing;
  if (key != nullptr) {
    FLEETID_TRY(certs, PemCertsDer(profile.ChainPath()));
    chain = std::move(certs);
    EVP_PKEY_up_ref(key->signing_key.get());
    signing.reset(key->signing_key.get());
  }
  FLEETID_TRY(tls, agent::ClientTls::Make(anchors, chain, std::move(signing)));
  FLEETID_TRY(connection, agent::Connection::Connect(url.host, url.port, tls));
  return std::unique_ptr<Api>(new Api(std::move(connection)));
}

Result<Json> Api::Call(std::string_view method, std::string_view path, const Json& body) {
  const std::string target = fmt::format("{}{}", kApiPrefix, path);
  const std::string text = body.is_null() ? std::string() : body.dump();
  // Every change carries a fresh Idempotency-Key (docs/api.md), so that a retry of this very
  // request can never apply it twice.
  std::vector<std::pair<std::string, std::string>> headers;
  if (method == "POST") {
    FLEETID_TRY(random, crypto::OpenSslRng::Instance().Bytes(16));
    headers.emplace_back("Idempotency-Key", crypto::Hex(random));
  }
  FLEETID_TRY(reply, connection_->Request(method, target, text,
                                          body.is_null() ? "" : "application/json", headers));
  Json answer = Json::parse(reply.body, nullptr, false);
  if (reply.status >= 200 && reply.status < 300) {
    if (answer.is_discarded()) {
      return MakeError(ErrorCode::kInternal, "the server's answer to {} {} is not JSON", method,
                       target);
    }
    return answer;
  }
  std::string message = fmt::format("HTTP {}", reply.status);
  if (answer.is_object() && answer.contains("message") && answer["message"].is_string()) {
    message = answer["message"].get<std::string>();
  }
  std::string id = reply.Header("x-request-id");
  return MakeError(CodeOfStatus(reply.status), "{} (request {})", message, id.empty() ? "-" : id);
}

Result<Session> OpenSession(const RemoteFlags& flags) {
  Session session;
  FLEETID_TRY(profile, LoadProfile(flags.ProfileDir()));
  if (!flags.server.empty()) profile.server = flags.server;
  if (profile.key_label.empty()) {
    return MakeError(ErrorCode::kNotFound, "the profile in '{}' has no operator key yet",
                     profile.dir.string());
  }
  std::shared_ptr<custody::Token> token;
  if (!profile.file_key) {
    FLEETID_TRY(pin, ReadSecret(profile.pin_file, profile.pin_env, "operator token PIN", false));
    FLEETID_TRY(opened, OpenOperatorToken(profile, pin, false));
    token = std::move(opened);
  }
  FLEETID_TRY(key, OpenKey(profile, token, profile.key_label));
  FLEETID_TRY(api, Api::Connect(profile, &key));
  session.profile = std::move(profile);
  session.key = std::move(key);
  session.api = std::move(api);
  return session;
}

}  // namespace fleetid::cli
