#include "launch/tune/study.h"

#include <google/protobuf/descriptor.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <algorithm>
#include <set>

#include "common/artifact/artifact.h"
#include "common/echo.h"
#include "common/fs.h"
#include "common/text_proto.h"
#include "launch/tune/sampler.h"
#include "registry/aliases.h"

namespace polis::tune {
namespace {

using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using json = nlohmann::json;

// A field path's last step: the message that holds the field, and the field.
struct Target {
  Message* holder = nullptr;
  const FieldDescriptor* field = nullptr;
};

// Walks "a.b[2].c" from `root`. Intermediate steps are message fields (a
// repeated one needs an index the message already has); the last step is a
// singular scalar, enum or string field.
StatusOr<Target> Resolve(Message* root, const std::string& path) {
  if (path.empty()) return InvalidArgument("field path is empty");
  Message* msg = root;
  size_t at = 0;
  while (true) {
    const size_t dot = path.find('.', at);
    std::string step = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    int index = -1;
    const size_t bracket = step.find('[');
    if (bracket != std::string::npos) {
      const std::string num = step.substr(bracket + 1, step.size() - bracket - 2);
      if (step.back() != ']' || num.empty() || num.size() > 6 ||
          num.find_first_not_of("0123456789") != std::string::npos)
        return InvalidArgument("'{}': bad index in '{}'", EchoValue(path, 120), EchoValue(step, 60));
      index = std::atoi(num.c_str());
      step = step.substr(0, bracket);
    }
    const FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(step);
    if (f == nullptr)
      return InvalidArgument("'{}': {} has no field '{}'", EchoValue(path, 120), msg->GetDescriptor()->full_name(),
                             EchoValue(step, 60));
    const Reflection* r = msg->GetReflection();
    const bool last = dot == std::string::npos;
    if (f->is_repeated() != (index >= 0)) {
      if (index >= 0) return InvalidArgument("'{}': '{}' is not repeated", EchoValue(path, 120), step);
      return InvalidArgument("'{}': '{}' is repeated: name one entry, '{}[0]'", EchoValue(path, 120), step, step);
    }
    if (last) {
      if (f->is_repeated() || f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE)
        return InvalidArgument("'{}' is a {}, not a single value", EchoValue(path, 120),
                               f->is_repeated() ? "repeated field" : "message");
      return Target{msg, f};
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE)
      return InvalidArgument("'{}': '{}' is not a message", EchoValue(path, 120), step);
    if (index >= 0) {
      if (index >= r->FieldSize(*msg, f))
        return InvalidArgument("'{}': the base job has {} '{}' entries", EchoValue(path, 120),
                               r->FieldSize(*msg, f), step);
      msg = r->MutableRepeatedMessage(msg, f, index);
    } else {
      msg = r->MutableMessage(msg, f);
    }
    at = dot + 1;
  }
}

bool IsFloatField(const FieldDescriptor* f) {
  return f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT || f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE;
}

std::string KindOf(const FieldDescriptor* f) {
  if (IsIntegerField(f)) return "an integer field";
  if (IsFloatField(f)) return "a number field";
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_BOOL) return "a bool field";
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) return "an enum field";
  return "a string field";
}

std::string EnumNames(const FieldDescriptor* f) {
  std::string out;
  for (int i = 0; i < f->enum_type()->value_count(); ++i)
    out += (out.empty() ? "" : ", ") + f->enum_type()->value(i)->name();
  return out;
}

// A choice's text as the field's type.
StatusOr<json> TypedChoice(const FieldDescriptor* f, const std::string& text) {
  if (IsIntegerField(f)) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE) return InvalidArgument("not an integer");
    return json(v);
  }
  if (IsFloatField(f)) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(v)) return InvalidArgument("not a finite number");
    return json(v);
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_BOOL) {
    if (text == "true") return json(true);
    if (text == "false") return json(false);
    return InvalidArgument("not true or false");
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
    if (f->enum_type()->FindValueByName(text) == nullptr)
      return InvalidArgument("not a value of {} (one of: {})", f->enum_type()->name(), EnumNames(f));
    return json(text);
  }
  return json(text);
}

