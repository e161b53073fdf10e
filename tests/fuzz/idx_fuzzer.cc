// IDX images and labels (common/data/idx.h): ReadIdx, ReadIdxDims and
// ScanIdx over the same file, raw or gzip.
//
// Input: one mode byte, then the file. Mode bit 0 set: the rest is
// gzip-compressed before it is written, so ScanIdx's streaming inflate sees
// valid streams of every length; clear: the bytes are the file (a mutated
// gzip stream exercises the corrupt-stream paths). The three readers must
// agree: a file ReadIdx accepts has the same dims under ReadIdxDims and
// ScanIdx, and ScanIdx's largest element is ReadIdx's.
#include <algorithm>

#include "common/data/idx.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const bool gzip = data[0] & 1;
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  const std::string path = fuzz::WriteScratch("input.idx", gzip ? fuzz::Gzip(body) : std::string(body));

  auto array = data::ReadIdx(path);
  auto dims = data::ReadIdxDims(path);
  auto scan = data::ScanIdx(path);
  if (array.ok()) {
    int64_t elements = 1;
    for (int64_t d : array->dims) elements *= d;
    POLIS_FUZZ_CHECK(static_cast<int64_t>(array->data.size()) == elements);
    POLIS_FUZZ_CHECK(dims.ok() && *dims == array->dims);
    POLIS_FUZZ_CHECK(scan.ok() && scan->dims == array->dims);
    const auto top = std::max_element(array->data.begin(), array->data.end());
    POLIS_FUZZ_CHECK(scan->max_value == *top);
    POLIS_FUZZ_CHECK(scan->max_index == top - array->data.begin());
  }
  if (scan.ok()) POLIS_FUZZ_CHECK(dims.ok() && *dims == scan->dims);
  return 0;
}
