#!/usr/bin/env bash
# The roles talk through common/comm/transport.h, never MPI
# (docs/design/transport.md): no file of worker/, paramserver/ or
# coordinator/ includes <mpi.h> (directly, or through a header: the
# compiler's dependency files of their objects say), or names an MPI_ symbol.
#   tests/lint/roles_without_mpi.sh SOURCE_DIR BINARY_DIR
set -euo pipefail
src=$1 bin=$2
bad=0
for dir in worker paramserver coordinator; do
  while IFS= read -r hit; do
    echo "roles_without_mpi: $hit: the roles must not use MPI (use the transport in common/comm/)"
    bad=1
  done < <(grep -nE '#include *<mpi\.h>|\bMPI_[A-Za-z]' "$src/$dir"/*.cc "$src/$dir"/*.h 2>/dev/null || true)
  deps=$(find "$bin/$dir" -name '*.o.d' 2>/dev/null)
  if [ -z "$deps" ]; then
    echo "roles_without_mpi: no dependency files under $bin/$dir (build the roles first)"
    exit 1
  fi
  for d in $deps; do
    if grep -q '/mpi\.h' "$d"; then
      echo "roles_without_mpi: ${d#$bin/}: the object depends on <mpi.h> through a header it includes"
      bad=1
    fi
  done
done
[ $bad -eq 0 ] && echo "roles_without_mpi: worker/, paramserver/ and coordinator/ are free of MPI"
exit $bad
