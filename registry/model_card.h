// The model card of a published version (docs/registry.md, "Model card"):
// what the model is for, what it takes and answers, its classes, the data
// that trained it, how good it is, where it came from and, for DP-SGD
// models, its privacy guarantee. Built from the artifact header alone, so
// the server (GET /v2/models/{name}/card) and `polisctl models show --root`
// give the same JSON, and no dataset is reopened.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/artifact/artifact.h"

namespace polis::registry {

// Inference tensor names (the OIP metadata's inputs and outputs).
inline constexpr char kInputName[] = "input";
inline constexpr char kRowsInput[] = "rows";      // time series: raw CSV lines
inline constexpr char kHeaderInput[] = "header";  // time series: their column names
inline constexpr char kProbabilities[] = "probabilities";
inline constexpr char kLogits[] = "logits";
inline constexpr char kPredictions[] = "predictions";  // regression models

// A classifier: softmax cross-entropy over a flat output.
bool IsClassifierHeader(const proto::ArtifactHeader& h);
// A time-series forecaster that serves raw CSV rows (its preprocessing kept).
bool IsTimeSeriesHeader(const proto::ArtifactHeader& h);

// The outputs a model answers: probabilities and logits, or predictions.
std::vector<std::string> OutputNamesOf(const proto::ArtifactHeader& h);

// One sentence on an input or output tensor of the model, by name ("" for
// a name the model does not have). Artifacts published before descriptions
// were recorded describe 'input' and the main output as "".
std::string TensorDescription(const proto::ArtifactHeader& h, const std::string& name);

// The card as JSON; `sha256` is the artifact file's (its registry identity).
nlohmann::json ModelCard(const std::string& model, int64_t version, const std::string& sha256,
                         const proto::ArtifactHeader& h);

}  // namespace polis::registry
