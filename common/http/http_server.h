// A small HTTP/1.1 server on Boost.Beast, for the ops plane: the registry's
// API and inference, the coordinator's monitor. Beast and Asio stay inside
// http_server.cc; users see plain structs. (The blocking client is
// common/http/http_client.h.)
//
// N threads run one io_context (with busy_poll_us, one each: a connection is
// then given to one when accepted, round robin, and stays there); each
// connection runs on its own strand. A request is read in two steps: the
// header (within read_timeout_ms), then the body, whose limit depends on the
// request (is_upload picks max_upload_bytes, else max_body_bytes): a
// declared Content-Length over the limit is refused with 413 before any
// body byte is read, and a chunked body is cut off at the limit with 413.
// On plain HTTP, body bytes that have already arrived when the header is
// parsed are read at once (up to 1 MiB), without another pass through the
// I/O queue. A slow client that does not deliver a
// request in time is disconnected. The handler gets the request and a
// Respond function that may be called from any thread, exactly once; the
// response is written on the connection's strand (a HEAD request gets the
// headers and Content-Length only) and the connection is kept alive if the
// client asked for it. For requests watch_client picks, the connection is
// read while the handler works, so that a client that hangs up is noticed
// (HttpRequest::client_gone). The I/O threads block process-directed signals
// (SIGINT, SIGTERM, ...), so those reach the owner's threads.
//
// With HttpServerOptions::tls every connection is TLS (a session type of
// its own: the plain path is unchanged); HttpRequest::tls says which a
// request came over, so that an owner running a plain and a TLS server with
// one handler can refuse some requests on the plain one.
//
// Thread-safety: Start/Stop from one thread; the handler runs on I/O threads
// concurrently and must not block for long.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace polis::http {

struct HttpRequest {
  std::string method;         // "GET", "POST", ...
  std::string target;         // as sent: "/v2/models/m/infer?x=1"
  std::string body;
  std::string authorization;  // the Authorization header, "" if absent
  std::string content_type;
  // The binary tensor extension's "Inference-Header-Content-Length": the
  // body is that many bytes of JSON followed by raw tensor bytes. "" if absent.
  std::string inference_header_length;
  std::string remote;         // "127.0.0.1:53211"
  bool tls = false;           // it came over TLS (HttpServerOptions::tls)
  // Set (from an I/O thread) when the client closes its connection before
  // the response is written; only watched for requests that
  // HttpServerOptions::watch_client picks, otherwise it stays false. Never null.
  std::shared_ptr<const std::atomic<bool>> client_gone;
  // From the parsed header until the whole body was in (0 for a request
  // whose body came with its header).
  double read_seconds = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Called on the I/O thread once the response is written to the socket,
  // with the seconds the write took (not called when the write fails).
  std::function<void(double seconds)> on_written = nullptr;
};

using Respond = std::function<void(HttpResponse)>;
// Runs a function on the connection's executor (off the caller's thread).
using Post = std::function<void(std::function<void()>)>;
using HttpHandler = std::function<void(HttpRequest, Respond, Post)>;

// A server's TLS identity: a PEM certificate (a chain file is fine: the
// server's certificate first, then its intermediates) and its PEM private
// key (may be the same file).
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// The PEM texts of a checked certificate and key (gRPC takes them as strings).
struct TlsPem {
  std::string cert_chain;
  std::string private_key;
};
// Reads both files and checks that each is PEM and that the key belongs to
// the certificate: IoError (unreadable) or InvalidArgument, naming the file.
StatusOr<TlsPem> LoadTlsFiles(const TlsFiles& files);

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                              // 0: an ephemeral port (see port())
  int threads = 2;
  // > 0: an I/O thread with nothing to do keeps polling its connections for
  // this many microseconds before it sleeps (lower latency, paid in CPU
  // after each burst of requests), and each thread has its own io_context.
  // 0: it sleeps at once.
  int busy_poll_us = 0;
  // The I/O threads are named "<thread_name>/<i>" (top -H, ps -L, perf).
  std::string thread_name = "http";
  size_t max_body_bytes = 8u << 20;          // 413 beyond
  size_t max_upload_bytes = size_t{1} << 30; // for requests is_upload() accepts
  std::function<bool(std::string_view method, std::string_view target)> is_upload;
  // Requests whose handler may work long enough that a client hanging up
  // should stop it: while such a request is with the handler, the server
  // reads the connection, and end-of-stream or a reset sets client_gone.
  std::function<bool(std::string_view method, std::string_view target)> watch_client;
  size_t max_header_bytes = 16u << 10;       // 431 beyond
  int read_timeout_ms = 30000;  // header, and body (plus 1 s per MiB declared)
  int idle_timeout_ms = 60000;  // a kept-alive connection waiting for its next request
  int write_timeout_ms = 30000;
  size_t max_connections = 4096;             // further connections are closed at once
  std::string server_name = "polis";         // the Server header
  // When enabled, every connection speaks TLS (1.2 or later) with this
  // certificate; Start fails naming the file when it cannot be used. A
  // client that fails the handshake is disconnected.
  TlsFiles tls;
  // Called for every response the server itself generates (413, 431, 400).
  std::function<void(const std::string& method, int status, const std::string& why)> on_refused;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts the threads. IoError naming the address on failure.
  Status Start();
  int port() const;
  // Open connections, and requests handed to the handler whose response is
  // not yet written. Without pipelining (HTTP/1.1 clients do not pipeline
  // POSTs) a connection carries at most one request at a time, so while
  // active_requests() >= connections() no further request can arrive except
  // on a new connection.
  size_t connections() const;
  int64_t active_requests() const;
  // Stops accepting, lets requests in flight finish for up to grace_ms, then
  // stops the threads. Idempotent.
  void Stop(int grace_ms = 5000);

  struct Impl;  // http_server.cc only

 private:
  std::shared_ptr<Impl> impl_;
};

// The blocking client and address parsing live in common/http (the
// coordinator publishes with them too); these names keep registry callers
// unchanged.

}  // namespace polis::http
