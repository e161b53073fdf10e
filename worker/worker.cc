#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "common/backend/backend.h"
#include "common/checkpoint.h"
#include "common/checkpoint_transfer.h"
#include "common/comm/control.h"
#include "common/comm/wire_checks.h"
#include "common/env.h"
#include "common/data/dataset.h"
#include "common/data/shard_plan.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/host_stats.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/trace/trace.h"
#include "worker/dp_step.h"
#include "worker/gradient_sync.h"
#include "worker/replica.h"

namespace polis::worker {
namespace {

using Seconds = std::chrono::duration<double>;

double Since(comm::Clock::time_point t) { return Seconds(comm::Clock::now() - t).count(); }

// A non-finite loss or parameter stops the job: nothing after it can be
// trusted, and a model holding it must never be published.
Status CheckFinite(const nn::Model& model, const float* params, double loss_sum, int64_t step, int epoch) {
  TRACE_SCOPE("check finite");
  const std::string bad = nn::FirstNonFiniteParameter(model, params);
  if (!bad.empty())
    return InvalidArgument("step {} (epoch {}): {} after the update; training diverged (lower "
                           "optimizer.learning_rate, or check the data's scale)",
                           step, epoch + 1, bad);
  if (!std::isfinite(loss_sum)) {
    // Finite parameters, non-finite loss: an activation overflowed. The
    // layer with the largest weight is the likeliest culprit.
    std::string largest;
    float top = -1;
    for (const auto& l : model.layers())
      for (const auto& p : l.params)
        for (int64_t i = 0; i < p.count; ++i)
          if (std::abs(params[p.offset + i]) > top) {
            top = std::abs(params[p.offset + i]);
            largest = fmt::format("layer '{}' ({}) {}", l.name, l.type, p.name);
          }
    return InvalidArgument("step {} (epoch {}): the loss is {}: an activation overflowed; the largest "
                           "parameter is {:g} in {} (lower optimizer.learning_rate, or check "
                           "dataset.scale, dataset.shift and the data)",
                           step, epoch + 1, loss_sum, top, largest.empty() ? "no layer" : largest);
  }
  return Status::Ok();
}

Status RestoreOptimizer(const ShardFile& full, Optimizer* optimizer, const std::string& dir) {
  auto state = optimizer->State();
  if (state.size() != full.state.size())
    return DataLoss("checkpoint '{}' holds {} optimizer state vectors; the optimizer needs {}", dir,
                    full.state.size(), state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    if (full.state[i].second.size() != state[i].second->size())
      return DataLoss("checkpoint '{}': optimizer state '{}' holds {} values; {} expected", dir,
                      full.state[i].first, full.state[i].second.size(), state[i].second->size());
    *state[i].second = full.state[i].second;
  }
  optimizer->set_step_count(full.optimizer_steps);
  return Status::Ok();
}

// After a checkpoint-and-stop, every worker waits for the coordinator's
// STOP (sent once the manifest is written) and leaves.
Status WaitForStop(const RoleContext& ctx) {
  proto::ControlMessage cmd;
  do {
    POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, ctx.coordinator_rank(), nullptr, &cmd,
                                            comm::DeadlineFromNow(), "the coordinator's stop"));
  } while (!cmd.has_server_command() || cmd.server_command().kind() == proto::ServerCommand::CHECKPOINT_AT);
  return Cancelled();
}

// All-reduce checkpoints: every replica is the same, so the lead worker
// sends the whole state (parameters and optimizer) as one shard to the
// coordinator, which writes it (common/checkpoint_transfer.h); every
// worker tells the coordinator how many samples of the epoch it has used,
// and the coordinator writes the manifest once all have.
class ReplicaCheckpointer {
 public:
  ReplicaCheckpointer(const RoleContext& ctx, const float* params, Optimizer* optimizer)
      : ctx_(ctx), params_(params), optimizer_(optimizer),
        every_(ctx.job.spec.training().checkpoint_every_steps()) {}

  // A checkpoint after `step`: asked for, or every checkpoint_every_steps.
  bool Due(int64_t step, GradientSync::Checkpoint asked) const {
    return asked != GradientSync::Checkpoint::kNone || (every_ > 0 && step % every_ == 0);
  }

