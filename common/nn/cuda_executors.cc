// What the CUDA backend runs, without CUDA: the layer types
// common/nn/cuda/cuda_layers.cc builds, and the settings it refuses.
// CudaExecutorsMatchTheBackend (tests/gpu) checks this list against the
// backend's own, on any machine that builds it.
#include <fmt/format.h>

#include "common/nn/layer.h"
#include "common/status.h"

namespace polis::nn {

namespace {

// The CUDA Conv2D and Dense fuse ReLU only.
std::string FusedReluOnly(const proto::LayerSpec& spec) {
  if (spec.activation() == proto::NONE || spec.activation() == proto::RELU) return "";
  return fmt::format("activation {} has no CUDA kernel (RELU and NONE do)", proto::Activation_Name(spec.activation()));
}

}  // namespace

void RegisterCudaExecutors(LayerRegistry& r) {
  const std::pair<const char*, BackendCheck> kTypes[] = {
      {"Conv2D", FusedReluOnly},
      {"Dense", FusedReluOnly},
      {"MaxPool2D", nullptr},
      {"ReLU", nullptr},
      {"Flatten", nullptr},
      {"Embedding", nullptr},
      {"LSTM", nullptr},
      {"GRU", nullptr},
      {"Dropout", nullptr},
      {"LayerNorm", nullptr},
      {"GELU", nullptr},
      {"MultiHeadSelfAttention", nullptr},
      {"TransformerEncoderBlock", nullptr},
      {"PositionalEncoding", nullptr},
      {"SequencePool", nullptr},
  };
  for (const auto& [name, check] : kTypes) POLIS_ENFORCE_OK(r.RegisterExecutor(device::Kind::kCuda, name, check));
}

}  // namespace polis::nn
