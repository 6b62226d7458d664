// A real SoftHSM2 token store in a temporary directory, shared by the tests of one process.
#ifndef FLEETID_CUSTODY_TEST_TOKEN_H_
#define FLEETID_CUSTODY_TEST_TOKEN_H_

#include <filesystem>
#include <string>

#include "custody/store.h"

namespace fleetid::custody::testing {

// DataDir is this process's temporary data directory (removed at exit).
const std::filesystem::path& DataDir();

// Opened opens the embedded store in DataDir() (creating it the first time) and keeps it open.
OpenedToken& Opened();

// CloseAll drops every reference this helper holds, so the module is finalised as at process
// exit; the next Opened() starts from the files on disk, as a second process would.
void CloseAll();

// ClearCkaSign sets CKA_SIGN to false on the private key labelled |label| directly through the
// module, behind any signer's back, as a careless operator's tool might (the token must then
// refuse C_SignInit).
void ClearCkaSign(const std::string& label);

}  // namespace fleetid::custody::testing

#endif  // FLEETID_CUSTODY_TEST_TOKEN_H_
