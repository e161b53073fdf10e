// What DP-SGD does in one job (docs/design/privacy.md), computed alike by
// every rank from the job, the cluster's size, the number of training
// samples and the job's secret key, so no per-step message is needed:
//
//   expected global batch  B = training.batch_size × workers
//   sampling rate          q = B / N              (Poisson, per example, per step)
//   steps per epoch        T = ceil(N / B)
//   planned steps          epochs × T
//   noise multiplier       σ = privacy.noise_multiplier, or the smallest σ
//                          whose planned steps spend at most
//                          privacy.target_epsilon (rdp.h)
//
// Worker w's part of step t is PoissonSample(sample_key, t, w, W, N, q);
// the noise of step t is the stream (noise_key, t, share). The two keys are
// derived from the job's key for their purpose, so the sampling coins and
// the noise are independent streams.
//
// Thread-safety: a DpPlan is an immutable value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/privacy/prg.h"
#include "common/privacy/rdp.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::privacy {

struct DpPlan {
  double q = 0;                 // sampling rate
  int64_t expected_batch = 0;   // B: the divisor of the noisy sum
  int64_t steps_per_epoch = 0;  // T
  int64_t planned_steps = 0;    // epochs × T
  double sigma = 0;             // noise multiplier
  double clip = 0;              // C
  double delta = 0;
  double target_epsilon = 0;    // 0: none (σ was given)
  int64_t train_samples = 0;    // N
  Key256 sample_key{}, noise_key{};

  // Stddev of the noise added to the sum of clipped gradients, already
  // divided by B (what is added to the averaged gradient): σC/B.
  double AveragedNoiseStddev() const { return sigma * clip / static_cast<double>(expected_batch); }
  // Adds elements [offset, offset + n) of step `step`'s one noise vector,
  // divided by B, to x (the clipped sum already divided by B): the stream
  // (noise_key, step, share 0), so every replica, or every server for its
  // key range, adds its part of the same draw.
  void AddNoiseToAverage(int64_t step, int64_t offset, float* x, int64_t n) const;
  // ε spent after `steps` steps (RDP, Balle et al. 2020 conversion).
  double EpsilonAfter(int64_t steps) const;
  // The guarantee after `steps` steps, as /api/status, result.json and the
  // artifact record it: epsilon, delta, steps, planned_steps,
  // epsilon_planned, noise_multiplier, max_grad_norm, sample_rate,
  // expected_batch, sampler, accountant, secure_aggregation and, when set,
  // target_epsilon.
  nlohmann::json Record(int64_t steps, bool secure_aggregation) const;
  // The accountant's fixed description for status, results and artifacts.
  static constexpr const char* kSampler = "poisson";
  static constexpr const char* kAccountant = "rdp";

 private:
  friend StatusOr<std::optional<DpPlan>> MakeDpPlan(const proto::JobSpec&, int, int64_t, const Key256&);
  std::vector<double> orders_, rdp_per_step_;
};

// Null when the job does not ask for DP-SGD. InvalidArgument naming the
// field when its figures cannot give a plan (no σ reaches the target ε).
StatusOr<std::optional<DpPlan>> MakeDpPlan(const proto::JobSpec& spec, int workers, int64_t train_samples,
                                           const Key256& job_key);

// Whether the job asks for DP-SGD (target_epsilon or noise_multiplier set).
bool WantsDpSgd(const proto::JobSpec& spec);

// SHA-256 of (purpose, key): keys for separate uses of one secret.
Key256 DeriveKey(const Key256& key, const char* purpose);

}  // namespace polis::privacy
