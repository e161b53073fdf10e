#include "paramserver/server.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "common/checkpoint.h"
#include "common/checkpoint_transfer.h"
#include "common/comm/key_ranges.h"
#include "common/comm/control.h"
#include "common/comm/ps_pieces.h"
#include "common/comm/wire_checks.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/grad_clip.h"
#include "common/host_stats.h"
#include "common/log.h"
#include "common/optimizer.h"
#include "common/privacy/dp_plan.h"
#include "common/privacy/secagg_session.h"
#include "common/trace/trace.h"
#include "paramserver/aggregate.h"

namespace polis::paramserver {
namespace {

using comm::DataTag;

class Server {
 public:
  explicit Server(const RoleContext& ctx) : ctx_(ctx), W_(ctx.workers) {}

  Status Init() {
    const auto& spec = ctx_.job.spec;
    range_ = comm::PartitionByBytes(ctx_.model.parameter_count(), ctx_.servers)[ctx_.server_index()];
    n_ = range_.size();
    mode_ = spec.sync().consistency();
    staleness_ = mode_ == proto::SyncSpec::SSP ? spec.sync().staleness()
                 : mode_ == proto::SyncSpec::ASP ? std::numeric_limits<int64_t>::max() / 4 : 0;
    int64_t hint = TotalStepsHint(ctx_);
    if (mode_ != proto::SyncSpec::BSP) hint *= std::max(W_, 1);  // one update per push
    POLIS_ASSIGN_OR_RETURN(optimizer_, MakeOptimizer(spec.optimizer(), n_, hint));
    // Bounds for the push headers workers send (common/comm/wire_checks.h).
    limits_ = {spec.training().epochs(),
               ctx_.train_samples > 0 ? ctx_.train_samples : std::numeric_limits<int64_t>::max() / 4, W_,
               ctx_.servers, ctx_.model.parameter_count()};
    checkpoint_every_ = spec.training().checkpoint_every_steps();
    checkpoint_epochs_ = spec.training().checkpoint_epochs();
    clip_ = spec.training().clip_grad_norm();
    POLIS_ASSIGN_OR_RETURN(dp_, privacy::MakeDpPlan(spec, W_, ctx_.train_samples, ctx_.privacy_key));
    POLIS_RETURN_IF_ERROR(InitSecureAggregation());

    if (!ctx_.resume_manifest.empty()) {
      // This server's key range, sent by the coordinator (ShareResumeState).
      const ShardFile& part = ctx_.resumed;
      if (part.begin != range_.begin || part.end != range_.end)
        return DataLoss("checkpoint '{}': the coordinator sent keys [{}, {}) for server {}'s [{}, {})",
                        ctx_.resume_manifest, part.begin, part.end, ctx_.server_index(), range_.begin, range_.end);
      params_ = part.params;
      auto state = optimizer_->State();
      if (state.size() != part.state.size())
        return DataLoss("checkpoint '{}' holds {} optimizer state vectors; {} needs {}", ctx_.resume_manifest,
                        part.state.size(), proto::OptimizerSpec::Type_Name(spec.optimizer().type()), state.size());
      for (size_t i = 0; i < state.size(); ++i) *state[i].second = part.state[i].second;
      optimizer_->set_step_count(part.optimizer_steps);
      step_ = part.step;
      epoch_ = part.epoch + (part.epoch_complete ? 1 : 0);
      POLIS_LOG(kInfo, kPs, "server {} resumed from '{}' at step {}", ctx_.server_index(), ctx_.resume_manifest,
                step_);
    } else {
      std::vector<float> full(ctx_.model.parameter_count());
      ctx_.model.InitParams(full.data(), spec.training().seed());
      params_.assign(full.begin() + range_.begin, full.begin() + range_.end);
    }
    for (const comm::Piece& p : comm::PlanPieces(ctx_.model, ctx_.servers, spec.sync().ps_piece_bytes()))
      if (p.server == ctx_.server_index()) pieces_.push_back(p);
    std::sort(pieces_.begin(), pieces_.end(),
              [](const comm::Piece& a, const comm::Piece& b) { return a.slot < b.slot; });
    R_ = 1 + static_cast<int>(pieces_.size());
    push_.resize(W_);
    pull_.resize(W_);
    // Masked pushes land as fixed point, plain ones as floats (4 bytes each).
    if (secagg_) masked_.assign(W_, std::vector<uint32_t>(n_));
    else recv_.assign(W_, std::vector<float>(n_));
    // BSP replies straight from the parameters (see Reply); the others need
    // a copy per worker, since updates go on while a reply is in flight.
    if (mode_ != proto::SyncSpec::BSP) snapshot_.assign(W_, std::vector<float>(n_));
    sum_.resize(n_);
    arrived_.reserve(W_);
    rreq_.assign(R_ * W_, comm::Request());
    sreq_.assign(R_ * W_, comm::Request());
    w_.assign(W_, WorkerState{});
    for (int w = 0; w < W_; ++w) POLIS_RETURN_IF_ERROR(PostReceive(w));
    return Status::Ok();
  }

