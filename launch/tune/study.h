// Loading and checking a study (common/proto/study.proto) and applying a
// trial's settings to the base job by field path, through protobuf
// reflection ("optimizer.learning_rate", "optimizer.type" by enum name,
// "model.layer[3].dense_param.units").
//
// A bad study is refused before any trial starts, with one line naming the
// study file and the field ("param[1] (optimizer.learning_rate):
// log_uniform.min: must be > 0; got 0"). Free functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/job_spec.h"
#include "common/proto/study.pb.h"
#include "common/status.h"

namespace polis::tune {

// One searched setting of a trial: the field path and its value, typed as
// the field is (a JSON number for numbers, a bool, a string for enums and
// strings).
// A trial's value of one searched field; null when the param's `when`
// condition does not hold for the trial (the field is then not set).
struct ParamValue {
  std::string field;
  nlohmann::json value;
  bool operator==(const ParamValue& o) const { return field == o.field && value == o.value; }
};
using Params = std::vector<ParamValue>;

// A study that passed its checks.
struct LoadedStudy {
  proto::StudySpec spec;
  std::string path;          // the study file
  std::string sha256;        // of its bytes
  LoadedJob base;            // the base job (fields checked)
  int max_epochs = 0;        // scheduler.max_epochs or the base job's training.epochs
  int workers = 1;
  int servers = 0;
  std::string registry_root;  // where the best trial is published
  std::string model_name;
  // Ranks one trial starts: a coordinator, its servers and workers.
  int ranks() const { return 1 + servers + workers; }
};

// Parses and checks a study: every field by its range, every param's field
// path against job.proto (a settable singular field; not one the study
// itself controls: name, training.epochs, sync.servers, registry), every
// value the param can take applied to the base job and checked as a job
// field, the objective against what a job of the base job's kind reports,
// and the budget. `base_dir` resolves a relative base_job.
StatusOr<LoadedStudy> ParseStudyText(const std::string& text, const std::string& source,
                                     const std::string& base_dir);
StatusOr<LoadedStudy> LoadStudyFile(const std::string& path);

// The metrics the per-epoch rows of metrics.jsonl carry for a job of this
// kind: classifier or regression, and evaluated each epoch on its
// validation split (val_*) or, without one, on the test set (test_*). The
// one table of them.
const std::vector<std::string>& ReportedMetrics(const proto::JobSpec& job);
// Whether the job holds out a validation split (IDX: dataset.
// validation_fraction or validation_size; CSV: timeseries.validation_months
// or validation_start).
bool HasValidationSplit(const proto::JobSpec& job);
bool IsRegressionJob(const proto::JobSpec& job);

// Sets `field` (a path as in SearchParam.field) of `job` to `value`.
// InvalidArgument naming the path when it names no settable field or the
// value has the wrong type.
Status ApplyParam(proto::JobSpec* job, const std::string& field, const nlohmann::json& value);

// Whether `param` applies given the values drawn for the params before it
// (`so_far`): true without a `when`; else the `when.field` param has a
// non-null value equal to one of `when.value`. `base` types the values.
bool ConditionHolds(const proto::SearchParam& param, const Params& so_far, const proto::JobSpec& base);

// The trial's job: the base job with `params` applied (null ones skipped), named
// "<base name>-t<trial>", checked (ValidateJobFields).
StatusOr<proto::JobSpec> TrialJob(const LoadedStudy& study, const Params& params, const std::string& trial);

// An integer field (int32, int64, uint32, uint64).
bool IsIntegerField(const google::protobuf::FieldDescriptor* field);

// The field a param path ends at in `base` (for its type), or null.
const google::protobuf::FieldDescriptor* ParamField(const proto::JobSpec& base, const std::string& path);

// "0.0031", "SGD", "64": a value as a person reads it (6 significant digits);
// "-" for null (a param whose condition did not hold).
std::string ParamText(const nlohmann::json& value);
// The same to the last digit (study.csv, the published model's lineage);
// "" for null.
std::string ParamExact(const nlohmann::json& value);

}  // namespace polis::tune
