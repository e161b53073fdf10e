// The registry server: a Repository of loaded models behind the Open
// Inference Protocol v2 REST API (as Triton and KServe implement it), plus
// the registry's own endpoints (publish, aliases, history), Prometheus
// metrics and bearer-token checks. docs/registry.md documents every route.
//
//   GET  /v2/health/live | /v2/health/ready | /v2 | /metrics
//   GET  /v2/models/{m}[/versions/{v}][/ready]
//   POST /v2/models/{m}[/versions/{v}]/infer | .../explain
//   POST /v2/repository/index
//   /v2/registry/models[/{m}[/versions[/{v}[/artifact]] | /aliases[/{a}[/rollback]]]]
//
// With TLS (ServerOptions::tls_*) the main port speaks HTTPS and gRPC TLS;
// an optional plain-HTTP port serves the same router but refuses writes.
//
// {v} is a version number, "latest" or an alias. Errors are
// {"error": "..."} with 400 (bad request), 401/403 (token), 404 (unknown
// model or version), 405, 409 (conflict), 413 (too large), 429 (explanation
// queue full), 503 (not ready, queue full, explanation deadline).
//
// The same API over gRPC (inference.GRPCInferenceService) when grpc_port is
// set: registry/grpc_service.h; it is answered by the same router.
//
// Threads: `threads` HTTP I/O threads parse requests and write responses;
// one inference thread per loaded version; `admin_threads` run blocking work
// (loads, publishes, alias writes) off the I/O threads; `explain.threads`
// low-priority explanation workers (registry/explain_queue.h); one poller.
// Start/Stop from one thread.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "registry/explain_queue.h"
#include "registry/served_version.h"

namespace polis::registry {

class Repository;
class Metrics;

struct ServerOptions {
  std::string root = "registry-root";
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: ephemeral (see RegistryServer::port)
  int threads = 2;
  int busy_poll_us = 0;  // HTTP I/O threads poll this long before sleeping (HttpServerOptions)
  // OIP v2 over gRPC (registry/grpc_service.h) on a port of its own:
  // -1 off, 0 ephemeral (see RegistryServer::grpc_port).
  std::string grpc_host = "127.0.0.1";
  int grpc_port = -1;
  // TLS (docs/registry.md, "TLS"): with a PEM certificate (chain) and its
  // key, the main port speaks HTTPS and the gRPC port TLS; Start fails
  // naming the file that cannot be used.
  std::string tls_cert_file;
  std::string tls_key_file;
  // With TLS, a plain-HTTP port as well (-1 off, 0 ephemeral): reads,
  // inference and scrapes; requests that need a write scope (publish,
  // admin) are refused there with 403 before their token is looked at.
  std::string plain_host = "127.0.0.1";
  int plain_port = -1;
  int admin_threads = 2;
  std::string tokens_file;               // "": anonymous read + infer, no writes
  BatchingOptions batching;              // per-model defaults
  size_t max_body_bytes = 8u << 20;
  size_t max_upload_bytes = size_t{1} << 30;
  int64_t max_tensor_elements = 4 << 20;  // per input tensor
  int read_timeout_ms = 30000;
  int idle_timeout_ms = 60000;
  int poll_interval_ms = 1000;
  int64_t max_unpinned_versions = 2;
  int explain_default_steps = 32;
  ExplainLimits explain;                 // queue, workers, per-request budget and deadline
  // Anonymous callers get the explain scope too (off: explanations need a
  // token with scope explain or admin).
  bool allow_anonymous_explain = false;
  // Process-wide: allocations of at least this many bytes get their own
  // mapping (mallopt M_MMAP_THRESHOLD), so memory of unloaded versions is
  // returned to the OS. 0 leaves the allocator alone.
  int mmap_threshold_bytes = 1 << 20;
};

class RegistryServer {
 public:
  explicit RegistryServer(ServerOptions options);
  ~RegistryServer();
  RegistryServer(const RegistryServer&) = delete;
  RegistryServer& operator=(const RegistryServer&) = delete;

  // Loads the token file and every model's pinned versions, then listens.
  Status Start();
  // Stops listening, lets requests in flight finish (grace_ms), unloads.
  void Stop(int grace_ms = 5000);
  int port() const;
  int grpc_port() const;  // 0 when gRPC is off
  int plain_port() const;  // 0 when there is no plain-HTTP port beside TLS
  Repository& repository();
  Metrics& metrics();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace polis::registry
