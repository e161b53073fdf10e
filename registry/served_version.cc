#include "registry/served_version.h"

#include <malloc.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/thread_name.h"
#include "registry/metrics.h"
#include "registry/model_card.h"

namespace polis::registry {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// While waiting for a batch to fill, how often to ask whether more requests
// may still arrive (that can change without the queue being notified).
constexpr auto kArrivalRecheck = std::chrono::microseconds(100);

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Item {
  std::vector<float> input;
  int64_t rows = 0;
  Clock::time_point enqueued;
  std::function<void(InferOutcome)> infer_done;
};

// Buckets of batch sizes: powers of two below max, and max itself.
std::vector<int64_t> Buckets(int64_t max_batch) {
  std::vector<int64_t> b;
  for (int64_t s = 1; s < max_batch; s *= 2) b.push_back(s);
  b.push_back(max_batch);
  return b;
}

// Gives the allocator's free pages back to the OS, so that unloading a
// version shows in RSS (glibc keeps freed heap memory otherwise).
void ReturnMemoryToOs() { malloc_trim(0); }

struct Executor;

}  // namespace

struct ServedVersion::Core {
  std::string model_name;
  int64_t version = 0;
  std::string sha256;
  proto::ArtifactHeader header;
  nn::Model model;  // Networks point into its layer specs: never moved after construction
  std::vector<float> weights;
  BatchingOptions options;
  Metrics* metrics = nullptr;
  int64_t in_elems = 0, classes = 0;
  bool classifier = true;
  float scale = 1, shift = 0;
  bool timeseries = false;
  data::TimeSeriesStats ts_stats;
  std::vector<std::string> ts_header;
  std::optional<data::WindowPreprocessor> ts_preprocessor;
  Status ts_preprocessor_error;  // why ts_header does not bind, when it does not
  std::vector<int64_t> buckets;
  std::vector<double> bucket_seconds;  // one forward pass of each bucket, measured at load
  std::vector<int64_t> plan;           // PlanPasses(buckets, bucket_seconds, max batch)
  Clock::time_point loaded_at;
  std::vector<int64_t> bf16_layers;  // with precision bf16: the layers whose forward runs in bf16

  std::mutex mu;
  std::condition_variable cv;       // idle inference threads wait here
  std::condition_variable fill_cv;  // the thread forming a batch waits here for more rows
  std::deque<Item> queue;   // GUARDED_BY(mu)
  int64_t queued_rows = 0;  // GUARDED_BY(mu)
  bool stop = false;        // GUARDED_BY(mu)
  // The instances' Networks that no one runs now; whoever forms or runs a
  // batch takes one (any thread may run any of them).
  std::vector<Executor*> idle;  // GUARDED_BY(mu)
  int64_t instances = 0;        // GUARDED_BY(mu): warm ones
  bool forming = false;         // GUARDED_BY(mu): a thread waits for a batch to fill
  // Callers that queued a request and will call RunQueued on their own
  // thread soon: until they have, the inference threads leave the queue to
  // them (a wake-up saved per batch).
  int64_t pending_callers = 0;  // GUARDED_BY(mu)
  // Greedy batching on one compute thread an instance: a request that finds
  // an instance idle may run on the caller's thread (a hand-off to an
  // inference thread and back costs two thread wake-ups) when the caller
  // allows it.
  bool MayRunOnCaller() const {
    return options.max_queue_delay_us == 0 && options.compute_threads == 1;
  }
  // Holding mu: whether an inference thread may start a batch now.
  bool ThreadMayStart() const {
    return !forming && !idle.empty() && !queue.empty() && (pending_callers == 0 || stop);
  }
  // Holding mu: stopping, with every request answered and every instance idle.
  bool Drained() const {
    return stop && queue.empty() && !forming && static_cast<int64_t>(idle.size()) == instances;
  }
  // Holding mu, after the queue or the idle instances changed: whom to wake.
  enum class Wake { kNone, kFiller, kThread, kAll };
  Wake WhomToWake() const {
    if (stop) return Wake::kAll;
    if (forming) return Wake::kFiller;
    return ThreadMayStart() ? Wake::kThread : Wake::kNone;
  }
  void Notify(Wake w) {
    if (w == Wake::kFiller) fill_cv.notify_one();
    if (w == Wake::kThread) cv.notify_one();
    if (w == Wake::kAll) cv.notify_all(), fill_cv.notify_all();
  }
  // Holding mu (via lk) with `ex` taken from `idle`: runs the next batch on
  // this thread, gives `ex` back and wakes whom that concerns. `on_caller`:
  // this is a caller's thread, not an inference thread (for the metrics).
  void RunOn(Executor* ex, std::unique_lock<std::mutex>& lk, bool on_caller = false);

