// What a rank receives from other ranks (common/comm/wire_checks.h): the
// bytes of a control message (DecodeControl, as TryRecvControl uses it) and
// its fields (CheckControlMessage), and the raw push and pull headers of the
// parameter server (CheckPushHeader, CheckPullHeader), against the limits of
// a small job: 3 epochs of 1000 samples, 2 workers, 2 servers, 5000
// parameters.
//
// Input: one mode byte, then the bytes. Mode bits 0-1: 0 and 1 a control
// message, 2 a PushHeader, 3 a PullHeader (zero-padded or cut to the size
// MPI would deliver). A message that passes must pass again after a
// serialize/parse round trip, and its values must lie within the limits.
#include <algorithm>
#include <cstring>

#include "common/comm/wire_checks.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

template <typename T>
T Pod(std::string_view bytes) {
  T v{};
  std::memcpy(&v, bytes.data(), std::min(sizeof v, bytes.size()));
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  comm::WireLimits limits;
  limits.epochs = 3;
  limits.samples_per_epoch = 1000;
  limits.workers = 2;
  limits.servers = 2;
  limits.parameter_count = 5000;
  limits.outputs = 2;
  constexpr int kFrom = 3;
  switch (data[0] & 3) {
    case 2: {
      const PushHeader h = Pod<PushHeader>(body);
      if (comm::CheckPushHeader(h, kFrom, limits).ok())
        POLIS_FUZZ_CHECK(h.samples >= 0 && h.consumed <= limits.samples_per_epoch &&
                         h.epoch >= 0 && h.epoch < limits.epochs);
      return 0;
    }
    case 3: {
      const PullHeader h = Pod<PullHeader>(body);
      if (comm::CheckPullHeader(h, kFrom).ok()) POLIS_FUZZ_CHECK(h.step >= 0 && h.total_samples >= 0);
      return 0;
    }
    default: {
      proto::ControlMessage msg;
      if (!comm::DecodeControl(body, kFrom, &msg).ok()) return 0;
      if (!comm::CheckControlMessage(msg, kFrom, limits).ok()) return 0;
      if (msg.has_shard_grant()) {
        const auto& g = msg.shard_grant();
        POLIS_FUZZ_CHECK(0 <= g.begin() && g.begin() <= g.end() && g.end() <= limits.samples_per_epoch);
      }
      if (msg.has_shard_saved())
        POLIS_FUZZ_CHECK(msg.shard_saved().consumed_size() == limits.workers);
      std::string bytes;
      POLIS_FUZZ_CHECK(msg.SerializeToString(&bytes));
      proto::ControlMessage again;
      POLIS_FUZZ_CHECK(comm::DecodeControl(bytes, kFrom, &again).ok());
      POLIS_FUZZ_CHECK(comm::CheckControlMessage(again, kFrom, limits).ok());
      return 0;
    }
  }
}