  Status Run() {
    comm::Backoff backoff;
    auto last_progress = comm::Clock::now();
    while (!stop_) {
      if (!leaving_ && comm::Clock::now() - last_heartbeat_ > std::chrono::seconds(2)) {
        POLIS_RETURN_IF_ERROR(SendStats(false));
        last_heartbeat_ = comm::Clock::now();
      }
      bool progressed = false;
      for (int w = 0; w < W_; ++w) {
        if (!w_[w].receiving) continue;
        bool done = false;
        // A push is complete once its header and every piece are in, in
        // whatever order they arrived; a goodbye is a header alone.
        POLIS_RETURN_IF_ERROR(ctx_.data->Test(&rreq_[R_ * w], R_, &done));
        if (!rreq_[R_ * w].pending() && (push_[w].flags & kPushLeave)) {
          POLIS_RETURN_IF_ERROR(OnLeave(w));
          progressed = true;
          continue;
        }
        if (!done) continue;
        w_[w].receiving = false;
        bytes_in_ += sizeof(PushHeader) + sizeof(float) * n_;
        // Stopping: the push is answered at once, without parameters.
        POLIS_RETURN_IF_ERROR(leaving_ ? ReplyStopped(w) : OnPush(w));
        progressed = true;
      }
      if (leaving_) {
        stop_ = std::all_of(w_.begin(), w_.end(), [](const WorkerState& s) { return s.gone; });
        if (progressed) {
          backoff.Reset();
          last_progress = comm::Clock::now();
        } else if (comm::Clock::now() - std::max(last_progress, leaving_since_) >
                   std::chrono::seconds(env::TimeoutSeconds())) {
          return Timeout("server {}: stopping, but no goodbye for {} s from {}", ctx_.server_index(),
                         env::TimeoutSeconds(), NotLeft());
        } else if (!stop_) {
          backoff.Pause();
        }
        continue;
      }
      if (progressed) {
        POLIS_RETURN_IF_ERROR(Advance());
        backoff.Reset();
        last_progress = comm::Clock::now();
        continue;
      }
      POLIS_RETURN_IF_ERROR(CheckControl());
      if (comm::Clock::now() - last_progress > std::chrono::seconds(env::TimeoutSeconds()))
        return Timeout("server {}: no push for {} s; waiting for {}", ctx_.server_index(),
                       env::TimeoutSeconds(), Waiting());
      backoff.Pause();
    }
    ctx_.data->Cancel(rreq_.data(), static_cast<int>(rreq_.size()));
    POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, sreq_.data(), static_cast<int>(sreq_.size()), comm::DeadlineFromNow(),
                                        [] { return std::string("last replies to workers"); }));
    return checkpoint_send_.Wait(comm::DeadlineFromNow(), "the coordinator to take the last checkpoint");
  }

 private:
  struct WorkerState {
    bool receiving = false;   // receives posted
    bool arrived = false;     // BSP: gradient waiting for the step's aggregate
    bool done = false;        // sent its epoch-end push
    bool reply_pending = false;
    bool counted_held = false;
    bool gone = false;        // said goodbye (kPushLeave)
    int64_t clock = 0;        // pushes applied (SSP)
    int64_t consumed = 0;     // samples of the epoch pushed so far
    int64_t total = 0;        // BSP: the step's total samples for its reply
  };

