#include "common/job_spec.h"
#include "common/text_proto.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <type_traits>
#include <vector>

#include "common/artifact/artifact.h"
#include "common/comm/communicator.h"
#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "common/data/shard_format.h"
#include "common/data/split.h"
#include "common/early_stopping.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/nn/executor.h"
#include "common/optimizer.h"
#include "polis_config.h"

namespace polis {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;


Status FieldError(const std::string& source, const std::string& field, const std::string& why) {
  return InvalidArgument("{}: field '{}': {}", source, field, why);
}

// Strings that hold file paths may be as long as a path; every other string
// (names, columns, types, URLs) is short, so a message may echo it whole.
constexpr size_t kMaxPathBytes = 4096;
constexpr size_t kMaxStringBytes = 256;
constexpr size_t kMaxJobNameBytes = 128;
// model_card's free text (descriptions, intended use, limitations).
constexpr size_t kMaxTextBytes = 4096;
constexpr int kMaxRepeated = 4096;

bool IsPathField(const FieldDescriptor* f) {
  static const std::set<std::string> kPaths = {
      "polis.proto.DatasetSpec.dir",          "polis.proto.DatasetSpec.train_images",
      "polis.proto.DatasetSpec.train_labels", "polis.proto.DatasetSpec.test_images",
      "polis.proto.DatasetSpec.test_labels",  "polis.proto.TimeSeriesSpec.path",
      "polis.proto.RegistrySpec.root",        "polis.proto.RegistrySpec.token_file",
      "polis.proto.MonitoringSpec.timeline_path"};
  return kPaths.count(f->full_name()) > 0;
}

bool IsTextField(const FieldDescriptor* f) { return f->containing_type() == proto::ModelCardSpec::descriptor(); }

// Every field of job.proto with a (range) annotation, parsed once.
class RangeTable {
 public:
  static const RangeTable& Get() {
    static const RangeTable* table = new RangeTable();
    return *table;
  }
  const FieldRange* Find(const FieldDescriptor* f) const {
    auto it = ranges_.find(f);
    return it == ranges_.end() ? nullptr : &it->second;
  }

 private:
  RangeTable() {
    std::set<const Descriptor*> seen;
    Add(proto::JobSpec::descriptor(), &seen);
  }
  void Add(const Descriptor* d, std::set<const Descriptor*>* seen) {
    if (!seen->insert(d).second) return;
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) Add(f->message_type(), seen);
      if (!f->options().HasExtension(proto::range)) continue;
      auto r = ParseFieldRange(f->options().GetExtension(proto::range));
      // A malformed annotation is a bug in job.proto, found by job_spec_test.
      POLIS_ENFORCE_OK(r.status());
      ranges_.emplace(f, *r);
    }
  }
  std::map<const FieldDescriptor*, FieldRange> ranges_;
};

std::string BoundString(long double v) {
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  if (v == std::floor(v) && std::fabs(v) < 1e18L) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", static_cast<double>(v));
}

std::string RangeWords(const FieldRange& r) {
  return fmt::format("{}{}, {}{}", r.lo_open ? "(" : "[", BoundString(r.lo), BoundString(r.hi),
                     r.hi_open ? ")" : "]");
}

// A numeric value of a set field, as a number and as the user wrote it.
struct NumericValue {
  long double value = 0;
  std::string text;
  bool finite = true;
};

template <typename T>
NumericValue Numeric(T x) {
  NumericValue v;
  v.value = static_cast<long double>(x);
  if constexpr (std::is_floating_point_v<T>) {
    v.text = fmt::format("{}", x);
    v.finite = std::isfinite(x);
  } else {
    v.text = std::to_string(x);
  }
  return v;
}

NumericValue ReadNumeric(const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: return Numeric(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64: return Numeric(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32: return Numeric(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT64: return Numeric(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT: return Numeric(rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_DOUBLE: return Numeric(rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    default: return {};
  }
}

Status CheckString(const std::string& source, const std::string& path, const FieldDescriptor* f,
                   const std::string& s) {
  const size_t max = IsPathField(f) ? kMaxPathBytes : IsTextField(f) ? kMaxTextBytes : kMaxStringBytes;
  if (s.size() > max)
    return FieldError(source, path,
                      fmt::format("\"{}\" is too long: at most {} bytes", EchoValue(s, 40), max));
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f)
      return FieldError(source, path,
                        fmt::format("\"{}\" holds control byte 0x{:02x} at offset {}",
                                    EchoValue(s), c, i));
  }
  return Status::Ok();
}

// Walks every set field: numbers against their declared range (floats must
// be finite), strings for length and control bytes, repeated fields for count.
Status CheckValues(const Message& m, const std::string& prefix, const std::string& source) {
  const Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string base = prefix + f->name();
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    if (n > kMaxRepeated)
      return FieldError(source, base, fmt::format("{} entries; at most {}", n, kMaxRepeated));
    for (int i = 0; i < n; ++i) {
      const int index = f->is_repeated() ? i : -1;
      const std::string path = f->is_repeated() ? fmt::format("{}[{}]", base, i) : base;
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const Message& sub = f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f);
        POLIS_RETURN_IF_ERROR(CheckValues(sub, path + ".", source));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
        std::string scratch;
        const std::string& s = f->is_repeated() ? r->GetRepeatedStringReference(m, f, i, &scratch)
                                                : r->GetStringReference(m, f, &scratch);
        POLIS_RETURN_IF_ERROR(CheckString(source, path, f, s));
      } else if (IsNumericField(f)) {
        const NumericValue v = ReadNumeric(m, f, index);
        if (!v.finite) return FieldError(source, path, fmt::format("must be a finite number; got {}", v.text));
        const FieldRange* range = DeclaredRange(f);
        if (range == nullptr)  // job_spec_test refuses a numeric field without one
          return InternalError("{}: field '{}' has no declared range in job.proto", source, path);
        if (!range->Contains(v.value))
          return FieldError(source, path, fmt::format("must be in {}; got {}", RangeWords(*range), v.text));
      }
    }
  }
  return Status::Ok();
}

// Whether the field at a dotted path is set explicitly (has_, or a
// non-empty repeated field); false when a message on the way is not set.
bool IsSet(const Message& root, std::string_view path) {
  const Message* m = &root;
  while (true) {
    const size_t dot = path.find('.');
    const std::string name(path.substr(0, dot));
    const FieldDescriptor* f = m->GetDescriptor()->FindFieldByName(name);
    POLIS_ENFORCE(f != nullptr);
    const Reflection* r = m->GetReflection();
    const bool set = f->is_repeated() ? r->FieldSize(*m, f) > 0 : r->HasField(*m, f);
    if (dot == std::string_view::npos || !set) return set;
    m = &r->GetMessage(*m, f);
    path.remove_prefix(dot + 1);
  }
}

