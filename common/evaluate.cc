#include "common/evaluate.h"

#include <numeric>

namespace polis {

Evaluator::Evaluator(const nn::Model& model, const float* params, int64_t batch)
    : model_(model), params_(const_cast<float*>(params)), batch_(batch),
      indices_(batch), labels_(batch) {}

nn::Network& Evaluator::NetFor(int64_t n) {
  auto& slot = nets_[n];
  if (!slot) slot = std::make_unique<nn::Network>(model_, n, params_, nullptr, false);
  return *slot;
}

EvalResult Evaluator::Run(const data::ImageDataset& ds, int64_t begin, int64_t end) {
  EvalResult r;
  const int64_t k = nn::ShapeElements(model_.output_shape());
  for (int64_t at = begin; at < end; at += batch_) {
    int64_t n = std::min(batch_, end - at);
    std::iota(indices_.begin(), indices_.begin() + n, at);
    nn::Network& net = NetFor(n);
    ds.Gather(indices_.data(), n, net.input(), labels_.data());
    net.Forward();
    nn::LossStats st = nn::SoftmaxCrossEntropy(net.output(), labels_.data(), n, k, nullptr, 0.f);
    r.samples += n;
    r.correct += st.correct;
    r.loss_sum += st.loss_sum;
  }
  return r;
}

}  // namespace polis
