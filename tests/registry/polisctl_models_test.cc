// `polisctl models` as an operator runs it: the built binary against a
// polis-registry child process (port 0, a token file) and against a root
// directory; tables, --json, tokens, exit codes, and predictions that match
// the network's own forward pass.
#include <signal.h>
#include "tests/prereq.h"
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "registry/aliases.h"
#include "registry/store.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

// A raw IDX file of `n` 8x8 images with pixel (i, p) = (i * 31 + p * 7) % 256.
std::string WriteIdx(const std::string& path, int n) {
  std::string bytes = {0, 0, 8, 3};
  for (uint32_t d : {static_cast<uint32_t>(n), 8u, 8u})
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xff));
  for (int i = 0; i < n; ++i)
    for (int p = 0; p < 64; ++p) bytes.push_back(static_cast<char>((i * 31 + p * 7) % 256));
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::vector<float> Image(int i, float scale) {
  std::vector<float> x(64);
  for (int p = 0; p < 64; ++p) x[p] = static_cast<float>((i * 31 + p * 7) % 256) * scale;
  return x;
}

std::vector<double> SoftmaxOf(const std::vector<float>& z) {
  double mx = *std::max_element(z.begin(), z.end()), sum = 0;
  std::vector<double> p(z.size());
  for (size_t i = 0; i < z.size(); ++i) sum += p[i] = std::exp(z[i] - mx);
  for (double& v : p) v /= sum;
  return p;
}

class PolisctlModels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PathExists(kPolisctl)) POLIS_MISSING_PREREQ() << kPolisctl << " is not built";
    root_ = dir_.path() + "/root";
    a1_ = MakeArtifact(kTinyCnn, kTinyInput, 1);
    a2_ = MakeArtifact(kTinyCnn, kTinyInput, 2);
    ASSERT_EQ(Publish(root_, "tiny", a1_), 1);
    ASSERT_EQ(Publish(root_, "tiny", a2_), 2);
    std::ofstream(dir_.path() + "/admin.token") << "admin-secret\n";
    std::ofstream(dir_.path() + "/reader.token") << "read-only\n";
    std::ofstream(dir_.path() + "/tokens.json") << json{
        {"tokens", {{{"name", "ops"}, {"token", "admin-secret"}, {"scopes", {"admin"}}},
                    {{"name", "viewer"}, {"token", "read-only"}, {"scopes", {"read"}}}}}}.dump();
    idx_ = WriteIdx(dir_.path() + "/images.idx", 3);
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }

  void StartServer() {
    ASSERT_TRUE(PathExists(kRegistryBin)) << kRegistryBin << " is not built";
    const std::string port_file = dir_.path() + "/port";
    const std::string tokens = dir_.path() + "/tokens.json";
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      execl(kRegistryBin.c_str(), kRegistryBin.c_str(), "serve", "--root", root_.c_str(), "--listen",
            "127.0.0.1:0", "--port-file", port_file.c_str(), "--tokens", tokens.c_str(), "--poll-ms", "50",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    int port = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && port == 0) {
      auto text = ReadFile(port_file);
      if (text.ok()) port = std::atoi(text->c_str());
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_GT(port, 0) << "polis-registry serve did not write its port";
    url_ = "http://127.0.0.1:" + std::to_string(port);
  }

  // polisctl models <args> against the server (http) or the root.
  CtlRun Ctl(const std::string& where, const std::string& args) {
    return Sh(kPolisctl + " models " + where + " " + args);
  }
  std::string Http() { return "--registry " + url_; }
  std::string Root() { return "--root " + root_; }
  std::string Admin() { return "--token-file " + dir_.path() + "/admin.token"; }

  TempDir dir_;
  std::string root_, url_, idx_;
  ModelArtifact a1_, a2_;
  pid_t pid_ = -1;
};

