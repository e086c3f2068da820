#pragma once
// The AVX-512 bfloat16 microkernels, included by two translation units:
// bf16_microkernels_avx512bf16.cpp with LLM_UTILS_BF16_NATIVE 1 (compiled with -mavx512bf16:
// vdpbf16ps) and bf16_microkernels_avx512.cpp with 0 (AVX-512F only: each pair widened to two
// float32 vectors and two multiply-adds, the instruction's order, the same bits on normal
// numbers). Everything is in an anonymous namespace: each unit has its own copy.
//
// gemm: an MR x (NV * 16) tile of C in zmm accumulators; per pair row of B, NV vectors of 16
// pairs and one broadcast pair of A per row. Native: MR = 6, NV = 4 (24 accumulators).
// Emulated: each B vector becomes two (its first and second elements), so MR = 4 keeps the
// 16 accumulators, 8 B halves and 2 A halves in the 32 registers.

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/online_softmax_avx512.hpp"
#include "cpu/tile_epilogue_avx512.hpp"

#ifndef LLM_UTILS_BF16_NATIVE
#error "define LLM_UTILS_BF16_NATIVE to 0 or 1 before including this file"
#endif

namespace llm_utils::cpu {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxRows = LLM_UTILS_BF16_NATIVE ? 6 : 4;
constexpr int kMaxVectors = 4;

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= kLanes ? static_cast<__mmask16>(0xFFFF)
                             : static_cast<__mmask16>((1u << remaining) - 1u);
}

// The pair (a[0], a[1]) as one 32-bit lane; with `half`, (a[0], 0) (the last of an odd k).
inline uint32_t load_pair(const bfloat16* a, bool half) {
  if (half) return a[0].bits;
  uint32_t u;
  std::memcpy(&u, a, sizeof u);
  return u;
}

// acc += the pairs' products: the second elements' first, then the first elements'.
inline __m512 dot_pairs(__m512 acc, __m512i a_pair, __m512i b_pairs) {
#if LLM_UTILS_BF16_NATIVE
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a_pair),
                          reinterpret_cast<__m512bh>(b_pairs));
#else
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const __m512 a1 = _mm512_castsi512_ps(_mm512_and_si512(a_pair, high));
  const __m512 b1 = _mm512_castsi512_ps(_mm512_and_si512(b_pairs, high));
  const __m512 a0 = _mm512_castsi512_ps(_mm512_slli_epi32(a_pair, 16));
  const __m512 b0 = _mm512_castsi512_ps(_mm512_slli_epi32(b_pairs, 16));
  return _mm512_fmadd_ps(a0, b0, _mm512_fmadd_ps(a1, b1, acc));
#endif
}

// Loops over MR and NV fully unrolled, so acc stays in registers (as the float32 gemm_tile).
template <int MR, int NV>
void gemm_tile(int64_t k, float alpha, const bfloat16* a, int64_t lda, const bfloat16* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate, __mmask16 last_mask) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const int64_t pairs = (k + 1) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const bfloat16* b_row = b + p * ldb;
    const bool half = 2 * p + 1 == k;
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_si512(b_row + v * 2 * kLanes);
    bv[NV - 1] = _mm512_maskz_loadu_epi32(last_mask, b_row + (NV - 1) * 2 * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i a_rp =
          _mm512_set1_epi32(static_cast<int>(load_pair(a + r * lda + 2 * p, half)));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = dot_pairs(acc[r][v], a_rp, bv[v]);
    }
  }
  store_tile(acc, alpha, c, ldc, accumulate, last_mask);
}

using TileFn = void (*)(int64_t, float, const bfloat16*, int64_t, const bfloat16*, int64_t, float*,
                        int64_t, bool, __mmask16);

template <int MR>
TileFn tile_for_vectors(int nv) {
  switch (nv) {
    case 1:
      return gemm_tile<MR, 1>;
    case 2:
      return gemm_tile<MR, 2>;
    case 3:
      return gemm_tile<MR, 3>;
    default:
      return gemm_tile<MR, 4>;
  }
}

