#include "registry/grpc_service.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <climits>
#include <chrono>
#include <cstring>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "registry/proto/grpc_predict_v2.grpc.pb.h"
#include "registry/tensor_json.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace pb = ::inference;

static_assert(std::endian::native == std::endian::little,
              "raw tensor contents are little-endian; this build assumes a little-endian host");

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

grpc::StatusCode GrpcCodeFor(int http_status) {
  switch (http_status) {
    case 400: return grpc::StatusCode::INVALID_ARGUMENT;
    case 401: return grpc::StatusCode::UNAUTHENTICATED;
    case 403: return grpc::StatusCode::PERMISSION_DENIED;
    case 404: return grpc::StatusCode::NOT_FOUND;
    case 409: return grpc::StatusCode::FAILED_PRECONDITION;
    case 413:
    case 429: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 501: return grpc::StatusCode::UNIMPLEMENTED;
    case 503: return grpc::StatusCode::UNAVAILABLE;
    default: return grpc::StatusCode::INTERNAL;
  }
}

const char* GrpcCodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    default: return "INTERNAL";
  }
}

// The REST error's message ({"error": "..."}), or the body itself.
std::string ErrorMessage(const http::HttpResponse& r) {
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
  return r.body.empty() ? fmt::format("HTTP status {}", r.status) : r.body;
}

grpc::Status ErrorStatus(const http::HttpResponse& r) {
  return grpc::Status(GrpcCodeFor(r.status), ErrorMessage(r));
}

// A path segment, percent-encoded (model names and versions are checked by
// the router; this only keeps '/' and the like from changing the route).
std::string Segment(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string ModelPath(const std::string& model, const std::string& version) {
  std::string p = "/v2/models/" + Segment(model);
  if (!version.empty()) p += "/versions/" + Segment(version);
  return p;
}

// Appends each value narrowed to T, little-endian.
template <typename T, typename Repeated>
void AppendAs(std::string& out, const Repeated& values) {
  const size_t at = out.size();
  out.resize(at + values.size() * sizeof(T));
  char* p = out.data() + at;
  for (const auto& v : values) {
    const T t = static_cast<T>(v);
    std::memcpy(p, &t, sizeof(T));
    p += sizeof(T);
  }
}

// Typed contents as raw bytes of `datatype`; false when the datatype has no
// numeric contents field (BYTES is encoded by the caller, InferBody).
bool TypedToRaw(const std::string& datatype, const pb::InferTensorContents& c, std::string& out) {
  if (datatype == "FP32") AppendAs<float>(out, c.fp32_contents());
  else if (datatype == "FP64") AppendAs<double>(out, c.fp64_contents());
  else if (datatype == "INT8") AppendAs<int8_t>(out, c.int_contents());
  else if (datatype == "INT16") AppendAs<int16_t>(out, c.int_contents());
  else if (datatype == "INT32") AppendAs<int32_t>(out, c.int_contents());
  else if (datatype == "INT64") AppendAs<int64_t>(out, c.int64_contents());
  else if (datatype == "UINT8") AppendAs<uint8_t>(out, c.uint_contents());
  else if (datatype == "UINT16") AppendAs<uint16_t>(out, c.uint_contents());
  else if (datatype == "UINT32") AppendAs<uint32_t>(out, c.uint_contents());
  else if (datatype == "UINT64") AppendAs<uint64_t>(out, c.uint64_contents());
  else if (datatype == "BOOL") AppendAs<uint8_t>(out, c.bool_contents());
  else return false;
  return true;
}

json ParameterJson(const pb::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case pb::InferParameter::kBoolParam: return p.bool_param();
    case pb::InferParameter::kInt64Param: return p.int64_param();
    case pb::InferParameter::kStringParam: return p.string_param();
    case pb::InferParameter::kDoubleParam: return p.double_param();
    case pb::InferParameter::kUint64Param: return p.uint64_param();
    default: return nullptr;
  }
}

