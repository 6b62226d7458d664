// The agent's HTTP client against a real fleetid::server::HttpServer in this process: plain HTTP,
// HTTPS with server verification, mutual TLS with software keys and with client keys in a real
// SoftHSM2 token (custody::TokenPkey), keep-alive and reconnecting after the server's idle close.
#include "agent/https_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "custody/provider.h"
#include "server/http_server.h"
#include "testing/certs.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::agent {
namespace {

using namespace std::chrono_literals;
using server::HttpRequest;
using server::HttpResponse;
using server::HttpServer;
using server::HttpServerOptions;
using server::PkeyRef;
using server::Router;
using server::TlsOptions;
using server::X509Ref;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ClientAuth = TlsOptions::ClientAuth;
using Der = std::vector<std::uint8_t>;

crypto::EvpPkeyPtr SoftwareKey() {
  crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_TRUE(key);
  return key;
}

// TokenKey makes a key of |suite| in the test token and returns it as an EVP_PKEY that signs
// inside the token.
crypto::EvpPkeyPtr TokenKey(crypto::SuiteId suite) {
  const std::string label = test::UniqueLabel("agent");
  const auto& token = test::Opened().token;
  auto attributes =
      token->GenerateKey(label, crypto::GetSuite(suite), crypto::OpenSslRng::Instance());
  EXPECT_TRUE(attributes) << attributes.error();
  auto signer = token->GetSigner(label);
  EXPECT_TRUE(signer) << signer.error();
  if (!signer) return nullptr;
  auto pkey = custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(*signer)));
  EXPECT_TRUE(pkey) << pkey.error();
  return pkey ? std::move(*pkey) : nullptr;
}

crypto::X509Ptr MakeServerCert(EVP_PKEY* key, X509* ca, EVP_PKEY* ca_key, const char* names) {
  return test::MakeCert("fleetid authority", key, ca, ca_key,
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "serverAuth"},
                         {NID_subject_alt_name, names}});
}

crypto::X509Ptr MakeClientCert(std::string_view common_name, EVP_PKEY* key, X509* ca,
                               EVP_PKEY* ca_key) {
  return test::MakeCert(common_name, key, ca, ca_key,
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "clientAuth"}});
}

Der ToDer(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  if (len <= 0) return {};
  Der der(static_cast<std::size_t>(len));
  unsigned char* out = der.data();
  i2d_X509(cert, &out);
  return der;
}

std::string CommonName(const Der& der) {
  const unsigned char* p = der.data();
  const crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return "<unparsable>";
  std::array<char, 256> cn{};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn.data(),
                                static_cast<int>(cn.size())) < 0) {
    return "<no CN>";
  }
  return cn.data();
}

nlohmann::json Json(const std::string& text) { return nlohmann::json::parse(text, nullptr, false); }

// One CA issues the server's and the devices' certificates; the rogue CA is trusted by nobody.
struct Pki {
  crypto::EvpPkeyPtr ca_key;
  crypto::X509Ptr ca_cert;
  crypto::EvpPkeyPtr server_key;
  crypto::X509Ptr server_cert;        // DNS:localhost, IP:127.0.0.1
  crypto::X509Ptr other_server_cert;  // DNS:authority.example only
  crypto::EvpPkeyPtr device_key;
  crypto::X509Ptr device_cert;
  crypto::EvpPkeyPtr rogue_ca_key;
  crypto::X509Ptr rogue_ca_cert;
  crypto::EvpPkeyPtr rogue_key;
  crypto::X509Ptr rogue_cert;  // "device-0042" again, by the rogue CA
};

