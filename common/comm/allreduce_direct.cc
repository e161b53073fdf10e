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

int64_t AllreduceDirect::PieceFloats(int owners) { return kPieceFloats * owners; }

int64_t AllreduceDirect::ScratchBytes(int64_t count, WireType wire, int size, int owners) {
  if (owners <= 0) owners = size;
  const int64_t piece = std::min(count, PieceFloats(owners));
  const int64_t esize = WireBytes(wire);
  // n-1 received blocks; a 16-bit wire also keeps its whole buffer encoded.
  const int64_t received = (size - 1) * BlockFloats(piece, owners) * esize;
  return received + (wire == WireType::kFloat32 ? 0 : RoundUp(piece, kAlignFloats) * 2);
}

AllreduceDirect::Block AllreduceDirect::OwnBlock(int64_t count, int owners) const {
  const int r = ctx_->rank();
  if (r >= owners) return Block{count, 0};
  const int64_t per = BlockFloats(count, owners);
  const int64_t begin = std::min(count, r * per);
  return Block{begin, std::min(count, (r + 1) * per) - begin};
}

Status AllreduceDirect::Fail(Status st) {
  ctx_->Abandon(n_, rs_recv_.get(), all_false_.get());
  ctx_->Abandon(n_, ag_recv_.get(), all_false_.get());
  ctx_->Abandon(n_, rs_send_.get(), all_true_.get());
  ctx_->Abandon(n_, ag_send_.get(), all_true_.get());
  return st;
}

Status AllreduceDirect::Run(float* data, int64_t count, WireType wire) {
  const int64_t piece = PieceFloats(n_);
  for (int64_t off = 0; off < count; off += piece) {
    const int64_t len = std::min(piece, count - off);
    POLIS_RETURN_IF_ERROR(ReduceScatter(data + off, len, wire, n_));
    POLIS_RETURN_IF_ERROR(Allgather(data + off, len, wire, n_));
  }
  return Status::Ok();
}

// What both phases know of a piece: its blocks and this rank's.
struct AllreduceDirect::Cut {
  Cut(const AllreduceDirect& d, int64_t count, WireType wire, int owners)
      : count(count),
        per(BlockFloats(count, owners)),
        owners(owners),
        compressed(wire != WireType::kFloat32),
        esize(WireBytes(wire)),
        w16(reinterpret_cast<uint16_t*>(d.ctx_->scratch().data())),
        own(d.OwnBlock(count, owners)) {}
  int64_t begin(int b) const { return std::min(count, b * per); }
  int64_t length(int b) const { return b >= owners ? 0 : std::min(count, (b + 1) * per) - begin(b); }
  // Block b of the caller's buffer, or of the wire copy for a 16-bit wire.
  void* wire_block(float* data, int b) const {
    return compressed ? static_cast<void*>(w16 + begin(b)) : static_cast<void*>(data + begin(b));
  }
  const int64_t count, per;
  const int owners;
  const bool compressed;
  const int64_t esize;
  uint16_t* const w16;  // the whole-piece wire copy (16-bit wires)
  const Block own;
};

