#include "common/nn/executor.h"

#include "common/nn/model.h"

namespace polis::nn {

namespace {

class CpuExecutor : public Executor {
 public:
  CpuExecutor(const Model& model, int64_t batch, float* params, float* grads, const ExecutorOptions& o)
      : net_(model, batch, params, grads, o.training, o.want_input_grad, o.precision == device::Precision::kBf16),
        in_(ShapeElements(model.input_shape()) * batch),
        out_(ShapeElements(model.output_shape()) * batch) {}

  device::Kind kind() const override { return device::Kind::kCpu; }
  int64_t batch() const override { return net_.batch(); }
  device::Span<float> input() override { return device::HostSpan(net_.input(), in_); }
  Status Forward(const std::function<void(int)>& before_layer) override {
    try {
      net_.Forward(before_layer);
    } catch (const dnnl::error& e) {
      return InternalError("oneDNN forward: {}", e.what());
    }
    return Status::Ok();
  }
  device::Span<const float> output() override { return device::HostSpan(net_.output(), out_); }
  device::Span<float> output_diff() override { return device::HostSpan(net_.output_diff(), out_); }
  Status Backward(const LayerDone& on_layer_done) override {
    try {
      if (on_layer_done) net_.Backward([&](int layer) { on_layer_done(layer, nullptr); });
      else net_.Backward();
    } catch (const dnnl::error& e) {
      return InternalError("oneDNN backward: {}", e.what());
    }
    return Status::Ok();
  }
  std::vector<std::string> ImplInfo() const override { return net_.ImplInfo(); }

 private:
  Network net_;
  const int64_t in_, out_;
};

class CpuLoss : public Loss {
 public:
  CpuLoss(const proto::ModelSpec& spec, int64_t n, int64_t k) : spec_(spec), n_(n), k_(k) {}
  Status Compute(device::Span<const float> out, device::Span<const float> y, device::Span<float> dout,
                 float grad_scale, device::Stream&) override {
    const int64_t rows = k_ > 0 ? out.size / k_ : 0;
    if (out.size != rows * k_ || rows > n_ || (dout.size != 0 && dout.size < out.size))
      return InvalidArgument("loss over {} outputs of {} per row (at most {} rows)", out.size, k_, n_);
    stats_ = ComputeLoss(spec_, out.data, y.data, rows, k_, dout.size ? dout.data : nullptr, grad_scale);
    return Status::Ok();
  }
  StatusOr<LossStats> Read(device::Stream&) override { return stats_; }

 private:
  const proto::ModelSpec spec_;
  const int64_t n_, k_;
  LossStats stats_;
};

}  // namespace

StatusOr<std::unique_ptr<Executor>> MakeCpuExecutor(const Model& model, int64_t batch, device::Span<float> params,
                                                    device::Span<float> grads, const ExecutorOptions& options) {
  if (batch <= 0) return InvalidArgument("batch must be > 0, got {}", batch);
  if (params.size != model.parameter_count())
    return InvalidArgument("{} parameters given; the model has {}", params.size, model.parameter_count());
  if (options.training && grads.size < model.parameter_count())
    return InvalidArgument("training needs a gradient buffer of {} floats, got {}", model.parameter_count(),
                           grads.size);
  if (options.precision == device::Precision::kTf32)
    return InvalidArgument("precision TF32 is a CUDA precision; the CPU runs FP32 or BF16");
  if (std::string why = UnsupportedLayer(device::Kind::kCpu, model); !why.empty()) return Unimplemented("{}", why);
  try {
    return std::unique_ptr<Executor>(
        new CpuExecutor(model, batch, params.data, options.training ? grads.data : nullptr, options));
  } catch (const dnnl::error& e) {
    return InternalError("oneDNN could not build the network for batch {}: {}", batch, e.what());
  }
}

std::unique_ptr<Loss> MakeCpuLoss(const proto::ModelSpec& spec, int64_t n, int64_t k) {
  return std::make_unique<CpuLoss>(spec, n, k);
}

std::string UnsupportedLayer(device::Kind kind, const Model& model) {
  const LayerRegistry& registry = LayerRegistry::Global();
  for (const LayerInfo& l : model.layers())
    if (std::string why = registry.WhyNot(kind, l.spec); !why.empty())
      return fmt::format("layer '{}' ({}): {}", l.name, l.type, why);
  return "";
}

}  // namespace polis::nn
