#include "common/privacy/poisson.h"

#include <cmath>
#include <cstring>

#include "common/status.h"

namespace polis::privacy {
namespace {

// Uniform doubles in (0, 1] read 8 bytes at a time from one keystream.
class Uniforms {
 public:
  Uniforms(const Key256& key, uint64_t nonce_lo, uint32_t nonce_hi)
      : key_(key), lo_(nonce_lo), hi_(nonce_hi) {}
  double Next() {
    if (at_ == sizeof(buf_)) Refill();
    uint64_t x;
    std::memcpy(&x, buf_ + at_, sizeof(x));
    at_ += sizeof(x);
    return static_cast<double>((x >> 11) + 1) * 0x1.0p-53;  // 53 random bits, never 0
  }

 private:
  void Refill() {
    ChaCha20Keystream(key_, lo_, hi_, offset_, buf_, sizeof(buf_));
    offset_ += sizeof(buf_);
    at_ = 0;
  }
  const Key256& key_;
  uint64_t lo_;
  uint32_t hi_;
  uint64_t offset_ = 0;
  uint8_t buf_[4096];
  size_t at_ = sizeof(buf_);
};

}  // namespace

std::vector<int64_t> PoissonSample(const Key256& key, uint64_t step, int worker, int workers, int64_t n,
                                   double q) {
  POLIS_ENFORCE_GE(workers, 1);
  POLIS_ENFORCE(worker >= 0 && worker < workers);
  std::vector<int64_t> out;
  if (n <= worker || q <= 0) return out;
  const int64_t mine = (n - worker + workers - 1) / workers;  // examples worker, worker + W, ...
  if (q >= 1) {
    out.reserve(static_cast<size_t>(mine));
    for (int64_t j = 0; j < mine; ++j) out.push_back(worker + j * workers);
    return out;
  }
  out.reserve(static_cast<size_t>(q * static_cast<double>(mine) * 1.2) + 16);
  // The gap before the next chosen example is geometric: P(gap = g) =
  // (1 - q)^g q, drawn as floor(log U / log(1 - q)).
  const double log1mq = std::log1p(-q);
  Uniforms u(key, step, static_cast<uint32_t>(worker));
  for (int64_t j = 0;; ++j) {
    const double gap = std::floor(std::log(u.Next()) / log1mq);
    if (gap >= static_cast<double>(mine - j)) break;
    j += static_cast<int64_t>(gap);
    out.push_back(worker + j * workers);
  }
  return out;
}

}  // namespace polis::privacy
