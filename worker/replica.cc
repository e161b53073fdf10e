#include "worker/replica.h"

#include "common/trace/trace.h"

namespace polis::worker {

StatusOr<std::unique_ptr<Replica>> Replica::Create(device::Device& dev, float* params, float* grads, int64_t P,
                                                   int64_t batch, int64_t in, int64_t targets) {
  const bool staged = dev.kind() != device::Kind::kCpu;
  std::unique_ptr<Replica> r(new Replica(dev, params, grads, P, staged));
  POLIS_ASSIGN_OR_RETURN(r->h_targets_, dev.Allocate(batch * targets, device::Space::kPinned));
  if (!staged) return r;
  POLIS_ASSIGN_OR_RETURN(r->d_params_, dev.Allocate(P, device::Space::kDevice));
  POLIS_ASSIGN_OR_RETURN(r->d_grads_, dev.Allocate(P, device::Space::kDevice));
  POLIS_ASSIGN_OR_RETURN(r->h_input_, dev.Allocate(batch * in, device::Space::kPinned));
  POLIS_ASSIGN_OR_RETURN(r->d_targets_, dev.Allocate(batch * targets, device::Space::kDevice));
  return r;
}

StatusOr<device::Span<const float>> Replica::LoadBatch(nn::Executor& ex, int64_t rows) {
  const int64_t per_target = h_targets_.size() / ex.batch();
  const device::Span<float> h_targets = h_targets_.span().sub(0, rows * per_target);
  if (!staged_) return device::Span<const float>(h_targets);
  TRACE_SCOPE("upload batch");
  device::Stream& s = dev_.stream();
  const device::Span<float> in = ex.input();
  POLIS_RETURN_IF_ERROR(dev_.Copy(in, h_input_.span().sub(0, in.size), s));
  const device::Span<float> d_targets = d_targets_.span().sub(0, rows * per_target);
  POLIS_RETURN_IF_ERROR(dev_.Copy(d_targets, h_targets, s));
  return device::Span<const float>(d_targets);
}

Status Replica::Forward(nn::Executor& ex, int layers, const std::function<void(int)>& before_layer) {
  if (!staged_) return ex.Forward(before_layer);
  for (int i = 0; i < layers; ++i) before_layer(i);
  POLIS_RETURN_IF_ERROR(UploadParams());
  return ex.Forward();
}

Status Replica::UploadParams() {
  if (!staged_) return Status::Ok();
  TRACE_SCOPE("upload parameters");
  return dev_.Copy(d_params_.span(), device::HostSpan<const float>(params_, P_), dev_.stream());
}

Status Replica::Backward(nn::Executor& ex, int layers, const std::function<void(int)>& on_layer) {
  if (!staged_) return ex.Backward([&](int layer, device::Event*) { on_layer(layer); });
  POLIS_RETURN_IF_ERROR(ex.Backward());
  {
    TRACE_SCOPE("download gradients");
    POLIS_RETURN_IF_ERROR(dev_.Copy(device::HostSpan(grads_, P_), d_grads_.span(), dev_.stream()));
    POLIS_RETURN_IF_ERROR(dev_.stream().Synchronize());
  }
  for (int i = layers - 1; i >= 0; --i) on_layer(i);
  return Status::Ok();
}

}  // namespace polis::worker
