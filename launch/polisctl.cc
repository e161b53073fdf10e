// polisctl: the operator's CLI for a running Polis job and for the model
// registry. Job commands talk to the coordinator's monitoring API
// (coordinator/monitor.h, docs/operations.md), found from
// <run-dir>/coordinator.json ("address") or given as --address; `models`
// commands talk to a polis-registry or work on a registry root
// (launch/polisctl_models.h, docs/registry.md).
//
//   polisctl status|top|workers|servers|logs|checkpoint|stop
//            [--run-dir DIR | --address URL] [--json] [--token T] [--cacert FILE]
//   polisctl models list|show|versions|history|promote|rollback|delete|predict
//            (--registry URL | --root DIR) [--json] [--token-file F] [--cacert FILE]
//   polisctl tune status|top STUDY_DIR [--json]     (launch/polisctl_tune.h)
//   polisctl cluster [--jobs-dir DIR] [--json] [--serve HOST:PORT]
//            every job and host at a glance (launch/cluster_view.h)
//
// Exit codes: 0 done, 1 the coordinator is unreachable or the command
// failed, 2 usage.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/beast/http/verb.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/http/http_client.h"
#include "common/status.h"
#include "launch/cluster_view.h"
#include "launch/polisctl_models.h"
#include "launch/polisctl_tune.h"

namespace polis::ctl {
namespace {

namespace http = boost::beast::http;
using json = nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

std::atomic<bool> g_interrupted{false};
volatile bool g_interrupted_flag = false;
void OnInterrupt(int) {
  g_interrupted = true;
  g_interrupted_flag = true;
}

struct Options {
  std::string run_dir;
  std::string address;
  bool json = false;
  std::string token;
  std::string token_file;
  double timeout_s = 5;
  std::string ca_file;  // --cacert: https, the CAs to trust
  // top
  double interval_s = 2;
  int iterations = 0;  // 0: until interrupted or the job ends
  // logs
  int lines = 20;
  bool follow = false;
  std::string stream = "both";
  // stop
  bool signal = false;
};

// A usage error (exit 2) as opposed to a failure (exit 1).
struct UsageError {
  std::string message;
};

// ---------------------------------------------------------------------------
// Finding the coordinator.

struct Endpoint {
  bool https = false;
  std::string host;
  std::string port;
  std::string url;  // as shown to the user
};

StatusOr<Endpoint> ParseUrl(const std::string& text) {
  std::string rest = text;
  Endpoint e;
  if (rest.starts_with("http://")) {
    rest = rest.substr(7);
  } else if (rest.starts_with("https://")) {
    rest = rest.substr(8);
    e.https = true;
  } else if (rest.find("://") != std::string::npos) {
    return InvalidArgument("'{}': only http:// and https:// addresses are served by the monitor", text);
  }
  rest = rest.substr(0, rest.find('/'));
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return InvalidArgument("'{}' has an unclosed '['", text);
    e.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') e.port = rest.substr(close + 2);
  } else {
    const size_t colon = rest.rfind(':');
    e.host = rest.substr(0, colon);
    if (colon != std::string::npos) e.port = rest.substr(colon + 1);
  }
  if (e.host.empty() || e.port.empty() ||
      e.port.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("'{}' is not an address like http://HOST:PORT", text);
  e.url = (e.https ? "https://" : "http://") + rest;
  return e;
}

StatusOr<json> ReadCoordinatorJson(const std::string& run_dir) {
  const std::string path = run_dir + "/coordinator.json";
  auto text = ReadFile(path);
  if (!text.ok())
    return NotFound("{} is not readable ({}): is '{}' the run directory of a started job?", path,
                    text.status().message(), run_dir);
  json doc = json::parse(*text, nullptr, false);
  if (!doc.is_object()) return DataLoss("{} is not a JSON object", path);
  return doc;
}

// The run directory: --run-dir, else "." when it holds a coordinator.json.
std::string RunDir(const Options& o) {
  if (!o.run_dir.empty()) return o.run_dir;
  if (o.address.empty() && PathExists("coordinator.json")) return ".";
  return "";
}

StatusOr<Endpoint> FindCoordinator(const Options& o) {
  if (!o.address.empty()) return ParseUrl(o.address);
  const std::string dir = RunDir(o);
  if (dir.empty()) throw UsageError{"give --run-dir DIR or --address URL"};
  POLIS_ASSIGN_OR_RETURN(json info, ReadCoordinatorJson(dir));
  auto it = info.find("address");
  if (it == info.end() || !it->is_string())
    return NotFound("{}/coordinator.json has no \"address\": this coordinator serves no monitoring API",
                    dir);
  return ParseUrl(it->get<std::string>());
}

std::string ReadToken(const Options& o) {
  if (!o.token.empty()) return o.token;
  auto trimmed = [](std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
  };
  if (!o.token_file.empty()) {
    auto t = ReadFile(o.token_file);
    if (!t.ok()) throw UsageError{fmt::format("--token-file: {}", t.status().message())};
    return trimmed(*t);
  }
  if (const char* env = std::getenv("POLIS_MONITOR_TOKEN"); env && *env) return env;
  const std::string dir = RunDir(o);
  if (!dir.empty() && PathExists(dir + "/monitor.token")) {
    auto t = ReadFile(dir + "/monitor.token");
    if (t.ok()) return trimmed(*t);
  }
  return "";
}

// ---------------------------------------------------------------------------
// HTTP: one request per call, every step under the deadline.

struct Response {
  int status = 0;
  std::string body;
};

StatusOr<Response> Fetch(const Endpoint& e, http::verb method, const std::string& target,
                         const std::string& token, const Options& o) {
  ::polis::http::HttpClient client(e.host, std::stoi(e.port), static_cast<int>(o.timeout_s * 1000),
                                   ::polis::http::ClientTls{e.https, ::polis::http::CaFileOr(o.ca_file)});
  std::vector<std::pair<std::string, std::string>> headers = {{"User-Agent", "polisctl"}};
  if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
  auto r = client.Request(std::string(http::to_string(method)), target, "", headers);
  if (!r.ok()) return Status(r.status().code(), fmt::format("the coordinator at {}: {}", e.url,
                                                            r.status().message()));
  return Response{r->status, std::move(r->body)};
}

std::string ErrorOf(const Response& r) {
  json doc = json::parse(r.body, nullptr, false);
  if (doc.is_object() && doc.contains("error") && doc["error"].is_string())
    return doc["error"].get<std::string>();
  return r.body.substr(0, 200);
}

StatusOr<json> GetStatus(const Endpoint& e, const Options& o) {
  POLIS_ASSIGN_OR_RETURN(Response r, Fetch(e, http::verb::get, "/api/status", "", o));
  if (r.status != 200)
    return RemoteError("{} answered {} to GET /api/status: {}", e.url, r.status, ErrorOf(r));
  json doc = json::parse(r.body, nullptr, false);
  if (!doc.is_object()) return DataLoss("{}/api/status did not return a JSON object", e.url);
  return doc;
}

// ---------------------------------------------------------------------------
// Formatting.

std::string Duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, t / 60 % 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  if (s < 10) return fmt::format("{:.1f}s", s);
  return fmt::format("{}s", t);
}

std::string Bytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, kUnits[u]);
}

