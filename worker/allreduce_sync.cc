// AllReduceSync: gradients summed across workers in buckets, in the order
// backward produces them, on a communication thread that overlaps the rest
// of backward; then the same optimizer step on every replica.
//
// The flat gradient buffer holds two extra floats after the parameters: this
// worker's sample count, and a checkpoint request (0, 1 = take one, 2 = take
// one and stop; only the lead worker sets it). They ride in the first
// bucket, so the step's total sample count (the divisor of the mean, and 0
// at an epoch's end) and a checkpoint every replica takes at the same step
// cost no extra collective.
//
// With sync.local_steps H > 1 (local SGD, docs/design/local-sgd.md) no
// gradient is exchanged: each step all-reduces only the two extra slots
// (so every worker still learns the step's total and a checkpoint request),
// each worker applies its own mean gradient to its own replica, and every H
// steps, at an epoch's end and before a checkpoint the workers average what
// their parameters moved since the last average. The average is anchor +
// Σ(params − anchor) / W, computed from the same all-reduced bits on every
// worker, so the replicas are bit-identical again afterwards.
//
// With sync.delayed_averaging a step's gradients and slots are copied into
// a second buffer and all-reduced as one piece while the next step
// computes; each step's mean is applied at the next Sync (DelayedSync;
// docs/design/delayed-averaging.md).
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "common/backend/backend.h"
#include "common/comm/communicator.h"
#include "common/grad_clip.h"
#include "common/log.h"
#include "common/optimizer.h"
#include "common/trace/trace.h"
#include "worker/gradient_sync.h"

