// One loaded model version, ready to answer inference and explanation
// requests, with dynamic batching.
//
// A version has one or more instances (BatchingOptions::instances, as
// Triton's instance groups): each is an inference thread with its own
// nn::Networks, one per batch bucket (1, 2, 4, ... up to max_batch_size, and
// max_batch_size itself), all built and run once ("warmed") before Load
// returns, so the first request after a swap pays no setup. Requests are
// queued; an idle instance's thread takes the oldest, then waits until the
// queued rows reach max_batch_size or the oldest has waited
// max_queue_delay_us, and runs the merged rows as the passes of the batch
// plan (PlanPasses) and hands each request its slice. One batch forms at a
// time; with several instances, several batches run at once. Rows are
// independent in every layer, so a row's result does not depend on what it
// was batched with (up to float rounding of the kernels).
//
// With no queue delay and one compute thread (the defaults) a request may
// instead run on the caller's thread, with whatever was already queued,
// when an instance is idle (Infer's `caller`: at once, or when the caller
// calls RunQueued after queuing more); what queues meanwhile goes to the
// inference threads, batched as before. Any thread may run any instance's
// Networks, one thread at a time, since their primitives take user-managed
// scratchpads (common/nn/scratchpad.h). A hand-off to an inference thread
// and back costs two thread wake-ups, which on a small machine are more
// than a small model's forward pass.
//
// Explanations (gradient x input and integrated gradients) never run on the
// inference threads: Explain runs on the caller's thread (the server's
// explanation workers, registry/explain_queue.h), on training Networks
// (training=true, want_input_grad=true) of their own, built on first use by
// each calling thread for itself and used by one caller at a time, so a
// costly explanation cannot delay a batch.
//
// Lifetime: the destructor lets the threads answer every queued request
// (requests in flight finish on the version they were queued on), joins
// them, frees the Networks and weights and returns the memory to the OS.
// So the last reference may be dropped from any thread but an inference
// thread; callbacks should therefore not capture the ServedVersion (if one
// does and drops the last reference, the threads are detached and finish
// alone, and `metrics` must outlive them). Infer's caller holds a reference
// until Infer (and RunQueued) returns, since a callback may run on its
// thread before that.
//
// Thread-safety: Infer, RunQueued, Explain and the accessors may be called
// from any thread (Explain blocks, one caller at a time); Infer's callbacks
// run on an inference thread or on the caller's, before Infer or RunQueued
// returns (a caller must not hold a lock its callback takes) and must not
// block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/artifact/artifact.h"
#include "common/data/timeseries.h"
#include "common/nn/model.h"
#include "common/status.h"

namespace polis::registry {

class Metrics;

inline constexpr char kModelConfigFileName[] = "config.json";

struct BatchingOptions {
  int64_t max_batch_size = 32;      // rows per executed batch, and per request
  int64_t max_queue_delay_us = 0;   // how long the oldest request may wait for others
  int64_t max_queue_rows = 2048;    // beyond this, requests are refused (503)
  int64_t compute_threads = 1;      // OpenMP threads of each instance's inference thread
  // Instances of the version: each an inference thread with its own
  // Networks (memory for the activations of every batch bucket, again), so
  // that as many batches can run at once.
  int64_t instances = 1;
  // "fp32", or "bf16": Conv2D and Dense layers compute in bfloat16 with fp32
  // accumulation where oneDNN has a fast kernel (needs AVX512_BF16);
  // everything else, and explanations, stay fp32 (docs/registry.md).
  std::string precision = "fp32";
  // Whether another request may still join the batch being formed. While it
  // returns false the batch runs at once instead of waiting out
  // max_queue_delay_us (a lone client is not delayed). Null: always wait.
  // The server's answers this from its connections (HttpServer).
  std::shared_ptr<const std::function<bool()>> more_may_arrive;
  bool operator==(const BatchingOptions&) const = default;
};

// <root>/<model>/config.json over `defaults`; keys: max_batch_size,
// max_queue_delay_us, max_queue_rows, compute_threads, instances (integers) and
// precision ("fp32" or "bf16"). Unknown keys and out-of-range values are
// InvalidArgument naming the file and key.
StatusOr<BatchingOptions> ReadModelConfig(const std::string& root, const std::string& model,
                                          const BatchingOptions& defaults);
Status ValidateBatchingOptions(const BatchingOptions& o, const std::string& source);

// How batches of each size run as forward passes of the networks built for
// `buckets` (ascending sizes), each pass costing `pass_seconds[i]` (as
// measured when the version loaded): for n = 0..max_batch, the bucket of an
// n-row batch's first pass, chosen so that the passes' total time is least.
// Only the last pass may be padded with zero rows (5 rows run as 4 + 1 when
// that is faster than one pass of 8); ties go to fewer passes.
std::vector<int64_t> PlanPasses(const std::vector<int64_t>& buckets,
                                const std::vector<double>& pass_seconds, int64_t max_batch);
// The passes (bucket sizes, in order) of an n-row batch under such a plan.
std::vector<int64_t> PassesOf(const std::vector<int64_t>& plan, int64_t rows);

// Whether this CPU multiplies bfloat16 pairs natively (AVX512_BF16).
// POLIS_TEST_NO_BF16=1 makes it answer false, so that the tests check the
// refusals on a CPU that has it.
bool CpuHasBf16();

struct InferOutcome {
  Status status;
  std::vector<float> logits;  // rows x classes, row-major
  int64_t rows = 0;
  int64_t batch_rows = 0;     // rows of the executed (merged) batch
  double queue_seconds = 0;   // enqueued until its batch started
  double compute_seconds = 0; // that batch's forward pass
};

inline constexpr int kMaxExplainSteps = 256;

// Who may run the batch of a request given to ServedVersion::Infer. The
// caller runs it only with no queue delay and one compute thread; otherwise
// every answer is kNever.
enum class CallerRuns {
  kNever,  // the inference threads
  kNow,    // the caller, before Infer returns, when an instance is idle
  kLater,  // the caller, in its next RunQueued (which it must call soon), when
           // an instance is idle then: the inference threads leave the queue
           // to it until it has
};

struct ExplainRequest {
  std::vector<float> input;      // rows x input elements, model input space
  int64_t rows = 0;
  std::vector<int64_t> targets;  // per row: an output index; -1 = the predicted class (0 for regression)
  int steps = 32;                // integrated-gradients steps (1..kMaxExplainSteps)
};

struct ExplainRow {
  int64_t target = 0;
  std::vector<float> logits;     // at the input
  std::vector<float> baseline_logits;
  std::vector<float> saliency;   // input x d logit[target] / d input
  std::vector<float> integrated_gradients;
  double convergence_delta = 0;  // sum(IG) - (logit(x) - logit(baseline)) for target
};

struct ExplainOutcome {
  Status status;
  std::vector<ExplainRow> rows;
};

class ServedVersion {
 public:
  // Reads <root>/<model>/<version>/model.polis, checks it, builds and warms
  // the Networks. Blocks until the version is ready.
  static StatusOr<std::shared_ptr<ServedVersion>> Load(const std::string& root,
                                                       const std::string& model, int64_t version,
                                                       const BatchingOptions& options,
                                                       Metrics* metrics);
  static StatusOr<std::shared_ptr<ServedVersion>> FromArtifact(const std::string& model,
                                                               int64_t version,
                                                               ModelArtifact artifact,
                                                               const std::string& sha256,
                                                               const BatchingOptions& options,
                                                               Metrics* metrics);
  ~ServedVersion();
  ServedVersion(const ServedVersion&) = delete;
  ServedVersion& operator=(const ServedVersion&) = delete;

