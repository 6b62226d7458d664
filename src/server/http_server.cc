#include "server/http_server.h"

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

namespace fleetid::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::string_view kServerName = "fleetid";
constexpr std::chrono::seconds kMaxLinger{2};
constexpr std::size_t kMaxLingerBytes = std::size_t{1024} * 1024;
constexpr std::size_t kReadChunk = 4096;
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

std::string FormatEndpoint(const tcp::endpoint& endpoint) {
  if (endpoint.address().is_v6()) {
    return fmt::format("[{}]:{}", endpoint.address().to_string(), endpoint.port());
  }
  return fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
}

// ShareKeyOf is internal::ShareKey for a parsed address.
std::string ShareKeyOf(const net::ip::address& address) {
  if (address.is_v4()) return address.to_string();
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_string();
  net::ip::address_v6::bytes_type prefix = v6.to_bytes();
  std::fill(prefix.begin() + 8, prefix.end(), std::uint8_t{0});
  return net::ip::address_v6(prefix).to_string() + "/64";
}

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

// --- Connections ---------------------------------------------------------------------------------

enum class Phase : std::uint8_t {
  kHandshaking,  // The TLS handshake runs.
  kIdle,         // Between requests; no byte of the next one yet.
  kReading,      // A request is arriving (for a new plain connection: from accept).
  kHandling,     // Its Handler runs (or the server's own error answer is being made).
  kWriting,      // Its response is being written.
  kLingering,    // Closing after the last response (close_notify, or draining what is left).
  kClosed,
};

// Sheddable phases are those a connection may be closed in to admit another: nothing the server
// has started to answer is lost. A connection in kWriting becomes sheddable too once its client
// has taken no byte of the response for kStalledWrite (see SessionBase::SheddableAt).
constexpr bool Sheddable(Phase phase) {
  return phase == Phase::kHandshaking || phase == Phase::kIdle || phase == Phase::kReading;
}

// A response write that has made no progress for this long (the client does not read, so the
// socket's buffers are full) no longer protects its connection from being shed: otherwise a few
// clients that ask and never read could hold every connection for write_timeout.
constexpr std::chrono::seconds kStalledWrite{1};

constexpr std::chrono::seconds kConnectionLogInterval{10};
// How far into the least recently active connections to look for one to close.
constexpr std::size_t kMaxVictimScan = 4096;

// ConnectionLog counts connections refused or closed to admit others, and logs the counts at most
// once per kConnectionLogInterval, so that a flood of connections cannot flood the log.
// Thread-safe.
class ConnectionLog {
 public:
  enum Reason : std::uint8_t {
    kRefusedFull,     // At max_connections with nothing to close.
    kRefusedAddress,  // At the address's share with nothing of its own to close.
    kShedFull,        // Closed to admit a connection at max_connections.
    kShedAddress,     // Closed to admit a connection from the same address.
    kAcceptFailed,    // accept() failed (out of descriptors).
    kReasons,
  };

  void Note(Reason reason) {
    counts_.at(reason).fetch_add(1, std::memory_order_relaxed);
    Report(/*force=*/false);
  }

  // Report logs the counts gathered since the last report, if the interval has passed or |force|.
  void Report(bool force) {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t due = next_report_ms_.load();
    if (!force && now < due) return;
    const std::int64_t next =
        now + std::chrono::duration_cast<std::chrono::milliseconds>(kConnectionLogInterval).count();
    if (!next_report_ms_.compare_exchange_strong(due, next) && !force) return;
    std::array<std::uint64_t, kReasons> taken{};
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < taken.size(); ++i) {
      taken.at(i) = counts_.at(i).exchange(0);
      total += taken.at(i);
    }
    if (total == 0) return;
    log::Warn("connections shed or refused", {{"refused_full", taken[kRefusedFull]},
                                              {"refused_address_share", taken[kRefusedAddress]},
                                              {"shed_full", taken[kShedFull]},
                                              {"shed_address_share", taken[kShedAddress]},
                                              {"accept_failed", taken[kAcceptFailed]},
                                              {"interval_s", kConnectionLogInterval.count()}});
  }

 private:
  std::array<std::atomic<std::uint64_t>, kReasons> counts_{};
  std::atomic<std::int64_t> next_report_ms_{0};
};

