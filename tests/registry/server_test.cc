// The registry server over real sockets on 127.0.0.1: every Open Inference
// Protocol endpoint and its errors, alias routing, the registry endpoints
// and token scopes, path traversal, limits and slow clients, metrics.
#include "registry/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <set>
#include <thread>

#include "registry/aliases.h"
#include "registry/repository.h"
#include "registry/store.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

constexpr char kModel[] = "tiny";

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a1_ = MakeArtifact(kTinyCnn, kTinyInput, 1);
    a2_ = MakeArtifact(kTinyCnn, kTinyInput, 2);
    ASSERT_EQ(Publish(root(), kModel, a1_), 1);
    ASSERT_EQ(Publish(root(), kModel, a2_), 2);
  }
  const std::string& root() const { return dir_.path(); }
  std::string WriteTokens() {
    const std::string path = root() + "/../" + std::filesystem::path(root()).filename().string() + "-tokens.json";
    tokens_path_ = path;
    EXPECT_TRUE(WriteFileAtomic(path, R"({
      "tokens": [
        {"name": "reader", "token": "reader-token-1", "scopes": ["read"]},
        {"name": "ci", "token": "ci-token-123", "scopes": ["publish", "read"], "models": ["tiny", "new-*"]},
        {"name": "ops", "token": "ops-token-123", "scopes": ["admin"]}
      ]})").ok());
    return path;
  }
  void TearDown() override {
    if (!tokens_path_.empty()) std::filesystem::remove(tokens_path_);
  }

  TempDir dir_;
  ModelArtifact a1_, a2_;
  std::string tokens_path_;
};

const std::vector<std::pair<std::string, std::string>> kOps = {{"Authorization", "Bearer ops-token-123"}};

TEST_F(ServerTest, HealthAndServerMetadata) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  EXPECT_EQ(Call(c, "GET", "/v2/health/live").status, 200);
  auto ready = Call(c, "GET", "/v2/health/ready");
  EXPECT_EQ(ready.status, 200) << ready.body;
  auto meta = Call(c, "GET", "/v2");
  ASSERT_EQ(meta.status, 200);
  json m = ParseJson(meta);
  EXPECT_EQ(m["name"], "polis-registry");
  EXPECT_TRUE(m["extensions"].is_array());
  EXPECT_NE(m["extensions"].dump().find("model_repository"), std::string::npos);
  EXPECT_EQ(Call(c, "POST", "/v2/health/live").status, 405);
  auto none = Call(c, "GET", "/v3/nothing");
  EXPECT_EQ(none.status, 404);
  EXPECT_TRUE(ParseJson(none).contains("error"));
}

// Triton's statistics extension: what the requests of each version added
// up to, for every model the token may read, one model or one version.
TEST_F(ServerTest, StatisticsAddUpTheRequestsOfEachVersion) {
  ASSERT_EQ(Publish(root(), "other", MakeArtifact(kTinyCnn, kTinyInput, 3)), 1);
  ServerOptions o;
  o.tokens_file = WriteTokens();
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  const std::vector<std::pair<std::string, std::string>> reader = {{"Authorization", "Bearer reader-token-1"}};
  const std::vector<std::pair<std::string, std::string>> ci = {{"Authorization", "Bearer ci-token-123"}};
  EXPECT_NE(ParseJson(Call(c, "GET", "/v2"))["extensions"].dump().find("\"statistics\""), std::string::npos);

  const auto ms_now = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  };
  const int64_t before = ms_now();
  for (int i = 0; i < 3; ++i) {
    auto r = Call(c, "POST", "/v2/models/tiny/infer", InferBody(Pattern(2 * 64, i), 2, kTinyInput).dump());
    ASSERT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(Call(c, "POST", "/v2/models/tiny/infer", R"({"inputs": [{"name": "input"}]})").status, 400);
  const int64_t after = ms_now();

  auto r = Call(c, "GET", "/v2/models/tiny/versions/2/stats", "", reader);
  ASSERT_EQ(r.status, 200) << r.body;
  const json stats = ParseJson(r)["model_stats"];
  ASSERT_EQ(stats.size(), 1u) << r.body;
  const json& v2 = stats[0];
  EXPECT_EQ(v2["name"], "tiny");
  EXPECT_EQ(v2["version"], "2");
  EXPECT_EQ(v2["inference_count"], 6);  // rows
  EXPECT_GE(v2["last_inference"].get<int64_t>(), before);
  EXPECT_LE(v2["last_inference"].get<int64_t>(), after);
  const json& is = v2["inference_stats"];
  EXPECT_EQ(is["success"]["count"], 3);
  EXPECT_EQ(is["fail"]["count"], 1);
  EXPECT_GT(is["fail"]["ns"].get<uint64_t>(), 0u);
  for (const char* stage : {"queue", "compute_input", "compute_infer", "compute_output"})
    EXPECT_EQ(is[stage]["count"], 3) << stage;
  EXPECT_GT(is["compute_infer"]["ns"].get<uint64_t>(), 0u);
  // A request's stages lie within its time.
  uint64_t stages_ns = 0;
  for (const char* stage : {"compute_input", "queue", "compute_infer", "compute_output"})
    stages_ns += is[stage]["ns"].get<uint64_t>();
  EXPECT_LE(stages_ns, is["success"]["ns"].get<uint64_t>() + 1000000) << is.dump();
  // Forward passes by batch size: every row in one of them.
  int64_t passes = 0, rows = 0;
  for (const auto& b : v2["batch_stats"]) {
    passes += b["compute_infer"]["count"].get<int64_t>();
    rows += b["batch_size"].get<int64_t>() * b["compute_infer"]["count"].get<int64_t>();
  }
  EXPECT_EQ(passes, v2["execution_count"].get<int64_t>());
  EXPECT_EQ(rows, 6);

  // The same by alias-free model route and over all models; a token that
  // covers only some models sees only theirs.
  const json model = ParseJson(Call(c, "GET", "/v2/models/tiny/stats", "", reader))["model_stats"];
  ASSERT_FALSE(model.empty());
  EXPECT_TRUE(std::any_of(model.begin(), model.end(), [&](const json& m) { return m == v2; })) << model.dump();
  auto names_seen = [&](const std::vector<std::pair<std::string, std::string>>& token) {
    const json all = ParseJson(Call(c, "GET", "/v2/models/stats", "", token));
    std::set<std::string> names;
    for (const auto& m : all["model_stats"]) names.insert(m["name"].get<std::string>());
    return names;
  };
  EXPECT_EQ(names_seen(reader), (std::set<std::string>{"tiny", "other"}));
  EXPECT_EQ(names_seen(ci), std::set<std::string>{"tiny"});
  EXPECT_EQ(Call(c, "GET", "/v2/models/other/stats", "", ci).status, 403);
  // A loaded version nobody asked yet: zeros.
  const json other = ParseJson(Call(c, "GET", "/v2/models/other/versions/latest/stats", "", reader))["model_stats"];
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0]["inference_stats"]["success"], (json{{"count", 0}, {"ns", 0}}));
  EXPECT_EQ(other[0]["batch_stats"], json::array());

  auto no_version = Call(c, "GET", "/v2/models/tiny/versions/7/stats", "", reader);
  EXPECT_EQ(no_version.status, 404);
  EXPECT_NE(no_version.body.find("no version '7'"), std::string::npos) << no_version.body;
  EXPECT_EQ(Call(c, "GET", "/v2/models/nope/stats", "", reader).status, 404);
  EXPECT_EQ(Call(c, "POST", "/v2/models/stats", "{}", reader).status, 405);
}

