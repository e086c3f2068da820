// The AMX table: the GEMM on AMX-BF16 tiles (amx_gemm.hpp's blocking over amx_tiles.hpp's
// instructions), everything else the AVX512_BF16 table's. Compiled with the AVX-512 flags,
// -mavx512bf16, -mamx-tile and -mamx-bf16; only called when cpu_supports(Isa::amx), which also
// asked Linux for the tile state (microkernels.cpp).

#include "cpu/amx_gemm.hpp"
#include "cpu/amx_tiles.hpp"
#include "cpu/bf16_microkernels.hpp"

namespace llm_utils::cpu {
namespace {

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
          const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  amx::gemm<amx::HardwareTiles>(m, n, k, alpha, a, lda, b, ldb, c, ldc, accumulate);
}

}  // namespace

const Bf16Microkernels& amx_bf16_microkernels() {
  static const Bf16Microkernels table = [] {
    Bf16Microkernels t = avx512_bf16_native_microkernels();
    t.isa = Isa::amx;
    t.gemm = gemm;
    return t;
  }();
  return table;
}

}  // namespace llm_utils::cpu