  // `stop`: the checkpoint every replica takes to stop (ShardSaved.stop).
  Status Write(int64_t step, int epoch, bool epoch_complete, int64_t consumed, bool stop) {
    TRACE_SCOPE("checkpoint", "step", step);
    proto::ControlMessage msg;
    auto* s = msg.mutable_shard_saved();
    s->set_stop(stop);
    s->set_step(step);
    s->set_epoch(epoch);
    s->set_epoch_complete(epoch_complete);
    s->set_worker(ctx_.worker_index());
    s->add_consumed(consumed);
    POLIS_LOG(kInfo, kWorker, "checkpoint at step {}{}", step, epoch_complete ? " (epoch end)" : "");
    if (ctx_.worker_index() != 0) return comm::SendControl(ctx_.ctrl, ctx_.coordinator_rank(), msg);
    // The lead worker's replica travels to the coordinator, which writes it
    // into the run directory (common/checkpoint_transfer.h).
    POLIS_RETURN_IF_ERROR(Flush());
    const int64_t P = ctx_.model.parameter_count();
    ShardFile shard;
    shard.server = 0;
    shard.begin = 0;
    shard.end = P;
    shard.step = step;
    shard.epoch = epoch;
    shard.epoch_complete = epoch_complete;
    shard.params.assign(params_, params_ + P);
    if (optimizer_ != nullptr) {
      shard.optimizer_steps = optimizer_->step_count();
      for (auto& [name, v] : optimizer_->State()) shard.state.emplace_back(name, *v);
    }
    s->set_server(0);
    s->set_begin(0);
    s->set_end(P);
    return StartShardSend(ctx_.ctrl, ctx_.data, ctx_.coordinator_rank(), shard, ctx_.job.sha256, "replica.shard", s,
                          &send_);
  }

  // Until the coordinator has taken the last replica sent.
  Status Flush() { return send_.Wait(comm::DeadlineFromNow(), "the coordinator to take the last checkpoint"); }

 private:
  const RoleContext& ctx_;
  const float* params_;
  Optimizer* optimizer_;
  const int64_t every_;
  BlobSend send_;
};

// The next command from the coordinator, past checkpoint requests that came
// too late to have anything to save.
Status NextCommand(const RoleContext& ctx, const comm::WireLimits& limits, proto::ControlMessage* cmd) {
  const auto deadline = comm::Clock::now() + std::chrono::hours(24);  // the job may be long
  do {
    POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, ctx.coordinator_rank(), nullptr, cmd, deadline,
                                            "the coordinator's next command"));
    POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(*cmd, ctx.coordinator_rank(), limits));
  } while (cmd->has_server_command() && cmd->server_command().kind() == proto::ServerCommand::CHECKPOINT_AT);
  return Status::Ok();
}

// training.early_stopping: after each epoch but the last, the coordinator
// says whether training goes on. Returns true to stop.
StatusOr<bool> AwaitVerdict(const RoleContext& ctx, int epoch, const comm::WireLimits& limits,
                            const std::function<Status(const proto::ServerCommand&)>& on_command) {
  proto::ControlMessage msg;
  while (true) {
    POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, ctx.coordinator_rank(), nullptr, &msg,
                                            comm::DeadlineFromNow(), "the coordinator's early-stopping verdict"));
    POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(msg, ctx.coordinator_rank(), limits));
    if (msg.has_server_command()) {
      POLIS_RETURN_IF_ERROR(on_command(msg.server_command()));
      continue;
    }
    if (!msg.has_epoch_verdict() || msg.epoch_verdict().epoch() != epoch)
      return RemoteError("the coordinator answered epoch {}'s report with something else", epoch + 1);
    return msg.epoch_verdict().stop();
  }
}

std::string ParamsSha256(const std::vector<float>& params) {
  return Sha256Hex(std::string_view(reinterpret_cast<const char*>(params.data()), sizeof(float) * params.size()));
}

