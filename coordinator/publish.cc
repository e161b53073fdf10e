#include "coordinator/publish.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <optional>

#include <fmt/ranges.h>

#include "common/env.h"
#include "common/evaluate.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/job_spec.h"
#include "common/log.h"
#include "common/data/shard_format.h"
#include "common/data/timeseries.h"
#include "common/privacy/dp_plan.h"
#include "common/source_revision.h"

namespace polis::coordinator {
namespace {

using json = nlohmann::json;

bool IsRegression(const data::Dataset& ds) { return ds.task() == data::Task::kRegression; }
const char* MetricName(const data::Dataset& ds) { return IsRegression(ds) ? "test_mae" : "test_accuracy"; }

std::string HostName() {
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  return host;
}

// Publishing to a running polis-registry (registry.url): the artifact file's
// bytes go up as they are, with the bearer token; the server's answer must
// name the same SHA-256 as the file's trailer.
StatusOr<PublishedVersion> PublishOverHttp(const proto::JobSpec& spec, const std::string& model,
                                           const std::string& artifact_path) {
  const std::string& url_text = spec.registry().url();
  POLIS_ASSIGN_OR_RETURN(http::HttpUrl url, http::ParseHttpUrl(url_text));
  POLIS_ASSIGN_OR_RETURN(std::string token, RegistryToken(spec.registry(), "registry"));
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(artifact_path));
  const std::string local_sha = ArtifactSha256(bytes);
  const std::string path = fmt::format("/v2/registry/models/{}/versions", http::UrlEncode(model));
  const std::string target =
      fmt::format("{}{}?why={}", url.base_path, path, http::UrlEncode("trained by job " + spec.name()));
  const std::string where = fmt::format("POST {}{}", url.text, path);
  // Uploading and the server's checks (rebuild, one forward pass) of a large
  // model take a while: a generous deadline, at least POLIS_TIMEOUT_S.
  // https: the server's certificate is verified against POLIS_CA_FILE's CAs (else the system's).
  http::HttpClient client =
      http::ClientFor(url, 1000 * std::max(env::TimeoutSeconds(), 120), http::CaFileOr(""));
  auto r = client.Request("POST", target, bytes,
                          {{"Authorization", "Bearer " + token},
                           {"Content-Type", "application/octet-stream"}});
  if (!r.ok()) return RemoteError("{}: the registry is unreachable: {}", where, r.status().message());
  if (r->status != 201) {
    std::string hint;
    if (r->status == 401 || r->status == 403)
      hint = fmt::format(" (check the token in {}; it needs the publish scope for model '{}')",
                         spec.registry().token_file().empty() ? std::string("POLIS_REGISTRY_TOKEN")
                                                              : spec.registry().token_file(),
                         model);
    return RemoteError("{}: HTTP {}: {}{}", where, r->status, http::ErrorMessage(*r), hint);
  }
  json answer = json::parse(r->body, nullptr, false);
  if (!answer.is_object() || !answer.contains("version") || !answer["version"].is_number_integer() ||
      !answer.contains("sha256") || !answer["sha256"].is_string())
    return RemoteError("{}: HTTP 201 but the answer is not {{\"version\", \"sha256\"}}: {}", where,
                       r->body.substr(0, 200));
  PublishedVersion out;
  out.model = model;
  out.version = answer["version"].get<int64_t>();
  out.sha256 = answer["sha256"].get<std::string>();
  out.dir = fmt::format("{}/v2/registry/models/{}/versions/{}", url.text, model, out.version);
  out.artifact_path = artifact_path;
  if (out.sha256 != local_sha)
    return DataLoss("{}: the registry stored version {} with sha256 {}, but the artifact {} has {}",
                    where, out.version, out.sha256, artifact_path, local_sha);
  return out;
}

// The first non-finite parameter, named by layer and tensor; Ok if none.
Status CheckFiniteParams(const nn::Model& model, const std::vector<float>& params) {
  const std::string bad = nn::FirstNonFiniteParameter(model, params.data());
  if (bad.empty()) return Status::Ok();
  return DataLoss("{}: the trained model is not finite and is not published", bad);
}

// Writes, reads back (checksum and finite weights: DecodeArtifact) and
// re-evaluates the artifact at `path`; returns the reloaded copy and its
// test metric.
StatusOr<std::pair<ModelArtifact, double>> StageAndVerify(const std::string& path, const ModelArtifact& artifact,
                                                          const data::Dataset& dataset, int eval_batch) {
  POLIS_RETURN_IF_ERROR(WriteArtifactFile(path, artifact));
  POLIS_ASSIGN_OR_RETURN(ModelArtifact reloaded, ReadArtifactFile(path));
  const auto& h = reloaded.header;
  POLIS_ASSIGN_OR_RETURN(nn::Model rebuilt,
                         nn::Model::Build(h.job().model(), nn::Shape(h.input_shape().begin(), h.input_shape().end())));
  Evaluator evaluator(rebuilt, h.job().model(), reloaded.weights.data(), eval_batch);
  EvalResult check = evaluator.Run(dataset, data::Part::kTest, 0, dataset.size(data::Part::kTest));
  POLIS_RETURN_IF_ERROR(evaluator.TakeError());
  const double metric = IsRegression(dataset) ? check.mae() : check.accuracy();
  return std::make_pair(std::move(reloaded), metric);
}

// The version of `model` under `root` whose artifact has the same SHA-256
// as the file at `path`; NotFound if none.
StatusOr<PublishedVersion> FindPublished(const std::string& root, const std::string& model,
                                         const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  const std::string sha = ArtifactSha256(bytes);
  auto versions = ListVersions(root, model);
  if (!versions.ok()) return versions.status();
  for (auto it = versions->rbegin(); it != versions->rend(); ++it) {
    const std::string dir = fmt::format("{}/{}/{}", root, model, *it);
    auto text = ReadFile(dir + "/" + kMetadataFileName);
    if (!text.ok()) continue;
    json meta = json::parse(*text, nullptr, false);
    if (!meta.is_object() || meta.value("sha256", "") != sha) continue;
    PublishedVersion v;
    v.model = model;
    v.version = *it;
    v.dir = dir;
    v.artifact_path = dir + "/" + kArtifactFileName;
    v.sha256 = sha;
    return v;
  }
  return NotFound("no version of '{}' holds {}", model, path);
}

std::string PublishLaterHint(const RoleContext& ctx, const std::string& artifact_path) {
  const auto& reg = ctx.job.spec.registry();
  if (reg.has_url())
    return fmt::format("polis-run --resume {} (or upload {} with polisctl/curl to {})", ctx.run_dir,
                       artifact_path, reg.url());
  return fmt::format("polis-registry publish --root {} --model {} {}   (or polis-run --resume {})", reg.root(),
                     PublishedModelName(ctx.job.spec), artifact_path, ctx.run_dir);
}

// The accountant's record (DpPlan::Record) as the artifact keeps it.
proto::PrivacyRecord PrivacyRecordFromJson(const json& j) {
  proto::PrivacyRecord r;
  r.set_epsilon(j.value("epsilon", 0.0));
  r.set_delta(j.value("delta", 0.0));
  r.set_max_grad_norm(j.value("max_grad_norm", 0.0));
  r.set_noise_multiplier(j.value("noise_multiplier", 0.0));
  r.set_sample_rate(j.value("sample_rate", 0.0));
  r.set_steps(j.value("steps", int64_t{0}));
  r.set_sampler(j.value("sampler", ""));
  r.set_accountant(j.value("accountant", ""));
  r.set_secure_aggregation(j.value("secure_aggregation", false));
  if (j.contains("target_epsilon")) r.set_target_epsilon(j.value("target_epsilon", 0.0));
  return r;
}

// The class names a classifier is published with: the job's, else a SHARDS
// pack's (dataset.json) unless it records only indices; none for
// regression or unnamed IDX classes.
StatusOr<std::vector<std::string>> ResolveClassNames(const proto::JobSpec& spec, const data::Dataset& dataset) {
  const auto& d = spec.dataset();
  if (IsRegression(dataset)) return std::vector<std::string>{};
  if (d.class_names_size() > 0) return std::vector<std::string>(d.class_names().begin(), d.class_names().end());
  if (d.format() != proto::DatasetSpec::SHARDS) return std::vector<std::string>{};
  POLIS_ASSIGN_OR_RETURN(data::ShardManifest m, data::ReadManifest(d.dir()));
  return PackClassNames(m.classes);
}

// "a, b, c" of at most `max` names, "…" after them when there are more.
std::string NameList(const std::vector<std::string>& names, size_t max) {
  std::vector<std::string> shown(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(std::min(max, names.size())));
  if (names.size() > max) shown.push_back("…");
  return fmt::format("{}", fmt::join(shown, ", "));
}

// What the model takes, in words, when the job's model_card does not say.
std::string DescribeInput(const proto::JobSpec& spec, const data::Dataset& dataset) {
  const std::vector<int64_t> shape = dataset.sample_shape();
  if (IsRegression(dataset)) {
    std::vector<std::string> features;
    if (auto stats = data::TimeSeriesStats::FromJson(dataset.PreprocessingJson()); stats.ok())
      features = stats->feature_names;
    const int64_t steps = shape.empty() ? 0 : shape[0], width = shape.size() > 1 ? shape[1] : 1;
    return fmt::format("{} steps x {} features{}, standardised as in preprocessing", steps, width,
                       features.empty() ? std::string() : " (" + NameList(features, 8) + ")");
  }
  const int64_t channels = shape.empty() ? 1 : shape[0];
  const float shift = spec.dataset().shift();
  return fmt::format("{} {} image, pixel value * {:.3g} {} {:.3g}", fmt::join(shape, "x"),
                     channels == 1 ? "grey" : channels == 3 ? "colour (RGB)" : "multi-channel",
                     spec.dataset().scale(), shift < 0 ? "-" : "+", std::fabs(shift));
}

// What the model answers, in words, when the job's model_card does not say.
std::string DescribeOutput(const proto::JobSpec& spec, const data::Dataset& dataset,
                           const std::vector<std::string>& classes) {
  if (IsRegression(dataset)) {
    const int64_t h = dataset.target_width();
    // The CSV's spec, or the one shards of its windows were packed with.
    const proto::TimeSeriesSpec* ts = dataset.timeseries_spec();
    return fmt::format("next {} value{} of {}", h, h == 1 ? "" : "s", ts ? ts->target_column() : "the target");
  }
  const int64_t k = dataset.target_width();
  if (classes.empty()) return fmt::format("probabilities of {} classes (by index 0..{})", k, k - 1);
  return fmt::format("probabilities of {} classes: {}", k, NameList(classes, classes.size()));
}

// What users read about the model (docs/registry.md, "Model card"):
// class names, descriptions and the samples it was trained on.
Status FillSignature(const proto::JobSpec& spec, const data::Dataset& dataset, proto::ArtifactHeader* h) {
  POLIS_ASSIGN_OR_RETURN(std::vector<std::string> classes, ResolveClassNames(spec, dataset));
  if (!classes.empty() && static_cast<int64_t>(classes.size()) != dataset.target_width())
    return InvalidArgument("{} class names for a model of {} classes", classes.size(), dataset.target_width());
  for (const std::string& c : classes) h->add_class_names(c);
  const proto::ModelCardSpec& card = spec.model_card();
  h->set_input_description(card.has_input_description() ? card.input_description()
                                                         : DescribeInput(spec, dataset));
  h->set_output_description(card.has_output_description() ? card.output_description()
                                                           : DescribeOutput(spec, dataset, classes));
  h->set_train_samples(dataset.size(data::Part::kTrain));
  h->set_validation_samples(dataset.size(data::Part::kValidation));
  h->set_test_samples(dataset.size(data::Part::kTest));
  return Status::Ok();
}

}  // namespace