TEST_F(ServerTest, ModelMetadataAndReadiness) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  auto r = Call(c, "GET", "/v2/models/tiny");
  ASSERT_EQ(r.status, 200) << r.body;
  json m = ParseJson(r);
  EXPECT_EQ(m["name"], "tiny");
  EXPECT_EQ(m["versions"], json({"1", "2"}));
  EXPECT_EQ(m["inputs"][0]["name"], "input");
  EXPECT_EQ(m["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(m["inputs"][0]["shape"], json({-1, 1, 8, 8}));
  EXPECT_EQ(m["outputs"][0]["name"], "probabilities");
  EXPECT_EQ(m["outputs"][0]["shape"], json({-1, 5}));
  EXPECT_EQ(m["outputs"][1]["name"], "logits");
  EXPECT_EQ(m["parameters"]["version"], "2");  // no production alias: latest

  auto v1 = ParseJson(Call(c, "GET", "/v2/models/tiny/versions/1"));
  EXPECT_EQ(v1["versions"], json({"1"}));
  EXPECT_EQ(v1["parameters"]["version"], "1");

  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/ready").status, 200);
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/versions/2/ready").status, 200);
  // Version 1 is neither latest nor aliased: not loaded until asked for.
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/versions/1/ready").status, 200);  // loaded by the metadata call

  auto unknown = Call(c, "GET", "/v2/models/nope");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(ParseJson(unknown)["error"].get<std::string>().find("'nope'"), std::string::npos);
  auto no_version = Call(c, "GET", "/v2/models/tiny/versions/7");
  EXPECT_EQ(no_version.status, 404);
  EXPECT_NE(no_version.body.find("no version 7"), std::string::npos) << no_version.body;
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/versions/7/ready").status, 404);
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/versions/bad$name").status, 400);
}

// A classifier published with class names and descriptions: metadata
// carries them, classification answers "score:index:label", and the card
// has every section; one published without names answers "score:index".
TEST_F(ServerTest, ClassNamesDescriptionsAndTheModelCard) {
  ASSERT_EQ(Publish(root(), "named", NamedClassifier(false)), 1);
  ASSERT_EQ(Publish(root(), "named", NamedClassifier(true)), 2);
  ServerOptions o;
  o.tokens_file = WriteTokens();
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pull\"over", "Dress", "Coat"};

  // Metadata: names and descriptions in parameters and on each tensor.
  json m = ParseJson(Call(c, "GET", "/v2/models/named/versions/1"));
  EXPECT_EQ(m["parameters"]["class_names"], json(names));
  EXPECT_EQ(m["parameters"]["description"], "Tells five kinds of clothing apart.");
  EXPECT_EQ(m["parameters"]["input_description"], "1x8x8 grey image, pixel value * 0.00392 + 0");
  EXPECT_EQ(m["inputs"][0]["description"], "1x8x8 grey image, pixel value * 0.00392 + 0");
  EXPECT_EQ(m["outputs"][0]["name"], "probabilities");
  EXPECT_EQ(m["outputs"][0]["description"], "probabilities of 5 classes: T-shirt/top, Trouser, Pull\"over, Dress, Coat");
  EXPECT_NE(m["outputs"][1]["description"].get<std::string>().find("logits"), std::string::npos);
  // A model without names: empty, and no description invented.
  json plain = ParseJson(Call(c, "GET", "/v2/models/tiny/versions/1"));
  EXPECT_EQ(plain["parameters"]["class_names"], json::array());
  EXPECT_EQ(plain["inputs"][0]["description"], "");

  // Classification: every class of each row, best first, named when named.
  const std::vector<float> x = Pattern(64, 5);
  json body = InferBody(x, 1, kTinyInput);
  body["outputs"] = json::array({json{{"name", "probabilities"}, {"parameters", {{"classification", 5}}}}});
  auto named = Call(c, "POST", "/v2/models/named/versions/1/infer", body.dump());
  ASSERT_EQ(named.status, 200) << named.body;
  const std::vector<float> ref = ReferenceLogits(NamedClassifier(false), x);
  const int64_t best = std::max_element(ref.begin(), ref.end()) - ref.begin();
  json jn = ParseJson(named);
  ASSERT_EQ(jn["outputs"][0]["data"].size(), 5u) << named.body;
  std::set<std::string> seen;
  for (const auto& e : jn["outputs"][0]["data"]) {
    const std::string s = e.get<std::string>();
    const size_t a = s.find(':'), b = s.find(':', a + 1);
    ASSERT_NE(b, std::string::npos) << s;
    const int64_t index = std::stoll(s.substr(a + 1, b - a - 1));
    EXPECT_EQ(s.substr(b + 1), names[index]) << s;
    seen.insert(s.substr(b + 1));
  }
  EXPECT_EQ(seen.size(), 5u);
  const std::string top = jn["outputs"][0]["data"][0];
  EXPECT_EQ(top.substr(top.find(':')), ":" + std::to_string(best) + ":" + names[best]);
  auto unnamed = Call(c, "POST", "/v2/models/tiny/versions/1/infer", body.dump());
  ASSERT_EQ(unnamed.status, 200) << unnamed.body;
  const std::string first = ParseJson(unnamed)["outputs"][0]["data"][0];
  EXPECT_EQ(std::count(first.begin(), first.end(), ':'), 1) << first;

  // The card: every section; privacy only for the DP-SGD version.
  auto r1 = Call(c, "GET", "/v2/models/named/versions/1/card");
  ASSERT_EQ(r1.status, 200) << r1.body;
  json card = ParseJson(r1);
  EXPECT_EQ(card["name"], "named");
  EXPECT_EQ(card["version"], 1);
  EXPECT_EQ(card["sha256"], ReadMetadata(root(), "named", 1)->at("sha256"));
  EXPECT_EQ(card["created_at"], "2026-01-02T03:04:05Z");
  EXPECT_EQ(card["task"], "classification");
  EXPECT_EQ(card["description"], "Tells five kinds of clothing apart.");
  EXPECT_EQ(card["intended_use"], "tests");
  EXPECT_EQ(card["limitations"], "8x8 pixels only");
  EXPECT_EQ(card["contact"], "ml-team@example.org");
  EXPECT_EQ(card["inputs"][0], (json{{"name", "input"}, {"datatype", "FP32"}, {"shape", {-1, 1, 8, 8}},
                                     {"description", "1x8x8 grey image, pixel value * 0.00392 + 0"}}));
  EXPECT_EQ(card["inputs"][1]["name"], "image");
  EXPECT_EQ(card["outputs"][0]["name"], "probabilities");
  EXPECT_EQ(card["outputs"][0]["shape"], json({-1, 5}));
  EXPECT_EQ(card["class_names"], json(names));
  EXPECT_EQ(card["training_data"]["format"], "IDX");
  EXPECT_EQ(card["training_data"]["dir"], "/data/tiny");
  EXPECT_EQ(card["training_data"]["files"],
            json::array({json{{"path", "/data/tiny/train-images"}, {"sha256", std::string(64, 'b')}}}));
  EXPECT_EQ(card["training_data"]["samples"], (json{{"train", 600}, {"validation", 60}, {"test", 100}}));
  EXPECT_EQ(card["training_data"]["report"], json({"images: 600 train", "  60 held out for validation"}));
  EXPECT_EQ(card["metrics"], (json{{"test_accuracy", 0.75}}));
  EXPECT_EQ(card["lineage"]["job_file"], "jobs/tiny.pbtxt");
  EXPECT_EQ(card["lineage"]["job_sha256"], std::string(64, 'a'));
  EXPECT_EQ(card["lineage"]["source_revision"], "abc123");
  EXPECT_EQ(card["lineage"]["run_dir"], "/runs/tiny-1");
  EXPECT_EQ(card["lineage"]["host"], "trainer-1");
  EXPECT_FALSE(card["lineage"].contains("study"));
  EXPECT_FALSE(card.contains("privacy")) << card.dump();
  json dp = ParseJson(Call(c, "GET", "/v2/models/named/card"));  // the default version: 2
  EXPECT_EQ(dp["version"], 2);
  ASSERT_TRUE(dp.contains("privacy")) << dp.dump();
  EXPECT_EQ(dp["privacy"]["epsilon"], 2.5);
  EXPECT_EQ(dp["privacy"]["delta"], 1e-5);
  EXPECT_EQ(dp["privacy"]["max_grad_norm"], 1.0);
  EXPECT_EQ(dp["privacy"]["noise_multiplier"], 1.1);
  EXPECT_EQ(dp["privacy"]["steps"], 300);
  EXPECT_EQ(dp["privacy"]["accountant"], "rdp");
  EXPECT_EQ(dp["privacy"]["secure_aggregation"], false);
  // A model without a card's extras still has one, with empty fields.
  json tiny = ParseJson(Call(c, "GET", "/v2/models/tiny/versions/1/card"));
  EXPECT_EQ(tiny["class_names"], json::array());
  EXPECT_EQ(tiny["description"], "");
  EXPECT_FALSE(tiny["training_data"].contains("samples"));
  EXPECT_FALSE(tiny["training_data"].contains("report"));

  // Unknown versions and models are 404, named; the metadata's scope.
  auto no_version = Call(c, "GET", "/v2/models/named/versions/9/card");
  EXPECT_EQ(no_version.status, 404);
  EXPECT_NE(no_version.body.find("no version 9"), std::string::npos) << no_version.body;
  auto no_model = Call(c, "GET", "/v2/models/nope/card");
  EXPECT_EQ(no_model.status, 404);
  EXPECT_NE(no_model.body.find("'nope'"), std::string::npos) << no_model.body;
  EXPECT_EQ(Call(c, "POST", "/v2/models/named/card").status, 405);
  EXPECT_EQ(Call(c, "GET", "/v2/models/named/card", "", {{"Authorization", "Bearer wrong-token-000"}}).status, 401);
  EXPECT_EQ(Call(c, "GET", "/v2/models/named/card", "", {{"Authorization", "Bearer reader-token-1"}}).status, 200);
}

