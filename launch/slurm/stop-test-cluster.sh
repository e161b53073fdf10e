#!/usr/bin/env bash
# stop-test-cluster.sh: stops the cluster start-test-cluster.sh started in
# DIR: cancels its jobs, waits for them (up to 20 s), then stops slurmd,
# slurmctld and munged by their pid files (TERM, then KILL after 10 s).
#
#   launch/slurm/stop-test-cluster.sh DIR [--remove]
#
# --remove deletes DIR afterwards. Exit codes: 0 stopped (or nothing ran),
# 2 usage.
set -uo pipefail
dir="" remove=0
while (($#)); do
  case "$1" in
    --remove) remove=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "stop-test-cluster: unknown option '$1'" >&2; exit 2 ;;
    *) dir=$1; shift ;;
  esac
done
[[ -n "$dir" && -d "$dir" ]] || { echo "usage: stop-test-cluster.sh DIR [--remove]" >&2; exit 2; }
dir=$(cd "$dir" && pwd)
export SLURM_CONF=$dir/etc/slurm.conf

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$dir/run/slurmctld.pid"; then
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [[ -n "$jobs" ]]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 100); do
      [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
      sleep 0.2
    done
  fi
fi

stop_pidfile() {
  local pidfile=$1 name=$2
  alive "$pidfile" || return 0
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { echo "stop-test-cluster: $name (pid $pid) stopped"; return 0; }
    sleep 0.2
  done
  echo "stop-test-cluster: $name (pid $pid) ignored TERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null
}
stop_pidfile "$dir/run/slurmd.pid" slurmd
stop_pidfile "$dir/run/slurmctld.pid" slurmctld
stop_pidfile "$dir/run/munged.pid" munged
((remove)) && rm -rf "$dir"
exit 0
