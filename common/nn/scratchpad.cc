#include "common/nn/scratchpad.h"

namespace polis::nn {

using dnnl::memory;

dnnl::primitive_attr UserScratchpad(dnnl::primitive_attr attr) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

memory ScratchMemory(const dnnl::primitive_desc_base& pd, const dnnl::engine& eng) {
  return memory(pd.scratchpad_desc(), eng);
}

void MaybeReorder::Init(const dnnl::engine& eng, const memory::desc& from, const memory::desc& to,
                        bool copy) {
  active = copy || from != to;
  if (!active) return;
  const dnnl::reorder::primitive_desc pd(eng, from, eng, to, UserScratchpad());
  prim = dnnl::reorder(pd);
  scratch = ScratchMemory(pd, eng);
}

void MaybeReorder::Run(dnnl::stream& s, const memory& from, const memory& to) const {
  if (active) prim.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratch}});
}

}  // namespace polis::nn