std::optional<double> Num(const json& doc, const char* key) {
  if (!doc.is_object()) return std::nullopt;
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}
std::string Str(const json& doc, const char* key, const std::string& fallback = "?") {
  if (!doc.is_object()) return fallback;
  auto it = doc.find(key);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : fallback;
}
std::string Fmt(std::optional<double> v, const char* format) {
  return v ? fmt::format(fmt::runtime(format), *v) : "-";
}
std::string Int(std::optional<double> v) {
  return v ? fmt::format("{}", static_cast<int64_t>(*v)) : "-";
}
std::string RankList(const json& doc, const char* key) {
  if (!doc.contains(key) || !doc[key].is_array() || doc[key].empty()) return "none";
  std::string out;
  for (const auto& r : doc[key]) out += (out.empty() ? "" : ",") + r.dump();
  return out;
}
const json& Array(const json& doc, const char* key) {
  static const json kEmpty = json::array();
  return doc.contains(key) && doc[key].is_array() ? doc[key] : kEmpty;
}

std::vector<std::string> StatusLines(const json& s) {
  std::vector<std::string> out;
  const auto epochs = Num(s, "epochs");
  out.push_back(fmt::format("job {}  {}", Str(s, "job"), Str(s, "state")));
  // A forecaster's error in its target's units; a classifier's accuracy.
  const bool regression = Str(s, "task") == "regression";
  const auto acc = Num(s, "accuracy");
  const std::string metric = regression ? "mae " + Fmt(Num(s, "mae"), "{:.4g}")
                                        : "accuracy " + (acc ? fmt::format("{:.2f}%", *acc * 100) : "-");
  out.push_back(fmt::format("epoch {}/{}  step {}  loss {}  {}", Int(Num(s, "epoch")), Int(epochs),
                            Int(Num(s, "step")), Fmt(Num(s, "loss"), "{:.4f}"), metric));
  const auto elapsed = Num(s, "elapsed_seconds"), eta = Num(s, "eta_seconds");
  out.push_back(fmt::format("throughput {} samples/s  elapsed {}  eta {}",
                            Fmt(Num(s, "samples_per_second"), "{:.0f}"),
                            elapsed ? Duration(*elapsed) : "-", eta ? Duration(*eta) : "-"));
  out.push_back(fmt::format("workers {}  servers {}  stragglers {}  stalled {}",
                            Array(s, "workers").size(), Array(s, "servers").size(),
                            RankList(s, "stragglers"), RankList(s, "stalled")));
  return out;
}

