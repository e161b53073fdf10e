#include "registry/tensor_json.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace polis::registry {
namespace {

using json = nlohmann::json;

struct DType {
  const char* name;
  bool is_float;
  double min, max;  // integer types
};

constexpr DType kTypes[] = {
    {"FP16", true, 0, 0},
    {"FP32", true, 0, 0},
    {"FP64", true, 0, 0},
    {"INT8", false, -128, 127},
    {"INT16", false, -32768, 32767},
    {"INT32", false, -2147483648.0, 2147483647.0},
    {"INT64", false, -9223372036854775808.0, 9223372036854775807.0},
    {"UINT8", false, 0, 255},
    {"UINT16", false, 0, 65535},
    {"UINT32", false, 0, 4294967295.0},
    {"UINT64", false, 0, 18446744073709551615.0},
};

std::string Dump(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

std::string IndexPath(const std::vector<size_t>& idx) {
  std::string out = "data";
  for (size_t i : idx) out += fmt::format("[{}]", i);
  return out;
}

class Converter {
 public:
  Converter(const DType& t, const InputTensorSpec& spec) : t_(t), spec_(spec) {}

  // Empty string on success, else why.
  std::string Convert(const json& v, float* out) const {
    if (t_.is_float) {
      if (!v.is_number()) return fmt::format("{} is not a number", Dump(v));
      const double d = v.get<double>();
      const float f = static_cast<float>(d);
      if (!std::isfinite(f)) return fmt::format("{} is out of range for {}", Dump(v), t_.name);
      *out = f;
      return {};
    }
    if (!v.is_number_integer())
      return fmt::format("{} is not an integer ({} values are integers)", Dump(v), t_.name);
    const double d = v.is_number_unsigned() ? static_cast<double>(v.get<uint64_t>())
                                            : static_cast<double>(v.get<int64_t>());
    if (d < t_.min || d > t_.max)
      return fmt::format("{} is out of range for {} ({}..{})", Dump(v), t_.name,
                         static_cast<long double>(t_.min), static_cast<long double>(t_.max));
    *out = static_cast<float>(d) * spec_.scale + spec_.shift;
    return {};
  }

 private:
  const DType& t_;
  const InputTensorSpec& spec_;
};

}  // namespace

std::string ShapeJson(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

std::string JsonQuote(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

void AppendJsonFloats(std::string& out, const float* values, size_t n) {
  out.push_back('[');
  for (size_t i = 0; i < n; ++i) {
    if (i) out.push_back(',');
    if (std::isfinite(values[i])) fmt::format_to(std::back_inserter(out), "{}", values[i]);
    else out += "null";
  }
  out.push_back(']');
}

StatusOr<DecodedInput> DecodeInputTensor(const nlohmann::json& tensor, const InputTensorSpec& spec,
                                         bool* too_large) {
  *too_large = false;
  const std::string who = fmt::format("input '{}'", spec.name);
  if (!tensor.is_object()) return InvalidArgument("{}: a tensor must be a JSON object", who);

  std::vector<int64_t> model_shape{-1};
  model_shape.insert(model_shape.end(), spec.sample_shape.begin(), spec.sample_shape.end());

  // shape
  auto shape_it = tensor.find("shape");
  if (shape_it == tensor.end() || !shape_it->is_array())
    return InvalidArgument("{}: \"shape\" is required (an array such as {})", who,
                           ShapeJson(model_shape));
  std::vector<int64_t> shape;
  for (const auto& d : *shape_it) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      return InvalidArgument("{}: \"shape\" must hold non-negative integers, found {}", who, Dump(d));
    shape.push_back(d.get<int64_t>());
  }
  bool matches = shape.size() == model_shape.size();
  for (size_t i = 1; matches && i < shape.size(); ++i) matches = shape[i] == model_shape[i];
  if (!matches)
    return InvalidArgument("{}: shape {} does not match the model's input shape {} (batch first)",
                           who, ShapeJson(shape), ShapeJson(model_shape));
  const int64_t rows = shape[0];
  if (rows < 1) return InvalidArgument("{}: the batch dimension is 0; send at least one row", who);
  if (rows > spec.max_batch)
    return InvalidArgument("{}: batch of {} rows exceeds the model's max_batch_size {}", who, rows,
                           spec.max_batch);
  const int64_t per_row = nn::ShapeElements(spec.sample_shape);
  const int64_t total = rows * per_row;
  if (total > spec.max_elements) {
    *too_large = true;
    return InvalidArgument("{}: {} elements exceed the limit of {} per tensor (--max-tensor-elements)",
                           who, total, spec.max_elements);
  }

  // datatype
  auto dt_it = tensor.find("datatype");
  if (dt_it == tensor.end() || !dt_it->is_string())
    return InvalidArgument("{}: \"datatype\" is required (FP32, UINT8, INT64, ...)", who);
  const std::string dt = dt_it->get<std::string>();
  const DType* type = nullptr;
  for (const auto& t : kTypes)
    if (dt == t.name) type = &t;
  if (!type)
    return InvalidArgument(
        "{}: datatype '{}' is not accepted; send FP16/FP32/FP64 model inputs or "
        "INT8..INT64/UINT8..UINT64 raw values",
        who, dt);
  if (auto p = tensor.find("parameters"); p != tensor.end() && p->is_object() &&
                                          p->contains("binary_data_size"))
    return InvalidArgument("{}: binary tensor data is not supported; send the values in \"data\"",
                           who);

  // data
  auto data_it = tensor.find("data");
  if (data_it == tensor.end() || !data_it->is_array())
    return InvalidArgument("{}: \"data\" is required: an array of {} values, flat or nested as {}",
                           who, total, ShapeJson(shape));
  const json& data = *data_it;
  DecodedInput out;
  out.rows = rows;
  out.datatype = dt;
  out.values.resize(static_cast<size_t>(total));
  Converter conv(*type, spec);

  const bool flat = data.empty() || !data[0].is_array();
  if (flat) {
    if (static_cast<int64_t>(data.size()) != total)
      return InvalidArgument(
          "{}: \"data\" holds {} values but shape {} needs {} (flat, row-major)", who, data.size(),
          ShapeJson(shape), total);
    for (size_t i = 0; i < data.size(); ++i) {
      std::string why = conv.Convert(data[i], &out.values[i]);
      if (!why.empty()) return InvalidArgument("{}: data[{}] = {}", who, i, why);
    }
    return out;
  }

  // Nested: every level an array of exactly shape[depth] elements.
  std::vector<size_t> idx;
  size_t at = 0;
  std::string error;
  auto walk = [&](auto& self, const json& j, size_t depth) -> bool {
    if (depth == shape.size()) {
      std::string why = conv.Convert(j, &out.values[at++]);
      if (!why.empty()) {
        error = fmt::format("{}: {} = {}", who, IndexPath(idx), why);
        return false;
      }
      return true;
    }
    if (!j.is_array()) {
      error = fmt::format("{}: {} is {}, but shape {} needs an array of {} at dimension {}", who,
                          IndexPath(idx), Dump(j), ShapeJson(shape), shape[depth], depth);
      return false;
    }
    if (static_cast<int64_t>(j.size()) != shape[depth]) {
      error = fmt::format("{}: {} has {} elements, but shape {} needs {} at dimension {}", who,
                          IndexPath(idx), j.size(), ShapeJson(shape), shape[depth], depth);
      return false;
    }
    for (size_t i = 0; i < j.size(); ++i) {
      idx.push_back(i);
      if (!self(self, j[i], depth + 1)) return false;
      idx.pop_back();
    }
    return true;
  };
  if (!walk(walk, data, 0)) return InvalidArgument("{}", error);
  return out;
}

}  // namespace polis::registry
