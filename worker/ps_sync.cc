// ParameterServerSync: a push/pull round per step, in pieces (see
// common/comm/ps_pieces.h). Each piece of the gradient is sent as soon as
// backward has finished the layers it covers; Sync sends the header, waits
// for every server's answer and returns while the parameter pieces may
// still be landing; the next forward waits for layer i's pieces just before
// running layer i. With sync.ps_piece_bytes < 0 the whole reply is waited
// for in Sync (one message per server, no overlap).
// With privacy.secure_aggregation each piece is encoded in fixed point and
// masked (common/privacy/secagg_session.h) just before it is sent, so
// nothing unmasked leaves the worker.
#include <cmath>

#include "common/comm/key_ranges.h"
#include "common/comm/ps_client.h"
#include "common/grad_clip.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/privacy/secagg_session.h"
#include "common/trace/trace.h"
#include "worker/gradient_sync.h"

namespace polis::worker {
namespace {

using Seconds = std::chrono::duration<double>;

class ParameterServerSync : public GradientSync {
 public:
  ParameterServerSync(const RoleContext& ctx, float* params, float* grads,
                      std::unique_ptr<privacy::SecAggWorker> secagg)
      : params_(params), grads_(grads), P_(ctx.model.parameter_count()), worker_index_(ctx.worker_index()),
        overlap_pulls_(ctx.job.spec.sync().ps_piece_bytes() >= 0),
        clip_each_push_(ctx.job.spec.training().clip_grad_norm() > 0 &&
                        ctx.job.spec.sync().consistency() != proto::SyncSpec::BSP),
        client_(ctx.data, ServerRanks(ctx), comm::PartitionByBytes(ctx.model.parameter_count(), ctx.servers),
                comm::PlanPieces(ctx.model, ctx.servers, ctx.job.spec.sync().ps_piece_bytes()), ctx.ctrl,
                ctx.coordinator_rank()),
        secagg_(std::move(secagg)) {
    if (secagg_) {
      masked_.resize(P_);
      // The round the first push belongs to: the servers' step and epoch.
      if (!ctx.resume_manifest.empty()) {
        round_step_ = ctx.resumed.step;
        round_epoch_ = ctx.resumed.epoch + (ctx.resumed.epoch_complete ? 1 : 0);
      }
    }
    const auto& pieces = client_.pieces();
    const auto& layers = ctx.model.layers();
    layer_pieces_.resize(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const int64_t b = layers[i].param_offset, e = b + layers[i].param_count;
      for (size_t k = 0; k < pieces.size(); ++k)
        if (pieces[k].begin < e && pieces[k].end > b) layer_pieces_[i].push_back(static_cast<int>(k));
    }
    POLIS_LOG(kInfo, kWorker, "parameter-server round in {} pieces{}", pieces.size(),
              overlap_pulls_ ? ", pulls overlapped with forward" : "");
  }

  void BeginStep(int64_t samples) override { next_ = 0; }

  void OnLayerGradients(int layer) override {
    const auto& pieces = client_.pieces();
    while (next_ < pieces.size() && pieces[next_].first_layer >= layer) PushPiece(next_++);
  }

  void BeforeLayerForward(int layer) override {
    if (!client_.pulls_pending() || layer_pieces_[layer].empty()) return;
    TRACE_SCOPE("pull wait", "layer", layer);
    const auto t0 = comm::Clock::now();
    Status st = client_.WaitPieces(layer_pieces_[layer].data(), static_cast<int>(layer_pieces_[layer].size()));
    forward_wait_s_ += Seconds(comm::Clock::now() - t0).count();
    if (!st.ok() && error_.ok()) error_ = st;
  }

  Status Leave() override { return client_.Leave(); }

  double TakeForwardWaitSeconds() override {
    const double s = forward_wait_s_;
    forward_wait_s_ = 0;
    return s;
  }

