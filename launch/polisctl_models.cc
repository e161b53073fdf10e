#include "launch/polisctl_models.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"
#include "common/data/csv.h"
#include "common/data/idx.h"
#include "common/data/timeseries.h"
#include "common/env.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/status.h"
#include "registry/aliases.h"
#include "registry/image_input.h"
#include "registry/model_card.h"
#include "registry/served_version.h"
#include "registry/store.h"
#include "registry/tensor_json.h"

namespace polis::ctl {
namespace {

using json = nlohmann::json;
namespace reg = polis::registry;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
// Rows one local (--root) predict may hold: the server's default max batch.
constexpr int64_t kLocalMaxBatch = 32;

struct Usage {
  std::string message;
};

std::string DefaultWho() {
  const char* u = std::getenv("USER");
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}@{}", u && *u ? u : "unknown", host);
}

// What a model takes, for building an inference request.
struct ModelInfo {
  std::vector<int64_t> sample_shape;  // without the batch dimension
  int64_t lookback = 0;               // time series only
  // Time series: how a row's time is written (timestamp_column,
  // timestamp_format, hour_column, frequency_seconds; the metadata's
  // parameters.timeseries).
  json timeseries = json::object();
  std::vector<std::string> class_names;  // classifiers with named classes
};

// One interface, two backends: a polis-registry over HTTP, or a root on disk.
// Every answer is JSON shaped as the registry API answers (docs/registry.md).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Where() const = 0;
  virtual StatusOr<json> List() = 0;
  virtual StatusOr<json> Show(const std::string& model, const std::string& ref) = 0;
  virtual StatusOr<json> Versions(const std::string& model) = 0;  // name, versions, aliases, history
  virtual StatusOr<json> History(const std::string& model) = 0;   // aliases, history
  virtual StatusOr<json> Promote(const std::string& model, const std::string& alias, int64_t version,
                                 const reg::Actor& actor) = 0;
  virtual StatusOr<json> Rollback(const std::string& model, const std::string& alias,
                                  const reg::Actor& actor) = 0;
  virtual StatusOr<json> Delete(const std::string& model, int64_t version, bool force,
                                const reg::Actor& actor) = 0;
  virtual StatusOr<ModelInfo> Info(const std::string& model, const std::string& ref) = 0;
  // An OIP v2 infer request body -> the OIP response.
  virtual StatusOr<json> Infer(const std::string& model, const std::string& ref, const json& body) = 0;
  // The statistics extension's {"model_stats": [...]}; model "" = all.
  virtual StatusOr<json> Stats(const std::string& model, const std::string& ref) = 0;
};

// ---------------------------------------------------------------------------
// Over HTTP.

class HttpBackend : public Backend {
 public:
  HttpBackend(http::HttpUrl url, std::string token, double timeout_s, const std::string& ca_file)
      : url_(std::move(url)),
        token_(std::move(token)),
        client_(http::ClientFor(url_, static_cast<int>(timeout_s * 1000), ca_file)) {}

  std::string Where() const override { return url_.text; }

  StatusOr<json> List() override { return Call("GET", "/v2/registry/models"); }
  StatusOr<json> Stats(const std::string& model, const std::string& ref) override {
    return Call("GET", (model.empty() ? std::string("/v2/models") : ModelPath(model, ref)) + "/stats");
  }
  StatusOr<json> Show(const std::string& model, const std::string& ref) override {
    return Call("GET", ModelPath(model, ref.empty() ? std::string(reg::kLatest) : ref) + "/card");
  }
  StatusOr<json> Versions(const std::string& model) override {
    return Call("GET", fmt::format("/v2/registry/models/{}", Enc(model)));
  }
  StatusOr<json> History(const std::string& model) override {
    return Call("GET", fmt::format("/v2/registry/models/{}/aliases", Enc(model)));
  }
  StatusOr<json> Promote(const std::string& model, const std::string& alias, int64_t version,
                         const reg::Actor& actor) override {
    return Call("PUT", fmt::format("/v2/registry/models/{}/aliases/{}", Enc(model), Enc(alias)),
                json{{"version", version}, {"why", actor.why}});
  }
  StatusOr<json> Rollback(const std::string& model, const std::string& alias,
                          const reg::Actor& actor) override {
    return Call("POST", fmt::format("/v2/registry/models/{}/aliases/{}/rollback", Enc(model), Enc(alias)),
                json{{"why", actor.why}});
  }
  StatusOr<json> Delete(const std::string& model, int64_t version, bool force,
                        const reg::Actor& actor) override {
    std::string target = fmt::format("/v2/registry/models/{}/versions/{}?why={}", Enc(model), version,
                                     Enc(actor.why));
    if (force) target += "&force=true";
    return Call("DELETE", target);
  }
  StatusOr<ModelInfo> Info(const std::string& model, const std::string& ref) override {
    POLIS_ASSIGN_OR_RETURN(json meta, Call("GET", ModelPath(model, ref)));
    ModelInfo info;
    if (!meta.contains("inputs") || !meta["inputs"].is_array() || meta["inputs"].empty())
      return DataLoss("{}: the metadata of model '{}' lists no inputs", url_.text, model);
    for (const auto& in : meta["inputs"]) {
      if (in.value("name", "") != "input") continue;
      const auto& shape = in["shape"];
      for (size_t i = 1; i < shape.size(); ++i) info.sample_shape.push_back(shape[i].get<int64_t>());
    }
    if (meta.contains("parameters") && meta["parameters"].contains("timeseries")) {
      info.timeseries = meta["parameters"]["timeseries"];
      info.lookback = info.timeseries.value("lookback", int64_t{0});
    }
    if (meta.contains("parameters") && meta["parameters"].contains("class_names") &&
        meta["parameters"]["class_names"].is_array())
      for (const auto& c : meta["parameters"]["class_names"])
        if (c.is_string()) info.class_names.push_back(c.get<std::string>());
    return info;
  }
  StatusOr<json> Infer(const std::string& model, const std::string& ref, const json& body) override {
    return Call("POST", ModelPath(model, ref) + "/infer", body);
  }

