// Decoding of Open Inference Protocol JSON tensors: flat and nested data,
// datatypes and preprocessing, and refusals that name the element.
#include "registry/tensor_json.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace polis::registry