TEST_F(ServerTest, InferFlatNestedAndOutputSelection) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  const std::vector<float> x0 = Pattern(64, 1), x1 = Pattern(64, 2);
  std::vector<float> both = x0;
  both.insert(both.end(), x1.begin(), x1.end());
  auto r = Call(c, "POST", "/v2/models/tiny/versions/2/infer",
                InferBody(both, 2, kTinyInput, "req-7").dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = ParseJson(r);
  EXPECT_EQ(j["model_name"], "tiny");
  EXPECT_EQ(j["model_version"], "2");
  EXPECT_EQ(j["id"], "req-7");
  ASSERT_EQ(j["outputs"].size(), 2u);
  EXPECT_EQ(j["outputs"][0]["shape"], json({2, 5}));
  EXPECT_EQ(j["outputs"][0]["datatype"], "FP32");
  const auto logits = OutputData(j, "logits");
  const auto probs = OutputData(j, "probabilities");
  const auto ref0 = ReferenceLogits(a2_, x0), ref1 = ReferenceLogits(a2_, x1);
  for (int k = 0; k < 5; ++k) {
    EXPECT_NEAR(logits[k], ref0[k], 1e-5);
    EXPECT_NEAR(logits[5 + k], ref1[k], 1e-5);
  }
  for (int row = 0; row < 2; ++row) {
    double sum = 0;
    for (int k = 0; k < 5; ++k) sum += probs[row * 5 + k];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }

  // The same rows nested as [2][1][8][8] give the same answer.
  json nested = json::array();
  for (const auto* x : {&x0, &x1}) {
    json img = json::array();
    for (int y = 0; y < 8; ++y)
      img.push_back(std::vector<float>(x->begin() + y * 8, x->begin() + y * 8 + 8));
    nested.push_back(json::array({img}));
  }
  json body = InferBody({}, 2, kTinyInput);
  body["inputs"][0]["data"] = nested;
  body["outputs"] = json::array({json{{"name", "logits"}}});
  auto rn = Call(c, "POST", "/v2/models/tiny/versions/2/infer", body.dump());
  ASSERT_EQ(rn.status, 200) << rn.body;
  json jn = ParseJson(rn);
  ASSERT_EQ(jn["outputs"].size(), 1u);  // only what was asked for
  EXPECT_EQ(OutputData(jn, "logits"), logits);
  EXPECT_FALSE(jn.contains("id"));

  // Classification extension: top-2 "score:index".
  body["outputs"] = json::array({json{{"name", "probabilities"}, {"parameters", {{"classification", 2}}}}});
  auto rc = Call(c, "POST", "/v2/models/tiny/versions/2/infer", body.dump());
  ASSERT_EQ(rc.status, 200) << rc.body;
  json jc = ParseJson(rc);
  EXPECT_EQ(jc["outputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(jc["outputs"][0]["shape"], json({2, 2}));
  const std::string top = jc["outputs"][0]["data"][0];
  const int64_t best = std::max_element(ref0.begin(), ref0.end()) - ref0.begin();
  EXPECT_EQ(top.substr(top.find(':') + 1), std::to_string(best));
}

// The binary tensor extension as Triton's clients use it: the JSON header's
// length in Inference-Header-Content-Length, raw little-endian tensors after
// it; outputs asked for as binary come back the same way.
TEST_F(ServerTest, BinaryTensorDataInAndOut) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  const std::vector<float> x0 = Pattern(64, 3), x1 = Pattern(64, 4);
  std::vector<float> both = x0;
  both.insert(both.end(), x1.begin(), x1.end());
  const json reference = ParseJson(Call(c, "POST", "/v2/models/tiny/versions/2/infer",
                                        InferBody(both, 2, kTinyInput).dump()));
  auto binary_request = [&](const json& header, const std::string& bytes) {
    const std::string head = header.dump();
    auto r = c.Request("POST", "/v2/models/tiny/versions/2/infer", head + bytes,
                       {{"Content-Type", "application/octet-stream"},
                        {"Inference-Header-Content-Length", std::to_string(head.size())}});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : HttpResult{};
  };
  const std::string fp32(reinterpret_cast<const char*>(both.data()), both.size() * 4);
  json header = {{"inputs", json::array({json{{"name", "input"}, {"shape", {2, 1, 8, 8}},
                                              {"datatype", "FP32"},
                                              {"parameters", {{"binary_data_size", fp32.size()}}}}})},
                 {"outputs", json::array({json{{"name", "logits"}, {"parameters", {{"binary_data", true}}}},
                                          json{{"name", "probabilities"}}})}};
  HttpResult r = binary_request(header, fp32);
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string len = r.Header("Inference-Header-Content-Length");
  ASSERT_FALSE(len.empty());
  const size_t n = std::stoul(len);
  json j = json::parse(r.body.substr(0, n));
  ASSERT_EQ(j["outputs"][0]["name"], "logits");
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 40);
  ASSERT_EQ(r.body.size(), n + 40);
  std::vector<float> logits(10);
  std::memcpy(logits.data(), r.body.data() + n, 40);
  EXPECT_EQ(logits, OutputData(reference, "logits"));  // same bits as the JSON path
  EXPECT_EQ(OutputData(j, "probabilities"), OutputData(reference, "probabilities"));

  // UINT8 pixels in binary are preprocessed like JSON UINT8 values;
  // binary_data_output makes every output binary, classification included.
  std::vector<uint8_t> px(64);
  for (int i = 0; i < 64; ++i) px[i] = static_cast<uint8_t>(i * 3);
  json u8 = {{"inputs", json::array({json{{"name", "input"}, {"shape", {1, 1, 8, 8}},
                                          {"datatype", "UINT8"},
                                          {"parameters", {{"binary_data_size", 64}}}}})},
             {"parameters", {{"binary_data_output", true}}},
             {"outputs", json::array({json{{"name", "probabilities"},
                                           {"parameters", {{"classification", 2}}}}})}};
  r = binary_request(u8, std::string(px.begin(), px.end()));
  ASSERT_EQ(r.status, 200) << r.body;
  const size_t n2 = std::stoul(r.Header("Inference-Header-Content-Length"));
  json j2 = json::parse(r.body.substr(0, n2));
  EXPECT_EQ(j2["outputs"][0]["datatype"], "BYTES");
  const std::string tail = r.body.substr(n2);
  EXPECT_EQ(static_cast<size_t>(j2["outputs"][0]["parameters"]["binary_data_size"]), tail.size());
  uint32_t first_len = 0;
  std::memcpy(&first_len, tail.data(), 4);
  const std::string first = tail.substr(4, first_len);
  json as_json = {{"inputs", json::array({json{{"name", "input"}, {"shape", {1, 1, 8, 8}},
                                               {"datatype", "UINT8"},
                                               {"data", std::vector<int>(px.begin(), px.end())}}})},
                  {"outputs", json::array({json{{"name", "probabilities"},
                                                {"parameters", {{"classification", 2}}}}})}};
  json j3 = ParseJson(Call(c, "POST", "/v2/models/tiny/versions/2/infer", as_json.dump()));
  EXPECT_EQ(first, j3["outputs"][0]["data"][0].get<std::string>());

  // Sizes that do not add up are refused, saying why.
  r = binary_request(header, fp32.substr(4));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("runs past the binary section"), std::string::npos) << r.body;
  r = binary_request(header, fp32 + "xx");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("add up to"), std::string::npos) << r.body;
  json wrong = header;
  wrong["inputs"][0]["parameters"]["binary_data_size"] = 64;
  r = binary_request(wrong, fp32.substr(0, 64));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("needs 512 bytes"), std::string::npos) << r.body;
  auto no_header = c.Request("POST", "/v2/models/tiny/versions/2/infer", header.dump(),
                             {{"Content-Type", "application/json"}});
  ASSERT_TRUE(no_header.ok());
  EXPECT_EQ(no_header->status, 400);
  EXPECT_NE(no_header->body.find("Inference-Header-Content-Length"), std::string::npos);
  auto bad_len = c.Request("POST", "/v2/models/tiny/versions/2/infer", header.dump(),
                           {{"Inference-Header-Content-Length", "99999"}});
  ASSERT_TRUE(bad_len.ok());
  EXPECT_EQ(bad_len->status, 400);
  EXPECT_NE(bad_len->body.find("exceeds the body"), std::string::npos) << bad_len->body;
}

