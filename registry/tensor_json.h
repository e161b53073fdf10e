// Tensors of the Open Inference Protocol's JSON encoding, to and from the
// float buffers a ServedVersion takes.
//
// An input tensor is {"name", "shape", "datatype", "data"} where shape is
// [batch, <the model's input shape>] and data holds the values row-major,
// either flat ([v0, v1, ...]) or nested to match the shape ([[...], ...]).
// Datatypes: FP16, FP32, FP64 are taken as model inputs as they are;
// INT8..INT64 and UINT8..UINT64 are raw values (e.g. pixels 0..255) and are
// preprocessed like the training data: value * scale + shift, with the
// job's dataset scale and shift. BOOL and BYTES are refused.
//
// Every refusal says which input, which element (data[0][3]), what was
// expected and what was found. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/nn/layer.h"
#include "common/status.h"

namespace polis::registry {

struct InputTensorSpec {
  std::string name;        // the model's input name
  nn::Shape sample_shape;  // without the batch dimension
  int64_t max_batch = 0;
  int64_t max_elements = 0;  // per tensor; beyond it the request is too large (413)
  float scale = 1, shift = 0;
};

struct DecodedInput {
  std::vector<float> values;  // rows x sample elements
  int64_t rows = 0;
  std::string datatype;
};

// On refusal, *too_large tells a request over max_elements (413) from a
// malformed one (400).
StatusOr<DecodedInput> DecodeInputTensor(const nlohmann::json& tensor, const InputTensorSpec& spec,
                                         bool* too_large);

// Appends a JSON array of floats in their shortest round-trip form; a
// non-finite value is written as null (JSON has no NaN or Infinity).
void AppendJsonFloats(std::string& out, const float* values, size_t n);
// A JSON string literal, invalid UTF-8 replaced.
std::string JsonQuote(const std::string& s);

// "[-1,1,28,28]"
std::string ShapeJson(const std::vector<int64_t>& shape);

}  // namespace polis::registry