 private:
  static std::string Enc(const std::string& s) { return http::UrlEncode(s); }
  static std::string ModelPath(const std::string& model, const std::string& ref) {
    return ref.empty() ? fmt::format("/v2/models/{}", Enc(model))
                       : fmt::format("/v2/models/{}/versions/{}", Enc(model), Enc(ref));
  }

  StatusOr<json> Call(const std::string& method, const std::string& path,
                      const std::optional<json>& body = std::nullopt) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!token_.empty()) headers.emplace_back("Authorization", "Bearer " + token_);
    if (body) headers.emplace_back("Content-Type", "application/json");
    auto r = client_.Request(method, url_.base_path + path, body ? body->dump() : "", headers);
    if (!r.ok()) return r.status().WithContext(fmt::format("{} {}{}", method, url_.text, path));
    json doc = json::parse(r->body, nullptr, false);
    if (r->status < 200 || r->status >= 300) {
      std::string hint;
      if (r->status == 401)
        hint = " (give --token-file FILE or set POLIS_REGISTRY_TOKEN)";
      else if (r->status == 403)
        hint = " (the token lacks the scope or the model: see the server's token file)";
      return RemoteError("{} {}{}: HTTP {}: {}{}", method, url_.text, path, r->status,
                         http::ErrorMessage(*r), hint);
    }
    if (doc.is_discarded())
      return DataLoss("{} {}{}: HTTP {} but the answer is not JSON: {}", method, url_.text, path,
                      r->status, r->body.substr(0, 200));
    return doc;
  }

  http::HttpUrl url_;
  std::string token_;
  http::HttpClient client_;
};

// ---------------------------------------------------------------------------
// On a root directory, through the registry library.

json ChangeJson(const reg::AliasChange& c) {
  json events = json::array();
  for (const auto& e : c.events) events.push_back(reg::AliasEventJson(e));
  return json{{"changed", c.changed()}, {"events", events},
              {"aliases", reg::AliasTableJson(c.table)["aliases"]}};
}

class RootBackend : public Backend {
 public:
  explicit RootBackend(std::string root) : root_(std::move(root)) {}

  std::string Where() const override { return root_; }

  StatusOr<json> List() override {
    if (!PathExists(root_)) return NotFound("registry root '{}' does not exist", root_);
    POLIS_ASSIGN_OR_RETURN(auto names, reg::ListModels(root_));
    json models = json::array();
    for (const auto& m : names) {
      // A damaged model is listed with its error; the others are unaffected.
      auto versions_or = ListVersions(root_, m);
      auto table_or = versions_or.ok() ? reg::ReadAliases(root_, m) : versions_or.status();
      if (!table_or.ok()) {
        models.push_back(json{{"name", m},
                              {"versions", versions_or.ok() ? json(*versions_or) : json::array()},
                              {"aliases", json::object()},
                              {"default_version", 0},
                              {"error", table_or.status().message()}});
        continue;
      }
      const auto& versions = *versions_or;
      const reg::AliasTable& table = *table_or;
      json aliases = json::object();
      for (const auto& [a, v] : table.aliases) aliases[a] = v;
      int64_t def = versions.empty() ? 0 : versions.back();
      if (auto it = table.aliases.find("production");
          it != table.aliases.end() && std::binary_search(versions.begin(), versions.end(), it->second))
        def = it->second;
      models.push_back(json{{"name", m}, {"versions", versions}, {"aliases", aliases},
                            {"default_version", def}});
    }
    return json{{"models", models}};
  }
  // The card the server gives, from the version's artifact header.
  StatusOr<json> Show(const std::string& model, const std::string& ref) override {
    POLIS_ASSIGN_OR_RETURN(int64_t v, reg::ResolveVersionRef(root_, model, ref.empty() ? reg::kLatest : ref));
    POLIS_ASSIGN_OR_RETURN(json meta, reg::ReadMetadata(root_, model, v));
    POLIS_ASSIGN_OR_RETURN(ModelArtifact a,
                           ReadArtifactFile(fmt::format("{}/{}/{}/{}", root_, model, v, kArtifactFileName)));
    return reg::ModelCard(model, v, meta.value("sha256", ""), a.header);
  }
  StatusOr<json> Versions(const std::string& model) override {
    POLIS_ASSIGN_OR_RETURN(reg::AliasTable table, reg::ReadAliases(root_, model));
    POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(root_, model));
    json metas = json::array();
    for (int64_t v : versions) {
      auto m = reg::ReadMetadata(root_, model, v);
      if (m.ok()) metas.push_back(*m);
      else metas.push_back(json{{"version", v}, {"error", m.status().message()}});
    }
    json out = reg::AliasTableJson(table);
    out["name"] = model;
    out["versions"] = metas;
    return out;
  }
  StatusOr<json> Stats(const std::string&, const std::string&) override {
    return FailedPrecondition("request statistics are kept by a running server: give --registry URL, not --root");
  }
  StatusOr<json> History(const std::string& model) override {
    POLIS_ASSIGN_OR_RETURN(reg::AliasTable table, reg::ReadAliases(root_, model));
    json out = reg::AliasTableJson(table);
    out["name"] = model;
    return out;
  }
  // SetAlias and RollbackAlias verify the target (checksum, finite weights,
  // the model rebuilds) before the alias moves, as for the server.
  StatusOr<json> Promote(const std::string& model, const std::string& alias, int64_t version,
                         const reg::Actor& actor) override {
    POLIS_ASSIGN_OR_RETURN(reg::AliasChange c, reg::SetAlias(root_, model, alias, version, actor));
    json out = ChangeJson(c);
    out["alias"] = alias;
    out["version"] = version;
    return out;
  }
  StatusOr<json> Rollback(const std::string& model, const std::string& alias,
                          const reg::Actor& actor) override {
    POLIS_ASSIGN_OR_RETURN(reg::AliasChange c, reg::RollbackAlias(root_, model, alias, actor));
    json out = ChangeJson(c);
    out["alias"] = alias;
    out["version"] = c.table.aliases.count(alias) ? c.table.aliases.at(alias) : 0;
    return out;
  }
  StatusOr<json> Delete(const std::string& model, int64_t version, bool force,
                        const reg::Actor& actor) override {
    POLIS_ASSIGN_OR_RETURN(reg::AliasChange c, reg::DeleteVersion(root_, model, version, force, actor));
    json out = ChangeJson(c);
    out["deleted"] = version;
    return out;
  }
  StatusOr<ModelInfo> Info(const std::string& model, const std::string& ref) override {
    POLIS_ASSIGN_OR_RETURN(auto sv, Load(model, ref));
    ModelInfo info;
    info.sample_shape = sv->input_shape();
    if (sv->timeseries()) {
      const proto::TimeSeriesSpec& ts = sv->timeseries_spec();
      info.lookback = ts.lookback();
      info.timeseries = {{"timestamp_column", ts.timestamp_column()}, {"timestamp_format", ts.timestamp_format()},
                         {"hour_column", ts.hour_column()}, {"frequency_seconds", ts.frequency_seconds()}};
    }
    info.class_names.assign(sv->header().class_names().begin(), sv->header().class_names().end());
    return info;
  }
  StatusOr<json> Infer(const std::string& model, const std::string& ref, const json& body) override;

 private:
  // The default version as the server picks it: "production", else the latest.
  StatusOr<std::shared_ptr<reg::ServedVersion>> Load(const std::string& model, const std::string& ref) {
    if (loaded_ && loaded_ref_ == ref && loaded_->model_name() == model) return loaded_;
    std::string r = ref;
    if (r.empty()) {
      POLIS_ASSIGN_OR_RETURN(reg::AliasTable table, reg::ReadAliases(root_, model));
      r = table.aliases.count("production") ? "production" : reg::kLatest;
    }
    POLIS_ASSIGN_OR_RETURN(int64_t v, reg::ResolveVersionRef(root_, model, r));
    // The model's config.json precision, so that answers are the server's.
    POLIS_ASSIGN_OR_RETURN(reg::BatchingOptions o, reg::ReadModelConfig(root_, model, reg::BatchingOptions{}));
    o.max_batch_size = kLocalMaxBatch;
    o.max_queue_rows = kLocalMaxBatch;
    o.max_queue_delay_us = 0;
    POLIS_ASSIGN_OR_RETURN(loaded_, reg::ServedVersion::Load(root_, model, v, o, nullptr));
    loaded_ref_ = ref;
    return loaded_;
  }

  std::string root_;
  std::shared_ptr<reg::ServedVersion> loaded_;
  std::string loaded_ref_;
};