TileFn tile_for(int mr, int nv) {
  switch (mr) {
    case 1:
      return tile_for_vectors<1>(nv);
    case 2:
      return tile_for_vectors<2>(nv);
    case 3:
      return tile_for_vectors<3>(nv);
    case 4:
      return tile_for_vectors<4>(nv);
#if LLM_UTILS_BF16_NATIVE
    case 5:
      return tile_for_vectors<5>(nv);
    default:
      return tile_for_vectors<6>(nv);
#else
    default:
      return tile_for_vectors<4>(nv);
#endif
  }
}

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
          const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kPanel = kMaxVectors * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t nc = std::min(kPanel, n - j0);
    const int nv = static_cast<int>((nc + kLanes - 1) / kLanes);
    const __mmask16 last = tail_mask(nc - static_cast<int64_t>(nv - 1) * kLanes);
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, m - i0));
      tile_for(mr, nv)(k, alpha, a + i0 * lda, lda, b + 2 * j0, ldb, c + i0 * ldc + j0, ldc,
                       accumulate, last);
    }
  }
}

// 16 floats to the bits of their bfloat16s, one per 32-bit lane (upper halves zero): round to
// nearest even by adding 0x7FFF plus the kept part's lowest bit, NaN to 0x7FC0.
inline __m512i round_lanes(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC0));
}

// The rounding of P and dS inside the fused steps. Native: vcvtneps2bf16 (nearest even; it
// takes subnormal inputs as zero, which vdpbf16ps does to the rounded value anyway, so the
// products are the same; a NaN keeps its payload rather than becoming 0x7FC0).
inline __m256i round_to_halves(__m512 x) {
#if LLM_UTILS_BF16_NATIVE
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x));
#else
  return _mm512_cvtepi32_epi16(round_lanes(x));
#endif
}

void round(const float* src, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512i r = round_lanes(_mm512_maskz_loadu_ps(mask, src + j));
    _mm512_mask_cvtepi32_storeu_epi16(dst + j, mask, r);
  }
}

void round_pairs(const float* row0, const float* row1, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512i first = round_lanes(_mm512_maskz_loadu_ps(mask, row0 + j));
    const __m512i second = row1 != nullptr ? round_lanes(_mm512_maskz_loadu_ps(mask, row1 + j))
                                           : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(dst + 2 * j, mask,
                             _mm512_or_si512(first, _mm512_slli_epi32(second, 16)));
  }
}

void interleave(const bfloat16* row0, const bfloat16* row1, int64_t n, bfloat16* dst) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512i first = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row0 + j));
    const __m512i second = row1 != nullptr
                               ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row1 + j))
                               : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(dst + 2 * j, mask,
                             _mm512_or_si512(first, _mm512_slli_epi32(second, 16)));
  }
}

void widen(const bfloat16* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src + j));
    _mm512_mask_storeu_ps(dst + j, mask, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
  }
}

