#!/usr/bin/env bash
# A plain mpirun launch of the seed job, for users who launch by hand.
# Rank 0 is the coordinator, rank 1 the parameter server (sync.servers: 1),
# ranks 2 and 3 are workers. Build first: launch/build.sh
#
# As root add --allow-run-as-root; on a machine with fewer cores than ranks
# add --oversubscribe. OMP_NUM_THREADS sets oneDNN threads per process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000 mpirun -np 4 --oversubscribe --bind-to none \
  --mca btl self,vader -x OMP_NUM_THREADS -x OMP_WAIT_POLICY -x GOMP_SPINCOUNT \
  build/launch/polis-train jobs/fashion_cnn.pbtxt --run-dir runs/fashion_cnn/manual "$@"

# The same ranks as an MPMD launch:
#   mpirun -np 1 build/launch/polis-train JOB : -np 1 build/launch/polis-train JOB \
#          : -np 2 build/launch/polis-train JOB
