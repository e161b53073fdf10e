// Serving precision: a model's config.json (or `serve --precision`) asks for
// bf16; the server then runs Conv2D and Dense layers in bfloat16 where
// oneDNN has a fast kernel, says so in the metadata, and answers within
// bf16's rounding of the fp32 answers. On a CPU without AVX512_BF16 the
// setting is refused with one line naming the file (the first test checks
// that branch there, or under POLIS_TEST_NO_BF16=1).
#include <cmath>
#include <cstdlib>

#include "registry/served_version.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

// A first convolution on one channel (stays fp32: bf16 pairs input
// channels), a second on eight (bf16), and a dense layer (bf16).
constexpr char kTwoConvCnn[] = R"(
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 8 kernel_size: 3 } }
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 16 kernel_size: 3 } }
  layer { type: "Flatten" }
  layer { type: "Dense" dense_param { units: 5 } }
)";

double RelativeL2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(PrecisionTest, ConfigJsonServesInBf16WithinItsRounding) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTwoConvCnn, kTinyInput, 11);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/m/config.json", R"({"precision": "bf16"})").ok());
  ServerHarness h(dir.path(), ServerOptions{});
  HttpClient c = h.Client();
  auto meta = c.Get("/v2/models/m");
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  if (!CpuHasBf16()) {
    // As for any bad config.json: served with the defaults (fp32), and the
    // registry's listing says why, naming the file.
    ASSERT_EQ(meta->status, 200) << meta->body;
    EXPECT_EQ(json::parse(meta->body)["parameters"]["precision"], "fp32");
    const std::string listing = c.Get("/v2/registry/models")->body;
    EXPECT_NE(listing.find("needs a CPU with AVX512_BF16"), std::string::npos) << listing;
    EXPECT_NE(listing.find("config.json"), std::string::npos) << listing;
    return;
  }
  ASSERT_EQ(meta->status, 200) << meta->body;
  const json params = json::parse(meta->body)["parameters"];
  EXPECT_EQ(params["precision"], "bf16");
  // Layer 0 has one input channel and stays fp32; the second convolution
  // and the dense layer compute in bf16.
  EXPECT_EQ(params["bf16_layers"], json::array({1, 3})) << params.dump();

  int differ = 0;
  for (int i = 0; i < 16; ++i) {
    const auto x = Pattern(64, i);
    auto r = c.Request("POST", "/v2/models/m/infer", InferBody(x, 1, kTinyInput).dump());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 200) << r->body;
    const auto logits = OutputData(json::parse(r->body), "logits");
    const auto ref = ReferenceLogits(a, x);  // fp32
    ASSERT_EQ(logits.size(), ref.size());
    // bf16 keeps 8 significant bits of each input and weight; oneDNN sums
    // in fp32: a few tenths of a percent, never more than 2%.
    EXPECT_LT(RelativeL2(logits, ref), 2e-2) << "row " << i;
    for (size_t k = 0; k < ref.size(); ++k) differ += logits[k] != ref[k];
  }
  EXPECT_GT(differ, 0) << "every answer equals fp32's bit for bit: bf16 did not run";
}