StatusOr<ModelArtifact> BuildArtifact(const RoleContext& ctx, const data::Dataset& dataset, const TrainedRun& run) {
  const proto::JobSpec& spec = ctx.job.spec;
  if (run.history.empty()) return InternalError("no epoch was reported; nothing to publish");
  if (static_cast<int64_t>(run.params.size()) != ctx.model.parameter_count())
    return InternalError("{} parameters gathered for a model of {}", run.params.size(),
                         ctx.model.parameter_count());
  POLIS_RETURN_IF_ERROR(CheckFiniteParams(ctx.model, run.params));
  const json& last = run.metrics;
  ModelArtifact artifact;
  auto& h = artifact.header;
  *h.mutable_job() = spec;
  // Shards of a time series' windows: the TimeSeriesSpec they were packed
  // with goes into the job copy, so that the model is served from raw CSV
  // rows exactly as one trained from the CSV is.
  if (const proto::TimeSeriesSpec* ts = dataset.timeseries_spec(); ts != nullptr && !spec.dataset().has_timeseries())
    *h.mutable_job()->mutable_dataset()->mutable_timeseries() = *ts;
  for (int64_t d : ctx.model.input_shape()) h.add_input_shape(d);
  for (int64_t d : ctx.model.output_shape()) h.add_output_shape(d);
  for (const auto& l : ctx.model.layers())
    for (const auto& p : l.params) {
      auto* t = h.add_tensor();
      t->set_name(l.name + "/" + p.name);
      for (int64_t d : p.shape) t->add_shape(d);
      t->set_offset(p.offset);
      t->set_count(p.count);
    }
  h.set_parameter_count(ctx.model.parameter_count());
  auto metric = [&](const std::string& name, double v) -> Status {
    if (!std::isfinite(v))
      return DataLoss("metric {} is {}: the trained model is not finite and is not published", name, v);
    auto* m = h.add_metric();
    m->set_name(name);
    m->set_value(v);
    return Status::Ok();
  };
  std::vector<std::string> names = {MetricName(dataset)};
  if (IsRegression(dataset)) names.insert(names.end(), {"test_rmse", "test_mape", "test_smape"});
  names.insert(names.end(), {"test_loss", "train_loss"});
  for (const std::string& n : names) {
    if (!last.contains(n) || !last[n].is_number()) return DataLoss("metric {} is missing or not finite", n);
    POLIS_RETURN_IF_ERROR(metric(n, last[n].get<double>()));
  }
  // A forecaster's naive references on the same test windows, so that a
  // reader of its card sees what its error is worth.
  if (IsRegression(dataset)) {
    const json baselines = dataset.Baselines();
    for (const char* n : {"seasonal_naive_mae", "last_value_mae"})
      if (baselines.contains(n) && baselines[n].is_number()) POLIS_RETURN_IF_ERROR(metric(n, baselines[n].get<double>()));
  }
  POLIS_RETURN_IF_ERROR(metric("epochs", last.value("epoch", spec.training().epochs())));
  POLIS_RETURN_IF_ERROR(metric("train_seconds", run.train_seconds));
  auto* lin = h.mutable_lineage();
  lin->set_job_file(ctx.job.path);
  lin->set_job_sha256(ctx.job.sha256);
  h.set_preprocessing_json(dataset.PreprocessingJson());
  h.set_data_report(dataset.Report());
  POLIS_RETURN_IF_ERROR(FillSignature(spec, dataset, &h));
  for (const std::string& f : dataset.files()) {
    POLIS_ASSIGN_OR_RETURN(std::string sum, Sha256File(f));
    auto* c = lin->add_dataset_files();
    c->set_path(f);
    c->set_sha256(sum);
  }
  lin->set_source_revision(SourceRevision());
  lin->set_run_dir(ctx.run_dir);
  lin->set_host(HostName());
  lin->set_created_at(UtcTimestamp());
  if (const auto it = run.result.find("privacy"); it != run.result.end() && it->is_object())
    *h.mutable_privacy() = PrivacyRecordFromJson(*it);
  artifact.weights = run.params;
  return artifact;
}

