#include "common/source_revision.h"

#include "polis_revision.h"

namespace polis {

const char* SourceRevision() { return POLIS_SOURCE_REVISION; }

}  // namespace polis
