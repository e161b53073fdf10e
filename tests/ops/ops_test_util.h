// Helpers for the ops tests (tests/ops/): a blocking HTTP client with a
// deadline on every step, a sample status document, temp dirs, and child
// processes started and stopped by PID.
#pragma once

// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fs.h"

namespace polis::ops_test {

inline const std::string kSrc = POLIS_SOURCE_DIR;
inline const std::string kBin = POLIS_BINARY_DIR;
inline const std::string kPolisctl = kBin + "/launch/polisctl";

using json = nlohmann::json;

struct HttpResult {
  int status = 0;  // 0: no answer (error says why)
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string error;
  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (boost::beast::iequals(k, name)) return v;
    return "";
  }
};

// One request on a fresh connection to 127.0.0.1:port.
inline HttpResult Http(int port, const std::string& method, const std::string& target,
                       const std::vector<std::pair<std::string, std::string>>& headers = {},
                       const std::string& body = "", int timeout_ms = 10000) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  namespace net = boost::asio;
  HttpResult out;
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::error_code ec;
  auto run = [&] {
    ioc.restart();
    ioc.run();
  };
  stream.expires_after(std::chrono::milliseconds(timeout_ms));
  stream.async_connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                              static_cast<unsigned short>(port)),
                       [&](beast::error_code e) { ec = e; });
  run();
  if (ec) {
    out.error = "connect: " + ec.message();
    return out;
  }
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  stream.expires_after(std::chrono::milliseconds(timeout_ms));
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
  run();
  if (ec) {
    out.error = "write: " + ec.message();
    return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u << 20);
  if (method == "HEAD") parser.skip(true);
  stream.expires_after(std::chrono::milliseconds(timeout_ms));
  http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
  run();
  if (ec) {
    out.error = "read: " + ec.message();
    return out;
  }
  out.status = static_cast<int>(parser.get().result_int());
  out.body = parser.get().body();
  for (const auto& f : parser.get())
    out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  return out;
}

inline HttpResult Get(int port, const std::string& target) { return Http(port, "GET", target); }

// The port of "http://127.0.0.1:PORT".
inline int PortOf(const std::string& address) {
  return std::atoi(address.substr(address.rfind(':') + 1).c_str());
}

// A status document as the coordinator publishes it (docs/operations.md):
// `workers` workers at ranks servers+1.., the first flagged as a straggler
// and the last as stalled when there are at least two; `points` series points.
inline json SampleStatus(int workers = 3, int servers = 1, int points = 25,
                         const std::string& state = "running") {
  json s = {{"job", "fashion_cnn"},      {"state", state},          {"epoch", 2},
            {"epochs", 5},               {"step", 1234},            {"loss", 0.4123},
            {"accuracy", 0.852},         {"samples_per_second", 2345.5},
            {"eta_seconds", 185.0},      {"elapsed_seconds", 72.25}};
  s["history"] = json::array({{{"epoch", 1}, {"train_loss", 0.61}, {"test_accuracy", 0.81},
                               {"images_per_second", 2301.0}, {"elapsed_seconds", 36.0}}});
  s["series"] = json::array();
  for (int i = 0; i < points; ++i)
    s["series"].push_back({{"t", 3.0 * i}, {"loss", 2.3 / (1 + 0.2 * i)},
                           {"samples_per_second", 2000.0 + 15 * i}});
  s["workers"] = json::array();
  s["stragglers"] = json::array();
  s["stalled"] = json::array();
  for (int w = 0; w < workers; ++w) {
    const int rank = 1 + servers + w;
    const bool straggler = workers >= 2 && w == 0;
    s["workers"].push_back({{"rank", rank},
                            {"step", 400 + 10 * w},
                            {"shards_done", 12 + w},
                            {"samples", 13440 + 320 * w},
                            {"compute_seconds", 41.5 + w},
                            {"comm_seconds", 3.25},
                            {"wait_seconds", 0.5},
                            {"clock", 400 + 10 * w},
                            {"last_heartbeat_age_seconds", 0.4},
                            {"straggler", straggler}});
    if (straggler) s["stragglers"].push_back(rank);
    if (workers >= 2 && w == workers - 1) s["stalled"].push_back(rank);
  }
  s["servers"] = json::array();
  for (int v = 0; v < servers; ++v)
    s["servers"].push_back({{"rank", 1 + v},
                            {"key_range", {v * 50000, (v + 1) * 50000}},
                            {"bytes_in", 123456789},
                            {"bytes_out", 123450000},
                            {"updates_per_second", 34.5}});
  return s;
}

