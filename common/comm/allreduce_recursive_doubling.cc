#include "common/comm/allreduce_recursive_doubling.h"

#include <algorithm>

#include "common/comm/allreduce_kernels.h"

namespace polis::comm::internal {

Status AllreduceRecursiveDoubling::Exchange(int peer, const void* send, void* recv, int64_t count,
                                            int64_t esize) {
  constexpr int64_t kMaxMessage = int64_t{1} << 30;
  const int64_t total = count * esize;
  for (int64_t off = 0; off < total; off += kMaxMessage) {
    const int len = static_cast<int>(std::min(kMaxMessage, total - off));
    MPI_Request reqs[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    const bool sends[2] = {false, true};
    const int peers[2] = {peer, peer};
    if (recv)
      POLIS_MPI_CHECK(MPI_Irecv(static_cast<std::byte*>(recv) + off, len, MPI_BYTE, peer,
                                kTagRecursiveDoubling, ctx_->comm(), &reqs[0]));
    if (send)
      POLIS_MPI_CHECK(MPI_Isend(static_cast<const std::byte*>(send) + off, len, MPI_BYTE, peer,
                                kTagRecursiveDoubling, ctx_->comm(), &reqs[1]));
    Status st = ctx_->Wait(2, reqs, peers, sends);
    if (!st.ok()) {
      ctx_->Abandon(2, reqs, sends);
      return st;
    }
  }
  return Status::Ok();
}

Status AllreduceRecursiveDoubling::Run(float* data, int64_t count, WireType wire) {
  const int n = ctx_->size();
  const int r = ctx_->rank();
  const bool compressed = wire != WireType::kFloat32;
  const int64_t esize = WireBytes(wire);
  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int extra = n - p;  // ranks 0..2*extra-1 pair up first

  // Scratch: fp32 receives count floats; a 16-bit wire uses two halves
  // (what this rank sends, what it receives).
  float* const recv32 = reinterpret_cast<float*>(ctx_->scratch().data());
  uint16_t* const send16 = reinterpret_cast<uint16_t*>(ctx_->scratch().data());
  uint16_t* const recv16 = send16 + count;

  int vrank;  // rank among the p that run the rounds, or -1
  if (r < 2 * extra) {
    if (r % 2 == 0) {
      // Hand the buffer to r+1, wait for the result.
      const void* out = data;
      if (compressed) {
        Encode(wire, data, send16, count);
        out = send16;
      }
      POLIS_RETURN_IF_ERROR(Exchange(r + 1, out, nullptr, count, esize));
      POLIS_RETURN_IF_ERROR(Exchange(r + 1, nullptr, compressed ? static_cast<void*>(recv16) : data,
                                     count, esize));
      if (compressed) Decode(wire, recv16, data, count);
      return Status::Ok();
    }
    POLIS_RETURN_IF_ERROR(
        Exchange(r - 1, nullptr, compressed ? static_cast<void*>(recv16) : recv32, count, esize));
    if (compressed) {
      AddDecoded(wire, data, recv16, data, count);
    } else {
      AddInto(data, recv32, count);
    }
    vrank = r / 2;
  } else {
    vrank = r - extra;
  }

  for (int mask = 1; mask < p; mask <<= 1) {
    const int vpeer = vrank ^ mask;
    const int peer = vpeer < extra ? 2 * vpeer + 1 : vpeer + extra;
    if (compressed) {
      Encode(wire, data, send16, count);
      POLIS_RETURN_IF_ERROR(Exchange(peer, send16, recv16, count, esize));
      SumDecoded(wire, send16, recv16, data, count);
    } else {
      POLIS_RETURN_IF_ERROR(Exchange(peer, data, recv32, count, esize));
      AddInto(data, recv32, count);
    }
  }

  // A 16-bit wire's result is a value of the wire type on every rank.
  if (compressed) EncodeRound(wire, data, send16, count);
  if (r < 2 * extra) {
    POLIS_RETURN_IF_ERROR(
        Exchange(r - 1, compressed ? static_cast<const void*>(send16) : data, nullptr, count, esize));
  }
  return Status::Ok();
}

}  // namespace polis::comm::internal
