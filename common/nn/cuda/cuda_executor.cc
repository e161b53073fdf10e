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

class CudaOptimizerAdapter : public Optimizer {
 public:
  CudaOptimizerAdapter(std::unique_ptr<CudaOptimizer> opt, int64_t n) : opt_(std::move(opt)), n_(n) {
    for (auto& [name, d] : opt_->DeviceState()) host_.emplace_back(name, std::vector<float>(n));
  }

  Status Update(device::Span<float> params, device::Span<const float> grads, device::Stream& s) override {
    if (params.space != device::Space::kDevice || grads.space != device::Space::kDevice)
      return InvalidArgument("the CUDA optimizer updates device memory; got {} parameters and {} gradients",
                             device::SpaceName(params.space), device::SpaceName(grads.space));
    if (params.size != n_ || grads.size != n_)
      return InvalidArgument("optimizer of {} floats given {} parameters and {} gradients", n_, params.size, grads.size);
    return opt_->Step(params.data, grads.data, static_cast<cudaStream_t>(s.native()));
  }

  void Step(float* params, const float* grads) override {
    // Host memory: up, one update, down (tests and tools; workers update
    // device memory through Update).
    Status st = staging_p_.size() == n_ ? Status::Ok() : staging_p_.Allocate(n_);
    if (st.ok() && staging_g_.size() != n_) st = staging_g_.Allocate(n_);
    if (st.ok()) st = Copy(staging_p_.get(), params, cudaMemcpyHostToDevice);
    if (st.ok()) st = Copy(staging_g_.get(), grads, cudaMemcpyHostToDevice);
    if (st.ok()) st = opt_->Step(staging_p_.get(), staging_g_.get(), nullptr);
    if (st.ok()) st = Copy(params, staging_p_.get(), cudaMemcpyDeviceToHost);
    POLIS_ENFORCE_OK(st);
  }

  int64_t step_count() const override { return opt_->step_count(); }
  void set_step_count(int64_t t) override {
    opt_->set_step_count(t);
    auto dev = opt_->DeviceState();
    for (size_t i = 0; i < dev.size(); ++i)
      POLIS_ENFORCE_OK(Copy(dev[i].second, host_[i].second.data(), cudaMemcpyHostToDevice));
  }
  double current_lr() const override { return opt_->current_lr(); }
  std::vector<std::pair<std::string, std::vector<float>*>> State() override {
    std::vector<std::pair<std::string, std::vector<float>*>> out;
    auto dev = opt_->DeviceState();
    for (size_t i = 0; i < dev.size(); ++i) {
      POLIS_ENFORCE_OK(Copy(host_[i].second.data(), dev[i].second, cudaMemcpyDeviceToHost));
      out.emplace_back(host_[i].first, &host_[i].second);
    }
    return out;
  }

 private:
  Status Copy(float* dst, const float* src, cudaMemcpyKind kind) {
    POLIS_CUDA_CHECK(cudaDeviceSynchronize());
    POLIS_CUDA_CHECK(cudaMemcpy(dst, src, sizeof(float) * n_, kind));
    return Status::Ok();
  }
  std::unique_ptr<CudaOptimizer> opt_;
  const int64_t n_;
  std::vector<std::pair<std::string, std::vector<float>>> host_;
  DeviceArray<float> staging_p_, staging_g_;
};

}  // namespace

StatusOr<std::unique_ptr<Optimizer>> MakeCudaOptimizer(const proto::OptimizerSpec& spec, int64_t n,
                                                       int64_t total_steps_hint) {
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<CudaOptimizer> opt, CudaOptimizer::Create(spec, n, total_steps_hint));
  return std::unique_ptr<Optimizer>(new CudaOptimizerAdapter(std::move(opt), n));
}

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