  // Explanations: training Networks of their own, used by one caller at a
  // time. Declared after model and weights, which they point into.
  std::mutex explain_mu;
  std::vector<float> grads;                                      // GUARDED_BY(explain_mu)
  // By thread, then batch: a Network runs only on the thread that built it
  // (oneDNN's library scratchpad is per thread), and the server may have
  // several explanation workers.
  std::map<std::thread::id, std::map<int64_t, std::unique_ptr<nn::Network>>>
      explain_nets;  // GUARDED_BY(explain_mu)

  nn::Network& ExplainNet(int64_t batch);  // holding explain_mu
  ExplainOutcome RunExplain(const ExplainRequest& req, const std::function<Status()>& keep_going);
};

nn::Network& ServedVersion::Core::ExplainNet(int64_t batch) {
  auto& mine = explain_nets[std::this_thread::get_id()];
  auto it = mine.find(batch);
  if (it != mine.end()) return *it->second;
  if (grads.empty()) grads.assign(weights.size(), 0.f);
  // Keep at most two step counts' networks a thread: each is a training Network.
  if (mine.size() >= 2) mine.erase(mine.begin());
  auto net = std::make_unique<nn::Network>(model, batch, weights.data(), grads.data(),
                                           /*training=*/true, /*want_input_grad=*/true);
  return *(mine[batch] = std::move(net));
}

ExplainOutcome ServedVersion::Core::RunExplain(const ExplainRequest& req,
                                              const std::function<Status()>& keep_going) {
  ExplainOutcome out;
  std::lock_guard<std::mutex> lock(explain_mu);
  try {
    const int64_t E = in_elems, K = classes, S = req.steps;
    // Rows 0..S of one pass are the input scaled by k/S: row 0 is the
    // (zero) baseline, row S the input itself.
    nn::Network& net = ExplainNet(S + 1);
    for (int64_t r = 0; r < req.rows; ++r) {
      // Between rows: the caller may have gone, or its time run out.
      if (keep_going) {
        Status st = keep_going();
        if (!st.ok()) {
          out.status = st.WithContext(
              fmt::format("explanation stopped after {} of {} rows", r, req.rows));
          out.rows.clear();
          return out;
        }
      }
      const float* x = req.input.data() + r * E;
      float* in = net.input();
      for (int64_t k = 0; k <= S; ++k) {
        const float alpha = static_cast<float>(k) / static_cast<float>(S);
        for (int64_t i = 0; i < E; ++i) in[k * E + i] = alpha * x[i];
      }
      net.Forward();
      const float* logits = net.output();
      ExplainRow row;
      row.logits.assign(logits + S * K, logits + (S + 1) * K);
      row.baseline_logits.assign(logits, logits + K);
      row.target = req.targets[r];
      if (row.target < 0)
        row.target = classifier ? std::max_element(row.logits.begin(), row.logits.end()) -
                                         row.logits.begin()
                                   : 0;
      float* diff = net.output_diff();
      std::fill(diff, diff + (S + 1) * K, 0.f);
      for (int64_t k = 0; k <= S; ++k) diff[k * K + row.target] = 1.f;
      net.Backward();
      const float* g = net.input_diff();
      row.saliency.resize(E);
      row.integrated_gradients.resize(E);
      double ig_sum = 0;
      for (int64_t i = 0; i < E; ++i) {
        // Right Riemann sum over alpha = 1/S .. 1 of the path gradient.
        double acc = 0;
        for (int64_t k = 1; k <= S; ++k) acc += g[k * E + i];
        const double ig = static_cast<double>(x[i]) * acc / static_cast<double>(S);
        row.integrated_gradients[i] = static_cast<float>(ig);
        row.saliency[i] = x[i] * g[S * E + i];
        ig_sum += ig;
      }
      row.convergence_delta =
          ig_sum - (static_cast<double>(row.logits[row.target]) - row.baseline_logits[row.target]);
      out.rows.push_back(std::move(row));
    }
  } catch (const std::exception& e) {
    out.status = InternalError("explaining with model '{}' version {} failed: {}", model_name,
                               version, e.what());
    out.rows.clear();
  }
  return out;
}