namespace polis::worker {

std::vector<Bucket> PlanBuckets(const nn::Model& model, int64_t bucket_bytes) {
  std::vector<Bucket> out;
  const int64_t cap = bucket_bytes > 0 ? std::max<int64_t>(bucket_bytes / 4, 1) : INT64_MAX;
  const auto& layers = model.layers();
  int64_t open_end = model.parameter_count() + kGradientExtraSlots;
  int lowest = static_cast<int>(layers.size()) - 1;
  for (int i = static_cast<int>(layers.size()) - 1; i >= 0; --i) {
    if (layers[i].param_count == 0) continue;
    lowest = i;
    const int64_t begin = layers[i].param_offset;
    // The open bucket spans [begin, open_end) and is final once layer i is.
    while (open_end - begin > cap) {
      out.push_back({open_end - cap, open_end, i});
      open_end -= cap;
    }
    if (bucket_bytes == 0 || open_end - begin >= cap) {
      if (open_end > begin) out.push_back({begin, open_end, i});
      open_end = begin;
    }
  }
  if (open_end > 0) out.push_back({0, open_end, lowest});
  return out;
}

namespace {

// The host of every worker (by index in the workers' communicator), for the
// hierarchical all-reduce; empty on one host.
std::vector<int> WorkerHosts(const RoleContext& ctx) {
  std::vector<int> hosts;
  if (ctx.placement.empty()) return hosts;  // one host
  std::map<std::string, int> ids;
  for (int w = 0; w < ctx.workers; ++w) {
    const std::string& host = ctx.placement.at(ctx.worker_rank(w)).host;
    hosts.push_back(ids.emplace(host, static_cast<int>(ids.size())).first->second);
  }
  return hosts;
}

// sync.bucket_bytes, or by topology when it is -1 (auto): 64 KiB when the
// workers share a host (a bucket's all-reduce costs microseconds there, and
// small buckets start early in backward), 4 MiB when they span hosts (each
// bucket costs several round trips over the network; on 2 hosts with 100
// Mbit/s links the seed CNN's epoch took 15 s with 64 KiB buckets and 10 s
// with one bucket: docs/benchmarks.md).
int64_t BucketBytes(const RoleContext& ctx) {
  const int64_t set = ctx.job.spec.sync().bucket_bytes();
  if (set >= 0) return set;
  const std::vector<int> hosts = WorkerHosts(ctx);
  const bool one_host = std::all_of(hosts.begin(), hosts.end(), [&](int h) { return h == hosts.front(); });
  return one_host ? int64_t{64} << 10 : int64_t{4} << 20;
}

uint64_t Fnv1a(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Where the collectives run: the host gradient buffer itself (MPI), or a
// device's copy of it (NCCL), which the sync downloads once reduced.
struct ReduceOn {
  std::unique_ptr<device::Device> owned;     // the CPU device, when the caller gave none
  device::Device* dev = nullptr;             // the worker's device
  device::Span<float> buffer;                // P + kGradientExtraSlots floats
  std::vector<std::unique_ptr<device::Event>> ready;  // per bucket, device buffers only
  device::Buffer scratch;                    // device buffers only: VerifyReplicas' hashes
};

class AllReduceSync : public GradientSync {
 public:
  AllReduceSync(const RoleContext& ctx, float* params, float* grads,
                std::unique_ptr<comm::Communicator> comm, std::unique_ptr<Optimizer> opt,
                comm::AllreduceOptions options, const privacy::DpPlan* dp, ReduceOn on)
      : params_(params), grads_(grads), P_(ctx.model.parameter_count()), dp_(dp),
        buckets_(PlanBuckets(ctx.model, BucketBytes(ctx))),
        comm_(std::move(comm)), optimizer_(std::move(opt)), options_(options),
        verify_(ctx.job.spec.sync().verify_replicas()), clip_(ctx.job.spec.training().clip_grad_norm()),
        on_(std::move(on)), on_device_(comm_->space() == device::Space::kDevice),
        local_steps_(ctx.job.spec.sync().local_steps()), delayed_(ctx.job.spec.sync().delayed_averaging()) {
    if (delayed_) {
      // Nothing overlaps backward: a step's sums go as one all-reduce, with
      // one set of latencies (and the hierarchical algorithm across hosts).
      sums_.resize(P_ + kGradientExtraSlots);
      buckets_ = {Bucket{0, P_ + kGradientExtraSlots, 0}};
    }
    if (local_steps_ > 1) {
      anchor_.assign(params_, params_ + P_);
      POLIS_LOG(kInfo, kWorker, "local SGD: parameters averaged every {} steps", local_steps_);
    } else {
      POLIS_LOG(kInfo, kWorker, "{} gradient buckets", buckets_.size());
    }
    thread_ = std::thread([this] { Loop(); });
  }

  ~AllReduceSync() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void OnLayerGradients(int layer) override {
    if (local() || delayed()) return;  // nothing starts during backward
    std::lock_guard<std::mutex> lock(mu_);
    while (next_ < buckets_.size() && buckets_[next_].ready_after_layer >= layer) Enqueue(next_++);
    cv_.notify_all();
  }

  Status Sync(const StepInfo& info, StepResult* result) override {
    TRACE_SCOPE("sync");
    if (local()) return LocalSync(info, result);
    if (delayed()) return DelayedSync(info, result);
    POLIS_RETURN_IF_ERROR(WaitBuckets(info.step));
    if (on_device_) {
      // The reduced sums (and the extra slots) to the host, where the
      // optimizer runs.
      TRACE_SCOPE("download gradients");
      device::Stream& s = on_.dev->stream();
      POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(grads_, P_ + kGradientExtraSlots), on_.buffer, s));
      POLIS_RETURN_IF_ERROR(s.Synchronize());
    }
    POLIS_RETURN_IF_ERROR(ApplySums(grads_, info.step, result));
    if (verify_) return VerifyReplicas(info.step);
    return Status::Ok();
  }

  // Delayed averaging waits for the sums in flight, so that no message of
  // this worker's is left unreceived.
  Status Leave() override {
    if (!in_flight_) return Status::Ok();
    in_flight_ = false;
    return WaitBuckets(in_flight_step_);
  }

  // The extra slots are part of the first bucket, sent during backward.
  void BeginStep(int64_t samples) override {
    grads_[P_] = static_cast<float>(samples);
    grads_[P_ + 1] = static_cast<float>(request_);
    request_ = 0;
    if (!on_device_) return;
    // Ahead of the backward on the same stream: in the first bucket's event.
    Status st = on_.dev->Copy(on_.buffer.sub(P_, kGradientExtraSlots),
                              device::HostSpan<const float>(grads_ + P_, kGradientExtraSlots), on_.dev->stream());
    if (!st.ok()) Fail(st);
  }
  void RequestCheckpoint(Checkpoint kind) override {
    request_ = std::max(request_, static_cast<int>(kind));
  }
  Optimizer* optimizer() override { return optimizer_.get(); }