// The final test evaluation of the model to publish: this worker's slice of
// the test set, on its own parameters or on those of the checkpoint the
// coordinator names (training.restore_best), loaded into `params`.
// It runs on the CPU in FP32 whatever the worker trained on: the registry
// serves the artifact so, and the coordinator checks the reloaded artifact's
// metric against this one exactly. `cpu_fp32`: the worker's own evaluator
// when it already is that (a CPU FP32 job: no second set of networks), else
// null.
Status EvaluateForPublishing(const RoleContext& ctx, const data::Dataset& ds, Evaluator* cpu_fp32,
                             std::vector<float>* params, const proto::FinalEvaluationRequest& req) {
  // The checkpoint's parameters follow the request (common/checkpoint_transfer.h).
  if (!req.checkpoint().empty())
    POLIS_RETURN_IF_ERROR(RecvParams(ctx.data, ctx.coordinator_rank(), params, comm::DeadlineFromNow()));
  const int64_t T = ds.size(data::Part::kTest), w = ctx.worker_index();
  std::optional<Evaluator> own;
  if (cpu_fp32 == nullptr)
    cpu_fp32 = &own.emplace(ctx.model, ctx.job.spec.model(), params->data(), ctx.job.spec.training().eval_batch_size());
  const EvalResult ev = cpu_fp32->Run(ds, data::Part::kTest, T * w / ctx.workers, T * (w + 1) / ctx.workers);
  POLIS_RETURN_IF_ERROR(cpu_fp32->TakeError());
  POLIS_RETURN_IF_ERROR(ds.TakeError());
  proto::ControlMessage msg;
  ToSums(ev, /*with_confusion=*/true, msg.mutable_final_evaluation()->mutable_test());
  msg.mutable_final_evaluation()->set_params_sha256(ParamsSha256(*params));
  return comm::SendControl(ctx.ctrl, ctx.coordinator_rank(), msg);
}

// This worker's index among the workers on its host, for a device job only
// (every worker of a job has the same device, so all or none ask: the
// transport may need a collective).
int LocalWorker(const RoleContext& ctx) {
  if (JobDeviceKind(ctx.job.spec) == device::Kind::kCpu) return -1;
  return ctx.transport->LocalWorkerIndex();
}

}  // namespace

