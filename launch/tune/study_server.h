// StudyServer: polis-tune's HTTP view of a running study (docs/tuning.md,
// "Watching a study"), a coordinator::Monitor serving a study instead of a
// job:
//
//   GET /            the study page (launch/dashboard/study.html)
//   GET /api/study   the study document: study.json's schema, and each
//                    running trial's "dashboard" (its coordinator's address)
//   GET /metrics     the study in Prometheus text (StudyPrometheusText)
//   GET /healthz     "ok"
//
// It also records where it serves in STUDY_DIR/tune.json (pid, host,
// address, started_at; written with WriteFileAtomic) and marks that file
// ended (ended_at) when destroyed, so `polisctl tune status` shows the
// address only while polis-tune runs.
//
// Thread-safety: Publish may be called from any thread; polis-tune calls it
// from its main thread whenever it saves the study. The HTTP thread only
// reads published snapshots.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "launch/tune/study_state.h"

namespace polis::coordinator {
class Monitor;
}

namespace polis::tune {

inline constexpr char kTuneInfoFileName[] = "tune.json";

// StudyJson(s) with "dashboard": "<address>" added to each running trial
// whose run directory holds a coordinator.json with an address (and, on
// this host, a live pid).
nlohmann::json StudyDocument(const StudyState& s);

// The study's metrics: polis_study_info, polis_study_trials{state},
// polis_study_best_value, polis_study_best_trial, polis_study_epochs_total,
// polis_study_elapsed_seconds, polis_study_trial_value{trial},
// polis_study_trial_epochs{trial}; each family with HELP and TYPE.
std::string StudyPrometheusText(const nlohmann::json& study);

// STUDY_DIR/tune.json when the polis-tune it names is still serving: not
// marked ended, and (on this host) its pid alive. nullopt otherwise.
std::optional<nlohmann::json> RunningTuneInfo(const std::string& study_dir);

class StudyServer {
 public:
  // Listens on `listen` (HOST:PORT, port 0: ephemeral) and writes
  // STUDY_DIR/tune.json. InvalidArgument naming the address when it is
  // malformed; IoError when it cannot be bound or tune.json not written.
  // `dashboard_dir` "": the built-in dashboard directory.
  static StatusOr<std::unique_ptr<StudyServer>> Start(const std::string& listen, const std::string& study_dir,
                                                      const std::string& dashboard_dir = "");
  ~StudyServer();  // stops serving, marks tune.json ended
  StudyServer(const StudyServer&) = delete;
  StudyServer& operator=(const StudyServer&) = delete;

  // "http://HOST:PORT"
  std::string address() const;
  // Serves StudyDocument(s) from now on.
  void Publish(const StudyState& s);

 private:
  StudyServer(std::unique_ptr<coordinator::Monitor> monitor, std::string study_dir, nlohmann::json info);
  std::unique_ptr<coordinator::Monitor> monitor_;
  std::string study_dir_;
  nlohmann::json info_;  // what tune.json holds
};

}  // namespace polis::tune
