// OIP v2 over gRPC, checked with a client that is not Polis' own: Python's
// grpcio with stubs generated at test time from registry/proto's .proto
// (tests/registry/oip_grpc_client.py). Live, ready, metadata and infer
// (raw and typed contents) on a small CNN, the answer equal to REST's, and
// the error codes: bad token UNAUTHENTICATED, unknown model NOT_FOUND,
// wrong shape INVALID_ARGUMENT; the classification extension with class
// names ("score:index:label"). Also: the per-stage histograms of both
// protocols and the gRPC call counter in /metrics.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "common/fs.h"
#include "registry/metrics.h"
#include "tests/prereq.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kToken[] = "grpc-client-secret";

TEST(GrpcTest, PythonGrpcioClientMatchesRest) {
  if (Sh(std::string(kPython) + " -c 'import grpc' && command -v protoc && command -v "
         "grpc_python_plugin").exit_code != 0)
    POLIS_MISSING_PREREQ() << "python3-grpcio, protobuf-compiler or protobuf-compiler-grpc is "
                              "not installed (launch/install-deps.sh)";
  TempDir dir;
  const std::string root = dir.path() + "/root";
  ModelArtifact art = MakeArtifact(kTinyCnn, kTinyInput, 7, 1.0f, 0.0f);
  for (const char* c : {"zero", "one", "two", "three", "four"}) art.header.add_class_names(c);
  ASSERT_EQ(Publish(root, "cnn", art), 1);
  const std::string tokens = dir.path() + "/tokens.json";
  ASSERT_TRUE(WriteFileAtomic(tokens, std::string(R"({"anonymous": [], "tokens": [{"name": "client", "token": ")") +
                                          kToken + R"(", "scopes": ["read", "infer"]}]})")
                  .ok());
  ServerOptions o;
  o.tokens_file = tokens;
  o.grpc_port = 0;
  ServerHarness h(root, o);
  const int grpc_port = h.server->grpc_port();
  ASSERT_GT(grpc_port, 0);

  const int64_t rows = 2;
  std::vector<float> x = Pattern(rows * 64, 3);
  const std::string input = dir.path() + "/input.f32";
  ASSERT_TRUE(WriteFileAtomic(input, std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4)).ok());

  // REST's answer for the same rows.
  HttpClient c = h.Client();
  auto rest = Call(c, "POST", "/v2/models/cnn/infer", InferBody(x, rows, kTinyInput).dump(),
                   {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_EQ(rest.status, 200) << rest.body;
  const json rest_json = ParseJson(rest);

  CtlRun run = Sh(std::string(kPython) + " " + POLIS_SOURCE_DIR + "/tests/registry/oip_grpc_client.py --port " +
                  std::to_string(grpc_port) + " --proto " + POLIS_SOURCE_DIR +
                  "/registry/proto/grpc_predict_v2.proto --model cnn --input " + input +
                  " --shape 2,1,8,8 --token " + kToken + " --bad-token not-the-token --classification 2");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json g = Json(run);
  EXPECT_EQ(g["live"], true);
  EXPECT_EQ(g["ready"], true);
  EXPECT_EQ(g["server"]["name"], "polis-registry");
  EXPECT_EQ(g["model_ready"], true);
  EXPECT_EQ(g["metadata"]["name"], "cnn");
  EXPECT_EQ(g["metadata"]["versions"], json::array({"1"}));
  EXPECT_EQ(g["metadata"]["inputs"][0]["name"], "input");
  EXPECT_EQ(g["metadata"]["inputs"][0]["shape"], json::array({-1, 1, 8, 8}));
  EXPECT_EQ(g["metadata"]["outputs"][0]["name"], "probabilities");

  for (const char* form : {"infer_raw", "infer_typed"}) {
    SCOPED_TRACE(form);
    const json& r = g[form];
    EXPECT_EQ(r["model_name"], "cnn");
    EXPECT_EQ(r["model_version"], "1");
    EXPECT_EQ(r["id"], "grpc-1");
    for (const char* name : {"probabilities", "logits"}) {
      SCOPED_TRACE(name);
      EXPECT_EQ(r["outputs"][name]["datatype"], "FP32");
      EXPECT_EQ(r["outputs"][name]["shape"], json::array({rows, 5}));
      std::vector<float> want = OutputData(rest_json, name);
      std::vector<float> got = r["outputs"][name]["data"].get<std::vector<float>>();
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
    }
  }
  // The classification extension names the class: "score:index:label",
  // the best class of the first row first.
  EXPECT_EQ(g["classification"]["datatype"], "BYTES");
  EXPECT_EQ(g["classification"]["shape"], json::array({rows, 2}));
  {
    const std::vector<float> p0 = OutputData(rest_json, "probabilities");
    const int64_t best = std::max_element(p0.begin(), p0.begin() + 5) - p0.begin();
    const std::string top = g["classification"]["data"][0];
    const std::vector<std::string> names = {"zero", "one", "two", "three", "four"};
    EXPECT_EQ(top.substr(top.find(':')), ":" + std::to_string(best) + ":" + names[best]) << top;
  }
  EXPECT_EQ(g["bad_token"]["code"], "UNAUTHENTICATED") << g["bad_token"];
  EXPECT_EQ(g["no_token"]["code"], "UNAUTHENTICATED") << g["no_token"];
  EXPECT_EQ(g["unknown_model"]["code"], "NOT_FOUND") << g["unknown_model"];
  EXPECT_NE(g["unknown_model"]["message"].get<std::string>().find("no_such_model"), std::string::npos)
      << g["unknown_model"];
  EXPECT_EQ(g["unknown_model_ready"]["code"], "NOT_FOUND") << g["unknown_model_ready"];
  EXPECT_EQ(g["wrong_shape"]["code"], "INVALID_ARGUMENT") << g["wrong_shape"];
  EXPECT_FALSE(g["wrong_shape"]["message"].get<std::string>().empty());

  // Both protocols in the per-stage histograms; gRPC calls counted by code.
  const std::string m = h.server->metrics().Render();
  for (const char* p : {"rest", "grpc"})
    for (const char* s : {"read", "parse", "queue", "compute", "encode", "write"}) {
      const std::string series = fmt::format(
          "polis_inference_stage_seconds_count{{protocol=\"{}\",stage=\"{}\"}} ", p, s);
      const size_t at = m.find(series);
      ASSERT_NE(at, std::string::npos) << series;
      const long n = std::stol(m.substr(at + series.size()));
      EXPECT_EQ(n, std::string(p) == "rest" ? 1 : 3) << series;
    }
  EXPECT_NE(m.find("polis_grpc_requests_total{rpc=\"ModelInfer\",code=\"OK\"} 3"), std::string::npos) << m;
  EXPECT_NE(m.find("polis_grpc_requests_total{rpc=\"ModelInfer\",code=\"UNAUTHENTICATED\"} 2"),
            std::string::npos);
}

TEST(GrpcTest, PortInUseIsRefusedNamingTheAddress) {
  TempDir dir;
  ServerOptions o;
  o.grpc_port = 0;
  ServerHarness first(dir.path(), o);
  ServerOptions again;
  again.root = dir.path();
  again.port = 0;
  again.grpc_port = first.server->grpc_port();
  RegistryServer second(again);
  Status st = second.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(std::to_string(again.grpc_port)), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace polis::registry
