// The Beast half of registry/http.h: server. Wraps Beast/Asio errors once,
// here, into Status values and HTTP refusals.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/thread_name.h"
#include "common/http/http_server.h"

namespace polis::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

std::string ErrorBody(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace);
}

StatusOr<std::string> ReadPemFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IoError("cannot read the TLS {} '{}': {}", what, path, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos)
    return InvalidArgument("the TLS {} '{}' is not PEM (no '-----BEGIN' line)", what, path);
  return text.str();
}

// The reason OpenSSL gave last ("" when none), and its queue emptied.
std::string OpenSslReason(const beast::error_code& ec) {
  std::string why = ec ? ec.message() : "";
  ERR_clear_error();
  return why;
}

// A TLS 1.2+ server context holding the checked certificate and key.
StatusOr<std::shared_ptr<ssl::context>> LoadTlsContext(const TlsFiles& files) {
  POLIS_ASSIGN_OR_RETURN(TlsPem pem, LoadTlsFiles(files));
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::single_dh_use);
  beast::error_code ec;
  ctx->use_certificate_chain(net::buffer(pem.cert_chain), ec);
  if (!ec) ctx->use_private_key(net::buffer(pem.private_key), ssl::context::pem, ec);
  if (ec) return InvalidArgument("TLS: {}", OpenSslReason(ec));  // checked by LoadTlsFiles
  return ctx;
}

// Runs handlers until the io_context stops. With busy_poll_us > 0, after
// the last handler it polls for more (epoll without a timeout) for that
// long before blocking in the kernel: a request that arrives meanwhile
// finds the thread running instead of waiting for it to be woken.
void RunIo(net::io_context& ioc, int busy_poll_us) {
  if (busy_poll_us <= 0) {
    ioc.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto spin = std::chrono::microseconds(busy_poll_us);
  auto last = Clock::now();
  while (!ioc.stopped()) {
    if (ioc.poll() > 0) {
      last = Clock::now();
    } else if (Clock::now() - last >= spin) {
      ioc.run_one();  // blocks until a handler ran (0 when stopped)
      last = Clock::now();
    }
  }
}

}  // namespace

StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files) {
  if (files.cert_file.empty() || files.key_file.empty())
    return InvalidArgument("TLS needs both a certificate and a private key file (got only {} '{}')",
                           files.cert_file.empty() ? "the key" : "the certificate",
                           files.cert_file.empty() ? files.key_file : files.cert_file);
  TlsPem out;
  POLIS_ASSIGN_OR_RETURN(out.cert_chain, ReadPemFile(files.cert_file, "certificate"));
  POLIS_ASSIGN_OR_RETURN(out.private_key, ReadPemFile(files.key_file, "private key"));
  ssl::context ctx(ssl::context::tls_server);
  beast::error_code ec;
  ctx.use_certificate_chain(net::buffer(out.cert_chain), ec);
  if (ec)
    return InvalidArgument("the TLS certificate '{}' holds no usable PEM certificate ({})",
                           files.cert_file, OpenSslReason(ec));
  {
    // Parsed on its own first, so that a key that is fine but not the
    // certificate's is told apart from one that is not a key.
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(out.private_key.data(), static_cast<int>(out.private_key.size())), BIO_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr, EVP_PKEY_free);
    if (!key) {
      const unsigned long err = ERR_peek_last_error();
      ERR_clear_error();
      return InvalidArgument("the TLS private key '{}' holds no usable PEM private key ({})",
                             files.key_file, err && ERR_reason_error_string(err) ? ERR_reason_error_string(err) : "unreadable");
    }
  }
  ctx.use_private_key(net::buffer(out.private_key), ssl::context::pem, ec);
  if (ec || SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    ERR_clear_error();
    return InvalidArgument("the TLS private key '{}' does not match the certificate '{}'",
                           files.key_file, files.cert_file);
  }
  return out;
}

