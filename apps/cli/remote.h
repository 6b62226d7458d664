// The command line as a client of the operator API (docs/cli.md): an operator's profile (the
// server, the trust anchor, the operator's certificate and where the operator's key lives), the
// operator's token, and one authenticated HTTPS session to /api/v1.
//
// The operator's key is made in the operator's own PKCS#11 token: by default an embedded SoftHSM2
// store in the profile directory, or any token a configured module offers (a smart card through
// OpenSC). Its PIN is prompted for on a terminal, or read from a 0600 file or an environment
// variable, never from the command line. A key in a file (mode 0600) is only for service
// accounts, and only with an explicit flag.
#ifndef FLEETID_APPS_CLI_REMOTE_H_
#define FLEETID_APPS_CLI_REMOTE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/https_client.h"
#include "common/error.h"
#include "crypto/handles.h"
#include "crypto/secret.h"
#include "custody/custody.h"

namespace fleetid::cli {

// The exit codes of commands (docs/cli.md § Exit codes). Usage errors are CLI11's (105 and up).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,           // anything else, locally or on the server
  kExitInvalid = 2,          // the server or the command refused the input (400, 413, 422)
  kExitRefused = 3,          // refused by policy (403)
  kExitNotFound = 4,         // 404
  kExitConflict = 5,         // 409: the state changed, a proposal superseded or expired
  kExitUnreachable = 6,      // the server could not be reached, or the TLS handshake failed
  kExitUnauthenticated = 7,  // 401: no operator certificate, or a revoked or expired one
};

// ExitCodeOf maps an error's code to the exit code a script can tell apart.
int ExitCodeOf(const Error& error);

// RemoteFlags are the root command's flags that make a command a client of the API.
struct RemoteFlags {
  std::string server;   // --server URL; overrides the profile's
  std::string profile;  // --profile DIR (default $FLEETID_PROFILE, else ~/.config/fleetid)
  bool json = false;    // --json: machine-readable output

  // Enabled is true when --server or --profile was given or $FLEETID_PROFILE is set: the
  // command then goes through the API instead of opening the data directory.
  bool Enabled() const;
  std::filesystem::path ProfileDir() const;
};

// Profile is profile.json in the profile directory. It names where the key is, never holds it,
// and never holds a PIN.
struct Profile {
  std::filesystem::path dir;
  std::string server;  // https://host:port
  std::string name;    // the operator, once enrolled
  // The operator's token: an empty module is the embedded SoftHSM2 store in dir/token.
  std::string module;
  std::string token_label = "fleetid-operator";
  std::string key_label;  // the current key in the token ("operator-1", "operator-2", ...)
  int generation = 0;
  std::string pin_file;  // where the PIN is read from, if not prompted for
  std::string pin_env;
  bool file_key = false;  // a service account's key in dir/<key_label>.key.pem (0600)

  std::filesystem::path AnchorPath() const { return dir / "anchor.pem"; }
  std::filesystem::path ChainPath() const { return dir / "chain.pem"; }
  std::filesystem::path FileKeyPath(const std::string& label) const {
    return dir / (label + ".key.pem");
  }
};

// LoadProfile reads |dir|/profile.json; kNotFound says to run `fleetid operator bootstrap` or
// `enroll` first.
[[nodiscard]] Result<Profile> LoadProfile(const std::filesystem::path& dir);
// SaveProfile writes profile.json (0600) through a temporary file and a rename.
[[nodiscard]] Result<void> SaveProfile(const Profile& profile);

// PemCertsDer reads the PEM certificates in |path| (a chain, leaf first) as DER.
[[nodiscard]] Result<std::vector<std::vector<std::uint8_t>>> PemCertsDer(
    const std::filesystem::path& path);

// ReadSecret reads a PIN or a one-time code: from |file| (which must be 0600), else from the
// environment variable |env|, else prompted for on the terminal (without echo, twice when
// |confirm|). kInvalidArgument when none is available.
[[nodiscard]] Result<crypto::SecretBuffer> ReadSecret(const std::string& file,
                                                      const std::string& env,
                                                      std::string_view prompt, bool confirm);

// OperatorKey is the operator's key, opened: its public half and an EVP_PKEY whose private
// operations happen in the token (or, for a service account, the file key).
struct OperatorKey {
  std::shared_ptr<custody::Token> token;  // null for a file key
  crypto::EvpPkeyPtr public_key;
  crypto::EvpPkeyPtr signing_key;
};

// OpenOperatorToken opens the profile's token with |pin|; with |create|, the embedded store's
// token is initialised first when it is missing (its SO PIN random and not kept: a lost user PIN
// means a new token and a new invitation, not a reset).
[[nodiscard]] Result<std::shared_ptr<custody::Token>> OpenOperatorToken(
    const Profile& profile, const crypto::SecretBuffer& pin, bool create);

// NewKey makes the key |label| in the token (P-256, sensitive, never extractable) or, for a
// service account's profile, the file key, and opens it.
[[nodiscard]] Result<OperatorKey> NewKey(const Profile& profile,
                                         const std::shared_ptr<custody::Token>& token,
                                         const std::string& label);
// OpenKey opens the existing key |label|.
[[nodiscard]] Result<OperatorKey> OpenKey(const Profile& profile,
                                          const std::shared_ptr<custody::Token>& token,
                                          const std::string& label);

// Api is one HTTPS connection to the server's /api/v1, as the operator whose key and
// certificate it holds, or anonymous (for bootstrap and enroll, which take one-time codes).
class Api {
 public:
  // Connect reads the profile's trust anchor and connects; with |key| and the profile's chain,
  // as that operator.
  [[nodiscard]] static Result<std::unique_ptr<Api>> Connect(const Profile& profile,
                                                            const OperatorKey* key);

  // Call sends |method| |path| (under /api/v1/) with |body| (null for none) and returns the JSON
  // answer of a 2xx. Any other status is an error whose code follows the status and whose
  // message is the server's, with its request id; kUnavailable when the server is unreachable.
  [[nodiscard]] Result<nlohmann::json> Call(std::string_view method, std::string_view path,
                                            const nlohmann::json& body = nullptr);

 private:
  explicit Api(std::unique_ptr<agent::Connection> connection)
      : connection_(std::move(connection)) {}
  std::unique_ptr<agent::Connection> connection_;
};

// Session is an operator's profile, key and connection, opened for one command.
struct Session {
  Profile profile;
  OperatorKey key;
  std::unique_ptr<Api> api;
};

// OpenSession loads the profile (|flags|' server overriding its own), reads the PIN, opens the
// key and connects as the operator.
[[nodiscard]] Result<Session> OpenSession(const RemoteFlags& flags);

}  // namespace fleetid::cli

#endif  // FLEETID_APPS_CLI_REMOTE_H_
