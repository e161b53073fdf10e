// polis-train: the one binary of an MPI training job. It parses flags, reads
// and checks the job, splits the communicators and runs this rank's role:
// rank 0 coordinator, ranks 1..S parameter servers, the rest workers.
//
//   mpirun -np 4 polis-train jobs/fashion_cnn.pbtxt
//   polis-train --check jobs/fashion_cnn.pbtxt        (no MPI)
//   polis-train --evaluate registry-root/fashion_cnn/1/model.polis
//   polis-train --placement --hosts h1:2,h2:2 --servers 1 --workers 2   (no MPI)
//
// Exit codes: 0 done, 1 the job failed while running, 2 bad flags or job.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <new>
#include <set>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/backend/backend.h"
#include "common/checkpoint.h"
#include "common/checkpoint_transfer.h"
#include "common/data/idx.h"
#include "common/comm/control.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/mpi_util.h"
#include "common/data/dataset.h"
#include "common/data/remote_shards.h"
#include "common/data/split.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/http/http_server.h"
#include "common/job_spec.h"
#include "common/launch/dataset_copies.h"
#include "common/launch/net.h"
#include "common/launch/placement.h"
#include "common/log.h"
#include "common/privacy/dp_plan.h"
#include "common/resume.h"
#include "common/source_revision.h"
#include "common/trace/timeline_transfer.h"
#include "coordinator/coordinator.h"
#include "coordinator/publish.h"
#include "paramserver/server.h"
#include "polis_config.h"
#include "worker/worker.h"

