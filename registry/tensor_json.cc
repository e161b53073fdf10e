#include "registry/tensor_json.h"

#include <cmath>
#include <charconv>
#include <cstring>
#include <limits>

#include <simdjson.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/comm/half.h"
#include "common/echo.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;

struct DType {
  const char* name;
  bool is_float;
  double min, max;  // integer types
  int bytes;        // in the binary tensor encoding (little-endian)
};

constexpr DType kTypes[] = {
    {"FP16", true, 0, 0, 2},
    {"FP32", true, 0, 0, 4},
    {"FP64", true, 0, 0, 8},
    {"INT8", false, -128, 127, 1},
    {"INT16", false, -32768, 32767, 2},
    {"INT32", false, -2147483648.0, 2147483647.0, 4},
    {"INT64", false, -9223372036854775808.0, 9223372036854775807.0, 8},
    {"UINT8", false, 0, 255, 1},
    {"UINT16", false, 0, 65535, 2},
    {"UINT32", false, 0, 4294967295.0, 4},
    {"UINT64", false, 0, 18446744073709551615.0, 8},
};

// Element i of a little-endian binary tensor of type t, as a JsonNumber.
JsonNumber BinaryElement(const DType& t, const char* p) {
  JsonNumber n;
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  const std::string_view name = t.name;
  if (name == "FP16") n.d = comm::HalfToFloat(load(uint16_t{}));
  else if (name == "FP32") n.d = load(float{});
  else if (name == "FP64") n.d = load(double{});
  else {
    n.kind = name[0] == 'U' ? JsonNumber::kUint : JsonNumber::kInt;
    switch (t.bytes * (n.kind == JsonNumber::kUint ? 1 : -1)) {
      case -1: n.i = load(int8_t{}); break;
      case -2: n.i = load(int16_t{}); break;
      case -4: n.i = load(int32_t{}); break;
      case -8: n.i = load(int64_t{}); break;
      case 1: n.u = load(uint8_t{}); break;
      case 2: n.u = load(uint16_t{}); break;
      case 4: n.u = load(uint32_t{}); break;
      default: n.u = load(uint64_t{}); break;
    }
    n.d = n.kind == JsonNumber::kUint ? static_cast<double>(n.u) : static_cast<double>(n.i);
  }
  return n;
}

// The common binary inputs (UINT8 pixels, FP32 values) in one plain loop,
// the same floats as Converter gives; false when the type has no fast path
// or a value needs Converter's message (a non-finite FP32).
bool DecodeBinaryFast(const DType& t, const InputTensorSpec& spec, std::string_view bytes, float* out) {
  const std::string_view name = t.name;
  const size_t n = bytes.size() / static_cast<size_t>(t.bytes);
  if (name == "UINT8") {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]) * spec.scale + spec.shift;
    return true;
  }
  if (name == "FP32") {
    std::memcpy(out, bytes.data(), n * sizeof(float));
    bool finite = true;
    for (size_t i = 0; i < n; ++i) finite &= std::isfinite(out[i]);
    return finite;
  }
  return false;
}

std::string Dump(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

std::string Dump(const JsonNumber& n) {
  switch (n.kind) {
    case JsonNumber::kInt: return std::to_string(n.i);
    case JsonNumber::kUint: return std::to_string(n.u);
    default: return Dump(json(n.d));
  }
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
    if (!v.is_number()) {
      if (t_.is_float) return fmt::format("{} is not a number", Dump(v));
      return fmt::format("{} is not an integer ({} values are integers)", Dump(v), t_.name);
    }
    JsonNumber n;
    if (v.is_number_unsigned()) {
      n.kind = JsonNumber::kUint;
      n.u = v.get<uint64_t>();
      n.d = static_cast<double>(n.u);
    } else if (v.is_number_integer()) {
      n.kind = JsonNumber::kInt;
      n.i = v.get<int64_t>();
      n.d = static_cast<double>(n.i);
    } else {
      n.d = v.get<double>();
    }
    return Convert(n, out);
  }

  std::string Convert(const JsonNumber& n, float* out) const {
    if (t_.is_float) {
      const float f = static_cast<float>(n.d);
      if (!std::isfinite(f)) return fmt::format("{} is out of range for {}", Dump(n), t_.name);
      *out = f;
      return {};
    }
    if (n.kind == JsonNumber::kFloat)
      return fmt::format("{} is not an integer ({} values are integers)", Dump(n), t_.name);
    if (n.d < t_.min || n.d > t_.max)
      return fmt::format("{} is out of range for {} ({}..{})", Dump(n), t_.name,
                         static_cast<long double>(t_.min), static_cast<long double>(t_.max));
    *out = static_cast<float>(n.d) * spec_.scale + spec_.shift;
    return {};
  }

 private:
  const DType& t_;
  const InputTensorSpec& spec_;
};

