#include "launch/cluster_view.h"

#include <signal.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "common/env.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/job_spec.h"
#include "coordinator/host_metrics.h"
#include "coordinator/monitor.h"

namespace polis::ctl {

using json = nlohmann::json;

const char kSqueueFormat[] = "%i|%T|%M|%D|%N|%j";

std::string DefaultJobsDir() {
  if (const std::string d = env::JobsDir(); !d.empty()) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.polis/jobs";
}

JobsDir ReadJobsDir(const std::string& dir) {
  JobsDir out;
  std::error_code ec;
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".json") paths.push_back(e.path().string());
  if (ec && ec != std::errc::no_such_file_or_directory)
    out.problems.push_back(fmt::format("jobs directory {}: {}", dir, ec.message()));
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    auto text = ReadFile(p);
    if (!text.ok()) {
      out.problems.push_back(fmt::format("{}: {}", p, text.status().message()));
      continue;
    }
    json doc = json::parse(*text, nullptr, false);
    if (!doc.is_object()) {
      out.problems.push_back(fmt::format("{}: not a JSON object (skipped)", p));
      continue;
    }
    if (!doc.contains("run_dir") || !doc["run_dir"].is_string() || !doc.contains("state") ||
        !doc["state"].is_string()) {
      out.problems.push_back(fmt::format("{}: no \"run_dir\" or \"state\" string (skipped)", p));
      continue;
    }
    doc["record_path"] = p;
    out.records.push_back(std::move(doc));
  }
  return out;
}

StatusOr<std::vector<SqueueJob>> ParseSqueue(std::string_view text) {
  std::vector<SqueueJob> out;
  int line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string line(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> f;
    size_t at = 0;
    // The name comes last and may itself hold '|': five cuts only.
    for (int i = 0; i < 5; ++i) {
      const size_t bar = line.find('|', at);
      if (bar == std::string::npos) break;
      f.push_back(line.substr(at, bar - at));
      at = bar + 1;
    }
    f.push_back(line.substr(at));
    if (f.size() != 6 || f[0].empty() || f[0].find_first_not_of("0123456789_[]-") != std::string::npos)
      return DataLoss("squeue line {}: '{}' is not 'JOBID|STATE|TIME|NODES|NODELIST|NAME'", line_no,
                      line.substr(0, 120));
    SqueueJob j{f[0], f[1], f[2], f[4], f[5], 0};
    j.nodes = std::atoi(f[3].c_str());
    out.push_back(std::move(j));
  }
  return out;
}

namespace {

std::string Str(const json& doc, const char* key, const std::string& fallback = "") {
  if (!doc.is_object()) return fallback;
  auto it = doc.find(key);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : fallback;
}
std::optional<double> Num(const json& doc, const char* key) {
  if (!doc.is_object()) return std::nullopt;
  auto it = doc.find(key);
  return it != doc.end() && it->is_number() ? std::optional<double>(it->get<double>()) : std::nullopt;
}

// "2026-12-05T14:00:00Z" -> Unix seconds; nullopt when malformed.
std::optional<double> ParseUtc(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) return std::nullopt;
  return static_cast<double>(timegm(&tm));
}

// A run's result.json, or null.
json ReadResult(const std::string& run_dir) {
  auto text = ReadFile(run_dir + "/result.json");
  if (!text.ok()) return nullptr;
  json doc = json::parse(*text, nullptr, false);
  return doc.is_object() ? doc : json(nullptr);
}
// The coordinator writes "done" (or "stopped"); the view says "finished".
std::string ResultState(const json& result) {
  const std::string state = Str(result, "state", "done");
  return state == "done" ? "finished" : state;
}

bool Ended(const std::string& state) {
  return state == "finished" || state == "failed" || state == "stopped" || state == "refused" || state == "lost";
}

// Slurm's state -> the view's.
std::string FromSlurm(const std::string& s) {
  if (s == "PENDING" || s == "REQUEUED" || s == "REQUEUE_HOLD") return "queued";
  if (s == "RUNNING" || s == "CONFIGURING" || s == "COMPLETING") return "running";
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower;
}

// One rank of a job on a host, as the hosts table lists it.
struct HostAcc {
  json ranks = json::array();
  json figures;  // the freshest "hosts" entry of a status, or null
  double age = 1e18;
};

