#include "server/internal/session.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <iterator>
#include <limits>
#include <list>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>

// GCC 12 at -O2 reports -Wnull-dereference inside Asio's scheduler and strand comparison (inlined
// from system headers, not reachable: thread_info is set on every scheduler thread).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#pragma GCC diagnostic pop
#include <fmt/core.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "common/mutex.h"
#include "server/connection_share.h"
#include "server/http_text.h"
#include "server/internal/tls_context.h"
#include "server/request_parser.h"

namespace fleetid::server::internal {
namespace {

namespace http = beast::http;

constexpr std::string_view kServerName = "fleetid";
constexpr std::chrono::seconds kMaxLinger{2};
constexpr std::size_t kMaxLingerBytes = std::size_t{1024} * 1024;

bool IsFramingHeader(std::string_view name) {
  static constexpr std::array<std::string_view, 8> kReserved = {
      "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "server",
      "date",           "content-type"};
  return std::ranges::any_of(kReserved,
                             [name](std::string_view r) { return EqualsIgnoreCase(name, r); });
}

HttpResponse InternalErrorResponse() {
  return HttpResponse::JsonError(500, "internal", "internal server error");
}
// How long a peer has to answer close_notify when the server ends a TLS connection for Stop().
constexpr std::chrono::seconds kTlsShutdownBound{1};

using internal::MakeTlsContext;
using internal::VerifiedClientChain;


template <typename Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Session(tcp::socket socket, std::shared_ptr<ServerState> state, std::string remote_address,
          std::string address, TlsContextPtr tls_context)
      : SessionBase(std::move(state), std::move(address),
                    kTls ? Phase::kHandshaking : Phase::kReading),
        tls_context_(std::move(tls_context)),
        stream_(MakeStream(std::move(socket), tls_context_.get())),
        remote_address_(std::move(remote_address)),
        buffer_(state_->max_buffer_bytes) {}

