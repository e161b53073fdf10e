#include <cstdlib>
#include <cstring>
#include <new>

#include "common/device/device.h"

namespace polis::device {

const char* KindName(Kind k) { return k == Kind::kCuda ? "CUDA" : "CPU"; }

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kTf32: return "TF32";
    case Precision::kBf16: return "BF16";
    default: return "FP32";
  }
}

const char* SpaceName(Space s) {
  switch (s) {
    case Space::kPinned: return "pinned host";
    case Space::kDevice: return "device";
    default: return "host";
  }
}

namespace {

// Work on the CPU runs when it is called: a stream has nothing pending.
class CpuStream : public Stream {
 public:
  Status Synchronize() override { return Status::Ok(); }
  void* native() const override { return nullptr; }
};

class CpuEvent : public Event {
 public:
  Status Record(Stream&) override { return Status::Ok(); }
  Status MakeWait(Stream&) override { return Status::Ok(); }
  Status Synchronize() override { return Status::Ok(); }
  void* native() const override { return nullptr; }
};

class Cpu : public Device {
 public:
  Kind kind() const override { return Kind::kCpu; }
  int ordinal() const override { return 0; }
  std::string Describe() const override { return "CPU"; }
  StatusOr<Buffer> Allocate(int64_t floats, Space space) override {
    if (floats < 0) return InvalidArgument("cannot allocate {} floats", floats);
    // 64-byte alignment: what oneDNN's vector kernels prefer.
    const size_t bytes = ((sizeof(float) * static_cast<size_t>(floats) + 63) / 64) * 64;
    void* p = bytes ? std::aligned_alloc(64, bytes) : nullptr;
    if (bytes && !p) return FailedPrecondition("cannot allocate {} bytes of host memory", bytes);
    if (p) std::memset(p, 0, bytes);
    return Buffer(static_cast<float*>(p), floats, space, [](float* q) { std::free(q); });
  }
  StatusOr<std::unique_ptr<Stream>> NewStream() override { return std::unique_ptr<Stream>(new CpuStream); }
  StatusOr<std::unique_ptr<Event>> NewEvent() override { return std::unique_ptr<Event>(new CpuEvent); }
  Status Copy(Span<float> dst, Span<const float> src, Stream&) override {
    if (dst.size != src.size) return InvalidArgument("copy of {} floats into {}", src.size, dst.size);
    if (dst.size > 0 && dst.data != src.data) std::memmove(dst.data, src.data, sizeof(float) * dst.size);
    return Status::Ok();
  }
  Status Zero(Span<float> dst, Stream&) override {
    if (dst.size > 0) std::memset(dst.data, 0, sizeof(float) * dst.size);
    return Status::Ok();
  }
  Status Pin(float*, int64_t) override { return Status::Ok(); }
  Status MakeCurrent() override { return Status::Ok(); }
  Status Unpin(float*) override { return Status::Ok(); }
  Stream& stream() override { return stream_; }

 private:
  CpuStream stream_;
};

}  // namespace

std::unique_ptr<Device> CpuDevice() { return std::make_unique<Cpu>(); }

StatusOr<int> LocalDeviceOrdinal(int visible, int local_worker,
                                 const std::function<const char*(const char*)>& getenv) {
  const char* from = local_worker >= 0 ? "workers counted on their host" : nullptr;
  const char* text = nullptr;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    if (local_worker >= 0) break;
    if (const char* v = getenv(name); v != nullptr && *v != '\0') {
      from = name;
      text = v;
      break;
    }
  }
  int rank = local_worker >= 0 ? local_worker : 0;
  if (text != nullptr) {
    char* end = nullptr;
    const long v = std::strtol(text, &end, 10);
    if (*end != '\0' || v < 0 || v > 1 << 20) return InvalidArgument("{}='{}' is not a local rank", from, text);
    rank = static_cast<int>(v);
  }
  const char* listed = getenv("CUDA_VISIBLE_DEVICES");
  const std::string which = listed ? fmt::format(" (CUDA_VISIBLE_DEVICES={})", listed) : "";
  if (visible <= 0) return FailedPrecondition("no CUDA device is visible to this process{}", which);
  if (rank >= visible)
    return FailedPrecondition(
        "local rank {} ({}) but this host shows {} CUDA device{}{}: NCCL cannot run two ranks on one GPU; "
        "start at most {} GPU worker{} per host",
        rank, from ? from : "no local rank set", visible, visible == 1 ? "" : "s", which, visible,
        visible == 1 ? "" : "s");
  return rank;
}

}  // namespace polis::device