// simdjson DOM -> nlohmann, as json::parse would have built it (duplicate
// keys: the last one wins, as in nlohmann).
json ToJson(const simdjson::dom::element& e) {
  using simdjson::dom::element_type;
  switch (e.type()) {
    case element_type::OBJECT: {
      json o = json::object();
      for (simdjson::dom::key_value_pair kv : simdjson::dom::object(e))
        o[std::string(kv.key)] = ToJson(kv.value);
      return o;
    }
    case element_type::ARRAY: {
      json a = json::array();
      for (simdjson::dom::element v : simdjson::dom::array(e)) a.push_back(ToJson(v));
      return a;
    }
    case element_type::STRING: return json(std::string(std::string_view(e)));
    case element_type::INT64: return json(int64_t(e));
    case element_type::UINT64: return json(uint64_t(e));
    case element_type::DOUBLE: return json(double(e));
    case element_type::BOOL: return json(bool(e));
    case element_type::NULL_VALUE: return json(nullptr);
  }
  return json();
}

// The numbers of a flat array; false if any element is not a number.
bool FlatNumbers(const simdjson::dom::array& a, std::vector<JsonNumber>* out) {
  using simdjson::dom::element_type;
  out->clear();
  out->reserve(a.size());
  for (simdjson::dom::element v : a) {
    JsonNumber n;
    switch (v.type()) {
      case element_type::INT64:
        n.kind = JsonNumber::kInt;
        n.i = int64_t(v);
        n.d = static_cast<double>(n.i);
        break;
      case element_type::UINT64:
        n.kind = JsonNumber::kUint;
        n.u = uint64_t(v);
        n.d = static_cast<double>(n.u);
        break;
      case element_type::DOUBLE:
        n.d = double(v);
        break;
      default:
        return false;
    }
    out->push_back(n);
  }
  return true;
}

}  // namespace

StatusOr<std::vector<std::optional<std::string_view>>> BinarySlices(const ParsedBody& body) {
  std::vector<std::optional<std::string_view>> out;
  size_t at = 0;
  auto inputs = body.doc.find("inputs");
  if (inputs != body.doc.end() && inputs->is_array()) {
    for (size_t i = 0; i < inputs->size(); ++i) {
      const json& t = (*inputs)[i];
      out.emplace_back();
      if (!t.is_object() || !t.contains("parameters") || !t["parameters"].is_object()) continue;
      auto s = t["parameters"].find("binary_data_size");
      if (s == t["parameters"].end()) continue;
      if (!s->is_number_integer() || s->get<int64_t>() < 0)
        return InvalidArgument("inputs[{}].parameters.binary_data_size must be a non-negative "
                               "integer, found {}", i, Dump(*s));
      const size_t n = static_cast<size_t>(s->get<int64_t>());
      if (n > 0 && body.binary.empty())
        return InvalidArgument(
            "inputs[{}].parameters.binary_data_size is {} but the request has no binary section: "
            "send the JSON's length in the Inference-Header-Content-Length header, then the "
            "tensor bytes",
            i, n);
      if (n > body.binary.size() - at)
        return InvalidArgument(
            "inputs[{}].parameters.binary_data_size {} runs past the binary section ({} bytes, "
            "{} taken by earlier inputs)",
            i, n, body.binary.size(), at);
      out.back() = std::string_view(body.binary).substr(at, n);
      at += n;
    }
  }
  if (at != body.binary.size())
    return InvalidArgument(
        "the binary section holds {} bytes but the inputs' binary_data_size add up to {}",
        body.binary.size(), at);
  return out;
}

