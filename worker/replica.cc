#include "worker/replica.h"

#include "common/trace/trace.h"

namespace polis::worker {

StatusOr<std::unique_ptr<Replica>> Replica::Create(device::Device& dev, float* params, float* grads, Shape shape,
                                                   const nn::Model& model, bool device_collectives) {
  const bool staged = dev.kind() != device::Kind::kCpu;
  const int64_t P = shape.params;
  std::unique_ptr<Replica> r(
      new Replica(dev, params, grads, P, shape.extra, staged, staged && device_collectives));
  r->targets_per_row_ = shape.targets;
  POLIS_ASSIGN_OR_RETURN(r->h_targets_[0], dev.Allocate(shape.batch * shape.targets, device::Space::kPinned));
  if (!staged) return r;
  POLIS_ASSIGN_OR_RETURN(r->h_targets_[1], dev.Allocate(shape.batch * shape.targets, device::Space::kPinned));
  for (const nn::LayerInfo& l : model.layers()) r->ranges_.emplace_back(l.param_offset, l.param_count);
  // The synchroniser's buffers are copied from and to asynchronously.
  POLIS_RETURN_IF_ERROR(dev.Pin(params, P));
  Status pinned = dev.Pin(grads, P + shape.extra);
  if (!pinned.ok()) {
    (void)dev.Unpin(params);
    return pinned;
  }
  r->pinned_ = true;
  POLIS_ASSIGN_OR_RETURN(r->d_params_, dev.Allocate(P, device::Space::kDevice));
  POLIS_ASSIGN_OR_RETURN(r->d_grads_, dev.Allocate(P + shape.extra, device::Space::kDevice));
  for (device::Buffer& b : r->h_input_) {
    POLIS_ASSIGN_OR_RETURN(b, dev.Allocate(shape.batch * shape.in, device::Space::kPinned));
  }
  POLIS_ASSIGN_OR_RETURN(r->d_targets_, dev.Allocate(shape.batch * shape.targets, device::Space::kDevice));
  POLIS_ASSIGN_OR_RETURN(r->copy_, dev.NewStream());
  for (size_t i = 0; i < r->ranges_.size(); ++i) {
    POLIS_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> made, dev.NewEvent());
    POLIS_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> moved, dev.NewEvent());
    r->made_.push_back(std::move(made));
    r->moved_.push_back(std::move(moved));
  }
  return r;
}

Replica::~Replica() {
  if (!pinned_) return;
  (void)dev_.stream().Synchronize();
  if (copy_) (void)copy_->Synchronize();
  (void)dev_.Unpin(params_);
  (void)dev_.Unpin(grads_);
}

StatusOr<device::Span<const float>> Replica::LoadBatch(nn::Executor& ex, int64_t rows) {
  const int64_t per_target = targets_per_row_;
  const device::Span<float> h_targets = h_targets_[cur_].span().sub(0, rows * per_target);
  if (!staged_) return device::Span<const float>(h_targets);
  TRACE_SCOPE("upload batch");
  device::Stream& s = dev_.stream();
  const device::Span<float> in = ex.input();
  POLIS_RETURN_IF_ERROR(dev_.Copy(in, h_input_[cur_].span().sub(0, in.size), s));
  const device::Span<float> d_targets = d_targets_.span().sub(0, rows * per_target);
  POLIS_RETURN_IF_ERROR(dev_.Copy(d_targets, h_targets, s));
  return device::Span<const float>(d_targets);
}

Status Replica::ZeroGradients() {
  std::fill(grads_, grads_ + P_, 0.f);
  if (!staged_) return Status::Ok();
  return dev_.Zero(d_grads_.span().sub(0, P_), dev_.stream());
}

Status Replica::UploadParams() {
  if (!staged_) return Status::Ok();
  TRACE_SCOPE("upload parameters");
  return dev_.Copy(params(), device::HostSpan<const float>(params_, P_), dev_.stream());
}

Status Replica::Forward(nn::Executor& ex, const std::function<void(int)>& before_layer) {
  if (!staged_) return ex.Forward(before_layer);
  return StagedForward(ex, before_layer);
}

// Layer i's parameters go up on the copy stream as soon as the synchroniser
// has them (before_layer(i) waits for them on the host); the compute stream
// waits for that copy only before layer i, so uploads overlap the forward
// of the layers before it.
Status StagedForwardLayer(device::Device& dev, device::Stream& copy, device::Event& moved, device::Span<float> dst,
                          device::Span<const float> src) {
  if (dst.size == 0) return Status::Ok();
  POLIS_RETURN_IF_ERROR(dev.Copy(dst, src, copy));
  POLIS_RETURN_IF_ERROR(moved.Record(copy));
  return moved.MakeWait(dev.stream());
}

Status Replica::StagedForward(nn::Executor& ex, const std::function<void(int)>& before_layer) {
  Status failed;
  POLIS_RETURN_IF_ERROR(ex.Forward([&](int i) {
    if (before_layer) before_layer(i);
    if (!failed.ok()) return;
    const auto [offset, count] = ranges_[i];
    failed = StagedForwardLayer(dev_, *copy_, *moved_[i], params().sub(offset, count),
                                device::HostSpan<const float>(params_ + offset, count));
  }));
  return failed;
}

Status Replica::Backward(nn::Executor& ex, int layers, const std::function<void(int)>& on_layer) {
  if (!staged_) return ex.Backward([&](int layer, device::Event*) { on_layer(layer); });
  // NCCL reduces the device's gradients: the synchroniser orders its
  // stream after the compute stream itself (worker/allreduce_sync.cc).
  if (device_collectives_) return ex.Backward([&](int layer, device::Event*) { on_layer(layer); });
  return StagedBackward(ex, layers, on_layer);
}

Status Replica::StagedBackward(nn::Executor& ex, int layers, const std::function<void(int)>& on_layer) {
  Status failed;
  // Enqueue the whole backward, each layer's download right behind it.
  POLIS_RETURN_IF_ERROR(ex.Backward([&](int i, device::Event*) {
    const auto [offset, count] = ranges_[i];
    if (!failed.ok() || count == 0) return;
    failed = made_[i]->Record(dev_.stream());
    if (failed.ok()) failed = made_[i]->MakeWait(*copy_);
    if (failed.ok())
      failed = dev_.Copy(device::HostSpan(grads_ + offset, count), grads().sub(offset, count), *copy_);
    if (failed.ok()) failed = moved_[i]->Record(*copy_);
  }));
  POLIS_RETURN_IF_ERROR(failed);
  // Then hand each layer over as its copy lands, last layer first.
  TRACE_SCOPE("download gradients");
  for (int i = layers - 1; i >= 0; --i) {
    if (ranges_[i].second > 0) POLIS_RETURN_IF_ERROR(moved_[i]->Synchronize());
    on_layer(i);
  }
  return Status::Ok();
}

}  // namespace polis::worker
