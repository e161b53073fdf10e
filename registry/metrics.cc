#include "registry/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

namespace polis::registry {
namespace {

std::string ModelLabels(const std::string& model, int64_t version) {
  return fmt::format("model=\"{}\",version=\"{}\"", model, version);
}

const std::vector<double> kSecondsBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10};
// Stages are tens of microseconds: finer buckets, 15 bounds (+Inf makes 16).
constexpr std::array<double, 15> kStageBuckets = {1e-5,  2.5e-5, 5e-5, 1e-4, 2.5e-4,
                                                  5e-4,  1e-3,   2.5e-3, 5e-3, 1e-2,
                                                  2.5e-2, 5e-2,  0.1,   0.25, 1};
constexpr const char* kStageNames[kStages] = {"read", "parse", "queue", "compute", "encode", "write"};
constexpr const char* kProtocolNames[kProtocols] = {"rest", "grpc"};
const std::vector<double> kRowBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};

}  // namespace

Metrics::Metrics() {
  auto family = [&](const char* name, const char* type, const char* help,
                    std::vector<double> bounds = {}) {
    Family& f = families_[name];
    f.type = type;
    f.help = help;
    f.bounds = std::move(bounds);
  };
  family("polis_http_requests_total", "counter", "HTTP requests answered, by method and status code");
  family("polis_http_auth_refusals_total", "counter", "Requests refused for a missing, unknown or insufficient token");
  family("polis_inference_requests_total", "counter", "Inference requests by model, version and outcome");
  family("polis_inference_rows_total", "counter", "Rows (samples) inferred");
  family("polis_inference_request_seconds", "histogram", "Inference request time from arrival to result", kSecondsBuckets);
  family("polis_inference_queue_seconds", "histogram", "Time a request waited for its batch", kSecondsBuckets);
  family("polis_inference_compute_seconds", "histogram", "Forward pass time of one executed batch", kSecondsBuckets);
  family("polis_inference_batch_rows", "histogram", "Rows per executed batch (dynamic batching)", kRowBuckets);
  family("polis_inference_caller_batches_total", "counter",
         "Batches run by the thread that received a request (an HTTP I/O thread) instead of an "
         "inference thread");
  family("polis_grpc_requests_total", "counter", "gRPC calls answered, by RPC and status code");
  family("polis_model_version_loaded", "gauge", "1 for each loaded model version");
  family("polis_explain_requests_total", "counter",
         "Explanation requests by outcome (success, failure, rejected, timeout, cancelled)");
  family("polis_explain_cancelled_total", "counter",
         "Explanations stopped because their client hung up (queued or running)");
  family("polis_explain_rows_total", "counter", "Rows explained (computed)");
  family("polis_explain_queue_depth", "gauge", "Explanation requests waiting or running");
}

void Metrics::Add(const std::string& name, const std::string& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  families_[name].values[labels] += v;
}

void Metrics::Observe(const std::string& name, const std::string& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = families_[name];
  Histogram& h = f.histograms[labels];
  if (h.counts.empty()) h.counts.assign(f.bounds.size() + 1, 0);
  const size_t b = std::lower_bound(f.bounds.begin(), f.bounds.end(), v) - f.bounds.begin();
  h.counts[b]++;
  h.sum += v;
  h.count++;
}

void Metrics::CountHttp(const std::string& method, int code) {
  Add("polis_http_requests_total", fmt::format("method=\"{}\",code=\"{}\"", method, code), 1);
}

void Metrics::CountAuthRefusal(int code) {
  Add("polis_http_auth_refusals_total", fmt::format("code=\"{}\"", code), 1);
}

void DurationStat::Add(double seconds) {
  ++count;
  ns += static_cast<uint64_t>(std::max(0.0, seconds) * 1e9);
}

void Metrics::ObserveInference(const std::string& model, int64_t version, bool ok, double seconds,
                               int64_t rows, const RequestStages* stages) {
  const std::string l = ModelLabels(model, version);
  Add("polis_inference_requests_total", l + (ok ? ",outcome=\"success\"" : ",outcome=\"failure\""), 1);
  if (ok) {
    Add("polis_inference_rows_total", l, static_cast<double>(rows));
    Observe("polis_inference_request_seconds", l, seconds);
  }
  std::lock_guard<std::mutex> lock(mu_);
  VersionStats& s = stats_[{model, version}];
  if (!ok) return s.fail.Add(seconds);
  s.success.Add(seconds);
  s.inference_count += static_cast<uint64_t>(std::max<int64_t>(rows, 0));
  s.last_inference_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
  if (stages) {
    s.compute_input.Add(stages->input);
    s.queue.Add(stages->queue);
    s.compute_infer.Add(stages->infer);
    s.compute_output.Add(stages->output);
  }
}

