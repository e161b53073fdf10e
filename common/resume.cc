#include "common/resume.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>

#include <algorithm>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "common/nn/layer.h"
#include "common/privacy/dp_plan.h"

namespace polis {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::TextFormat;

bool IsSafe(const std::string& path) {
  for (const std::string& safe : ResumeSafeFields())
    if (path == safe || (path.size() > safe.size() && path.compare(0, safe.size(), safe) == 0 &&
                         path[safe.size()] == '.'))
      return true;
  return false;
}

std::string Value(const Message& m, const FieldDescriptor* f, int index) {
  std::string out;
  TextFormat::PrintFieldValueToString(m, f, index, &out);
  if (out.size() > 80) out = out.substr(0, 80) + "…";
  return out;
}

std::string Join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Depth-first over every field of the descriptor (set or not: unset fields
// read as their defaults), skipping the safe ones.
std::string Diff(const Message& a, const Message& b, const std::string& prefix) {
  const auto* d = a.GetDescriptor();
  const Reflection* ra = a.GetReflection();
  const Reflection* rb = b.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = Join(prefix, f->name());
    if (IsSafe(path)) continue;
    if (f->is_repeated()) {
      const int na = ra->FieldSize(a, f), nb = rb->FieldSize(b, f);
      for (int k = 0; k < std::min(na, nb); ++k) {
        const std::string at = fmt::format("{}[{}]", path, k);
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          std::string inner = Diff(ra->GetRepeatedMessage(a, f, k), rb->GetRepeatedMessage(b, f, k), at);
          if (!inner.empty()) return inner;
        } else if (Value(a, f, k) != Value(b, f, k)) {
          return fmt::format("field '{}': the checkpoint was trained with {}, the job says {}", at,
                             Value(a, f, k), Value(b, f, k));
        }
      }
      if (na != nb)
        return fmt::format("field '{}': the checkpoint was trained with {} entries, the job has {}", path,
                           na, nb);
      continue;
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      std::string inner = Diff(ra->GetMessage(a, f), rb->GetMessage(b, f), path);
      if (!inner.empty()) return inner;
    } else if (Value(a, f, -1) != Value(b, f, -1)) {
      return fmt::format("field '{}': the checkpoint was trained with {}, the job says {}", path,
                         Value(a, f, -1), Value(b, f, -1));
    }
  }
  return "";
}

}  // namespace

std::string ModelLayoutSha256(const nn::Model& model) {
  std::string text = "input " + nn::ShapeString(model.input_shape()) + "\n";
  for (const auto& l : model.layers()) {
    text += fmt::format("layer {} {} {} -> {}\n", l.name, l.type, nn::ShapeString(l.in_shape),
                        nn::ShapeString(l.out_shape));
    for (const auto& p : l.params)
      text += fmt::format("  {} {} @{}\n", p.name, nn::ShapeString(p.shape), p.offset);
  }
  return Sha256Hex(text);
}

const std::vector<std::string>& ResumeSafeFields() {
  static const std::vector<std::string> kSafe = {
      "name",
      "training.epochs",
      "training.report_every_steps",
      "training.eval_batch_size",
      "training.checkpoint_every_steps",
      "training.checkpoint_epochs",
      "training.keep_checkpoints",
      "sync.servers",
      "sync.ps_piece_bytes",
      "sync.verify_replicas",
      "registry",
      "dataset.dir",
      "dataset.timeseries.path",
      "dataset.test_limit",
  };
  return kSafe;
}

std::string FirstUnsafeDifference(const proto::JobSpec& trained, const proto::JobSpec& now) {
  return Diff(trained, now, "");
}

StatusOr<SavedTraining> SavedFromManifest(const CheckpointManifest& m) {
  SavedTraining saved;
  saved.what = fmt::format("checkpoint '{}'", m.dir);
  saved.parameter_count = m.parameter_count;
  saved.model_sha256 = m.model_sha256;
  saved.workers = m.workers;
  if (!m.job_text.empty()) {
    if (!TextFormat::ParseFromString(m.job_text, &saved.job))
      return DataLoss("'{}/manifest.json': its job does not parse", m.dir);
    saved.has_job = true;
  }
  return saved;
}

