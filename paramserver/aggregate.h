// The arithmetic core of a synchronous (BSP) parameter-server step, free of
// MPI and of the server's bookkeeping, so that the simulation driver
// (benchmarks/scaling/) runs the same sum as paramserver/server.cc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace polis::paramserver {

// out[i] = (in[0][i] + in[1][i] + ... + in[k-1][i]) * inv, adding in the
// order given (the server passes workers in worker order, so the floats do
// not depend on the order pushes arrived in). k >= 1; out may not alias in.
void AverageInOrder(const float* const* in, size_t k, int64_t n, float inv, float* out);

}  // namespace polis::paramserver
