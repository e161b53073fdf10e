#include "worker/worker.h"

#include <chrono>
#include <cstring>
#include <map>

#include "common/comm/key_ranges.h"
#include "common/comm/mpi_util.h"
#include "common/comm/ps_client.h"
#include "common/data/image_dataset.h"
#include "common/data/shard_plan.h"
#include "common/evaluate.h"
#include "common/log.h"

namespace polis::worker {
namespace {

using Seconds = std::chrono::duration<double>;

double Since(comm::Clock::time_point t) { return Seconds(comm::Clock::now() - t).count(); }

}  // namespace

Status RunWorker(const RoleContext& ctx) {
  const proto::JobSpec& spec = ctx.job.spec;
  const auto& ds_spec = spec.dataset();
  DatasetPaths paths = ResolveDataset(ds_spec);
  POLIS_ASSIGN_OR_RETURN(auto train, data::ImageDataset::Open(paths.train_images, paths.train_labels,
                                                              ds_spec.num_classes(), ds_spec.scale(),
                                                              ds_spec.shift(), ds_spec.train_limit()));
  POLIS_ASSIGN_OR_RETURN(auto test, data::ImageDataset::Open(paths.test_images, paths.test_labels,
                                                             ds_spec.num_classes(), ds_spec.scale(),
                                                             ds_spec.shift(), ds_spec.test_limit()));
  const nn::Model& model = ctx.model;
  const int64_t P = model.parameter_count();
  const int64_t B = spec.training().batch_size();
  const int64_t K = nn::ShapeElements(model.output_shape());
  std::vector<float> params(P), grads(P);
  model.InitParams(params.data(), spec.training().seed());

  std::vector<int> server_ranks;
  for (int s = 0; s < ctx.servers; ++s) server_ranks.push_back(ctx.server_rank(s));
  comm::PsClient ps(ctx.data, server_ranks, comm::PartitionByBytes(P, ctx.servers));

  std::map<int64_t, std::unique_ptr<nn::Network>> nets;  // by batch size
  auto net_for = [&](int64_t n) -> nn::Network& {
    auto& slot = nets[n];
    if (!slot) slot = std::make_unique<nn::Network>(model, n, params.data(), grads.data(), true);
    return *slot;
  };
  net_for(B);
  Evaluator evaluator(model, params.data(), spec.training().eval_batch_size());
  std::vector<int32_t> labels(B);
  std::vector<int64_t> batch_indices(B);

  const int coord = ctx.coordinator_rank();
  const int w = ctx.worker_index();
  const int report_every = spec.training().report_every_steps();
  int64_t step = 0;

  for (int epoch = 0; epoch < spec.training().epochs(); ++epoch) {
    const std::vector<int64_t> perm = data::EpochPermutation(spec.training().seed(), epoch, train.size());
    std::vector<int64_t> queue;  // positions into perm, consumed from `head`
    size_t head = 0;
    bool exhausted = false;
    double compute_s = 0, comm_s = 0, loss_sum = 0, report_loss = 0;
    int64_t samples = 0, correct = 0, steps = 0, report_samples = 0;
    double report_compute = 0, report_comm = 0;

    while (true) {
      // Ask for more shards while fewer than a batch is queued.
      while (queue.size() - head < static_cast<size_t>(B) && !exhausted) {
        proto::ControlMessage req, reply;
        req.mutable_shard_request()->set_epoch(epoch);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, req));
        POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, coord, nullptr, &reply,
                                                comm::DeadlineFromNow(), "a shard from the coordinator"));
        if (!reply.has_shard_grant() || reply.shard_grant().epoch() != epoch)
          return RemoteError("coordinator answered a shard request with something else");
        const auto& g = reply.shard_grant();
        if (g.begin() == g.end()) exhausted = true;
        for (int64_t p = g.begin(); p < g.end(); ++p) queue.push_back(p);
      }
      const int64_t n = std::min<int64_t>(B, static_cast<int64_t>(queue.size() - head));
      auto t0 = comm::Clock::now();
      if (n > 0) {
        for (int64_t i = 0; i < n; ++i) batch_indices[i] = perm[queue[head + i]];
        head += n;
        nn::Network& net = net_for(n);
        train.Gather(batch_indices.data(), n, net.input(), labels.data());
        net.Forward();
        // Gradient of the summed loss: servers divide by all workers' samples.
        nn::LossStats st = nn::SoftmaxCrossEntropy(net.output(), labels.data(), n, K,
                                                   net.output_diff(), 1.0f);
        net.Backward();
        loss_sum += st.loss_sum;
        report_loss += st.loss_sum;
        correct += st.correct;
        samples += n;
        report_samples += n;
      } else {
        std::memset(grads.data(), 0, sizeof(float) * P);
      }
      auto t1 = comm::Clock::now();
      int64_t total = 0;
      POLIS_ASSIGN_OR_RETURN(int64_t ts, ps.PushPull(step, n, grads.data(), params.data()));
      POLIS_RETURN_IF_ERROR(ps.Wait(ts, &total));
      double c = Seconds(t1 - t0).count(), m = Since(t1);
      compute_s += c;
      comm_s += m;
      report_compute += c;
      report_comm += m;
      ++step;
      if (total == 0) break;  // no worker had data: the epoch is over
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
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
        report_loss = report_compute = report_comm = 0;
        report_samples = 0;
      }
    }

    // Each worker evaluates its slice of the test set with the parameters
    // every worker now shares.
    const int64_t T = test.size();
    EvalResult ev = evaluator.Run(test, T * w / ctx.workers, T * (w + 1) / ctx.workers);
    proto::ControlMessage msg;
    auto* r = msg.mutable_epoch_report();
    r->set_epoch(epoch);
    r->set_train_samples(samples);
    r->set_train_loss_sum(loss_sum);
    r->set_train_correct(correct);
    r->set_test_samples(ev.samples);
    r->set_test_correct(ev.correct);
    r->set_test_loss_sum(ev.loss_sum);
    r->set_compute_seconds(compute_s);
    r->set_comm_seconds(comm_s);
    r->set_steps(steps);
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, coord, msg));
    POLIS_LOG(kInfo, kWorker, "epoch {} done: {} samples, {} steps, compute {:.2f}s comm {:.2f}s",
              epoch, samples, steps, compute_s, comm_s);
  }
  // Wait (without spinning) for the coordinator to release us.
  proto::ControlMessage stop;
  auto deadline = comm::Clock::now() + std::chrono::hours(24);
  return comm::RecvControl(ctx.ctrl, coord, nullptr, &stop, deadline, "the coordinator's stop");
}

}  // namespace polis::worker