struct HttpServer::Impl {
  HttpServerOptions opt;
  HttpHandler handler;
  std::atomic<size_t> connections{0};
  std::atomic<int64_t> active{0};  // requests handed to the handler, not yet written
  std::atomic<bool> stopped{false};
  bool started = false;
  int bound_port = 0;
  // The I/O threads share one io_context; with busy polling each has its
  // own (a thread polling a shared one would find the events taken by the
  // one asleep in epoll_wait), and a connection stays on the one it was
  // given when accepted (round robin). Declared after the counters:
  // sessions destroyed with their io_context still update them.
  std::vector<std::unique_ptr<net::io_context>> iocs;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> keep_running;
  std::shared_ptr<ssl::context> tls;  // set when opt.tls names a certificate
  std::optional<tcp::acceptor> acceptor;  // on iocs[0]
  size_t next_ioc = 0;                    // the accept handler's alone
  std::vector<std::thread> threads;

  void Refused(const std::string& method, int status, const std::string& why) {
    POLIS_LOG(kInfo, kNet, "refused {} with {}: {}", method.empty() ? "request" : method, status, why);
    if (opt.on_refused) opt.on_refused(method, status, why);
  }
  void DoAccept();
};

namespace {

// One connection. Stream is PlainStream or TlsStream (a TLS session
// handshakes first); the plain path is exactly what it was without TLS.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

