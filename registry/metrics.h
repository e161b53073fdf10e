// Prometheus metrics of the registry server (text exposition format 0.0.4,
// served at GET /metrics).
//
//   polis_http_requests_total{method,code}                 counter
//   polis_http_auth_refusals_total{code}                    counter
//   polis_inference_requests_total{model,version,outcome}   counter (outcome: success|failure)
//   polis_inference_rows_total{model,version}                counter
//   polis_inference_request_seconds{model,version}           histogram (arrival to result)
//   polis_inference_queue_seconds{model,version}             histogram (queued until its batch ran)
//   polis_inference_compute_seconds{model,version}           histogram (one batch's forward pass)
//   polis_inference_batch_rows{model,version}                histogram (rows per executed batch)
//   polis_inference_stage_seconds{protocol,stage}            histogram (one infer request's time
//        per stage, protocol rest|grpc; stages: read (REST: header parsed until the body is in),
//        parse (handler start until queued: auth, JSON/protobuf, tensor decoding), queue,
//        compute (its batch's forward pass), encode (result to response bytes), write
//        (response handed to the socket / gRPC until sent); lock-free)
//   polis_grpc_requests_total{rpc,code}                      counter (gRPC status code name)
//   polis_model_version_loaded{model,version}                gauge (instances loaded; gone at 0)
//   polis_explain_requests_total{outcome}                    counter (success|failure|rejected|timeout|cancelled)
//   polis_explain_cancelled_total                            counter (client hung up: stopped)
//   polis_explain_rows_total                                 counter (rows explained)
//   polis_explain_queue_depth                                gauge (waiting or running)
//
// The same requests also add up, per model version, into what Triton's
// statistics extension reports (GET /v2/models[/{m}[/versions/{v}]]/stats;
// VersionStats below).
//
// Thread-safe: one mutex; each update is a map lookup and a few adds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace polis::registry {

enum class Protocol : uint8_t { kRest, kGrpc };
enum class Stage : uint8_t { kRead, kParse, kQueue, kCompute, kEncode, kWrite };
inline constexpr int kProtocols = 2, kStages = 6;

// One duration statistic of the statistics extension: how many times it
// happened and their total time.
struct DurationStat {
  uint64_t count = 0, ns = 0;
  void Add(double seconds);
};

// A version's statistics since the server started (Triton's statistics
// extension). Request stages count successful requests only, each with its
// own time (a batched request counts its batch's forward pass).
struct VersionStats {
  int64_t last_inference_ms = 0;   // last successful request, ms since 1970
  uint64_t inference_count = 0;    // rows answered successfully
  uint64_t execution_count = 0;    // forward passes (batches) run
  DurationStat success, fail;      // whole requests, arrival to result
  DurationStat queue, compute_input, compute_infer, compute_output;
  std::map<int64_t, DurationStat> batches;  // by rows in the batch: its forward passes
};

// A successful request's stages (seconds): input = from the handler's start
// until queued (auth, parsing, decoding into the model's input), queue,
// infer = its batch's forward pass, output = encoding the response.
struct RequestStages {
  double input = 0, queue = 0, infer = 0, output = 0;
};

class Metrics {
 public:
  Metrics();
  void CountHttp(const std::string& method, int code);
  void CountAuthRefusal(int code);
  // `stages`: a successful request's, for the version's statistics.
  void ObserveInference(const std::string& model, int64_t version, bool ok, double seconds,
                        int64_t rows, const RequestStages* stages = nullptr);
  void ObserveQueue(const std::string& model, int64_t version, double seconds);
  // `on_caller`: run by the thread that received a request (an HTTP I/O
  // thread), not by one of the version's inference threads.
  void ObserveBatch(const std::string& model, int64_t version, int64_t rows, double compute_seconds,
                    bool on_caller = false);
  // +1 when a version is loaded, -1 when it is unloaded (a reload overlaps).
  // polis_inference_stage_seconds: atomics only (the hot path takes no lock).
  void ObserveStage(Protocol protocol, Stage stage, double seconds);
  void CountGrpc(const std::string& rpc, const std::string& code);
  void AdjustLoaded(const std::string& model, int64_t version, int delta);
  // Explanations (registry/explain_queue.h).
  void CountExplain(const std::string& outcome);
  void CountExplainRows(int64_t rows);
  void AdjustExplainQueue(int delta);
  std::string Render() const;
  // The version's statistics; nullopt when nothing was observed for it.
  std::optional<VersionStats> StatsOf(const std::string& model, int64_t version) const;

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  // per bucket, not cumulative
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    std::string help, type;
    std::vector<double> bounds;                  // histograms only
    std::map<std::string, double> values;        // counters and gauges, by label set
    std::map<std::string, Histogram> histograms;
  };
  void Add(const std::string& name, const std::string& labels, double v);
  void Observe(const std::string& name, const std::string& labels, double v);

  struct AtomicHistogram {
    std::array<std::atomic<uint64_t>, 16> counts{};  // per bucket (kStageBuckets + +Inf)
    std::atomic<uint64_t> sum_ns{0};
  };
  std::array<std::array<AtomicHistogram, kStages>, kProtocols> stages_;

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::map<std::pair<std::string, int64_t>, VersionStats> stats_;
};

}  // namespace polis::registry
