#include "common/evaluate.h"

#include <cmath>
#include <numeric>

namespace polis {

double EvalResult::rmse() const { return values ? std::sqrt(sq_error_sum / values) : 0.0; }

void EvalResult::Add(const EvalResult& o) {
  samples += o.samples;
  correct += o.correct;
  loss_sum += o.loss_sum;
  values += o.values;
  abs_error_sum += o.abs_error_sum;
  sq_error_sum += o.sq_error_sum;
  ape_sum += o.ape_sum;
  sape_sum += o.sape_sum;
  ape_count += o.ape_count;
}

Evaluator::Evaluator(const nn::Model& model, const proto::ModelSpec& spec, const float* params,
                     int64_t batch)
    : model_(model), spec_(spec), params_(const_cast<float*>(params)), batch_(batch), indices_(batch),
      targets_(batch * nn::ShapeElements(model.output_shape())) {}

nn::Network& Evaluator::NetFor(int64_t n) {
  auto& slot = nets_[n];
  if (!slot) slot = std::make_unique<nn::Network>(model_, n, params_, nullptr, false);
  return *slot;
}

EvalResult Evaluator::Run(const data::Dataset& ds, data::Part part, int64_t begin, int64_t end) {
  EvalResult r;
  const int64_t k = nn::ShapeElements(model_.output_shape());
  const bool regression = ds.task() == data::Task::kRegression;
  for (int64_t at = begin; at < end; at += batch_) {
    int64_t n = std::min(batch_, end - at);
    std::iota(indices_.begin(), indices_.begin() + n, at);
    nn::Network& net = NetFor(n);
    ds.Gather(part, indices_.data(), n, net.input(), targets_.data());
    net.Forward();
    const float* out = net.output();
    nn::LossStats st = nn::ComputeLoss(spec_, out, targets_.data(), n, k, nullptr, 0.f);
    r.samples += n;
    r.correct += st.correct;
    r.loss_sum += st.loss_sum;
    if (!regression) continue;
    for (int64_t i = 0; i < n * k; ++i) {
      const double p = ds.TargetToOriginal(out[i]), a = ds.TargetToOriginal(targets_[i]);
      const double e = std::abs(p - a);
      r.abs_error_sum += e;
      r.sq_error_sum += e * e;
      if (a != 0) {
        r.ape_sum += e / std::abs(a);
        ++r.ape_count;
      }
      if (std::abs(p) + std::abs(a) > 0) r.sape_sum += 2.0 * e / (std::abs(p) + std::abs(a));
      ++r.values;
    }
  }
  return r;
}

}  // namespace polis
