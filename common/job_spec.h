// Loading and checking a job spec (common/proto/job.proto, protobuf text).
//
// A bad job is refused before any process starts work: parse errors name the
// file, line and column; missing or inconsistent fields name the file and the
// field path ("model.layer[2].conv2d_param.filters") and the reason.
#pragma once

#include <string>

#include "common/data/dataset.h"
#include "common/nn/model.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis {

struct LoadedJob {
  proto::JobSpec spec;
  std::string path;
  std::string sha256;  // of the file's bytes
};

using data::DatasetPaths;
using data::ResolveDataset;

// Parses and validates the fields themselves (not the dataset files).
StatusOr<LoadedJob> LoadJobFile(const std::string& path);
StatusOr<LoadedJob> ParseJobText(const std::string& text, const std::string& source);
Status ValidateJobFields(const proto::JobSpec& spec, const std::string& source);

// Reads the dataset headers and builds the model from them: checks that the
// files exist, agree with each other, and fit the layers. Returns the model.
StatusOr<nn::Model> CheckJob(const LoadedJob& job);

// Name the model is published under (registry.model_name or the job name).
std::string PublishedModelName(const proto::JobSpec& spec);

// The bearer token for publishing to registry.url: the first line of
// registry.token_file, else $POLIS_REGISTRY_TOKEN. InvalidArgument naming
// the file when it is unreadable or empty, or naming both sources when
// neither gives a token. Only meaningful when registry.url is set.
StatusOr<std::string> RegistryToken(const proto::RegistrySpec& registry, const std::string& source);

}  // namespace polis
