#include "testing/token.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <optional>

#include "crypto/crypto.h"

namespace fleetid::test {
namespace {

struct State {
  std::filesystem::path dir;
  std::optional<custody::OpenedToken> opened;
  ~State() {
    opened.reset();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

State& GetState() {
  static State state;
  if (state.dir.empty()) {
    std::string templ =
        (std::filesystem::temp_directory_path() / "fleetid-custody-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    state.dir = templ;
  }
  return state;
}

}  // namespace

const std::filesystem::path& DataDir() { return GetState().dir; }

custody::OpenedToken& Opened() {
  State& s = GetState();
  if (!s.opened) {
    auto opened = custody::OpenEmbedded(s.dir, "fleetid-test", crypto::OpenSslRng::Instance());
    if (!opened) {
      ADD_FAILURE() << "opening the embedded store: " << opened.error();
      std::abort();
    }
    s.opened = std::move(*opened);
  }
  return *s.opened;
}

std::shared_ptr<custody::Token> TheToken() { return Opened().token; }

std::string UniqueLabel(std::string_view base) {
  static std::atomic<int> counter{0};
  return fmt::format("{}-{}-{}", base, ::getpid(), counter++);
}

void CloseAll() { GetState().opened.reset(); }

void ClearCkaSign(const std::string& label) {
  const std::shared_ptr<custody::Token>& token = Opened().token;
  CK_FUNCTION_LIST* fns = token->module()->functions();
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_SLOT_ID slot = *token->module()->FindToken(token->label());
  ASSERT_EQ(fns->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
            CKR_OK);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
  ASSERT_EQ(fns->C_FindObjectsInit(s, find, 2), CKR_OK);
  CK_OBJECT_HANDLE key = 0;
  CK_ULONG n = 0;
  ASSERT_EQ(fns->C_FindObjects(s, &key, 1, &n), CKR_OK);
  fns->C_FindObjectsFinal(s);
  ASSERT_EQ(n, 1u);
  CK_BBOOL no = CK_FALSE;
  CK_ATTRIBUTE clear{CKA_SIGN, &no, sizeof(no)};
  ASSERT_EQ(fns->C_SetAttributeValue(s, key, &clear, 1), CKR_OK);
  fns->C_CloseSession(s);
}

namespace {

// Closes the token before exit(): SoftHSM2's own static objects were constructed after this
// file's state and so are destroyed before it, and C_Logout on a destroyed module crashes.
class CloseAtTearDown : public ::testing::Environment {
 public:
  void TearDown() override {
    State& s = GetState();
    s.opened.reset();
    std::error_code ec;
    if (!s.dir.empty()) std::filesystem::remove_all(s.dir, ec);
    s.dir.clear();
  }
};

[[maybe_unused]] ::testing::Environment* const kCloseAtTearDown =
    ::testing::AddGlobalTestEnvironment(new CloseAtTearDown);  // NOLINT: gtest takes ownership.

}  // namespace

}  // namespace fleetid::test
