// What every role (coordinator, parameter server, worker) is given by
// polis-train: the checked job, the model, and its place in the job.
//
// Rank layout (ARCHITECTURE.md): rank 0 coordinator, ranks 1..S parameter
// servers, ranks S+1..N-1 workers. The roles talk through a transport
// (common/comm/transport.h; MPI in polis-train, in-process in unit tests):
// `ctrl` for control messages, `data` for raw tensors, so control traffic
// never queues behind the data plane.
#pragma once

#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/comm/transport.h"
#include "common/job_spec.h"
#include "common/launch/placement.h"
#include "common/nn/model.h"
#include "common/privacy/prg.h"

namespace polis {

struct RoleContext {
  LoadedJob job;
  nn::Model model;
  // Not owned; set together: ctrl and data are transport's channels.
  comm::Transport* transport = nullptr;
  comm::Channel* ctrl = nullptr;
  comm::Channel* data = nullptr;
  int rank = 0;
  int world = 0;
  int servers = 0;
  int workers = 0;
  // Opened by the coordinator only: the hosts need not share a file system.
  std::string run_dir;
  int64_t train_samples = 0;  // after dataset.train_limit
  // Set by --resume: the checkpoint to start from. Only the coordinator
  // opens it (common/checkpoint_transfer.h); the other ranks use the path in
  // messages and find their part in `resumed`: a server its key range, a
  // worker every parameter (with the optimizer state in all-reduce mode).
  std::string resume_manifest;
  ShardFile resumed;
  // Multi-host jobs (polis-train --hosts): every rank's host, by rank;
  // empty on one host.
  std::vector<launch::PlacedRank> placement;
  // DP-SGD jobs (privacy.target_epsilon or noise_multiplier): the job's
  // secret, drawn by the coordinator's process at start (a resume draws a
  // new one) and the same on every rank; each role derives its plan from it
  // (common/privacy/dp_plan.h). Never written to a file or a log.
  privacy::Key256 privacy_key{};

  int coordinator_rank() const { return 0; }
  int server_rank(int s) const { return 1 + s; }
  int worker_rank(int w) const { return 1 + servers + w; }
  int worker_index() const { return rank - 1 - servers; }
  int server_index() const { return rank - 1; }
  bool is_server() const { return rank >= 1 && rank <= servers; }
  bool is_worker() const { return rank > servers; }
  std::string RoleName(int r) const {
    return r == 0 ? "coordinator" : r <= servers ? "server" : "worker";
  }
  // "rank 3 (worker)"; on several hosts "rank 3 (worker on HOST)".
  std::string RankName(int r) const {
    std::string name = "rank " + std::to_string(r) + " (" + RoleName(r);
    if (r >= 0 && r < static_cast<int>(placement.size())) name += " on " + placement[r].host;
    return name + ")";
  }
};

// Raw data-plane headers (POD, not protobuf).
enum PushFlags : int64_t {
  kPushEpochEnd = 1,      // this worker has no data left in `epoch`
  kPushLeave = 2,         // goodbye: no push follows; header only, no pieces
};
enum PullFlags : int64_t {
  kPullEpochDone = 1,     // every worker finished the epoch; params are final for it
  kPullCheckpoint = 2,    // a checkpoint was taken at this step
  kPullStopped = 4,       // the server is stopping: header only, no parameters follow
};
struct PushHeader {
  int64_t step = 0;       // the worker's idea of the server step (BSP check)
  int64_t samples = 0;    // samples behind this gradient (a sum over them)
  int64_t flags = 0;      // PushFlags
  int64_t epoch = 0;
  int64_t consumed = 0;   // samples of `epoch` this worker has pushed, this one included
  // training.clip_grad_norm under ASP/SSP: the L2 norm of this push's mean
  // gradient over every parameter (servers see only their range); else 0.
  double grad_norm = 0;
};
struct PullHeader {
  int64_t step = 0;       // server updates so far
  int64_t total_samples = 0;  // BSP: over all workers this step
  int64_t flags = 0;      // PullFlags
};

// Optimizer updates a synchronous job makes (for schedules that need a
// total, such as cosine decay): epochs × steps per epoch.
inline int64_t TotalStepsHint(const RoleContext& ctx) {
  const auto& t = ctx.job.spec.training();
  const int64_t per_step = static_cast<int64_t>(t.batch_size()) * (ctx.workers > 0 ? ctx.workers : 1);
  return t.epochs() * ((ctx.train_samples + per_step - 1) / per_step);
}

// Samples per shard when the job does not say: 16 batches.
inline int64_t ShardSize(const proto::JobSpec& spec) {
  return spec.training().shard_size() > 0 ? spec.training().shard_size()
                                          : 16 * static_cast<int64_t>(spec.training().batch_size());
}

}  // namespace polis