Status RunWorker(const RoleContext& ctx) {
  const proto::JobSpec& spec = ctx.job.spec;
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<data::Dataset> ds, data::OpenJobDataset(spec, ctx.job.remote_data));
  const nn::Model& model = ctx.model;
  const int64_t P = model.parameter_count();
  const int64_t B = spec.training().batch_size();
  const int64_t K = nn::ShapeElements(model.output_shape());
  // Spare floats after the gradients: the all-reduce sample count and
  // checkpoint request (gradient_sync.h).
  std::vector<float> params(P), grads(P + kGradientExtraSlots);
  int start_epoch = 0;
  int64_t step = 0;
  if (!ctx.resume_manifest.empty()) {
    // Every parameter, sent by the coordinator (ShareResumeState).
    if (static_cast<int64_t>(ctx.resumed.params.size()) != P)
      return InvalidArgument("checkpoint '{}' holds {} parameters; the model has {}", ctx.resume_manifest,
                             ctx.resumed.params.size(), P);
    params = ctx.resumed.params;
    start_epoch = ctx.resumed.epoch + (ctx.resumed.epoch_complete ? 1 : 0);
    step = ctx.resumed.step;
  } else {
    model.InitParams(params.data(), spec.training().seed());
  }
  const bool allreduce = spec.sync().mode() == proto::SyncSpec::ALLREDUCE;
  // DP-SGD: the same plan on every rank (common/privacy/dp_plan.h).
  POLIS_ASSIGN_OR_RETURN(const std::optional<privacy::DpPlan> dp,
                         privacy::MakeDpPlan(spec, ctx.workers, ds->size(data::Part::kTrain), ctx.privacy_key));
  const privacy::DpPlan* dp_plan = dp ? &*dp : nullptr;
  // The device this worker computes on, and where its parameters and
  // gradients live there (on a GPU, all-reduce runs NCCL on the device's
  // gradients; parameter servers are fed from the host copies).
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<device::Device> dev, backend::OpenDevice(JobDeviceKind(spec), LocalWorker(ctx)));
  POLIS_LOG(kInfo, kWorker, "computing on {} ({})", dev->Describe(), device::PrecisionName(JobPrecision(spec)));
  // Targets: n labels or n × K values; room for the larger.
  const Replica::Shape shape{P, kGradientExtraSlots, B, nn::ShapeElements(model.input_shape()), K};
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<Replica> replica,
                         Replica::Create(*dev, params.data(), grads.data(), shape, model, allreduce && !dp));
  std::unique_ptr<GradientSync> sync;
  if (allreduce) {
    POLIS_ASSIGN_OR_RETURN(sync, MakeAllReduceSync(ctx, params.data(), grads.data(), dp_plan, dev.get(),
                                                   replica->reduce()));
  } else {
    // DP-SGD with secure aggregation: this worker's share of the noise goes
    // into its masked pushes (the servers then add none).
    std::optional<privacy::NoiseShare> share;
    if (dp && spec.privacy().secure_aggregation())
      share = privacy::NoiseShare{dp->noise_key, static_cast<uint32_t>(ctx.worker_index()), dp->sigma, dp->clip};
    POLIS_ASSIGN_OR_RETURN(sync, MakeParameterServerSync(ctx, params.data(), grads.data(), share ? &*share : nullptr));
  }
  if (!ctx.resume_manifest.empty() && sync->optimizer() != nullptr)
    POLIS_RETURN_IF_ERROR(RestoreOptimizer(ctx.resumed, sync->optimizer(), ctx.resume_manifest));
  ReplicaCheckpointer checkpointer(ctx, params.data(), sync->optimizer());
  // Commands from the coordinator (all-reduce: checkpoint requests to the
  // lead worker; any mode: stop). Polled between steps, and met while
  // waiting for a shard.
  auto on_command = [&](const proto::ServerCommand& c) -> Status {
    if (c.kind() == proto::ServerCommand::CHECKPOINT_AT && allreduce) {
      sync->RequestCheckpoint(c.then_stop() ? GradientSync::Checkpoint::kTakeAndStop
                                            : GradientSync::Checkpoint::kTake);
      return Status::Ok();
    }
    POLIS_RETURN_IF_ERROR(sync->Leave());
    return Cancelled();  // the job is stopping
  };
  auto on_layer = [&](int layer) { sync->OnLayerGradients(layer); };
  auto before_layer = [&](int layer) { sync->BeforeLayerForward(layer); };

  // The executors on the device (one per batch size) and the job's loss there.
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<nn::Loss> loss, backend::MakeLoss(*dev, spec.model(), B, K));
  const int layers = static_cast<int>(model.layers().size());
  nn::ExecutorOptions exec_options;
  exec_options.precision = JobPrecision(spec);
  std::map<int64_t, std::unique_ptr<nn::Executor>> nets;  // by batch size
  auto net_for = [&](int64_t n) -> StatusOr<nn::Executor*> {
    auto& slot = nets[n];
    if (!slot) {
      POLIS_ASSIGN_OR_RETURN(slot, backend::MakeExecutor(*dev, model, n, replica->params(), replica->grads(),
                                                         exec_options));
    }
    return slot.get();
  };
  std::unique_ptr<DpStep> dp_step;
  if (dp) dp_step = std::make_unique<DpStep>(model, spec.model(), *dp, ctx.worker_index(), ctx.workers, B,
                                             params.data(), grads.data(),
                                             JobPrecision(spec) == device::Precision::kBf16);
  else POLIS_RETURN_IF_ERROR(net_for(B).status());
  // Evaluation runs on the worker's device, on its copy of the parameters.
  EvalDevice eval_device{dev.get(), [&](int64_t n) {
                           nn::ExecutorOptions o = exec_options;
                           o.training = false;
                           return backend::MakeExecutor(*dev, model, n, replica->params(), {}, o);
                         }};
  Evaluator evaluator(model, spec.model(), params.data(), spec.training().eval_batch_size(), eval_device);
  const bool cpu_fp32 = dev->kind() == device::Kind::kCpu && JobPrecision(spec) == device::Precision::kFp32;
  std::vector<int64_t> batch_indices(B), ahead;

  const int coord = ctx.coordinator_rank();
  const comm::WireLimits limits{spec.training().epochs(), ds->size(data::Part::kTrain), ctx.workers, ctx.servers, P, K};
  // Each epoch ends with an evaluation of the validation split, or of the
  // test set when the job has none.
  const data::Part eval_part = ds->size(data::Part::kValidation) > 0 ? data::Part::kValidation : data::Part::kTest;
  const int w = ctx.worker_index();
  const int report_every = spec.training().report_every_steps();
  const int slow_ms = env::TestSlowWorkerIndex() == w ? env::TestSlowWorkerMillis() : 0;
  HostSampler host_sampler;  // this host's figures, sent with Progress
  std::ofstream sample_log;
  if (!env::TestSampleLogDir().empty())
    sample_log.open(fmt::format("{}/worker-{}-{}.log", env::TestSampleLogDir(), ctx.rank, getpid()),
                    std::ios::app);

  for (int epoch = start_epoch; epoch < spec.training().epochs(); ++epoch) {
    const std::vector<int64_t> perm = data::EpochPermutation(spec.training().seed(), epoch, ds->size(data::Part::kTrain));
    ds->SetEpoch(epoch);
    std::vector<int64_t> queue;  // positions into perm, consumed from `head`
    // A device's double buffering: the dataset indices of the next batch,
    // gathered into the replica's other buffers during the last step.
    std::vector<int64_t> gathered_ahead;
    size_t head = 0;
    bool exhausted = false;
    double compute_s = 0, comm_s = 0, loss_sum = 0, report_loss = 0;
    // For the log line: waits (shards, steps without data) and the part of
    // comm_s spent in forward waiting for parameters.
    double shard_wait_s = 0, no_data_s = 0, forward_wait_s = 0;
    int64_t samples = 0, correct = 0, steps = 0, report_samples = 0, consumed = 0;
    bool stop_after_epoch = false;
    auto last_report = comm::Clock::now();
    double report_compute = 0, report_comm = 0, report_wait = 0;
    // The test hook's sample log (a killed worker's log holds every step it took).
    auto log_samples = [&](const int64_t* indices, int64_t n) {
      if (!sample_log.is_open()) return;
      for (int64_t i = 0; i < n; ++i) sample_log << epoch << ' ' << indices[i] << '\n';
      sample_log.flush();
    };
    // A step's figures, after its backward.
    auto count_step = [&](int64_t n, double step_loss, int64_t step_correct) {
      if (slow_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
      loss_sum += step_loss;
      report_loss += step_loss;
      correct += step_correct;
      samples += n;
      report_samples += n;
    };
    // DP-SGD: the epoch is steps_per_epoch steps (step counts DP steps only).
    int64_t dp_left = dp ? (epoch + 1) * dp->steps_per_epoch - step : 0;
    if (dp && (dp_left < 0 || dp_left > dp->steps_per_epoch))
      return InternalError("DP-SGD: step {} does not lie in epoch {} of {} steps", step, epoch + 1,
                           dp->steps_per_epoch);

    while (true) {
      // Ask for more shards while fewer than a batch is queued.
      const auto ask_start = comm::Clock::now();
      if (dp && dp_left == 0 && allreduce) break;  // every replica counts the same steps
      exhausted |= dp && dp_left == 0;              // the servers close the epoch on an empty push
      while (!dp && queue.size() - head < static_cast<size_t>(B) && !exhausted) {
        TRACE_SCOPE("data wait");
        proto::ControlMessage req, reply;
        req.mutable_shard_request()->set_epoch(epoch);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, req));
        do {
          POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, coord, nullptr, &reply,
                                                  comm::DeadlineFromNow(), "a shard from the coordinator"));
          POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(reply, coord, limits));
          if (reply.has_server_command()) POLIS_RETURN_IF_ERROR(on_command(reply.server_command()));
        } while (reply.has_server_command());
        if (!reply.has_shard_grant() || reply.shard_grant().epoch() != epoch)
          return RemoteError("coordinator answered a shard request with something else");
        const auto& g = reply.shard_grant();
        if (g.begin() == g.end()) exhausted = true;
        for (int64_t p = g.begin(); p < g.end(); ++p) queue.push_back(p);
      }
      if (allreduce && w == 0) {
        proto::ControlMessage cmd;
        Status polled = comm::TryRecvControl(ctx.ctrl, coord, nullptr, &cmd);
        if (polled.ok() && cmd.has_server_command()) POLIS_RETURN_IF_ERROR(on_command(cmd.server_command()));
        else if (polled.code() != Code::kNotFound) POLIS_RETURN_IF_ERROR(polled);
      }
      const bool dp_step_now = dp && dp_left > 0;
      int64_t n = dp ? 0 : std::min<int64_t>(B, static_cast<int64_t>(queue.size() - head));
      auto t0 = comm::Clock::now();
      trace::Scope step_span("step", "step", step);  // ends with the measured step time (t0 .. Sync)
      report_wait += Seconds(t0 - ask_start).count();
      shard_wait_s += Seconds(t0 - ask_start).count();
      if (dp_step_now) {
        const DpStep::Result r = dp_step->Run(step, *ds, before_layer, &batch_indices);
        POLIS_RETURN_IF_ERROR(ds->TakeError());
        n = r.samples;
        consumed += n;
        log_samples(batch_indices.data(), n);
        POLIS_RETURN_IF_ERROR(CheckFinite(model, params.data(), r.loss_sum, step, epoch));
        sync->BeginStep(n);
        on_layer(0);  // the clipped sum is whole only now: every bucket / piece may go
        count_step(n, r.loss_sum, r.correct);
        --dp_left;
      } else if (n > 0) {
        for (int64_t i = 0; i < n; ++i) batch_indices[i] = perm[queue[head + i]];
        head += n;
        consumed += n;
        log_samples(batch_indices.data(), n);
        POLIS_ASSIGN_OR_RETURN(nn::Executor* net, net_for(n));
        if (!gathered_ahead.empty() && std::equal(gathered_ahead.begin(), gathered_ahead.end(), batch_indices.begin(),
                                                  batch_indices.begin() + n) && static_cast<int64_t>(gathered_ahead.size()) == n) {
          replica->Swap();  // gathered while the device computed the last step
        } else {
          TRACE_SCOPE("load batch");
          ds->Gather(data::Part::kTrain, batch_indices.data(), n, replica->HostInput(*net), replica->HostTargets());
        }
        gathered_ahead.clear();
        POLIS_RETURN_IF_ERROR(ds->TakeError());
        POLIS_ASSIGN_OR_RETURN(const device::Span<const float> targets, replica->LoadBatch(*net, n));
        // Streaming datasets read and decode the queued samples while this step computes.
        ahead.clear();
        for (size_t i = head; i < queue.size(); ++i) ahead.push_back(perm[queue[i]]);
        ds->Prefetch(data::Part::kTrain, ahead.data(), static_cast<int64_t>(ahead.size()));
        POLIS_RETURN_IF_ERROR(replica->Forward(*net, before_layer));
        // Gradient of the summed loss: servers divide by all workers' samples.
        POLIS_RETURN_IF_ERROR(loss->Compute(net->output(), targets, net->output_diff(), 1.0f, dev->stream()));
        // While the device computes: the next full batch, when the queue
        // already holds it, into the replica's other pinned buffers.
        if (replica->double_buffered() && queue.size() - head >= static_cast<size_t>(B)) {
          TRACE_SCOPE("load next batch");
          for (int64_t i = 0; i < B; ++i) gathered_ahead.push_back(perm[queue[head + i]]);
          ds->Gather(data::Part::kTrain, gathered_ahead.data(), B, replica->NextHostInput(), replica->NextHostTargets());
        }
        POLIS_ASSIGN_OR_RETURN(const nn::LossStats st, loss->Read(dev->stream()));
        POLIS_RETURN_IF_ERROR(net->TakeDataError());
        POLIS_RETURN_IF_ERROR(CheckFinite(model, params.data(), st.loss_sum, step, epoch));
        sync->BeginStep(n);
        POLIS_RETURN_IF_ERROR(replica->Backward(*net, layers, on_layer));
        count_step(n, st.loss_sum, st.correct);
      } else {
        POLIS_RETURN_IF_ERROR(replica->ZeroGradients());
        sync->BeginStep(0);
      }
      auto t1 = comm::Clock::now();
      GradientSync::StepResult result;
      POLIS_RETURN_IF_ERROR(sync->Sync({step, n, epoch, consumed, /*epoch_end=*/!dp_step_now && n == 0}, &result));
      step_span.End();
      // Waits inside forward for parameters still arriving are communication.
      const double fw_wait = sync->TakeForwardWaitSeconds();
      double c = Seconds(t1 - t0).count() - fw_wait, m = Since(t1) + fw_wait;
      compute_s += c;
      comm_s += m;
      report_compute += c;
      // With no data left, the round waits for the other workers to finish.
      (n > 0 || dp_step_now ? report_comm : report_wait) += m;
      if (n == 0 && !dp_step_now) no_data_s += m;
      forward_wait_s += fw_wait;
      step = result.server_step >= 0 ? result.server_step : step + 1;
      if (result.epoch_over) {
        stop_after_epoch = result.checkpoint == GradientSync::Checkpoint::kTakeAndStop;
        break;  // every worker has finished the epoch
      }
      if (allreduce && checkpointer.Due(step, result.checkpoint)) {
        const bool stop = result.checkpoint == GradientSync::Checkpoint::kTakeAndStop;
        POLIS_RETURN_IF_ERROR(sync->BeforeCheckpoint());
        POLIS_RETURN_IF_ERROR(checkpointer.Write(step, epoch, false, consumed, stop));
        if (stop) {
          POLIS_RETURN_IF_ERROR(checkpointer.Flush());
          return WaitForStop(ctx);
        }
      }
      ++steps;
      // Progress every report_every_steps steps, and at least once a second:
      // the coordinator's heartbeat (a silent worker is named after
      // POLIS_HEARTBEAT_TIMEOUT_S).
      if ((steps % report_every == 0 || Since(last_report) >= 1.0) && report_samples > 0) {
        TRACE_SCOPE("report");
        last_report = comm::Clock::now();
        proto::ControlMessage msg;
        auto* p = msg.mutable_progress();
        p->set_epoch(epoch);
        p->set_step(step);
        p->set_samples(samples);
        p->set_loss(report_loss / report_samples);
        p->set_compute_seconds(report_compute);
        p->set_comm_seconds(report_comm);
        p->set_wait_seconds(report_wait);
        if (auto h = host_sampler.Sample()) *p->mutable_host() = std::move(*h);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
        report_loss = report_compute = report_comm = report_wait = 0;
        report_samples = 0;
      }
    }

    if (sample_log.is_open()) sample_log.flush();
    // Each worker evaluates its slice with the parameters every worker now shares.
    const int64_t T = ds->size(eval_part);
    POLIS_RETURN_IF_ERROR(replica->UploadParams());
    EvalResult ev = evaluator.Run(*ds, eval_part, T * w / ctx.workers, T * (w + 1) / ctx.workers);
    POLIS_RETURN_IF_ERROR(evaluator.TakeError());
    POLIS_RETURN_IF_ERROR(ds->TakeError());
    POLIS_RETURN_IF_ERROR(CheckFinite(model, params.data(), ev.loss_sum, step, epoch));
    // The epoch's checkpoint goes before its report, so the coordinator has
    // it (in order, on the same channel) before it ends the job.
    if (allreduce && (spec.training().checkpoint_epochs() || stop_after_epoch)) {
      POLIS_RETURN_IF_ERROR(sync->BeforeCheckpoint());
      POLIS_RETURN_IF_ERROR(checkpointer.Write(step, epoch, true, consumed, stop_after_epoch));
    }
    proto::ControlMessage msg;
    auto* r = msg.mutable_epoch_report();
    r->set_epoch(epoch);
    r->set_train_samples(samples);
    r->set_train_loss_sum(loss_sum);
    r->set_train_correct(correct);
    ToSums(ev, /*with_confusion=*/false, r->mutable_eval());
    r->set_compute_seconds(compute_s);
    r->set_comm_seconds(comm_s);
    r->set_steps(steps);
    r->set_params_sha256(ParamsSha256(params));
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
    POLIS_LOG(kInfo, kWorker,
              "epoch {} done: {} samples, {} steps, compute {:.3f}s comm {:.3f}s (forward waiting for "
              "parameters {:.3f}s, steps without data {:.3f}s), waiting for shards {:.3f}s",
              epoch, samples, steps, compute_s, comm_s, forward_wait_s, no_data_s, shard_wait_s);
    if (stop_after_epoch) {
      POLIS_RETURN_IF_ERROR(checkpointer.Flush());
      return WaitForStop(ctx);
    }
    if (spec.training().has_early_stopping() && epoch + 1 < spec.training().epochs()) {
      POLIS_ASSIGN_OR_RETURN(bool stop, AwaitVerdict(ctx, epoch, limits, on_command));
      if (stop) break;
    }
  }
  // Wait (without spinning) for the coordinator: the final test evaluation,
  // then the release; in all-reduce mode it asks one worker for the final
  // parameters.
  POLIS_RETURN_IF_ERROR(checkpointer.Flush());
  proto::ControlMessage cmd;
  POLIS_RETURN_IF_ERROR(NextCommand(ctx, limits, &cmd));
  if (cmd.has_final_evaluation_request()) {
    POLIS_RETURN_IF_ERROR(EvaluateForPublishing(ctx, *ds, cpu_fp32 ? &evaluator : nullptr, &params,
                                                cmd.final_evaluation_request()));
    POLIS_RETURN_IF_ERROR(NextCommand(ctx, limits, &cmd));
  }
  if (cmd.has_server_command() &&
      cmd.server_command().kind() == proto::ServerCommand::SEND_PARAMETERS_AND_STOP) {
    POLIS_RETURN_IF_ERROR(ctx.data->Send(params.data(), sizeof(float) * P, coord, comm::kTagFinalParams));
  }
  return sync->Leave();
}

}  // namespace polis::worker
