#include "launch/tune/runner.h"

#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/text_format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "launch/tune/asha.h"
#include "launch/tune/plots.h"
#include "launch/tune/sampler.h"
#include "launch/tune/study_server.h"
#include "launch/tune/study_state.h"
#include "registry/aliases.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop_signals = 0;
void OnStop(int) { g_stop_signals = g_stop_signals + 1; }

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char buf[4096];
  if (getcwd(buf, sizeof buf) == nullptr) return path;
  return std::string(buf) + "/" + path;
}

bool HasCheckpoint(const std::string& run_dir) {
  glob_t g{};
  const bool any = glob((run_dir + "/checkpoints/*/manifest.json").c_str(), 0, nullptr, &g) == 0 && g.gl_pathc > 0;
  globfree(&g);
  return any || PathExists(run_dir + "/" + kArtifactFileName);
}

std::string ParamsText(const Params& params) {
  std::string out;
  for (const ParamValue& p : params)
    if (!p.value.is_null()) out += fmt::format("{}{}={}", out.empty() ? "" : " ", p.field, ParamText(p.value));
  return out;
}

// The last line of a file that is not empty (for a failed trial's reason).
std::string LastLine(const std::string& path, const std::string& prefer_prefix) {
  auto text = ReadFile(path);
  if (!text.ok()) return "";
  std::istringstream in(*text);
  std::string line, last, preferred;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    last = line;
    if (line.rfind(prefer_prefix, 0) == 0) preferred = line;
  }
  std::string out = preferred.empty() ? last : preferred;
  if (out.size() > 300) out = out.substr(0, 300) + "…";
  return out;
}

// Whether a process other than this one runs with `--run-dir RUN` (a
// trial's polis-run or one of its ranks). mpirun killed by a signal may
// exit, and polis-run with it, before its ranks have: they must be gone
// before the run directory is read or used again.
bool AnyProcessOf(const std::string& run_dir) {
  glob_t g{};
  bool found = false;
  const std::string needle = "--run-dir " + run_dir + " ";
  const std::string self = std::to_string(getpid());
  if (glob("/proc/[0-9]*/cmdline", 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc && !found; ++i) {
      const std::string path = g.gl_pathv[i];
      if (path == "/proc/" + self + "/cmdline") continue;
      auto cmd = ReadFile(path);
      if (!cmd.ok()) continue;
      std::string text = *cmd;
      for (char& c : text)
        if (c == '\0') c = ' ';
      found = (text + " ").find(needle) != std::string::npos;
    }
  }
  globfree(&g);
  return found;
}

