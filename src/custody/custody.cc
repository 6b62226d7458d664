#include "custody/custody.h"

#include <dlfcn.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>

#include "crypto/crypto.h"
#include "crypto/keys.h"

namespace fleetid::custody {
namespace {

using crypto::KeyType;
using crypto::Suite;
using crypto::SuiteId;

Error P11Error(CK_RV rv, std::string_view what) {
  ErrorCode code = ErrorCode::kInternal;
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_NOT_LOGGED_IN:
      code = ErrorCode::kUnauthenticated;
      break;
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_ACTION_PROHIBITED:
      code = ErrorCode::kPermissionDenied;
      break;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_SIZE_RANGE:
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_TEMPLATE_INCOMPLETE:
    case CKR_ATTRIBUTE_VALUE_INVALID:
    case CKR_DOMAIN_PARAMS_INVALID:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_DATA_LEN_RANGE:
      code = ErrorCode::kInvalidArgument;
      break;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_SLOT_ID_INVALID:
      code = ErrorCode::kNotFound;
      break;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_HOST_MEMORY:
    case CKR_SESSION_COUNT:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
      code = ErrorCode::kUnavailable;
      break;
    default:
      break;
  }
  return Error(code, fmt::format("{}: {}", what, Pkcs11ReturnName(rv)));
}

std::string TrimPadded(const unsigned char* data, std::size_t size) {
  std::string out(reinterpret_cast<const char*>(data), size);
  out.erase(out.find_last_not_of(' ') + 1);
  return out;
}

// Loaded modules by canonical path; see Module::Load.
struct LoadedModules {
  Mutex mu;
  std::map<std::string, std::weak_ptr<Module>> by_path FLEETID_GUARDED_BY(mu);
};
LoadedModules& Loaded() {
  static LoadedModules loaded;
  return loaded;
}

// Per-module record of the token currently logged in at each slot. PKCS#11 login state belongs
// to the whole process, so a second Open of a logged-in token cannot rely on C_Login to check its
// PIN; it is checked against a salted digest of the PIN that logged in instead.
struct LoginRecord {
  std::weak_ptr<Token> token;
  std::array<std::uint8_t, 16> salt{};
  crypto::Sha256Digest pin_digest{};
};
struct LoginRecords {
  Mutex mu;
  std::map<std::pair<const Module*, CK_SLOT_ID>, LoginRecord> by_slot FLEETID_GUARDED_BY(mu);
};
LoginRecords& Logins() {
  static LoginRecords logins;
  return logins;
}

crypto::Sha256Digest PinDigest(std::span<const std::uint8_t> salt, const crypto::SecretBuffer& pin) {
  crypto::SecretBuffer input(salt.size() + pin.size());
  std::copy(salt.begin(), salt.end(), input.data());
  std::copy(pin.bytes().begin(), pin.bytes().end(), input.data() + salt.size());
  return crypto::Sha256(input.bytes());
}


// DER of the curve OID, the CKA_EC_PARAMS value (RFC 5480 namedCurve), encoded by OpenSSL.
std::vector<std::uint8_t> CurveParams(int nid) {
  ASN1_OBJECT* obj = OBJ_nid2obj(nid);
  const int len = i2d_ASN1_OBJECT(obj, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_ASN1_OBJECT(obj, &p);
  return der;
}

// CKA_EC_PARAMS for Ed25519: PKCS#11 3.0 allows the id-Ed25519 OID (RFC 8410) or the
// PrintableString "edwards25519"; modules differ in which they write back.
constexpr std::uint8_t kEd25519Oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
constexpr std::uint8_t kEd25519Name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd',
                                         's',  '2',  '5', '5', '1', '9'};

// CKA_EC_POINT is a DER OCTET STRING holding the point (PKCS#11 2.40 §2.3.3); some modules
// return the bare point. Accept both.
std::vector<std::uint8_t> UnwrapEcPoint(std::span<const std::uint8_t> value) {
  const unsigned char* p = value.data();
  crypto::Asn1OctetStringPtr os(d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(value.size())));
  if (os && p == value.data() + value.size()) {
    const unsigned char* d = ASN1_STRING_get0_data(os.get());
    return {d, d + ASN1_STRING_length(os.get())};
  }
  return {value.begin(), value.end()};
}

}  // namespace

