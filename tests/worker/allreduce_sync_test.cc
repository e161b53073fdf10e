// AllReduceSync's two ways of trading exactness for fewer or hidden
// exchanges, each against a reference computed by hand: two workers run it
// over the in-process transport with gradients the test chooses.
//  - local SGD (sync.local_steps, docs/design/local-sgd.md): every worker
//    runs its own optimizer; parameters are averaged every H steps.
//  - delayed averaging (sync.delayed_averaging,
//    docs/design/delayed-averaging.md): a step's mean gradient is applied
//    one step later, except where a step must finish at once.
#include <gtest/gtest.h>

#include <optional>
#include <thread>

#include "common/comm/local_transport.h"
#include "common/job_spec.h"
#include "common/optimizer.h"
#include "common/role.h"
#include "worker/gradient_sync.h"

namespace polis::worker {
namespace {

constexpr char kJob[] = R"(
  name: "allreduce_sync"
  model {
    layer { type: "Dense" dense_param { units: 3 } }
    loss: MSE
  }
  dataset { format: IDX dir: "unused" num_classes: 3 }
  optimizer { type: ADAM learning_rate: 0.01 }
  training { batch_size: 4 epochs: 1 }
  sync { mode: ALLREDUCE servers: 0 local_steps: 3 }
)";

// kJob with its sync block replaced, and `extra` after it.
std::string WithSync(const std::string& sync, const std::string& extra = "") {
  std::string text = kJob;
  return text.substr(0, text.find("  sync {")) + sync + "\n" + extra;
}

constexpr int kWorkers = 2;
constexpr int kSteps = 8;
// Samples each worker takes at each step: worker 1 runs out first (its
// steps 5 and 6 have none), and step 7 is the epoch's end for both.
constexpr int64_t kSamples[kWorkers][kSteps] = {{4, 4, 4, 4, 4, 4, 2, 0}, {4, 4, 4, 4, 4, 0, 0, 0}};

float Gradient(int w, int step, int64_t i) { return 0.1f * static_cast<float>((w + 1) * (i % 5 + 1)) - 0.05f * step; }

struct WorkerTrace {
  std::vector<std::vector<float>> params;  // after each step
  std::vector<GradientSync::StepResult> results;
  std::vector<std::vector<float>> state_after_checkpoint;  // the optimizer state after BeforeCheckpoint
  Status status;
};

// Both workers, as threads, over one in-process fabric.
struct Harness {
  LoadedJob job;
  std::optional<nn::Model> model;
  std::vector<float> init;
  int64_t P = 0;
  std::vector<RoleContext> ctx;
  WorkerTrace trace[kWorkers];

  // Runs kSteps steps; worker 0 asks for a checkpoint before step
  // `request_at`, and both call BeforeCheckpoint after step
  // `checkpoint_after` (as a checkpoint every N steps does; -1: never).
  void Run(const std::string& job_text, int request_at = -1, int checkpoint_after = -1) {
    auto parsed = ParseJobText(job_text, "all-reduce sync test job");
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    job = *parsed;
    auto built = nn::Model::Build(job.spec.model(), {5});
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    model = std::move(*built);
    P = model->parameter_count();
    init.resize(P);
    model->InitParams(init.data(), 3);
    comm::LocalFabric fabric(1 + kWorkers, {1, 2});
    ctx.resize(1 + kWorkers);
    std::vector<std::thread> threads;
    for (int w = 0; w < kWorkers; ++w) {
      RoleContext& c = ctx[1 + w];
      c.job = job;
      c.model = *model;
      c.transport = fabric.transport(1 + w);
      c.ctrl = c.transport->control();
      c.data = c.transport->data();
      c.rank = 1 + w;
      c.world = 1 + kWorkers;
      c.workers = kWorkers;
      c.train_samples = 64;
      threads.emplace_back([this, w, request_at, checkpoint_after] { RunWorker(w, request_at, checkpoint_after); });
    }
    for (auto& t : threads) t.join();
    for (int w = 0; w < kWorkers; ++w)
      ASSERT_TRUE(trace[w].status.ok()) << "worker " << w << ": " << trace[w].status.ToString();
  }