// Forbidden: what the study itself controls.
std::string Controlled(const std::string& path) {
  auto under = [&](const std::string& p) {
    return path == p || (path.size() > p.size() && path.compare(0, p.size() + 1, p + ".") == 0);
  };
  if (path == "name") return "each trial is named by the study";
  if (path == "training.epochs") return "the scheduler sets each trial's epochs (scheduler.max_epochs)";
  if (path == "training.checkpoint_epochs") return "trials always checkpoint at epoch ends (ASHA continues from them)";
  if (path == "sync.servers") return "the study's `servers` sets each trial's cluster";
  if (under("registry")) return "trials publish into the study directory; the best goes to registry_root";
  return "";
}

bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 128 || s[0] == '.' || s[0] == '-') return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

// Every value a param may take that is worth checking against the job's
// rules: each choice, and both ends of a range.
StatusOr<std::vector<json>> ValuesToCheck(const proto::SearchParam& p, const FieldDescriptor* f) {
  std::vector<json> out;
  if (p.has_choice()) {
    for (const std::string& v : p.choice().value()) out.push_back(*TypedChoice(f, v));
  } else if (p.has_int_range()) {
    const auto& r = p.int_range();
    out.push_back(json(r.min()));
    out.push_back(json(r.min() + (r.max() - r.min()) / r.step() * r.step()));
  } else {
    const auto& r = p.has_uniform() ? p.uniform() : p.log_uniform();
    if (IsIntegerField(f)) {
      out.push_back(json(static_cast<long long>(std::ceil(r.min()))));
      out.push_back(json(static_cast<long long>(std::floor(r.max()))));
    } else {
      out.push_back(json(r.min()));
      out.push_back(json(r.max()));
    }
  }
  return out;
}

// Param i's `when`: names a choice param listed before it, with values of
// that choice.
Status CheckCondition(const std::string& name, int i, const proto::StudySpec& spec) {
  const proto::Condition& c = spec.param(i).when();
  if (!c.has_field() || c.field().empty()) return InvalidArgument("{}: field 'when.field': required", name);
  int parent = -1;
  for (int j = 0; j < i; ++j)
    if (spec.param(j).field() == c.field()) parent = j;
  if (parent < 0)
    return InvalidArgument("{}: field 'when.field': '{}' is not a param listed before this one", name,
                           EchoValue(c.field(), 120));
  const proto::SearchParam& pp = spec.param(parent);
  if (!pp.has_choice())
    return InvalidArgument("{}: field 'when.field': '{}' must be searched by choice", name, c.field());
  if (c.value_size() == 0) return InvalidArgument("{}: field 'when.value': empty (give at least one value)", name);
  for (int k = 0; k < c.value_size(); ++k) {
    const auto& values = pp.choice().value();
    if (std::find(values.begin(), values.end(), c.value(k)) == values.end())
      return InvalidArgument("{}: field 'when.value[{}]': '{}' is not one of the values of {} ({})", name, k,
                             EchoValue(c.value(k), 60), c.field(), fmt::join(values, ", "));
  }
  return Status::Ok();
}

// The job param i's values are checked against: the base job with the first
// value of each condition above it applied (momentum is checked on an SGD
// job, not on the base job's Adam).
proto::JobSpec ConditionBase(const proto::StudySpec& spec, int i, const proto::JobSpec& base) {
  const proto::SearchParam& p = spec.param(i);
  if (!p.has_when()) return base;
  int parent = 0;
  while (spec.param(parent).field() != p.when().field()) ++parent;
  proto::JobSpec job = ConditionBase(spec, parent, base);
  const auto value = TypedChoice(ParamField(base, p.when().field()), p.when().value(0));
  if (value.ok()) (void)ApplyParam(&job, p.when().field(), *value);
  return job;
}

