// Collectives under real mpirun (registered in tests/CMakeLists.txt for 1 to
// 8 ranks). Every rank runs every test, in the same order; a
// failure on any rank fails the run (main combines the ranks' results).
//
// Allreduce is checked for every algorithm x wire type x count against
// closed-form sums whose partial sums are exact in bf16 and fp16 too, for
// random (inexact) data against a stated error bound, and for bit-identical
// results on every rank (an all-gathered hash). The hierarchical algorithm
// runs on fake hosts (host ids passed to MakeMpiCommunicator: 2 x 2, 3 + 1,
// interleaved, one rank a host...). DeadPeer.* runs on its own
// (POLIS_TIMEOUT_S=2, 3 ranks): the last rank skips a collective and the
// others must get a Timeout that names it, then everyone finalizes.
#include <gtest/gtest.h>
#include <mpi.h>
#include <time.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "common/comm/mpi_communicator.h"
#include "common/comm/half.h"
#include "common/env.h"
#include "tests/mpi/mpi_gtest_main.h"

// ---- Counting C++ allocations (the hot path must make none) ----
// (GCC sees malloc/free under the replaced operators and warns of a mismatch.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<int64_t> g_news{0};
}  // namespace
void* operator new(size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace polis::comm {
namespace {

int WorldRank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int WorldSize() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

std::unique_ptr<Communicator> MakeComm(int64_t max_count = 1 << 20,
                                       const std::vector<int>& hosts = {}) {
  auto c = MakeMpiCommunicator(MPI_COMM_WORLD, max_count, hosts);
  POLIS_ENFORCE_OK(c.status().ok() ? Status::Ok() : c.status());
  return std::move(c).value();
}

uint64_t Fnv1a(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

// True on every rank iff every rank holds the same bytes.
bool SameOnAllRanks(const float* data, int64_t count) {
  const uint64_t h = Fnv1a(data, static_cast<size_t>(count) * sizeof(float));
  std::vector<uint64_t> all(WorldSize());
  MPI_Allgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (uint64_t x : all)
    if (x != h) return false;
  return true;
}

// ---- Conversions ----

uint16_t RefBf16(float f) {
  // Nearest bf16 by exhaustive comparison in double, ties to even.
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = u & 0x80000000u, mag = u & 0x7fffffffu;
  if (mag >= 0x7f800000u) return static_cast<uint16_t>(u >> 16);  // Inf (NaN checked apart)
  const uint32_t lo = mag >> 16;
  const double a = std::bit_cast<float>(lo << 16);
  const double b = (lo + 1) == 0x7f80u ? std::ldexp(1.0, 128)
                                       : static_cast<double>(std::bit_cast<float>((lo + 1) << 16));
  const double x = std::bit_cast<float>(mag);
  uint32_t pick = (x - a < b - x || (x - a == b - x && lo % 2 == 0)) ? lo : lo + 1;
  return static_cast<uint16_t>(pick | (sign >> 16));
}

bool IsNanBf16(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0; }
bool IsNanHalf(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

std::vector<float> ConversionInputs() {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 65536.0f,
                          6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,
                          std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::bit_cast<float>(0x7f800001u), std::bit_cast<float>(0xffc12345u),
                          1.00390625f /* bf16 tie, even */, 1.01171875f /* bf16 tie, odd */,
                          1.00048828125f /* fp16 tie, even */, 1.00146484375f /* fp16 tie, odd */,
                          std::bit_cast<float>(0x7f7f8000u), std::bit_cast<float>(0x7f7f7fffu)};
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) v.push_back(std::bit_cast<float>(uint32_t(u)));
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  // All halfway points between neighbouring fp16 values around 1 and in the subnormals.
  for (uint32_t h = 0; h < 0x400; ++h) {
    v.push_back((HalfToFloat(h) + HalfToFloat(h + 1)) / 2);
    v.push_back((HalfToFloat(0x3c00 + h) + HalfToFloat(0x3c00 + h + 1)) / 2);
  }
  return v;
}

TEST(Half, Bf16MatchesNearestEven) {
  for (float f : ConversionInputs()) {
    const uint16_t got = FloatToBf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(IsNanBf16(got)) << std::hex << std::bit_cast<uint32_t>(f);
      continue;
    }
    ASSERT_EQ(got, RefBf16(f)) << std::hex << std::bit_cast<uint32_t>(f);
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(h));
    if (IsNanBf16(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_TRUE(IsNanBf16(FloatToBf16(f)));
    } else {
      ASSERT_EQ(FloatToBf16(f), h) << "round trip of " << std::hex << h;
    }
  }
}

TEST(Half, Fp16MatchesCompilerFloat16) {
  for (float f : ConversionInputs()) {
    const uint16_t got = FloatToHalf(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(IsNanHalf(got)) << std::hex << std::bit_cast<uint32_t>(f);
      continue;
    }
    ASSERT_EQ(got, std::bit_cast<uint16_t>(static_cast<_Float16>(f)))
        << std::hex << std::bit_cast<uint32_t>(f) << " " << f;
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    const float ref = static_cast<float>(std::bit_cast<_Float16>(static_cast<uint16_t>(h)));
    if (IsNanHalf(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_TRUE(IsNanHalf(FloatToHalf(f)));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(f), std::bit_cast<uint32_t>(ref)) << std::hex << h;
      ASSERT_EQ(FloatToHalf(f), h) << "round trip of " << std::hex << h;
    }
  }
}

// ---- Names ----

TEST(Names, ParseAndPrint) {
  for (auto a : {AllreduceAlgorithm::kAuto, AllreduceAlgorithm::kMpi, AllreduceAlgorithm::kRing,
                 AllreduceAlgorithm::kRecursiveDoubling, AllreduceAlgorithm::kRabenseifner,
                 AllreduceAlgorithm::kDirect, AllreduceAlgorithm::kHierarchical}) {
    auto parsed = ParseAllreduceAlgorithm(AllreduceAlgorithmName(a));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, a);
  }
  auto bad = ParseAllreduceAlgorithm("bcube");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("known: auto, mpi, ring, rd, rabenseifner, direct, hier"), std::string::npos);
}

