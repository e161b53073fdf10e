// Poisson sampling for DP-SGD (docs/design/privacy.md): at global step t
// every training example joins the step's batch independently with
// probability q, the sampling that the RDP analysis of the subsampled
// Gaussian mechanism assumes (rdp.h). Batch sizes therefore vary: mean qN,
// standard deviation sqrt(qN(1 - q)).
//
// Across workers without a message per step: example i belongs to worker
// i mod W, and worker w draws the coins of its own examples from the
// ChaCha20 stream (key, nonce = (t, w)) (prg.h). The union of the W
// workers' draws is one Poisson sample of the whole set. Draws skip ahead
// geometrically, so a step costs O(qN/W) stream bytes, not O(N/W).
//
// The key should be secret (RandomKey(), kept with the checkpoints): an
// adversary who can predict the batches weakens the analysis' assumption.
//
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "common/privacy/prg.h"

namespace polis::privacy {

// The examples of [0, n) owned by `worker` of `workers` that join step
// `step`'s batch with probability q, ascending. q <= 0: none; q >= 1: all.
std::vector<int64_t> PoissonSample(const Key256& key, uint64_t step, int worker, int workers, int64_t n,
                                   double q);

}  // namespace polis::privacy