// Settings that only mean something in one mode: set explicitly in another,
// they would be ignored, so the check refuses them.
struct ModeRule {
  const char* field;
  bool (*applies)(const proto::JobSpec&);
  const char* when;
};

bool IsPs(const proto::JobSpec& s) { return s.sync().mode() == proto::SyncSpec::PARAMETER_SERVER; }
bool IsAllreduce(const proto::JobSpec& s) { return s.sync().mode() == proto::SyncSpec::ALLREDUCE; }
bool IsIdx(const proto::JobSpec& s) { return s.dataset().format() == proto::DatasetSpec::IDX; }
bool IsCsv(const proto::JobSpec& s) { return s.dataset().format() == proto::DatasetSpec::CSV; }
bool IsShards(const proto::JobSpec& s) { return s.dataset().format() == proto::DatasetSpec::SHARDS; }
bool IsImages(const proto::JobSpec& s) { return IsIdx(s) || IsShards(s); }
bool IsSgd(const proto::JobSpec& s) { return s.optimizer().type() == proto::OptimizerSpec::SGD; }
bool IsAdam(const proto::JobSpec& s) { return !IsSgd(s); }
bool IsSsp(const proto::JobSpec& s) { return IsPs(s) && s.sync().consistency() == proto::SyncSpec::SSP; }
bool IsHuber(const proto::JobSpec& s) { return s.model().loss() == proto::ModelSpec::HUBER; }
bool IsStep(const proto::JobSpec& s) { return s.optimizer().schedule().type() == proto::LrSchedule::STEP; }
bool IsCosine(const proto::JobSpec& s) { return s.optimizer().schedule().type() == proto::LrSchedule::COSINE; }
bool IsForwardFill(const proto::JobSpec& s) {
  return s.dataset().timeseries().missing_policy() == proto::TimeSeriesSpec::Missing::FORWARD_FILL;
}
bool HasUrl(const proto::JobSpec& s) { return s.registry().has_url(); }
bool HasNoUrl(const proto::JobSpec& s) { return !s.registry().has_url(); }
bool HasTimeline(const proto::JobSpec& s) { return !s.monitoring().timeline_path().empty(); }

const ModeRule kModeRules[] = {
    {"sync.consistency", IsPs, "sync.mode PARAMETER_SERVER"},
    {"sync.staleness", IsSsp, "sync.consistency SSP (parameter servers)"},
    {"sync.ps_piece_bytes", IsPs, "sync.mode PARAMETER_SERVER"},
    {"sync.allreduce_algorithm", IsAllreduce, "sync.mode ALLREDUCE"},
    {"sync.compression", IsAllreduce, "sync.mode ALLREDUCE"},
    {"sync.bucket_bytes", IsAllreduce, "sync.mode ALLREDUCE"},
    {"sync.verify_replicas", IsAllreduce, "sync.mode ALLREDUCE"},
    {"sync.local_steps", IsAllreduce, "sync.mode ALLREDUCE"},
    {"sync.delayed_averaging", IsAllreduce, "sync.mode ALLREDUCE"},
    {"model.huber_delta", IsHuber, "model.loss HUBER"},
    {"optimizer.beta1", IsAdam, "optimizer.type ADAM or ADAMW"},
    {"optimizer.beta2", IsAdam, "optimizer.type ADAM or ADAMW"},
    {"optimizer.epsilon", IsAdam, "optimizer.type ADAM or ADAMW"},
    {"optimizer.momentum", IsSgd, "optimizer.type SGD"},
    {"optimizer.nesterov", IsSgd, "optimizer.type SGD"},
    {"optimizer.schedule.step_size", IsStep, "optimizer.schedule.type STEP"},
    {"optimizer.schedule.gamma", IsStep, "optimizer.schedule.type STEP"},
    {"optimizer.schedule.total_steps", IsCosine, "optimizer.schedule.type COSINE"},
    {"optimizer.schedule.min_lr", IsCosine, "optimizer.schedule.type COSINE"},
    {"dataset.dir", IsImages, "dataset.format IDX or SHARDS"},
    {"dataset.train_images", IsIdx, "dataset.format IDX"},
    {"dataset.train_labels", IsIdx, "dataset.format IDX"},
    {"dataset.test_images", IsIdx, "dataset.format IDX"},
    {"dataset.test_labels", IsIdx, "dataset.format IDX"},
    {"dataset.scale", IsImages, "dataset.format IDX or SHARDS"},
    {"dataset.shift", IsImages, "dataset.format IDX or SHARDS"},
    {"dataset.num_classes", IsIdx,
     "dataset.format IDX (a CSV time series is regression; SHARDS takes the classes from dataset.json)"},
    {"dataset.validation_fraction", IsImages,
     "dataset.format IDX or SHARDS (a time series splits by time: dataset.timeseries.validation_months)"},
    {"dataset.validation_size", IsImages,
     "dataset.format IDX or SHARDS (a time series splits by time: dataset.timeseries.validation_months)"},
    {"dataset.shards", IsShards, "dataset.format SHARDS"},
    {"dataset.augmentation", IsShards, "dataset.format SHARDS"},
    {"dataset.source", IsShards, "dataset.format SHARDS (every rank reads IDX and CSV data whole)"},
    {"dataset.timeseries", IsCsv, "dataset.format CSV"},
    {"dataset.timeseries.max_fill_steps", IsForwardFill, "dataset.timeseries.missing_policy FORWARD_FILL"},
    {"registry.root", HasNoUrl, "publishing to a directory (not with registry.url)"},
    {"registry.token_file", HasUrl, "registry.url"},
    {"monitoring.timeline_max_mb", HasTimeline, "monitoring.timeline_path (or --timeline FILE)"},
};

// The *_param a layer type reads; any other *_param set on it is refused.
const std::map<std::string, std::string>& LayerParamOwners() {
  static const auto* owners = new std::map<std::string, std::string>{
      {"conv2d_param", "Conv2D"},
      {"pool2d_param", "MaxPool2D"},
      {"dense_param", "Dense"},
      {"embedding_param", "Embedding"},
      {"recurrent_param", "LSTM GRU"},
      {"dropout_param", "Dropout"},
      {"layer_norm_param", "LayerNorm"},
      {"gelu_param", "GELU"},
      {"attention_param", "MultiHeadSelfAttention"},
      {"transformer_param", "TransformerEncoderBlock"},
      {"positional_encoding_param", "PositionalEncoding"},
      {"sequence_pool_param", "SequencePool"}};
  return *owners;
}