void FlattenStrings(const json& j, std::vector<std::string>* out) {
  if (j.is_array())
    for (const auto& e : j) FlattenStrings(e, out);
  else if (j.is_string())
    out->push_back(j.get<std::string>());
  else
    out->push_back("");  // refused below, as the server refuses it
}

// The same decoding the server applies to an infer body: 'input' through
// DecodeInputTensor; 'image' (PNG or JPEG files) through DecodeImageTensor;
// time-series 'rows' (+ 'header') through the training preprocessing,
// answered in the target's original units.
StatusOr<json> RootBackend::Infer(const std::string& model, const std::string& ref, const json& body) {
  POLIS_ASSIGN_OR_RETURN(auto sv, Load(model, ref));
  if (!body.contains("inputs") || !body["inputs"].is_array() || body["inputs"].empty())
    return InvalidArgument("the request has no \"inputs\" array");
  const json* input = nullptr;
  const json* rows = nullptr;
  const json* header = nullptr;
  const json* image = nullptr;
  const auto image_spec = reg::ImageInputOf(sv->header());
  for (const auto& t : body["inputs"]) {
    const std::string name = t.value("name", "");
    if (name == "input") input = &t;
    else if (name == reg::kImageInputName && image_spec) image = &t;
    else if (name == reg::kImageInputName)
      return InvalidArgument("input '{}' (PNG or JPEG files) is for image models; model '{}' takes 'input'{}",
                             name, model, sv->timeseries() ? " or 'rows'" : "");
    else if (name == "rows" && sv->timeseries()) rows = &t;
    else if (name == "header" && sv->timeseries()) header = &t;
    else return InvalidArgument("unknown input '{}' for model '{}'", name, model);
  }
  std::vector<float> x;
  int64_t n = 0;
  bool original_units = false;
  if (input) {
    reg::InputTensorSpec spec{"input", sv->input_shape(), kLocalMaxBatch, int64_t{4} << 20,
                              sv->input_scale(), sv->input_shift()};
    bool too_large = false;
    POLIS_ASSIGN_OR_RETURN(reg::DecodedInput d, reg::DecodeInputTensor(*input, spec, &too_large));
    x = std::move(d.values);
    n = d.rows;
  } else if (image) {
    reg::ImageInputSpec spec = *image_spec;
    spec.max_batch = kLocalMaxBatch;
    spec.max_elements = int64_t{4} << 20;
    bool too_large = false;
    POLIS_ASSIGN_OR_RETURN(reg::DecodedInput d, reg::DecodeImageTensor(*image, spec, nullptr, &too_large));
    x = std::move(d.values);
    n = d.rows;
  } else if (rows) {
    std::vector<std::string> lines, names;
    FlattenStrings((*rows)["data"], &lines);
    if (header) FlattenStrings((*header)["data"], &names);
    else names = sv->timeseries_header();
    if (names.size() == 1 && names[0].find(',') != std::string::npos) {
      POLIS_ASSIGN_OR_RETURN(names, data::SplitCsvLine(names[0]));
    }
    if (names.empty()) return InvalidArgument("input 'header' is required: the model records no column names");
    // As the server reads it: shape [N] is one window of N lines, [B, N] B
    // windows; the job's row policies make each window's last lookback steps.
    const json shape = rows->value("shape", json::array());
    const int64_t per_window = shape.size() == 2 && shape[1].is_number_integer()
                                   ? shape[1].get<int64_t>()
                                   : static_cast<int64_t>(lines.size());
    if (lines.empty() || per_window < 1 || static_cast<int64_t>(lines.size()) % per_window != 0)
      return InvalidArgument("input 'rows': {} rows do not fill shape {}", lines.size(), shape.dump());
    n = static_cast<int64_t>(lines.size()) / per_window;
    if (n > kLocalMaxBatch) return InvalidArgument("input 'rows': at most {} windows", kLocalMaxBatch);
    for (int64_t b = 0; b < n; ++b) {
      std::vector<std::vector<std::string>> window;
      for (int64_t r = 0; r < per_window; ++r) {
        auto fields = data::SplitCsvLine(lines[b * per_window + r]);
        if (!fields.ok())
          return InvalidArgument("input 'rows': row {}: {}", b * per_window + r, fields.status().message());
        window.push_back(std::move(fields).value());
      }
      POLIS_ASSIGN_OR_RETURN(auto w, data::PreprocessTimeSeriesWindow(sv->timeseries_spec(),
                                                                       sv->timeseries_stats(), names, window));
      x.insert(x.end(), w.begin(), w.end());
    }
    original_units = true;
  } else {
    return InvalidArgument("the request names none of 'input', 'image' or 'rows'");
  }
  reg::InferOutcome o = sv->InferSync(std::move(x), n);
  POLIS_RETURN_IF_ERROR(o.status);
  const int64_t k = sv->classes();
  json outputs = json::array();
  if (sv->classifier()) {
    outputs.push_back(json{{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {n, k}},
                           {"data", reg::Softmax(o.logits, n, k)}});
    outputs.push_back(json{{"name", "logits"}, {"datatype", "FP32"}, {"shape", {n, k}}, {"data", o.logits}});
  } else {
    std::vector<float> y = o.logits;
    if (original_units)
      for (float& v : y) v = static_cast<float>(sv->TargetToOriginal(v));
    outputs.push_back(json{{"name", "predictions"}, {"datatype", "FP32"}, {"shape", {n, k}}, {"data", y}});
  }
  return json{{"model_name", model}, {"model_version", std::to_string(sv->version())}, {"outputs", outputs}};
}

