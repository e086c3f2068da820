// AVX2 + FMA microkernels (compiled with -mavx2 -mfma; only called when the CPU has both, see
// microkernels.cpp). The same algorithms as the AVX-512 table with 8 lanes and 16 registers.
//
// gemm: a register-blocked MR x (NV*8) tile of C is held in ymm accumulators while the k loop
// broadcasts one element of A per row and loads NV vectors of the row of B. MR = 6 and NV = 2
// use 12 accumulators + 2 B vectors + 1 broadcast of the 16 registers (the classic Haswell
// shape). A last partial vector of a row is loaded and stored under a lane mask.
//
// exp: the AVX-512 table's algorithm and constants (range reduction, degree-7 polynomial), so the
// two give the same bits; only 2^n differs in how it is formed. There is no vscalefps: when
// every lane's result is normal, 2^n is added to the polynomial's exponent field (exact); else
// it is applied as 2^(n >> 1) * 2^(n - (n >> 1)), both factors normal floats for every n the
// clamp allows ([-150, 128]), the first product exact and the second rounding once, as
// vscalefps does, which keeps denormal results right. Error bound: tests/test_flash.cpp
// (<= 2 ulp over [-87, 88]). x < -103.9 gives exactly 0, NaN stays NaN.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/microkernels.hpp"
#include "cpu/online_softmax.hpp"

namespace llm_utils::cpu {
namespace avx2_impl {
namespace {

constexpr int kLanes = 8;
constexpr int kMaxRows = 6;
constexpr int kMaxVectors = 2;

/// Lanes [0, remaining) set (all eight when remaining >= 8), as maskload / maskstore take it.
inline __m256i lane_mask(int64_t remaining) {
  const int active = static_cast<int>(std::min<int64_t>(remaining, kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(active), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

inline float reduce_add(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float reduce_max(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Every loop over MR or NV is unrolled completely (the pragmas), so the compiler keeps acc in
// registers. `kPartial` says the last of the NV vectors is partial (lanes under `last`).
template <int MR, int NV, bool kPartial>
void gemm_tile(int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
               float* c, int64_t ldc, bool accumulate, __m256i last) {
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* b_row = b + p * ldb;
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      bv[v] = kPartial && v == NV - 1 ? _mm256_maskload_ps(b_row + v * kLanes, last)
                                      : _mm256_loadu_ps(b_row + v * kLanes);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 a_rp = _mm256_broadcast_ss(a + r * lda + p);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(a_rp, bv[v], acc[r][v]);
    }
  }
  // No multiply for alpha = 1 (every tile but the backward's scaled dK and dQ): the same bits,
  // but under flush-to-zero, where x * 1 flushed a subnormal accumulator that is now stored.
  if (alpha != 1.0f) {
    const __m256 alpha_v = _mm256_set1_ps(alpha);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_mul_ps(acc[r][v], alpha_v);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* c_row = c + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      float* c_at = c_row + v * kLanes;
      __m256 result = acc[r][v];
      if (kPartial && v == NV - 1) {
        if (accumulate) result = _mm256_add_ps(_mm256_maskload_ps(c_at, last), result);
        _mm256_maskstore_ps(c_at, last, result);
      } else {
        if (accumulate) result = _mm256_add_ps(_mm256_loadu_ps(c_at), result);
        _mm256_storeu_ps(c_at, result);
      }
    }
  }
}

using TileFn = void (*)(int64_t, float, const float*, int64_t, const float*, int64_t, float*,
                        int64_t, bool, __m256i);

template <int MR>
TileFn tile_for_vectors(int nv, bool partial) {
  if (nv == 1) return partial ? gemm_tile<MR, 1, true> : gemm_tile<MR, 1, false>;
  return partial ? gemm_tile<MR, 2, true> : gemm_tile<MR, 2, false>;
}

TileFn tile_for(int mr, int nv, bool partial) {
  switch (mr) {
    case 1:
      return tile_for_vectors<1>(nv, partial);
    case 2:
      return tile_for_vectors<2>(nv, partial);
    case 3:
      return tile_for_vectors<3>(nv, partial);
    case 4:
      return tile_for_vectors<4>(nv, partial);
    case 5:
      return tile_for_vectors<5>(nv, partial);
    default:
      return tile_for_vectors<6>(nv, partial);
  }
}

void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kPanel = kMaxVectors * kLanes;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t nc = std::min(kPanel, n - j0);
    const int nv = static_cast<int>((nc + kLanes - 1) / kLanes);
    const int64_t in_last = nc - static_cast<int64_t>(nv - 1) * kLanes;  // 1..8
    const __m256i last = lane_mask(in_last);
    const bool partial = in_last < kLanes;
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, m - i0));
      tile_for(mr, nv, partial)(k, alpha, a + i0 * lda, lda, b + j0, ldb, c + i0 * ldc + j0, ldc,
                                accumulate, last);
    }
  }
}

