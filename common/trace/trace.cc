#include "common/trace/trace.h"

#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/log.h"

namespace polis::trace {
namespace internal {
std::atomic<bool> g_on{false};
}  // namespace internal

namespace {

struct Event {
  const char* name;
  const char* arg_name;
  int64_t begin_ns;
  int64_t end_ns;
  int64_t arg;
};

// Events are appended in chunks, so a long run never moves what it holds.
constexpr size_t kChunkEvents = 4096;
// The smallest event's JSON, `{"name":"x","ph":"X","pid":0,"tid":0,"ts":0.000,"dur":0.000},\n`:
// no more events than this many bytes each could fit are ever kept.
constexpr int64_t kMinEventBytes = 64;
// Room kept for the "truncated" events at the end of a part.
constexpr int64_t kTruncatedReserve = 384;

// One per thread that has recorded; written by that thread only.
struct ThreadBuffer {
  int index = 0;  // 1 = the first thread to record (the one that called Start)
  const char* name = nullptr;
  std::vector<std::unique_ptr<Event[]>> chunks;
  size_t count = 0;

  void Append(const Event& e) {
    if (count == chunks.size() * kChunkEvents) chunks.push_back(std::make_unique<Event[]>(kChunkEvents));
    chunks[count / kChunkEvents][count % kChunkEvents] = e;
    ++count;
  }
  const Event& at(size_t i) const { return chunks[i / kChunkEvents][i % kChunkEvents]; }
};

struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<ThreadBuffer>> buffers;  // GUARDED_BY(mu)
  Options options;                                     // set by Start
  std::atomic<int64_t> events{0};
  std::atomic<int64_t> max_events{0};
  std::atomic<bool> truncated{false};
  std::atomic<int> generation{1};  // bumped by Reset: thread-local pointers go stale
};

Registry& R() {
  static Registry* r = new Registry;  // never destroyed: threads may record during exit
  return *r;
}

thread_local ThreadBuffer* tls_buffer = nullptr;
thread_local int tls_generation = 0;

ThreadBuffer* Buffer() {
  Registry& r = R();
  const int gen = r.generation.load(std::memory_order_acquire);
  if (tls_buffer != nullptr && tls_generation == gen) return tls_buffer;
  std::lock_guard<std::mutex> lock(r.mu);
  r.buffers.push_back(std::make_unique<ThreadBuffer>());
  tls_buffer = r.buffers.back().get();
  tls_buffer->index = static_cast<int>(r.buffers.size());
  tls_generation = gen;
  return tls_buffer;
}

void NoteTruncated() {
  Registry& r = R();
  if (r.truncated.exchange(true)) return;
  internal::g_on.store(false, std::memory_order_relaxed);
  LogLine(LogLevel::kWarn, Subsys::kLaunch,
          fmt::format("timeline: this rank's share of the size cap ({} bytes) is full; recording stopped "
                      "(raise monitoring.timeline_max_mb for more)",
                      r.options.max_bytes));
}

// Microseconds with nanosecond decimals: "-0.042", "1234.567".
void AppendMicros(std::string* out, int64_t ns) {
  if (ns < 0) {
    out->push_back('-');
    ns = -ns;
  }
  fmt::format_to(std::back_inserter(*out), "{}.{:03d}", ns / 1000, static_cast<int>(ns % 1000));
}

std::string Quoted(const char* s) { return nlohmann::json(std::string(s)).dump(); }

}  // namespace

namespace internal {
void Record(const char* name, int64_t begin_ns, int64_t end_ns, const char* arg_name, int64_t arg) {
  Registry& r = R();
  if (r.events.fetch_add(1, std::memory_order_relaxed) >= r.max_events.load(std::memory_order_relaxed)) {
    NoteTruncated();
    return;
  }
  Buffer()->Append({name, arg_name, begin_ns, end_ns, arg});
}
}  // namespace internal

void Start(const Options& options) {
  Registry& r = R();
  r.options = options;
  r.max_events.store(std::max<int64_t>(options.max_bytes / kMinEventBytes, 0));
  r.events.store(0);
  r.truncated.store(false);
  SetThreadName("main");
  internal::g_on.store(true);
}

void Stop() { internal::g_on.store(false); }