// ---------------------------------------------------------------------------
// Formatting.

std::string Str(const json& j, const char* key, const std::string& fallback = "-") {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

std::string AliasesOf(const json& aliases, int64_t version) {
  std::string out;
  if (!aliases.is_object()) return out;
  for (const auto& [a, v] : aliases.items())
    if (v.is_number_integer() && v.get<int64_t>() == version) out += (out.empty() ? "" : ",") + a;
  return out;
}

// The headline metric of a version: accuracy for classifiers, MAE otherwise.
std::string Headline(const json& meta) {
  if (!meta.contains("metrics") || !meta["metrics"].is_object()) return "-";
  const json& m = meta["metrics"];
  if (m.contains("test_accuracy") && m["test_accuracy"].is_number())
    return fmt::format("acc {:.4f}", m["test_accuracy"].get<double>());
  if (m.contains("test_mae") && m["test_mae"].is_number())
    return fmt::format("mae {:.4g}", m["test_mae"].get<double>());
  return "-";
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  if (rows.empty()) return;
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i + 1 == r.size()) line += r[i];
      else line += r[i] + std::string(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

std::string VersionsText(const json& versions) {
  std::string out;
  if (versions.is_array())
    for (const auto& v : versions) out += (out.empty() ? "" : ",") + v.dump();
  return out.empty() ? "-" : out;
}

void PrintList(const json& doc) {
  std::vector<std::vector<std::string>> rows{{"MODEL", "VERSIONS", "DEFAULT", "ALIASES", "READY"}};
  for (const auto& m : doc.value("models", json::array())) {
    std::string aliases;
    const json table = m.value("aliases", json::object());
    for (const auto& [a, v] : table.items())
      aliases += fmt::format("{}{}={}", aliases.empty() ? "" : ",", a, v.dump());
    rows.push_back({Str(m, "name"), VersionsText(m.value("versions", json::array())),
                    Str(m, "default_version"), aliases.empty() ? "-" : aliases,
                    m.contains("error") ? "error"
                    : m.contains("ready") ? (m["ready"].get<bool>() ? "yes" : "no")
                                          : "-"});
  }
  PrintTable(rows);
  for (const auto& m : doc.value("models", json::array()))
    if (m.contains("error"))
      std::fprintf(stderr, "polisctl: model '%s': %s\n", Str(m, "name").c_str(),
                   Str(m, "error").c_str());
}

// The model card (registry/model_card.h) for people: one "key: value"
// table, sections in the card's order.
void PrintShow(const json& card) {
  std::vector<std::vector<std::string>> rows;
  auto add = [&](const std::string& key, const std::string& value) {
    if (!value.empty()) rows.push_back({key + ":", value});
  };
  for (const char* key : {"name", "version", "created_at", "sha256", "task", "parameter_count"})
    if (card.contains(key)) add(key, Str(card, key));
  for (const char* key : {"description", "intended_use", "limitations", "contact"}) add(key, Str(card, key));
  for (const char* part : {"inputs", "outputs"})
    for (const auto& t : card.value(part, json::array()))
      add(fmt::format("{} {}", std::string(part).substr(0, std::string(part).size() - 1), Str(t, "name")),
          fmt::format("{} {}{}", Str(t, "datatype"), t.value("shape", json::array()).dump(),
                      Str(t, "description").empty() ? "" : ": " + Str(t, "description")));
  const json classes = card.value("class_names", json::array());
  for (size_t i = 0; i < classes.size(); ++i) add(fmt::format("class {}", i), classes[i].get<std::string>());
  if (card.contains("training_data") && card["training_data"].is_object()) {
    const json& d = card["training_data"];
    add("training data", fmt::format("{} {}", Str(d, "format"), Str(d, "dir")));
    if (d.contains("samples") && d["samples"].is_object())
      add("training samples", fmt::format("{} train, {} validation, {} test", Str(d["samples"], "train"),
                                          Str(d["samples"], "validation"), Str(d["samples"], "test")));
    for (const auto& f : d.value("files", json::array())) add("training file", Str(f, "path") + "  sha256 " + Str(f, "sha256"));
    bool first = true;  // the reader's report, one line a row
    for (const auto& line : d.value("report", json::array()))
      if (line.is_string()) {
        rows.push_back({first ? "training data report:" : "", line.get<std::string>()});
        first = false;
      }
  }
  if (card.contains("metrics") && card["metrics"].is_object())
    for (const auto& [k, v] : card["metrics"].items())
      add("metric " + k, v.is_number_float() ? fmt::format("{:.6g}", v.get<double>()) : v.dump());
  if (card.contains("lineage") && card["lineage"].is_object()) {
    const json& l = card["lineage"];
    for (const char* key : {"job_name", "job_file", "job_sha256", "run_dir", "host", "source_revision"})
      if (l.contains(key)) add(std::string("lineage ") + key, Str(l, key));
    if (l.contains("study") && l["study"].is_object())
      add("lineage study", fmt::format("{} trial {}", Str(l["study"], "study"), Str(l["study"], "trial")));
  }
  if (card.contains("privacy") && card["privacy"].is_object()) {
    const json& p = card["privacy"];
    add("privacy", fmt::format("DP-SGD, epsilon {:.4g} at delta {:g} ({} accountant, {} sampling)",
                               p.value("epsilon", 0.0), p.value("delta", 0.0), Str(p, "accountant"), Str(p, "sampler")));
    add("privacy training", fmt::format("{} steps, sample rate {:.4g}, noise multiplier {:.4g}, clip norm {:g}{}",
                                        p.value("steps", int64_t{0}), p.value("sample_rate", 0.0),
                                        p.value("noise_multiplier", 0.0), p.value("max_grad_norm", 0.0),
                                        p.value("secure_aggregation", false) ? ", secure aggregation" : ""));
  }
  PrintTable(rows);
}

void PrintVersions(const json& doc) {
  const json aliases = doc.value("aliases", json::object());
  std::vector<std::vector<std::string>> rows{{"VERSION", "CREATED", "SHA256", "PARAMETERS", "METRIC", "ALIASES"}};
  for (const auto& m : doc.value("versions", json::array())) {
    const int64_t v = m.value("version", int64_t{0});
    const std::string sha = Str(m, "sha256");
    const std::string a = AliasesOf(aliases, v);
    rows.push_back({std::to_string(v), Str(m, "created_at"), sha.substr(0, 12), Str(m, "parameter_count"),
                    m.contains("error") ? "error: " + Str(m, "error") : Headline(m), a.empty() ? "-" : a});
  }
  PrintTable(rows);
}

// One row per version: requests, rows and mean times (µs) of each stage.
void PrintStats(const json& doc) {
  std::vector<std::vector<std::string>> rows{{"MODEL", "VERSION", "REQUESTS", "FAILED", "ROWS", "PASSES",
                                              "MEAN MS", "INPUT US", "QUEUE US", "INFER US", "OUTPUT US",
                                              "LAST"}};
  const auto count = [](const json& d) { return d.is_object() ? d.value("count", uint64_t{0}) : 0; };
  const auto mean_us = [&](const json& d) {
    const uint64_t n = count(d);
    return n == 0 ? std::string("-") : fmt::format("{:.0f}", d.value("ns", 0.0) / 1e3 / n);
  };
  for (const auto& m : doc.value("model_stats", json::array())) {
    const json is = m.value("inference_stats", json::object());
    const json ok = is.value("success", json::object());
    const int64_t last_ms = m.value("last_inference", int64_t{0});
    std::string last = "-";
    if (last_ms > 0) {
      const std::time_t t = last_ms / 1000;
      char buf[32];
      std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
      last = buf;
    }
    rows.push_back({Str(m, "name"), Str(m, "version"), std::to_string(count(ok)),
                    std::to_string(count(is.value("fail", json::object()))), Str(m, "inference_count"),
                    Str(m, "execution_count"),
                    count(ok) ? fmt::format("{:.3f}", ok.value("ns", 0.0) / 1e6 / count(ok)) : "-",
                    mean_us(is.value("compute_input", json::object())), mean_us(is.value("queue", json::object())),
                    mean_us(is.value("compute_infer", json::object())),
                    mean_us(is.value("compute_output", json::object())), last});
  }
  PrintTable(rows);
}

void PrintHistory(const json& doc) {
  std::vector<std::vector<std::string>> rows{{"SEQ", "WHEN", "WHO", "ACTION", "ALIAS", "FROM", "TO", "WHY"}};
  for (const auto& e : doc.value("history", json::array()))
    rows.push_back({Str(e, "seq"), Str(e, "when"), Str(e, "who"), Str(e, "action"),
                    Str(e, "alias").empty() ? "-" : Str(e, "alias"), Str(e, "from"), Str(e, "to"),
                    Str(e, "why").empty() ? "-" : Str(e, "why")});
  PrintTable(rows);
  std::string aliases;
  const json table = doc.value("aliases", json::object());  // items() must not outlive it
  for (const auto& [a, v] : table.items())
    aliases += fmt::format("{}{}={}", aliases.empty() ? "" : ", ", a, v.dump());
  std::printf("aliases now: %s\n", aliases.empty() ? "none" : aliases.c_str());
}

void PrintChange(const std::string& what, const json& doc) {
  if (!doc.value("changed", true)) {
    std::printf("%s: nothing changed\n", what.c_str());
    return;
  }
  for (const auto& e : doc.value("events", json::array()))
    std::printf("%s: %s %s%s -> %s\n", what.c_str(), Str(e, "action").c_str(),
                Str(e, "alias").empty() ? "" : ("alias " + Str(e, "alias") + ": ").c_str(),
                Str(e, "from").c_str(), Str(e, "to").c_str());
  std::string aliases;
  const json table = doc.value("aliases", json::object());  // items() must not outlive it
  for (const auto& [a, v] : table.items())
    aliases += fmt::format("{}{}={}", aliases.empty() ? "" : ", ", a, v.dump());
  std::printf("aliases now: %s\n", aliases.empty() ? "none" : aliases.c_str());
}

void PrintPrediction(const json& response, int top, std::optional<int> label,
                     const std::vector<std::string>& class_names) {
  auto named = [&](int64_t c) {
    return static_cast<size_t>(c) < class_names.size() ? fmt::format("{} ({})", c, class_names[static_cast<size_t>(c)])
                                                       : std::to_string(c);
  };
  std::printf("model %s version %s\n", Str(response, "model_name").c_str(),
              Str(response, "model_version").c_str());
  if (label) std::printf("label: %s\n", named(*label).c_str());
  for (const auto& out : response.value("outputs", json::array())) {
    const std::string name = Str(out, "name");
    if (name == "logits") continue;
    const auto shape = out.value("shape", json::array());
    const int64_t rows = shape.size() >= 1 ? shape[0].get<int64_t>() : 1;
    const int64_t k = shape.size() >= 2 ? shape[1].get<int64_t>() : 1;
    std::vector<double> data;
    for (const auto& v : out.value("data", json::array())) data.push_back(v.is_number() ? v.get<double>() : NAN);
    for (int64_t r = 0; r < rows && (r + 1) * k <= static_cast<int64_t>(data.size()); ++r) {
      if (rows > 1) std::printf("row %lld\n", static_cast<long long>(r));
      if (name == "probabilities") {
        std::vector<int64_t> order(k);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return data[r * k + a] > data[r * k + b]; });
        std::vector<std::vector<std::string>> table{{"RANK", "CLASS", "PROBABILITY"}};
        for (int64_t i = 0; i < std::min<int64_t>(top, k); ++i)
          table.push_back({std::to_string(i + 1), named(order[i]),
                           fmt::format("{:.6f}", data[r * k + order[i]])});
        PrintTable(table);
      } else {
        std::string line;
        for (int64_t j = 0; j < k; ++j) line += fmt::format("{}{:.6g}", j ? " " : "", data[r * k + j]);
        std::printf("%s: %s\n", name.c_str(), line.c_str());
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Building the predict request.

void NumbersOf(const json& j, std::vector<double>* out) {
  if (j.is_array())
    for (const auto& e : j) NumbersOf(e, out);
  else if (j.is_number())
    out->push_back(j.get<double>());
  else
    throw Usage{fmt::format("--input-json: {} is not a number", j.dump())};
}

// The time of a data line (seconds), or nullopt when it has none that reads.
std::optional<int64_t> LineTime(const std::string& line, int time_col, int hour_col, const std::string& format) {
  auto fields = data::SplitCsvLine(line);
  if (!fields.ok() || time_col >= static_cast<int>(fields->size()) || hour_col >= static_cast<int>(fields->size()))
    return std::nullopt;
  auto t = data::ParseTimestamp((*fields)[time_col], format);
  if (!t.ok()) return std::nullopt;
  if (hour_col < 0) return *t;
  // An hour as training reads it: a number 0-23, blanks around it allowed.
  const std::string& h = (*fields)[hour_col];
  char* end = nullptr;
  const double hour = std::strtod(h.c_str(), &end);
  if (end == h.c_str() || std::string_view(end).find_first_not_of(" \t") != std::string_view::npos ||
      hour != std::floor(hour) || hour < 0 || hour > 23)
    return std::nullopt;
  return *t + int64_t{3600} * static_cast<int64_t>(hour);
}

// lines[0] is the header. The lines of the file's last window, as the
// registry asks for them: from the last line at or before the window's
// first step (its last line's time - (lookback - 1) steps; repeats of that
// time included) to the end, so that the job's row policies (repeated
// times, dropped or filled rows) can make lookback steps of them. Without
// readable times: the last lookback lines.
std::vector<std::string> LastWindowLines(const std::vector<std::string>& lines, const ModelInfo& info) {
  const auto tail = [&] { return std::vector<std::string>(lines.end() - info.lookback, lines.end()); };
  const json& ts = info.timeseries;
  const auto text = [&](const char* key) { return Str(ts, key, ""); };
  const int64_t freq = ts.contains("frequency_seconds") && ts["frequency_seconds"].is_number_integer()
                           ? ts["frequency_seconds"].get<int64_t>()
                           : 0;
  auto header = data::SplitCsvLine(lines[0]);
  if (!header.ok() || freq <= 0) return tail();
  const auto column = [&](const std::string& name) {
    const auto it = std::find(header->begin(), header->end(), name);
    return name.empty() || it == header->end() ? -1 : static_cast<int>(it - header->begin());
  };
  const int time_col = column(text("timestamp_column")), hour_col = column(text("hour_column"));
  const std::string format = text("timestamp_format");
  if (time_col < 0 || (hour_col < 0 && !text("hour_column").empty())) return tail();
  size_t last = lines.size() - 1;
  std::optional<int64_t> t_last;
  for (; last >= 1 && !(t_last = LineTime(lines[last], time_col, hour_col, format)); --last) {}
  if (!t_last) return tail();
  const int64_t first_step = *t_last - (info.lookback - 1) * freq;
  size_t from = 1;
  for (size_t i = last; i >= 1; --i) {
    const auto t = LineTime(lines[i], time_col, hour_col, format);
    if (!t || *t > first_step) continue;
    from = i;
    while (from > 1 && LineTime(lines[from - 1], time_col, hour_col, format) == t) --from;
    break;
  }
  return std::vector<std::string>(lines.begin() + static_cast<std::ptrdiff_t>(from), lines.end());
}

StatusOr<json> BuildRequest(const ModelsOptions& o, const ModelInfo& info, std::optional<int>* label) {
  json sample_shape = info.sample_shape;
  const int64_t per_row =
      std::accumulate(info.sample_shape.begin(), info.sample_shape.end(), int64_t{1}, std::multiplies<>());
  if (!o.input_json.empty()) {
    POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(o.input_json));
    json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded()) return InvalidArgument("{} is not valid JSON", o.input_json);
    if (doc.is_object() && doc.contains("inputs")) return doc;  // a whole OIP request
    json tensor;
    if (doc.is_object() && doc.contains("data")) {
      tensor = doc;  // one OIP input tensor
      if (!tensor.contains("name")) tensor["name"] = "input";
    } else if (doc.is_array()) {
      std::vector<double> values;
      NumbersOf(doc, &values);
      if (per_row <= 0 || values.empty() || values.size() % per_row != 0)
        return InvalidArgument("{}: {} numbers is not a whole number of rows of {} (shape {})", o.input_json,
                               values.size(), per_row, sample_shape.dump());
      json shape = json::array({static_cast<int64_t>(values.size()) / per_row});
      for (int64_t d : info.sample_shape) shape.push_back(d);
      tensor = json{{"name", "input"}, {"datatype", "FP32"}, {"shape", shape}, {"data", values}};
    } else {
      return InvalidArgument(
          "{}: expected an OIP request ({{\"inputs\": [...]}}), one input tensor ({{\"name\", \"shape\", "
          "\"datatype\", \"data\"}}) or an array of numbers (FP32, already preprocessed)",
          o.input_json);
    }
    return json{{"inputs", json::array({tensor})}};
  }
  if (!o.images.empty()) {
    // The files as they are: the model decodes, resizes and preprocesses them.
    json files = json::array();
    for (const std::string& path : o.images) {
      POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
      files.push_back(reg::Base64Encode(bytes));
    }
    return json{{"inputs", json::array({json{{"name", reg::kImageInputName}, {"datatype", "BYTES"},
                                            {"shape", {static_cast<int64_t>(o.images.size())}},
                                            {"data", std::move(files)}}})}};
  }
  if (!o.idx.empty()) {
    POLIS_ASSIGN_OR_RETURN(data::IdxArray images, data::ReadIdx(o.idx));
    const int64_t n = images.dims[0];
    if (o.index < 0 || o.index >= n)
      return InvalidArgument("--index {} is out of range: {} holds images 0..{}", o.index, o.idx, n - 1);
    const int64_t per_image = static_cast<int64_t>(images.data.size()) / n;
    if (per_image != per_row)
      return InvalidArgument("{}: an image has {} values, the model takes {} (shape {})", o.idx, per_image,
                             per_row, sample_shape.dump());
    std::vector<int> pixels(images.data.begin() + o.index * per_image,
                            images.data.begin() + (o.index + 1) * per_image);
    json shape = json::array({1});
    for (int64_t d : info.sample_shape) shape.push_back(d);
    if (!o.idx_labels.empty()) {
      POLIS_ASSIGN_OR_RETURN(data::IdxArray labels, data::ReadIdx(o.idx_labels));
      if (o.index >= static_cast<int64_t>(labels.data.size()))
        return InvalidArgument("{} holds {} labels; no label for image {}", o.idx_labels, labels.data.size(),
                               o.index);
      *label = labels.data[o.index];
    }
    return json{{"inputs", json::array({json{{"name", "input"}, {"datatype", "UINT8"}, {"shape", shape},
                                            {"data", pixels}}})}};
  }
  // --csv: the rows of the file's last window, raw, with its header.
  if (info.lookback <= 0)
    return InvalidArgument(
        "--csv is for time-series models; this model takes images (use --image, --idx or --input-json)");
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(o.csv));
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  if (static_cast<int64_t>(lines.size()) < info.lookback + 1)
    return InvalidArgument("{}: {} data rows, the model needs the last {} (after the header line)", o.csv,
                           lines.empty() ? 0 : lines.size() - 1, info.lookback);
  const std::vector<std::string> window = LastWindowLines(lines, info);
  return json{{"inputs", json::array({json{{"name", "rows"}, {"datatype", "BYTES"},
                                           {"shape", {static_cast<int64_t>(window.size())}}, {"data", window}},
                                      json{{"name", "header"}, {"datatype", "BYTES"}, {"shape", {1}},
                                           {"data", {lines[0]}}}})}};
}

int Fail(const std::string& cmd, const Status& st) {
  std::fprintf(stderr, "polisctl models %s: %s\n", cmd.c_str(), st.message().c_str());
  return kExitFailed;
}

int Emit(const std::string& cmd, bool as_json, const StatusOr<json>& r,
         const std::function<void(const json&)>& human) {
  if (!r.ok()) return Fail(cmd, r.status());
  if (as_json) std::printf("%s\n", r->dump(2, ' ', false, json::error_handler_t::replace).c_str());
  else human(*r);
  return kExitOk;
}

}  // namespace