namespace {

using Core = ServedVersion::Core;

// The layers whose forward primitive computes in bf16 ("layer 2 fwd bf16:
// ..." in ImplInfo); a layer oneDNN has no fast bf16 kernel for stays fp32.
std::vector<int64_t> Bf16Layers(const nn::Network& net) {
  std::vector<int64_t> out;
  for (const std::string& line : net.ImplInfo()) {
    long long layer = -1;
    int matched = 0;  // set only when the whole pattern matched
    if (std::sscanf(line.c_str(), "layer %lld fwd bf16:%n", &layer, &matched) == 1 && matched > 0)
      out.push_back(layer);
  }
  return out;
}

// The thread's own state: the Networks it alone uses.
struct Executor {
  std::shared_ptr<Core> c;
  std::map<int64_t, std::unique_ptr<nn::Network>> nets;  // by bucket size
  std::vector<float> staged_out;  // the outputs of a batch that runs as several passes

  // Builds a network per bucket and runs each once; with `measure` (the
  // first instance) also times each (the best of two passes; one when a
  // pass takes over 20 ms) for the batch plan.
  Status Warm(bool measure) {
    try {
      for (int64_t b : c->buckets) {
        auto net = std::make_unique<nn::Network>(c->model, b, c->weights.data(), nullptr, false,
                                                 false, c->options.precision == "bf16");
        net->FreezeParams();  // the version's weights never change
        net->Forward();
        nets[b] = std::move(net);
        if (!measure) continue;
        if (b == c->buckets.front()) c->bf16_layers = Bf16Layers(*nets[b]);
        double best = std::numeric_limits<double>::infinity();
        for (int i = 0; i < 2 && best > 0.02; ++i) {
          const auto t0 = Clock::now();
          nets[b]->Forward();
          best = std::min(best, Seconds(Clock::now() - t0));
        }
        c->bucket_seconds.push_back(best);
      }
    } catch (const std::exception& e) {
      return InternalError("building the networks of model '{}' version {}: {}", c->model_name,
                           c->version, e.what());
    }
    if (!measure) return Status::Ok();
    // Tests: passes costing their rows, so that every batch size below the
    // max that is not a bucket runs as several passes.
    if (const char* e = std::getenv("POLIS_TEST_PASS_COST"); e && std::string(e) == "rows")
      for (size_t i = 0; i < c->buckets.size(); ++i) c->bucket_seconds[i] = 1e-6 * c->buckets[i];
    c->plan = PlanPasses(c->buckets, c->bucket_seconds, c->options.max_batch_size);
    return Status::Ok();
  }

  // The batch's rows (in item order) through its planned passes, each
  // pass's rows copied from the items into its network's input; returns
  // rows x classes outputs (the network's own buffer when one pass holds
  // them all).
  const float* Forward(const std::vector<Item>& batch, int64_t rows) {
    const int64_t E = c->in_elems, K = c->classes;
    const bool one_pass = c->plan[rows] >= rows;
    if (!one_pass) staged_out.resize(static_cast<size_t>(rows * K));
    size_t item = 0;
    int64_t item_row = 0;  // the next input row: row item_row of batch[item]
    for (int64_t at = 0; at < rows;) {
      const int64_t b = c->plan[rows - at], take = std::min(b, rows - at);
      nn::Network& net = *nets.at(b);
      float* in = net.input();
      for (int64_t left = take; left > 0;) {
        const Item& it = batch[item];
        const int64_t n = std::min(left, it.rows - item_row);
        in = std::copy_n(it.input.data() + item_row * E, n * E, in);
        left -= n;
        item_row += n;
        if (item_row == it.rows) ++item, item_row = 0;
      }
      std::fill(in, net.input() + b * E, 0.f);  // a padded last pass
      net.Forward();
      if (one_pass) return net.output();
      std::copy_n(net.output(), take * K, staged_out.data() + at * K);
      at += take;
    }
    return staged_out.data();
  }

  // True when the leading items fill a batch, so there is no point in
  // waiting longer.
  bool BatchFull() const {
    int64_t rows = 0;
    for (const Item& it : c->queue) {
      if (rows + it.rows > c->options.max_batch_size) return true;
      rows += it.rows;
      if (rows == c->options.max_batch_size) return true;
    }
    return false;
  }

