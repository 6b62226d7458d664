// HTTPS and mutual TLS on the server front, against a real SoftHSM2 token and the real curl and
// openssl clients: the server key and the CA key live in the token (custody::TokenPkey), client
// keys are plain OpenSSL keys, and the PEMs the clients read are written to a temporary directory.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "custody/provider.h"
#include "server/http_server.h"
#include "testing/certs.h"
#include "testing/command.h"
#include "testing/matchers.h"
#include "testing/sanitizers.h"
#include "testing/token.h"

namespace fleetid::server {
namespace {

using namespace std::chrono_literals;
using test::CommandResult;
using test::RunCommand;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;
using ClientAuth = TlsOptions::ClientAuth;

using SslCtxPtr = std::unique_ptr<SSL_CTX, crypto::Deleter<&SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, crypto::Deleter<&SSL_free>>;
using crypto::X509ExtensionPtr;

// Errors drains OpenSSL's error queue into one line per error.
// CountingSigner forwards to a token signer and counts the signatures it makes, so a test can
// see that a TLS handshake was signed inside the token.
class CountingSigner final : public custody::Signer {
 public:
  explicit CountingSigner(std::unique_ptr<custody::Signer> inner) : inner_(std::move(inner)) {}

  const crypto::Suite& suite() const override { return inner_->suite(); }
  std::string_view label() const override { return inner_->label(); }
  EVP_PKEY* public_key() const override { return inner_->public_key(); }
  Result<std::vector<std::uint8_t>> Sign(std::span<const std::uint8_t> message) override {
    ++signatures_;
    return inner_->Sign(message);
  }
  Result<std::vector<std::uint8_t>> SignDigest(std::span<const std::uint8_t> digest) override {
    ++signatures_;
    return inner_->SignDigest(digest);
  }

  int signatures() const { return signatures_.load(); }

 private:
  std::unique_ptr<custody::Signer> inner_;
  std::atomic<int> signatures_{0};
};

std::shared_ptr<CountingSigner> NewTokenSigner(crypto::SuiteId suite, std::string_view base) {
  const std::string label = test::UniqueLabel(fmt::format("tls-{}", base));
  const auto& token = test::Opened().token;
  auto attributes =
      token->GenerateKey(label, crypto::GetSuite(suite), crypto::OpenSslRng::Instance());
  EXPECT_TRUE(attributes) << attributes.error();
  auto signer = token->GetSigner(label);
  EXPECT_TRUE(signer) << signer.error();
  if (!signer) return nullptr;
  return std::make_shared<CountingSigner>(std::move(*signer));
}

crypto::EvpPkeyPtr TokenKey(const std::shared_ptr<CountingSigner>& signer) {
  auto pkey = custody::TokenPkey(signer);
  EXPECT_TRUE(pkey) << pkey.error();
  return pkey ? std::move(*pkey) : nullptr;
}

crypto::EvpPkeyPtr SoftwareKey() {
  crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_TRUE(key) << test::OpensslErrors();
  return key;
}

crypto::X509Ptr MakeClientCert(std::string_view common_name, EVP_PKEY* key, X509* ca,
                               EVP_PKEY* ca_key) {
  return test::MakeCert(common_name, key, ca, ca_key,
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "clientAuth"},
                         {NID_subject_key_identifier, "hash"},
                         {NID_authority_key_identifier, "keyid"}});
}

crypto::X509Ptr MakeServerCert(EVP_PKEY* key, X509* ca, EVP_PKEY* ca_key) {
  return test::MakeCert("localhost", key, ca, ca_key,
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "serverAuth"},
                         {NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"},
                         {NID_subject_key_identifier, "hash"},
                         {NID_authority_key_identifier, "keyid"}});
}

void WriteCertPem(const std::filesystem::path& path, X509* cert) {
  crypto::BioPtr out(BIO_new_file(path.c_str(), "w"));
  ASSERT_TRUE(out);
  ASSERT_EQ(PEM_write_bio_X509(out.get(), cert), 1);
}

void WriteKeyPem(const std::filesystem::path& path, EVP_PKEY* key) {
  crypto::BioPtr out(BIO_new_file(path.c_str(), "w"));
  ASSERT_TRUE(out);
  ASSERT_EQ(PEM_write_bio_PrivateKey(out.get(), key, nullptr, nullptr, 0, nullptr, nullptr), 1);
}

std::string CommonName(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return "<unparsable>";
  std::array<char, 256> cn{};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn.data(),
                                static_cast<int>(cn.size())) < 0) {
    return "<no CN>";
  }
  return cn.data();
}

// The PKI of these tests: a fleet CA and the server key in the token; a client CA with one
// device certificate; a rogue CA, not trusted by the server, with a device certificate of the
// same name.
struct Pki {
  std::shared_ptr<CountingSigner> ca_signer;
  std::shared_ptr<CountingSigner> server_signer;
  crypto::EvpPkeyPtr ca_key;      // token
  crypto::EvpPkeyPtr server_key;  // token
  crypto::X509Ptr ca_cert;
  crypto::X509Ptr server_cert;
  crypto::EvpPkeyPtr client_ca_key;
  crypto::X509Ptr client_ca_cert;
  crypto::EvpPkeyPtr client_key;
  crypto::X509Ptr client_cert;
  crypto::EvpPkeyPtr rogue_ca_key;
  crypto::X509Ptr rogue_ca_cert;
  crypto::EvpPkeyPtr rogue_key;
  crypto::X509Ptr rogue_cert;

  std::filesystem::path dir;
  std::string ca_pem;
  std::string client_pem;
  std::string client_key_pem;
  std::string rogue_pem;
  std::string rogue_key_pem;
};

class TlsTest : public ::testing::Test {
 protected:
  static Pki& pki() {
    if (!pki_) {
      pki_ = std::make_unique<Pki>();
      Build(*pki_);
    }
    return *pki_;
  }

