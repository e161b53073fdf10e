#include "common/nn/cuda/cuda_executor.h"

#include <cuda_runtime_api.h>

#include "common/device/cuda/cuda_device.h"
#include "common/nn/cuda/cuda_network.h"
#include "common/nn/cuda/cuda_util.h"

namespace polis::nn::cuda {

namespace {

device::Span<float> OnDevice(float* p, int64_t n) { return {p, n, device::Space::kDevice}; }

class CudaExecutor : public Executor {
 public:
  CudaExecutor(std::unique_ptr<CudaNetwork> net, int64_t in, int64_t out)
      : net_(std::move(net)), in_(in), out_(out) {}
  device::Kind kind() const override { return device::Kind::kCuda; }
  int64_t batch() const override { return net_->batch(); }
  device::Span<float> input() override { return OnDevice(net_->d_input(), in_); }
  Status Forward(const std::function<void(int)>& before_layer) override { return net_->Forward(before_layer); }
  device::Span<const float> output() override { return OnDevice(const_cast<float*>(net_->d_output()), out_); }
  device::Span<float> output_diff() override { return OnDevice(net_->d_output_diff(), out_); }
  Status Backward(const LayerDone& on_layer_done) override {
    if (!on_layer_done) return net_->Backward();
    return net_->Backward([&](int layer) {
      event_.Reset(net_->layer_done_event(layer));
      on_layer_done(layer, &event_);
    });
  }
  Status TakeDataError() override { return net_->TakeDataError(); }
  std::vector<std::string> ImplInfo() const override { return net_->ImplInfo(); }

 private:
  std::unique_ptr<CudaNetwork> net_;
  const int64_t in_, out_;
  device::CudaEventView event_;  // the layer-done event of the moment (the network owns them)
};

class CudaLossAdapter : public Loss {
 public:
  explicit CudaLossAdapter(std::unique_ptr<CudaLoss> loss) : loss_(std::move(loss)) {}
  Status Compute(device::Span<const float> out, device::Span<const float> y, device::Span<float> dout,
                 float grad_scale, device::Stream& s) override {
    if (out.space != device::Space::kDevice || y.space != device::Space::kDevice)
      return InvalidArgument("the CUDA loss reads device memory; got {} outputs and {} targets",
                             device::SpaceName(out.space), device::SpaceName(y.space));
    return loss_->Compute(out.data, y.data, dout.size ? dout.data : nullptr, grad_scale,
                          static_cast<cudaStream_t>(s.native()));
  }
  StatusOr<LossStats> Read(device::Stream& s) override {
    return loss_->Read(static_cast<cudaStream_t>(s.native()));
  }

 private:
  std::unique_ptr<CudaLoss> loss_;
};

Precision ToCuda(device::Precision p) {
  switch (p) {
    case device::Precision::kTf32: return Precision::kTf32;
    case device::Precision::kBf16: return Precision::kBf16;
    default: return Precision::kFp32;
  }
}

}  // namespace

StatusOr<std::unique_ptr<Executor>> MakeCudaExecutor(device::Device& dev, const Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const ExecutorOptions& options) {
  if (dev.kind() != device::Kind::kCuda) return InvalidArgument("a CUDA executor needs a CUDA device");
  if (params.space != device::Space::kDevice || (options.training && grads.space != device::Space::kDevice))
    return InvalidArgument("a CUDA executor's parameters and gradients live in device memory");
  if (params.size != model.parameter_count())
    return InvalidArgument("{} parameters given; the model has {}", params.size, model.parameter_count());
  if (std::string why = UnsupportedLayer(device::Kind::kCuda, model); !why.empty()) return Unimplemented("{}", why);
  CudaOptions o;
  o.precision = ToCuda(options.precision);
  o.stream = static_cast<cudaStream_t>(dev.stream().native());
  o.want_input_grad = options.want_input_grad;
  o.device = dev.ordinal();
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<CudaNetwork> net,
                         CudaNetwork::Create(model, batch, params.data, options.training ? grads.data : nullptr,
                                             options.training, o));
  auto ex = std::make_unique<CudaExecutor>(std::move(net), ShapeElements(model.input_shape()) * batch,
                                           ShapeElements(model.output_shape()) * batch);
  return std::unique_ptr<Executor>(std::move(ex));
}

StatusOr<std::unique_ptr<Loss>> MakeCudaLoss(const proto::ModelSpec& spec, int64_t n, int64_t k) {
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<CudaLoss> loss, CudaLoss::Create(spec, n, k));
  return std::unique_ptr<Loss>(new CudaLossAdapter(std::move(loss)));
}

}  // namespace polis::nn::cuda