std::string Pkcs11ReturnName(CK_RV rv) {
  static const std::map<CK_RV, std::string_view> kNames = {
      {CKR_OK, "CKR_OK"},
      {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
      {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
      {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
      {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
      {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
      {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
      {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
      {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
      {CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED"},
      {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
      {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
      {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
      {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
      {CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID"},
      {CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED"},
      {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
      {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
      {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
      {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
      {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
      {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
      {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
      {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
      {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
      {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
      {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
      {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
      {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
      {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
      {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
      {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
      {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
      {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
      {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
      {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
      {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
      {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
      {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
      {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
      {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
      {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
      {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
      {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
  };
  auto it = kNames.find(rv);
  if (it != kNames.end()) return std::string(it->second);
  return fmt::format("CKR_{:#x}", rv);
}

// ---------------------------------------------------------------------------------------------
// Module

Result<std::shared_ptr<Module>> Module::Load(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return MakeError(ErrorCode::kUnavailable, "PKCS#11 module '{}' does not exist",
                     path.string());
  }
  const std::string key = std::filesystem::canonical(path, ec).string();
  LoadedModules& loaded = Loaded();
  MutexLock lock(loaded.mu);
  if (auto live = loaded.by_path[key].lock()) return live;

  // RTLD_NODELETE: modules keep static state and threads that do not survive being unmapped,
  // and sanitizer reports need the symbols after C_Finalize.
  void* handle = dlopen(key.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) {
    const char* why = dlerror();
    return MakeError(ErrorCode::kUnavailable, "cannot load PKCS#11 module '{}': {}",
                     path.string(), why != nullptr ? why : "unknown error");
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  CK_FUNCTION_LIST* fns = nullptr;
  if (get_list == nullptr || get_list(&fns) != CKR_OK || fns == nullptr) {
    dlclose(handle);
    return MakeError(ErrorCode::kUnavailable, "'{}' is not a PKCS#11 module (no C_GetFunctionList)",
                     path.string());
  }
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  if (CK_RV rv = fns->C_Initialize(&args); rv != CKR_OK) {
    dlclose(handle);
    return MakeError(P11Error(rv, fmt::format("initialising PKCS#11 module '{}'", path.string())));
  }
  std::shared_ptr<Module> module(new Module(key, handle, fns));  // NOLINT: private constructor.
  loaded.by_path[key] = module;
  return module;
}

Module::~Module() {
  fns_->C_Finalize(nullptr);
  dlclose(handle_);
}

Result<std::vector<TokenSummary>> Module::ListTokens() const {
  CK_ULONG count = 0;
  if (CK_RV rv = fns_->C_GetSlotList(CK_TRUE, nullptr, &count); rv != CKR_OK) {
    return MakeError(P11Error(rv, "listing slots"));
  }
  std::vector<CK_SLOT_ID> slots(count);
  if (CK_RV rv = fns_->C_GetSlotList(CK_TRUE, slots.data(), &count); rv != CKR_OK) {
    return MakeError(P11Error(rv, "listing slots"));
  }
  slots.resize(count);
  std::vector<TokenSummary> out;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (CK_RV rv = fns_->C_GetTokenInfo(slot, &info); rv != CKR_OK) {
      if (rv == CKR_TOKEN_NOT_PRESENT) continue;
      return MakeError(P11Error(rv, "reading token info"));
    }
    out.push_back({slot, TrimPadded(info.label, sizeof(info.label)),
                   TrimPadded(info.manufacturerID, sizeof(info.manufacturerID)),
                   TrimPadded(info.model, sizeof(info.model)),
                   TrimPadded(info.serialNumber, sizeof(info.serialNumber)),
                   (info.flags & CKF_TOKEN_INITIALIZED) != 0,
                   (info.flags & CKF_USER_PIN_INITIALIZED) != 0});
  }
  return out;
}

Result<CK_SLOT_ID> Module::FindToken(std::string_view label) const {
  FLEETID_TRY(tokens, ListTokens());
  std::optional<CK_SLOT_ID> found;
  for (const TokenSummary& t : tokens) {
    if (!t.initialized || t.label != label) continue;
    if (found) {
      return MakeError(ErrorCode::kConflict, "two tokens are labelled '{}' in '{}'", label,
                       path_.string());
    }
    found = t.slot;
  }
  if (!found) {
    return MakeError(ErrorCode::kNotFound, "no token labelled '{}' in PKCS#11 module '{}'", label,
                     path_.string());
  }
  return *found;
}

Result<CK_SLOT_ID> Module::InitToken(std::string_view label, const crypto::SecretBuffer& so_pin,
                                     const crypto::SecretBuffer& user_pin) {
  if (label.empty() || label.size() > 32) {
    return MakeError(ErrorCode::kInvalidArgument, "token label must be 1 to 32 bytes");
  }
  FLEETID_TRY(tokens, ListTokens());
  std::optional<CK_SLOT_ID> free_slot;
  for (const TokenSummary& t : tokens) {
    if (t.initialized && t.label == label) {
      return MakeError(ErrorCode::kConflict, "a token labelled '{}' already exists", label);
    }
    if (!t.initialized && !free_slot) free_slot = t.slot;
  }
  if (!free_slot) {
    return MakeError(ErrorCode::kUnavailable, "no uninitialised token in '{}'", path_.string());
  }
  std::array<unsigned char, 32> padded;
  padded.fill(' ');
  std::copy(label.begin(), label.end(), padded.begin());
  if (CK_RV rv = fns_->C_InitToken(*free_slot, const_cast<std::uint8_t*>(so_pin.data()),
                                   so_pin.size(), padded.data());
      rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("initialising token '{}'", label)));
  }
  // Slot ids may be reassigned once a token is initialised (SoftHSM2 does): find it by label.
  FLEETID_TRY(slot, FindToken(label));
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  if (CK_RV rv = fns_->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                     &session);
      rv != CKR_OK) {
    return MakeError(P11Error(rv, "opening a session to set the user PIN"));
  }
  CK_RV rv = fns_->C_Login(session, CKU_SO, const_cast<std::uint8_t*>(so_pin.data()), so_pin.size());
  if (rv == CKR_OK) {
    rv = fns_->C_InitPIN(session, const_cast<std::uint8_t*>(user_pin.data()), user_pin.size());
    fns_->C_Logout(session);
  }
  fns_->C_CloseSession(session);
  if (rv != CKR_OK) return MakeError(P11Error(rv, "setting the user PIN"));
  return slot;
}

// ---------------------------------------------------------------------------------------------
// Token sessions

class Token::Lease {
 public:
  Lease(Token* token, CK_SESSION_HANDLE session) : token_(token), session_(session) {}
  Lease(Lease&& other) noexcept
      : token_(std::exchange(other.token_, nullptr)), session_(other.session_) {}
  Lease& operator=(Lease&&) = delete;
  Lease(const Lease&) = delete;
  ~Lease() {
    if (token_ == nullptr) return;
    if (broken_) {
      token_->module_->functions()->C_CloseSession(session_);
    } else {
      token_->Return(session_);
    }
  }

  CK_SESSION_HANDLE get() const { return session_; }
  CK_FUNCTION_LIST* fns() const { return token_->module_->functions(); }
  // Check marks the session unusable after |rv| if it says so, and passes |rv| through.
  CK_RV Check(CK_RV rv) {
    if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_REMOVED) {
      broken_ = true;
    }
    return rv;
  }

 private:
  Token* token_;
  CK_SESSION_HANDLE session_;
  bool broken_ = false;
};

Result<Token::Lease> Token::Borrow() {
  {
    MutexLock lock(mu_);
    if (!idle_.empty()) {
      CK_SESSION_HANDLE s = idle_.back();
      idle_.pop_back();
      return Lease(this, s);
    }
  }
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  if (CK_RV rv = module_->functions()->C_OpenSession(slot_, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                                     nullptr, nullptr, &s);
      rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("opening a session on token '{}'", label_)));
  }
  return Lease(this, s);
}

void Token::Return(CK_SESSION_HANDLE session) {
  MutexLock lock(mu_);
  idle_.push_back(session);
}

Result<std::shared_ptr<Token>> Token::Open(const std::shared_ptr<Module>& module,
                                           std::string_view label,
                                           const crypto::SecretBuffer& pin) {
  FLEETID_TRY(slot, module->FindToken(label));
  LoginRecords& logins = Logins();
  MutexLock lock(logins.mu);
  LoginRecord& record = logins.by_slot[{module.get(), slot}];
  if (auto live = record.token.lock()) {
    if (!crypto::ConstantTimeEquals(PinDigest(record.salt, pin), record.pin_digest)) {
      return MakeError(ErrorCode::kUnauthenticated, "wrong PIN for token '{}'", label);
    }
    return live;
  }
  std::shared_ptr<Token> token(new Token(module, slot, std::string(label)));  // NOLINT
  CK_FUNCTION_LIST* fns = module->functions();
  if (CK_RV rv = fns->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                    &token->login_session_);
      rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("opening a session on token '{}'", label)));
  }
  auto* pin_bytes = const_cast<std::uint8_t*>(pin.data());
  CK_RV rv = fns->C_Login(token->login_session_, CKU_USER, pin_bytes, pin.size());
  if (rv == CKR_USER_ALREADY_LOGGED_IN) {
    // Logged in by code outside this class: log out so the PIN given here is really checked.
    fns->C_Logout(token->login_session_);
    rv = fns->C_Login(token->login_session_, CKU_USER, pin_bytes, pin.size());
  }
  if (rv != CKR_OK) {
    if (rv == CKR_PIN_INCORRECT) {
      return MakeError(ErrorCode::kUnauthenticated, "wrong PIN for token '{}' ({})", label,
                       Pkcs11ReturnName(rv));
    }
    return MakeError(P11Error(rv, fmt::format("logging in to token '{}'", label)));
  }
  FLEETID_CHECK_OK(crypto::OpenSslRng::Instance().Fill(record.salt));
  record.pin_digest = PinDigest(record.salt, pin);
  record.token = token;
  return token;
}

Token::~Token() {
  CK_FUNCTION_LIST* fns = module_->functions();
  for (CK_SESSION_HANDLE s : idle_) fns->C_CloseSession(s);
  if (login_session_ != CK_INVALID_HANDLE) {
    fns->C_Logout(login_session_);
    fns->C_CloseSession(login_session_);
  }
}

// ---------------------------------------------------------------------------------------------
// Objects and attributes

namespace {

Result<std::vector<CK_OBJECT_HANDLE>> FindObjects(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s,
                                                  std::span<CK_ATTRIBUTE> templ) {
  if (CK_RV rv = fns->C_FindObjectsInit(s, templ.data(), templ.size()); rv != CKR_OK) {
    return MakeError(P11Error(rv, "searching the token"));
  }
  std::vector<CK_OBJECT_HANDLE> out;
  std::array<CK_OBJECT_HANDLE, 32> batch{};
  CK_RV rv = CKR_OK;
  for (;;) {
    CK_ULONG n = 0;
    rv = fns->C_FindObjects(s, batch.data(), batch.size(), &n);
    if (rv != CKR_OK || n == 0) break;
    out.insert(out.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
  }
  fns->C_FindObjectsFinal(s);
  if (rv != CKR_OK) return MakeError(P11Error(rv, "searching the token"));
  return out;
}

Result<std::vector<std::uint8_t>> GetBytes(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s,
                                           CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE attr{type, nullptr, 0};
  if (CK_RV rv = fns->C_GetAttributeValue(s, obj, &attr, 1); rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("reading attribute {:#x}", type)));
  }
  if (attr.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
    return MakeError(ErrorCode::kInternal, "attribute {:#x} is unavailable", type);
  }
  std::vector<std::uint8_t> value(attr.ulValueLen);
  attr.pValue = value.data();
  if (CK_RV rv = fns->C_GetAttributeValue(s, obj, &attr, 1); rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("reading attribute {:#x}", type)));
  }
  value.resize(attr.ulValueLen);
  return value;
}

// GetBool reads a CK_BBOOL attribute; a module that does not know it answers |absent|.
bool GetBool(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
             CK_ATTRIBUTE_TYPE type, bool absent) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attr{type, &value, sizeof(value)};
  if (fns->C_GetAttributeValue(s, obj, &attr, 1) != CKR_OK ||
      attr.ulValueLen != sizeof(CK_BBOOL)) {
    return absent;
  }
  return value == CK_TRUE;
}

Result<CK_ULONG> GetUlong(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                          CK_ATTRIBUTE_TYPE type) {
  CK_ULONG value = 0;
  CK_ATTRIBUTE attr{type, &value, sizeof(value)};
  if (CK_RV rv = fns->C_GetAttributeValue(s, obj, &attr, 1); rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("reading attribute {:#x}", type)));
  }
  return value;
}

Result<const Suite*> SuiteOfObject(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s,
                                   CK_OBJECT_HANDLE obj, std::string_view label) {
  FLEETID_TRY(key_type, GetUlong(fns, s, obj, CKA_KEY_TYPE));
  switch (key_type) {
    case CKK_EC: {
      FLEETID_TRY(params, GetBytes(fns, s, obj, CKA_EC_PARAMS));
      for (const Suite& suite : crypto::AllSuites()) {
        if (suite.key_type == KeyType::kEc && CurveParams(suite.curve_nid) == params) {
          return &suite;
        }
      }
      return MakeError(ErrorCode::kInvalidArgument, "key '{}' is on an unsupported curve", label);
    }
    case CKK_EC_EDWARDS: {
      FLEETID_TRY(params, GetBytes(fns, s, obj, CKA_EC_PARAMS));
      if (std::ranges::equal(params, kEd25519Oid) || std::ranges::equal(params, kEd25519Name)) {
        return &crypto::GetSuite(SuiteId::kEd25519);
      }
      return MakeError(ErrorCode::kInvalidArgument, "key '{}' is an unsupported EdDSA curve",
                       label);
    }
    case CKK_RSA: {
      FLEETID_TRY(modulus, GetBytes(fns, s, obj, CKA_MODULUS));
      if (modulus.size() * 8 == 3072) return &crypto::GetSuite(SuiteId::kRsa3072PssSha256);
      return MakeError(ErrorCode::kInvalidArgument, "key '{}' is RSA-{}; only RSA-3072 is supported",
                       label, modulus.size() * 8);
    }
    default:
      return MakeError(ErrorCode::kInvalidArgument, "key '{}' has unsupported key type {:#x}",
                       label, key_type);
  }
}

Result<KeyAttributes> ReadAttributes(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s,
                                     CK_OBJECT_HANDLE obj) {
  KeyAttributes a;
  FLEETID_TRY(label, GetBytes(fns, s, obj, CKA_LABEL));
  a.label.assign(label.begin(), label.end());
  FLEETID_TRY(id, GetBytes(fns, s, obj, CKA_ID));
  a.id = std::move(id);
  FLEETID_TRY(suite, SuiteOfObject(fns, s, obj, a.label));
  a.suite = suite;
  a.token = GetBool(fns, s, obj, CKA_TOKEN, false);
  a.is_private = GetBool(fns, s, obj, CKA_PRIVATE, false);
  a.sensitive = GetBool(fns, s, obj, CKA_SENSITIVE, false);
  a.always_sensitive = GetBool(fns, s, obj, CKA_ALWAYS_SENSITIVE, false);
  a.extractable = GetBool(fns, s, obj, CKA_EXTRACTABLE, true);
  a.never_extractable = GetBool(fns, s, obj, CKA_NEVER_EXTRACTABLE, false);
  a.local = GetBool(fns, s, obj, CKA_LOCAL, false);
  a.can_sign = GetBool(fns, s, obj, CKA_SIGN, false);
  a.can_decrypt = GetBool(fns, s, obj, CKA_DECRYPT, false);
  a.can_unwrap = GetBool(fns, s, obj, CKA_UNWRAP, false);
  a.can_derive = GetBool(fns, s, obj, CKA_DERIVE, false);
  return a;
}

// FindOne finds the single object of |cls| labelled |label|.
Result<CK_OBJECT_HANDLE> FindOne(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls,
                                 std::string_view label) {
  CK_ATTRIBUTE templ[] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
  };
  FLEETID_TRY(found, FindObjects(fns, s, templ));
  if (found.empty()) {
    return MakeError(ErrorCode::kNotFound, "no {} key labelled '{}'",
                     cls == CKO_PRIVATE_KEY ? "private" : "public", label);
  }
  if (found.size() > 1) {
    return MakeError(ErrorCode::kConflict, "{} keys are labelled '{}'", found.size(), label);
  }
  return found.front();
}

Result<crypto::EvpPkeyPtr> ReadPublicKey(CK_FUNCTION_LIST* fns, CK_SESSION_HANDLE s,
                                         const Suite& suite, std::string_view label) {
  FLEETID_TRY(pub, FindOne(fns, s, CKO_PUBLIC_KEY, label));
  switch (suite.key_type) {
    case KeyType::kEc: {
      FLEETID_TRY(point, GetBytes(fns, s, pub, CKA_EC_POINT));
      return crypto::EcPublicKey(suite.curve_nid, UnwrapEcPoint(point));
    }
    case KeyType::kEd25519: {
      FLEETID_TRY(point, GetBytes(fns, s, pub, CKA_EC_POINT));
      return crypto::Ed25519PublicKey(UnwrapEcPoint(point));
    }
    case KeyType::kRsa: {
      FLEETID_TRY(n, GetBytes(fns, s, pub, CKA_MODULUS));
      FLEETID_TRY(e, GetBytes(fns, s, pub, CKA_PUBLIC_EXPONENT));
      return crypto::RsaPublicKey(n, e);
    }
  }
  return MakeError(ErrorCode::kInternal, "unreachable key type");
}

}  // namespace

Result<KeyAttributes> Token::GenerateKey(std::string_view label, const Suite& suite, Rng& rng) {
  if (label.empty() || label.size() > 128) {
    return MakeError(ErrorCode::kInvalidArgument, "key label must be 1 to 128 bytes");
  }
  FLEETID_TRY(lease, Borrow());
  CK_FUNCTION_LIST* fns = lease.fns();
  {
    CK_ATTRIBUTE by_label[] = {{CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
    FLEETID_TRY(existing, FindObjects(fns, lease.get(), by_label));
    if (!existing.empty()) {
      return MakeError(ErrorCode::kConflict, "a key labelled '{}' already exists on token '{}'",
                       label, label_);
    }
  }
  FLEETID_TRY(id, rng.Bytes(16));

  CK_BBOOL yes = CK_TRUE;
  CK_BBOOL no = CK_FALSE;
  auto bits = static_cast<CK_ULONG>(suite.rsa_bits);
  std::uint8_t exponent[] = {0x01, 0x00, 0x01};
  std::vector<std::uint8_t> params;
  CK_MECHANISM mech{};
  std::vector<CK_ATTRIBUTE> pub = {
      {CKA_TOKEN, &yes, sizeof(yes)},   {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_VERIFY, &yes, sizeof(yes)},  {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_WRAP, &no, sizeof(no)},      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
      {CKA_ID, id.data(), id.size()},
  };
  switch (suite.key_type) {
    case KeyType::kEc:
      mech.mechanism = CKM_EC_KEY_PAIR_GEN;
      params = CurveParams(suite.curve_nid);
      pub.push_back({CKA_EC_PARAMS, params.data(), params.size()});
      break;
    case KeyType::kEd25519:
      mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
      params.assign(std::begin(kEd25519Oid), std::end(kEd25519Oid));
      pub.push_back({CKA_EC_PARAMS, params.data(), params.size()});
      break;
    case KeyType::kRsa:
      mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
      pub.push_back({CKA_MODULUS_BITS, &bits, sizeof(bits)});
      pub.push_back({CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent)});
      break;
  }
  // The private half: persistent, behind the login, sensitive, never extractable, sign only.
  CK_ATTRIBUTE priv[] = {
      {CKA_TOKEN, &yes, sizeof(yes)},       {CKA_PRIVATE, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)},   {CKA_EXTRACTABLE, &no, sizeof(no)},
      {CKA_SIGN, &yes, sizeof(yes)},        {CKA_DECRYPT, &no, sizeof(no)},
      {CKA_UNWRAP, &no, sizeof(no)},        {CKA_DERIVE, &no, sizeof(no)},
      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
      {CKA_ID, id.data(), id.size()},
  };
  CK_OBJECT_HANDLE pub_handle = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE priv_handle = CK_INVALID_HANDLE;
  CK_RV rv = lease.Check(fns->C_GenerateKeyPair(lease.get(), &mech, pub.data(), pub.size(), priv,
                                                std::size(priv), &pub_handle, &priv_handle));
  if (rv != CKR_OK) {
    return MakeError(P11Error(rv, fmt::format("generating a {} key on token '{}'", suite.name,
                                              label_)));
  }
  return ReadAttributes(fns, lease.get(), priv_handle);
}

Result<KeyAttributes> Token::FindKey(std::string_view label) {
  FLEETID_TRY(lease, Borrow());
  FLEETID_TRY(handle, FindOne(lease.fns(), lease.get(), CKO_PRIVATE_KEY, label));
  return ReadAttributes(lease.fns(), lease.get(), handle);
}

Result<std::vector<KeyAttributes>> Token::ListKeys() {
  FLEETID_TRY(lease, Borrow());
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE templ[] = {{CKA_CLASS, &cls, sizeof(cls)}};
  FLEETID_TRY(handles, FindObjects(lease.fns(), lease.get(), templ));
  std::vector<KeyAttributes> out;
  for (CK_OBJECT_HANDLE h : handles) {
    auto attrs = ReadAttributes(lease.fns(), lease.get(), h);
    if (attrs) out.push_back(std::move(*attrs));  // Keys of unsupported types are not fleetid's.
  }
  std::ranges::sort(out, {}, &KeyAttributes::label);
  return out;
}

Result<crypto::EvpPkeyPtr> Token::PublicKey(std::string_view label) {
  FLEETID_TRY(attrs, FindKey(label));
  FLEETID_TRY(lease, Borrow());
  return ReadPublicKey(lease.fns(), lease.get(), *attrs.suite, label);
}

Result<void> Token::DestroyKey(std::string_view label) {
  FLEETID_TRY(lease, Borrow());
  CK_ATTRIBUTE templ[] = {{CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
  FLEETID_TRY(handles, FindObjects(lease.fns(), lease.get(), templ));
  if (handles.empty()) {
    return MakeError(ErrorCode::kNotFound, "no key labelled '{}' on token '{}'", label, label_);
  }
  for (CK_OBJECT_HANDLE h : handles) {
    if (CK_RV rv = lease.Check(lease.fns()->C_DestroyObject(lease.get(), h)); rv != CKR_OK) {
      return MakeError(P11Error(rv, fmt::format("destroying key '{}'", label)));
    }
  }
  return {};
}

Result<CK_RV> Token::ProbePrivateValue(std::string_view label) {
  FLEETID_TRY(attrs, FindKey(label));
  FLEETID_TRY(lease, Borrow());
  FLEETID_TRY(handle, FindOne(lease.fns(), lease.get(), CKO_PRIVATE_KEY, label));
  CK_ATTRIBUTE attr{attrs.suite->key_type == KeyType::kRsa ? CKA_PRIVATE_EXPONENT : CKA_VALUE,
                    nullptr, 0};
  // A size query only: the value itself is never requested.
  return lease.fns()->C_GetAttributeValue(lease.get(), handle, &attr, 1);
}

// ---------------------------------------------------------------------------------------------
// Signer

class Pkcs11Signer final : public Signer {
 public:
  Pkcs11Signer(std::shared_ptr<Token> token, std::string label, CK_OBJECT_HANDLE key,
               const Suite& suite, crypto::EvpPkeyPtr public_key)
      : token_(std::move(token)),
        label_(std::move(label)),
        key_(key),
        suite_(suite),
        public_key_(std::move(public_key)) {}

  const Suite& suite() const override { return suite_; }
  std::string_view label() const override { return label_; }
  EVP_PKEY* public_key() const override { return public_key_.get(); }

  Result<std::vector<std::uint8_t>> Sign(std::span<const std::uint8_t> message) override {
    // ECDSA and RSA-PSS: hash here, sign the digest in the token (CKM_ECDSA, CKM_RSA_PKCS_PSS),
    // so a large TBS never crosses into the module. EdDSA is pure: the token gets the message.
    if (suite_.digest_name.empty()) return SignInToken(message);
    FLEETID_TRY(digest, crypto::Digest(suite_.digest_name, message));
    return SignInToken(digest);
  }

  Result<std::vector<std::uint8_t>> SignDigest(std::span<const std::uint8_t> digest) override {
    if (suite_.digest_name.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "key '{}' is {}, which signs messages, not digests", label_, suite_.name);
    }
    if (digest.size() != suite_.digest_size) {
      return MakeError(ErrorCode::kInvalidArgument, "a {} digest is {} bytes, not {}",
                       suite_.digest_name, suite_.digest_size, digest.size());
    }
    return SignInToken(digest);
  }

 private:
  // SignInToken hands |input| (the digest, or the message for EdDSA) to C_Sign.
  Result<std::vector<std::uint8_t>> SignInToken(std::span<const std::uint8_t> input) {
    CK_MECHANISM mech{};
    CK_RSA_PKCS_PSS_PARAMS pss{CKM_SHA256, CKG_MGF1_SHA256, suite_.pss_salt_length};
    switch (suite_.key_type) {
      case KeyType::kEc:
        mech.mechanism = CKM_ECDSA;
        break;
      case KeyType::kEd25519:
        mech.mechanism = CKM_EDDSA;
        break;
      case KeyType::kRsa:
        mech.mechanism = CKM_RSA_PKCS_PSS;
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
        break;
    }
    FLEETID_TRY(lease, token_->Borrow());
    CK_FUNCTION_LIST* fns = lease.fns();
    if (CK_RV rv = lease.Check(fns->C_SignInit(lease.get(), &mech, key_)); rv != CKR_OK) {
      if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED) {
        return MakeError(ErrorCode::kPermissionDenied,
                         "key '{}' may not sign (CKA_SIGN is false): {}", label_,
                         Pkcs11ReturnName(rv));
      }
      return MakeError(P11Error(rv, fmt::format("signing with key '{}'", label_)));
    }
    std::array<std::uint8_t, 512> sig{};
    CK_ULONG len = sig.size();
    if (CK_RV rv = lease.Check(fns->C_Sign(lease.get(), const_cast<std::uint8_t*>(input.data()),
                                           input.size(), sig.data(), &len));
        rv != CKR_OK) {
      return MakeError(P11Error(rv, fmt::format("signing with key '{}'", label_)));
    }
    std::span<const std::uint8_t> raw(sig.data(), len);
    if (suite_.encoding == crypto::SignatureEncoding::kEcdsaDer) return crypto::EcdsaRawToDer(raw);
    return std::vector<std::uint8_t>(raw.begin(), raw.end());
  }

  std::shared_ptr<Token> token_;
  std::string label_;
  CK_OBJECT_HANDLE key_;
  const Suite& suite_;
  crypto::EvpPkeyPtr public_key_;
};

Result<std::unique_ptr<Signer>> Token::GetSigner(std::string_view label) {
  FLEETID_TRY(lease, Borrow());
  CK_FUNCTION_LIST* fns = lease.fns();
  FLEETID_TRY(handle, FindOne(fns, lease.get(), CKO_PRIVATE_KEY, label));
  FLEETID_TRY(attrs, ReadAttributes(fns, lease.get(), handle));
  if (!attrs.can_sign) {
    return MakeError(ErrorCode::kPermissionDenied, "key '{}' may not sign (CKA_SIGN is false)",
                     label);
  }
  if (!attrs.sensitive || attrs.extractable) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "key '{}' is extractable or not sensitive; fleetid signs only with keys "
                     "that cannot leave the token",
                     label);
  }
  FLEETID_TRY(pub, ReadPublicKey(fns, lease.get(), *attrs.suite, label));
  return std::make_unique<Pkcs11Signer>(shared_from_this(), std::string(label), handle,
                                        *attrs.suite, std::move(pub));
}

}  // namespace fleetid::custody
