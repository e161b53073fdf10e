// Asynchronous successive halving (ASHA; Li et al., "A System for Massively
// Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2).
//
// Rung k trains a trial to RungEpochs()[k] epochs: grace_period * eta^k
// while that is below max_epochs, and max_epochs last. Whenever a slot
// frees up, NextPromotion looks from the highest rung down for a trial that
// is in the top floor(n_k / eta) of the n_k results rung k has so far and
// has not been promoted from it yet; that trial continues (from its
// checkpoint) to rung k + 1. Only when nothing is promotable does a new
// trial start at rung 0. No rung waits for a full cohort: promotions happen
// as results arrive, so a slow trial never holds up the others.
//
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <set>
#include <vector>

namespace polis::tune {

std::vector<int> RungEpochs(int grace_period, int reduction_factor, int max_epochs);

struct RungResult {
  int trial = 0;       // the trial's index
  double value = 0;    // its objective at the rung's epoch
};

struct Promotion {
  int trial = 0;
  int to_rung = 0;
};

// `rungs[k]`: the results rung k has; `promoted[k]`: the trials already
// promoted out of rung k. Ties go to the trial with the lower index.
std::optional<Promotion> NextPromotion(const std::vector<std::vector<RungResult>>& rungs,
                                       const std::vector<std::set<int>>& promoted, int reduction_factor,
                                       bool maximize);

}  // namespace polis::tune
