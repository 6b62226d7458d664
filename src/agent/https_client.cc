#include "agent/https_client.h"

#include <poll.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <exception>
#include <optional>
#include <type_traits>
#include <variant>

// GCC 12 at -O2 reports -Wnull-dereference inside Asio's scheduler (inlined from system headers,
// not reachable); see src/server/http_server.cc.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#pragma GCC diagnostic pop
#include <fmt/core.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "crypto/tls_policy.h"
#include "crypto/x509.h"
#include "server/http_text.h"

namespace fleetid::agent {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

constexpr std::uint64_t kMaxReplyBody = std::uint64_t{16} * 1024 * 1024;
constexpr std::uint32_t kMaxReplyHeader = 64 * 1024;
// How long Close waits for the server's close_notify after sending ours.
constexpr std::chrono::milliseconds kTlsShutdownBound{1000};

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }

using server::AsciiLower;
using server::EqualsIgnoreCase;
using server::IsSafeHeaderValue;
using server::IsToken;

// IsVisible is true for printable ASCII without space (RFC 5234 VCHAR), what a request target
// and a URL path may hold once percent-encoded.
bool IsVisible(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < '\x7f'; });
}

// Headers that Connection sets itself, because they frame the message or the connection.
bool IsFramingHeader(std::string_view name) {
  static constexpr std::array<std::string_view, 6> kReserved = {
      "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"};
  return std::ranges::any_of(kReserved,
                             [name](std::string_view r) { return EqualsIgnoreCase(name, r); });
}

// RFC 9110 §9.2.2: a request with one of these methods may be repeated automatically.
bool IsIdempotent(std::string_view method) {
  static constexpr std::array<std::string_view, 5> kIdempotent = {"GET", "HEAD", "OPTIONS", "PUT",
                                                                  "DELETE"};
  return std::ranges::find(kIdempotent, method) != kIdempotent.end();
}

std::string OpenSslErrors() { return crypto::OpenSslErrorText(); }

Result<std::vector<crypto::X509Ptr>> ParseCertificates(
    const std::vector<std::vector<std::uint8_t>>& ders, std::string_view what) {
  std::vector<crypto::X509Ptr> certs;
  certs.reserve(ders.size());
  for (std::size_t i = 0; i < ders.size(); ++i) {
    auto cert = crypto::ParseCertificateDer(ders[i]);
    if (!cert) {
      return MakeError(ErrorCode::kInvalidArgument, "{} #{} is not a DER certificate: {}", what, i,
                       cert.error().message());
    }
    certs.push_back(std::move(*cert));
  }
  return certs;
}

// IsPeerClosed is true for the ways a read or write fails when the server has closed the
// connection (with or without close_notify, or with a reset), as opposed to a timeout, a TLS
// alert or a malformed reply.
bool IsPeerClosed(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::ssl::error::stream_truncated;
}

}  // namespace

std::string HttpReply::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

// --- ClientTls -----------------------------------------------------------------------------------

// Context owns the SSL_CTX; Asio's context wrapper is what beast::ssl_stream is made from.
struct ClientTls::Context {
  explicit Context(SSL_CTX* ctx) : ssl(ctx) {}
  net::ssl::context ssl;
};

ClientTls::ClientTls(std::unique_ptr<Context> context) : context_(std::move(context)) {}

ClientTls::~ClientTls() = default;

