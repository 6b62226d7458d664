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
#include "server/internal/session.h"
#include "server/internal/tls_context.h"
#include "server/request_parser.h"

namespace fleetid::server {
namespace {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

using internal::ConnectionLog;
using internal::FormatEndpoint;
using internal::MakeTlsContext;
using internal::NewSession;
using internal::ServerState;
using internal::SessionBase;
using internal::ShareKeyOf;
using internal::TlsContextPtr;
using internal::VerifiedClientChain;

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
    if (threads_.empty()) {
      // Listen failed and Run never started: nothing was accepted, and no thread would run the
      // close posted below, so waiting for it would only hold a failed Start for drain_timeout.
      beast::error_code ignored;
      acceptor_.close(ignored);
      return;
    }

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
      std::shared_ptr<SessionBase> session =
          NewSession(std::move(socket), state_, FormatEndpoint(remote), std::move(address),
                     state_->TlsContext());
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
