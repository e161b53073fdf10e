// polis-train: the one binary of an MPI training job. It parses flags, reads
// and checks the job, splits the communicators and runs this rank's role:
// rank 0 coordinator, ranks 1..S parameter servers, the rest workers.
//
//   mpirun -np 4 polis-train jobs/fashion_cnn.pbtxt
//   polis-train --check jobs/fashion_cnn.pbtxt        (no MPI)
//   polis-train --evaluate registry-root/fashion_cnn/1/model.polis
//
// Exit codes: 0 done, 1 the job failed while running, 2 bad flags or job.
#include <mpi.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/comm/mpi_util.h"
#include "common/data/image_dataset.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "coordinator/coordinator.h"
#include "paramserver/server.h"
#include "polis_config.h"
#include "worker/worker.h"

namespace {

struct Flags {
  std::string job_path;
  int epochs = 0;
  std::string registry;
  std::string run_dir;
  int64_t train_limit = -1;
  int64_t test_limit = -1;
  int servers = -1;
  bool print_servers = false;
  std::string progress = "lines";
  bool check = false;
  std::string evaluate;
};

polis::StatusOr<polis::LoadedJob> LoadWithOverrides(const Flags& f) {
  POLIS_ASSIGN_OR_RETURN(polis::LoadedJob job, polis::LoadJobFile(f.job_path));
  auto& s = job.spec;
  if (f.epochs > 0) s.mutable_training()->set_epochs(f.epochs);
  if (!f.registry.empty()) s.mutable_registry()->set_root(f.registry);
  if (f.train_limit >= 0) s.mutable_dataset()->set_train_limit(f.train_limit);
  if (f.test_limit >= 0) s.mutable_dataset()->set_test_limit(f.test_limit);
  if (f.servers >= 0) s.mutable_sync()->set_servers(f.servers);
  POLIS_RETURN_IF_ERROR(polis::ValidateJobFields(s, f.job_path));
  return job;
}

int Evaluate(const Flags& f) {
  auto art = polis::ReadArtifactFile(f.evaluate);
  if (!art.ok()) {
    std::fprintf(stderr, "polis-train: %s\n", art.status().ToString().c_str());
    return 2;
  }
  polis::proto::JobSpec spec = art->header.job();
  if (!f.job_path.empty()) {
    auto job = LoadWithOverrides(f);
    if (!job.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", job.status().ToString().c_str());
      return 2;
    }
    *spec.mutable_dataset() = job->spec.dataset();
  }
  auto model = polis::nn::Model::Build(
      spec.model(), polis::nn::Shape(art->header.input_shape().begin(), art->header.input_shape().end()));
  if (!model.ok()) {
    std::fprintf(stderr, "polis-train: %s: %s\n", f.evaluate.c_str(), model.status().ToString().c_str());
    return 2;
  }
  const auto& ds = spec.dataset();
  auto paths = polis::ResolveDataset(ds);
  auto test = polis::data::ImageDataset::Open(paths.test_images, paths.test_labels, ds.num_classes(),
                                              ds.scale(), ds.shift(), ds.test_limit());
  if (!test.ok()) {
    std::fprintf(stderr, "polis-train: %s\n", test.status().ToString().c_str());
    return 2;
  }
  polis::Evaluator ev(*model, art->weights.data(), spec.training().eval_batch_size());
  polis::EvalResult r = ev.Run(*test, 0, test->size());
  nlohmann::json out = {{"artifact", f.evaluate}, {"test_samples", r.samples},
                        {"test_accuracy", r.accuracy()}, {"test_loss", r.loss()}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"polis-train: run one rank of a Polis training job (launch with mpirun or polis-run)"};
  app.add_option("job", f.job_path, "job spec (protobuf text, see jobs/)");
  app.add_option("--epochs", f.epochs, "override training.epochs");
  app.add_option("--registry", f.registry, "override registry.root");
  app.add_option("--run-dir", f.run_dir, "run directory (default runs/<job>/<time>)");
  app.add_option("--train-limit", f.train_limit, "use only the first N training images");
  app.add_option("--test-limit", f.test_limit, "use only the first N test images");
  app.add_option("--servers", f.servers, "override sync.servers (parameter-server ranks)");
  app.add_flag("--print-servers", f.print_servers, "print the job's sync.servers and exit");
  app.add_option("--progress", f.progress, "coordinator progress: lines or bar")
      ->check(CLI::IsMember({"lines", "bar"}));
  app.add_flag("--check", f.check, "check the job (fields, dataset, shapes) and exit; no MPI");
  app.add_option("--evaluate", f.evaluate,
                 "evaluate a model artifact on its job's test set (or JOB's dataset) and exit");
  app.set_version_flag("--version", std::string(POLIS_VERSION) + " (" POLIS_SOURCE_REVISION ")");
  CLI11_PARSE(app, argc, argv);

  if (!f.evaluate.empty()) return Evaluate(f);
  if (f.job_path.empty()) {
    std::fprintf(stderr, "polis-train: a job file is required (see --help)\n");
    return 2;
  }
  if (f.print_servers) {
    auto job = LoadWithOverrides(f);
    if (!job.ok()) return 2;
    std::printf("%d\n", job->spec.sync().servers());
    return 0;
  }
  if (f.check) {
    auto job = LoadWithOverrides(f);
    if (!job.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", job.status().ToString().c_str());
      return 2;
    }
    auto model = polis::CheckJob(*job);
    if (!model.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", model.status().ToString().c_str());
      return 2;
    }
    std::printf("%s: ok: %zu layers, %lld parameters, input %s, output %s\n", f.job_path.c_str(),
                model->layers().size(), static_cast<long long>(model->parameter_count()),
                polis::nn::ShapeString(model->input_shape()).c_str(),
                polis::nn::ShapeString(model->output_shape()).c_str());
    return 0;
  }

  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  // Every rank checks the job; all refuse alike, rank 0 says why.
  auto fail_setup = [&](const polis::Status& st) {
    if (rank == 0) std::fprintf(stderr, "polis-train: %s\n", st.ToString().c_str());
    MPI_Finalize();
    return 2;
  };
  auto job = LoadWithOverrides(f);
  if (!job.ok()) return fail_setup(job.status());
  auto model = polis::CheckJob(*job);
  if (!model.ok()) return fail_setup(model.status());

  polis::RoleContext ctx{std::move(*job), std::move(*model)};
  ctx.rank = rank;
  ctx.world = world;
  ctx.servers = ctx.job.spec.sync().servers();
  ctx.workers = world - 1 - ctx.servers;
  if (ctx.workers < 1)
    return fail_setup(polis::InvalidArgument(
        "{} ranks cannot hold 1 coordinator, {} server(s) and at least 1 worker; start at least {} "
        "ranks or lower sync.servers",
        world, ctx.servers, ctx.servers + 2));
  ctx.run_dir = f.run_dir.empty()
                    ? fmt::format("runs/{}/{}", ctx.job.spec.name(), polis::UtcTimestamp())
                    : f.run_dir;
  MPI_Comm_dup(MPI_COMM_WORLD, &ctx.ctrl);
  MPI_Comm_dup(MPI_COMM_WORLD, &ctx.data);
  MPI_Comm_set_errhandler(ctx.ctrl, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(ctx.data, MPI_ERRORS_RETURN);
  polis::SetLogIdentity(rank, ctx.RoleName(rank));

  polis::Status st;
  if (rank == 0) {
    polis::coordinator::CoordinatorOptions options;
    options.progress_bar = f.progress == "bar";
    st = polis::coordinator::RunCoordinator(ctx, options);
  } else if (ctx.is_server()) {
    st = polis::paramserver::RunServer(ctx);
  } else {
    st = polis::worker::RunWorker(ctx);
  }
  if (!st.ok()) {
    std::fprintf(stderr, "polis-train: rank %d (%s): %s\n", rank, ctx.RoleName(rank).c_str(),
                 st.ToString().c_str());
    std::fflush(stderr);
    if (rank != 0) {
      polis::proto::ControlMessage msg;
      msg.mutable_fatal_error()->set_message(st.ToString());
      (void)polis::comm::SendControl(ctx.ctrl, 0, msg);
      sleep(1);  // let the coordinator name us before the job is torn down
    }
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
  MPI_Comm_free(&ctx.ctrl);
  MPI_Comm_free(&ctx.data);
  MPI_Finalize();
  return 0;
}
