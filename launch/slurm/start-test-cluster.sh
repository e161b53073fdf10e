#!/usr/bin/env bash
# start-test-cluster.sh: a real single-node Slurm cluster (munged, slurmctld,
# slurmd) on 127.0.0.1, started by hand without systemd, for trying
# launch/slurm/polis.sbatch and for tests (docs/operations.md, "Slurm";
# facts in shared/design/CLUSTER-NOTES.md).
#
#   launch/slurm/start-test-cluster.sh DIR [--cpus N] [--node NAME]
#
# Everything lives under DIR: munge key and socket, slurm.conf, state, spool,
# pid files and logs (DIR/log/). Prints the line to export SLURM_CONF (also
# written to DIR/env). Stop it with stop-test-cluster.sh DIR, which stops the
# daemons by their pid files. Needs root (SlurmUser=root) and Debian's
# slurm-wlm and munge. Exit codes: 0 up, 1 a daemon did not come up (its log
# is printed), 2 usage or missing programs.
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
dir="" cpus=8 node=polis-n1
while (($#)); do
  case "$1" in
    --cpus) cpus=${2:?--cpus needs a value}; shift 2 ;;
    --node) node=${2:?--node needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "start-test-cluster: unknown option '$1'" >&2; exit 2 ;;
    *) [[ -z "$dir" ]] || { echo "start-test-cluster: one DIR only" >&2; exit 2; }; dir=$1; shift ;;
  esac
done
[[ -n "$dir" ]] || { usage >&2; exit 2; }
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] || { echo "start-test-cluster: --cpus must be a positive integer" >&2; exit 2; }
for p in munged mungekey slurmctld slurmd scontrol; do
  command -v "$p" >/dev/null || { echo "start-test-cluster: '$p' not found (apt-get install slurm-wlm munge)" >&2; exit 2; }
done
((EUID == 0)) || { echo "start-test-cluster: run as root (SlurmUser=root)" >&2; exit 2; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -f "$dir/run/slurmctld.pid" ]] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
  echo "start-test-cluster: a cluster already runs in $dir (stop-test-cluster.sh $dir first)" >&2
  exit 2
fi
mkdir -p "$dir"/{etc,state,spool,log,run,pmix}
# shellcheck source=launch/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Two free TCP ports on loopback (ctld, slurmd), away from other test clusters.
read -r ctld_port slurmd_port < <(slurm_free_ports 127.0.0.1 2)
# munge: a fresh key; its own socket, pid, log and seed files.
slurm_start_munge "$dir"

host=$(hostname -s)
conf="$dir/etc/slurm.conf"
: > "$dir/etc/plugstack.conf"
# pmix needs its own temp dir base per slurmd (CLUSTER-NOTES: "File exists").
echo "PMIxCliTmpDirBase=$dir/pmix" > "$dir/etc/mpi.conf"
{
  cat <<CONF
# Single-node Polis test cluster, written by launch/slurm/start-test-cluster.sh.
ClusterName=polistest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
# Listen on 127.0.0.1 only.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/run/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log
CONF
  slurm_conf_common "$dir"
  cat <<CONF
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
} > "$conf"

export SLURM_CONF=$conf
echo "export SLURM_CONF=$conf" > "$dir/env"
slurmctld -f "$conf"
slurmd -f "$conf" -N "$node"

# Up when the node is idle (or mixed/allocated: a job already runs).
if why=$(slurm_wait_nodes_up "$node"); then
  echo "start-test-cluster: node $node up ($cpus CPUs) in $dir"
  echo "export SLURM_CONF=$conf"
  exit 0
fi
echo "start-test-cluster: node $node did not come up ($why); logs:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
exit 1