// ---- Allreduce against closed forms ----

const AllreduceAlgorithm kAlgorithms[] = {AllreduceAlgorithm::kMpi, AllreduceAlgorithm::kRing,
                                          AllreduceAlgorithm::kRecursiveDoubling,
                                          AllreduceAlgorithm::kRabenseifner,
                                          AllreduceAlgorithm::kDirect,
                                          AllreduceAlgorithm::kHierarchical,
                                          AllreduceAlgorithm::kAuto};
const WireType kWires[] = {WireType::kFloat32, WireType::kBFloat16, WireType::kFloat16};
const int64_t kCounts[] = {0, 1, 4, 100, 1000, 10000, 1000003};

// f(i) = k * 2^e with |k| <= 3, e in -2..2: every partial sum over ranks of
// (r+1) f(i) is an integer below 256 times 2^e, exact in bf16, fp16 and fp32.
float F(int64_t i) { return static_cast<float>((i % 7) - 3) * std::ldexp(1.0f, static_cast<int>(i % 5) - 2); }

// Where a check runs: "" (one host) or the fake hosts' layout ("hosts 0,0,1").
std::string g_layout;

std::string Label(AllreduceAlgorithm a, WireType w, int64_t count) {
  return std::string(AllreduceAlgorithmName(a)) + "/" + WireTypeName(w) + "/" +
         std::to_string(count) + " on " + std::to_string(WorldSize()) + " ranks" +
         (g_layout.empty() ? "" : ", " + g_layout);
}

