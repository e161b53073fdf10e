// coordinator/monitor.h: the monitoring API's routes and Prometheus text,
// served by the ops plane's HTTP server (common/http/http_server.h).
#include "coordinator/monitor.h"

#include <strings.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <mutex>
#include <optional>
#include <utility>

#include "common/fs.h"
#include "common/http/http_server.h"
#include "common/log.h"
#include "coordinator/host_metrics.h"
#include "coordinator/prometheus_family.h"

namespace polis::coordinator {
namespace {

using json = nlohmann::json;

// Limits for a monitoring API: small requests, few clients.
constexpr size_t kMaxBodyBytes = 64 << 10;
constexpr uint32_t kMaxHeaderBytes = 16 << 10;
constexpr size_t kMaxConnections = 256;
constexpr int kReadTimeoutMs = 10000;   // a request's header and body
constexpr int kIdleTimeoutMs = 60000;   // a kept-alive connection between requests
constexpr int kWriteTimeoutMs = 10000;

using Reply = http::HttpResponse;

Reply JsonReply(int status, const json& doc) {
  return Reply{status, "application/json",
               doc.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", {}};
}
Reply ErrorReply(int status, const std::string& message) {
  return JsonReply(status, json{{"error", message}});
}

// Equal-time comparison, so response timing does not reveal a token prefix.
bool TokenEquals(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    diff |= static_cast<unsigned char>((i < a.size() ? a[i] : 0) ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

std::string ContentTypeFor(const std::string& name) {
  const std::string ext = std::filesystem::path(name).extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  return "application/octet-stream";
}

// A dashboard asset name: one path component, no dot files (no traversal).
bool SafeAssetName(const std::string& name) {
  if (name.empty() || name[0] == '.' || name.size() > 128) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

std::string ExecutableDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

// See Monitor::Start in monitor.h.
std::string BuiltinDashboardDir() {
  const std::string exe_dir = ExecutableDir();
  std::vector<std::string> candidates;
  if (!exe_dir.empty()) {
    candidates.push_back(exe_dir + "/dashboard");                 // build/launch/polis-train
    candidates.push_back(exe_dir + "/../launch/dashboard");       // build/tests/*_tests
    candidates.push_back(exe_dir + "/../../launch/dashboard");    // a source tree above build/
  }
  for (const auto& c : candidates)
    if (PathExists(c + "/index.html")) return std::filesystem::weakly_canonical(c).string();
  return candidates.empty() ? std::string("dashboard") : candidates.front();
}

}  // namespace

const char* CommandName(Monitor::Command command) {
  switch (command) {
    case Monitor::Command::kCheckpoint: return "checkpoint";
    case Monitor::Command::kStop: return "stop";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Prometheus text format.

namespace {

std::optional<double> Number(const json& doc, const char* key) {
  if (!doc.is_object()) return std::nullopt;
  auto it = doc.find(key);
  if (it == doc.end()) return std::nullopt;
  if (it->is_number()) return it->get<double>();
  if (it->is_boolean()) return it->get<bool>() ? 1.0 : 0.0;
  return std::nullopt;
}

// rank="3", and host="node2" when the row names its host.
std::string RankLabel(const json& row) {
  auto r = Number(row, "rank");
  if (!r) return {};
  std::string label = fmt::format("rank=\"{}\"", static_cast<int64_t>(*r));
  if (auto it = row.find("host"); it != row.end() && it->is_string())
    label += fmt::format(",host=\"{}\"", PromLabelValue(it->get<std::string>()));
  return label;
}

// Appends `key="value"` for a string field of `doc` (`value_of` may shorten it).
void AddStringLabel(const json& doc, const char* field, const char* key, std::string* labels,
                    std::string (*value_of)(const std::string&) = nullptr) {
  auto it = doc.find(field);
  if (it == doc.end() || !it->is_string()) return;
  const std::string value = value_of ? value_of(it->get<std::string>()) : it->get<std::string>();
  *labels += fmt::format("{}{}=\"{}\"", labels->empty() ? "" : ",", key, PromLabelValue(value));
}

// The run's id: the last component of its run directory.
std::string RunId(const std::string& run_dir) {
  std::string d = run_dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return std::filesystem::path(d).filename().string();
}

bool Contains(const json& list, int64_t rank) {
  if (!list.is_array()) return false;
  for (const auto& v : list)
    if (v.is_number_integer() && v.get<int64_t>() == rank) return true;
  return false;
}

// One unlabelled gauge per entry, from the number at `key` in s[object];
// nothing when s has no such object (a job without checkpoints or privacy).
struct JobGauge {
  const char* key;
  const char* name;
  const char* help;
};
template <size_t N>
void AppendObjectGauges(const json& s, const char* object, const JobGauge (&gauges)[N], std::string* out) {
  const auto it = s.find(object);
  if (it == s.end() || !it->is_object()) return;
  for (const auto& g : gauges) {
    PromFamily f(g.name, "gauge", g.help);
    if (auto v = Number(*it, g.key)) f.Add("", *v);
    f.AppendTo(out);
  }
}

}  // namespace

std::string PrometheusText(const json& s) {
  std::string out;
  if (!s.is_object()) return out;

  {
    PromFamily info("polis_job_info", "gauge",
                    "The job's name, run, coordinator host and state (the value is always 1).");
    std::string labels;
    AddStringLabel(s, "job", "job_name", &labels);
    AddStringLabel(s, "run_dir", "run_id", &labels, RunId);
    AddStringLabel(s, "host", "host", &labels);
    AddStringLabel(s, "state", "state", &labels);
    if (!labels.empty()) info.Add(labels, 1);
    info.AppendTo(&out);
  }
  static const JobGauge kJobGauges[] = {
      {"epoch", "polis_job_epoch", "Current epoch of the job."},
      {"epochs", "polis_job_epochs", "Epochs the job will train in all."},
      {"step", "polis_job_step", "Global training step."},
      {"loss", "polis_job_loss", "Latest training loss."},
      {"accuracy", "polis_job_accuracy", "Latest epoch accuracy (0..1): validation split, else test set (classifiers)."},
      {"mae", "polis_job_mae",
       "Latest epoch mean absolute error in the target's units: validation split, else test set (forecasters)."},
      {"samples_per_second", "polis_job_samples_per_second", "Training throughput of all workers together."},
      {"eta_seconds", "polis_job_eta_seconds", "Estimated seconds until the job ends."},
      {"elapsed_seconds", "polis_job_elapsed_seconds", "Seconds since the job started."},
      {"restarts", "polis_job_restarts", "Automatic restarts of the job so far (polis-run --max-restarts)."},
  };
  for (const auto& g : kJobGauges) {
    PromFamily f(g.name, "gauge", g.help);
    if (auto v = Number(s, g.key)) f.Add("", *v);
    f.AppendTo(&out);
  }
  // The checkpoint schedule and how far the job is past its newest
  // checkpoint (launch/prometheus/polis-alerts.yml: PolisCheckpointOverdue).
  static const JobGauge kCheckpointGauges[] = {
      {"every_steps", "polis_job_checkpoint_every_steps",
       "training.checkpoint_every_steps: steps between checkpoints (0 = none mid-epoch)."},
      {"steps_since", "polis_job_steps_since_checkpoint",
       "Steps since the newest complete checkpoint (since the start when there is none)."},
      {"at_epoch_end", "polis_job_checkpoint_at_epoch_end",
       "1 if the job checkpoints at every epoch end (training.checkpoint_epochs)."},
      {"epochs_since", "polis_job_epochs_since_checkpoint",
       "Epochs finished since the newest complete checkpoint."},
      {"completed_at", "polis_job_last_checkpoint_timestamp_seconds",
       "Unix time the newest complete checkpoint was completed."},
  };
  AppendObjectGauges(s, "checkpoint", kCheckpointGauges, &out);

  // DP-SGD jobs: what the accountant has spent so far.
  static const JobGauge kPrivacyGauges[] = {
      {"epsilon", "polis_job_privacy_epsilon", "DP-SGD: epsilon spent so far (RDP accountant) at the job's delta."},
      {"epsilon_planned", "polis_job_privacy_epsilon_planned", "DP-SGD: epsilon after every planned step."},
      {"delta", "polis_job_privacy_delta", "DP-SGD: the job's delta (privacy.delta)."},
      {"noise_multiplier", "polis_job_privacy_noise_multiplier", "DP-SGD: noise stddev / clip norm (sigma)."},
      {"steps", "polis_job_privacy_steps", "DP-SGD: global steps the accountant has composed."},
  };
  AppendObjectGauges(s, "privacy", kPrivacyGauges, &out);

  const json empty = json::array();
  const json& workers = s.contains("workers") && s["workers"].is_array() ? s["workers"] : empty;
  const json& servers = s.contains("servers") && s["servers"].is_array() ? s["servers"] : empty;
  const json& stragglers = s.contains("stragglers") ? s["stragglers"] : empty;
  const json& stalled = s.contains("stalled") ? s["stalled"] : empty;
  {
    PromFamily n("polis_job_workers", "gauge", "Worker ranks in the job.");
    PromFamily st("polis_job_stragglers", "gauge", "Worker ranks currently flagged as stragglers.");
    PromFamily sl("polis_job_stalled", "gauge", "Worker ranks currently flagged as stalled.");
    if (s.contains("workers")) n.Add("", static_cast<double>(workers.size()));
    if (stragglers.is_array()) st.Add("", static_cast<double>(stragglers.size()));
    if (stalled.is_array()) sl.Add("", static_cast<double>(stalled.size()));
    n.AppendTo(&out);
    st.AppendTo(&out);
    sl.AppendTo(&out);
  }

  struct RowMetric {
    const char* key;
    const char* name;
    const char* type;
    const char* help;
  };
  static const RowMetric kWorkerMetrics[] = {
      {"step", "polis_worker_step", "gauge", "Training step of the worker."},
      {"shards_done", "polis_worker_shards_done", "gauge", "Shards the worker has finished."},
      {"samples", "polis_worker_samples_total", "counter", "Samples the worker has trained on."},
      {"compute_seconds", "polis_worker_compute_seconds_total", "counter", "Seconds the worker spent computing."},
      {"comm_seconds", "polis_worker_comm_seconds_total", "counter", "Seconds the worker spent communicating."},
      {"wait_seconds", "polis_worker_wait_seconds_total", "counter", "Seconds the worker spent waiting (shards, stragglers)."},
      {"clock", "polis_worker_clock", "gauge", "The worker's logical clock (SSP consistency)."},
      {"last_heartbeat_age_seconds", "polis_worker_last_heartbeat_age_seconds", "gauge", "Seconds since the worker's last report."},
      {"straggler", "polis_worker_straggler", "gauge", "1 if the worker is flagged as a straggler."},
  };
  for (const auto& m : kWorkerMetrics) {
    PromFamily f(m.name, m.type, m.help);
    for (const auto& w : workers) {
      const std::string label = RankLabel(w);
      if (label.empty()) continue;
      if (auto v = Number(w, m.key)) f.Add(label, *v);
    }
    f.AppendTo(&out);
  }
  // 1 for each row whose rank is in the status document's "stalled" list.
  auto stalled_family = [&](const char* name, const char* help, const json& rows) {
    PromFamily f(name, "gauge", help);
    for (const auto& row : rows) {
      auto rank = Number(row, "rank");
      if (rank) f.Add(RankLabel(row), Contains(stalled, static_cast<int64_t>(*rank)) ? 1 : 0);
    }
    f.AppendTo(&out);
  };
  stalled_family("polis_worker_stalled", "1 if the worker is flagged as stalled.", workers);

  static const RowMetric kServerMetrics[] = {
      {"bytes_in", "polis_server_received_bytes_total", "counter", "Bytes the parameter server received."},
      {"bytes_out", "polis_server_sent_bytes_total", "counter", "Bytes the parameter server sent."},
      {"updates_per_second", "polis_server_updates_per_second", "gauge", "Optimizer updates the server applies per second."},
      {"last_heartbeat_age_seconds", "polis_server_last_heartbeat_age_seconds", "gauge",
       "Seconds since the server's last report."},
  };
  for (const auto& m : kServerMetrics) {
    PromFamily f(m.name, m.type, m.help);
    for (const auto& sv : servers) {
      const std::string label = RankLabel(sv);
      if (label.empty()) continue;
      if (auto v = Number(sv, m.key)) f.Add(label, *v);
    }
    f.AppendTo(&out);
  }
  stalled_family("polis_server_stalled", "1 if the server is flagged as stalled.", servers);
  {
    PromFamily f("polis_server_keys", "gauge", "Parameters in the server's key range.");
    for (const auto& sv : servers) {
      const std::string label = RankLabel(sv);
      auto it = sv.find("key_range");
      if (label.empty() || it == sv.end() || !it->is_array() || it->size() != 2) continue;
      if ((*it)[0].is_number() && (*it)[1].is_number())
        f.Add(label, (*it)[1].get<double>() - (*it)[0].get<double>());
    }
    f.AppendTo(&out);
  }
  if (auto it = s.find("hosts"); it != s.end()) AppendHostMetrics(*it, &out);
  return out;
}

// ---------------------------------------------------------------------------
// The server.

struct Monitor::Impl {
  Options opt;
  std::string dashboard_dir;
  std::string address;

  std::mutex mu;
  std::shared_ptr<const json> status;  // guarded by mu
  std::vector<Command> commands;       // guarded by mu

  std::unique_ptr<http::HttpServer> server;
  std::unique_ptr<http::HttpServer> plain;  // the plain-HTTP port beside TLS
  std::string plain_address;

  bool TlsOn() const { return !opt.tls_cert_file.empty(); }
  Reply Handle(const std::string& method, const std::string& target, const std::string& authorization,
               bool tls);
  Reply HandleStatus();
  Reply HandleCommand(Monitor::Command command, const std::string& authorization);
  Reply HandleAsset(const std::string& path);
};

Reply Monitor::Impl::HandleStatus() {
  std::shared_ptr<const json> snapshot;
  {
    std::lock_guard<std::mutex> lock(mu);
    snapshot = status;
  }
  if (!snapshot) return ErrorReply(503, "the document is not published yet (the server has just started)");
  return JsonReply(200, *snapshot);
}

Reply Monitor::Impl::HandleCommand(Monitor::Command command, const std::string& authorization) {
  if (opt.token.empty())
    return ErrorReply(403, "commands are disabled: the monitor was started without a token");
  static constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() ||
      strncasecmp(authorization.c_str(), kBearer.data(), kBearer.size()) != 0) {
    Reply r = ErrorReply(401, "this command needs 'Authorization: Bearer <token>'");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"polis\"");
    return r;
  }
  if (!TokenEquals(authorization.substr(kBearer.size()), opt.token))
    return ErrorReply(403, "wrong token");
  size_t queued = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (commands.size() >= kMaxQueuedCommands)
      return ErrorReply(503, fmt::format("{} commands are already waiting for the coordinator",
                                         commands.size()));
    commands.push_back(command);
    queued = commands.size();
  }
  POLIS_LOG(kInfo, kCoord, "monitor: {} command queued", CommandName(command));
  return JsonReply(202, json{{"accepted", CommandName(command)}, {"queued", queued}});
}

Reply Monitor::Impl::HandleAsset(const std::string& path) {
  std::string name = path == "/" ? opt.index_page : path.substr(1);
  if (!SafeAssetName(name)) return ErrorReply(404, fmt::format("no such page: {}", path));
  const std::string file = dashboard_dir + "/" + name;
  auto text = ReadFile(file);
  if (!text.ok()) {
    if (name == opt.index_page)
      return Reply{404, "text/plain; charset=utf-8",
                   fmt::format("The dashboard is not installed ({} is missing: build the "
                               "polis-train or polisctl target, or pass dashboard_dir).\n"
                               "{} and /metrics work without it.\n",
                               file, opt.document_path),
                   {}};
    return ErrorReply(404, fmt::format("no such page: {}", path));
  }
  Reply r{200, ContentTypeFor(name), std::move(*text), {}};
  // The page loads nothing from elsewhere, and may not be framed.
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  return r;
}

Reply Monitor::Impl::Handle(const std::string& method, const std::string& target,
                            const std::string& authorization, bool tls) {
  const std::string path = target.substr(0, target.find('?'));
  const bool get = method == "GET" || method == "HEAD";
  auto only = [&](const char* allow) {
    Reply r = ErrorReply(405, fmt::format("{} takes {} only", path, allow));
    r.headers.emplace_back("Allow", allow);
    return r;
  };
  if (path == opt.document_path) return get ? HandleStatus() : only("GET, HEAD");
  if (path == "/metrics") {
    if (!get) return only("GET, HEAD");
    std::shared_ptr<const json> snapshot;
    {
      std::lock_guard<std::mutex> lock(mu);
      snapshot = status;
    }
    std::string text;
    if (snapshot) text = opt.metrics ? opt.metrics(*snapshot) : PrometheusText(*snapshot);
    return Reply{200, "text/plain; version=0.0.4; charset=utf-8", std::move(text), {}};
  }
  if (path == "/healthz") return get ? Reply{200, "text/plain", "ok\n", {}} : only("GET, HEAD");
  if ((path == "/api/checkpoint" || path == "/api/stop") && method == "POST" && TlsOn() && !tls)
    // Refused before the token is read: it crossed the network in the clear.
    return ErrorReply(403, fmt::format("commands are refused over plain HTTP: use https on the TLS "
                                       "port ({}{})", address, path));
  if (path == "/api/checkpoint")
    return method == "POST" ? HandleCommand(Command::kCheckpoint, authorization) : only("POST");
  if (path == "/api/stop") return method == "POST" ? HandleCommand(Command::kStop, authorization) : only("POST");
  if (path.starts_with("/api/")) return ErrorReply(404, fmt::format("no such endpoint: {}", path));
  return get ? HandleAsset(path) : only("GET, HEAD");
}

Monitor::Monitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

namespace {

// HOST:PORT, [V6]:PORT; "localhost" means 127.0.0.1.
StatusOr<std::pair<std::string, int>> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos)
    return InvalidArgument("monitor listen address '{}' is not HOST:PORT", listen);
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535)
    return InvalidArgument("monitor listen address '{}': port '{}' is not 0..65535", listen, port_text);
  return std::make_pair(host, static_cast<int>(port));
}

// Binds `server`; the address it serves, as others reach it.
StatusOr<std::string> StartServer(http::HttpServer& server, const std::string& listen,
                                  const std::string& host, const char* scheme) {
  if (Status st = server.Start(); !st.ok()) {
    if (st.code() == Code::kInvalidArgument && st.message().find("is not an IP address") != std::string::npos)
      return InvalidArgument("monitor listen address '{}': '{}' is not an IP address", listen, host);
    return st.WithContext("monitor");  // "cannot listen on HOST:PORT: why", or the TLS file
  }
  const bool v6 = host.find(':') != std::string::npos;
  std::string shown = v6 ? "[" + host + "]" : host;
  if (host == "0.0.0.0" || host == "::") {
    char name[256] = "";
    if (gethostname(name, sizeof(name) - 1) == 0 && name[0]) shown = name;
  }
  return fmt::format("{}://{}:{}", scheme, shown, server.port());
}

}  // namespace

StatusOr<std::unique_ptr<Monitor>> Monitor::Start(const Options& options) {
  const std::string& listen = options.listen;
  POLIS_ASSIGN_OR_RETURN(auto host_port, ParseListen(listen));
  const auto& [host, port] = host_port;
  const bool tls = !options.tls_cert_file.empty() || !options.tls_key_file.empty();
  if (!options.plain_listen.empty() && !tls)
    return InvalidArgument("a plain-HTTP monitor port ('{}') needs TLS on the main one (a certificate "
                           "and key)", options.plain_listen);
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->dashboard_dir = options.dashboard_dir.empty() ? BuiltinDashboardDir() : options.dashboard_dir;
  http::HttpServerOptions ho;
  ho.host = host;
  ho.port = port;
  ho.threads = 1;
  ho.max_body_bytes = kMaxBodyBytes;
  ho.max_upload_bytes = kMaxBodyBytes;
  ho.max_header_bytes = kMaxHeaderBytes;
  ho.read_timeout_ms = kReadTimeoutMs;
  ho.idle_timeout_ms = kIdleTimeoutMs;
  ho.write_timeout_ms = kWriteTimeoutMs;
  ho.max_connections = kMaxConnections;
  ho.server_name = "polis-monitor";
  ho.thread_name = "monitor";
  if (tls) ho.tls = http::TlsFiles{options.tls_cert_file, options.tls_key_file};
  Impl* raw = impl.get();
  auto handler = [raw](http::HttpRequest req, http::Respond respond, http::Post) {
    Reply reply;
    try {
      reply = raw->Handle(req.method, req.target, req.authorization, req.tls);
    } catch (const std::exception& e) {
      POLIS_LOG(kError, kCoord, "monitor: {} {} failed: {}", req.method, req.target, e.what());
      reply = ErrorReply(500, std::string("internal error: ") + e.what());
    }
    reply.headers.emplace_back("Cache-Control", "no-store");
    respond(std::move(reply));
  };
  impl->server = std::make_unique<http::HttpServer>(ho, handler);
  POLIS_ASSIGN_OR_RETURN(impl->address, StartServer(*impl->server, listen, host, tls ? "https" : "http"));
  if (!options.plain_listen.empty()) {
    POLIS_ASSIGN_OR_RETURN(auto plain_host_port, ParseListen(options.plain_listen));
    http::HttpServerOptions po = ho;
    po.tls = {};
    po.host = plain_host_port.first;
    po.port = plain_host_port.second;
    impl->plain = std::make_unique<http::HttpServer>(po, handler);
    POLIS_ASSIGN_OR_RETURN(impl->plain_address,
                           StartServer(*impl->plain, options.plain_listen, po.host, "http"));
  }

  POLIS_LOG(kInfo, kCoord, "monitor: serving {}{}{} (dashboard from {})", impl->address,
            impl->plain_address.empty() ? "" : ", plain HTTP on ", impl->plain_address, impl->dashboard_dir);
  return std::unique_ptr<Monitor>(new Monitor(std::move(impl)));
}

std::string Monitor::address() const { return impl_->address; }
std::string Monitor::plain_address() const { return impl_->plain_address; }

void Monitor::Publish(json status) {
  auto next = std::make_shared<const json>(std::move(status));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->status.swap(next);
  }
  // `next` now holds the previous snapshot; it is freed here, outside the lock.
}

std::vector<Monitor::Command> Monitor::TakeCommands() {
  std::vector<Command> out;
  std::lock_guard<std::mutex> lock(impl_->mu);
  out.swap(impl_->commands);
  return out;
}

Monitor::~Monitor() {
  // Handlers never block, so whatever is in flight is answered within
  // microseconds; a short grace lets those answers go out.
  if (impl_->plain) impl_->plain->Stop(200);
  if (impl_->server) impl_->server->Stop(200);
}

}  // namespace polis::coordinator