// The ModelInfer request as the REST binary tensor extension: a JSON header
// (no tensor data) followed by every input's raw bytes. BYTES elements
// (contents.bytes_contents) go there too, each as a 4-byte little-endian
// length and its bytes (the extension's BYTES encoding, which is also what
// raw_input_contents holds for BYTES): as JSON strings, bytes that are not
// UTF-8 (an image file) would not survive.
grpc::Status InferBody(const pb::ModelInferRequest& r, std::string* body, size_t* header_length) {
  const bool raw = r.raw_input_contents_size() > 0;
  if (raw && r.raw_input_contents_size() != r.inputs_size())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        fmt::format("raw_input_contents has {} entries for {} inputs; give one per "
                                    "input, in order, or none (typed contents)",
                                    r.raw_input_contents_size(), r.inputs_size()));
  json header = json::object();
  if (!r.id().empty()) header["id"] = r.id();
  json params = json::object();
  for (const auto& [k, v] : r.parameters()) params[k] = ParameterJson(v);
  params["binary_data_output"] = true;
  header["parameters"] = params;
  std::string binary;
  json inputs = json::array();
  for (int i = 0; i < r.inputs_size(); ++i) {
    const auto& in = r.inputs(i);
    json t = {{"name", in.name()}, {"datatype", in.datatype()},
              {"shape", std::vector<int64_t>(in.shape().begin(), in.shape().end())}};
    const size_t before = binary.size();
    if (raw) {
      binary += r.raw_input_contents(i);
    } else if (in.datatype() == "BYTES") {
      for (const auto& s : in.contents().bytes_contents()) AppendBinaryBytes(binary, s);
    } else {
      TypedToRaw(in.datatype(), in.contents(), binary);
    }
    t["parameters"] = {{"binary_data_size", binary.size() - before}};
    inputs.push_back(std::move(t));
  }
  header["inputs"] = std::move(inputs);
  if (r.outputs_size() > 0) {
    json outputs = json::array();
    for (const auto& o : r.outputs()) {
      json p = json::object();
      for (const auto& [k, v] : o.parameters()) p[k] = ParameterJson(v);
      p["binary_data"] = true;
      outputs.push_back(json{{"name", o.name()}, {"parameters", p}});
    }
    header["outputs"] = std::move(outputs);
  }
  *body = header.dump(-1, ' ', false, json::error_handler_t::replace);
  *header_length = body->size();
  *body += binary;
  return grpc::Status::OK;
}

// The REST infer response (binary tensor extension) as a ModelInferResponse.
grpc::Status InferResponse(const http::HttpResponse& res, pb::ModelInferResponse* out) {
  size_t header_length = res.body.size();
  for (const auto& [k, v] : res.headers)
    if (k == "Inference-Header-Content-Length") header_length = std::stoull(v);
  if (header_length > res.body.size())
    return grpc::Status(grpc::StatusCode::INTERNAL, "malformed infer response (header length)");
  json j = json::parse(std::string_view(res.body).substr(0, header_length), nullptr, false);
  if (!j.is_object()) return grpc::Status(grpc::StatusCode::INTERNAL, "malformed infer response");
  out->set_model_name(j.value("model_name", ""));
  out->set_model_version(j.value("model_version", ""));
  if (j.contains("id")) out->set_id(j["id"].get<std::string>());
  if (auto p = j.find("parameters"); p != j.end() && p->is_object())
    for (const auto& [k, v] : p->items())
      if (v.is_number_integer()) (*out->mutable_parameters())[k].set_int64_param(v.get<int64_t>());
  size_t at = header_length;
  for (const auto& o : j["outputs"]) {
    auto* t = out->add_outputs();
    t->set_name(o["name"].get<std::string>());
    t->set_datatype(o["datatype"].get<std::string>());
    for (const auto& d : o["shape"]) t->add_shape(d.get<int64_t>());
    const size_t n = o["parameters"]["binary_data_size"].get<size_t>();
    if (at + n > res.body.size())
      return grpc::Status(grpc::StatusCode::INTERNAL, "malformed infer response (binary sizes)");
    out->add_raw_output_contents(res.body.data() + at, n);
    at += n;
  }
  return grpc::Status::OK;
}

// A unary call: routes one REST request, finishes with its translation, and
// counts the call (and, for ModelInfer, the write stage) when gRPC is done.
class Call : public grpc::ServerUnaryReactor {
 public:
  Call(Metrics* metrics, const char* rpc, bool infer) : metrics_(metrics), rpc_(rpc), infer_(infer) {}
  void Done(const grpc::Status& st) {
    code_ = st.error_code();
    finish_at_ = Clock::now();
    Finish(st);
  }
  void OnDone() override {
    metrics_->CountGrpc(rpc_, GrpcCodeName(code_));
    if (infer_ && code_ == grpc::StatusCode::OK)
      metrics_->ObserveStage(Protocol::kGrpc, Stage::kWrite, Since(finish_at_));
    delete this;
  }
  void OnCancel() override {}