std::vector<std::string> WorkerLines(const json& s) {
  std::vector<std::string> out;
  out.push_back(fmt::format("{:>5} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}  {}", "RANK",
                            "STEP", "SHARDS", "SAMPLES", "COMPUTE", "COMM", "WAIT", "CLOCK",
                            "HEARTBEAT", "FLAGS"));
  const json& stalled = Array(s, "stalled");
  for (const auto& w : Array(s, "workers")) {
    std::string flags;
    if (w.value("straggler", false)) flags += "straggler";
    const auto rank = Num(w, "rank");
    for (const auto& r : stalled)
      if (rank && r.is_number() && r.get<double>() == *rank) flags += flags.empty() ? "stalled" : ",stalled";
    auto dur = [&](const char* key) {
      auto v = Num(w, key);
      return v ? Duration(*v) : std::string("-");
    };
    out.push_back(fmt::format("{:>5} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9}  {}",
                              Int(rank), Int(Num(w, "step")), Int(Num(w, "shards_done")),
                              Int(Num(w, "samples")), dur("compute_seconds"), dur("comm_seconds"),
                              dur("wait_seconds"), Int(Num(w, "clock")),
                              dur("last_heartbeat_age_seconds"), flags));
  }
  return out;
}

std::vector<std::string> ServerLines(const json& s) {
  std::vector<std::string> out;
  out.push_back(fmt::format("{:>5} {:>24} {:>12} {:>12} {:>10}", "RANK", "KEYS", "BYTES IN",
                            "BYTES OUT", "UPDATES/S"));
  for (const auto& sv : Array(s, "servers")) {
    std::string keys = "-";
    if (auto it = sv.find("key_range"); it != sv.end() && it->is_array() && it->size() == 2)
      keys = fmt::format("[{}, {})", (*it)[0].dump(), (*it)[1].dump());
    auto in = Num(sv, "bytes_in"), outb = Num(sv, "bytes_out");
    out.push_back(fmt::format("{:>5} {:>24} {:>12} {:>12} {:>10}", Int(Num(sv, "rank")), keys,
                              in ? Bytes(*in) : "-", outb ? Bytes(*outb) : "-",
                              Fmt(Num(sv, "updates_per_second"), "{:.1f}")));
  }
  return out;
}

void Print(const std::vector<std::string>& lines) {
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
}

int Fail(const Status& st) {
  std::fprintf(stderr, "polisctl: %s\n", st.message().c_str());
  return kExitFailed;
}

// ---------------------------------------------------------------------------
// Commands.

int CmdRead(const Options& o, const std::string& what) {
  auto ep = FindCoordinator(o);
  if (!ep.ok()) return Fail(ep.status());
  auto s = GetStatus(*ep, o);
  if (!s.ok()) return Fail(s.status());
  if (what == "status") {
    if (o.json) std::printf("%s\n", s->dump(2).c_str());
    else Print(StatusLines(*s));
  } else if (what == "workers") {
    if (o.json) std::printf("%s\n", Array(*s, "workers").dump(2).c_str());
    else Print(WorkerLines(*s));
  } else {
    if (o.json) std::printf("%s\n", Array(*s, "servers").dump(2).c_str());
    else Print(ServerLines(*s));
  }
  return kExitOk;
}

bool SleepInterruptible(double seconds) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  while (std::chrono::steady_clock::now() < until) {
    if (g_interrupted) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return !g_interrupted;
}