std::optional<VersionStats> Metrics::StatsOf(const std::string& model, int64_t version) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = stats_.find({model, version});
  if (it == stats_.end()) return std::nullopt;
  return it->second;
}

void Metrics::ObserveQueue(const std::string& model, int64_t version, double seconds) {
  Observe("polis_inference_queue_seconds", ModelLabels(model, version), seconds);
}

void Metrics::ObserveBatch(const std::string& model, int64_t version, int64_t rows,
                           double compute_seconds, bool on_caller) {
  const std::string l = ModelLabels(model, version);
  Observe("polis_inference_batch_rows", l, static_cast<double>(rows));
  Observe("polis_inference_compute_seconds", l, compute_seconds);
  if (on_caller) Add("polis_inference_caller_batches_total", l, 1);
  std::lock_guard<std::mutex> lock(mu_);
  VersionStats& s = stats_[{model, version}];
  ++s.execution_count;
  s.batches[rows].Add(compute_seconds);
}

void Metrics::ObserveStage(Protocol protocol, Stage stage, double seconds) {
  AtomicHistogram& h = stages_[static_cast<int>(protocol)][static_cast<int>(stage)];
  const size_t b = std::lower_bound(kStageBuckets.begin(), kStageBuckets.end(), seconds) -
                   kStageBuckets.begin();
  h.counts[b].fetch_add(1, std::memory_order_relaxed);
  h.sum_ns.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9), std::memory_order_relaxed);
}

void Metrics::CountGrpc(const std::string& rpc, const std::string& code) {
  Add("polis_grpc_requests_total", fmt::format("rpc=\"{}\",code=\"{}\"", rpc, code), 1);
}

void Metrics::AdjustLoaded(const std::string& model, int64_t version, int delta) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& values = families_["polis_model_version_loaded"].values;
  const std::string l = ModelLabels(model, version);
  if ((values[l] += delta) <= 0) values.erase(l);
}

void Metrics::CountExplain(const std::string& outcome) {
  Add("polis_explain_requests_total", fmt::format("outcome=\"{}\"", outcome), 1);
  if (outcome == "cancelled") Add("polis_explain_cancelled_total", "", 1);
}

void Metrics::CountExplainRows(int64_t rows) {
  Add("polis_explain_rows_total", "", static_cast<double>(rows));
}

void Metrics::AdjustExplainQueue(int delta) { Add("polis_explain_queue_depth", "", delta); }

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, f.help, name, f.type);
    for (const auto& [labels, v] : f.values)
      out += labels.empty() ? fmt::format("{} {}\n", name, v)
                            : fmt::format("{}{{{}}} {}\n", name, labels, v);
    for (const auto& [labels, h] : f.histograms) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i < f.bounds.size(); ++i) {
        cumulative += h.counts[i];
        out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, f.bounds[i], cumulative);
      }
      out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, h.count);
      out += fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, h.sum, name, labels,
                         h.count);
    }
  }
  constexpr const char* kStage = "polis_inference_stage_seconds";
  out += fmt::format("# HELP {} Infer request time per stage (read, parse, queue, compute, encode, "
                     "write) and protocol\n# TYPE {} histogram\n", kStage, kStage);
  for (int p = 0; p < kProtocols; ++p)
    for (int st = 0; st < kStages; ++st) {
      const AtomicHistogram& h = stages_[p][st];
      const std::string labels =
          fmt::format("protocol=\"{}\",stage=\"{}\"", kProtocolNames[p], kStageNames[st]);
      uint64_t cumulative = 0;
      for (size_t i = 0; i < kStageBuckets.size(); ++i) {
        cumulative += h.counts[i].load(std::memory_order_relaxed);
        out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", kStage, labels, kStageBuckets[i],
                           cumulative);
      }
      cumulative += h.counts[kStageBuckets.size()].load(std::memory_order_relaxed);
      out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", kStage, labels, cumulative);
      out += fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", kStage, labels,
                         h.sum_ns.load(std::memory_order_relaxed) * 1e-9, kStage, labels, cumulative);
    }
  return out;
}

}  // namespace polis::registry