TEST_F(ServerTest, IntegerInputsAreScaledLikeTrainingData) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  std::vector<int> pixels(64);
  std::vector<float> scaled(64);
  for (int i = 0; i < 64; ++i) {
    pixels[i] = (i * 53) % 256;
    scaled[i] = static_cast<float>(pixels[i]) * (1.0f / 255);
  }
  for (const char* dtype : {"UINT8", "INT64"}) {
    json body = {{"inputs", json::array({json{{"name", "input"}, {"shape", {1, 1, 8, 8}},
                                               {"datatype", dtype}, {"data", pixels}}})}};
    auto r = Call(c, "POST", "/v2/models/tiny/infer", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const auto logits = OutputData(ParseJson(r), "logits");
    const auto ref = ReferenceLogits(a2_, scaled);
    for (int k = 0; k < 5; ++k) EXPECT_NEAR(logits[k], ref[k], 1e-5) << dtype;
  }
}

// CPU time of this whole process (every thread), in seconds.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

TEST_F(ServerTest, BusyPollingAnswersAsUsualAndSleepsWhenIdle) {
  ServerOptions o;
  o.threads = 2;
  o.busy_poll_us = 5000;  // long, so that a poll that never ended would show
  ServerHarness h(root(), o);
  // Two connections: one on each thread's io_context.
  HttpClient clients[2] = {h.Client(), h.Client()};
  for (int i = 0; i < 40; ++i) {
    const std::vector<float> x = Pattern(64, i);
    auto r = Call(clients[i % 2], "POST", "/v2/models/tiny/versions/1/infer",
                  InferBody(x, 1, kTinyInput).dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const auto logits = OutputData(ParseJson(r), "logits");
    const auto ref = ReferenceLogits(a1_, x);
    for (int k = 0; k < 5; ++k) EXPECT_NEAR(logits[k], ref[k], 1e-5) << "request " << i;
  }
  // Idle: both I/O threads poll 5 ms at most, then sleep. Two threads that
  // kept polling would use most of the 500 ms below (on any machine with a
  // core free for them); sleeping ones, a few ms (the repository's poll).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double cpu0 = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LT(ProcessCpuSeconds() - cpu0, 0.15);
  // And both still answer after sleeping.
  for (HttpClient& c : clients) EXPECT_EQ(Call(c, "GET", "/v2/health/ready").status, 200);
}

TEST_F(ServerTest, InferErrorsSayWhatIsWrong) {
  ServerOptions o;
  o.batching.max_batch_size = 4;
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  auto expect = [&](const std::string& body, int status, const std::string& text,
                    const std::string& target = "/v2/models/tiny/infer") {
    auto r = Call(c, "POST", target, body);
    EXPECT_EQ(r.status, status) << body << " -> " << r.body;
    json j = ParseJson(r);
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_NE(j["error"].get<std::string>().find(text), std::string::npos)
        << "expected '" << text << "' in " << j["error"];
  };
  expect("{\"inputs\": [", 400, "not valid JSON");
  expect("[1,2]", 400, "must be a JSON object");
  expect("{}", 400, "\"inputs\" is required");
  json good = InferBody(Pattern(64, 3), 1, kTinyInput);
  json b = good;
  b["inputs"][0]["name"] = "pixels";
  expect(b.dump(), 400, "unknown input 'pixels'; model 'tiny' takes 'input' (FP32, shape [-1,1,8,8])");
  b = good;
  b["inputs"].push_back(good["inputs"][0]);
  expect(b.dump(), 400, "2 inputs given");
  b = good;
  b["inputs"][0]["shape"] = {1, 64};
  expect(b.dump(), 400, "shape [1,64] does not match the model's input shape [-1,1,8,8]");
  b = good;
  b["inputs"][0]["data"][10] = "x";
  expect(b.dump(), 400, "input 'input': data[10] = \"x\" is not a number");
  b = InferBody(Pattern(5 * 64, 3), 5, kTinyInput);
  expect(b.dump(), 400, "batch of 5 rows exceeds the model's max_batch_size 4");
  b = good;
  b["outputs"] = json::array({json{{"name", "scores"}}});
  expect(b.dump(), 400, "unknown output 'scores'");
  b = good;
  b["id"] = 7;
  expect(b.dump(), 400, "\"id\" must be a string");
  b = good;
  b["parameters"] = {{"binary_data_output", "yes"}};
  expect(b.dump(), 400, "binary_data_output must be true or false");
  expect(good.dump(), 404, "no version or alias 'staging'", "/v2/models/tiny/versions/staging/infer");
  expect(good.dump(), 404, "model 'other' is not in the registry", "/v2/models/other/infer");
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/infer").status, 405);
}

TEST_F(ServerTest, AliasesRouteRequests) {
  ASSERT_TRUE(SetAlias(root(), kModel, "production", 1, Actor{"t", ""}).ok());
  ASSERT_TRUE(SetAlias(root(), kModel, "staging", 2, Actor{"t", ""}).ok());
  ServerHarness h(root());
  HttpClient c = h.Client();
  const std::string body = InferBody(Pattern(64, 4), 1, kTinyInput).dump();
  auto version_of = [&](const std::string& target) {
    auto r = Call(c, "POST", target, body);
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    return ParseJson(r).value("model_version", std::string("?"));
  };
  EXPECT_EQ(version_of("/v2/models/tiny/versions/production/infer"), "1");
  EXPECT_EQ(version_of("/v2/models/tiny/versions/staging/infer"), "2");
  EXPECT_EQ(version_of("/v2/models/tiny/versions/latest/infer"), "2");
  // No version: the production alias, not the latest.
  EXPECT_EQ(version_of("/v2/models/tiny/infer"), "1");
  EXPECT_EQ(ParseJson(Call(c, "GET", "/v2/models/tiny/versions/production"))["parameters"]["version"], "1");
  EXPECT_EQ(Call(c, "GET", "/v2/models/tiny/versions/production/ready").status, 200);

  // Both are loaded, so both are READY in the index.
  auto idx = Call(c, "POST", "/v2/repository/index", "{}");
  ASSERT_EQ(idx.status, 200);
  json j = ParseJson(idx);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "tiny");
  EXPECT_EQ(j[0]["version"], "1");
  EXPECT_EQ(j[0]["state"], "READY");
  EXPECT_EQ(Call(c, "POST", "/v2/repository/index", "{\"ready\": true}").status, 200);

  // A promote made by another process (here: straight to disk) is picked up
  // by the poller.
  ASSERT_TRUE(SetAlias(root(), kModel, "production", 2, Actor{"t", ""}).ok());
  std::string now;
  for (int i = 0; i < 100 && now != "2"; ++i) {
    now = version_of("/v2/models/tiny/infer");
    if (now != "2") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(now, "2");
}

TEST_F(ServerTest, RegistryWritesNeedTokensWithTheRightScope) {
  ServerOptions o;
  o.tokens_file = WriteTokens();
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  const std::string promote = R"({"version": 1, "why": "rollout"})";
  auto r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", promote);
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_TRUE(ParseJson(r).contains("error"));
  EXPECT_NE(r.Header("WWW-Authenticate").find("Bearer"), std::string::npos);
  r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", promote,
           {{"Authorization", "Bearer wrong-token-000"}});
  EXPECT_EQ(r.status, 401);
  r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", promote,
           {{"Authorization", "Bearer reader-token-1"}});
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(ParseJson(r)["error"].get<std::string>().find("lacks scope 'admin'"), std::string::npos);
  r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", promote, kOps);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = ParseJson(r);
  EXPECT_TRUE(j["changed"]);
  EXPECT_EQ(j["aliases"]["production"], 1);
  EXPECT_EQ(j["events"][0]["who"], "ops");
  EXPECT_EQ(j["events"][0]["why"], "rollout");
  // Serving follows at once (the server did the promote itself).
  const std::string body = InferBody(Pattern(64, 5), 1, kTinyInput).dump();
  EXPECT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/infer", body))["model_version"], "1");

  // Reads are open to anonymous callers by default; history has the story.
  auto hist = Call(c, "GET", "/v2/registry/models/tiny/aliases");
  ASSERT_EQ(hist.status, 200) << hist.body;
  EXPECT_EQ(ParseJson(hist)["history"][0]["who"], "ops");

  // Promote to 2, roll back to 1.
  ASSERT_EQ(Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", R"({"version": 2})", kOps).status, 200);
  r = Call(c, "POST", "/v2/registry/models/tiny/aliases/production/rollback", R"({"why": "regression"})", kOps);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseJson(r)["version"], 1);
  EXPECT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/infer", body))["model_version"], "1");

  // Deleting the aliased version: 409 unless forced; admin only.
  EXPECT_EQ(Call(c, "DELETE", "/v2/registry/models/tiny/versions/1", "", {{"Authorization", "Bearer ci-token-123"}}).status, 403);
  r = Call(c, "DELETE", "/v2/registry/models/tiny/versions/1", "", kOps);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("production"), std::string::npos);
  r = Call(c, "DELETE", "/v2/registry/models/tiny/versions/1?force=true&why=retired", "", kOps);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(PathExists(root() + "/tiny/1"));
  EXPECT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/infer", body))["model_version"], "2");
  EXPECT_EQ(Call(c, "DELETE", "/v2/registry/models/tiny/aliases/production", "", kOps).status, 404);
}

