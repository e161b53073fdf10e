// Checkpoints (common/checkpoint.h): the manifest (ParseManifest, all of
// ReadManifest but the shard files' checksums) and shard files
// (ReadShardFile: the framing of common/artifact/artifact.h around a
// CheckpointShard header and the floats).
//
// Input: one mode byte, then the bytes. Mode bits 0-1:
//   0  manifest.json as given
//   1  manifest.json with its "sha256" recomputed, so mutations reach the
//      fields behind the checksum
//   2  a shard file as given
//   3  a shard file with its trailing SHA-256 recomputed
#include <nlohmann/json.hpp>

#include "common/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

std::string RestampManifest(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("manifest")) return std::string(text);
  j["sha256"] = polis::Sha256Hex(j["manifest"].dump());
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  switch (data[0] & 3) {
    case 0:
    case 1: {
      const std::string text = data[0] & 1 ? RestampManifest(body) : std::string(body);
      auto m = ParseManifest(text, "manifest.json");
      if (!m.ok()) return 0;
      // What a resume does with it.
      int64_t at = 0;
      for (const auto& s : m->shards) {
        POLIS_FUZZ_CHECK(s.begin >= 0 && s.end > s.begin && s.end <= m->parameter_count);
        POLIS_FUZZ_CHECK(s.file.find('/') == std::string::npos);
        at += s.end - s.begin;
      }
      POLIS_FUZZ_CHECK(at == m->parameter_count);
      Complement(MergeRanges(m->consumed), m->parameter_count);
      return 0;
    }
    default: {
      const std::string bytes = data[0] & 1 ? fuzz::Restamp(body) : std::string(body);
      auto shard = ReadShardFile(fuzz::WriteScratch("server-0.shard", bytes));
      if (!shard.ok()) return 0;
      const size_t n = shard->params.size();
      POLIS_FUZZ_CHECK(static_cast<int64_t>(n) == shard->end - shard->begin);
      for (const auto& [name, v] : shard->state) POLIS_FUZZ_CHECK(v.size() == n);
      return 0;
    }
  }
}
