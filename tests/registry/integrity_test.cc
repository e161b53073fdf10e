// What the registry makes reachable is always a model that verifies: a
// non-finite model (weights or metrics NaN or infinite) and a version whose
// bytes fail their checksum are never published, promoted, rolled back to,
// downloaded or served, whichever door is tried (HTTP, the polis-registry
// CLI, polisctl --root), and every refusal names the file or the tensor.
#include <chrono>
#include <fstream>
#include <limits>
#include <thread>

#include "registry/aliases.h"
#include "registry/store.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

const std::vector<std::pair<std::string, std::string>> kOps = {
    {"Authorization", "Bearer ops-token-123"}};

class IntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    for (int v = 1; v <= 3; ++v)
      ASSERT_EQ(Publish(root_, "tiny", MakeArtifact(kTinyCnn, kTinyInput, v)), v);
    ASSERT_TRUE(SetAlias(root_, "tiny", "production", 1, Actor{"t", ""}).ok());
    tokens_ = dir_.path() + "/tokens.json";
    ASSERT_TRUE(WriteFileAtomic(tokens_, R"({"tokens": [{"name": "ops", "token": "ops-token-123",
                                             "scopes": ["admin"]}]})").ok());
  }
  ServerOptions Options() const {
    ServerOptions o;
    o.tokens_file = tokens_;
    return o;
  }
  std::string Artifact(int v) const { return fmt::format("{}/tiny/{}/model.polis", root_, v); }

  // A NaN model whose checksum trailer and metadata.json were recomputed to
  // match: only the values are wrong (element 17 of the dense layer's weights).
  ModelArtifact NanArtifact() const {
    ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 9);
    const auto& t = a.header.tensor(2);  // the dense layer's weights
    EXPECT_NE(t.name().find("weights"), std::string::npos) << t.name();
    a.weights[t.offset() + 17] = std::numeric_limits<float>::quiet_NaN();
    return a;
  }
  void ReplaceWithNan(int v) const {
    const std::string bytes = EncodeArtifact(NanArtifact());
    ASSERT_TRUE(WriteFileAtomic(Artifact(v), bytes).ok());
    const std::string meta_path = fmt::format("{}/tiny/{}/metadata.json", root_, v);
    json meta = json::parse(*ReadFile(meta_path));
    meta["sha256"] = ArtifactSha256(bytes);
    ASSERT_TRUE(WriteFileAtomic(meta_path, meta.dump(2)).ok());
  }
  void FlipByte(int v) const {
    std::fstream f(Artifact(v), std::ios::binary | std::ios::in | std::ios::out);
    f.seekg(200);
    const char c = static_cast<char>(f.get());
    f.seekp(200);
    f.put(static_cast<char>(c ^ 0x10));
  }
  std::string TensorName() const { return NanArtifact().header.tensor(2).name(); }

  TempDir dir_;
  std::string root_, tokens_;
};

TEST_F(IntegrityTest, NonFiniteUploadIsRefusedWith400NamingTheTensor) {
  ServerHarness h(root_, Options());
  HttpClient c = h.Client();
  auto headers = kOps;
  headers.emplace_back("Content-Type", "application/octet-stream");
  auto r = c.Request("POST", "/v2/registry/models/tiny/versions?alias=production",
                     EncodeArtifact(NanArtifact()), headers);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find(fmt::format("tensor '{}' element 17 is nan", TensorName())),
            std::string::npos)
      << r->body;
  EXPECT_EQ(*ListVersions(root_, "tiny"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.at("production"), 1);
  // Nothing half-written is left in the model directory.
  for (const auto& e : std::filesystem::directory_iterator(root_ + "/tiny"))
    EXPECT_EQ(e.path().filename().string().find(".staging"), std::string::npos) << e.path();
}

