#include "coordinator/coordinator.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/env.h"
#include "common/comm/key_ranges.h"
#include "common/comm/mpi_util.h"
#include "common/data/idx.h"
#include "common/data/dataset.h"
#include "common/data/shard_plan.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "coordinator/monitor.h"
#include "coordinator/publish.h"
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
  std::vector<int64_t> worker_samples;
  proto::EpochReport sum;
  std::string params_sha256;
  bool replicas_identical = true;
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
  a->set_test_abs_error_sum(a->test_abs_error_sum() + b.test_abs_error_sum());
  a->set_test_sq_error_sum(a->test_sq_error_sum() + b.test_sq_error_sum());
  a->set_test_ape_sum(a->test_ape_sum() + b.test_ape_sum());
  a->set_test_ape_count(a->test_ape_count() + b.test_ape_count());
  a->set_test_sape_sum(a->test_sape_sum() + b.test_sape_sum());
  a->set_test_values(a->test_values() + b.test_values());
}

std::atomic<bool> g_stop_requested{false};

// What the monitoring API shows of each rank.
struct WorkerView {
  int epoch = 0;
  int64_t step = 0, samples = 0, shards = 0;
  double compute = 0, comm = 0, wait = 0, loss = 0, rate = 0;
  double compute_rate = 0;  // samples per second of compute (excludes waiting)
  comm::Clock::time_point last_seen = comm::Clock::now(), last_rate_at = comm::Clock::now();
  int64_t last_rate_samples = 0;
};
struct ServerView {
  proto::ServerStats stats;
  double updates_per_second = 0;
  comm::Clock::time_point last_seen = comm::Clock::now();
};

void OnStopSignal(int) { g_stop_requested = true; }

// Worker ranks some server is waiting for, from the servers' heartbeats.
std::set<int> BlamedWorkers(const std::vector<ServerView>& servers) {
  std::set<int> ranks;
  for (const auto& v : servers) ranks.insert(v.stats.waiting_for().begin(), v.stats.waiting_for().end());
  return ranks;
}

// Who the job is stuck on, when someone it waits for has been silent past
// the heartbeat deadline: a server; a worker whose push a server waits for;
// or, in all-reduce mode, every worker still training when all are silent
// (one of them is stopped or dead; the collective cannot say which). "" when
// nobody is.
std::string SilentRanks(const RoleContext& ctx, const std::vector<WorkerView>& workers,
                        const std::vector<ServerView>& servers, const std::vector<int>& worker_epoch, int epochs) {
  const auto now = comm::Clock::now();
  const double limit = env::HeartbeatTimeoutSeconds();
  auto age = [&](comm::Clock::time_point t) { return std::chrono::duration<double>(now - t).count(); };
  auto worker = [&](int k) {
    return fmt::format("rank {} (worker, epoch {}, step {}, silent for {:.0f} s)", ctx.worker_rank(k),
                       workers[k].epoch + 1, workers[k].step, age(workers[k].last_seen));
  };
  std::string who;
  auto add = [&](const std::string& one) { who += (who.empty() ? "" : ", ") + one; };
  for (size_t s = 0; s < servers.size(); ++s)
    if (age(servers[s].last_seen) > limit)
      add(fmt::format("rank {} (server, step {}, silent for {:.0f} s)", ctx.server_rank(static_cast<int>(s)),
                      servers[s].stats.updates(), age(servers[s].last_seen)));
  if (ctx.servers > 0) {
    const std::set<int> blamed = BlamedWorkers(servers);
    for (int k = 0; k < ctx.workers; ++k)
      if (blamed.count(ctx.worker_rank(k)) && age(workers[k].last_seen) > limit) add(worker(k));
    return who;
  }
  bool all_silent = true;
  for (int k = 0; k < ctx.workers; ++k)
    if (worker_epoch[k] < epochs && age(workers[k].last_seen) <= limit) all_silent = false;
  if (all_silent)
    for (int k = 0; k < ctx.workers; ++k)
      if (worker_epoch[k] < epochs) add(worker(k));
  return who;
}

