// runtime.hpp: what the library's GEMMs and fused kernels run on.

#include "llm_utils/runtime.hpp"

#include "blas/blas_info.hpp"
#include "cpu/microkernels.hpp"
#include "cpu/workspace.hpp"
#include "kernels/gemm.hpp"

namespace llm_utils {

std::string blas_description() {
  return kernels::gemm_description() + " for the projections; " + blas::description() +
         " for the reference";
}

std::string kernel_isa() {
  return cpu::isa_name(cpu::selected_isa());
}

void release_cached_memory() noexcept {
  cpu::workspace_release();
}

std::size_t cached_memory_bytes() noexcept {
  return cpu::workspace_cached_bytes();
}

}  // namespace llm_utils