CLI::App* AddModelsCommands(CLI::App& app, ModelsOptions* o) {
  auto* models = app.add_subcommand(
      "models",
      "list, inspect, promote, roll back, delete and query models in a registry: a running "
      "polis-registry (--registry URL) or a registry root directory (--root DIR); docs/registry.md");
  models->require_subcommand(1, 1);
  models->fallthrough();
  models->add_option("--registry", o->registry,
                     "a running polis-registry, http://HOST:PORT or https://HOST:PORT (token: --token-file or "
                     "POLIS_REGISTRY_TOKEN; a private CA: --cacert or POLIS_CA_FILE)");
  models->add_option("--root", o->root, "a registry root directory, changed directly (no server needed)");
  models->footer(
      "Exactly one of --registry or --root. polisctl's own options apply too: --json (print JSON),\n"
      "--token-file F / --token T (default: $POLIS_REGISTRY_TOKEN), --timeout S (default 30),\n"
      "--cacert FILE (https: the CA certificates to trust; default: $POLIS_CA_FILE, else the system's).\n"
      "Writes over HTTP (promote, rollback, delete) need a token with the admin scope.\n"
      "Exit codes: 0 ok, 1 the operation failed, 2 usage.\n");

  models->add_subcommand("list", "models with their versions, default version and aliases");
  auto* show = models->add_subcommand("show", "the model card of one version (default: the latest): classes, inputs and outputs, training data, metrics, lineage");
  show->add_option("model", o->model, "model name")->required();
  show->add_option("version", o->ref, "version number, alias or 'latest'");
  auto* versions = models->add_subcommand("versions", "every version of a model with its metric and aliases");
  versions->add_option("model", o->model, "model name")->required();
  auto* history = models->add_subcommand("history", "alias history: who moved which alias, when and why");
  history->add_option("model", o->model, "model name")->required();
  auto* promote = models->add_subcommand("promote", "point an alias (production, staging, ...) at a version");
  promote->add_option("model", o->model, "model name")->required();
  promote->add_option("alias", o->alias, "alias name")->required();
  promote->add_option("version", o->version, "version number")->required()->check(CLI::PositiveNumber);
  auto* rollback = models->add_subcommand("rollback", "move an alias back to the version it named before");
  rollback->add_option("model", o->model, "model name")->required();
  rollback->add_option("alias", o->alias, "alias name")->required();
  auto* del = models->add_subcommand("delete", "delete a version (refused while an alias names it)");
  del->add_option("model", o->model, "model name")->required();
  del->add_option("version", o->version, "version number")->required()->check(CLI::PositiveNumber);
  del->add_flag("--force", o->force, "also remove the aliases that name it (recorded in the history)");
  for (auto* c : {promote, rollback, del}) {
    c->add_option("--why", o->why, "reason, kept in the alias history");
    c->add_option("--who", o->who, "who does it (--root only; a server records the token's name)");
  }
  auto* stats = models->add_subcommand(
      "stats", "requests served since the server started, per version: count, failures, rows, mean time per stage "
               "(a running server: --registry)");
  stats->add_option("model", o->model, "model name (default: every model)");
  stats->add_option("version", o->ref, "version number or alias (default: every loaded version)");
  auto* predict = models->add_subcommand(
      "predict", "ask a model (Open Inference Protocol v2 infer) and print the top classes or the predictions");
  predict->add_option("model", o->model, "model name")->required();
  predict->add_option("version", o->ref, "version number or alias (default: production, else the latest)");
  predict->add_option("--input-json", o->input_json,
                      "JSON file: an OIP infer request, one input tensor, or an array of numbers (FP32)");
  predict->add_option("--idx", o->idx, "IDX image file (gzip or raw); with --index");
  predict->add_option("--index", o->index, "which image of --idx (default 0)")->check(CLI::NonNegativeNumber);
  predict->add_option("--idx-labels", o->idx_labels, "IDX label file: also print the image's label");
  predict->add_option("--csv", o->csv, "time-series models: a CSV file with a header; its last rows are sent");
  predict->add_option("--image", o->images,
                      "image models: PNG or JPEG files, one row each, decoded and preprocessed by the model "
                      "as in training");
  predict->add_option("--top", o->top, "classes to print (default 5)")->check(CLI::PositiveNumber);
  return models;
}