  static void Build(Pki& p) {
    p.ca_signer = NewTokenSigner(crypto::SuiteId::kEcdsaP256Sha256, "ca");
    p.server_signer = NewTokenSigner(crypto::SuiteId::kEcdsaP256Sha256, "server");
    ASSERT_TRUE(p.ca_signer && p.server_signer);
    p.ca_key = TokenKey(p.ca_signer);
    p.server_key = TokenKey(p.server_signer);
    ASSERT_TRUE(p.ca_key && p.server_key);
    p.ca_cert = test::MakeCa("fleetid test fleet CA", p.ca_key.get());
    p.server_cert = MakeServerCert(p.server_key.get(), p.ca_cert.get(), p.ca_key.get());

    p.client_ca_key = SoftwareKey();
    p.client_ca_cert = test::MakeCa("fleetid test device CA", p.client_ca_key.get());
    p.client_key = SoftwareKey();
    p.client_cert = MakeClientCert("device-0042", p.client_key.get(), p.client_ca_cert.get(),
                                   p.client_ca_key.get());
    p.rogue_ca_key = SoftwareKey();
    p.rogue_ca_cert = test::MakeCa("fleetid test device CA", p.rogue_ca_key.get());
    p.rogue_key = SoftwareKey();
    p.rogue_cert = MakeClientCert("device-0042", p.rogue_key.get(), p.rogue_ca_cert.get(),
                                  p.rogue_ca_key.get());
    ASSERT_TRUE(p.ca_cert && p.server_cert && p.client_ca_cert && p.client_cert &&
                p.rogue_ca_cert && p.rogue_cert);

    p.dir = test::DataDir() / "tls";
    std::filesystem::create_directories(p.dir);
    p.ca_pem = (p.dir / "ca.pem").string();
    p.client_pem = (p.dir / "client.pem").string();
    p.client_key_pem = (p.dir / "client.key").string();
    p.rogue_pem = (p.dir / "rogue.pem").string();
    p.rogue_key_pem = (p.dir / "rogue.key").string();
    WriteCertPem(p.ca_pem, p.ca_cert.get());
    WriteCertPem(p.client_pem, p.client_cert.get());
    WriteKeyPem(p.client_key_pem, p.client_key.get());
    WriteCertPem(p.rogue_pem, p.rogue_cert.get());
    WriteKeyPem(p.rogue_key_pem, p.rogue_key.get());
  }

  // Token keys hold the token open; they must go before the test environment closes it.
  static void TearDownTestSuite() { pki_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(pki().server_key);
    ERR_clear_error();
  }

  static TlsOptions ServerTls(ClientAuth client_auth) {
    TlsOptions tls;
    tls.certificate_chain = {X509Ref(pki().server_cert.get()), X509Ref(pki().ca_cert.get())};
    tls.private_key = PkeyRef(pki().server_key.get());
    if (client_auth != ClientAuth::kNone) {
      tls.client_trust_anchors = {X509Ref(pki().client_ca_cert.get())};
    }
    tls.client_auth = client_auth;
    return tls;
  }

  static Router TestRouter() {
    Router router;
    router.Add("GET", "/hello",
               [](const HttpRequest&) { return HttpResponse::Json(200, R"({"hello":"world"})"); });
    router.Add("GET", "/slow", [](const HttpRequest&) {
      std::this_thread::sleep_for(300ms);
      return HttpResponse::Json(200, R"({"slow":true})");
    });
    router.Add("GET", "/whoami", [](const HttpRequest& request) {
      nlohmann::json body = {{"tls", request.tls},
                             {"chain", request.client_chain.size()},
                             {"remote", request.remote_address}};
      if (!request.client_chain.empty()) {
        body["leaf"] = CommonName(request.client_chain.front());
        body["anchor"] = CommonName(request.client_chain.back());
      }
      return HttpResponse::Json(200, body.dump());
    });
    return router;
  }

  static std::unique_ptr<HttpServer> StartServer(std::optional<TlsOptions> tls,
                                                 HttpServerOptions options = {}) {
    options.port = 0;
    options.tls = std::move(tls);
    auto server = HttpServer::Start(std::move(options), TestRouter());
    if (!server) {
      ADD_FAILURE() << server.error();
      return nullptr;
    }
    return std::move(*server);
  }

  static inline std::unique_ptr<Pki> pki_;
};

std::string Curl(std::string_view args) {
  return fmt::format("curl -sS --noproxy '*' --max-time 10 {}", args);
}

std::string Url(const HttpServer& server, std::string_view path,
                std::string_view host = "127.0.0.1") {
  return fmt::format("https://{}:{}{}", host, server.port(), path);
}