TEST_F(ServerTest, PublishVerifiesTheUploadBeforeAcceptingIt) {
  ServerOptions o;
  o.tokens_file = WriteTokens();
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  const std::string bytes = EncodeArtifact(MakeArtifact(kTinyCnn, kTinyInput, 3));
  const std::vector<std::pair<std::string, std::string>> ci = {
      {"Authorization", "Bearer ci-token-123"}, {"Content-Type", "application/octet-stream"}};
  EXPECT_EQ(c.Request("POST", "/v2/registry/models/tiny/versions", bytes)->status, 401);
  EXPECT_EQ(c.Request("POST", "/v2/registry/models/other/versions", bytes, ci)->status, 403);
  // A flipped byte fails the checksum: 400, and nothing is published.
  std::string broken = bytes;
  broken[broken.size() / 2] ^= 0x40;
  auto r = c.Request("POST", "/v2/registry/models/tiny/versions", broken, ci);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("checksum mismatch"), std::string::npos) << r->body;
  EXPECT_EQ(*ListVersions(root(), "tiny"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.Request("POST", "/v2/registry/models/tiny/versions", "not an artifact", ci)->status, 400);

  r = c.Request("POST", "/v2/registry/models/tiny/versions?why=nightly", bytes, ci);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 201) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["version"], 3);
  // Served at once, and recorded.
  const std::string body = InferBody(Pattern(64, 6), 1, kTinyInput).dump();
  EXPECT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/versions/latest/infer", body))["model_version"], "3");
  auto meta = ParseJson(Call(c, "GET", "/v2/registry/models/tiny/versions/3"));
  EXPECT_EQ(meta["published_by"], "ci");
  EXPECT_EQ(meta["publish_reason"], "nightly");
  auto hist = ParseJson(Call(c, "GET", "/v2/registry/models/tiny/aliases"));
  EXPECT_EQ(hist["history"].back()["action"], "publish");
  // A brand-new model the token covers ("new-*"), promoted on upload needs admin.
  EXPECT_EQ(c.Request("POST", "/v2/registry/models/new-model/versions?alias=production", bytes, ci)->status, 403);
  r = c.Request("POST", "/v2/registry/models/new-model/versions", bytes, ci);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(Call(c, "GET", "/v2/models/new-model/ready").status, 200);
  // The artifact comes back byte for byte.
  auto dl = Call(c, "GET", "/v2/registry/models/new-model/versions/1/artifact");
  ASSERT_EQ(dl.status, 200);
  EXPECT_EQ(ArtifactSha256(dl.body), dl.Header("X-Polis-Sha256"));
  EXPECT_TRUE(DecodeArtifact(dl.body, "download").ok());
  auto list = ParseJson(Call(c, "GET", "/v2/registry/models"));
  EXPECT_EQ(list["models"].size(), 2u);
}

