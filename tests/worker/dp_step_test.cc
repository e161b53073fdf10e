// DpStep: a step whose Poisson sample is larger than one Network pass adds
// the passes' clipped sums, and gives what one pass over the whole sample
// gives.
#include <gtest/gtest.h>

#include <cmath>

#include <google/protobuf/text_format.h>

#include "common/data/dataset.h"
#include "common/privacy/poisson.h"
#include "worker/dp_step.h"

namespace polis::worker {
namespace {

// n labelled vectors of `width` floats, a fixed pattern.
class TinyDataset : public data::Dataset {
 public:
  TinyDataset(int64_t n, int64_t width, int classes) : n_(n), width_(width), classes_(classes) {}
  data::Task task() const override { return data::Task::kClassification; }
  int64_t size(data::Part p) const override { return p == data::Part::kTrain ? n_ : 0; }
  std::vector<int64_t> sample_shape() const override { return {width_}; }
  int64_t target_width() const override { return classes_; }
  void Gather(data::Part, const int64_t* idx, int64_t n, float* x, float* y) const override {
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < width_; ++j) x[r * width_ + j] = std::sin(0.37f * idx[r] + 1.3f * j);
      y[r] = static_cast<float>(idx[r] % classes_);
    }
  }
  std::vector<std::string> files() const override { return {}; }

 private:
  int64_t n_, width_;
  int classes_;
};

proto::ModelSpec TinyModel() {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(
    layer { type: "Dense" activation: TANH dense_param { units: 6 } }
    layer { type: "Dense" dense_param { units: 3 } }
    loss: SOFTMAX_CROSS_ENTROPY)", &spec));
  return spec;
}

TEST(DpStep, SeveralPassesGiveTheOnePassClippedSum) {
  const proto::ModelSpec spec = TinyModel();
  auto model = nn::Model::Build(spec, {5});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t P = model->parameter_count();
  std::vector<float> params(P), grads(P), ref_grads(P);
  model->InitParams(params.data(), 7);

  privacy::DpPlan plan;
  plan.q = 0.8;  // about 160 of 200 examples a step, against passes of 10 + 13 rows
  plan.clip = 0.05;
  plan.train_samples = 200;
  plan.sample_key[0] = 42;
  TinyDataset ds(200, 5, 3);

  DpStep dp(*model, spec, plan, 0, 1, 10, params.data(), grads.data());
  ASSERT_EQ(dp.chunk(), 23);
  std::vector<int64_t> sampled;
  const DpStep::Result r = dp.Run(3, ds, nullptr, &sampled);
  ASSERT_GT(r.samples, 4 * dp.chunk()) << "the sample must take several passes";
  ASSERT_EQ(sampled, privacy::PoissonSample(plan.sample_key, 3, 0, 1, 200, plan.q));

  // The reference: one Network as large as the sample.
  nn::Network net(*model, r.samples, params.data(), ref_grads.data(), true);
  std::vector<float> y(r.samples);
  ds.Gather(data::Part::kTrain, sampled.data(), r.samples, net.input(), y.data());
  net.Forward();
  const nn::LossStats st = nn::ComputeLoss(spec, net.output(), y.data(), r.samples, 3, net.output_diff(), 1.0f);
  std::vector<float> norms(r.samples);
  net.BackwardClipped(static_cast<float>(plan.clip), norms.data());

  int clipped = 0;
  for (float n : norms) clipped += n > plan.clip;
  EXPECT_GT(clipped, r.samples / 2) << "the test should clip most examples";
  EXPECT_NEAR(r.loss_sum, st.loss_sum, 1e-4 * std::abs(st.loss_sum));
  EXPECT_EQ(r.correct, st.correct);
  for (int64_t i = 0; i < P; ++i) EXPECT_NEAR(grads[i], ref_grads[i], 1e-5) << "parameter " << i;
}

TEST(DpStep, AnEmptySampleZeroesTheGradient) {
  const proto::ModelSpec spec = TinyModel();
  auto model = nn::Model::Build(spec, {5});
  ASSERT_TRUE(model.ok());
  const int64_t P = model->parameter_count();
  std::vector<float> params(P), grads(P, 1.0f);
  model->InitParams(params.data(), 7);
  privacy::DpPlan plan;
  plan.q = 0;
  plan.clip = 1;
  plan.train_samples = 200;
  TinyDataset ds(200, 5, 3);
  DpStep dp(*model, spec, plan, 0, 2, 10, params.data(), grads.data());
  std::vector<int64_t> sampled{1, 2};
  EXPECT_EQ(dp.Run(0, ds, nullptr, &sampled).samples, 0);
  EXPECT_TRUE(sampled.empty());
  for (float g : grads) EXPECT_EQ(g, 0.0f);
}

}  // namespace
}  // namespace polis::worker
