// The validation split of a labelled training set: `count` samples held out,
// stratified by class (each class keeps its share of the training set, to
// within one sample), drawn with the job's seed. It depends only on the
// labels, the count and the seed, so every rank of a job computes the same
// split whatever the worker count. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "common/proto/job.pb.h"

namespace polis::data {

struct TrainValidationSplit {
  std::vector<int64_t> train, validation;  // indices into the labels, ascending
};

// labels[i] in [0, num_classes); 0 <= count <= labels.size(). Per class,
// floor(n_c * count / n) samples, plus one for the classes with the largest
// remainders (ties to the lower class) until `count` are taken; which ones
// is a seeded shuffle of the class's indices.
TrainValidationSplit StratifiedSplit(const std::vector<int32_t>& labels, int num_classes, int64_t count,
                                     uint64_t seed);

// Samples dataset.validation_fraction or dataset.validation_size holds out
// of `train_samples` (the fraction rounded to the nearest sample).
int64_t ValidationCount(const proto::DatasetSpec& spec, int64_t train_samples);

}  // namespace polis::data
