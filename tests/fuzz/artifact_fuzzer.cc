// Model artifacts (common/artifact/artifact.h): DecodeArtifact checks the
// magic, the two length fields, the SHA-256, the ArtifactHeader, the
// parameter count and that every weight and metric is finite. Time-series
// models carry TimeSeriesStats JSON in the header, which serving parses too.
//
// Input: one mode byte, then the bytes. Mode bit 0 set: the trailing
// SHA-256 is recomputed first, so mutations reach the header and weights.
#include <cmath>

#include "common/artifact/artifact.h"
#include "common/data/timeseries.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  const std::string bytes = data[0] & 1 ? fuzz::Restamp(body) : std::string(body);
  auto a = DecodeArtifact(bytes, "model.polis");
  if (!a.ok()) return 0;
  POLIS_FUZZ_CHECK(a->header.parameter_count() == static_cast<int64_t>(a->weights.size()));
  for (float w : a->weights) POLIS_FUZZ_CHECK(std::isfinite(w));
  POLIS_FUZZ_CHECK(ArtifactSha256(bytes) == Sha256Hex(std::string_view(bytes).substr(0, bytes.size() - 32)));
  // Encoding what was decoded gives the same bytes back.
  POLIS_FUZZ_CHECK(DecodeArtifact(EncodeArtifact(*a), "again").ok());
  if (a->header.has_preprocessing_json())
    (void)data::TimeSeriesStats::FromJson(a->header.preprocessing_json());
  return 0;
}