  void Start() override {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->Begin(); });
  }

  net::any_io_executor executor() override { return stream_.get_executor(); }

  void OnServerStop() override {
    if constexpr (kTls) {
      switch (phase()) {
        case Phase::kHandshaking:
          return Close();
        case Phase::kIdle:
        case Phase::kReading:
          // The read in flight ends with operation_aborted, and its handler sends close_notify
          // (CloseAfterReadError), which cannot be sent while the read holds the TLS stream.
          return Tcp().cancel();
        case Phase::kHandling:  // OnWrite sees stopping.
        case Phase::kWriting:
        case Phase::kLingering:  // Already bounded.
        case Phase::kClosed:
          return;
      }
    } else {
      if (phase() != Phase::kHandling && phase() != Phase::kWriting) Close();
    }
  }

  void Shed() override {
    if (!SheddableAt(std::chrono::steady_clock::now())) return Unmark();
    Close();
  }

 private:
  static Stream MakeStream(tcp::socket socket, net::ssl::context* tls_context) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *tls_context);
    } else {
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  // Guard runs one step of the connection and closes it if anything in it throws (Beast, an
  // allocation): a hostile connection ends, the event loop goes on.
  template <typename Fn>
  void Guard(Fn&& fn) noexcept {
    try {
      std::forward<Fn>(fn)();
    } catch (const std::exception& e) {
      log::Warn("connection failed", {{"remote", remote_address_}, {"what", e.what()}});
      CloseQuietly();
    } catch (...) {
      log::Warn("connection failed", {{"remote", remote_address_}, {"what", "non-std exception"}});
      CloseQuietly();
    }
  }

  void Begin() {
    Guard([this] {
      if (state_->stopping.load()) return Close();
      if constexpr (kTls) {
        SetPhase(Phase::kHandshaking);
        Tcp().expires_after(state_->options.handshake_timeout);
        stream_.async_handshake(net::ssl::stream_base::server,
                                [self = this->shared_from_this()](beast::error_code ec) {
                                  self->Guard([&] { self->OnHandshake(ec); });
                                });
      } else {
        NextRequest(/*first=*/true);
      }
    });
  }

  void OnHandshake(beast::error_code ec) {
    if (ec) {
      const long verify = SSL_get_verify_result(stream_.native_handle());
      if (verify != X509_V_OK) {
        log::Info("client certificate rejected",
                  {{"remote", remote_address_}, {"reason", X509_verify_cert_error_string(verify)}});
      } else {
        log::Debug("TLS handshake failed", {{"remote", remote_address_}, {"error", ec.message()}});
      }
      return Close();
    }
    auto chain = VerifiedClientChain(stream_.native_handle());
    if (!chain) {
      log::Error("TLS handshake passed with an unverified client certificate",
                 {{"remote", remote_address_}});
      return Close();
    }
    client_chain_ = std::move(*chain);
    Touch();
    NextRequest(/*first=*/true);
  }

  // CloseForStop ends the connection because the server is stopping or the client has closed.
  void CloseForStop() {
    if constexpr (kTls) {
      ShutdownTls(kTlsShutdownBound);
    } else {
      Close();
    }
  }

  // CloseAfterReadError ends the connection after a failed read: over TLS with close_notify when
  // the read was cancelled by Stop or the client sent its own close_notify; otherwise at once.
  void CloseAfterReadError(beast::error_code ec) {
    if constexpr (kTls) {
      const bool stopped = ec == net::error::operation_aborted && state_->stopping.load();
      const bool peer_closed = ec == net::error::eof;
      if (stopped || peer_closed) return ShutdownTls(kTlsShutdownBound);
    }
    Close();
  }

  // NextRequest waits for a request: the first one at once (its header is due within
  // header_timeout), a later one after at most idle_timeout, unless pipelined bytes are here.
  void NextRequest(bool first) {
    if (state_->stopping.load()) return CloseForStop();
    parser_ = std::make_unique<internal::RequestParser>(state_->limits);
    continue_sent_ = false;
    header_deadline_passed_ = false;
    if (first || buffer_.size() > 0) {
      BeginRequest();
      if (buffer_.size() > 0) return Parse();
      return Read();
    }
    SetPhase(Phase::kIdle);
    Tcp().expires_after(state_->options.idle_timeout);
    Read();
  }

  void BeginRequest() {
    SetPhase(Phase::kReading);
    request_start_ = std::chrono::steady_clock::now();
    const auto& options = state_->options;
    Tcp().expires_at(request_start_ + std::min<std::chrono::steady_clock::duration>(
                                          options.header_timeout, options.read_timeout));
  }

  // Read reads what the client sends next. Parse leaves at most max_pending() bytes in the
  // buffer, so there is always room for a read, and the buffer never grows past its bound.
  void Read() {
    const std::size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) {  // Unreachable while RequestParser keeps to max_pending().
      return SendErrorAndClose(
          HttpResponse::JsonError(400, "invalid_argument", "malformed HTTP request"));
    }
    stream_.async_read_some(buffer_.prepare(std::min(kReadChunk, room)),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->Guard([&] { self->OnRead(ec, n); });
                            });
  }

  void OnRead(beast::error_code ec, std::size_t n) {
    if (ec) return CloseAfterReadError(ec);
    buffer_.commit(n);
    if (phase() == Phase::kIdle) BeginRequest();
    Parse();
  }

  void Parse() {
    const auto data = buffer_.cdata();
    const std::size_t consumed =
        parser_->Put(std::string_view(static_cast<const char*>(data.data()), data.size()));
    buffer_.consume(consumed);
    switch (parser_->state()) {
      case internal::RequestParser::State::kNeedMore:
        return Read();
      case internal::RequestParser::State::kHeaderDone:
        return OnHeaderDone();
      case internal::RequestParser::State::kDone:
        return OnRequest();
      case internal::RequestParser::State::kFailed: {
        const internal::ParseFailure& failure = parser_->failure();
        return SendErrorAndClose(
            HttpResponse::JsonError(failure.status, failure.error, failure.message));
      }
    }
  }

  void OnHeaderDone() {
    if (!header_deadline_passed_) {
      header_deadline_passed_ = true;
      Tcp().expires_at(request_start_ + state_->options.read_timeout);
    }
    // RFC 9110 §10.1.1: a client that sent Expect: 100-continue waits for this before the body.
    if (parser_->ExpectsContinue() && !continue_sent_) {
      continue_sent_ = true;
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = this->shared_from_this()](beast::error_code write_ec, std::size_t) {
                         self->Guard([&] {
                           if (write_ec) return self->Close();
                           self->Read();
                         });
                       });
      return;
    }
    Read();
  }

  void OnRequest() {
    SetPhase(Phase::kHandling);
    Touch();
    const unsigned version = parser_->Version();
    const bool client_keep_alive = parser_->KeepAlive();
    HttpRequest request = parser_->TakeRequest();
    parser_.reset();
    request.remote_address = remote_address_;
    request.tls = kTls;
    request.client_chain = client_chain_;

    HttpResponse response;
    try {
      response = state_->router.Dispatch(request);
    } catch (const std::exception& e) {
      log::Error("handler threw", {{"method", request.method},
                                   {"path", request.path},
                                   {"remote", remote_address_},
                                   {"what", e.what()}});
      response = InternalErrorResponse();
    } catch (...) {
      log::Error("handler threw", {{"method", request.method},
                                   {"path", request.path},
                                   {"remote", remote_address_},
                                   {"what", "non-std exception"}});
      response = InternalErrorResponse();
    }
    const bool keep_alive = client_keep_alive && !state_->stopping.load();
    SendResponse(std::move(response), version, request.method == "HEAD", keep_alive);
  }

  void SendErrorAndClose(HttpResponse response) {
    SetPhase(Phase::kHandling);
    parser_.reset();
    SendResponse(std::move(response), 11, /*head=*/false, /*keep_alive=*/false);
  }

  void SendResponse(HttpResponse response, unsigned version, bool head, bool keep_alive) {
    if (response.status < 200 || response.status > 599) {
      log::Error("handler returned an invalid status", {{"status", response.status}});
      response = InternalErrorResponse();
    }
    for (const auto& [name, value] : response.headers) {
      if (!IsToken(name) || !IsSafeHeaderValue(value)) {
        log::Error("handler returned an invalid header", {{"name", name}});
        response = InternalErrorResponse();
        break;
      }
    }
    if (!IsSafeHeaderValue(response.content_type)) {
      log::Error("handler returned an invalid content type", {{"value", response.content_type}});
      response = InternalErrorResponse();
    }

    auto& out = response_.emplace();
    out.version(version);
    out.result(static_cast<unsigned>(response.status));
    out.set(http::field::server, kServerName);
    out.set(http::field::date, CurrentHttpDate());
    if (!response.content_type.empty()) out.set(http::field::content_type, response.content_type);
    for (auto& [name, value] : response.headers) {
      if (!IsFramingHeader(name)) out.insert(name, value);
    }
    out.keep_alive(keep_alive);
    // RFC 9110 §8.6: no Content-Length in a 204; a 304 would describe the selected representation,
    // which the server does not know, so it is left out there too.
    if (response.status != 204 && response.status != 304) {
      out.content_length(response.body.size());
      if (!head) out.body() = std::move(response.body);
    }

    Tcp().expires_after(state_->options.write_timeout);
    serializer_ = std::make_unique<http::response_serializer<http::string_body>>(out);
    NoteWriteProgress();
    SetPhase(Phase::kWriting);
    WriteSome(keep_alive);
  }

  // WriteSome writes what the socket takes of the response, one write at a time, so that each
  // piece the client takes is noted: a write that stalls makes the connection sheddable.
  void WriteSome(bool keep_alive) {
    http::async_write_some(
        stream_, *serializer_,
        [self = this->shared_from_this(), keep_alive](beast::error_code ec, std::size_t n) {
          self->Guard([&] { self->OnWriteSome(ec, n, keep_alive); });
        });
  }

  void OnWriteSome(beast::error_code ec, std::size_t n, bool keep_alive) {
    if (!ec && !serializer_->is_done()) {
      if (n > 0) NoteWriteProgress();
      return WriteSome(keep_alive);
    }
    OnWrite(ec, keep_alive);
  }

  void OnWrite(beast::error_code ec, bool keep_alive) {
    serializer_.reset();
    response_.reset();
    if (ec) return Close();
    if (state_->stopping.load()) {
      if constexpr (kTls) {
        return ShutdownTls(kTlsShutdownBound);
      } else {
        beast::error_code ignored;
        Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
        return Close();
      }
    }
    if (!keep_alive) return Linger();
    NextRequest(/*first=*/false);
  }

  // Linger half-closes and discards what the client still sends for a short while, so that the
  // kernel does not answer unread bytes with a reset that destroys the response in flight. Over
  // TLS the half-close is close_notify, and OpenSSL discards records until the client's.
  void Linger() {
    const auto bound =
        std::min<std::chrono::steady_clock::duration>(kMaxLinger, state_->options.read_timeout);
    if constexpr (kTls) {
      ShutdownTls(bound);
    } else {
      SetPhase(Phase::kLingering);
      beast::error_code ignored;
      Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
      Tcp().expires_after(bound);
      buffer_.consume(buffer_.size());
      DrainSome();
    }
  }

  void DrainSome() {
    stream_.async_read_some(buffer_.prepare(kReadChunk),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->Guard([&] {
                                self->lingered_bytes_ += n;
                                if (ec || self->lingered_bytes_ > kMaxLingerBytes) {
                                  return self->Close();
                                }
                                self->DrainSome();
                              });
                            });
  }

  // ShutdownTls sends close_notify and waits at most |bound| for the client's, then closes. Only
  // for a connection whose TLS state is sound: after the handshake, with no read or write in
  // flight and no fatal TLS error.
  void ShutdownTls(std::chrono::steady_clock::duration bound) {
    if constexpr (kTls) {
      if (phase() == Phase::kClosed || phase() == Phase::kLingering) return;
      SetPhase(Phase::kLingering);
      Tcp().expires_after(bound);
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->CloseQuietly(); });
    }
  }

  void Close() {
    if (phase() == Phase::kClosed) return;
    SetPhase(Phase::kClosed);
    beast::error_code ignored;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Tcp().close();
  }

  // CloseQuietly is Close for the exception path; it cannot throw.
  void CloseQuietly() noexcept {
    SetPhase(Phase::kClosed);
    beast::error_code ignored;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Tcp().socket().close(ignored);
  }

  const TlsContextPtr tls_context_;  // The context stream_ was made with; null over plain HTTP.
  Stream stream_;
  const std::string remote_address_;
  std::vector<std::vector<std::uint8_t>> client_chain_;  // Verified at the handshake; TLS only.
  beast::flat_buffer buffer_;                        // Bounded by ServerState::max_buffer_bytes.
  std::unique_ptr<internal::RequestParser> parser_;  // The request being read.
  std::optional<http::response<http::string_body>> response_;
  // Writes response_; set from SendResponse to the write's end.
  std::unique_ptr<http::response_serializer<http::string_body>> serializer_;
  std::chrono::steady_clock::time_point request_start_;
  bool header_deadline_passed_ = false;
  bool continue_sent_ = false;
  std::size_t lingered_bytes_ = 0;
};

}  // namespace

std::string FormatEndpoint(const tcp::endpoint& endpoint) {
  if (endpoint.address().is_v6()) {
    return fmt::format("[{}]:{}", endpoint.address().to_string(), endpoint.port());
  }
  return fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
}

std::string ShareKeyOf(const net::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_string();
  net::ip::address_v6::bytes_type prefix = v6.to_bytes();
  std::fill(prefix.begin() + 8, prefix.end(), std::uint8_t{0});
  return net::ip::address_v6(prefix).to_string() + "/64";
}

std::shared_ptr<SessionBase> NewSession(tcp::socket socket, std::shared_ptr<ServerState> state,
                                        std::string remote, std::string address,
                                        TlsContextPtr tls_context) {
  if (tls_context) {
    return std::make_shared<Session<TlsStream>>(std::move(socket), std::move(state),
                                                std::move(remote), std::move(address),
                                                std::move(tls_context));
  }
  return std::make_shared<Session<beast::tcp_stream>>(std::move(socket), std::move(state),
                                                      std::move(remote), std::move(address),
                                                      nullptr);
}

}  // namespace fleetid::server::internal
