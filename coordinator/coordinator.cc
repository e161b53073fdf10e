#include "coordinator/coordinator.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <google/protobuf/text_format.h>
#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/checkpoint_transfer.h"
#include "common/trace/trace.h"
#include "common/env.h"
#include "common/comm/key_ranges.h"
#include "common/comm/control.h"
#include "common/comm/wire_checks.h"
#include "common/data/idx.h"
#include "common/data/dataset.h"
#include "common/data/remote_shards.h"
#include "common/data/shard_plan.h"
#include "common/early_stopping.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/host_stats.h"
#include "common/http/http_client.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/privacy/dp_plan.h"
#include "common/privacy/secagg_session.h"
#include "coordinator/host_table.h"
#include "coordinator/monitor.h"
#include "coordinator/publish.h"
#include "coordinator/stall_warning.h"
#include "polis_config.h"

namespace polis::coordinator {
namespace {

using Seconds = std::chrono::duration<double>;
using json = nlohmann::json;

// Wall-clock time as Unix seconds (metrics rows: when an epoch ended).
double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

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
  proto::EpochReport sum;  // training figures
  EvalResult eval;         // the per-epoch evaluation (validation, or test)
  std::string params_sha256;
  bool replicas_identical = true;
};

void Add(proto::EpochReport* a, const proto::EpochReport& b) {
  a->set_train_samples(a->train_samples() + b.train_samples());
  a->set_train_loss_sum(a->train_loss_sum() + b.train_loss_sum());
  a->set_train_correct(a->train_correct() + b.train_correct());
  a->set_compute_seconds(a->compute_seconds() + b.compute_seconds());
  a->set_comm_seconds(a->comm_seconds() + b.comm_seconds());
  a->set_steps(std::max(a->steps(), b.steps()));
}

// An evaluation's figures as metrics.jsonl / result.json name them, with
// `prefix` "val_" or "test_".
void PutEvaluation(const EvalResult& ev, bool regression, const std::string& prefix, json* row) {
  (*row)[prefix + "loss"] = ev.loss();
  (*row)[prefix + "samples"] = ev.samples;
  if (!regression) {
    (*row)[prefix + "accuracy"] = ev.accuracy();
    return;
  }
  (*row)[prefix + "mae"] = ev.mae();
  (*row)[prefix + "rmse"] = ev.rmse();
  (*row)[prefix + "mape"] = ev.mape();
  (*row)[prefix + "smape"] = ev.smape();
}

// A classifier's final test evaluation, per class.
void PutPerClass(const EvalResult& ev, json* result) {
  const std::vector<double> per_class = ev.PerClassAccuracy();
  const size_t k = per_class.size();
  json matrix = json::array();
  for (size_t c = 0; c < k; ++c)
    matrix.push_back(std::vector<int64_t>(ev.confusion.begin() + c * k, ev.confusion.begin() + (c + 1) * k));
  (*result)["per_class_accuracy"] = per_class;
  (*result)["confusion_matrix"] = matrix;
}

// The epoch-end checkpoint of `epoch` (0-based) under the run directory,
// looked up on disk (a resumed run's earlier epochs); "" if none is left.
std::string FindEpochCheckpoint(const std::string& run_dir, int epoch) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(run_dir + "/checkpoints", ec)) {
    auto m = ReadManifest(e.path().string());
    if (m.ok() && m->epoch_complete && m->epoch == epoch) return e.path().string();
  }
  return "";
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
  double last_compute = 0, last_comm = 0, last_wait = 0;  // the last report's window
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

// A worker's grants, in the order granted, split after its first `count`
// positions: those it trained (appended to *trained) and the rest (*pending).
void SplitGrants(const std::vector<Range>& grants, int64_t count, std::vector<Range>* trained,
                 std::vector<Range>* pending) {
  for (const Range& g : grants) {
    const int64_t take = std::clamp<int64_t>(count, 0, g.end - g.begin);
    if (take > 0) trained->push_back({g.begin, g.begin + take});
    if (g.begin + take < g.end) pending->push_back({g.begin + take, g.end});
    count -= take;
  }
}

// The coordinator's state and its parts: start-up (resume, monitor, files),
// waiting for messages (stop requests, heartbeats, monitor commands), one
// handler per message (shards, progress, epoch reports, checkpoints, server
// statistics), the status document, and the end of the job (gathering the
// parameters, result.json, publishing through coordinator/publish.h).
class Coordinator {
 public:
  Coordinator(const RoleContext& ctx, const CoordinatorOptions& options)
      : ctx_(ctx), options_(options), spec_(ctx.job.spec), E_(spec_.training().epochs()), W_(ctx.workers),
        worker_epoch_(W_, 0), workers_view_(W_), servers_view_(ctx.servers), totals_(E_) {}

