# shellcheck shell=bash
# lib.sh: pieces of a hand-started Slurm test cluster shared by
# launch/slurm/start-test-cluster.sh (one node on 127.0.0.1) and
# launch/cluster/emucluster up --slurm (one slurmd per emulated host).
# Sourced, not run. Facts in shared/design/CLUSTER-NOTES.md.

# N free TCP ports on ADDR, space-separated (bound at once, so distinct).
slurm_free_ports() {  # addr n
  python3 - "$1" "$2" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(); s.bind((sys.argv[1], 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# munged with a fresh key in DIR/munge (mode 0700), its socket
# DIR/munge-run/munge.socket (0755), pid file DIR/run/munged.pid, log
# DIR/log/munged.log. It daemonizes; its pid is in the pid file.
slurm_start_munge() {  # dir
  mkdir -p "$1"/{munge,munge-run,run,log}
  chmod 0700 "$1/munge"
  chmod 0755 "$1/munge-run"
  [[ -f "$1/munge/munge.key" ]] || mungekey -c -k "$1/munge/munge.key"
  chmod 0400 "$1/munge/munge.key"
  munged --key-file="$1/munge/munge.key" --socket="$1/munge-run/munge.socket" --pid-file="$1/run/munged.pid" \
    --log-file="$1/log/munged.log" --seed-file="$1/munge/munge.seed" --force
}

# The slurm.conf lines every test cluster shares: root daemons, munge on
# DIR's socket, no cgroups, no accounting, pmix, fast scheduling, CPUs
# advertised as configured, state and controller files under DIR.
slurm_conf_common() {  # dir
  cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$1/munge-run/munge.socket,cred_expire=10
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
# Let a node advertise the CPUs it is given whatever this machine has.
SlurmdParameters=config_overrides
KillWait=10
ReturnToService=2
MailProg=/bin/true
PlugStackConfig=$1/etc/plugstack.conf
StateSaveLocation=$1/state
SlurmctldPidFile=$1/run/slurmctld.pid
SlurmctldLogFile=$1/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
CONF
}

# Waits (up to 30 s) until every node named is up: idle, or mixed or
# allocated (a job already runs). Prints the states of the others and
# returns 1 if they are not by then. Needs SLURM_CONF.
slurm_wait_nodes_up() {  # node...
  local n state waiting
  for _ in $(seq 1 150); do
    waiting=""
    for n in "$@"; do
      state=$(timeout 5 scontrol show node "$n" 2>/dev/null | sed -n 's/.*State=\([A-Z+_]*\).*/\1/p' | head -1)
      [[ "$state" == IDLE* || "$state" == MIXED* || "$state" == ALLOCATED* ]] || waiting+=" $n (${state:-unknown})"
    done
    [[ -n "$waiting" ]] || return 0
    sleep 0.2
  done
  echo "not up:$waiting"
  return 1
}