StatusOr<ParsedBody> ParseRequestBody(const std::string& whole, bool allow_empty,
                                      std::string_view fast_input,
                                      const std::string& header_length) {
  ParsedBody out;
  std::string_view body = whole;  // the JSON part
  if (!header_length.empty()) {
    size_t n = 0;
    const auto* end = header_length.data() + header_length.size();
    auto [p, ec] = std::from_chars(header_length.data(), end, n);
    if (ec != std::errc() || p != end)
      return InvalidArgument("Inference-Header-Content-Length '{}' is not a byte count",
                             EchoValue(header_length));
    if (n > whole.size())
      return InvalidArgument(
          "Inference-Header-Content-Length {} exceeds the body's {} bytes", n, whole.size());
    body = body.substr(0, n);
    out.binary.assign(whole, n);
  }
  if (body.empty()) {
    if (allow_empty) {
      out.doc = json::object();
      return out;
    }
    return InvalidArgument("the request body is empty; expected a JSON object");
  }
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size()).get(root) == simdjson::SUCCESS &&
      root.type() == simdjson::dom::element_type::OBJECT) {
    out.doc = json::object();
    for (simdjson::dom::key_value_pair kv : simdjson::dom::object(root)) {
      if (kv.key != "inputs" || !kv.value.is_array()) {
        out.doc[std::string(kv.key)] = ToJson(kv.value);
        continue;
      }
      // Duplicate "inputs": the last wins, so the fast data must come from it.
      out.has_fast_data = false;
      json inputs = json::array();
      size_t index = 0;
      for (simdjson::dom::element t : simdjson::dom::array(kv.value)) {
        std::string_view name;
        simdjson::dom::array data;
        if (!out.has_fast_data && t.is_object() && t["name"].get(name) == simdjson::SUCCESS &&
            name == fast_input && t["data"].get(data) == simdjson::SUCCESS &&
            FlatNumbers(data, &out.fast_data)) {
          json o = json::object();
          bool duplicate_data = false;
          int data_fields = 0;
          for (simdjson::dom::key_value_pair f : simdjson::dom::object(t)) {
            if (f.key == "data") {
              duplicate_data = ++data_fields > 1;
              continue;
            }
            o[std::string(f.key)] = ToJson(f.value);
          }
          if (!duplicate_data) {
            out.has_fast_data = true;
            out.fast_index = index;
            inputs.push_back(std::move(o));
            ++index;
            continue;
          }
        }
        inputs.push_back(ToJson(t));
        ++index;
      }
      out.doc[std::string(kv.key)] = std::move(inputs);
    }
    if (!out.has_fast_data) out.fast_data.clear();
    return out;
  }
  // Invalid JSON (or something simdjson does not take): nlohmann decides,
  // and its messages say where.
  try {
    out.doc = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond double (1e309).
    return InvalidArgument("the request body is not valid JSON: {}", EchoValue(e.what(), 200));
  }
  if (!out.doc.is_object())
    return InvalidArgument("the request body must be a JSON object, got {}", out.doc.type_name());
  return out;
}

StatusOr<std::vector<std::string_view>> SplitBinaryBytes(std::string_view data, const std::string& who) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (at < data.size()) {
    if (data.size() - at < 4)
      return InvalidArgument(
          "{}: binary data: element {} at byte {} has {} bytes left for its 4-byte length", who,
          out.size(), at, data.size() - at);
    uint32_t n = 0;
    std::memcpy(&n, data.data() + at, 4);  // little-endian (the host)
    at += 4;
    if (n > data.size() - at)
      return InvalidArgument("{}: binary data: element {} at byte {} says {} bytes, but {} remain", who,
                             out.size(), at - 4, n, data.size() - at);
    out.push_back(data.substr(at, n));
    at += n;
  }
  return out;
}

void AppendBinaryBytes(std::string& out, std::string_view element) {
  const uint32_t n = static_cast<uint32_t>(element.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out += element;
}

std::string JoinBinaryBytes(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& e : elements) AppendBinaryBytes(out, e);
  return out;
}

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
                                         bool* too_large, const std::vector<JsonNumber>* fast_data,
                                         const std::string_view* binary) {
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
        who, EchoValue(dt));
  const bool says_binary = tensor.contains("parameters") && tensor["parameters"].is_object() &&
                          tensor["parameters"].contains("binary_data_size");
  if (says_binary && !binary)
    return InvalidArgument(
        "{}: parameters.binary_data_size is given but the request has no binary section (send "
        "the Inference-Header-Content-Length header with the JSON's length)",
        who);
  if (binary) {
    const int64_t want = total * type->bytes;
    if (static_cast<int64_t>(binary->size()) != want)
      return InvalidArgument("{}: binary data of {} bytes, but shape {} of {} needs {} bytes", who,
                             binary->size(), ShapeJson(shape), dt, want);
    DecodedInput out;
    out.rows = rows;
    out.datatype = dt;
    out.values.resize(static_cast<size_t>(total));
    if (DecodeBinaryFast(*type, spec, *binary, out.values.data())) return out;
    Converter conv(*type, spec);
    for (int64_t i = 0; i < total; ++i) {
      std::string why = conv.Convert(BinaryElement(*type, binary->data() + i * type->bytes),
                                     &out.values[i]);
      if (!why.empty()) return InvalidArgument("{}: binary element {} = {}", who, i, why);
    }
    return out;
  }

  // data
  if (fast_data) {
    if (static_cast<int64_t>(fast_data->size()) != total)
      return InvalidArgument(
          "{}: \"data\" holds {} values but shape {} needs {} (flat, row-major)", who,
          fast_data->size(), ShapeJson(shape), total);
    DecodedInput out;
    out.rows = rows;
    out.datatype = dt;
    out.values.resize(static_cast<size_t>(total));
    Converter conv(*type, spec);
    for (size_t i = 0; i < fast_data->size(); ++i) {
      std::string why = conv.Convert((*fast_data)[i], &out.values[i]);
      if (!why.empty()) return InvalidArgument("{}: data[{}] = {}", who, i, why);
    }
    return out;
  }
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
