#include "common/trace/trace.h"
#include "common/evaluate.h"

#include <cmath>
#include <algorithm>
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
  if (confusion.size() < o.confusion.size()) confusion.resize(o.confusion.size(), 0);
  for (size_t i = 0; i < o.confusion.size(); ++i) confusion[i] += o.confusion[i];
}

std::vector<double> EvalResult::PerClassAccuracy() const {
  const size_t k = static_cast<size_t>(std::llround(std::sqrt(static_cast<double>(confusion.size()))));
  std::vector<double> out(k, 0.0);
  for (size_t c = 0; c < k; ++c) {
    int64_t row = 0;
    for (size_t p = 0; p < k; ++p) row += confusion[c * k + p];
    out[c] = row > 0 ? static_cast<double>(confusion[c * k + c]) / row : 0.0;
  }
  return out;
}

void ToSums(const EvalResult& r, bool with_confusion, proto::EvalSums* out) {
  out->set_samples(r.samples);
  out->set_correct(r.correct);
  out->set_loss_sum(r.loss_sum);
  out->set_abs_error_sum(r.abs_error_sum);
  out->set_sq_error_sum(r.sq_error_sum);
  out->set_ape_sum(r.ape_sum);
  out->set_ape_count(r.ape_count);
  out->set_sape_sum(r.sape_sum);
  out->set_values(r.values);
  if (with_confusion) out->mutable_confusion()->Add(r.confusion.begin(), r.confusion.end());
}

EvalResult FromSums(const proto::EvalSums& s) {
  EvalResult r;
  r.samples = s.samples();
  r.correct = s.correct();
  r.loss_sum = s.loss_sum();
  r.abs_error_sum = s.abs_error_sum();
  r.sq_error_sum = s.sq_error_sum();
  r.ape_sum = s.ape_sum();
  r.ape_count = s.ape_count();
  r.sape_sum = s.sape_sum();
  r.values = s.values();
  r.confusion.assign(s.confusion().begin(), s.confusion().end());
  return r;
}

namespace {

// Adds each sample's (true, predicted) pair to a k x k confusion matrix.
void CountPredictions(const float* out, const float* labels, int64_t n, int64_t k, std::vector<int64_t>* m) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = out + i * k;
    const int64_t predicted = std::max_element(row, row + k) - row;
    const int64_t actual = static_cast<int64_t>(labels[i]);
    if (actual >= 0 && actual < k) ++(*m)[actual * k + predicted];
  }
}

}  // namespace

Evaluator::Evaluator(const nn::Model& model, const proto::ModelSpec& spec, const float* params,
                     int64_t batch, EvalDevice device)
    : model_(model), spec_(spec), params_(const_cast<float*>(params)), batch_(batch), device_(std::move(device)),
      indices_(batch), targets_(batch * nn::ShapeElements(model.output_shape())) {
  if (!device_.make) {
    device_.make = [this](int64_t n) {
      nn::ExecutorOptions o;
      o.training = false;
      return nn::MakeCpuExecutor(model_, n, device::HostSpan(params_, model_.parameter_count()), {}, o);
    };
  }
}

StatusOr<nn::Executor*> Evaluator::NetFor(int64_t n) {
  auto& slot = nets_[n];
  if (!slot) {
    POLIS_ASSIGN_OR_RETURN(slot, device_.make(n));
  }
  return slot.get();
}

StatusOr<const float*> Evaluator::Forward(nn::Executor& net) {
  if (net.kind() == device::Kind::kCpu) {
    POLIS_RETURN_IF_ERROR(net.Forward());
    return net.output().data;
  }
  // A device: the batch went to inputs_ (Run), goes up, and the outputs come down.
  device::Device& dev = *device_.dev;
  POLIS_RETURN_IF_ERROR(dev.Copy(net.input(), device::HostSpan<const float>(inputs_.data(), net.input().size), dev.stream()));
  POLIS_RETURN_IF_ERROR(net.Forward());
  const device::Span<const float> out = net.output();
  outputs_.resize(out.size);
  POLIS_RETURN_IF_ERROR(dev.Copy(device::HostSpan(outputs_.data(), out.size), out, dev.stream()));
  POLIS_RETURN_IF_ERROR(dev.stream().Synchronize());
  POLIS_RETURN_IF_ERROR(net.TakeDataError());
  return outputs_.data();
}

Status Evaluator::TakeError() {
  Status e = std::move(error_);
  error_ = Status::Ok();
  return e;
}

EvalResult Evaluator::Run(const data::Dataset& ds, data::Part part, int64_t begin, int64_t end) {
  TRACE_SCOPE("evaluate");
  EvalResult r;
  const int64_t k = nn::ShapeElements(model_.output_shape());
  const bool regression = ds.task() == data::Task::kRegression;
  if (!regression) r.confusion.assign(k * k, 0);
  for (int64_t at = begin; at < end; at += batch_) {
    int64_t n = std::min(batch_, end - at);
    std::iota(indices_.begin(), indices_.begin() + n, at);
    auto net = NetFor(n);
    if (!net.ok()) {
      error_ = net.status();
      break;
    }
    const bool on_host = (*net)->kind() == device::Kind::kCpu;
    if (!on_host) inputs_.resize((*net)->input().size);
    ds.Gather(part, indices_.data(), n, on_host ? (*net)->input().data : inputs_.data(), targets_.data());
    auto forward = Forward(**net);
    if (!forward.ok()) {
      error_ = forward.status();
      break;
    }
    const float* out = *forward;
    nn::LossStats st = nn::ComputeLoss(spec_, out, targets_.data(), n, k, nullptr, 0.f);
    r.samples += n;
    r.correct += st.correct;
    r.loss_sum += st.loss_sum;
    if (!regression) {
      CountPredictions(out, targets_.data(), n, k, &r.confusion);
      continue;
    }
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