// Fills `job` from the coordinator's status document.
void FromStatus(const json& st, json* job) {
  json& j = *job;
  const std::string state = Str(st, "state", "running");
  j["state"] = state == "checkpointing" || state == "stopping" ? "running" : state;
  j["coordinator_state"] = state;
  j["epoch"] = Num(st, "epoch") ? st["epoch"] : json(nullptr);
  j["epochs"] = Num(st, "epochs") ? st["epochs"] : json(nullptr);
  const auto eta = Num(st, "eta_seconds"), elapsed = Num(st, "elapsed_seconds");
  j["eta_seconds"] = eta && *eta >= 0 ? json(*eta) : json(nullptr);
  j["progress_percent"] = eta && elapsed && *eta >= 0 && *elapsed + *eta > 0
                              ? json(100.0 * *elapsed / (*elapsed + *eta))
                              : json(nullptr);
  j["stragglers"] = st.contains("stragglers") && st["stragglers"].is_array() ? st["stragglers"] : json::array();
  j["stalled"] = st.contains("stalled") && st["stalled"].is_array() ? st["stalled"] : json::array();
}

}  // namespace

json BuildCluster(const ClusterOptions& o, const Probes& probes) {
  const double now = static_cast<double>(std::time(nullptr));
  json out = {{"jobs_dir", o.jobs_dir}, {"generated_at", UtcTimestamp()}, {"problems", json::array()}};
  JobsDir dir = ReadJobsDir(o.jobs_dir);
  for (const auto& p : dir.problems) out["problems"].push_back(p);

  // Slurm: what squeue says, by job id.
  std::map<std::string, SqueueJob> slurm;
  bool slurm_ok = false;
  std::string slurm_reason = "not asked (--no-squeue)";
  if (o.squeue && probes.squeue) {
    auto text = probes.squeue();
    if (text.ok()) {
      auto jobs = ParseSqueue(*text);
      if (jobs.ok()) {
        slurm_ok = true;
        slurm_reason = "";
        for (auto& j : *jobs) slurm[j.id] = std::move(j);
      } else {
        slurm_reason = jobs.status().message();
      }
    } else {
      slurm_reason = text.status().code() == Code::kNotFound ? "squeue is not installed" : text.status().message();
    }
  }
  out["slurm"] = {{"available", slurm_ok}, {"reason", slurm_reason}, {"jobs", slurm.size()}};
  if (!slurm_ok && o.squeue && slurm_reason != "squeue is not installed")
    out["problems"].push_back("squeue: " + slurm_reason);

  std::vector<std::string> host_order;
  std::map<std::string, HostAcc> hosts;
  auto host_entry = [&](const std::string& h) -> HostAcc& {
    if (!hosts.count(h)) host_order.push_back(h);
    return hosts[h];
  };
  std::set<std::string> slurm_seen;
  json jobs = json::array();
  for (const json& r : dir.records) {
    const std::string run_dir = Str(r, "run_dir"), launcher = Str(r, "launcher", "mpirun");
    json j = {{"job", Str(r, "job", "?")}, {"run_id", Str(r, "run_id", std::filesystem::path(run_dir).filename())},
              {"run_dir", run_dir}, {"launcher", launcher}, {"record", Str(r, "record_path")},
              {"started_at", Str(r, "started_at")}, {"ended_at", Str(r, "ended_at")},
              {"slurm_job_id", Str(r, "slurm_job_id")}, {"pid", r.value("pid", json(nullptr))},
              {"launch_host", Str(r, "launch_host")}, {"hosts", r.value("hosts", json::array())},
              {"ranks", json::array()}, {"epoch", nullptr}, {"epochs", nullptr},
              {"progress_percent", nullptr}, {"eta_seconds", nullptr}, {"reason", ""},
              {"address", ""}, {"stragglers", json::array()}, {"stalled", json::array()}};
    if (r.contains("workers") && r.contains("servers") && r["workers"].is_number() && r["servers"].is_number())
      j["rank_count"] = 1 + r["servers"].get<int>() + r["workers"].get<int>();
    std::string state = Str(r, "state");
    std::string reason;
    const json result = ReadResult(run_dir);
    if (!Ended(state)) {
      if (launcher == "slurm") {
        const std::string id = Str(r, "slurm_job_id");
        slurm_seen.insert(id);
        if (!slurm_ok) {
          state = !result.is_null() ? ResultState(result) : "unknown";
          if (result.is_null()) reason = "Slurm job " + id + ": cannot ask Slurm (" + slurm_reason + ")";
        } else if (slurm.count(id)) {
          state = FromSlurm(slurm[id].state);
          if (state == "running" && j["hosts"].empty()) j["hosts"] = json::array({slurm[id].nodelist});
        } else if (!result.is_null()) {
          state = ResultState(result);
        } else {
          state = "lost";
          reason = "Slurm job " + id + " is no longer queued and left no result.json";
        }
      } else if (Str(r, "launch_host") == probes.this_host || Str(r, "launch_host").empty()) {
        const int pid = r.value("pid", 0);
        if (pid <= 0 || !probes.launcher_alive(pid)) {
          state = !result.is_null() ? ResultState(result) : "lost";
          if (result.is_null())
            reason = fmt::format("polis-run (pid {}) is gone and recorded no end state", pid);
        } else {
          state = "running";
        }
      } else {
        state = "running";  // another host's launcher: its coordinator says more
      }
    }
    // Ended jobs are listed for recent_hours after their end (or their start).
    if (Ended(state)) {
      const auto when = ParseUtc(Str(r, "ended_at", Str(r, "updated_at", Str(r, "started_at"))));
      if (when && now - *when > o.recent_hours * 3600) continue;
      if (state == "finished" && result.is_object()) {
        j["progress_percent"] = 100.0;
        if (Num(result, "epochs")) j["epoch"] = result["epochs"];
        if (Num(result, "epochs_planned")) j["epochs"] = result["epochs_planned"];
      }
      if (reason.empty() && state == "failed") reason = Str(r, "cause");
    }
    // A running job: its coordinator (coordinator.json names the address).
    json info = nullptr;
    if (auto text = ReadFile(run_dir + "/coordinator.json"); text.ok()) info = json::parse(*text, nullptr, false);
    if (!info.is_object()) info = nullptr;
    json status = nullptr;
    if (state == "running") {
      const std::string address = Str(info, "address");
      j["address"] = address;
      if (info.is_null()) {
        state = "starting";
        reason = "no coordinator.json yet";
      } else if (address.empty()) {
        reason = "the coordinator serves no monitoring API";
      } else {
        auto st = probes.status(address);
        if (st.ok()) {
          status = *st;
          FromStatus(status, &j);
          state = j["state"].get<std::string>();
        } else {
          state = "unreachable";
          reason = fmt::format("coordinator at {} does not answer: {}", address, st.status().message());
        }
      }
    }
    j["state"] = state;
    j["reason"] = reason;
    // Ranks by host: the status's hosts, else coordinator.json's placement
    // (one host: every rank on its "host").
    std::vector<std::pair<std::string, json>> ranks;  // host, {rank, role}
    if (status.is_object() && status.contains("hosts") && status["hosts"].is_array()) {
      for (const auto& h : status["hosts"]) {
        const std::string name = Str(h, "host");
        if (name.empty()) continue;
        for (const auto& rk : h.value("ranks", json::array())) ranks.emplace_back(name, rk);
        HostAcc& acc = host_entry(name);
        const double age = Num(h, "sample_age_seconds").value_or(1e17);
        if (!h.value("cpu_percent", json()).is_null() && age < acc.age) acc.figures = h, acc.age = age;
      }
    } else if (info.is_object() && (state == "running" || state == "unreachable")) {
      const json placement = info.value("placement", json::array());
      if (placement.is_array() && !placement.empty()) {
        for (const auto& p : placement)
          ranks.emplace_back(Str(p, "host"), json{{"rank", p.value("rank", -1)}, {"role", Str(p, "role")}});
      } else if (j.contains("rank_count")) {
        const int servers = r.value("servers", 0), n = j["rank_count"].get<int>();
        for (int k = 0; k < n; ++k)
          ranks.emplace_back(Str(info, "host"), json{{"rank", k}, {"role", k == 0 ? "coordinator" : k <= servers ? "server" : "worker"}});
      }
    }
    if (!ranks.empty()) {
      json job_hosts = json::array();
      for (const auto& [host, rk] : ranks) {
        json one = rk;
        one["host"] = host;
        j["ranks"].push_back(one);
        if (std::find(job_hosts.begin(), job_hosts.end(), host) == job_hosts.end()) job_hosts.push_back(host);
        json on = rk;
        on["job"] = j["job"];
        on["run_id"] = j["run_id"];
        host_entry(host).ranks.push_back(on);
      }
      j["hosts"] = job_hosts;
    }
    jobs.push_back(std::move(j));
  }
  // Slurm jobs no record names (sbatch launch/slurm/polis.sbatch by hand).
  for (const auto& [id, sj] : slurm) {
    if (slurm_seen.count(id) || !sj.name.starts_with("polis")) continue;
    jobs.push_back({{"job", sj.name}, {"run_id", ""}, {"run_dir", ""}, {"launcher", "slurm"}, {"record", ""},
                    {"slurm_job_id", id}, {"state", FromSlurm(sj.state)}, {"hosts", json::array({sj.nodelist})},
                    {"ranks", json::array()}, {"epoch", nullptr}, {"epochs", nullptr}, {"progress_percent", nullptr},
                    {"eta_seconds", nullptr}, {"stragglers", json::array()}, {"stalled", json::array()},
                    {"reason", "in squeue; no jobs-directory record (not started by polis-run)"}});
  }
  // Running first, then the newest.
  std::stable_sort(jobs.begin(), jobs.end(), [](const json& a, const json& b) {
    const bool ra = !Ended(Str(a, "state")), rb = !Ended(Str(b, "state"));
    if (ra != rb) return ra;
    return Str(a, "started_at") > Str(b, "started_at");
  });
  out["jobs"] = jobs;

  json hj = json::array();
  for (const auto& name : host_order) {
    const HostAcc& acc = hosts[name];
    json h = acc.figures.is_object() ? acc.figures : json{{"host", name}};
    h["host"] = name;
    h["ranks"] = acc.ranks;
    for (const char* k : {"cpu_percent", "cpus", "memory_used_bytes", "memory_total_bytes", "net_rx_bytes_per_second",
                          "net_tx_bytes_per_second", "net_interfaces", "sample_age_seconds"})
      if (!h.contains(k)) h[k] = nullptr;
    if (!h.contains("gpus")) h["gpus"] = json::array();
    hj.push_back(std::move(h));
  }
  out["hosts"] = hj;
  return out;
}

