// Secure aggregation in a job's ranks (common/privacy/secagg_session.h),
// over the in-process transport: the coordinator relays every worker's key,
// the workers' masks cancel in a server's sum, DP noise shares sum to the
// full noise, and a value outside the fixed-point range is refused naming
// the setting.
#include "common/privacy/secagg_session.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "common/comm/control.h"
#include "common/comm/local_transport.h"
#include "common/comm/wait.h"
#include "common/job_spec.h"

namespace polis::privacy {
namespace {

constexpr char kJob[] = R"(
  name: "secagg"
  model { layer { type: "Dense" dense_param { units: 2 } } loss: MSE }
  dataset { format: IDX dir: "x" num_classes: 2 }
  training { batch_size: 8 }
)";

struct Ranks {
  std::unique_ptr<comm::LocalFabric> fabric;
  std::vector<RoleContext> ctx;  // rank 0 the coordinator, then W workers (no servers)
};

Ranks MakeRanks(int W, const std::string& privacy) {
  Ranks r;
  std::vector<int> workers;
  for (int w = 0; w < W; ++w) workers.push_back(1 + w);
  r.fabric = std::make_unique<comm::LocalFabric>(1 + W, workers);
  auto job = ParseJobText(std::string(kJob) + "privacy { " + privacy + " }", "test job");
  EXPECT_TRUE(job.ok()) << job.status().ToString();
  r.ctx.resize(1 + W);
  for (int k = 0; k <= W; ++k) {
    RoleContext& c = r.ctx[k];
    c.job = *job;
    c.transport = r.fabric->transport(k);
    c.ctrl = c.transport->control();
    c.data = c.transport->data();
    c.rank = k;
    c.world = 1 + W;
    c.workers = W;
    c.run_dir = "/runs/secagg/20261205-120000";
  }
  return r;
}

// Runs the key exchange: the coordinator relays, each worker starts its
// session with noise[w] (or none).
std::vector<std::unique_ptr<SecAggWorker>> Exchange(Ranks& r, const std::vector<NoiseShare>& noise) {
  const int W = static_cast<int>(r.ctx.size()) - 1;
  std::vector<std::unique_ptr<SecAggWorker>> sessions(W);
  std::vector<Status> status(W);
  std::thread coordinator([&] {
    SecAggKeyRelay relay;
    for (int got = 0; got < W; ++got) {
      proto::ControlMessage msg;
      int from = -1;
      ASSERT_TRUE(comm::RecvControl(r.ctx[0].ctrl, comm::kAnySource, &from, &msg, comm::DeadlineFromNow(), "keys").ok());
      ASSERT_TRUE(msg.has_secagg_key());
      ASSERT_TRUE(relay.OnKey(r.ctx[0], from - 1, msg.secagg_key(), "20261205-120000").ok());
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < W; ++w)
    workers.emplace_back([&, w] {
      auto s = SecAggWorker::Start(r.ctx[1 + w], noise.empty() ? nullptr : &noise[w]);
      status[w] = s.status();
      if (s.ok()) sessions[w] = std::move(*s);
    });
  for (auto& t : workers) t.join();
  coordinator.join();
  for (int w = 0; w < W; ++w) EXPECT_TRUE(status[w].ok()) << w << ": " << status[w].ToString();
  return sessions;
}

// Without DP: the pushes of W workers, each masked, sum (mod 2^32) to the
// sum of the encodings; decoded, to the float sum within the rounding bound.
// With the range training.batch_size x secure_aggregation_bound.
TEST(SecAggSession, RelayedKeysGiveMasksThatCancelInTheServersSum) {
  const int W = 3;
  Ranks r = MakeRanks(W, "secure_aggregation: true secure_aggregation_bound: 2");
  auto sessions = Exchange(r, {});
  ASSERT_EQ(sessions.size(), static_cast<size_t>(W));
  auto fp = SecAggFixedPoint(r.ctx[0].job.spec, W, 0);
  ASSERT_TRUE(fp.ok());
  EXPECT_GE(fp->max_abs(), 8 * 2.0);  // batch_size x bound
  const int64_t n = 5000, offset = 123;
  std::vector<double> want(n, 0.0);
  std::vector<uint32_t> sum(n, 0);
  for (int w = 0; w < W; ++w) {
    ASSERT_TRUE(sessions[w]);
    std::vector<float> x(n);
    for (int64_t k = 0; k < n; ++k) x[k] = static_cast<float>(std::sin(0.01 * k * (w + 1)) * 15);
    for (int64_t k = 0; k < n; ++k) want[k] += x[k];
    std::vector<uint32_t> push(n);
    ASSERT_TRUE(sessions[w]->Encode(/*step=*/4, /*epoch=*/1, offset, x.data(), n, push.data()).ok());
    std::vector<uint32_t> plain(n);
    fp->Encode(x.data(), n, plain.data());
    EXPECT_NE(push, plain) << "worker " << w << "'s push is masked";
    AddModular(push.data(), n, sum.data());
  }
  std::vector<float> got(n);
  fp->Decode(sum.data(), n, got.data());
  for (int64_t k = 0; k < n; ++k) ASSERT_NEAR(got[k], want[k], fp->rounding_bound() + 1e-5) << k;

  // A value outside the range (or NaN) is an error naming the setting.
  std::vector<float> bad = {1.0f, 1e6f, NAN};
  std::vector<uint32_t> out(bad.size());
  Status st = sessions[0]->Encode(5, 1, 0, bad.data(), 3, out.data());
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("privacy.secure_aggregation_bound"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("2 gradient value(s) of step 5"), std::string::npos) << st.ToString();
}

// DP-SGD combined with secure aggregation: each of W workers adds its share
// N(0, σ²C²/W) before masking; the server's decoded sum carries exactly
// N(0, σ²C²) per coordinate (variance within 4% over 40000 draws), and one
// worker's share alone only σ²C²/W.
TEST(SecAggSession, NoiseSharesSumToTheFullNoise) {
  const int W = 4;
  const double sigma = 1.5, C = 0.5;
  Ranks r = MakeRanks(W, "noise_multiplier: 1.5 delta: 1e-5 max_grad_norm: 0.5 secure_aggregation: true");
  std::vector<NoiseShare> noise(W);
  for (int w = 0; w < W; ++w) noise[w] = {KeyFromNumber("noise", 77), static_cast<uint32_t>(w), sigma, C};
  auto sessions = Exchange(r, noise);
  auto fp = SecAggFixedPoint(r.ctx[0].job.spec, W, sigma);
  ASSERT_TRUE(fp.ok());
  // (8 + 6 sqrt(8)) x C + 10 stddevs of a share.
  EXPECT_GE(fp->max_abs(), (8 + 6 * std::sqrt(8.0)) * C + 10 * sigma * C / 2);
  const int64_t n = 40000;
  std::vector<uint32_t> sum(n, 0);
  double share_var = 0;
  for (int w = 0; w < W; ++w) {
    ASSERT_TRUE(sessions[w]);
    std::vector<float> x(n, 0.0f);  // a zero gradient: what is left is the noise
    std::vector<uint32_t> push(n);
    ASSERT_TRUE(sessions[w]->Encode(9, 0, 0, x.data(), n, push.data()).ok());
    if (w == 0)
      for (float v : x) share_var += static_cast<double>(v) * v / n;
    AddModular(push.data(), n, sum.data());
  }
  std::vector<float> got(n);
  fp->Decode(sum.data(), n, got.data());
  double mean = 0, var = 0;
  for (float v : got) mean += v / static_cast<double>(n);
  for (float v : got) var += (v - mean) * (v - mean) / static_cast<double>(n);
  const double full = sigma * sigma * C * C;
  EXPECT_NEAR(mean, 0.0, 5 * std::sqrt(full / n));
  EXPECT_NEAR(var, full, 0.04 * full);
  EXPECT_NEAR(share_var, full / W, 0.04 * full / W);
}

TEST(SecAggSession, OneWorkerIsRefused) {
  Ranks r = MakeRanks(1, "secure_aggregation: true");
  auto s = SecAggWorker::Start(r.ctx[1], nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("'privacy.secure_aggregation' needs at least 2 workers"), std::string::npos)
      << s.status().ToString();
}

}  // namespace
}  // namespace polis::privacy
