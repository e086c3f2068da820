#pragma once
// The CUDA attention kernels (FlashAttention-2 on NVIDIA GPUs) behind a plain C++ interface:
// device pointers, sizes and strides in, no CUDA type in sight, so that the library's dispatch
// (compiled by the host compiler), the standalone tests (tests/cuda) and the PyTorch extension
// used for benchmarks (bench/cuda) all call the same functions. Built only when CMake finds a
// CUDA compiler (src/cuda/CMakeLists.txt); without one, src/kernels/attention_cuda.cpp says so.
//
// Layout, as the CPU kernels' (detail/attention_problem.hpp): q (B, H, N, d), k (B, G, M, d),
// v (B, G, M, dv), out (B, H, N, dv), each with arbitrary batch, head and row strides (in
// elements) and contiguous rows; lse (B, H, N) contiguous float32. Query head h reads key/value
// head h / (H / G). Scores: S = (Q K^T) * scale (+ mask), key j hidden from query i when causal
// and j > i + query_offset; P = softmax(S); out = P V; lse = log(sum exp S). A row that sees no
// key gives out = 0, lse = -inf.
//
// Element types: float32 (SIMT kernels, float32 arithmetic), bfloat16 and float16 (tensor cores,
// mma.sync m16n8k16 with float32 accumulation, P rounded to the input type before P V as
// FlashAttention does, for head dims 64 and 128; other head dims up to 256 on the SIMT kernels).
// Every call is asynchronous on `stream` (a cudaStream_t; null for the default stream) and
// returns a CUDA error string, empty on success.

#include <cstdint>
#include <string>

namespace llm_utils::cuda_kernels {

enum class ElementType { float32, bfloat16, float16 };

/// (batch, head, row) strides of a (B, heads, rows, cols) array with contiguous rows, in
/// elements.
struct Strides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;
};

/// An additive mask over the scores, as AttentionShape holds one: element (g, i, j) of the
/// flattened query head g = b * H + h is at
///   data[(g / heads) * outer + (g % heads) * head + i * row + j * col],
/// so a stride of 0 broadcasts. data null: no mask.
struct Mask {
  const float* data = nullptr;
  int64_t heads = 1;
  int64_t outer = 0;
  int64_t head = 0;
  int64_t row = 0;
  int64_t col = 0;
};

struct Problem {
  ElementType type = ElementType::float32;
  int64_t batch = 0, heads = 0, kv_heads = 0;  // B, H, G (G divides H)
  int64_t n = 0, m = 0, d = 0, dv = 0;
  float scale = 1.0f;  // multiplies Q K^T
  bool causal = false;
  int64_t query_offset = 0;
  Mask mask;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Strides q_strides, k_strides, v_strides;
};

struct ForwardOutputs {
  void* out = nullptr;
  Strides out_strides;
  float* lse = nullptr;  // (B, H, N) contiguous
};

/// The forward: out and lse.
std::string forward(const Problem& p, const ForwardOutputs& o, void* stream);

struct BackwardTensors {
  const void* out = nullptr;
  Strides out_strides;
  const float* lse = nullptr;  // (B, H, N) contiguous, the forward's
  const void* dout = nullptr;
  Strides dout_strides;
  void* dq = nullptr;  // may be null: not wanted
  Strides dq_strides;
  void* dk = nullptr;  // may be null
  Strides dk_strides;
  void* dv = nullptr;  // required
  Strides dv_strides;
};

/// Device scratch the backward needs, in bytes: float32 dq accumulators (B, H, N, d) and the
/// rows' D = dout . out (B, H, N).
int64_t backward_workspace_bytes(const Problem& p);

/// The backward by recomputation (FlashAttention-2): dq, dk, dv overwritten; dk, dv summed
/// over the query heads of each key/value head. `workspace` holds backward_workspace_bytes(p).
std::string backward(const Problem& p, const BackwardTensors& t, void* workspace, void* stream);

}  // namespace llm_utils::cuda_kernels