// A hostile value echoed back used to give a 7 MB 400 body, and a NUL cut
// messages short where they were printed.
TEST_F(ServerTest, ErrorsClipAndEscapeWhatTheyEcho) {
  ServerOptions o;
  o.max_body_bytes = 64u << 20;
  ServerHarness h(root(), o);
  HttpClient c = h.Client(60000);
  const std::string huge(20u << 20, 'z');
  for (const char* field : {"name", "datatype"}) {
    json body = InferBody(Pattern(64, 1), 1, kTinyInput);
    body["inputs"][0][field] = huge;
    auto r = Call(c, "POST", "/v2/models/tiny/infer", body.dump());
    EXPECT_EQ(r.status, 400) << field;
    EXPECT_LT(r.body.size(), 1024u) << field << ": " << r.body.substr(0, 300);
    const std::string e = ParseJson(r).value("error", "");
    EXPECT_NE(e.find(std::string(field) == "name" ? "unknown input" : "datatype"), std::string::npos) << e;
    EXPECT_NE(e.find("(20971520 bytes)"), std::string::npos) << e;
  }
  // A NUL inside an input name and inside a model name is shown escaped.
  json body = InferBody(Pattern(64, 1), 1, kTinyInput);
  body["inputs"][0]["name"] = std::string("in\0put", 6);
  auto r = Call(c, "POST", "/v2/models/tiny/infer", body.dump());
  EXPECT_EQ(r.status, 400);
  std::string e = ParseJson(r).value("error", "");
  EXPECT_EQ(e.find('\0'), std::string::npos);
  EXPECT_NE(e.find("unknown input 'in\\0put'"), std::string::npos) << e;
  r = Call(c, "POST", "/v2/models/ti%00ny/infer", body.dump());
  EXPECT_EQ(r.status, 400);
  e = ParseJson(r).value("error", "");
  EXPECT_EQ(e.find('\0'), std::string::npos);
  EXPECT_NE(e.find("ti\\x00ny"), std::string::npos) << e;
  // A long alias or version reference in the path is clipped too.
  r = Call(c, "GET", "/v2/models/tiny/versions/" + std::string(4000, '-') + "/ready");
  EXPECT_EQ(r.status, 400);
  EXPECT_LT(r.body.size(), 1024u) << r.body.substr(0, 300);
}

