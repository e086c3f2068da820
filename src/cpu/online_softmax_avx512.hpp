#pragma once
// The AVX-512 online-softmax step, shared by the float32 table (microkernels_avx512.cpp: exp to
// float32 in place) and the bfloat16 ones (bf16_microkernels_avx512.hpp: a cheaper exp, P
// stored rounded to bfloat16). Everything in an anonymous namespace: each including unit, with
// its own target flags, gets its own copy.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace llm_utils::cpu {
namespace {

// Lane i of the result: the `Op` reduction of the 16 lanes of v[i] (v is clobbered). Four levels
// of 128-bit and in-lane shuffles, 45 operations for 16 rows where 16 separate horizontal
// reductions take about 160; the levels leave row perm[i] in lane i (a 4 x 4 transpose), which
// the last permute undoes.
template <typename Op>
inline __m512 reduce16(__m512* v, Op op) {
  for (int k = 0; k < 8; ++k) {  // lanes 0-7: row 2k's halves combined; 8-15: row 2k+1's
    v[k] = op(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int k = 0; k < 4; ++k) {  // one 128-bit lane per row, 4 partials each
    v[k] = op(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
              _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int k = 0; k < 2; ++k) {  // 2 partials per row
    v[k] = op(_mm512_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_ps(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  const __m512 r = op(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i perm = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  return _mm512_permutexvar_ps(perm, r);
}

// Whether a Store also has pair(r, j, e0, e1), said by a member kHasPair: columns [j, j + 32)
// of row r from two vectors at once (one vcvtne2ps2bf16 and one 64-byte store where two
// conversions and two stores would do), used where every group is full.
template <typename Store, typename = void>
constexpr bool kStoresPairs = false;
template <typename Store>
constexpr bool kStoresPairs<Store, std::void_t<decltype(Store::kHasPair)>> = Store::kHasPair;

// Microkernels::online_softmax fused over the tile, 16 rows at a time: the rows' maxima (one
// batched reduction), the new maxima and corrections as vectors (the vector exp, no scalar exp
// per row), each row's exponentials, their sums (one batched reduction), the accumulators'
// scaling; no call per row. The exponentials go to `store` rather than back into s:
//   scaled_exp(d)           exp(d * scale) of 16 differences d = s - m' (or m - m')
//   store(r, j, mask, e)    the exponentials of row r, columns [j, j + 16) under mask (and,
//                           optionally, store.pair: kStoresPairs)
//   clear(r)                row r has no visible key yet: its probabilities are 0
template <typename ScaledExp, typename Store, typename Clear>
void online_softmax_avx512(float* s, int64_t ld, int64_t rows, int64_t cols, ScaledExp scaled_exp,
                           Store store, Clear clear, float* m, float* l, float* acc, int64_t ld_acc,
                           int64_t acc_cols) {
  constexpr int kLanes = 16;
  constexpr int kUnroll = 4;
  // Lanes [0, remaining): all 16 from 16 on, none at 0 or below.
  const auto tail_mask = [](int64_t remaining) {
    if (remaining <= 0) return static_cast<__mmask16>(0);
    return remaining >= kLanes ? static_cast<__mmask16>(0xFFFF)
                               : static_cast<__mmask16>((1u << remaining) - 1u);
  };
  const __m512 vminus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const auto max_op = [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); };
  const auto add_op = [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); };
  alignas(64) float new_max[kLanes], correction[kLanes];
  __m512 part[kLanes];  // one row's partial max, then partial sum, per lane
  // The columns as groups of kUnroll vectors, all full but the last, whose lane masks are
  // computed once here rather than per vector (cols is the same for every row).
  constexpr int64_t kGroup = kUnroll * kLanes;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  __mmask16 last_masks[kUnroll];
  for (int u = 0; u < kUnroll; ++u) {
    last_masks[u] = tail_mask(cols - (groups - 1) * kGroup - u * kLanes);
  }
  const auto group_mask = [&](int64_t group, int u) {
    return group + 1 < groups ? static_cast<__mmask16>(0xFFFF) : last_masks[u];
  };
  // With every group full (cols a multiple of 64: the forward's 128-key steps) the loops below
  // take the unmasked loads and stores (`full`); the masked ones otherwise. The same values.
  const bool full = cols % kGroup == 0;
  const auto mask_of = [&](int64_t group, int u, auto is_full) {
    if constexpr (decltype(is_full)::value) return static_cast<__mmask16>(0xFFFF);
    return group_mask(group, u);
  };
  // The max of one row's scores (16 lanes of partial maxima).
  const auto row_max = [&](const float* row, auto is_full) {
    __m512 maxima[kUnroll];
#pragma GCC unroll 4
    for (int u = 0; u < kUnroll; ++u) maxima[u] = vminus_inf;
    for (int64_t group = 0; group < groups; ++group) {
#pragma GCC unroll 4
      for (int u = 0; u < kUnroll; ++u) {
        const float* at = row + group * kGroup + u * kLanes;
        __m512 v;
        if constexpr (decltype(is_full)::value) {
          v = _mm512_loadu_ps(at);
        } else {
          v = _mm512_mask_loadu_ps(vminus_inf, group_mask(group, u), at);
        }
        maxima[u] = _mm512_max_ps(v, maxima[u]);
      }
    }
    return _mm512_max_ps(_mm512_max_ps(maxima[0], maxima[1]), _mm512_max_ps(maxima[2], maxima[3]));
  };
  // One row's exponentials, stored, and their sum (16 lanes of partial sums). Four vectors at a
  // time, each with its own partial sum: four independent exp chains in flight (one at a time
  // leaves the FMA units waiting on its latency, 3.7x slower on Zen 5).
  const auto exp_row = [&](const float* row, int64_t r, __m512 center, auto is_full) {
    __m512 sums[kUnroll];
#pragma GCC unroll 4
    for (int u = 0; u < kUnroll; ++u) sums[u] = _mm512_setzero_ps();
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t j = group * kGroup;
      __m512 e[kUnroll];
#pragma GCC unroll 4
      for (int u = 0; u < kUnroll; ++u) {
        const float* at = row + j + u * kLanes;
        __m512 v;
        if constexpr (decltype(is_full)::value) {
          v = _mm512_loadu_ps(at);
        } else {
          v = _mm512_maskz_loadu_ps(group_mask(group, u), at);
        }
        e[u] = scaled_exp(_mm512_sub_ps(v, center));
      }
      constexpr bool paired = decltype(is_full)::value && kStoresPairs<Store>;
      // Two conditions, the one on Store alone outside: Clang checks a discarded branch whose
      // condition still depends on this lambda's parameter, and Store may have no pair.
      if constexpr (kStoresPairs<Store>) {
        if constexpr (decltype(is_full)::value) {
#pragma GCC unroll 2
          for (int u = 0; u < kUnroll; u += 2) store.pair(r, j + u * kLanes, e[u], e[u + 1]);
        }
      }
#pragma GCC unroll 4
      for (int u = 0; u < kUnroll; ++u) {
        const __mmask16 mask = mask_of(group, u, is_full);  // none past cols: no-op store, add
        if constexpr (!paired) store(r, j + u * kLanes, mask, e[u]);
        if constexpr (decltype(is_full)::value) {
          sums[u] = _mm512_add_ps(sums[u], e[u]);
        } else {
          sums[u] = _mm512_mask_add_ps(sums[u], mask, sums[u], e[u]);
        }
      }
    }
    return _mm512_add_ps(_mm512_add_ps(sums[0], sums[1]), _mm512_add_ps(sums[2], sums[3]));
  };
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, rows - r0);
    const __mmask16 row_mask = tail_mask(n);
    float* s0 = s + r0 * ld;
    for (int64_t r = 0; r < kLanes; ++r) {
      __m512 mx = vminus_inf;
      if (r < n) {
        // max(v, mx) returns mx where v is NaN: the maxima skip NaN scores, which then make
        // the row's exponentials, and so l, NaN below; no per-vector NaN test here.
        mx =
            full ? row_max(s0 + r * ld, std::true_type{}) : row_max(s0 + r * ld, std::false_type{});
      }
      part[r] = mx;
    }
    __m512 tile_max = reduce16(part, max_op);
    // A row whose maximum is -inf skips its exponentials: there (rare: every key hidden so
    // far) look for a NaN the maxima skipped, and make the row's max NaN.
    for (__mmask16 empty = row_mask & _mm512_cmp_ps_mask(tile_max, vminus_inf, _CMP_EQ_OQ);
         empty != 0; empty &= static_cast<__mmask16>(empty - 1)) {
      const int r = __builtin_ctz(empty);
      const float* row = s0 + r * ld;
      if (std::any_of(row, row + cols, [](float x) { return x != x; })) {
        tile_max = _mm512_mask_blend_ps(static_cast<__mmask16>(1u << r), tile_max,
                                        _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
      }
    }
    const __m512 old_max = _mm512_mask_loadu_ps(vminus_inf, row_mask, m + r0);
    // m' = tile max where it is greater, or NaN; else the old max.
    const __mmask16 take = _mm512_cmp_ps_mask(tile_max, old_max, _CMP_GT_OQ) |
                           _mm512_cmp_ps_mask(tile_max, tile_max, _CMP_UNORD_Q);
    const __m512 vnew_max = _mm512_mask_blend_ps(take, old_max, tile_max);
    const __mmask16 was_empty = _mm512_cmp_ps_mask(old_max, vminus_inf, _CMP_EQ_OQ);
    // exp((m - m') * scale), 0 where m was -inf (and where m' is, whose rows are skipped).
    const __m512 vcorrection = _mm512_mask_blend_ps(
        was_empty, scaled_exp(_mm512_sub_ps(old_max, vnew_max)), _mm512_setzero_ps());
    _mm512_store_ps(new_max, vnew_max);
    _mm512_store_ps(correction, vcorrection);
    // Rows with a visible key so far; the others keep s = 0 and their m, l, acc.
    const __mmask16 live = row_mask & _mm512_cmp_ps_mask(vnew_max, vminus_inf, _CMP_NEQ_UQ);
    for (int64_t r = 0; r < kLanes; ++r) {
      __m512 sum = _mm512_setzero_ps();
      if (r < n) {
        float* row = s0 + r * ld;
        if ((live >> r & 1u) == 0) {
          clear(r0 + r);  // every key so far is hidden from this query: nothing to add
        } else {
          const __m512 center = _mm512_set1_ps(new_max[r]);
          sum = full ? exp_row(row, r0 + r, center, std::true_type{})
                     : exp_row(row, r0 + r, center, std::false_type{});
          const float c = correction[r];
          if (c != 1.0f) {
            float* acc_row = acc + (r0 + r) * ld_acc;
            const __m512 vc = _mm512_set1_ps(c);
            for (int64_t j = 0; j < acc_cols; j += kLanes) {
              const __mmask16 mask = tail_mask(acc_cols - j);
              _mm512_mask_storeu_ps(acc_row + j, mask,
                                    _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, acc_row + j), vc));
            }
          }
        }
      }
      part[r] = sum;
    }
    const __m512 tile_sum = reduce16(part, add_op);
    const __m512 old_sum = _mm512_maskz_loadu_ps(row_mask, l + r0);
    _mm512_mask_storeu_ps(l + r0, live, _mm512_fmadd_ps(old_sum, vcorrection, tile_sum));
    // A NaN score the maxima skipped made its row's sum NaN: its max is NaN too, as the
    // contract says (a NaN max stays NaN in later tiles, the sum too).
    const __mmask16 nan_sum = _mm512_cmp_ps_mask(tile_sum, tile_sum, _CMP_UNORD_Q);
    _mm512_mask_storeu_ps(
        m + r0, live,
        _mm512_mask_blend_ps(nan_sum, vnew_max,
                             _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN())));
  }
}

}  // namespace
}  // namespace llm_utils::cpu