Status CheckParam(const std::string& source, int i, const proto::StudySpec& spec, const proto::JobSpec& base) {
  const proto::SearchParam& p = spec.param(i);
  const std::string where = fmt::format("{}: param[{}]", source, i);
  if (!p.has_field()) return InvalidArgument("{}: field 'field' is required (a job field path)", where);
  const std::string name = fmt::format("{} ({})", where, EchoValue(p.field(), 120));
  proto::JobSpec copy = base;
  auto t = Resolve(&copy, p.field());
  if (!t.ok()) return InvalidArgument("{}: field 'field': {}", where, t.status().message());
  const FieldDescriptor* f = t->field;
  if (std::string why = Controlled(p.field()); !why.empty())
    return InvalidArgument("{}: field 'field': cannot be searched: {}", name, why);
  switch (p.domain_case()) {
    case proto::SearchParam::DOMAIN_NOT_SET:
      return InvalidArgument("{}: needs one of choice, uniform, log_uniform, int_range", name);
    case proto::SearchParam::kChoice: {
      if (p.choice().value_size() == 0)
        return InvalidArgument("{}: field 'choice.value': empty (give at least one value)", name);
      std::set<std::string> seen;
      for (int j = 0; j < p.choice().value_size(); ++j) {
        const std::string& v = p.choice().value(j);
        auto typed = TypedChoice(f, v);
        if (!typed.ok())
          return InvalidArgument("{}: field 'choice.value[{}]': '{}' is {} for {}", name, j, EchoValue(v, 60),
                                 typed.status().message(), KindOf(f));
        if (!seen.insert(v).second)
          return InvalidArgument("{}: field 'choice.value[{}]': '{}' is given twice", name, j, EchoValue(v, 60));
      }
      break;
    }
    case proto::SearchParam::kUniform:
    case proto::SearchParam::kLogUniform: {
      const bool log = p.has_log_uniform();
      const std::string kind = log ? "log_uniform" : "uniform";
      const auto& r = log ? p.log_uniform() : p.uniform();
      if (!IsIntegerField(f) && !IsFloatField(f))
        return InvalidArgument("{}: field '{}': {} is {} (use choice)", name, kind, p.field(), KindOf(f));
      if (!r.has_min() || !r.has_max())
        return InvalidArgument("{}: field '{}.{}': required", name, kind, r.has_min() ? "max" : "min");
      if (!std::isfinite(r.min()) || !std::isfinite(r.max()))
        return InvalidArgument("{}: field '{}.{}': must be finite", name, kind, std::isfinite(r.min()) ? "max" : "min");
      if (log && r.min() <= 0)
        return InvalidArgument("{}: field 'log_uniform.min': must be > 0; got {}", name, r.min());
      if (r.min() > r.max())
        return InvalidArgument("{}: field '{}': empty range: min {} > max {}", name, kind, r.min(), r.max());
      if (IsIntegerField(f) && std::ceil(r.min()) > std::floor(r.max()))
        return InvalidArgument("{}: field '{}': empty range: no integer in [{}, {}]", name, kind, r.min(), r.max());
      if (r.grid_points() < 1 || r.grid_points() > 1000)
        return InvalidArgument("{}: field '{}.grid_points': must be in [1, 1000]; got {}", name, kind,
                               r.grid_points());
      break;
    }
    case proto::SearchParam::kIntRange: {
      const auto& r = p.int_range();
      if (!IsIntegerField(f))
        return InvalidArgument("{}: field 'int_range': {} is {} (use uniform or choice)", name, p.field(), KindOf(f));
      if (!r.has_min() || !r.has_max())
        return InvalidArgument("{}: field 'int_range.{}': required", name, r.has_min() ? "max" : "min");
      if (r.step() < 1) return InvalidArgument("{}: field 'int_range.step': must be >= 1; got {}", name, r.step());
      if (r.min() > r.max())
        return InvalidArgument("{}: field 'int_range': empty range: min {} > max {}", name, r.min(), r.max());
      break;
    }
  }
  if (p.has_when()) POLIS_RETURN_IF_ERROR(CheckCondition(name, i, spec));
  // Each value applied alone to the base job (with the conditions above it
  // holding) must make a valid job.
  POLIS_ASSIGN_OR_RETURN(std::vector<json> values, ValuesToCheck(p, f));
  const proto::JobSpec condition_base = ConditionBase(spec, i, base);
  for (const json& v : values) {
    proto::JobSpec job = condition_base;
    Status s = ApplyParam(&job, p.field(), v);
    if (s.ok()) s = ValidateJobFields(job, fmt::format("{} = {}", name, ParamText(v)));
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace

bool IsIntegerField(const FieldDescriptor* f) { return IsNumericField(f) && !IsFloatField(f); }

bool IsRegressionJob(const proto::JobSpec& job) {
  return job.model().loss() != proto::ModelSpec::SOFTMAX_CROSS_ENTROPY;
}

bool HasValidationSplit(const proto::JobSpec& job) {
  const auto& ds = job.dataset();
  if (ds.format() == proto::DatasetSpec::CSV)
    return ds.timeseries().validation_months() > 0 || !ds.timeseries().validation_start().empty();
  // IDX: dataset.validation_fraction / validation_size, read by name so this
  // compiles with job.proto before and after they were added.
  const Reflection* r = ds.GetReflection();
  for (const char* name : {"validation_fraction", "validation_size"}) {
    const FieldDescriptor* f = ds.GetDescriptor()->FindFieldByName(name);
    if (f == nullptr || !r->HasField(ds, f)) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT && r->GetFloat(ds, f) > 0) return true;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE && r->GetDouble(ds, f) > 0) return true;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT64 && r->GetInt64(ds, f) > 0) return true;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 && r->GetInt32(ds, f) > 0) return true;
  }
  return false;
}

