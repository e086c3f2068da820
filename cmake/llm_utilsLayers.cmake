# The library's layers (DESIGN.md section 3), each an OBJECT library whose sources can include
# only the public headers and the internal folders the layer may see:
#
#   core       tensor, random, threads, state dict          sees: (public headers only)
#   blas       the CBLAS wrapper                             sees: detail
#   reference  the oracle kernels and their plain GEMM       sees: detail blas
#   cpu        the fused kernels and microkernels            sees: detail
#   kernels    the public kernel API, dispatch, module GEMM  sees: detail blas reference cpu cuda
#   cuda       the CUDA kernels (built with a CUDA compiler)  sees: (its own folder only)
#   nn         modules, optimizers                           sees: detail kernels
#   io         npy, safetensors, atomic files                sees: (public headers only)
#
# A layer's include root is a folder of links, build/layer_include/<layer>/<folder> -> src/<folder>,
# for its own folder and those it sees, and nothing else: `#include "cpu/microkernels.hpp"` in
# src/reference fails to compile. tests/layering checks that it does.
include_guard(GLOBAL)

set(LLM_UTILS_LAYER_INCLUDE_DIR ${CMAKE_BINARY_DIR}/layer_include)

# llm_utils_layer(<name> SOURCES <files...> [SEES <folders...>] [STANDALONE])
# STANDALONE: not one of llm_utils's layers (dist, whose objects go into llm_utils_dist).
function(llm_utils_layer name)
  cmake_parse_arguments(arg "STANDALONE" "" "SOURCES;SEES" ${ARGN})
  set(root ${LLM_UTILS_LAYER_INCLUDE_DIR}/${name})
  file(REMOVE_RECURSE ${root})
  file(MAKE_DIRECTORY ${root})
  foreach(folder IN LISTS arg_SEES name)
    if(EXISTS ${PROJECT_SOURCE_DIR}/src/${folder})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${folder} ${root}/${folder} SYMBOLIC)
    endif()
  endforeach()
  add_library(llm_utils_${name} OBJECT ${arg_SOURCES})
  target_include_directories(llm_utils_${name} PRIVATE ${root} ${PROJECT_SOURCE_DIR}/include)
  target_compile_options(llm_utils_${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>)
  set_property(TARGET llm_utils_${name} PROPERTY LLM_UTILS_LAYER_ROOT ${root})
  set_property(TARGET llm_utils_${name} PROPERTY LLM_UTILS_LAYER_SEES ${name} ${arg_SEES})
  if(NOT arg_STANDALONE)
    set_property(GLOBAL APPEND PROPERTY LLM_UTILS_LAYERS llm_utils_${name})
  endif()
endfunction()