Result<std::shared_ptr<ClientTls>> ClientTls::Make(
    const std::vector<std::vector<std::uint8_t>>& trust_anchors,
    const std::vector<std::vector<std::uint8_t>>& client_chain, crypto::EvpPkeyPtr client_key) {
  if (trust_anchors.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "TLS needs at least one trust anchor");
  }
  if (client_chain.empty() != (client_key == nullptr)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a client certificate chain and its private key go together");
  }
  FLEETID_TRY(anchors, ParseCertificates(trust_anchors, "trust anchor"));
  FLEETID_TRY(chain, ParseCertificates(client_chain, "client certificate"));

  FLEETID_TRY(ctx, crypto::NewTlsContext(crypto::TlsRole::kClient));
  SSL_CTX* raw = ctx.get();
  auto internal = [](std::string_view what) {
    return MakeError(ErrorCode::kInternal, "{}: {}", what, OpenSslErrors());
  };
  std::vector<X509*> anchor_ptrs;
  for (const crypto::X509Ptr& anchor : anchors) anchor_ptrs.push_back(anchor.get());
  FLEETID_CHECK_OK(crypto::SetPeerVerification(raw, anchor_ptrs, SSL_VERIFY_PEER));

  if (!chain.empty()) {
    if (SSL_CTX_use_certificate(raw, chain.front().get()) != 1) {
      return MakeError(ErrorCode::kInvalidArgument, "the client certificate is unusable: {}",
                       OpenSslErrors());
    }
    for (std::size_t i = 1; i < chain.size(); ++i) {
      if (SSL_CTX_add1_chain_cert(raw, chain[i].get()) != 1) {
        return internal("adding a client chain certificate");
      }
    }
    EVP_PKEY* key = client_key.get();
    if (SSL_CTX_use_PrivateKey(raw, key) != 1 || SSL_CTX_check_private_key(raw) != 1) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the private key does not match the client certificate: {}",
                       OpenSslErrors());
    }
    // On a client, the "client sigalgs" are the schemes it may sign CertificateVerify with; the
    // plain sigalgs list is what the ClientHello offers the server for its own signature, which
    // must stay broad (an Ed25519 device talking to a P-256 authority).
    if (const char* sigalgs = crypto::TlsSignatureScheme(key); sigalgs != nullptr) {
      if (SSL_CTX_set1_client_sigalgs_list(raw, sigalgs) != 1) return internal("client sigalgs");
    }
  }
  // net::ssl::context takes ownership of the handle.
  return std::shared_ptr<ClientTls>(new ClientTls(std::make_unique<Context>(ctx.release())));
}

// --- Connection ----------------------------------------------------------------------------------

class Connection::Impl {
 public:
  Impl(std::string host, std::uint16_t port, std::shared_ptr<ClientTls> tls,
       std::optional<net::ip::address> ip, std::vector<tcp::endpoint> endpoints,
       std::chrono::milliseconds timeout)
      : host_(std::move(host)),
        tls_(std::move(tls)),
        ip_(std::move(ip)),
        endpoints_(std::move(endpoints)),
        timeout_(timeout),
        authority_(ip_ && ip_->is_v6() ? fmt::format("[{}]:{}", host_, port)
                                       : fmt::format("{}:{}", host_, port)) {}

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // Close's one step that can throw, the TLS shutdown, is caught inside it; clang-tidy also
  // follows the streams' destructors into Asio, but those are noexcept like every destructor.
  ~Impl() { Close(); }  // NOLINT(bugprone-exception-escape)

  // Open makes a new connection (and TLS session), dropping the current one.
  [[nodiscard]] Result<void> Open() {
    Drop();
    if (tls_) {
      return OpenOn(stream_.emplace<TlsStream>(io_, tls_->context_->ssl));
    }
    return OpenOn(stream_.emplace<beast::tcp_stream>(io_));
  }

  [[nodiscard]] Result<HttpReply> Request(http::request<http::string_body>& request) {
    // A connection that has served a request and since become readable has been closed by the
    // server (an idle timeout, Stop) or broken: an idle HTTP/1.1 server sends nothing unasked.
    // Nothing has been sent on it, so moving to a fresh one is safe for any method.
    if (IsOpen() && reused_ && !IdleAndOpen()) Drop();
    bool fresh = false;
    if (!IsOpen()) {
      FLEETID_CHECK_OK(Open());
      fresh = true;
    }
    auto reply = Exchange(request);
    if (reply) return std::move(*reply);
    // The server closed while the request was in flight, before answering a byte. It may or may
    // not have seen the request, so only an idempotent one is sent again.
    if (!fresh && reply.error().closed_unanswered && IsIdempotent(ToStd(request.method_string()))) {
      FLEETID_CHECK_OK(Open());
      reply = Exchange(request);
      if (reply) return std::move(*reply);
    }
    return MakeError(std::move(reply.error().error));
  }

  // Close ends the connection, over TLS with close_notify.
  void Close() {
    if (auto* tls = std::get_if<TlsStream>(&stream_)) {
      try {
        beast::tcp_stream& tcp = beast::get_lowest_layer(*tls);
        tcp.expires_after(std::min(timeout_, kTlsShutdownBound));
        // SSL_shutdown sends close_notify, then reads until the server's arrives (or the bound).
        tls->async_shutdown([](beast::error_code) {});
        RunIo();
      } catch (const std::exception&) {
        // Closing goes on without close_notify: the server sees a truncated stream, no more.
      }
      ERR_clear_error();
    }
    Drop();
  }

  // authority is host:port, with an IPv6 address in brackets: the Host header's value.
  const std::string& authority() const { return authority_; }