// Asks for a consistent checkpoint: the servers take one at their next
// cut; in all-reduce mode the lead worker asks every replica for one at the
// same step (then_stop: and to stop after it).
Status RequestCheckpoint(const RoleContext& ctx, bool then_stop) {
  proto::ControlMessage cmd;
  cmd.mutable_server_command()->set_kind(proto::ServerCommand::CHECKPOINT_AT);
  if (ctx.servers == 0) {
    cmd.mutable_server_command()->set_then_stop(then_stop);
    return comm::SendControl(ctx.ctrl, ctx.worker_rank(0), cmd);
  }
  for (int s = 0; s < ctx.servers; ++s) POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.server_rank(s), cmd));
  return Status::Ok();
}

// A complete set of ShardSaved reports for one checkpoint: each worker's
// samples of the epoch, and the shard files. With servers, every server
// reports every worker's count (they must agree); in all-reduce mode each
// worker reports its own and the lead worker names the one file.
Status CollectSaved(const std::vector<proto::ShardSaved>& list, int W, bool servers,
                    std::vector<int64_t>* consumed, std::vector<CheckpointManifest::Shard>* shards) {
  const auto& first = list[0];
  consumed->assign(W, -1);
  for (const auto& x : list) {
    if (x.epoch() != first.epoch())
      return InternalError("ranks disagree on the epoch of checkpoint {}", first.step());
    if (servers) {
      if (x.consumed_size() != W) return InternalError("a server reported {} workers, not {}", x.consumed_size(), W);
      for (int k = 0; k < W; ++k) {
        if (x.consumed(k) != first.consumed(k))
          return InternalError("servers disagree on worker {}'s samples in checkpoint {}", k, first.step());
        (*consumed)[k] = x.consumed(k);
      }
    } else {
      if (!x.has_worker() || x.worker() < 0 || x.worker() >= W || x.consumed_size() != 1)
        return InternalError("a malformed all-reduce checkpoint report for step {}", first.step());
      (*consumed)[x.worker()] = x.consumed(0);
    }
    if (!x.path().empty()) shards->push_back({x.server(), x.begin(), x.end(), x.path(), x.sha256()});
  }
  for (int k = 0; k < W; ++k)
    if ((*consumed)[k] < 0) return InternalError("no report from worker {} for checkpoint {}", k, first.step());
  if (shards->empty()) return InternalError("checkpoint {} names no shard file", first.step());
  return Status::Ok();
}


using Range = data::ShardPlanner::Range;

// The first `count` positions of a worker's grants, in the order granted.
void TakePrefix(const std::vector<Range>& grants, int64_t count, std::vector<Range>* out) {
  for (const Range& g : grants) {
    if (count <= 0) return;
    int64_t take = std::min(count, g.end - g.begin);
    out->push_back({g.begin, g.begin + take});
    count -= take;
  }
}

}  // namespace

