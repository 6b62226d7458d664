#include "custody/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>

#include "common/log.h"

namespace fleetid::custody {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kPinRandomBytes = 24;  // 48 hex characters

Result<void> MakePrivateDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable, "cannot create '{}': {}", dir.string(),
                     ec.message());
  }
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable, "cannot restrict '{}': {}", dir.string(),
                     ec.message());
  }
  return {};
}

// WriteSecretFile writes |secret| to |path| with mode 0600 through a temporary file, fsync and
// rename, so a crash leaves either no file or the whole one.
Result<void> WriteSecretFile(const fs::path& path, const crypto::SecretBuffer& secret) {
  const fs::path tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot create '{}': {}", tmp.string(),
                     std::strerror(errno));
  }
  std::size_t done = 0;
  while (done < secret.size()) {
    const ssize_t n = ::write(fd, secret.data() + done, secret.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == secret.size() && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  }
  return {};
}

Result<crypto::SecretBuffer> GeneratePin(Rng& rng) {
  crypto::SecretBuffer raw(kPinRandomBytes);
  FLEETID_CHECK_OK(rng.Fill(raw.mutable_bytes()));
  static constexpr char kHex[] = "0123456789abcdef";
  crypto::SecretBuffer pin(kPinRandomBytes * 2);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    pin.data()[2 * i] = static_cast<std::uint8_t>(kHex[raw.data()[i] >> 4]);
    pin.data()[2 * i + 1] = static_cast<std::uint8_t>(kHex[raw.data()[i] & 0xf]);
  }
  return pin;
}

Result<void> WriteIfMissing(const fs::path& path, std::string_view text) {
  if (fs::exists(path)) return {};
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) {
    return MakeError(ErrorCode::kUnavailable, "cannot write '{}'", path.string());
  }
  return {};
}

}  // namespace

Result<fs::path> FindSoftHsmModule() {
  for (const char* candidate :
       {"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"}) {
    if (fs::exists(candidate)) return fs::path(candidate);
  }
  return MakeError(ErrorCode::kUnavailable,
                   "SoftHSM2 is not installed (no libsofthsm2.so); run scripts/bootstrap.sh or "
                   "set custody.module_path");
}

Result<crypto::SecretBuffer> ReadPinFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return MakeError(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kUnavailable,
                     "cannot open PIN file '{}': {}", path.string(), std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return MakeError(ErrorCode::kInvalidArgument, "PIN file '{}' is not a regular file",
                     path.string());
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    ::close(fd);
    return MakeError(ErrorCode::kPermissionDenied,
                     "PIN file '{}' has mode {:04o}; it must not be accessible to group or others "
                     "(chmod 600)",
                     path.string(), st.st_mode & 07777);
  }
  if (st.st_size <= 0 || st.st_size > 256) {
    ::close(fd);
    return MakeError(ErrorCode::kInvalidArgument, "PIN file '{}' must hold 1 to 256 bytes",
                     path.string());
  }
  crypto::SecretBuffer buf(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  while (done > 0 && (buf.data()[done - 1] == '\n' || buf.data()[done - 1] == '\r')) --done;
  if (done == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "PIN file '{}' is empty", path.string());
  }
  crypto::SecretBuffer pin(done);
  std::copy_n(buf.data(), done, pin.data());
  return pin;
}

Result<crypto::SecretBuffer> ReadPinEnv(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr || *value == '\0') {
    return MakeError(ErrorCode::kNotFound, "environment variable '{}' holding the PIN is not set",
                     name);
  }
  return crypto::SecretBuffer::FromString(value);
}

