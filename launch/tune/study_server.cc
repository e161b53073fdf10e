#include "launch/tune/study_server.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "common/fs.h"
#include "coordinator/monitor.h"
#include "coordinator/prometheus_family.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;
using coordinator::PromFamily;
using coordinator::PromLabelValue;

std::string ThisHost() {
  char name[256] = "";
  gethostname(name, sizeof(name) - 1);
  return name;
}

bool ProcessAlive(long long pid) { return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// A JSON file's object, or null when it is missing or not an object.
json ReadJsonObject(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return nullptr;
  json j = json::parse(*text, nullptr, false);
  return j.is_object() ? j : json(nullptr);
}

// Whether the process a coordinator.json or tune.json names may still run:
// on this host its pid must be alive; on another host it cannot be told.
bool MayBeRunning(const json& info) {
  if (info.value("host", "") != ThisHost()) return true;
  const json& pid = info.contains("pid") ? info["pid"] : json(nullptr);
  return pid.is_number_integer() && ProcessAlive(pid.get<long long>());
}

// The address of a running trial's own dashboard, or "".
std::string TrialDashboard(const Trial& t) {
  if (t.state != "running" || t.run_dir.empty()) return "";
  const json c = ReadJsonObject(t.run_dir + "/coordinator.json");
  if (c.is_null() || !c.contains("address") || !c["address"].is_string() || !MayBeRunning(c)) return "";
  return c["address"].get<std::string>();
}

double NumberOr(const json& j, const char* key, double fallback) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

void AppendInfo(const json& study, std::string* out) {
  PromFamily f("polis_study_info", "gauge", "The study's name, state and objective (the value is always 1).");
  f.Add(fmt::format("study=\"{}\",state=\"{}\",objective=\"{}\",direction=\"{}\"",
                    PromLabelValue(study.value("name", "")), PromLabelValue(study.value("state", "")),
                    PromLabelValue(study.value("objective", "")), PromLabelValue(study.value("direction", ""))),
        1);
  f.AppendTo(out);
}

void AppendTrialCounts(const json& trials, std::string* out) {
  std::map<std::string, int> by_state = {{"running", 0}, {"paused", 0}, {"completed", 0}, {"stopped", 0}, {"failed", 0}};
  for (const json& t : trials)
    if (t.is_object()) by_state[t.value("state", "unknown")]++;
  PromFamily f("polis_study_trials", "gauge", "Trials of the study by state.");
  for (const auto& [state, n] : by_state) f.Add(fmt::format("state=\"{}\"", PromLabelValue(state)), n);
  f.AppendTo(out);
}

void AppendBest(const json& study, std::string* out) {
  const json& best = study.contains("best") ? study["best"] : json(nullptr);
  if (!best.is_object() || !best.contains("trial") || !best["trial"].is_string()) return;
  PromFamily value("polis_study_best_value", "gauge", "The objective of the best trial so far.");
  value.Add("", NumberOr(best, "value", NAN));
  value.AppendTo(out);
  PromFamily trial("polis_study_best_trial", "gauge", "The number of the best trial so far (trial 0003: 3).");
  trial.Add("", std::atof(best["trial"].get<std::string>().c_str()));
  trial.AppendTo(out);
}

void AppendTotals(const json& study, const json& trials, std::string* out) {
  double trained = 0;
  for (const json& t : trials) trained += NumberOr(t, "epochs_done", 0);  // 0 for a non-object
  PromFamily epochs("polis_study_epochs_total", "counter", "Epochs the trials have trained, summed over trials.");
  epochs.Add("", trained);
  epochs.AppendTo(out);
  PromFamily elapsed("polis_study_elapsed_seconds", "gauge", "Seconds polis-tune has run this study (summed over resumes).");
  elapsed.Add("", NumberOr(study, "wall_seconds", 0));
  elapsed.AppendTo(out);
}

void AppendPerTrial(const json& trials, std::string* out) {
  PromFamily value("polis_study_trial_value", "gauge", "The objective of each trial at its kept epoch.");
  PromFamily epochs("polis_study_trial_epochs", "gauge", "Epochs each trial has trained.");
  for (const json& t : trials) {
    if (!t.is_object()) continue;
    const std::string label = fmt::format("trial=\"{}\"", PromLabelValue(t.value("id", "")));
    if (t.contains("value") && t["value"].is_number()) value.Add(label, t["value"].get<double>());
    epochs.Add(label, NumberOr(t, "epochs_done", 0));
  }
  value.AppendTo(out);
  epochs.AppendTo(out);
}

}  // namespace

json StudyDocument(const StudyState& s) {
  json doc = StudyJson(s);
  for (size_t i = 0; i < s.trials.size(); ++i) {
    const std::string address = TrialDashboard(s.trials[i]);
    if (!address.empty()) doc["trials"][i]["dashboard"] = address;
  }
  return doc;
}

std::string StudyPrometheusText(const json& study) {
  std::string out;
  if (!study.is_object()) return out;
  const json trials = study.contains("trials") && study["trials"].is_array() ? study["trials"] : json::array();
  AppendInfo(study, &out);
  AppendTrialCounts(trials, &out);
  AppendBest(study, &out);
  AppendTotals(study, trials, &out);
  AppendPerTrial(trials, &out);
  return out;
}

std::optional<json> RunningTuneInfo(const std::string& study_dir) {
  json info = ReadJsonObject(study_dir + "/" + kTuneInfoFileName);
  if (info.is_null() || info.contains("ended_at") || !MayBeRunning(info)) return std::nullopt;
  return info;
}

StatusOr<std::unique_ptr<StudyServer>> StudyServer::Start(const std::string& listen, const std::string& study_dir,
                                                          const std::string& dashboard_dir) {
  coordinator::Monitor::Options mo;
  mo.listen = listen;
  mo.dashboard_dir = dashboard_dir;
  mo.document_path = "/api/study";
  mo.index_page = "study.html";
  mo.metrics = StudyPrometheusText;
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::Monitor> monitor, coordinator::Monitor::Start(mo));
  json info = {{"pid", static_cast<long long>(getpid())},
               {"host", ThisHost()},
               {"address", monitor->address()},
               {"study_dir", study_dir},
               {"started_at", UtcTimestamp()}};
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(study_dir + "/" + kTuneInfoFileName, info.dump(2) + "\n"));
  return std::unique_ptr<StudyServer>(new StudyServer(std::move(monitor), study_dir, std::move(info)));
}

StudyServer::StudyServer(std::unique_ptr<coordinator::Monitor> monitor, std::string study_dir, json info)
    : monitor_(std::move(monitor)), study_dir_(std::move(study_dir)), info_(std::move(info)) {}

StudyServer::~StudyServer() {
  monitor_.reset();
  info_["ended_at"] = UtcTimestamp();
  if (Status st = WriteFileAtomic(study_dir_ + "/" + kTuneInfoFileName, info_.dump(2) + "\n"); !st.ok())
    std::fprintf(stderr, "polis-tune: %s\n", st.message().c_str());
}

std::string StudyServer::address() const { return monitor_->address(); }

void StudyServer::Publish(const StudyState& s) { monitor_->Publish(StudyDocument(s)); }

}  // namespace polis::tune
