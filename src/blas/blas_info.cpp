#include "blas/blas_info.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <string>

namespace llm_utils::blas {
namespace {

using CharFn = char* (*)();

// The library our cblas_sgemm calls resolve to (a process may hold two OpenBLAS builds, a Python
// session with torch for one): its functions, not whichever the global scope finds first.
CharFn find_in_our_blas(const char* name) {
  Dl_info info;
  void* handle = nullptr;
  if (dladdr(reinterpret_cast<void*>(&cblas_sgemm), &info) != 0 && info.dli_fname != nullptr) {
    handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  }
  void* symbol = dlsym(handle != nullptr ? handle : RTLD_DEFAULT, name);
  if (handle != nullptr) dlclose(handle);  // balances the NOLOAD open; the library stays
  return reinterpret_cast<CharFn>(symbol);
}

}  // namespace

std::string description() {
  const CharFn config = find_in_our_blas("openblas_get_config");
  const CharFn corename = find_in_our_blas("openblas_get_corename");
  if (config == nullptr || corename == nullptr) return "a CBLAS other than OpenBLAS";
  std::string c = config();
  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." -> "OpenBLAS 0.3.21"
  const size_t second_space = c.find(' ', c.find(' ') + 1);
  if (second_space != std::string::npos) c.resize(second_space);
  return c + " (" + corename() + " kernels)";
}

}  // namespace llm_utils::blas
