// The main() of a GoogleTest binary run under mpirun: every rank runs every
// test; ranks other than 0 print only failures, prefixed with their rank;
// the exit status is the worst over all ranks.
//
//   int main(int argc, char** argv) { return polis::mpitest::RunMpiGoogleTests(argc, argv); }
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "common/comm/mpi_util.h"

namespace polis::mpitest {

class MpiFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit MpiFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

// Initialises MPI (MPI_THREAD_MULTIPLE, as polis-train does: the hierarchical
// all-reduce pipelines with it), runs the tests, finalizes MPI.
inline int RunMpiGoogleTests(int argc, char** argv) {
  int provided = 0;
  polis::comm::SetOpenMpiDefaults();
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new MpiFailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  MPI_Finalize();
  return any_failed;
}

}  // namespace polis::mpitest