Status CheckModeRules(const proto::JobSpec& spec, const std::string& source) {
  for (const ModeRule& rule : kModeRules)
    if (IsSet(spec, rule.field) && !rule.applies(spec))
      return FieldError(source, rule.field,
                        fmt::format("applies only with {}; remove it (it would be ignored)", rule.when));
  for (int i = 0; i < spec.model().layer_size(); ++i) {
    const proto::LayerSpec& l = spec.model().layer(i);
    const Reflection* r = l.GetReflection();
    std::vector<const FieldDescriptor*> fields;
    r->ListFields(l, &fields);
    for (const FieldDescriptor* f : fields) {
      auto owner = LayerParamOwners().find(f->name());
      if (owner == LayerParamOwners().end()) continue;
      const std::string& types = owner->second;
      bool ok = false;
      for (size_t at = 0; at <= types.size();) {
        size_t sp = types.find(' ', at);
        if (sp == std::string::npos) sp = types.size();
        ok |= types.compare(at, sp - at, l.type()) == 0 && sp - at == l.type().size();
        at = sp + 1;
      }
      if (!ok)
        return FieldError(source, fmt::format("model.layer[{}].{}", i, f->name()),
                          fmt::format("applies only to layer type {}; this layer is \"{}\"", types,
                                      EchoValue(l.type(), 40)));
    }
  }
  return Status::Ok();
}

Status CheckJobName(const proto::JobSpec& spec, const std::string& source) {
  const std::string& name = spec.name();
  if (name.size() > kMaxJobNameBytes)
    return FieldError(source, "name",
                      fmt::format("\"{}\" is too long: at most {} bytes (it names the run directory)",
                                  EchoValue(name, 40), kMaxJobNameBytes));
  if (name == "." || name == ".." || name.find('/') != std::string::npos)
    return FieldError(source, "name",
                      fmt::format("\"{}\" cannot name a directory: no '/', and not \".\" or \"..\"",
                                  EchoValue(name)));
  const bool own_name = spec.registry().has_model_name();
  if (Status st = ValidateModelName(PublishedModelName(spec)); !st.ok())
    return FieldError(source, own_name ? "registry.model_name" : "name",
                      own_name ? st.message()
                               : st.message() + " (the job name is the model name unless "
                                                "registry.model_name is set)");
  return Status::Ok();
}

// The validation split and what uses it, as far as the fields alone tell;
// CheckSelection sees the data.
Status CheckValidationFields(const proto::JobSpec& spec, const std::string& source) {
  const auto& d = spec.dataset();
  if (d.validation_fraction() > 0 && d.validation_size() > 0)
    return FieldError(source, "dataset.validation_size",
                      "set dataset.validation_fraction or dataset.validation_size, not both");
  const auto& t = spec.training();
  if (t.has_early_stopping() && t.early_stopping().metric().empty())
    return FieldError(source, "training.early_stopping.metric",
                      "required: the per-epoch figure to watch (\"val_loss\", \"val_accuracy\", \"val_mae\", ...)");
  if (t.restore_best() && !t.has_early_stopping())
    return FieldError(source, "training.restore_best",
                      "needs training.early_stopping: its metric and mode choose the best epoch");
  if (t.restore_best() && !t.checkpoint_epochs())
    return FieldError(source, "training.restore_best",
                      "needs epoch-end checkpoints (the best epoch is restored from its own): remove "
                      "training.checkpoint_epochs: false");
  return Status::Ok();
}

// dataset.class_names as far as the fields tell (control bytes and length
// are CheckValues'); a SHARDS pack's own names are compared by
// CheckShardsClassNames.
Status CheckClassNameFields(const proto::JobSpec& spec, const std::string& source) {
  const auto& d = spec.dataset();
  if (d.class_names_size() == 0) return Status::Ok();
  if (IsCsv(spec))
    return FieldError(source, "dataset.class_names",
                      "applies to classifiers only (dataset.format IDX or SHARDS); a CSV time series is "
                      "regression: remove it");
  std::map<std::string, int> seen;
  for (int i = 0; i < d.class_names_size(); ++i) {
    const std::string& n = d.class_names(i);
    const std::string field = fmt::format("dataset.class_names[{}]", i);
    if (n.empty()) return FieldError(source, field, "is empty: every class needs a name");
    if (auto [it, fresh] = seen.emplace(n, i); !fresh)
      return FieldError(source, field,
                        fmt::format("\"{}\" is already the name of class {}: names must differ", EchoValue(n, 40),
                                    it->second));
  }
  if (IsIdx(spec) && d.class_names_size() != d.num_classes())
    return FieldError(source, "dataset.class_names",
                      fmt::format("{} names for dataset.num_classes {}: give one name per class, in label order",
                                  d.class_names_size(), d.num_classes()));
  return Status::Ok();
}

// SHARDS: a job's class names must be the pack's own (dataset.json
// "classes"), which the model carries when the job sets none; a pack that
// records only indices leaves the naming to the job.
Status CheckShardsClassNames(const LoadedJob& job) {
  const auto& d = job.spec.dataset();
  if (d.class_names_size() == 0 || job.remote_data) return Status::Ok();
  auto manifest = data::ReadManifest(d.dir());
  if (!manifest.ok()) return FieldError(job.path, "dataset.dir", manifest.status().message());
  const std::vector<std::string> pack = PackClassNames(manifest->classes);
  if (pack.empty()) return Status::Ok();  // only indices: the job names the classes
  const std::string where = fmt::format("{}/{}", d.dir(), data::kManifestName);
  if (static_cast<size_t>(d.class_names_size()) != pack.size())
    return FieldError(job.path, "dataset.class_names",
                      fmt::format("{} names but '{}' has {} classes", d.class_names_size(), where, pack.size()));
  for (int i = 0; i < d.class_names_size(); ++i)
    if (d.class_names(i) != pack[static_cast<size_t>(i)])
      return FieldError(job.path, fmt::format("dataset.class_names[{}]", i),
                        fmt::format("is \"{}\" but '{}' names class {} \"{}\" (leave class_names unset to use "
                                    "the pack's names)",
                                    EchoValue(d.class_names(i), 40), where, i,
                                    EchoValue(pack[static_cast<size_t>(i)], 40)));
  return Status::Ok();
}

// Whether the job's early-stopping metric is one it reports, and how many
// training samples the validation split holds out.
Status CheckSelection(const LoadedJob& job, bool regression, int64_t validation, int64_t train) {
  const auto& d = job.spec.dataset();
  if (d.validation_size() > 0 && 2 * d.validation_size() > train)
    return FieldError(job.path, "dataset.validation_size",
                      fmt::format("is {} but the training set holds {} samples: at most half may be held out",
                                  d.validation_size(), train));
  if (d.validation_fraction() > 0 && validation == 0)
    return FieldError(job.path, "dataset.validation_fraction",
                      fmt::format("{} of {} training samples holds out none", d.validation_fraction(), train));
  const auto& t = job.spec.training();
  if (!t.has_early_stopping()) return Status::Ok();
  const std::string& metric = t.early_stopping().metric();
  if (IsReportedMetric(metric, regression, validation > 0)) return Status::Ok();
  return FieldError(job.path, "training.early_stopping.metric",
                    fmt::format("\"{}\" is not a figure this job reports each epoch; it reports {} ({}{})",
                                EchoValue(metric, 40), ReportedMetrics(regression, validation > 0),
                                regression ? "regression" : "a classifier",
                                validation > 0 ? ", with a validation split"
                                               : ", without a validation split: set dataset.validation_fraction "
                                                 "or dataset.validation_size (IDX) or validation_months (time series)"));
}

