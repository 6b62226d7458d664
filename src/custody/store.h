// Opening the authority's token: the embedded SoftHSM2 store under the data directory, or a
// configured PKCS#11 module (a vendor HSM, a TPM-backed module) with its PIN from a secret store.
#ifndef FLEETID_CUSTODY_STORE_H_
#define FLEETID_CUSTODY_STORE_H_

#include <filesystem>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/secret.h"
#include "custody/custody.h"

namespace fleetid::custody {

struct OpenedToken {
  std::shared_ptr<Token> token;
  std::filesystem::path module_path;
  bool embedded = false;
  // Embedded store only: where the token files, softhsm2.conf and PIN files live, and whether
  // this call created them.
  std::filesystem::path store_dir;
  bool created = false;
};

// FindSoftHsmModule returns the path of libsofthsm2.so as Debian installs it; kUnavailable if
// SoftHSM2 is not installed.
[[nodiscard]] Result<std::filesystem::path> FindSoftHsmModule();

// OpenSoftHsmStore makes |store_dir| a SoftHSM2 token store of its own on first use (its
// softhsm2.conf and token directory, 0700), points SOFTHSM2_CONF at it and loads SoftHSM2. One
// store per process: SoftHSM2 reads its configuration once. Call it before other threads exist.
[[nodiscard]] Result<std::shared_ptr<Module>> OpenSoftHsmStore(const std::filesystem::path& store_dir);

// OpenOrCreateToken logs in to the token |token_label| of |module| with the user PIN in
// |pin_dir|/user.pin. With |create|, a missing token is initialised in a free slot, with SO and
// user PINs generated into |pin_dir| (0600 files, written before the token is initialised).
[[nodiscard]] Result<OpenedToken> OpenOrCreateToken(const std::shared_ptr<Module>& module,
                                                    std::string_view token_label,
                                                    const std::filesystem::path& pin_dir, Rng& rng,
                                                    bool create);

// OpenEmbedded opens (creating on first use) the SoftHSM2 token store in |data_dir|/custody:
// its own softhsm2.conf and token directory (the system token directory is never touched), and
// generated SO and user PINs kept in 0600 files beside them. It points SOFTHSM2_CONF at that
// configuration, so call it at start-up before other threads exist.
[[nodiscard]] Result<OpenedToken> OpenEmbedded(const std::filesystem::path& data_dir,
                                               std::string_view token_label, Rng& rng);

// OpenCustody opens the token |config| names: the embedded store when module_path is empty,
// otherwise the module with the PIN from pin_file or pin_env.
[[nodiscard]] Result<OpenedToken> OpenCustody(const CustodyConfig& config,
                                              const std::filesystem::path& data_dir, Rng& rng);

// ReadPinFile reads a PIN from |path| (trailing newline dropped). The file must not be readable
// by group or others: kPermissionDenied names the mode otherwise.
[[nodiscard]] Result<crypto::SecretBuffer> ReadPinFile(const std::filesystem::path& path);

// ReadPinEnv reads a PIN from the environment variable |name|; kNotFound if unset or empty.
[[nodiscard]] Result<crypto::SecretBuffer> ReadPinEnv(const std::string& name);

}  // namespace fleetid::custody

#endif  // FLEETID_CUSTODY_STORE_H_