class HttpsClientTest : public ::testing::Test {
 protected:
  static Pki& pki() {
    if (!pki_) {
      pki_ = std::make_unique<Pki>();
      Pki& p = *pki_;
      p.ca_key = SoftwareKey();
      p.ca_cert = test::MakeCa("fleetid test CA", p.ca_key.get());
      p.server_key = SoftwareKey();
      p.server_cert = MakeServerCert(p.server_key.get(), p.ca_cert.get(), p.ca_key.get(),
                                     "DNS:localhost,IP:127.0.0.1");
      p.other_server_cert = MakeServerCert(p.server_key.get(), p.ca_cert.get(), p.ca_key.get(),
                                           "DNS:authority.example");
      p.device_key = SoftwareKey();
      p.device_cert =
          MakeClientCert("device-0042", p.device_key.get(), p.ca_cert.get(), p.ca_key.get());
      p.rogue_ca_key = SoftwareKey();
      p.rogue_ca_cert = test::MakeCa("fleetid test CA", p.rogue_ca_key.get());
      p.rogue_key = SoftwareKey();
      p.rogue_cert = MakeClientCert("device-0042", p.rogue_key.get(), p.rogue_ca_cert.get(),
                                    p.rogue_ca_key.get());
    }
    return *pki_;
  }

  static void TearDownTestSuite() { pki_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(pki().server_cert && pki().other_server_cert && pki().device_cert &&
                pki().rogue_cert);
    ERR_clear_error();
  }

  static TlsOptions ServerTls(ClientAuth client_auth, X509* cert = nullptr) {
    TlsOptions tls;
    tls.certificate_chain = {X509Ref(cert != nullptr ? cert : pki().server_cert.get())};
    tls.private_key = PkeyRef(pki().server_key.get());
    if (client_auth != ClientAuth::kNone) {
      tls.client_trust_anchors = {X509Ref(pki().ca_cert.get())};
    }
    tls.client_auth = client_auth;
    return tls;
  }