// list, show, versions in both modes: the same facts, tables for people.
TEST_F(PolisctlModels, ReadsOverHttpAndOnRootAgree) {
  StartServer();
  for (const std::string& where : {Http(), Root()}) {
    SCOPED_TRACE(where);
    auto list = Ctl(where, "list --json");
    ASSERT_EQ(list.exit_code, 0) << list.err;
    json l = Json(list);
    ASSERT_EQ(l["models"].size(), 1u) << l.dump();
    EXPECT_EQ(l["models"][0]["name"], "tiny");
    EXPECT_EQ(l["models"][0]["versions"], json::array({1, 2}));
    EXPECT_EQ(l["models"][0]["default_version"], 2);
    auto table = Ctl(where, "list");
    ASSERT_EQ(table.exit_code, 0) << table.err;
    EXPECT_NE(table.out.find("MODEL"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("tiny"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("1,2"), std::string::npos) << table.out;

    auto show = Ctl(where, "show tiny 1 --json");
    ASSERT_EQ(show.exit_code, 0) << show.err;
    json s = Json(show);
    EXPECT_EQ(s["version"], 1);
    EXPECT_EQ(s["sha256"], ReadMetadata(root_, "tiny", 1)->at("sha256"));
    auto latest = Ctl(where, "show tiny");
    ASSERT_EQ(latest.exit_code, 0) << latest.err;
    EXPECT_NE(latest.out.find("version:"), std::string::npos) << latest.out;
    EXPECT_NE(latest.out.find(ReadMetadata(root_, "tiny", 2)->at("sha256").get<std::string>()),
              std::string::npos)
        << latest.out;

    auto versions = Ctl(where, "versions tiny");
    ASSERT_EQ(versions.exit_code, 0) << versions.err;
    EXPECT_EQ(std::count(versions.out.begin(), versions.out.end(), '\n'), 3) << versions.out;
    EXPECT_NE(versions.out.find("SHA256"), std::string::npos) << versions.out;
    auto vj = Json(Ctl(where, "versions tiny --json"));
    EXPECT_EQ(vj["versions"].size(), 2u);

    auto unknown = Ctl(where, "show nosuch");
    EXPECT_EQ(unknown.exit_code, 1);
    EXPECT_NE(unknown.err.find("nosuch"), std::string::npos) << unknown.err;
  }
}

TEST_F(PolisctlModels, WritesOverHttpNeedAnAdminToken) {
  StartServer();
  auto none = Ctl(Http(), "promote tiny production 1");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("HTTP 401"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find(url_), std::string::npos) << none.err;
  auto reader = Ctl(Http(), "promote tiny production 1 --token-file " + dir_.path() + "/reader.token");
  EXPECT_EQ(reader.exit_code, 1);
  EXPECT_NE(reader.err.find("HTTP 403"), std::string::npos) << reader.err;
  EXPECT_TRUE(ReadAliases(root_, "tiny")->aliases.empty());

  auto p1 = Ctl(Http(), "promote tiny production 1 --why first " + Admin());
  ASSERT_EQ(p1.exit_code, 0) << p1.err;
  EXPECT_NE(p1.out.find("production=1"), std::string::npos) << p1.out;
  // The token from the environment works too.
  auto p2 = Sh("POLIS_REGISTRY_TOKEN=admin-secret " + kPolisctl + " models " + Http() +
               " promote tiny production 2 --json --why second");
  ASSERT_EQ(p2.exit_code, 0) << p2.err;
  EXPECT_EQ(Json(p2)["aliases"]["production"], 2);
  auto rb = Ctl(Http(), "rollback tiny production --why oops " + Admin());
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.at("production"), 1);

  auto history = Ctl(Http(), "history tiny");
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_NE(history.out.find("rollback"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("ops"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("oops"), std::string::npos) << history.out;
  auto hj = Json(Ctl(Http(), "history tiny --json"));
  ASSERT_EQ(hj["history"].size(), 3u) << hj.dump();
  EXPECT_EQ(hj["history"][2]["action"], "rollback");
  EXPECT_EQ(hj["history"][2]["who"], "ops");

  // Deleting an aliased version is refused (exit 1, the reason), --force removes the alias.
  auto refused = Ctl(Http(), "delete tiny 1 " + Admin());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("HTTP 409"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("production"), std::string::npos) << refused.err;
  auto forced = Ctl(Http(), "delete tiny 1 --force --why retire " + Admin());
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_EQ(*ListVersions(root_, "tiny"), std::vector<int64_t>({2}));
}

TEST_F(PolisctlModels, WritesOnARootGoThroughTheAliasFile) {
  auto p = Ctl(Root(), "promote tiny staging 2 --why try --who alice");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  auto p1 = Ctl(Root(), "promote tiny staging 1 --who alice");
  ASSERT_EQ(p1.exit_code, 0) << p1.err;
  auto rb = Ctl(Root(), "rollback tiny staging --json --who bob --why back");
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_EQ(Json(rb)["version"], 2);
  auto table = ReadAliases(root_, "tiny");
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->aliases.at("staging"), 2);
  EXPECT_EQ(table->history.back().who, "bob");
  EXPECT_EQ(table->history.back().why, "back");
  // A version that does not exist, or one whose artifact is damaged, is not promoted.
  auto missing = Ctl(Root(), "promote tiny staging 9");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no version 9"), std::string::npos) << missing.err;
  {
    std::fstream f(root_ + "/tiny/1/model.polis", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(200);
    f.put('\x55');
  }
  auto damaged = Ctl(Root(), "promote tiny production 1");
  EXPECT_EQ(damaged.exit_code, 1);
  EXPECT_NE(damaged.err.find("fails verification"), std::string::npos) << damaged.err;
  EXPECT_EQ(ReadAliases(root_, "tiny")->aliases.count("production"), 0u);
  auto refused = Ctl(Root(), "delete tiny 2");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("staging"), std::string::npos) << refused.err;
  auto del = Ctl(Root(), "delete tiny 1 --json");
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(Json(del)["deleted"], 1);
  auto history = Ctl(Root(), "history tiny");
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_NE(history.out.find("delete-version"), std::string::npos) << history.out;
}

// One damaged aliases.json used to break `list` for every model, and a
// publish during the damage lost its history entry.
TEST_F(PolisctlModels, ADamagedAliasesFileAffectsOnlyItsModel) {
  ASSERT_EQ(Publish(root_, "other", MakeArtifact(kTinyCnn, kTinyInput, 5)), 1);
  ASSERT_TRUE(SetAlias(root_, "other", "production", 1, Actor{"t", ""}).ok());
  ASSERT_TRUE(SetAlias(root_, "tiny", "production", 1, Actor{"t", ""}).ok());
  const std::string damaged_path = root_ + "/tiny/aliases.json";
  std::string text = *ReadFile(damaged_path);
  const std::string damaged = text.substr(0, text.size() / 2);  // torn
  ASSERT_TRUE(WriteFileAtomic(damaged_path, damaged).ok());

  auto list = Ctl(Root(), "list --json");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  json models = Json(list)["models"];
  ASSERT_EQ(models.size(), 2u) << models.dump();
  EXPECT_EQ(models[0]["name"], "other");
  EXPECT_EQ(models[0]["aliases"]["production"], 1);
  EXPECT_FALSE(models[0].contains("error"));
  EXPECT_EQ(models[1]["name"], "tiny");
  EXPECT_EQ(models[1]["versions"], json({1, 2}));
  EXPECT_NE(models[1].value("error", "").find("tiny/aliases.json"), std::string::npos) << models[1].dump();
  auto table = Ctl(Root(), "list");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("other"), std::string::npos) << table.out;
  EXPECT_NE(table.err.find("model 'tiny'"), std::string::npos) << table.err;
  EXPECT_NE(table.err.find("byte offset"), std::string::npos) << table.err;

  // Over HTTP: the other model is served, listed and published to as usual;
  // a publish to the damaged one is refused, naming the file and the offset,
  // and nothing is written (no version, the damaged file untouched).
  StartServer();
  auto http_list = Ctl(Http(), "list --json");
  ASSERT_EQ(http_list.exit_code, 0) << http_list.err;
  EXPECT_EQ(Json(http_list)["models"].size(), 2u);
  HttpClient c("127.0.0.1", std::stoi(url_.substr(url_.rfind(':') + 1)), 20000);
  const std::vector<std::pair<std::string, std::string>> ops = {
      {"Authorization", "Bearer admin-secret"}, {"Content-Type", "application/octet-stream"}};
  const std::string bytes = EncodeArtifact(MakeArtifact(kTinyCnn, kTinyInput, 6));
  auto r = c.Request("POST", "/v2/registry/models/tiny/versions?why=nightly", bytes, ops);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_NE(r->body.find("tiny/aliases.json"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("byte offset"), std::string::npos) << r->body;
  EXPECT_EQ(*ListVersions(root_, "tiny"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*ReadFile(damaged_path), damaged);
  r = c.Request("POST", "/v2/registry/models/other/versions?why=nightly", bytes, ops);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 201) << r->body;
  auto history = ReadAliases(root_, "other");
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->history.back().action, "publish");
  EXPECT_EQ(history->history.back().to, 2);
}

TEST_F(PolisctlModels, PredictMatchesTheNetworkInBothModes) {
  StartServer();
  const float scale = 1.0f / 255;
  const std::vector<double> want = SoftmaxOf(ReferenceLogits(a2_, Image(1, scale)));
  std::vector<std::vector<double>> got;
  for (const std::string& where : {Http(), Root()}) {
    SCOPED_TRACE(where);
    auto r = Ctl(where, "predict tiny --idx " + idx_ + " --index 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = Json(r);
    EXPECT_EQ(j["model_version"], "2");
    std::vector<double> probs;
    for (const auto& o : j["outputs"])
      if (o["name"] == "probabilities") probs = o["data"].get<std::vector<double>>();
    ASSERT_EQ(probs.size(), want.size()) << j.dump();
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(probs[i], want[i], 1e-5) << i;
    got.push_back(probs);

    auto human = Ctl(where, "predict tiny 1 --idx " + idx_ + " --index 2 --top 3");
    ASSERT_EQ(human.exit_code, 0) << human.err;
    EXPECT_NE(human.out.find("model tiny version 1"), std::string::npos) << human.out;
    EXPECT_NE(human.out.find("PROBABILITY"), std::string::npos) << human.out;
    EXPECT_EQ(std::count(human.out.begin(), human.out.end(), '\n'), 5) << human.out;

    // An array of numbers is one FP32 row, already preprocessed.
    const std::vector<float> x = Pattern(64, 3);
    std::ofstream(dir_.path() + "/x.json") << json(x).dump();
    auto fp = Ctl(where, "predict tiny 1 --json --input-json " + dir_.path() + "/x.json");
    ASSERT_EQ(fp.exit_code, 0) << fp.err;
    const std::vector<double> want1 = SoftmaxOf(ReferenceLogits(a1_, x));
    json jf = Json(fp);
    for (const auto& o : jf["outputs"])
      if (o["name"] == "probabilities")
        for (size_t i = 0; i < want1.size(); ++i) EXPECT_NEAR(o["data"][i].get<double>(), want1[i], 1e-5);

    auto out_of_range = Ctl(where, "predict tiny --idx " + idx_ + " --index 3");
    EXPECT_EQ(out_of_range.exit_code, 1);
    EXPECT_NE(out_of_range.err.find("out of range"), std::string::npos) << out_of_range.err;
  }
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < got[0].size(); ++i) EXPECT_NEAR(got[0][i], got[1][i], 1e-6);
}

// show renders the model card for people (classes, descriptions, training
// data, privacy) and --json prints the server's card unchanged; predict
// names the class beside its index.
TEST_F(PolisctlModels, ShowPrintsTheModelCardAndPredictNamesClasses) {
  ASSERT_EQ(Publish(root_, "named", NamedClassifier(false)), 1);
  ASSERT_EQ(Publish(root_, "named", NamedClassifier(true)), 2);
  StartServer();
  HttpClient c("127.0.0.1", std::stoi(url_.substr(url_.rfind(':') + 1)), 20000);
  for (const int v : {1, 2}) {
    auto served = Call(c, "GET", fmt::format("/v2/models/named/versions/{}/card", v));
    ASSERT_EQ(served.status, 200) << served.body;
    const json card = ParseJson(served);
    for (const std::string& where : {Http(), Root()}) {
      SCOPED_TRACE(where + " version " + std::to_string(v));
      auto j = Ctl(where, fmt::format("show named {} --json", v));
      ASSERT_EQ(j.exit_code, 0) << j.err;
      EXPECT_EQ(Json(j), card);
      auto human = Ctl(where, fmt::format("show named {}", v));
      ASSERT_EQ(human.exit_code, 0) << human.err;
      for (const char* want : {"description:", "Tells five kinds of clothing apart.", "class 0:", "T-shirt/top",
                               "class 4:", "Coat", "1x8x8 grey image, pixel value * 0.00392 + 0",
                               "probabilities of 5 classes", "training samples:", "600 train, 60 validation, 100 test",
                               "/data/tiny/train-images", "metric test_accuracy:", "lineage job_file:", "contact:",
                               "training data report:", "images: 600 train\n", "  60 held out for validation\n"})
        EXPECT_NE(human.out.find(want), std::string::npos) << "'" << want << "' not in:\n" << human.out;
      EXPECT_EQ(human.out.find("privacy:") != std::string::npos, v == 2) << human.out;
    }
  }
  const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pull\"over", "Dress", "Coat"};
  const std::vector<float> ref = ReferenceLogits(NamedClassifier(false), Image(0, 1.0f / 255));
  const int64_t best = std::max_element(ref.begin(), ref.end()) - ref.begin();
  for (const std::string& where : {Http(), Root()}) {
    SCOPED_TRACE(where);
    auto p = Ctl(where, "predict named 1 --idx " + idx_ + " --index 0 --top 1");
    ASSERT_EQ(p.exit_code, 0) << p.err;
    EXPECT_NE(p.out.find(fmt::format("{} ({})", best, names[best])), std::string::npos) << p.out;
  }
}

