#include "worker/dp_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/privacy/poisson.h"
#include "common/trace/trace.h"

namespace polis::worker {

DpStep::DpStep(const nn::Model& model, const proto::ModelSpec& spec, const privacy::DpPlan& plan, int worker,
               int workers, int64_t batch, float* params, float* grads, bool bf16)
    : model_(model), spec_(spec), plan_(plan), worker_(worker), workers_(workers),
      P_(model.parameter_count()), K_(nn::ShapeElements(model.output_shape())),
      chunk_(batch + static_cast<int64_t>(std::ceil(4 * std::sqrt(static_cast<double>(batch))))),
      grads_(grads), net_(std::make_unique<nn::Network>(model, chunk_, params, grads, true, false, bf16)),
      targets_(chunk_ * K_) {}

DpStep::~DpStep() = default;

DpStep::Result DpStep::Run(int64_t step, const data::Dataset& ds, const std::function<void(int)>& before_layer,
                           std::vector<int64_t>* sampled) {
  Result r;
  {
    TRACE_SCOPE("poisson sample");
    *sampled = privacy::PoissonSample(plan_.sample_key, static_cast<uint64_t>(step), worker_, workers_,
                                      plan_.train_samples, plan_.q);
  }
  r.samples = static_cast<int64_t>(sampled->size());
  if (r.samples == 0) {  // still a step: the sum is zero (plus the noise)
    std::memset(grads_, 0, sizeof(float) * P_);
    return r;
  }
  // Almost always one pass, whose clipped sum stays in the gradient buffer;
  // several passes add theirs up in sum_.
  const bool several = r.samples > chunk_;
  if (several) sum_.resize(P_);
  const int64_t in = nn::ShapeElements(model_.input_shape());
  for (int64_t begin = 0; begin < r.samples; begin += chunk_) {
    const int64_t m = std::min(chunk_, r.samples - begin);
    {
      TRACE_SCOPE("load batch");
      ds.Gather(data::Part::kTrain, sampled->data() + begin, m, net_->input(), targets_.data());
      // Padding rows: zero inputs and zero output gradients add nothing.
      std::memset(net_->input() + m * in, 0, sizeof(float) * (chunk_ - m) * in);
    }
    net_->Forward(before_layer);
    // Each example's own loss gradient (grad_scale 1): the batch average
    // happens after the noise.
    const nn::LossStats st = nn::ComputeLoss(spec_, net_->output(), targets_.data(), m, K_, net_->output_diff(), 1.0f);
    std::memset(net_->output_diff() + m * K_, 0, sizeof(float) * (chunk_ - m) * K_);
    {
      TRACE_SCOPE("clipped backward");
      net_->BackwardClipped(static_cast<float>(plan_.clip), nullptr);
    }
    if (several)
      for (int64_t i = 0; i < P_; ++i) sum_[i] = (begin == 0 ? 0.0f : sum_[i]) + grads_[i];
    r.loss_sum += st.loss_sum;
    r.correct += st.correct;
  }
  if (several) std::memcpy(grads_, sum_.data(), sizeof(float) * P_);
  return r;
}

}  // namespace polis::worker
