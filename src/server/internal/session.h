// The server's connections (internal to fleetid::server): ServerState, shared by the server and
// every session; SessionBase, what the acceptor needs of a connection (its phase, its place
// among the connections, shedding); and NewSession, which makes the session of one accepted
// socket, plain or TLS (session.cc holds the Session template that reads, dispatches and writes).
#ifndef FLEETID_SERVER_INTERNAL_SESSION_H_
#define FLEETID_SERVER_INTERNAL_SESSION_H_

#include "server/internal/guard.h"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

// See http_server.cc for why -Wnull-dereference is silenced around Asio's headers.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#pragma GCC diagnostic pop

#include "common/log.h"
#include "common/mutex.h"
#include "server/http_server.h"
#include "server/request_parser.h"

namespace fleetid::server::internal {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::size_t kReadChunk = 4096;


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

// FormatEndpoint is "address:port" ("[v6]:port"), as the log names a peer.
std::string FormatEndpoint(const tcp::endpoint& endpoint);
// ShareKeyOf is internal::ShareKey for a parsed address.
std::string ShareKeyOf(const net::ip::address& address);

// NewSession makes the session of the accepted |socket| from |remote| (its share key |address|):
// over TLS with |tls_context|, plain HTTP when it is null. The caller admits and starts it.
std::shared_ptr<SessionBase> NewSession(tcp::socket socket, std::shared_ptr<ServerState> state,
                                        std::string remote, std::string address,
                                        TlsContextPtr tls_context);

}  // namespace fleetid::server::internal

#endif  // FLEETID_SERVER_INTERNAL_SESSION_H_
