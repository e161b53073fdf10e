#include "launch/tune/study_state.h"

#include <cmath>
#include <fstream>
#include <map>

#include "common/fs.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;

json TrialJson(const Trial& t) {
  json params = json::object();
  for (const ParamValue& p : t.params) params[p.field] = p.value;
  json fields = json::array();
  for (const ParamValue& p : t.params) fields.push_back(p.field);
  json curve = json::array();
  for (const auto& [e, v] : t.curve) curve.push_back({e, v});
  return {{"index", t.index},
          {"id", t.id},
          {"params", params},
          {"param_order", fields},
          {"state", t.state},
          {"rung", t.rung},
          {"target_epochs", t.target_epochs},
          {"epochs_done", t.epochs_done},
          {"rung_values", t.rung_values},
          {"curve", curve},
          {"value", t.has_value() ? json(t.final_value()) : json(nullptr)},
          {"run_dir", t.run_dir},
          {"pid", t.pid},
          {"slurm_job", t.slurm_job},
          {"segments", t.segments},
          {"error", t.error},
          {"started_at", t.started_at},
          {"finished_at", t.finished_at},
          {"kept_epoch", t.kept_epoch}};
}

Trial TrialFrom(const json& j) {
  Trial t;
  t.index = j.at("index").get<int>();
  t.id = j.at("id").get<std::string>();
  const json& params = j.at("params");
  for (const json& f : j.at("param_order")) t.params.push_back({f.get<std::string>(), params.at(f.get<std::string>())});
  t.state = j.at("state").get<std::string>();
  t.rung = j.at("rung").get<int>();
  t.target_epochs = j.at("target_epochs").get<int>();
  t.epochs_done = j.at("epochs_done").get<int>();
  t.rung_values = j.at("rung_values").get<std::vector<double>>();
  for (const json& p : j.at("curve")) t.curve.emplace_back(p.at(0).get<int>(), p.at(1).get<double>());
  t.run_dir = j.at("run_dir").get<std::string>();
  t.pid = j.at("pid").get<long long>();
  t.slurm_job = j.at("slurm_job").get<long long>();
  t.segments = j.at("segments").get<int>();
  t.error = j.at("error").get<std::string>();
  t.started_at = j.at("started_at").get<std::string>();
  t.finished_at = j.at("finished_at").get<std::string>();
  t.kept_epoch = j.value("kept_epoch", 0);
  return t;
}

std::string CsvField(std::string s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
  return out + "\"";
}

}  // namespace

json StudyJson(const StudyState& s) {
  json trials = json::array();
  for (const Trial& t : s.trials) trials.push_back(TrialJson(t));
  const int best = BestTrial(s);
  return {{"format", kStudyFormat},
          {"name", s.name},
          {"study_file", s.study_file},
          {"study_sha256", s.study_sha256},
          {"study_dir", s.study_dir},
          {"state", s.state},
          {"end_reason", s.end_reason},
          {"objective", s.objective},
          {"direction", s.maximize ? "MAXIMIZE" : "MINIMIZE"},
          {"sampler", s.sampler},
          {"scheduler", s.scheduler},
          {"rungs", s.rungs},
          {"max_epochs", s.max_epochs},
          {"wall_seconds", s.wall_seconds},
          {"epochs_total", EpochsCommitted(s)},
          {"created_at", s.created_at},
          {"updated_at", s.updated_at},
          {"best", best < 0 ? json(nullptr)
                            : json{{"trial", s.trials[best].id}, {"value", s.trials[best].final_value()},
                                   {"epochs", s.trials[best].epochs_done}}},
          {"trials", trials},
          {"published", s.published}};
}

StatusOr<StudyState> StudyFromJson(const json& j, const std::string& source) {
  try {
    if (j.value("format", "") != kStudyFormat)
      return DataLoss("{}: not a study state (format '{}', expected '{}')", source, j.value("format", ""),
                      kStudyFormat);
    StudyState s;
    s.name = j.at("name").get<std::string>();
    s.study_file = j.at("study_file").get<std::string>();
    s.study_sha256 = j.at("study_sha256").get<std::string>();
    s.study_dir = j.at("study_dir").get<std::string>();
    s.state = j.at("state").get<std::string>();
    s.end_reason = j.at("end_reason").get<std::string>();
    s.objective = j.at("objective").get<std::string>();
    s.maximize = j.at("direction").get<std::string>() == "MAXIMIZE";
    s.sampler = j.at("sampler").get<std::string>();
    s.scheduler = j.at("scheduler").get<std::string>();
    s.rungs = j.at("rungs").get<std::vector<int>>();
    s.max_epochs = j.at("max_epochs").get<int>();
    s.wall_seconds = j.at("wall_seconds").get<double>();
    s.created_at = j.at("created_at").get<std::string>();
    s.updated_at = j.at("updated_at").get<std::string>();
    for (const json& t : j.at("trials")) s.trials.push_back(TrialFrom(t));
    s.published = j.at("published");
    return s;
  } catch (const json::exception& e) {
    return DataLoss("{}: malformed study state: {}", source, e.what());
  }
}

