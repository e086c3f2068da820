#pragma once
// What the CUDA kernels share: element types widened and narrowed, the tensor-core mma and its
// fragment layout (mma_layout.hpp, testable on the host), masking, and launch checks.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/flash_cuda.hpp"
#include "cuda/mma_layout.hpp"

namespace llm_utils::cuda_kernels {

constexpr float kMinusInf = -INFINITY;

// ---------------------------------------------------------------- element types

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);  // round to nearest even, as PyTorch
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// ---------------------------------------------------------------- tensor cores

// Two 16-bit values packed in one 32-bit register, the low one first (as the mma fragments hold
// consecutive elements).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (low half), .y = hi
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Two 16-bit elements from anywhere, packed.
template <typename T>
__device__ __forceinline__ uint32_t pack_elements(T lo, T hi) {
  const uint16_t l = *reinterpret_cast<const uint16_t*>(&lo);
  const uint16_t h = *reinterpret_cast<const uint16_t*>(&hi);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

// D (16 x 8, float32) += A (16 x 16) B (16 x 8), A and B bfloat16 or float16, in the fragment
// layout of mma_layout.hpp: a[4], b[2] packed pairs, c[4] floats.
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16x8x16<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                           const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16x8x16<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                    const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---------------------------------------------------------------- the problem

// The mask's element (g, i, j), 0 without a mask.
__device__ __forceinline__ float mask_at(const Mask& m, int64_t g, int64_t i, int64_t j) {
  if (m.data == nullptr) return 0.0f;
  return m.data[(g / m.heads) * m.outer + (g % m.heads) * m.head + i * m.row + j * m.col];
}

// The end of query i's visible keys: all of them, or up to i + query_offset under the causal
// mask.
__device__ __forceinline__ int64_t visible_end(const Problem& p, int64_t i) {
  if (!p.causal) return p.m;
  const int64_t end = i + p.query_offset + 1;
  return end < 0 ? 0 : (end > p.m ? p.m : end);
}

__device__ __forceinline__ int64_t kv_of(const Problem& p, int64_t h) {
  return h / (p.heads / p.kv_heads);
}

// Sum over the four lanes that share a row of an mma fragment (lanes 4g .. 4g + 3).
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}

// The launch's error, as a message naming `what`; empty on success.
inline std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return {};
  return std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace llm_utils::cuda_kernels
