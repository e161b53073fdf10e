// Explanations cannot starve inference or run for nobody: their own scope,
// a per-request budget (rows x steps), a bounded queue (429), a deadline
// (503), cancellation when the client hangs up, and low-priority workers
// apart from the inference threads.
#include <atomic>
#include <chrono>
#include <thread>

#include "registry/explain_queue.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT
using Clock = std::chrono::steady_clock;

// ~2.4 M parameters: 32 rows x 256 steps of it is seconds of work for one
// core, and a one-row infer well under a millisecond.
constexpr char kWide[] = R"(
  layer { type: "Dense" activation: RELU dense_param { units: 3072 } }
  layer { type: "Dense" dense_param { units: 10 } }
)";
const nn::Shape kWideInput = {784};

std::string HeavyExplain(int rows = 32, int steps = 256) {
  json body = InferBody(Pattern(784 * rows, 5), rows, kWideInput);
  body["parameters"] = {{"steps", steps}};
  return body.dump();
}

std::string RawPost(const std::string& target, const std::string& body) {
  return fmt::format(
      "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
      target, body.size(), body);
}

// The value of an unlabelled metric ("name 3"), 0 when absent.
double MetricValue(HttpClient& c, const std::string& name) {
  auto r = c.Request("GET", "/metrics", "", {});
  if (!r.ok()) return -1;
  const std::string key = "\n" + name + " ";
  const size_t at = r->body.find(key);
  return at == std::string::npos ? 0 : std::stod(r->body.substr(at + key.size()));
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

class ExplainLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(Publish(dir_.path(), "wide", MakeArtifact(kWide, kWideInput, 4)), 1); }
  ServerOptions Options() {
    ServerOptions o;
    o.allow_anonymous_explain = true;
    o.explain.max_row_steps = 32 * 256;  // let the heavy requests in
    o.explain.timeout_ms = 60000;
    return o;
  }
  TempDir dir_;
};

// The reported case: two connections looping 32-row, 256-step explanations
// pushed a one-row infer from milliseconds to minutes. The deadline below is
// a failure limit, not a speed claim.
TEST_F(ExplainLimitsTest, InferAnswersWhileTwoClientsLoopHeavyExplanations) {
  ServerOptions o = Options();
  o.explain.timeout_ms = 4000;  // so the loops end soon after the test
  ServerHarness h(dir_.path(), o);
  std::atomic<bool> stop{false};
  std::atomic<int> explained{0};
  std::vector<std::thread> loops;
  for (int i = 0; i < 2; ++i)
    loops.emplace_back([&] {
      HttpClient c = h.Client(120000);
      const std::string body = HeavyExplain();
      while (!stop) {
        auto r = c.Request("POST", "/v2/models/wide/explain", body, {{"Content-Type", "application/json"}});
        if (r.ok()) explained++;
      }
    });
  HttpClient c = h.Client(30000);
  ASSERT_TRUE(WaitFor([&] { return MetricValue(c, "polis_explain_queue_depth") >= 1; },
                      std::chrono::seconds(10)));
  const std::string infer = InferBody(Pattern(784, 1), 1, kWideInput).dump();
  double worst = 0;
  for (int i = 0; i < 10; ++i) {
    const auto start = Clock::now();
    auto r = Call(c, "POST", "/v2/models/wide/infer", infer);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(r.status, 200) << r.body;
    worst = std::max(worst, s);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LT(worst, 2.0) << "a one-row infer waited " << worst << " s behind explanations";
  std::cout << "worst one-row infer latency under explain load: " << worst * 1000 << " ms\n";
  EXPECT_GE(MetricValue(c, "polis_explain_queue_depth"), 1);  // the load was there throughout
  stop = true;
  for (auto& t : loops) t.join();
}

// Four explanations whose clients hang up are stopped (or dropped unrun),
// not computed for nobody; the next infer does not wait for them.
TEST_F(ExplainLimitsTest, ExplanationsWhoseClientHangsUpStopComputing) {
  ServerHarness h(dir_.path(), Options());
  HttpClient c = h.Client(30000);
  {
    std::vector<std::unique_ptr<RawSocket>> socks;
    for (int i = 0; i < 4; ++i) {
      socks.push_back(std::make_unique<RawSocket>(h.port()));
      socks.back()->Send(RawPost("/v2/models/wide/explain", HeavyExplain()));
    }
    ASSERT_TRUE(WaitFor([&] { return MetricValue(c, "polis_explain_queue_depth") >= 4; },
                        std::chrono::seconds(10)));
  }  // all four hang up
  ASSERT_TRUE(WaitFor([&] { return MetricValue(c, "polis_explain_cancelled_total") >= 4; },
                      std::chrono::seconds(20)))
      << "cancelled: " << MetricValue(c, "polis_explain_cancelled_total");
  // Far fewer rows were computed than the 4 x 32 asked for.
  EXPECT_LT(MetricValue(c, "polis_explain_rows_total"), 32);
  EXPECT_EQ(MetricValue(c, "polis_explain_queue_depth"), 0);
  const auto start = Clock::now();
  EXPECT_EQ(Call(c, "POST", "/v2/models/wide/infer", InferBody(Pattern(784, 1), 1, kWideInput).dump()).status, 200);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 2.0);
}

