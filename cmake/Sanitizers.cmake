# Sanitizer and fuzzing builds (docs/hardening.md). Included from the top-level CMakeLists.txt
# before any target, so the flags reach every target of the build, the library included.
#
#   -DLLM_UTILS_SANITIZE=address,undefined   ASan + UBSan (GCC or Clang): the `make test-asan` stage
#   -DLLM_UTILS_SANITIZE=thread              TSan (Clang; OpenMP through libomp + Archer)
#   -DLLM_UTILS_FUZZ=ON                      libFuzzer harnesses in fuzz/ (Clang only)
#
# Hooks for code that joins later:
#   - a test that cannot run under a sanitizer (a Python extension loaded into an uninstrumented
#     interpreter, a packaging test) gets the label `no_sanitize`:
#       llm_utils_skip_under_sanitizers(my_test ...)
#   - a GoogleTest suite that exercises threads gets the label `tsan`, and the TSan stage builds
#     and runs it:  llm_utils_add_test(test_x LABELS tsan SOURCES test_x.cpp)
#     (other add_test tests: llm_utils_tsan_test(target test...)).
#   - LLM_UTILS_SANITIZER_BUILD is TRUE in sanitizer and fuzz builds: guard parts that must not
#     be built there (the Python extension, benchmarks) with `if(NOT LLM_UTILS_SANITIZER_BUILD)`.

set(LLM_UTILS_SANITIZE "" CACHE STRING
    "Sanitizers to build with, as for -fsanitize= (e.g. address,undefined or thread); empty: none")
option(LLM_UTILS_FUZZ "Build the libFuzzer harnesses in fuzz/ (needs Clang)" OFF)

set(LLM_UTILS_SANITIZER_BUILD FALSE)
if(LLM_UTILS_SANITIZE OR LLM_UTILS_FUZZ)
  set(LLM_UTILS_SANITIZER_BUILD TRUE)
endif()

if(LLM_UTILS_SANITIZE)
  # -O1 keeps runs fast enough for CI while the stacks stay readable; it comes after the build
  # type's flags, so it wins. Every report must fail the run: no recovering and going on.
  add_compile_options(-fsanitize=${LLM_UTILS_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g -O1)
  add_link_options(-fsanitize=${LLM_UTILS_SANITIZE})
  if(LLM_UTILS_SANITIZE MATCHES "undefined")
    # Not part of "undefined", but float -> int of NaN or out-of-range values is UB that pixel
    # and index code can hit on non-finite input.
    add_compile_options(-fsanitize=float-cast-overflow)
    add_link_options(-fsanitize=float-cast-overflow)
  endif()
endif()

if(LLM_UTILS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "LLM_UTILS_FUZZ needs Clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  # Coverage instrumentation everywhere; only the harness executables link libFuzzer's main.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

function(llm_utils_skip_under_sanitizers)
  foreach(test IN LISTS ARGN)
    set_property(TEST ${test} APPEND PROPERTY LABELS no_sanitize)
  endforeach()
endfunction()

# The TSan stage builds the target `llm_utils_tsan_tests` and runs `ctest -L tsan`.
if(NOT TARGET llm_utils_tsan_tests)
  add_custom_target(llm_utils_tsan_tests)
endif()

function(llm_utils_tsan_test target)
  add_dependencies(llm_utils_tsan_tests ${target})
  foreach(test IN LISTS ARGN)
    set_property(TEST ${test} APPEND PROPERTY LABELS tsan)
  endforeach()
endfunction()