  void RunBatch(std::vector<Item>& batch, int64_t rows, bool on_caller) {
    const auto start = Clock::now();
    Status st;
    const float* out = nullptr;
    try {
      out = Forward(batch, rows);
    } catch (const std::exception& e) {
      st = InternalError("forward pass of model '{}' version {} failed: {}", c->model_name,
                         c->version, e.what());
    }
    const double compute = Seconds(Clock::now() - start);
    if (c->metrics) c->metrics->ObserveBatch(c->model_name, c->version, rows, compute, on_caller);
    int64_t at = 0;
    for (Item& it : batch) {
      InferOutcome o;
      o.status = st;
      o.rows = it.rows;
      o.batch_rows = rows;
      o.queue_seconds = Seconds(start - it.enqueued);
      o.compute_seconds = compute;
      if (st.ok())
        o.logits.assign(out + at * c->classes, out + (at + it.rows) * c->classes);
      at += it.rows;
      if (c->metrics) c->metrics->ObserveQueue(c->model_name, c->version, o.queue_seconds);
      auto done = std::move(it.infer_done);
      it = Item();  // free the input before the callback, which may take a while
      done(std::move(o));
    }
  }

  // Moves the leading queued requests that fit in one batch into `batch`
  // (holding c->mu); returns their rows.
  int64_t TakeBatch(std::vector<Item>& batch) {
    int64_t rows = 0;
    while (!c->queue.empty() && rows + c->queue.front().rows <= c->options.max_batch_size) {
      rows += c->queue.front().rows;
      batch.push_back(std::move(c->queue.front()));
      c->queue.pop_front();
    }
    c->queued_rows -= rows;
    return rows;
  }

  void Loop() {
    std::unique_lock<std::mutex> lk(c->mu);
    const auto delay = std::chrono::microseconds(c->options.max_queue_delay_us);
    while (true) {
      c->cv.wait(lk, [&] { return c->ThreadMayStart() || c->Drained(); });
      if (c->Drained()) break;
      Executor* ex = c->idle.back();
      c->idle.pop_back();
      // One batch forms at a time: the others' threads wait until it runs.
      c->forming = true;
      const auto deadline = c->queue.front().enqueued + delay;
      const auto* more = c->options.more_may_arrive.get();
      while (!c->stop && !BatchFull() && Clock::now() < deadline && (!more || (*more)()))
        c->fill_cv.wait_until(lk, std::min(deadline, Clock::now() + kArrivalRecheck));
      c->forming = false;
      c->RunOn(ex, lk);
    }
  }
};

void ThreadMain(std::shared_ptr<Core> core, int instance, std::promise<Status> ready) {
  SetThreadName(fmt::format("infer/{}", core->model_name));
  // oneDNN (OpenMP build) sizes its parallel regions by this thread's
  // setting: each instance gets its own, so versions do not oversubscribe.
  omp_set_num_threads(static_cast<int>(core->options.compute_threads));
  {
    Executor ex;
    ex.c = core;
    Status st = ex.Warm(/*measure=*/instance == 0);
    const bool ok = st.ok();
    if (ok) {
      std::lock_guard<std::mutex> lock(core->mu);
      core->idle.push_back(&ex);
      ++core->instances;
    }
    ready.set_value(std::move(st));
    if (ok) ex.Loop();
  }
  // Networks are gone; drop the weights too if the version is gone.
  core.reset();
  ReturnMemoryToOs();
}

}  // namespace

void ServedVersion::Core::RunOn(Executor* ex, std::unique_lock<std::mutex>& lk, bool on_caller) {
  std::vector<Item> batch;
  const int64_t rows = ex->TakeBatch(batch);
  // Another instance may start on what is left.
  Notify(WhomToWake());
  lk.unlock();
  if (rows > 0) ex->RunBatch(batch, rows, on_caller);
  batch.clear();
  lk.lock();
  idle.push_back(ex);
  Notify(WhomToWake());
}

