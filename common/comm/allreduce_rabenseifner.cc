#include "common/comm/allreduce_rabenseifner.h"

#include <algorithm>

#include "common/comm/allreduce_kernels.h"

namespace polis::comm::internal {
namespace {

constexpr int64_t kAlignFloats = 16;  // block and segment edges on 64-byte lines
constexpr int kMaxSteps = 31;         // log2 of the largest power of two in an int

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

AllreduceRabenseifner::AllreduceRabenseifner(CollectiveContext* ctx, int64_t segment_bytes,
                                             int depth)
    : ctx_(ctx),
      segment_bytes_(std::max<int64_t>(RoundUp(segment_bytes, 64), 64)),
      depth_(std::clamp(depth, 1, kMaxDepth)) {
  std::fill_n(recv_, kMaxDepth, MPI_REQUEST_NULL);
  std::fill_n(send_, kSendSlots, MPI_REQUEST_NULL);
  std::fill_n(send_flags_, kSendSlots, true);
  std::fill_n(send_unit_, kSendSlots, -1);
  std::fill_n(send_peer_, kSendSlots, -1);
  ctx_->slots().Reserve(static_cast<size_t>(segment_bytes_) * depth_);
}

int64_t AllreduceRabenseifner::ScratchBytes(int64_t count, WireType wire) {
  // fp32 needs only the slots; a 16-bit wire keeps the whole encoded buffer.
  return wire == WireType::kFloat32 ? 0 : count * 2;
}

Status AllreduceRabenseifner::Fail(Status st) {
  ctx_->Abandon(kMaxDepth, recv_, recv_flags_);
  ctx_->Abandon(kSendSlots, send_, send_flags_);
  std::fill_n(send_unit_, kSendSlots, -1);
  return st;
}

Status AllreduceRabenseifner::WaitSend(int64_t v) {
  const int slot = static_cast<int>(v % kSendSlots);
  if (send_unit_[slot] != v) return Status::Ok();
  POLIS_RETURN_IF_ERROR(ctx_->WaitOne(&send_[slot], send_peer_[slot], true));
  send_unit_[slot] = -1;
  return Status::Ok();
}

Status AllreduceRabenseifner::WaitAllSends() {
  for (int i = 0; i < kSendSlots; ++i) {
    if (send_unit_[i] < 0) continue;
    POLIS_RETURN_IF_ERROR(ctx_->WaitOne(&send_[i], send_peer_[i], true));
    send_unit_[i] = -1;
  }
  return Status::Ok();
}

Status AllreduceRabenseifner::PostSend(int peer, Part part, int64_t k, bool encode) {
  const int64_t v = send_seq_++;
  const int slot = static_cast<int>(v % kSendSlots);
  if (send_unit_[slot] >= 0) POLIS_RETURN_IF_ERROR(WaitSend(send_unit_[slot]));
  const int64_t offset = part.offset + k * seg_;
  const int64_t length = std::min(seg_, part.offset + part.length - offset);
  const void* buf;
  if (wire_ == WireType::kFloat32) {
    buf = f32_ + offset;
  } else {
    if (encode) Encode(wire_, f32_ + offset, w16_ + offset, length);
    buf = w16_ + offset;
  }
  POLIS_MPI_CHECK(MPI_Isend(buf, static_cast<int>(length * WireBytes(wire_)), MPI_BYTE, peer,
                            kTagRabenseifner, ctx_->comm(), &send_[slot]));
  send_unit_[slot] = v;
  send_peer_[slot] = peer;
  return Status::Ok();
}

Status AllreduceRabenseifner::Exchange(int peer, Part send, bool encode, Part recv,
                                       Landing landing, int64_t wait_from, int64_t wait_to) {
  const bool compressed = wire_ != WireType::kFloat32;
  const int64_t esize = WireBytes(wire_);
  const int64_t nsend = (send.length + seg_ - 1) / seg_;
  const int64_t nrecv = (recv.length + seg_ - 1) / seg_;
  std::byte* const slots = ctx_->slots().data();
  const int depth = depth_;

  int64_t posted_recv = 0, done_recv = 0, posted_send = 0;
  auto post_recvs = [&]() -> Status {
    while (posted_recv < nrecv && posted_recv < done_recv + depth) {
      const int64_t offset = recv.offset + posted_recv * seg_;
      const int64_t length = std::min(seg_, recv.offset + recv.length - offset);
      void* buf;
      if (landing == Landing::kReduce) {
        buf = slots + (posted_recv % depth) * segment_bytes_;
      } else {
        buf = compressed ? static_cast<void*>(w16_ + offset) : static_cast<void*>(f32_ + offset);
      }
      POLIS_MPI_CHECK(MPI_Irecv(buf, static_cast<int>(length * esize), MPI_BYTE, peer,
                                kTagRabenseifner, ctx_->comm(), &recv_[posted_recv % depth]));
      ++posted_recv;
    }
    return Status::Ok();
  };
  // Sends run at most kSendSlots segments ahead of the receives, so that a
  // wait for a free request slot is always for a send the peer has a
  // receive posted for.
  auto post_sends = [&](int64_t limit) -> Status {
    while (posted_send < nsend && posted_send < limit)
      POLIS_RETURN_IF_ERROR(PostSend(peer, send, posted_send++, encode));
    return Status::Ok();
  };

  Status st;
  if (wait_from < wait_to) {
    // The receives land where sends [wait_from, wait_to) read from: post
    // this exchange's sends first, so that the peer can go on while this
    // rank waits for those to complete.
    st = post_sends(done_recv + kSendSlots);
    for (int64_t v = wait_from; st.ok() && v < wait_to; ++v) st = WaitSend(v);
    if (st.ok()) st = post_recvs();
  } else {
    // Receives first, so that the peer's messages find them posted (an
    // unexpected message is queued and copied once more).
    st = post_recvs();
    if (st.ok()) st = post_sends(done_recv + kSendSlots);
  }
  if (!st.ok()) return Fail(st);
  while (done_recv < nrecv) {
    st = ctx_->WaitOne(&recv_[done_recv % depth], peer, false);
    if (!st.ok()) return Fail(st);
    const int64_t offset = recv.offset + done_recv * seg_;
    const int64_t length = std::min(seg_, recv.offset + recv.length - offset);
    if (landing == Landing::kReduce) {
      const std::byte* in = slots + (done_recv % depth) * segment_bytes_;
      if (!compressed) {
        AddInto(f32_ + offset, reinterpret_cast<const float*>(in), length);
      } else {
        AddDecoded(wire_, f32_ + offset, reinterpret_cast<const uint16_t*>(in), f32_ + offset,
                   length);
      }
    } else if (compressed) {
      Decode(wire_, w16_ + offset, f32_ + offset, length);
    }
    ++done_recv;
    st = post_recvs();
    if (st.ok()) st = post_sends(done_recv + kSendSlots);
    if (!st.ok()) return Fail(st);
  }
  st = post_sends(nsend);
  return st.ok() ? st : Fail(st);
}

Status AllreduceRabenseifner::Run(float* data, int64_t count, WireType wire) {
  const int n = ctx_->size();
  const int r = ctx_->rank();
  const bool compressed = wire != WireType::kFloat32;
  f32_ = data;
  w16_ = reinterpret_cast<uint16_t*>(ctx_->scratch().data());
  wire_ = wire;
  seg_ = std::max<int64_t>(segment_bytes_ / WireBytes(wire) / kAlignFloats * kAlignFloats,
                           kAlignFloats);
  send_seq_ = 0;

  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int extra = n - p;  // ranks 0..2*extra-1 pair up first
  const Part whole{0, count};

  int vrank;  // rank among the p that run the steps
  if (r < 2 * extra) {
    if (r % 2 == 0) {
      // Hand the buffer (rounded, for a 16-bit wire) to r+1; the result
      // comes back into the same place, once these sends are done.
      POLIS_RETURN_IF_ERROR(Exchange(r + 1, whole, true, Part{}, Landing::kReduce));
      Status st = WaitAllSends();
      if (!st.ok()) return Fail(st);
      POLIS_RETURN_IF_ERROR(Exchange(r + 1, Part{}, false, whole, Landing::kInPlace));
      return Status::Ok();
    }
    POLIS_RETURN_IF_ERROR(Exchange(r - 1, Part{}, false, whole, Landing::kReduce));
    vrank = r / 2;
  } else {
    vrank = r - extra;
  }
  auto real_rank = [&](int v) { return v < extra ? 2 * v + 1 : v + extra; };

  // p blocks of `per` floats (the last ones may be short or empty); block
  // v's sum ends on vrank v.
  const int64_t per = RoundUp((count + p - 1) / p, kAlignFloats);
  auto blocks = [&](int lo, int hi) {
    const int64_t begin = std::min(count, lo * per);
    return Part{begin, std::min(count, hi * per) - begin};
  };

  // Reduce-scatter: the region [lo, lo + 2 mask) of blocks halves each step.
  int64_t first_send[kMaxSteps + 1], end_send[kMaxSteps + 1];
  int lo = 0;
  int step = 0;
  for (int mask = p / 2; mask >= 1; mask >>= 1, ++step) {
    const int mid = lo + mask;
    Part keep, give;
    if (vrank & mask) {
      keep = blocks(mid, lo + 2 * mask);
      give = blocks(lo, mid);
      lo = mid;
    } else {
      keep = blocks(lo, mid);
      give = blocks(mid, lo + 2 * mask);
    }
    first_send[step] = send_seq_;
    POLIS_RETURN_IF_ERROR(Exchange(real_rank(vrank ^ mask), give, true, keep, Landing::kReduce));
    end_send[step] = send_seq_;
  }
  if (compressed) {
    // This rank owns block `vrank` now: round its sum once, for everyone.
    const Part own = blocks(vrank, vrank + 1);
    EncodeRound(wire, f32_ + own.offset, w16_ + own.offset, own.length);
  }

  // All-gather, mirroring the steps: the partner's region lands in place,
  // where this rank's reduce-scatter sends to it read from, so those must
  // have completed first.
  for (int mask = 1; mask < p; mask <<= 1) {
    --step;
    const int plo = lo ^ mask;
    POLIS_RETURN_IF_ERROR(Exchange(real_rank(vrank ^ mask), blocks(lo, lo + mask), false,
                                   blocks(plo, plo + mask), Landing::kInPlace, first_send[step],
                                   end_send[step]));
    lo = std::min(lo, plo);
  }

  if (r < 2 * extra) {
    POLIS_RETURN_IF_ERROR(Exchange(r - 1, whole, false, Part{}, Landing::kInPlace));
  }
  Status st = WaitAllSends();
  return st.ok() ? st : Fail(st);
}

}  // namespace polis::comm::internal