  const std::string& model_name() const;
  int64_t version() const;
  const std::string& sha256() const;
  const proto::ArtifactHeader& header() const;
  const nn::Shape& input_shape() const;
  int64_t input_elements() const;
  const nn::Shape& output_shape() const;
  // Elements of one row's output: the classes of a classifier.
  int64_t classes() const;
  // Trained with softmax cross-entropy on a vector of logits; otherwise a
  // regression model whose outputs are the predictions.
  bool classifier() const;
  // Raw integer inputs are preprocessed as value * scale + shift: the job's
  // dataset scale and shift for image (IDX) data, 1 and 0 otherwise.
  float input_scale() const;
  float input_shift() const;
  const BatchingOptions& options() const;
  // With precision bf16: the layers whose forward pass computes in bf16.
  const std::vector<int64_t>& bf16_layers() const;
  // The forward passes (bucket sizes) a batch of `rows` runs as (PlanPasses
  // over the times measured at load).
  std::vector<int64_t> batch_passes(int64_t rows) const;
  // A time-series forecaster (dataset format CSV with a TimeSeriesSpec and
  // TimeSeriesStats in header().preprocessing_json()): it also takes raw CSV
  // rows, preprocessed with timeseries_spec() and timeseries_stats().
  bool timeseries() const;
  const proto::TimeSeriesSpec& timeseries_spec() const;
  const data::TimeSeriesStats& timeseries_stats() const;
  // The training file's column names when preprocessing_json records them
  // ("header": [...]); empty otherwise.
  const std::vector<std::string>& timeseries_header() const;
  // Raw rows under timeseries_header(), bound once at load; null when the
  // artifact records no header, the reason when it does not fit the spec
  // (a request may still name its own columns).
  StatusOr<const data::WindowPreprocessor*> timeseries_preprocessor() const;
  // Standardised target -> original units (identity when not a time series).
  double TargetToOriginal(double standardised) const;
  std::chrono::steady_clock::time_point loaded_at() const;

  // `input` holds rows x input_elements() floats; 1 <= rows <= max_batch_size.
  // `done` runs on an inference thread, or on the caller's before Infer (or,
  // with kLater, RunQueued) returns: an immediate refusal, or a batch the
  // caller ran (`caller`). A full queue is FailedPrecondition. The server
  // passes kNow for a REST request that is the only one it holds, and kLater
  // when the version has an instance for each HTTP I/O thread: each thread
  // then runs, after reading what its connections sent, one batch of it.
  // Returns true when the request was queued with kLater: the caller then
  // owes one RunQueued call.
  bool Infer(std::vector<float> input, int64_t rows, std::function<void(InferOutcome)> done,
             CallerRuns caller = CallerRuns::kNow);
  // Once for each Infer that returned true: runs the next batch here when
  // an instance is idle (the queue may have been run by others meanwhile);
  // otherwise the instance that finishes first takes it.
  void RunQueued();
  // Blocking convenience for tests and tools.
  InferOutcome InferSync(std::vector<float> input, int64_t rows);

  // Explains on the calling thread (blocks; callers take turns). Before each
  // row it asks `keep_going` (when given); a non-OK answer stops the
  // explanation with that status.
  ExplainOutcome Explain(const ExplainRequest& request,
                         const std::function<Status()>& keep_going = nullptr);

  struct Core;

 private:
  ServedVersion() = default;
  // Holding the core's lock (lk) with an instance idle: runs one batch here.
  void RunHere(std::unique_lock<std::mutex>& lk);
  std::shared_ptr<Core> core_;
  std::vector<std::thread> threads_;  // one an instance
};

// Softmax of each row of logits (rows x k), computed in double.
std::vector<float> Softmax(const std::vector<float>& logits, int64_t rows, int64_t k);

}  // namespace polis::registry
