#include "common/privacy/dp_plan.h"

#include <openssl/evp.h>

#include <string>

#include "common/privacy/noise.h"
#include "common/status.h"

namespace polis::privacy {

bool WantsDpSgd(const proto::JobSpec& spec) {
  return spec.has_privacy() && (spec.privacy().has_target_epsilon() || spec.privacy().has_noise_multiplier());
}

Key256 DeriveKey(const Key256& key, const char* purpose) {
  std::string msg(purpose);
  msg.push_back('\0');
  msg.append(reinterpret_cast<const char*>(key.data()), key.size());
  Key256 out;
  unsigned len = 0;
  POLIS_ENFORCE(EVP_Digest(msg.data(), msg.size(), out.data(), &len, EVP_sha256(), nullptr) == 1);
  return out;
}

void DpPlan::AddNoiseToAverage(int64_t step, int64_t offset, float* x, int64_t n) const {
  AddGaussianNoise(noise_key, static_cast<uint64_t>(step), 0, AveragedNoiseStddev(), offset, x, n);
}

double DpPlan::EpsilonAfter(int64_t steps) const {
  if (steps <= 0) return 0;
  std::vector<double> rdp(rdp_per_step_);
  for (double& r : rdp) r *= static_cast<double>(steps);
  return RdpToEpsilon(orders_, rdp, delta).epsilon;
}

nlohmann::json DpPlan::Record(int64_t steps, bool secure_aggregation) const {
  nlohmann::json j = {{"epsilon", EpsilonAfter(steps)},
                      {"delta", delta},
                      {"steps", steps},
                      {"planned_steps", planned_steps},
                      {"epsilon_planned", EpsilonAfter(planned_steps)},
                      {"noise_multiplier", sigma},
                      {"max_grad_norm", clip},
                      {"sample_rate", q},
                      {"expected_batch", expected_batch},
                      {"sampler", kSampler},
                      {"accountant", kAccountant},
                      {"secure_aggregation", secure_aggregation}};
  if (target_epsilon > 0) j["target_epsilon"] = target_epsilon;
  return j;
}

StatusOr<std::optional<DpPlan>> MakeDpPlan(const proto::JobSpec& spec, int workers, int64_t train_samples,
                                           const Key256& job_key) {
  if (!WantsDpSgd(spec)) return std::optional<DpPlan>();
  const proto::PrivacySpec& p = spec.privacy();
  if (workers < 1 || train_samples < 1)
    return InvalidArgument("DP-SGD needs at least one worker and one training sample ({} workers, {} samples)",
                           workers, train_samples);
  DpPlan plan;
  plan.train_samples = train_samples;
  plan.expected_batch = static_cast<int64_t>(spec.training().batch_size()) * workers;
  if (plan.expected_batch > train_samples)
    return InvalidArgument(
        "training.batch_size {} × {} workers = {} expected examples a step, more than the {} training samples",
        spec.training().batch_size(), workers, plan.expected_batch, train_samples);
  plan.q = static_cast<double>(plan.expected_batch) / static_cast<double>(train_samples);
  plan.steps_per_epoch = (train_samples + plan.expected_batch - 1) / plan.expected_batch;
  plan.planned_steps = static_cast<int64_t>(spec.training().epochs()) * plan.steps_per_epoch;
  plan.clip = p.max_grad_norm();
  plan.delta = p.delta();
  if (p.has_target_epsilon()) {
    plan.target_epsilon = p.target_epsilon();
    auto sigma = NoiseMultiplierForEpsilon(p.target_epsilon(), p.delta(), plan.q, plan.planned_steps);
    if (!sigma.ok())
      return InvalidArgument("privacy.target_epsilon {}: {} ({} steps at sampling rate {:.4g})", p.target_epsilon(),
                             sigma.status().message(), plan.planned_steps, plan.q);
    plan.sigma = *sigma;
  } else {
    plan.sigma = p.noise_multiplier();
  }
  plan.orders_ = DefaultOrders();
  plan.rdp_per_step_ = ComputeRdp(plan.q, plan.sigma, 1, plan.orders_);
  plan.sample_key = DeriveKey(job_key, "polis dp-sgd poisson sample");
  plan.noise_key = DeriveKey(job_key, "polis dp-sgd noise");
  return std::optional<DpPlan>(std::move(plan));
}

}  // namespace polis::privacy