template <typename Algorithms>
void CheckClosedForms(Communicator* comm, const Algorithms& algorithms) {
  const int n = comm->size(), r = comm->rank();
  const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
  std::vector<float> data(1000003 + 1);
  for (auto algo : algorithms) {
    for (auto wire : kWires) {
      for (int64_t count : kCounts) {
        for (int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(r + 1) * F(i);
        data[count] = 12345.0f;  // one past the end must stay untouched
        Status st = comm->Allreduce(data.data(), count, AllreduceOptions{algo, wire});
        ASSERT_TRUE(st.ok()) << Label(algo, wire, count) << ": " << st.ToString();
        int64_t bad = -1;
        for (int64_t i = 0; i < count && bad < 0; ++i)
          if (data[i] != ranks_sum * F(i)) bad = i;
        EXPECT_EQ(bad, -1) << Label(algo, wire, count) << ": element " << bad << " is "
                           << (bad >= 0 ? data[bad] : 0) << ", expected "
                           << (bad >= 0 ? ranks_sum * F(bad) : 0);
        EXPECT_EQ(data[count], 12345.0f) << Label(algo, wire, count) << " wrote past the end";
        EXPECT_TRUE(SameOnAllRanks(data.data(), count)) << Label(algo, wire, count);
      }
    }
  }
}

TEST(Allreduce, ClosedFormEveryAlgorithmWireAndCount) {
  auto comm = MakeComm(1000003);
  CheckClosedForms(comm.get(), kAlgorithms);
}

// Random values in [-1, 1): sums are inexact. fp32 must match a double
// reference to n ulps of the magnitude sum; a 16-bit wire rounds at most n+1
// times (input, n-1 partial sums, the result), each by at most u|partial|
// <= u * sum|x|, u = 2^-8 (bf16) or 2^-11 (fp16). Every rank must end with
// the same bits.
template <typename Algorithms>
void CheckRandomData(Communicator* comm, const Algorithms& algorithms) {
  const int n = comm->size(), r = comm->rank();
  for (auto algo : algorithms) {
    for (auto wire : kWires) {
      for (int64_t count : {int64_t{333}, int64_t{50000}, int64_t{1} << 18}) {
        std::vector<float> data(count);
        std::vector<double> exact(count, 0.0), mag(count, 0.0);
        for (int q = 0; q < n; ++q) {
          std::mt19937 rng(1000 + q);
          std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
          for (int64_t i = 0; i < count; ++i) {
            const float x = dist(rng);
            if (q == r) data[i] = x;
            exact[i] += x;
            mag[i] += std::fabs(x);
          }
        }
        Status st = comm->Allreduce(data.data(), count, AllreduceOptions{algo, wire});
        ASSERT_TRUE(st.ok()) << Label(algo, wire, count) << ": " << st.ToString();
        const double u = wire == WireType::kFloat32   ? std::ldexp(1.0, -24)
                         : wire == WireType::kBFloat16 ? std::ldexp(1.0, -8)
                                                       : std::ldexp(1.0, -11);
        double worst = 0;
        int64_t worst_i = 0;
        for (int64_t i = 0; i < count; ++i) {
          const double ratio = std::fabs(data[i] - exact[i]) / ((n + 1) * u * mag[i] + 1e-30);
          if (ratio > worst) worst = ratio, worst_i = i;
        }
        EXPECT_LE(worst, 1.0) << Label(algo, wire, count) << ": element " << worst_i << " is "
                              << data[worst_i] << ", exact " << exact[worst_i];
        EXPECT_TRUE(SameOnAllRanks(data.data(), count)) << Label(algo, wire, count);
      }
    }
  }
}

TEST(Allreduce, RandomDataBoundedErrorAndBitIdentical) {
  auto comm = MakeComm(1 << 18);
  CheckRandomData(comm.get(), kAlgorithms);
}

// ---- Hierarchical: fake hosts on this machine ----

// Host layouts for n ranks: pairs (2 x 2 at 4 ranks), all but the last on
// one host (3 + 1), the first alone (1 + 3), interleaved (hosts not
// contiguous in rank order), one rank a host, one host, and three uneven
// hosts (3 + 1 + the rest) from 5 ranks.
std::vector<std::vector<int>> HostLayouts(int n) {
  std::vector<std::vector<int>> out(6, std::vector<int>(n));
  for (int r = 0; r < n; ++r) {
    out[0][r] = r / 2;
    out[1][r] = r == n - 1 ? 1 : 0;
    out[2][r] = r == 0 ? 0 : 1;
    out[3][r] = r % 2;
    out[4][r] = 100 + r;  // any ints name hosts
    out[5][r] = 7;
  }
  if (n >= 5) {
    out.emplace_back(n);
    for (int r = 0; r < n; ++r) out.back()[r] = r < 3 ? 0 : r < 4 ? 1 : 2;
  }
  return out;
}

std::string LayoutName(const std::vector<int>& hosts) {
  std::string s = "hosts";
  for (size_t i = 0; i < hosts.size(); ++i) s += (i ? "," : " ") + std::to_string(hosts[i]);
  return s;
}

const AllreduceAlgorithm kHierAndAuto[] = {AllreduceAlgorithm::kHierarchical,
                                           AllreduceAlgorithm::kAuto};

TEST(Hierarchical, ClosedFormOnEveryHostLayout) {
  for (const auto& hosts : HostLayouts(WorldSize())) {
    g_layout = LayoutName(hosts);
    auto comm = MakeComm(1000003, hosts);
    CheckClosedForms(comm.get(), kHierAndAuto);
  }
  g_layout.clear();
}

TEST(Hierarchical, RandomDataBoundedErrorAndBitIdenticalOnEveryHostLayout) {
  for (const auto& hosts : HostLayouts(WorldSize())) {
    g_layout = LayoutName(hosts);
    auto comm = MakeComm(1 << 18, hosts);
    CheckRandomData(comm.get(), kHierAndAuto);
  }
  g_layout.clear();
}

// Calls of 4 MiB and more on the wire are pipelined (the host phases of one
// piece beside the cross-host ring of the one before, on a helper thread):
// 2 to 8 pieces, the last one short. Exact, the same bits everywhere, one
// past the end untouched, on every host layout, on both wire widths.
TEST(Hierarchical, LargeCallsArePipelinedAndExact) {
  const int n = WorldSize(), r = WorldRank();
  const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
  const int64_t max_count = (int64_t{1} << 22) + 37;
  std::vector<float> data(max_count + 1);
  for (const auto& hosts : HostLayouts(n)) {
    g_layout = LayoutName(hosts);
    auto comm = MakeComm(max_count, hosts);
    for (auto wire : {WireType::kFloat32, WireType::kBFloat16}) {
      // 8 MiB + 148 bytes of fp32 (5 pieces), 8 MiB + 74 bytes of bf16.
      const int64_t count = wire == WireType::kFloat32 ? (int64_t{1} << 21) + 37 : max_count;
      for (int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(r + 1) * F(i);
      data[count] = 12345.0f;
      const AllreduceOptions o{AllreduceAlgorithm::kHierarchical, wire};
      Status st = comm->Allreduce(data.data(), count, o);
      ASSERT_TRUE(st.ok()) << Label(o.algorithm, wire, count) << ": " << st.ToString();
      int64_t bad = -1;
      for (int64_t i = 0; i < count && bad < 0; ++i)
        if (data[i] != ranks_sum * F(i)) bad = i;
      EXPECT_EQ(bad, -1) << Label(o.algorithm, wire, count) << ": element " << bad;
      EXPECT_EQ(data[count], 12345.0f) << Label(o.algorithm, wire, count) << " wrote past the end";
      EXPECT_TRUE(SameOnAllRanks(data.data(), count)) << Label(o.algorithm, wire, count);
    }
  }
  g_layout.clear();
}

TEST(Hierarchical, NoHeapAllocationPerCall) {
  std::vector<int> hosts(WorldSize());
  for (int r = 0; r < WorldSize(); ++r) hosts[r] = r / 2;
  auto comm = MakeComm(100000, hosts);
  std::vector<float> data(100000, 1.0f);
  for (auto wire : kWires) {
    const AllreduceOptions o{AllreduceAlgorithm::kHierarchical, wire};
    ASSERT_TRUE(comm->Allreduce(data.data(), 100000, o).ok());  // warm-up
    const int64_t before = g_news.load();
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(comm->Allreduce(data.data(), 100000, o).ok());
    ASSERT_TRUE(comm->Allreduce(data.data(), 7, o).ok());
    EXPECT_EQ(g_news.load() - before, 0) << WireTypeName(wire);
  }
}

TEST(Hierarchical, BadHostListIsRefusedOnEveryRank) {
  auto wrong_size = MakeMpiCommunicator(MPI_COMM_WORLD, 16, std::vector<int>(WorldSize() + 1, 0));
  ASSERT_FALSE(wrong_size.ok());
  EXPECT_EQ(wrong_size.status().code(), Code::kInvalidArgument);
  EXPECT_NE(wrong_size.status().message().find("host_of_rank has"), std::string::npos)
      << wrong_size.status().message();
  if (WorldSize() < 2) return;
  // Rank 0 believes in another layout than the others.
  std::vector<int> hosts(WorldSize(), 0);
  if (WorldRank() == 0) hosts[1] = 1;
  auto differ = MakeMpiCommunicator(MPI_COMM_WORLD, 16, hosts);
  ASSERT_FALSE(differ.ok());
  EXPECT_NE(differ.status().message().find("differs between ranks"), std::string::npos)
      << differ.status().message();
}

TEST(Allreduce, NanAndInfTravel) {
  auto comm = MakeComm(64);
  const int r = comm->rank();
  for (auto algo : kAlgorithms) {
    for (auto wire : kWires) {
      std::vector<float> data(64, 1.0f);
      if (r == 0) data[3] = std::numeric_limits<float>::quiet_NaN();
      if (r == 0) data[40] = std::numeric_limits<float>::infinity();
      ASSERT_TRUE(comm->Allreduce(data.data(), 64, AllreduceOptions{algo, wire}).ok());
      EXPECT_TRUE(std::isnan(data[3])) << Label(algo, wire, 64);
      EXPECT_TRUE(std::isinf(data[40]) && data[40] > 0) << Label(algo, wire, 64);
      EXPECT_EQ(data[0], static_cast<float>(comm->size())) << Label(algo, wire, 64);
    }
  }
}

TEST(Allreduce, NoHeapAllocationPerCall) {
  auto comm = MakeComm(100000);
  std::vector<float> data(100000, 1.0f);
  for (auto algo : kAlgorithms) {
    for (auto wire : kWires) {
      const AllreduceOptions o{algo, wire};
      ASSERT_TRUE(comm->Allreduce(data.data(), 100000, o).ok());  // warm-up
      const int64_t before = g_news.load();
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(comm->Allreduce(data.data(), 100000, o).ok());
      ASSERT_TRUE(comm->Allreduce(data.data(), 7, o).ok());
      EXPECT_EQ(g_news.load() - before, 0) << Label(algo, wire, 100000);
    }
  }
}

TEST(Allreduce, LargerThanMaxCountGrowsOnce) {
  auto comm = MakeComm(10);
  std::vector<float> data(5000);
  for (auto algo : kAlgorithms) {
    for (auto wire : kWires) {
      for (int64_t i = 0; i < 5000; ++i) data[i] = F(i);
      ASSERT_TRUE(comm->Allreduce(data.data(), 5000, AllreduceOptions{algo, wire}).ok());
      EXPECT_EQ(data[17], comm->size() * F(17)) << Label(algo, wire, 5000);
    }
  }
}

TEST(Allreduce, BadArgumentsAreRefusedAndLeaveItUsable) {
  auto comm = MakeComm(16);
  float x = 1;
  Status st = comm->Allreduce(&x, -1, {});
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  st = comm->Allreduce(nullptr, 3, {});
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  st = comm->Broadcast(&x, 4, comm->size());
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("root"), std::string::npos) << st.message();
  ASSERT_TRUE(comm->Allreduce(&x, 1, {}).ok());
  EXPECT_EQ(x, static_cast<float>(comm->size()));
}

// ---- Choose ----

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      old_ = old;
      had_ = true;
    }
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Choose, DefaultPicksBySizeAndGroupSize) {
  ScopedEnv algo("POLIS_ALLREDUCE_ALGO", nullptr);
  ScopedEnv rd("POLIS_ALLREDUCE_RD_MAX_KB", nullptr);
  auto comm = MakeComm(16);
  const int n = comm->size();
  EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kRecursiveDoubling);
  // 1 MiB of fp32 (all ranks on this host): direct from 3 ranks on, the
  // ring below.
  const AllreduceAlgorithm mid = n >= 3 ? AllreduceAlgorithm::kDirect : AllreduceAlgorithm::kRing;
  EXPECT_EQ(comm->Choose(1 << 18, WireType::kFloat32), mid);
  // The thresholds count wire bytes: 2^19 floats are 1 MiB as bf16.
  EXPECT_EQ(comm->Choose(1 << 19, WireType::kBFloat16), mid);
  EXPECT_EQ(comm->Choose(1 << 24, WireType::kFloat32), AllreduceAlgorithm::kRing);
  EXPECT_EQ(comm->Choose(1 << 24, WireType::kBFloat16), AllreduceAlgorithm::kRing);
  for (int64_t c : {int64_t{0}, int64_t{1000}, int64_t{1} << 20})
    for (auto w : kWires) EXPECT_NE(comm->Choose(c, w), AllreduceAlgorithm::kAuto);
}