// One 8 x 8 block: dst row j = src column j. unpacklo/hi pair rows within 128-bit lanes,
// shuffle_ps forms 4 x 4 blocks per lane, and permute2f128 swaps the lanes into place: after
// the second step u[c] (rows 0-3) and u[4 + c] (rows 4-7) hold, in lane L, column 4L + c.
void transpose8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
    _mm256_storeu_ps(dst + (4 + c) * ldd, _mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
  }
}

void transpose(const float* src, int64_t rows, int64_t cols, int64_t lds, float* dst, int64_t ldd) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) transpose8(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
    for (; c0 < cols; ++c0) {
      for (int64_t r = r0; r < r0 + 8; ++r) dst[c0 * ldd + r] = src[r * lds + c0];
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

inline __m256 exp_ps(__m256 x) {
  // As the AVX-512 exp, bit for bit: the same clamps (where every result rounds to 0 anyway
  // below), the same reduction and polynomial.
  const __m256 lo = _mm256_set1_ps(kExpClampLow);
  const __m256 hi = _mm256_set1_ps(kExpClampHigh);
  // max/min return their second operand when either is NaN, so NaN passes through.
  const __m256 t = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(kExpC6);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC5));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpC2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);
  // Usually every result is a normal float (t >= -86: n >= -124): then 2^n is an add to p's
  // exponent field, exact, the same bits as the product below. A NaN lane converts to INT_MIN,
  // whose shift is 0, so p's NaN passes unchanged.
  const __m256 may_be_subnormal = _mm256_cmp_ps(t, _mm256_set1_ps(-86.0f), _CMP_LT_OQ);
  if (_mm256_movemask_ps(may_be_subnormal) == 0) {
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(ni, 23)));
  }
  // Else 2^n = 2^n1 * 2^n2 with n1 = n >> 1 (arithmetic) and n2 = n - n1, each in [-109, 64]:
  // p * 2^n1 is exact (a normal float), and the one rounding is the last product's.
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 pow1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, pow1), pow2);
}

// A partial vector (n < 8 lanes) goes through a small buffer: maskstore is slow on some CPUs,
// and these tails run once per row.
struct Tail {
  alignas(32) float lanes[kLanes];
  Tail(const float* src, int64_t n, float fill) {
    std::fill(lanes, lanes + kLanes, fill);
    std::memcpy(lanes, src, static_cast<size_t>(n) * sizeof(float));
  }
  __m256 load() const { return _mm256_load_ps(lanes); }
  void store_to(float* dst, __m256 v, int64_t n) {
    _mm256_store_ps(lanes, v);
    std::memcpy(dst, lanes, static_cast<size_t>(n) * sizeof(float));
  }
};

float row_max(const float* x, int64_t n) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
  __m256 m = _mm256_set1_ps(minus_inf);
  __m256 nan = _mm256_setzero_ps();  // lanes that saw a NaN
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256 v = _mm256_loadu_ps(x + j);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  if (j < n) {
    const __m256 v = Tail(x + j, n - j, minus_inf).load();
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  return _mm256_movemask_ps(nan) != 0 ? std::numeric_limits<float>::quiet_NaN() : reduce_max(m);
}

// A rounded product, then the subtraction: not fmsub (see microkernels.hpp).
inline __m256 centered_exponent(__m256 v, __m256 center, __m256 scale, __m256 offset) {
  return _mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(v, center), scale), offset);
}

float exp_centered_sum(float* x, int64_t n, float scale, float center, float offset) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 c = _mm256_set1_ps(center);
  const __m256 off = _mm256_set1_ps(offset);
  __m256 sum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256 e = exp_ps(centered_exponent(_mm256_loadu_ps(x + j), c, s, off));
    _mm256_storeu_ps(x + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < n) {
    // Padding lanes are -inf: exp gives 0 there, so they add nothing to the sum.
    Tail tail(x + j, n - j, -std::numeric_limits<float>::infinity());
    const __m256 e = exp_ps(centered_exponent(tail.load(), c, s, off));
    tail.store_to(x + j, e, n - j);
    sum = _mm256_add_ps(sum, e);
  }
  return reduce_add(sum);
}

