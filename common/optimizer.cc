#include "common/optimizer.h"

#include <cmath>

namespace polis {

void AdamKernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                float* __restrict v, int64_t n, float lr, float b1, float b2, float eps,
                int64_t t, float weight_decay, bool decoupled_decay) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t));
  const float step = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  const float l2 = decoupled_decay ? 0.0f : weight_decay;
  const float shrink = decoupled_decay ? 1.0f - lr * weight_decay : 1.0f;
  // A plain loop over restrict pointers vectorises (with -fno-math-errno).
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] + l2 * p[i];
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * shrink - step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

double ScheduledLearningRate(const proto::OptimizerSpec& spec, int64_t t, int64_t total_steps_hint) {
  const double base = spec.learning_rate();
  const auto& s = spec.schedule();
  const int64_t warm = s.warmup_steps();
  if (warm > 0 && t <= warm) return base * static_cast<double>(t) / static_cast<double>(warm);
  const int64_t after = t - warm;  // updates since warm-up ended (>= 1 past warm-up)
  switch (s.type()) {
    case proto::LrSchedule::CONSTANT:
      return base;
    case proto::LrSchedule::STEP:
      return base * std::pow(static_cast<double>(s.gamma()),
                             static_cast<double>((after - 1) / std::max<int64_t>(s.step_size(), 1)));
    case proto::LrSchedule::COSINE: {
      int64_t total = s.total_steps() > 0 ? s.total_steps() : total_steps_hint;
      int64_t span = std::max<int64_t>(total - warm, 1);
      double frac = std::min(1.0, static_cast<double>(after - 1) / static_cast<double>(span));
      return s.min_lr() + (base - s.min_lr()) * 0.5 * (1.0 + std::cos(M_PI * frac));
    }
  }
  return base;
}

Status Optimizer::Update(device::Span<float> params, device::Span<const float> grads, device::Stream& stream) {
  // Device memory on a device with streams of its own is out of reach; the
  // CPU device's "device" memory is host memory.
  if ((params.space == device::Space::kDevice || grads.space == device::Space::kDevice) && stream.native() != nullptr)
    return InvalidArgument("a host optimizer cannot update {} memory of a GPU", device::SpaceName(device::Space::kDevice));
  if (params.size != grads.size)
    return InvalidArgument("optimizer update of {} parameters with {} gradients", params.size, grads.size);
  Step(params.data, grads.data);
  return Status::Ok();
}

namespace {

class Adam : public Optimizer {
 public:
  Adam(const proto::OptimizerSpec& s, int64_t n, int64_t hint, bool decoupled)
      : spec_(s), hint_(hint), decoupled_(decoupled), m_(n, 0.f), v_(n, 0.f) {}
  void Step(float* params, const float* grads) override {
    ++t_;
    AdamKernel(params, grads, m_.data(), v_.data(), static_cast<int64_t>(m_.size()),
               static_cast<float>(ScheduledLearningRate(spec_, t_, hint_)), spec_.beta1(),
               spec_.beta2(), spec_.epsilon(), t_, spec_.weight_decay(), decoupled_);
  }
  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t t) override { t_ = t; }
  double current_lr() const override { return ScheduledLearningRate(spec_, t_ + 1, hint_); }
  std::vector<std::pair<std::string, std::vector<float>*>> State() override {
    return {{"m", &m_}, {"v", &v_}};
  }

 private:
  proto::OptimizerSpec spec_;
  int64_t hint_;
  bool decoupled_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

class Sgd : public Optimizer {
 public:
  Sgd(const proto::OptimizerSpec& s, int64_t n, int64_t hint) : spec_(s), hint_(hint), velocity_(n, 0.f) {}
  void Step(float* __restrict params, const float* __restrict grads) override {
    ++t_;
    const float lr = static_cast<float>(ScheduledLearningRate(spec_, t_, hint_));
    const float mu = spec_.momentum(), wd = spec_.weight_decay();
    float* __restrict vel = velocity_.data();
    const int64_t n = static_cast<int64_t>(velocity_.size());
    if (mu == 0.f) {
      // Plain SGD: the velocity would only ever hold this step's g, so it is
      // neither read nor written (one stream over n floats less per step).
      for (int64_t i = 0; i < n; ++i) params[i] -= lr * (grads[i] + wd * params[i]);
    } else if (spec_.nesterov()) {
      for (int64_t i = 0; i < n; ++i) {
        float g = grads[i] + wd * params[i];
        vel[i] = mu * vel[i] + g;
        params[i] -= lr * (g + mu * vel[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        float g = grads[i] + wd * params[i];
        vel[i] = mu * vel[i] + g;
        params[i] -= lr * vel[i];
      }
    }
  }
  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t t) override { t_ = t; }
  double current_lr() const override { return ScheduledLearningRate(spec_, t_ + 1, hint_); }
  std::vector<std::pair<std::string, std::vector<float>*>> State() override {
    return {{"velocity", &velocity_}};
  }

 private:
  proto::OptimizerSpec spec_;
  int64_t hint_;
  std::vector<float> velocity_;
  int64_t t_ = 0;
};

}  // namespace

Status ValidateOptimizer(const proto::OptimizerSpec& spec) {
  if (!(spec.learning_rate() > 0)) return InvalidArgument("optimizer.learning_rate must be > 0");
  if (!(spec.weight_decay() >= 0)) return InvalidArgument("optimizer.weight_decay must be >= 0");
  if (spec.type() != proto::OptimizerSpec::SGD) {
    if (!(spec.beta1() >= 0 && spec.beta1() < 1)) return InvalidArgument("optimizer.beta1 must be in [0, 1)");
    if (!(spec.beta2() >= 0 && spec.beta2() < 1)) return InvalidArgument("optimizer.beta2 must be in [0, 1)");
    if (!(spec.epsilon() > 0)) return InvalidArgument("optimizer.epsilon must be > 0");
  } else {
    if (!(spec.momentum() >= 0 && spec.momentum() < 1)) return InvalidArgument("optimizer.momentum must be in [0, 1)");
    if (spec.nesterov() && !(spec.momentum() > 0)) return InvalidArgument("optimizer.nesterov needs momentum > 0");
  }
  const auto& s = spec.schedule();
  if (s.warmup_steps() < 0) return InvalidArgument("optimizer.schedule.warmup_steps must be >= 0");
  if (s.type() == proto::LrSchedule::STEP && s.step_size() <= 0)
    return InvalidArgument("optimizer.schedule.step_size must be > 0");
  if (s.type() == proto::LrSchedule::STEP && !(s.gamma() > 0))
    return InvalidArgument("optimizer.schedule.gamma must be > 0");
  if (s.min_lr() < 0 || s.min_lr() > spec.learning_rate())
    return InvalidArgument("optimizer.schedule.min_lr must be in [0, learning_rate]");
  return Status::Ok();
}

StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const proto::OptimizerSpec& spec, int64_t n,
                                                   int64_t total_steps_hint) {
  POLIS_RETURN_IF_ERROR(ValidateOptimizer(spec));
  switch (spec.type()) {
    case proto::OptimizerSpec::ADAM:
      return std::unique_ptr<Optimizer>(new Adam(spec, n, total_steps_hint, false));
    case proto::OptimizerSpec::ADAMW:
      return std::unique_ptr<Optimizer>(new Adam(spec, n, total_steps_hint, true));
    case proto::OptimizerSpec::SGD:
      return std::unique_ptr<Optimizer>(new Sgd(spec, n, total_steps_hint));
  }
  return InvalidArgument("optimizer.type {} is not known (ADAM, ADAMW, SGD)", static_cast<int>(spec.type()));
}

}  // namespace polis
