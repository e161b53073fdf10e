// Publishing from training to a running registry over HTTP: a real
// polis-registry (port 0, a token file), a real training job with
// registry.url; the version is served afterwards, and a wrong token fails the
// job with the URL and the status while the artifact stays in the run
// directory. Over HTTPS (a registry with --tls-cert, certificates made at
// test time): the job publishes when POLIS_CA_FILE trusts the CA, and fails
// naming the verification, artifact kept, when nothing does.
#include <gtest/gtest.h>
#include "tests/prereq.h"
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "tests/integration/shell.h"
#include "tests/tls_certs.h"

namespace polis {
namespace {

using namespace polis::it;
using json = nlohmann::json;

class PublishHttp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist())
      POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                      "launch/install-deps.sh installs it";
    char tmpl[] = "/tmp/polis-pub-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/tokens.json") << json{
        {"tokens", {{{"name", "ci"}, {"token", "ci-secret"}, {"scopes", {"publish", "read"}},
                     {"models", {"fashion_*"}}}}}}.dump();
    std::ofstream(dir_ + "/ci.token") << "ci-secret\n";
    const std::string bin = kBin + "/registry/polis-registry";
    const std::string root = dir_ + "/root", port_file = dir_ + "/port", tokens = dir_ + "/tokens.json";
    std::vector<std::string> args = {bin, "serve", "--root", root, "--listen", "127.0.0.1:0",
                                     "--port-file", port_file, "--tokens", tokens};
    for (std::string& a : ServeArgs()) args.push_back(std::move(a));
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && port_ == 0) {
      auto text = ReadFile(port_file);
      if (text.ok()) port_ = std::atoi(text->c_str());
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_GT(port_, 0) << "polis-registry serve did not start";
    url_ = UrlScheme() + std::to_string(port_);
  }
  // More `polis-registry serve` flags, and the URL up to the port.
  virtual std::vector<std::string> ServeArgs() { return {}; }
  virtual std::string UrlScheme() { return "http://127.0.0.1:"; }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }

  // A small training job publishing to the server.
  ShellRun Train(const std::string& run, const std::string& env, const std::string& train_flags) {
    return Shell("env -u POLIS_REGISTRY_TOKEN " + env + " " +
                 PolisRun("--workers 2 --servers 1 --epochs 1 --registry-url " + url_ + " --run-dir " + dir_ +
                          "/" + run + " " + kSrc + "/jobs/fashion_cnn.pbtxt -- --train-limit 2000 " +
                          "--test-limit 500 " + train_flags));
  }

  std::string dir_, url_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(PublishHttp, TrainedModelIsPublishedAndServed) {
  ShellRun r = Train("run", "", "--registry-token-file " + dir_ + "/ci.token");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("published fashion_cnn version 1 to " + url_), std::string::npos) << r.output;

  const json result = ReadJson(dir_ + "/run/result.json");
  EXPECT_EQ(result["version"], 1) << result.dump();
  EXPECT_EQ(result["registry_url"], url_);
  const std::string artifact = dir_ + "/run/model.polis";
  EXPECT_EQ(result["artifact"], artifact);
  auto bytes = ReadFile(artifact);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(result["artifact_sha256"], ArtifactSha256(*bytes));

  http::HttpClient c("127.0.0.1", port_);
  auto meta = c.Get("/v2/models/fashion_cnn");
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  ASSERT_EQ(meta->status, 200) << meta->body;
  EXPECT_EQ(json::parse(meta->body)["versions"], json::array({"1"})) << meta->body;
  auto version = c.Get("/v2/registry/models/fashion_cnn/versions/1");
  ASSERT_TRUE(version.ok());
  json v = json::parse(version->body);
  EXPECT_EQ(v["sha256"], ArtifactSha256(*bytes));
  EXPECT_EQ(v["published_by"], "ci");
  EXPECT_EQ(v["publish_reason"], "trained by job fashion_cnn");
  // The served model answers.
  json body = {{"inputs", {{{"name", "input"}, {"shape", {1, 1, 28, 28}}, {"datatype", "UINT8"},
                            {"data", std::vector<int>(784, 0)}}}}};
  auto infer = c.Post("/v2/models/fashion_cnn/infer", body.dump());
  ASSERT_TRUE(infer.ok());
  EXPECT_EQ(infer->status, 200) << infer->body;
  // It names the class it answers: "score:index:label".
  body["outputs"] = {{{"name", "probabilities"}, {"parameters", {{"classification", 1}}}}};
  auto classes = c.Post("/v2/models/fashion_cnn/infer", body.dump());
  ASSERT_TRUE(classes.ok());
  ASSERT_EQ(classes->status, 200) << classes->body;
  const std::string top = json::parse(classes->body)["outputs"][0]["data"][0];
  const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  const size_t colon = top.find(':'), label = top.find(':', colon + 1);
  ASSERT_NE(label, std::string::npos) << top;
  EXPECT_EQ(top.substr(label + 1), names.at(std::stoul(top.substr(colon + 1, label - colon - 1)))) << top;

  // The model card, read by a client that is not Polis' own (Python's urllib).
  ShellRun py = Shell("/usr/bin/python3 -c '"
                      "import json, urllib.request\n"
                      "c = json.load(urllib.request.urlopen(\"" + url_ + "/v2/models/fashion_cnn/card\"))\n"
                      "print(json.dumps({\"classes\": c[\"class_names\"], \"task\": c[\"task\"], "
                      "\"input\": c[\"inputs\"][0][\"description\"], \"samples\": c[\"training_data\"][\"samples\"], "
                      "\"sha256\": c[\"sha256\"], \"privacy\": \"privacy\" in c}))'");
  ASSERT_EQ(py.exit_code, 0) << py.output;
  const json card = json::parse(py.output.substr(py.output.find('{')));
  EXPECT_EQ(card["classes"], json(names));
  EXPECT_EQ(card["task"], "classification");
  EXPECT_EQ(card["input"], "1x28x28 grey image, pixel value * 0.00392 + 0");
  EXPECT_EQ(card["samples"], (json{{"train", 2000}, {"validation", 0}, {"test", 500}}));
  EXPECT_EQ(card["sha256"], ArtifactSha256(*bytes));
  EXPECT_EQ(card["privacy"], false);

  // The same job without any token is refused before training starts.
  ShellRun none = Train("run-none", "", "");
  EXPECT_EQ(none.exit_code, 2) << none.output;
  EXPECT_NE(none.output.find("POLIS_REGISTRY_TOKEN"), std::string::npos) << none.output;
}

