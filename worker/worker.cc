#include "worker/worker.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "common/checkpoint.h"
#include "common/comm/mpi_util.h"
#include "common/env.h"
#include "common/data/dataset.h"
#include "common/data/shard_plan.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/log.h"
#include "worker/gradient_sync.h"

namespace polis::worker {
namespace {

using Seconds = std::chrono::duration<double>;

double Since(comm::Clock::time_point t) { return Seconds(comm::Clock::now() - t).count(); }

// "layer 'dense_1' (Dense) weights element 17 is nan", or "" when every
// parameter is finite. One pass over the flat buffer: O(P), as cheap as an
// optimizer step.
std::string FirstNonFiniteParameter(const nn::Model& model, const float* params) {
  for (const auto& l : model.layers())
    for (const auto& p : l.params)
      for (int64_t i = 0; i < p.count; ++i)
        if (!std::isfinite(params[p.offset + i]))
          return fmt::format("layer '{}' ({}) {} element {} is {}", l.name, l.type, p.name, i,
                             params[p.offset + i]);
  return "";
}

// A non-finite loss or parameter stops the job: nothing after it can be
// trusted, and a model holding it must never be published.
Status CheckFinite(const nn::Model& model, const float* params, double loss_sum, int64_t step, int epoch) {
  const std::string bad = FirstNonFiniteParameter(model, params);
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

}  // namespace

Status RunWorker(const RoleContext& ctx) {
  const proto::JobSpec& spec = ctx.job.spec;
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<data::Dataset> ds, data::OpenDataset(spec.dataset()));
  const nn::Model& model = ctx.model;
  const int64_t P = model.parameter_count();
  const int64_t B = spec.training().batch_size();
  const int64_t K = nn::ShapeElements(model.output_shape());
  // One spare float after the gradients: the all-reduce sample count.
  std::vector<float> params(P), grads(P + 1);
  int start_epoch = 0;
  int64_t step = 0;
  if (!ctx.resume_manifest.empty()) {
    POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(ctx.resume_manifest));
    POLIS_ASSIGN_OR_RETURN(FullState full, LoadFullState(m));
    if (static_cast<int64_t>(full.params.size()) != P)
      return InvalidArgument("checkpoint '{}' holds {} parameters; the model has {}", m.dir, full.params.size(), P);
    params = std::move(full.params);
    start_epoch = m.epoch + (m.epoch_complete ? 1 : 0);
    step = m.step;
  } else {
    model.InitParams(params.data(), spec.training().seed());
  }
  std::unique_ptr<GradientSync> sync;
  if (spec.sync().mode() == proto::SyncSpec::ALLREDUCE) {
    POLIS_ASSIGN_OR_RETURN(sync, MakeAllReduceSync(ctx, params.data(), grads.data()));
  } else {
    POLIS_ASSIGN_OR_RETURN(sync, MakeParameterServerSync(ctx, params.data(), grads.data()));
  }
  auto on_layer = [&](int layer) { sync->OnLayerGradients(layer); };
  auto before_layer = [&](int layer) { sync->BeforeLayerForward(layer); };

  std::map<int64_t, std::unique_ptr<nn::Network>> nets;  // by batch size
  auto net_for = [&](int64_t n) -> nn::Network& {
    auto& slot = nets[n];
    if (!slot) slot = std::make_unique<nn::Network>(model, n, params.data(), grads.data(), true);
    return *slot;
  };
  net_for(B);
  Evaluator evaluator(model, spec.model(), params.data(), spec.training().eval_batch_size());
  std::vector<float> targets(B * K);
  std::vector<int64_t> batch_indices(B);

  const int coord = ctx.coordinator_rank();
  const int w = ctx.worker_index();
  const int report_every = spec.training().report_every_steps();
  const int slow_ms = env::TestSlowWorkerIndex() == w ? env::TestSlowWorkerMillis() : 0;
  std::ofstream sample_log;
  if (!env::TestSampleLogDir().empty())
    sample_log.open(fmt::format("{}/worker-{}-{}.log", env::TestSampleLogDir(), ctx.rank, getpid()),
                    std::ios::app);