  // dataset.source COORDINATOR, once training has ended or stopped: every
  // worker's record requests are answered until its goodbye
  // (RecordRequest.leaving), then every answer has left; so no worker waits
  // for records that will never come, and no send for one that has gone.
  Status FinishRecords() {
    if (!records_) return Status::Ok();
    const auto deadline = comm::DeadlineFromNow();
    comm::Backoff backoff;
    while (true) {
      std::string waiting;
      for (int w = 0; w < W_; ++w)
        if (!records_->Left(ctx_.worker_rank(w)))
          waiting += (waiting.empty() ? "" : ", ") + ctx_.RankName(ctx_.worker_rank(w));
      if (waiting.empty()) break;
      POLIS_RETURN_IF_ERROR(records_->Progress());
      int from = -1;
      proto::ControlMessage msg;
      Status st = comm::TryRecvControl(ctx_.ctrl, comm::kAnySource, &from, &msg);
      if (st.code() == Code::kNotFound) {
        if (comm::Clock::now() > deadline)
          return Timeout("no goodbye for {} s from {} (dataset.source COORDINATOR)", env::TimeoutSeconds(), waiting);
        backoff.Pause();
        continue;
      }
      POLIS_RETURN_IF_ERROR(st);
      backoff.Reset();
      if (msg.has_fatal_error()) return RemoteError("{} failed: {}", ctx_.RankName(from), msg.fatal_error().message());
      // Progress, reports and statistics of ranks that are ending: no longer read.
      if (!msg.has_record_request()) continue;
      POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(msg, from, limits_));
      POLIS_RETURN_IF_ERROR(OnRecordRequest(from, msg.record_request()));
    }
    return records_->Flush(comm::DeadlineFromNow());
  }

  Status Run() {
    POLIS_RETURN_IF_ERROR(Start());
    while (epochs_done_ < E_ && !stopped_early_) {
      if (g_stop_requested && !stopping_) POLIS_RETURN_IF_ERROR(BeginStop());
      int from = -1;
      proto::ControlMessage msg;
      Status st = WaitForMessage(&from, &msg);
      if (st.code() == Code::kNotFound) continue;  // a stop request to act on
      POLIS_RETURN_IF_ERROR(st);
      bool checkpoint_done = false;
      POLIS_RETURN_IF_ERROR(Handle(from, msg, &checkpoint_done));
      // A stop ends at its checkpoint; one taken at an epoch's end waits
      // for that epoch's reports too, so its row is in metrics.jsonl (the
      // resume starts after that epoch and would never write it).
      if (stopping_ && checkpoint_done && last_checkpoint_stops_) stop_after_rows_ = last_checkpoint_epoch_end_ + 1;
      if (stopping_ && stop_after_rows_ >= 0 && epochs_done_ >= stop_after_rows_) break;
    }
    train_seconds_ = Seconds(comm::Clock::now() - start_).count();
    if (stopping_) return FinishStopped();
    return FinishTrained();
  }

 private:
  // ---- start-up ------------------------------------------------------------

  Status Start() {
    POLIS_ASSIGN_OR_RETURN(dataset_, data::OpenJobDataset(spec_));
    if (spec_.dataset().source() == proto::DatasetSpec::COORDINATOR)
      records_ = std::make_unique<data::RecordServer>(ctx_.data);
    regression_ = dataset_->task() == data::Task::kRegression;
    N_ = dataset_->size(data::Part::kTrain);
    validation_ = dataset_->size(data::Part::kValidation) > 0;
    if (spec_.training().has_early_stopping())
      early_ = std::make_unique<EarlyStopping>(spec_.training().early_stopping());
    planner_ = std::make_unique<data::ShardPlanner>(N_, ShardSize(spec_), spec_.training().batch_size(), W_);
    POLIS_ASSIGN_OR_RETURN(dp_, privacy::MakeDpPlan(spec_, W_, N_, ctx_.privacy_key));
    limits_ = {E_, N_, W_, ctx_.servers, ctx_.model.parameter_count(),
               nn::ShapeElements(ctx_.model.output_shape())};
    if (!ctx_.resume_manifest.empty()) POLIS_RETURN_IF_ERROR(ResumePlan());
    std::fill(worker_epoch_.begin(), worker_epoch_.end(), start_epoch_);
    epochs_done_ = start_epoch_;
    // SIGTERM (scancel, a time limit, polisctl stop): checkpoint, then stop.
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    POLIS_RETURN_IF_ERROR(MakeDirectories(ctx_.run_dir));
    POLIS_RETURN_IF_ERROR(StartMonitor());
    metrics_.open(ctx_.run_dir + "/metrics.jsonl", std::ios::app);
    std::printf("polis: job %s: %d worker(s), %d server(s), %lld training %s, %s, %d epoch(s), "
                "batch %d per worker, %lld parameters\n",
                spec_.name().c_str(), W_, ctx_.servers, static_cast<long long>(N_),
                regression_ ? "windows" : "images",
                validation_ ? fmt::format("{} held out for validation",
                                          dataset_->size(data::Part::kValidation)).c_str()
                            : "no validation split (epochs are evaluated on the test set)",
                E_, spec_.training().batch_size(), static_cast<long long>(ctx_.model.parameter_count()));
    for (const std::string& line : data::ReportLines(dataset_->Report()))
      std::printf("polis: data: %s\n", line.c_str());
    if (dp_)
      std::printf("polis: DP-SGD: epsilon %.3g at delta %g after the %lld planned steps%s; noise multiplier "
                  "%.4f, clip norm %g, Poisson sampling rate %.5f (expected %lld examples a step)\n",
                  dp_->EpsilonAfter(dp_->planned_steps), dp_->delta, static_cast<long long>(dp_->planned_steps),
                  dp_->target_epsilon > 0 ? fmt::format(" (target {:g})", dp_->target_epsilon).c_str() : "",
                  dp_->sigma, dp_->clip, dp_->q, static_cast<long long>(dp_->expected_batch));
    std::fflush(stdout);
    start_ = comm::Clock::now();
    last_print_ = start_;
    last_publish_ = start_ - std::chrono::seconds(1);
    last_heartbeat_check_ = start_;
    stall_ = StallWarning(env::StallWarnSeconds(), start_);
    for (auto& v : workers_view_) v.last_seen = v.last_rate_at = start_;
    for (auto& v : servers_view_) v.last_seen = start_;
    last_checkpoint_ = ctx_.resume_manifest;
    google::protobuf::TextFormat::PrintToString(spec_, &job_text_);
    model_sha256_ = ModelLayoutSha256(ctx_.model);
    if (start_epoch_ > 0) {
      // Earlier epochs' rows, so result.json tells the whole story: one per
      // epoch, the last written (an attempt that failed after an epoch's row
      // and before its checkpoint wrote that epoch twice).
      std::ifstream old(ctx_.run_dir + "/metrics.jsonl");
      std::string line;
      std::map<int, json> rows;
      while (std::getline(old, line)) {
        auto row = json::parse(line, nullptr, false);
        if (!row.is_discarded() && row.is_object() && row.value("epoch", 0) >= 1 &&
            row.value("epoch", 0) <= start_epoch_)
          rows[row.value("epoch", 0)] = row;
      }
      for (auto& [epoch, row] : rows) history_.push_back(std::move(row));
      // The early-stopping rule picks up where it was, and pruning goes on
      // sparing the best epoch's checkpoint.
      if (early_)
        for (const json& row : history_) early_->Observe(row.value("epoch", 0), row.value(early_->metric(), NAN));
      if (spec_.training().restore_best() && early_ && early_->best_epoch() > 0)
        RememberEpochCheckpoint(early_->best_epoch() - 1);
    }
    return Status::Ok();
  }

  // The shard plan continues where the checkpoint left it.
  Status ResumePlan() {
    POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(ctx_.resume_manifest));
    start_epoch_ = m.epoch + (m.epoch_complete ? 1 : 0);
    NoteCheckpoint(m, ManifestTime(ctx_.resume_manifest));
    if (!m.epoch_complete) {
      resumed_epoch_ = m.epoch;
      resumed_consumed_ = m.consumed;
      POLIS_RETURN_IF_ERROR(CheckPositions(m, N_));
      std::vector<Range> handed = m.consumed;
      if (m.workers == W_) {
        // Each worker first gets back what it held: the batches after the
        // checkpoint are the uninterrupted run's.
        resumed_pending_ = m.pending;
        for (const auto& p : m.pending) handed.insert(handed.end(), p.begin(), p.end());
      }
      planner_->SetRemaining(m.epoch, Complement(MergeRanges(handed), N_));
    }
    int64_t done = 0;
    for (const auto& r : m.consumed) done += r.end - r.begin;
    std::printf("polis: resuming from %s (step %lld, epoch %d%s, %lld of its samples done; it ran "
                "with %d worker(s) and %d server(s))\n",
                m.dir.c_str(), static_cast<long long>(m.step), m.epoch + 1, m.epoch_complete ? " complete" : "",
                static_cast<long long>(m.epoch_complete ? N_ : done), m.workers, m.servers);
    return Status::Ok();
  }

  // The monitoring API (GET /api/status, /metrics, the dashboard), and
  // where tools find it: <run-dir>/coordinator.json.
  Status StartMonitor() {
    Monitor::Options mo;
    mo.listen = options_.monitor_listen;
    mo.tls_cert_file = options_.monitor_tls_cert;
    mo.tls_key_file = options_.monitor_tls_key;
    mo.plain_listen = options_.monitor_plain_listen;
    mo.token = !env::MonitorToken().empty()
                   ? env::MonitorToken()
                   : Sha256Hex(fmt::format("{}-{}-{}", getpid(), ctx_.run_dir,
                                           comm::Clock::now().time_since_epoch().count()));
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx_.run_dir + "/monitor.token", mo.token + "\n"));
    chmod((ctx_.run_dir + "/monitor.token").c_str(), 0600);
    if (!options_.monitor_listen.empty()) {
      auto m = Monitor::Start(mo);
      if (!m.ok()) return m.status().WithContext("starting the monitoring API");
      monitor_ = std::move(*m);
    }
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    host_ = host;
    // Emulated hosts share one hostname: a placed job names its own.
    json info = {{"pid", getpid()}, {"host", RankHost(0)},
                 {"job", spec_.name()}, {"run_dir", ctx_.run_dir},
                 {"started_at", UtcTimestamp()}, {"workers", W_}, {"servers", ctx_.servers},
                 {"address", monitor_ ? monitor_->address() : ""}, {"placement", PlacementJson()}};
    if (monitor_ && !monitor_->plain_address().empty()) info["plain_address"] = monitor_->plain_address();
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx_.run_dir + "/coordinator.json", info.dump(2) + "\n"));
    if (monitor_)
      std::printf("polis: monitoring at %s (polisctl status --run-dir %s)\n", monitor_->address().c_str(),
                  ctx_.run_dir.c_str());
    return Status::Ok();
  }

  // The host of rank r: its placement, or on one host the coordinator's.
  std::string RankHost(int r) const {
    return r >= 0 && r < static_cast<int>(ctx_.placement.size()) ? ctx_.placement[r].host : host_;
  }

  // Where each rank runs (polis-train --hosts); [] on one host.
  json PlacementJson() const {
    json out = json::array();
    for (const auto& p : ctx_.placement)
      out.push_back({{"rank", p.rank}, {"role", p.role}, {"host", p.host}, {"local_rank", p.local_rank}});
    return out;
  }

  // ---- waiting -------------------------------------------------------------

  Status BeginStop() {
    stopping_ = true;
    state_ = "stopping";
    std::printf("polis: stop requested: taking a checkpoint\n");
    std::fflush(stdout);
    return RequestCheckpoint(ctx_, /*then_stop=*/true);
  }

  // The next control message from any rank. NotFound: a stop was requested
  // meanwhile; Timeout: a rank the job waits on is silent past the
  // heartbeat deadline, or no message came within POLIS_TIMEOUT_S (naming
  // who is blamed). Between polls it checks heartbeats, refreshes the status
  // document and takes the monitor's commands.
  Status WaitForMessage(int* from, proto::ControlMessage* msg) {
    comm::Backoff backoff;
    const auto deadline = comm::DeadlineFromNow();
    while (true) {
      if (records_) POLIS_RETURN_IF_ERROR(records_->Progress());
      Status st = comm::TryRecvControl(ctx_.ctrl, comm::kAnySource, from, msg);
      if (st.code() != Code::kNotFound) return st;
      if (g_stop_requested && !stopping_ && !finishing_) return st;
      const auto now = comm::Clock::now();
      if (now - last_heartbeat_check_ > std::chrono::seconds(1)) {
        last_heartbeat_check_ = now;
        POLIS_RETURN_IF_ERROR(CheckHeartbeats());
        WarnIfStalled(now);
      }
      if (monitor_ && now - last_publish_ > std::chrono::milliseconds(500)) {
        last_publish_ = now;
        PublishStatus();
        for (Monitor::Command c : monitor_->TakeCommands()) {
          if (c == Monitor::Command::kStop) g_stop_requested = true;
          if (c == Monitor::Command::kCheckpoint) {
            POLIS_RETURN_IF_ERROR(RequestCheckpoint(ctx_, /*then_stop=*/false));
            state_ = "checkpointing";
          }
        }
        if (g_stop_requested && !stopping_ && !finishing_) return NotFound("stop requested");
      }
      if (comm::Clock::now() > deadline) return Stalled();
      backoff.Pause();
    }
  }

  Status CheckHeartbeats() {
    // After training, workers evaluate without heartbeats and servers wait
    // for pushes that will not come; POLIS_TIMEOUT_S still bounds the wait.
    if (finishing_) return Status::Ok();
    const std::string silent = SilentRanks(ctx_, workers_view_, servers_view_, worker_epoch_, E_);
    if (silent.empty()) return Status::Ok();
    state_ = "failed";
    PublishStatus();
    return Timeout("the job waits on {}, silent past the {} s heartbeat deadline (stopped, hung or dead); the "
                   "last complete checkpoint is {}",
                   silent, env::HeartbeatTimeoutSeconds(), last_checkpoint_.empty() ? "none" : last_checkpoint_);
  }

  // No message at all for POLIS_TIMEOUT_S: blame whom the servers wait for,
  // as they do; without servers, every worker that has not finished the epoch.
  Status Stalled() const {
    const std::set<int> blamed = BlamedWorkers(servers_view_);
    std::string who, held;
    for (int w = 0; w < W_; ++w) {
      if (worker_epoch_[w] > epochs_done_) continue;
      const std::string one = fmt::format("rank {} (worker, epoch {}, step {})", ctx_.worker_rank(w),
                                          worker_epoch_[w] + 1, workers_view_[w].step);
      std::string& list = blamed.empty() || blamed.count(ctx_.worker_rank(w)) ? who : held;
      list += (list.empty() ? "" : ", ") + one;
    }
    return Timeout("stalled in epoch {}: no word from {}{}", epochs_done_ + 1, who.empty() ? held : who,
                   who.empty() || held.empty() ? "" : "; " + held + " wait(s) for it");
  }

  // ---- messages ------------------------------------------------------------

  Status Handle(int from, const proto::ControlMessage& msg, bool* checkpoint_done) {
    POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(msg, from, limits_));
    if (msg.has_fatal_error())
      return RemoteError("{} failed: {}", ctx_.RankName(from), msg.fatal_error().message());
    if (msg.has_shard_saved()) return OnShardSaved(from, msg.shard_saved(), checkpoint_done);
    if (msg.has_server_stats() && from >= 1 && from <= ctx_.servers) {
      OnServerStats(from - 1, msg.server_stats());
      return Status::Ok();
    }
    const int w = from - 1 - ctx_.servers;
    if (w < 0 || w >= W_) return RemoteError("unexpected control message from rank {}", from);
    workers_view_[w].last_seen = comm::Clock::now();
    if (msg.has_shard_request()) return OnShardRequest(w, from, msg.shard_request().epoch());
    // dataset.source COORDINATOR: the records of a worker's batch.
    if (msg.has_record_request()) return OnRecordRequest(from, msg.record_request());
    // privacy.secure_aggregation: relayed to every worker once all are in;
    // the pair seeds are bound to the run id.
    if (msg.has_secagg_key())
      return key_relay_.OnKey(ctx_, w, msg.secagg_key(), std::filesystem::path(ctx_.run_dir).filename().string());
    if (msg.has_progress()) {
      OnProgress(w, msg.progress());
      return Status::Ok();
    }
    if (msg.has_epoch_report()) return OnEpochReport(w, from, msg.epoch_report());
    if (msg.has_final_evaluation() && finishing_) return OnFinalEvaluation(w, from, msg.final_evaluation());
    return RemoteError("rank {} sent an unexpected control message", from);
  }

  Status OnRecordRequest(int from, const proto::RecordRequest& req) {
    if (spec_.dataset().source() != proto::DatasetSpec::COORDINATOR)
      return RemoteError("{} asked for records, but the job's dataset.source is LOCAL", ctx_.RankName(from));
    if (req.leaving()) {
      records_->OnLeave(from);
      return Status::Ok();
    }
    return records_->Serve(*dataset_, req, from, ctx_.RankName(from));
  }

  // A shard report: a server's (all-reduce: every worker's; the lead
  // worker's names the replica). A named shard's bytes follow on the data
  // communicator and are written here: only the coordinator touches the run
  // directory. Once every report is in, the manifest makes it a checkpoint.
  Status OnShardSaved(int from, const proto::ShardSaved& ss, bool* done) {
    TRACE_SCOPE("checkpoint write", "step", ss.step());
    const std::string dir = ctx_.run_dir + "/checkpoints/" + CheckpointDirName(ss.step(), ss.epoch_complete());
    if (!ss.path().empty())
      POLIS_RETURN_IF_ERROR(ReceiveShard(ctx_.data, from, ss, ctx_.model.parameter_count(), dir,
                                         comm::DeadlineFromNow()));
    auto& list = saved_[{ss.step(), ss.epoch_complete()}];
    list.push_back(ss);
    if (static_cast<int>(list.size()) < (ctx_.servers > 0 ? ctx_.servers : W_)) return Status::Ok();
    std::vector<int64_t> worker_consumed;
    CheckpointManifest m;
    m.step = ss.step();
    m.epoch = ss.epoch();
    m.epoch_complete = ss.epoch_complete();
    m.workers = W_;
    m.servers = ctx_.servers;
    m.parameter_count = ctx_.model.parameter_count();
    m.job_sha256 = ctx_.job.sha256;
    m.job_text = job_text_;
    m.model_sha256 = model_sha256_;
    POLIS_RETURN_IF_ERROR(CollectSaved(list, W_, ctx_.servers > 0, &worker_consumed, &m.shards));
    if (!m.epoch_complete) {
      std::vector<Range> consumed = ss.epoch() == resumed_epoch_ ? resumed_consumed_ : std::vector<Range>{};
      auto& g = grants_[ss.epoch()];
      g.resize(W_);
      m.pending.resize(W_);
      for (int k = 0; k < W_; ++k) SplitGrants(g[k], worker_consumed[k], &consumed, &m.pending[k]);
      m.consumed = MergeRanges(consumed);
    } else {
      m.consumed = {{0, N_}};
    }
    POLIS_RETURN_IF_ERROR(WriteManifest(dir, m));
    if (m.epoch_complete) epoch_checkpoints_[m.epoch] = dir;
    PruneCheckpoints(ctx_.run_dir, spec_.training().keep_checkpoints(), BestCheckpoint());
    // With servers any checkpoint after a stop request will do; all-reduce
    // replicas stop only after the one they took to stop.
    last_checkpoint_stops_ =
        ctx_.servers > 0 || std::all_of(list.begin(), list.end(), [](const proto::ShardSaved& x) { return x.stop(); });
    saved_.erase({ss.step(), ss.epoch_complete()});
    last_checkpoint_ = dir;
    NoteCheckpoint(m, UnixSeconds());
    last_checkpoint_epoch_end_ = m.epoch_complete ? m.epoch : -1;
    if (state_ == "checkpointing") state_ = "running";
    POLIS_LOG(kInfo, kCoord, "checkpoint {} complete", dir);
    *done = true;
    return Status::Ok();
  }

  void OnServerStats(int s, const proto::ServerStats& stats) {
    ServerView& v = servers_view_[s];
    const auto now = comm::Clock::now();
    const double dt = Seconds(now - v.last_seen).count();
    if (dt > 0) v.updates_per_second = (stats.updates() - v.stats.updates()) / dt;
    v.stats = stats;
    v.last_seen = now;
    if (stats.has_host()) hosts_.Update(RankHost(ctx_.server_rank(s)), ctx_.server_rank(s), stats.host(), now);
  }

  Status OnShardRequest(int w, int from, int e) {
    if (e < 0 || e >= E_) return RemoteError("rank {} asked for a shard of epoch {}", from, e);
    Range r;
    if (e == resumed_epoch_ && w < static_cast<int>(resumed_pending_.size()) && !resumed_pending_[w].empty()) {
      r = resumed_pending_[w].front();
      resumed_pending_[w].erase(resumed_pending_[w].begin());
    } else {
      r = planner_->Next(e);
    }
    if (r.end > r.begin) {
      ++workers_view_[w].shards;
      auto& g = grants_[e];
      g.resize(W_);
      g[w].push_back(r);
    }
    proto::ControlMessage reply;
    auto* g = reply.mutable_shard_grant();
    g->set_epoch(e);
    g->set_begin(r.begin);
    g->set_end(r.end);
    return comm::SendControl(ctx_.ctrl, from, reply);
  }

  void OnProgress(int w, const proto::Progress& p) {
    WorkerView& v = workers_view_[w];
    const auto now = comm::Clock::now();
    if (v.epoch != p.epoch()) v.last_rate_samples = 0;
    const double dt = Seconds(now - v.last_rate_at).count();
    if (dt > 0 && p.samples() >= v.last_rate_samples) v.rate = (p.samples() - v.last_rate_samples) / dt;
    v.last_rate_at = now;
    if (p.compute_seconds() > 0 && p.samples() >= v.last_rate_samples)
      v.compute_rate = (p.samples() - v.last_rate_samples) / p.compute_seconds();
    v.last_rate_samples = p.samples();
    if (p.step() != v.step || p.epoch() != v.epoch) stall_.Progressed(now);
    v.last_compute = p.compute_seconds();
    v.last_comm = p.comm_seconds();
    v.last_wait = p.wait_seconds();
    v.epoch = p.epoch();
    v.step = p.step();
    v.samples = p.samples();
    v.loss = p.loss();
    v.compute += p.compute_seconds();
    v.wait += p.wait_seconds();
    v.comm += p.comm_seconds();
    last_loss_ = p.loss();
    have_progress_ = true;
    if (p.has_host()) hosts_.Update(RankHost(ctx_.worker_rank(w)), ctx_.worker_rank(w), p.host(), now);
    if (series_.size() >= 500) series_.erase(series_.begin());
    series_.push_back({{"t", Seconds(now - start_).count()}, {"loss", p.loss()}, {"samples_per_second", v.rate}});
    if (Seconds(now - last_print_).count() >= (options_.progress_bar ? 0.5 : 10.0)) {
      last_print_ = now;
      PrintProgress(p.epoch(), p.loss());
    }
  }

  void PrintProgress(int epoch, double loss) const {
    int64_t in_epoch = 0;
    for (const auto& v : workers_view_) in_epoch += v.epoch == epoch ? v.samples : 0;
    const double elapsed = Seconds(comm::Clock::now() - start_).count();
    const double done = samples_done_ + in_epoch;
    const double rate = done / elapsed;
    const double eta = (static_cast<double>(N_) * E_ - done) / std::max(rate, 1e-9);
    const int pct = static_cast<int>(100.0 * in_epoch / std::max<int64_t>(N_, 1));
    const std::string line = fmt::format("epoch {}/{} {:3}%  loss {:.4f}  {}/s {:.0f}  ETA {}{}", epoch + 1, E_, pct,
                                         loss, regression_ ? "samples" : "images", rate, Duration(eta),
                                         EpsilonText());
    if (options_.progress_bar) {
      const int bar = pct / 5;
      std::printf("\r[%s%s] %s   ", std::string(bar, '#').c_str(), std::string(20 - bar, '.').c_str(),
                  line.c_str());
    } else {
      std::printf("  %s\n", line.c_str());
    }
    std::fflush(stdout);
  }

  Status OnEpochReport(int w, int from, const proto::EpochReport& r) {
    const int e = r.epoch();
    if (e < 0 || e >= E_) return RemoteError("rank {} reported epoch {}", from, e);
    worker_epoch_[w] = e + 1;
    stall_.Progressed(comm::Clock::now());
    EpochTotals& t = totals_[e];
    Add(&t.sum, r);
    t.eval.Add(FromSums(r.eval()));
    t.worker_samples.resize(W_);
    t.worker_samples[w] = r.train_samples();
    if (t.reports == 0) t.params_sha256 = r.params_sha256();
    else if (r.params_sha256() != t.params_sha256) t.replicas_identical = false;
    if (++t.reports < W_) return Status::Ok();
    if (!t.replicas_identical) return InternalError("after epoch {} the workers hold different parameters", e + 1);
    json row = EpochRow(e);
    const bool stop = ApplyEarlyStopping(e, &row);
    metrics_ << row.dump() << "\n";
    metrics_.flush();
    history_.push_back(row);
    ++epochs_done_;
    if (early_ && e + 1 < E_) POLIS_RETURN_IF_ERROR(SendVerdict(e, stop));
    stopped_early_ = stop && e + 1 < E_;
    return Status::Ok();
  }

  // training.early_stopping: feeds epoch e's metric to the rule (its row
  // gets best_epoch); returns whether training stops here.
  bool ApplyEarlyStopping(int e, json* row) {
    if (!early_) return false;
    const double value = row->value(early_->metric(), NAN);
    early_->Observe(e + 1, value);
    (*row)["best_epoch"] = early_->best_epoch();
    if (!early_->ShouldStop() || e + 1 >= E_) return false;
    std::printf("polis: early stopping after epoch %d: %s has not improved on epoch %d's %.6g for %d epoch(s)\n",
                e + 1, early_->metric().c_str(), early_->best_epoch(), early_->best_value(),
                spec_.training().early_stopping().patience());
    std::fflush(stdout);
    return true;
  }

  Status SendVerdict(int e, bool stop) {
    proto::ControlMessage verdict;
    verdict.mutable_epoch_verdict()->set_epoch(e);
    verdict.mutable_epoch_verdict()->set_stop(stop);
    for (int w = 0; w < W_; ++w) POLIS_RETURN_IF_ERROR(comm::SendControl(ctx_.ctrl, ctx_.worker_rank(w), verdict));
    return Status::Ok();
  }

  // Looks up the epoch-end checkpoint of `epoch` on disk when this run has
  // not seen it written (it was written before a resume).
  void RememberEpochCheckpoint(int epoch) {
    if (epoch_checkpoints_.count(epoch)) return;
    const std::string dir = FindEpochCheckpoint(ctx_.run_dir, epoch);
    if (!dir.empty()) epoch_checkpoints_[epoch] = dir;
  }

  // training.restore_best: the checkpoint of the best epoch so far, spared
  // by pruning; "" otherwise.
  std::string BestCheckpoint() const {
    if (!spec_.training().restore_best() || !early_ || early_->best_epoch() == 0) return "";
    auto it = epoch_checkpoints_.find(early_->best_epoch() - 1);
    return it == epoch_checkpoints_.end() ? "" : it->second;
  }

  // Every worker's report of epoch e is in: print its line and make its row.
  json EpochRow(int e) {
    const auto& s = totals_[e].sum;
    samples_done_ += s.train_samples();
    const double elapsed = Seconds(comm::Clock::now() - start_).count();
    const double rate = samples_done_ / elapsed;
    const double eta = elapsed / (e + 1) * (E_ - e - 1);
    const double train_loss = s.train_loss_sum() / std::max<int64_t>(s.train_samples(), 1);
    const double train_acc = static_cast<double>(s.train_correct()) / std::max<int64_t>(s.train_samples(), 1);
    const EvalResult& ev = totals_[e].eval;
    // The per-epoch evaluation: of the validation split, or of the test set.
    const char* set = validation_ ? "val" : "test";
    if (options_.progress_bar) std::printf("\r%100s\r", "");
    if (regression_)
      std::printf("epoch %d/%d  loss %.4f  %s_loss %.4f  %s_mae %.2f  %s_rmse %.2f  "
                  "%s_mape %.1f%%  samples/s %.0f  elapsed %s  ETA %s%s\n",
                  e + 1, E_, train_loss, set, ev.loss(), set, ev.mae(), set, ev.rmse(), set, ev.mape(), rate,
                  Duration(elapsed).c_str(), Duration(eta).c_str(), EpsilonText(e + 1).c_str());
    else
      std::printf("epoch %d/%d  loss %.4f  train_acc %.4f  %s_acc %.4f  %s_loss %.4f  "
                  "images/s %.0f  elapsed %s  ETA %s%s\n",
                  e + 1, E_, train_loss, train_acc, set, ev.accuracy(), set, ev.loss(), rate,
                  Duration(elapsed).c_str(), Duration(eta).c_str(), EpsilonText(e + 1).c_str());
    std::fflush(stdout);
    json row = {{"epoch", e + 1},
                {"time", UnixSeconds()},
                {"train_loss", train_loss},
                {"train_accuracy", train_acc},
                {"train_samples", s.train_samples()},
                {"steps", s.steps()},
                {"elapsed_seconds", elapsed},
                {"images_per_second", rate},
                {"worker_compute_seconds", s.compute_seconds()},
                {"worker_comm_seconds", s.comm_seconds()},
                {"replicas_identical", totals_[e].replicas_identical},
                {"worker_train_samples", totals_[e].worker_samples}};
    PutEvaluation(ev, regression_, std::string(set) + "_", &row);
    if (regression_) row.erase("train_accuracy");
    if (dp_) row["epsilon"] = dp_->EpsilonAfter(DpStepsDone(e + 1));
    return row;
  }

  // ---- the status document -------------------------------------------------

  void PublishStatus() {
    if (!monitor_) return;
    if (auto own = host_sampler_.Sample()) hosts_.Update(RankHost(0), 0, *own, comm::Clock::now());
    monitor_->Publish(StatusDocument());
  }

  // Every host of the job with the ranks it carries and its figures.
  json HostsJson(comm::Clock::time_point now) const {
    std::vector<HostTable::Rank> ranks;
    for (int r = 0; r < ctx_.world; ++r) ranks.push_back({r, ctx_.RoleName(r), RankHost(r)});
    return hosts_.Json(ranks, now);
  }

  json StatusDocument() const {
    const auto now = comm::Clock::now();
    const double elapsed = Seconds(now - start_).count();
    int64_t in_epoch = 0;
    for (const auto& v : workers_view_) in_epoch += v.epoch == epochs_done_ ? v.samples : 0;
    const double done = samples_done_ + in_epoch;
    const double rate = elapsed > 0 ? done / elapsed : 0;
    double best = 0;
    for (const auto& v : workers_view_) best = std::max(best, v.compute_rate);
    const double stall_after = std::max(30.0, env::TimeoutSeconds() / 10.0);
    json wj = json::array(), stragglers = json::array(), stalled = json::array();
    const std::set<int> blamed = BlamedWorkers(servers_view_);
    for (int k = 0; k < W_; ++k) {
      const auto& v = workers_view_[k];
      const double age = Seconds(now - v.last_seen).count();
      // A straggler computes at under 2/3 of the fastest worker's rate (in
      // BSP everyone moves at the slowest's pace; compute time tells who).
      const bool straggler = W_ > 1 && v.compute_rate > 0 && best > 0 && v.compute_rate < best * 2.0 / 3.0;
      // Silent for long, and (with servers) one whose push a server is
      // waiting for: a worker that pushed and waits for the others' is held,
      // not stalled.
      const bool is_stalled = age > stall_after && (ctx_.servers == 0 || blamed.count(ctx_.worker_rank(k)) > 0);
      if (straggler) stragglers.push_back(ctx_.worker_rank(k));
      if (is_stalled) stalled.push_back(ctx_.worker_rank(k));
      wj.push_back({{"rank", ctx_.worker_rank(k)}, {"host", RankHost(ctx_.worker_rank(k))},
                    {"epoch", v.epoch + 1}, {"step", v.step}, {"shards_done", v.shards}, {"samples", v.samples},
                    {"samples_per_second", v.rate},
                    {"compute_samples_per_second", v.compute_rate}, {"loss", v.loss},
                    {"compute_seconds", v.compute}, {"comm_seconds", v.comm}, {"wait_seconds", v.wait},
                    {"clock", v.step}, {"last_heartbeat_age_seconds", age}, {"straggler", straggler}});
    }
    json sj = json::array();
    for (int k = 0; k < ctx_.servers; ++k) {
      const auto& v = servers_view_[k];
      const double age = Seconds(now - v.last_seen).count();
      if (age > stall_after) stalled.push_back(ctx_.server_rank(k));
      sj.push_back({{"rank", ctx_.server_rank(k)}, {"host", RankHost(ctx_.server_rank(k))},
                    {"key_range", {v.stats.key_begin(), v.stats.key_end()}},
                    {"bytes_in", v.stats.bytes_in()}, {"bytes_out", v.stats.bytes_out()},
                    {"updates", v.stats.updates()}, {"updates_per_second", v.updates_per_second},
                    {"max_staleness", v.stats.max_staleness()}, {"last_heartbeat_age_seconds", age}});
    }
    json hist = json::array();
    // Each epoch's evaluation: val_* with a validation split, else test_*;
    // accuracy for a classifier, the errors in the target's units for a
    // forecaster.
    const std::string set = validation_ ? "val_" : "test_";
    const std::vector<std::string> metrics =
        regression_ ? std::vector<std::string>{"mae", "rmse"} : std::vector<std::string>{"accuracy"};
    for (const auto& h : history_) {
      json row = {{"epoch", h["epoch"]}, {"train_loss", h["train_loss"]},
                  {"images_per_second", h["images_per_second"]}, {"samples_per_second", h["images_per_second"]},
                  {"elapsed_seconds", h["elapsed_seconds"]}};
      for (const std::string& m : metrics) row[set + m] = h.value(set + m, 0.0);
      hist.push_back(std::move(row));
    }
    // The latest epoch's headline metric: accuracy (0 until the first
    // epoch, as before) or MAE (null until then); the other one is null.
    const std::string headline = regression_ ? "mae" : "accuracy";
    const json latest = history_.empty() ? (regression_ ? json(nullptr) : json(0.0))
                                         : json(history_.back().value(set + headline, 0.0));
    const double total = static_cast<double>(N_) * E_;
    return {{"job", spec_.name()}, {"state", state_}, {"epoch", std::min(epochs_done_ + 1, E_)}, {"epochs", E_},
            {"task", regression_ ? "regression" : "classification"},
            {"step", have_progress_ ? json(workers_view_[0].step) : json(nullptr)},
            {"loss", have_progress_ ? json(last_loss_) : json(nullptr)},
            {"accuracy", regression_ ? json(nullptr) : latest},
            {"mae", regression_ ? latest : json(nullptr)},
            {"samples_per_second", rate},
            {"eta_seconds", rate > 0 ? std::max(0.0, (total - done) / rate) : -1.0},
            {"elapsed_seconds", elapsed}, {"history", hist}, {"series", series_}, {"workers", wj},
            {"servers", sj}, {"stragglers", stragglers}, {"stalled", stalled},
            {"sync", proto::SyncSpec::Mode_Name(spec_.sync().mode())}, {"placement", PlacementJson()},
            {"hosts", HostsJson(now)},
            {"last_checkpoint", last_checkpoint_}, {"checkpoint", CheckpointJson()},
            {"run_dir", ctx_.run_dir}, {"host", RankHost(0)},
            {"restarts", env::RestartCount()},
            {"restart_cause", env::RestartCause()},
            {"privacy", PrivacyJson()}};
  }

  // ---- DP-SGD accounting ----------------------------------------------------

  // Global steps taken: every step of the finished epochs, and the furthest
  // step a worker has reported since.
  int64_t DpStepsDone(int epochs_done = 0) const {
    int64_t steps = static_cast<int64_t>(std::max(epochs_done_, epochs_done)) * dp_->steps_per_epoch;
    for (const auto& v : workers_view_) steps = std::max(steps, v.step);
    return std::min(steps, dp_->planned_steps);
  }

  // "  ε 1.23" for the progress and epoch lines (the latter once
  // `epochs_done` epochs are); "" without DP-SGD.
  std::string EpsilonText(int epochs_done = 0) const {
    return dp_ ? fmt::format("  ε {:.3g}", dp_->EpsilonAfter(DpStepsDone(epochs_done))) : std::string();
  }

  // What the accountant says so far (null without DP-SGD): /api/status,
  // /metrics, result.json and the artifact.
  json PrivacyJson() const {
    if (!dp_) return nullptr;
    return dp_->Record(DpStepsDone(), spec_.privacy().secure_aggregation());
  }

  // How far the job is past its newest complete checkpoint, in the units of
  // its schedule: steps (training.checkpoint_every_steps) and epochs
  // (training.checkpoint_epochs). Before the first one, since the start.
  json CheckpointJson() const {
    int64_t step = 0;
    for (const auto& v : workers_view_) step = std::max(step, v.step);
    const auto& t = spec_.training();
    return {{"every_steps", t.checkpoint_every_steps()},
            {"steps_since", std::max<int64_t>(0, step - checkpoint_step_)},
            {"at_epoch_end", t.checkpoint_epochs()},
            {"epochs_since", std::max(0, epochs_done_ - checkpoint_epochs_)},
            {"completed_at", checkpoint_time_ > 0 ? json(checkpoint_time_) : json(nullptr)}};
  }

  // The newest complete checkpoint: its step, the epochs it covers, and
  // when it was completed (Unix seconds; 0 = unknown).
  void NoteCheckpoint(const CheckpointManifest& m, double unix_time) {
    checkpoint_step_ = m.step;
    checkpoint_epochs_ = m.epoch + (m.epoch_complete ? 1 : 0);
    checkpoint_time_ = unix_time;
  }
  static double ManifestTime(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 ? static_cast<double>(st.st_mtime) : 0;
  }

  // POLIS_STALL_WARN_S: while no worker completes a step, one line every
  // interval naming whom the job waits on and what each last reported.
  void WarnIfStalled(comm::Clock::time_point now) {
    if (finishing_) return;
    const auto stalled = stall_.Due(now);
    if (!stalled) return;
    std::vector<RankActivity> waiting, held;
    const std::set<int> blamed = BlamedWorkers(servers_view_);
    for (int k = 0; k < W_; ++k) {
      if (worker_epoch_[k] > epochs_done_) continue;  // done with the epoch: waits for the others
      const auto& v = workers_view_[k];
      const std::string last = LastWindowSummary(v.last_compute, v.last_comm, v.last_wait);
      RankActivity a{ctx_.RankName(ctx_.worker_rank(k)),
                     fmt::format("epoch {}, step {}, last message {:.0f} s ago{}", v.epoch + 1, v.step,
                                 Seconds(now - v.last_seen).count(), last.empty() ? "" : ", " + last)};
      // Servers say whose push they wait for; in all-reduce, a worker whose
      // last window went mostly to communication had arrived and waits.
      const bool arrived = ctx_.servers > 0 ? !blamed.empty() && !blamed.count(ctx_.worker_rank(k))
                                            : v.last_comm > v.last_compute + v.last_wait;
      (arrived ? held : waiting).push_back(std::move(a));
    }
    if (waiting.empty()) waiting.swap(held);
    for (int s = 0; s < ctx_.servers; ++s) {
      const double age = Seconds(now - servers_view_[s].last_seen).count();
      if (age >= *stalled)
        waiting.push_back({ctx_.RankName(ctx_.server_rank(s)),
                           fmt::format("update {}, last report {:.0f} s ago", servers_view_[s].stats.updates(), age)});
    }
    POLIS_LOG(kWarn, kCoord, "{}", StallWarningLine(*stalled, waiting, held));
  }

  // ---- the end -------------------------------------------------------------

  // Server s's final statistics, sent when it reads its last command.
  // Heartbeats may come first, and a checkpoint the server began before
  // (checkpoint_every_steps, an epoch's end): it is received and written,
  // so no server waits on a send the coordinator would never take.
  Status AwaitFinalStats(int s) {
    proto::ControlMessage msg;
    do {
      POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx_.ctrl, ctx_.server_rank(s), nullptr, &msg, comm::DeadlineFromNow(),
                                              "a server's statistics"));
      bool checkpoint_done = false;
      if (msg.has_shard_saved()) {
        POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(msg, ctx_.server_rank(s), limits_));
        POLIS_RETURN_IF_ERROR(OnShardSaved(ctx_.server_rank(s), msg.shard_saved(), &checkpoint_done));
      }
    } while (!(msg.has_server_stats() && msg.server_stats().final()));
    server_stats_.push_back(msg.server_stats());
    return Status::Ok();
  }

  // Stopped by a signal: everyone leaves; the checkpoint is what remains.
  Status FinishStopped() {
    for (int r = 1; r < ctx_.world; ++r) {
      proto::ControlMessage cmd;
      cmd.mutable_server_command()->set_kind(proto::ServerCommand::STOP);
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx_.ctrl, r, cmd));
    }
    for (int s = 0; s < ctx_.servers; ++s) POLIS_RETURN_IF_ERROR(AwaitFinalStats(s));
    // A checkpoint some servers began after the stop and others never will:
    // its shard files go (it has no manifest; a resume would skip it).
    for (const auto& [key, list] : saved_) {
      std::error_code ec;
      std::filesystem::remove_all(ctx_.run_dir + "/checkpoints/" + CheckpointDirName(key.first, key.second), ec);
    }
    saved_.clear();
    json result = {{"job", spec_.name()}, {"state", "stopped"}, {"checkpoint", last_checkpoint_},
                   {"restarts", env::RestartCount()}, {"restart_cause", env::RestartCause()},
                   {"epochs_done", epochs_done_}, {"train_seconds", train_seconds_}, {"history", history_}};
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx_.run_dir + "/result.json", result.dump(2) + "\n"));
    std::printf("polis: stopped; %s\n", last_checkpoint_.empty()
                                            ? "no checkpoint was taken"
                                            : ("resume with: polis-run --resume " + ctx_.run_dir).c_str());
    std::fflush(stdout);
    return Cancelled();
  }

  // The final parameters: from the servers' ranges, or (all-reduce) from
  // worker 0, whose replica equals every other's. Releases every rank.
  StatusOr<std::vector<float>> GatherParameters() {
    std::vector<float> params(ctx_.model.parameter_count());
    if (ctx_.servers > 0) {
      const auto ranges = comm::PartitionByBytes(ctx_.model.parameter_count(), ctx_.servers);
      std::vector<comm::Request> reqs(ctx_.servers);
      for (int s = 0; s < ctx_.servers; ++s) {
        POLIS_RETURN_IF_ERROR(ctx_.data->Irecv(params.data() + ranges[s].begin, sizeof(float) * ranges[s].size(),
                                               ctx_.server_rank(s), comm::kTagFinalParams, &reqs[s]));
        proto::ControlMessage cmd;
        cmd.mutable_server_command()->set_kind(proto::ServerCommand::SEND_PARAMETERS_AND_STOP);
        POLIS_RETURN_IF_ERROR(comm::SendControl(ctx_.ctrl, ctx_.server_rank(s), cmd));
      }
      POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, reqs.data(), ctx_.servers, comm::DeadlineFromNow(),
                                          [] { return std::string("final parameters from the servers"); }));
      for (int s = 0; s < ctx_.servers; ++s) POLIS_RETURN_IF_ERROR(AwaitFinalStats(s));
    }
    comm::Request from_worker;
    for (int w = 0; w < W_; ++w) {
      proto::ControlMessage cmd;
      const bool send_params = ctx_.servers == 0 && w == 0;
      if (send_params)
        POLIS_RETURN_IF_ERROR(ctx_.data->Irecv(params.data(), sizeof(float) * params.size(), ctx_.worker_rank(0),
                                               comm::kTagFinalParams, &from_worker));
      cmd.mutable_server_command()->set_kind(send_params ? proto::ServerCommand::SEND_PARAMETERS_AND_STOP
                                                         : proto::ServerCommand::STOP);
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx_.ctrl, ctx_.worker_rank(w), cmd));
    }
    if (ctx_.servers == 0)
      POLIS_RETURN_IF_ERROR(comm::WaitAll(ctx_.data, &from_worker, 1, comm::DeadlineFromNow(),
                                          [] { return std::string("final parameters from worker 0"); }));
    if (!published_checkpoint_.empty()) params = std::move(best_params_);  // training.restore_best
    const std::string published_sha = Sha256Hex(
        std::string_view(reinterpret_cast<const char*>(params.data()), sizeof(float) * params.size()));
    if (published_sha != final_sha_)
      return InternalError("the parameters to publish differ from those the workers evaluated");
    return params;
  }

  // The history row of the epoch whose parameters are published.
  const json& PublishedRow() const {
    const int epoch = PublishedEpoch();
    for (const json& row : history_)
      if (row.value("epoch", 0) == epoch) return row;
    return history_.back();
  }
  int PublishedEpoch() const {
    return spec_.training().restore_best() && early_ && early_->best_epoch() > 0 ? early_->best_epoch()
                                                                                 : epochs_done_;
  }

  // The published model's figures: the final test evaluation, and the
  // training loss and number of its epoch (BuildArtifact's metrics).
  json PublishedMetrics() const {
    json m = {{"epoch", PublishedEpoch()}, {"train_loss", PublishedRow()["train_loss"]}};
    PutEvaluation(final_, regression_, "test_", &m);
    return m;
  }

  json ResultDocument() const {
    json result = PublishedMetrics();
    result.erase("epoch");
    if (!regression_) PutPerClass(final_, &result);
    result.update(json{{"job", spec_.name()},
                   {"selection", validation_ ? "validation" : "test"},
                   {"data_report", data::ReportLines(dataset_->Report())},
                   {"stopped_early", stopped_early_},
                   {"published_epoch", PublishedEpoch()},
                   {"epochs", epochs_done_},
                   {"epochs_planned", E_},
                   {"train_seconds", train_seconds_},
                   {"images_per_second", samples_done_ / train_seconds_},
                   {"workers", W_},
                   {"servers", ctx_.servers},
                   {"sync", proto::SyncSpec::Mode_Name(spec_.sync().mode())},
                   {"consistency", proto::SyncSpec::Consistency_Name(spec_.sync().consistency())},
                   {"last_checkpoint", last_checkpoint_},
                   {"batch_size_per_worker", spec_.training().batch_size()},
                   {"parameters", ctx_.model.parameter_count()},
                   {"restarts", env::RestartCount()},
                   {"restart_cause", env::RestartCause()},
                   {"history", history_}});
    if (early_) result["best_epoch"] = early_->best_epoch();
    if (dp_) result["privacy"] = PrivacyJson();
    if (!server_stats_.empty()) {
      json stats = json::array();
      int64_t max_staleness = 0;
      for (const auto& st : server_stats_) {
        stats.push_back({{"server", st.server()}, {"updates", st.updates()},
                         {"max_staleness", st.max_staleness()}, {"held_replies", st.held_replies()},
                         {"bytes_in", st.bytes_in()}, {"bytes_out", st.bytes_out()}});
        max_staleness = std::max(max_staleness, st.max_staleness());
      }
      result["server_stats"] = stats;
      result["max_staleness_observed"] = max_staleness;
    }
    if (regression_) {
      // Named: items() of a temporary would outlive it (dangling keys).
      const json baselines = dataset_->Baselines();
      for (const auto& [k, v] : baselines.items()) result[k] = v;
      result["windows_per_second"] = result["images_per_second"];
      result.erase("images_per_second");
    }
    return result;
  }

  // Training is over: the model to publish (training.restore_best: the best
  // epoch's checkpoint, once its manifest is in) is evaluated on the test
  // set, once, by every worker on its slice.
  Status EvaluateForPublishing() {
    finishing_ = true;
    state_ = "evaluating";
    if (spec_.training().restore_best()) {
      const int best = PublishedEpoch() - 1;
      RememberEpochCheckpoint(best);  // a resumed run's earlier epoch
      POLIS_RETURN_IF_ERROR(PumpMessagesUntil([&] { return epoch_checkpoints_.count(best) > 0; }));
      published_checkpoint_ = epoch_checkpoints_[best];
      POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(published_checkpoint_));
      POLIS_ASSIGN_OR_RETURN(FullState state, LoadFullState(m));
      best_params_ = std::move(state.params);
    }
    proto::ControlMessage req;
    req.mutable_final_evaluation_request()->set_checkpoint(published_checkpoint_);
    for (int w = 0; w < W_; ++w) {
      POLIS_RETURN_IF_ERROR(comm::SendControl(ctx_.ctrl, ctx_.worker_rank(w), req));
      // The workers never open the run directory: the parameters follow.
      if (!published_checkpoint_.empty())
        POLIS_RETURN_IF_ERROR(SendParams(ctx_.data, ctx_.worker_rank(w), best_params_, comm::DeadlineFromNow()));
    }
    final_reported_.assign(W_, false);
    POLIS_RETURN_IF_ERROR(PumpMessagesUntil([&] { return final_reports_ == W_; }));
    std::printf("polis: final test evaluation of epoch %d%s: %s %.4f on %lld samples\n", PublishedEpoch(),
                published_checkpoint_.empty() ? "" : " (the best, restored from its checkpoint)",
                regression_ ? "test_mae" : "test_accuracy", regression_ ? final_.mae() : final_.accuracy(),
                static_cast<long long>(final_.samples));
    std::fflush(stdout);
    return Status::Ok();
  }

  // Handles messages until `done` holds (or a rank fails, or the wait
  // times out).
  Status PumpMessagesUntil(const std::function<bool()>& done) {
    while (!done()) {
      int from = -1;
      proto::ControlMessage msg;
      Status st = WaitForMessage(&from, &msg);
      if (st.code() == Code::kNotFound) continue;
      POLIS_RETURN_IF_ERROR(st);
      bool checkpoint_done = false;
      POLIS_RETURN_IF_ERROR(Handle(from, msg, &checkpoint_done));
    }
    return Status::Ok();
  }

  Status OnFinalEvaluation(int w, int from, const proto::FinalEvaluation& f) {
    if (final_reported_[w]) return RemoteError("rank {} sent its final evaluation twice", from);
    final_reported_[w] = true;
    final_.Add(FromSums(f.test()));
    if (final_reports_++ == 0) final_sha_ = f.params_sha256();
    else if (f.params_sha256() != final_sha_)
      return InternalError("rank {} evaluated other parameters for publishing than worker 0", from);
    return Status::Ok();
  }

  // The test evaluation at the end, on the published model;
  // docs/user-guide.md, "Validation".
  Status FinishTrained() {
    POLIS_RETURN_IF_ERROR(EvaluateForPublishing());
    TrainedRun run;
    POLIS_ASSIGN_OR_RETURN(run.params, GatherParameters());
    run.history = history_;
    run.train_seconds = train_seconds_;
    run.metrics = PublishedMetrics();
    run.result = ResultDocument();
    state_ = "publishing";
    PublishStatus();
    Status published = [&]() -> Status {
      POLIS_ASSIGN_OR_RETURN(ModelArtifact artifact, BuildArtifact(ctx_, *dataset_, run));
      return VerifyAndPublish(ctx_, *dataset_, std::move(artifact), std::move(run));
    }();
    state_ = published.ok() ? "done" : "failed";
    PublishStatus();
    return published;
  }

  const RoleContext& ctx_;
  const CoordinatorOptions& options_;
  const proto::JobSpec& spec_;
  const int E_, W_;
  std::unique_ptr<data::Dataset> dataset_;
  // dataset.source COORDINATOR: the records on their way to workers.
  std::unique_ptr<data::RecordServer> records_;
  bool regression_ = false;
  bool validation_ = false;  // the job has a validation split: epochs are evaluated on it
  int64_t N_ = 0;
  std::unique_ptr<data::ShardPlanner> planner_;
  std::optional<privacy::DpPlan> dp_;  // DP-SGD jobs
  privacy::SecAggKeyRelay key_relay_;  // privacy.secure_aggregation's one-time key exchange
  comm::WireLimits limits_;  // what a received message may hold
  // Resume: where the plan starts, and the checkpoint's consumed positions.
  int start_epoch_ = 0, resumed_epoch_ = -1;
  std::vector<Range> resumed_consumed_;
  std::vector<std::vector<Range>> resumed_pending_;  // per worker, handed out first
  std::unique_ptr<Monitor> monitor_;
  std::ofstream metrics_;
  std::string job_text_, model_sha256_;
  comm::Clock::time_point start_, last_print_, last_publish_, last_heartbeat_check_;
  StallWarning stall_{0, comm::Clock::now()};  // POLIS_STALL_WARN_S, set at Start
  std::string host_;                           // this host's name (gethostname)
  HostTable hosts_;                            // every host's figures (/api/status "hosts")
  HostSampler host_sampler_;                   // this host's

  // Progress.
  int epochs_done_ = 0;
  // The epoch whose end the newest checkpoint marks (-1: taken mid-epoch),
  // and, once a stop's checkpoint is in, how many epochs' rows it waits for.
  int last_checkpoint_epoch_end_ = -1, stop_after_rows_ = -1;
  bool last_checkpoint_stops_ = false;  // a stop may end at it (see OnShardSaved)
  std::vector<int> worker_epoch_;  // the epoch each worker is in (after its last report)
  std::vector<WorkerView> workers_view_;
  std::vector<ServerView> servers_view_;
  std::vector<EpochTotals> totals_;
  json history_ = json::array(), series_ = json::array();
  int64_t samples_done_ = 0;  // over finished epochs
  double last_loss_ = 0, train_seconds_ = 0;
  bool have_progress_ = false;  // until the first report, step and loss are unknown (null)
  std::string state_ = "running";

  // Checkpoints: grants per epoch and worker, in order; shard reports per
  // checkpoint until every one is in.
  std::map<int, std::vector<std::vector<Range>>> grants_;
  std::map<std::pair<int64_t, bool>, std::vector<proto::ShardSaved>> saved_;
  std::string last_checkpoint_;
  int64_t checkpoint_step_ = 0;  // NoteCheckpoint
  int checkpoint_epochs_ = 0;
  double checkpoint_time_ = 0;
  bool stopping_ = false;
  std::vector<proto::ServerStats> server_stats_;

  // Early stopping, restore_best and the final test evaluation.
  std::unique_ptr<EarlyStopping> early_;  // training.early_stopping, if set
  bool stopped_early_ = false;
  std::map<int, std::string> epoch_checkpoints_;  // epoch (0-based) -> its epoch-end checkpoint
  bool finishing_ = false;                         // training is over: the final evaluation
  std::string published_checkpoint_;               // restore_best: where the published parameters are
  std::vector<float> best_params_;                 // restore_best: those parameters
  EvalResult final_;                               // the final test evaluation, summed
  std::vector<bool> final_reported_;
  int final_reports_ = 0;
  std::string final_sha_;                          // of the parameters the workers evaluated
};

}  // namespace

Status RunCoordinator(const RoleContext& ctx, const CoordinatorOptions& options) {
  Coordinator coordinator(ctx, options);
  const Status st = coordinator.Run();  // CANCELLED: stopped, in order
  if (!st.ok() && st.code() != Code::kCancelled) return st;
  POLIS_RETURN_IF_ERROR(coordinator.FinishRecords());
  return st;
}

}  // namespace polis::coordinator