 private:
  Metrics* metrics_;
  const char* rpc_;
  bool infer_;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
  Clock::time_point finish_at_;
};

class Service final : public pb::GRPCInferenceService::CallbackService {
 public:
  Service(OipRouter router, Metrics* metrics) : router_(std::move(router)), metrics_(metrics) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx, const pb::ServerLiveRequest*,
                                       pb::ServerLiveResponse* out) override {
    return Route(ctx, "ServerLive", "GET", "/v2/health/live", [out](const http::HttpResponse& r) {
      if (r.status != 200) return ErrorStatus(r);
      out->set_live(true);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx, const pb::ServerReadyRequest*,
                                        pb::ServerReadyResponse* out) override {
    return Route(ctx, "ServerReady", "GET", "/v2/health/ready", [out](const http::HttpResponse& r) {
      if (r.status != 200 && r.status != 503) return ErrorStatus(r);
      out->set_ready(r.status == 200);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx, const pb::ModelReadyRequest* in,
                                       pb::ModelReadyResponse* out) override {
    return Route(ctx, "ModelReady", "GET", ModelPath(in->name(), in->version()) + "/ready",
                 [out](const http::HttpResponse& r) {
                   if (r.status != 200 && r.status != 503) return ErrorStatus(r);
                   out->set_ready(r.status == 200);
                   return grpc::Status::OK;
                 });
  }

  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const pb::ServerMetadataRequest*,
                                           pb::ServerMetadataResponse* out) override {
    return Route(ctx, "ServerMetadata", "GET", "/v2", [out](const http::HttpResponse& r) {
      if (r.status != 200) return ErrorStatus(r);
      json j = json::parse(r.body, nullptr, false);
      if (!j.is_object()) return grpc::Status(grpc::StatusCode::INTERNAL, "malformed server metadata");
      out->set_name(j.value("name", ""));
      out->set_version(j.value("version", ""));
      for (const auto& e : j.value("extensions", json::array())) out->add_extensions(e.get<std::string>());
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const pb::ModelMetadataRequest* in,
                                          pb::ModelMetadataResponse* out) override {
    return Route(ctx, "ModelMetadata", "GET", ModelPath(in->name(), in->version()),
                 [out](const http::HttpResponse& r) {
                   if (r.status != 200) return ErrorStatus(r);
                   json j = json::parse(r.body, nullptr, false);
                   if (!j.is_object())
                     return grpc::Status(grpc::StatusCode::INTERNAL, "malformed model metadata");
                   out->set_name(j.value("name", ""));
                   out->set_platform(j.value("platform", ""));
                   for (const auto& v : j.value("versions", json::array()))
                     out->add_versions(v.get<std::string>());
                   auto tensors = [](const json& list, const auto& add) {
                     for (const auto& t : list) {
                       auto* m = add();
                       m->set_name(t.value("name", ""));
                       m->set_datatype(t.value("datatype", ""));
                       for (const auto& d : t.value("shape", json::array())) m->add_shape(d.get<int64_t>());
                     }
                   };
                   tensors(j.value("inputs", json::array()), [out] { return out->add_inputs(); });
                   tensors(j.value("outputs", json::array()), [out] { return out->add_outputs(); });
                   return grpc::Status::OK;
                 });
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx, const pb::ModelInferRequest* in,
                                       pb::ModelInferResponse* out) override {
    const auto start = Clock::now();
    std::string body;
    size_t header_length = 0;
    grpc::Status st = InferBody(*in, &body, &header_length);
    if (!st.ok()) {
      auto* call = new Call(metrics_, "ModelInfer", true);
      call->Done(st);
      return call;
    }
    http::HttpRequest req = Request(ctx, "POST", ModelPath(in->model_name(), in->model_version()) + "/infer");
    req.body = std::move(body);
    req.content_type = "application/octet-stream";
    req.inference_header_length = std::to_string(header_length);
    req.read_seconds = Since(start);
    return Dispatch(std::move(req), "ModelInfer", true,
                    [out](const http::HttpResponse& r) {
                      if (r.status != 200) return ErrorStatus(r);
                      return InferResponse(r, out);
                    });
  }

 private:
  using Translate = std::function<grpc::Status(const http::HttpResponse&)>;

  static http::HttpRequest Request(grpc::CallbackServerContext* ctx, const char* method,
                                   std::string target) {
    http::HttpRequest req;
    req.method = method;
    req.target = std::move(target);
    const auto& md = ctx->client_metadata();
    if (auto it = md.find("authorization"); it != md.end())
      req.authorization.assign(it->second.data(), it->second.size());
    req.remote = ctx->peer();
    // "ssl" on a TLS port, "insecure" otherwise.
    const auto security = ctx->auth_context()->FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
    req.tls = !security.empty() && security.front() == "ssl";
    req.client_gone = std::make_shared<const std::atomic<bool>>(false);
    return req;
  }

  grpc::ServerUnaryReactor* Route(grpc::CallbackServerContext* ctx, const char* rpc, const char* method,
                                  std::string target, Translate translate) {
    return Dispatch(Request(ctx, method, std::move(target)), rpc, false, std::move(translate));
  }

  grpc::ServerUnaryReactor* Dispatch(http::HttpRequest req, const char* rpc, bool infer,
                                     Translate translate) {
    auto* call = new Call(metrics_, rpc, infer);
    auto once = std::make_shared<std::atomic<bool>>(false);
    http::Respond respond = [call, once, translate = std::move(translate)](http::HttpResponse r) {
      if (once->exchange(true)) return;
      call->Done(translate(r));
    };
    // Results are encoded where they arrive (the inference thread): there
    // is no connection strand to hand them to.
    http::Post post = [](std::function<void()> fn) { fn(); };
    try {
      router_(std::move(req), respond, std::move(post), Protocol::kGrpc);
    } catch (const std::exception& e) {
      POLIS_LOG(kError, kRegistry, "gRPC {} handler threw: {}", rpc, e.what());
      http::HttpResponse r{500, "application/json", json{{"error", std::string("internal error: ") + e.what()}}.dump(), {}};
      respond(std::move(r));
    }
    return call;
  }

  OipRouter router_;
  Metrics* metrics_;
};

}  // namespace

struct GrpcFrontend::Impl {
  GrpcOptions opt;
  Metrics* metrics = nullptr;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

GrpcFrontend::GrpcFrontend(GrpcOptions options, OipRouter router, Metrics* metrics)
    : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  impl_->metrics = metrics;
  impl_->service = std::make_unique<Service>(std::move(router), metrics);
}

GrpcFrontend::~GrpcFrontend() { Stop(0); }

Status GrpcFrontend::Start() {
  Impl& s = *impl_;
  const std::string host = s.opt.host.find(':') != std::string::npos ? "[" + s.opt.host + "]" : s.opt.host;
  const std::string address = fmt::format("{}:{}", host, s.opt.port);
  grpc::ServerBuilder b;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!s.opt.tls_cert_chain.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({s.opt.tls_private_key, s.opt.tls_cert_chain});
    credentials = grpc::SslServerCredentials(ssl);
  }
  b.AddListeningPort(address, credentials, &s.port);
  b.RegisterService(s.service.get());
  b.SetMaxReceiveMessageSize(static_cast<int>(std::min<size_t>(s.opt.max_message_bytes, INT32_MAX)));
  b.SetMaxSendMessageSize(INT32_MAX);
  // A port in use is an error, as for REST (gRPC would share it otherwise).
  b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  s.server = b.BuildAndStart();
  if (!s.server || s.port == 0) {
    s.server.reset();
    return IoError("cannot listen for gRPC on {} (address in use or not local?)", address);
  }
  POLIS_LOG(kInfo, kRegistry, "OIP v2 gRPC on {}:{}{}", s.opt.host, s.port,
            s.opt.tls_cert_chain.empty() ? "" : " (TLS)");
  return Status::Ok();
}

int GrpcFrontend::port() const { return impl_->port; }

void GrpcFrontend::Stop(int grace_ms) {
  Impl& s = *impl_;
  if (!s.server) return;
  s.server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  s.server->Wait();
  s.server.reset();
}

}  // namespace polis::registry