 public:
  template <class... Args>
  Session(HttpServer::Impl* server, tcp::socket&& socket, Args&... tls_context)
      : stream_(std::move(socket), tls_context...), srv_(server) {
    srv_->connections++;
    // Room for a typical request (header and a small body) in one read;
    // Beast would otherwise start at 512 bytes and read a few KiB of body
    // in several passes through the I/O queue. Larger bodies still grow it.
    buffer_.reserve(8 << 10);
    beast::error_code ec;
    // ReadAvailable's reads return at once (asynchronous operations are
    // unaffected: Asio makes every socket non-blocking underneath).
    if constexpr (!kTls) Socket().non_blocking(true, ec);
    auto ep = Socket().remote_endpoint(ec);
    remote_ = ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  ~Session() { srv_->connections--; }

  void Run() {
    if constexpr (kTls) {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::Handshake, shared_from_this()));
    } else {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::ReadHeader, shared_from_this()));
    }
  }

 private:
  using Ms = std::chrono::milliseconds;
  // Body bytes read at once after the header (ReadAvailable), per request
  // and per read: a large upload still streams through the I/O queue.
  static constexpr size_t kEagerBodyBytes = 1 << 20;
  static constexpr size_t kEagerReadBytes = 64 << 10;

  tcp::socket& Socket() { return beast::get_lowest_layer(stream_).socket(); }
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  // TLS only: the handshake gets the read timeout; a client that fails it
  // (plain HTTP on the TLS port, a certificate it does not trust) is
  // disconnected with a line in the log.
  void Handshake() {
    Tcp().expires_after(Ms(srv_->opt.read_timeout_ms));
    stream_.async_handshake(ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) return self->ReadHeader();
      POLIS_LOG(kInfo, kNet, "{}: TLS handshake failed: {}", self->remote_, ec.message());
      if (ec.category() == net::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_HTTP_REQUEST)
        return self->AnswerPlainRequest();
      self->Close();
    });
  }

  // A plain-HTTP request on the TLS port (OpenSSL recognised GET, POST,
  // HEAD or PUT where a handshake was due): one plain 400 saying so, so
  // that curl or a browser shows why instead of an empty reply.
  void AnswerPlainRequest() {
    static const std::string kAnswer = [] {
      const std::string body = ErrorBody("this port speaks HTTPS: use an https:// URL");
      return fmt::format("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                         "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                         body.size(), body);
    }();
    Tcp().expires_after(Ms(srv_->opt.write_timeout_ms));
    net::async_write(Tcp(), net::buffer(kAnswer), [self = shared_from_this()](beast::error_code, std::size_t) {
      self->LingerClose();
    });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(srv_->opt.max_header_bytes));
    // No limit while the header is read (Beast would refuse a large declared
    // Content-Length as a parse error); the right one is set after it.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    Tcp().expires_after(Ms(first_ ? srv_->opt.read_timeout_ms : srv_->opt.idle_timeout_ms));
    first_ = false;
    bhttp::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, std::size_t) {
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted)
      return Close();
    if (ec == beast::error::timeout) {
      POLIS_LOG(kInfo, kNet, "{}: no complete request header within the timeout; closing", remote_);
      return;  // the stream closed the socket
    }
    if (ec == bhttp::error::header_limit)
      return Refuse(431, fmt::format("request header exceeds {} bytes", srv_->opt.max_header_bytes));
    if (ec) return Refuse(400, fmt::format("malformed HTTP request: {}", ec.message()));

    header_at_ = std::chrono::steady_clock::now();
    auto& req = parser_->get();
    method_ = std::string(req.method_string());
    const std::string_view target(req.target().data(), req.target().size());
    const bool upload = srv_->opt.is_upload && srv_->opt.is_upload(method_, target);
    const size_t limit = upload ? srv_->opt.max_upload_bytes : srv_->opt.max_body_bytes;
    const auto declared = parser_->content_length();
    if (declared && *declared > limit)
      return Refuse(413, fmt::format("request body of {} bytes exceeds the limit of {} bytes ({})",
                                     *declared, limit,
                                     upload ? "--max-upload-bytes" : "--max-body-bytes"));
    parser_->body_limit(limit);
    body_limit_ = limit;
    // A small body usually came in the same read as its header, and the
    // rest of a larger one is usually in the socket already: parse what is
    // buffered, then read what the socket holds without waiting (up to
    // kEagerBodyBytes), instead of another pass through the I/O queue (under
    // load that pass waits behind every other connection's handlers).
    size_t eager = 0;
    for (;;) {
      while (!parser_->is_done() && buffer_.size() > 0) {
        beast::error_code pec;
        const size_t used = parser_->put(buffer_.data(), pec);
        buffer_.consume(used);
        if (pec == bhttp::error::need_more || (!pec && used == 0)) break;
        if (pec) return OnBody(pec, 0);  // body_limit (413) or malformed (400)
      }
      if (parser_->is_done() || eager >= kEagerBodyBytes) break;
      const size_t got = ReadAvailable();
      if (got == 0) break;
      eager += got;
    }
    if (parser_->is_done()) return OnBody({}, 0);
    // Slow clients: the body gets the read timeout plus a second per MiB declared.
    const int64_t allowance_ms = declared ? static_cast<int64_t>(*declared >> 20) * 1000 : 0;
    Tcp().expires_after(Ms(srv_->opt.read_timeout_ms + allowance_ms));
    if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_,
                                                                    req.version());
      bhttp::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code wec, std::size_t) {
                          if (wec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  // A plain connection's bytes that have arrived, read without waiting
  // (the socket is non-blocking); 0 when there are none, on TLS, or on an
  // error, which the asynchronous read that follows reports.
  size_t ReadAvailable() {
    if constexpr (kTls) {
      return 0;
    } else {
      beast::error_code ec;
      // What the buffer has room for, at least 16 KiB: it grows no more
      // than Beast's own reads would make it.
      const size_t room = std::clamp<size_t>(buffer_.capacity() - buffer_.size(), 16 << 10,
                                             kEagerReadBytes);
      const size_t n = Socket().read_some(buffer_.prepare(room), ec);
      if (ec) return 0;
      buffer_.commit(n);
      return n;
    }
  }

  void ReadBody() {
    bhttp::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnBody, shared_from_this()));
  }

  void OnBody(beast::error_code ec, std::size_t) {
    if (ec == bhttp::error::body_limit)
      return Refuse(413, fmt::format("request body exceeds the limit of {} bytes", body_limit_));
    if (ec == beast::error::timeout) {
      POLIS_LOG(kInfo, kNet, "{}: {} body not received within the timeout; closing", remote_,
                method_);
      return;
    }
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset)
      return Close();
    if (ec) return Refuse(400, fmt::format("malformed HTTP request body: {}", ec.message()));

    bhttp::request<bhttp::string_body> req = parser_->release();
    parser_.reset();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    Tcp().expires_never();  // the handler may take a while (queued inference)

    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.body = std::move(req.body());
    r.authorization = std::string(req[bhttp::field::authorization]);
    r.content_type = std::string(req[bhttp::field::content_type]);
    r.inference_header_length = std::string(req["Inference-Header-Content-Length"]);
    r.remote = remote_;
    r.tls = kTls;
    r.read_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - header_at_).count();
    auto gone = std::make_shared<std::atomic<bool>>(false);
    r.client_gone = gone;
    const bool watch = srv_->opt.watch_client && srv_->opt.watch_client(r.method, r.target);

    srv_->active++;
    auto self = shared_from_this();
    auto once = std::make_shared<std::atomic<bool>>(false);
    Respond respond = [self, once](HttpResponse response) {
      if (once->exchange(true)) return;  // exactly once
      net::post(self->stream_.get_executor(),
                [self, response = std::move(response)]() mutable {
                  self->Write(std::move(response), /*handled=*/true);
                });
    };
    Post post = [self](std::function<void()> fn) {
      net::post(self->stream_.get_executor(), std::move(fn));
    };
    try {
      srv_->handler(std::move(r), respond, std::move(post));
    } catch (const std::exception& e) {
      POLIS_LOG(kError, kNet, "handler threw: {}", e.what());
      respond(HttpResponse{500, "application/json", ErrorBody(std::string("internal error: ") + e.what()), {}});
    }
    // A response posted by the handler runs after this (same strand), and
    // stops the watch first.
    if (watch) WatchClient(std::move(gone));
  }

  // Reads while the handler works: end-of-stream or a reset means the
  // client hung up. Bytes that arrive (a pipelined request) are kept for
  // the next ReadHeader, and the watch ends there.
  void WatchClient(std::shared_ptr<std::atomic<bool>> gone) {
    if (buffer_.size() > 0) return;  // already holds the next request
    watching_ = true;
    stream_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this(), gone = std::move(gone)](beast::error_code ec, std::size_t n) {
          self->watching_ = false;
          if (!ec) {
            self->buffer_.commit(n);
          } else if (ec != net::error::operation_aborted) {
            gone->store(true);
            POLIS_LOG(kTrace, kNet, "{}: client hung up before its response ({})", self->remote_,
                      ec.message());
          }
          if (self->pending_) {
            HttpResponse r = std::move(*self->pending_);
            self->pending_.reset();
            self->Write(std::move(r), /*handled=*/true);
          }
        });
  }

  void Refuse(int status, const std::string& why) {
    srv_->Refused(method_, status, why);
    keep_alive_ = false;
    Write(HttpResponse{status, "application/json", ErrorBody(why), {}}, /*handled=*/false);
  }

  void Write(HttpResponse r, bool handled) {
    if (watching_) {
      // One read at a time: stop the watch; its handler writes this.
      pending_ = std::move(r);
      beast::error_code ec;
      Socket().cancel(ec);
      return;
    }
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(r.status), version_ ? version_ : 11);
    res->set(bhttp::field::server, srv_->opt.server_name);
    res->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res->set(k, v);
    res->keep_alive(keep_alive_);
    if (method_ == "HEAD") {
      res->content_length(r.body.size());  // what a GET would carry; no body
    } else {
      res->body() = std::move(r.body);
      res->prepare_payload();
    }
    Tcp().expires_after(Ms(srv_->opt.write_timeout_ms));
    const auto write_at = std::chrono::steady_clock::now();
    bhttp::async_write(stream_, *res,
                      [self = shared_from_this(), res, handled, write_at,
                       on_written = std::move(r.on_written)](beast::error_code ec, std::size_t) {
                        if (handled) self->srv_->active--;
                        if (ec) return self->Close();
                        if (on_written)
                          on_written(std::chrono::duration<double>(
                                         std::chrono::steady_clock::now() - write_at).count());
                        if (!handled) return self->LingerClose();
                        if (!self->keep_alive_ || self->srv_->stopped) return self->Close();
                        self->ReadHeader();
                      });
  }

  // After a refusal the client may still be sending a body we will not read;
  // closing at once would reset the connection before it reads the answer.
  // Stop sending, drain what arrives for a moment, then close.
  void LingerClose() {
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    Tcp().expires_after(Ms(2000));
    drain_.resize(64 << 10);
    Drain();
  }
  // Reads the raw connection (what is drained is never looked at; a TLS
  // session may be the one that failed).
  void Drain() {
    Tcp().async_read_some(net::buffer(drain_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (ec) return self->Close();
                            self->Drain();
                          });
  }

  // A TLS session closes without close_notify: every response carries its
  // length, so a client cannot mistake the end for truncation.
  void Close() {
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    Socket().close(ec);
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::vector<char> drain_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  HttpServer::Impl* srv_;
  std::string remote_, method_;
  std::chrono::steady_clock::time_point header_at_;
  size_t body_limit_ = 0;
  bool keep_alive_ = false;
  bool first_ = true;
  bool watching_ = false;                // a WatchClient read is pending
  std::optional<HttpResponse> pending_;  // the response waiting for it to stop
  unsigned version_ = 11;
};

}  // namespace