const std::vector<std::string>& ReportedMetrics(const proto::JobSpec& job) {
  // The per-epoch rows of metrics.jsonl (coordinator/coordinator.cc): each
  // epoch is evaluated on the validation split when the job has one (val_*),
  // else on the test set (test_*).
  static const std::vector<std::string> kClassifierTest = {"train_loss", "train_accuracy", "test_loss",
                                                           "test_accuracy"};
  static const std::vector<std::string> kClassifierVal = {"train_loss", "train_accuracy", "val_loss", "val_accuracy"};
  static const std::vector<std::string> kRegressionTest = {"train_loss", "test_loss", "test_mae", "test_rmse",
                                                           "test_mape", "test_smape"};
  static const std::vector<std::string> kRegressionVal = {"train_loss", "val_loss", "val_mae", "val_rmse",
                                                          "val_mape", "val_smape"};
  const bool val = HasValidationSplit(job);
  if (IsRegressionJob(job)) return val ? kRegressionVal : kRegressionTest;
  return val ? kClassifierVal : kClassifierTest;
}

const FieldDescriptor* ParamField(const proto::JobSpec& base, const std::string& path) {
  proto::JobSpec copy = base;
  auto t = Resolve(&copy, path);
  return t.ok() ? t->field : nullptr;
}

std::string ParamText(const json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_float()) return fmt::format("{:.6g}", value.get<double>());
  return value.dump();
}

std::string ParamExact(const json& value) {
  if (value.is_null()) return "";
  return value.is_string() ? value.get<std::string>() : value.dump();
}