nlohmann::json Json(const std::string& text) { return nlohmann::json::parse(text, nullptr, false); }

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int Connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  const timeval timeout{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// RawClient is a plain TCP client, for bytes that are not TLS.
class RawClient {
 public:
  explicit RawClient(std::uint16_t port) : fd_(Connect(port)) {}
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool connected() const { return fd_ >= 0; }

  bool Send(std::string_view bytes) const {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // WaitClosed discards incoming bytes until the server closes the connection (true) or
  // |timeout| passes (false).
  bool WaitClosed(std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return false;
      pollfd pfd{.fd = fd_, .events = POLLIN, .revents = 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      std::array<char, 4096> chunk{};
      const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return true;
    }
  }

 private:
  int fd_;
};

// TlsClient is a blocking OpenSSL client with 5 s receive timeouts, for what the command-line
// clients cannot show: an idle connection, and how exactly the server ended it.
class TlsClient {
 public:
  TlsClient(std::uint16_t port, const std::string& ca_file, X509* cert = nullptr,
            EVP_PKEY* key = nullptr, X509* intermediate = nullptr)
      : ctx_(SSL_CTX_new(TLS_client_method())), fd_(Connect(port)) {
    if (!ctx_ || fd_ < 0) {
      error_ = "setup failed";
      return;
    }
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr) != 1 ||
        (cert != nullptr && (SSL_CTX_use_certificate(ctx_.get(), cert) != 1 ||
                             SSL_CTX_use_PrivateKey(ctx_.get(), key) != 1)) ||
        (intermediate != nullptr && SSL_CTX_add1_chain_cert(ctx_.get(), intermediate) != 1)) {
      error_ = test::OpensslErrors();
      return;
    }
    ssl_.reset(SSL_new(ctx_.get()));
    SSL_set_fd(ssl_.get(), fd_);
    if (SSL_connect(ssl_.get()) != 1) {
      error_ = "SSL_connect: " + test::OpensslErrors();
      return;
    }
    connected_ = true;
  }
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;
  ~TlsClient() {
    ssl_.reset();
    if (fd_ >= 0) ::close(fd_);
  }

  bool connected() const { return connected_; }
  const std::string& error() const { return error_; }
  SSL* ssl() const { return ssl_.get(); }

  bool Send(std::string_view bytes) const {
    return SSL_write(ssl_.get(), bytes.data(), static_cast<int>(bytes.size())) ==
           static_cast<int>(bytes.size());
  }

  // ReadBody reads one HTTP response into |body|; false (with error()) if the connection failed
  // first.
  bool ReadBody(std::string* body) {
    for (;;) {
      const std::size_t end = pending_.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::string head = pending_.substr(0, end);
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const std::size_t at = head.find("content-length:");
        const std::size_t length = at == std::string::npos ? 0 : std::stoul(head.substr(at + 15));
        if (pending_.size() >= end + 4 + length) {
          *body = pending_.substr(end + 4, length);
          pending_.erase(0, end + 4 + length);
          return true;
        }
      }
      std::array<char, 4096> chunk{};
      const int n = SSL_read(ssl_.get(), chunk.data(), static_cast<int>(chunk.size()));
      if (n <= 0) {
        error_ = fmt::format("SSL_read: SSL_get_error {}: {}", SSL_get_error(ssl_.get(), n),
                             test::OpensslErrors());
        return false;
      }
      pending_.append(chunk.data(), static_cast<std::size_t>(n));
    }
  }

  // ReadEnd reads until the connection ends and returns SSL_get_error for that read:
  // SSL_ERROR_ZERO_RETURN means the server sent close_notify.
  int ReadEnd() const {
    std::array<char, 4096> chunk{};
    for (;;) {
      const int n = SSL_read(ssl_.get(), chunk.data(), static_cast<int>(chunk.size()));
      if (n <= 0) return SSL_get_error(ssl_.get(), n);
    }
  }

 private:
  SslCtxPtr ctx_;
  int fd_;
  SslPtr ssl_;
  bool connected_ = false;
  std::string error_;
  std::string pending_;
};

constexpr std::string_view kGetHello = "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
constexpr std::string_view kGetWhoami = "GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n";

// --- Options ---------------------------------------------------------------------------------

TEST_F(TlsTest, UnusableOptionsAreInvalidArgument) {
  auto expect_invalid = [](TlsOptions tls, std::string_view why) {
    HttpServerOptions options;
    options.port = 0;
    options.tls = std::move(tls);
    auto server = HttpServer::Start(std::move(options), Router());
    ASSERT_FALSE(server) << why;
    EXPECT_THAT(server, test::HasCode(ErrorCode::kInvalidArgument)) << why;
    EXPECT_THAT(server.error().message(), HasSubstr(why));
  };
  TlsOptions no_cert = ServerTls(ClientAuth::kNone);
  no_cert.certificate_chain.clear();
  expect_invalid(no_cert, "needs a server certificate");

  TlsOptions no_key = ServerTls(ClientAuth::kNone);
  no_key.private_key = PkeyRef();
  expect_invalid(no_key, "needs the server's private key");

  TlsOptions wrong_key = ServerTls(ClientAuth::kNone);
  wrong_key.private_key = PkeyRef(pki().client_key.get());
  expect_invalid(wrong_key, "does not match the server certificate");

  TlsOptions no_anchors = ServerTls(ClientAuth::kRequired);
  no_anchors.client_trust_anchors.clear();
  expect_invalid(no_anchors, "no client_trust_anchors");

  TlsOptions anchors_unused = ServerTls(ClientAuth::kNone);
  anchors_unused.client_trust_anchors = {X509Ref(pki().client_ca_cert.get())};
  expect_invalid(anchors_unused, "client_auth is none");
}

TEST_F(TlsTest, OptionsHoldTheirOwnReferences) {
  // The options, and the server, keep key and certificates alive after the caller drops its own.
  crypto::EvpPkeyPtr key = SoftwareKey();
  crypto::X509Ptr cert = MakeServerCert(key.get(), pki().ca_cert.get(), pki().ca_key.get());
  ASSERT_TRUE(cert);
  TlsOptions tls;
  tls.certificate_chain = {X509Ref(cert.get())};
  tls.private_key = PkeyRef(key.get());
  const TlsOptions copy = tls;
  EXPECT_EQ(copy.private_key.get(), key.get());
  key.reset();
  cert.reset();
  tls = TlsOptions();
  auto server = StartServer(copy);
  ASSERT_TRUE(server);
  const auto got =
      RunCommand(Curl(fmt::format("--cacert '{}' {}", pki().ca_pem, Url(*server, "/hello"))));
  EXPECT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(got.output, R"({"hello":"world"})");
}

// --- (1) HTTPS with the server key in the token ------------------------------------------------

TEST_F(TlsTest, CurlGetsHelloAndTheHandshakeIsSignedInTheToken) {
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pki().server_key.get())),
               custody::kTokenProviderName.data());
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);

  const int before = pki().server_signer->signatures();
  const auto by_ip =
      RunCommand(Curl(fmt::format("--cacert '{}' {}", pki().ca_pem, Url(*server, "/hello"))));
  EXPECT_EQ(by_ip.status, 0) << by_ip.output;
  EXPECT_EQ(by_ip.output, R"({"hello":"world"})");
  EXPECT_GE(pki().server_signer->signatures(), before + 1)
      << "the handshake was not signed by the token key";

  const auto by_name = RunCommand(
      Curl(fmt::format("--cacert '{}' {}", pki().ca_pem, Url(*server, "/whoami", "localhost"))));
  EXPECT_EQ(by_name.status, 0) << by_name.output;
  const auto body = Json(by_name.output);
  ASSERT_FALSE(body.is_discarded()) << by_name.output;
  EXPECT_EQ(body.at("tls"), true);
  EXPECT_EQ(body.at("chain"), 0);

  // Without the fleet CA, curl does not trust the server.
  const auto untrusted = RunCommand(Curl(Url(*server, "/hello")));
  EXPECT_NE(untrusted.status, 0) << untrusted.output;
}

