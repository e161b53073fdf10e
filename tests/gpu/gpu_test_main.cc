// main() of polis_gpu_tests: GoogleTest, plus MPI_Finalize when a test
// (the NCCL ones) initialised MPI. MPI is initialised lazily, only by tests
// that found a GPU, so that listing and skipping need no MPI runtime.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
  return rc;
}