TEST_F(IntegrityTest, NonFiniteVersionOnDiskIsNeverVerifiedPromotedOrServed) {
  ReplaceWithNan(3);  // the latest
  const std::string why = fmt::format("tensor '{}' element 17 is nan", TensorName());
  // verify: library and CLI.
  auto v = VerifyVersion(root_, "tiny", 3);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find(why), std::string::npos) << v.status().message();
  auto cli = Sh(fmt::format("{} verify --root {} tiny 3", kRegistryBin, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find(why), std::string::npos) << cli.err;
  // promote: polis-registry and polisctl --root.
  cli = Sh(fmt::format("{} promote --root {} tiny production 3", kRegistryBin, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find(why), std::string::npos) << cli.err;
  cli = Sh(fmt::format("{} models --root {} promote tiny staging 3", kPolisctl, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find(why), std::string::npos) << cli.err;
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.size(), 1u);

  ServerHarness h(root_, Options());
  HttpClient c = h.Client();
  auto r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", R"({"version": 3})", kOps);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find(why), std::string::npos) << r.body;
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.at("production"), 1);
  // Never served: not ready, with the reason; infer is refused, not 200 with nulls.
  r = Call(c, "GET", "/v2/models/tiny/versions/3/ready");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find(why), std::string::npos) << r.body;
  const std::string body = InferBody(Pattern(64, 1), 1, kTinyInput).dump();
  for (const char* route : {"/v2/models/tiny/versions/3/infer", "/v2/models/tiny/versions/latest/infer"}) {
    r = Call(c, "POST", route, body);
    EXPECT_EQ(r.status, 503) << route << ": " << r.body;
    EXPECT_NE(r.body.find(why), std::string::npos) << r.body;
  }
  r = Call(c, "GET", "/v2/registry/models/tiny/versions/3/artifact");
  EXPECT_EQ(r.status, 500) << r.body.substr(0, 200);
  EXPECT_NE(r.body.find(why), std::string::npos) << r.body.substr(0, 200);
  // The production alias still serves version 1.
  EXPECT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/infer", body))["model_version"], "1");
}

TEST_F(IntegrityTest, NonFiniteDefaultVersionLeavesTheModelNotReady) {
  ReplaceWithNan(3);
  ASSERT_TRUE(RemoveAlias(root_, "tiny", "production", Actor{"t", ""}).ok());
  ServerHarness h(root_, Options());
  HttpClient c = h.Client();
  auto r = Call(c, "GET", "/v2/health/ready");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("element 17 is nan"), std::string::npos) << r.body;
  r = Call(c, "POST", "/v2/models/tiny/infer", InferBody(Pattern(64, 1), 1, kTinyInput).dump());
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("element 17 is nan"), std::string::npos) << r.body;
}

// The reported case: version 3 is loaded (it is the latest), then one byte of
// its file flips. Promoting it used to answer 200 from the copy in memory,
// and a restart then left production unservable.
TEST_F(IntegrityTest, CorruptVersionIsNeverMadeReachable) {
  ASSERT_TRUE(SetAlias(root_, "tiny", "staging", 2, Actor{"t", ""}).ok());
  ASSERT_TRUE(SetAlias(root_, "tiny", "staging", 3, Actor{"t", ""}).ok());
  auto h = std::make_unique<ServerHarness>(root_, Options());
  HttpClient c = h->Client();
  const std::string body = InferBody(Pattern(64, 1), 1, kTinyInput).dump();
  ASSERT_EQ(ParseJson(Call(c, "POST", "/v2/models/tiny/versions/3/infer", body))["model_version"], "3");
  FlipByte(3);
  const std::string file = "tiny/3/model.polis";

  auto r = Call(c, "PUT", "/v2/registry/models/tiny/aliases/production", R"({"version": 3})", kOps);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find(file), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("checksum mismatch"), std::string::npos) << r.body;
  // Rollback to a damaged version: staging 3 -> 2 is fine, then 2 is damaged.
  FlipByte(2);
  r = Call(c, "POST", "/v2/registry/models/tiny/aliases/staging/rollback", "{}", kOps);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("tiny/2/model.polis"), std::string::npos) << r.body;
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.at("staging"), 3);
  // The CLIs refuse the same, naming the file.
  auto cli = Sh(fmt::format("{} rollback --root {} tiny staging", kRegistryBin, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find("tiny/2/model.polis"), std::string::npos) << cli.err;
  cli = Sh(fmt::format("{} promote --root {} tiny production 3", kRegistryBin, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find(file), std::string::npos) << cli.err;
  cli = Sh(fmt::format("{} models --root {} rollback tiny staging", kPolisctl, root_));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find("tiny/2/model.polis"), std::string::npos) << cli.err;
  // Downloads never carry the damaged bytes.
  r = Call(c, "GET", "/v2/registry/models/tiny/versions/3/artifact");
  EXPECT_EQ(r.status, 500) << r.body.substr(0, 200);
  EXPECT_NE(r.body.find(file), std::string::npos) << r.body.substr(0, 200);
  EXPECT_EQ(r.Header("X-Polis-Sha256"), "");
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.at("production"), 1);

  // After a restart production still serves 1 and the server is ready.
  h.reset();
  h = std::make_unique<ServerHarness>(root_, Options());
  HttpClient c2 = h->Client();
  r = Call(c2, "POST", "/v2/models/tiny/infer", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseJson(r)["model_version"], "1");
  // staging names the damaged 3 (it was set before the damage): not served,
  // and the reason names the file.
  r = Call(c2, "GET", "/v2/models/tiny/versions/staging/ready");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find(file), std::string::npos) << r.body;
}

}  // namespace
}  // namespace polis::registry