  // Posts the receives of worker w's next push: its header and every piece,
  // each straight into its place in recv_[w].
  Status PostReceive(int w) {
    int src = ctx_.worker_rank(w);
    comm::Request* q = &rreq_[R_ * w];
    POLIS_RETURN_IF_ERROR(ctx_.data->Irecv(&push_[w], sizeof(PushHeader), src, DataTag::kTagPushHeader, &q[0]));
    char* dst = secagg_ ? reinterpret_cast<char*>(masked_[w].data()) : reinterpret_cast<char*>(recv_[w].data());
    for (size_t k = 0; k < pieces_.size(); ++k) {
      const comm::Piece& p = pieces_[k];
      POLIS_RETURN_IF_ERROR(ctx_.data->Irecv(dst + sizeof(float) * (p.begin - range_.begin), sizeof(float) * p.size(),
                                             src, comm::kTagPushPieceBase + p.slot, &q[1 + k]));
    }
    w_[w].receiving = true;
    return Status::Ok();
  }

  Status OnPush(int w) {
    const PushHeader& h = push_[w];
    POLIS_RETURN_IF_ERROR(comm::CheckPushHeader(h, ctx_.worker_rank(w), limits_));
    WorkerState& s = w_[w];
    if (h.epoch != epoch_)
      return RemoteError("rank {} (worker) pushed for epoch {} while server {} is in epoch {}",
                         ctx_.worker_rank(w), h.epoch + 1, ctx_.server_index(), epoch_ + 1);
    s.consumed = h.consumed;
    CapturePush(w);
    if (secagg_) {
      // Every worker pushes in every round, an epoch-end push too (masked
      // zeros): the masks cancel only in the sum of all W pushes.
      if (h.step != step_)
        return RemoteError("rank {} (worker) pushed step {} while server {} is at step {}", ctx_.worker_rank(w),
                           h.step, ctx_.server_index(), step_);
      s.arrived = true;
      s.done = (h.flags & kPushEpochEnd) != 0;
      s.reply_pending = s.done;
      return Status::Ok();
    }
    if (h.flags & kPushEpochEnd) {
      s.done = true;
      s.reply_pending = true;  // answered when every worker is done
      return Status::Ok();
    }
    if (mode_ == proto::SyncSpec::BSP) {
      if (h.step != step_)
        return RemoteError("rank {} (worker) pushed step {} while server {} is at step {}",
                           ctx_.worker_rank(w), h.step, ctx_.server_index(), step_);
      s.arrived = true;
      return Status::Ok();
    }
    if (h.samples > 0) {
      TRACE_SCOPE("server apply", "step", step_);
      const float inv = 1.0f / static_cast<float>(h.samples);
      const float* __restrict r = recv_[w].data();
      float* __restrict g = sum_.data();
      for (int64_t i = 0; i < n_; ++i) g[i] = r[i] * inv;
      if (clip_ > 0) ScaleGradient(sum_.data(), n_, ClipCoefficient(h.grad_norm, clip_));
      optimizer_->Step(params_.data(), sum_.data());
      ++step_;
      ++updates_since_checkpoint_;
    }
    ++s.clock;
    s.total = h.samples;
    s.reply_pending = true;
    return PostReceive(w);
  }

