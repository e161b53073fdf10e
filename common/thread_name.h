// Names the calling thread, as `top -H`, `ps -L`, perf and gdb show it.
// Linux keeps 15 bytes; a longer name is cut there.
#pragma once

#include <string>

namespace polis {

void SetThreadName(const std::string& name);

}  // namespace polis
