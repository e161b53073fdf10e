#include "common/data/image_dataset.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "common/data/idx.h"
#include "common/log.h"

namespace polis::data {

StatusOr<ImageDataset> ImageDataset::Open(const std::string& images_path,
                                          const std::string& labels_path, int num_classes,
                                          float scale, float shift, int64_t limit) {
  if (num_classes < 1) {
    return InvalidArgument("image dataset '{}': num_classes is {}; expected >= 1", images_path,
                           num_classes);
  }
  POLIS_ASSIGN_OR_RETURN(IdxArray images, ReadIdx(images_path));
  if (images.dims.size() != 3) {
    return InvalidArgument("'images' file '{}' has {} dims [{}]; expected 3 (N, H, W)",
                           images_path, images.dims.size(), fmt::join(images.dims, ", "));
  }
  POLIS_ASSIGN_OR_RETURN(IdxArray labels, ReadIdx(labels_path));
  if (labels.dims.size() != 1) {
    return InvalidArgument("'labels' file '{}' has {} dims [{}]; expected 1 (N)", labels_path,
                           labels.dims.size(), fmt::join(labels.dims, ", "));
  }
  if (labels.dims[0] != images.dims[0]) {
    return InvalidArgument("'labels' has {} items but 'images' has {} (labels '{}', images '{}')",
                           labels.dims[0], images.dims[0], labels_path, images_path);
  }
  // Every label is checked, even past `limit`: a bad one means a bad file.
  constexpr int64_t kLabelHeaderBytes = 8;  // magic + one dim
  for (int64_t i = 0; i < labels.dims[0]; ++i) {
    if (labels.data[i] >= num_classes) {
      return InvalidArgument(
          "'{}': label {} at index {} (byte offset {}) is out of range for {} classes", labels_path,
          labels.data[i], i, kLabelHeaderBytes + i, num_classes);
    }
  }

  ImageDataset ds;
  ds.size_ = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  ds.height_ = images.dims[1];
  ds.width_ = images.dims[2];
  ds.num_classes_ = num_classes;
  ds.pixels_ = std::move(images.data);
  ds.pixels_.resize(static_cast<size_t>(ds.size_ * ds.height_ * ds.width_));
  ds.pixels_.shrink_to_fit();
  ds.labels_ = std::move(labels.data);
  ds.labels_.resize(static_cast<size_t>(ds.size_));
  ds.labels_.shrink_to_fit();
  for (int v = 0; v < 256; ++v) ds.lut_[v] = static_cast<float>(v) * scale + shift;
  POLIS_LOG(kInfo, kData, "image dataset '{}': {} samples of 1x{}x{}, {} classes", images_path,
            ds.size_, ds.height_, ds.width_, num_classes);
  return ds;
}

void ImageDataset::Gather(const int64_t* indices, int64_t n, float* dst, int32_t* labels) const {
  const int64_t elements = sample_elements();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = indices[k];
    POLIS_ENFORCE_GE(i, int64_t{0});
    POLIS_ENFORCE_LT(i, size_);
    const uint8_t* src = pixels_.data() + i * elements;
    float* out = dst + k * elements;
    for (int64_t e = 0; e < elements; ++e) out[e] = lut_[src[e]];
    labels[k] = labels_[i];
  }
}

int32_t ImageDataset::label(int64_t i) const {
  POLIS_ENFORCE_GE(i, int64_t{0});
  POLIS_ENFORCE_LT(i, size_);
  return labels_[i];
}

}  // namespace polis::data