  // Aggregates a BSP step, takes checkpoints, ends epochs, sends replies.
  Status Advance() {
    if (secagg_) {
      POLIS_RETURN_IF_ERROR(AdvanceMasked());
    } else if (mode_ == proto::SyncSpec::BSP) {
      bool all_in = true, any = false;
      int64_t total = 0;
      for (const auto& s : w_) {
        all_in &= s.arrived || s.done;
        if (s.arrived) {
          any = true;
          total += push_[&s - w_.data()].samples;
        }
      }
      if (all_in && any) {
        // DP-SGD: every round is a step, even one whose Poisson sample
        // happened to be empty (the accountant counts it).
        if (total > 0 || dp_) {
          TRACE_SCOPE("server apply", "step", step_);
          POLIS_RETURN_IF_ERROR(WaitPreviousReplies());
          Average(Divisor(total));
          // (Σ clipped + N(0, σ²C²)) / B: this server adds its key range
          // of the step's one noise vector.
          if (dp_) dp_->AddNoiseToAverage(step_, range_.begin, sum_.data(), n_);
          POLIS_RETURN_IF_ERROR(ClipAndStep());
        }
        ++step_;
        ++updates_since_checkpoint_;
        for (int w = 0; w < W_; ++w) {
          if (!w_[w].arrived) continue;
          w_[w].arrived = false;
          ++w_[w].clock;
          w_[w].total = total;
          w_[w].reply_pending = true;
          POLIS_RETURN_IF_ERROR(PostReceive(w));
        }
      }
    }
    if (checkpoint_every_ > 0 && updates_since_checkpoint_ > 0 && step_ % checkpoint_every_ == 0)
      quiesce_ = true;
    bool all_done = std::all_of(w_.begin(), w_.end(), [](const WorkerState& s) { return s.done; });
    if (quiesce_ || all_done) {
      // A consistent cut: every worker waits on us (or has finished the epoch).
      bool cut = std::all_of(w_.begin(), w_.end(), [](const WorkerState& s) {
        return s.done || (s.reply_pending && !s.arrived);
      });
      if (!cut) return Status::Ok();  // keep holding replies until it is
      if (quiesce_ || (all_done && checkpoint_epochs_)) POLIS_RETURN_IF_ERROR(Checkpoint(all_done));
      quiesce_ = false;
    }
    if (all_done) {
      for (int w = 0; w < W_; ++w) {
        w_[w].done = false;
        w_[w].clock = 0;
        w_[w].consumed = 0;
        POLIS_RETURN_IF_ERROR(Reply(w, kPullEpochDone, 0));
        POLIS_RETURN_IF_ERROR(PostReceive(w));
      }
      ++epoch_;
      return Status::Ok();
    }
    // Answer whoever may go on: under SSP, not more than s ahead of the
    // slowest worker still in the epoch.
    int64_t slowest = std::numeric_limits<int64_t>::max();
    for (const auto& s : w_)
      if (!s.done) slowest = std::min(slowest, s.clock);
    for (int w = 0; w < W_; ++w) {
      WorkerState& s = w_[w];
      if (!s.reply_pending || s.done) continue;
      const int64_t gap = s.clock - slowest;
      if (gap > staleness_) {
        if (!s.counted_held) ++held_replies_;
        s.counted_held = true;
        continue;
      }
      max_staleness_ = std::max(max_staleness_, gap);
      s.counted_held = false;
      POLIS_RETURN_IF_ERROR(Reply(w, 0, s.total));
    }
    return Status::Ok();
  }

  // Secure aggregation (BSP): a round is applied only once all W masked
  // pushes are in, so masks left in a partial sum (a worker lost mid-round)
  // never reach the parameters; the job then resumes from its checkpoint.
  // A round of epoch-end pushes only is the epoch's end (answered below, no
  // update); any other round is summed, decoded and applied as plain BSP
  // does, and every worker is answered, those without data too (they push
  // masked zeros again next round).
  Status AdvanceMasked() {
    if (!std::all_of(w_.begin(), w_.end(), [](const WorkerState& s) { return s.arrived; })) return Status::Ok();
    if (std::all_of(w_.begin(), w_.end(), [](const WorkerState& s) { return s.done; })) {
      for (auto& s : w_) s.arrived = false;  // the epoch's end, answered by Advance
      return Status::Ok();
    }
    int64_t total = 0;
    for (int w = 0; w < W_; ++w) total += push_[w].samples;
    // DP-SGD: every round is a step (see Advance); the workers' noise
    // shares are in the sum already.
    if (total > 0 || dp_) {
      TRACE_SCOPE("server apply", "step", step_);
      POLIS_RETURN_IF_ERROR(WaitPreviousReplies());
      std::fill(masked_sum_.begin(), masked_sum_.end(), 0u);
      for (int w = 0; w < W_; ++w) privacy::AddModular(masked_[w].data(), n_, masked_sum_.data());
      secagg_->Decode(masked_sum_.data(), n_, sum_.data());
      const float inv = 1.0f / static_cast<float>(Divisor(total));
      for (int64_t i = 0; i < n_; ++i) sum_[i] *= inv;
      POLIS_RETURN_IF_ERROR(ClipAndStep());
    }
    ++step_;
    ++updates_since_checkpoint_;
    for (int w = 0; w < W_; ++w) {
      WorkerState& s = w_[w];
      s.arrived = s.done = false;
      ++s.clock;
      s.total = total;
      s.reply_pending = true;
      POLIS_RETURN_IF_ERROR(PostReceive(w));
    }
    return Status::Ok();
  }