 private:
  struct Failure {
    Error error;
    // The server closed the connection before any byte of a reply.
    bool closed_unanswered = false;
  };

  bool IsOpen() const { return !std::holds_alternative<std::monostate>(stream_); }

  // Drop closes the socket at once, without close_notify, and forgets the connection.
  void Drop() {
    stream_ = std::monostate{};
    buffer_.clear();
    reused_ = false;
  }

  // RunIo runs the operation just started until it completes; the tcp_stream's expiry bounds it.
  void RunIo() {
    io_.restart();
    io_.run();
  }

  // Socket is the connection's socket, or null when there is no connection.
  tcp::socket* Socket() {
    if (auto* tls = std::get_if<TlsStream>(&stream_))
      return &beast::get_lowest_layer(*tls).socket();
    if (auto* plain = std::get_if<beast::tcp_stream>(&stream_)) return &plain->socket();
    return nullptr;
  }

  // IdleAndOpen is true when nothing has arrived on the connection since the last reply: no
  // bytes, no end of stream, no error.
  bool IdleAndOpen() {
    tcp::socket* socket = Socket();
    if (socket == nullptr || buffer_.size() > 0) return false;
    pollfd pfd{.fd = socket->native_handle(), .events = POLLIN, .revents = 0};
    return ::poll(&pfd, 1, 0) == 0;
  }

