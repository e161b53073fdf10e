#!/usr/bin/env bash
# A hand-written multi-host mpirun launch of the seed job, for users who
# launch by hand on hosts of their own (launch/polis-run --hostfile does the
# same and prints the placement; docs/design/multi-host.md).
#
#   launch/mpirun/fashion_cnn_multihost.sh HOST1 HOST2 NET
#
# NET is the CIDR (10.1.0.0/24) or interface (eth1) the hosts talk on; this
# host needs an address on it. Every host needs this build at this path, the
# dataset, and (for now) the run directory on a shared file system; mpirun
# starts its daemons over ssh (add --mca plm_rsh_agent PATH otherwise).
#
# Ranks keep their roles: rank 0 coordinator, rank 1 parameter server, ranks
# 2 and 3 workers. One app context per rank pins each to its host, in rank
# order, as polis-run's placement would:
#   rank 0 coordinator HOST1, rank 1 server HOST2, rank 2 worker HOST1,
#   rank 3 worker HOST2.
# -x applies to its own app context only, so each context repeats it. As
# root add --allow-run-as-root.
set -euo pipefail
(($# == 3)) || { sed -n '6p' "$0" | sed 's/^# *//'; exit 2; }
host1=$1 host2=$2 net=$3
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
train=("$PWD/build/launch/polis-train" "$PWD/jobs/fashion_cnn.pbtxt" --run-dir "$PWD/runs/fashion_cnn/multihost"
       --hosts "$host1:2,$host2:2" --net "$net")
env=(-x OMP_NUM_THREADS=1)
mpirun --bind-to none --oversubscribe \
  --mca btl tcp,vader,self --mca btl_tcp_if_include "$net" --mca oob_tcp_if_include "$net" \
  --mca plm_rsh_no_tree_spawn 1 \
  -np 1 -host "$host1" "${env[@]}" "${train[@]}" : \
  -np 1 -host "$host2" "${env[@]}" "${train[@]}" : \
  -np 1 -host "$host1" "${env[@]}" "${train[@]}" : \
  -np 1 -host "$host2" "${env[@]}" "${train[@]}"
