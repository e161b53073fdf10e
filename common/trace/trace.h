// The timeline recorder (docs/timeline.md): complete events ("ph":"X" in
// Chrome's trace-event format) of what each thread of this process spends its
// time on, kept in memory and exported as JSON that Perfetto and Chromium's
// trace viewer open.
//
//   TRACE_SCOPE("forward");                        // until the end of the block
//   TRACE_SCOPE("allreduce bucket", "bytes", n);   // one integer argument
//   trace::Scope s("loss"); ...; s.End();          // ends before the block does
//
// Cost: with the recorder off a scope is one relaxed load and a predictable
// branch; on, two clock reads and a store into the calling thread's own
// buffer (no lock; a thread takes the registry's lock once, at its first
// event). Names are pointers that must outlive the export: string literals,
// or Intern() for names known only at run time (layer names).
//
// A cap bounds memory and output: Start() gets the bytes this process may
// write; once its events could no longer fit, recording stops, one log line
// says so, and the export ends with a "truncated" event.
//
// Thread-safety: Scope, Record and SetThreadName from any thread. Start,
// Export and Reset while no other thread records (before the roles start and
// after they return).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace polis::trace {

namespace internal {
extern std::atomic<bool> g_on;
void Record(const char* name, int64_t begin_ns, int64_t end_ns, const char* arg_name, int64_t arg);
}  // namespace internal

// The clock every event is taken with (common/comm's Clock as well).
inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline bool On() { return internal::g_on.load(std::memory_order_relaxed); }

struct Options {
  int pid = 0;                // the MPI rank: one Perfetto process per rank
  std::string process_name;   // "rank 3 (worker on h2)" (RoleContext::RankName)
  int64_t max_bytes = 64 << 20;  // this process's share of the file
};

// Starts recording on every thread; the calling thread is named "main".
void Start(const Options& options);
// Stops recording (events kept for Export).
void Stop();
// Drops every event and thread buffer (tests). Nothing may record meanwhile.
void Reset();

// A copy of `name` (cut to kMaxNameChars) that lives until the process ends;
// the same pointer for the same text.
constexpr size_t kMaxNameChars = 48;
const char* Intern(std::string_view name);
// The calling thread's row name in the viewer ("main", "comm").
void SetThreadName(const char* name);

// An event recorded by hand (times from NowNs()).
inline void Record(const char* name, int64_t begin_ns, int64_t end_ns, const char* arg_name = nullptr,
                   int64_t arg = 0) {
  if (On()) internal::Record(name, begin_ns, end_ns, arg_name, arg);
}

// A span from construction to End() or destruction.
class Scope {
 public:
  explicit Scope(const char* name, const char* arg_name = nullptr, int64_t arg = 0) {
    if (On()) {
      name_ = name;
      arg_name_ = arg_name;
      arg_ = arg;
      begin_ = NowNs();
    }
  }
  ~Scope() { End(); }
  void End() {
    if (name_ != nullptr) {
      internal::Record(name_, begin_, NowNs(), arg_name_, arg_);
      name_ = nullptr;
    }
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_ = nullptr;
  const char* arg_name_ = nullptr;
  int64_t arg_ = 0;
  int64_t begin_ = 0;
};

// Export: this process's events as trace-event JSON objects separated by
// ",\n" (no brackets), to be joined with other processes' parts inside
// {"traceEvents":[...]}. Times are written in microseconds with nanosecond
// decimals as (t + clock_offset_ns - origin_ns) / 1000: clock_offset_ns
// turns this host's clock into the coordinator's, origin_ns is the
// coordinator's time zero. Process and thread names come first; events
// that do not fit in Options::max_bytes are left out, and a "truncated"
// event (and a log line) says so.
struct ExportResult {
  std::string json;
  int64_t events = 0;   // written
  bool truncated = false;
};
ExportResult Export(int64_t clock_offset_ns, int64_t origin_ns);

// Whether recording stopped at the cap.
bool Truncated();

}  // namespace polis::trace

#define POLIS_TRACE_CAT2(a, b) a##b
#define POLIS_TRACE_CAT(a, b) POLIS_TRACE_CAT2(a, b)
// A span named by a string literal (or an interned name) to the end of the block.
#define TRACE_SCOPE(...) ::polis::trace::Scope POLIS_TRACE_CAT(polis_trace_scope_, __LINE__)(__VA_ARGS__)