// ---------------------------------------------------------------------------
// Text.

namespace {

std::string Duration(const json& v) {
  if (!v.is_number()) return "-";
  const double s = v.get<double>();
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, t / 60 % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}
std::string Rate(const json& v) { return v.is_number() ? HumanBytes(v.get<double>()) + "/s" : "-"; }

// Columns padded to their widest cell.
std::vector<std::string> Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) width.resize(std::max(width.size(), r.size())), width[c] = std::max(width[c], r[c].size());
  std::vector<std::string> out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) line += c + 1 < r.size() ? fmt::format("{:<{}}  ", r[c], width[c]) : r[c];
    out.push_back(line);
  }
  return out;
}

std::string RoleLetter(const std::string& role) { return role.empty() ? "?" : role.substr(0, 1); }

}  // namespace

std::vector<std::string> ClusterTables(const json& c) {
  std::vector<std::string> out;
  const json jobs = c.value("jobs", json::array()), hosts = c.value("hosts", json::array());
  out.push_back(fmt::format("JOBS ({} in {})", jobs.size(), Str(c, "jobs_dir")));
  std::vector<std::vector<std::string>> rows = {{"job", "run", "state", "hosts", "ranks", "epoch", "progress", "eta"}};
  std::vector<std::string> reasons;
  for (const auto& j : jobs) {
    std::string hl;
    for (const auto& h : j.value("hosts", json::array())) hl += (hl.empty() ? "" : ",") + (h.is_string() ? h.get<std::string>() : "?");
    const size_t nranks = j.value("ranks", json::array()).size();
    const std::string ranks = nranks ? std::to_string(nranks)
                                     : j.contains("rank_count") ? std::to_string(j["rank_count"].get<int>()) : "-";
    const json e = j.value("epoch", json()), es = j.value("epochs", json());
    const std::string epoch = e.is_number() ? fmt::format("{}{}", e.get<int64_t>(),
                                                          es.is_number() ? "/" + std::to_string(es.get<int64_t>()) : "")
                                            : "-";
    const json pct = j.value("progress_percent", json());
    std::string run = Str(j, "run_id");
    if (run.empty()) run = "slurm:" + Str(j, "slurm_job_id");
    rows.push_back({Str(j, "job"), run, Str(j, "state"), hl.empty() ? "-" : hl, ranks, epoch,
                    pct.is_number() ? fmt::format("{:.0f}%", pct.get<double>()) : "-",
                    Duration(j.value("eta_seconds", json()))});
    if (!Str(j, "reason").empty()) reasons.push_back(fmt::format("  {}: {}", run, Str(j, "reason")));
    const json strag = j.value("stragglers", json::array());
    if (!strag.empty()) reasons.push_back(fmt::format("  {}: straggler rank(s) {}", run, strag.dump()));
  }
  for (auto& l : Table(rows)) out.push_back(std::move(l));
  for (auto& l : reasons) out.push_back(std::move(l));
  out.push_back("");
  out.push_back(fmt::format("HOSTS ({})", hosts.size()));
  rows = {{"host", "ranks", "cpu", "memory", "net in", "net out", "gpu"}};
  for (const auto& h : hosts) {
    std::map<std::string, std::string> by_run;  // run -> "0c,1s,2w"
    std::vector<std::string> order;
    for (const auto& r : h.value("ranks", json::array())) {
      const std::string run = Str(r, "job") + "/" + Str(r, "run_id");
      if (!by_run.count(run)) order.push_back(run);
      by_run[run] += (by_run[run].empty() ? "" : ",") + fmt::format("{}{}", r.value("rank", -1), RoleLetter(Str(r, "role")));
    }
    std::string ranks;
    for (const auto& run : order) ranks += (ranks.empty() ? "" : " ") + run + ":" + by_run[run];
    const json cpu = h.value("cpu_percent", json()), used = h.value("memory_used_bytes", json()),
               total = h.value("memory_total_bytes", json());
    std::string gpu;
    for (const auto& g : h.value("gpus", json::array())) {
      const json u = g.value("utilization_percent", json()), mu = g.value("memory_used_bytes", json()),
                 mt = g.value("memory_total_bytes", json());
      gpu += (gpu.empty() ? "" : " ") +
             fmt::format("{}:{} {}", g.value("index", 0), u.is_number() ? fmt::format("{:.0f}%", u.get<double>()) : "-",
                         mu.is_number() && mt.is_number()
                             ? HumanBytes(mu.get<double>()) + "/" + HumanBytes(mt.get<double>())
                             : "-");
    }
    rows.push_back({Str(h, "host"), ranks.empty() ? "-" : ranks,
                    cpu.is_number() ? fmt::format("{:.0f}%", cpu.get<double>()) : "-",
                    used.is_number() && total.is_number() ? HumanBytes(used.get<double>()) + " / " + HumanBytes(total.get<double>())
                                                          : "-",
                    Rate(h.value("net_rx_bytes_per_second", json())), Rate(h.value("net_tx_bytes_per_second", json())),
                    gpu.empty() ? "-" : gpu});
  }
  for (auto& l : Table(rows)) out.push_back(std::move(l));
  for (const auto& p : c.value("problems", json::array()))
    if (p.is_string()) out.push_back("note: " + p.get<std::string>());
  return out;
}