  static Router TestRouter() {
    Router router;
    router.Add("GET", "/hello",
               [](const HttpRequest&) { return HttpResponse::Json(200, R"({"hello":"world"})"); });
    router.Add("POST", "/echo", [](const HttpRequest& request) {
      HttpResponse response;
      response.status = 201;
      response.content_type = std::string(request.Header("content-type"));
      response.headers.emplace_back("X-Echo", std::string(request.Header("x-test")));
      response.body = request.body;
      return response;
    });
    // remote tells connections apart: a new connection comes from a new source port.
    router.Add("GET", "/whoami", [](const HttpRequest& request) {
      nlohmann::json body = {{"tls", request.tls}, {"remote", request.remote_address}};
      if (!request.client_chain.empty()) body["leaf"] = CommonName(request.client_chain.front());
      return HttpResponse::Json(200, body.dump());
    });
    router.Add("GET", "/slow", [](const HttpRequest&) {
      std::this_thread::sleep_for(600ms);
      return HttpResponse::Json(200, "{}");
    });
    router.Add("GET", "/big", [](const HttpRequest&) {
      return HttpResponse::Json(200, std::string(std::size_t{17} * 1024 * 1024, 'x'));
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

  static std::shared_ptr<ClientTls> MakeTls(const std::vector<Der>& anchors,
                                            const std::vector<Der>& chain = {},
                                            crypto::EvpPkeyPtr key = nullptr) {
    auto tls = ClientTls::Make(anchors, chain, std::move(key));
    if (!tls) {
      ADD_FAILURE() << tls.error();
      return nullptr;
    }
    return std::move(*tls);
  }

  static std::shared_ptr<ClientTls> TrustingTls() { return MakeTls({ToDer(pki().ca_cert.get())}); }

  static std::unique_ptr<Connection> MustConnect(const HttpServer& server,
                                                 std::shared_ptr<ClientTls> tls,
                                                 std::string host = "127.0.0.1") {
    auto connection = Connection::Connect(std::move(host), server.port(), std::move(tls));
    if (!connection) {
      ADD_FAILURE() << connection.error();
      return nullptr;
    }
    return std::move(*connection);
  }

  // WhoAmI asks /whoami on |connection| and returns the parsed answer (null on failure).
  static nlohmann::json WhoAmI(Connection& connection) {
    auto reply = connection.Request("GET", "/whoami");
    if (!reply) {
      ADD_FAILURE() << reply.error();
      return nullptr;
    }
    EXPECT_EQ(reply->status, 200) << reply->body;
    return Json(reply->body);
  }

  static inline std::unique_ptr<Pki> pki_;
};

// --- Plain HTTP ----------------------------------------------------------------------------------

TEST_F(HttpsClientTest, PlainHttpGetPostHeadAndErrorStatus) {
  auto server = StartServer(std::nullopt);
  ASSERT_TRUE(server);
  auto connection = MustConnect(*server, nullptr);
  ASSERT_TRUE(connection);

  auto get = connection->Request("GET", "/hello");
  ASSERT_TRUE(get) << get.error();
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, R"({"hello":"world"})");
  EXPECT_EQ(get->content_type, "application/json");
  EXPECT_EQ(get->Header("Content-Type"), "application/json");
  EXPECT_EQ(get->Header("server"), "fleetid");

  auto post = connection->Request("POST", "/echo", "ping \x01\xff", "text/plain",
                                  {{"X-Test", "forty-two"}});
  ASSERT_TRUE(post) << post.error();
  EXPECT_EQ(post->status, 201);
  EXPECT_EQ(post->body, "ping \x01\xff");
  EXPECT_EQ(post->content_type, "text/plain");
  EXPECT_EQ(post->Header("x-echo"), "forty-two");

  auto head = connection->Request("HEAD", "/hello");
  ASSERT_TRUE(head) << head.error();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
  EXPECT_EQ(head->Header("content-length"), "17");

  auto missing = connection->Request("GET", "/missing");
  ASSERT_TRUE(missing) << missing.error();  // A 404 is a reply, not an error.
  EXPECT_EQ(missing->status, 404);

  const auto first = WhoAmI(*connection);
  const auto second = WhoAmI(*connection);
  EXPECT_EQ(first.value("tls", true), false);
  EXPECT_EQ(first.value("remote", "a"), second.value("remote", "b")) << "not kept alive";
}

TEST_F(HttpsClientTest, BadRequestsAreInvalidArgument) {
  auto server = StartServer(std::nullopt);
  ASSERT_TRUE(server);
  auto connection = MustConnect(*server, nullptr);
  ASSERT_TRUE(connection);
  const auto expect_invalid = [&](std::string_view method, std::string_view target,
                                  const std::vector<std::pair<std::string, std::string>>& headers) {
    auto reply = connection->Request(method, target, "", "", headers);
    ASSERT_FALSE(reply) << method << " " << target;
    EXPECT_THAT(reply, test::HasCode(ErrorCode::kInvalidArgument));
  };
  expect_invalid("GET", "hello", {});
  expect_invalid("GET", "/hello world", {});
  expect_invalid("GET", "/hello\r\nX-Evil: 1", {});
  expect_invalid("G T", "/hello", {});
  expect_invalid("GET", "/hello", {{"X-Test", "a\r\nX-Evil: 1"}});
  expect_invalid("GET", "/hello", {{"Bad Name", "1"}});
  expect_invalid("GET", "/hello", {{"content-length", "5"}});
  expect_invalid("GET", "/hello", {{"Host", "elsewhere"}});
  // The connection is still good.
  auto reply = connection->Request("GET", "/hello");
  ASSERT_TRUE(reply) << reply.error();
  EXPECT_EQ(reply->status, 200);
}

TEST_F(HttpsClientTest, ConnectFailures) {
  auto named = Connection::Connect("authority.example", 443, nullptr);
  ASSERT_FALSE(named);
  EXPECT_THAT(named, test::HasCode(ErrorCode::kInvalidArgument));

  std::uint16_t port = 0;
  {
    auto server = StartServer(std::nullopt);
    ASSERT_TRUE(server);
    port = server->port();
  }
  auto refused = Connection::Connect("127.0.0.1", port, nullptr);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(refused.error().message(), HasSubstr("refused"));
}

TEST_F(HttpsClientTest, TimeoutAndOversizedReplyFailThenTheConnectionRecovers) {
  auto server = StartServer(std::nullopt);
  ASSERT_TRUE(server);
  auto connection = Connection::Connect("127.0.0.1", server->port(), nullptr, 200ms);
  ASSERT_TRUE(connection) << connection.error();

  auto slow = (*connection)->Request("GET", "/slow");
  ASSERT_FALSE(slow);
  EXPECT_THAT(slow, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(slow.error().message(), HasSubstr("timed out after 200 ms"));

  // The server thread that runs /slow serves the connections it accepts only after the handler;
  // the next request's new connection may land there.
  std::this_thread::sleep_for(500ms);
  auto after = (*connection)->Request("GET", "/hello");
  ASSERT_TRUE(after) << after.error();
  EXPECT_EQ(after->status, 200);

  auto patient = MustConnect(*server, nullptr);
  ASSERT_TRUE(patient);
  auto big = patient->Request("GET", "/big");
  ASSERT_FALSE(big);
  EXPECT_THAT(big, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(big.error().message(), HasSubstr("exceeds 16 MiB"));
  auto recovered = patient->Request("GET", "/hello");
  ASSERT_TRUE(recovered) << recovered.error();
  EXPECT_EQ(recovered->status, 200);
}

// --- Server verification -------------------------------------------------------------------------

TEST_F(HttpsClientTest, HttpsVerifiesTheServerByAddressAndByName) {
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);
  const auto tls = TrustingTls();
  ASSERT_TRUE(tls);
  for (const char* host : {"127.0.0.1", "localhost", "LocalHost"}) {
    SCOPED_TRACE(host);
    auto connection = MustConnect(*server, tls, host);
    ASSERT_TRUE(connection);
    const auto who = WhoAmI(*connection);
    EXPECT_EQ(who.value("tls", false), true) << who;
    EXPECT_FALSE(who.contains("leaf")) << who;
  }
}

TEST_F(HttpsClientTest, UntrustedServerCertificateFailsVerification) {
  auto server = StartServer(ServerTls(ClientAuth::kNone));
  ASSERT_TRUE(server);
  const auto tls = MakeTls({ToDer(pki().rogue_ca_cert.get())});
  ASSERT_TRUE(tls);
  auto connection = Connection::Connect("127.0.0.1", server->port(), tls);
  ASSERT_FALSE(connection);
  EXPECT_THAT(connection, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(connection.error().message(), HasSubstr("certificate verify failed"));
}

TEST_F(HttpsClientTest, ServerCertificateForAnotherNameFailsVerification) {
  auto server = StartServer(ServerTls(ClientAuth::kNone, pki().other_server_cert.get()));
  ASSERT_TRUE(server);
  const auto tls = TrustingTls();
  ASSERT_TRUE(tls);
  auto by_name = Connection::Connect("localhost", server->port(), tls);
  ASSERT_FALSE(by_name);
  EXPECT_THAT(by_name, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(by_name.error().message(), HasSubstr("hostname mismatch"));
  auto by_address = Connection::Connect("127.0.0.1", server->port(), tls);
  ASSERT_FALSE(by_address);
  EXPECT_THAT(by_address, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(by_address.error().message(), HasSubstr("IP address mismatch"));
}

TEST_F(HttpsClientTest, UnusableTlsOptionsAreInvalidArgument) {
  const auto expect_invalid = [](Result<std::shared_ptr<ClientTls>> made, std::string_view why) {
    ASSERT_FALSE(made) << why;
    EXPECT_THAT(made, test::HasCode(ErrorCode::kInvalidArgument));
    EXPECT_THAT(made.error().message(), HasSubstr(why));
  };
  expect_invalid(ClientTls::Make({}), "at least one trust anchor");
  expect_invalid(ClientTls::Make({Der{0x30, 0x00}}), "not a DER certificate");
  expect_invalid(ClientTls::Make({ToDer(pki().ca_cert.get())}, {ToDer(pki().device_cert.get())}),
                 "go together");
  expect_invalid(ClientTls::Make({ToDer(pki().ca_cert.get())}, {ToDer(pki().device_cert.get())},
                                 SoftwareKey()),
                 "does not match");
}

// --- Mutual TLS ----------------------------------------------------------------------------------

TEST_F(HttpsClientTest, MutualTlsPresentsTheClientCertificate) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  EVP_PKEY_up_ref(pki().device_key.get());
  const auto tls = MakeTls({ToDer(pki().ca_cert.get())}, {ToDer(pki().device_cert.get())},
                           crypto::EvpPkeyPtr(pki().device_key.get()));
  ASSERT_TRUE(tls);
  auto connection = MustConnect(*server, tls);
  ASSERT_TRUE(connection);
  EXPECT_EQ(WhoAmI(*connection).value("leaf", ""), "device-0042");
}

// Over TLS 1.3 the server judges the client's certificate after the client's handshake is done,
// so the refusal may come at Connect or at the first Request; either way it names the alert.
Result<HttpReply> ConnectAndGet(std::uint16_t port, std::shared_ptr<ClientTls> tls) {
  FLEETID_TRY(connection, Connection::Connect("127.0.0.1", port, std::move(tls)));
  return connection->Request("GET", "/whoami");
}

TEST_F(HttpsClientTest, ServerRefusesAMissingOrUntrustedClientCertificate) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);

  auto anonymous = ConnectAndGet(server->port(), TrustingTls());
  ASSERT_FALSE(anonymous);
  EXPECT_THAT(anonymous, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(anonymous.error().message(), HasSubstr("alert certificate required"));

  EVP_PKEY_up_ref(pki().rogue_key.get());
  const auto rogue = MakeTls({ToDer(pki().ca_cert.get())}, {ToDer(pki().rogue_cert.get())},
                             crypto::EvpPkeyPtr(pki().rogue_key.get()));
  ASSERT_TRUE(rogue);
  auto refused = ConnectAndGet(server->port(), rogue);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(refused.error().message(), HasSubstr("alert"));
}

TEST_F(HttpsClientTest, TokenClientKeysWorkForMutualTls) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  for (const auto suite : {crypto::SuiteId::kEcdsaP256Sha256, crypto::SuiteId::kEd25519}) {
    SCOPED_TRACE(crypto::GetSuite(suite).name);
    crypto::EvpPkeyPtr key = TokenKey(suite);
    ASSERT_TRUE(key);
    const crypto::X509Ptr cert =
        MakeClientCert("device-token", key.get(), pki().ca_cert.get(), pki().ca_key.get());
    ASSERT_TRUE(cert);
    const auto tls = MakeTls({ToDer(pki().ca_cert.get())}, {ToDer(cert.get())}, std::move(key));
    ASSERT_TRUE(tls);
    auto connection = MustConnect(*server, tls);
    ASSERT_TRUE(connection);
    EXPECT_EQ(WhoAmI(*connection).value("leaf", ""), "device-token");
  }
}

// --- Keep-alive ----------------------------------------------------------------------------------

TEST_F(HttpsClientTest, SeveralRequestsReuseOneTlsConnection) {
  auto server = StartServer(ServerTls(ClientAuth::kRequired));
  ASSERT_TRUE(server);
  EVP_PKEY_up_ref(pki().device_key.get());
  const auto tls = MakeTls({ToDer(pki().ca_cert.get())}, {ToDer(pki().device_cert.get())},
                           crypto::EvpPkeyPtr(pki().device_key.get()));
  ASSERT_TRUE(tls);
  auto connection = MustConnect(*server, tls);
  ASSERT_TRUE(connection);

  const auto first = WhoAmI(*connection);
  auto post = connection->Request("POST", "/echo", R"({"csr":"..."})", "application/json");
  ASSERT_TRUE(post) << post.error();
  EXPECT_EQ(post->body, R"({"csr":"..."})");
  const auto third = WhoAmI(*connection);
  ASSERT_TRUE(first.contains("remote") && third.contains("remote"));
  EXPECT_EQ(first.at("remote"), third.at("remote")) << "not the same connection";
  EXPECT_EQ(third.value("leaf", ""), "device-0042");

  // After Close, the next request connects anew.
  connection->Close();
  const auto fourth = WhoAmI(*connection);
  ASSERT_TRUE(fourth.contains("remote"));
  EXPECT_NE(fourth.at("remote"), first.at("remote"));
}

TEST_F(HttpsClientTest, ReconnectsTransparentlyAfterTheServerClosesAnIdleConnection) {
  HttpServerOptions options;
  options.idle_timeout = 1s;
  auto server = StartServer(ServerTls(ClientAuth::kNone), options);
  ASSERT_TRUE(server);
  auto connection = MustConnect(*server, TrustingTls());
  ASSERT_TRUE(connection);
  const auto before = WhoAmI(*connection);
  ASSERT_TRUE(before.contains("remote"));

  std::this_thread::sleep_for(1500ms);  // The server closes the idle connection after 1 s.

  // A POST, which is never resent once sent: the closed connection is noticed before sending.
  auto post = connection->Request("POST", "/echo", "after idle", "text/plain");
  ASSERT_TRUE(post) << post.error();
  EXPECT_EQ(post->status, 201);
  EXPECT_EQ(post->body, "after idle");
  const auto after = WhoAmI(*connection);
  ASSERT_TRUE(after.contains("remote"));
  EXPECT_NE(after.at("remote"), before.at("remote")) << "the idle connection was not replaced";
}

// --- Retrying ------------------------------------------------------------------------------------

// FakeServer runs |script| on a thread against a listening socket on 127.0.0.1, for what
// HttpServer never does: closing a kept-alive connection just as a request arrives. Accepts and
// reads give up after 5 s, so a failing test cannot hang the destructor's join.
class FakeServer {
 public:
  explicit FakeServer(std::function<void(int)> script)
      : listener_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<const sockaddr*>(&addr), len), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    EXPECT_EQ(::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    SetTimeout(listener_);
    thread_ = std::thread([this, script = std::move(script)] { script(listener_); });
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;
  ~FakeServer() {
    thread_.join();
    ::close(listener_);
  }

  std::uint16_t port() const { return port_; }

  static int Accept(int listener) {
    const int fd = ::accept(listener, nullptr, nullptr);
    if (fd >= 0) SetTimeout(fd);
    return fd;
  }

  // ReadRequest reads one request's head (and whatever of its body came along) from |fd| and
  // returns the request line, or "" if the connection failed first.
  static std::string ReadRequest(int fd) {
    std::string data;
    std::array<char, 4096> chunk{};
    while (data.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, chunk.data(), chunk.size(), 0);
      if (n <= 0) return "";
      data.append(chunk.data(), static_cast<std::size_t>(n));
    }
    return data.substr(0, data.find("\r\n"));
  }

  static void Reply(int fd, std::string_view body) {
    const std::string reply =
        fmt::format("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", body.size(), body);
    EXPECT_EQ(::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(reply.size()));
  }

 private:
  static void SetTimeout(int fd) {
    const timeval timeout{.tv_sec = 5, .tv_usec = 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }

  int listener_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST(RetryTest, IdempotentRequestIsResentWhenTheServerClosesAsItArrives) {
  std::vector<std::string> seen;  // Written by the server thread, read after it is joined.
  {
    FakeServer server([&seen](int listener) {
      const int first = FakeServer::Accept(listener);
      seen.push_back(FakeServer::ReadRequest(first));
      FakeServer::Reply(first, "one");
      seen.push_back(FakeServer::ReadRequest(first));
      ::close(first);  // Instead of answering: the idle timeout struck as the request came.
      const int second = FakeServer::Accept(listener);
      seen.push_back(FakeServer::ReadRequest(second));
      FakeServer::Reply(second, "two");
      ::close(second);
    });
    auto connection = Connection::Connect("127.0.0.1", server.port(), nullptr);
    ASSERT_TRUE(connection) << connection.error();
    auto first = (*connection)->Request("GET", "/a");
    ASSERT_TRUE(first) << first.error();
    EXPECT_EQ(first->body, "one");
    auto second = (*connection)->Request("GET", "/b");
    ASSERT_TRUE(second) << second.error();
    EXPECT_EQ(second->body, "two");
  }
  EXPECT_THAT(seen, ElementsAre("GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"));
}

TEST(RetryTest, PostIsNotResentOnceSent) {
  std::vector<std::string> seen;
  {
    FakeServer server([&seen](int listener) {
      const int first = FakeServer::Accept(listener);
      seen.push_back(FakeServer::ReadRequest(first));
      FakeServer::Reply(first, "one");
      seen.push_back(FakeServer::ReadRequest(first));
      ::close(first);  // The POST may or may not have been acted on: the client cannot know.
    });
    auto connection = Connection::Connect("127.0.0.1", server.port(), nullptr);
    ASSERT_TRUE(connection) << connection.error();
    auto first = (*connection)->Request("GET", "/a");
    ASSERT_TRUE(first) << first.error();
    auto post = (*connection)->Request("POST", "/enroll", "csr", "application/pkcs10");
    ASSERT_FALSE(post);
    EXPECT_THAT(post, test::HasCode(ErrorCode::kUnavailable));
    EXPECT_THAT(post.error().message(), HasSubstr("reading the reply"));
  }
  EXPECT_THAT(seen, ElementsAre("GET /a HTTP/1.1", "POST /enroll HTTP/1.1"));
}

// --- URLs ----------------------------------------------------------------------------------------

TEST(ParseUrlTest, SplitsHttpAndHttpsUrls) {
  auto https = ParseUrl("https://127.0.0.1:8443/x");
  ASSERT_TRUE(https) << https.error();
  EXPECT_EQ(https->scheme, "https");
  EXPECT_EQ(https->host, "127.0.0.1");
  EXPECT_EQ(https->port, 8443);
  EXPECT_EQ(https->path, "/x");

  auto http = ParseUrl("http://localhost:8080");
  ASSERT_TRUE(http) << http.error();
  EXPECT_EQ(http->scheme, "http");
  EXPECT_EQ(http->host, "localhost");
  EXPECT_EQ(http->port, 8080);
  EXPECT_EQ(http->path, "");

  auto defaults = ParseUrl("HTTPS://Authority.Example/.well-known/est/");
  ASSERT_TRUE(defaults) << defaults.error();
  EXPECT_EQ(defaults->scheme, "https");
  EXPECT_EQ(defaults->host, "authority.example");
  EXPECT_EQ(defaults->port, 443);
  EXPECT_EQ(defaults->path, "/.well-known/est");

  auto v6 = ParseUrl("http://[::1]:65535/");
  ASSERT_TRUE(v6) << v6.error();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 65535);
  EXPECT_EQ(v6->path, "");
  auto v6_default = ParseUrl("http://[::1]");
  ASSERT_TRUE(v6_default) << v6_default.error();
  EXPECT_EQ(v6_default->port, 80);
}

TEST(ParseUrlTest, RejectsWhatItCannotConnectTo) {
  for (const char* url :
       {"", "127.0.0.1:8443", "ftp://host/x", "https://", "https:///x", "https://host:0/",
        "https://host:65536/", "https://host:/", "https://host:84a3/", "https://user@host/",
        "https://host/x?y=1", "https://host/x#f", "https://[::1/", "https://[nope]/",
        "https://[::1]x/", "https://ho st/", "https://host/a b"}) {
    auto parsed = ParseUrl(url);
    EXPECT_FALSE(parsed) << url;
    if (!parsed) {
      EXPECT_THAT(parsed, test::HasCode(ErrorCode::kInvalidArgument)) << url;
    }
  }
}

}  // namespace
}  // namespace fleetid::agent