// Settings DP-SGD replaces or whose effect its analysis does not cover.
Status CheckDpSgdSettings(const proto::JobSpec& spec, const std::string& source) {
  if (IsPs(spec) && spec.sync().consistency() != proto::SyncSpec::BSP)
    return FieldError(source, "sync.consistency",
                      fmt::format("is {}, but DP-SGD needs BSP: its noise is added once to each global step's "
                                  "sum over every worker",
                                  proto::SyncSpec::Consistency_Name(spec.sync().consistency())));
  if (spec.training().clip_grad_norm() > 0)
    return FieldError(source, "training.clip_grad_norm",
                      "does not apply with DP-SGD, which clips each example's gradient to privacy.max_grad_norm; "
                      "remove it");
  if (spec.sync().compression() != proto::SyncSpec::NONE)
    return FieldError(source, "sync.compression",
                      "must be NONE with DP-SGD: rounding each worker's clipped sum before the noise is added "
                      "could exceed the clip norm the privacy analysis assumes");
  if (spec.dataset().shards().malformed_policy() == proto::ShardsSpec::Malformed::SKIP)
    return FieldError(source, "dataset.shards.malformed_policy",
                      "must be FAIL with DP-SGD: SKIP puts another record of the batch in a bad record's place, "
                      "so that example would count twice and exceed the clip norm the privacy analysis assumes");
  if (spec.sync().delayed_averaging())
    return FieldError(source, "sync.delayed_averaging",
                      "must be false with DP-SGD: each planned step's noisy mean must be applied before the "
                      "epoch's last step is counted");
  if (spec.sync().local_steps() > 1)
    return FieldError(source, "sync.local_steps",
                      "must be 1 with DP-SGD: the privacy analysis adds noise once to each step's sum over every "
                      "worker, and local steps apply each worker's gradients unnoised");
  if (spec.training().shard_size() > 0)
    return FieldError(source, "training.shard_size",
                      "does not apply with DP-SGD, which draws a Poisson sample for every step instead of "
                      "granting shards; remove it");
  return Status::Ok();
}

// The privacy block's own rules (docs/job-spec.md, "Privacy"); the
// dataset-dependent ones are in CheckPrivacyData.
Status CheckPrivacyFields(const proto::JobSpec& spec, const std::string& source) {
  if (!spec.has_privacy()) return Status::Ok();
  const proto::PrivacySpec& p = spec.privacy();
  const bool dp = p.has_target_epsilon() || p.has_noise_multiplier();
  if (p.has_target_epsilon() && p.has_noise_multiplier())
    return FieldError(source, "privacy.noise_multiplier",
                      "set privacy.target_epsilon or privacy.noise_multiplier, not both (a target epsilon "
                      "computes the noise multiplier)");
  if (!dp && (p.has_delta() || p.has_max_grad_norm()))
    return FieldError(source, p.has_delta() ? "privacy.delta" : "privacy.max_grad_norm",
                      "applies only to DP-SGD: set privacy.target_epsilon or privacy.noise_multiplier");
  if (dp && !p.has_delta())
    return FieldError(source, "privacy.delta", "required with DP-SGD (below 1/N for N training samples)");
  if (dp && !p.has_max_grad_norm())
    return FieldError(source, "privacy.max_grad_norm", "required with DP-SGD: the per-example clip norm C");
  if (p.secure_aggregation() && !(IsPs(spec) && spec.sync().consistency() == proto::SyncSpec::BSP))
    return FieldError(source, "privacy.secure_aggregation",
                      fmt::format("needs sync.mode PARAMETER_SERVER with consistency BSP (masks cancel only in "
                                  "one round's sum over every worker); this job uses {}",
                                  IsPs(spec) ? proto::SyncSpec::Consistency_Name(spec.sync().consistency())
                                             : std::string("ALLREDUCE")));
  if (p.secure_aggregation() && spec.sync().compression() != proto::SyncSpec::NONE)
    return FieldError(source, "sync.compression",
                      "cannot be combined with privacy.secure_aggregation: masked pushes are 32-bit fixed point, "
                      "and a mask survives no rounding");
  if (p.has_secure_aggregation_bound() && !p.secure_aggregation())
    return FieldError(source, "privacy.secure_aggregation_bound", "applies only with privacy.secure_aggregation: true");
  if (p.has_secure_aggregation_bound() && dp)
    return FieldError(source, "privacy.secure_aggregation_bound",
                      "does not apply with DP-SGD: the clip norm privacy.max_grad_norm bounds each example");
  if (!dp && !p.secure_aggregation())
    return FieldError(source, "privacy", "sets nothing: give target_epsilon or noise_multiplier, or secure_aggregation");
  if (dp) return CheckDpSgdSettings(spec, source);
  return Status::Ok();
}

// What needs the data and the model: δ < 1/N, and per-example gradients for
// every layer. Then the refusal that stays until the training loop applies
// the block: a job that asked for privacy must not train without it.
Status CheckPrivacyData(const LoadedJob& job, const nn::Model& model, int64_t trained_samples) {
  if (!job.spec.has_privacy()) return Status::Ok();
  const proto::PrivacySpec& p = job.spec.privacy();
  if (p.has_delta() && p.delta() * static_cast<double>(trained_samples) >= 1.0)
    return FieldError(job.path, "privacy.delta",
                      fmt::format("is {} but must be below 1/N = {:.3g} for the N = {} training samples", p.delta(),
                                  1.0 / static_cast<double>(trained_samples), trained_samples));
  if (p.has_target_epsilon() || p.has_noise_multiplier())
    if (const std::string why = nn::UnsupportedForDp(model); !why.empty())
      return FieldError(job.path, "privacy", "DP-SGD needs per-example gradients, and " + why);
  return Status::Ok();
}

}  // namespace

bool FieldRange::Contains(long double v) const {
  if (any) return true;
  if (std::isnan(v)) return false;
  if (lo_open ? !(v > lo) : !(v >= lo)) return false;
  if (hi_open ? !(v < hi) : !(v <= hi)) return false;
  return true;
}

