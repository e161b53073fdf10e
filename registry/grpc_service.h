// The Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService,
// registry/proto/grpc_predict_v2.proto) on a port of its own, beside the
// REST API of registry/server.h.
//
// Each RPC is answered by the REST router itself: the call becomes the OIP
// REST request it stands for (ModelInfer: the binary tensor extension, raw
// tensor bytes after a JSON header without data), so tokens, models,
// batching, limits, metrics and error messages are the REST API's, and the
// answer goes back as the gRPC response. Served:
//
//   ServerLive, ServerReady     GET /v2/health/live | ready (not ready: ready=false, not an error)
//   ServerMetadata              GET /v2
//   ModelReady, ModelMetadata   GET /v2/models/{m}[/versions/{v}][/ready]
//   ModelInfer                  POST /v2/models/{m}[/versions/{v}]/infer
//
// ModelInfer takes each input either as raw_input_contents (little-endian,
// row-major) or as typed contents (fp32_contents, int_contents, ...;
// bytes_contents for BYTES such as a time-series model's raw CSV "rows"),
// and answers every output as raw_output_contents. Tokens come from the
// metadata key "authorization" ("Bearer <token>"), with the REST scopes.
// HTTP codes map to gRPC codes: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED,
// 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 FAILED_PRECONDITION, 413 and 429
// RESOURCE_EXHAUSTED, 501 UNIMPLEMENTED, 503 UNAVAILABLE, others INTERNAL;
// the status message is the REST error's text.
//
// Threads: gRPC's callback threads translate and route; inference results
// are encoded on the version's inference thread. Start/Stop from one thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/http/http_server.h"
#include "common/status.h"
#include "registry/metrics.h"

namespace polis::registry {

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 0;                       // 0: ephemeral (see GrpcFrontend::port)
  size_t max_message_bytes = 8u << 20;  // requests beyond: RESOURCE_EXHAUSTED (the REST body limit)
  // PEM texts (http::LoadTlsFiles): when set, the port speaks TLS
  // (grpc::SslServerCredentials, no client certificates).
  std::string tls_cert_chain;
  std::string tls_private_key;
};

// Answers an OIP REST request as the REST server would; `protocol` labels
// the per-stage metrics.
using OipRouter =
    std::function<void(http::HttpRequest, http::Respond, http::Post, Protocol protocol)>;

class GrpcFrontend {
 public:
  GrpcFrontend(GrpcOptions options, OipRouter router, Metrics* metrics);
  ~GrpcFrontend();
  GrpcFrontend(const GrpcFrontend&) = delete;
  GrpcFrontend& operator=(const GrpcFrontend&) = delete;

  // Binds; IoError naming the address when it cannot.
  Status Start();
  int port() const;
  // Stops accepting calls; calls in flight get up to grace_ms.
  void Stop(int grace_ms = 5000);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace polis::registry