inline __m256 exp_each(__m256 v, __m256 c, __m256 off, __m256 s) {
  const __m256 masked_row =
      _mm256_cmp_ps(off, _mm256_set1_ps(-std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
  return _mm256_andnot_ps(masked_row, exp_ps(centered_exponent(v, c, s, off)));
}

void exp_centered_each(float* x, int64_t n, float scale, const float* centers,
                       const float* offsets) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256 c = centers != nullptr ? _mm256_loadu_ps(centers + j) : _mm256_setzero_ps();
    _mm256_storeu_ps(x + j, exp_each(_mm256_loadu_ps(x + j), c, _mm256_loadu_ps(offsets + j), s));
  }
  if (j < n) {
    Tail tail(x + j, n - j, 0.0f);
    const __m256 c =
        centers != nullptr ? Tail(centers + j, n - j, 0.0f).load() : _mm256_setzero_ps();
    const __m256 off = Tail(offsets + j, n - j, 0.0f).load();
    tail.store_to(x + j, exp_each(tail.load(), c, off, s), n - j);
  }
}

void softmax_grad(const float* p, float* dp, const float* dsum, int64_t n) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const __m256 diff = _mm256_sub_ps(_mm256_loadu_ps(dp + j), _mm256_loadu_ps(dsum + j));
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), diff));
  }
  for (; j < n; ++j) dp[j] = p[j] * (dp[j] - dsum[j]);
}

void online_softmax(float* s, int64_t ld, int64_t rows, int64_t cols, float scale, float* m,
                    float* l, float* acc, int64_t ld_acc, int64_t acc_cols) {
  online_softmax_by_rows(row_max, exp_centered_sum, s, ld, rows, cols, scale, m, l, acc, ld_acc,
                         acc_cols);
}

// The AVX-512 table's softcap at 8 lanes (the same operations, so the same bits).
inline __m256 softcap_ps(__m256 x, __m256 scale, __m256 cap, __m256& grad) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 z = _mm256_div_ps(_mm256_mul_ps(x, scale), cap);
  const __m256 a = _mm256_andnot_ps(sign_bit, z);  // |z|
  // Large |z|: (1 - e) / (1 + e), e = exp(-2 |z|).
  const __m256 e = exp_ps(_mm256_mul_ps(a, _mm256_set1_ps(-2.0f)));
  const __m256 big = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  // Small |z|: |z| (1 + z^2 (c3 + z^2 (c5 + z^2 (c7 + z^2 c9)))).
  const __m256 z2 = _mm256_mul_ps(a, a);
  __m256 poly = _mm256_fmadd_ps(_mm256_set1_ps(kTanhC9), z2, _mm256_set1_ps(kTanhC7));
  poly = _mm256_fmadd_ps(poly, z2, _mm256_set1_ps(kTanhC5));
  poly = _mm256_fmadd_ps(poly, z2, _mm256_set1_ps(kTanhC3));
  poly = _mm256_fmadd_ps(poly, z2, one);
  const __m256 small = _mm256_mul_ps(a, poly);
  const __m256 use_small = _mm256_cmp_ps(a, _mm256_set1_ps(kTanhPolynomialBelow), _CMP_LT_OQ);
  // The sign of z back on |tanh|.
  const __m256 t =
      _mm256_or_ps(_mm256_blendv_ps(big, small, use_small), _mm256_and_ps(sign_bit, z));
  grad = _mm256_sub_ps(one, _mm256_mul_ps(t, t));
  return _mm256_mul_ps(cap, t);
}

void softcap(float* x, int64_t n, float scale, float cap, float* grad) {
  const __m256 vscale = _mm256_set1_ps(scale), vcap = _mm256_set1_ps(cap);
  __m256 g;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    _mm256_storeu_ps(x + j, softcap_ps(_mm256_loadu_ps(x + j), vscale, vcap, g));
    if (grad != nullptr) _mm256_storeu_ps(grad + j, g);
  }
  if (j < n) {
    Tail tail(x + j, n - j, 0.0f);
    tail.store_to(x + j, softcap_ps(tail.load(), vscale, vcap, g), n - j);
    if (grad != nullptr) Tail(grad + j, n - j, 0.0f).store_to(grad + j, g, n - j);
  }
}

}  // namespace
}  // namespace avx2_impl

const Microkernels& avx2_microkernels() {
  static const Microkernels table{Isa::avx2,
                                  avx2_impl::gemm,
                                  avx2_impl::transpose,
                                  avx2_impl::dot,
                                  avx2_impl::row_max,
                                  avx2_impl::exp_centered_sum,
                                  avx2_impl::exp_centered_each,
                                  avx2_impl::softmax_grad,
                                  avx2_impl::online_softmax,
                                  avx2_impl::softcap};
  return table;
}

}  // namespace llm_utils::cpu