void WaitForRunDir(const std::string& run_dir, int seconds) {
  const auto until = Clock::now() + std::chrono::seconds(seconds);
  while (AnyProcessOf(run_dir) && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

class Study {
 public:
  Study(const TuneOptions& o, LoadedStudy study, StudyState state)
      : o_(o), study_(std::move(study)), s_(std::move(state)), sampler_(study_) {
    dir_ = s_.study_dir;
    maximize_ = study_.spec.objective().direction() == proto::ObjectiveSpec::MAXIMIZE;
    asha_ = study_.spec.scheduler().type() == proto::SchedulerSpec::ASHA;
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    slots_ = o_.slots > 0 ? o_.slots : static_cast<int>(std::max(1L, cores));
    threads_ = o_.threads > 0 ? o_.threads
                              : std::max(1, static_cast<int>(cores) / std::max(1, o_.parallel * study_.workers));
    wall_base_ = s_.wall_seconds;
  }

  // "2 trial(s) at once, 2 of 4 slots each"; says so when the slots hold
  // fewer trials than --parallel asks for.
  std::string AtOnce() const {
    if (o_.slurm) return fmt::format("{} trial(s) at once on Slurm", o_.parallel);
    const int fit = std::min(o_.parallel, slots_ / study_.ranks());
    std::string out = fmt::format("{} trial(s) at once, {} of {} slots each", fit, study_.ranks(), slots_);
    if (fit < o_.parallel)
      out += fmt::format(" (--parallel {} needs --slots {})", o_.parallel, o_.parallel * study_.ranks());
    return out;
  }

  int Run() {
    if (!o_.slurm && study_.ranks() > slots_) {
      std::fprintf(stderr,
                   "polis-tune: %s: one trial needs %d ranks (1 coordinator, %d server(s), %d worker(s)) but "
                   "this machine has %d slot(s) (--slots)\n",
                   study_.path.c_str(), study_.ranks(), study_.servers, study_.workers, slots_);
      return kExitUsage;
    }
    struct sigaction sa {};
    sa.sa_handler = OnStop;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    if (Status st = Serve(); !st.ok()) {
      std::fprintf(stderr, "polis-tune: --monitor: %s\n", st.message().c_str());
      return kExitUsage;
    }
    std::printf("polis-tune: study %s in %s: %s sampler, %s, objective %s (%s), %s\n", s_.name.c_str(),
                dir_.c_str(), s_.sampler.c_str(), s_.scheduler.c_str(), s_.objective.c_str(),
                maximize_ ? "maximize" : "minimize", AtOnce().c_str());
    if (server_) std::printf("polis-tune: study page at %s/\n", server_->address().c_str());
    std::fflush(stdout);
    if (s_.state != "done") {
      s_.state = "running";
      s_.end_reason.clear();
      if (Status st = Reattach(); !st.ok()) return Fail(st);
      if (Status st = Save(true); !st.ok()) return Fail(st);
      if (Status st = Loop(); !st.ok()) return Fail(st);
      if (g_stop_signals > 0) return Stopped();
      Finish();
    }
    return Publish();
  }

 private:
  struct Child {
    int trial = 0;
    pid_t pid = 0;
    long long slurm_job = 0;
  };

  int Fail(const Status& st) {
    std::fprintf(stderr, "polis-tune: %s\n", st.message().c_str());
    return kExitFailed;
  }

  // The study page and API (--monitor), serving the state as it is now.
  Status Serve() {
    if (o_.monitor == "off") return Status::Ok();
    POLIS_ASSIGN_OR_RETURN(server_, StudyServer::Start(o_.monitor, dir_));
    server_->Publish(s_);
    return Status::Ok();
  }

  Status Save(bool outputs) {
    s_.wall_seconds = wall_base_ + std::chrono::duration<double>(Clock::now() - started_).count();
    s_.updated_at = UtcTimestamp();
    POLIS_RETURN_IF_ERROR(WriteStudyState(dir_, s_));
    if (server_) server_->Publish(s_);
    if (!outputs) return Status::Ok();
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/study.csv", StudyCsv(s_)));
    return WriteStudyPlots(s_, dir_);
  }

  // After a crash: trials recorded as running have no child of ours. A
  // polis-run that outlived us (it gets SIGTERM when we die and is
  // checkpointing) is waited for; a Slurm job still queued or running is
  // adopted.
  Status Reattach() {
    for (Trial& t : s_.trials) {
      if (t.state != "running") continue;
      if (t.slurm_job > 0 && SlurmActive(t.slurm_job)) {
        std::printf("polis-tune: trial %s: re-attached to Slurm job %lld\n", t.id.c_str(), t.slurm_job);
        children_.push_back({t.index, 0, t.slurm_job});
        continue;
      }
      if (AnyProcessOf(t.run_dir)) {
        std::printf("polis-tune: trial %s: waiting for its previous polis-run and ranks to stop\n", t.id.c_str());
        std::fflush(stdout);
        WaitForRunDir(t.run_dir, 600);
      }
      t.pid = 0;
      t.slurm_job = 0;
      // It may have finished its segment while nobody watched.
      Absorb(t, /*exit_code=*/-1, /*stopping=*/true);
    }
    return Status::Ok();
  }

  // ---- scheduling ------------------------------------------------------------

  struct Work {
    int trial = -1;      // an existing trial (resume or promotion)
    bool fresh = false;  // a new trial: index trials.size()
  };

  int RanksInUse() const { return static_cast<int>(children_.size()) * study_.ranks(); }

  bool Running(int trial) const {
    for (const Child& c : children_)
      if (c.trial == trial) return true;
    return false;
  }

  // What to run next, or nullopt (then end_reason_ says why nothing new).
  std::optional<Work> Next() {
    const auto& b = study_.spec.budget();
    // Trials cut short by a crash or a stop continue first.
    for (const Trial& t : s_.trials)
      if (t.state == "running" && !Running(t.index)) return Work{t.index, false};
    const double wall = wall_base_ + std::chrono::duration<double>(Clock::now() - started_).count();
    if (b.has_max_wall_seconds() && wall >= b.max_wall_seconds()) {
      end_reason_ = "budget.max_wall_seconds reached";
      return std::nullopt;
    }
    const long long committed = EpochsCommitted(s_);
    if (asha_) {
      std::vector<std::vector<RungResult>> rungs;
      std::vector<std::set<int>> promoted;
      RungTables(s_, &rungs, &promoted);
      if (auto p = NextPromotion(rungs, promoted, study_.spec.scheduler().reduction_factor(), maximize_)) {
        Trial& t = s_.trials[p->trial];
        const int more = s_.rungs[p->to_rung] - t.epochs_done;
        if (!b.has_max_epochs_total() || committed + more <= b.max_epochs_total()) {
          t.rung = p->to_rung;
          t.target_epochs = s_.rungs[p->to_rung];
          t.state = "running";
          std::printf("polis-tune: trial %s promoted to rung %d (%d epochs): continues from its checkpoint\n",
                      t.id.c_str(), p->to_rung, t.target_epochs);
          return Work{t.index, false};
        }
      }
    }
    const int next = static_cast<int>(s_.trials.size());
    if (b.has_max_trials() && next >= b.max_trials()) {
      end_reason_ = "budget.max_trials reached";
      return std::nullopt;
    }
    if (sampler_.Size() >= 0 && next >= sampler_.Size()) {
      end_reason_ = "the grid is done";
      return std::nullopt;
    }
    if (b.has_max_epochs_total() && committed + s_.rungs[0] > b.max_epochs_total()) {
      end_reason_ = "budget.max_epochs_total reached";
      return std::nullopt;
    }
    return Work{-1, true};
  }

  // A new trial: its settings, its job file, its directory.
  Trial& NewTrial() {
    Trial t;
    t.index = static_cast<int>(s_.trials.size());
    t.id = fmt::format("{:04d}", t.index);
    t.params = *sampler_.Sample(t.index);
    t.run_dir = dir_ + "/trials/" + t.id;
    t.rung = 0;
    t.target_epochs = s_.rungs[0];
    t.state = "running";
    t.started_at = UtcTimestamp();
    Status st = MakeDirectories(t.run_dir);
    auto job = TrialJob(study_, t.params, t.id);
    if (st.ok() && !job.ok()) st = job.status();
    if (st.ok()) {
      std::string text;
      google::protobuf::TextFormat::PrintToString(*job, &text);
      st = WriteFileAtomic(t.run_dir + "/job.pbtxt",
                           fmt::format("# trial {} of study {}: {}\n{}", t.id, s_.name, ParamsText(t.params), text));
    }
    if (!st.ok()) {
      t.state = "failed";
      t.error = st.message();
      std::printf("polis-tune: trial %s failed: %s\n", t.id.c_str(), t.error.c_str());
    }
    s_.trials.push_back(std::move(t));
    return s_.trials.back();
  }

  std::vector<std::string> SegmentArgs(const Trial& t, bool resume) const {
    std::vector<std::string> a = {o_.polis_run,
                                  "--workers", std::to_string(study_.workers),
                                  "--servers", std::to_string(study_.servers),
                                  "--threads", std::to_string(threads_),
                                  "--registry", dir_ + "/trial-registry",
                                  "--run-dir", t.run_dir,
                                  "--epochs", std::to_string(t.target_epochs)};
    if (o_.slurm) {
      a.push_back("--slurm");
      if (!o_.slurm_opts.empty()) a.push_back(o_.slurm_opts);
    }
    if (resume) {
      a.push_back("--resume");
      a.push_back(t.run_dir);
    } else {
      a.push_back(t.run_dir + "/job.pbtxt");
    }
    return a;
  }

  // Starts polis-run for `t`'s current segment.
  Status Launch(Trial& t) {
    const bool resume = HasCheckpoint(t.run_dir);
    if (!resume) {
      // Nothing saved: start clean, the cut-short attempt's rows set aside.
      for (const char* f : {"metrics.jsonl", "result.json"}) {
        const std::string p = t.run_dir + "/" + f;
        if (PathExists(p)) std::rename(p.c_str(), fmt::format("{}.attempt-{}", p, t.segments).c_str());
      }
    }
    const std::vector<std::string> args = SegmentArgs(t, resume);
    const std::string log = t.run_dir + "/tune.log";
    std::printf("polis-tune: trial %s %s rung %d (%d epoch(s))%s: %s\n", t.id.c_str(),
                resume ? "continues to" : "starts", t.rung, t.target_epochs,
                resume ? " from its checkpoint" : "", ParamsText(t.params).c_str());
    std::fflush(stdout);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return IoError("fork: {}", std::strerror(errno));
    if (pid == 0) {
      setpgid(0, 0);  // the terminal's Ctrl-C reaches polis-tune only; it forwards one SIGTERM
      signal(SIGPIPE, SIG_DFL);  // ignored here; an ignored signal would stay ignored across exec
      if (!o_.slurm) prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      const int devnull = open("/dev/null", O_RDONLY);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (devnull >= 0) dup2(devnull, 0);
      close_range(3, ~0U, 0);  // the study server's socket stays with polis-tune
      setenv("POLIS_NO_BUILD", "1", 1);
      setenv("POLIS_BUILD_DIR", o_.build_dir.c_str(), 1);
      std::vector<char*> argv;
      for (const std::string& s : args) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      std::fprintf(stderr, "polis-tune: cannot run %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    t.segments++;
    t.state = "running";
    t.error.clear();
    if (o_.slurm) {
      // polis-run --slurm returns once sbatch has queued the job.
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
      const auto out = ReadFile(log);
      const size_t at = out.ok() ? out->rfind("Submitted batch job ") : std::string::npos;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || at == std::string::npos) {
        t.state = "failed";
        t.error = fmt::format("polis-run --slurm failed: {}", LastLine(log, "polis-run:"));
        std::printf("polis-tune: trial %s failed: %s\n", t.id.c_str(), t.error.c_str());
        return Status::Ok();
      }
      t.slurm_job = std::atoll(out->c_str() + at + 20);
      children_.push_back({t.index, 0, t.slurm_job});
      std::printf("polis-tune: trial %s: Slurm job %lld\n", t.id.c_str(), t.slurm_job);
    } else {
      t.pid = pid;
      children_.push_back({t.index, pid, 0});
    }
    return Status::Ok();
  }

  static bool SlurmActive(long long job) {
    const std::string cmd = fmt::format("scontrol -o show job {} 2>/dev/null", job);
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return false;
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int rc = pclose(p);
    if (rc != 0) return false;  // unknown: purged long ago
    const size_t at = out.find("JobState=");
    if (at == std::string::npos) return false;
    const std::string state = out.substr(at + 9, out.find_first_of(" \n", at) - at - 9);
    static const std::set<std::string> kEnded = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                                 "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"};
    return kEnded.count(state) == 0;
  }

  // Reads the trial's rows into its curve; true when the metric was there.
  bool ReadCurve(Trial& t, std::string* missing) {
    const bool ok = ReadObjectiveCurve(t.run_dir, s_.objective, t.target_epochs, &t.curve, missing);
    t.epochs_done = t.curve.empty() ? 0 : t.curve.back().first;
    return ok;
  }

  // A segment ended (exit_code -1: unknown, after a crash or a Slurm job).
  void Absorb(Trial& t, int exit_code, bool stopping) {
    std::string missing;
    if (!ReadCurve(t, &missing)) {
      t.state = "failed";
      t.error = missing;
      t.finished_at = UtcTimestamp();
      std::printf("polis-tune: trial %s failed: %s\n", t.id.c_str(), t.error.c_str());
      return;
    }
    const auto result_text = ReadFile(t.run_dir + "/result.json");
    json result = json::parse(result_text.ok() ? *result_text : std::string(), nullptr, false);
    const std::string rstate = result.is_object() ? result.value("state", "") : "";
    // result.json is rewritten when a segment ends: one from an earlier
    // rung (a crash cut the next one short) names fewer epochs.
    const int repochs = result.is_object() && result.contains("epochs") && result["epochs"].is_number_integer()
                             ? result["epochs"].get<int>()
                             : 0;
    // A job with training.early_stopping may end itself before the rung:
    // it is done, and trains no further.
    const bool early = result.is_object() && result.value("stopped_early", false) && !t.curve.empty();
    const bool done = rstate == "done" && (early || (repochs >= t.target_epochs && t.epochs_done >= t.target_epochs));
    if (done) {
      t.rung_values.resize(t.rung);
      t.rung_values.push_back(t.curve.back().second);
      const int kept = result.is_object() && result.contains("published_epoch") &&
                               result["published_epoch"].is_number_integer()
                           ? result["published_epoch"].get<int>()
                           : 0;
      t.kept_epoch = kept > 0 && kept < t.epochs_done ? kept : 0;
      if (early)
        std::printf("polis-tune: trial %s: the job stopped early (training.early_stopping) after epoch %d\n",
                    t.id.c_str(), t.epochs_done);
      const bool top = early || t.rung + 1 >= static_cast<int>(s_.rungs.size());
      t.state = top ? "completed" : "paused";
      t.finished_at = UtcTimestamp();
      std::printf("polis-tune: trial %s %s: %s %.4f at epoch %d%s\n", t.id.c_str(),
                  top ? "completed" : fmt::format("reached rung {}", t.rung).c_str(), s_.objective.c_str(),
                  t.curve.back().second, t.epochs_done, top ? "" : " (paused; ASHA may promote it)");
      return;
    }
    if (stopping || rstate == "stopped") {
      t.state = "running";  // continues from its checkpoint on --resume
      return;
    }
    t.state = "failed";
    t.finished_at = UtcTimestamp();
    const std::string why = LastLine(t.run_dir + "/tune.log", "polis-run:");
    t.error = exit_code >= 0 ? fmt::format("polis-run exited {}: {}", exit_code, why)
                             : fmt::format("the job did not finish (result.json state '{}'): {}", rstate, why);
    std::printf("polis-tune: trial %s failed: %s\n", t.id.c_str(), t.error.c_str());
  }

  // ---- the loop ----------------------------------------------------------------

  Status Loop() {
    auto last_refresh = Clock::now();
    while (true) {
      bool changed = false;
      // Ended segments.
      for (size_t i = 0; i < children_.size();) {
        Child& c = children_[i];
        Trial& t = s_.trials[c.trial];
        bool ended = false;
        int code = -1;
        if (c.pid > 0) {
          int status = 0;
          const pid_t r = waitpid(c.pid, &status, WNOHANG);
          if (r == c.pid) {
            ended = true;
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          }
        } else if (Clock::now() - last_slurm_poll_ > std::chrono::seconds(2)) {
          ended = !SlurmActive(c.slurm_job);
        }
        if (!ended) {
          ++i;
          continue;
        }
        t.pid = 0;
        t.slurm_job = 0;
        if (c.pid > 0) WaitForRunDir(t.run_dir, 120);
        Absorb(t, code, g_stop_signals > 0);
        children_.erase(children_.begin() + static_cast<long>(i));
        changed = true;
      }
      if (Clock::now() - last_slurm_poll_ > std::chrono::seconds(2)) last_slurm_poll_ = Clock::now();
      if (changed) POLIS_RETURN_IF_ERROR(Save(true));
      if (g_stop_signals > 0) return StopChildren();
      // New segments.
      while (static_cast<int>(children_.size()) < o_.parallel &&
             (o_.slurm || RanksInUse() + study_.ranks() <= slots_)) {
        auto w = Next();
        if (!w) break;
        Trial* t = w->fresh ? &NewTrial() : &s_.trials[w->trial];
        if (t->state == "failed") {
          POLIS_RETURN_IF_ERROR(Save(true));
          continue;
        }
        POLIS_RETURN_IF_ERROR(Launch(*t));
        POLIS_RETURN_IF_ERROR(Save(false));
      }
      if (children_.empty()) {
        if (!Next()) return Status::Ok();
        continue;
      }
      // Live curves for `polisctl tune status` and the plots.
      if (Clock::now() - last_refresh > std::chrono::seconds(5)) {
        for (const Child& c : children_) {
          std::string ignored;
          ReadCurve(s_.trials[c.trial], &ignored);
        }
        POLIS_RETURN_IF_ERROR(Save(false));
        last_refresh = Clock::now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  // SIGINT/SIGTERM: each local polis-run gets one SIGTERM (checkpoint and
  // stop); a second signal to polis-tune forwards a second one (polis-run
  // then ends mpirun at once). Slurm jobs are left to run.
  Status StopChildren() {
    std::printf("polis-tune: stopping: asking %zu trial(s) to checkpoint and stop\n", children_.size());
    std::fflush(stdout);
    int sent = 0;
    while (true) {
      if (sent < g_stop_signals && sent < 2) {
        for (const Child& c : children_)
          if (c.pid > 0) kill(c.pid, SIGTERM);
        ++sent;
      }
      bool any = false;
      for (size_t i = 0; i < children_.size();) {
        Child& c = children_[i];
        if (c.pid == 0) {  // Slurm: keeps running; --resume re-attaches
          ++i;
          continue;
        }
        int status = 0;
        if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
          Trial& t = s_.trials[c.trial];
          t.pid = 0;
          WaitForRunDir(t.run_dir, 120);
          Absorb(t, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), true);
          children_.erase(children_.begin() + static_cast<long>(i));
          continue;
        }
        any = true;
        ++i;
      }
      if (!any) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    s_.state = "stopped";
    s_.end_reason = "interrupted";
    return Save(true);
  }

  int Stopped() {
    std::printf("polis-tune: study stopped; continue it with: polis-tune --resume %s\n", dir_.c_str());
    return kExitOk;
  }

  void Finish() {
    for (Trial& t : s_.trials)
      if (t.state == "paused") t.state = "stopped";
    s_.state = "done";
    s_.end_reason = end_reason_.empty() ? "no work left" : end_reason_;
    if (Status st = Save(true); !st.ok()) std::fprintf(stderr, "polis-tune: %s\n", st.message().c_str());
    PrintTable();
  }

  void PrintTable() {
    const int best = BestTrial(s_);
    std::printf("polis-tune: study %s done (%s): %zu trial(s), %lld epoch(s) in all, %.0f s\n", s_.name.c_str(),
                s_.end_reason.c_str(), s_.trials.size(), EpochsCommitted(s_), s_.wall_seconds);
    std::printf("%-6s %-10s %-5s %-7s %-12s %s\n", "trial", "state", "rung", "epochs", s_.objective.c_str(), "params");
    for (const Trial& t : s_.trials)
      std::printf("%-6s %-10s %-5d %-7d %-12s %s%s\n", t.id.c_str(), t.state.c_str(), t.rung, t.epochs_done,
                  t.has_value() ? fmt::format("{:.4f}", t.final_value()).c_str() : "-", ParamsText(t.params).c_str(),
                  t.index == best ? "  <- best" : "");
    std::printf("polis-tune: results in %s/study.json, study.csv, curves.png, params.png\n", dir_.c_str());
    std::fflush(stdout);
  }

  // The best trial's kept model, published to the study's registry root
  // with the study in its lineage, and aliased.
  int Publish() {
    if (!s_.published.is_null()) {
      std::printf("polis-tune: already published: %s\n", s_.published.dump().c_str());
      return kExitOk;
    }
    const int best = BestTrial(s_);
    if (best < 0) {
      std::fprintf(stderr, "polis-tune: no trial reported %s; nothing to publish\n", s_.objective.c_str());
      return kExitFailed;
    }
    const Trial& t = s_.trials[best];
    const std::string kept = t.run_dir + "/" + kArtifactFileName;
    auto art = ReadArtifactFile(kept);
    if (!art.ok()) return Fail(art.status().WithContext("best trial " + t.id));
    auto* st = art->header.mutable_lineage()->mutable_study();
    st->set_study(s_.name);
    st->set_study_dir(dir_);
    st->set_study_sha256(s_.study_sha256);
    st->set_trial(t.id);
    for (const ParamValue& p : t.params) {
      if (p.value.is_null()) continue;  // its condition did not hold: not set
      auto* pp = st->add_param();
      pp->set_field(p.field);
      pp->set_value(ParamExact(p.value));
    }
    st->set_objective(s_.objective);
    st->set_objective_value(t.final_value());
    const registry::Actor actor{"polis-tune", fmt::format("best trial {} of study {} ({} {:.4g})", t.id, s_.name,
                                                          s_.objective, t.final_value())};
    auto pub = registry::PublishRecorded(study_.registry_root, study_.model_name, std::move(*art), json::object(), actor);
    if (!pub.ok()) return Fail(pub.status().WithContext("publishing the best trial"));
    const std::string alias = study_.spec.best_alias();
    auto set = registry::SetAlias(study_.registry_root, study_.model_name, alias, pub->version, actor);
    if (!set.ok()) return Fail(set.status().WithContext("aliasing the best trial"));
    s_.published = {{"model", pub->model},  {"version", pub->version}, {"alias", alias},
                    {"root", study_.registry_root}, {"trial", t.id}, {"sha256", pub->sha256}};
    if (Status s = Save(false); !s.ok()) return Fail(s);
    std::printf("polis-tune: published the best trial %s (%s %.4f) as %s version %lld under %s; alias %s -> %lld\n",
                t.id.c_str(), s_.objective.c_str(), t.final_value(), pub->model.c_str(),
                static_cast<long long>(pub->version), study_.registry_root.c_str(), alias.c_str(),
                static_cast<long long>(pub->version));
    return kExitOk;
  }

  const TuneOptions& o_;
  LoadedStudy study_;
  StudyState s_;
  Sampler sampler_;
  std::string dir_;
  bool maximize_ = true, asha_ = false;
  int slots_ = 1, threads_ = 1;
  double wall_base_ = 0;
  Clock::time_point started_ = Clock::now();
  Clock::time_point last_slurm_poll_ = Clock::now() - std::chrono::seconds(10);
  std::vector<Child> children_;
  std::string end_reason_;
  std::unique_ptr<StudyServer> server_;  // null with --monitor off
};

StudyState FreshState(const LoadedStudy& st, const std::string& dir) {
  StudyState s;
  s.name = st.spec.name();
  s.study_file = Absolute(st.path);
  s.study_sha256 = st.sha256;
  s.study_dir = dir;
  s.objective = st.spec.objective().metric();
  s.maximize = st.spec.objective().direction() == proto::ObjectiveSpec::MAXIMIZE;
  s.sampler = proto::StudySpec::Sampler_Name(st.spec.sampler());
  const auto& sch = st.spec.scheduler();
  s.max_epochs = st.max_epochs;
  if (sch.type() == proto::SchedulerSpec::ASHA) {
    s.scheduler = fmt::format("ASHA (eta {}, grace {} epoch(s), max {})", sch.reduction_factor(),
                              sch.grace_period(), st.max_epochs);
    s.rungs = RungEpochs(sch.grace_period(), sch.reduction_factor(), st.max_epochs);
  } else {
    s.scheduler = fmt::format("no early stopping ({} epochs a trial)", st.max_epochs);
    s.rungs = {st.max_epochs};
  }
  s.created_at = UtcTimestamp();
  return s;
}

int Usage(const std::string& line) {
  std::fprintf(stderr, "polis-tune: %s\n", line.c_str());
  return kExitUsage;
}

}  // namespace

// What a new study's start wrote before it was refused: the copies of the
// study and base job, the trials folder, and the study folder if it made it.
void RemoveUnstartedStudy(const std::string& dir, bool made_dir) {
  for (const char* name : {"/study.pbtxt", "/base_job.pbtxt"}) std::remove((dir + name).c_str());
  rmdir((dir + "/trials").c_str());
  if (made_dir) rmdir(dir.c_str());
}

int RunStudy(const TuneOptions& o) {
  if (o.parallel < 1 || o.parallel > 1024) return Usage(fmt::format("--parallel must be in [1, 1024]; got {}", o.parallel));
  if (o.slots < 0) return Usage("--slots must be >= 1");
  std::string dir;
  bool made_dir = false;
  StatusOr<LoadedStudy> study = InvalidArgument("no study");
  StatusOr<StudyState> state = InvalidArgument("no state");
  if (o.resume) {
    dir = Absolute(o.study_dir);
    state = ReadStudyState(dir);
    if (!state.ok()) return Usage(fmt::format("--resume {}: {}", o.study_dir, state.status().message()));
    // The study as it was started: the copies kept in the study directory.
    auto text = ReadFile(dir + "/study.pbtxt");
    if (!text.ok()) return Usage(text.status().message());
    study = ParseStudyText(*text, dir + "/study.pbtxt", dir);
    if (study.ok() && study->sha256 != state->study_sha256)
      return Usage(fmt::format("{}/study.pbtxt does not match the study the state was made from", dir));
  } else {
    study = LoadStudyFile(o.study_file);
  }
  if (!study.ok()) return Usage(study.status().message());
  if (o.check_only) {
    std::printf("polis-tune: %s: ok (%s sampler, %d rank(s) a trial, objective %s)\n", study->path.c_str(),
                proto::StudySpec::Sampler_Name(study->spec.sampler()).c_str(), study->ranks(),
                study->spec.objective().metric().c_str());
    return kExitOk;
  }
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const int slots = o.slots > 0 ? o.slots : static_cast<int>(std::max(1L, cores));
  if (!o.slurm && study->ranks() > slots)
    return Usage(fmt::format("{}: one trial needs {} ranks (1 coordinator, {} server(s), {} worker(s)) but this "
                             "machine has {} slot(s) (--slots)",
                             study->path, study->ranks(), study->servers, study->workers, slots));
  if (!o.resume) {
    dir = Absolute(o.study_dir.empty() ? "studies/" + study->spec.name() : o.study_dir);
    if (PathExists(dir + "/" + kStudyFileName))
      return Usage(fmt::format("{} already holds a study: continue it with --resume {}, or give another --study-dir",
                               dir, dir));
    made_dir = !PathExists(dir);
    if (Status s = MakeDirectories(dir + "/trials"); !s.ok()) return Usage(s.message());
    // The study and its base job as started: --resume reads these copies.
    auto base_text = ReadFile(study->base.path);
    auto text = ReadFile(o.study_file);
    if (!base_text.ok() || !text.ok()) return Usage("cannot copy the study files into " + dir);
    // The copy names the copied base job.
    proto::StudySpec copy = study->spec;
    copy.set_base_job("base_job.pbtxt");
    std::string copy_text;
    google::protobuf::TextFormat::PrintToString(copy, &copy_text);
    Status s = WriteFileAtomic(dir + "/base_job.pbtxt", *base_text);
    if (s.ok()) s = WriteFileAtomic(dir + "/study.pbtxt", copy_text);
    if (!s.ok()) return Usage(s.message());
    study = ParseStudyText(copy_text, dir + "/study.pbtxt", dir);
    if (!study.ok()) return Usage(study.status().message());
    state = FreshState(*study, dir);
    state->study_file = Absolute(o.study_file);
  }
  Study run(o, std::move(*study), std::move(*state));
  const int rc = run.Run();
  // Refused before its first save (a bad --monitor): a new study leaves
  // nothing behind.
  if (!o.resume && rc == kExitUsage && !PathExists(dir + "/" + kStudyFileName)) RemoveUnstartedStudy(dir, made_dir);
  return rc;
}

}  // namespace polis::tune