TEST_F(TlsTest, PlainListenerReportsNoTls) {
  auto server = StartServer(std::nullopt);
  ASSERT_TRUE(server);
  const auto got = RunCommand(Curl(fmt::format("http://127.0.0.1:{}/whoami", server->port())));
  EXPECT_EQ(got.status, 0) << got.output;
  const auto body = Json(got.output);
  ASSERT_FALSE(body.is_discarded()) << got.output;
  EXPECT_EQ(body.at("tls"), false);
  EXPECT_EQ(body.at("chain"), 0);
}

// --- (2) Protocol versions and ciphers -----------------------------------------------------------

TEST_F(TlsTest, OpenSslClientGetsTls13AndTls12WithModernCiphersOnly) {
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);
  const std::string connect = fmt::format(
      "openssl s_client -connect 127.0.0.1:{} -servername localhost -CAfile '{}' "
      "-verify_return_error -brief",
      server->port(), pki().ca_pem);

  const auto tls13 = RunCommand(connect + " </dev/null");
  EXPECT_EQ(tls13.status, 0) << tls13.output;
  EXPECT_THAT(tls13.output, HasSubstr("Protocol version: TLSv1.3"));
  EXPECT_THAT(tls13.output, HasSubstr("Verification: OK"));
  EXPECT_THAT(tls13.output, HasSubstr("Signature type: ECDSA"));

  const auto tls12 = RunCommand(connect + " -tls1_2 </dev/null");
  EXPECT_EQ(tls12.status, 0) << tls12.output;
  EXPECT_THAT(tls12.output, HasSubstr("Protocol version: TLSv1.2"));
  EXPECT_THAT(tls12.output, HasSubstr("Ciphersuite: ECDHE-ECDSA-"));
  EXPECT_THAT(tls12.output, HasSubstr("Verification: OK"));

  // TLS 1.2 without AEAD, and TLS 1.1, are refused.
  const auto cbc = RunCommand(connect + " -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA </dev/null");
  EXPECT_NE(cbc.status, 0) << cbc.output;
  EXPECT_THAT(cbc.output, Not(HasSubstr("Protocol version")));
  const auto tls11 = RunCommand(connect + " -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null");
  EXPECT_NE(tls11.status, 0) << tls11.output;
  EXPECT_THAT(tls11.output, Not(HasSubstr("Protocol version")));
}

// --- (3) Required client certificates ------------------------------------------------------------

TEST_F(TlsTest, RequiredClientAuthAcceptsOnlyTrustedClientCertificates) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  const std::string base = fmt::format("--cacert '{}'", pki().ca_pem);

  const auto none = RunCommand(Curl(fmt::format("{} {}", base, Url(*server, "/whoami"))));
  EXPECT_NE(none.status, 0) << none.output;
  EXPECT_THAT(none.output, HasSubstr("alert certificate required"));

  const auto trusted =
      RunCommand(Curl(fmt::format("{} --cert '{}' --key '{}' {}", base, pki().client_pem,
                                  pki().client_key_pem, Url(*server, "/whoami"))));
  EXPECT_EQ(trusted.status, 0) << trusted.output;
  const auto body = Json(trusted.output);
  ASSERT_FALSE(body.is_discarded()) << trusted.output;
  EXPECT_EQ(body.at("tls"), true);
  EXPECT_EQ(body.at("chain"), 2);  // The leaf and the anchor.
  EXPECT_EQ(body.at("leaf"), "device-0042");
  EXPECT_EQ(body.at("anchor"), "fleetid test device CA");

  // Same names, other CA.
  const auto rogue =
      RunCommand(Curl(fmt::format("{} --cert '{}' --key '{}' {}", base, pki().rogue_pem,
                                  pki().rogue_key_pem, Url(*server, "/whoami"))));
  EXPECT_NE(rogue.status, 0) << rogue.output;
  EXPECT_THAT(rogue.output, HasSubstr("alert unknown ca"));

  // What the alert says to a TLS 1.3 client without a certificate, which finishes its side of the
  // handshake before the server has seen that no certificate came.
  TlsClient without(server->port(), pki().ca_pem);
  ASSERT_TRUE(without.connected()) << without.error();
  ASSERT_TRUE(without.Send(kGetWhoami));
  std::string refused;
  EXPECT_FALSE(without.ReadBody(&refused));
  EXPECT_THAT(without.error(), HasSubstr("certificate required"));
}

TEST_F(TlsTest, RequiredClientAuthHandsTheVerifiedChainToEveryRequest) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  TlsClient client(server->port(), pki().ca_pem, pki().client_cert.get(), pki().client_key.get());
  ASSERT_TRUE(client.connected()) << client.error();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client.Send(kGetWhoami));
    std::string body;
    ASSERT_TRUE(client.ReadBody(&body)) << client.error();
    const auto json = Json(body);
    EXPECT_EQ(json.value("leaf", ""), "device-0042") << body;
    EXPECT_EQ(json.value("chain", 0), 2) << body;
  }
}

// --- (4) Optional client certificates ------------------------------------------------------------

TEST_F(TlsTest, OptionalClientAuthServesBothButStillRejectsUntrustedCertificates) {
  auto server = StartServer(ServerTls(ClientAuth::kOptional));
  ASSERT_TRUE(server);
  const std::string base = fmt::format("--cacert '{}'", pki().ca_pem);

  const auto none = RunCommand(Curl(fmt::format("{} {}", base, Url(*server, "/whoami"))));
  EXPECT_EQ(none.status, 0) << none.output;
  const auto anonymous = Json(none.output);
  ASSERT_FALSE(anonymous.is_discarded()) << none.output;
  EXPECT_EQ(anonymous.at("tls"), true);
  EXPECT_EQ(anonymous.at("chain"), 0);
  EXPECT_FALSE(anonymous.contains("leaf"));

  const auto trusted =
      RunCommand(Curl(fmt::format("{} --cert '{}' --key '{}' {}", base, pki().client_pem,
                                  pki().client_key_pem, Url(*server, "/whoami"))));
  EXPECT_EQ(trusted.status, 0) << trusted.output;
  const auto device = Json(trusted.output);
  ASSERT_FALSE(device.is_discarded()) << trusted.output;
  EXPECT_EQ(device.at("chain"), 2);
  EXPECT_EQ(device.at("leaf"), "device-0042");

  const auto rogue =
      RunCommand(Curl(fmt::format("{} --cert '{}' --key '{}' {}", base, pki().rogue_pem,
                                  pki().rogue_key_pem, Url(*server, "/whoami"))));
  EXPECT_NE(rogue.status, 0) << rogue.output;
  EXPECT_THAT(rogue.output, HasSubstr("alert unknown ca"));
}