// ---------------------------------------------------------------------------
// The real probes.

namespace {

// Runs `argv` with its output (stdout and stderr) captured, killed after
// `timeout_s`; a failure names its last line.
StatusOr<std::string> Capture(const std::vector<std::string>& argv, double timeout_s) {
  int fds[2];
  if (pipe(fds) != 0) return IoError("pipe: {}", std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) return IoError("fork: {}", std::strerror(errno));
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  std::array<char, 4096> buf;
  bool timed_out = false;
  while (true) {
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fds[0], &set);
    timeval tv{0, 100000};
    const int ready = select(fds[0] + 1, &set, nullptr, nullptr, &tv);
    if (ready > 0) {
      const ssize_t n = read(fds[0], buf.data(), buf.size());
      if (n <= 0) break;
      text.append(buf.data(), static_cast<size_t>(n));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
  }
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (timed_out) return Timeout("{} gave no answer within {} s", argv[0], timeout_s);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    while (!text.empty() && text.back() == '\n') text.pop_back();
    const size_t nl = text.rfind('\n');
    return RemoteError("{} failed (exit {}): {}", argv[0], WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
                       text.substr(nl == std::string::npos ? 0 : nl + 1, 200));
  }
  return text;
}

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "";
  size_t at = 0;
  while (at <= p.size()) {
    const size_t colon = std::min(p.find(':', at), p.size());
    const std::string dir = p.substr(at, colon - at);
    if (!dir.empty() && access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    at = colon + 1;
  }
  return false;
}

}  // namespace

