// Monitor: the monitoring HTTP API of a running job (ARCHITECTURE.md, "ops"
// plane), served by the coordinator (rank 0). docs/operations.md documents
// the endpoints and the status schema.
//
//   GET  /                  the dashboard (static files from dashboard_dir)
//   GET  /api/status        the last published status document (JSON)
//                           (Options::document_path: another path, another document)
//   GET  /metrics           Prometheus text format derived from that document
//   GET  /healthz           "ok" while the server runs
//   POST /api/checkpoint    queue a checkpoint command   (Bearer token)
//   POST /api/stop          queue a stop command         (Bearer token)
//
// With TLS (Options::tls_*) the port speaks HTTPS; an optional plain-HTTP
// port (Options::plain_listen) serves the same pages but refuses commands.
//
// A small Boost.Beast server on one I/O thread of its own. The coordinator's
// loop calls Publish() with the latest status (cheap: it swaps a shared_ptr
// under a mutex; serialisation happens on the I/O thread, on request) and
// drains the commands that POSTs queued with TakeCommands(). HTTP handlers
// only read snapshots, so a slow client never delays the training loop.
//
// Thread-safety: every method may be called from any thread; Start and the
// destructor from the owner. The destructor stops the server and joins the
// I/O thread (in-flight requests get a short grace period).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace polis::coordinator {

class Monitor {
 public:
  struct Options {
    std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 = ephemeral; [::1]:P for IPv6
    // TLS: with a PEM certificate (chain) and its key, `listen` speaks HTTPS.
    std::string tls_cert_file;
    std::string tls_key_file;
    // With TLS, a plain-HTTP port as well ("" = none): everything but the
    // commands, which are refused there with 403 before the token is read.
    std::string plain_listen;
    std::string token;                   // bearer token for POST /api/* ("" = POSTs refused with 403)
    std::string dashboard_dir;           // index.html and friends; "" = built-in path (see below)
    // What is served. The coordinator keeps the defaults; polis-tune serves
    // its study with "/api/study", "study.html" and the study's metrics
    // (launch/tune/study_server.h).
    std::string document_path = "/api/status";  // GET: the last published document
    std::string index_page = "index.html";      // GET /: this file of dashboard_dir
    // The /metrics text of the published document; empty = PrometheusText.
    std::function<std::string(const nlohmann::json&)> metrics;
  };

  // Binds and starts serving. InvalidArgument for a malformed `listen`,
  // IoError (naming the address) when the socket cannot be bound.
  //
  // The built-in dashboard path is the first of: "<dir of this executable>/
  // dashboard", the build tree's launch/dashboard, the source tree's
  // launch/dashboard that holds an index.html.
  static StatusOr<std::unique_ptr<Monitor>> Start(const Options& options);

  // "http://127.0.0.1:PORT" ("https://" with TLS; the bound port). A
  // wildcard bind (0.0.0.0, ::) reports this host's name, so other machines
  // can reach it. plain_address(): the plain-HTTP port beside TLS, or "".
  std::string address() const;
  std::string plain_address() const;

  // The full GET /api/status document (schema in docs/operations.md), or
  // whatever document Options::document_path serves.
  void Publish(nlohmann::json status);

  // Commands queued by POST /api/checkpoint and POST /api/stop, oldest first;
  // the queue is emptied. At most kMaxQueuedCommands wait; beyond that POSTs
  // get 503 until the coordinator drains them.
  enum class Command { kCheckpoint, kStop };
  static constexpr size_t kMaxQueuedCommands = 64;
  std::vector<Command> TakeCommands();

  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  struct Impl;  // monitor.cc only

 private:
  explicit Monitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

const char* CommandName(Monitor::Command command);  // "checkpoint", "stop"

// The Prometheus text exposition (version 0.0.4) of a status document:
// job-level gauges, per-worker and per-server series labelled by rank, each
// family with HELP and TYPE lines. Fields that are absent or null are left
// out. Exposed for tests and tools.
std::string PrometheusText(const nlohmann::json& status);

}  // namespace polis::coordinator
