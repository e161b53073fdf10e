// The numerical gradient checker shared by gradient_check_test.cc and
// seq_layers_test.cc.
//
// Loss L = sum(w ⊙ output) with fixed random w, so dL/doutput = w. Analytic
// gradients from Backward are compared with central differences in double
// precision of the float32 forward pass. The gradient buffer is filled with
// garbage before Backward, so a layer that accumulates into it, or leaves an
// entry unwritten, fails the check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "common/nn/model.h"

namespace polis::nn {

struct Checker {
  const Model& model;
  int64_t batch;
  std::vector<float> params, grads, input, w;
  std::unique_ptr<Network> net;

  Checker(const Model& m, int64_t b, uint64_t seed) : model(m), batch(b) {
    params.resize(m.parameter_count());
    grads.resize(m.parameter_count());
    m.InitParams(params.data(), seed);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    // Non-zero biases so every path is exercised.
    for (auto& p : params) p += 0.05f * u(rng);
    net = std::make_unique<Network>(m, b, params.data(), grads.data(), true, true);
    input.resize(b * ShapeElements(m.input_shape()));
    for (auto& x : input) x = u(rng);
    w.resize(b * ShapeElements(m.output_shape()));
    for (auto& x : w) x = u(rng);
  }

  double Loss() {
    std::copy(input.begin(), input.end(), net->input());
    net->Forward();
    const float* out = net->output();
    double l = 0;
    for (size_t i = 0; i < w.size(); ++i) l += static_cast<double>(w[i]) * out[i];
    return l;
  }

  void Analytic() {
    Loss();
    std::copy(w.begin(), w.end(), net->output_diff());
    std::fill(grads.begin(), grads.end(), 1e3f);  // Backward must overwrite every entry
    net->Backward();
  }

  // Checks up to `samples` coordinates of a vector against central
  // differences. Where the forward and backward one-sided differences
  // disagree, the step crossed a kink (ReLU at 0, a max-pool tie) and the
  // coordinate is skipped, as Caffe's checker does; most must be checked.
  void Check(std::vector<float>& x, const float* analytic, int samples, const char* what) {
    if (x.empty()) return;
    std::mt19937 rng(7);
    std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
    const float eps = 1e-3f;
    int bad = 0, checked = 0, kinks = 0;
    const double l0 = Loss();
    for (int s = 0; s < samples; ++s) {
      size_t i = samples >= static_cast<int>(x.size()) ? static_cast<size_t>(s) : pick(rng);
      if (i >= x.size()) break;
      float orig = x[i];
      x[i] = orig + eps;
      double lp = Loss();
      x[i] = orig - eps;
      double lm = Loss();
      x[i] = orig;
      double fwd = (lp - l0) / eps, bwd = (l0 - lm) / eps;
      if (std::abs(fwd - bwd) > 0.01 * std::max(1.0, std::abs(fwd) + std::abs(bwd))) {
        ++kinks;
        continue;
      }
      ++checked;
      double numeric = (lp - lm) / (2.0 * eps);
      double a = analytic[i];
      double err = std::abs(numeric - a) / std::max(1.0, std::abs(numeric) + std::abs(a));
      if (err > 1e-2) {
        ++bad;
        ADD_FAILURE() << what << "[" << i << "]: analytic " << a << " numeric " << numeric;
        if (bad > 5) return;
      }
    }
    EXPECT_GE(checked, 3 * kinks) << what << ": too many kinks (" << kinks << ") to trust the check";
  }

  // check_input = false for inputs that are not differentiable (ids).
  void Run(int samples = 60, bool check_input = true) {
    Analytic();
    std::vector<float> g = grads;
    std::vector<float> dx(net->input_diff(), net->input_diff() + input.size());
    Check(params, g.data(), samples, "param");
    if (check_input) Check(input, dx.data(), samples, "input");
  }
};

}  // namespace polis::nn