StatusOr<FieldRange> ParseFieldRange(std::string_view text) {
  FieldRange r;
  r.text = std::string(text);
  if (text == "any") {
    r.any = true;
    return r;
  }
  auto bad = [&](const char* why) {
    return InvalidArgument("range \"{}\": {}; expected \"[lo, hi]\" (either end open with '(' or ')') "
                           "or \"any\"",
                           EchoValue(text), why);
  };
  if (text.size() < 5) return bad("too short");
  if (text.front() != '[' && text.front() != '(') return bad("must start with '[' or '('");
  if (text.back() != ']' && text.back() != ')') return bad("must end with ']' or ')'");
  r.lo_open = text.front() == '(';
  r.hi_open = text.back() == ')';
  const std::string inner(text.substr(1, text.size() - 2));
  const size_t comma = inner.find(',');
  if (comma == std::string::npos || inner.find(',', comma + 1) != std::string::npos)
    return bad("needs exactly one ','");
  auto number = [](std::string s, long double* out) {
    while (!s.empty() && s.front() == ' ') s.erase(0, 1);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    if (s == "inf" || s == "-inf") {
      *out = s[0] == '-' ? -std::numeric_limits<long double>::infinity()
                         : std::numeric_limits<long double>::infinity();
      return true;
    }
    if (s.empty()) return false;
    char* end = nullptr;
    *out = std::strtold(s.c_str(), &end);
    return end == s.c_str() + s.size() && std::isfinite(*out);
  };
  if (!number(inner.substr(0, comma), &r.lo)) return bad("the lower bound is not a number");
  if (!number(inner.substr(comma + 1), &r.hi)) return bad("the upper bound is not a number");
  if (!(r.lo < r.hi)) return bad("the lower bound must be below the upper bound");
  return r;
}

bool IsNumericField(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return true;
    default:
      return false;
  }
}

const FieldRange* DeclaredRange(const FieldDescriptor* field) { return RangeTable::Get().Find(field); }

const FieldDescriptor* FindJobField(std::string_view path) {
  const Descriptor* d = proto::JobSpec::descriptor();
  const FieldDescriptor* f = nullptr;
  while (true) {
    const size_t dot = path.find('.');
    f = d->FindFieldByName(std::string(path.substr(0, dot)));
    if (f == nullptr || dot == std::string_view::npos) return f;
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return nullptr;
    d = f->message_type();
    path.remove_prefix(dot + 1);
  }
}

Status CheckOverride(std::string_view flag, std::string_view field_path, long double value) {
  const FieldDescriptor* f = FindJobField(field_path);
  const FieldRange* range = f ? DeclaredRange(f) : nullptr;
  POLIS_ENFORCE(range != nullptr);
  if (range->Contains(value)) return Status::Ok();
  return InvalidArgument("{} {}: out of range for {}, which accepts {}", flag, BoundString(value),
                         field_path, RangeWords(*range));
}

StatusOr<LoadedJob> ParseJobText(const std::string& text, const std::string& source) {
  LoadedJob job;
  job.path = source;
  job.sha256 = Sha256Hex(text);
  POLIS_RETURN_IF_ERROR(ParseTextMessage(text, source, &job.spec));
  POLIS_RETURN_IF_ERROR(ValidateJobFields(job.spec, source));
  return job;
}

StatusOr<LoadedJob> LoadJobFile(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobText(text, path);
}

// training.device: what the chosen device and this build can run. The
// layers are checked by CheckJob, once the model is built.
Status CheckDeviceFields(const proto::JobSpec& spec, const std::string& source) {
  const auto& d = spec.training().device();
  const bool cuda = d.kind() == proto::TrainingSpec::Device::CUDA;
  if (cuda && !POLIS_WITH_CUDA)
    return FieldError(source, "training.device.kind",
                      "CUDA: this build of Polis has no CUDA backend (it was configured with POLIS_WITH_CUDA=OFF, "
                      "or CMake found no CUDA compiler); use CPU, or rebuild with the CUDA toolkit");
  if (!cuda && d.precision() == proto::TrainingSpec::Device::TF32)
    return FieldError(source, "training.device.precision", "TF32 is a CUDA precision; the CPU runs FP32 or BF16");
  const auto& p = spec.privacy();
  if (cuda && (p.has_target_epsilon() || p.has_noise_multiplier()))
    return FieldError(source, "training.device.kind",
                      "CUDA: DP-SGD's per-example clipping runs on the CPU only; use CPU for a job with "
                      "privacy.target_epsilon or privacy.noise_multiplier");
  return Status::Ok();
}

Status ValidateJobFields(const proto::JobSpec& spec, const std::string& source) {
  if (!spec.has_name() || spec.name().empty()) return FieldError(source, "name", "required");
  // Values first: every later message may then echo a value whole.
  POLIS_RETURN_IF_ERROR(CheckValues(spec, "", source));
  POLIS_RETURN_IF_ERROR(CheckJobName(spec, source));
  if (!spec.has_model()) return FieldError(source, "model", "required");
  if (spec.model().layer_size() == 0) return FieldError(source, "model.layer", "at least one layer is required");
  for (int i = 0; i < spec.model().layer_size(); ++i)
    if (!spec.model().layer(i).has_type())
      return FieldError(source, fmt::format("model.layer[{}].type", i), "required");
  if (!spec.has_dataset()) return FieldError(source, "dataset", "required");
  POLIS_RETURN_IF_ERROR(CheckModeRules(spec, source));
  if (spec.monitoring().has_timeline_path() &&
      (spec.monitoring().timeline_path().empty() || spec.monitoring().timeline_path().back() == '/'))
    return FieldError(source, "monitoring.timeline_path", "expected a file name (the timeline's JSON file)");
  if (spec.registry().has_url()) {
    auto url = http::ParseHttpUrl(spec.registry().url());
    if (!url.ok()) return FieldError(source, "registry.url", url.status().message());
  }
  if (spec.dataset().format() == proto::DatasetSpec::CSV) {
    const auto& ts = spec.dataset().timeseries();
    if (!spec.dataset().has_timeseries()) return FieldError(source, "dataset.timeseries", "required for format CSV");
    if (!ts.has_path() || ts.path().empty()) return FieldError(source, "dataset.timeseries.path", "required");
    if (!ts.has_target_column()) return FieldError(source, "dataset.timeseries.target_column", "required");
  } else if (!spec.dataset().has_dir() || spec.dataset().dir().empty()) {
    return FieldError(source, "dataset.dir", "required (a directory, or \"fashion-mnist\")");
  }
  POLIS_RETURN_IF_ERROR(CheckValidationFields(spec, source));
  POLIS_RETURN_IF_ERROR(CheckClassNameFields(spec, source));
  POLIS_RETURN_IF_ERROR(CheckPrivacyFields(spec, source));
  POLIS_RETURN_IF_ERROR(CheckDeviceFields(spec, source));
  const auto& s = spec.sync();
  if (s.mode() == proto::SyncSpec::PARAMETER_SERVER && s.servers() < 1)
    return FieldError(source, "sync.servers", "PARAMETER_SERVER mode needs at least 1 server");
  if (s.mode() == proto::SyncSpec::ALLREDUCE && s.servers() != 0)
    return FieldError(source, "sync.servers", "ALLREDUCE mode runs no parameter servers; set servers: 0");
  if (auto algo = comm::ParseAllreduceAlgorithm(s.allreduce_algorithm()); !algo.ok())
    return FieldError(source, "sync.allreduce_algorithm", algo.status().message());
  if (s.delayed_averaging() && s.local_steps() > 1)
    return FieldError(source, "sync.delayed_averaging",
                      "cannot be combined with sync.local_steps > 1 (local SGD exchanges no gradients); choose one");
  if (s.delayed_averaging() && s.has_bucket_bytes())
    return FieldError(source, "sync.bucket_bytes",
                      "does not apply with sync.delayed_averaging, which sends a step's sums as one all-reduce "
                      "while the next step computes; remove it");
  if (s.delayed_averaging() && spec.training().device().kind() == proto::TrainingSpec::Device::CUDA)
    return FieldError(source, "sync.delayed_averaging",
                      "runs on CPU workers only (the gradients are double-buffered in host memory); use "
                      "training.device.kind CPU, or remove it");
  if (Status st = ValidateOptimizer(spec.optimizer()); !st.ok()) {
    // "optimizer.x must be ..." -> "field 'optimizer.x': must be ..."
    const std::string& m = st.message();
    size_t sp = m.find(' ');
    return FieldError(source, m.substr(0, sp), m.substr(sp + 1));
  }
  return Status::Ok();
}

