// Configuration shared below the composition root: which token holds the authority's keys. The
// server's own configuration (listeners, database, URLs) is node::ServerConfig (node/config.h).
#ifndef FLEETID_COMMON_CONFIG_H_
#define FLEETID_COMMON_CONFIG_H_

#include <string>

namespace fleetid {

// CustodyConfig says which PKCS#11 token holds the authority's keys and where its PIN comes from.
// With an empty module_path the authority runs its embedded SoftHSM2 token store under
// <data_dir>/custody and generates its own PINs there (see docs/custody.md).
struct CustodyConfig {
  std::string module_path;                     // e.g. /usr/lib/vendor/libvendorpkcs11.so
  std::string token_label = "fleetid-authority";
  std::string pin_file;  // a file holding the user PIN (mounted from a secret store), mode 0600/0400
  std::string pin_env;   // or the name of an environment variable holding the user PIN
};

}  // namespace fleetid

#endif  // FLEETID_COMMON_CONFIG_H_