Status VerifyAndPublish(const RoleContext& ctx, const data::Dataset& dataset, ModelArtifact artifact,
                        TrainedRun run) {
  const proto::JobSpec& spec = ctx.job.spec;
  const char* kMetric = MetricName(dataset);
  const std::string model_name = PublishedModelName(spec);
  const bool over_http = spec.registry().has_url();
  const std::string kept = ctx.run_dir + "/" + kArtifactFileName;
  json& result = run.result;
  result["model"] = model_name;
  result["kept_artifact"] = kept;
  result[over_http ? "registry_url" : "registry_root"] = over_http ? spec.registry().url() : spec.registry().root();
  auto finish = [&](const std::string& state, Status st) -> Status {
    result["state"] = state;
    if (!st.ok()) result["publish_error"] = st.message();
    POLIS_RETURN_IF_ERROR(WriteFileAtomic(ctx.run_dir + "/result.json", result.dump(2) + "\n"));
    return st;
  };

  // 1–2: stage in the run directory and verify.
  const double trained = run.metrics[kMetric].get<double>();
  auto staged = StageAndVerify(kept, artifact, dataset, spec.training().eval_batch_size());
  if (!staged.ok())
    return finish("verify_failed", staged.status().WithContext(fmt::format("verifying {}", kept)));
  auto& [reloaded, reloaded_metric] = *staged;
  result[std::string("reloaded_") + kMetric] = reloaded_metric;
  if (std::abs(reloaded_metric - trained) > 1e-6 * std::max(1.0, std::abs(trained)))
    return finish("verify_failed",
                  InternalError("the reloaded artifact {} gives {} {} but training reported {}; nothing was "
                                "published",
                                kept, kMetric, reloaded_metric, trained));

  // 3: publish what was verified, unless these very bytes already are a
  // version (an attempt killed after publishing, before result.json).
  StatusOr<PublishedVersion> pub =
      over_http ? StatusOr<PublishedVersion>(NotFound("not looked up over HTTP"))
                : FindPublished(spec.registry().root(), model_name, kept);
  if (pub.ok())
    std::printf("polis: %s is already version %lld of %s; not publishing it again\n", kept.c_str(),
                static_cast<long long>(pub->version), model_name.c_str());
  else if (over_http)
    pub = PublishOverHttp(spec, model_name, kept);
  else
    pub = PublishVersion(spec.registry().root(), model_name, std::move(reloaded),
                         json{{"job_name", spec.name()}, {"workers", ctx.workers}, {"servers", ctx.servers}});
  if (!pub.ok()) {
    result["artifact"] = kept;
    result["publish_later"] = PublishLaterHint(ctx, kept);
    return finish("publish_failed",
                  Status(pub.status().code(),
                         fmt::format("publishing model '{}' failed: {}; the verified model is kept at {}: "
                                     "publish it with: {}",
                                     model_name, pub.status().message(), kept, PublishLaterHint(ctx, kept))));
  }
  result["version"] = pub->version;
  result["artifact"] = pub->artifact_path;
  result["artifact_sha256"] = pub->sha256;
  std::printf("published %s version %lld to %s (sha256 %s); reloaded %s %.4f%s\n", model_name.c_str(),
              static_cast<long long>(pub->version), pub->dir.c_str(), pub->sha256.substr(0, 16).c_str(), kMetric,
              reloaded_metric, over_http ? ("; artifact kept at " + kept).c_str() : "");
  std::fflush(stdout);
  POLIS_LOG(kInfo, kCoord, "published model '{}' version {} to {}", model_name, pub->version, pub->dir);
  return finish("done", Status::Ok());
}