TEST(Choose, EnvironmentForcesAnAlgorithm) {
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "ring");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kRing);
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kFloat16), AllreduceAlgorithm::kRing);
    float x[3] = {1, 2, 3};
    ASSERT_TRUE(comm->Allreduce(x, 3, {}).ok());
    EXPECT_EQ(x[2], 3.0f * comm->size());
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "rd");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kFloat32), AllreduceAlgorithm::kRecursiveDoubling);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "rabenseifner");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kRabenseifner);
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kBFloat16), AllreduceAlgorithm::kRabenseifner);
    float x[3] = {1, 2, 3};
    ASSERT_TRUE(comm->Allreduce(x, 3, {}).ok());
    EXPECT_EQ(x[2], 3.0f * comm->size());
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "direct");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kFloat32), AllreduceAlgorithm::kDirect);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "mpi");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1 << 10, WireType::kFloat32), AllreduceAlgorithm::kMpi);
    // Open MPI cannot reduce a 16-bit wire: the ring stands in.
    EXPECT_EQ(comm->Choose(1 << 10, WireType::kBFloat16), AllreduceAlgorithm::kRing);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "auto");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kRecursiveDoubling);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_RD_MAX_KB", "0");
    auto comm = MakeComm(16);
    const int n = comm->size();
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), n >= 5   ? AllreduceAlgorithm::kRabenseifner
                                                   : n >= 3 ? AllreduceAlgorithm::kDirect
                                                            : AllreduceAlgorithm::kRing);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "tree");
    auto comm = MakeMpiCommunicator(MPI_COMM_WORLD, 16);
    ASSERT_FALSE(comm.ok());
    EXPECT_EQ(comm.status().code(), Code::kInvalidArgument);
    EXPECT_NE(comm.status().message().find("POLIS_ALLREDUCE_ALGO"), std::string::npos);
    EXPECT_NE(comm.status().message().find("known: auto, mpi, ring, rd, rabenseifner, direct, hier"), std::string::npos);
  }
}

