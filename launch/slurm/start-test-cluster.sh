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
mkdir -p "$dir"/{munge,munge-run,etc,state,spool,log,run,pmix}
chmod 0700 "$dir/munge"
chmod 0755 "$dir/munge-run"

# Two free TCP ports on loopback (ctld, slurmd), away from other test clusters.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r ctld_port slurmd_port < <(free_ports 2)

# munge: a fresh key; its own socket, pid, log and seed files.
[[ -f "$dir/munge/munge.key" ]] || mungekey -c -k "$dir/munge/munge.key"
chmod 0400 "$dir/munge/munge.key"
socket="$dir/munge-run/munge.socket"
munged --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/run/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" --force

host=$(hostname -s)
conf="$dir/etc/slurm.conf"
: > "$dir/etc/plugstack.conf"
# pmix needs its own temp dir base per slurmd (CLUSTER-NOTES: "File exists").
echo "PMIxCliTmpDirBase=$dir/pmix" > "$dir/etc/mpi.conf"
cat > "$conf" <<CONF
# Single-node Polis test cluster, written by launch/slurm/start-test-cluster.sh.
ClusterName=polistest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket,cred_expire=10
# Listen on 127.0.0.1 only.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Schedule fast (a requeued job restarts in ~12 s instead of minutes).
SchedulerParameters=sched_interval=2,bf_interval=1
# Let the node advertise CPUs=$cpus whatever this machine has.
SlurmdParameters=config_overrides
KillWait=10
ReturnToService=2
MailProg=/bin/true
PlugStackConfig=$dir/etc/plugstack.conf
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

export SLURM_CONF=$conf
echo "export SLURM_CONF=$conf" > "$dir/env"
slurmctld -f "$conf"
slurmd -f "$conf" -N "$node"

# Up when the node is idle (or mixed/allocated: a job already runs).
for _ in $(seq 1 150); do
  state=$(scontrol show node "$node" 2>/dev/null | sed -n 's/.*State=\([A-Z+_]*\).*/\1/p' | head -1)
  if [[ "$state" == IDLE* || "$state" == MIXED* || "$state" == ALLOCATED* ]]; then
    echo "start-test-cluster: node $node up ($cpus CPUs) in $dir"
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "start-test-cluster: node $node did not come up (state '${state:-unknown}'); logs:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
exit 1