  // Local SGD: the checkpoint holds the average of every replica's
  // parameters and optimizer state (each worker's Adam moments differ
  // between averages).
  //
  // Delayed averaging: a checkpoint every checkpoint_every_steps may come at
  // a step this worker did not finish at once; its sums (which every worker
  // sent) are applied first, so every replica writes the same state.
  Status BeforeCheckpoint() override {
    POLIS_RETURN_IF_ERROR(ApplyEarlierStep());
    if (!local() || comm_->size() == 1) return Status::Ok();
    TRACE_SCOPE("average for checkpoint");
    if (since_average_ > 0) POLIS_RETURN_IF_ERROR(AverageParameters());
    for (auto& [name, v] : optimizer_->State()) {
      if (static_cast<int64_t>(v->size()) != P_)
        return InternalError("optimizer state '{}' holds {} floats; {} expected", name, v->size(), P_);
      std::copy(v->begin(), v->end(), grads_);
      POLIS_RETURN_IF_ERROR(AllreduceHostFloats(P_, Fp32Options()));
      const float inv = 1.0f / static_cast<float>(comm_->size());
      for (int64_t i = 0; i < P_; ++i) (*v)[i] = grads_[i] * inv;
    }
    return Status::Ok();
  }

  Status VerifyReplicas(int64_t step) override {
    uint64_t mine = Fnv1a(params_, sizeof(float) * P_);
    std::vector<uint64_t> all(comm_->size());
    POLIS_RETURN_IF_ERROR(Allgather(&mine, all.data()));
    for (int r = 0; r < comm_->size(); ++r)
      if (all[r] != all[0])
        return InternalError("after step {} worker {} holds different parameters from worker 0", step, r);
    return Status::Ok();
  }

 private:
  bool local() const { return local_steps_ > 1; }
  bool delayed() const { return delayed_; }

  // Enqueues the buckets not yet sent and waits for all of them; then the
  // next step starts from the first bucket.
  Status WaitBuckets(int64_t step) {
    TRACE_SCOPE("allreduce wait");
    std::unique_lock<std::mutex> lock(mu_);
    // A step without backward (no data left) sends every bucket now.
    EnqueueRest();
    cv_.wait(lock, [&] { return done_ == buckets_.size() || !error_.ok(); });
    if (!error_.ok()) return error_.WithContext(fmt::format("all-reduce of step {}", step));
    next_ = 0;
    done_ = 0;
    return Status::Ok();
  }

  void StartBuckets() {
    std::lock_guard<std::mutex> lock(mu_);
    EnqueueRest();
  }

  // Holding mu_: every bucket not yet enqueued goes.
  void EnqueueRest() {
    while (next_ < buckets_.size()) Enqueue(next_++);
    cv_.notify_all();
  }

  // A step's sums in host memory (P gradient floats and the extra slots):
  // the agreed epoch end and checkpoint request into `result`, and the
  // mean gradient applied to the replica.
  Status ApplySums(float* sums, int64_t step, StepResult* result) {
    const int64_t total = ReadSlots(sums, result);
    // DP-SGD: every step counts (even an empty sample), divided by the
    // expected batch B rather than the realised one, plus the step's noise:
    // (Σ clipped + N(0, σ²C²)) / B, the same draw on every replica.
    if (total == 0 && dp_ == nullptr) return Status::Ok();
    return ApplyMean(sums, dp_ != nullptr ? dp_->expected_batch : total, step);
  }

  // g (host, P floats) divided by `divisor`, DP-SGD's noise added, clipped
  // (training.clip_grad_norm) and applied by the optimizer.
  Status ApplyMean(float* g, int64_t divisor, int64_t step) {
    TRACE_SCOPE("optimizer");
    const float inv = 1.0f / static_cast<float>(divisor);
    float* __restrict m = g;
    for (int64_t i = 0; i < P_; ++i) m[i] *= inv;
    if (dp_ != nullptr) dp_->AddNoiseToAverage(step, 0, g, P_);
    // Synchronous modes: every replica holds the same mean gradient, so the
    // same norm and the same clip.
    if (clip_ > 0) ClipByGlobalNorm(g, P_, clip_);
    // The host master copy (a GPU worker's too: it feeds checkpoints, the
    // finite check and the replica hash; the replica uploads it).
    return optimizer_->Update(device::HostSpan(params_, P_), device::HostSpan<const float>(g, P_),
                              on_.dev->stream());
  }