// LSTM layers serve in bf16 too (inputs, outputs, weights and the hidden
// state in bf16), within bf16's rounding of fp32 over every step of the
// sequence. A GRU stays fp32 where oneDNN's bf16 GRU is a reference kernel
// (Debian's oneDNN 2.6), and its model still serves correctly.
TEST(PrecisionTest, RecurrentLayersServeInBf16) {
  if (!CpuHasBf16()) {
    // Covered by the refusal in ConfigJsonServesInBf16WithinItsRounding.
    EXPECT_FALSE(ValidateBatchingOptions(BatchingOptions{.precision = "bf16"}, "x").ok());
    return;
  }
  const nn::Shape seq = {24, 6};
  for (const char* layers : {
           R"(layer { type: "LSTM" recurrent_param { hidden_size: 32 } }
              layer { type: "Dense" dense_param { units: 3 } })",
           R"(layer { type: "GRU" recurrent_param { hidden_size: 32 num_layers: 2 } }
              layer { type: "Dense" dense_param { units: 3 } })",
           R"(layer { type: "LSTM" recurrent_param { hidden_size: 32 return_sequences: true } }
              layer { type: "Flatten" }
              layer { type: "Dense" dense_param { units: 3 } })",
           R"(layer { type: "LSTM" recurrent_param { hidden_size: 16 num_layers: 3 } }
              layer { type: "Dense" dense_param { units: 3 } })"}) {
    SCOPED_TRACE(layers);
    const ModelArtifact a = MakeArtifact(layers, seq, 21);
    BatchingOptions o;
    o.precision = "bf16";
    auto sv = ServedVersion::FromArtifact("m", 1, a, "sha", o, nullptr);
    ASSERT_TRUE(sv.ok()) << sv.status().ToString();
    ASSERT_FALSE((*sv)->bf16_layers().empty());
    if (std::string(layers).find("LSTM") != std::string::npos)
      EXPECT_EQ((*sv)->bf16_layers().front(), 0) << "the LSTM computes in fp32";
    int differ = 0;
    for (int i = 0; i < 4; ++i) {
      const auto x = Pattern(24 * 6, i);
      InferOutcome out = (*sv)->InferSync(x, 1);
      ASSERT_TRUE(out.status.ok()) << out.status.ToString();
      const auto ref = ReferenceLogits(a, x);
      EXPECT_LT(RelativeL2(out.logits, ref), 2e-2) << "row " << i;
      differ += out.logits != ref;
    }
    EXPECT_GT(differ, 0);
  }
}

TEST(PrecisionTest, Fp32IsTheDefaultAndMatchesTheReferenceExactly) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTwoConvCnn, kTinyInput, 12);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ServerHarness h(dir.path(), ServerOptions{});
  HttpClient c = h.Client();
  const json params = json::parse(c.Get("/v2/models/m")->body)["parameters"];
  EXPECT_EQ(params["precision"], "fp32");
  EXPECT_EQ(params["bf16_layers"], json::array());
  const auto x = Pattern(64, 3);
  auto r = c.Request("POST", "/v2/models/m/infer", InferBody(x, 1, kTinyInput).dump());
  ASSERT_TRUE(r.ok() && r->status == 200);
  EXPECT_EQ(OutputData(json::parse(r->body), "logits"), ReferenceLogits(a, x));
}

// Served recurrent layers prepare their weights once (frozen) and answer
// exactly what a fresh network that prepares them every pass answers.
TEST(PrecisionTest, FrozenRecurrentLayersAnswerAsUnfrozenOnes) {
  for (const char* layers : {
           R"(layer { type: "LSTM" recurrent_param { hidden_size: 16 num_layers: 2 } }
              layer { type: "Dense" dense_param { units: 3 } })",
           R"(layer { type: "GRU" recurrent_param { hidden_size: 16 num_layers: 2 } }
              layer { type: "Dense" dense_param { units: 3 } })"}) {
    SCOPED_TRACE(layers);
    const ModelArtifact a = MakeArtifact(layers, {10, 4}, 31);
    auto sv = ServedVersion::FromArtifact("m", 1, a, "sha", BatchingOptions{}, nullptr);
    ASSERT_TRUE(sv.ok()) << sv.status().ToString();
    for (int i = 0; i < 3; ++i) {
      const auto x = Pattern(40, i);
      InferOutcome out = (*sv)->InferSync(x, 1);
      ASSERT_TRUE(out.status.ok()) << out.status.ToString();
      EXPECT_EQ(out.logits, ReferenceLogits(a, x)) << "row " << i;
    }
  }
}

TEST(PrecisionTest, BadPrecisionSettingsAreRefusedWithOneLine) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/m");
  const std::string path = dir.path() + "/m/config.json";
  ASSERT_TRUE(WriteFileAtomic(path, R"({"precision": "fp16"})").ok());
  auto r = ReadModelConfig(dir.path(), "m", BatchingOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("\"fp16\""), std::string::npos) << r.status().ToString();

  ASSERT_TRUE(WriteFileAtomic(path, R"({"precision": 16})").ok());
  r = ReadModelConfig(dir.path(), "m", BatchingOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'precision' must be \"fp32\" or \"bf16\""), std::string::npos)
      << r.status().ToString();

  // A CPU without AVX512_BF16 (as the variable makes this one look).
  ScopedEnv no_bf16("POLIS_TEST_NO_BF16", "1");
  ASSERT_FALSE(CpuHasBf16());
  ASSERT_TRUE(WriteFileAtomic(path, R"({"precision": "bf16", "max_batch_size": 4})").ok());
  r = ReadModelConfig(dir.path(), "m", BatchingOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs a CPU with AVX512_BF16"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
  BatchingOptions o;
  o.precision = "bf16";
  const Status st = ValidateBatchingOptions(o, "--precision");
  EXPECT_NE(st.message().find("--precision: precision \"bf16\" needs a CPU"), std::string::npos)
      << st.ToString();
}

