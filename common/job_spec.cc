#include "common/job_spec.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "common/comm/communicator.h"
#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/optimizer.h"

namespace polis {
namespace {

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber col,
                const std::string& message) override {
    if (first_.empty()) first_ = fmt::format("{}:{}:{}: {}", source_, line + 1, col + 1, message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_, first_;
};

Status FieldError(const std::string& source, const std::string& field, const std::string& why) {
  return InvalidArgument("{}: field '{}': {}", source, field, why);
}

}  // namespace

StatusOr<LoadedJob> ParseJobText(const std::string& text, const std::string& source) {
  LoadedJob job;
  job.path = source;
  job.sha256 = Sha256Hex(text);
  google::protobuf::TextFormat::Parser parser;
  Collector collector(source);
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, &job.spec))
    return InvalidArgument("{}", collector.first().empty() ? source + ": cannot parse job"
                                                           : collector.first());
  POLIS_RETURN_IF_ERROR(ValidateJobFields(job.spec, source));
  return job;
}

StatusOr<LoadedJob> LoadJobFile(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobText(text, path);
}

Status ValidateJobFields(const proto::JobSpec& spec, const std::string& source) {
  if (!spec.has_name() || spec.name().empty()) return FieldError(source, "name", "required");
  if (!spec.has_model()) return FieldError(source, "model", "required");
  if (spec.model().layer_size() == 0) return FieldError(source, "model.layer", "at least one layer is required");
  if (!spec.has_dataset()) return FieldError(source, "dataset", "required");
  if (spec.registry().has_url()) {
    auto url = http::ParseHttpUrl(spec.registry().url());
    if (!url.ok()) return FieldError(source, "registry.url", url.status().message());
  }
  if (spec.dataset().format() == proto::DatasetSpec::CSV) {
    const auto& ts = spec.dataset().timeseries();
    if (!spec.dataset().has_timeseries()) return FieldError(source, "dataset.timeseries", "required for format CSV");
    if (!ts.has_path() || ts.path().empty()) return FieldError(source, "dataset.timeseries.path", "required");
    if (!ts.has_target_column()) return FieldError(source, "dataset.timeseries.target_column", "required");
    if (ts.lookback() <= 0) return FieldError(source, "dataset.timeseries.lookback", "must be > 0");
    if (ts.horizon() <= 0) return FieldError(source, "dataset.timeseries.horizon", "must be > 0");
  } else if (!spec.dataset().has_dir() || spec.dataset().dir().empty()) {
    return FieldError(source, "dataset.dir", "required (a directory, or \"fashion-mnist\")");
  }
  if (spec.dataset().num_classes() < 2)
    return FieldError(source, "dataset.num_classes", "must be >= 2");
  if (spec.dataset().train_limit() < 0) return FieldError(source, "dataset.train_limit", "must be >= 0");
  if (spec.dataset().test_limit() < 0) return FieldError(source, "dataset.test_limit", "must be >= 0");
  const auto& t = spec.training();
  if (t.batch_size() <= 0) return FieldError(source, "training.batch_size", "must be > 0");
  if (t.epochs() <= 0) return FieldError(source, "training.epochs", "must be > 0");
  if (t.shard_size() < 0) return FieldError(source, "training.shard_size", "must be >= 0");
  if (t.report_every_steps() <= 0) return FieldError(source, "training.report_every_steps", "must be > 0");
  if (t.eval_batch_size() <= 0) return FieldError(source, "training.eval_batch_size", "must be > 0");
  const auto& s = spec.sync();
  if (s.mode() == proto::SyncSpec::PARAMETER_SERVER && s.servers() < 1)
    return FieldError(source, "sync.servers", "PARAMETER_SERVER mode needs at least 1 server");
  if (s.mode() == proto::SyncSpec::ALLREDUCE && s.servers() != 0)
    return FieldError(source, "sync.servers", "ALLREDUCE mode runs no parameter servers; set servers: 0");
  if (s.servers() < 0) return FieldError(source, "sync.servers", "must be >= 0");
  if (s.bucket_bytes() < 0) return FieldError(source, "sync.bucket_bytes", "must be >= 0");
  if (auto algo = comm::ParseAllreduceAlgorithm(s.allreduce_algorithm()); !algo.ok())
    return FieldError(source, "sync.allreduce_algorithm", algo.status().message());
  if (Status st = ValidateOptimizer(spec.optimizer()); !st.ok()) {
    // "optimizer.x must be ..." -> "field 'optimizer.x': must be ..."
    const std::string& m = st.message();
    size_t sp = m.find(' ');
    return FieldError(source, m.substr(0, sp), m.substr(sp + 1));
  }
  for (int i = 0; i < spec.model().layer_size(); ++i)
    if (!spec.model().layer(i).has_type())
      return FieldError(source, fmt::format("model.layer[{}].type", i), "required");
  return Status::Ok();
}

namespace {

StatusOr<nn::Model> CheckTimeSeriesJob(const LoadedJob& job) {
  const std::string& src = job.path;
  if (job.spec.model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(src, "model.loss", "a CSV time series is regression: use MSE, MAE or HUBER");
  auto ds = data::OpenDataset(job.spec.dataset());
  if (!ds.ok()) return FieldError(src, "dataset.timeseries", ds.status().message());
  auto model = nn::Model::Build(job.spec.model(), (*ds)->sample_shape());
  if (!model.ok()) return Status(model.status().code(), src + ": " + model.status().message());
  if (model->output_shape() != nn::Shape{(*ds)->target_width()})
    return FieldError(src, "model.layer",
                      fmt::format("the last layer gives {} but the forecast horizon is {}",
                                  nn::ShapeString(model->output_shape()), (*ds)->target_width()));
  return model;
}

}  // namespace

StatusOr<nn::Model> CheckJob(const LoadedJob& job) {
  const std::string& src = job.path;
  if (job.spec.registry().has_url()) POLIS_RETURN_IF_ERROR(RegistryToken(job.spec.registry(), src).status());
  if (job.spec.dataset().format() == proto::DatasetSpec::CSV) return CheckTimeSeriesJob(job);
  if (job.spec.model().loss() != proto::ModelSpec::SOFTMAX_CROSS_ENTROPY)
    return FieldError(src, "model.loss", "IDX images are classification: use SOFTMAX_CROSS_ENTROPY");
  DatasetPaths p = ResolveDataset(job.spec.dataset());
  std::vector<int64_t> train_dims, test_dims;
  struct Pair { const std::string& images; const std::string& labels; const char* field; std::vector<int64_t>* dims; };
  for (const Pair& pr : {Pair{p.train_images, p.train_labels, "dataset.train_images", &train_dims},
                         Pair{p.test_images, p.test_labels, "dataset.test_images", &test_dims}}) {
    auto img = data::ReadIdxDims(pr.images);
    if (!img.ok()) return FieldError(src, pr.field, img.status().message());
    auto lab = data::ReadIdxDims(pr.labels);
    if (!lab.ok()) return FieldError(src, "dataset labels", lab.status().message());
    if (img->size() != 3)
      return FieldError(src, pr.field, fmt::format("'{}' holds {}-D data; images must be 3-D (N,H,W)", pr.images, img->size()));
    if (lab->size() != 1 || (*lab)[0] != (*img)[0])
      return FieldError(src, pr.field, fmt::format("'{}' has {} items but '{}' has {}", pr.labels,
                                                   lab->empty() ? 0 : (*lab)[0], pr.images, (*img)[0]));
    *pr.dims = *img;
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
  return model;
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