int CmdTop(const Options& o) {
  auto ep = FindCoordinator(o);
  if (!ep.ok()) return Fail(ep.status());
  const bool ansi = !o.json && isatty(STDOUT_FILENO);
  if (ansi) std::printf("\x1b[?25l");  // hide the cursor while redrawing
  auto restore = [&] {
    if (ansi) std::printf("\x1b[?25h");
    std::fflush(stdout);
  };
  bool seen = false;
  int rc = kExitOk;
  for (int i = 0; o.iterations == 0 || i < o.iterations; ++i) {
    auto s = GetStatus(*ep, o);
    if (!s.ok()) {
      restore();
      // Answering before and silent now: the job has ended, well or badly.
      const std::string dir = RunDir(o);
      if (seen && !dir.empty() && PathExists(dir + "/result.json")) {
        std::printf("polisctl: the job has ended (%s/result.json)\n", dir.c_str());
        return kExitOk;
      }
      return Fail(seen ? s.status().WithContext("the coordinator stopped answering") : s.status());
    }
    seen = true;
    const std::string state = Str(*s, "state");
    if (o.json) {
      std::printf("%s\n", s->dump().c_str());
    } else {
      std::vector<std::string> lines = StatusLines(*s);
      lines.emplace_back();
      for (auto& l : WorkerLines(*s)) lines.push_back(std::move(l));
      if (!Array(*s, "servers").empty()) {
        lines.emplace_back();
        for (auto& l : ServerLines(*s)) lines.push_back(std::move(l));
      }
      lines.emplace_back();
      lines.push_back(fmt::format("{}  refreshing every {}s; Ctrl-C to quit", ep->url, o.interval_s));
      std::string frame = ansi ? "\x1b[H" : "";
      for (const auto& l : lines) frame += l + (ansi ? "\x1b[K\n" : "\n");
      if (ansi) frame += "\x1b[J";
      std::fwrite(frame.data(), 1, frame.size(), stdout);
    }
    std::fflush(stdout);
    if (state == "done" || state == "failed") break;
    if (o.iterations != 0 && i + 1 >= o.iterations) break;
    if (!SleepInterruptible(o.interval_s)) break;
  }
  restore();
  return rc;
}

// The last `n` lines of a file, and the offset of its end.
std::vector<std::string> TailLines(const std::string& path, int n, std::streamoff* end) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  if (!in) {
    *end = 0;
    return lines;
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  *end = size;
  // Read back from the end in blocks until n newlines are in hand.
  std::string tail;
  std::streamoff pos = size;
  const std::streamoff kBlock = 64 << 10;
  while (pos > 0) {
    const std::streamoff take = std::min(pos, kBlock);
    pos -= take;
    std::string block(static_cast<size_t>(take), '\0');
    in.seekg(pos);
    in.read(block.data(), take);
    tail = block + tail;
    if (std::count(tail.begin(), tail.end(), '\n') > n) break;
  }
  size_t at = 0;
  while (at < tail.size()) {
    size_t nl = tail.find('\n', at);
    if (nl == std::string::npos) nl = tail.size();
    lines.push_back(tail.substr(at, nl - at));
    at = nl + 1;
  }
  if (static_cast<int>(lines.size()) > n) lines.erase(lines.begin(), lines.end() - n);
  return lines;
}