  for (int epoch = start_epoch; epoch < spec.training().epochs(); ++epoch) {
    const std::vector<int64_t> perm = data::EpochPermutation(spec.training().seed(), epoch, ds->size(data::Part::kTrain));
    std::vector<int64_t> queue;  // positions into perm, consumed from `head`
    size_t head = 0;
    bool exhausted = false;
    double compute_s = 0, comm_s = 0, loss_sum = 0, report_loss = 0;
    // For the log line: waits (shards, steps without data) and the part of
    // comm_s spent in forward waiting for parameters.
    double shard_wait_s = 0, no_data_s = 0, forward_wait_s = 0;
    int64_t samples = 0, correct = 0, steps = 0, report_samples = 0, consumed = 0;
    double report_compute = 0, report_comm = 0, report_wait = 0;

    while (true) {
      // Ask for more shards while fewer than a batch is queued.
      const auto ask_start = comm::Clock::now();
      while (queue.size() - head < static_cast<size_t>(B) && !exhausted) {
        proto::ControlMessage req, reply;
        req.mutable_shard_request()->set_epoch(epoch);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, req));
        POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, coord, nullptr, &reply,
                                                comm::DeadlineFromNow(), "a shard from the coordinator"));
        if (reply.has_server_command()) return Cancelled();  // the job is stopping
        if (!reply.has_shard_grant() || reply.shard_grant().epoch() != epoch)
          return RemoteError("coordinator answered a shard request with something else");
        const auto& g = reply.shard_grant();
        if (g.begin() == g.end()) exhausted = true;
        for (int64_t p = g.begin(); p < g.end(); ++p) queue.push_back(p);
      }
      const int64_t n = std::min<int64_t>(B, static_cast<int64_t>(queue.size() - head));
      auto t0 = comm::Clock::now();
      report_wait += Seconds(t0 - ask_start).count();
      shard_wait_s += Seconds(t0 - ask_start).count();
      if (n > 0) {
        for (int64_t i = 0; i < n; ++i) batch_indices[i] = perm[queue[head + i]];
        head += n;
        consumed += n;
        if (sample_log.is_open())
          for (int64_t i = 0; i < n; ++i) sample_log << epoch << ' ' << batch_indices[i] << '\n';
        nn::Network& net = net_for(n);
        ds->Gather(data::Part::kTrain, batch_indices.data(), n, net.input(), targets.data());
        net.Forward(before_layer);
        // Gradient of the summed loss: servers divide by all workers' samples.
        nn::LossStats st = nn::ComputeLoss(spec.model(), net.output(), targets.data(), n, K,
                                           net.output_diff(), 1.0f);
        POLIS_RETURN_IF_ERROR(CheckFinite(model, params.data(), st.loss_sum, step, epoch));
        sync->BeginStep(n);
        net.Backward(on_layer);
        if (slow_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
        loss_sum += st.loss_sum;
        report_loss += st.loss_sum;
        correct += st.correct;
        samples += n;
        report_samples += n;
      } else {
        std::memset(grads.data(), 0, sizeof(float) * P);
        sync->BeginStep(0);
      }
      auto t1 = comm::Clock::now();
      GradientSync::StepResult result;
      POLIS_RETURN_IF_ERROR(sync->Sync({step, n, epoch, consumed}, &result));
      // Waits inside forward for parameters still arriving are communication.
      const double fw_wait = sync->TakeForwardWaitSeconds();
      double c = Seconds(t1 - t0).count() - fw_wait, m = Since(t1) + fw_wait;
      compute_s += c;
      comm_s += m;
      report_compute += c;
      // With no data left, the round waits for the other workers to finish.
      (n > 0 ? report_comm : report_wait) += m;
      if (n == 0) no_data_s += m;
      forward_wait_s += fw_wait;
      step = result.server_step >= 0 ? result.server_step : step + 1;
      if (result.epoch_over) break;  // every worker has finished the epoch
      ++steps;
      if (steps % report_every == 0 && report_samples > 0) {
        proto::ControlMessage msg;
        auto* p = msg.mutable_progress();
        p->set_epoch(epoch);
        p->set_step(step);
        p->set_samples(samples);
        p->set_loss(report_loss / report_samples);
        p->set_compute_seconds(report_compute);
        p->set_comm_seconds(report_comm);
        p->set_wait_seconds(report_wait);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
        report_loss = report_compute = report_comm = report_wait = 0;
        report_samples = 0;
      }
    }

    if (sample_log.is_open()) sample_log.flush();
    // Each worker evaluates its slice of the test set with the parameters
    // every worker now shares.
    const int64_t T = ds->size(data::Part::kTest);
    EvalResult ev = evaluator.Run(*ds, data::Part::kTest, T * w / ctx.workers, T * (w + 1) / ctx.workers);
    POLIS_RETURN_IF_ERROR(CheckFinite(model, params.data(), ev.loss_sum, step, epoch));
    proto::ControlMessage msg;
    auto* r = msg.mutable_epoch_report();
    r->set_epoch(epoch);
    r->set_train_samples(samples);
    r->set_train_loss_sum(loss_sum);
    r->set_train_correct(correct);
    r->set_test_samples(ev.samples);
    r->set_test_correct(ev.correct);
    r->set_test_loss_sum(ev.loss_sum);
    r->set_test_abs_error_sum(ev.abs_error_sum);
    r->set_test_sq_error_sum(ev.sq_error_sum);
    r->set_test_ape_sum(ev.ape_sum);
    r->set_test_ape_count(ev.ape_count);
    r->set_test_sape_sum(ev.sape_sum);
    r->set_test_values(ev.values);
    r->set_compute_seconds(compute_s);
    r->set_comm_seconds(comm_s);
    r->set_steps(steps);
    r->set_params_sha256(Sha256Hex(std::string_view(reinterpret_cast<const char*>(params.data()),
                                                    sizeof(float) * P)));
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
    POLIS_LOG(kInfo, kWorker,
              "epoch {} done: {} samples, {} steps, compute {:.3f}s comm {:.3f}s (forward waiting for "
              "parameters {:.3f}s, steps without data {:.3f}s), waiting for shards {:.3f}s",
              epoch, samples, steps, compute_s, comm_s, forward_wait_s, no_data_s, shard_wait_s);
  }
  // Wait (without spinning) for the coordinator to release us; in
  // all-reduce mode it asks one worker for the final parameters.
  proto::ControlMessage cmd;
  auto deadline = comm::Clock::now() + std::chrono::hours(24);
  POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, coord, nullptr, &cmd, deadline, "the coordinator's stop"));
  if (cmd.has_server_command() &&
      cmd.server_command().kind() == proto::ServerCommand::SEND_PARAMETERS_AND_STOP) {
    POLIS_MPI_CHECK(MPI_Send(params.data(), static_cast<int>(P), MPI_FLOAT, coord,
                             comm::kTagFinalParams, ctx.data));
  }
  return Status::Ok();
}

}  // namespace polis::worker