TEST(Choose, HierarchicalByTopologyAndSize) {
  ScopedEnv algo("POLIS_ALLREDUCE_ALGO", nullptr);
  ScopedEnv rd("POLIS_ALLREDUCE_RD_MAX_KB", nullptr);
  ScopedEnv hier("POLIS_ALLREDUCE_HIER_MIN_KB", nullptr);
  const int n = WorldSize();
  std::vector<int> pairs(n), alone(n);
  for (int r = 0; r < n; ++r) pairs[r] = r / 2, alone[r] = r;
  {
    // Several hosts with several ranks on one (from 3 ranks): large messages
    // go hierarchical, small ones stay flat.
    auto comm = MakeComm(16, pairs);
    const bool layered = n >= 3;
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kFloat32) == AllreduceAlgorithm::kHierarchical, layered);
    EXPECT_EQ(comm->Choose(1 << 24, WireType::kBFloat16) == AllreduceAlgorithm::kHierarchical, layered);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kRecursiveDoubling);
  }
  {
    // One rank a host: nothing to do inside a host, flat.
    auto comm = MakeComm(16, alone);
    EXPECT_NE(comm->Choose(1 << 24, WireType::kFloat32), AllreduceAlgorithm::kHierarchical);
    EXPECT_NE(comm->Choose(1 << 10, WireType::kFloat32), AllreduceAlgorithm::kHierarchical);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_HIER_MIN_KB", "0");
    auto comm = MakeComm(16, pairs);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32) == AllreduceAlgorithm::kHierarchical, n >= 3);
  }
  {
    ScopedEnv e("POLIS_ALLREDUCE_ALGO", "hier");
    auto comm = MakeComm(16);
    EXPECT_EQ(comm->Choose(1, WireType::kFloat32), AllreduceAlgorithm::kHierarchical);
    float x[3] = {1, 2, 3};
    ASSERT_TRUE(comm->Allreduce(x, 3, {}).ok());
    EXPECT_EQ(x[2], 3.0f * comm->size());
  }
}

