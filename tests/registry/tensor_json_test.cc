// Decoding of Open Inference Protocol JSON tensors: flat and nested data,
// datatypes and preprocessing, and refusals that name the element.
#include "registry/tensor_json.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>

namespace polis::registry {
namespace {

using json = nlohmann::json;

InputTensorSpec Spec() {
  InputTensorSpec s;
  s.name = "input";
  s.sample_shape = {1, 2, 3};
  s.max_batch = 4;
  s.max_elements = 100;
  s.scale = 0.5f;
  s.shift = -1.f;
  return s;
}

json Tensor(json shape, const std::string& dtype, json data) {
  return json{{"name", "input"}, {"shape", shape}, {"datatype", dtype}, {"data", data}};
}

StatusOr<DecodedInput> Decode(const json& t, bool* too_large = nullptr) {
  bool tl = false;
  auto r = DecodeInputTensor(t, Spec(), too_large ? too_large : &tl);
  return r;
}

TEST(TensorJsonTest, FlatAndNestedGiveTheSameRowMajorValues) {
  json flat = Tensor({2, 1, 2, 3}, "FP32", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  json nested = Tensor({2, 1, 2, 3}, "FP32",
                       {{{{1, 2, 3}, {4, 5, 6}}}, {{{7, 8, 9}, {10, 11, 12}}}});
  auto a = Decode(flat), b = Decode(nested);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->rows, 2);
  EXPECT_EQ(a->values, b->values);
  EXPECT_EQ(a->values[11], 12.f);
}

TEST(TensorJsonTest, IntegerTypesArePreprocessedFloatsAreNot) {
  auto u8 = Decode(Tensor({1, 1, 2, 3}, "UINT8", {0, 2, 4, 6, 8, 255}));
  ASSERT_TRUE(u8.ok()) << u8.status().ToString();
  EXPECT_EQ(u8->values, (std::vector<float>{-1, 0, 1, 2, 3, 126.5f}));
  auto i64 = Decode(Tensor({1, 1, 2, 3}, "INT64", {-2, 0, 2, 4, 6, 8}));
  ASSERT_TRUE(i64.ok());
  EXPECT_EQ(i64->values[0], -2.f);
  auto fp = Decode(Tensor({1, 1, 2, 3}, "FP32", {0.25, 0, 2, 4, 6, 8}));
  ASSERT_TRUE(fp.ok());
  EXPECT_EQ(fp->values[0], 0.25f);
}

// The binary tensor extension gives the floats the JSON form gives, for
// the common types (UINT8, FP32: a plain loop) and the others alike.
TEST(TensorJsonTest, BinaryElementsDecodeLikeJsonValues) {
  auto binary = [](const json& t, const std::string& bytes) {
    bool tl = false;
    const std::string_view view(bytes);
    return DecodeInputTensor(t, Spec(), &tl, nullptr, &view);
  };
  auto bytes_of = [](const auto& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(values[0]));
  };
  const json head_u8 = Tensor({1, 1, 2, 3}, "UINT8", nullptr);
  const std::vector<uint8_t> px{0, 2, 4, 6, 8, 255};
  auto u8 = binary(head_u8, bytes_of(px));
  ASSERT_TRUE(u8.ok()) << u8.status().ToString();
  EXPECT_EQ(u8->values, Decode(Tensor({1, 1, 2, 3}, "UINT8", {0, 2, 4, 6, 8, 255}))->values);
  const std::vector<float> fp{0.25f, -0.f, 2.5e-38f, 3.4e38f, -6, 8};
  auto f32 = binary(Tensor({1, 1, 2, 3}, "FP32", nullptr), bytes_of(fp));
  ASSERT_TRUE(f32.ok()) << f32.status().ToString();
  EXPECT_EQ(f32->values, fp);
  const std::vector<int16_t> i16{-2, 0, 2, 4, 6, 8};
  auto s16 = binary(Tensor({1, 1, 2, 3}, "INT16", nullptr), bytes_of(i16));
  ASSERT_TRUE(s16.ok()) << s16.status().ToString();
  EXPECT_EQ(s16->values, Decode(Tensor({1, 1, 2, 3}, "INT16", {-2, 0, 2, 4, 6, 8}))->values);
  // A non-finite FP32 is named as before.
  const std::vector<float> bad{0, 1, 2, std::numeric_limits<float>::infinity(), 4, 5};
  auto r = binary(Tensor({1, 1, 2, 3}, "FP32", nullptr), bytes_of(bad));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("binary element 3 = "), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("is out of range for FP32"), std::string::npos)
      << r.status().message();
}

