// AVX-512 microkernels (compiled with -mavx512f -mavx2 -mfma; only called when the CPU has
// AVX-512F, see microkernels.cpp).
//
// gemm: a register-blocked MR x (NV*16) tile of C is held in zmm accumulators while the k loop
// broadcasts one element of A per row and loads NV vectors of the row of B. MR = 6 and NV = 4
// use 24 accumulators + 4 B vectors + 1 broadcast of the 32 registers. The last vector of a row
// is masked, so any n works without padding.
//
// exp: exp(x) = 2^n * exp(r), n = round(x * log2(e)), r = x - n * ln2 in two steps
// (Cody-Waite), exp(r) by a degree-6 polynomial fitted for relative error on |r| <= ln2/2 (3.1e-9,
// microkernels.hpp), and 2^n applied with vscalefps, which handles subnormal results. Measured
// max error against double-precision exp over [-87, 88]: see tests/test_flash.cpp (<= 2 ulp).
// Results round to 0 from x < -103.97 (-inf included), x is clamped at 88.72 from above, NaN
// stays NaN.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/microkernels.hpp"
#include "cpu/online_softmax_avx512.hpp"
#include "cpu/tile_epilogue_avx512.hpp"

namespace llm_utils::cpu {
namespace avx512_impl {
namespace {

constexpr int kLanes = 16;
constexpr int kMaxRows = 6;
constexpr int kMaxVectors = 4;

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= kLanes ? static_cast<__mmask16>(0xFFFF)
                             : static_cast<__mmask16>((1u << remaining) - 1u);
}

// Every loop over MR or NV is unrolled completely (the pragmas), so the compiler keeps acc in
// registers; a loop left rolled makes GCC keep acc in memory and store it every iteration.
template <int MR, int NV>
void gemm_tile(int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc, bool accumulate, __mmask16 last_mask) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* b_row = b + p * ldb;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_ps(b_row + v * kLanes);
    bv[NV - 1] = _mm512_maskz_loadu_ps(last_mask, b_row + (NV - 1) * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 a_rp = _mm512_set1_ps(a[r * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a_rp, bv[v], acc[r][v]);
    }
  }
  store_tile(acc, alpha, c, ldc, accumulate, last_mask);
}

using TileFn = void (*)(int64_t, float, const float*, int64_t, const float*, int64_t, float*,
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
    case 5:
      return tile_for_vectors<5>(nv);
    default:
      return tile_for_vectors<6>(nv);
  }
}

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kPanel = kMaxVectors * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t nc = std::min(kPanel, n - j0);
    const int nv = static_cast<int>((nc + kLanes - 1) / kLanes);
    const __mmask16 last = tail_mask(nc - static_cast<int64_t>(nv - 1) * kLanes);
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, m - i0));
      tile_for(mr, nv)(k, alpha, a + i0 * lda, lda, b + j0, ldb, c + i0 * ldc + j0, ldc, accumulate,
                       last);
    }
  }
}

// One 16 x 16 block: dst row j = src column j. Rows are paired by unpack (within 128-bit
// lanes), then 4 x 4 blocks formed by shuffle_ps, then the 128-bit lanes regrouped twice by
// shuffle_f32x4: after the first two steps u[4g + c], lane L, holds column 4L + c of rows
// 4g .. 4g + 3, and output row 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 x = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 y = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 x2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 y2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    _mm512_storeu_ps(dst + (0 + c) * ldd, _mm512_shuffle_f32x4(x, x2, 0x88));
    _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(x, x2, 0xDD));
    _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(y, y2, 0x88));
    _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(y, y2, 0xDD));
  }
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  int64_t r0 = 0;
  for (; r0 + 16 <= rows; r0 += 16) {
    int64_t c0 = 0;
    for (; c0 + 16 <= cols; c0 += 16) {
      transpose16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
    }
    for (; c0 < cols; ++c0) {
      for (int64_t r = r0; r < r0 + 16; ++r) dst[c0 * ldd + r] = src[r * lds + c0];
    }
  }
  for (; r0 < rows; ++r0) {
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
  }
}

float dot(const float* a, const float* b, int64_t n) {
  // gemm_tile's accumulator for one element: zero, then one fused multiply-add per p, in order.
  float acc = 0.0f;
  for (int64_t p = 0; p < n; ++p) acc = std::fma(a[p], b[p], acc);
  return acc;
}

inline __m512 exp_ps(__m512 x) {
  // The clamp below is where every result rounds to 0 anyway (2^-216 * p), so -inf and
  // anything under -104 come out exactly 0 without a compare and blend: 12 vector operations.
  const __m512 lo = _mm512_set1_ps(kExpClampLow);
  const __m512 hi = _mm512_set1_ps(kExpClampHigh);
  // max/min return their second operand when either is NaN, so NaN passes through.
  const __m512 t = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(kExpC6);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpC2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  // 2^n applied in one rounding, subnormal results included.
  return _mm512_scalef_ps(p, n);
}

float row_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __mmask16 nan = 0;
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 v = _mm512_mask_loadu_ps(m, mask, x + j);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    m = _mm512_max_ps(m, v);
  }
  return nan != 0 ? std::numeric_limits<float>::quiet_NaN() : _mm512_reduce_max_ps(m);
}

