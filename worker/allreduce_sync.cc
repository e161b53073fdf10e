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

uint64_t Fnv1a(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Where the collectives run: the host gradient buffer itself (MPI), or a
// device's copy of it (NCCL), which the sync downloads once reduced.
struct ReduceOn {
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
        buckets_(PlanBuckets(ctx.model, ctx.job.spec.sync().bucket_bytes())),
        comm_(std::move(comm)), optimizer_(std::move(opt)), options_(options),
        verify_(ctx.job.spec.sync().verify_replicas()), clip_(ctx.job.spec.training().clip_grad_norm()),
        on_(std::move(on)), on_device_(comm_->space() == device::Space::kDevice) {
    POLIS_LOG(kInfo, kWorker, "{} gradient buckets", buckets_.size());
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
    std::lock_guard<std::mutex> lock(mu_);
    while (next_ < buckets_.size() && buckets_[next_].ready_after_layer >= layer) Enqueue(next_++);
    cv_.notify_all();
  }

  Status Sync(const StepInfo& info, StepResult* result) override {
    TRACE_SCOPE("sync");
    const int64_t step = info.step;
    {
      TRACE_SCOPE("allreduce wait");
      std::unique_lock<std::mutex> lock(mu_);
      // A step without backward (no data left) sends every bucket now.
      while (next_ < buckets_.size()) Enqueue(next_++);
      cv_.notify_all();
      cv_.wait(lock, [&] { return done_ == buckets_.size() || !error_.ok(); });
      if (!error_.ok()) return error_.WithContext(fmt::format("all-reduce of step {}", step));
      next_ = 0;
      done_ = 0;
    }
    if (on_device_) {
      // The reduced sums (and the extra slots) to the host, where the
      // optimizer runs.
      TRACE_SCOPE("download gradients");
      device::Stream& s = on_.dev->stream();
      POLIS_RETURN_IF_ERROR(on_.dev->Copy(device::HostSpan(grads_, P_ + kGradientExtraSlots), on_.buffer, s));
      POLIS_RETURN_IF_ERROR(s.Synchronize());
    }
    const int64_t total = static_cast<int64_t>(grads_[P_] + 0.5f);
    result->epoch_over = total == 0 && dp_ == nullptr;
    const int request = static_cast<int>(grads_[P_ + 1] + 0.5f);
    result->checkpoint = request >= 2 ? Checkpoint::kTakeAndStop
                         : request == 1 ? Checkpoint::kTake : Checkpoint::kNone;
    // DP-SGD: every step counts (even an empty sample), divided by the
    // expected batch B rather than the realised one, plus the step's noise:
    // (Σ clipped + N(0, σ²C²)) / B, the same draw on every replica.
    if (total > 0 || dp_ != nullptr) {
      TRACE_SCOPE("optimizer");
      const float inv = 1.0f / static_cast<float>(dp_ != nullptr ? dp_->expected_batch : total);
      float* __restrict g = grads_;
      for (int64_t i = 0; i < P_; ++i) g[i] *= inv;
      if (dp_ != nullptr) dp_->AddNoiseToAverage(step, 0, grads_, P_);
      // Every replica holds the same mean gradient: the same norm, the same clip.
      if (clip_ > 0) ClipByGlobalNorm(grads_, P_, clip_);
      // The host master copy (a GPU worker's too: it feeds checkpoints, the
      // finite check and the replica hash; the replica uploads it).
      POLIS_RETURN_IF_ERROR(optimizer_->Update(device::HostSpan(params_, P_), device::HostSpan<const float>(grads_, P_),
                                               on_.dev->stream()));
    }
    if (verify_) return VerifyReplicas(step);
    return Status::Ok();
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
  float* reduce_data() const { return on_device_ ? on_.buffer.data : grads_; }

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
  on.dev = dev;
  on.buffer = reduce;
  if (comm->space() == device::Space::kDevice) {
    for (size_t b = 0; b < PlanBuckets(ctx.model, ctx.job.spec.sync().bucket_bytes()).size(); ++b) {
      POLIS_ASSIGN_OR_RETURN(std::unique_ptr<device::Event> e, dev->NewEvent());
      on.ready.push_back(std::move(e));
    }
    POLIS_ASSIGN_OR_RETURN(on.scratch, dev->Allocate(2 + 2 * int64_t{ctx.workers}, device::Space::kDevice));
  }
  POLIS_ASSIGN_OR_RETURN(auto opt, MakeOptimizer(ctx.job.spec.optimizer(), P, TotalStepsHint(ctx)));
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
