#include "common/comm/allreduce_hierarchical.h"

#include <algorithm>

namespace polis::comm::internal {

AllreduceHierarchical::AllreduceHierarchical(CollectiveContext* ctx,
                                             std::unique_ptr<CollectiveContext> local,
                                             std::unique_ptr<CollectiveContext> cross, int owners,
                                             int hosts, int64_t max_count, int64_t segment_bytes,
                                             int depth)
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
  Reserve(max_count);
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

Status AllreduceHierarchical::Run(float* data, int64_t count, WireType wire) {
  CallInfo info{"Allreduce", AllreduceAlgorithm::kHierarchical, wire, count};
  local_->BeginCall(info);
  if (cross_) cross_->BeginCall(info);
  const int64_t piece = AllreduceDirect::PieceFloats(owners_);
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

}  // namespace polis::comm::internal
