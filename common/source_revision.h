// The git revision Polis was built from, for artifact lineage and
// `--version`: 12 hex digits, "-dirty" when the build's tracked sources
// differed from that commit, "unknown" outside a git checkout. Taken at
// build time (common/source_revision.cmake), not when CMake configured the
// build directory, so an incremental build after a commit names the new one.
#pragma once

namespace polis {

const char* SourceRevision();

}  // namespace polis