Status AllreduceDirect::ReduceScatter(float* data, int64_t count, WireType wire, int owners,
                                      bool finish_sends) {
  const int n = n_, r = ctx_->rank();
  const Cut cut(*this, count, wire, owners);
  const int64_t mine = cut.own.offset, mine_len = cut.own.length;
  // Received blocks, by distance from this rank (peer r+1+k lands in slot k),
  // after a 16-bit wire's encoded buffer.
  std::byte* const received =
      ctx_->scratch().data() + (cut.compressed ? RoundUp(count, kAlignFloats) * 2 : 0);
  auto slot = [&](int k) { return received + k * cut.per * cut.esize; };

  // Block q of every rank goes to rank q (ranks from `owners` on own none).
  if (cut.compressed) {
    Encode(wire, data, cut.w16, mine);
    Encode(wire, data + mine + mine_len, cut.w16 + mine + mine_len, count - mine - mine_len);
  }
  for (int k = 0; k < n - 1 && mine_len > 0; ++k) {
    const int q = (r + 1 + k) % n;
    Status st = Mpi(MPI_Irecv(slot(k), static_cast<int>(mine_len * cut.esize), MPI_BYTE, q,
                              kTagDirect, ctx_->comm(), &rs_recv_[q]),
                    "MPI_Irecv");
    if (!st.ok()) return Fail(st);
  }
  for (int k = 0; k < n - 1; ++k) {
    const int q = (r + 1 + k) % n;
    if (cut.length(q) == 0) continue;
    Status st = Mpi(MPI_Isend(cut.wire_block(data, q), static_cast<int>(cut.length(q) * cut.esize),
                              MPI_BYTE, q, kTagDirect, ctx_->comm(), &rs_send_[q]),
                    "MPI_Isend");
    if (!st.ok()) return Fail(st);
  }
  Status st = ctx_->Wait(n, rs_recv_.get(), peers_.get(), all_false_.get());
  if (!st.ok()) return Fail(st);
  if (finish_sends) {
    st = ctx_->Wait(n, rs_send_.get(), peers_.get(), all_true_.get());
    if (!st.ok()) return Fail(st);
  }
  for (int k = 0; k < n - 1 && mine_len > 0; ++k) {
    if (!cut.compressed) {
      AddInto(data + mine, reinterpret_cast<const float*>(slot(k)), mine_len);
    } else {
      AddDecoded(wire, data + mine, reinterpret_cast<const uint16_t*>(slot(k)), data + mine,
                 mine_len);
    }
  }
  return Status::Ok();
}

Status AllreduceDirect::Allgather(float* data, int64_t count, WireType wire, int owners) {
  const int n = n_, r = ctx_->rank();
  const Cut cut(*this, count, wire, owners);
  const int64_t mine = cut.own.offset, mine_len = cut.own.length;

  // The owner rounds its block's sum once, for everyone.
  if (cut.compressed) EncodeRound(wire, data + mine, cut.w16 + mine, mine_len);
  // This rank's block to everyone. Block q lands where this rank's
  // reduce-scatter send to q read from: post the sends first, so that the
  // peers can go on, then wait for those before posting the receives.
  Status st;
  for (int k = 0; k < n - 1 && mine_len > 0; ++k) {
    const int q = (r + 1 + k) % n;
    st = Mpi(MPI_Isend(cut.wire_block(data, r), static_cast<int>(mine_len * cut.esize), MPI_BYTE,
                       q, kTagDirect, ctx_->comm(), &ag_send_[q]),
             "MPI_Isend");
    if (!st.ok()) return Fail(st);
  }
  st = ctx_->Wait(n, rs_send_.get(), peers_.get(), all_true_.get());
  if (!st.ok()) return Fail(st);
  for (int k = 0; k < n - 1; ++k) {
    const int q = (r + 1 + k) % n;
    if (cut.length(q) == 0) continue;
    st = Mpi(MPI_Irecv(cut.wire_block(data, q), static_cast<int>(cut.length(q) * cut.esize),
                       MPI_BYTE, q, kTagDirect, ctx_->comm(), &ag_recv_[q]),
             "MPI_Irecv");
    if (!st.ok()) return Fail(st);
  }
  st = ctx_->Wait(n, ag_recv_.get(), peers_.get(), all_false_.get());
  if (!st.ok()) return Fail(st);
  if (cut.compressed) {
    Decode(wire, cut.w16, data, mine);
    Decode(wire, cut.w16 + mine + mine_len, data + mine + mine_len, count - mine - mine_len);
  }
  st = ctx_->Wait(n, ag_send_.get(), peers_.get(), all_true_.get());
  return st.ok() ? st : Fail(st);
}

}  // namespace polis::comm::internal