StatusOr<BatchingOptions> ReadModelConfig(const std::string& root, const std::string& model,
                                          const BatchingOptions& defaults) {
  const std::string path = root + "/" + model + "/" + kModelConfigFileName;
  BatchingOptions o = defaults;
  if (!PathExists(path)) return o;
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("'{}' is not a JSON object", path);
  for (const auto& [key, v] : j.items()) {
    if (key == "precision") {
      if (!v.is_string()) return InvalidArgument("'{}': 'precision' must be \"fp32\" or \"bf16\"", path);
      o.precision = v.get<std::string>();
      continue;
    }
    int64_t* field = key == "max_batch_size"       ? &o.max_batch_size
                     : key == "max_queue_delay_us" ? &o.max_queue_delay_us
                     : key == "max_queue_rows"     ? &o.max_queue_rows
                     : key == "compute_threads"    ? &o.compute_threads
                     : key == "instances"          ? &o.instances
                                                   : nullptr;
    if (!field)
      return InvalidArgument(
          "'{}': unknown key '{}'; known keys: max_batch_size, max_queue_delay_us, max_queue_rows, "
          "compute_threads, instances, precision",
          path, key);
    if (!v.is_number_integer()) return InvalidArgument("'{}': '{}' must be an integer", path, key);
    *field = v.get<int64_t>();
  }
  POLIS_RETURN_IF_ERROR(ValidateBatchingOptions(o, path));
  return o;
}

Status ValidateBatchingOptions(const BatchingOptions& o, const std::string& source) {
  if (o.max_batch_size < 1 || o.max_batch_size > 4096)
    return InvalidArgument("{}: max_batch_size must be in 1..4096, got {}", source, o.max_batch_size);
  if (o.max_queue_delay_us < 0 || o.max_queue_delay_us > 10'000'000)
    return InvalidArgument("{}: max_queue_delay_us must be in 0..10000000, got {}", source,
                           o.max_queue_delay_us);
  if (o.max_queue_rows < o.max_batch_size)
    return InvalidArgument("{}: max_queue_rows ({}) must be at least max_batch_size ({})", source,
                           o.max_queue_rows, o.max_batch_size);
  if (o.compute_threads < 1 || o.compute_threads > 256)
    return InvalidArgument("{}: compute_threads must be in 1..256, got {}", source, o.compute_threads);
  if (o.instances < 1 || o.instances > 64)
    return InvalidArgument("{}: instances must be in 1..64, got {}", source, o.instances);
  if (o.precision != "fp32" && o.precision != "bf16")
    return InvalidArgument("{}: precision must be \"fp32\" or \"bf16\", got \"{}\"", source, o.precision);
  if (o.precision == "bf16" && !CpuHasBf16())
    return InvalidArgument("{}: precision \"bf16\" needs a CPU with AVX512_BF16 (avx512_bf16 in "
                           "/proc/cpuinfo), and this one has none; serve it in \"fp32\"",
                           source);
  return Status::Ok();
}

std::vector<int64_t> PlanPasses(const std::vector<int64_t>& buckets,
                                const std::vector<double>& pass_seconds, int64_t max_batch) {
  // Per row count: the least time, then the fewest passes, then the fewest
  // padded rows; among equals the larger first pass (tried first) stays.
  struct Best {
    double seconds = 0;
    int64_t passes = 0, padded = 0, first = 0;
  };
  std::vector<Best> best(static_cast<size_t>(max_batch + 1));
  for (int64_t n = 1; n <= max_batch; ++n) {
    for (size_t i = buckets.size(); i-- > 0;) {
      const int64_t b = buckets[i];
      const Best& rest = best[std::max<int64_t>(0, n - b)];
      const Best cand{pass_seconds[i] + rest.seconds, 1 + rest.passes,
                      b >= n ? b - n : rest.padded, b};
      const double tie = 1e-9 * std::max(cand.seconds, best[n].seconds);
      const bool better =
          best[n].first == 0 || cand.seconds < best[n].seconds - tie ||
          (cand.seconds <= best[n].seconds + tie &&
           std::tie(cand.passes, cand.padded) < std::tie(best[n].passes, best[n].padded));
      if (better) best[n] = cand;
    }
  }
  std::vector<int64_t> first(static_cast<size_t>(max_batch + 1), 0);
  for (int64_t n = 1; n <= max_batch; ++n) first[n] = best[n].first;
  return first;
}

std::vector<int64_t> PassesOf(const std::vector<int64_t>& plan, int64_t rows) {
  std::vector<int64_t> out;
  for (int64_t left = rows; left > 0; left -= plan[left]) out.push_back(plan[left]);
  return out;
}

bool CpuHasBf16() {
  if (const char* e = std::getenv("POLIS_TEST_NO_BF16"); e && *e == '1') return false;
  return __builtin_cpu_supports("avx512bf16");
}