  Status Sync(const StepInfo& info, StepResult* result) override {
    TRACE_SCOPE("sync");
    if (secagg_ && (info.step != round_step_ || info.epoch != round_epoch_))
      return InternalError("secure aggregation: the worker pushes step {} of epoch {}, but the servers are at step {} "
                           "of epoch {}",
                           info.step, info.epoch, round_step_, round_epoch_);
    // Masked pushes: every piece is encoded here, none from the float buffer.
    if (secagg_)
      while (next_ < client_.pieces().size()) PushPiece(next_++);
    POLIS_RETURN_IF_ERROR(error_);
    CaptureGradient(info);
    PushHeader h;
    h.step = info.step;
    h.samples = info.samples;
    h.flags = info.epoch_end ? static_cast<int64_t>(kPushEpochEnd) : int64_t{0};
    h.epoch = info.epoch;
    h.consumed = info.consumed;
    // ASP/SSP apply each push alone: its norm is the one to clip by, and
    // only this worker sees every parameter's gradient.
    if (clip_each_push_ && info.samples > 0) h.grad_norm = std::sqrt(SquaredNorm(grads_, P_)) / info.samples;
    // Sends the pieces backward did not (all of them on a step without
    // data), after completing the previous round's pulls.
    trace::Scope push_span("push rest");
    POLIS_ASSIGN_OR_RETURN(int64_t ts, client_.Finish(h, secagg_ ? nullptr : grads_, params_));
    push_span.End();
    next_ = client_.pieces().size();
    PullHeader reply;
    trace::Scope wait_span("wait servers");
    Status answered = client_.WaitHeaders(ts, &reply);
    wait_span.End();
    // A stop (the coordinator's, or a server answering "stopped"): the
    // round is completed and the servers told goodbye before the worker ends.
    if (answered.code() == Code::kCancelled) POLIS_RETURN_IF_ERROR(client_.Leave());
    POLIS_RETURN_IF_ERROR(answered);
    result->epoch_over = (reply.flags & kPullEpochDone) != 0;
    result->server_step = reply.step;
    round_step_ = reply.step;
    if (result->epoch_over) ++round_epoch_;
    // Evaluation and the parameter checksum read the whole buffer.
    if (!overlap_pulls_ || result->epoch_over) {
      TRACE_SCOPE("pull wait");
      POLIS_RETURN_IF_ERROR(client_.WaitPulls());
    }
    return Status::Ok();
  }

 private:
  // Sends piece k: the floats of the gradient, or with secure aggregation
  // its masked encoding (a piece that fails to encode is not sent; Sync
  // returns the error).
  void PushPiece(size_t k) {
    const comm::Piece& p = client_.pieces()[k];
    TRACE_SCOPE("push piece", "bytes", static_cast<int64_t>(sizeof(float)) * p.size());
    Status st;
    if (secagg_) {
      if (!error_.ok()) return;
      st = secagg_->Encode(round_step_, round_epoch_, p.begin, grads_ + p.begin, p.size(), masked_.data() + p.begin);
      if (st.ok()) st = client_.Push(static_cast<int>(k), masked_.data());
    } else {
      st = client_.Push(static_cast<int>(k), grads_);
    }
    if (!st.ok() && error_.ok()) error_ = st;
  }

  // POLIS_TEST_PUSH_CAPTURE (common/env.h): the gradient this worker
  // pushes at that step (with a noise share, after it was added).
  void CaptureGradient(const StepInfo& info) const {
    const auto [dir, step] = env::TestPushCapture();
    if (dir.empty() || info.step != step || info.samples == 0) return;
    Status st = WriteFileAtomic(fmt::format("{}/worker-{}.f32", dir, worker_index_),
                                std::string(reinterpret_cast<const char*>(grads_), sizeof(float) * P_));
    if (!st.ok()) POLIS_LOG(kWarn, kWorker, "POLIS_TEST_PUSH_CAPTURE: {}", st.ToString());
  }

  static std::vector<int> ServerRanks(const RoleContext& ctx) {
    std::vector<int> r;
    for (int s = 0; s < ctx.servers; ++s) r.push_back(ctx.server_rank(s));
    return r;
  }
  float* params_;
  float* grads_;
  const int64_t P_;
  const int worker_index_;
  const bool overlap_pulls_;
  const bool clip_each_push_;  // training.clip_grad_norm under ASP/SSP
  comm::PsClient client_;
  // privacy.secure_aggregation: the session, the masked payload (sent from
  // here, valid until the round's headers are in) and the round it is for.
  std::unique_ptr<privacy::SecAggWorker> secagg_;
  std::vector<uint32_t> masked_;
  int64_t round_step_ = 0;
  int round_epoch_ = 0;
  std::vector<std::vector<int>> layer_pieces_;  // pieces holding layer i's parameters
  size_t next_ = 0;                             // first piece not yet pushed this step
  double forward_wait_s_ = 0;
  Status error_;
};

}  // namespace

StatusOr<std::unique_ptr<GradientSync>> MakeParameterServerSync(const RoleContext& ctx, float* params, float* grads,
                                                                const privacy::NoiseShare* noise) {
  if (ctx.servers < 1) return InvalidArgument("PARAMETER_SERVER mode needs at least one server");
  std::unique_ptr<privacy::SecAggWorker> secagg;
  if (ctx.job.spec.privacy().secure_aggregation()) {
    // The key exchange: before the first push, once per run.
    POLIS_ASSIGN_OR_RETURN(secagg, privacy::SecAggWorker::Start(ctx, noise));
  } else if (noise != nullptr) {
    return InternalError("a noise share for a job without secure aggregation (the servers add DP-SGD's noise)");
  }
  return std::unique_ptr<GradientSync>(new ParameterServerSync(ctx, params, grads, std::move(secagg)));
}

}  // namespace polis::worker