// A forecaster's status: MAE in the target's units instead of accuracy.
inline json SampleForecasterStatus() {
  json s = SampleStatus(2, 0, 25);
  s["job"] = "bike_demand_lstm";
  s["task"] = "regression";
  s["accuracy"] = nullptr;
  s["mae"] = 55.85;
  s["history"] = json::array({{{"epoch", 1}, {"train_loss", 0.28}, {"test_mae", 61.25}, {"test_rmse", 80.5},
                               {"images_per_second", 2301.0}, {"samples_per_second", 2301.0},
                               {"elapsed_seconds", 36.0}}});
  return s;
}

// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/polis-ops-XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct ShellRun {
  int exit_code = -1;
  std::string output;  // stdout only (stderr goes to `errors`)
  std::string errors;
};

// Runs a shell command; stdout and stderr captured separately.
inline ShellRun Shell(const std::string& cmd) {
  ShellRun r;
  char err_path[] = "/tmp/polis-ops-stderr-XXXXXX";
  const int fd = mkstemp(err_path);
  if (fd >= 0) close(fd);
  FILE* p = popen((cmd + " 2>" + err_path).c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  auto errors = ReadFile(err_path);
  if (errors.ok()) r.errors = *errors;
  unlink(err_path);
  return r;
}

inline std::string ReadOrEmpty(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : std::string();
}

inline bool HaveProgram(const std::string& name) {
  return Shell("command -v " + name + " >/dev/null").exit_code == 0;
}

// What a test on the local Slurm cluster (launch/slurm/) lacks that the
// project installs or builds: "" when nothing. `binaries` are in kBin/launch.
// (Root, which the cluster's SlurmUser needs, is checked by the caller: a
// skip, not a missing prerequisite.)
inline std::string MissingSlurmPrereq(const std::vector<std::string>& binaries) {
  if (!HaveProgram("slurmctld") || !HaveProgram("munged")) return "slurm-wlm / munge not installed";
  for (const auto& b : binaries)
    if (!PathExists(std::string(POLIS_BINARY_DIR) + "/launch/" + b))
      return b + " is not built in " + std::string(POLIS_BINARY_DIR);
  if (!PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) return "no Fashion-MNIST files";
  return "";
}

// A single-node Slurm cluster in `dir` (start-test-cluster.sh --cpus 8),
// stopped by Stop() or the destructor (stop-test-cluster.sh, by pid file).
class SlurmTestCluster {
 public:
  explicit SlurmTestCluster(std::string dir) : dir_(std::move(dir)) {
    start_ = Shell(std::string(POLIS_SOURCE_DIR) + "/launch/slurm/start-test-cluster.sh " + dir_ + " --cpus 8");
  }
  ~SlurmTestCluster() { Stop(); }
  const ShellRun& start() const { return start_; }
  std::string conf() const { return dir_ + "/etc/slurm.conf"; }
  std::string env() const { return "SLURM_CONF=" + conf() + " "; }  // a command prefix
  ShellRun Stop() {
    if (stopped_) return {};
    stopped_ = true;
    return Shell(std::string(POLIS_SOURCE_DIR) + "/launch/slurm/stop-test-cluster.sh " + dir_);
  }

 private:
  std::string dir_;
  ShellRun start_;
  bool stopped_ = false;
};

// Starts argv[0] (found on PATH) with stdout and stderr appended to `log`.
// Returns the child's pid, or -1.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    const int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// SIGTERM, then SIGKILL after `grace_ms`; reaps the child. Returns its status.
inline int StopProcess(pid_t pid, int grace_ms = 10000) {
  if (pid <= 0) return -1;
  kill(pid, SIGTERM);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return status;
}

// A port that was free a moment ago on 127.0.0.1 (for programs that cannot
// report the ephemeral port they bound).
inline int FreePort() {
  namespace net = boost::asio;
  net::io_context ioc;
  net::ip::tcp::acceptor a(ioc, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

}  // namespace polis::ops_test