TEST_F(ServerTest, PathTraversalIsRefused) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  ASSERT_TRUE(WriteFileAtomic(root() + "/../secret.polis", "x").ok());
  for (const std::string target :
       {"/v2/models/..%2F..%2Fetc/infer", "/v2/models/../ready", "/v2/models/%2e%2e/versions/1",
        "/v2/registry/models/..%2fsecret/versions/1/artifact",
        "/v2/registry/models/tiny/versions/..%2F..%2F1/artifact", "/v2/models/.hidden",
        "/v2/models/tiny/versions/%2e%2e%2f1/ready", "/v2/models/a%00b", "/v2/models/tiny%zz"}) {
    auto r = Call(c, "GET", target);
    EXPECT_TRUE(r.status == 400 || r.status == 404) << target << " -> " << r.status << " " << r.body;
    EXPECT_TRUE(ParseJson(r).contains("error")) << target;
  }
  std::filesystem::remove(root() + "/../secret.polis");
}

TEST_F(ServerTest, OversizedRequestsAre413) {
  ServerOptions o;
  o.max_body_bytes = 4096;
  o.max_upload_bytes = 64 << 10;
  o.max_tensor_elements = 100;
  o.tokens_file = WriteTokens();
  ServerHarness h(root(), o);
  HttpClient c = h.Client();
  auto r = Call(c, "POST", "/v2/models/tiny/infer", std::string(5000, ' '));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(ParseJson(r)["error"].get<std::string>().find("exceeds the limit of 4096 bytes"),
            std::string::npos);
  // Too many elements in a small body (64 per row, limit 100).
  HttpClient c2 = h.Client();
  r = Call(c2, "POST", "/v2/models/tiny/infer", InferBody(Pattern(128, 1), 2, kTinyInput).dump());
  EXPECT_EQ(r.status, 413) << r.body;
  // A declared length over the limit is refused before the body is sent.
  {
    RawSocket s(h.port());
    s.Send("POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
    const std::string resp = s.ReadAll();
    EXPECT_EQ(resp.substr(0, 12), "HTTP/1.1 413") << resp;
    EXPECT_NE(resp.find("\"error\""), std::string::npos);
  }
  // Uploads have their own, larger limit.
  HttpClient c3 = h.Client();
  auto up = c3.Request("POST", "/v2/registry/models/tiny/versions", std::string(70 << 10, 'x'),
                       {{"Authorization", "Bearer ci-token-123"}});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->status, 413);
  HttpClient c4 = h.Client();
  up = c4.Request("POST", "/v2/registry/models/tiny/versions", std::string(8 << 10, 'x'),
                  {{"Authorization", "Bearer ci-token-123"}});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->status, 400) << up->body;  // within the upload limit, but not an artifact
}