Result<std::shared_ptr<Module>> OpenSoftHsmStore(const fs::path& store_dir) {
  std::error_code ec;
  const fs::path dir = fs::absolute(store_dir, ec);
  const fs::path tokens = dir / "tokens";
  const fs::path conf = dir / "softhsm2.conf";
  FLEETID_CHECK_OK(MakePrivateDir(dir));
  FLEETID_CHECK_OK(MakePrivateDir(tokens));
  FLEETID_CHECK_OK(WriteIfMissing(conf, fmt::format("# fleetid SoftHSM2 token store\n"
                                                    "directories.tokendir = {}\n"
                                                    "objectstore.backend = file\n"
                                                    "log.level = ERROR\n"
                                                    "slots.removable = false\n",
                                                    tokens.string())));
  const char* current = std::getenv("SOFTHSM2_CONF");
  FLEETID_TRY(module_path, FindSoftHsmModule());
  if (current == nullptr || conf.string() != current) {
    // SoftHSM2 reads SOFTHSM2_CONF in C_Initialize; a module already initialised with another
    // store in this process would silently keep using that one.
    ::setenv("SOFTHSM2_CONF", conf.c_str(), 1);
  }
  return Module::Load(module_path);
}

Result<OpenedToken> OpenOrCreateToken(const std::shared_ptr<Module>& module,
                                      std::string_view token_label, const fs::path& pin_dir,
                                      Rng& rng, bool create) {
  const fs::path so_pin_path = pin_dir / "so.pin";
  const fs::path user_pin_path = pin_dir / "user.pin";
  bool created = false;
  auto slot = module->FindToken(token_label);
  if (!slot && slot.error().code() == ErrorCode::kNotFound && create) {
    if (!fs::exists(user_pin_path)) {
      // PINs are written before the token is initialised: a crash in between leaves PINs for a
      // token that is initialised on the next open, never a token whose PIN is lost.
      FLEETID_CHECK_OK(MakePrivateDir(pin_dir));
      FLEETID_TRY(so_pin, GeneratePin(rng));
      FLEETID_TRY(user_pin, GeneratePin(rng));
      FLEETID_CHECK_OK(WriteSecretFile(so_pin_path, so_pin));
      FLEETID_CHECK_OK(WriteSecretFile(user_pin_path, user_pin));
    }
    FLEETID_TRY(so_pin, ReadPinFile(so_pin_path));
    FLEETID_TRY(user_pin, ReadPinFile(user_pin_path));
    FLEETID_TRY(new_slot, module->InitToken(token_label, so_pin, user_pin));
    (void)new_slot;
    created = true;
  } else if (!slot) {
    return MakeError(slot.error());
  }
  FLEETID_TRY(user_pin, ReadPinFile(user_pin_path));
  FLEETID_TRY(token, Token::Open(module, token_label, user_pin));
  OpenedToken out;
  out.token = std::move(token);
  out.module_path = module->path();
  out.created = created;
  return out;
}

Result<OpenedToken> OpenEmbedded(const fs::path& data_dir, std::string_view token_label,
                                 Rng& rng) {
  std::error_code ec;
  const fs::path dir = fs::absolute(data_dir, ec) / "custody";
  FLEETID_TRY(module, OpenSoftHsmStore(dir));
  FLEETID_TRY(out, OpenOrCreateToken(module, token_label, dir, rng, true));
  if (out.created) {
    log::Info("custody: initialised embedded token",
              {{"token", token_label}, {"store", dir.string()}});
  }
  out.embedded = true;
  out.store_dir = dir;
  return out;
}

Result<OpenedToken> OpenCustody(const CustodyConfig& config, const fs::path& data_dir, Rng& rng) {
  if (config.module_path.empty()) return OpenEmbedded(data_dir, config.token_label, rng);
  if (config.pin_file.empty() == config.pin_env.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "custody.module_path needs exactly one of custody.pin_file or "
                     "custody.pin_env");
  }
  FLEETID_TRY(module, Module::Load(config.module_path));
  auto pin = config.pin_file.empty() ? ReadPinEnv(config.pin_env) : ReadPinFile(config.pin_file);
  if (!pin) return MakeError(pin.error());
  FLEETID_TRY(token, Token::Open(module, config.token_label, *pin));
  OpenedToken out;
  out.token = std::move(token);
  out.module_path = config.module_path;
  return out;
}

}  // namespace fleetid::custody
