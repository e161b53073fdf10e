// The state of a study: its trials, their settings, rung results and
// status, kept in STUDY_DIR/study.json, which is the study's memory across
// a crash: polis-tune --resume reads it back and neither repeats a finished
// trial nor loses a running one.
//
// study.json: {"format": "polis-study-1", "name": ..., "state": ...,
//   "trials": [{"id": "0003", "params": {...}, "state": ..., "rung": k,
//               "rung_values": [...], "curve": [[epoch, value], ...], ...}],
//   ..., "sha256": "<SHA-256 of the compact JSON of every other key>"}
// written with WriteFileAtomic (temp file, fsync, rename, directory fsync);
// a reader verifies the checksum. Also study.csv, the table of trials.
//
// Values only; callers serialise access (polis-tune's main thread writes).
#pragma once

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "launch/tune/asha.h"
#include "launch/tune/study.h"

namespace polis::tune {

inline constexpr char kStudyFileName[] = "study.json";
inline constexpr char kStudyFormat[] = "polis-study-1";

// Trial states:
//   running    a segment (polis-run) is running or was cut short: it
//              continues from its checkpoint
//   paused     finished a rung below the top; ASHA may promote it
//   completed  trained max_epochs
//   stopped    ASHA stopped it at its rung (the study ended without
//              promoting it)
//   failed     the job failed or did not report the objective (`error`)
struct Trial {
  int index = 0;
  std::string id;                 // "0003"
  Params params;
  std::string state = "running";
  int rung = 0;                   // the rung it trains to (running) or reached
  int target_epochs = 0;          // epochs of its current or last segment
  int epochs_done = 0;            // complete epochs reported
  std::vector<double> rung_values;                 // objective at each rung reached
  std::vector<std::pair<int, double>> curve;       // (epoch, objective)
  std::string run_dir;
  long long pid = 0;              // polis-run, while it runs on this machine
  long long slurm_job = 0;        // the Slurm job of the current segment
  int segments = 0;               // polis-run launches
  std::string error;
  std::string started_at, finished_at;
  // The epoch whose model the trial keeps (RUN/model.polis) when that is
  // not the last: a job with training.restore_best publishes its best epoch
  // (result.json "published_epoch"). 0: the last epoch.
  int kept_epoch = 0;
  // The objective of the model the trial keeps.
  bool has_value() const { return !curve.empty(); }
  double final_value() const {
    for (const auto& [e, v] : curve)
      if (kept_epoch > 0 && e == kept_epoch) return v;
    return curve.empty() ? 0 : curve.back().second;
  }
};

struct StudyState {
  std::string name;
  std::string study_file, study_sha256, study_dir;
  std::string state = "running";  // running | done | stopped | failed
  std::string end_reason;         // "the grid is done", "budget.max_trials reached", ...
  std::string objective;
  bool maximize = true;
  std::string sampler, scheduler;
  std::vector<int> rungs;         // epochs of each rung (one rung without ASHA)
  int max_epochs = 0;
  double wall_seconds = 0;        // time polis-tune has run, summed over resumes
  std::string created_at, updated_at;
  std::vector<Trial> trials;
  nlohmann::json published;       // null, or {model, version, alias, root, trial}
};

nlohmann::json StudyJson(const StudyState& s);
StatusOr<StudyState> StudyFromJson(const nlohmann::json& j, const std::string& source);

// STUDY_DIR/study.json, crash-safely, with its checksum.
Status WriteStudyState(const std::string& dir, const StudyState& s);
// DataLoss naming the file when the checksum or the format is wrong.
StatusOr<StudyState> ReadStudyState(const std::string& dir);

// The trial with the best final value among those that report one and did
// not fail; -1 when there is none. Ties: the lower index.
int BestTrial(const StudyState& s);

// Epochs spent or committed: every trial's epochs_done, or the target of a
// running segment.
long long EpochsCommitted(const StudyState& s);

// ASHA's view of the trials: results per rung, and who left each rung.
void RungTables(const StudyState& s, std::vector<std::vector<RungResult>>* rungs,
                std::vector<std::set<int>>* promoted);

// The objective's learning curve from RUN/metrics.jsonl: (epoch, value)
// for epochs 1..max_epoch, the last row of each epoch (an attempt cut short
// may have written one twice); torn or non-JSON lines are skipped. False,
// with `error` naming the epoch, the metric and the keys the row has, when
// a row lacks the metric.
bool ReadObjectiveCurve(const std::string& run_dir, const std::string& metric, int max_epoch,
                        std::vector<std::pair<int, double>>* curve, std::string* error);

// The table of trials: id, state, rung, epochs, each param, the final
// objective, best (1 or 0), error.
std::string StudyCsv(const StudyState& s);

}  // namespace polis::tune
