#include "coordinator/coordinator.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/comm/key_ranges.h"
#include "common/comm/mpi_util.h"
#include "common/data/idx.h"
#include "common/data/image_dataset.h"
#include "common/data/shard_plan.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/log.h"
#include "polis_config.h"

namespace polis::coordinator {
namespace {

using Seconds = std::chrono::duration<double>;
using json = nlohmann::json;

std::string Duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  int t = static_cast<int>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, t / 60 % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

struct EpochTotals {
  int reports = 0;
  proto::EpochReport sum;
};

void Add(proto::EpochReport* a, const proto::EpochReport& b) {
  a->set_train_samples(a->train_samples() + b.train_samples());
  a->set_train_loss_sum(a->train_loss_sum() + b.train_loss_sum());
  a->set_train_correct(a->train_correct() + b.train_correct());
  a->set_test_samples(a->test_samples() + b.test_samples());
  a->set_test_correct(a->test_correct() + b.test_correct());
  a->set_test_loss_sum(a->test_loss_sum() + b.test_loss_sum());
  a->set_compute_seconds(a->compute_seconds() + b.compute_seconds());
  a->set_comm_seconds(a->comm_seconds() + b.comm_seconds());
  a->set_steps(std::max(a->steps(), b.steps()));
}

}  // namespace

Status RunCoordinator(const RoleContext& ctx, const CoordinatorOptions& options) {
  const proto::JobSpec& spec = ctx.job.spec;
  const int E = spec.training().epochs();
  const int W = ctx.workers;
  DatasetPaths paths = ResolveDataset(spec.dataset());
  POLIS_ASSIGN_OR_RETURN(auto train_dims, data::ReadIdxDims(paths.train_images));
  int64_t N = train_dims[0];
  if (spec.dataset().train_limit() > 0) N = std::min(N, spec.dataset().train_limit());
  data::ShardPlanner planner(N, ShardSize(spec));

  POLIS_RETURN_IF_ERROR(MakeDirectories(ctx.run_dir));
  std::ofstream metrics(ctx.run_dir + "/metrics.jsonl", std::ios::app);
  std::printf("polis: job %s: %d worker(s), %d server(s), %lld training images, %d epoch(s), "
              "batch %d per worker, %lld parameters\n",
              spec.name().c_str(), W, ctx.servers, static_cast<long long>(N), E,
              spec.training().batch_size(), static_cast<long long>(ctx.model.parameter_count()));
  std::fflush(stdout);

  const auto start = comm::Clock::now();
  std::vector<EpochTotals> totals(E);
  std::vector<int64_t> progress_samples(W, 0);  // current epoch, per worker
  std::vector<int> worker_epoch(W, 0);
  json history = json::array();
  int epochs_done = 0;
  auto last_print = start;
  int64_t samples_done = 0;  // over finished epochs

  while (epochs_done < E) {
    int from = -1;
    proto::ControlMessage msg;
    Status st = comm::RecvControl(ctx.ctrl, MPI_ANY_SOURCE, &from, &msg, comm::DeadlineFromNow(),
                                  "any message from the workers");
    if (st.code() == Code::kTimeout) {
      std::string who;
      for (int w = 0; w < W; ++w)
        if (worker_epoch[w] <= epochs_done)
          who += fmt::format("{}rank {} (worker, epoch {})", who.empty() ? "" : ", ",
                             ctx.worker_rank(w), worker_epoch[w] + 1);
      return Timeout("stalled in epoch {}: no word from {}", epochs_done + 1, who);
    }
    POLIS_RETURN_IF_ERROR(st);
    const int w = from - 1 - ctx.servers;
    if (msg.has_fatal_error())
      return RemoteError("rank {} ({}) failed: {}", from, ctx.RoleName(from), msg.fatal_error().message());
    if (w < 0 || w >= W) return RemoteError("unexpected control message from rank {}", from);
    if (msg.has_shard_request()) {
      int e = msg.shard_request().epoch();
      if (e < 0 || e >= E) return RemoteError("rank {} asked for a shard of epoch {}", from, e);
      auto r = planner.Next(e);
      proto::ControlMessage reply;
      auto* g = reply.mutable_shard_grant();
      g->set_epoch(e);
      g->set_begin(r.begin);
      g->set_end(r.end);
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, from, reply));
    } else if (msg.has_progress()) {
      const auto& p = msg.progress();
      progress_samples[w] = p.samples();
      auto now = comm::Clock::now();
      double since = Seconds(now - last_print).count();
      if (since >= (options.progress_bar ? 0.5 : 10.0)) {
        last_print = now;
        int64_t in_epoch = 0;
        for (int64_t s : progress_samples) in_epoch += s;
        double elapsed = Seconds(now - start).count();
        double done = samples_done + in_epoch;
        double rate = done / elapsed;
        double eta = (static_cast<double>(N) * E - done) / std::max(rate, 1e-9);
        int pct = static_cast<int>(100.0 * in_epoch / std::max<int64_t>(N, 1));
        std::string line = fmt::format("epoch {}/{} {:3}%  loss {:.4f}  images/s {:.0f}  ETA {}",
                                       p.epoch() + 1, E, pct, p.loss(), rate, Duration(eta));
        if (options.progress_bar) {
          int bar = pct / 5;
          std::printf("\r[%s%s] %s   ", std::string(bar, '#').c_str(),
                      std::string(20 - bar, '.').c_str(), line.c_str());
        } else {
          std::printf("  %s\n", line.c_str());
        }
        std::fflush(stdout);
      }
    } else if (msg.has_epoch_report()) {
      const auto& r = msg.epoch_report();
      int e = r.epoch();
      if (e < 0 || e >= E) return RemoteError("rank {} reported epoch {}", from, e);
      worker_epoch[w] = e + 1;
      progress_samples[w] = 0;
      Add(&totals[e].sum, r);
      if (++totals[e].reports == W) {
        const auto& s = totals[e].sum;
        samples_done += s.train_samples();
        double elapsed = Seconds(comm::Clock::now() - start).count();
        double rate = samples_done / elapsed;
        double eta = elapsed / (e + 1) * (E - e - 1);
        double train_loss = s.train_loss_sum() / std::max<int64_t>(s.train_samples(), 1);
        double train_acc = static_cast<double>(s.train_correct()) / std::max<int64_t>(s.train_samples(), 1);
        double test_acc = static_cast<double>(s.test_correct()) / std::max<int64_t>(s.test_samples(), 1);
        double test_loss = s.test_loss_sum() / std::max<int64_t>(s.test_samples(), 1);
        if (options.progress_bar) std::printf("\r%100s\r", "");
        std::printf("epoch %d/%d  loss %.4f  train_acc %.4f  test_acc %.4f  test_loss %.4f  "
                    "images/s %.0f  elapsed %s  ETA %s\n",
                    e + 1, E, train_loss, train_acc, test_acc, test_loss, rate,
                    Duration(elapsed).c_str(), Duration(eta).c_str());
        std::fflush(stdout);
        json row = {{"epoch", e + 1},
                    {"train_loss", train_loss},
                    {"train_accuracy", train_acc},
                    {"test_accuracy", test_acc},
                    {"test_loss", test_loss},
                    {"train_samples", s.train_samples()},
                    {"test_samples", s.test_samples()},
                    {"steps", s.steps()},
                    {"elapsed_seconds", elapsed},
                    {"images_per_second", rate},
                    {"worker_compute_seconds", s.compute_seconds()},
                    {"worker_comm_seconds", s.comm_seconds()}};
        metrics << row.dump() << "\n";
        metrics.flush();
        history.push_back(row);
        ++epochs_done;
      }
    } else {
      return RemoteError("rank {} sent an unexpected control message", from);
    }
  }
  const double train_seconds = Seconds(comm::Clock::now() - start).count();

  // Gather the final parameters from the servers.
  std::vector<float> params(ctx.model.parameter_count());
  const auto ranges = comm::PartitionByBytes(ctx.model.parameter_count(), ctx.servers);
  std::vector<MPI_Request> reqs(ctx.servers);
  for (int s = 0; s < ctx.servers; ++s) {
    POLIS_MPI_CHECK(MPI_Irecv(params.data() + ranges[s].begin, static_cast<int>(ranges[s].size()),
                              MPI_FLOAT, ctx.server_rank(s), comm::kTagFinalParams, ctx.data, &reqs[s]));
    proto::ControlMessage cmd;
    cmd.mutable_server_command()->set_kind(proto::ServerCommand::SEND_PARAMETERS_AND_STOP);
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.server_rank(s), cmd));
  }
  POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx.servers, reqs.data(), comm::DeadlineFromNow(),
                                      [] { return std::string("final parameters from the servers"); }));
  // Release the workers.
  for (int w = 0; w < W; ++w) {
    proto::ControlMessage cmd;
    cmd.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.worker_rank(w), cmd));
  }

  // The artifact: header with spec, shapes, metrics and lineage, then weights.
  const json& last = history.back();
  ModelArtifact artifact;
  auto& h = artifact.header;
  *h.mutable_job() = spec;
  for (int64_t d : ctx.model.input_shape()) h.add_input_shape(d);
  for (int64_t d : ctx.model.output_shape()) h.add_output_shape(d);
  for (const auto& l : ctx.model.layers())
    for (const auto& p : l.params) {
      auto* t = h.add_tensor();
      t->set_name(l.name + "/" + p.name);
      for (int64_t d : p.shape) t->add_shape(d);
      t->set_offset(p.offset);
      t->set_count(p.count);
    }
  h.set_parameter_count(ctx.model.parameter_count());
  auto metric = [&](const std::string& name, double v) {
    auto* m = h.add_metric();
    m->set_name(name);
    m->set_value(v);
  };
  metric("test_accuracy", last["test_accuracy"].get<double>());
  metric("test_loss", last["test_loss"].get<double>());
  metric("train_loss", last["train_loss"].get<double>());
  metric("epochs", E);
  metric("train_seconds", train_seconds);
  auto* lin = h.mutable_lineage();
  lin->set_job_file(ctx.job.path);
  lin->set_job_sha256(ctx.job.sha256);
  for (const std::string& f : {paths.train_images, paths.train_labels, paths.test_images, paths.test_labels}) {
    POLIS_ASSIGN_OR_RETURN(std::string sum, Sha256File(f));
    auto* c = lin->add_dataset_files();
    c->set_path(f);
    c->set_sha256(sum);
  }
  lin->set_source_revision(POLIS_SOURCE_REVISION);
  lin->set_run_dir(ctx.run_dir);
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  lin->set_host(host);
  artifact.weights = params;

  const std::string model_name = PublishedModelName(spec);
  const std::string root = spec.registry().root();
  POLIS_ASSIGN_OR_RETURN(PublishedVersion pub,
                         PublishVersion(root, model_name, std::move(artifact),
                                        json{{"job_name", spec.name()}, {"workers", W}, {"servers", ctx.servers}}));

  // Reload what was published, verify its checksum, rebuild the model and
  // evaluate it: the registry copy must reproduce the reported accuracy.
  POLIS_ASSIGN_OR_RETURN(ModelArtifact reloaded, ReadArtifactFile(pub.artifact_path));
  POLIS_ASSIGN_OR_RETURN(nn::Model rebuilt, nn::Model::Build(reloaded.header.job().model(),
                                                             nn::Shape(reloaded.header.input_shape().begin(),
                                                                       reloaded.header.input_shape().end())));
  const auto& ds = spec.dataset();
  POLIS_ASSIGN_OR_RETURN(auto test, data::ImageDataset::Open(paths.test_images, paths.test_labels,
                                                             ds.num_classes(), ds.scale(), ds.shift(),
                                                             ds.test_limit()));
  Evaluator evaluator(rebuilt, reloaded.weights.data(), spec.training().eval_batch_size());
  EvalResult check = evaluator.Run(test, 0, test.size());
  const double test_acc = last["test_accuracy"].get<double>();
  std::printf("published %s version %lld to %s (sha256 %s); reloaded test_acc %.4f\n",
              model_name.c_str(), static_cast<long long>(pub.version), pub.dir.c_str(),
              pub.sha256.substr(0, 16).c_str(), check.accuracy());
  std::fflush(stdout);

  json result = {{"job", spec.name()},
                 {"model", model_name},
                 {"version", pub.version},
                 {"artifact", pub.artifact_path},
                 {"artifact_sha256", pub.sha256},
                 {"registry_root", root},
                 {"test_accuracy", test_acc},
                 {"test_loss", last["test_loss"]},
                 {"train_loss", last["train_loss"]},
                 {"reloaded_test_accuracy", check.accuracy()},
                 {"epochs", E},
                 {"train_seconds", train_seconds},
                 {"images_per_second", samples_done / train_seconds},
                 {"workers", W},
                 {"servers", ctx.servers},
                 {"batch_size_per_worker", spec.training().batch_size()},
                 {"parameters", ctx.model.parameter_count()},
                 {"history", history}};
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/result.json", result.dump(2) + "\n"));
  if (std::abs(check.accuracy() - test_acc) > 1e-6)
    return InternalError("the reloaded artifact gives test accuracy {} but training reported {}",
                         check.accuracy(), test_acc);
  return Status::Ok();
}

}  // namespace polis::coordinator
