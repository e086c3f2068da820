// The AVX512_BF16 table: vdpbf16ps (bf16_microkernels_avx512.hpp). Compiled with
// -mavx512f/dq/bw/vl -mavx512bf16; only called when the CPU reported AVX512_BF16.

#define LLM_UTILS_BF16_NATIVE 1
#include "cpu/bf16_microkernels_avx512.hpp"

namespace llm_utils::cpu {

const Bf16Microkernels& avx512_bf16_native_microkernels() {
  static const Bf16Microkernels table{Isa::avx512_bf16,  gemm,  round,          round_pairs,
                                      interleave,        widen, online_softmax, exp_centered_each,
                                      softmax_grad_pairs};
  return table;
}

}  // namespace llm_utils::cpu