StatusOr<std::shared_ptr<ServedVersion>> ServedVersion::Load(const std::string& root,
                                                             const std::string& model,
                                                             int64_t version,
                                                             const BatchingOptions& options,
                                                             Metrics* metrics) {
  POLIS_RETURN_IF_ERROR(ValidateModelName(model));
  const std::string path = fmt::format("{}/{}/{}/{}", root, model, version, kArtifactFileName);
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  POLIS_ASSIGN_OR_RETURN(ModelArtifact a, DecodeArtifact(bytes, path));
  const std::string sha = ArtifactSha256(bytes);
  bytes = std::string();
  return FromArtifact(model, version, std::move(a), sha, options, metrics);
}

StatusOr<std::shared_ptr<ServedVersion>> ServedVersion::FromArtifact(
    const std::string& model, int64_t version, ModelArtifact artifact, const std::string& sha256,
    const BatchingOptions& options, Metrics* metrics) {
  const std::string what = fmt::format("model '{}' version {}", model, version);
  POLIS_RETURN_IF_ERROR(ValidateBatchingOptions(options, what));
  const proto::ArtifactHeader& h = artifact.header;
  nn::Shape in_shape(h.input_shape().begin(), h.input_shape().end());
  auto built = nn::Model::Build(h.job().model(), in_shape);
  if (!built.ok()) return built.status().WithContext(what);
  if (built->parameter_count() != static_cast<int64_t>(artifact.weights.size()))
    return DataLoss("{}: the model rebuilds with {} parameters but the artifact holds {}", what,
                    built->parameter_count(), artifact.weights.size());

  auto core = std::make_shared<Core>();
  core->model_name = model;
  core->version = version;
  core->sha256 = sha256;
  core->header = h;
  core->model = std::move(built).value();
  core->weights = std::move(artifact.weights);
  core->options = options;
  core->metrics = metrics;
  core->in_elems = nn::ShapeElements(core->model.input_shape());
  core->classes = nn::ShapeElements(core->model.output_shape());
  core->classifier = h.job().model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY &&
                     core->model.output_shape().size() == 1;
  // Integer inputs of image models are pixels, preprocessed as in training;
  // other models take their values as they are.
  const bool images = (h.job().dataset().format() == proto::DatasetSpec::IDX ||
                       h.job().dataset().format() == proto::DatasetSpec::SHARDS) &&
                      !h.job().dataset().has_timeseries();
  core->scale = images ? h.job().dataset().scale() : 1.f;
  core->shift = images ? h.job().dataset().shift() : 0.f;
  // Time-series forecasters carry the statistics fitted on the training
  // split; with them, raw CSV rows are served exactly as training saw them
  // (trained from the CSV, or from shards of its windows: the trainer puts
  // the packed TimeSeriesSpec into the job copy).
  if (IsTimeSeriesHeader(h)) {
    auto stats = data::TimeSeriesStats::FromJson(h.preprocessing_json());
    if (!stats.ok()) return stats.status().WithContext(what);
    const proto::TimeSeriesSpec& ts = h.job().dataset().timeseries();
    const int64_t expect = ts.lookback() * static_cast<int64_t>(stats->feature_names.size());
    if (expect != core->in_elems)
      return DataLoss("{}: lookback {} x {} features = {} values per window, but the model takes {}",
                      what, ts.lookback(), stats->feature_names.size(), expect, core->in_elems);
    json pj = json::parse(h.preprocessing_json(), nullptr, false);
    if (pj.is_object() && pj.contains("header")) {
      const json& hd = pj["header"];
      if (!hd.is_array()) return DataLoss("{}: preprocessing_json \"header\" is not an array", what);
      for (const auto& c : hd) {
        if (!c.is_string())
          return DataLoss("{}: preprocessing_json \"header\" holds a non-string", what);
        core->ts_header.push_back(c.get<std::string>());
      }
    }
    core->ts_stats = std::move(stats).value();
    core->timeseries = true;
    if (!core->ts_header.empty()) {
      auto pre = data::WindowPreprocessor::Create(ts, core->ts_stats, core->ts_header);
      if (pre.ok())
        core->ts_preprocessor = std::move(pre).value();
      else
        core->ts_preprocessor_error = pre.status();
    }
  }
  core->buckets = Buckets(options.max_batch_size);
  core->loaded_at = Clock::now();

  std::shared_ptr<ServedVersion> sv(new ServedVersion());
  sv->core_ = core;
  // One instance after another: the first times the passes for the batch
  // plan, undisturbed.
  for (int64_t i = 0; i < options.instances; ++i) {
    std::promise<Status> ready;
    std::future<Status> warmed = ready.get_future();
    sv->threads_.emplace_back(ThreadMain, core, static_cast<int>(i), std::move(ready));
    Status st = warmed.get();
    if (!st.ok()) return st;  // that thread has exited; ~ServedVersion joins them all
  }
  std::vector<std::string> passes;
  for (size_t i = 0; i < core->buckets.size(); ++i)
    passes.push_back(fmt::format("{}:{:.0f}", core->buckets[i], core->bucket_seconds[i] * 1e6));
  POLIS_LOG(kInfo, kRegistry,
            "loaded model '{}' version {} ({} parameters, {} instance{}, batches up to {}; forward "
            "pass us by batch size {}{})",
            model, version, core->weights.size(), options.instances,
            options.instances == 1 ? "" : "s", options.max_batch_size, fmt::join(passes, " "),
            options.precision == "bf16"
                ? fmt::format("; bf16 in layers [{}] of {}, the others fp32",
                              fmt::join(core->bf16_layers, ","), core->model.layers().size())
                : "");
  if (metrics) metrics->AdjustLoaded(model, version, +1);
  return sv;
}