// ---- Broadcast, Allgather, Barrier ----

TEST(Broadcast, EveryRootAndSize) {
  auto comm = MakeComm(16);
  const int n = comm->size(), r = comm->rank();
  for (int root : {0, n - 1, n / 2}) {
    for (int64_t bytes : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{3} << 20}) {
      std::vector<unsigned char> buf(bytes + 1, 0);
      if (r == root)
        for (int64_t i = 0; i < bytes; ++i) buf[i] = static_cast<unsigned char>(i * 7 + root);
      buf[bytes] = 0xAB;
      ASSERT_TRUE(comm->Broadcast(buf.data(), bytes, root).ok());
      int64_t bad = -1;
      for (int64_t i = 0; i < bytes && bad < 0; ++i)
        if (buf[i] != static_cast<unsigned char>(i * 7 + root)) bad = i;
      EXPECT_EQ(bad, -1) << "root " << root << ", " << bytes << " bytes";
      EXPECT_EQ(buf[bytes], 0xAB);
    }
  }
}

TEST(Allgather, EverySizeAndInPlace) {
  auto comm = MakeComm(16);
  const int n = comm->size(), r = comm->rank();
  for (int64_t per : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{4096}, int64_t{100000}}) {
    std::vector<unsigned char> send(per), recv(per * n + 1, 0);
    for (int64_t i = 0; i < per; ++i) send[i] = static_cast<unsigned char>(r * 31 + i);
    recv[per * n] = 0xCD;
    ASSERT_TRUE(comm->Allgather(send.data(), recv.data(), per).ok());
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < per; ++i)
        ASSERT_EQ(recv[q * per + i], static_cast<unsigned char>(q * 31 + i)) << q << " " << i;
    EXPECT_EQ(recv[per * n], 0xCD);
    // In place: this rank's block already sits in recv.
    std::vector<unsigned char> inplace(per * n, 0);
    std::memcpy(inplace.data() + r * per, send.data(), per);
    ASSERT_TRUE(comm->Allgather(inplace.data() + r * per, inplace.data(), per).ok());
    EXPECT_EQ(inplace, std::vector<unsigned char>(recv.begin(), recv.begin() + per * n));
  }
}