  // Delayed averaging (docs/design/delayed-averaging.md): step t's sums
  // travel in sums_ while step t + 1 computes, and Sync(t + 1) applies them
  // before it sends its own. A step is finished at once when it may end the
  // epoch (this worker has no samples: the epoch is over only if no worker
  // has, and then every worker is here) or when a checkpoint is due, which
  // every worker learned from the same earlier sums: so all replicas agree
  // at every epoch end and checkpoint.
  Status DelayedSync(const StepInfo& info, StepResult* result) {
    POLIS_RETURN_IF_ERROR(ApplyEarlierStep());
    std::copy(grads_, grads_ + P_ + kGradientExtraSlots, sums_.begin());
    StartBuckets();
    in_flight_ = true;
    in_flight_step_ = info.step;
    if (info.samples > 0 && carried_ == Checkpoint::kNone) return Status::Ok();
    StepResult now;
    POLIS_RETURN_IF_ERROR(FinishInFlight(&now));
    result->epoch_over = now.epoch_over;
    if (now.epoch_over) {
      result->checkpoint = std::max(carried_, now.checkpoint);
      carried_ = Checkpoint::kNone;
    } else {
      // A request in this step's sums is reported at the next step, where
      // the workers that did not finish this step early learn it.
      result->checkpoint = carried_;
      carried_ = now.checkpoint;
    }
    if (verify_ && (result->epoch_over || result->checkpoint != Checkpoint::kNone)) return VerifyReplicas(info.step);
    return Status::Ok();
  }

  // Delayed averaging: waits for the step in flight and applies its mean.
  Status FinishInFlight(StepResult* result) {
    POLIS_RETURN_IF_ERROR(WaitBuckets(in_flight_step_));
    in_flight_ = false;
    return ApplySums(sums_.data(), in_flight_step_, result);
  }

  // Delayed averaging: the step still in flight, if any, applied; a
  // checkpoint request in its sums is reported at the next step finished
  // at once.
  Status ApplyEarlierStep() {
    if (!in_flight_) return Status::Ok();
    StepResult earlier;
    POLIS_RETURN_IF_ERROR(FinishInFlight(&earlier));
    carried_ = std::max(carried_, earlier.checkpoint);
    return Status::Ok();
  }

  // The step's summed extra slots: returns the total sample count and sets
  // the agreed epoch end and checkpoint request.
  int64_t ReadSlots(const float* sums, StepResult* result) const {
    const int64_t total = static_cast<int64_t>(sums[P_] + 0.5f);
    result->epoch_over = total == 0 && dp_ == nullptr;
    const int request = static_cast<int>(sums[P_ + 1] + 0.5f);
    result->checkpoint = request >= 2 ? Checkpoint::kTakeAndStop
                         : request == 1 ? Checkpoint::kTake : Checkpoint::kNone;
    return total;
  }

  static comm::AllreduceOptions Fp32Options() {
    comm::AllreduceOptions o;
    o.wire = comm::WireType::kFloat32;
    return o;
  }