ServedVersion::~ServedVersion() {
  if (core_) {
    {
      std::lock_guard<std::mutex> lock(core_->mu);
      core_->stop = true;
    }
    core_->Notify(Core::Wake::kAll);
    if (core_->metrics) core_->metrics->AdjustLoaded(core_->model_name, core_->version, -1);
    POLIS_LOG(kInfo, kRegistry, "unloading model '{}' version {}", core_->model_name,
              core_->version);
  }
  // The last reference may be dropped by a completion callback on an
  // inference thread; the threads then finish on their own (joining the
  // others from there would wait for this thread's instance).
  const bool on_inference_thread =
      std::any_of(threads_.begin(), threads_.end(),
                  [](const std::thread& t) { return t.get_id() == std::this_thread::get_id(); });
  for (std::thread& t : threads_) {
    if (!t.joinable()) continue;
    if (on_inference_thread) t.detach();
    else t.join();
  }
  core_.reset();
  ReturnMemoryToOs();
}

const std::string& ServedVersion::model_name() const { return core_->model_name; }
int64_t ServedVersion::version() const { return core_->version; }
const std::string& ServedVersion::sha256() const { return core_->sha256; }
const proto::ArtifactHeader& ServedVersion::header() const { return core_->header; }
const nn::Shape& ServedVersion::input_shape() const { return core_->model.input_shape(); }
int64_t ServedVersion::input_elements() const { return core_->in_elems; }
int64_t ServedVersion::classes() const { return core_->classes; }
const nn::Shape& ServedVersion::output_shape() const { return core_->model.output_shape(); }
bool ServedVersion::classifier() const { return core_->classifier; }
float ServedVersion::input_scale() const { return core_->scale; }
float ServedVersion::input_shift() const { return core_->shift; }
const BatchingOptions& ServedVersion::options() const { return core_->options; }
const std::vector<int64_t>& ServedVersion::bf16_layers() const { return core_->bf16_layers; }
std::vector<int64_t> ServedVersion::batch_passes(int64_t rows) const {
  return PassesOf(core_->plan, rows);
}
bool ServedVersion::timeseries() const { return core_->timeseries; }
const proto::TimeSeriesSpec& ServedVersion::timeseries_spec() const {
  return core_->header.job().dataset().timeseries();
}
const data::TimeSeriesStats& ServedVersion::timeseries_stats() const { return core_->ts_stats; }
const std::vector<std::string>& ServedVersion::timeseries_header() const { return core_->ts_header; }
StatusOr<const data::WindowPreprocessor*> ServedVersion::timeseries_preprocessor() const {
  POLIS_RETURN_IF_ERROR(core_->ts_preprocessor_error);
  return core_->ts_preprocessor ? &*core_->ts_preprocessor : nullptr;
}
double ServedVersion::TargetToOriginal(double standardised) const {
  if (!core_->timeseries) return standardised;
  return standardised * core_->ts_stats.target_stddev + core_->ts_stats.target_mean;
}
std::chrono::steady_clock::time_point ServedVersion::loaded_at() const { return core_->loaded_at; }

