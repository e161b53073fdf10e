#include "common/optimizer.h"

#include <cmath>

namespace polis {

void AdamKernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                float* __restrict v, int64_t n, float lr, float b1, float b2, float eps,
                int64_t t, float weight_decay) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t));
  const float step = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  // A plain loop over restrict pointers vectorises (with -fno-math-errno).
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] + weight_decay * p[i];
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

namespace {

class Adam : public Optimizer {
 public:
  Adam(const proto::OptimizerSpec& s, int64_t n) : spec_(s), m_(n, 0.f), v_(n, 0.f) {}
  void Step(float* params, const float* grads) override {
    ++t_;
    AdamKernel(params, grads, m_.data(), v_.data(), static_cast<int64_t>(m_.size()),
               spec_.learning_rate(), spec_.beta1(), spec_.beta2(), spec_.epsilon(), t_,
               spec_.weight_decay());
  }
  int64_t step_count() const override { return t_; }
  std::vector<std::pair<std::string, std::vector<float>*>> State() override {
    return {{"m", &m_}, {"v", &v_}};
  }

 private:
  proto::OptimizerSpec spec_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

class Sgd : public Optimizer {
 public:
  Sgd(const proto::OptimizerSpec& s, int64_t n) : spec_(s), velocity_(n, 0.f) {}
  void Step(float* __restrict params, const float* __restrict grads) override {
    ++t_;
    const float lr = spec_.learning_rate(), mu = spec_.momentum(), wd = spec_.weight_decay();
    float* __restrict vel = velocity_.data();
    const int64_t n = static_cast<int64_t>(velocity_.size());
    for (int64_t i = 0; i < n; ++i) {
      float g = grads[i] + wd * params[i];
      vel[i] = mu * vel[i] + g;
      params[i] -= lr * vel[i];
    }
  }
  int64_t step_count() const override { return t_; }
  std::vector<std::pair<std::string, std::vector<float>*>> State() override {
    return {{"velocity", &velocity_}};
  }

 private:
  proto::OptimizerSpec spec_;
  std::vector<float> velocity_;
  int64_t t_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const proto::OptimizerSpec& spec, int64_t n) {
  if (!(spec.learning_rate() > 0)) return InvalidArgument("optimizer.learning_rate must be > 0");
  switch (spec.type()) {
    case proto::OptimizerSpec::ADAM:
      if (!(spec.beta1() >= 0 && spec.beta1() < 1)) return InvalidArgument("optimizer.beta1 must be in [0, 1)");
      if (!(spec.beta2() >= 0 && spec.beta2() < 1)) return InvalidArgument("optimizer.beta2 must be in [0, 1)");
      if (!(spec.epsilon() > 0)) return InvalidArgument("optimizer.epsilon must be > 0");
      return std::unique_ptr<Optimizer>(new Adam(spec, n));
    case proto::OptimizerSpec::SGD:
      return std::unique_ptr<Optimizer>(new Sgd(spec, n));
  }
  return InvalidArgument("optimizer.type {} is not known (ADAM, SGD)", static_cast<int>(spec.type()));
}

}  // namespace polis