TEST(TensorJsonTest, RefusalsNameTheElement) {
  auto r = Decode(Tensor({1, 1, 2, 3}, "UINT8", {{{{0, 1, 2}, {3, 300, 5}}}}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input 'input': data[0][0][1][1] = 300 is out of range for UINT8"),
            std::string::npos)
      << r.status().message();
  r = Decode(Tensor({1, 1, 2, 3}, "INT32", {0, 1, 2.5, 3, 4, 5}));
  EXPECT_NE(r.status().message().find("data[2] = 2.5 is not an integer"), std::string::npos)
      << r.status().message();
  r = Decode(Tensor({1, 1, 2, 3}, "FP32", {0, 1, "x", 3, 4, 5}));
  EXPECT_NE(r.status().message().find("data[2] = \"x\" is not a number"), std::string::npos)
      << r.status().message();
  r = Decode(Tensor({1, 1, 2, 3}, "FP32", {{{{0, 1, 2}, {3, 4}}}}));
  EXPECT_NE(r.status().message().find("data[0][0][1] has 2 elements"), std::string::npos)
      << r.status().message();
  r = Decode(Tensor({1, 1, 2, 3}, "FP32", {1, 2}));
  EXPECT_NE(r.status().message().find("holds 2 values but shape [1,1,2,3] needs 6"), std::string::npos)
      << r.status().message();
  r = Decode(Tensor({1, 6}, "FP32", {1, 2, 3, 4, 5, 6}));
  EXPECT_NE(r.status().message().find("does not match the model's input shape [-1,1,2,3]"),
            std::string::npos)
      << r.status().message();
  r = Decode(Tensor({5, 1, 2, 3}, "FP32", json::array()));
  EXPECT_NE(r.status().message().find("exceeds the model's max_batch_size 4"), std::string::npos);
  r = Decode(Tensor({0, 1, 2, 3}, "FP32", json::array()));
  EXPECT_FALSE(r.ok());
  r = Decode(Tensor({1, 1, 2, 3}, "BOOL", {true, false, true, false, true, false}));
  EXPECT_NE(r.status().message().find("datatype 'BOOL' is not accepted"), std::string::npos);
  r = Decode(json{{"name", "input"}, {"shape", {1, 1, 2, 3}}, {"datatype", "FP32"}});
  EXPECT_NE(r.status().message().find("\"data\" is required"), std::string::npos);
  r = Decode(Tensor({1, 1, 2, 3}, "FP32", {1e39, 0, 0, 0, 0, 0}));
  EXPECT_NE(r.status().message().find("out of range for FP32"), std::string::npos);
}

TEST(TensorJsonTest, TooManyElementsIsTooLarge) {
  InputTensorSpec s = Spec();
  s.max_elements = 10;
  s.max_batch = 100;
  bool too_large = false;
  auto r = DecodeInputTensor(Tensor({2, 1, 2, 3}, "FP32", json::array()), s, &too_large);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(too_large);
}

TEST(TensorJsonTest, FloatsAreWrittenShortestAndNonFiniteAsNull) {
  std::string out;
  const float v[] = {0.1f, -2.f, 1e-8f, std::numeric_limits<float>::infinity()};
  AppendJsonFloats(out, v, 4);
  EXPECT_EQ(out, "[0.1,-2,1e-08,null]");
  auto j = json::parse(out);
  EXPECT_FLOAT_EQ(j[0].get<float>(), 0.1f);
}


// ParseRequestBody (simdjson) must decode exactly what json::parse +
// DecodeInputTensor decode, and refuse with the same message.
StatusOr<DecodedInput> DecodeViaBody(const std::string& body, bool* fast) {
  auto parsed = ParseRequestBody(body, false);
  if (!parsed.ok()) return parsed.status();
  *fast = parsed->has_fast_data;
  const json& t = parsed->doc["inputs"][parsed->fast_index];
  bool tl = false;
  return DecodeInputTensor(t, Spec(), &tl, parsed->has_fast_data ? &parsed->fast_data : nullptr);
}

TEST(TensorJsonTest, FastRequestParsingDecodesLikeNlohmann) {
  const std::vector<json> tensors = {
      Tensor({1, 1, 2, 3}, "UINT8", {0, 2, 4, 6, 8, 255}),
      Tensor({1, 1, 2, 3}, "FP32", {0.1, -2.5e-3, 1e30, 7, -0.0, 3.4028234e38}),
      Tensor({2, 1, 2, 3}, "INT64", {-9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}),
      Tensor({1, 1, 2, 3}, "UINT8", {0, 1, 2, 3, 300, 5}),          // out of range
      Tensor({1, 1, 2, 3}, "INT32", {0, 1, 2.5, 3, 4, 5}),          // not an integer
      Tensor({1, 1, 2, 3}, "FP32", {1e39, 0, 0, 0, 0, 0}),          // out of range for FP32
      Tensor({1, 1, 2, 3}, "FP32", {1, 2}),                         // too few values
      Tensor({1, 1, 2, 3}, "FP32", {0, 1, "x", 3, 4, 5}),           // not a number: slow path
      Tensor({1, 1, 2, 3}, "FP32", {{{{1, 2, 3}, {4, 5, 6}}}}),     // nested: slow path
      Tensor({1, 1, 2, 3}, "UINT64", {0, 1, 2, 3, 4, 18446744073709551615ull}),
  };
  for (const json& t : tensors) {
    const std::string body = json{{"id", "x"}, {"inputs", json::array({t})}}.dump();
    bool tl = false, fast = false;
    auto slow = DecodeInputTensor(json::parse(body)["inputs"][0], Spec(), &tl);
    auto quick = DecodeViaBody(body, &fast);
    ASSERT_EQ(slow.ok(), quick.ok()) << body;
    if (slow.ok()) {
      EXPECT_EQ(slow->values, quick->values) << body;
      EXPECT_EQ(slow->rows, quick->rows);
    } else {
      EXPECT_EQ(slow.status().message(), quick.status().message()) << body;
    }
    const bool flat_numbers = t["data"].is_array() && !t["data"].empty() &&
                              std::all_of(t["data"].begin(), t["data"].end(),
                                          [](const json& v) { return v.is_number(); });
    EXPECT_EQ(fast, flat_numbers) << body;
  }
}

TEST(TensorJsonTest, FastRequestParsingKeepsTheRestOfTheBody) {
  auto p = ParseRequestBody(
      R"({"id":"r1","parameters":{"a":[1,{"b":null}]},"inputs":[{"name":"other","data":[1,2]},)"
      R"({"name":"input","shape":[1,6],"datatype":"FP32","data":[1,2,3,4,5,6]}],)"
      R"("outputs":[{"name":"probabilities","parameters":{"classification":3}}]})",
      false);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->has_fast_data);
  EXPECT_EQ(p->fast_index, 1u);
  EXPECT_EQ(p->fast_data.size(), 6u);
  EXPECT_FALSE(p->doc["inputs"][1].contains("data"));
  EXPECT_EQ(p->doc["inputs"][0]["data"], json({1, 2}));  // not the fast input: kept
  EXPECT_EQ(p->doc["parameters"], json::parse(R"({"a":[1,{"b":null}]})"));
  EXPECT_EQ(p->doc["outputs"][0]["parameters"]["classification"], 3);
  // Duplicate keys: the last wins, as with json::parse.
  auto d = ParseRequestBody(R"({"id":"a","id":"b"})", false);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->doc["id"], "b");
  // Invalid JSON and non-objects are refused with nlohmann's message.
  auto bad = ParseRequestBody(R"({"inputs":[1,2)", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON"), std::string::npos);
  auto arr = ParseRequestBody("[1,2]", false);
  ASSERT_FALSE(arr.ok());
  EXPECT_NE(arr.status().message().find("must be a JSON object"), std::string::npos);
  // Integers beyond 64 bits: simdjson refuses them; nlohmann reads a double.
  auto big = ParseRequestBody(R"({"x":123456789012345678901234567890})", false);
  ASSERT_TRUE(big.ok());
  EXPECT_TRUE(big->doc["x"].is_number_float());
  EXPECT_FALSE(ParseRequestBody("", false).ok());
  EXPECT_TRUE(ParseRequestBody("", true).ok());
}

}  // namespace
}  // namespace polis::registry