Status RunCoordinator(const RoleContext& ctx, const CoordinatorOptions& options) {
  const proto::JobSpec& spec = ctx.job.spec;
  const int E = spec.training().epochs();
  const int W = ctx.workers;
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<data::Dataset> dataset, data::OpenDataset(spec.dataset()));
  const bool regression = dataset->task() == data::Task::kRegression;
  const int64_t N = dataset->size(data::Part::kTrain);
  data::ShardPlanner planner(N, ShardSize(spec));
  int start_epoch = 0;
  std::vector<Range> resumed_consumed;  // of start_epoch, from the checkpoint
  int resumed_epoch = -1;
  if (!ctx.resume_manifest.empty()) {
    POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(ctx.resume_manifest));
    start_epoch = m.epoch + (m.epoch_complete ? 1 : 0);
    if (!m.epoch_complete) {
      resumed_epoch = m.epoch;
      resumed_consumed = m.consumed;
      planner.SetRemaining(m.epoch, Complement(MergeRanges(m.consumed), N));
    }
    int64_t done = 0;
    for (const auto& r : m.consumed) done += r.end - r.begin;
    std::printf("polis: resuming from %s (step %lld, epoch %d%s, %lld of its samples done; it ran "
                "with %d worker(s) and %d server(s))\n",
                m.dir.c_str(), static_cast<long long>(m.step), m.epoch + 1,
                m.epoch_complete ? " complete" : "", static_cast<long long>(m.epoch_complete ? N : done),
                m.workers, m.servers);
  }
  // SIGTERM (scancel, a time limit, polisctl stop): checkpoint, then stop.
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  POLIS_RETURN_IF_ERROR(MakeDirectories(ctx.run_dir));
  // The monitoring API (GET /api/status, /metrics, the dashboard), and
  // where tools find it: <run-dir>/coordinator.json.
  Monitor::Options mo;
  mo.listen = options.monitor_listen;
  mo.token = !env::MonitorToken().empty() ? env::MonitorToken() : Sha256Hex(fmt::format("{}-{}-{}", getpid(), ctx.run_dir,
                                                                        comm::Clock::now().time_since_epoch().count()));
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/monitor.token", mo.token + "\n"));
  chmod((ctx.run_dir + "/monitor.token").c_str(), 0600);
  std::unique_ptr<Monitor> monitor;
  if (!options.monitor_listen.empty()) {
    auto m = Monitor::Start(mo);
    if (!m.ok()) return m.status().WithContext("starting the monitoring API");
    monitor = std::move(*m);
  }
  {
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    json info = {{"pid", getpid()}, {"host", host}, {"job", spec.name()}, {"run_dir", ctx.run_dir},
                 {"started_at", UtcTimestamp()}, {"workers", W}, {"servers", ctx.servers},
                 {"address", monitor ? monitor->address() : ""}};
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/coordinator.json", info.dump(2) + "\n"));
    if (monitor) std::printf("polis: monitoring at %s (polisctl status --run-dir %s)\n", monitor->address().c_str(),
                             ctx.run_dir.c_str());
  }
  std::ofstream metrics(ctx.run_dir + "/metrics.jsonl", std::ios::app);
  std::printf("polis: job %s: %d worker(s), %d server(s), %lld training images, %d epoch(s), "
              "batch %d per worker, %lld parameters\n",
              spec.name().c_str(), W, ctx.servers, static_cast<long long>(N), E,
              spec.training().batch_size(), static_cast<long long>(ctx.model.parameter_count()));
  std::fflush(stdout);

  const auto start = comm::Clock::now();
  std::vector<EpochTotals> totals(E);
  std::vector<int> worker_epoch(W, start_epoch);
  json history = json::array();
  if (start_epoch > 0) {
    // Earlier epochs' rows, so result.json tells the whole story.
    std::ifstream old(ctx.run_dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(old, line)) {
      auto row = json::parse(line, nullptr, false);
      if (!row.is_discarded() && row.value("epoch", 0) <= start_epoch) history.push_back(row);
    }
  }
  int epochs_done = start_epoch;
  // Checkpoint bookkeeping: grants per epoch and worker, in order; shard
  // reports per checkpoint until every server's is in.
  std::map<int, std::vector<std::vector<Range>>> grants;
  std::map<std::pair<int64_t, bool>, std::vector<proto::ShardSaved>> saved;
  std::string last_checkpoint = ctx.resume_manifest;
  std::string job_text;
  google::protobuf::TextFormat::PrintToString(spec, &job_text);
  const std::string model_sha256 = ModelLayoutSha256(ctx.model);
  bool stopping = false;
  std::vector<proto::ServerStats> server_stats;
  auto last_print = start;
  int64_t samples_done = 0;  // over finished epochs
  std::vector<WorkerView> workers_view(W);
  std::vector<ServerView> servers_view(ctx.servers);
  json series = json::array();
  double last_loss = 0;
  bool have_progress = false;  // until the first report, step and loss are unknown (null)
  std::string state = "running";
  auto last_publish = start - std::chrono::seconds(1);
  auto last_heartbeat_check = start;
  auto publish = [&]() {
    if (!monitor) return;
    const auto now = comm::Clock::now();
    const double elapsed = Seconds(now - start).count();
    int64_t in_epoch = 0;
    for (const auto& v : workers_view) in_epoch += v.epoch == epochs_done ? v.samples : 0;
    const double done = samples_done + in_epoch;
    const double rate = elapsed > 0 ? done / elapsed : 0;
    double best = 0;
    for (const auto& v : workers_view) best = std::max(best, v.compute_rate);
    json wj = json::array(), stragglers = json::array(), stalled = json::array();
    const std::set<int> blamed = BlamedWorkers(servers_view);
    for (int k = 0; k < W; ++k) {
      const auto& v = workers_view[k];
      const double age = Seconds(now - v.last_seen).count();
      // A straggler computes at under 2/3 of the fastest worker's rate (in
      // BSP everyone moves at the slowest's pace; compute time tells who).
      const bool straggler = W > 1 && v.compute_rate > 0 && best > 0 && v.compute_rate < best * 2.0 / 3.0;
      // Silent for long, and (with servers) one whose push a server is
      // waiting for: a worker that pushed and waits for the others' is held,
      // not stalled.
      const bool is_stalled = age > std::max(30.0, env::TimeoutSeconds() / 10.0) &&
                              (ctx.servers == 0 || blamed.count(ctx.worker_rank(k)) > 0);
      if (straggler) stragglers.push_back(ctx.worker_rank(k));
      if (is_stalled) stalled.push_back(ctx.worker_rank(k));
      wj.push_back({{"rank", ctx.worker_rank(k)}, {"epoch", v.epoch + 1}, {"step", v.step}, {"shards_done", v.shards},
                    {"samples", v.samples}, {"samples_per_second", v.rate}, {"compute_samples_per_second", v.compute_rate}, {"loss", v.loss},
                    {"compute_seconds", v.compute}, {"comm_seconds", v.comm}, {"wait_seconds", v.wait},
                    {"clock", v.step}, {"last_heartbeat_age_seconds", age}, {"straggler", straggler}});
    }
    json sj = json::array();
    for (int k = 0; k < ctx.servers; ++k) {
      const auto& v = servers_view[k];
      const double age = Seconds(now - v.last_seen).count();
      if (age > std::max(30.0, env::TimeoutSeconds() / 10.0)) stalled.push_back(ctx.server_rank(k));
      sj.push_back({{"rank", ctx.server_rank(k)}, {"key_range", {v.stats.key_begin(), v.stats.key_end()}},
                    {"bytes_in", v.stats.bytes_in()}, {"bytes_out", v.stats.bytes_out()},
                    {"updates", v.stats.updates()}, {"updates_per_second", v.updates_per_second},
                    {"max_staleness", v.stats.max_staleness()}, {"last_heartbeat_age_seconds", age}});
    }
    json hist = json::array();
    for (const auto& h : history)
      hist.push_back({{"epoch", h["epoch"]}, {"train_loss", h["train_loss"]},
                      {"test_accuracy", h.value("test_accuracy", 0.0)}, {"test_mae", h.value("test_mae", 0.0)},
                      {"images_per_second", h["images_per_second"]}, {"elapsed_seconds", h["elapsed_seconds"]}});
    const double total = static_cast<double>(N) * E;
    json status = {{"job", spec.name()}, {"state", state}, {"epoch", std::min(epochs_done + 1, E)}, {"epochs", E},
                   {"step", have_progress ? json(workers_view[0].step) : json(nullptr)},
                   {"loss", have_progress ? json(last_loss) : json(nullptr)},
                   {"accuracy", history.empty() ? 0.0 : history.back().value("test_accuracy", 0.0)},
                   {"samples_per_second", rate},
                   {"eta_seconds", rate > 0 ? std::max(0.0, (total - done) / rate) : -1.0},
                   {"elapsed_seconds", elapsed}, {"history", hist}, {"series", series}, {"workers", wj},
                   {"servers", sj}, {"stragglers", stragglers}, {"stalled", stalled},
                   {"sync", proto::SyncSpec::Mode_Name(spec.sync().mode())},
                   {"last_checkpoint", last_checkpoint},
                   {"restarts", env::RestartCount()},
                   {"restart_cause", env::RestartCause()}};
    monitor->Publish(std::move(status));
  };

  while (epochs_done < E) {
    int from = -1;
    proto::ControlMessage msg;
    if (g_stop_requested && !stopping) {
      stopping = true;
      state = "stopping";
      std::printf("polis: stop requested: taking a checkpoint\n");
      std::fflush(stdout);
      POLIS_RETURN_IF_ERROR(RequestCheckpoint(ctx, /*then_stop=*/true));
    }
    Status st = Status::Ok();
    {
      comm::Backoff backoff;
      const auto deadline = comm::DeadlineFromNow();
      while (true) {
        st = comm::TryRecvControl(ctx.ctrl, MPI_ANY_SOURCE, &from, &msg);
        if (st.code() != Code::kNotFound) break;
        if (g_stop_requested && !stopping) break;
        if (comm::Clock::now() - last_heartbeat_check > std::chrono::seconds(1)) {
          last_heartbeat_check = comm::Clock::now();
          const std::string silent = SilentRanks(ctx, workers_view, servers_view, worker_epoch, E);
          if (!silent.empty()) {
            state = "failed";
            publish();
            return Timeout("the job waits on {}, silent past the {} s heartbeat deadline (stopped, hung or "
                           "dead); the last complete checkpoint is {}",
                           silent, env::HeartbeatTimeoutSeconds(),
                           last_checkpoint.empty() ? "none" : last_checkpoint);
          }
        }
        if (monitor && comm::Clock::now() - last_publish > std::chrono::milliseconds(500)) {
          last_publish = comm::Clock::now();
          publish();
          for (Monitor::Command c : monitor->TakeCommands()) {
            if (c == Monitor::Command::kStop) g_stop_requested = true;
            if (c == Monitor::Command::kCheckpoint) {
              POLIS_RETURN_IF_ERROR(RequestCheckpoint(ctx, /*then_stop=*/false));
              state = "checkpointing";
            }
          }
          if (g_stop_requested && !stopping) break;
        }
        if (comm::Clock::now() > deadline) {
          st = Timeout("no message");
          break;
        }
        backoff.Pause();
      }
    }
    if (st.code() == Code::kNotFound) continue;  // a stop request to act on
    if (st.code() == Code::kTimeout) {
      // Blame whom the servers wait for, as they do; without servers, every
      // worker that has not finished the epoch.
      const std::set<int> blamed = BlamedWorkers(servers_view);
      std::string who, held;
      for (int w = 0; w < W; ++w) {
        if (worker_epoch[w] > epochs_done) continue;
        const std::string one = fmt::format("rank {} (worker, epoch {}, step {})", ctx.worker_rank(w),
                                            worker_epoch[w] + 1, workers_view[w].step);
        std::string& list = blamed.empty() || blamed.count(ctx.worker_rank(w)) ? who : held;
        list += (list.empty() ? "" : ", ") + one;
      }
      return Timeout("stalled in epoch {}: no word from {}{}", epochs_done + 1, who.empty() ? held : who,
                     who.empty() || held.empty() ? "" : "; " + held + " wait(s) for it");
    }
    POLIS_RETURN_IF_ERROR(st);
    const int w = from - 1 - ctx.servers;
    if (msg.has_fatal_error())
      return RemoteError("rank {} ({}) failed: {}", from, ctx.RoleName(from), msg.fatal_error().message());
    if (msg.has_shard_saved()) {
      const auto& ss = msg.shard_saved();
      auto& list = saved[{ss.step(), ss.epoch_complete()}];
      list.push_back(ss);
      // Every server's shard (all-reduce: every worker's report) is in: the
      // manifest makes it a checkpoint.
      if (static_cast<int>(list.size()) < (ctx.servers > 0 ? ctx.servers : W)) continue;
      std::vector<int64_t> worker_consumed;
      CheckpointManifest m;
      m.step = ss.step();
      m.epoch = ss.epoch();
      m.epoch_complete = ss.epoch_complete();
      m.workers = W;
      m.servers = ctx.servers;
      m.parameter_count = ctx.model.parameter_count();
      m.job_sha256 = ctx.job.sha256;
      m.job_text = job_text;
      m.model_sha256 = model_sha256;
      POLIS_RETURN_IF_ERROR(CollectSaved(list, W, ctx.servers > 0, &worker_consumed, &m.shards));
      if (!m.epoch_complete) {
        std::vector<Range> consumed = ss.epoch() == resumed_epoch ? resumed_consumed : std::vector<Range>{};
        auto& g = grants[ss.epoch()];
        g.resize(W);
        for (int k = 0; k < W; ++k) TakePrefix(g[k], worker_consumed[k], &consumed);
        m.consumed = MergeRanges(consumed);
      } else {
        m.consumed = {{0, N}};
      }
      const std::string dir = ctx.run_dir + "/checkpoints/" + CheckpointDirName(m.step, m.epoch_complete);
      POLIS_RETURN_IF_ERROR(WriteManifest(dir, m));
      PruneCheckpoints(ctx.run_dir, spec.training().keep_checkpoints());
      saved.erase({ss.step(), ss.epoch_complete()});
      last_checkpoint = dir;
      if (state == "checkpointing") state = "running";
      POLIS_LOG(kInfo, kCoord, "checkpoint {} complete", dir);
      if (stopping) break;
      continue;
    }
    if (msg.has_server_stats() && from >= 1 && from <= ctx.servers) {
      ServerView& v = servers_view[from - 1];
      const auto now = comm::Clock::now();
      const double dt = Seconds(now - v.last_seen).count();
      if (dt > 0) v.updates_per_second = (msg.server_stats().updates() - v.stats.updates()) / dt;
      v.stats = msg.server_stats();
      v.last_seen = now;
      continue;
    }
    if (w < 0 || w >= W) return RemoteError("unexpected control message from rank {}", from);
    workers_view[w].last_seen = comm::Clock::now();
    if (msg.has_shard_request()) {
      int e = msg.shard_request().epoch();
      if (e < 0 || e >= E) return RemoteError("rank {} asked for a shard of epoch {}", from, e);
      auto r = planner.Next(e);
      if (r.end > r.begin) ++workers_view[w].shards;
      if (r.end > r.begin) {
        auto& g = grants[e];
        g.resize(W);
        g[w].push_back(r);
      }
      proto::ControlMessage reply;
      auto* g = reply.mutable_shard_grant();
      g->set_epoch(e);
      g->set_begin(r.begin);
      g->set_end(r.end);
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, from, reply));
    } else if (msg.has_progress()) {
      const auto& p = msg.progress();
      {
        WorkerView& v = workers_view[w];
        const auto now = comm::Clock::now();
        if (v.epoch != p.epoch()) v.last_rate_samples = 0;
        const double dt = Seconds(now - v.last_rate_at).count();
        if (dt > 0 && p.samples() >= v.last_rate_samples) v.rate = (p.samples() - v.last_rate_samples) / dt;
        v.last_rate_at = now;
        if (p.compute_seconds() > 0 && p.samples() >= v.last_rate_samples)
          v.compute_rate = (p.samples() - v.last_rate_samples) / p.compute_seconds();
        v.last_rate_samples = p.samples();
        v.epoch = p.epoch();
        v.step = p.step();
        v.samples = p.samples();
        v.loss = p.loss();
        v.compute += p.compute_seconds();
        v.wait += p.wait_seconds();
        v.comm += p.comm_seconds();
        last_loss = p.loss();
        have_progress = true;
        if (series.size() >= 500) series.erase(series.begin());
        series.push_back({{"t", Seconds(now - start).count()}, {"loss", p.loss()}, {"samples_per_second", v.rate}});
      }
      auto now = comm::Clock::now();
      double since = Seconds(now - last_print).count();
      if (since >= (options.progress_bar ? 0.5 : 10.0)) {
        last_print = now;
        int64_t in_epoch = 0;
        for (const auto& v : workers_view) in_epoch += v.epoch == p.epoch() ? v.samples : 0;
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
      Add(&totals[e].sum, r);
      totals[e].worker_samples.resize(W);
      totals[e].worker_samples[w] = r.train_samples();
      if (totals[e].reports == 0) totals[e].params_sha256 = r.params_sha256();
      else if (r.params_sha256() != totals[e].params_sha256) totals[e].replicas_identical = false;
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
        EvalResult ev;
        ev.values = s.test_values();
        ev.abs_error_sum = s.test_abs_error_sum();
        ev.sq_error_sum = s.test_sq_error_sum();
        ev.ape_sum = s.test_ape_sum();
        ev.ape_count = s.test_ape_count();
        ev.sape_sum = s.test_sape_sum();
        if (options.progress_bar) std::printf("\r%100s\r", "");
        if (regression)
          std::printf("epoch %d/%d  loss %.4f  test_loss %.4f  test_mae %.2f  test_rmse %.2f  "
                      "test_mape %.1f%%  samples/s %.0f  elapsed %s  ETA %s\n",
                      e + 1, E, train_loss, test_loss, ev.mae(), ev.rmse(), ev.mape(), rate,
                      Duration(elapsed).c_str(), Duration(eta).c_str());
        else
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
                    {"worker_comm_seconds", s.comm_seconds()},
                    {"replicas_identical", totals[e].replicas_identical},
                    {"worker_train_samples", totals[e].worker_samples}};
        if (regression) {
          row["test_mae"] = ev.mae();
          row["test_rmse"] = ev.rmse();
          row["test_mape"] = ev.mape();
          row["test_smape"] = ev.smape();
          row.erase("train_accuracy");
          row.erase("test_accuracy");
        }
        if (!totals[e].replicas_identical)
          return InternalError("after epoch {} the workers hold different parameters", e + 1);
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
  if (stopping) {
    // Stopped by a signal: everyone leaves; the checkpoint is what remains.
    for (int r = 1; r < ctx.world; ++r) {
      proto::ControlMessage cmd;
      cmd.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, r, cmd));
    }
    json result = {{"job", spec.name()}, {"state", "stopped"}, {"checkpoint", last_checkpoint},
                   {"restarts", env::RestartCount()}, {"restart_cause", env::RestartCause()},
                   {"epochs_done", epochs_done}, {"train_seconds", train_seconds}, {"history", history}};
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/result.json", result.dump(2) + "\n"));
    std::printf("polis: stopped; %s\n",
                last_checkpoint.empty() ? "no checkpoint was taken"
                                        : ("resume with: polis-run --resume " + ctx.run_dir).c_str());
    std::fflush(stdout);
    return Cancelled();
  }

  // Gather the final parameters: from the servers' ranges, or (all-reduce)
  // from worker 0, whose replica equals every other's.
  std::vector<float> params(ctx.model.parameter_count());
  if (ctx.servers > 0) {
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
    for (int s = 0; s < ctx.servers; ++s) {
      proto::ControlMessage msg;
      do {  // heartbeats may still be queued before the final statistics
        POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, ctx.server_rank(s), nullptr, &msg,
                                                comm::DeadlineFromNow(), "a server's statistics"));
      } while (!(msg.has_server_stats() && msg.server_stats().final()));
      server_stats.push_back(msg.server_stats());
    }
  }
  // Release the workers.
  MPI_Request from_worker = MPI_REQUEST_NULL;
  for (int w = 0; w < W; ++w) {
    proto::ControlMessage cmd;
    bool send_params = ctx.servers == 0 && w == 0;
    if (send_params)
      POLIS_MPI_CHECK(MPI_Irecv(params.data(), static_cast<int>(params.size()), MPI_FLOAT,
                                ctx.worker_rank(0), comm::kTagFinalParams, ctx.data, &from_worker));
    cmd.mutable_server_command()->set_kind(send_params ? proto::ServerCommand::SEND_PARAMETERS_AND_STOP
                                                       : proto::ServerCommand::STOP);
    POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.worker_rank(w), cmd));
  }
  if (ctx.servers == 0)
    POLIS_RETURN_IF_ERROR(comm::WaitAll(1, &from_worker, comm::DeadlineFromNow(),
                                        [] { return std::string("final parameters from worker 0"); }));
  const std::string final_sha = Sha256Hex(std::string_view(reinterpret_cast<const char*>(params.data()),
                                                           sizeof(float) * params.size()));
  if (final_sha != totals[E - 1].params_sha256)
    return InternalError("the gathered parameters differ from those the workers evaluated");

  TrainedRun run;
  run.params = std::move(params);
  run.history = history;
  run.train_seconds = train_seconds;
  const json& last = history.back();
  const char* kMetric = regression ? "test_mae" : "test_accuracy";
  json& result = run.result;
  result = {{"job", spec.name()},
            {kMetric, last[kMetric]},
            {"test_loss", last["test_loss"]},
            {"train_loss", last["train_loss"]},
            {"epochs", E},
            {"train_seconds", train_seconds},
            {"images_per_second", samples_done / train_seconds},
            {"workers", W},
            {"servers", ctx.servers},
            {"sync", proto::SyncSpec::Mode_Name(spec.sync().mode())},
            {"consistency", proto::SyncSpec::Consistency_Name(spec.sync().consistency())},
            {"last_checkpoint", last_checkpoint},
            {"batch_size_per_worker", spec.training().batch_size()},
            {"parameters", ctx.model.parameter_count()},
            {"restarts", env::RestartCount()},
            {"restart_cause", env::RestartCause()},
            {"history", history}};
  if (!server_stats.empty()) {
    json stats = json::array();
    int64_t max_staleness = 0;
    for (const auto& st : server_stats) {
      stats.push_back({{"server", st.server()}, {"updates", st.updates()},
                       {"max_staleness", st.max_staleness()}, {"held_replies", st.held_replies()}});
      max_staleness = std::max(max_staleness, st.max_staleness());
    }
    result["server_stats"] = stats;
    result["max_staleness_observed"] = max_staleness;
  }
  if (regression) {
    for (const char* m : {"test_rmse", "test_mape", "test_smape"}) result[m] = last[m];
    const json baselines = dataset->Baselines();
    for (const auto& [k, v] : baselines.items()) result[k] = v;
    result["windows_per_second"] = result["images_per_second"];
    result.erase("images_per_second");
  }
  state = "publishing";
  publish();
  Status published = [&]() -> Status {
    POLIS_ASSIGN_OR_RETURN(ModelArtifact artifact, BuildArtifact(ctx, *dataset, run));
    return VerifyAndPublish(ctx, *dataset, std::move(artifact), std::move(run));
  }();
  state = published.ok() ? "done" : "failed";
  publish();
  return published;
}

}  // namespace polis::coordinator
