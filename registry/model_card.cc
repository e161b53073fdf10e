#include "registry/model_card.h"

#include <fmt/format.h>

#include "common/artifact/artifact_json.h"
#include "common/data/dataset.h"
#include "registry/image_input.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;

json Shape(int64_t batch, const google::protobuf::RepeatedField<int64_t>& dims) {
  json s = json::array({batch});
  for (int64_t d : dims) s.push_back(d);
  return s;
}

json Tensor(const proto::ArtifactHeader& h, const std::string& name, const char* datatype, json shape) {
  return json{{"name", name}, {"datatype", datatype}, {"shape", std::move(shape)},
              {"description", TensorDescription(h, name)}};
}

json TrainingData(const proto::ArtifactHeader& h) {
  const proto::DatasetSpec& d = h.job().dataset();
  json files = json::array();
  for (const auto& f : h.lineage().dataset_files()) files.push_back({{"path", f.path()}, {"sha256", f.sha256()}});
  json out{{"format", proto::DatasetSpec::Format_Name(d.format())},
           {"dir", d.format() == proto::DatasetSpec::CSV ? d.timeseries().path() : d.dir()},
           {"files", files}};
  // Artifacts published before the counts were recorded have none.
  if (h.has_train_samples())
    out["samples"] = {{"train", h.train_samples()},
                      {"validation", h.validation_samples()},
                      {"test", h.test_samples()}};
  if (!h.data_report().empty()) out["report"] = data::ReportLines(h.data_report());
  return out;
}

}  // namespace

bool IsClassifierHeader(const proto::ArtifactHeader& h) {
  return h.job().model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY && h.output_shape_size() == 1;
}

// The rule ServedVersion serves raw rows by: trained from a CSV, or from
// shards of its windows (whose packed spec the trainer copies into the job).
bool IsTimeSeriesHeader(const proto::ArtifactHeader& h) {
  return h.job().dataset().has_timeseries() && !h.preprocessing_json().empty();
}

std::vector<std::string> OutputNamesOf(const proto::ArtifactHeader& h) {
  if (IsClassifierHeader(h)) return {kProbabilities, kLogits};
  return {kPredictions};
}

std::string TensorDescription(const proto::ArtifactHeader& h, const std::string& name) {
  if (name == kInputName) return h.input_description();
  if (name == kProbabilities || name == kPredictions) return h.output_description();
  if (name == kLogits) return "unnormalised scores (logits) of the same classes, before the softmax";
  if (name == kImageInputName)
    return "PNG or JPEG files, decoded and resized to the model's input, then preprocessed as training did";
  if (name == kRowsInput)
    return fmt::format("raw CSV lines, {} a window, preprocessed as in training; predictions in the target's "
                       "original units",
                       h.job().dataset().timeseries().lookback());
  if (name == kHeaderInput) return "the CSV column names of 'rows' (optional when the training file's are known)";
  return "";
}

json ModelCard(const std::string& model, int64_t version, const std::string& sha256, const proto::ArtifactHeader& h) {
  json inputs = json::array({Tensor(h, kInputName, "FP32", Shape(-1, h.input_shape()))});
  if (ImageInputOf(h)) inputs.push_back(Tensor(h, kImageInputName, "BYTES", json::array({-1})));
  if (IsTimeSeriesHeader(h)) {
    inputs.push_back(Tensor(h, kRowsInput, "BYTES", json::array({-1, h.job().dataset().timeseries().lookback()})));
    inputs.push_back(Tensor(h, kHeaderInput, "BYTES", json::array({-1})));
  }
  json outputs = json::array();
  for (const std::string& name : OutputNamesOf(h)) outputs.push_back(Tensor(h, name, "FP32", Shape(-1, h.output_shape())));
  json metrics = json::object();
  for (const auto& m : h.metric()) metrics[m.name()] = m.value();
  const proto::ModelCardSpec& mc = h.job().model_card();
  json card{{"name", model},
            {"version", version},
            {"sha256", sha256},
            {"created_at", h.lineage().created_at()},
            {"task", IsClassifierHeader(h) ? "classification" : "regression"},
            {"description", mc.description()},
            {"intended_use", mc.intended_use()},
            {"limitations", mc.limitations()},
            {"contact", mc.contact()},
            {"parameter_count", h.parameter_count()},
            {"inputs", inputs},
            {"outputs", outputs},
            {"class_names", json(std::vector<std::string>(h.class_names().begin(), h.class_names().end()))},
            {"training_data", TrainingData(h)},
            {"metrics", metrics},
            {"lineage", LineageJson(h.lineage())}};
  card["lineage"]["job_name"] = h.job().name();
  if (h.has_privacy()) card["privacy"] = PrivacyJson(h.privacy());  // DP-SGD models only
  return card;
}

}  // namespace polis::registry
