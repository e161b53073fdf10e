// polis-bench-allreduce: all-reduce bandwidth of the Polis algorithms next to
// Open MPI's MPI_Allreduce, interleaved iteration by iteration so that the
// noise of a shared VM hits every implementation alike (CLUSTER-NOTES).
// Every timed call is verified against its closed-form result.
//
//   mpirun -np 4 polis-bench-allreduce --impls ring,rd,rabenseifner,auto,mpi
//   polis-bench-allreduce --impls memcpy            (one process)
//
// Implementations: ring, rd, rabenseifner, direct, hier, auto, polis-mpi
// (Polis, fp32 wire), ring-bf16, rabenseifner-bf16, hier-bf16, auto-bf16
// (Polis, bf16 wire; bandwidth counted on the fp32 bytes), mpi (blocking
// MPI_Allreduce on MPI_COMM_WORLD, Open MPI's tuned choice), memcpy
// (single-core copy of the same size, rank 0 alone, as a ceiling).
//
// --ranks-per-host K tells the communicator that ranks r sit on host r / K
// (mpirun filling each host's K slots in order), as polis-train does from
// its placement; 0 (default) is one host.
//
// Output (stdout, rank 0): one line per implementation and size,
//   impl <TAB> ranks <TAB> bytes <TAB> seconds,seconds,...
// each value the slowest rank's time of one iteration; benchmarks/allreduce.sh
// turns these into medians, algbw and busbw (= algbw * 2(n-1)/n).
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "common/comm/mpi_communicator.h"
#include "common/comm/mpi_util.h"

namespace {

using polis::comm::AllreduceAlgorithm;
using polis::comm::AllreduceOptions;
using polis::comm::WireType;

// Exact in fp32 and bf16 at every partial sum (see tests/mpi/allreduce_test.cc).
float F(int64_t i) {
  return static_cast<float>((i % 7) - 3) * std::ldexp(1.0f, static_cast<int>(i % 5) - 2);
}

struct Impl {
  std::string name;
  bool polis = false;
  AllreduceOptions options;
};

bool ParseImpl(const std::string& name, Impl* out) {
  out->name = name;
  out->polis = true;
  if (name == "ring") out->options = {AllreduceAlgorithm::kRing, WireType::kFloat32};
  else if (name == "rd") out->options = {AllreduceAlgorithm::kRecursiveDoubling, WireType::kFloat32};
  else if (name == "rabenseifner") out->options = {AllreduceAlgorithm::kRabenseifner, WireType::kFloat32};
  else if (name == "direct") out->options = {AllreduceAlgorithm::kDirect, WireType::kFloat32};
  else if (name == "hier") out->options = {AllreduceAlgorithm::kHierarchical, WireType::kFloat32};
  else if (name == "hier-bf16") out->options = {AllreduceAlgorithm::kHierarchical, WireType::kBFloat16};
  else if (name == "auto") out->options = {AllreduceAlgorithm::kAuto, WireType::kFloat32};
  else if (name == "polis-mpi") out->options = {AllreduceAlgorithm::kMpi, WireType::kFloat32};
  else if (name == "ring-bf16") out->options = {AllreduceAlgorithm::kRing, WireType::kBFloat16};
  else if (name == "rabenseifner-bf16") out->options = {AllreduceAlgorithm::kRabenseifner, WireType::kBFloat16};
  else if (name == "auto-bf16") out->options = {AllreduceAlgorithm::kAuto, WireType::kBFloat16};
  else if (name == "mpi" || name == "memcpy") out->polis = false;
  else return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  polis::comm::SetOpenMpiDefaults();
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);

