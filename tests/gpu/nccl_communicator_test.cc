// The NCCL communicator on one rank (ctest runs it without mpirun; MPI is
// a singleton): all-reduce over element counts {0, 4, 100, 1000, 10000}
// for every wire type against the closed-form sum, broadcast, all-gather,
// barrier, and growing the 16-bit scratch. Under mpirun -np N on N GPUs the
// same checks hold (the expected values are closed forms in N).
#include <mpi.h>

#include "common/comm/nccl_communicator.h"
#include "tests/gpu/gpu_test_util.h"

namespace polis::gpu_test {
namespace {

using comm::AllreduceOptions;
using comm::WireType;

void EnsureMpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  }
}

std::unique_ptr<comm::NcclCommunicator> MakeComm(int64_t max_count = 1 << 16) {
  EnsureMpi();
  auto device = comm::LocalDevice(MPI_COMM_WORLD);
  EXPECT_TRUE(device.ok()) << device.status().ToString();
  auto c = comm::MakeNcclCommunicator(MPI_COMM_WORLD, device.ok() ? *device : 0, max_count);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(NcclCommunicator, AllreduceClosedFormSums) {
  POLIS_REQUIRE_GPU();
  auto c = MakeComm(1000);  // 10000 grows the 16-bit scratch once
  ASSERT_NE(c, nullptr);
  const int r = c->rank(), size = c->size();
  for (WireType wire : {WireType::kFloat32, WireType::kBFloat16, WireType::kFloat16}) {
    for (int64_t count : {0, 4, 100, 1000, 10000}) {
      SCOPED_TRACE(std::string(comm::WireTypeName(wire)) + " count " + std::to_string(count));
      // Small multiples of 1/4: exact in every wire type, so are the sums.
      std::vector<float> h(count);
      for (int64_t i = 0; i < count; ++i) h[i] = static_cast<float>(i % 17) * 0.25f + r;
      DeviceArray<float> d;
      POLIS_ASSERT_OK(d.Allocate(std::max<int64_t>(count, 1)));
      ToDevice(h, d.get());
      AllreduceOptions opt;
      opt.wire = wire;
      POLIS_ASSERT_OK(c->Allreduce(d.get(), count, opt));
      std::vector<float> got = FromDevice(d.get(), count);
      for (int64_t i = 0; i < count; ++i) {
        const float want = static_cast<float>(i % 17) * 0.25f * size + size * (size - 1) / 2.f;
        ASSERT_EQ(got[i], want) << "element " << i;
      }
    }
  }
}

TEST(NcclCommunicator, BroadcastAllgatherBarrier) {
  POLIS_REQUIRE_GPU();
  auto c = MakeComm();
  ASSERT_NE(c, nullptr);
  const int r = c->rank(), size = c->size();
  DeviceArray<float> b, send, recv;
  POLIS_ASSERT_OK(b.Allocate(64));
  ToDevice(std::vector<float>(64, static_cast<float>(r + 1)), b.get());
  POLIS_ASSERT_OK(c->Broadcast(b.get(), 64 * sizeof(float), 0));
  for (float v : FromDevice(b.get(), 64)) ASSERT_EQ(v, 1.f);
  POLIS_ASSERT_OK(send.Allocate(8));
  POLIS_ASSERT_OK(recv.Allocate(8 * size));
  ToDevice(std::vector<float>(8, static_cast<float>(r)), send.get());
  POLIS_ASSERT_OK(c->Allgather(send.get(), recv.get(), 8 * sizeof(float)));
  std::vector<float> all = FromDevice(recv.get(), 8 * size);
  for (int i = 0; i < 8 * size; ++i) ASSERT_EQ(all[i], static_cast<float>(i / 8));
  POLIS_ASSERT_OK(c->Barrier());
  EXPECT_EQ(c->Broadcast(b.get(), 4, size).code(), Code::kInvalidArgument);
}

// WaitFor orders a collective after work on another stream.
TEST(NcclCommunicator, WaitForOrdersAfterAnotherStream) {
  POLIS_REQUIRE_GPU();
  auto c = MakeComm();
  ASSERT_NE(c, nullptr);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t e;
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  const int64_t n = 1 << 20;
  DeviceArray<float> d;
  POLIS_ASSERT_OK(d.Allocate(n));
  std::vector<float> ones(n, 1.f);
  ASSERT_EQ(cudaMemcpyAsync(d.get(), ones.data(), sizeof(float) * n, cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
  POLIS_ASSERT_OK(c->WaitFor(e));
  POLIS_ASSERT_OK(c->Allreduce(d.get(), n, {}));
  std::vector<float> got = FromDevice(d.get(), n);
  EXPECT_EQ(got.front(), static_cast<float>(c->size()));
  EXPECT_EQ(got.back(), static_cast<float>(c->size()));
  cudaEventDestroy(e);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace polis::gpu_test
