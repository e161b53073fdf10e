// Samplers: which settings trial N of a study gets.
//
// Both are functions of the trial's index alone, so a resumed study draws
// the same settings for the same trial without saving any generator state:
//   GRID    the Cartesian product of every param's grid (choice: its values;
//           int_range: min, min+step, ...; uniform: grid_points evenly
//           spaced; log_uniform: grid_points evenly spaced in log), the last
//           param varying fastest; trial N is point N; Size() points in all.
//   RANDOM  every param drawn independently from a generator seeded by
//           (study seed, N): choice uniformly, uniform and log_uniform
//           uniformly in [min, max] (in log space for log_uniform; integer
//           fields rounded), int_range uniformly over its steps.
// A param whose `when` condition does not hold for the trial gets null (the
// field is not set): GRID enumerates it once, not once per value; RANDOM
// still draws it, so the params after it get the values they would get
// without the condition.
// No model-based sampler: with tens of trials on a few cores, ASHA's early
// stopping saves more than a surrogate model would (docs/tuning.md).
//
// Stateless after construction; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/proto/study.pb.h"
#include "launch/tune/study.h"

namespace polis::tune {

// The number of grid points of the study's space (a double: it may be huge).
double GridSize(const proto::StudySpec& spec);

// The values one param takes on the grid, typed for its field.
std::vector<nlohmann::json> GridValues(const proto::SearchParam& param, const google::protobuf::FieldDescriptor* field);

class Sampler {
 public:
  // `study` must have passed ParseStudyText.
  explicit Sampler(const LoadedStudy& study);
  // Trial `index`'s settings; nullopt past the end of a grid.
  std::optional<Params> Sample(int64_t index) const;
  // Points of the grid; -1 for RANDOM (no end).
  int64_t Size() const { return size_; }

 private:
  void EnumerateGrid(Params* prefix, std::vector<int>* digits);

  proto::StudySpec spec_;
  proto::JobSpec base_;
  std::vector<const google::protobuf::FieldDescriptor*> fields_;
  std::vector<std::vector<nlohmann::json>> grid_;  // GRID: each param's values
  std::vector<std::vector<int>> points_;           // GRID: each point's value index per param (-1: null)
  int64_t size_ = -1;
};

}  // namespace polis::tune
