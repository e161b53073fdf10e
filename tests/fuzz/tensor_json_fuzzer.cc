// Open Inference Protocol v2 requests (registry/tensor_json.h), as the
// registry's infer and explain handlers read them: ParseRequestBody (simdjson
// with the nlohmann fallback, the fast flat "data" path and the binary tensor
// extension), BinarySlices, then DecodeInputTensor against a fixed model
// signature (input "input", samples of shape [2, 3], at most 4 rows and 24
// elements, pixels scaled by 1/255).
//
// Input: one mode byte, then the body. Mode bit 0 set: the body's first line
// is the Inference-Header-Content-Length value and the rest is the body.
// Mode bit 1 set: the fast path is off (fast_input names no input), so the
// same request goes through the DOM.
#include <cmath>

#include "registry/tensor_json.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  using namespace polis::registry;
  if (size < 1) return 0;
  std::string_view rest = fuzz::AsView(data + 1, size - 1);
  std::string header_length;
  if (data[0] & 1) {
    const size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) return 0;
    header_length = std::string(rest.substr(0, nl));
    rest.remove_prefix(nl + 1);
  }
  const std::string body(rest);
  auto parsed = ParseRequestBody(body, /*allow_empty=*/false, data[0] & 2 ? "" : "input", header_length);
  if (!parsed.ok()) return 0;
  POLIS_FUZZ_CHECK(parsed->doc.is_object());
  auto slices = BinarySlices(*parsed);
  if (!slices.ok()) return 0;
  auto inputs = parsed->doc.find("inputs");
  if (inputs == parsed->doc.end() || !inputs->is_array() || inputs->size() != 1) return 0;
  POLIS_FUZZ_CHECK(slices->size() == 1);
  InputTensorSpec spec;
  spec.name = "input";
  spec.sample_shape = {2, 3};
  spec.max_batch = 4;
  spec.max_elements = 24;
  spec.scale = 1.0f / 255;
  bool too_large = false;
  auto in = DecodeInputTensor((*inputs)[0], spec, &too_large,
                              parsed->has_fast_data && parsed->fast_index == 0 ? &parsed->fast_data
                                                                               : nullptr,
                              (*slices)[0] ? &*(*slices)[0] : nullptr);
  if (!in.ok()) return 0;
  POLIS_FUZZ_CHECK(!too_large);
  POLIS_FUZZ_CHECK(in->rows >= 1 && in->rows <= spec.max_batch);
  POLIS_FUZZ_CHECK(static_cast<int64_t>(in->values.size()) == in->rows * 6);
  for (float v : in->values) POLIS_FUZZ_CHECK(std::isfinite(v));
  std::string out;
  AppendJsonFloats(out, in->values.data(), in->values.size());
  return 0;
}
