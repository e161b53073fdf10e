#include "common/comm/allreduce_hierarchical.h"

#include <algorithm>

#include "common/comm/wait.h"
#include "common/env.h"

namespace polis::comm::internal {
namespace {

// Pipelining pays from this many wire bytes: below it the host phases cost
// little and each extra piece adds the ring's start-up across hosts.
constexpr int64_t kPipelineMinBytes = int64_t{4} << 20;
// Pieces of about this many wire bytes, at most kMaxPieces of them.
constexpr int64_t kPieceBytes = int64_t{2} << 20;
constexpr int kMaxPieces = 8;
constexpr int64_t kAlignFloats = 16;

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

AllreduceHierarchical::AllreduceHierarchical(CollectiveContext* ctx,
                                             std::unique_ptr<CollectiveContext> local,
                                             std::unique_ptr<CollectiveContext> cross, int owners,
                                             int hosts, int max_local, int64_t max_count,
                                             int64_t segment_bytes, int depth)
    : ctx_(ctx),
      local_(std::move(local)),
      cross_(std::move(cross)),
      owners_(owners),
      hosts_(hosts),
      direct_(local_.get()) {
  // Each waits answering the others' stall queries: a rank stuck in one
  // group still tells the other group's peers that it has entered the call.
  local_->AlsoAnswerFor(ctx_);
  ctx_->AlsoAnswerFor(local_.get());
  if (cross_) {
    ring_ = std::make_unique<AllreduceRing>(cross_.get(), segment_bytes, depth);
    local_->AlsoAnswerFor(cross_.get());
    cross_->AlsoAnswerFor(ctx_);
    cross_->AlsoAnswerFor(local_.get());
    ctx_->AlsoAnswerFor(cross_.get());
  }
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  // The same on every rank (a host of one rank pipelines with the others).
  may_pipeline_ = hosts_ > 1 && max_local > 1 && provided == MPI_THREAD_MULTIPLE &&
                  !SingleThreaded();
  Reserve(max_count);
}

AllreduceHierarchical::~AllreduceHierarchical() {
  if (!helper_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_ready_.notify_one();
  helper_.join();
}

void AllreduceHierarchical::Reserve(int64_t count) {
  if (count <= reserved_) return;
  reserved_ = count;
  // Whatever the wire: a 16-bit one needs more inside the host, fp32 no more.
  local_->scratch().Reserve(static_cast<size_t>(std::max(
      AllreduceDirect::ScratchBytes(count, WireType::kBFloat16, local_->size(), owners_),
      AllreduceDirect::ScratchBytes(count, WireType::kFloat32, local_->size(), owners_))));
  if (cross_) {
    // The largest slice, as a 16-bit wire copy.
    const int64_t slice = std::min(count, AllreduceDirect::PieceFloats(owners_)) / owners_ + 64;
    cross_->scratch().Reserve(
        static_cast<size_t>(AllreduceRing::ScratchBytes(slice, WireType::kBFloat16)));
  }
}

int AllreduceHierarchical::Pieces(int64_t count, WireType wire) const {
  if (!may_pipeline_) return 1;
  const int forced = env::AllreducePieces();
  if (forced > 0) return forced;
  const int64_t bytes = count * WireBytes(wire);
  if (bytes < kPipelineMinBytes) return 1;
  return static_cast<int>(std::clamp<int64_t>(bytes / kPieceBytes, 2, kMaxPieces));
}

Status AllreduceHierarchical::Run(float* data, int64_t count, WireType wire) {
  CallInfo info{"Allreduce", AllreduceAlgorithm::kHierarchical, wire, count};
  local_->BeginCall(info);
  if (cross_) cross_->BeginCall(info);
  const int pieces = Pieces(count, wire);
  if (pieces > 1 && count / pieces <= AllreduceDirect::PieceFloats(owners_))
    return RunPipelined(data, count, wire, pieces);
  return RunPieces(data, count, wire, AllreduceDirect::PieceFloats(owners_));
}

// One piece after the other, each through the three phases.
Status AllreduceHierarchical::RunPieces(float* data, int64_t count, WireType wire,
                                        int64_t piece) {
  for (int64_t off = 0; off < count; off += piece) {
    float* const part = data + off;
    const int64_t len = std::min(piece, count - off);
    if (local_->size() > 1) POLIS_RETURN_IF_ERROR(direct_.ReduceScatter(part, len, wire, owners_));
    const AllreduceDirect::Block own = direct_.OwnBlock(len, owners_);
    if (cross_ && cross_->size() > 1 && own.length > 0) {
      POLIS_RETURN_IF_ERROR(ring_->Run(part + own.offset, own.length, wire));
    }
    if (local_->size() > 1) POLIS_RETURN_IF_ERROR(direct_.Allgather(part, len, wire, owners_));
  }
  return Status::Ok();
}

// Reduce-scatter k, hand k's ring to the helper, all-gather k-1 once its
// ring is done: the helper's rings run back to back while this thread works
// inside the host.
Status AllreduceHierarchical::RunPipelined(float* data, int64_t count, WireType wire,
                                           int pieces) {
  const int64_t piece = RoundUp((count + pieces - 1) / pieces, kAlignFloats * owners_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.clear();
    taken_ = done_ = 0;
    helper_status_ = Status::Ok();
  }
  if (!helper_.joinable()) helper_ = std::thread([this] { HelperLoop(); });

  auto bounds = [&](int64_t k) {
    const int64_t off = std::min(count, k * piece);
    return std::pair<float*, int64_t>(data + off, std::min(piece, count - off));
  };
  Status st = Status::Ok();
  int64_t posted = 0;
  for (int64_t k = 0; k <= pieces && st.ok(); ++k) {
    if (k < pieces) {
      const auto [part, len] = bounds(k);
      if (len > 0 && local_->size() > 1) st = direct_.ReduceScatter(part, len, wire, owners_, true);
      if (!st.ok()) break;
      const AllreduceDirect::Block own = direct_.OwnBlock(len, owners_);
      const bool ring = cross_ && cross_->size() > 1 && own.length > 0;
      Post(part + own.offset, ring ? own.length : 0, wire);
      ++posted;
    }
    if (k >= 1) {
      st = WaitHelper(k);
      const auto [part, len] = bounds(k - 1);
      if (st.ok() && len > 0 && local_->size() > 1) st = direct_.Allgather(part, len, wire, owners_);
    }
  }
  // Never return while the helper still works on this buffer.
  const Status helper = WaitHelper(posted);
  return st.ok() ? helper : st;
}

void AllreduceHierarchical::Post(float* part, int64_t count, WireType wire) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Piece{part, count, wire});
  }
  work_ready_.notify_one();
}

Status AllreduceHierarchical::WaitHelper(int64_t pieces) {
  std::unique_lock<std::mutex> lock(mu_);
  piece_done_.wait(lock, [&] { return done_ >= pieces; });
  return helper_status_;
}

void AllreduceHierarchical::HelperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_ready_.wait(lock, [&] { return stop_ || taken_ < static_cast<int64_t>(queue_.size()); });
    if (stop_) return;
    const Piece p = queue_[taken_++];
    const bool skip = !helper_status_.ok();  // peers are out of step after a failure
    lock.unlock();
    Status st = Status::Ok();
    if (!skip && p.count > 0) st = ring_->Run(p.data, p.count, p.wire);
    lock.lock();
    if (!st.ok() && helper_status_.ok()) helper_status_ = std::move(st);
    ++done_;
    piece_done_.notify_one();
  }
}

}  // namespace polis::comm::internal
