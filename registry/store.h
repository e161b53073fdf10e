// The registry's read side of the model store: models under a root, their
// versions and metadata, and verification of every artifact's checksum.
// Writing a version is common/artifact (PublishVersion), shared with the
// coordinator that publishes. Stateless functions; safe from any thread.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace polis::registry {

// Model names under root (directories with a valid model name), sorted.
StatusOr<std::vector<std::string>> ListModels(const std::string& root);
// metadata.json of one version (0 = latest).
StatusOr<nlohmann::json> ReadMetadata(const std::string& root, const std::string& model,
                                      int64_t version);
// Re-reads the artifact and checks it: checksum, header, and that the model
// rebuilds with the stored parameter count. Returns a short JSON summary.
StatusOr<nlohmann::json> VerifyVersion(const std::string& root, const std::string& model,
                                       int64_t version);

}  // namespace polis::registry