void HttpServer::Impl::DoAccept() {
  net::io_context& to = *iocs[next_ioc++ % iocs.size()];
  acceptor->async_accept(net::make_strand(to), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
    if (!ec) {
      if (connections >= opt.max_connections) {
        POLIS_LOG(kWarn, kNet, "{} connections open (max {}); closing a new one", connections.load(),
                  opt.max_connections);
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        if (tls)
          std::make_shared<Session<TlsStream>>(this, std::move(socket), *tls)->Run();
        else
          std::make_shared<Session<PlainStream>>(this, std::move(socket))->Run();
      }
    } else {
      POLIS_LOG(kWarn, kNet, "accept failed: {}", ec.message());
    }
    DoAccept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : impl_(std::make_shared<Impl>()) {
  impl_->opt = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { Stop(0); }

Status HttpServer::Start() {
  Impl& s = *impl_;
  if (s.started) return FailedPrecondition("HTTP server already started");
  beast::error_code ec;
  const auto address = net::ip::make_address(s.opt.host, ec);
  if (ec) return InvalidArgument("'{}' is not an IP address: {}", s.opt.host, ec.message());
  if (s.opt.tls.enabled()) {
    POLIS_ASSIGN_OR_RETURN(s.tls, LoadTlsContext(s.opt.tls));
  }
  const tcp::endpoint ep(address, static_cast<unsigned short>(s.opt.port));
  const std::string where = fmt::format("{}:{}", s.opt.host, s.opt.port);
  const int n = std::max(1, s.opt.threads);
  if (s.iocs.empty()) {
    const bool own = s.opt.busy_poll_us > 0;
    for (int i = 0; i < (own ? n : 1); ++i) {
      s.iocs.push_back(own ? std::make_unique<net::io_context>(1)
                           : std::make_unique<net::io_context>());
      s.keep_running.push_back(net::make_work_guard(*s.iocs.back()));
    }
    s.acceptor.emplace(net::make_strand(*s.iocs.front()));
  }
  s.acceptor->open(ep.protocol(), ec);
  if (!ec) s.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor->bind(ep, ec);
  if (!ec) s.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    beast::error_code ignored;
    s.acceptor->close(ignored);
    return IoError("cannot listen on {}: {}", where, ec.message());
  }
  s.bound_port = s.acceptor->local_endpoint(ec).port();
  s.started = true;
  s.DoAccept();
  for (int i = 0; i < n; ++i)
    s.threads.emplace_back([&s, i, &ioc = *s.iocs[i % s.iocs.size()]] {
      SetThreadName(fmt::format("{}/{}", s.opt.thread_name, i));
      // Process-directed signals go to the owner's threads, never to these.
      sigset_t set;
      sigemptyset(&set);
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD})
        sigaddset(&set, sig);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      RunIo(ioc, s.opt.busy_poll_us);
    });
  return Status::Ok();
}

size_t HttpServer::connections() const { return impl_->connections.load(); }
int64_t HttpServer::active_requests() const { return impl_->active.load(); }

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::Stop(int grace_ms) {
  Impl& s = *impl_;
  if (!s.started || s.stopped.exchange(true)) return;
  net::post(s.acceptor->get_executor(), [&s] {
    beast::error_code ec;
    s.acceptor->close(ec);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (s.active > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  s.keep_running.clear();
  for (auto& ioc : s.iocs) ioc->stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

}  // namespace polis::http