  // All-reduces grads_[0, n) (host) where the communicator works: in place,
  // or through the device buffer.
  Status AllreduceHostFloats(int64_t n, const comm::AllreduceOptions& options) {
    if (!on_device_) return comm_->Allreduce(grads_, n, options);
    device::Stream& s = on_.dev->stream();
    POLIS_RETURN_IF_ERROR(on_.dev->Copy(on_.buffer.sub(0, n), device::HostSpan<const float>(grads_, n), s));
    POLIS_RETURN_IF_ERROR(s.Synchronize());
    POLIS_RETURN_IF_ERROR(comm_->Allreduce(on_.buffer.data, n, options));
    POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(grads_, n), on_.buffer.sub(0, n), s));
    return s.Synchronize();
  }

  // A local SGD step: the extra slots summed (fp32: the sample counts stay
  // exact), this worker's own mean gradient applied, and the parameters
  // averaged when due.
  Status LocalSync(const StepInfo& info, StepResult* result) {
    {
      TRACE_SCOPE("allreduce wait");
      if (on_device_) {
        // This worker's gradients and slots to the host, where the optimizer runs.
        device::Stream& s = on_.dev->stream();
        POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(grads_, P_ + kGradientExtraSlots), on_.buffer, s));
        POLIS_RETURN_IF_ERROR(s.Synchronize());
      }
      if (comm_->size() > 1)
        POLIS_RETURN_IF_ERROR(comm_->Allreduce(reduce_data() + P_, kGradientExtraSlots, Fp32Options()));
      if (on_device_) {
        device::Stream& s = on_.dev->stream();
        POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(grads_ + P_, kGradientExtraSlots),
                                            on_.buffer.sub(P_, kGradientExtraSlots), s));
        POLIS_RETURN_IF_ERROR(s.Synchronize());
      }
    }
    ReadSlots(grads_, result);
    if (info.samples > 0) POLIS_RETURN_IF_ERROR(ApplyMean(grads_, info.samples, info.step));
    ++since_average_;
    // The same decision on every worker: the step, the epoch's end and the
    // checkpoint request are agreed.
    const bool due = since_average_ >= local_steps_ || result->epoch_over || result->checkpoint != Checkpoint::kNone;
    if (!due) return Status::Ok();
    POLIS_RETURN_IF_ERROR(AverageParameters());
    if (verify_) return VerifyReplicas(info.step);
    return Status::Ok();
  }

  // params = anchor + Σ_workers(params − anchor) / W; anchor = params.
  Status AverageParameters() {
    since_average_ = 0;
    if (comm_->size() == 1) return Status::Ok();  // one replica: its own average
    TRACE_SCOPE("average parameters");
    float* __restrict d = grads_;
    for (int64_t i = 0; i < P_; ++i) d[i] = params_[i] - anchor_[i];
    POLIS_RETURN_IF_ERROR(AllreduceHostFloats(P_, options_));
    const float inv = 1.0f / static_cast<float>(comm_->size());
    for (int64_t i = 0; i < P_; ++i) anchor_[i] = params_[i] = anchor_[i] + d[i] * inv;
    return Status::Ok();
  }

  // Holding mu_: bucket b may go. On a device, the communicator's stream
  // will wait for this point of the compute stream.
  void Enqueue(size_t b) {
    if (on_device_) {
      Status st = on_.ready[b]->Record(on_.dev->stream());
      if (!st.ok() && error_.ok()) error_ = st;
    }
    queue_.push_back(b);
  }

  void Fail(const Status& st) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = st;
  }

  // Every worker's 8-byte hash; through device memory for a device communicator.
  Status Allgather(const uint64_t* mine, uint64_t* all) {
    if (!on_device_) return comm_->Allgather(mine, all, sizeof(uint64_t));
    const int64_t n = comm_->size();
    device::Stream& s = on_.dev->stream();
    const device::Span<float> d = on_.scratch.span();
    POLIS_RETURN_IF_ERROR(on_.dev->Copy(d.sub(0, 2), device::HostSpan(reinterpret_cast<const float*>(mine), 2), s));
    POLIS_RETURN_IF_ERROR(s.Synchronize());
    POLIS_RETURN_IF_ERROR(comm_->Allgather(d.data, d.data + 2, sizeof(uint64_t)));
    POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(reinterpret_cast<float*>(all), 2 * n), d.sub(2, 2 * n), s));
    return s.Synchronize();
  }

  void Loop() {
    trace::SetThreadName("comm");
    // NCCL's 16-bit wire kernels launch from this thread, on the device's streams.
    if (on_device_) {
      if (Status st = on_.dev->MakeCurrent(); !st.ok()) Fail(st);
    }
    while (true) {
      size_t b;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        b = queue_.front();
        queue_.pop_front();
      }
      const Bucket& k = buckets_[b];
      trace::Scope span("allreduce bucket", "bytes", static_cast<int64_t>(sizeof(float)) * (k.end - k.begin));
      Status st = on_device_ ? comm_->WaitFor(*on_.ready[b]) : Status::Ok();
      if (st.ok()) st = comm_->Allreduce(reduce_data() + k.begin, k.end - k.begin, options_);
      span.End();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!st.ok() && error_.ok()) error_ = st;
        ++done_;
      }
      cv_.notify_all();
    }
  }

  float* params_;
  float* grads_;
  const int64_t P_;
  const privacy::DpPlan* dp_;  // DP-SGD; null otherwise
  std::vector<Bucket> buckets_;
  std::unique_ptr<comm::Communicator> comm_;
  std::unique_ptr<Optimizer> optimizer_;
  comm::AllreduceOptions options_;
  bool verify_;
  const double clip_;  // training.clip_grad_norm; 0 = off
  int request_ = 0;  // training thread only: checkpoint request for the next step
  ReduceOn on_;
  const bool on_device_;  // the collectives run on on_.buffer in device memory
  float* reduce_data() { return on_device_ ? on_.buffer.data : delayed_ ? sums_.data() : grads_; }
  const int local_steps_;      // sync.local_steps; > 1: local SGD
  int since_average_ = 0;      // local SGD: steps since the parameters were last averaged
  std::vector<float> anchor_;  // local SGD: the parameters at the last average (the same on every worker)
  const bool delayed_;         // sync.delayed_averaging
  std::vector<float> sums_;    // delayed: the buffer the buckets reduce (a step's gradients and slots)
  bool in_flight_ = false;     // delayed: sums_ holds a step's buckets not yet waited for
  int64_t in_flight_step_ = 0; // delayed: that step
  Checkpoint carried_ = Checkpoint::kNone;  // delayed: a request learned, reported at the next Sync

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<size_t> queue_;  // GUARDED_BY(mu_)
  size_t next_ = 0;           // GUARDED_BY(mu_): next bucket to enqueue
  size_t done_ = 0;           // GUARDED_BY(mu_)
  Status error_;              // GUARDED_BY(mu_)
  bool stop_ = false;         // GUARDED_BY(mu_)
};

}  // namespace