// A body arrives with its header, after it in pieces, or larger than what
// the server reads at once after a header (1 MiB): each is read whole.
TEST_F(ServerTest, BodiesAreReadWholeHoweverTheyArrive) {
  ServerHarness h(root());
  const std::vector<float> x = Pattern(64, 3);
  const auto ref = ReferenceLogits(a1_, x);
  auto check = [&](const std::string& body, const std::string& how, int pause_ms) {
    RawSocket s(h.port());
    const std::string head = "POST /v2/models/tiny/versions/1/infer HTTP/1.1\r\nHost: x\r\n"
                             "Connection: close\r\nContent-Type: application/json\r\n"
                             "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    if (pause_ms == 0) {
      s.Send(head + body);
    } else {
      // The header and a third of the body, then the rest in two pieces.
      const size_t third = body.size() / 3;
      s.Send(head + body.substr(0, third));
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
      s.Send(body.substr(third, third));
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
      s.Send(body.substr(2 * third));
    }
    const std::string resp = s.ReadAll();
    ASSERT_EQ(resp.rfind("HTTP/1.1 200", 0), 0u) << how << ": " << resp.substr(0, 300);
    const json j = json::parse(resp.substr(resp.find("\r\n\r\n") + 4), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << how;
    const auto logits = OutputData(j, "logits");
    ASSERT_EQ(logits.size(), 5u) << how;
    for (int k = 0; k < 5; ++k) EXPECT_NEAR(logits[k], ref[k], 1e-5) << how;
  };
  const std::string body = InferBody(x, 1, kTinyInput).dump();
  check(body, "with its header", 0);
  check(body, "in pieces", 50);
  // JSON may carry any amount of white space: 3 MiB of it.
  const std::string padded = body.substr(0, body.size() - 1) + std::string(3 << 20, ' ') + "}";
  check(padded, "3 MiB at once", 0);
  check(padded, "3 MiB in pieces", 20);
}

TEST_F(ServerTest, SlowClientsAreDisconnected) {
  ServerOptions o;
  o.read_timeout_ms = 300;
  o.idle_timeout_ms = 300;
  ServerHarness h(root(), o);
  const auto start = std::chrono::steady_clock::now();
  RawSocket s(h.port());
  s.Send("GET /v2/health/live HTTP/1.1\r\nHost: x\r\n");  // never finishes the header
  const std::string resp = s.ReadAll();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(resp.empty()) << resp;
  EXPECT_LT(waited, 3.0);
  // The server is fine afterwards.
  HttpClient c = h.Client();
  EXPECT_EQ(Call(c, "GET", "/v2/health/live").status, 200);
  // A client that sends half a body is cut off too.
  RawSocket b(h.port());
  b.Send("POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"inp");
  EXPECT_TRUE(b.ReadAll().empty());
}

TEST_F(ServerTest, MetricsCountRequestsBatchesAndQueueTime) {
  ServerHarness h(root());
  HttpClient c = h.Client();
  const std::string body = InferBody(Pattern(64, 7), 1, kTinyInput).dump();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Call(c, "POST", "/v2/models/tiny/versions/2/infer", body).status, 200);
  Call(c, "POST", "/v2/models/tiny/versions/2/infer", "{}");
  auto r = Call(c, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.Header("Content-Type").find("text/plain"), std::string::npos);
  const std::string& m = r.body;
  EXPECT_NE(m.find("polis_inference_requests_total{model=\"tiny\",version=\"2\",outcome=\"success\"} 3"),
            std::string::npos) << m;
  EXPECT_NE(m.find("polis_inference_requests_total{model=\"tiny\",version=\"2\",outcome=\"failure\"} 1"),
            std::string::npos) << m;
  EXPECT_NE(m.find("polis_inference_batch_rows_count{model=\"tiny\",version=\"2\"} 3"), std::string::npos);
  EXPECT_NE(m.find("polis_inference_queue_seconds_bucket{model=\"tiny\",version=\"2\",le=\"+Inf\"} 3"),
            std::string::npos);
  EXPECT_NE(m.find("polis_inference_request_seconds_sum{model=\"tiny\",version=\"2\"}"), std::string::npos);
  // launch/prometheus/polis-alerts.yml's PolisRegistryLatencyHigh reads these buckets by model and version.
  EXPECT_NE(m.find("polis_inference_request_seconds_bucket{model=\"tiny\",version=\"2\",le=\"+Inf\"} 3"),
            std::string::npos) << m;
  EXPECT_NE(m.find("polis_http_requests_total{method=\"POST\",code=\"400\"} 1"), std::string::npos);
  EXPECT_NE(m.find("polis_model_version_loaded{model=\"tiny\",version=\"2\"} 1"), std::string::npos);
}

}  // namespace
}  // namespace polis::registry

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

TEST(RegressionServingTest, RegressionModelsReturnPredictions) {
  const std::string spec = std::string(kLinear) + " loss: MSE";
  proto::ModelSpec probe;
  if (!google::protobuf::TextFormat::ParseFromString(spec, &probe))
    GTEST_SKIP() << "this tree's ModelSpec has no regression losses";
  TempDir dir;
  // A non-image dataset: integer inputs are taken as they are.
  ModelArtifact a = MakeArtifact(spec, {4}, 3);
  if (proto::DatasetSpec::Format_IsValid(1))
    a.header.mutable_job()->mutable_dataset()->set_format(static_cast<proto::DatasetSpec::Format>(1));
  ASSERT_EQ(Publish(dir.path(), "reg", a), 1);
  ServerOptions o;
  o.allow_anonymous_explain = true;
  ServerHarness h(dir.path(), o);
  HttpClient c = h.Client();
  json meta = ParseJson(Call(c, "GET", "/v2/models/reg"));
  ASSERT_EQ(meta["outputs"].size(), 1u) << meta.dump();
  EXPECT_EQ(meta["outputs"][0]["name"], "predictions");
  EXPECT_EQ(meta["outputs"][0]["shape"], json({-1, 3}));
  EXPECT_EQ(meta["parameters"]["task"], "regression");
  const std::vector<float> x = {0.5f, -1.f, 2.f, 0.25f};
  auto r = Call(c, "POST", "/v2/models/reg/infer", InferBody(x, 1, {4}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const auto pred = OutputData(ParseJson(r), "predictions");
  const auto ref = ReferenceLogits(a, x);
  ASSERT_EQ(pred.size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(pred[k], ref[k], 1e-5);
  json b = InferBody(x, 1, {4});
  b["outputs"] = json::array({json{{"name", "probabilities"}}});
  EXPECT_EQ(Call(c, "POST", "/v2/models/reg/infer", b.dump()).status, 400);
  auto e = Call(c, "POST", "/v2/models/reg/explain", InferBody(x, 1, {4}).dump());
  ASSERT_EQ(e.status, 200) << e.body;
  json ej = ParseJson(e);
  EXPECT_EQ(ej["explanations"][0]["target"], 0);
  EXPECT_NEAR(ej["explanations"][0]["prediction"].get<double>(), ref[0], 1e-5);
}

}  // namespace
}  // namespace polis::registry