// ------------------------------------------------------------------ memory

namespace {

// Floats one sample needs in a layer of a training (or inference) Network,
// following how each LayerExec allocates: its output and, for training, the
// gradient of its input; the oneDNN convolution's input and input gradient
// reordered to its blocked layout; the max-pool workspace; the sequence
// layers' plain copies of input and output gradients, recurrent workspaces
// and attention scratch.
double LayerFloatsPerSample(const nn::LayerInfo& l, bool training) {
  const double in = static_cast<double>(nn::ShapeElements(l.in_shape));
  const double out = static_cast<double>(nn::ShapeElements(l.out_shape));
  const std::string& t = l.type;
  double floats = training ? in + out : out;
  if (t == "Conv2D") return floats + (training ? 2 * in : in);
  if (t == "MaxPool2D") return floats + (training ? out : 0);
  if (t == "Dense" || t == "ReLU" || t == "Flatten" || t == "GELU") return floats;
  if (t == "Dropout") return floats + (training ? in : 0);  // the mask
  floats = training ? 2 * in + 2 * out : in + out;           // a plain copy each way
  if (t == "LSTM" || t == "GRU") {
    const auto& p = l.spec.recurrent_param();
    const double T = static_cast<double>(l.in_shape[0]), H = p.hidden_size();
    const double gates = t == "LSTM" ? 4 : 3;
    for (int k = 0; k < p.num_layers(); ++k) {
      const double x = k == 0 ? static_cast<double>(l.in_shape[1]) : H;
      floats += training ? 2 * T * x + 2 * T * H + (gates + 4) * T * H : T * x + T * H + gates * T * H;
    }
  } else if (t == "MultiHeadSelfAttention" || t == "TransformerEncoderBlock") {
    const double T = static_cast<double>(l.in_shape[0]), F = static_cast<double>(l.in_shape[1]);
    const double heads = t == "MultiHeadSelfAttention" ? l.spec.attention_param().num_heads()
                                                       : l.spec.transformer_param().num_heads();
    // qkv, ctx and the probabilities; training adds their gradients.
    floats += training ? 10 * T * F + 2 * heads * T * T : 5 * T * F + heads * T * T;
    if (t == "TransformerEncoderBlock") {
      const double ff = l.spec.transformer_param().ff_dim();
      floats += training ? 12 * T * F + 4 * T * ff : 5 * T * F + 2 * T * ff;
    }
  }
  return floats;
}

}  // namespace

WorkerMemory EstimateWorkerMemory(const proto::JobSpec& spec, const nn::Model& model,
                                  double dataset_bytes, int64_t train_samples) {
  constexpr double kFloat = 4;
  WorkerMemory m;
  const double P = static_cast<double>(model.parameter_count());
  // Weights and gradients, and the weights reordered into the kernels'
  // layouts (forward, backward-data) and their gradients: up to 3 more.
  m.parameters = kFloat * P * 5;
  if (spec.sync().mode() == proto::SyncSpec::ALLREDUCE) {
    const auto type = spec.optimizer().type();
    const double vectors = type == proto::OptimizerSpec::SGD ? (spec.optimizer().momentum() > 0 ? 1 : 0) : 2;
    m.optimizer = kFloat * P * vectors;
  }
  double train = 0, infer = 0;
  for (const nn::LayerInfo& l : model.layers()) {
    train += LayerFloatsPerSample(l, true);
    infer += LayerFloatsPerSample(l, false);
  }
  const double in = static_cast<double>(nn::ShapeElements(model.input_shape()));
  const double out = static_cast<double>(nn::ShapeElements(model.output_shape()));
  const double B = spec.training().batch_size(), E = spec.training().eval_batch_size();
  m.activations = kFloat * B * (train + in + 2 * out);
  m.eval = kFloat * E * (infer + in + out) + (kFloat + 8) * E * out;
  const double shard = spec.training().shard_size() > 0 ? spec.training().shard_size() : 16 * B;
  m.batches = 8 * (B + shard) + 8 * B + kFloat * B * out;
  m.dataset = dataset_bytes + 8 * static_cast<double>(train_samples);
  return m;
}

std::string HumanBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