class SessionBase;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using TlsContextPtr = std::shared_ptr<net::ssl::context>;

// ServerState is shared by the server and every Session, so a Session that outlives the
// HttpServer (destroyed while the io_context shuts down) never touches freed memory.
struct ServerState {
  ServerState(HttpServerOptions o, Router r, TlsContextPtr tls)
      : options(std::move(o)),
        router(std::move(r)),
        limits{.max_header_bytes = options.max_header_bytes,
               .max_body_bytes = options.max_body_bytes,
               .max_chunk_extension_bytes = options.max_chunk_extension_bytes},
        max_buffer_bytes(internal::MaxPendingBytes(limits) + kReadChunk),
        tls_context(std::move(tls)) {
    if (options.tls) tls_options = *options.tls;
  }

  // TlsContext returns the context for a new TLS connection; the connection holds it to its end.
  TlsContextPtr TlsContext() {
    MutexLock lock(tls_mutex);
    return tls_context;
  }

  const HttpServerOptions options;  // max_connections and the share resolved.
  const Router router;
  const internal::RequestLimits limits;
  const std::size_t max_buffer_bytes;  // A session's read buffer never holds more.
  std::atomic<bool> stopping{false};
  ConnectionLog connection_log;

  // Set for a TLS listener (an SSL_CTX is thread-safe once built, and never changed after):
  // SetCertificate and AddClientTrustAnchor build a new one from tls_options and swap it in.
  // After Start, tls_context is read only through TlsContext(); whether the listener speaks TLS
  // is options.tls, which never changes.
  Mutex tls_mutex;
  TlsContextPtr tls_context FLEETID_GUARDED_BY(tls_mutex);
  TlsOptions tls_options FLEETID_GUARDED_BY(tls_mutex);  // What tls_context was built from.

  Mutex mutex;
  std::condition_variable_any drained;
  // Sessions constructed and not yet destroyed.
  std::size_t live FLEETID_GUARDED_BY(mutex) = 0;
  // Admitted sessions, least recently active first (a session moves to the back when its
  // handshake completes and when a request has arrived).
  std::list<SessionBase*> by_activity FLEETID_GUARDED_BY(mutex);
  // Admitted sessions per share key (internal::ShareKey: the IPv4 address, or the IPv6 /64).
  std::unordered_map<std::string, std::size_t> per_address FLEETID_GUARDED_BY(mutex);
  // Set on the acceptor's strand during Stop().
  bool acceptor_closed FLEETID_GUARDED_BY(mutex) = false;
};

// SessionBase is what the server needs of a connection, plain or TLS: its place among the
// connections, its phase, and to be told on its own strand that the server stops or that it is to
// make room. Destroying it removes it from ServerState.
class SessionBase {
 public:
  SessionBase(std::shared_ptr<ServerState> state, std::string address, Phase phase)
      : state_(std::move(state)), address_(std::move(address)), phase_(phase) {
    MutexLock lock(state_->mutex);
    ++state_->live;
  }
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  virtual ~SessionBase() {
    MutexLock lock(state_->mutex);
    if (admitted_) {
      state_->by_activity.erase(position_);
      auto it = state_->per_address.find(address_);
      if (it != state_->per_address.end() && --it->second == 0) state_->per_address.erase(it);
    }
    if (--state_->live == 0) state_->drained.notify_all();
  }

