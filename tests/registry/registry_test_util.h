// Helpers shared by the registry tests: temporary roots, tiny artifacts built
// in the test (no training: Model::InitParams), reference forward passes, and
// an in-process server with a client.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
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

// Sets an environment variable for a scope (a test hook), then unsets it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

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
  for (const auto& l : model->layers())  // as the coordinator records them
    for (const auto& p : l.params) {
      auto* t = a.header.add_tensor();
      t->set_name(l.name + "/" + p.name);
      for (int64_t d : p.shape) t->add_shape(d);
      t->set_offset(p.offset);
      t->set_count(p.count);
    }
  a.weights.resize(model->parameter_count());
  model->InitParams(a.weights.data(), seed);
  // Non-zero biases, so that every parameter matters.
  for (size_t i = 0; i < a.weights.size(); ++i) a.weights[i] += 0.01f * static_cast<float>(i % 7);
  a.header.set_parameter_count(model->parameter_count());
  return a;
}

// kTinyCnn with five class names, descriptions, a model card, metrics,
// lineage and sample counts as a trained classifier's header holds them;
// with `dp`, a DP-SGD privacy record too.
inline ModelArtifact NamedClassifier(bool dp) {
  ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 3);
  proto::ArtifactHeader& h = a.header;
  for (const char* c : {"T-shirt/top", "Trouser", "Pull\"over", "Dress", "Coat"}) h.add_class_names(c);
  h.set_input_description("1x8x8 grey image, pixel value * 0.00392 + 0");
  h.set_output_description("probabilities of 5 classes: T-shirt/top, Trouser, Pull\"over, Dress, Coat");
  h.set_train_samples(600);
  h.set_validation_samples(60);
  h.set_test_samples(100);
  h.set_data_report("images: 600 train\r\n\n  60 held out for validation\n");
  auto* card = h.mutable_job()->mutable_model_card();
  card->set_description("Tells five kinds of clothing apart.");
  card->set_intended_use("tests");
  card->set_limitations("8x8 pixels only");
  card->set_contact("ml-team@example.org");
  h.mutable_job()->mutable_dataset()->set_dir("/data/tiny");
  auto* m = h.add_metric();
  m->set_name("test_accuracy");
  m->set_value(0.75);
  auto* l = h.mutable_lineage();
  l->set_job_file("jobs/tiny.pbtxt");
  l->set_job_sha256(std::string(64, 'a'));
  l->set_source_revision("abc123");
  l->set_run_dir("/runs/tiny-1");
  l->set_host("trainer-1");
  l->set_created_at("2026-01-02T03:04:05Z");
  auto* f = l->add_dataset_files();
  f->set_path("/data/tiny/train-images");
  f->set_sha256(std::string(64, 'b'));
  if (dp) {
    auto* p = h.mutable_privacy();
    p->set_epsilon(2.5);
    p->set_delta(1e-5);
    p->set_max_grad_norm(1.0);
    p->set_noise_multiplier(1.1);
    p->set_steps(300);
    p->set_accountant("rdp");
    p->set_sampler("poisson");
  }
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

// The built command-line tools (polis_registry_tests depends on both).
inline const std::string kPolisctl = std::string(POLIS_BINARY_DIR) + "/launch/polisctl";
inline const std::string kRegistryBin = std::string(POLIS_BINARY_DIR) + "/registry/polis-registry";

struct CtlRun {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command; stdout and stderr apart. No registry token comes
// from the test's environment unless the command sets one.
inline CtlRun Sh(const std::string& cmd) {
  CtlRun r;
  char err_path[] = "/tmp/polisctl-models-err-XXXXXX";
  const int fd = mkstemp(err_path);
  if (fd >= 0) close(fd);
  FILE* p = popen(("env -u POLIS_REGISTRY_TOKEN " + cmd + " 2>" + err_path).c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  auto e = ReadFile(err_path);
  if (e.ok()) r.err = *e;
  unlink(err_path);
  return r;
}

inline json Json(const CtlRun& r) {
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
  return j;
}

// A raw connection, for what a well-behaved client never does.
class RawSocket {
 public:
  explicit RawSocket(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawSocket() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  void Send(const std::string& s) { EXPECT_EQ(send(fd_, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size())); }
  // Everything until the peer closes (or 5 s pass).
  std::string ReadAll() {
    std::string out;
    char buf[4096];
    while (true) {
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

}  // namespace polis::registry::testing