StatusOr<std::unique_ptr<GradientSync>> MakeAllReduceSync(const RoleContext& ctx, float* params,
                                                          float* grads, const privacy::DpPlan* dp,
                                                          device::Device* dev, device::Span<float> reduce) {
  const int64_t P = ctx.model.parameter_count();
  std::unique_ptr<device::Device> cpu;
  if (dev == nullptr) {
    cpu = device::CpuDevice();
    dev = cpu.get();
    reduce = device::HostSpan(grads, P + kGradientExtraSlots);
  }
  if (reduce.size != P + kGradientExtraSlots)
    return InternalError("all-reduce over {} floats; {} expected", reduce.size, P + kGradientExtraSlots);
  POLIS_ASSIGN_OR_RETURN(auto comm,
                         backend::MakeWorkersCommunicator(*dev, *ctx.transport, P + kGradientExtraSlots, WorkerHosts(ctx)));
  if (comm->space() != reduce.space && comm->space() == device::Space::kDevice)
    return InternalError("a device communicator over a buffer in {} memory", device::SpaceName(reduce.space));
  ReduceOn on;
  on.owned = std::move(cpu);
  on.dev = dev;
  on.buffer = reduce;
  if (comm->space() == device::Space::kDevice) {
    for (size_t b = 0; b < PlanBuckets(ctx.model, BucketBytes(ctx)).size(); ++b) {
      POLIS_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> e, dev->NewEvent());
      on.ready.push_back(std::move(e));
    }
    POLIS_ASSIGN_OR_RETURN(on.scratch, dev->Allocate(2 + 2 * int64_t{ctx.workers}, device::Space::kDevice));
  }
  POLIS_ASSIGN_OR_RETURN(auto opt, MakeOptimizer(ctx.job.spec.optimizer(), P, TotalStepsHint(ctx)));
  if (ctx.job.spec.sync().delayed_averaging()) {
    if (comm->space() == device::Space::kDevice)
      return FailedPrecondition("sync.delayed_averaging runs on CPU workers only; this worker computes on {}",
                                dev->Describe());
    if (!ctx.transport->ConcurrentCalls())
      return FailedPrecondition("sync.delayed_averaging needs a transport on which the training thread may talk "
                                "to the coordinator while the sums travel (MPI initialised with full thread "
                                "support); this one is not");
  }
  comm::AllreduceOptions options;
  POLIS_ASSIGN_OR_RETURN(options.algorithm,
                         comm::ParseAllreduceAlgorithm(ctx.job.spec.sync().allreduce_algorithm()));
  switch (ctx.job.spec.sync().compression()) {
    case proto::SyncSpec::NONE: options.wire = comm::WireType::kFloat32; break;
    case proto::SyncSpec::BF16: options.wire = comm::WireType::kBFloat16; break;
    case proto::SyncSpec::FP16: options.wire = comm::WireType::kFloat16; break;
  }
  return std::unique_ptr<GradientSync>(
      new AllReduceSync(ctx, params, grads, std::move(comm), std::move(opt), options, dp, std::move(on)));
}

}  // namespace polis::worker