  virtual net::any_io_executor executor() = 0;
  // Start begins the handshake or the first request, on the strand.
  virtual void Start() = 0;
  // OnServerStop runs on the strand once Stop() begins. A request whose Handler has run is
  // allowed to finish writing; anything else is closed now (over TLS, with close_notify).
  virtual void OnServerStop() = 0;
  // Shed runs on the strand after the acceptor chose this connection to make room: it closes
  // the connection if it is still sheddable (SheddableAt).
  virtual void Shed() = 0;

  // address is the connection's share key (internal::ShareKey), not the peer's full address.
  const std::string& address() const { return address_; }
  Phase phase() const { return phase_.load(std::memory_order_acquire); }

  // SheddableAt says whether the connection may be closed at |now| to admit another: in a
  // sheddable phase, or writing a response of which the client has taken nothing since
  // kStalledWrite before |now|. A Handler that runs is never sheddable. Any thread.
  bool SheddableAt(std::chrono::steady_clock::time_point now) const {
    const Phase current = phase();
    if (Sheddable(current)) return true;
    if (current != Phase::kWriting) return false;
    const std::chrono::steady_clock::time_point progress{
        std::chrono::steady_clock::duration(write_progress_.load(std::memory_order_relaxed))};
    return now - progress > kStalledWrite;
  }

  // Admit makes |self| one of the server's connections (under state.mutex); Touch marks it
  // active (it locks state->mutex).
  static void Admit(ServerState& state, const std::shared_ptr<SessionBase>& self)
      FLEETID_REQUIRES(state.mutex) {
    self->admitted_ = true;
    self->self_ = self;
    self->position_ = state.by_activity.insert(state.by_activity.end(), self.get());
    ++state.per_address[self->address_];
  }

  // FindVictim returns the least recently active admitted connection in a sheddable phase (from
  // |address| only, unless null) and marks it, or null. Under state.mutex.
  // Hold returns a new reference to |session|, or null once it is being destroyed. Under
  // state.mutex; the caller drops the reference after unlocking.
  static std::shared_ptr<SessionBase> Hold(SessionBase& session) { return session.self_.lock(); }

  static std::shared_ptr<SessionBase> FindVictim(ServerState& state, const std::string* address)
      FLEETID_REQUIRES(state.mutex) {
    std::size_t scanned = 0;
    const auto now = std::chrono::steady_clock::now();
    for (SessionBase* session : state.by_activity) {
      if (++scanned > kMaxVictimScan) break;
      if (session->shed_marked_ || !session->SheddableAt(now)) continue;
      if (address != nullptr && session->address_ != *address) continue;
      // Null while the session is being destroyed (its destructor waits for the mutex).
      if (auto victim = session->self_.lock()) {
        victim->shed_marked_ = true;
        return victim;
      }
    }
    return nullptr;
  }

 protected:
  // Release: the acceptor that sees kWriting sees that write's first NoteWriteProgress too.
  void SetPhase(Phase phase) { phase_.store(phase, std::memory_order_release); }

  // NoteWriteProgress records that the response write began or the client took some of it.
  void NoteWriteProgress() {
    write_progress_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
  }

  void Touch() {
    MutexLock lock(state_->mutex);
    if (admitted_) {
      state_->by_activity.splice(state_->by_activity.end(), state_->by_activity, position_);
    }
  }

  void Unmark() {
    MutexLock lock(state_->mutex);
    shed_marked_ = false;
  }

  const std::shared_ptr<ServerState> state_;  // Outlives the derived Session's stream.

 private:
  const std::string address_;
  std::atomic<Phase> phase_;  // Written on the strand; read by the acceptor as a hint.
  // steady_clock ticks of the response write's last progress (kWriting). Written on the strand;
  // read by the acceptor.
  std::atomic<std::chrono::steady_clock::rep> write_progress_{0};
  // Under state_->mutex only. Not annotated: the analysis cannot see that another session's
  // state_ is this one's (one ServerState per server), so it would refuse FindVictim.
  bool admitted_ = false;
  bool shed_marked_ = false;
  std::list<SessionBase*>::iterator position_;
  std::weak_ptr<SessionBase> self_;
};

