// Rényi-DP accountant for DP-SGD: the Poisson-subsampled Gaussian mechanism.
//
// One DP-SGD step samples each training example independently with
// probability q, clips each sampled example's gradient to norm C and adds
// N(0, σ²C²) to their sum. Its Rényi divergence of order α is computed as
// TF Privacy's compute_rdp does (Mironov 2017, "Rényi Differential Privacy";
// Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled
// Gaussian Mechanism"): exactly, by the binomial sum, for integer α, and by
// the two-sided series of MTZ19 §3.3 for fractional α. Steps compose by
// adding RDP at each order. Conversion to (ε, δ) uses the improved bound of
// Balle et al. 2020 ("Hypothesis testing interpretations and Rényi DP",
// Theorem 21; also Canonne, Kamath, Steinke 2020, Prop. 12), as Opacus and
// TF Privacy do today:
//   ε = min_α  rdp(α) + log((α-1)/α) − (log δ + log α) / (α − 1),
// or, on request, the classic bound of Mironov 2017 Prop. 3,
//   ε = min_α  rdp(α) − log δ / (α − 1).
// docs/design/privacy.md explains how Polis samples so that this analysis
// applies.
//
// Thread-safety: free functions are pure; an RdpAccountant is a value used
// by one thread (the coordinator's).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace polis::privacy {

// Opacus's DEFAULT_ALPHAS (and TF Privacy's tutorial orders):
// 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
std::vector<double> DefaultOrders();

// RDP of order `order` (> 1) of one step: sampling rate q in [0, 1], noise
// multiplier sigma = noise stddev / clip norm (> 0). +inf where unbounded.
double SubsampledGaussianRdp(double q, double sigma, double order);

// RDP of `steps` steps at each order.
std::vector<double> ComputeRdp(double q, double sigma, int64_t steps,
                               const std::vector<double>& orders);

enum class RdpConversion {
  kImproved,  // Balle et al. 2020 Thm 21 (Opacus, and TF Privacy's current get_privacy_spent)
  kClassic,   // Mironov 2017 Prop. 3 (earlier TF Privacy; its tutorial README figures)
};

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the order that gave the minimum
};

// ε for δ from RDP values at `orders`. delta must be in (0, 1).
PrivacySpent RdpToEpsilon(const std::vector<double>& orders, const std::vector<double>& rdp,
                          double delta, RdpConversion conversion = RdpConversion::kImproved);

// Running account of a training job: Step() after every global step (or
// several at once), Spent() at any time.
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = DefaultOrders());
  // Composes `steps` more steps at rate q and noise multiplier sigma.
  void Step(double q, double sigma, int64_t steps = 1);
  PrivacySpent Spent(double delta, RdpConversion c = RdpConversion::kImproved) const;
  int64_t steps() const { return steps_; }
  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_, rdp_;
  int64_t steps_ = 0;
};

// The smallest noise multiplier (to within `tolerance`, relative) for which
// `steps` steps at rate q spend at most target_epsilon at delta, found by
// bisection on σ (ε falls as σ grows). The returned σ always satisfies the
// target. InvalidArgument naming the argument for ε <= 0, δ outside (0, 1),
// q outside (0, 1], steps < 1, or a target no σ <= 1e6 reaches.
StatusOr<double> NoiseMultiplierForEpsilon(double target_epsilon, double delta, double q,
                                           int64_t steps, double tolerance = 1e-6,
                                           RdpConversion c = RdpConversion::kImproved);

}  // namespace polis::privacy