  template <typename Stream>
  [[nodiscard]] Result<void> OpenOn(Stream& stream) {
    beast::tcp_stream& tcp = beast::get_lowest_layer(stream);
    tcp.expires_after(timeout_);
    beast::error_code ec;
    tcp.async_connect(endpoints_,
                      [&ec](beast::error_code result, const tcp::endpoint&) { ec = result; });
    RunIo();
    if (ec) {
      Drop();
      if (ec == beast::error::timeout) {
        return MakeError(ErrorCode::kUnavailable, "cannot connect to {}: timed out after {} ms",
                         authority_, timeout_.count());
      }
      return MakeError(ErrorCode::kUnavailable, "cannot connect to {}: {}", authority_,
                       ec.message());
    }
    // Requests go out as several segments (TLS records); without TCP_NODELAY each exchange
    // would wait for the server's delayed ACK.
    beast::error_code nodelay_ec;
    tcp.socket().set_option(tcp::no_delay(true), nodelay_ec);
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      ERR_clear_error();
      SSL* ssl = stream.native_handle();
      if (!VerifyPeerName(ssl)) {
        Drop();
        return MakeError(ErrorCode::kInternal, "setting the expected server name: {}",
                         OpenSslErrors());
      }
      stream.async_handshake(net::ssl::stream_base::client,
                             [&ec](beast::error_code result) { ec = result; });
      RunIo();
      if (ec) {
        // A failed verification is named by its X509_V_ERR reason: OpenSSL's error for the
        // handshake may instead be the step that failed inside it (say, an EVP signature check).
        std::string reason;
        if (const long verify = SSL_get_verify_result(ssl); verify != X509_V_OK) {
          reason =
              fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verify));
        } else if (ec == beast::error::timeout) {
          reason = fmt::format("timed out after {} ms", timeout_.count());
        } else {
          reason = ec.message();
        }
        ERR_clear_error();
        Drop();
        return MakeError(ErrorCode::kUnavailable, "TLS handshake with {} failed: {}", authority_,
                         reason);
      }
    }
    tcp.expires_never();
    return {};
  }

  // VerifyPeerName makes the handshake check that the server's certificate names the host: its
  // IP address for a numeric host, else its DNS name, which also goes out as SNI (RFC 6066 §3
  // allows no address there).
  bool VerifyPeerName(SSL* ssl) const {
    if (ip_) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      if (ip_->is_v4()) {
        const auto bytes = ip_->to_v4().to_bytes();
        return X509_VERIFY_PARAM_set1_ip(param, bytes.data(), bytes.size()) == 1;
      }
      const auto bytes = ip_->to_v6().to_bytes();
      return X509_VERIFY_PARAM_set1_ip(param, bytes.data(), bytes.size()) == 1;
    }
    // SSL_set_tlsext_host_name spelled out: the macro's C cast trips -Wold-style-cast. OpenSSL
    // copies the name and does not write through the pointer.
    return SSL_set1_host(ssl, host_.c_str()) == 1 &&
           SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                    const_cast<char*>(host_.c_str())) == 1;
  }

  std::expected<HttpReply, Failure> Exchange(http::request<http::string_body>& request) {
    if (auto* tls = std::get_if<TlsStream>(&stream_)) return ExchangeOn(*tls, request);
    if (auto* plain = std::get_if<beast::tcp_stream>(&stream_)) return ExchangeOn(*plain, request);
    return std::unexpected(
        Failure{.error = Error(ErrorCode::kInternal, "no connection to send the request on")});
  }

  template <typename Stream>
  std::expected<HttpReply, Failure> ExchangeOn(Stream& stream,
                                               http::request<http::string_body>& request) {
    beast::tcp_stream& tcp = beast::get_lowest_layer(stream);
    tcp.expires_after(timeout_);
    ERR_clear_error();
    beast::error_code ec;
    http::async_write(stream, request,
                      [&ec](beast::error_code result, std::size_t) { ec = result; });
    RunIo();
    if (ec) return Fail(ec, "sending the request", IsPeerClosed(ec));

    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxReplyBody);
    parser.header_limit(kMaxReplyHeader);
    // RFC 9110 §9.3.2: a reply to HEAD has no content, whatever Content-Length says.
    if (request.method() == http::verb::head) parser.skip(true);
    http::async_read(stream, buffer_, parser,
                     [&ec](beast::error_code result, std::size_t) { ec = result; });
    RunIo();
    if (ec) {
      if (ec == http::error::body_limit) {
        return Fail(ec, "reading the reply", false, "the reply body exceeds 16 MiB");
      }
      return Fail(ec, "reading the reply", !parser.got_some() && IsPeerClosed(ec));
    }
    tcp.expires_never();

    const http::response<http::string_body>& response = parser.get();
    HttpReply reply;
    reply.status = static_cast<int>(response.result_int());
    reply.content_type = std::string(ToStd(response[http::field::content_type]));
    for (const auto& field : response) {
      reply.headers.emplace_back(AsciiLower(ToStd(field.name_string())),
                                 std::string(ToStd(field.value())));
    }
    const bool keep_alive = response.keep_alive();
    reply.body = parser.release().body();
    if (keep_alive) {
      reused_ = true;
    } else {
      Close();
    }
    return reply;
  }

  std::unexpected<Failure> Fail(const beast::error_code& ec, std::string_view doing,
                                bool closed_unanswered, std::string_view why = {}) {
    std::string reason(why);
    if (reason.empty()) {
      reason = ec == beast::error::timeout ? fmt::format("timed out after {} ms", timeout_.count())
                                           : ec.message();
    }
    ERR_clear_error();
    Drop();
    return std::unexpected(Failure{
        .error =
            Error(ErrorCode::kUnavailable, fmt::format("{} to {}: {}", doing, authority_, reason)),
        .closed_unanswered = closed_unanswered,
    });
  }

  const std::string host_;
  const std::shared_ptr<ClientTls> tls_;
  const std::optional<net::ip::address> ip_;  // Set for a numeric host.
  const std::vector<tcp::endpoint> endpoints_;
  const std::chrono::milliseconds timeout_;
  const std::string authority_;

  net::io_context io_{1};  // Declared before stream_, which must go first.
  // monostate: no connection (not yet, closed, or dropped after a failure).
  std::variant<std::monostate, beast::tcp_stream, TlsStream> stream_;
  beast::flat_buffer buffer_;
  bool reused_ = false;  // A reply has been read on the current connection.
};

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Connection::~Connection() = default;

Result<std::unique_ptr<Connection>> Connection::Connect(std::string host, std::uint16_t port,
                                                        std::shared_ptr<ClientTls> tls,
                                                        std::chrono::milliseconds timeout) {
  if (port == 0) return MakeError(ErrorCode::kInvalidArgument, "port 0 cannot be connected to");
  if (timeout <= std::chrono::milliseconds::zero()) {
    return MakeError(ErrorCode::kInvalidArgument, "the timeout must be positive");
  }
  try {
    std::optional<net::ip::address> ip;
    std::vector<tcp::endpoint> endpoints;
    if (EqualsIgnoreCase(host, "localhost")) {
      // RFC 6761 §6.3: localhost is the loopback interface, without asking a resolver.
      host = "localhost";
      endpoints = {tcp::endpoint(net::ip::address_v4::loopback(), port),
                   tcp::endpoint(net::ip::address_v6::loopback(), port)};
    } else {
      beast::error_code ec;
      ip = net::ip::make_address(host, ec);
      if (ec) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "the host must be a numeric IP address or localhost");
      }
      endpoints = {tcp::endpoint(*ip, port)};
    }
    auto impl = std::make_unique<Impl>(std::move(host), port, std::move(tls), ip,
                                       std::move(endpoints), timeout);
    FLEETID_CHECK_OK(impl->Open());
    return std::unique_ptr<Connection>(new Connection(std::move(impl)));
  } catch (const std::exception& e) {
    return MakeError(ErrorCode::kInternal, "connecting: unexpected exception: {}", e.what());
  }
}

