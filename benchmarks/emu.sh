# shellcheck shell=bash
# Sourced by the benchmarks that run on the emulated cluster
# (launch/cluster/emucluster; docs/design/multi-host.md): bring it up, take
# it down, and mpirun's options for it. Needs REPO_ROOT set.

EMU="$REPO_ROOT/launch/cluster/emucluster"

# emu_up DIR [emucluster up options]: the cluster in DIR, or exit: 3 when
# namespaces cannot be made here (1 instead under CI=true when a tool the
# project installs is missing), 1 on any other failure; emucluster's output
# goes to stderr then. Call emu_down DIR from the script's EXIT trap.
emu_up() {
  local dir=$1 rc=0
  shift
  "$EMU" up --dir "$dir" "$@" >"$dir.up.log" 2>&1 || rc=$?
  ((rc == 0)) && return 0
  cat "$dir.up.log" >&2
  if ((rc == 3)) && [[ "${CI:-}" == true ]] && grep -q "not found" "$dir.up.log"; then exit 1; fi
  exit $((rc == 3 ? 3 : 1))
}

# emu_down DIR: tears down what emu_up made (nothing if it made nothing).
emu_down() {
  [[ -s "$1/state" ]] && "$EMU" down --dir "$1" >/dev/null 2>&1
  return 0
}

# emu_mpirun DIR: sets MPIRUN to mpirun with the cluster's rsh agent, TCP
# between hosts on its subnet (shared memory inside a host), no binding.
emu_mpirun() {
  local subnet
  subnet="$(awk '!/^#/ { print $1; exit }' "$1/hostfile")"
  subnet="${subnet%.*}.0/24"
  # shellcheck disable=SC2034,SC2054  # MPIRUN is the caller's; commas are mpirun's
  MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl tcp,vader,self
          --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet"
          --mca plm_rsh_agent "$1/rsh" --mca plm_rsh_no_tree_spawn 1)
}
