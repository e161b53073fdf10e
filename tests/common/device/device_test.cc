// The device library's CPU device, the local-rank -> GPU mapping, and the
// backend a CPU program carries.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/backend/backend.h"
#include "common/device/device.h"

namespace polis::device {
namespace {

TEST(CpuDevice, AllocatesZeroedMemoryAndCopiesAtOnce) {
  auto dev = CpuDevice();
  EXPECT_EQ(dev->kind(), Kind::kCpu);
  EXPECT_EQ(dev->Describe(), "CPU");
  auto a = dev->Allocate(1000, Space::kDevice);
  auto b = dev->Allocate(1000, Space::kPinned);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->span().space, Space::kDevice);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(a->data()[i], 0.f);
  for (int64_t i = 0; i < 1000; ++i) b->data()[i] = static_cast<float>(i);
  ASSERT_TRUE(dev->Copy(a->span(), b->span(), dev->stream()).ok());
  auto event = dev->NewEvent();
  ASSERT_TRUE(event.ok());
  ASSERT_TRUE((*event)->Record(dev->stream()).ok());
  ASSERT_TRUE((*event)->Synchronize().ok());
  EXPECT_EQ(a->data()[999], 999.f);
  EXPECT_EQ(a->span().sub(10, 5).data[0], 10.f);
  const Status bad = dev->Copy(a->span().sub(0, 10), b->span(), dev->stream());
  EXPECT_EQ(bad.code(), Code::kInvalidArgument) << bad.ToString();
  auto empty = dev->Allocate(0, Space::kHost);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0);
}

StatusOr<int> Ordinal(int visible, std::map<std::string, std::string> env, int local_worker = -1) {
  return LocalDeviceOrdinal(visible, local_worker, [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(LocalDeviceOrdinal, LocalRankPicksTheGpuAndTwoRanksNeverShareOne) {
  EXPECT_EQ(*Ordinal(1, {}), 0);
  EXPECT_EQ(*Ordinal(4, {{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}}), 3);
  EXPECT_EQ(*Ordinal(2, {{"SLURM_LOCALID", "1"}}), 1);
  // Open MPI's variable wins when both are set (mpirun inside a Slurm job).
  EXPECT_EQ(*Ordinal(4, {{"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"SLURM_LOCALID", "0"}}), 2);
  const auto shared = Ordinal(2, {{"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"CUDA_VISIBLE_DEVICES", "4,5"}});
  ASSERT_FALSE(shared.ok());
  EXPECT_EQ(shared.status().code(), Code::kFailedPrecondition);
  for (const char* w : {"local rank 2", "OMPI_COMM_WORLD_LOCAL_RANK", "2 CUDA devices", "CUDA_VISIBLE_DEVICES=4,5",
                        "NCCL cannot run two ranks on one GPU", "at most 2 GPU workers per host"})
    EXPECT_NE(shared.status().message().find(w), std::string::npos) << w << " not in " << shared.status().message();
  const auto none = Ordinal(0, {{"CUDA_VISIBLE_DEVICES", ""}});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no CUDA device is visible"), std::string::npos);
  // The transport's count of workers on the host wins over the local rank,
  // which also counts the coordinator and the servers.
  EXPECT_EQ(*Ordinal(1, {{"OMPI_COMM_WORLD_LOCAL_RANK", "2"}}, 0), 0);
  const auto third = Ordinal(2, {{"OMPI_COMM_WORLD_LOCAL_RANK", "4"}}, 2);
  ASSERT_FALSE(third.ok());
  EXPECT_NE(third.status().message().find("local rank 2 (workers counted on their host)"), std::string::npos)
      << third.status().message();
  const auto bad = Ordinal(2, {{"SLURM_LOCALID", "x1"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("SLURM_LOCALID='x1'"), std::string::npos) << bad.status().message();
}

// The tests, like polis-train, link the CPU backend: a CUDA request is one
// clear refusal that names the program that has the backend.
TEST(CpuBackend, RefusesCudaNamingTheProgramThatRunsIt) {
  EXPECT_TRUE(backend::Linked(Kind::kCpu));
  EXPECT_FALSE(backend::Linked(Kind::kCuda));
  auto cpu = backend::OpenDevice(Kind::kCpu);
  ASSERT_TRUE(cpu.ok());
  auto cuda = backend::OpenDevice(Kind::kCuda);
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find("polis-train-cuda"), std::string::npos) << cuda.status().message();
}

}  // namespace
}  // namespace polis::device
