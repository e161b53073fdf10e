#include "registry/store.h"

#include <algorithm>
#include <filesystem>

#include "common/artifact/artifact.h"
#include "common/fs.h"
#include "common/nn/model.h"

namespace polis::registry {

StatusOr<std::vector<std::string>> ListModels(const std::string& root) {
  std::error_code ec;
  std::vector<std::string> out;
  std::filesystem::directory_iterator it(root, ec);
  if (ec) return IoError("cannot list registry root '{}': {}", root, ec.message());
  for (const auto& e : it) {
    std::string name = e.path().filename().string();
    if (e.is_directory() && ValidateModelName(name).ok()) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

static StatusOr<int64_t> Resolve(const std::string& root, const std::string& model, int64_t version) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  if (version > 0) return version;
  POLIS_ASSIGN_OR_RETURN(auto versions, ListVersions(root, model));
  if (versions.empty()) return NotFound("model '{}' has no versions under '{}'", model, root);
  return versions.back();
}

StatusOr<nlohmann::json> ReadMetadata(const std::string& root, const std::string& model,
                                      int64_t version) {
  POLIS_ASSIGN_OR_RETURN(int64_t v, Resolve(root, model, version));
  std::string path = fmt::format("{}/{}/{}/{}", root, model, v, kMetadataFileName);
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return DataLoss("'{}' is not valid JSON", path);
  return j;
}

StatusOr<nlohmann::json> VerifyVersion(const std::string& root, const std::string& model,
                                       int64_t version) {
  POLIS_ASSIGN_OR_RETURN(int64_t v, Resolve(root, model, version));
  std::string path = fmt::format("{}/{}/{}/{}", root, model, v, kArtifactFileName);
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  POLIS_ASSIGN_OR_RETURN(ModelArtifact a, DecodeArtifact(bytes, path));
  const auto& h = a.header;
  POLIS_ASSIGN_OR_RETURN(nn::Model m, nn::Model::Build(h.job().model(),
                                                       nn::Shape(h.input_shape().begin(), h.input_shape().end())));
  if (m.parameter_count() != static_cast<int64_t>(a.weights.size()))
    return DataLoss("'{}': the model rebuilds with {} parameters but the file holds {}", path,
                    m.parameter_count(), a.weights.size());
  return nlohmann::json{{"model", model}, {"version", v}, {"artifact", path},
                        {"sha256", ArtifactSha256(bytes)}, {"parameters", m.parameter_count()},
                        {"layers", m.layers().size()}, {"ok", true}};
}

}  // namespace polis::registry
