// ImageDataset: a labelled single-channel image set read from an images IDX
// (N, H, W) and a labels IDX (N), e.g. MNIST or Fashion-MNIST.
//
// Open does all the reading and checking; Gather is the per-step hot path and
// neither allocates nor logs. Pixels stay as the file's uint8 bytes and become
// floats through a 256-entry table, so memory is a quarter of a float copy.
// Immutable after Open: any number of threads may call the const methods.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace polis::data {

class ImageDataset {
 public:
  // Fails if the images are not 3-D or the labels not 1-D, if the counts
  // disagree ("'labels' has 59999 items but 'images' has 60000"), or if a
  // label is >= num_classes (naming the file, the index and the byte offset).
  // limit > 0 keeps only the first `limit` samples; limit <= 0 keeps all.
  // Each pixel becomes value * scale + shift.
  static StatusOr<ImageDataset> Open(const std::string& images_path,
                                     const std::string& labels_path, int num_classes, float scale,
                                     float shift, int64_t limit);

  int64_t size() const { return size_; }
  std::vector<int64_t> sample_shape() const { return {1, height_, width_}; }  // {C, H, W}
  int64_t sample_elements() const { return height_ * width_; }
  int num_classes() const { return num_classes_; }

  // Writes the samples at `indices` (each in [0, size())) into dst as
  // n x sample_elements() floats in NCHW order, and their labels into
  // labels[n]. An index out of range is a caller bug and aborts.
  void Gather(const int64_t* indices, int64_t n, float* dst, int32_t* labels) const;
  int32_t label(int64_t i) const;

 private:
  ImageDataset() = default;

  int64_t size_ = 0;
  int64_t height_ = 0;
  int64_t width_ = 0;
  int num_classes_ = 0;
  std::vector<uint8_t> pixels_;  // size_ x height_ x width_, row-major
  std::vector<uint8_t> labels_;  // size_, each < num_classes_
  std::array<float, 256> lut_{};  // lut_[v] = v * scale + shift
};

}  // namespace polis::data
