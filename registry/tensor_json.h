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
#include <optional>
#include <string>
#include <string_view>
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

// A JSON number as the parser saw it: integers keep their exact value
// (INT and UINT datatypes refuse fractions), others are doubles.
struct JsonNumber {
  enum Kind : uint8_t { kInt, kUint, kFloat } kind = kFloat;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;  // the value as a double, for every kind
};

// A request body parsed for the inference hot path. simdjson reads the
// body; everything becomes nlohmann JSON as json::parse would have made it,
// except the flat all-number "data" array of the first input tensor whose
// "name" is `fast_input`: that one is kept as numbers in `fast_data` (and
// "data" is absent from that tensor in `doc`), so the largest part of an
// infer request never becomes a DOM. Anything simdjson refuses (invalid
// JSON, integers beyond 64 bits) is parsed by nlohmann instead, whose error
// messages users get. `doc` must be an object.
//
// The binary tensor extension: with `header_length` (the request's
// Inference-Header-Content-Length, "" when absent) the body's first that
// many bytes are the JSON and the rest is `binary`, the tensors' raw bytes
// one after another in "inputs" order (each tensor's
// parameters.binary_data_size; see BinarySlices).
struct ParsedBody {
  nlohmann::json doc;
  bool has_fast_data = false;
  size_t fast_index = 0;  // which element of "inputs" it came from
  std::vector<JsonNumber> fast_data;
  std::string binary;
};
StatusOr<ParsedBody> ParseRequestBody(const std::string& body, bool allow_empty,
                                      std::string_view fast_input = "input",
                                      const std::string& header_length = "");
// The binary section cut per input: element i is inputs[i]'s bytes, or null
// for an input sent as JSON. InvalidArgument when a binary_data_size is not
// a non-negative integer or the sizes do not add up to the section.
StatusOr<std::vector<std::optional<std::string_view>>> BinarySlices(const ParsedBody& body);

// BYTES elements in the binary tensor encoding (also gRPC's
// raw_input_contents for BYTES): per element a 4-byte little-endian length,
// then that many bytes. `who` starts each refusal.
StatusOr<std::vector<std::string_view>> SplitBinaryBytes(std::string_view data, const std::string& who);
void AppendBinaryBytes(std::string& out, std::string_view element);
std::string JoinBinaryBytes(const std::vector<std::string>& elements);

// On refusal, *too_large tells a request over max_elements (413) from a
// malformed one (400). `fast_data`, when given, is the tensor's flat "data"
// (ParsedBody) and tensor["data"] is not read. `binary`, when given, is the
// tensor's bytes from the binary tensor extension (little-endian elements
// of the datatype, row-major; its parameters.binary_data_size), decoded
// with the same rules as JSON values.
StatusOr<DecodedInput> DecodeInputTensor(const nlohmann::json& tensor, const InputTensorSpec& spec,
                                         bool* too_large,
                                         const std::vector<JsonNumber>* fast_data = nullptr,
                                         const std::string_view* binary = nullptr);

// Appends a JSON array of floats in their shortest round-trip form; a
// non-finite value is written as null (JSON has no NaN or Infinity).
void AppendJsonFloats(std::string& out, const float* values, size_t n);
// A JSON string literal, invalid UTF-8 replaced.
std::string JsonQuote(const std::string& s);

// "[-1,1,28,28]"
std::string ShapeJson(const std::vector<int64_t>& shape);

}  // namespace polis::registry