Status CheckResume(const SavedTraining& saved, const proto::JobSpec& job, const nn::Model& model,
                   const std::string& source, int workers) {
  const std::string keep = "a resume may change only the cluster's size, training.epochs, the registry, "
                           "reporting and checkpoint settings and the dataset's location; start a new run "
                           "to change anything else";
  if (saved.has_job) {
    std::string diff = FirstUnsafeDifference(saved.job, job);
    if (!diff.empty())
      return InvalidArgument("{}: cannot resume from {}: {} ({})", source, saved.what, diff, keep);
  }
  if (saved.has_job && privacy::WantsDpSgd(saved.job)) {
    const std::string why = "a DP-SGD job's sampling rate, noise and epsilon are planned for its epochs and "
                            "workers; start a new run to change them";
    if (saved.job.training().epochs() != job.training().epochs())
      return InvalidArgument("{}: cannot resume from {}: field 'training.epochs': the checkpoint was trained "
                             "for {}, the job says {} ({})",
                             source, saved.what, saved.job.training().epochs(), job.training().epochs(), why);
    if (workers > 0 && saved.workers > 0 && workers != saved.workers)
      return InvalidArgument("{}: cannot resume from {}: it was trained on {} workers, this run has {} ({})",
                             source, saved.what, saved.workers, workers, why);
  }
  if (saved.parameter_count != model.parameter_count())
    return InvalidArgument("{}: cannot resume from {}: field 'model.layer': the job's model has {} "
                           "parameters but the checkpoint holds {} ({})",
                           source, saved.what, model.parameter_count(), saved.parameter_count, keep);
  if (!saved.model_sha256.empty() && saved.model_sha256 != ModelLayoutSha256(model))
    return InvalidArgument("{}: cannot resume from {}: field 'model.layer': the job's layers lay out "
                           "their parameters differently from the checkpoint's ({})",
                           source, saved.what, keep);
  return Status::Ok();
}

StatusOr<ResumePlan> PlanResume(const std::string& run_dir, const LoadedJob& job, const nn::Model& model,
                                int workers) {
  ResumePlan plan;
  const int epochs = job.spec.training().epochs();
  const std::string kept = run_dir + "/" + kArtifactFileName;
  auto m = FindLatestCheckpoint(run_dir, &plan.notes);
  if (m.ok()) {
    POLIS_ASSIGN_OR_RETURN(SavedTraining saved, SavedFromManifest(*m));
    POLIS_RETURN_IF_ERROR(CheckResume(saved, job.spec, model, job.path, workers));
    plan.manifest_dir = m->dir;
    plan.trained_epochs = m->epoch + (m->epoch_complete ? 1 : 0);
    plan.finished = plan.trained_epochs >= epochs;
    // A finished run publishes the model it kept, when that is intact and
    // holds the checkpoint's weights; else one built from the checkpoint.
    if (plan.finished && PathExists(kept)) {
      auto art = ReadArtifactFile(kept);
      auto full = LoadFullState(*m);
      if (art.ok() && full.ok() && art->weights == full->params) plan.kept_artifact = kept;
      else if (!art.ok()) plan.notes.push_back(fmt::format("not using {}: {}", kept, art.status().message()));
    }
    return plan;
  }
  if (m.status().code() != Code::kNotFound || !PathExists(kept))
    return Status(m.status().code(),
                  fmt::format("cannot resume {}: {}{}", run_dir, m.status().message(),
                              PathExists(kept) ? "" : ", and it keeps no trained model"));
  // No checkpoint (all-reduce runs keep none), but a trained model.
  POLIS_ASSIGN_OR_RETURN(ModelArtifact art, ReadArtifactFile(kept));
  SavedTraining saved;
  saved.what = fmt::format("the trained model '{}'", kept);
  saved.parameter_count = art.header.parameter_count();
  saved.has_job = true;
  saved.job = art.header.job();
  POLIS_RETURN_IF_ERROR(CheckResume(saved, job.spec, model, job.path));
  plan.trained_epochs = art.header.job().training().epochs();
  if (plan.trained_epochs < epochs)
    return FailedPrecondition("cannot resume {}: it keeps no checkpoint, only the model trained for {} "
                              "epoch(s) ({}); training.epochs {} asks for more: start a new run",
                              run_dir, plan.trained_epochs, kept, epochs);
  plan.finished = true;
  plan.kept_artifact = kept;
  return plan;
}

}  // namespace polis