Status PublishFinishedRun(const RoleContext& ctx, const std::string& kept_artifact) {
  const proto::JobSpec& spec = ctx.job.spec;
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<data::Dataset> dataset, data::OpenJobDataset(spec));
  TrainedRun run;
  {
    std::ifstream old(ctx.run_dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(old, line)) {
      auto row = json::parse(line, nullptr, false);
      if (!row.is_discarded()) run.history.push_back(row);
    }
  }
  ModelArtifact kept;
  if (!kept_artifact.empty()) {
    POLIS_ASSIGN_OR_RETURN(kept, ReadArtifactFile(kept_artifact));
    run.params = kept.weights;
  } else {
    POLIS_ASSIGN_OR_RETURN(CheckpointManifest m, ReadManifest(ctx.resume_manifest));
    POLIS_ASSIGN_OR_RETURN(FullState full, LoadFullState(m));
    run.params = std::move(full.params);
  }
  // The metrics the published model carries are measured now, on the model
  // itself, so they hold whatever history survived.
  Evaluator evaluator(ctx.model, spec.model(), run.params.data(), spec.training().eval_batch_size());
  EvalResult ev = evaluator.Run(*dataset, data::Part::kTest, 0, dataset->size(data::Part::kTest));
  POLIS_RETURN_IF_ERROR(evaluator.TakeError());
  json row = run.history.empty() ? json{{"epoch", spec.training().epochs()}} : run.history.back();
  row["test_loss"] = ev.loss();
  if (!row.contains("train_loss")) row["train_loss"] = ev.loss();
  if (IsRegression(*dataset)) {
    row["test_mae"] = ev.mae();
    row["test_rmse"] = ev.rmse();
    row["test_mape"] = ev.mape();
    row["test_smape"] = ev.smape();
  } else {
    row["test_accuracy"] = ev.accuracy();
  }
  run.metrics = row;
  if (run.history.empty()) run.history.push_back(row);
  const int done = row.value("epoch", spec.training().epochs());
  std::printf("polis: nothing is left to train in %s (%d epoch(s) done, the job asks for %d); publishing the "
              "trained model%s\n",
              ctx.run_dir.c_str(), done, spec.training().epochs(),
              kept_artifact.empty() ? " from its last checkpoint" : (" kept at " + kept_artifact).c_str());
  std::fflush(stdout);
  run.result = {{"job", spec.name()},       {"epochs", done},
                {"history", run.history},   {"republished", true},
                {"workers", ctx.workers},   {"servers", ctx.servers},
                {MetricName(*dataset), row[MetricName(*dataset)]}};
  // A DP-SGD job resumed only to publish: it finished every planned step
  // (a resume may not change its epochs or workers).
  POLIS_ASSIGN_OR_RETURN(const std::optional<privacy::DpPlan> dp,
                         privacy::MakeDpPlan(spec, ctx.workers, dataset->size(data::Part::kTrain), ctx.privacy_key));
  if (dp) run.result["privacy"] = dp->Record(dp->planned_steps, spec.privacy().secure_aggregation());
  if (!kept_artifact.empty())  // published as it was kept: same bytes, same lineage
    return VerifyAndPublish(ctx, *dataset, std::move(kept), std::move(run));
  POLIS_ASSIGN_OR_RETURN(ModelArtifact built, BuildArtifact(ctx, *dataset, run));
  return VerifyAndPublish(ctx, *dataset, std::move(built), std::move(run));
}

}  // namespace polis::coordinator
