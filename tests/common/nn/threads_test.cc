// A Network may run on another thread than the one that built it (its
// primitives take user-managed scratchpads: common/nn/scratchpad.h). With
// oneDNN's default library-managed scratchpad, which lives in the building
// thread's thread-local storage, the LSTM crashed when run from a fresh
// thread. Every layer kind, inference and training, forward and backward:
// the same bits on a thread that never built a primitive as on the builder.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/nn/model.h"

namespace polis::nn {
namespace {

struct Case {
  const char* name;
  const char* spec;
  Shape input;
};

const Case kCases[] = {
    {"cnn",
     R"(layer { type: "Conv2D" activation: RELU conv2d_param { filters: 8 kernel_size: 3 } }
        layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
        layer { type: "Flatten" }
        layer { type: "Dense" activation: RELU dense_param { units: 16 } }
        layer { type: "Dense" dense_param { units: 10 } })",
     {1, 12, 12}},
    {"lstm",
     R"(layer { type: "LSTM" recurrent_param { hidden_size: 32 num_layers: 2 return_sequences: false } }
        layer { type: "Dense" dense_param { units: 1 } })",
     {24, 8}},
    {"gru",
     R"(layer { type: "GRU" recurrent_param { hidden_size: 16 num_layers: 1 return_sequences: true } }
        layer { type: "Flatten" }
        layer { type: "Dense" dense_param { units: 2 } })",
     {12, 5}},
    {"transformer",
     R"(layer { type: "PositionalEncoding" }
        layer { type: "TransformerEncoderBlock" transformer_param { num_heads: 2 ff_dim: 16 } }
        layer { type: "LayerNorm" }
        layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
        layer { type: "Dense" dense_param { units: 1 } })",
     {6, 4}},
};

Model Build(const Case& c) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(c.spec, &spec)) << c.name;
  auto m = Model::Build(spec, c.input);
  EXPECT_TRUE(m.ok()) << c.name << ": " << m.status().ToString();
  return std::move(m).value();
}

// Output (and, training, the gradients) of one forward (and backward) pass.
std::vector<float> Pass(Network& net, const std::vector<float>& x, const std::vector<float>& grads,
                        bool training, int64_t out_elems) {
  std::memcpy(net.input(), x.data(), x.size() * sizeof(float));
  net.Forward();
  std::vector<float> result(net.output(), net.output() + out_elems);
  if (!training) return result;
  for (int64_t i = 0; i < out_elems; ++i) net.output_diff()[i] = 0.01f * static_cast<float>(i % 7);
  net.Backward();
  result.insert(result.end(), grads.begin(), grads.end());
  return result;
}

void RunOnFreshThread(const std::function<void()>& f) {
  std::thread t(f);
  t.join();
}

TEST(NetworkThreads, SameBitsOnAThreadThatBuiltNothing) {
  for (const Case& c : kCases) {
    for (bool training : {false, true}) {
      SCOPED_TRACE(std::string(c.name) + (training ? " training" : " inference"));
      Model model = Build(c);
      const int64_t batch = 3;
      std::vector<float> params(model.parameter_count()), grads(model.parameter_count(), 0.f);
      model.InitParams(params.data(), 11);
      int64_t in_elems = batch, out_elems = batch;
      for (int64_t d : model.input_shape()) in_elems *= d;
      for (int64_t d : model.output_shape()) out_elems *= d;
      std::vector<float> x(in_elems);
      std::mt19937 rng(5);
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      for (auto& v : x) v = u(rng);

      // Built on one thread, run there, then run from two threads that
      // never built a primitive.
      std::unique_ptr<Network> net;
      std::vector<float> here, there, again;
      RunOnFreshThread([&] {
        net = std::make_unique<Network>(model, batch, params.data(), grads.data(), training);
        here = Pass(*net, x, grads, training, out_elems);
      });
      RunOnFreshThread([&] { there = Pass(*net, x, grads, training, out_elems); });
      RunOnFreshThread([&] { again = Pass(*net, x, grads, training, out_elems); });
      ASSERT_EQ(here.size(), there.size());
      EXPECT_EQ(0, std::memcmp(here.data(), there.data(), here.size() * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(here.data(), again.data(), here.size() * sizeof(float)));
      // Destroyed on yet another thread.
      RunOnFreshThread([&] { net.reset(); });
    }
  }
}

}  // namespace
}  // namespace polis::nn