TEST(Barrier, NobodyLeavesBeforeTheLastArrives) {
  auto comm = MakeComm(16);
  ASSERT_TRUE(comm->Barrier().ok());
  const double t0 = MPI_Wtime();
  if (comm->rank() == 0) {
    timespec ts{0, 200 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  ASSERT_TRUE(comm->Barrier().ok());
  if (comm->size() > 1) {
    EXPECT_GE(MPI_Wtime() - t0, 0.15);
  }
}

// ---- A rank that never comes (run with POLIS_TIMEOUT_S=2) ----

// Waits for every world rank without spinning, well past the communicator
// deadline (the skipping rank arrives first and waits for the others).
void WorldBarrierNoSpin() {
  MPI_Request req;
  MPI_Ibarrier(MPI_COMM_WORLD, &req);
  int done = 0;
  const double end = MPI_Wtime() + 120;
  while (!done && MPI_Wtime() < end) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    timespec ts{0, 1000 * 1000};
    if (!done) nanosleep(&ts, nullptr);
  }
  POLIS_ENFORCE(done);
}

template <typename Call>
void ExpectLastRankNamed(const char* what, Call call) {
  const int n = WorldSize(), r = WorldRank();
  auto comm = MakeComm(1 << 20);
  if (r != n - 1) {
    const double t0 = MPI_Wtime();
    Status st = call(*comm);
    const double took = MPI_Wtime() - t0;
    EXPECT_EQ(st.code(), Code::kTimeout) << what << ": " << st.ToString();
    const std::string named = "have not entered call #1: rank " + std::to_string(n - 1);
    EXPECT_NE(st.message().find(named), std::string::npos) << what << ": " << st.message();
    EXPECT_GE(took, env::TimeoutSeconds() - 0.1) << what;
    EXPECT_LE(took, env::TimeoutSeconds() + 6.0) << what;
    // The communicator refuses further work.
    float x = 0;
    EXPECT_EQ(comm->Allreduce(&x, 1, {}).code(), Code::kFailedPrecondition) << what;
  }
  WorldBarrierNoSpin();
}

class DeadPeer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (WorldSize() < 2) GTEST_SKIP() << "needs 2 ranks or more";
    if (env::TimeoutSeconds() > 10) GTEST_SKIP() << "run with POLIS_TIMEOUT_S=2";
  }
};