Status WriteStudyState(const std::string& dir, const StudyState& s) {
  json j = StudyJson(s);
  j["sha256"] = Sha256Hex(j.dump());
  return WriteFileAtomic(dir + "/" + kStudyFileName, j.dump(1) + "\n");
}

StatusOr<StudyState> ReadStudyState(const std::string& dir) {
  const std::string path = dir + "/" + kStudyFileName;
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("{}: not JSON", path);
  if (!j.contains("sha256") || !j["sha256"].is_string()) return DataLoss("{}: no sha256", path);
  const std::string want = j["sha256"].get<std::string>();
  j.erase("sha256");
  if (Sha256Hex(j.dump()) != want) return DataLoss("{}: checksum mismatch (the file was changed or damaged)", path);
  return StudyFromJson(j, path);
}

int BestTrial(const StudyState& s) {
  int best = -1;
  for (const Trial& t : s.trials) {
    if (t.state == "failed" || !t.has_value() || !std::isfinite(t.final_value())) continue;
    if (best < 0) { best = t.index; continue; }
    const double b = s.trials[best].final_value(), v = t.final_value();
    if (s.maximize ? v > b : v < b) best = t.index;
  }
  return best;
}

long long EpochsCommitted(const StudyState& s) {
  long long total = 0;
  for (const Trial& t : s.trials) total += t.state == "running" ? std::max(t.target_epochs, t.epochs_done) : t.epochs_done;
  return total;
}

void RungTables(const StudyState& s, std::vector<std::vector<RungResult>>* rungs,
                std::vector<std::set<int>>* promoted) {
  rungs->assign(s.rungs.size(), {});
  promoted->assign(s.rungs.size(), {});
  for (const Trial& t : s.trials) {
    for (size_t k = 0; k < t.rung_values.size() && k < rungs->size(); ++k)
      (*rungs)[k].push_back({t.index, t.rung_values[k]});
    // Left its rung: promoted, or done for good (a job that stopped itself
    // early is never continued).
    const int left = t.state == "completed" ? static_cast<int>(t.rung_values.size()) : t.rung;
    for (int k = 0; k < left && k < static_cast<int>(promoted->size()); ++k) (*promoted)[k].insert(t.index);
  }
}

bool ReadObjectiveCurve(const std::string& run_dir, const std::string& metric, int max_epoch,
                        std::vector<std::pair<int, double>>* curve, std::string* error) {
  std::map<int, json> rows;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.is_object() || !row.contains("epoch") || !row["epoch"].is_number_integer())
      continue;
    rows[row["epoch"].get<int>()] = row;
  }
  curve->clear();
  for (const auto& [epoch, row] : rows) {
    if (epoch < 1 || epoch > max_epoch) continue;
    if (!row.contains(metric) || !row[metric].is_number()) {
      std::vector<std::string> keys;
      for (auto it = row.begin(); it != row.end(); ++it) keys.push_back(it.key());
      *error = fmt::format("metrics.jsonl epoch {} has no '{}' (its row has: {})", epoch, metric, fmt::join(keys, ", "));
      return false;
    }
    curve->emplace_back(epoch, row[metric].get<double>());
  }
  return true;
}

std::string StudyCsv(const StudyState& s) {
  std::vector<std::string> fields;
  if (!s.trials.empty())
    for (const ParamValue& p : s.trials.front().params) fields.push_back(p.field);
  std::string out = "trial,state,rung,epochs";
  for (const std::string& f : fields) out += "," + CsvField(f);
  out += "," + CsvField(s.objective) + ",best,run_dir,error\n";
  const int best = BestTrial(s);
  for (const Trial& t : s.trials) {
    out += fmt::format("{},{},{},{}", t.id, t.state, t.rung, t.epochs_done);
    for (const ParamValue& p : t.params) out += "," + CsvField(ParamExact(p.value));
    out += "," + (t.has_value() ? fmt::format("{:.6g}", t.final_value()) : std::string());
    out += fmt::format(",{},{},{}\n", t.index == best ? 1 : 0, CsvField(t.run_dir), CsvField(t.error));
  }
  return out;
}

}  // namespace polis::tune