// 2^x, x <= 0 or NaN: n = round(x), f = x - n in [-1/2, 1/2] (exact), 2^f by a degree-5
// polynomial fitted for relative error (1.7e-7 in float32), 2^n by vscalefps. Below the clamp
// (-inf included) the result rounds to 0; NaN stays NaN (max returns its second operand).
inline __m512 exp2_nonpositive(__m512 x) {
  const __m512 t = _mm512_max_ps(_mm512_set1_ps(-160.0f), x);
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(0.0013273167423903942f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.009671817533671856f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.055507075041532516f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022236466407776f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931470036506653f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// online_softmax's store: P rounded into p (leading dimension ld_p).
struct ProbabilityStore {
  bfloat16* p;
  int64_t ld_p;
  void operator()(int64_t r, int64_t j, __mmask16 mask, __m512 e) const {
    bfloat16* at = p + r * ld_p + j;
    if (mask == 0xFFFF) {  // a constant in the full-groups loops: a plain store
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(at), round_to_halves(e));
    } else {
      _mm256_mask_storeu_epi16(at, mask, round_to_halves(e));
    }
  }
#if LLM_UTILS_BF16_NATIVE
  static constexpr bool kHasPair = true;
  // Columns [j, j + 32): vcvtne2ps2bf16 rounds as vcvtneps2bf16 does, e0 to the low half.
  // About 1% off the bfloat16 forward (N = 4096, d = 64, 2 threads, Zen 4, best of 7,
  // alternating runs: 11.85-11.93 ms against 11.96-12.06).
  void pair(int64_t r, int64_t j, __m512 e0, __m512 e1) const {
    _mm512_storeu_si512(p + r * ld_p + j, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
  }
#endif
};

void online_softmax(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                    float* l, float* acc, int64_t ld_acc, int64_t acc_cols, bfloat16* p,
                    int64_t ld_p) {
  // exp(d * scale) = 2^(d * scale * log2 e); every d here is <= 0 (a difference from the max).
  const __m512 scale_log2e = _mm512_set1_ps(scale * 1.44269504088896341f);
  const auto scaled_exp = [scale_log2e](__m512 diff) {
    return exp2_nonpositive(_mm512_mul_ps(diff, scale_log2e));
  };
  const ProbabilityStore store{p, ld_p};
  const auto clear = [p, ld_p, cols](int64_t r) {
    std::fill(p + r * ld_p, p + r * ld_p + cols, bfloat16());
  };
  online_softmax_avx512(s, ld, rows, cols, scaled_exp, store, clear, m, l, acc, ld_acc, acc_cols);
}

void exp_centered_each(float* x, int64_t n, float scale, const float* centers, const float* offsets,
                       bfloat16* p) {
  const __m512 s = _mm512_set1_ps(scale * 1.44269504088896341f);
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + j);
    const __m512 c =
        centers != nullptr ? _mm512_maskz_loadu_ps(mask, centers + j) : _mm512_setzero_ps();
    const __m512 off = _mm512_maskz_loadu_ps(mask, offsets + j);
    const __mmask16 masked_row = _mm512_cmp_ps_mask(off, minus_inf, _CMP_EQ_OQ);
    // exp((v - c) * scale - off) = 2^((v - c) * scale log2 e - off log2 e)
    const __m512 e = _mm512_mask_blend_ps(
        masked_row,
        exp2_nonpositive(_mm512_fnmadd_ps(off, log2e, _mm512_mul_ps(_mm512_sub_ps(v, c), s))),
        _mm512_setzero_ps());
    _mm512_mask_storeu_ps(x + j, mask, e);
    _mm256_mask_storeu_epi16(p + j, mask, round_to_halves(e));
  }
}

void softmax_grad_pairs(const float* p0, const float* p1, const float* dp0, const float* dp1,
                        const float* dsum, int64_t n, bfloat16* a0, bfloat16* a1, bfloat16* pairs) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 d = _mm512_maskz_loadu_ps(mask, dsum + j);
    const __m512 ds0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, p0 + j),
                                     _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, dp0 + j), d));
    const __m256i h0 = round_to_halves(ds0);
    _mm256_mask_storeu_epi16(a0 + j, mask, h0);
    __m256i h1 = _mm256_setzero_si256();
    if (p1 != nullptr) {
      const __m512 ds1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, p1 + j),
                                       _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, dp1 + j), d));
      h1 = round_to_halves(ds1);
      _mm256_mask_storeu_epi16(a1 + j, mask, h1);
    }
    const __m512i paired = _mm512_or_si512(_mm512_cvtepu16_epi32(h0),
                                           _mm512_slli_epi32(_mm512_cvtepu16_epi32(h1), 16));
    _mm512_mask_storeu_epi32(pairs + 2 * j, mask, paired);
  }
}

}  // namespace
}  // namespace llm_utils::cpu
