// What a resume may change. A checkpoint (and a kept model artifact) records
// the effective job it was trained under and a hash of the model's parameter
// layout; a resume compares the job it is given with them before any rank
// reads a parameter, and refuses a change that would make the saved state
// mean something else (another model, optimizer, data or schedule), naming
// the field and both values. Stateless functions; safe from any thread.
#pragma once

#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/job_spec.h"
#include "common/nn/model.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis {

// SHA-256 of the model's input shape and, per layer, its name, type and
// parameter tensors (names and shapes, in buffer order): two models with the
// same hash read a flat parameter buffer alike.
std::string ModelLayoutSha256(const nn::Model& model);

// Fields a resume may change: the cluster's size, how long to train, where
// to publish, how often to report and checkpoint, where this host keeps the
// dataset, and how much of the test set to evaluate on.
const std::vector<std::string>& ResumeSafeFields();

// The first difference between the two jobs outside ResumeSafeFields, as
// "field 'optimizer.learning_rate': the checkpoint was trained with 0.001,
// the job says 0.01"; empty when they agree. Unset fields compare by their
// defaults.
std::string FirstUnsafeDifference(const proto::JobSpec& trained, const proto::JobSpec& now);

// What was saved, for CheckResume.
struct SavedTraining {
  std::string what;              // "checkpoint 'runs/x/checkpoints/step-…'"
  int64_t parameter_count = 0;
  std::string model_sha256;      // empty in checkpoints older than this check
  bool has_job = false;
  proto::JobSpec job;            // the effective job it was trained under
  int workers = 0;               // 0: not known (a kept model)
};

// From a checkpoint's manifest; DataLoss naming it if its job text does not
// parse.
StatusOr<SavedTraining> SavedFromManifest(const CheckpointManifest& m);

// InvalidArgument naming `source`, the field and both values when `job`
// (with `model` built from it) cannot continue from `saved` on `workers`
// workers (0: not known). A DP-SGD job also keeps training.epochs and the
// number of workers: its sampling rate, noise and ε are planned for them.
Status CheckResume(const SavedTraining& saved, const proto::JobSpec& job, const nn::Model& model,
                   const std::string& source, int workers = 0);

// Where `polis-train --resume RUN_DIR` starts. A run whose newest
// checkpoint (or, without one, whose kept model RUN_DIR/model.polis) already
// has every epoch the job asks for is `finished`: the coordinator publishes
// it again (to the registry the job names now) and nothing trains.
struct ResumePlan {
  std::string manifest_dir;    // the checkpoint to start from; "" when there is none
  std::string kept_artifact;   // RUN_DIR/model.polis, when it is what a finished run publishes
  bool finished = false;
  int trained_epochs = 0;      // complete epochs behind the saved state
  std::vector<std::string> notes;  // checkpoints skipped, one line each
};

// Checks the job against what was saved (CheckResume) before anything is
// read into a model. NotFound when RUN_DIR holds neither a complete
// checkpoint nor a kept model; FailedPrecondition when only a kept model is
// there and the job asks for more epochs than it was trained for.
StatusOr<ResumePlan> PlanResume(const std::string& run_dir, const LoadedJob& job, const nn::Model& model,
                                int workers = 0);

}  // namespace polis