TEST_F(ExplainLimitsTest, RowsTimesStepsOverTheBudgetIsRefusedWith400) {
  ServerOptions o = Options();
  o.explain.max_row_steps = 2048;
  ServerHarness h(dir_.path(), o);
  HttpClient c = h.Client();
  auto r = Call(c, "POST", "/v2/models/wide/explain", HeavyExplain(32, 256));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("32 x 256 = 8192 exceeds the limit of 2048"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("--explain-max-row-steps"), std::string::npos) << r.body;
  EXPECT_EQ(Call(c, "POST", "/v2/models/wide/explain", HeavyExplain(2, 16)).status, 200);
}

TEST_F(ExplainLimitsTest, AFullQueueIsRefusedWith429AndTheDeadlineWith503) {
  ServerOptions o = Options();
  o.explain.max_queue = 1;
  ServerHarness h(dir_.path(), o);
  HttpClient c = h.Client();
  RawSocket first(h.port());
  first.Send(RawPost("/v2/models/wide/explain", HeavyExplain()));
  ASSERT_TRUE(WaitFor([&] { return MetricValue(c, "polis_explain_queue_depth") >= 1; },
                      std::chrono::seconds(10)));
  auto r = Call(c, "POST", "/v2/models/wide/explain", HeavyExplain(1, 8));
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_NE(r.body.find("--explain-queue"), std::string::npos) << r.body;
  first.Close();
  ASSERT_TRUE(WaitFor([&] { return MetricValue(c, "polis_explain_queue_depth") == 0; },
                      std::chrono::seconds(20)));

  ServerOptions quick = Options();
  quick.explain.timeout_ms = 200;
  ServerHarness h2(dir_.path(), quick);
  HttpClient c2 = h2.Client();
  r = Call(c2, "POST", "/v2/models/wide/explain", HeavyExplain());
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("--explain-timeout-ms"), std::string::npos) << r.body;
}

TEST_F(ExplainLimitsTest, ExplanationsNeedTheExplainScope) {
  const std::string small = HeavyExplain(1, 4);
  {
    ServerHarness h(dir_.path());  // no tokens, no --allow-anonymous-explain
    HttpClient c = h.Client();
    auto r = Call(c, "POST", "/v2/models/wide/explain", small);
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_NE(r.body.find("scope 'explain'"), std::string::npos) << r.body;
    EXPECT_EQ(Call(c, "POST", "/v2/models/wide/infer", InferBody(Pattern(784, 1), 1, kWideInput).dump()).status,
              200);
  }
  const std::string tokens = dir_.path() + "/tokens.json";
  ASSERT_TRUE(WriteFileAtomic(tokens, R"({"tokens": [
      {"name": "app", "token": "app-token-123", "scopes": ["infer"]},
      {"name": "analyst", "token": "analyst-token-1", "scopes": ["explain"]}]})").ok());
  ServerOptions o;
  o.tokens_file = tokens;
  ServerHarness h(dir_.path(), o);
  HttpClient c = h.Client();
  auto r = Call(c, "POST", "/v2/models/wide/explain", small, {{"Authorization", "Bearer app-token-123"}});
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("lacks scope 'explain'"), std::string::npos) << r.body;
  r = Call(c, "POST", "/v2/models/wide/explain", small, {{"Authorization", "Bearer analyst-token-1"}});
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST(ExplainLimitsValidation, BadLimitsAreRefusedNamingTheFlag) {
  ExplainLimits l;
  EXPECT_TRUE(ValidateExplainLimits(l).ok());
  l.max_queue = 0;
  EXPECT_NE(ValidateExplainLimits(l).message().find("--explain-queue"), std::string::npos);
  l = ExplainLimits();
  l.nice = 40;
  EXPECT_NE(ValidateExplainLimits(l).message().find("--explain-nice"), std::string::npos);
}

}  // namespace
}  // namespace polis::registry
