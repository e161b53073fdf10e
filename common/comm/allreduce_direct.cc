#include "common/comm/allreduce_direct.h"

#include <algorithm>

#include "common/comm/allreduce_kernels.h"

namespace polis::comm::internal {
namespace {

constexpr int64_t kAlignFloats = 16;  // block edges on 64-byte lines
// Largest block, in floats: 512 MiB messages keep every count an int.
constexpr int64_t kPieceFloats = int64_t{1} << 27;

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t BlockFloats(int64_t count, int n) { return RoundUp((count + n - 1) / n, kAlignFloats); }

Status Mpi(int rc, const char* what) {
  return rc == MPI_SUCCESS ? Status::Ok() : MpiStatus(rc, what, __FILE__, __LINE__);
}

}  // namespace

AllreduceDirect::AllreduceDirect(CollectiveContext* ctx) : ctx_(ctx), n_(ctx->size()) {
  for (auto* a : {&rs_send_, &rs_recv_, &ag_send_, &ag_recv_}) {
    a->reset(new MPI_Request[n_]);
    std::fill_n(a->get(), n_, MPI_REQUEST_NULL);
  }
  peers_.reset(new int[n_]);
  all_true_.reset(new bool[n_]);
  all_false_.reset(new bool[n_]);
  for (int i = 0; i < n_; ++i) peers_[i] = i;
  std::fill_n(all_true_.get(), n_, true);
  std::fill_n(all_false_.get(), n_, false);
}

int64_t AllreduceDirect::ScratchBytes(int64_t count, WireType wire, int size) {
  const int64_t piece = std::min(count, kPieceFloats * size);
  const int64_t esize = WireBytes(wire);
  // n-1 received blocks; a 16-bit wire also keeps its whole buffer encoded.
  const int64_t received = (size - 1) * BlockFloats(piece, size) * esize;
  return received + (wire == WireType::kFloat32 ? 0 : RoundUp(piece, kAlignFloats) * 2);
}

Status AllreduceDirect::Fail(Status st) {
  ctx_->Abandon(n_, rs_recv_.get(), all_false_.get());
  ctx_->Abandon(n_, ag_recv_.get(), all_false_.get());
  ctx_->Abandon(n_, rs_send_.get(), all_true_.get());
  ctx_->Abandon(n_, ag_send_.get(), all_true_.get());
  return st;
}

Status AllreduceDirect::Run(float* data, int64_t count, WireType wire) {
  const int64_t piece = kPieceFloats * n_;
  for (int64_t off = 0; off < count; off += piece)
    POLIS_RETURN_IF_ERROR(RunPiece(data + off, std::min(piece, count - off), wire));
  return Status::Ok();
}

Status AllreduceDirect::RunPiece(float* data, int64_t count, WireType wire) {
  const int n = n_;
  const int r = ctx_->rank();
  const MPI_Comm comm = ctx_->comm();
  const bool compressed = wire != WireType::kFloat32;
  const int64_t esize = WireBytes(wire);
  const int64_t per = BlockFloats(count, n);
  auto begin = [&](int b) { return std::min(count, b * per); };
  auto length = [&](int b) { return std::min(count, (b + 1) * per) - begin(b); };
  // Received blocks, by distance from this rank (peer r+1+k lands in slot k);
  // a 16-bit wire's encoded buffer comes first.
  uint16_t* const w16 = reinterpret_cast<uint16_t*>(ctx_->scratch().data());
  std::byte* const received =
      ctx_->scratch().data() + (compressed ? RoundUp(count, kAlignFloats) * 2 : 0);
  auto slot = [&](int k) { return received + k * per * esize; };
  const int64_t mine = begin(r), mine_len = length(r);

  // Reduce-scatter: block q of every rank goes to rank q.
  if (compressed) {
    Encode(wire, data, w16, mine);
    Encode(wire, data + mine + mine_len, w16 + mine + mine_len, count - mine - mine_len);
  }
  for (int k = 0; k < n - 1 && mine_len > 0; ++k) {
    const int q = (r + 1 + k) % n;
    Status st = Mpi(MPI_Irecv(slot(k), static_cast<int>(mine_len * esize), MPI_BYTE, q, kTagDirect,
                              comm, &rs_recv_[q]),
                    "MPI_Irecv");
    if (!st.ok()) return Fail(st);
  }
  for (int k = 0; k < n - 1; ++k) {
    const int q = (r + 1 + k) % n;
    if (length(q) == 0) continue;
    const void* src = compressed ? static_cast<const void*>(w16 + begin(q))
                                 : static_cast<const void*>(data + begin(q));
    Status st = Mpi(MPI_Isend(src, static_cast<int>(length(q) * esize), MPI_BYTE, q, kTagDirect,
                              comm, &rs_send_[q]),
                    "MPI_Isend");
    if (!st.ok()) return Fail(st);
  }
  Status st = ctx_->Wait(n, rs_recv_.get(), peers_.get(), all_false_.get());
  if (!st.ok()) return Fail(st);
  for (int k = 0; k < n - 1; ++k) {
    if (!compressed) {
      AddInto(data + mine, reinterpret_cast<const float*>(slot(k)), mine_len);
    } else {
      AddDecoded(wire, data + mine, reinterpret_cast<const uint16_t*>(slot(k)), data + mine,
                 mine_len);
    }
  }
  // The owner rounds its block's sum once, for everyone.
  if (compressed) EncodeRound(wire, data + mine, w16 + mine, mine_len);

  // All-gather: this rank's block to everyone. Block q lands where this
  // rank's reduce-scatter send to q read from: post the sends first, so that
  // the peers can go on, then wait for those before posting the receives.
  const void* own = compressed ? static_cast<const void*>(w16 + mine)
                               : static_cast<const void*>(data + mine);
  for (int k = 0; k < n - 1 && mine_len > 0; ++k) {
    const int q = (r + 1 + k) % n;
    st = Mpi(MPI_Isend(own, static_cast<int>(mine_len * esize), MPI_BYTE, q, kTagDirect, comm,
                       &ag_send_[q]),
             "MPI_Isend");
    if (!st.ok()) return Fail(st);
  }
  st = ctx_->Wait(n, rs_send_.get(), peers_.get(), all_true_.get());
  if (!st.ok()) return Fail(st);
  for (int k = 0; k < n - 1; ++k) {
    const int q = (r + 1 + k) % n;
    if (length(q) == 0) continue;
    void* dst = compressed ? static_cast<void*>(w16 + begin(q)) : static_cast<void*>(data + begin(q));
    st = Mpi(MPI_Irecv(dst, static_cast<int>(length(q) * esize), MPI_BYTE, q, kTagDirect, comm,
                       &ag_recv_[q]),
             "MPI_Irecv");
    if (!st.ok()) return Fail(st);
  }
  st = ctx_->Wait(n, ag_recv_.get(), peers_.get(), all_false_.get());
  if (!st.ok()) return Fail(st);
  if (compressed) {
    Decode(wire, w16, data, mine);
    Decode(wire, w16 + mine + mine_len, data + mine + mine_len, count - mine - mine_len);
  }
  st = ctx_->Wait(n, ag_send_.get(), peers_.get(), all_true_.get());
  return st.ok() ? st : Fail(st);
}

}  // namespace polis::comm::internal