  // The replies of the previous step went out straight from params_; every
  // worker has received its reply before pushing again, so these complete
  // at once.
  Status WaitPreviousReplies() {
    return comm::WaitAll(ctx_.data, sreq_.data(), static_cast<int>(sreq_.size()), comm::DeadlineFromNow(),
                         [] { return std::string("the previous step's replies"); });
  }

  // BSP: what a round's sum is divided by: its samples, or with DP-SGD the
  // expected batch B (the realised size would leak it).
  int64_t Divisor(int64_t total) const { return dp_ ? dp_->expected_batch : total; }

  // The averaged step in sum_, clipped across servers if the job asks, to
  // the optimizer.
  Status ClipAndStep() {
    if (clip_ > 0) POLIS_RETURN_IF_ERROR(ClipAcrossServers());
    optimizer_->Step(params_.data(), sum_.data());
    return Status::Ok();
  }

  Status InitSecureAggregation() {
    const auto& spec = ctx_.job.spec;
    if (!spec.privacy().secure_aggregation()) return Status::Ok();
    if (mode_ != proto::SyncSpec::BSP)
      return InvalidArgument("{}: field 'privacy.secure_aggregation' needs sync.consistency BSP", ctx_.job.path);
    if (W_ < 2)
      return InvalidArgument("{}: field 'privacy.secure_aggregation' needs at least 2 workers; this run has {}",
                             ctx_.job.path, W_);
    // DP-SGD with secure aggregation: the fixed-point range depends on σ,
    // the same DP plan's as the workers' noise shares.
    const double sigma = dp_ ? dp_->sigma : 0;
    POLIS_ASSIGN_OR_RETURN(privacy::FixedPoint fp, privacy::SecAggFixedPoint(spec, W_, sigma));
    secagg_ = std::make_unique<privacy::FixedPoint>(fp);
    masked_sum_.assign(n_, 0u);
    POLIS_LOG(kInfo, kPs, "server {}: secure aggregation over {} workers, fixed point 2^{:g}", ctx_.server_index(),
              W_, std::log2(fp.scale()));
    return Status::Ok();
  }

  // POLIS_TEST_PUSH_CAPTURE=DIR:STEP: what this server received from each
  // worker at that step, raw (floats, or masked fixed point), as
  // DIR/server-<s>-worker-<w>.bin (tests/integration/secagg_integration_test.cc).
  void CapturePush(int w) {
    const auto [dir, step] = env::TestPushCapture();
    if (dir.empty() || push_[w].step != step || push_[w].samples == 0) return;
    const char* bytes = secagg_ ? reinterpret_cast<const char*>(masked_[w].data())
                                : reinterpret_cast<const char*>(recv_[w].data());
    Status st = WriteFileAtomic(fmt::format("{}/server-{}-worker-{}.bin", dir, ctx_.server_index(), w),
                                std::string(bytes, sizeof(float) * n_));
    if (!st.ok()) POLIS_LOG(kWarn, kPs, "POLIS_TEST_PUSH_CAPTURE: {}", st.ToString());
  }

  // BSP: sum_ = (sum of the arrived workers' gradients) / total, adding in
  // worker order (the same floats whatever the pieces were): AverageInOrder
  // (paramserver/aggregate.h, shared with the simulation driver).
  void Average(int64_t total) {
    std::vector<const float*>& in = arrived_;
    in.clear();
    for (int w = 0; w < W_; ++w)
      if (w_[w].arrived) in.push_back(recv_[w].data());
    AverageInOrder(in.data(), in.size(), n_, 1.0f / static_cast<float>(total), sum_.data());
  }