TEST_F(PublishHttp, WrongTokenFailsTheJobAndKeepsTheArtifact) {
  ShellRun r = Train("run", "POLIS_REGISTRY_TOKEN=not-the-token", "");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(url_ + "/v2/registry/models/fashion_cnn/versions"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("HTTP 401"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("POLIS_REGISTRY_TOKEN"), std::string::npos) << r.output;
  EXPECT_TRUE(PathExists(dir_ + "/run/model.polis")) << r.output;
  auto a = ReadArtifactFile(dir_ + "/run/model.polis");
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  const json result = ReadJson(dir_ + "/run/result.json");
  EXPECT_NE(result.value("publish_error", "").find("HTTP 401"), std::string::npos) << result.dump();
  EXPECT_FALSE(result.contains("version")) << result.dump();
  http::HttpClient c("127.0.0.1", port_);
  auto list = c.Get("/v2/registry/models");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(json::parse(list->body)["models"], json::array()) << list->body;

  // Nothing listening: the job fails naming the address.
  const std::string dead = "http://127.0.0.1:1";
  ShellRun down = Shell("env POLIS_REGISTRY_TOKEN=ci-secret " +
                        PolisRun("--workers 1 --servers 0 --sync allreduce --epochs 1 --registry-url " + dead +
                                 " --run-dir " + dir_ + "/run-down " + kSrc +
                                 "/jobs/fashion_cnn.pbtxt -- --train-limit 500 --test-limit 100"));
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_NE(down.output.find(dead), std::string::npos) << down.output;
  EXPECT_NE(down.output.find("unreachable"), std::string::npos) << down.output;
  EXPECT_TRUE(PathExists(dir_ + "/run-down/model.polis"));
}

class PublishHttps : public PublishHttp {
 protected:
  std::vector<std::string> ServeArgs() override {
    if (!test::HaveOpenssl()) return {};  // the test says so (skip, or fail under CI)
    certs_ = test::MakeTestCerts(dir_);
    EXPECT_EQ(certs_.error, "");
    return {"--tls-cert", certs_.server_cert, "--tls-key", certs_.server_key};
  }
  std::string UrlScheme() override { return "https://localhost:"; }
  test::TestCerts certs_;
};

TEST_F(PublishHttps, PublishesWhenTheCaIsTrustedAndFailsNamingTheVerificationOtherwise) {
  if (!test::HaveOpenssl()) POLIS_MISSING_PREREQ() << "the openssl CLI is not installed (launch/install-deps.sh)";
  const std::string token = "--registry-token-file " + dir_ + "/ci.token";
  ShellRun r = Train("run", "POLIS_CA_FILE=" + certs_.ca, token);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("published fashion_cnn version 1 to " + url_), std::string::npos) << r.output;
  http::HttpClient c("localhost", port_, 20000, http::ClientTls{true, certs_.ca});
  auto meta = c.Get("/v2/models/fashion_cnn");
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  EXPECT_EQ(json::parse(meta->body)["versions"], json::array({"1"})) << meta->body;

  ShellRun untrusted = Train("run-untrusted", "", token);
  EXPECT_EQ(untrusted.exit_code, 1) << untrusted.output;
  EXPECT_NE(untrusted.output.find("TLS certificate verification of localhost:" + std::to_string(port_) + " failed"),
            std::string::npos)
      << untrusted.output;
  EXPECT_TRUE(PathExists(dir_ + "/run-untrusted/model.polis")) << untrusted.output;
}

}  // namespace
}  // namespace polis