Probes DefaultProbes(double timeout_s, const std::string& ca_file) {
  Probes p;
  p.launcher_alive = [](int pid) {
    if (kill(pid, 0) != 0 && errno != EPERM) return false;
    // The pid may have been reused: it must still be polis-run.
    auto cmdline = ReadFile(fmt::format("/proc/{}/cmdline", pid));
    return !cmdline.ok() || cmdline->find("polis-run") != std::string::npos;
  };
  p.status = [timeout_s, ca_file](const std::string& address) -> StatusOr<json> {
    POLIS_ASSIGN_OR_RETURN(http::HttpUrl url, http::ParseHttpUrl(address));
    http::HttpClient client = http::ClientFor(url, static_cast<int>(timeout_s * 1000), ca_file);
    POLIS_ASSIGN_OR_RETURN(http::HttpResult r, client.Get("/api/status"));
    if (r.status != 200) return RemoteError("GET /api/status answered {}", r.status);
    json doc = json::parse(r.body, nullptr, false);
    if (!doc.is_object()) return DataLoss("GET /api/status did not return a JSON object");
    return doc;
  };
  p.squeue = [timeout_s]() -> StatusOr<std::string> {
    if (!OnPath("squeue")) return NotFound("squeue is not installed");
    return Capture({"squeue", "--me", "-h", "-o", kSqueueFormat}, timeout_s);
  };
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  p.this_host = host;
  return p;
}

