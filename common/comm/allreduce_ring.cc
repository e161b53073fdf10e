#include "common/comm/allreduce_ring.h"

#include <algorithm>

#include "common/comm/allreduce_kernels.h"

namespace polis::comm::internal {
namespace {

constexpr int64_t kAlignFloats = 16;  // chunk and segment edges on 64-byte lines

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int Mod(int64_t a, int n) { return static_cast<int>(((a % n) + n) % n); }

// Where chunk c's segment k lies.
struct Span {
  int64_t offset;
  int64_t length;
};

}  // namespace

AllreduceRing::AllreduceRing(CollectiveContext* ctx, int64_t segment_bytes, int depth)
    : ctx_(ctx),
      segment_bytes_(std::max<int64_t>(RoundUp(segment_bytes, 64), 64)),
      depth_(std::clamp(depth, 1, kMaxDepth)) {
  std::fill_n(recv_, kMaxDepth, MPI_REQUEST_NULL);
  std::fill_n(send_, kSendSlots, MPI_REQUEST_NULL);
  std::fill_n(send_unit_, kSendSlots, -1);
  ctx_->slots().Reserve(static_cast<size_t>(segment_bytes_) * depth_);
}

int64_t AllreduceRing::ScratchBytes(int64_t count, WireType wire) {
  // fp32 needs only the slots; a 16-bit wire keeps the whole encoded buffer.
  return wire == WireType::kFloat32 ? 0 : count * 2;
}

Status AllreduceRing::Run(float* data, int64_t count, WireType wire) {
  const int n = ctx_->size();
  const int r = ctx_->rank();
  const int left = Mod(r - 1, n);
  const int right = Mod(r + 1, n);
  const MPI_Comm comm = ctx_->comm();
  const bool compressed = wire != WireType::kFloat32;
  const int64_t esize = WireBytes(wire);

  // Chunks of `per` floats (the last ones may be short or empty), each cut
  // into `nsegs` segments of `seg` floats.
  const int64_t per = RoundUp((count + n - 1) / n, kAlignFloats);
  const int64_t seg_target = std::max<int64_t>(segment_bytes_ / esize / kAlignFloats * kAlignFloats,
                                               kAlignFloats);
  const int64_t nsegs = std::max<int64_t>(1, (per + seg_target - 1) / seg_target);
  const int64_t seg = RoundUp((per + nsegs - 1) / nsegs, kAlignFloats);
  auto span = [&](int chunk, int64_t k) {
    const int64_t begin = std::min(count, chunk * per + k * seg);
    const int64_t end = std::min({count, chunk * per + per, chunk * per + (k + 1) * seg});
    return Span{begin, std::max<int64_t>(0, end - begin)};
  };

  const int64_t rs_units = (n - 1) * nsegs;  // reduce-scatter units, then as many all-gather
  const int64_t units = 2 * rs_units;
  // Unit u is step u / nsegs, segment u % nsegs. Reduce-scatter step s sends
  // chunk r-s and receives chunk r-s-1; all-gather step t sends chunk r+1-t
  // and receives chunk r-t.
  auto send_chunk = [&](int64_t u) {
    const int64_t s = u / nsegs;
    return s < n - 1 ? Mod(r - s, n) : Mod(r + 1 - (s - (n - 1)), n);
  };
  auto recv_chunk = [&](int64_t u) {
    const int64_t s = u / nsegs;
    return s < n - 1 ? Mod(r - s - 1, n) : Mod(r - (s - (n - 1)), n);
  };

  float* const f32 = data;
  uint16_t* const w16 = reinterpret_cast<uint16_t*>(ctx_->scratch().data());  // whole-buffer wire copy
  std::byte* const slots = ctx_->slots().data();
  const int depth = static_cast<int>(std::min<int64_t>(depth_, units));
  const int64_t slot_bytes = segment_bytes_;

  bool send_flags[kSendSlots];
  std::fill_n(send_flags, kSendSlots, true);
  bool recv_flags[kMaxDepth] = {};

  auto fail = [&](Status st) {
    ctx_->Abandon(kMaxDepth, recv_, recv_flags);
    ctx_->Abandon(kSendSlots, send_, send_flags);
    std::fill_n(send_unit_, kSendSlots, -1);
    return st;
  };
  // Waits until send `v` (already posted) has completed; a no-op if its slot
  // has moved on (then it completed) or it was empty.
  auto wait_send = [&](int64_t v) -> Status {
    const int slot = static_cast<int>(v % kSendSlots);
    if (send_unit_[slot] != v) return Status::Ok();
    POLIS_RETURN_IF_ERROR(ctx_->WaitOne(&send_[slot], right, true));
    send_unit_[slot] = -1;
    return Status::Ok();
  };
  auto post_send = [&](int64_t v) -> Status {
    const int slot = static_cast<int>(v % kSendSlots);
    if (send_unit_[slot] >= 0) POLIS_RETURN_IF_ERROR(wait_send(send_unit_[slot]));
    const Span sp = span(send_chunk(v), v % nsegs);
    if (sp.length == 0) return Status::Ok();
    const void* buf;
    if (!compressed) {
      buf = f32 + sp.offset;
    } else {
      // Reduce-scatter step 0 sends this rank's own values, rounded; later
      // steps send what the previous step encoded.
      if (v < nsegs) Encode(wire, f32 + sp.offset, w16 + sp.offset, sp.length);
      buf = w16 + sp.offset;
    }
    POLIS_MPI_CHECK(MPI_Isend(buf, static_cast<int>(sp.length * esize), MPI_BYTE, right, kTagRing,
                              comm, &send_[slot]));
    send_unit_[slot] = v;
    return Status::Ok();
  };
  auto post_recv = [&](int64_t v) -> Status {
    const Span sp = span(recv_chunk(v), v % nsegs);
    if (sp.length == 0) return Status::Ok();
    void* buf;
    if (v < rs_units) {
      buf = slots + (v % depth) * slot_bytes;
    } else {
      // All-gather lands in place; the reduce-scatter send of the same
      // region, (n-1) steps earlier, must be finished first.
      POLIS_RETURN_IF_ERROR(wait_send(v - rs_units));
      buf = compressed ? static_cast<void*>(w16 + sp.offset) : static_cast<void*>(f32 + sp.offset);
    }
    POLIS_MPI_CHECK(MPI_Irecv(buf, static_cast<int>(sp.length * esize), MPI_BYTE, left, kTagRing,
                              comm, &recv_[v % depth]));
    return Status::Ok();
  };
  auto reduce = [&](int64_t u) {
    const Span sp = span(recv_chunk(u), u % nsegs);
    if (sp.length == 0) return;
    const int64_t s = u / nsegs;
    if (u < rs_units) {
      const std::byte* in = slots + (u % depth) * slot_bytes;
      if (!compressed) {
        AddInto(f32 + sp.offset, reinterpret_cast<const float*>(in), sp.length);
      } else if (s < n - 2) {
        AddDecodeEncode(wire, f32 + sp.offset, reinterpret_cast<const uint16_t*>(in),
                        w16 + sp.offset, sp.length);
      } else {
        // This rank now owns the chunk: round its own copy like everyone's.
        AddDecodeEncodeRound(wire, f32 + sp.offset, reinterpret_cast<const uint16_t*>(in),
                             w16 + sp.offset, sp.length);
      }
    } else if (compressed) {
      Decode(wire, w16 + sp.offset, f32 + sp.offset, sp.length);
    }
  };

  int64_t next_send = 0, next_recv = 0;
  auto post_recvs = [&](int64_t u, int64_t limit) -> Status {
    while (next_recv < limit && next_recv < u + depth) {
      // An all-gather receive lands where a reduce-scatter send read from:
      // it waits until that send has been posted (and then completed).
      if (next_recv >= rs_units && next_recv - rs_units >= next_send) break;
      POLIS_RETURN_IF_ERROR(post_recv(next_recv++));
    }
    return Status::Ok();
  };
  for (int64_t u = 0; u < units; ++u) {
    // Reduce-scatter receives first, so that the neighbour's messages find
    // them posted (an unexpected message is queued and copied once more).
    Status st = post_recvs(u, rs_units);
    if (!st.ok()) return fail(st);
    // Send v carries what unit v - nsegs reduced: post it as soon as that is
    // done (up to kSendSlots in flight), so that the neighbour can pull it
    // whenever it runs, without this rank having to be scheduled again.
    while (next_send < units && next_send < u + nsegs && next_send < u + kSendSlots) {
      st = post_send(next_send++);
      if (!st.ok()) return fail(st);
    }
    st = post_recvs(u, units);
    if (!st.ok()) return fail(st);
    st = ctx_->WaitOne(&recv_[u % depth], left, false);
    if (!st.ok()) return fail(st);
    reduce(u);
  }
  for (int i = 0; i < kSendSlots; ++i) {
    if (send_unit_[i] < 0) continue;
    Status st = ctx_->WaitOne(&send_[i], right, true);
    if (!st.ok()) return fail(st);
    send_unit_[i] = -1;
  }
  return Status::Ok();
}

}  // namespace polis::comm::internal
