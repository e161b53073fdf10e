// Job spec text (common/job_spec.h): ParseJobText parses protobuf text and
// checks every field's declared range, string lengths and control bytes,
// and the cross-field rules. A job it accepts must survive a round trip:
// printed back as text, it parses and passes the same checks.
#include <google/protobuf/text_format.h>

#include "common/job_spec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  const std::string text(fuzz::AsView(data, size));
  auto job = ParseJobText(text, "fuzz.pbtxt");
  if (!job.ok()) return 0;
  POLIS_FUZZ_CHECK(job->sha256 == Sha256Hex(text));
  PublishedModelName(job->spec);
  std::string printed;
  POLIS_FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(job->spec, &printed));
  auto again = ParseJobText(printed, "printed.pbtxt");
  if (!again.ok()) {
    std::fprintf(stderr, "accepted job fails after a round trip: %s\n",
                 again.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