// ---------------------------------------------------------------------------
// The command.

CLI::App* AddClusterCommand(CLI::App& app, ClusterCtlOptions* o) {
  auto* c = app.add_subcommand("cluster", "the jobs running or recently ended and the hosts that carry them");
  c->add_option("--jobs-dir", o->cluster.jobs_dir, "where polis-run records runs (default $POLIS_JOBS_DIR, else ~/.polis/jobs)");
  c->add_option("--recent", o->cluster.recent_hours, "hours an ended job stays listed (default 24)")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--no-squeue", [o](int64_t) { o->cluster.squeue = false; }, "do not ask Slurm's squeue");
  c->add_option("--serve", o->serve, "serve the cluster page and /api/cluster at HOST:PORT until interrupted");
  c->add_option("--interval", o->interval_s, "with --serve: seconds between refreshes (default 2)")
      ->check(CLI::PositiveNumber);
  c->add_option("--dashboard-dir", o->dashboard_dir, "with --serve: where cluster.html is (default: built in)");
  return c;
}

int RunCluster(const ClusterCtlOptions& opts, bool as_json, double timeout_s, const volatile bool* stop) {
  ClusterCtlOptions o = opts;
  if (o.cluster.jobs_dir.empty()) o.cluster.jobs_dir = DefaultJobsDir();
  const Probes probes = DefaultProbes(std::min(timeout_s, 5.0), o.ca_file);
  if (o.serve.empty()) {
    const json c = BuildCluster(o.cluster, probes);
    if (as_json) {
      std::printf("%s\n", c.dump(2).c_str());
    } else {
      for (const auto& l : ClusterTables(c)) std::printf("%s\n", l.c_str());
    }
    return 0;
  }
  coordinator::Monitor::Options mo;
  mo.listen = o.serve;
  mo.dashboard_dir = o.dashboard_dir;
  mo.document_path = "/api/cluster";
  mo.index_page = "cluster.html";
  mo.metrics = [](const json& doc) {
    std::string text;
    coordinator::AppendHostMetrics(doc.value("hosts", json::array()), &text);
    return text;
  };
  auto m = coordinator::Monitor::Start(mo);
  if (!m.ok()) {
    std::fprintf(stderr, "polisctl cluster: %s\n", m.status().message().c_str());
    return 1;
  }
  (*m)->Publish(BuildCluster(o.cluster, probes));
  std::printf("polisctl: cluster view at %s/ (jobs from %s)\n", (*m)->address().c_str(), o.cluster.jobs_dir.c_str());
  std::fflush(stdout);
  while (!*stop) {
    for (double waited = 0; waited < o.interval_s && !*stop; waited += 0.1)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!*stop) (*m)->Publish(BuildCluster(o.cluster, probes));
  }
  return 0;
}

}  // namespace polis::ctl