  void RunWorker(int w, int request_at, int checkpoint_after) {
    WorkerTrace& t = trace[w];
    std::vector<float> params = init, grads(P + kGradientExtraSlots);
    auto sync = MakeAllReduceSync(ctx[1 + w], params.data(), grads.data());
    if (!sync.ok()) {
      t.status = sync.status();
      return;
    }
    for (int s = 0; s < kSteps; ++s) {
      const int64_t n = kSamples[w][s];
      for (int64_t i = 0; i < P; ++i) grads[i] = n > 0 ? static_cast<float>(n) * Gradient(w, s, i) : 0.0f;
      if (w == 0 && s == request_at) (*sync)->RequestCheckpoint(GradientSync::Checkpoint::kTake);
      (*sync)->BeginStep(n);
      GradientSync::StepResult r;
      t.status = (*sync)->Sync({s, n, 0, 0, n == 0}, &r);
      if (s == checkpoint_after && t.status.ok()) t.status = (*sync)->BeforeCheckpoint();
      if (!t.status.ok()) return;
      t.params.push_back(params);
      t.results.push_back(r);
    }
    t.status = (*sync)->BeforeCheckpoint();
    for (auto& [name, v] : (*sync)->optimizer()->State()) t.state_after_checkpoint.push_back(*v);
  }