Result<HttpReply> Connection::Request(
    std::string_view method, std::string_view target, std::string_view body,
    std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!IsToken(method)) {
    return MakeError(ErrorCode::kInvalidArgument, "the method is not an HTTP token");
  }
  if (!target.starts_with('/') || !IsVisible(target)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the target must be a path starting with '/', percent-encoded");
  }
  if (!IsSafeHeaderValue(content_type)) {
    return MakeError(ErrorCode::kInvalidArgument, "the content type contains CR, LF or NUL");
  }
  for (const auto& [name, value] : headers) {
    if (!IsToken(name) || !IsSafeHeaderValue(value)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "a header name is not a token or its value contains CR, LF or NUL");
    }
    if (IsFramingHeader(name)) {
      return MakeError(ErrorCode::kInvalidArgument, "the {} header is set by the connection",
                       AsciiLower(name));
    }
  }
  try {
    http::request<http::string_body> request;
    request.method_string(method);
    request.target(target);
    request.version(11);
    request.set(http::field::host, impl_->authority());
    if (!content_type.empty()) request.set(http::field::content_type, content_type);
    for (const auto& [name, value] : headers) request.insert(name, value);
    request.body() = std::string(body);
    request.prepare_payload();
    return impl_->Request(request);
  } catch (const std::exception& e) {
    impl_->Close();
    return MakeError(ErrorCode::kInternal, "request: unexpected exception: {}", e.what());
  }
}

void Connection::Close() { impl_->Close(); }

// --- URLs ----------------------------------------------------------------------------------------

Result<Url> ParseUrl(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "the URL has no scheme");
  }
  Url parsed;
  parsed.scheme = AsciiLower(url.substr(0, scheme_end));
  if (parsed.scheme != "http" && parsed.scheme != "https") {
    return MakeError(ErrorCode::kInvalidArgument, "the URL's scheme is not http or https");
  }
  const std::string_view rest = url.substr(scheme_end + 3);
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "the URL has a query or a fragment");
  }
  const std::size_t path_start = rest.find('/');
  const std::string_view authority = rest.substr(0, path_start);
  std::string_view path = path_start == std::string_view::npos ? "" : rest.substr(path_start);
  if (authority.find('@') != std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "the URL has user information");
  }

  std::string_view host;
  std::optional<std::string_view> port;
  if (authority.starts_with('[')) {
    // RFC 3986 §3.2.2: an IPv6 literal in brackets.
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument, "the URL's IPv6 address lacks its ']'");
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return MakeError(ErrorCode::kInvalidArgument, "the URL has bytes after its IPv6 address");
      }
      port = after.substr(1);
    }
    beast::error_code ec;
    static_cast<void>(net::ip::make_address_v6(std::string(host), ec));
    if (ec) return MakeError(ErrorCode::kInvalidArgument, "the URL's IPv6 address is invalid");
  } else {
    const std::size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    const bool name_chars = std::all_of(host.begin(), host.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '.';
    });
    if (host.empty() || !name_chars) {
      return MakeError(ErrorCode::kInvalidArgument, "the URL's host is missing or invalid");
    }
  }
  parsed.host = AsciiLower(host);

  if (port) {
    unsigned value = 0;
    const bool digits =
        !port->empty() && port->size() <= 5 &&
        std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) {
      for (const char c : *port) value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (!digits || value == 0 || value > 65535) {
      return MakeError(ErrorCode::kInvalidArgument, "the URL's port is not 1..65535");
    }
    parsed.port = static_cast<std::uint16_t>(value);
  } else {
    parsed.port = parsed.scheme == "https" ? 443 : 80;
  }

  if (!IsVisible(path)) {
    return MakeError(ErrorCode::kInvalidArgument, "the URL's path has spaces or control bytes");
  }
  while (path.ends_with('/')) path.remove_suffix(1);
  parsed.path = std::string(path);
  return parsed;
}

}  // namespace fleetid::agent