  // BSP, training.clip_grad_norm: the step's mean gradient is spread over
  // the servers' key ranges, so its norm is the sum of every server's
  // partial squared norm. Every server averages the same steps in the same
  // order (each worker pushes to all of them), so they meet here step by step:
  // each sends its partial to every other server and adds all of them in
  // server order, so every server computes the same total.
  Status ClipAcrossServers() {
    const double partial = SquaredNorm(sum_.data(), n_);
    double total = partial;
    if (ctx_.servers > 1) {
      const int S = ctx_.servers, me = ctx_.server_index();
      norms_.assign(S, 0.0);
      norms_[me] = partial;
      std::vector<comm::Request> reqs(2 * S);
      for (int s = 0; s < S; ++s) {
        if (s == me) continue;
        POLIS_RETURN_IF_ERROR(ctx_.data->Irecv(&norms_[s], sizeof(double), ctx_.server_rank(s),
                                               DataTag::kTagServerNorm, &reqs[s]));
        POLIS_RETURN_IF_ERROR(ctx_.data->Isend(&norms_[me], sizeof(double), ctx_.server_rank(s),
                                               DataTag::kTagServerNorm, &reqs[S + s]));
      }
      POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, reqs.data(), 2 * S, comm::DeadlineFromNow(), [&] {
        return fmt::format("the other servers' gradient norms of step {}", step_);
      }));
      total = 0;
      for (double v : norms_) total += v;
    }
    ScaleGradient(sum_.data(), n_, ClipCoefficient(std::sqrt(total), clip_));
    return Status::Ok();
  }

  Status Reply(int w, int64_t flags, int64_t total) {
    // The previous reply's sends must be done before their buffer changes.
    comm::Request* q = &sreq_[R_ * w];
    POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, q, R_, comm::DeadlineFromNow(), [&] {
      return fmt::format("the previous reply to rank {} (worker)", ctx_.worker_rank(w));
    }));
    // BSP changes params_ only after every worker has pushed again, which
    // each does only once it has this reply: send from params_ itself.
    // ASP/SSP apply other workers' pushes meanwhile: send a snapshot.
    const float* src = params_.data();
    if (mode_ != proto::SyncSpec::BSP) {
      std::memcpy(snapshot_[w].data(), params_.data(), sizeof(float) * n_);
      src = snapshot_[w].data();
    }
    pull_[w] = {step_, total, flags};
    int dst = ctx_.worker_rank(w);
    POLIS_RETURN_IF_ERROR(ctx_.data->Isend(&pull_[w], sizeof(PullHeader), dst, DataTag::kTagPullHeader, &q[0]));
    for (size_t k = 0; k < pieces_.size(); ++k) {
      const comm::Piece& p = pieces_[k];
      POLIS_RETURN_IF_ERROR(ctx_.data->Isend(src + (p.begin - range_.begin), sizeof(float) * p.size(), dst,
                                             comm::kTagPullPieceBase + p.slot, &q[1 + k]));
    }
    w_[w].reply_pending = false;
    bytes_out_ += sizeof(PullHeader) + sizeof(float) * n_;
    return Status::Ok();
  }

  // The shard travels to the coordinator, which writes it into the run
  // directory (common/checkpoint_transfer.h); the bytes go out while the
  // server goes on serving.
  Status Checkpoint(bool epoch_complete) {
    TRACE_SCOPE("checkpoint", "step", step_);
    POLIS_RETURN_IF_ERROR(checkpoint_send_.Wait(comm::DeadlineFromNow(), "the coordinator to take the last checkpoint"));
    ShardFile shard;
    shard.server = ctx_.server_index();
    shard.begin = range_.begin;
    shard.end = range_.end;
    shard.step = step_;
    shard.epoch = epoch_;
    shard.epoch_complete = epoch_complete;
    shard.optimizer_steps = optimizer_->step_count();
    shard.params = params_;
    for (auto& [name, v] : optimizer_->State()) shard.state.emplace_back(name, *v);
    proto::ShardSaved s;
    s.set_step(step_);
    s.set_epoch(epoch_);
    s.set_epoch_complete(epoch_complete);
    s.set_server(ctx_.server_index());
    s.set_begin(range_.begin);
    s.set_end(range_.end);
    for (const auto& w : w_) s.add_consumed(w.consumed);
    updates_since_checkpoint_ = 0;
    POLIS_LOG(kInfo, kPs, "server {} checkpoint at step {}{}", ctx_.server_index(), step_,
              epoch_complete ? " (epoch end)" : "");
    return StartShardSend(ctx_.ctrl, ctx_.data, ctx_.coordinator_rank(), shard, ctx_.job.sha256,
                          fmt::format("server-{}.shard", ctx_.server_index()), &s, &checkpoint_send_);
  }

  Status CheckControl() {
    proto::ControlMessage msg;
    Status st = comm::TryRecvControl(ctx_.ctrl, ctx_.coordinator_rank(), nullptr, &msg);
    if (st.code() == Code::kNotFound) return Status::Ok();
    POLIS_RETURN_IF_ERROR(st);
    if (!msg.has_server_command()) return InternalError("server got an unexpected control message");
    switch (msg.server_command().kind()) {
      case proto::ServerCommand::CHECKPOINT_AT:
        quiesce_ = true;
        return Advance();
      case proto::ServerCommand::SEND_PARAMETERS_AND_STOP:
        POLIS_RETURN_IF_ERROR(ctx_.data->Send(params_.data(), sizeof(float) * n_, ctx_.coordinator_rank(),
                                              DataTag::kTagFinalParams));
        [[fallthrough]];
      case proto::ServerCommand::STOP:
        POLIS_RETURN_IF_ERROR(SendStats(true));
        return BeginLeaving();
      case proto::ServerCommand::QUERY_STEP: {
        proto::ControlMessage reply;
        reply.mutable_server_step()->set_step(step_);
        return comm::SendControl(ctx_.ctrl, ctx_.coordinator_rank(), reply);
      }
    }
    return InternalError("unknown server command");
  }

  // A stop, or the job's end: from now on every push is answered
  // kPullStopped (header only) at once, so no worker waits on this server,
  // and the server ends once every worker has said goodbye (kPushLeave,
  // sent after its last push on the same tag). Then nothing either side
  // sent is left unreceived, and no send waits on a peer that has gone.
  Status BeginLeaving() {
    leaving_ = true;
    leaving_since_ = comm::Clock::now();
    quiesce_ = false;  // the checkpoint the stop asked for is written
    for (int w = 0; w < W_; ++w) {
      WorkerState& s = w_[w];
      if (!s.gone && (s.arrived || s.reply_pending)) POLIS_RETURN_IF_ERROR(ReplyStopped(w));
    }
    return Status::Ok();
  }

  // Answers worker w's push (applied or not) with "stopped"; the receives
  // of its next message (its goodbye, or a push that crossed the stop) are
  // posted again.
  Status ReplyStopped(int w) {
    WorkerState& s = w_[w];
    s.arrived = s.done = s.reply_pending = false;
    comm::Request* q = &sreq_[R_ * w];
    POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, q, R_, comm::DeadlineFromNow(), [&] {
      return fmt::format("the previous reply to rank {} (worker)", ctx_.worker_rank(w));
    }));
    pull_[w] = {step_, 0, kPullStopped};
    POLIS_RETURN_IF_ERROR(
        ctx_.data->Isend(&pull_[w], sizeof(PullHeader), ctx_.worker_rank(w), DataTag::kTagPullHeader, &q[0]));
    return s.receiving ? Status::Ok() : PostReceive(w);
  }

  // Worker w's goodbye: nothing more comes from it; the receives of the
  // pieces of a push it will never send are withdrawn.
  Status OnLeave(int w) {
    WorkerState& s = w_[w];
    if (s.arrived || s.reply_pending)
      return RemoteError("rank {} (worker) left while server {} still owed it an answer", ctx_.worker_rank(w),
                         ctx_.server_index());
    ctx_.data->Cancel(&rreq_[R_ * w + 1], R_ - 1);
    s.receiving = false;
    s.gone = true;
    POLIS_LOG(kTrace, kPs, "server {}: rank {} (worker) left", ctx_.server_index(), ctx_.worker_rank(w));
    return Status::Ok();
  }

  std::string NotLeft() const {
    std::string who;
    for (int w = 0; w < W_; ++w)
      if (!w_[w].gone) who += fmt::format("{}rank {} (worker)", who.empty() ? "" : ", ", ctx_.worker_rank(w));
    return who;
  }

  // Heartbeat (every 2 s while idle) and final statistics.
  Status SendStats(bool final) {
    proto::ControlMessage stats;
    auto* s = stats.mutable_server_stats();
    s->set_server(ctx_.server_index());
    s->set_updates(step_);
    s->set_max_staleness(max_staleness_);
    s->set_held_replies(held_replies_);
    s->set_final(final);
    s->set_bytes_in(bytes_in_);
    s->set_bytes_out(bytes_out_);
    s->set_key_begin(range_.begin);
    s->set_key_end(range_.end);
    for (int r : WaitingFor()) s->add_waiting_for(r);
    if (auto h = host_sampler_.Sample()) *s->mutable_host() = std::move(*h);
    return comm::SendControl(ctx_.ctrl, ctx_.coordinator_rank(), stats);
  }

  // Worker ranks whose push the server is waiting for (not those waiting
  // for its reply: they are held by the others, not stalled).
  std::vector<int> WaitingFor() const {
    std::vector<int> ranks;
    for (int w = 0; w < W_; ++w)
      if (w_[w].receiving && !w_[w].reply_pending) ranks.push_back(ctx_.worker_rank(w));
    return ranks;
  }
  std::string Waiting() const {
    std::string who;
    for (int r : WaitingFor()) who += fmt::format("{}rank {} (worker)", who.empty() ? "" : ", ", r);
    return who.empty() ? "the coordinator" : who;
  }

  const RoleContext& ctx_;
  const int W_;
  comm::KeyRange range_;
  HostSampler host_sampler_;  // this host's figures, sent with ServerStats
  int64_t n_ = 0;
  proto::SyncSpec::Consistency mode_ = proto::SyncSpec::BSP;
  int64_t staleness_ = 0;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<float> params_, sum_;
  std::vector<std::vector<float>> recv_, snapshot_;
  // privacy.secure_aggregation: the encoding, each worker's masked push and
  // their modular sum (recv_ is then unused).
  std::unique_ptr<privacy::FixedPoint> secagg_;
  std::vector<std::vector<uint32_t>> masked_;
  std::vector<uint32_t> masked_sum_;
  std::vector<PushHeader> push_;
  std::vector<PullHeader> pull_;
  std::vector<comm::Piece> pieces_;  // this server's pieces, by slot
  int R_ = 0;                         // requests per worker: header + pieces
  std::vector<comm::Request> rreq_, sreq_;
  std::vector<double> norms_;  // every server's partial squared norm (ClipAcrossServers)
  std::vector<const float*> arrived_;
  std::vector<WorkerState> w_;
  int64_t step_ = 0;
  int epoch_ = 0;
  int64_t checkpoint_every_ = 0;
  comm::WireLimits limits_;
  bool checkpoint_epochs_ = true;
  double clip_ = 0;  // training.clip_grad_norm; 0 = off
  std::optional<privacy::DpPlan> dp_;  // DP-SGD; empty otherwise
  int64_t updates_since_checkpoint_ = 0;
  bool quiesce_ = false;
  bool leaving_ = false;  // stopping: see BeginLeaving
  comm::Clock::time_point leaving_since_;
  bool stop_ = false;
  int64_t max_staleness_ = 0;
  int64_t held_replies_ = 0;
  int64_t bytes_in_ = 0, bytes_out_ = 0;
  comm::Clock::time_point last_heartbeat_ = comm::Clock::now();
  BlobSend checkpoint_send_;  // the last checkpoint's shard, on its way to the coordinator
};

}  // namespace

Status RunServer(const RoleContext& ctx) {
  Server server(ctx);
  POLIS_RETURN_IF_ERROR(server.Init());
  return server.Run();
}

}  // namespace polis::paramserver