float exp_centered_sum(float* x, int64_t n, float scale, float center, float offset) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512 c = _mm512_set1_ps(center);
  const __m512 off = _mm512_set1_ps(offset);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + j);
    // A rounded product, then the subtraction: not fmsub (see microkernels.hpp).
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(v, c), s), off));
    _mm512_mask_storeu_ps(x + j, mask, e);
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

void exp_centered_each(float* x, int64_t n, float scale, const float* centers,
                       const float* offsets) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + j);
    const __m512 c =
        centers != nullptr ? _mm512_maskz_loadu_ps(mask, centers + j) : _mm512_setzero_ps();
    const __m512 off = _mm512_maskz_loadu_ps(mask, offsets + j);
    const __mmask16 masked_row = _mm512_cmp_ps_mask(off, minus_inf, _CMP_EQ_OQ);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(v, c), s), off));
    _mm512_mask_storeu_ps(x + j, mask, _mm512_mask_blend_ps(masked_row, e, _mm512_setzero_ps()));
  }
}

void softmax_grad(const float* p, float* dp, const float* dsum, int64_t n) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 pv = _mm512_maskz_loadu_ps(mask, p + j);
    const __m512 diff =
        _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, dp + j), _mm512_maskz_loadu_ps(mask, dsum + j));
    _mm512_mask_storeu_ps(dp + j, mask, _mm512_mul_ps(pv, diff));
  }
}

// Fused over the tile (online_softmax_avx512.hpp), with this table's exp; the exponentials
// are exp_centered_sum's, bit for bit (x - 0 is x).
void online_softmax(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                    float* l, float* acc, int64_t ld_acc, int64_t acc_cols) {
  const __m512 vscale = _mm512_set1_ps(scale);
  // A rounded product: not fused with anything (see microkernels.hpp).
  const auto scaled_exp = [vscale](__m512 diff) { return exp_ps(_mm512_mul_ps(diff, vscale)); };
  const auto store = [s, ld](int64_t r, int64_t j, __mmask16 mask, __m512 e) {
    if (mask == 0xFFFF) {  // a constant in the full-groups loops: a plain store
      _mm512_storeu_ps(s + r * ld + j, e);
    } else {
      _mm512_mask_storeu_ps(s + r * ld + j, mask, e);
    }
  };
  const auto clear = [s, ld, cols](int64_t r) { std::fill(s + r * ld, s + r * ld + cols, 0.0f); };
  online_softmax_avx512(s, ld, rows, cols, scaled_exp, store, clear, m, l, acc, ld_acc, acc_cols);
}

void softcap(float* x, int64_t n, float scale, float cap, float* grad) {
  const __m512 vscale = _mm512_set1_ps(scale), vcap = _mm512_set1_ps(cap);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 sign_bit = _mm512_set1_ps(-0.0f);
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = tail_mask(n - j);
    const __m512 z = _mm512_div_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + j), vscale), vcap);
    const __m512 a = _mm512_andnot_ps(sign_bit, z);  // |z|
    // Large |z|: (1 - e) / (1 + e), e = exp(-2 |z|).
    const __m512 e = exp_ps(_mm512_mul_ps(a, _mm512_set1_ps(-2.0f)));
    const __m512 big = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    // Small |z|: |z| (1 + z^2 (c3 + z^2 (c5 + z^2 (c7 + z^2 c9)))).
    const __m512 z2 = _mm512_mul_ps(a, a);
    __m512 poly = _mm512_fmadd_ps(_mm512_set1_ps(kTanhC9), z2, _mm512_set1_ps(kTanhC7));
    poly = _mm512_fmadd_ps(poly, z2, _mm512_set1_ps(kTanhC5));
    poly = _mm512_fmadd_ps(poly, z2, _mm512_set1_ps(kTanhC3));
    poly = _mm512_fmadd_ps(poly, z2, one);
    const __m512 small = _mm512_mul_ps(a, poly);
    const __mmask16 use_small =
        _mm512_cmp_ps_mask(a, _mm512_set1_ps(kTanhPolynomialBelow), _CMP_LT_OQ);
    // The sign of z back on |tanh|.
    const __m512 t =
        _mm512_or_ps(_mm512_mask_blend_ps(use_small, big, small), _mm512_and_ps(sign_bit, z));
    _mm512_mask_storeu_ps(x + j, mask, _mm512_mul_ps(vcap, t));
    if (grad != nullptr) {
      _mm512_mask_storeu_ps(grad + j, mask, _mm512_sub_ps(one, _mm512_mul_ps(t, t)));
    }
  }
}

}  // namespace
}  // namespace avx512_impl

const Microkernels& avx512_microkernels() {
  static const Microkernels table{Isa::avx512,
                                  avx512_impl::gemm,
                                  avx512_impl::transpose,
                                  avx512_impl::dot,
                                  avx512_impl::row_max,
                                  avx512_impl::exp_centered_sum,
                                  avx512_impl::exp_centered_each,
                                  avx512_impl::softmax_grad,
                                  avx512_impl::online_softmax,
                                  avx512_impl::softcap};
  return table;
}

}  // namespace llm_utils::cpu
