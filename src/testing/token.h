// testing/token.h: a real SoftHSM2 token store in a temporary directory, shared by the tests of
// one process (custody::OpenEmbedded: its PIN stays in the store's files and is never logged).
#ifndef FLEETID_TESTING_TOKEN_H_
#define FLEETID_TESTING_TOKEN_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "custody/store.h"

namespace fleetid::test {

// DataDir is this process's temporary data directory (removed at exit).
const std::filesystem::path& DataDir();

// Opened opens the embedded store in DataDir() (creating it the first time) and keeps it open.
custody::OpenedToken& Opened();

// TheToken is Opened().token: the token every test of this process shares.
std::shared_ptr<custody::Token> TheToken();

// UniqueLabel returns "<base>-<pid>-<n>", a key label no other test of this run has used: the
// token is shared by every test of the process, and its files outlive a crashed one.
std::string UniqueLabel(std::string_view base);

// CloseAll drops every reference this helper holds, so the module is finalised as at process
// exit; the next Opened() starts from the files on disk, as a second process would.
void CloseAll();

// ClearCkaSign sets CKA_SIGN to false on the private key labelled |label| directly through the
// module, behind any signer's back, as a careless operator's tool might (the token must then
// refuse C_SignInit).
void ClearCkaSign(const std::string& label);

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_TOKEN_H_
