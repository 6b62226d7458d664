// testing/token.h: a real SoftHSM2 token store in a temporary directory, shared by the tests of
// one process (custody::OpenEmbedded: its PIN stays in the store's files and is never logged).
#ifndef FLEETID_TESTING_TOKEN_H_
#define FLEETID_TESTING_TOKEN_H_

#include <filesystem>
#include <string>

#include "custody/store.h"

namespace fleetid::test {

// DataDir is this process's temporary data directory (removed at exit).
const std::filesystem::path& DataDir();

// Opened opens the embedded store in DataDir() (creating it the first time) and keeps it open.
custody::OpenedToken& Opened();

// CloseAll drops every reference this helper holds, so the module is finalised as at process
// exit; the next Opened() starts from the files on disk, as a second process would.
void CloseAll();

// ClearCkaSign sets CKA_SIGN to false on the private key labelled |label| directly through the
// module, behind any signer's back, as a careless operator's tool might (the token must then
// refuse C_SignInit).
void ClearCkaSign(const std::string& label);

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_TOKEN_H_