namespace {

// Refuses a job whose worker would not fit in this machine's memory, naming
// the setting behind the largest part.
Status CheckMemory(const LoadedJob& job, const nn::Model& model, double dataset_bytes,
                   int64_t train_samples) {
  const WorkerMemory m = EstimateWorkerMemory(job.spec, model, dataset_bytes, train_samples);
  const double available = static_cast<double>(AvailableMemoryBytes());
  if (m.total() <= available) return Status::Ok();
  const auto& t = job.spec.training();
  struct Part {
    double bytes;
    const char* name;
    std::string field, what;
  };
  const Part parts[] = {
      {m.activations, "activations", "training.batch_size", fmt::format("{} samples", t.batch_size())},
      {m.eval, "evaluation", "training.eval_batch_size", fmt::format("{} samples", t.eval_batch_size())},
      {m.batches, "shard queue", "training.shard_size",
       fmt::format("shards of {} samples", t.shard_size() > 0 ? int64_t{t.shard_size()} : 16 * int64_t{t.batch_size()})},
      {m.parameters + m.optimizer, "parameters", "model.layer",
       fmt::format("{} parameters", model.parameter_count())},
      {m.dataset, "dataset", job.spec.dataset().format() == proto::DatasetSpec::CSV ? "dataset.timeseries.path"
                                                                                      : "dataset.train_limit",
       fmt::format("{} training samples", train_samples)},
  };
  const Part* top = &parts[0];
  for (const Part& p : parts)
    if (p.bytes > top->bytes) top = &p;
  return FieldError(job.path, top->field,
                    fmt::format("{} need about {} per worker (activations {}, evaluation {}, parameters "
                                "and optimizer {}, dataset {}, shard queue {}); this machine has {}",
                                top->what, HumanBytes(m.total()), HumanBytes(m.activations),
                                HumanBytes(m.eval), HumanBytes(m.parameters + m.optimizer),
                                HumanBytes(m.dataset), HumanBytes(m.batches), HumanBytes(available)));
}

// Layers without weights have nothing to initialise.
Status CheckInitializers(const LoadedJob& job, const nn::Model& model) {
  for (size_t i = 0; i < model.layers().size(); ++i) {
    const nn::LayerInfo& l = model.layers()[i];
    if (!l.spec.has_initializer()) continue;
    bool weights = false;
    for (const auto& p : l.params) weights |= p.fan_in > 0;
    if (!weights)
      return FieldError(job.path, fmt::format("model.layer[{}].initializer", i),
                        fmt::format("layer {} ({}) has no weights to initialise; remove it", l.name, l.type));
  }
  return Status::Ok();
}

StatusOr<nn::Model> CheckTimeSeriesJob(const LoadedJob& job) {
  const std::string& src = job.path;
  if (job.spec.model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(src, "model.loss", "a CSV time series is regression: use MSE, MAE or HUBER");
  auto ds = data::OpenJobDataset(job.spec);
  if (!ds.ok()) return FieldError(src, "dataset.timeseries", ds.status().message());
  auto model = nn::Model::Build(job.spec.model(), (*ds)->sample_shape());
  if (!model.ok()) return Status(model.status().code(), src + ": " + model.status().message());
  if (model->output_shape() != nn::Shape{(*ds)->target_width()})
    return FieldError(src, "model.layer",
                      fmt::format("the last layer gives {} but the forecast horizon is {}",
                                  nn::ShapeString(model->output_shape()), (*ds)->target_width()));
  POLIS_RETURN_IF_ERROR(CheckInitializers(job, *model));
  // The series is held as rows x features floats plus the targets.
  const auto& ts = job.spec.dataset().timeseries();
  const auto shape = (*ds)->sample_shape();
  const double features = shape.size() == 2 ? static_cast<double>(shape[1]) : 1.0;
  const int64_t train = (*ds)->size(data::Part::kTrain), test = (*ds)->size(data::Part::kTest);
  const double rows = static_cast<double>(train + test) * static_cast<double>(ts.stride()) +
                      static_cast<double>(ts.lookback() + ts.horizon());
  POLIS_RETURN_IF_ERROR(CheckMemory(job, *model, rows * (4 * features + 12), train));
  POLIS_RETURN_IF_ERROR(CheckSelection(job, true, (*ds)->size(data::Part::kValidation), train));
  POLIS_RETURN_IF_ERROR(CheckPrivacyData(job, *model, train));
  return model;
}

// Settings of a SHARDS job that mean nothing for time-series windows: each
// is refused, named, rather than ignored.
Status CheckTimeSeriesShardsFields(const LoadedJob& job) {
  const auto& d = job.spec.dataset();
  const std::string& dir = d.dir();
  struct Rule {
    const char* field;
    std::string why;
  };
  const Rule rules[] = {
      {"dataset.augmentation", "time-series windows are not augmented"},
      {"dataset.validation_fraction", "the validation windows are the packed validation part (the series' "
                                      "validation months, split when packing)"},
      {"dataset.validation_size", "the validation windows are the packed validation part (the series' "
                                  "validation months, split when packing)"},
      {"dataset.scale", "windows are standardised with the statistics packed in dataset.json"},
      {"dataset.shift", "windows are standardised with the statistics packed in dataset.json"},
      {"dataset.class_names", "a forecaster is a regression; class names apply to classifiers only"},
  };
  for (const Rule& r : rules)
    if (IsSet(job.spec, r.field))
      return FieldError(job.path, r.field,
                        fmt::format("does not apply to '{}', which holds time-series windows: {}; remove it", dir,
                                    r.why));
  if (job.spec.model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(job.path, "model.loss",
                      fmt::format("'{}' holds time-series windows, which are regression: use MSE, MAE or HUBER", dir));
  return Status::Ok();
}

// SHARDS: the manifest and every index are read and checked (as the
// workers will), not the records: `polis-data verify` reads those.
StatusOr<nn::Model> CheckShardsJob(const LoadedJob& job) {
  const std::string& src = job.path;
  auto ds = data::OpenJobDataset(job.spec, job.remote_data);
  if (!ds.ok()) return FieldError(src, "dataset.dir", ds.status().message());
  const bool windows = (*ds)->task() == data::Task::kRegression;
  if (windows) POLIS_RETURN_IF_ERROR(CheckTimeSeriesShardsFields(job));
  if (!windows && job.spec.model().loss() != proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(src, "model.loss", "SHARDS images are classification: use SOFTMAX_CROSS_ENTROPY");

  const auto shape = (*ds)->sample_shape();
  auto model = nn::Model::Build(job.spec.model(), shape);
  if (!model.ok()) return Status(model.status().code(), src + ": " + model.status().message());
  if (model->output_shape() != nn::Shape{(*ds)->target_width()})
    return FieldError(src, "model.layer",
                      fmt::format("the last layer gives {} but '{}' has {}", nn::ShapeString(model->output_shape()),
                                  job.spec.dataset().dir(),
                                  windows ? fmt::format("a forecast horizon of {}", (*ds)->target_width())
                                          : fmt::format("{} classes", (*ds)->target_width())));
  POLIS_RETURN_IF_ERROR(CheckShardsClassNames(job));
  POLIS_RETURN_IF_ERROR(CheckInitializers(job, *model));
  // Held per worker: the index (32 bytes a record, both parts), the
  // decoded records waiting in the prefetch cache, and a batch of bytes.
  const int64_t valid = (*ds)->size(data::Part::kValidation);
  const int64_t train = (*ds)->size(data::Part::kTrain) + valid, test = (*ds)->size(data::Part::kTest);
  double sample = windows ? 4 : 1;  // bytes: float32 windows, uint8 pixels
  for (int64_t d : shape) sample *= static_cast<double>(d);
  const double bytes = 32.0 * static_cast<double>(train + test) +
                       sample * (job.spec.dataset().shards().prefetch_records() + job.spec.training().batch_size());
  POLIS_RETURN_IF_ERROR(CheckMemory(job, *model, bytes, train));
  POLIS_RETURN_IF_ERROR(CheckSelection(job, windows, valid, train));
  POLIS_RETURN_IF_ERROR(CheckPrivacyData(job, *model, train - valid));
  return model;
}

}  // namespace

namespace {

StatusOr<nn::Model> CheckJobData(const LoadedJob& job);

}  // namespace

StatusOr<nn::Model> CheckJob(const LoadedJob& job) {
  POLIS_ASSIGN_OR_RETURN(nn::Model model, CheckJobData(job));
  // Every layer must have an executor on the job's device.
  const device::Kind kind = JobDeviceKind(job.spec);
  if (std::string why = nn::UnsupportedLayer(kind, model); !why.empty())
    return FieldError(job.path, "training.device.kind", fmt::format("{} cannot run {}", device::KindName(kind), why));
  return model;
}

namespace {

StatusOr<nn::Model> CheckJobData(const LoadedJob& job) {
  const std::string& src = job.path;
  if (job.spec.registry().has_url()) POLIS_RETURN_IF_ERROR(RegistryToken(job.spec.registry(), src).status());
  if (job.spec.dataset().format() == proto::DatasetSpec::CSV) return CheckTimeSeriesJob(job);
  if (job.spec.dataset().format() == proto::DatasetSpec::SHARDS) return CheckShardsJob(job);
  if (job.spec.model().loss() != proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(src, "model.loss", "IDX images are classification: use SOFTMAX_CROSS_ENTROPY");
  const auto& d = job.spec.dataset();
  DatasetPaths p = ResolveDataset(d);
  std::vector<int64_t> train_dims, test_dims;
  double dataset_bytes = 0;
  struct Pair {
    const std::string& images;
    const std::string& labels;
    const char* images_field;
    const char* labels_field;
    int64_t limit;
    std::vector<int64_t>* dims;
  };
  for (const Pair& pr : {Pair{p.train_images, p.train_labels, "dataset.train_images", "dataset.train_labels",
                              d.train_limit(), &train_dims},
                         Pair{p.test_images, p.test_labels, "dataset.test_images", "dataset.test_labels",
                              d.test_limit(), &test_dims}}) {
    // The whole files, as the workers will read them: a short or corrupt
    // file is refused here, not after the job has started.
    auto img = data::ScanIdx(pr.images);
    if (!img.ok()) return FieldError(src, pr.images_field, img.status().message());
    auto lab = data::ScanIdx(pr.labels);
    if (!lab.ok()) return FieldError(src, pr.labels_field, lab.status().message());
    if (img->dims.size() != 3)
      return FieldError(src, pr.images_field,
                        fmt::format("'{}' holds {}-D data; images must be 3-D (N,H,W)", pr.images, img->dims.size()));
    if (lab->dims.size() != 1 || lab->dims[0] != img->dims[0])
      return FieldError(src, pr.labels_field,
                        fmt::format("'{}' has {} items but '{}' has {}", pr.labels,
                                    lab->dims.size() == 1 ? lab->dims[0] : 0, pr.images, img->dims[0]));
    if (lab->max_value >= d.num_classes()) {
      constexpr int64_t kLabelHeaderBytes = 8;  // magic + one dim
      return FieldError(src, "dataset.num_classes",
                        fmt::format("is {} but '{}' holds label {} at index {} (byte offset {})",
                                    d.num_classes(), pr.labels, lab->max_value, lab->max_index,
                                    kLabelHeaderBytes + lab->max_index));
    }
    const int64_t n = pr.limit > 0 ? std::min(pr.limit, img->dims[0]) : img->dims[0];
    dataset_bytes += static_cast<double>(n) * static_cast<double>(img->dims[1] * img->dims[2] + 1);
    *pr.dims = img->dims;
  }
  if (train_dims[1] != test_dims[1] || train_dims[2] != test_dims[2])
    return FieldError(src, "dataset.test_images",
                      fmt::format("test images are {}x{} but training images are {}x{}",
                                  test_dims[1], test_dims[2], train_dims[1], train_dims[2]));
  nn::Shape input{1, train_dims[1], train_dims[2]};
  auto model = nn::Model::Build(job.spec.model(), input);
  if (!model.ok()) return Status(model.status().code(), src + ": " + model.status().message());
  if (model->output_shape().size() != 1)
    return FieldError(src, "model.loss",
                      fmt::format("softmax cross-entropy needs a flat output; the last layer gives {}",
                                  nn::ShapeString(model->output_shape())));
  if (model->output_shape() != nn::Shape{job.spec.dataset().num_classes()})
    return FieldError(src, "model.layer",
                      fmt::format("the last layer gives {} but dataset.num_classes is {}",
                                  nn::ShapeString(model->output_shape()),
                                  job.spec.dataset().num_classes()));
  POLIS_RETURN_IF_ERROR(CheckInitializers(job, *model));
  const int64_t train = d.train_limit() > 0 ? std::min(d.train_limit(), train_dims[0]) : train_dims[0];
  POLIS_RETURN_IF_ERROR(CheckMemory(job, *model, dataset_bytes, train));
  POLIS_RETURN_IF_ERROR(CheckSelection(job, false, data::ValidationCount(d, train), train));
  POLIS_RETURN_IF_ERROR(CheckPrivacyData(job, *model, train - data::ValidationCount(d, train)));
  return model;
}

}  // namespace

device::Kind JobDeviceKind(const proto::JobSpec& spec) {
  return spec.training().device().kind() == proto::TrainingSpec::Device::CUDA ? device::Kind::kCuda
                                                                              : device::Kind::kCpu;
}

device::Precision JobPrecision(const proto::JobSpec& spec) {
  switch (spec.training().device().precision()) {
    case proto::TrainingSpec::Device::TF32: return device::Precision::kTf32;
    case proto::TrainingSpec::Device::BF16: return device::Precision::kBf16;
    default: return device::Precision::kFp32;
  }
}

std::vector<std::string> PackClassNames(const std::vector<std::string>& classes) {
  for (size_t i = 0; i < classes.size(); ++i)
    if (classes[i] != std::to_string(i)) return classes;
  return {};
}

std::string PublishedModelName(const proto::JobSpec& spec) {
  return spec.registry().has_model_name() ? spec.registry().model_name() : spec.name();
}

StatusOr<std::string> RegistryToken(const proto::RegistrySpec& registry, const std::string& source) {
  if (registry.has_token_file() && !registry.token_file().empty()) {
    auto text = ReadFile(registry.token_file());
    if (!text.ok())
      return FieldError(source, "registry.token_file",
                        fmt::format("cannot read the token: {}", text.status().message()));
    std::string token = text->substr(0, text->find('\n'));
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
      token.pop_back();
    if (token.empty())
      return FieldError(source, "registry.token_file",
                        fmt::format("'{}' holds no token (its first line is empty)", registry.token_file()));
    return token;
  }
  std::string token = env::RegistryToken();
  if (token.empty())
    return FieldError(source, "registry.url",
                      fmt::format("publishing to {} needs a token: set registry.token_file (polis-train "
                                  "--registry-token-file) or POLIS_REGISTRY_TOKEN",
                                  registry.url()));
  return token;
}

}  // namespace polis