void Reset() {
  Registry& r = R();
  internal::g_on.store(false);
  std::lock_guard<std::mutex> lock(r.mu);
  r.buffers.clear();
  r.events.store(0);
  r.truncated.store(false);
  r.generation.fetch_add(1, std::memory_order_acq_rel);
}

bool Truncated() { return R().truncated.load(); }

const char* Intern(std::string_view name) {
  static std::mutex mu;
  static auto* names = new std::unordered_set<std::string>;  // never freed: pointers handed out
  std::lock_guard<std::mutex> lock(mu);
  return names->emplace(name.substr(0, kMaxNameChars)).first->c_str();
}

void SetThreadName(const char* name) { Buffer()->name = name; }

ExportResult Export(int64_t clock_offset_ns, int64_t origin_ns) {
  Registry& r = R();
  std::lock_guard<std::mutex> lock(r.mu);
  const int pid = r.options.pid;
  ExportResult out;
  std::string& json = out.json;
  auto tid_of = [&](const ThreadBuffer& b) { return pid * 1000 + b.index; };
  // The viewer's row labels, in rank order, main thread first.
  json += fmt::format(R"({{"name":"process_name","ph":"M","pid":{},"args":{{"name":{}}}}})", pid,
                      Quoted(r.options.process_name.c_str()));
  json += fmt::format(",\n" R"({{"name":"process_sort_index","ph":"M","pid":{},"args":{{"sort_index":{}}}}})",
                      pid, pid);
  for (const auto& b : r.buffers) {
    const std::string name = b->name != nullptr ? b->name : fmt::format("thread {}", b->index);
    json += fmt::format(",\n" R"({{"name":"thread_name","ph":"M","pid":{},"tid":{},"args":{{"name":{}}}}})", pid,
                        tid_of(*b), Quoted(name.c_str()));
    json += fmt::format(",\n" R"({{"name":"thread_sort_index","ph":"M","pid":{},"tid":{},"args":{{"sort_index":{}}}}})",
                        pid, tid_of(*b), b->index);
  }
  std::unordered_map<const char*, std::string> quoted;  // names escaped once
  auto q = [&](const char* s) -> const std::string& {
    auto it = quoted.find(s);
    if (it == quoted.end()) it = quoted.emplace(s, Quoted(s)).first;
    return it->second;
  };
  bool truncated = r.truncated.load();
  int64_t last_ns = origin_ns - clock_offset_ns;
  const int64_t budget = r.options.max_bytes - kTruncatedReserve;
  std::string ev;
  bool full = false;
  for (const auto& b : r.buffers) {
    for (size_t i = 0; i < b->count && !full; ++i) {
      const Event& e = b->at(i);
      ev.clear();
      ev += ",\n{\"name\":";
      ev += q(e.name);
      fmt::format_to(std::back_inserter(ev), R"(,"ph":"X","pid":{},"tid":{},"ts":)", pid, tid_of(*b));
      AppendMicros(&ev, e.begin_ns + clock_offset_ns - origin_ns);
      ev += ",\"dur\":";
      AppendMicros(&ev, e.end_ns - e.begin_ns);
      if (e.arg_name != nullptr) fmt::format_to(std::back_inserter(ev), R"(,"args":{{{}:{}}})", q(e.arg_name), e.arg);
      ev += '}';
      if (static_cast<int64_t>(json.size() + ev.size()) > budget) {
        full = true;
        break;
      }
      json += ev;
      last_ns = std::max(last_ns, e.end_ns);
      ++out.events;
    }
  }
  if (full && !r.truncated.exchange(true))
    LogLine(LogLevel::kWarn, Subsys::kLaunch,
            fmt::format("timeline: this rank's events exceed its share of the size cap ({} bytes); the "
                        "file keeps the first {}",
                        r.options.max_bytes, out.events));
  truncated |= full;
  if (truncated) {
    json += fmt::format(",\n" R"({{"name":"truncated","ph":"M","pid":{},"args":{{"events_written":{},"max_bytes":{}}}}})",
                        pid, out.events, r.options.max_bytes);
    json += fmt::format(",\n" R"({{"name":"timeline truncated","ph":"i","s":"p","pid":{},"tid":{},"ts":)", pid,
                        pid * 1000 + 1);
    AppendMicros(&json, last_ns + clock_offset_ns - origin_ns);
    json += '}';
  }
  out.truncated = truncated;
  return out;
}

}  // namespace polis::trace