int RunModels(CLI::App* models, const ModelsOptions& o, bool as_json, const std::string& token_flag,
              double timeout_s) {
  const std::string cmd = models->get_subcommands().front()->get_name();
  try {
    if (o.registry.empty() == o.root.empty())
      throw Usage{"give exactly one of --registry http[s]://HOST:PORT or --root DIR"};
    if (cmd == "stats" && !o.root.empty())
      throw Usage{"request statistics are kept by a running server: give --registry URL, not --root"};
    if (cmd == "predict") {
      const int kinds = !o.input_json.empty() + !o.idx.empty() + !o.csv.empty() + !o.images.empty();
      if (kinds != 1)
        throw Usage{"give exactly one input: --input-json FILE, --idx FILE [--index I], --csv FILE or "
                    "--image FILE..."};
      if (o.idx.empty() && (o.index != 0 || !o.idx_labels.empty()))
        throw Usage{"--index and --idx-labels go with --idx"};
    }
    std::unique_ptr<Backend> backend;
    if (!o.registry.empty()) {
      auto url = http::ParseHttpUrl(o.registry);
      if (!url.ok()) throw Usage{"--registry: " + url.status().message()};
      const std::string token = !token_flag.empty() ? token_flag : env::RegistryToken();
      backend = std::make_unique<HttpBackend>(*url, token, timeout_s, o.ca_file);
    } else {
      backend = std::make_unique<RootBackend>(o.root);
    }
    const reg::Actor actor{o.who.empty() ? DefaultWho() : o.who, o.why};

    if (cmd == "list") return Emit(cmd, as_json, backend->List(), PrintList);
    if (cmd == "show") return Emit(cmd, as_json, backend->Show(o.model, o.ref), PrintShow);
    if (cmd == "versions") return Emit(cmd, as_json, backend->Versions(o.model), PrintVersions);
    if (cmd == "history") return Emit(cmd, as_json, backend->History(o.model), PrintHistory);
    if (cmd == "stats") return Emit(cmd, as_json, backend->Stats(o.model, o.ref), PrintStats);
    if (cmd == "promote")
      return Emit(cmd, as_json, backend->Promote(o.model, o.alias, o.version, actor),
                  [&](const json& j) { PrintChange("promote", j); });
    if (cmd == "rollback")
      return Emit(cmd, as_json, backend->Rollback(o.model, o.alias, actor),
                  [&](const json& j) { PrintChange("rollback", j); });
    if (cmd == "delete")
      return Emit(cmd, as_json, backend->Delete(o.model, o.version, o.force, actor), [&](const json& j) {
        std::printf("deleted version %lld of %s\n", static_cast<long long>(o.version), o.model.c_str());
        PrintChange("delete", j);
      });
    // predict
    auto info = backend->Info(o.model, o.ref);
    if (!info.ok()) return Fail(cmd, info.status());
    std::optional<int> label;
    auto body = BuildRequest(o, *info, &label);
    if (!body.ok()) return Fail(cmd, body.status());
    auto response = backend->Infer(o.model, o.ref, *body);
    if (response.ok() && as_json && label) (*response)["label"] = *label;
    return Emit(cmd, as_json, response, [&](const json& r) { PrintPrediction(r, o.top, label, info->class_names); });
  } catch (const Usage& u) {
    std::fprintf(stderr, "polisctl models %s: %s\n", cmd.c_str(), u.message.c_str());
    return kExitUsage;
  }
}

}  // namespace polis::ctl