TEST_F(DeadPeer, RingSmallIsTimedOutAndNamed) {
  std::vector<float> data(1000, 1.0f);
  ExpectLastRankNamed("ring 1000", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1000, {AllreduceAlgorithm::kRing, WireType::kFloat32});
  });
}

TEST_F(DeadPeer, RingLargeBf16IsTimedOutAndNamed) {
  std::vector<float> data(1 << 20, 1.0f);
  ExpectLastRankNamed("ring bf16 1M", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1 << 20, {AllreduceAlgorithm::kRing, WireType::kBFloat16});
  });
}

TEST_F(DeadPeer, RecursiveDoublingIsTimedOutAndNamed) {
  std::vector<float> data(1 << 16, 1.0f);
  ExpectLastRankNamed("rd 64K", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1 << 16,
                       {AllreduceAlgorithm::kRecursiveDoubling, WireType::kFloat32});
  });
}

TEST_F(DeadPeer, RabenseifnerSmallIsTimedOutAndNamed) {
  std::vector<float> data(1000, 1.0f);
  ExpectLastRankNamed("rabenseifner 1000", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1000, {AllreduceAlgorithm::kRabenseifner, WireType::kFloat32});
  });
}

TEST_F(DeadPeer, RabenseifnerLargeFp16IsTimedOutAndNamed) {
  std::vector<float> data(1 << 20, 1.0f);
  ExpectLastRankNamed("rabenseifner fp16 1M", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1 << 20,
                       {AllreduceAlgorithm::kRabenseifner, WireType::kFloat16});
  });
}

TEST_F(DeadPeer, DirectSmallIsTimedOutAndNamed) {
  std::vector<float> data(1000, 1.0f);
  ExpectLastRankNamed("direct 1000", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1000, {AllreduceAlgorithm::kDirect, WireType::kFloat32});
  });
}

TEST_F(DeadPeer, DirectLargeBf16IsTimedOutAndNamed) {
  std::vector<float> data(1 << 20, 1.0f);
  ExpectLastRankNamed("direct bf16 1M", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1 << 20, {AllreduceAlgorithm::kDirect, WireType::kBFloat16});
  });
}

// 3 ranks as hosts {0, 0, 1}: the last rank, alone on its host, skips the
// call. Rank 0 waits for it across hosts and names it; rank 1 waits inside
// its host for rank 0, which has entered the call: both time out.
TEST_F(DeadPeer, HierarchicalIsTimedOut) {
  const int n = WorldSize(), r = WorldRank();
  std::vector<int> hosts(n, 0);
  hosts[n - 1] = 1;
  auto comm = MakeComm(1 << 20, hosts);
  std::vector<float> data(1 << 20, 1.0f);
  if (r != n - 1) {
    const double t0 = MPI_Wtime();
    Status st = comm->Allreduce(data.data(), 1 << 20, {AllreduceAlgorithm::kHierarchical, WireType::kBFloat16});
    const double took = MPI_Wtime() - t0;
    EXPECT_EQ(st.code(), Code::kTimeout) << st.ToString();
    if (r == 0) {
      const std::string named = "have not entered call #1: rank " + std::to_string(n - 1);
      EXPECT_NE(st.message().find(named), std::string::npos) << st.message();
    }
    EXPECT_GE(took, env::TimeoutSeconds() - 0.1);
    EXPECT_LE(took, env::TimeoutSeconds() + 12.0);
    float x = 0;
    EXPECT_EQ(comm->Allreduce(&x, 1, {}).code(), Code::kFailedPrecondition);
  }
  WorldBarrierNoSpin();
}

TEST_F(DeadPeer, MpiIsTimedOutAndNamed) {
  std::vector<float> data(1 << 16, 1.0f);
  ExpectLastRankNamed("mpi 64K", [&](Communicator& c) {
    return c.Allreduce(data.data(), 1 << 16, {AllreduceAlgorithm::kMpi, WireType::kFloat32});
  });
}

TEST_F(DeadPeer, BarrierIsTimedOutAndNamed) {
  ExpectLastRankNamed("barrier", [&](Communicator& c) { return c.Barrier(); });
}

}  // namespace
}  // namespace polis::comm

int main(int argc, char** argv) { return polis::mpitest::RunMpiGoogleTests(argc, argv); }