  std::unique_ptr<Optimizer> NewOptimizer() {
    auto o = MakeOptimizer(job.spec.optimizer(), P, TotalStepsHint(ctx[1]));
    EXPECT_TRUE(o.ok());
    return o.ok() ? std::move(*o) : nullptr;
  }
};

TEST(LocalSgd, AveragesEveryLocalStepsAtTheEpochsEndAndForACheckpoint) {
  Harness h;
  h.Run(kJob);
  if (HasFatalFailure()) return;
  const int64_t P = h.P;
  // The reference: each worker's own Adam on its own mean gradients, and
  // anchor + (Δ0 + Δ1) / 2 after steps 2 and 5 (every 3 steps) and 7 (the
  // epoch's end: no worker had samples).
  std::vector<std::unique_ptr<Optimizer>> opt;
  std::vector<std::vector<float>> p(kWorkers, h.init);
  for (int w = 0; w < kWorkers; ++w) opt.push_back(h.NewOptimizer());
  std::vector<float> anchor = h.init, g(P);
  for (int s = 0; s < kSteps; ++s) {
    for (int w = 0; w < kWorkers; ++w) {
      if (kSamples[w][s] == 0) continue;
      for (int64_t i = 0; i < P; ++i) g[i] = Gradient(w, s, i);
      opt[w]->Step(p[w].data(), g.data());
    }
    const bool averaged = s == 2 || s == 5 || s == 7;
    if (averaged) {
      for (int64_t i = 0; i < P; ++i) {
        const float sum = (p[0][i] - anchor[i]) + (p[1][i] - anchor[i]);
        anchor[i] = anchor[i] + sum * 0.5f;
      }
      p[0] = p[1] = anchor;
    }
    for (int w = 0; w < kWorkers; ++w) {
      ASSERT_EQ(h.trace[w].params[s], p[w]) << "worker " << w << " after step " << s;
      EXPECT_EQ(h.trace[w].results[s].epoch_over, s == 7) << "step " << s;
    }
    if (!averaged) EXPECT_NE(h.trace[0].params[s], h.trace[1].params[s]) << "step " << s << " was not local";
  }
  // The checkpoint's optimizer state is the two replicas' mean.
  ASSERT_EQ(h.trace[0].state_after_checkpoint.size(), opt[0]->State().size());
  auto s0 = opt[0]->State(), s1 = opt[1]->State();
  for (size_t k = 0; k < s0.size(); ++k) {
    EXPECT_EQ(h.trace[0].state_after_checkpoint[k], h.trace[1].state_after_checkpoint[k]) << s0[k].first;
    for (int64_t i = 0; i < P; ++i)
      EXPECT_FLOAT_EQ(h.trace[0].state_after_checkpoint[k][i], 0.5f * ((*s0[k].second)[i] + (*s1[k].second)[i]))
          << s0[k].first << "[" << i << "]";
  }
}

// Worker 0 asks for a checkpoint before step 3: it rides in step 3's sums,
// which both workers apply at step 4 and then finish step 4 at once, so
// both report it at step 4 holding the same parameters. Worker 1 has no
// samples from step 5 and finishes those steps at once; worker 0 lags a
// step behind, except that a checkpoint after step 5 (every N steps) makes
// it apply step 5's sums first; both agree again at the epoch's end (step 7).
TEST(DelayedAveraging, AppliesEachStepsMeanOneStepLaterAndAgreesAtCheckpointsAndTheEpochsEnd) {
  Harness h;
  h.Run(WithSync("sync { mode: ALLREDUCE servers: 0 delayed_averaging: true }"), /*request_at=*/3,
        /*checkpoint_after=*/5);
  if (HasFatalFailure()) return;
  const int64_t P = h.P;
  // after[k]: the parameters once the mean gradients of steps 0 .. k-1 are applied.
  std::unique_ptr<Optimizer> opt = h.NewOptimizer();
  std::vector<std::vector<float>> after{h.init};
  std::vector<float> g(P);
  for (int s = 0; s < kSteps; ++s) {
    const int64_t total = kSamples[0][s] + kSamples[1][s];
    std::vector<float> p = after.back();
    if (total > 0) {
      const float inv = 1.0f / static_cast<float>(total);
      for (int64_t i = 0; i < P; ++i)
        g[i] = (static_cast<float>(kSamples[0][s]) * Gradient(0, s, i) +
                static_cast<float>(kSamples[1][s]) * Gradient(1, s, i)) * inv;
      opt->Step(p.data(), g.data());
    }
    after.push_back(p);
  }
  // How many steps' means each worker has applied after its Sync of step s.
  const int applied[kWorkers][kSteps] = {{0, 1, 2, 3, 5, 6, 6, 8}, {0, 1, 2, 3, 5, 6, 7, 8}};
  for (int s = 0; s < kSteps; ++s) {
    for (int w = 0; w < kWorkers; ++w) {
      ASSERT_EQ(h.trace[w].params[s], after[applied[w][s]]) << "worker " << w << " after step " << s;
      EXPECT_EQ(h.trace[w].results[s].epoch_over, s == 7) << "worker " << w << " step " << s;
      EXPECT_EQ(h.trace[w].results[s].checkpoint,
                s == 4 ? GradientSync::Checkpoint::kTake : GradientSync::Checkpoint::kNone)
          << "worker " << w << " step " << s;
    }
  }
}

TEST(AllReduceSyncSettings, RefusedWhereTheyDoNotApply) {
  auto refused = [](const std::string& text, const std::string& field) {
    auto job = ParseJobText(text, "job.pbtxt");
    ASSERT_FALSE(job.ok()) << text;
    EXPECT_NE(job.status().message().find(field), std::string::npos) << job.status().ToString();
  };
  refused(WithSync("sync { mode: PARAMETER_SERVER servers: 1 local_steps: 4 }"), "sync.local_steps");
  refused(WithSync("sync { mode: ALLREDUCE servers: 0 local_steps: 2 }",
                   "privacy { target_epsilon: 3 delta: 1e-5 max_grad_norm: 1 }"),
          "sync.local_steps");
  refused(WithSync("sync { mode: ALLREDUCE servers: 0 local_steps: 0 }"), "sync.local_steps");
  refused(WithSync("sync { mode: PARAMETER_SERVER servers: 1 delayed_averaging: true }"), "sync.delayed_averaging");
  refused(WithSync("sync { mode: ALLREDUCE servers: 0 local_steps: 2 delayed_averaging: true }"),
          "sync.delayed_averaging");
  refused(WithSync("sync { mode: ALLREDUCE servers: 0 delayed_averaging: true }",
                   "privacy { target_epsilon: 3 delta: 1e-5 max_grad_norm: 1 }"),
          "sync.delayed_averaging");
  EXPECT_TRUE(ParseJobText(WithSync("sync { mode: ALLREDUCE servers: 0 local_steps: 8 compression: BF16 }"),
                           "job.pbtxt").ok());
  EXPECT_TRUE(ParseJobText(WithSync("sync { mode: ALLREDUCE servers: 0 delayed_averaging: true compression: BF16 }"),
                           "job.pbtxt").ok());
}

}  // namespace
}  // namespace polis::worker