bool ServedVersion::Infer(std::vector<float> input, int64_t rows,
                          std::function<void(InferOutcome)> done, CallerRuns caller) {
  Core& c = *core_;
  if (rows < 1 || rows > c.options.max_batch_size ||
      static_cast<int64_t>(input.size()) != rows * c.in_elems) {
    InferOutcome o;
    o.status = InvalidArgument("{} rows of {} values: expected 1..{} rows of {} values", rows,
                               rows ? static_cast<int64_t>(input.size()) / rows : 0,
                               c.options.max_batch_size, c.in_elems);
    done(std::move(o));
    return false;
  }
  if (!c.MayRunOnCaller()) caller = CallerRuns::kNever;
  InferOutcome refused;
  std::unique_lock<std::mutex> lk(c.mu);
  if (c.queued_rows + rows > c.options.max_queue_rows) {
    refused.status = FailedPrecondition(
        "model '{}' version {} has {} rows queued (max_queue_rows {}); try again later",
        c.model_name, c.version, c.queued_rows, c.options.max_queue_rows);
    lk.unlock();
    done(std::move(refused));  // outside the lock
    return false;
  }
  Item it;
  it.input = std::move(input);
  it.rows = rows;
  it.enqueued = Clock::now();
  it.infer_done = std::move(done);
  c.queue.push_back(std::move(it));
  c.queued_rows += rows;
  if (caller == CallerRuns::kLater) {
    ++c.pending_callers;
    return true;
  }
  if (caller == CallerRuns::kNow && !c.forming && !c.idle.empty()) {
    RunHere(lk);
    return false;
  }
  const auto wake = c.WhomToWake();
  lk.unlock();
  c.Notify(wake);
  return false;
}

void ServedVersion::RunQueued() {
  Core& c = *core_;
  std::unique_lock<std::mutex> lk(c.mu);
  --c.pending_callers;
  if (!c.forming && !c.idle.empty() && !c.queue.empty()) return RunHere(lk);
  const auto wake = c.WhomToWake();
  lk.unlock();
  c.Notify(wake);
}

void ServedVersion::RunHere(std::unique_lock<std::mutex>& lk) {
  Core& c = *core_;
  Executor* ex = c.idle.back();
  c.idle.pop_back();
  // One OpenMP thread, as on the inference threads (the Networks were built
  // for it): without this, oneDNN would start a team for the caller.
  omp_set_num_threads(1);
  // One batch only: the caller may be an I/O thread whose other work (its
  // connections' next events) waits while it computes.
  c.RunOn(ex, lk, /*on_caller=*/true);
}

ExplainOutcome ServedVersion::Explain(const ExplainRequest& request,
                                      const std::function<Status()>& keep_going) {
  Core& c = *core_;
  ExplainOutcome o;
  if (request.rows < 1 || static_cast<int64_t>(request.input.size()) != request.rows * c.in_elems)
    o.status = InvalidArgument("explain: {} values for {} rows of {} values", request.input.size(),
                               request.rows, c.in_elems);
  else if (request.steps < 1 || request.steps > kMaxExplainSteps)
    o.status = InvalidArgument("explain: steps must be in 1..{}, got {}", kMaxExplainSteps,
                               request.steps);
  else if (static_cast<int64_t>(request.targets.size()) != request.rows)
    o.status = InvalidArgument("explain: {} targets for {} rows", request.targets.size(), request.rows);
  for (int64_t t : request.targets)
    if (o.status.ok() && (t < -1 || t >= c.classes))
      o.status = InvalidArgument("explain: target {} is outside 0..{}", t, c.classes - 1);
  if (!o.status.ok()) return o;
  return c.RunExplain(request, keep_going);
}

InferOutcome ServedVersion::InferSync(std::vector<float> input, int64_t rows) {
  std::promise<InferOutcome> p;
  auto f = p.get_future();
  Infer(std::move(input), rows, [&p](InferOutcome o) { p.set_value(std::move(o)); });
  return f.get();
}

std::vector<float> Softmax(const std::vector<float>& logits, int64_t rows, int64_t k) {
  std::vector<float> out(logits.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * k;
    const float mx = *std::max_element(row, row + k);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    for (int64_t j = 0; j < k; ++j)
      out[r * k + j] = static_cast<float>(std::exp(static_cast<double>(row[j] - mx)) / sum);
  }
  return out;
}

}  // namespace polis::registry