void EmitLogLine(const Options& o, const std::string& stream, const std::string& line) {
  if (o.json) std::printf("%s\n", json{{"stream", stream}, {"line", line}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  else std::printf("%s\n", line.c_str());
}

int CmdLogs(const Options& o) {
  const std::string dir = RunDir(o);
  if (dir.empty()) throw UsageError{"logs reads the run directory's files: give --run-dir DIR"};
  std::vector<std::string> streams;
  if (o.stream == "both" || o.stream == "stdout") streams.push_back("stdout");
  if (o.stream == "both" || o.stream == "stderr") streams.push_back("stderr");
  struct File {
    std::string stream, path;
    std::streamoff offset = 0;
  };
  std::vector<File> files;
  bool any = false;
  for (const auto& s : streams) {
    File f{s, dir + "/" + s + ".log"};
    any |= PathExists(f.path);
    files.push_back(f);
  }
  if (!any && !o.follow) {
    std::fprintf(stderr, "polisctl: no %s in %s\n",
                 o.stream == "both" ? "stdout.log or stderr.log" : (o.stream + ".log").c_str(), dir.c_str());
    return kExitFailed;
  }
  std::string last_header;
  auto header = [&](const File& f) {
    if (o.json || files.size() < 2 || last_header == f.path) return;
    std::printf("%s==> %s <==\n", last_header.empty() ? "" : "\n", f.path.c_str());
    last_header = f.path;
  };
  for (auto& f : files) {
    auto lines = TailLines(f.path, o.lines, &f.offset);
    if (lines.empty()) continue;
    header(f);
    for (const auto& l : lines) EmitLogLine(o, f.stream, l);
  }
  std::fflush(stdout);
  if (!o.follow) return kExitOk;
  std::map<std::string, std::string> partial;
  while (SleepInterruptible(0.5)) {
    for (auto& f : files) {
      std::ifstream in(f.path, std::ios::binary);
      if (!in) continue;
      in.seekg(0, std::ios::end);
      const std::streamoff size = in.tellg();
      if (size < f.offset) f.offset = 0;  // truncated or replaced: start over
      if (size == f.offset) continue;
      std::string chunk(static_cast<size_t>(size - f.offset), '\0');
      in.seekg(f.offset);
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      f.offset = size;
      std::string& buf = partial[f.path];
      buf += chunk;
      size_t at = 0, nl;
      bool printed = false;
      while ((nl = buf.find('\n', at)) != std::string::npos) {
        if (!printed) header(f);
        printed = true;
        EmitLogLine(o, f.stream, buf.substr(at, nl - at));
        at = nl + 1;
      }
      buf.erase(0, at);
    }
    std::fflush(stdout);
  }
  return kExitOk;
}

// polisctl stop --signal: SIGTERM to the coordinator's pid, as scancel would.
int SignalCoordinator(const Options& o) {
  const std::string dir = RunDir(o);
  if (dir.empty()) throw UsageError{"stop --signal needs --run-dir DIR (its coordinator.json names the pid)"};
  auto info = ReadCoordinatorJson(dir);
  if (!info.ok()) return Fail(info.status());
  const int pid = info->value("pid", 0);
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  if (pid <= 0) return Fail(DataLoss("{}/coordinator.json has no pid", dir));
  if (info->value("host", "") != host)
    return Fail(FailedPrecondition("the coordinator runs on '{}', not here ('{}'): use the API (polisctl stop "
                                   "without --signal) or run this there",
                                   info->value("host", "?"), host));
  // The pid may have been reused since the job ended: check it is a Polis process.
  // (/proc files report size 0: read them as a stream.)
  std::ifstream proc(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(proc)), std::istreambuf_iterator<char>());
  if (cmdline.find("polis-train") == std::string::npos)
    return Fail(NotFound("no polis-train process with pid {} (the job has ended?)", pid));
  if (kill(pid, SIGTERM) != 0) return Fail(ErrnoStatus("kill", std::to_string(pid), errno));
  if (o.json) std::printf("%s\n", json{{"signalled", pid}}.dump().c_str());
  else std::printf("sent SIGTERM to the coordinator (pid %d): it checkpoints, then stops\n", pid);
  return kExitOk;
}

int CmdCommand(const Options& o, const std::string& what) {
  if (what == "stop" && o.signal) return SignalCoordinator(o);
  auto ep = FindCoordinator(o);
  if (!ep.ok()) return Fail(ep.status());
  const std::string token = ReadToken(o);
  auto r = Fetch(*ep, http::verb::post, "/api/" + what, token, o);
  if (!r.ok()) return Fail(r.status());
  if (r->status != 202) {
    std::string hint;
    if (r->status == 401)
      hint = " (give --token, --token-file, POLIS_MONITOR_TOKEN or <run-dir>/monitor.token)";
    std::fprintf(stderr, "polisctl: %s refused %s (HTTP %d): %s%s\n", ep->url.c_str(), what.c_str(),
                 r->status, ErrorOf(*r).c_str(), hint.c_str());
    return kExitFailed;
  }
  if (o.json) std::printf("%s", r->body.c_str());
  else
    std::printf("%s requested; the coordinator acts on it at its next step\n", what.c_str());
  return kExitOk;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"polisctl: watch and steer a running Polis training job (docs/operations.md), and\n"
               "manage the models of a registry (polisctl models --help, docs/registry.md).\n"
               "Exit codes: 0 done, 1 unreachable or failed, 2 usage."};
  app.fallthrough();
  app.require_subcommand(1, 1);
  app.add_option("--run-dir", o.run_dir, "the job's run directory (its coordinator.json names the address)");
  app.add_option("--address", o.address, "the coordinator's monitor, http://HOST:PORT or https://HOST:PORT");
  app.add_flag("--json", o.json, "machine-readable output (JSON; JSON lines for top and logs)");
  app.add_option("--token", o.token, "bearer token for checkpoint and stop (or for the registry: models)");
  app.add_option("--token-file", o.token_file, "file holding the bearer token");
  app.add_option("--timeout", o.timeout_s, "seconds to wait for the coordinator (default 5)")
      ->check(CLI::PositiveNumber);
  app.add_option("--cacert", o.ca_file,
                 "https: PEM file of the CA certificates to trust (a private CA); default: $POLIS_CA_FILE, "
                 "else the system's");
  app.add_subcommand("status", "one-screen summary of the job");
  auto* top = app.add_subcommand("top", "refresh the summary and worker table in place until the job ends");
  top->add_option("--interval", o.interval_s, "seconds between refreshes (default 2)")->check(CLI::PositiveNumber);
  top->add_option("--iterations", o.iterations, "stop after N refreshes (default: until the job ends)")
      ->check(CLI::NonNegativeNumber);
  app.add_subcommand("workers", "per-worker table (steps, time split, heartbeats, stragglers)");
  app.add_subcommand("servers", "per-parameter-server table (key ranges, traffic, update rate)");
  auto* logs = app.add_subcommand("logs", "tail <run-dir>/stdout.log and stderr.log");
  logs->add_option("-n,--lines", o.lines, "lines of each file (default 20)")->check(CLI::NonNegativeNumber);
  logs->add_flag("-f,--follow", o.follow, "keep printing new lines until interrupted");
  logs->add_option("--stream", o.stream, "stdout, stderr or both (default)")
      ->check(CLI::IsMember({"stdout", "stderr", "both"}));
  app.add_subcommand("checkpoint", "ask the coordinator to take a checkpoint now");
  auto* stop = app.add_subcommand("stop", "ask the coordinator to checkpoint and stop the job");
  stop->add_flag("--signal", o.signal,
                 "send SIGTERM to the coordinator's pid instead (same host; no token needed)");
  ModelsOptions mo;
  CLI::App* models = AddModelsCommands(app, &mo);
  TuneCtlOptions tune_options;
  CLI::App* tune = AddTuneCommands(app, &tune_options);
  ClusterCtlOptions cluster_options;
  AddClusterCommand(app, &cluster_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (!o.run_dir.empty() && !o.address.empty()) {
    std::fprintf(stderr, "polisctl: give --run-dir or --address, not both\n");
    return kExitUsage;
  }
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string cmd = app.get_subcommands().front()->get_name();
  if (cmd == "tune") return RunTune(tune, tune_options, o.json, &g_interrupted_flag);
  if (cmd == "cluster") {
    cluster_options.ca_file = ::polis::http::CaFileOr(o.ca_file);
    return RunCluster(cluster_options, o.json, o.timeout_s, &g_interrupted_flag);
  }
  if (cmd == "models") {
    // The registry's token: --token, --token-file, else POLIS_REGISTRY_TOKEN
    // (never the monitor's).
    std::string token = o.token;
    if (token.empty() && !o.token_file.empty()) {
      auto t = ReadFile(o.token_file);
      if (!t.ok()) {
        std::fprintf(stderr, "polisctl models: --token-file: %s\n", t.status().message().c_str());
        return kExitUsage;
      }
      token = t->substr(0, t->find('\n'));
      while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
    }
    mo.ca_file = ::polis::http::CaFileOr(o.ca_file);
    // Promotes load and warm the target first: a longer default than the monitor's.
    return RunModels(models, mo, o.json, token, app.count("--timeout") ? o.timeout_s : 30);
  }
  try {
    if (cmd == "status" || cmd == "workers" || cmd == "servers") return CmdRead(o, cmd);
    if (cmd == "top") return CmdTop(o);
    if (cmd == "logs") return CmdLogs(o);
    return CmdCommand(o, cmd);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "polisctl %s: %s\n", cmd.c_str(), e.message.c_str());
    return kExitUsage;
  }
}

}  // namespace
}  // namespace polis::ctl

int main(int argc, char** argv) { return polis::ctl::Main(argc, argv); }
