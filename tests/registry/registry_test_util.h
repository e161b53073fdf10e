// Helpers shared by the registry tests: temporary roots, tiny artifacts built
// in the test (no training: Model::InitParams), reference forward passes, and
// an in-process server with a client.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "common/nn/model.h"
#include "registry/http.h"
#include "registry/server.h"

namespace polis::registry::testing {

using json = nlohmann::json;

// Conv -> pool -> dense on 1x8x8 inputs, 5 classes: small, but every layer
// kind the seed network has.
inline constexpr char kTinyCnn[] = R"(
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 3 kernel_size: 3 } }
  layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
  layer { type: "Flatten" }
  layer { type: "Dense" dense_param { units: 5 } }
)";
inline const nn::Shape kTinyInput = {1, 8, 8};

// One linear layer: integrated gradients and saliency have closed forms.
inline constexpr char kLinear[] = R"(layer { type: "Dense" dense_param { units: 3 } })";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "polis-registry-XXXXXX").string();
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline ModelArtifact MakeArtifact(const std::string& layers, const nn::Shape& input, uint64_t seed,
                                  float scale = 1.0f / 255, float shift = 0) {
  ModelArtifact a;
  proto::JobSpec& job = *a.header.mutable_job();
  job.set_name("test");
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(layers, job.mutable_model()));
  job.mutable_dataset()->set_scale(scale);
  job.mutable_dataset()->set_shift(shift);
  auto model = nn::Model::Build(job.model(), input);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  for (int64_t d : input) a.header.add_input_shape(d);
  for (int64_t d : model->output_shape()) a.header.add_output_shape(d);
  a.weights.resize(model->parameter_count());
  model->InitParams(a.weights.data(), seed);
  // Non-zero biases, so that every parameter matters.
  for (size_t i = 0; i < a.weights.size(); ++i) a.weights[i] += 0.01f * static_cast<float>(i % 7);
  a.header.set_parameter_count(model->parameter_count());
  return a;
}

inline int64_t Publish(const std::string& root, const std::string& name, ModelArtifact a) {
  auto p = PublishVersion(root, name, std::move(a), nlohmann::json());
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? p->version : 0;
}

// Logits of one row through a fresh batch-1 Network: the unbatched reference.
inline std::vector<float> ReferenceLogits(const ModelArtifact& a, const std::vector<float>& x) {
  nn::Shape in(a.header.input_shape().begin(), a.header.input_shape().end());
  auto model = nn::Model::Build(a.header.job().model(), in);
  std::vector<float> w = a.weights;
  nn::Network net(*model, 1, w.data(), nullptr, false);
  std::copy(x.begin(), x.end(), net.input());
  net.Forward();
  const int64_t k = model->output_shape()[0];
  return std::vector<float>(net.output(), net.output() + k);
}

inline std::vector<float> Pattern(int64_t n, int seed) {
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(((i * 37 + seed * 101) % 97)) / 97.0f - 0.3f;
  return x;
}

inline json InferBody(const std::vector<float>& x, int64_t rows, const nn::Shape& sample,
                      const std::string& id = "") {
  json shape = json::array({rows});
  for (int64_t d : sample) shape.push_back(d);
  json body = {{"inputs", json::array({json{{"name", "input"}, {"shape", shape},
                                            {"datatype", "FP32"}, {"data", x}}})}};
  if (!id.empty()) body["id"] = id;
  return body;
}

inline std::vector<float> OutputData(const json& response, const std::string& name) {
  for (const auto& o : response["outputs"])
    if (o["name"] == name) return o["data"].get<std::vector<float>>();
  ADD_FAILURE() << "no output '" << name << "' in " << response.dump();
  return {};
}

// An in-process server on an ephemeral port.
struct ServerHarness {
  explicit ServerHarness(const std::string& root, ServerOptions o = ServerOptions()) {
    o.root = root;
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.poll_interval_ms == 1000) o.poll_interval_ms = 50;
    server = std::make_unique<RegistryServer>(o);
    Status st = server->Start();
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  ~ServerHarness() { server->Stop(); }
  int port() const { return server->port(); }
  HttpClient Client(int timeout_ms = 20000) const { return HttpClient("127.0.0.1", port(), timeout_ms); }

  std::unique_ptr<RegistryServer> server;
};

inline HttpResult Call(HttpClient& c, const std::string& method, const std::string& target,
                       const std::string& body = "",
                       std::vector<std::pair<std::string, std::string>> headers = {}) {
  if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
  auto r = c.Request(method, target, body, headers);
  EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.status().ToString();
  return r.ok() ? *r : HttpResult{};
}

inline json ParseJson(const HttpResult& r) {
  json j = json::parse(r.body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.body;
  return j;
}

}  // namespace polis::registry::testing
