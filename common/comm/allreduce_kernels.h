// Element-wise loops of the all-reduce algorithms: fp32 accumulation and the
// fused decode/add/encode steps of the 16-bit wires. Compiled for AVX2+F16C
// and for baseline x86-64, chosen at load time (GCC target_clones).
// Thread-safe: pure functions on caller-owned buffers, which may not overlap
// unless stated.
#pragma once

#include <cstdint>

#include "common/comm/communicator.h"

namespace polis::comm::internal {

// acc[i] += in[i]
void AddInto(float* acc, const float* in, int64_t n);
// out[i] = a[i] + b[i]; out may alias a or b.
void AddTo(float* out, const float* a, const float* b, int64_t n);

// 16-bit wires (kBFloat16, kFloat16); `wire` must not be kFloat32.
// out[i] = enc(in[i])
void Encode(WireType wire, const float* in, uint16_t* out, int64_t n);
// out[i] = dec(in[i])
void Decode(WireType wire, const uint16_t* in, float* out, int64_t n);
// out[i] = enc(mine[i] + dec(in[i]))   (a ring reduce step)
void AddDecodeEncode(WireType wire, const float* mine, const uint16_t* in, uint16_t* out,
                     int64_t n);
// out[i] = enc(mine[i] + dec(in[i])); mine[i] = dec(out[i])   (the ring's last reduce step)
void AddDecodeEncodeRound(WireType wire, float* mine, const uint16_t* in, uint16_t* out,
                          int64_t n);
// out[i] = enc(data[i]); data[i] = dec(out[i])
void EncodeRound(WireType wire, float* data, uint16_t* out, int64_t n);
// out[i] = dec(a[i]) + dec(b[i])   (a recursive-doubling step; commutative, so
// both partners get the same bits)
void SumDecoded(WireType wire, const uint16_t* a, const uint16_t* b, float* out, int64_t n);
// out[i] = mine[i] + dec(in[i])   (folding a non-power-of-two extra rank in)
void AddDecoded(WireType wire, const float* mine, const uint16_t* in, float* out, int64_t n);

#ifdef POLIS_SMPI
// Simulation build only (docs/design/simulation.md): SetArithmetic(false)
// makes every kernel above return at once, for memory folded with
// SMPI_SHARED_MALLOC whose sums mean nothing.
void SetArithmetic(bool on);
bool Arithmetic();
#endif

}  // namespace polis::comm::internal
