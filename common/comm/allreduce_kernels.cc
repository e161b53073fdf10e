#include "common/comm/allreduce_kernels.h"

#include "common/comm/half.h"

// The loops are written branch-free over the half.h conversions so that GCC
// vectorises them; target_clones adds an AVX2/F16C/FMA copy (8 lanes) next to
// the baseline SSE2 one and picks at load time. Not under ThreadSanitizer:
// the load-time resolver (an ifunc) is instrumented and runs before TSan's
// runtime is up, so the program would crash before main.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define POLIS_KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define POLIS_KERNEL
#endif

namespace polis::comm::internal {
namespace {

struct Bf16 {
  static inline __attribute__((always_inline)) uint16_t Enc(float f) { return FloatToBf16(f); }
  static inline __attribute__((always_inline)) float Dec(uint16_t h) { return Bf16ToFloat(h); }
};
struct Fp16 {
  static inline __attribute__((always_inline)) uint16_t Enc(float f) { return FloatToHalf(f); }
  static inline __attribute__((always_inline)) float Dec(uint16_t h) { return HalfToFloat(h); }
};

// Dispatches a loop body templated on the codec.
#define POLIS_WIRE_DISPATCH(wire, BODY)     \
  if (wire == WireType::kBFloat16) {        \
    using C = Bf16;                         \
    BODY;                                   \
  } else {                                  \
    using C = Fp16;                         \
    BODY;                                   \
  }

}  // namespace

#ifdef POLIS_SMPI
// The simulation build (benchmarks/scaling/) only: over folded memory the
// values mean nothing and the reduction's cost is injected, so the loops
// may be skipped; the algorithms' messages are unchanged.
namespace {
bool g_arithmetic = true;  // simulated ranks share one OS thread
}  // namespace
void SetArithmetic(bool on) { g_arithmetic = on; }
bool Arithmetic() { return g_arithmetic; }
#define POLIS_SIM_SKIP() \
  if (!g_arithmetic) return
#else
#define POLIS_SIM_SKIP() (void)0
#endif

POLIS_KERNEL void AddInto(float* __restrict acc, const float* __restrict in, int64_t n) {
  POLIS_SIM_SKIP();
  for (int64_t i = 0; i < n; ++i) acc[i] += in[i];
}

POLIS_KERNEL void AddTo(float* out, const float* a, const float* b, int64_t n) {
  POLIS_SIM_SKIP();
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

POLIS_KERNEL void Encode(WireType wire, const float* __restrict in, uint16_t* __restrict out,
                         int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) out[i] = C::Enc(in[i]))
}

POLIS_KERNEL void Decode(WireType wire, const uint16_t* __restrict in, float* __restrict out,
                         int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) out[i] = C::Dec(in[i]))
}

POLIS_KERNEL void AddDecodeEncode(WireType wire, const float* __restrict mine,
                                  const uint16_t* __restrict in, uint16_t* __restrict out,
                                  int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire,
                      for (int64_t i = 0; i < n; ++i) out[i] = C::Enc(mine[i] + C::Dec(in[i])))
}

POLIS_KERNEL void AddDecodeEncodeRound(WireType wire, float* __restrict mine,
                                       const uint16_t* __restrict in, uint16_t* __restrict out,
                                       int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = C::Enc(mine[i] + C::Dec(in[i]));
    out[i] = h;
    mine[i] = C::Dec(h);
  })
}

POLIS_KERNEL void EncodeRound(WireType wire, float* __restrict data, uint16_t* __restrict out,
                              int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = C::Enc(data[i]);
    out[i] = h;
    data[i] = C::Dec(h);
  })
}

POLIS_KERNEL void SumDecoded(WireType wire, const uint16_t* __restrict a,
                             const uint16_t* __restrict b, float* __restrict out, int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) out[i] = C::Dec(a[i]) + C::Dec(b[i]))
}

POLIS_KERNEL void AddDecoded(WireType wire, const float* mine, const uint16_t* __restrict in,
                             float* out, int64_t n) {
  POLIS_SIM_SKIP();
  POLIS_WIRE_DISPATCH(wire, for (int64_t i = 0; i < n; ++i) out[i] = mine[i] + C::Dec(in[i]))
}

}  // namespace polis::comm::internal