Status ApplyParam(proto::JobSpec* job, const std::string& field, const json& value) {
  POLIS_ASSIGN_OR_RETURN(Target t, Resolve(job, field));
  const FieldDescriptor* f = t.field;
  const Reflection* r = t.holder->GetReflection();
  auto wrong = [&]() {
    return InvalidArgument("'{}' is {}; got {}", field, KindOf(f), EchoValue(value.dump(), 60));
  };
  auto integer = [&](long double lo, long double hi) -> StatusOr<long double> {
    if (!value.is_number_integer()) return wrong();
    const long double v = value.is_number_unsigned() ? static_cast<long double>(value.get<uint64_t>())
                                                     : static_cast<long double>(value.get<int64_t>());
    if (v < lo || v > hi) return InvalidArgument("'{}': {} does not fit the field's type", field, value.dump());
    return v;
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      POLIS_ASSIGN_OR_RETURN(long double v, integer(std::numeric_limits<int32_t>::min(),
                                                    std::numeric_limits<int32_t>::max()));
      r->SetInt32(t.holder, f, static_cast<int32_t>(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      POLIS_ASSIGN_OR_RETURN(long double v, integer(std::numeric_limits<int64_t>::min(),
                                                    std::numeric_limits<int64_t>::max()));
      r->SetInt64(t.holder, f, static_cast<int64_t>(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      POLIS_ASSIGN_OR_RETURN(long double v, integer(0, std::numeric_limits<uint32_t>::max()));
      r->SetUInt32(t.holder, f, static_cast<uint32_t>(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      POLIS_ASSIGN_OR_RETURN(long double v, integer(0, std::numeric_limits<uint64_t>::max()));
      r->SetUInt64(t.holder, f, static_cast<uint64_t>(v));
      break;
    }
    case FieldDescriptor::CPPTYPE_FLOAT:
      if (!value.is_number()) return wrong();
      r->SetFloat(t.holder, f, value.get<float>());
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      if (!value.is_number()) return wrong();
      r->SetDouble(t.holder, f, value.get<double>());
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      if (!value.is_boolean()) return wrong();
      r->SetBool(t.holder, f, value.get<bool>());
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      if (!value.is_string()) return wrong();
      const EnumValueDescriptor* e = f->enum_type()->FindValueByName(value.get<std::string>());
      if (e == nullptr)
        return InvalidArgument("'{}': '{}' is not a value of {} (one of: {})", field,
                               EchoValue(value.get<std::string>(), 60), f->enum_type()->name(), EnumNames(f));
      r->SetEnum(t.holder, f, e);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      if (!value.is_string()) return wrong();
      r->SetString(t.holder, f, value.get<std::string>());
      break;
    default:
      return wrong();
  }
  return Status::Ok();
}

bool ConditionHolds(const proto::SearchParam& param, const Params& so_far, const proto::JobSpec& base) {
  if (!param.has_when()) return true;
  const proto::Condition& c = param.when();
  auto it = std::find_if(so_far.begin(), so_far.end(), [&](const ParamValue& v) { return v.field == c.field(); });
  if (it == so_far.end() || it->value.is_null()) return false;
  const FieldDescriptor* f = ParamField(base, c.field());
  for (const std::string& text : c.value()) {
    auto typed = TypedChoice(f, text);
    if (typed.ok() && *typed == it->value) return true;
  }
  return false;
}

StatusOr<proto::JobSpec> TrialJob(const LoadedStudy& study, const Params& params, const std::string& trial) {
  proto::JobSpec job = study.base.spec;
  for (const ParamValue& p : params)
    if (!p.value.is_null()) POLIS_RETURN_IF_ERROR(ApplyParam(&job, p.field, p.value));
  job.set_name(fmt::format("{}-t{}", job.name().substr(0, 110), trial));
  job.mutable_training()->set_epochs(study.max_epochs);
  job.mutable_training()->set_checkpoint_epochs(true);
  POLIS_RETURN_IF_ERROR(ValidateJobFields(job, fmt::format("trial {}", trial)));
  return job;
}

StatusOr<LoadedStudy> ParseStudyText(const std::string& text, const std::string& source,
                                     const std::string& base_dir) {
  LoadedStudy st;
  st.path = source;
  st.sha256 = Sha256Hex(text);
  POLIS_RETURN_IF_ERROR(ParseTextMessage(text, source, &st.spec));
  const proto::StudySpec& s = st.spec;
  auto field_error = [&](const std::string& field, const std::string& why) {
    return InvalidArgument("{}: field '{}': {}", source, field, why);
  };
  if (!s.has_name()) return field_error("name", "required");
  if (!ValidName(s.name()))
    return field_error("name", fmt::format("'{}' must be 1-128 of [A-Za-z0-9._-], not starting with '.' or '-'",
                                           EchoValue(s.name(), 60)));
  if (!s.has_base_job() || s.base_job().empty()) return field_error("base_job", "required (a job file)");
  const std::string job_path =
      s.base_job()[0] == '/' || base_dir.empty() ? s.base_job() : base_dir + "/" + s.base_job();
  auto base = LoadJobFile(job_path);
  if (!base.ok()) return field_error("base_job", base.status().message());
  st.base = std::move(*base);
  const proto::JobSpec& job = st.base.spec;

  // The cluster of each trial.
  st.workers = s.workers();
  if (st.workers < 1 || st.workers > 1024)
    return field_error("workers", fmt::format("must be in [1, 1024]; got {}", st.workers));
  const bool allreduce = job.sync().mode() == proto::SyncSpec::ALLREDUCE;
  st.servers = s.has_servers() ? s.servers() : (allreduce ? 0 : job.sync().servers());
  if (st.servers < 0 || st.servers > 4096)
    return field_error("servers", fmt::format("must be in [0, 4096]; got {}", st.servers));
  if (allreduce && st.servers != 0)
    return field_error("servers", "must be 0: the base job synchronises by ALLREDUCE");
  if (!allreduce && st.servers == 0)
    return field_error("servers", "must be >= 1: the base job uses PARAMETER_SERVER");

  // Scheduler and epochs.
  const auto& sch = s.scheduler();
  st.max_epochs = sch.has_max_epochs() ? sch.max_epochs() : job.training().epochs();
  if (st.max_epochs < 1 || st.max_epochs > 1000000)
    return field_error("scheduler.max_epochs", fmt::format("must be in [1, 1000000]; got {}", st.max_epochs));
  if (sch.type() == proto::SchedulerSpec::ASHA) {
    if (sch.reduction_factor() < 2 || sch.reduction_factor() > 100)
      return field_error("scheduler.reduction_factor",
                         fmt::format("must be in [2, 100]; got {}", sch.reduction_factor()));
    if (sch.grace_period() < 1 || sch.grace_period() > st.max_epochs)
      return field_error("scheduler.grace_period", fmt::format("must be in [1, max_epochs = {}]; got {}",
                                                               st.max_epochs, sch.grace_period()));
  } else if (sch.has_reduction_factor() || sch.has_grace_period()) {
    return field_error(sch.has_reduction_factor() ? "scheduler.reduction_factor" : "scheduler.grace_period",
                       "only with scheduler.type: ASHA (remove it)");
  }

  // The search space.
  if (s.param_size() == 0) return field_error("param", "at least one searched field is required");
  std::set<std::string> fields;
  for (int i = 0; i < s.param_size(); ++i) {
    POLIS_RETURN_IF_ERROR(CheckParam(source, i, s, job));
    if (!fields.insert(s.param(i).field()).second)
      return InvalidArgument("{}: param[{}] ({}): field 'field': searched twice", source, i, s.param(i).field());
  }
  if (s.sampler() == proto::StudySpec::GRID) {
    const double size = GridSize(s);
    if (size > 100000)
      return field_error("param", fmt::format("the grid has {:.0f} points; at most 100000", size));
  }

  // Objective.
  if (!s.objective().has_metric() || s.objective().metric().empty())
    return field_error("objective.metric", "required (a metric of metrics.jsonl, e.g. test_accuracy)");
  const auto& known = ReportedMetrics(job);
  if (std::find(known.begin(), known.end(), s.objective().metric()) == known.end())
    return field_error(
        "objective.metric",
        fmt::format("'{}' is not in the per-epoch rows of a {} job {} (they carry: {}){}",
                    EchoValue(s.objective().metric(), 60), IsRegressionJob(job) ? "regression" : "classifier",
                    HasValidationSplit(job) ? "with a validation split" : "without a validation split",
                    fmt::join(known, ", "),
                    HasValidationSplit(job) ? "" : "; val_ metrics need the base job's validation split"));
  if (!s.objective().has_direction())
    return field_error("objective.direction", "required: MAXIMIZE or MINIMIZE");

  // Budget.
  const auto& b = s.budget();
  if (b.has_max_trials() && (b.max_trials() < 1 || b.max_trials() > 100000))
    return field_error("budget.max_trials", fmt::format("must be in [1, 100000]; got {}", b.max_trials()));
  if (b.has_max_epochs_total() && (b.max_epochs_total() < 1 || b.max_epochs_total() > 1000000000))
    return field_error("budget.max_epochs_total", fmt::format("must be in [1, 1e9]; got {}", b.max_epochs_total()));
  if (b.has_max_wall_seconds() && (b.max_wall_seconds() < 1 || b.max_wall_seconds() > 1000000000))
    return field_error("budget.max_wall_seconds", fmt::format("must be in [1, 1e9]; got {}", b.max_wall_seconds()));
  if (s.sampler() == proto::StudySpec::RANDOM && !b.has_max_trials() && !b.has_max_epochs_total() &&
      !b.has_max_wall_seconds())
    return field_error("budget", "a RANDOM study needs max_trials, max_epochs_total or max_wall_seconds");

  // Where the best trial goes.
  if (s.has_registry_root()) {
    if (s.registry_root().empty()) return field_error("registry_root", "empty");
    st.registry_root = s.registry_root();
  } else {
    if (job.registry().has_url())
      return field_error("registry_root",
                         "required: the base job publishes to registry.url, and polis-tune publishes the best "
                         "trial to a registry root directory");
    st.registry_root = job.registry().root();
  }
  st.model_name = s.has_model_name() ? s.model_name() : PublishedModelName(job);
  if (Status v = ValidateModelName(st.model_name); !v.ok()) return field_error("model_name", v.message());
  if (Status v = registry::ValidateAliasName(s.best_alias()); !v.ok())
    return field_error("best_alias", v.message());
  return st;
}

StatusOr<LoadedStudy> LoadStudyFile(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const size_t slash = path.rfind('/');
  return ParseStudyText(text, path, slash == std::string::npos ? "." : path.substr(0, slash));
}

}  // namespace polis::tune
