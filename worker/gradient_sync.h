// GradientSync: how a worker turns its local gradients into the next
// parameters. Two implementations on two separate transports (STYLE.md):
//  - ParameterServerSync: push gradient slices / pull parameter slices to
//    the key-range servers (PsClient); the servers run the optimizer.
//  - AllReduceSync: sum gradients across workers in buckets (Communicator)
//    on a communication thread, overlapping backward; every worker then
//    applies the same optimizer step to its replica.
// The training loop calls BeforeLayerForward(i) before forward runs layer
// i, OnLayerGradients(i) as backward finishes layer i (last layer first) and
// Sync() once per step. One training thread.
#pragma once

#include <memory>

#include "common/device/device.h"
#include "common/nn/model.h"
#include "common/optimizer.h"
#include "common/privacy/dp_plan.h"
#include "common/privacy/secagg_session.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::worker {

class GradientSync {
 public:
  virtual ~GradientSync() = default;
  // Before backward: this worker's sample count for the step.
  virtual void BeginStep(int64_t samples) {}
  // Layer `layer`'s gradients in the flat buffer are final.
  virtual void OnLayerGradients(int layer) {}
  // Forward is about to run layer `layer`: its parameters must be in place
  // (a parameter-server reply may still be landing). A failure is returned
  // by the next Sync.
  virtual void BeforeLayerForward(int layer) {}
  // Seconds BeforeLayerForward spent waiting since the last call: time of
  // communication the forward did not hide.
  virtual double TakeForwardWaitSeconds() { return 0; }
  struct StepInfo {
    int64_t step = 0;      // the step this worker believes it is at
    int64_t samples = 0;   // this worker's samples (0: it has no data left)
    int epoch = 0;
    int64_t consumed = 0;  // samples of the epoch this worker has used, these included
    // This worker has no data left in the epoch (a DP-SGD step may have no
    // samples and still be a step).
    bool epoch_end = false;
  };
  // A checkpoint every worker takes after the same step (all-reduce mode,
  // where workers hold the state): the lead worker asks for it with
  // RequestCheckpoint, and the request rides in the step's all-reduce, so
  // all replicas see it at the same step.
  enum class Checkpoint { kNone = 0, kTake = 1, kTakeAndStop = 2 };
  struct StepResult {
    bool epoch_over = false;  // every worker finished the epoch
    int64_t server_step = -1; // parameter servers' update count (-1: not known)
    Checkpoint checkpoint = Checkpoint::kNone;  // agreed by every worker this step
  };
  // For the next Sync (lead worker only; no effect in parameter-server mode,
  // where the servers hold the state).
  virtual void RequestCheckpoint(Checkpoint kind) {}
  // The optimizer whose state a checkpoint must keep: the all-reduce
  // replica's; null when the servers run the optimizer.
  virtual Optimizer* optimizer() { return nullptr; }
  // Every worker calls this at the same step, right before it writes a
  // checkpoint (all-reduce mode): with local SGD the replicas' parameters
  // and optimizer states are averaged first, so the checkpoint is the one
  // state every worker resumes from.
  virtual Status BeforeCheckpoint() { return Status::Ok(); }
  // Finishes the step: on return the parameters are updated.
  virtual Status Sync(const StepInfo& info, StepResult* result) = 0;
  // Optional end-of-step check that all replicas agree (all-reduce).
  virtual Status VerifyReplicas(int64_t step) { return Status::Ok(); }
  // The job is over or stopping: ends this worker's exchange so that no
  // message either side sent is left unreceived (parameter servers: the
  // round in flight is completed and every server told goodbye; see
  // common/comm/ps_client.h). Once is enough; later calls do nothing.
  virtual Status Leave() { return Status::Ok(); }
};

// params/grads: the model's flat buffers (grads has room for
// kGradientExtraSlots floats after the parameters, used by AllReduceSync to
// carry the step's sample count and checkpoint request).
inline constexpr int64_t kGradientExtraSlots = 2;
// A contiguous range of the gradient buffer reduced as one all-reduce.
struct Bucket {
  int64_t begin = 0, end = 0;  // floats in the gradient buffer
  int ready_after_layer = 0;   // final once backward has finished this layer
};
// Buckets from the last layer to the first, covering [0, P + 2) (P =
// parameter count; floats P and P + 1 are the extra slots), of about bucket_bytes each; a
// layer larger than that is split; bucket_bytes 0 gives one per layer.
std::vector<Bucket> PlanBuckets(const nn::Model& model, int64_t bucket_bytes);

// With privacy.secure_aggregation this first exchanges keys through the
// coordinator (it waits for every worker). `noise`: DP-SGD combined with
// secure aggregation: this worker's noise share, added to each piece before
// it is masked (required exactly then; null otherwise).
StatusOr<std::unique_ptr<GradientSync>> MakeParameterServerSync(const RoleContext& ctx, float* params, float* grads,
                                                                const privacy::NoiseShare* noise = nullptr);
// dp: a DP-SGD job's plan (not owned; outlives the sync): every replica
// adds the step's noise to the summed clipped gradients and divides by the
// expected batch; the worker loop decides when an epoch ends.
// dev/reduce: where the collectives run (backend::MakeWorkersCommunicator
// picks the communicator by device): null/empty, or the CPU and the host
// gradient buffer, is MPI on `grads`; a CUDA device and the replica's
// device gradients (P + kGradientExtraSlots floats) is NCCL, each bucket
// started once the compute stream has passed its layers, and the reduced
// buffer downloaded into `grads` before the (host) optimizer step.
StatusOr<std::unique_ptr<GradientSync>> MakeAllReduceSync(const RoleContext& ctx, float* params,
                                                          float* grads, const privacy::DpPlan* dp = nullptr,
                                                          device::Device* dev = nullptr,
                                                          device::Span<float> reduce = {});

}  // namespace polis::worker