// stats: what the server counted, as a table and as its JSON; a root has
// no server to count.
TEST_F(PolisctlModels, StatsShowWhatTheServerCounted) {
  StartServer();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Ctl(Http(), "predict tiny 1 --idx " + idx_ + " --index 1").exit_code, 0);
  auto j = Ctl(Http(), "stats tiny 1 --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json doc = Json(j);
  ASSERT_EQ(doc["model_stats"].size(), 1u) << doc.dump();
  EXPECT_EQ(doc["model_stats"][0]["inference_stats"]["success"]["count"], 3);
  auto table = Ctl(Http(), "stats");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("REQUESTS"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("INFER US"), std::string::npos) << table.out;
  bool row = false;
  std::istringstream lines(table.out);
  for (std::string line; std::getline(lines, line);)
    row |= line.rfind("tiny ", 0) == 0 && line.find(" 1 ") != std::string::npos && line.find(" 3 ") != std::string::npos;
  EXPECT_TRUE(row) << table.out;
  auto root = Ctl(Root(), "stats");
  EXPECT_EQ(root.exit_code, 2);
  EXPECT_NE(root.err.find("--registry"), std::string::npos) << root.err;
}

TEST_F(PolisctlModels, UsageErrorsExitTwo) {
  EXPECT_EQ(Sh(kPolisctl + " models list").exit_code, 2);
  EXPECT_EQ(Sh(kPolisctl + " models --registry http://127.0.0.1:1 " + Root() + " list").exit_code, 2);
  auto bad_url = Sh(kPolisctl + " models --registry ftp://x:1 list");
  EXPECT_EQ(bad_url.exit_code, 2);
  EXPECT_NE(bad_url.err.find("http://"), std::string::npos) << bad_url.err;
  EXPECT_EQ(Sh(kPolisctl + " models " + Root() + " predict tiny").exit_code, 2);
  EXPECT_EQ(Sh(kPolisctl + " models " + Root() + " promote tiny").exit_code, 2);
  EXPECT_EQ(Sh(kPolisctl + " models " + Root() + " frobnicate").exit_code, 2);
  auto help = Sh(kPolisctl + " models --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* c : {"list", "show", "versions", "history", "promote", "rollback", "delete", "predict"})
    EXPECT_NE(help.out.find(c), std::string::npos) << c << "\n" << help.out;
  auto phelp = Sh(kPolisctl + " models predict --help");
  EXPECT_EQ(phelp.exit_code, 0);
  EXPECT_NE(phelp.out.find("--idx"), std::string::npos) << phelp.out;
  // Nothing listens on port 1: a failure (1) naming the address, not a usage error.
  auto down = Sh(kPolisctl + " models --registry http://127.0.0.1:1 list");
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("127.0.0.1:1"), std::string::npos) << down.err;
}

}  // namespace
}  // namespace polis::registry