// Session owns one accepted connection, over beast::tcp_stream (plain HTTP) or TlsStream. All of
// its members are touched only on its strand.
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

std::string internal::ShareKey(std::string_view address) {
  beast::error_code ec;
  const net::ip::address parsed = net::ip::make_address(address, ec);
  if (ec) return std::string(address);
  return ShareKeyOf(parsed);
}

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, Router router, TlsContextPtr tls_context)
      : state_(std::make_shared<ServerState>(std::move(options), std::move(router),
                                             std::move(tls_context))),
        contexts_(MakeContexts(state_->options.threads + 1)),
        acceptor_(net::make_strand(*contexts_.front())),
        retry_timer_(acceptor_.get_executor()) {
    for (auto& context : contexts_) work_.push_back(net::make_work_guard(*context));
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ~Impl() { Stop(); }

  [[nodiscard]] Result<void> Listen() {
    const auto& options = state_->options;
    beast::error_code ec;
    const net::ip::address address = net::ip::make_address(options.address, ec);
    if (ec) {
      return MakeError(ErrorCode::kInvalidArgument, "'{}' is not a numeric IP address",
                       options.address);
    }
    const tcp::endpoint endpoint(address, options.port);
    const std::string where = FormatEndpoint(endpoint);
    if (acceptor_.open(endpoint.protocol(), ec)) {
      return MakeError(ErrorCode::kUnavailable, "cannot open a socket for {}: {}", where,
                       ec.message());
    }
    if (acceptor_.set_option(net::socket_base::reuse_address(true), ec)) {
      return MakeError(ErrorCode::kUnavailable, "cannot set SO_REUSEADDR on {}: {}", where,
                       ec.message());
    }
    if (acceptor_.bind(endpoint, ec)) {
      return MakeError(ErrorCode::kUnavailable, "cannot bind {}: {}", where, ec.message());
    }
    if (acceptor_.listen(net::socket_base::max_listen_connections, ec)) {
      return MakeError(ErrorCode::kUnavailable, "cannot listen on {}: {}", where, ec.message());
    }
    bound_ = acceptor_.local_endpoint(ec);
    if (ec) {
      return MakeError(ErrorCode::kUnavailable, "cannot read the bound address of {}: {}", where,
                       ec.message());
    }
    return {};
  }

  void Run() {
    DoAccept();
    threads_.reserve(contexts_.size());
    for (auto& context : contexts_) {
      threads_.emplace_back([ctx = context.get()] { RunThread(*ctx); });
      thread_ids_.push_back(threads_.back().get_id());
    }
  }

  // Stop cannot fail short of a broken mutex or thread, and then the process aborts.
  void Stop() noexcept {
    try {
      StopOrThrow();
    } catch (const std::exception& e) {
      static_cast<void>(
          std::fprintf(stderr, "fleetid: stopping the HTTP server failed: %s\n", e.what()));
      std::abort();
    } catch (...) {
      static_cast<void>(std::fputs("fleetid: stopping the HTTP server failed\n", stderr));
      std::abort();
    }
  }

  void StopOrThrow() {
    // Thread ids are reused once joined, so they identify a server thread only until joining_.
    if (!joining_.load() && std::find(thread_ids_.begin(), thread_ids_.end(),
                                      std::this_thread::get_id()) != thread_ids_.end()) {
      log::Error("HttpServer stopped from one of its own threads, which would deadlock");
      std::abort();
    }
    MutexLock stop_lock(stop_mutex_);
    if (stopped_) return;
    stopped_ = true;

    std::vector<std::shared_ptr<SessionBase>> live;
    {
      MutexLock lock(state_->mutex);
      state_->stopping.store(true);
      live.reserve(state_->by_activity.size());
      for (SessionBase* session : state_->by_activity) {
        if (auto held = SessionBase::Hold(*session)) live.push_back(std::move(held));
      }
    }
    // The acceptor's strand runs handlers in order: an accept that completed before this close
    // has been handled (its socket closed, since stopping is set, or counted as a connection)
    // by the time acceptor_closed is set, so the drain wait below cannot miss it.
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      retry_timer_.cancel();
      MutexLock lock(state_->mutex);
      state_->acceptor_closed = true;
      state_->drained.notify_all();
    });
    for (auto& session : live) {
      net::post(session->executor(), [session] { session->OnServerStop(); });
    }
    live.clear();

    {
      MutexLock lock(state_->mutex);
      state_->drained.wait_for(lock, state_->options.drain_timeout,
                               [this]() FLEETID_REQUIRES(state_->mutex) {
                                 return state_->acceptor_closed && state_->live == 0;
                               });
    }
    work_.clear();
    for (auto& context : contexts_) context->stop();
    joining_.store(true);
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    beast::error_code ignored;
    acceptor_.close(ignored);
    state_->connection_log.Report(/*force=*/true);
  }

  std::string address() const { return bound_.address().to_string(); }
  Result<void> AddClientTrustAnchor(const X509Ref& anchor) {
    if (!anchor) return MakeError(ErrorCode::kInvalidArgument, "a trust anchor must not be null");
    if (!state_->options.tls) {
      return MakeError(ErrorCode::kConflict, "this listener does not speak TLS");
    }
    MutexLock lock(state_->tls_mutex);
    TlsOptions tls = state_->tls_options;
    if (tls.client_auth == TlsOptions::ClientAuth::kNone) {
      return MakeError(ErrorCode::kConflict, "this listener does not ask for client certificates");
    }
    if (std::ranges::any_of(tls.client_trust_anchors, [&anchor](const X509Ref& known) {
          return X509_cmp(known.get(), anchor.get()) == 0;
        })) {
      return {};
    }
    tls.client_trust_anchors.push_back(anchor);
    return SwapTlsContext(std::move(tls));
  }

  Result<void> SetCertificate(std::vector<X509Ref> certificate_chain, PkeyRef private_key) {
    if (!state_->options.tls) {
      return MakeError(ErrorCode::kConflict, "this listener does not speak TLS");
    }
    MutexLock lock(state_->tls_mutex);
    TlsOptions tls = state_->tls_options;
    tls.certificate_chain = std::move(certificate_chain);
    tls.private_key = std::move(private_key);
    return SwapTlsContext(std::move(tls));
  }

  std::size_t max_connections() const { return state_->options.max_connections; }
  std::size_t max_connections_per_address() const {
    return state_->options.max_connections_per_address;
  }

  std::uint16_t port() const { return bound_.port(); }

 private:
  // One io_context per thread, each run by its thread alone: a connection's handlers all run on
  // the thread of the context it was accepted onto, so they are serialised without a strand's
  // locking, and no handler is handed between threads (measured: about a third more requests
  // per second than one io_context shared by every thread). The first context and its thread
  // only accept (and choose connections to shed), so a Handler that takes its time never delays
  // accepting.
  static std::vector<std::unique_ptr<net::io_context>> MakeContexts(int threads) {
    std::vector<std::unique_ptr<net::io_context>> contexts;
    contexts.reserve(static_cast<std::size_t>(threads));
    for (int i = 0; i < threads; ++i) contexts.push_back(std::make_unique<net::io_context>(1));
    return contexts;
  }

  static void RunThread(net::io_context& context) {
    for (;;) {
      try {
        context.run();
        return;
      } catch (const std::exception& e) {
        log::Error("server thread caught an exception", {{"what", e.what()}});
      }
    }
  }

  void DoAccept() {
    // contexts_.front() is the acceptor's own: connections go to the others in turn.
    net::io_context& context = *contexts_[1 + next_context_++ % (contexts_.size() - 1)];
    acceptor_.async_accept(
        context.get_executor(),
        [this](beast::error_code ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
  }

  void OnAccept(beast::error_code ec, tcp::socket socket) {
    if (state_->stopping.load() || ec == net::error::operation_aborted) return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning on a listen queue we cannot drain.
      log::Debug("accept failed", {{"error", ec.message()}});
      state_->connection_log.Note(ConnectionLog::kAcceptFailed);
      retry_timer_.expires_after(kAcceptRetryDelay);
      retry_timer_.async_wait([this](beast::error_code timer_ec) {
        if (!timer_ec && !state_->stopping.load()) DoAccept();
      });
      return;
    }
    beast::error_code endpoint_ec;
    const tcp::endpoint remote = socket.remote_endpoint(endpoint_ec);
    if (endpoint_ec) {
      DoAccept();
      return;
    }
    // Without TCP_NODELAY, a response written as more than one segment (TLS records, a header
    // then a body) waits for the peer's delayed ACK: 40 ms per exchange on Linux.
    beast::error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    Admit(std::move(socket), remote);
    DoAccept();
  }

  // Admit starts a session for |socket| if there is room for it, closing the least recently
  // active sheddable connection (the address's own at its share) to make room; otherwise it
  // closes |socket|. Never throws, so that accepting goes on: a TLS stream whose SSL_new fails
  // (out of memory) closes its socket and is logged.
  void Admit(tcp::socket socket, const tcp::endpoint& remote) noexcept {
    try {
      std::string address = ShareKeyOf(remote.address());
      std::shared_ptr<SessionBase> session;
      if (auto tls_context = state_->TlsContext()) {
        session =
            std::make_shared<Session<TlsStream>>(std::move(socket), state_, FormatEndpoint(remote),
                                                 std::move(address), std::move(tls_context));
      } else {
        session = std::make_shared<Session<beast::tcp_stream>>(
            std::move(socket), state_, FormatEndpoint(remote), std::move(address), nullptr);
      }
      const auto& options = state_->options;
      std::shared_ptr<SessionBase> victim;
      std::optional<ConnectionLog::Reason> reason;
      bool admitted = false;
      {
        MutexLock lock(state_->mutex);
        if (!state_->stopping.load()) {
          const auto at_address = state_->per_address.find(session->address());
          if (at_address != state_->per_address.end() &&
              at_address->second >= options.max_connections_per_address) {
            victim = SessionBase::FindVictim(*state_, &session->address());
            reason = victim ? ConnectionLog::kShedAddress : ConnectionLog::kRefusedAddress;
          } else if (state_->by_activity.size() >= options.max_connections) {
            victim = SessionBase::FindVictim(*state_, nullptr);
            reason = victim ? ConnectionLog::kShedFull : ConnectionLog::kRefusedFull;
          }
          admitted = !reason || victim != nullptr;
          if (admitted) SessionBase::Admit(*state_, session);
        }
      }
      if (reason) state_->connection_log.Note(*reason);
      if (victim) {
        net::post(victim->executor(), [victim] { victim->Shed(); });
      }
      // A session that is not admitted closes its socket as it goes.
      if (admitted) session->Start();
    } catch (const std::exception& e) {
      log::Error("cannot start a connection",
                 {{"remote", FormatEndpoint(remote)}, {"what", e.what()}});
    }
  }

  const std::shared_ptr<ServerState> state_;
  std::vector<std::unique_ptr<net::io_context>> contexts_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_timer_;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::size_t next_context_ = 0;  // Touched only on the acceptor's strand.
  tcp::endpoint bound_;
  std::vector<std::thread> threads_;
  std::vector<std::thread::id> thread_ids_;  // Written only before Start returns.
  std::atomic<bool> joining_{false};

  // SwapTlsContext builds a context from |tls| and makes it the one new connections use. The
  // caller holds state_->tls_mutex.
  Result<void> SwapTlsContext(TlsOptions tls) FLEETID_REQUIRES(state_->tls_mutex) {
    auto made = MakeTlsContext(tls);
    if (!made) return MakeError(made.error());
    state_->tls_context = std::move(*made);
    state_->tls_options = std::move(tls);
    return {};
  }

  Mutex stop_mutex_;
  bool stopped_ FLEETID_GUARDED_BY(stop_mutex_) = false;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { impl_->Stop(); }

namespace {

// Descriptors kept for what is not a connection (the token, the database, logs), and the largest
// max_connections the server picks by itself: a TLS connection in its handshake holds about
// 130 KiB (Asio's and OpenSSL's record buffers, the handshake state), so 4096 of them some 530 MB.
constexpr rlim_t kReservedDescriptors = 256;
constexpr std::size_t kMaxAutoConnections = 4096;

// RaiseDescriptorLimit raises RLIMIT_NOFILE's soft limit to its hard limit, once per process, and
// returns the soft limit then in force.
rlim_t RaiseDescriptorLimit() {
  static const rlim_t limit = [] {
    rlimit current{};
    if (getrlimit(RLIMIT_NOFILE, &current) != 0) return rlim_t{1024};
    if (current.rlim_cur < current.rlim_max) {
      rlimit raised = current;
      raised.rlim_cur = current.rlim_max;
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        log::Info("raised the open file limit",
                  {{"from", current.rlim_cur}, {"to", raised.rlim_cur}});
        return raised.rlim_cur;
      }
    }
    return current.rlim_cur;
  }();
  return limit;
}

std::size_t AutoMaxConnections(rlim_t descriptors) {
  if (descriptors == RLIM_INFINITY) return kMaxAutoConnections;
  if (descriptors <= 2 * kReservedDescriptors) return 64;
  return std::min<std::size_t>((descriptors - kReservedDescriptors) / 2, kMaxAutoConnections);
}

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options, Router router) {
  if (options.threads < 1) {
    return MakeError(ErrorCode::kInvalidArgument, "threads must be at least 1, not {}",
                     options.threads);
  }
  if (options.max_header_bytes == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "max_header_bytes must be positive");
  }
  using std::chrono::seconds;
  if (options.handshake_timeout <= seconds(0) || options.header_timeout <= seconds(0) ||
      options.read_timeout <= seconds(0)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "handshake_timeout, header_timeout and read_timeout must be positive");
  }
  const rlim_t descriptors = RaiseDescriptorLimit();
  if (options.max_connections == 0) options.max_connections = AutoMaxConnections(descriptors);
  if (options.max_connections_per_address == 0) {
    options.max_connections_per_address =
        std::max(options.max_connections / 4, std::min<std::size_t>(options.max_connections, 64));
  }
  if (options.max_connections_per_address > options.max_connections) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "max_connections_per_address ({}) exceeds max_connections ({})",
                     options.max_connections_per_address, options.max_connections);
  }
  TlsContextPtr tls_context;
  if (options.tls) {
    auto made = MakeTlsContext(*options.tls);
    if (!made) return MakeError(made.error().Wrap("TLS options"));
    tls_context = std::move(*made);
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(router), std::move(tls_context));
  FLEETID_CHECK_OK(impl->Listen());
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

std::string HttpServer::address() const { return impl_->address(); }

std::uint16_t HttpServer::port() const { return impl_->port(); }

void HttpServer::Stop() { impl_->Stop(); }

Result<void> HttpServer::AddClientTrustAnchor(const X509Ref& anchor) {
  return impl_->AddClientTrustAnchor(anchor);
}

Result<void> HttpServer::SetCertificate(std::vector<X509Ref> certificate_chain,
                                        PkeyRef private_key) {
  return impl_->SetCertificate(std::move(certificate_chain), std::move(private_key));
}

std::size_t HttpServer::max_connections() const { return impl_->max_connections(); }

std::size_t HttpServer::max_connections_per_address() const {
  return impl_->max_connections_per_address();
}

}  // namespace fleetid::server