  CLI::App app{"Polis all-reduce bandwidth vs Open MPI (verified, interleaved)"};
  std::string impls_arg = "ring,rd,auto,mpi";
  int64_t min_bytes = 4 << 10, max_bytes = 64 << 20;
  int factor = 4, warmup = 2, min_iters = 5, max_iters = 40;
  double target_mb = 256;
  int ranks_per_host = 0;
  app.add_option("--impls", impls_arg, "comma-separated: ring rd rabenseifner direct hier auto polis-mpi ring-bf16 rabenseifner-bf16 hier-bf16 auto-bf16 mpi memcpy");
  app.add_option("--ranks-per-host", ranks_per_host, "rank r on host r / K (0: one host)")->check(CLI::Range(0, 1 << 20));
  app.add_option("--min-bytes", min_bytes, "smallest message (fp32 bytes)");
  app.add_option("--max-bytes", max_bytes, "largest message (fp32 bytes)");
  app.add_option("--factor", factor, "size step (multiply)")->check(CLI::Range(2, 16));
  app.add_option("--warmup", warmup, "untimed iterations per size and implementation");
  app.add_option("--min-iters", min_iters, "timed iterations at the largest sizes");
  app.add_option("--max-iters", max_iters, "timed iterations at the smallest sizes");
  app.add_option("--target-mb", target_mb, "iterations per size ~ this many MB / size, clamped");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = rank == 0 ? app.exit(e) : 1;
    MPI_Finalize();
    return rc;
  }

  std::vector<Impl> impls;
  {
    std::stringstream ss(impls_arg);
    std::string item;
    while (std::getline(ss, item, ',')) {
      Impl impl;
      if (!ParseImpl(item, &impl)) {
        if (rank == 0) std::fprintf(stderr, "error: unknown implementation '%s'\n", item.c_str());
        MPI_Finalize();
        return 1;
      }
      impls.push_back(impl);
    }
  }
  const int64_t max_count = max_bytes / 4;
  std::unique_ptr<polis::comm::Communicator> comm;
  std::vector<int> hosts;
  for (int r = 0; ranks_per_host > 0 && r < n; ++r) hosts.push_back(r / ranks_per_host);
  auto made = polis::comm::MakeMpiCommunicator(MPI_COMM_WORLD, max_count, hosts);
  if (!made.ok()) {
    std::fprintf(stderr, "error: %s\n", made.status().ToString().c_str());
    MPI_Finalize();
    return 1;
  }
  comm = std::move(made).value();

  // Inputs and expected sums computed once: per iteration the harness only
  // copies and compares (memcpy/memcmp speed), so it keeps the VM's cores
  // for the collectives.
  const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
  std::vector<float> data(max_count), input(max_count), expected(max_count);
  for (int64_t i = 0; i < max_count; ++i) {
    input[i] = static_cast<float>(rank + 1) * F(i);
    expected[i] = ranks_sum * F(i);
  }
  std::vector<float> copy_src(max_count, 1.0f), copy_dst(max_count, 0.0f);
  int failures = 0;

  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= factor) {
    const int64_t count = bytes / 4;
    const int iters = static_cast<int>(
        std::clamp<double>(target_mb * 1e6 / bytes, min_iters, max_iters));
    std::vector<std::vector<double>> times(impls.size());
    for (int it = -warmup; it < iters; ++it) {
      for (size_t k = 0; k < impls.size(); ++k) {
        const Impl& impl = impls[k];
        double took = 0;
        if (impl.name == "memcpy") {
          if (rank == 0) {
            const double t0 = MPI_Wtime();
            std::memcpy(copy_dst.data(), copy_src.data(), static_cast<size_t>(bytes));
            took = MPI_Wtime() - t0;
            if (copy_dst[count - 1] != 1.0f) ++failures;
          }
        } else {
          std::memcpy(data.data(), input.data(), static_cast<size_t>(bytes));
          MPI_Barrier(MPI_COMM_WORLD);
          const double t0 = MPI_Wtime();
          if (impl.polis) {
            polis::Status st = comm->Allreduce(data.data(), count, impl.options);
            if (!st.ok()) {
              std::fprintf(stderr, "rank %d: %s\n", rank, st.ToString().c_str());
              MPI_Abort(MPI_COMM_WORLD, 1);
            }
          } else {
            MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
          }
          const double mine = MPI_Wtime() - t0;
          MPI_Reduce(&mine, &took, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
          if (std::memcmp(data.data(), expected.data(), static_cast<size_t>(bytes)) != 0) {
            int64_t i = 0;
            while (data[i] == expected[i]) ++i;
            std::fprintf(stderr, "rank %d: %s, %lld bytes: element %lld is %g, expected %g\n",
                         rank, impl.name.c_str(), static_cast<long long>(bytes),
                         static_cast<long long>(i), data[i], expected[i]);
            ++failures;
          }
        }
        if (it >= 0) times[k].push_back(took);
      }
    }
    if (rank == 0) {
      for (size_t k = 0; k < impls.size(); ++k) {
        std::printf("%s\t%d\t%lld\t", impls[k].name.c_str(), impls[k].name == "memcpy" ? 1 : n,
                    static_cast<long long>(bytes));
        for (size_t i = 0; i < times[k].size(); ++i)
          std::printf("%s%.9f", i ? "," : "", times[k][i]);
        std::printf("\n");
      }
      std::fflush(stdout);
    }
  }
  int any = 0;
  MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0 && any) std::fprintf(stderr, "error: %d verification failures\n", any);
  comm.reset();
  MPI_Finalize();
  return any ? 2 : 0;
}
