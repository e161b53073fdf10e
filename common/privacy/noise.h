// Gaussian noise for DP-SGD, reproducible per (key, global step, share).
//
// DP-SGD adds N(0, σ²C²) to each coordinate of the step's sum of clipped
// per-example gradients, once per global step (docs/design/privacy.md).
// Whoever adds it draws coordinate k of step t from the ChaCha20 stream
// (key, t, share) (prg.h) by Box–Muller, so a rerun with the same key draws
// the same noise, and any key range can be drawn on its own.
//
// Split mode, for secure aggregation where no single party sees the sum:
// each of W workers adds its own share s = 0..W-1 with stddev σC/√W; the W
// independent shares sum to exactly N(0, σ²C²).
//
// The key must be secret: whoever knows it can subtract the noise. Use
// RandomKey() at job start and keep it with the checkpoints (never in the
// job spec or a log); KeyFromNumber(job seed) is for tests and for runs
// whose privacy does not matter.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "common/privacy/prg.h"

namespace polis::privacy {

// Standard deviation of one of `shares` equal shares of N(0, (σC)²).
double NoiseStddev(double noise_multiplier, double clip_norm, int shares = 1);

// x[i] += stddev · z_{offset+i} for i in [0, n), z the standard normals of
// stream (key, step, share).
void AddGaussianNoise(const Key256& key, uint64_t step, uint32_t share, double stddev,
                      int64_t offset, float* x, int64_t n);

}  // namespace polis::privacy