namespace {

struct Flags {
  std::string job_path;
  int64_t epochs = 0;
  std::string registry;
  std::string registry_url;
  std::string registry_token_file;
  std::string run_dir;
  std::string timeline;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  int64_t servers = 0;
  std::string csv;
  std::string sync;
  bool print_servers = false;
  bool print_device = false;
  std::string progress = "lines";
  bool check = false;
  std::string evaluate;
  std::string resume;
  std::string monitor = "127.0.0.1:0";
  std::string monitor_tls_cert, monitor_tls_key, monitor_plain_listen;
  // Multi-host: the hosts (one of the two), the network, and --placement's
  // worker count.
  std::string hostfile;
  std::string hosts;
  std::string net;
  bool placement = false;
  int64_t workers = 0;
  // The options given on the command line ("--epochs", ...): each one is
  // applied or refused, never ignored, whatever its value.
  std::set<std::string> given;
  bool Given(const char* name) const { return given.count(name) > 0; }
};

// --sync switches the mode: the job's settings that only mean something in
// the other mode are dropped with it, since the flag overrides them.
void ClearOtherModeSettings(polis::proto::SyncSpec::Mode mode, polis::proto::JobSpec* s) {
  auto* sync = s->mutable_sync();
  if (mode == polis::proto::SyncSpec::ALLREDUCE) {
    sync->clear_consistency();
    sync->clear_staleness();
    sync->clear_ps_piece_bytes();
  } else {
    sync->clear_allreduce_algorithm();
    sync->clear_compression();
    sync->clear_bucket_bytes();
    sync->clear_verify_replicas();
    sync->clear_local_steps();
    sync->clear_delayed_averaging();
  }
}

// The job file with the command line's overrides; from `text` (the file's
// contents, read by the coordinator) when given.
polis::StatusOr<polis::LoadedJob> LoadWithOverrides(const Flags& f, const std::string* text = nullptr) {
  POLIS_ASSIGN_OR_RETURN(polis::LoadedJob job,
                         text != nullptr ? polis::ParseJobText(*text, f.job_path) : polis::LoadJobFile(f.job_path));
  auto& s = job.spec;
  if (f.Given("--epochs")) {
    POLIS_RETURN_IF_ERROR(polis::CheckOverride("--epochs", "training.epochs", f.epochs));
    s.mutable_training()->set_epochs(static_cast<int32_t>(f.epochs));
  }
  if (f.Given("--train-limit")) {
    POLIS_RETURN_IF_ERROR(polis::CheckOverride("--train-limit", "dataset.train_limit", f.train_limit));
    s.mutable_dataset()->set_train_limit(f.train_limit);
  }
  if (f.Given("--test-limit")) {
    POLIS_RETURN_IF_ERROR(polis::CheckOverride("--test-limit", "dataset.test_limit", f.test_limit));
    s.mutable_dataset()->set_test_limit(f.test_limit);
  }
  if (f.Given("--servers")) {
    POLIS_RETURN_IF_ERROR(polis::CheckOverride("--servers", "sync.servers", f.servers));
    s.mutable_sync()->set_servers(static_cast<int32_t>(f.servers));
  }
  if (f.Given("--registry") && f.Given("--registry-url"))
    return polis::InvalidArgument("--registry and --registry-url: give one (a directory or a running registry)");
  if (f.Given("--registry")) {
    // Publishing to a directory: a registry.url in the job no longer applies.
    s.mutable_registry()->set_root(f.registry);
    s.mutable_registry()->clear_url();
    s.mutable_registry()->clear_token_file();
  }
  if (f.Given("--registry-url")) {
    s.mutable_registry()->set_url(f.registry_url);
    s.mutable_registry()->clear_root();
  }
  if (f.Given("--registry-token-file")) s.mutable_registry()->set_token_file(f.registry_token_file);
  if (f.Given("--timeline")) s.mutable_monitoring()->set_timeline_path(f.timeline);
  if (f.Given("--csv")) {
    if (s.dataset().format() != polis::proto::DatasetSpec::CSV)
      return polis::InvalidArgument("--csv: {} reads IDX images (dataset.format); --csv replaces the "
                                    "CSV file of a time-series job",
                                    f.job_path);
    s.mutable_dataset()->mutable_timeseries()->set_path(f.csv);
  }
  if (f.sync == "allreduce") {
    if (s.sync().mode() != polis::proto::SyncSpec::ALLREDUCE)
      ClearOtherModeSettings(polis::proto::SyncSpec::ALLREDUCE, &s);
    s.mutable_sync()->set_mode(polis::proto::SyncSpec::ALLREDUCE);
    if (!f.Given("--servers")) s.mutable_sync()->set_servers(0);
  } else if (f.sync == "ps") {
    if (s.sync().mode() != polis::proto::SyncSpec::PARAMETER_SERVER)
      ClearOtherModeSettings(polis::proto::SyncSpec::PARAMETER_SERVER, &s);
    s.mutable_sync()->set_mode(polis::proto::SyncSpec::PARAMETER_SERVER);
    if (!f.Given("--servers") && s.sync().servers() == 0) s.mutable_sync()->set_servers(1);
  }
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
  if (f.Given("--test-limit")) {
    if (polis::Status st = polis::CheckOverride("--test-limit", "dataset.test_limit", f.test_limit); !st.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", st.ToString().c_str());
      return 2;
    }
    spec.mutable_dataset()->set_test_limit(f.test_limit);
  }
  auto test = polis::data::OpenJobDataset(spec);
  if (!test.ok()) {
    std::fprintf(stderr, "polis-train: %s\n", test.status().ToString().c_str());
    return 2;
  }
  polis::Evaluator ev(*model, spec.model(), art->weights.data(), spec.training().eval_batch_size());
  polis::EvalResult r = ev.Run(**test, polis::data::Part::kTest, 0, (*test)->size(polis::data::Part::kTest));
  if (polis::Status st = ev.TakeError(); !st.ok()) {
    std::fprintf(stderr, "polis-train: %s\n", st.ToString().c_str());
    return 1;
  }
  nlohmann::json out = {{"artifact", f.evaluate}, {"test_samples", r.samples}, {"test_loss", r.loss()}};
  if ((*test)->task() == polis::data::Task::kRegression) {
    out["test_mae"] = r.mae();
    out["test_rmse"] = r.rmse();
    out["test_mape"] = r.mape();
    out["test_smape"] = r.smape();
  } else {
    out["test_accuracy"] = r.accuracy();
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

// The hosts of --hostfile or --hosts, each one resolvable.
polis::StatusOr<std::vector<polis::launch::HostSlots>> HostsFromFlags(const Flags& f) {
  std::vector<polis::launch::HostSlots> hosts;
  if (!f.hostfile.empty()) {
    POLIS_ASSIGN_OR_RETURN(std::string text, polis::ReadFile(f.hostfile));
    POLIS_ASSIGN_OR_RETURN(hosts, polis::launch::ParseHostfile(text, f.hostfile));
  } else {
    POLIS_ASSIGN_OR_RETURN(hosts, polis::launch::ParseHostList(f.hosts));
  }
  for (const auto& h : hosts) POLIS_RETURN_IF_ERROR(polis::launch::ResolveHost(h.host));
  return hosts;
}

// This host's address on --net (the launching host must reach the others
// on it; the coordinator's monitor listens on it).
polis::StatusOr<std::string> LocalAddressOn(const std::string& net) {
  POLIS_ASSIGN_OR_RETURN(auto interfaces, polis::launch::LocalInterfaces());
  return polis::launch::SelectAddress(net, interfaces);
}

// Rank 0's `mine` sent to every rank (collective). When rank 0 has no text
// (`mine` is an error), it returns that error and the others `elsewhere`.
polis::StatusOr<std::string> BroadcastFromRank0(int rank, polis::StatusOr<std::string> mine,
                                                const std::string& elsewhere) {
  std::string text;
  int len = -1;  // -1: rank 0 has none
  if (rank == 0 && mine.ok()) text = std::move(*mine), len = static_cast<int>(text.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (len < 0) return rank == 0 ? mine.status() : polis::InvalidArgument("{}", elsewhere);
  text.resize(len);
  MPI_Bcast(text.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  return text;
}

// The job file's text, read by rank 0 and sent to every rank (collective).
polis::StatusOr<std::string> BroadcastJobText(const std::string& path, int rank) {
  return BroadcastFromRank0(rank, rank == 0 ? polis::ReadFile(path) : polis::StatusOr<std::string>(std::string()),
                            fmt::format("the coordinator cannot read {}", path));
}

// dataset.source COORDINATOR: rank 0 opens the data and describes it to the
// other ranks, which read no file of it (common/data/remote_shards.h).
// Collective over every rank; they all fail alike when rank 0 cannot.
polis::Status ShareDatasetDescription(int rank, polis::LoadedJob* job) {
  if (job->spec.dataset().source() != polis::proto::DatasetSpec::COORDINATOR) return polis::Status::Ok();
  polis::StatusOr<std::string> mine = std::string();
  if (rank == 0) {
    auto ds = polis::data::OpenJobDataset(job->spec);
    if (ds.ok()) mine = polis::data::DescribeForWorkers(**ds, job->spec.dataset().dir());
    else mine = polis::Status(ds.status().code(), fmt::format("{}: dataset.dir: {}", job->path, ds.status().message()));
  }
  POLIS_ASSIGN_OR_RETURN(std::string text,
                         BroadcastFromRank0(rank, std::move(mine), "the coordinator cannot open its dataset"));
  if (rank == 0) return polis::Status::Ok();
  POLIS_ASSIGN_OR_RETURN(job->remote_data, polis::data::RecordClient::FromDescription(text));
  return polis::Status::Ok();
}

// --placement: check the hosts and the network, print where each rank goes
// ("placement: ... (HOSTS)" then the table); nothing starts.
// DP-SGD: rank 0 draws the job's secret key and every rank gets it (one
// broadcast, before any role starts). Collective over every rank.
polis::Status ShareJobKey(int rank, const polis::proto::JobSpec& spec, polis::privacy::Key256* key) {
  if (!polis::privacy::WantsDpSgd(spec)) return polis::Status::Ok();
  int ok = 1;
  polis::Status drawn;
  if (rank == 0) {
    auto k = polis::privacy::RandomKey();
    if (k.ok()) *key = *k;
    else drawn = k.status(), ok = 0;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Bcast(key->data(), static_cast<int>(key->size()), MPI_BYTE, 0, MPI_COMM_WORLD);
  if (!ok) return rank == 0 ? drawn : polis::InternalError("rank 0 could not draw the DP-SGD key");
  return polis::Status::Ok();
}

int PrintPlacement(const Flags& f) {
  auto fail = [](const polis::Status& st) {
    std::fprintf(stderr, "polis-train: %s\n", st.message().c_str());
    return 2;
  };
  if (f.hostfile.empty() == f.hosts.empty()) return fail(polis::InvalidArgument("--placement needs --hostfile FILE or --hosts LIST (one of them)"));
  auto hosts = HostsFromFlags(f);
  if (!hosts.ok()) return fail(hosts.status());
  if (!f.net.empty()) {
    auto address = LocalAddressOn(f.net);
    if (!address.ok()) return fail(address.status());
  }
  auto placed = polis::launch::Place(*hosts, static_cast<int>(f.servers), static_cast<int>(f.workers));
  if (!placed.ok()) return fail(placed.status());
  std::printf("placement: %zu ranks on %zu host(s) (%s)\n%s", placed->size(), hosts->size(),
              polis::launch::HostListString(*hosts).c_str(), polis::launch::PlacementTable(*placed).c_str());
  return 0;
}

// A job for a device this program was not linked for (a CUDA job given to
// polis-train rather than polis-train-cuda) is refused before any rank
// starts work.
polis::Status CheckBackend(const polis::LoadedJob& job) {
  const polis::device::Kind kind = polis::JobDeviceKind(job.spec);
  if (polis::backend::Linked(kind)) return polis::Status::Ok();
  return polis::FailedPrecondition(
      "{}: training.device.kind is {}, but this program has no {} backend; run polis-train-cuda (launch/polis-run "
      "picks it)",
      job.path, polis::device::KindName(kind), polis::device::KindName(kind));
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"polis-train: run one rank of a Polis training job (launch with mpirun or polis-run)"};
  app.add_option("job", f.job_path, "job spec (protobuf text, see jobs/)");
  auto* epochs = app.add_option("--epochs", f.epochs, "override training.epochs");
  auto* registry = app.add_option("--registry", f.registry, "override registry.root (publish to this directory)");
  auto* registry_url = app.add_option(
      "--registry-url", f.registry_url,
      "override registry.url: publish to a running polis-registry (http[s]://HOST:PORT) with a "
      "bearer token instead of writing registry.root");
  auto* token_file = app.add_option("--registry-token-file", f.registry_token_file,
                                    "override registry.token_file (default: $POLIS_REGISTRY_TOKEN)");
  auto* run_dir = app.add_option("--run-dir", f.run_dir, "run directory (default runs/<job>/<time>)");
  // Absolute here, where polis-run runs: the job setting's relative paths
  // are relative to the run directory instead.
  auto* timeline = app.add_option("--timeline", f.timeline,
                                  "record a per-rank timeline of every step (Chrome trace-event JSON, "
                                  "docs/timeline.md) into FILE; sets monitoring.timeline_path")
                       ->transform([](std::string v) {
                         return v.empty() ? v : std::filesystem::absolute(v).lexically_normal().string();
                       }, "", "absolute");
  auto* train_limit = app.add_option("--train-limit", f.train_limit, "use only the first N training samples");
  app.add_option("--test-limit", f.test_limit, "use only the first N test samples");
  auto* servers = app.add_option("--servers", f.servers, "override sync.servers (parameter-server ranks)");
  app.add_option("--csv", f.csv, "override dataset.timeseries.path (your copy of the CSV)");
  auto* sync = app.add_option("--sync", f.sync, "override sync.mode: ps (parameter servers) or allreduce")
                   ->check(CLI::IsMember({"ps", "allreduce"}));
  auto* print_servers = app.add_flag("--print-servers", f.print_servers, "print the job's sync.servers and exit");
  auto* print_device = app.add_flag("--print-device", f.print_device,
                                    "print the job's training.device.kind (CPU or CUDA) and exit");
  auto* progress = app.add_option("--progress", f.progress, "coordinator progress: lines or bar")
                       ->check(CLI::IsMember({"lines", "bar"}));
  auto* check = app.add_flag("--check", f.check,
                             "check the job with every other option given (fields, dataset files, shapes, "
                             "memory) and exit; no MPI");
  auto* evaluate = app.add_option("--evaluate", f.evaluate,
                                  "evaluate a model artifact on its job's test set (or JOB's dataset) and exit");
  // "" turns the monitor off; otherwise HOST:PORT with a port in 0..65535.
  auto host_port = CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.empty()) return "";
        const size_t colon = v.rfind(':');
        const std::string port = colon == std::string::npos ? "" : v.substr(colon + 1);
        const bool digits = !port.empty() && port.size() <= 5 &&
                            port.find_first_not_of("0123456789") == std::string::npos;
        if (colon == 0 || !digits || std::stoi(port) > 65535)
          return "expected HOST:PORT with a port in 0..65535, or \"\" to turn the monitor off; got '" +
                 polis::EchoValue(v) + "'";
        return "";
      },
      "HOST:PORT");
  auto* monitor = app.add_option("--monitor", f.monitor,
                                 "HOST:PORT of the coordinator's monitoring API and dashboard (port 0: any free "
                                 "port; \"\" to turn it off)")
                      ->capture_default_str()
                      ->check(host_port);
  auto* monitor_cert = app.add_option("--monitor-tls-cert", f.monitor_tls_cert,
                                      "PEM certificate (or chain) for the monitoring API: --monitor then "
                                      "speaks HTTPS (with --monitor-tls-key)");
  auto* monitor_key = app.add_option("--monitor-tls-key", f.monitor_tls_key,
                                     "PEM private key of --monitor-tls-cert");
  monitor_cert->needs(monitor_key);
  monitor_key->needs(monitor_cert);
  auto* monitor_plain = app.add_option("--monitor-plain-listen", f.monitor_plain_listen,
                                       "with --monitor-tls-cert: also serve the monitoring API over plain "
                                       "HTTP on HOST:PORT, where commands (stop, checkpoint) are refused")
                            ->check(host_port);
  monitor_plain->needs(monitor_cert);
  auto* resume = app.add_option("--resume", f.resume,
                                "continue the run in RUN_DIR from its newest complete checkpoint (the job "
                                "defaults to RUN_DIR/job.pbtxt; worker and server counts may differ)");
  auto* hostfile = app.add_option("--hostfile", f.hostfile, "multi-host: Open MPI hostfile (HOST slots=N lines)");
  auto* hosts = app.add_option("--hosts", f.hosts, "multi-host: HOST:SLOTS,HOST:SLOTS,... (every rank gets the same list)");
  hostfile->excludes(hosts);
  app.add_option("--net", f.net,
                 "multi-host: CIDR or interface name; the coordinator's monitoring API listens on this host's "
                 "address there (unless --monitor is given)");
  auto* placement = app.add_flag("--placement", f.placement,
                                 "print where each rank goes on --hostfile/--hosts (with --servers and --workers) "
                                 "and exit; no job file, no MPI");
  app.add_option("--workers", f.workers, "with --placement: the number of workers");
  // --evaluate reads a finished model: the training options would be ignored.
  for (CLI::Option* o : {epochs, registry, registry_url, token_file, run_dir, timeline, train_limit, servers, sync,
                         print_servers, progress, check, monitor, monitor_cert, monitor_key, monitor_plain,
                         resume, placement, print_device})
    evaluate->excludes(o);
  print_servers->excludes(check);
  print_device->excludes(check);
  app.set_version_flag("--version", std::string(POLIS_VERSION) + " (" + polis::SourceRevision() + ")");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // Bad flags are bad input: one line, exit 2 like a refused job.
    std::fprintf(stderr, "polis-train: %s (see --help)\n", polis::EchoValue(e.what(), 300).c_str());
    return 2;
  }
  for (const CLI::Option* o : app.get_options())
    if (o->count() > 0) f.given.insert(o->get_name());

  if (!f.evaluate.empty()) return Evaluate(f);
  if (f.placement) return PrintPlacement(f);
  if (!f.resume.empty()) {
    if (f.job_path.empty()) f.job_path = f.resume + "/job.pbtxt";
    if (f.run_dir.empty()) f.run_dir = f.resume;
  }
  if (f.job_path.empty()) {
    std::fprintf(stderr, "polis-train: a job file is required (see --help)\n");
    return 2;
  }
  if (f.print_servers) {
    auto job = LoadWithOverrides(f);
    if (!job.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", job.status().ToString().c_str());
      return 2;
    }
    std::printf("%d\n", job->spec.sync().servers());
    return 0;
  }
  if (f.print_device) {
    auto job = LoadWithOverrides(f);
    if (!job.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", job.status().ToString().c_str());
      return 2;
    }
    std::printf("%s\n", polis::device::KindName(polis::JobDeviceKind(job->spec)));
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
    if (auto st = CheckBackend(*job); !st.ok()) {
      std::fprintf(stderr, "polis-train: %s\n", st.ToString().c_str());
      return 2;
    }
    // The monitor's certificate and key: refused here, before any process starts.
    if (!f.monitor_tls_cert.empty()) {
      if (auto pem = polis::http::LoadTlsFiles({f.monitor_tls_cert, f.monitor_tls_key}); !pem.ok()) {
        std::fprintf(stderr, "polis-train: --monitor-tls-cert/--monitor-tls-key: %s\n",
                     pem.status().message().c_str());
        return 2;
      }
    }
    // The coordinator writes the timeline where polis-run runs: its folder must be there.
    if (const std::string& t = job->spec.monitoring().timeline_path();
        !t.empty() && std::filesystem::path(t).is_absolute() &&
        !std::filesystem::is_directory(std::filesystem::path(t).parent_path())) {
      std::fprintf(stderr, "polis-train: --timeline %s: the folder %s does not exist\n", t.c_str(),
                   std::filesystem::path(t).parent_path().c_str());
      return 2;
    }
    if (!f.resume.empty()) {
      auto p = polis::PlanResume(f.resume, *job, *model);
      if (!p.ok()) {
        std::fprintf(stderr, "polis-train: %s\n", p.status().ToString().c_str());
        return 2;
      }
      if (p->finished)
        std::printf("%s: nothing left to train (%d epoch(s) done): resuming publishes the trained model\n",
                    f.resume.c_str(), p->trained_epochs);
    }
    std::printf("%s: ok: %zu layers, %lld parameters, input %s, output %s\n", f.job_path.c_str(),
                model->layers().size(), static_cast<long long>(model->parameter_count()),
                polis::nn::ShapeString(model->input_shape()).c_str(),
                polis::nn::ShapeString(model->output_shape()).c_str());
    return 0;
  }

  int provided = 0;
  // All-reduce workers call MPI from a communication thread; with
  // sync.delayed_averaging the training thread uses the control channel
  // while that thread's collective runs, which needs MULTIPLE (other modes
  // need no more than SERIALIZED; a library without MULTIPLE refuses
  // delayed averaging at start).
  polis::comm::SetOpenMpiDefaults();
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  // Every rank checks the job; all refuse alike, rank 0 says why.
  auto fail_setup = [&](const polis::Status& st) {
    if (rank == 0) std::fprintf(stderr, "polis-train: %s\n", st.ToString().c_str());
    MPI_Finalize();
    return 2;
  };
  // Only rank 0 opens the job file (with --resume it lies in the run
  // directory): the others parse its text.
  auto job_text = BroadcastJobText(f.job_path, rank);
  if (!job_text.ok()) return fail_setup(job_text.status());
  auto job = LoadWithOverrides(f, &*job_text);
  if (!job.ok()) return fail_setup(job.status());
  if (auto st = ShareDatasetDescription(rank, &*job); !st.ok()) return fail_setup(st);
  std::vector<polis::launch::PlacedRank> placed_ranks;
  const int server_count = job->spec.sync().servers(), worker_count = world - 1 - server_count;
  if ((!f.hosts.empty() || !f.hostfile.empty()) && worker_count >= 1) {
    auto hosts_given = HostsFromFlags(f);
    if (!hosts_given.ok()) return fail_setup(hosts_given.status());
    auto placed = polis::launch::Place(*hosts_given, server_count, worker_count);
    if (!placed.ok()) return fail_setup(placed.status());
    placed_ranks = std::move(*placed);
    // Each host reads its own copy of the dataset: every copy must be the
    // coordinator's before the files are read for real.
    if (auto st = polis::launch::CheckDatasetCopies(MPI_COMM_WORLD, rank, placed_ranks, job->spec); !st.ok())
      return fail_setup(st);
  }
  // The registry (and its token file) is the coordinator's alone.
  polis::LoadedJob checked = *job;
  if (rank != 0) checked.spec.clear_registry();
  auto model = polis::CheckJob(checked);
  if (!model.ok()) return fail_setup(model.status());
  if (auto st = CheckBackend(*job); !st.ok()) return fail_setup(st);

  // Rank 0 picks the checkpoint to resume from, after checking that the job
  // may continue from it; every rank uses the same one.
  polis::ResumePlan plan;
  if (!f.resume.empty()) {
    int ok = 1, finished = 0;
    if (rank == 0) {
      const int workers = world - 1 - job->spec.sync().servers();
      auto p = polis::PlanResume(f.resume, *job, *model, workers);
      if (p.ok()) {
        for (const auto& line : p->notes) std::fprintf(stderr, "polis-train: %s\n", line.c_str());
        plan = *p;
        finished = plan.finished;
      } else {
        std::fprintf(stderr, "polis-train: %s\n", p.status().ToString().c_str());
        ok = 0;
      }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) {
      MPI_Finalize();
      return 2;
    }
    MPI_Bcast(&finished, 1, MPI_INT, 0, MPI_COMM_WORLD);
    int len = static_cast<int>(plan.manifest_dir.size());
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    plan.manifest_dir.resize(len);
    MPI_Bcast(plan.manifest_dir.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    plan.finished = finished != 0;
  }
  const std::string manifest_dir = plan.manifest_dir;

  polis::RoleContext ctx;
  ctx.job = std::move(*job);
  ctx.model = std::move(*model);
  ctx.resume_manifest = manifest_dir;
  if (ctx.job.spec.dataset().format() == polis::proto::DatasetSpec::IDX) {
    auto dims = polis::data::ReadIdxDims(polis::ResolveDataset(ctx.job.spec.dataset()).train_images);
    ctx.train_samples = dims.ok() ? (*dims)[0] : 0;
    int64_t limit = ctx.job.spec.dataset().train_limit();
    if (limit > 0) ctx.train_samples = std::min(ctx.train_samples, limit);
    ctx.train_samples -= polis::data::ValidationCount(ctx.job.spec.dataset(), ctx.train_samples);
  } else {
    auto ds = polis::data::OpenJobDataset(ctx.job.spec, ctx.job.remote_data);
    ctx.train_samples = ds.ok() ? (*ds)->size(polis::data::Part::kTrain) : 0;
  }
  ctx.rank = rank;
  ctx.world = world;
  ctx.servers = ctx.job.spec.sync().servers();
  ctx.workers = world - 1 - ctx.servers;
  if (ctx.workers < 1)
    return fail_setup(polis::InvalidArgument(
        "{} ranks cannot hold 1 coordinator, {} server(s) and at least 1 worker; start at least {} "
        "ranks or lower sync.servers",
        world, ctx.servers, ctx.servers + 2));
  // Collective over every rank, so before any role can fail.
  auto transport = polis::comm::MakeMpiTransport(MPI_COMM_WORLD, ctx.is_worker());
  if (!transport.ok()) return fail_setup(transport.status());
  ctx.transport = transport->get();
  ctx.ctrl = ctx.transport->control();
  ctx.data = ctx.transport->data();
  if (ctx.job.remote_data) ctx.job.remote_data->Attach(ctx.ctrl, ctx.data, ctx.coordinator_rank());
  ctx.placement = std::move(placed_ranks);
  if (auto st = ShareJobKey(rank, ctx.job.spec, &ctx.privacy_key); !st.ok()) return fail_setup(st);
  ctx.run_dir = f.run_dir.empty()
                    ? fmt::format("runs/{}/{}", ctx.job.spec.name(), polis::UtcTimestamp())
                    : f.run_dir;
  polis::SetLogIdentity(rank, ctx.RoleName(rank), ctx.placement.empty() ? "" : ctx.placement[rank].host);

  // The coordinator turns SIGTERM into a checkpoint and an orderly stop;
  // the other ranks ignore it and leave when the coordinator tells them.
  if (rank != 0) signal(SIGTERM, SIG_IGN);
  // monitoring.timeline_path: every rank records; collective.
  polis::Status st = polis::trace::StartTimeline(ctx);
  // An allocation that fails anywhere in a role (a model or batch larger
  // than this host's memory) ends it as a Status naming the role, not as
  // an uncaught exception that aborts without a word.
  try {
    // A resume: the coordinator sends every rank its part of the checkpoint.
    if (st.ok() && !plan.finished && !manifest_dir.empty()) st = polis::ShareResumeState(&ctx);
    if (!st.ok()) {
      // Reported below.
    } else if (plan.finished) {
      // Nothing left to train: the coordinator publishes; the others leave.
      if (rank == 0) st = polis::coordinator::PublishFinishedRun(ctx, plan.kept_artifact);
    } else if (rank == 0) {
      polis::coordinator::CoordinatorOptions options;
      options.progress_bar = f.progress == "bar";
      options.monitor_listen = f.monitor;
      options.monitor_tls_cert = f.monitor_tls_cert;
      options.monitor_tls_key = f.monitor_tls_key;
      options.monitor_plain_listen = f.monitor_plain_listen;
      if (!f.net.empty() && !f.Given("--monitor")) {
        auto address = LocalAddressOn(f.net);
        st = address.status();
        if (address.ok()) options.monitor_listen = *address + ":0";
      }
      if (st.ok()) st = polis::coordinator::RunCoordinator(ctx, options);
    } else if (ctx.is_server()) {
      st = polis::paramserver::RunServer(ctx);
    } else {
      st = polis::worker::RunWorker(ctx);
    }
  } catch (const std::bad_alloc&) {
    st = polis::Status(polis::Code::kFailedPrecondition,
                       fmt::format("out of memory on this host (training.batch_size {}, {} parameters); "
                                   "lower the batch size or run fewer ranks per host",
                                   ctx.job.spec.training().batch_size(), ctx.model.parameter_count()));
  }
  if (st.code() == polis::Code::kCancelled) st = polis::Status::Ok();  // an orderly stop
  // Every rank's events to the coordinator, which writes the file.
  if (st.ok()) st = polis::trace::FinishTimeline(ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "polis-train: %s: %s\n", ctx.RankName(rank).c_str(), st.ToString().c_str());
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
  transport->reset();  // its communicators are freed before MPI_Finalize
  MPI_Finalize();
  return 0;
}