TEST_F(TlsTest, ClientChainThroughAnIntermediateEndsAtTheAnchor) {
  // Device CA (root) -> device issuing CA -> device; the client sends leaf and intermediate.
  crypto::EvpPkeyPtr issuing_key = SoftwareKey();
  crypto::X509Ptr issuing = test::MakeCert("fleetid test device issuing CA", issuing_key.get(),
                                           pki().client_ca_cert.get(), pki().client_ca_key.get(),
                                           {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                            {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                            {NID_subject_key_identifier, "hash"},
                                            {NID_authority_key_identifier, "keyid"}});
  crypto::EvpPkeyPtr device_key = SoftwareKey();
  ASSERT_TRUE(issuing);
  crypto::X509Ptr device =
      MakeClientCert("device-0043", device_key.get(), issuing.get(), issuing_key.get());
  ASSERT_TRUE(device);

  // Anchored at the root: leaf, intermediate, root.
  auto by_root = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(by_root);
  TlsClient via_root(by_root->port(), pki().ca_pem, device.get(), device_key.get(), issuing.get());
  ASSERT_TRUE(via_root.connected()) << via_root.error();
  ASSERT_TRUE(via_root.Send(kGetWhoami));
  std::string body;
  ASSERT_TRUE(via_root.ReadBody(&body)) << via_root.error();
  EXPECT_EQ(Json(body).value("chain", 0), 3) << body;
  EXPECT_EQ(Json(body).value("leaf", ""), "device-0043") << body;
  EXPECT_EQ(Json(body).value("anchor", ""), "fleetid test device CA") << body;

  // Anchored at the intermediate alone: the chain stops there, the root is not needed.
  TlsOptions tls = ServerTls(ClientAuth::kRequired);
  tls.client_trust_anchors = {X509Ref(issuing.get())};
  auto by_issuing = StartServer(tls);
  ASSERT_TRUE(by_issuing);
  TlsClient via_issuing(by_issuing->port(), pki().ca_pem, device.get(), device_key.get());
  ASSERT_TRUE(via_issuing.connected()) << via_issuing.error();
  ASSERT_TRUE(via_issuing.Send(kGetWhoami));
  ASSERT_TRUE(via_issuing.ReadBody(&body)) << via_issuing.error();
  EXPECT_EQ(Json(body).value("chain", 0), 2) << body;
  EXPECT_EQ(Json(body).value("anchor", ""), "fleetid test device issuing CA") << body;
}

TEST_F(TlsTest, ClientCertificateForAnotherPurposeIsRejected) {
  // Issued by the trusted device CA, but for servers only (extendedKeyUsage serverAuth).
  crypto::EvpPkeyPtr key = SoftwareKey();
  crypto::X509Ptr cert = test::MakeCert("device-0044", key.get(), pki().client_ca_cert.get(),
                                        pki().client_ca_key.get(),
                                        {{NID_basic_constraints, "critical,CA:FALSE"},
                                         {NID_key_usage, "critical,digitalSignature"},
                                         {NID_ext_key_usage, "serverAuth"}});
  ASSERT_TRUE(cert);
  auto server = StartServer(ServerTls(ClientAuth::kOptional));
  ASSERT_TRUE(server);
  TlsClient client(server->port(), pki().ca_pem, cert.get(), key.get());
  ASSERT_TRUE(client.connected()) << client.error();
  ASSERT_TRUE(client.Send(kGetWhoami));
  std::string body;
  EXPECT_FALSE(client.ReadBody(&body));
  EXPECT_THAT(client.error(), HasSubstr("alert unsupported certificate"));
}

// --- (5) Bytes that are not TLS ------------------------------------------------------------------

TEST_F(TlsTest, PlainHttpAndGarbageFailTheHandshakeWithoutHarm) {
  HttpServerOptions options;
  options.read_timeout = 1s;
  options.handshake_timeout = 1s;
  auto server = StartServer(ServerTls(ClientAuth::kOptional), options);
  ASSERT_TRUE(server);

  const auto plain = RunCommand(Curl(fmt::format("http://127.0.0.1:{}/hello", server->port())));
  EXPECT_NE(plain.status, 0) << plain.output;

  RawClient http(server->port());
  ASSERT_TRUE(http.connected());
  ASSERT_TRUE(http.Send(kGetHello));
  auto start = Clock::now();
  EXPECT_TRUE(http.WaitClosed(3s));
  EXPECT_LT(Clock::now() - start, 900ms) << "closed by the timeout, not by the failed handshake";

  std::string garbage(std::size_t{64} * 1024, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 167 + 13);
  garbage[0] = '\x16';  // A handshake record type, so the record layer looks further.
  RawClient noise(server->port());
  ASSERT_TRUE(noise.connected());
  noise.Send(garbage);  // The server may close before taking all of it.
  EXPECT_TRUE(noise.WaitClosed(3s));

  // Half a ClientHello, then silence: dropped at the handshake timeout.
  RawClient silent(server->port());
  ASSERT_TRUE(silent.connected());
  ASSERT_TRUE(silent.Send(std::string_view("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
  start = Clock::now();
  EXPECT_TRUE(silent.WaitClosed(5s));
  EXPECT_GE(Clock::now() - start, 800ms);

  // Nothing spins, and the server still serves.
  const double cpu_before = ProcessCpuSeconds();
  std::this_thread::sleep_for(500ms);
  EXPECT_LT(ProcessCpuSeconds() - cpu_before, 0.2);
  const auto after =
      RunCommand(Curl(fmt::format("--cacert '{}' {}", pki().ca_pem, Url(*server, "/hello"))));
  EXPECT_EQ(after.status, 0) << after.output;
  EXPECT_EQ(after.output, R"({"hello":"world"})");
}

// --- (6) Stop ------------------------------------------------------------------------------------

TEST_F(TlsTest, StopClosesIdleTlsConnectionsWithCloseNotifyPromptly) {
  HttpServerOptions options;
  options.read_timeout = 30s;
  options.idle_timeout = 30s;
  auto server = StartServer(ServerTls(ClientAuth::kOptional), options);
  ASSERT_TRUE(server);

  TlsClient idle(server->port(), pki().ca_pem);
  ASSERT_TRUE(idle.connected()) << idle.error();
  ASSERT_TRUE(idle.Send(kGetHello));
  std::string body;
  ASSERT_TRUE(idle.ReadBody(&body)) << idle.error();
  TlsClient fresh(server->port(), pki().ca_pem);  // Handshaken, no request yet.
  ASSERT_TRUE(fresh.connected()) << fresh.error();
  RawClient handshaking(server->port());  // TCP only: the server waits for a ClientHello.
  ASSERT_TRUE(handshaking.connected());
  std::this_thread::sleep_for(100ms);

  const auto start = Clock::now();
  server->Stop();
  EXPECT_LT(Clock::now() - start, 3s);  // Not the 30 s timeouts.
  EXPECT_EQ(idle.ReadEnd(), SSL_ERROR_ZERO_RETURN) << "no close_notify";
  EXPECT_EQ(fresh.ReadEnd(), SSL_ERROR_ZERO_RETURN) << "no close_notify";
  EXPECT_TRUE(handshaking.WaitClosed(1s));
}

TEST_F(TlsTest, StopLetsARunningTlsRequestFinishThenSendsCloseNotify) {
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);
  TlsClient client(server->port(), pki().ca_pem);
  ASSERT_TRUE(client.connected()) << client.error();
  ASSERT_TRUE(client.Send("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  const auto start = Clock::now();
  server->Stop();
  EXPECT_LT(Clock::now() - start, 3s);
  std::string body;
  ASSERT_TRUE(client.ReadBody(&body)) << client.error();
  EXPECT_EQ(body, R"({"slow":true})");
  EXPECT_EQ(client.ReadEnd(), SSL_ERROR_ZERO_RETURN) << "no close_notify";
}

// --- (7) Keep-alive ------------------------------------------------------------------------------

TEST_F(TlsTest, PipelinedRequestsAndConnectionCloseOverTls) {
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);
  TlsClient client(server->port(), pki().ca_pem);
  ASSERT_TRUE(client.connected()) << client.error();
  ASSERT_TRUE(client.Send(std::string(kGetHello) + std::string(kGetWhoami) +
                          "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
  std::string first;
  std::string second;
  std::string third;
  ASSERT_TRUE(client.ReadBody(&first) && client.ReadBody(&second) && client.ReadBody(&third))
      << client.error();
  EXPECT_EQ(first, R"({"hello":"world"})");
  EXPECT_EQ(Json(second).value("tls", false), true) << second;
  EXPECT_EQ(third, R"({"hello":"world"})");
  // Connection: close ends with the server's close_notify, not a bare FIN.
  EXPECT_EQ(client.ReadEnd(), SSL_ERROR_ZERO_RETURN) << "no close_notify";
}

TEST_F(TlsTest, CurlReusesOneTlsConnectionForSeveralRequests) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  const int before = pki().server_signer->signatures();
  const auto got = RunCommand(
      Curl(fmt::format("--cacert '{}' --cert '{}' --key '{}' -w '\\n%{{num_connects}}\\n' {} {} {}",
                       pki().ca_pem, pki().client_pem, pki().client_key_pem,
                       Url(*server, "/whoami"), Url(*server, "/whoami"), Url(*server, "/hello"))));
  ASSERT_EQ(got.status, 0) << got.output;
  std::vector<std::string> lines;
  std::size_t from = 0;
  while (from < got.output.size()) {
    const std::size_t end = got.output.find('\n', from);
    lines.push_back(got.output.substr(from, end - from));
    if (end == std::string::npos) break;
    from = end + 1;
  }
  ASSERT_EQ(lines.size(), 6u) << got.output;
  const auto first = Json(lines[0]);
  const auto second = Json(lines[2]);
  ASSERT_FALSE(first.is_discarded() || second.is_discarded()) << got.output;
  EXPECT_EQ(first.at("remote"), second.at("remote")) << "not the same connection";
  EXPECT_EQ(second.at("leaf"), "device-0042");
  EXPECT_EQ(lines[1], "1");  // num_connects: one new connection, then none.
  EXPECT_EQ(lines[3], "0");
  EXPECT_EQ(lines[4], R"({"hello":"world"})");
  EXPECT_EQ(lines[5], "0");
  EXPECT_EQ(pki().server_signer->signatures(), before + 1) << "one handshake, one signature";
}

// --- Other server key types ----------------------------------------------------------------------

TEST_F(TlsTest, RsaTokenKeyServesTls13AndTls12) {
  // A token RSA key signs RSASSA-PSS only, so TLS 1.2 must not pick rsa_pkcs1_*.
  auto signer = NewTokenSigner(crypto::SuiteId::kRsa3072PssSha256, "rsa");
  ASSERT_TRUE(signer);
  crypto::EvpPkeyPtr key = TokenKey(signer);
  ASSERT_TRUE(key);
  crypto::X509Ptr cert = MakeServerCert(key.get(), pki().ca_cert.get(), pki().ca_key.get());
  ASSERT_TRUE(cert);
  TlsOptions tls;
  tls.certificate_chain = {X509Ref(cert.get()), X509Ref(pki().ca_cert.get())};
  tls.private_key = PkeyRef(key.get());
  auto server = StartServer(tls);
  ASSERT_TRUE(server);
  const std::string connect = fmt::format(
      "openssl s_client -connect 127.0.0.1:{} -servername localhost -CAfile '{}' "
      "-verify_return_error -brief",
      server->port(), pki().ca_pem);
  for (const char* version : {"-tls1_3", "-tls1_2"}) {
    const int before = signer->signatures();
    const auto got = RunCommand(fmt::format("{} {} </dev/null", connect, version));
    EXPECT_EQ(got.status, 0) << version << ": " << got.output;
    EXPECT_THAT(got.output, HasSubstr("Verification: OK")) << version;
    EXPECT_THAT(got.output, HasSubstr("Signature type: RSA-PSS")) << version;
    EXPECT_GT(signer->signatures(), before) << version;
  }
}

// --- docs/security.md: timeouts, room for newcomers, anchors and certificates changed at run time ----

// PeerCaNames returns the common names of the CAs the server listed in its CertificateRequest.
std::vector<std::string> PeerCaNames(SSL* ssl) {
  std::vector<std::string> names;
  const STACK_OF(X509_NAME)* list = SSL_get0_peer_CA_list(ssl);
  for (int i = 0; list != nullptr && i < sk_X509_NAME_num(list); ++i) {
    std::array<char, 256> cn{};
    if (X509_NAME_get_text_by_NID(sk_X509_NAME_value(list, i), NID_commonName, cn.data(),
                                  static_cast<int>(cn.size())) >= 0) {
      names.emplace_back(cn.data());
    }
  }
  return names;
}

// Maker is a manufacturer registered after the server started: its CA and one device.
struct Maker {
  crypto::EvpPkeyPtr ca_key = SoftwareKey();
  crypto::X509Ptr ca = test::MakeCa("fleetid test manufacturer CA", ca_key.get());
  crypto::EvpPkeyPtr device_key = SoftwareKey();
  crypto::X509Ptr device = MakeClientCert("device-0099", device_key.get(), ca.get(), ca_key.get());
};

// Whoami returns the /whoami answer over |client|, or an empty object if the request failed.
nlohmann::json Whoami(TlsClient& client) {
  std::string body;
  if (!client.connected() || !client.Send(kGetWhoami) || !client.ReadBody(&body)) return {};
  return Json(body);
}

TEST_F(TlsTest, AddedTrustAnchorIsTrustedAndNamedInTheCertificateRequest) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  const Maker maker;
  {
    TlsClient device(server->port(), pki().ca_pem, pki().client_cert.get(), pki().client_key.get());
    ASSERT_TRUE(device.connected()) << device.error();
    EXPECT_THAT(PeerCaNames(device.ssl()), ::testing::ElementsAre("fleetid test device CA"));
    TlsClient unknown(server->port(), pki().ca_pem, maker.device.get(), maker.device_key.get());
    EXPECT_TRUE(Whoami(unknown).empty()) << "not trusted before it is added";
  }

  ASSERT_TRUE(server->AddClientTrustAnchor(X509Ref(maker.ca.get())));
  ASSERT_TRUE(server->AddClientTrustAnchor(X509Ref(maker.ca.get()))) << "again: no change";

  TlsClient device(server->port(), pki().ca_pem, maker.device.get(), maker.device_key.get());
  ASSERT_TRUE(device.connected()) << device.error();
  EXPECT_THAT(
      PeerCaNames(device.ssl()),
      ::testing::UnorderedElementsAre("fleetid test device CA", "fleetid test manufacturer CA"));
  const auto body = Whoami(device);
  ASSERT_FALSE(body.empty());
  EXPECT_EQ(body.at("leaf"), "device-0099");
  EXPECT_EQ(body.at("anchor"), "fleetid test manufacturer CA");

  // What an operator sees with the real openssl client.
  const auto seen = RunCommand(fmt::format(
      "openssl s_client -connect 127.0.0.1:{} -servername localhost -CAfile '{}' </dev/null",
      server->port(), pki().ca_pem));
  EXPECT_THAT(seen.output, HasSubstr("Acceptable client certificate CA names"));
  EXPECT_THAT(seen.output, HasSubstr("CN = fleetid test manufacturer CA"));
}

TEST_F(TlsTest, AnchorsAndCertificatesCannotBeChangedWhereTheyDoNotApply) {
  auto plain = StartServer(std::nullopt);
  ASSERT_TRUE(plain);
  auto anchor = plain->AddClientTrustAnchor(X509Ref(pki().client_ca_cert.get()));
  ASSERT_FALSE(anchor);
  EXPECT_THAT(anchor, test::HasCode(ErrorCode::kConflict));
  auto cert =
      plain->SetCertificate({X509Ref(pki().server_cert.get())}, PkeyRef(pki().server_key.get()));
  ASSERT_FALSE(cert);
  EXPECT_THAT(cert, test::HasCode(ErrorCode::kConflict));

  auto no_client_auth = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(no_client_auth);
  anchor = no_client_auth->AddClientTrustAnchor(X509Ref(pki().client_ca_cert.get()));
  ASSERT_FALSE(anchor);
  EXPECT_THAT(anchor, test::HasCode(ErrorCode::kConflict));
  anchor = no_client_auth->AddClientTrustAnchor(X509Ref());
  ASSERT_FALSE(anchor);
  EXPECT_THAT(anchor, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST_F(TlsTest, SetCertificateServesNewHandshakesAndKeepsOpenConnections) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  const Maker maker;
  ASSERT_TRUE(server->AddClientTrustAnchor(X509Ref(maker.ca.get())));

  TlsClient before(server->port(), pki().ca_pem, pki().client_cert.get(), pki().client_key.get());
  ASSERT_TRUE(before.connected()) << before.error();
  ASSERT_FALSE(Whoami(before).empty());
  EXPECT_EQ(X509_cmp(SSL_get0_peer_certificate(before.ssl()), pki().server_cert.get()), 0);

  crypto::EvpPkeyPtr renewed_key = SoftwareKey();
  crypto::X509Ptr renewed =
      MakeServerCert(renewed_key.get(), pki().ca_cert.get(), pki().ca_key.get());
  ASSERT_TRUE(renewed);

  auto mismatched =
      server->SetCertificate({X509Ref(renewed.get())}, PkeyRef(pki().server_key.get()));
  ASSERT_FALSE(mismatched);
  EXPECT_THAT(mismatched, test::HasCode(ErrorCode::kInvalidArgument));
  auto empty = server->SetCertificate({}, PkeyRef(renewed_key.get()));
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty, test::HasCode(ErrorCode::kInvalidArgument));
  auto no_key = server->SetCertificate({X509Ref(renewed.get())}, PkeyRef());
  ASSERT_FALSE(no_key);
  EXPECT_THAT(no_key, test::HasCode(ErrorCode::kInvalidArgument));

  ASSERT_TRUE(server->SetCertificate({X509Ref(renewed.get()), X509Ref(pki().ca_cert.get())},
                                     PkeyRef(renewed_key.get())));

  const auto still = Whoami(before);
  ASSERT_FALSE(still.empty()) << "the connection open before the swap keeps working";
  EXPECT_EQ(still.at("leaf"), "device-0042");

  TlsClient after(server->port(), pki().ca_pem, pki().client_cert.get(), pki().client_key.get());
  ASSERT_TRUE(after.connected()) << after.error();
  EXPECT_EQ(X509_cmp(SSL_get0_peer_certificate(after.ssl()), renewed.get()), 0);
  EXPECT_FALSE(Whoami(after).empty());

  TlsClient device(server->port(), pki().ca_pem, maker.device.get(), maker.device_key.get());
  const auto body = Whoami(device);
  ASSERT_FALSE(body.empty()) << "an anchor added before the swap is still trusted";
  EXPECT_EQ(body.at("anchor"), "fleetid test manufacturer CA");
  EXPECT_THAT(PeerCaNames(device.ssl()), ::testing::Contains("fleetid test manufacturer CA"));

  const auto curl = RunCommand(
      Curl(fmt::format("--cacert '{}' --cert '{}' --key '{}' {}", pki().ca_pem, pki().client_pem,
                       pki().client_key_pem, Url(*server, "/whoami"))));
  EXPECT_EQ(curl.status, 0) << curl.output;
}

// SetCertificate and AddClientTrustAnchor are thread-safe: called from several threads while
// clients handshake, no swap is lost and every handshake gets one whole context (run under
// TSan, this is the regression test for their reading the context outside tls_mutex).
TEST_F(TlsTest, CertificatesAndAnchorsChangeConcurrentlyWithHandshakes) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  crypto::EvpPkeyPtr renewed_key = SoftwareKey();
  crypto::X509Ptr renewed =
      MakeServerCert(renewed_key.get(), pki().ca_cert.get(), pki().ca_key.get());
  ASSERT_TRUE(renewed);
  const std::vector<Maker> makers(4);

  std::atomic<bool> done{false};
  std::atomic<int> handshakes{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  clients.reserve(2);
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&] {
      while (!done.load()) {
        TlsClient client(server->port(), pki().ca_pem, pki().client_cert.get(),
                         pki().client_key.get());
        if (Whoami(client).empty()) ++failures;
        ++handshakes;
      }
    });
  }
  std::thread swapper([&] {
    for (int i = 0; i < 20; ++i) {
      auto swapped =
          i % 2 == 0 ? server->SetCertificate({X509Ref(renewed.get())}, PkeyRef(renewed_key.get()))
                     : server->SetCertificate({X509Ref(pki().server_cert.get())},
                                              PkeyRef(pki().server_key.get()));
      if (!swapped) ++failures;
      std::this_thread::sleep_for(5ms);
    }
  });
  std::thread anchorer([&] {
    for (const Maker& maker : makers) {
      if (!server->AddClientTrustAnchor(X509Ref(maker.ca.get()))) ++failures;
      std::this_thread::sleep_for(20ms);
    }
  });
  swapper.join();
  anchorer.join();
  while (handshakes.load() < 10) std::this_thread::sleep_for(10ms);
  done.store(true);
  for (auto& client : clients) client.join();
  EXPECT_EQ(failures.load(), 0);

  for (const Maker& maker : makers) {
    TlsClient device(server->port(), pki().ca_pem, maker.device.get(), maker.device_key.get());
    const auto body = Whoami(device);
    ASSERT_FALSE(body.empty()) << "no anchor added concurrently was lost";
    EXPECT_EQ(body.at("anchor"), "fleetid test manufacturer CA");
    EXPECT_EQ(X509_cmp(SSL_get0_peer_certificate(device.ssl()), pki().server_cert.get()), 0)
        << "the last certificate set is served";
  }
}

TEST_F(TlsTest, SilentAndHalfSentHandshakesAreDroppedAfterTheHandshakeTimeout) {
  HttpServerOptions options;
  options.handshake_timeout = 1s;
  options.header_timeout = 30s;
  options.read_timeout = 30s;
  auto server = StartServer(ServerTls(ClientAuth::kNone), options);
  ASSERT_TRUE(server);
  RawClient silent(server->port());
  RawClient half(server->port());
  ASSERT_TRUE(silent.connected() && half.connected());
  ASSERT_TRUE(half.Send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
  const auto start = Clock::now();
  EXPECT_TRUE(silent.WaitClosed(4s));
  EXPECT_TRUE(half.WaitClosed(1s));
  EXPECT_LT(Clock::now() - start, 2500ms);
}

TEST_F(TlsTest, SilentTlsSocketsMakeRoomForARealClient) {
  HttpServerOptions options;
  options.max_connections = 16;
  options.max_connections_per_address = 16;
  options.handshake_timeout = 30s;
  auto server = StartServer(ServerTls(ClientAuth::kOptional), options);
  ASSERT_TRUE(server);
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 300; ++i) {
    silent.push_back(std::make_unique<RawClient>(server->port()));
    ASSERT_TRUE(silent.back()->connected());
  }
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    TlsClient client(server->port(), pki().ca_pem, pki().client_cert.get(), pki().client_key.get());
    const auto body = Whoami(client);
    ASSERT_FALSE(body.empty()) << client.error();
    EXPECT_EQ(body.at("leaf"), "device-0042");
    // Served in a second, not after the 30 s handshake timeout of the sockets ahead of it.
    EXPECT_LT(Clock::now() - start, 1s * test::kSanitizerSlowdown);
  }
}

}  // namespace
}  // namespace fleetid::server
