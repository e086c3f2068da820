// llm_utils._core: the compiled half of the Python package. The pure-Python modules
// (llm_utils, llm_utils.selfAttn, .optim, .safetensors) re-export what is defined here under
// the original's import paths.

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  namespace lp = llm_utils::python;
  m.doc() = "Compiled bindings of llm_utils; import llm_utils and llm_utils.selfAttn instead.";
  // Order matters for the signatures help() shows: types before the functions that take them.
  lp::bind_errors(m);
  lp::bind_random(m);
  lp::bind_parameter(m);
  lp::bind_module_base(m);
  lp::bind_modules(m);
  lp::bind_paged_cache(m);
  lp::bind_book_modules(m);
  lp::bind_optim(m);
  lp::bind_io(m);
  lp::bind_kernels(m);
#if LLM_UTILS_PYTHON_DIST
  lp::bind_dist(m);
#endif
}
