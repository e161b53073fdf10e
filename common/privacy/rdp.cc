#include "common/privacy/rdp.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace polis::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double LogAdd(double a, double b) {
  const double lo = std::min(a, b), hi = std::max(a, b);
  if (lo == -kInf) return hi;
  return std::log1p(std::exp(lo - hi)) + hi;
}

// log(exp(a) - exp(b)), a >= b.
double LogSub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;
  const double d = a - b;
  if (d > 700) return a;  // expm1 would overflow; exp(b) is negligible
  return std::log(std::expm1(d)) + b;
}

// log(erfc(x)); the asymptotic series where erfc underflows (x > ~26).
double LogErfc(double x) {
  const double r = std::erfc(x);
  if (r > 0) return std::log(r);
  const double x2 = x * x;
  return -0.5 * std::log(M_PI) - std::log(x) - x2 - 0.5 / x2 + 0.625 / (x2 * x2) -
         37.0 / 24.0 / (x2 * x2 * x2) + 353.0 / 64.0 / (x2 * x2 * x2 * x2);
}

// log A_α for integer α (MTZ19 §3.3): Σ_i C(α,i) q^i (1-q)^(α-i) exp((i²-i)/(2σ²)).
double LogAInt(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double lq = std::log(q), l1q = std::log1p(-q), s2 = 2 * sigma * sigma;
  const double lg_a1 = std::lgamma(static_cast<double>(alpha) + 1);
  for (int64_t i = 0; i <= alpha; ++i) {
    const double di = static_cast<double>(i);
    const double log_binom = lg_a1 - std::lgamma(di + 1) - std::lgamma(static_cast<double>(alpha - i) + 1);
    const double s = log_binom + di * lq + static_cast<double>(alpha - i) * l1q + (di * di - di) / s2;
    log_a = LogAdd(log_a, s);
  }
  return log_a;
}

// log A_α for fractional α: the two series of MTZ19 §3.3 split at
// z0 = σ² log(1/q − 1) + 1/2, summed until their terms fall below e^-30.
double LogAFrac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double lq = std::log(q), l1q = std::log1p(-q), s2 = 2 * sigma * sigma;
  const double rt2s = std::sqrt(2.0) * sigma;
  // C(α, i) by its recurrence, as log|C| and a sign.
  double log_coef = 0;
  bool positive = true;
  for (int64_t i = 0;; ++i) {
    if (i > 0) {
      const double f = (alpha - static_cast<double>(i) + 1) / static_cast<double>(i);
      if (f == 0) break;  // α is an integer after all: every later term is 0
      log_coef += std::log(std::abs(f));
      if (f < 0) positive = !positive;
    }
    const double di = static_cast<double>(i), j = alpha - di;
    const double log_t0 = log_coef + di * lq + j * l1q;
    const double log_t1 = log_coef + j * lq + di * l1q;
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / rt2s);
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / rt2s);
    const double log_s0 = log_t0 + (di * di - di) / s2 + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
    if (positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30 || i > 100000) break;
  }
  return LogAdd(log_a0, log_a1);
}

}  // namespace

std::vector<double> DefaultOrders() {
  std::vector<double> o;
  for (int x = 1; x < 100; ++x) o.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) o.push_back(a);
  return o;
}

double SubsampledGaussianRdp(double q, double sigma, double order) {
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1) return order / (2 * sigma * sigma);
  if (std::isinf(order)) return kInf;
  const double log_a = order == std::floor(order) && order < 1e6
                           ? LogAInt(q, sigma, static_cast<int64_t>(order))
                           : LogAFrac(q, sigma, order);
  return log_a / (order - 1);
}

std::vector<double> ComputeRdp(double q, double sigma, int64_t steps,
                               const std::vector<double>& orders) {
  std::vector<double> out;
  out.reserve(orders.size());
  for (double a : orders) out.push_back(SubsampledGaussianRdp(q, sigma, a) * static_cast<double>(steps));
  return out;
}

PrivacySpent RdpToEpsilon(const std::vector<double>& orders, const std::vector<double>& rdp,
                          double delta, RdpConversion conversion) {
  PrivacySpent best{kInf, 0};
  for (size_t k = 0; k < orders.size() && k < rdp.size(); ++k) {
    const double a = orders[k], r = rdp[k];
    if (!(a > 1) || std::isnan(r)) continue;
    double eps;
    if (conversion == RdpConversion::kClassic) {
      eps = r - std::log(delta) / (a - 1);
    } else if (delta * delta + std::expm1(-r) >= 0) {
      eps = 0;  // the KL bound δ <= sqrt(1 - exp(-r)) already gives ε = 0
    } else if (a > 1.01) {  // the bound is unstable as α -> 1
      eps = r + std::log1p(-1 / a) - std::log(delta * a) / (a - 1);
    } else {
      eps = kInf;
    }
    if (eps < best.epsilon) best = {eps, a};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

void RdpAccountant::Step(double q, double sigma, int64_t steps) {
  for (size_t k = 0; k < orders_.size(); ++k)
    rdp_[k] += SubsampledGaussianRdp(q, sigma, orders_[k]) * static_cast<double>(steps);
  steps_ += steps;
}

PrivacySpent RdpAccountant::Spent(double delta, RdpConversion c) const {
  return RdpToEpsilon(orders_, rdp_, delta, c);
}

StatusOr<double> NoiseMultiplierForEpsilon(double target_epsilon, double delta, double q,
                                           int64_t steps, double tolerance, RdpConversion c) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon))
    return InvalidArgument("target_epsilon must be > 0 and finite, got {}", target_epsilon);
  if (!(delta > 0 && delta < 1)) return InvalidArgument("delta must be in (0, 1), got {}", delta);
  if (!(q > 0 && q <= 1)) return InvalidArgument("sampling rate q must be in (0, 1], got {}", q);
  if (steps < 1) return InvalidArgument("steps must be >= 1, got {}", steps);
  const std::vector<double> orders = DefaultOrders();
  auto eps_at = [&](double sigma) {
    return RdpToEpsilon(orders, ComputeRdp(q, sigma, steps, orders), delta, c).epsilon;
  };
  double lo = 0, hi = 1;
  while (eps_at(hi) > target_epsilon) {
    lo = hi;
    hi *= 2;
    if (hi > 1e6)
      return InvalidArgument("target_epsilon {} at delta {} is out of reach: even noise_multiplier 1e6 spends more",
                             target_epsilon, delta);
  }
  // Invariant: eps(hi) <= target < eps(lo) (lo = 0 means "no noise").
  while (hi - lo > tolerance * hi) {
    const double mid = 0.5 * (lo + hi);
    if (eps_at(mid) > target_epsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}

}  // namespace polis::privacy
