// The AVX2 bfloat16 table: vdpbf16ps emulated with float32 multiply-adds on the widened pairs
// (the same order and bits as bf16_microkernels_avx512.hpp), 8 lanes. gemm keeps an MR x 16
// tile (MR <= 4: 8 accumulators, 4 B halves, 2 A halves of the 16 registers); a partial last
// vector of a row is loaded and stored under a lane mask. Compiled with -mavx2 -mfma.

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/bf16_microkernels.hpp"
#include "cpu/bf16_steps_by_rows.hpp"

namespace llm_utils::cpu {
namespace {

constexpr int kLanes = 8;
constexpr int kMaxRows = 4;
constexpr int kVectors = 2;

inline __m256i lane_mask(int64_t remaining) {
  const int active = static_cast<int>(std::min<int64_t>(std::max<int64_t>(remaining, 0), kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(active), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline uint32_t load_pair(const bfloat16* a, bool half) {
  if (half) return a[0].bits;
  uint32_t u;
  std::memcpy(&u, a, sizeof u);
  return u;
}

inline __m256 dot_pairs(__m256 acc, __m256i a_pair, __m256i b_pairs) {
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const __m256 a1 = _mm256_castsi256_ps(_mm256_and_si256(a_pair, high));
  const __m256 b1 = _mm256_castsi256_ps(_mm256_and_si256(b_pairs, high));
  const __m256 a0 = _mm256_castsi256_ps(_mm256_slli_epi32(a_pair, 16));
  const __m256 b0 = _mm256_castsi256_ps(_mm256_slli_epi32(b_pairs, 16));
  return _mm256_fmadd_ps(a0, b0, _mm256_fmadd_ps(a1, b1, acc));
}

// Columns [0, 16) of the tile, lanes of vector v under mask[v].
template <int MR>
void gemm_tile(int64_t k, float alpha, const bfloat16* a, int64_t lda, const bfloat16* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate, const __m256i* mask) {
  __m256 acc[MR][kVectors];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = _mm256_setzero_ps();
    acc[r][1] = _mm256_setzero_ps();
  }
  const int64_t pairs = (k + 1) / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const bfloat16* b_row = b + p * ldb;
    const bool half = 2 * p + 1 == k;
    __m256i bv[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      bv[v] = _mm256_maskload_epi32(reinterpret_cast<const int*>(b_row + v * 2 * kLanes), mask[v]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m256i a_rp =
          _mm256_set1_epi32(static_cast<int>(load_pair(a + r * lda + 2 * p, half)));
      acc[r][0] = dot_pairs(acc[r][0], a_rp, bv[0]);
      acc[r][1] = dot_pairs(acc[r][1], a_rp, bv[1]);
    }
  }
  const __m256 alpha_v = _mm256_set1_ps(alpha);
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < kVectors; ++v) {
      float* c_at = c + r * ldc + v * kLanes;
      __m256 result = _mm256_mul_ps(acc[r][v], alpha_v);
      if (accumulate) result = _mm256_add_ps(_mm256_maskload_ps(c_at, mask[v]), result);
      _mm256_maskstore_ps(c_at, mask[v], result);
    }
  }
}

using TileFn = void (*)(int64_t, float, const bfloat16*, int64_t, const bfloat16*, int64_t, float*,
                        int64_t, bool, const __m256i*);

TileFn tile_for(int mr) {
  switch (mr) {
    case 1:
      return gemm_tile<1>;
    case 2:
      return gemm_tile<2>;
    case 3:
      return gemm_tile<3>;
    default:
      return gemm_tile<4>;
  }
}

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const bfloat16* a, int64_t lda,
          const bfloat16* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kPanel = kVectors * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t nc = std::min(kPanel, n - j0);
    const __m256i mask[kVectors] = {lane_mask(nc), lane_mask(nc - kLanes)};
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, m - i0));
      tile_for(mr)(k, alpha, a + i0 * lda, lda, b + 2 * j0, ldb, c + i0 * ldc + j0, ldc, accumulate,
                   mask);
    }
  }
}

// 8 floats to their bfloat16 bits, one per 32-bit lane: nearest even, NaN to 0x7FC0.
inline __m256i round_lanes(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan);
}

void round(const float* src, int64_t n, bfloat16* dst) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256i r = round_lanes(_mm256_loadu_ps(src + j));
    // Pack the eight 32-bit lanes' low halves: within each 128-bit half, then the halves.
    const __m256i packed = _mm256_packus_epi32(r, r);
    const __m128i lo = _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), lo);
  }
  for (; j < n; ++j) dst[j] = bfloat16(src[j]);
}

void round_pairs(const float* row0, const float* row1, int64_t n, bfloat16* dst) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256i first = round_lanes(_mm256_loadu_ps(row0 + j));
    const __m256i second =
        row1 != nullptr ? round_lanes(_mm256_loadu_ps(row1 + j)) : _mm256_setzero_si256();
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * j),
                        _mm256_or_si256(first, _mm256_slli_epi32(second, 16)));
  }
  for (; j < n; ++j) {
    dst[2 * j] = bfloat16(row0[j]);
    dst[2 * j + 1] = row1 != nullptr ? bfloat16(row1[j]) : bfloat16();
  }
}

void interleave(const bfloat16* row0, const bfloat16* row1, int64_t n, bfloat16* dst) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256i first =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row0 + j)));
    const __m256i second =
        row1 != nullptr
            ? _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row1 + j)))
            : _mm256_setzero_si256();
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * j),
                        _mm256_or_si256(first, _mm256_slli_epi32(second, 16)));
  }
  for (; j < n; ++j) {
    dst[2 * j] = row0[j];
    dst[2 * j + 1] = row1 != nullptr ? row1[j] : bfloat16();
  }
}

void widen(const bfloat16* src, int64_t n, float* dst) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256i h =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j)));
    _mm256_storeu_ps(dst + j, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
  }
  for (; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

using Steps = Bf16StepsByRows<avx2_microkernels, round, round_pairs>;

}  // namespace

const Bf16Microkernels& avx2_bf16_microkernels() {
  static const Bf16Microkernels table{Isa::avx2,
                                      gemm,
                                      round,
                                      round_pairs,
                                      interleave,
                                      widen,
                                      Steps::online_softmax,
                                      Steps::exp_centered_each,
                                      Steps::softmax_grad_pairs};
  return table;
}

}  // namespace llm_utils::cpu