// polisctl's local predict (--root) runs the model in its config.json
// precision, so that it answers what the server answers.
TEST(PrecisionTest, PolisctlOnTheRootAnswersAsTheServer) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTwoConvCnn, kTinyInput, 13);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/m/config.json", R"({"precision": "bf16"})").ok());
  const std::vector<float> x = Pattern(64, 5);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/x.json", json(x).dump()).ok());
  const CtlRun local = Sh(kPolisctl + " models --root " + dir.path() + " predict m --json --input-json " +
                          dir.path() + "/x.json");
  if (!CpuHasBf16()) {
    EXPECT_NE(local.exit_code, 0);
    EXPECT_NE(local.err.find("needs a CPU with AVX512_BF16"), std::string::npos) << local.err;
    return;
  }
  ASSERT_EQ(local.exit_code, 0) << local.err;
  std::vector<float> on_root;
  const json answer = Json(local);
  for (const auto& o : answer["outputs"])
    if (o["name"] == "probabilities") on_root = o["data"].get<std::vector<float>>();

  ServerHarness h(dir.path(), ServerOptions{});
  HttpClient c = h.Client();
  auto r = c.Request("POST", "/v2/models/m/infer", InferBody(x, 1, kTinyInput).dump());
  ASSERT_TRUE(r.ok() && r->status == 200);
  const json body = json::parse(r->body);
  const auto served = OutputData(body, "probabilities");
  ASSERT_EQ(on_root.size(), served.size()) << answer.dump();
  for (size_t k = 0; k < served.size(); ++k) EXPECT_NEAR(on_root[k], served[k], 1e-6) << k;
  EXPECT_NE(OutputData(body, "logits"), ReferenceLogits(a, x)) << "the server answered in fp32";
}

// A bad config.json is said in the server's log (as well as in the
// registry's listing), and the model is served with the defaults.
TEST(PrecisionTest, ABadConfigIsLoggedAtStart) {
  TempDir dir;
  ASSERT_EQ(Publish(dir.path(), "m", MakeArtifact(kTinyCnn, kTinyInput, 3)), 1);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/m/config.json", R"({"precision": "fp8"})").ok());
  const CtlRun run = Sh("timeout 3 " + kRegistryBin + " serve --root " + dir.path() +
                        " --listen 127.0.0.1:0");
  EXPECT_NE(run.err.find("WARN model 'm': " + dir.path() +
                         "/m/config.json: precision must be \"fp32\" or \"bf16\", got \"fp8\""),
            std::string::npos)
      << run.err;
}

// `polis-registry serve --precision` refuses what it does not know, and
// bf16 where the CPU lacks it, before anything loads.
TEST(PrecisionTest, ServeRefusesAnUnknownPrecision) {
  TempDir dir;
  const CtlRun run = Sh(kRegistryBin + " serve --root " + dir.path() +
                        " --listen 127.0.0.1:0 --precision fp16");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find("--precision"), std::string::npos) << run.err;
  // bf16 on a CPU without AVX512_BF16 (as the variable makes this one look).
  const CtlRun no_bf16 = Sh("POLIS_TEST_NO_BF16=1 " + kRegistryBin + " serve --root " + dir.path() +
                            " --listen 127.0.0.1:0 --precision bf16");
  EXPECT_EQ(no_bf16.exit_code, 1);
  EXPECT_NE(no_bf16.err.find("precision \"bf16\" needs a CPU with AVX512_BF16"), std::string::npos)
      << no_bf16.err;
}

}  // namespace
}  // namespace polis::registry
