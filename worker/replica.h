// Replica: where a worker's executors find their parameters and gradients.
// The synchronisers (gradient_sync.h) work on the worker's host buffers; on
// the CPU the executors use those very buffers, and on a device with its own
// memory the replica keeps device copies and stages between the two:
// parameters up before a forward, gradients down after a backward, inputs
// and targets up through pinned buffers. The training loop calls the same
// functions whichever device it runs on.
//
// Thread-compatible: the training thread.
#pragma once

#include <functional>
#include <memory>

#include "common/device/device.h"
#include "common/nn/executor.h"
#include "common/status.h"

namespace polis::worker {

class Replica {
 public:
  // params: the model's P host floats; grads: P + extra host floats (the
  // synchroniser's, extra = kGradientExtraSlots); batch rows of `in` input
  // and `targets` target floats. device_collectives: the synchroniser
  // reduces the device's gradients itself (NCCL), so Backward leaves them
  // there; otherwise Backward brings each layer's gradients to the host.
  struct Shape {
    int64_t params = 0, extra = 0, batch = 0, in = 0, targets = 0;
  };
  static StatusOr<std::unique_ptr<Replica>> Create(device::Device& dev, float* params, float* grads, Shape shape,
                                                   const nn::Model& model, bool device_collectives);
  ~Replica();

  device::Device& dev() { return dev_; }
  // The executor's parameter and gradient spans (in the device's memory).
  device::Span<float> params() { return staged_ ? d_params_.span().sub(0, P_) : device::HostSpan(params_, P_); }
  device::Span<float> grads() { return staged_ ? d_grads_.span().sub(0, P_) : device::HostSpan(grads_, P_); }
  // The gradients with the extra slots, where the synchroniser's collectives
  // run: the device's with device_collectives, else the host's.
  device::Span<float> reduce() {
    return device_collectives_ ? d_grads_.span() : device::HostSpan(grads_, P_ + extra_);
  }
  // A step with no samples: zero gradients wherever they live.
  Status ZeroGradients();

  // Where to write `rows` input rows and their targets on the host, then
  // call LoadBatch: the executor's own input when the host can write it.
  float* HostInput(nn::Executor& ex) { return staged_ ? h_input_[cur_].data() : ex.input().data; }
  float* HostTargets() { return h_targets_[cur_].data(); }

  // Double buffering, on a device with its own memory: while the device
  // computes a batch, the next one can be gathered into the other pinned
  // buffers (NextHostInput/NextHostTargets, room for a full batch); Swap
  // makes them the current ones. On the CPU the executor's input is the
  // buffer, and there is nothing to overlap.
  bool double_buffered() const { return staged_; }
  float* NextHostInput() { return h_input_[1 - cur_].data(); }
  float* NextHostTargets() { return h_targets_[1 - cur_].data(); }
  void Swap() { cur_ = 1 - cur_; }
  // Moves what HostInput/HostTargets hold to the executor and returns the
  // targets' span on the device, for the loss.
  StatusOr<device::Span<const float>> LoadBatch(nn::Executor& ex, int64_t rows);

  // The host parameters to the device's copy (a no-op on the CPU), e.g.
  // before an evaluation; Forward does it itself.
  Status UploadParams();
  // Forward with the synchroniser's per-layer wait. Staged: layer i's
  // parameters go up on the copy stream once the synchroniser has them, and
  // the compute stream waits for that copy only before layer i.
  Status Forward(nn::Executor& ex, const std::function<void(int)>& before_layer);
  // Backward, telling the synchroniser as each layer's gradients are final
  // where it reads them. Staged to the host: each layer's gradients are
  // copied down on a copy stream as soon as the compute stream has made
  // them, and the synchroniser hears of layer i once its copy is in, while
  // the earlier layers' backward still runs.
  Status Backward(nn::Executor& ex, int layers, const std::function<void(int)>& on_layer);

 private:
  Replica(device::Device& dev, float* params, float* grads, int64_t P, int64_t extra, bool staged,
          bool device_collectives)
      : dev_(dev), params_(params), grads_(grads), P_(P), extra_(extra), staged_(staged),
        device_collectives_(device_collectives) {}
  Status StagedForward(nn::Executor& ex, const std::function<void(int)>& before_layer);
  Status StagedBackward(nn::Executor& ex, int layers, const std::function<void(int)>& on_layer);
  device::Device& dev_;
  float* params_;
  float* grads_;
  const int64_t P_, extra_;
  const bool staged_;              // the device's memory is not the host's
  const bool device_collectives_;  // gradients are reduced on the device
  std::vector<std::pair<int64_t, int64_t>> ranges_;  // per layer: [offset, count) of its parameters
  std::unique_ptr<device::Stream> copy_;             // staged: the copy stream
  std::vector<std::unique_ptr<device::Event>> made_, moved_;  // per layer: computed, copied
  bool pinned_ = false;                              // params_/grads_ page-locked by Pin
  int64_t targets_per_row_ = 0;
  int cur_ = 0;  // which of the two pinned buffers holds the current batch
  device::Buffer d_params_, d_grads_, h_input_[2], h_targets_[2], d_targets_;
};

}  // namespace polis::worker
