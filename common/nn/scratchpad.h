// Scratchpads. Every oneDNN primitive in common/nn is built with a
// user-managed scratchpad (UserScratchpad) and executed with scratch memory
// of its own (ScratchMemory, passed as DNNL_ARG_SCRATCHPAD). oneDNN's
// default, library-managed scratchpad is global per *thread* (thread-local,
// sized by the primitives created on that thread), so a primitive executed
// on another thread than the one that built it uses that thread's buffer,
// which may be missing or too small. With user scratchpads a Network may run
// on any thread, one at a time: the registry runs a lone request on the
// thread that decoded it (docs/design/serving-threads.md).
#pragma once

#include <dnnl.hpp>

namespace polis::nn {

// `attr` with scratchpad_mode::user.
dnnl::primitive_attr UserScratchpad(dnnl::primitive_attr attr = dnnl::primitive_attr());
// The scratch memory `pd` asks for (possibly empty), on `eng`.
dnnl::memory ScratchMemory(const dnnl::primitive_desc_base& pd, const dnnl::engine& eng);

// A reorder between two layouts, with its scratchpad; nothing when they are
// equal, unless `copy` (then a copy between two buffers of one layout).
struct MaybeReorder {
  dnnl::reorder prim;
  dnnl::memory scratch;
  bool active = false;
  void Init(const dnnl::engine& eng, const dnnl::memory::desc& from, const dnnl::memory::desc& to,
            bool copy = false);
  void Run(dnnl::stream& s, const dnnl::memory& from, const dnnl::memory& to) const;
};

}  // namespace polis::nn
