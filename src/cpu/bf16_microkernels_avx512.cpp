// The AVX-512 bfloat16 table for CPUs without AVX512_BF16: vdpbf16ps emulated with float32
// multiply-adds (bf16_microkernels_avx512.hpp). Compiled with -mavx512f/dq/bw/vl.

#define LLM_UTILS_BF16_NATIVE 0
#include "cpu/bf16_microkernels_avx512.hpp"

namespace llm_utils::cpu {

const Bf16Microkernels& avx512_bf16_emulated_microkernels() {
  static const Bf16Microkernels table{Isa::avx512,       gemm,  round,          round_pairs,
                                      interleave,        widen, online_softmax, exp_centered_each,
                                      softmax_grad_pairs};
  return table;
}

}  // namespace llm_utils::cpu
