#include "common/privacy/noise.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace polis::privacy {

double NoiseStddev(double noise_multiplier, double clip_norm, int shares) {
  return noise_multiplier * clip_norm / std::sqrt(static_cast<double>(shares));
}

void AddGaussianNoise(const Key256& key, uint64_t step, uint32_t share, double stddev,
                      int64_t offset, float* x, int64_t n) {
  // Normals come in pairs: pair m (coordinates 2m, 2m+1) is Box–Muller of
  // the two 64-bit words at keystream bytes [16m, 16m + 16).
  constexpr int64_t kPairsPerChunk = 512;
  uint64_t words[2 * kPairsPerChunk];
  int64_t k = offset;
  const int64_t end = offset + n;
  while (k < end) {
    const int64_t first_pair = k / 2;
    const int64_t pairs = std::min<int64_t>(kPairsPerChunk, (end + 1) / 2 - first_pair);
    ChaCha20Keystream(key, step, share, static_cast<uint64_t>(first_pair) * 16,
                      reinterpret_cast<uint8_t*>(words), static_cast<size_t>(pairs) * 16);
    for (int64_t p = 0; p < pairs; ++p) {
      // u1 in (0, 1], u2 in [0, 1): 53 random bits each.
      const double u1 = (static_cast<double>(words[2 * p] >> 11) + 1.0) * 0x1p-53;
      const double u2 = static_cast<double>(words[2 * p + 1] >> 11) * 0x1p-53;
      const double r = std::sqrt(-2.0 * std::log(u1));
      const double z[2] = {r * std::cos(2 * M_PI * u2), r * std::sin(2 * M_PI * u2)};
      for (int h = 0; h < 2; ++h) {
        const int64_t c = 2 * (first_pair + p) + h;
        if (c >= offset && c < end) x[c - offset] += static_cast<float>(stddev * z[h]);
      }
    }
    k = 2 * (first_pair + pairs);
  }
}

}  // namespace polis::privacy
