#pragma once
/// \file attention.hpp
/// The attention kernels: free functions over non-owning views, inputs first, then outputs,
/// then options. Per batch element (and head):
///
///   S = (Q K^T) / scale_divisor (+ additive_mask),  key j hidden from query i when causal and
///   j > i + query_offset;  P = softmax_rows(S);  O = P V;  lse_i = log(sum_j exp(S_ij)).
///
/// Shapes, with or without the leading batch dimension (all the same rank):
/// q (B, N, d), k (Bk, M, d), v (Bk, M, d_v), out (B, N, d_v), lse (B, N), probs (B, N, M).
/// Bk = B, or a divisor of B for grouped-query attention: query batch element b attends to
/// k/v element b / (B / Bk), so B / Bk consecutive query heads share one key/value head
/// (PyTorch's `repeat_interleave` of the keys and values). `additive_mask` broadcasts: (N, M),
/// or (Bm, N, M), where each of Bm, N, M may also be 1, and Bm is B or a divisor of B (batch
/// element b uses mask element b / (B / Bm), as when B flattens (batch, heads) and the mask is
/// per batch). A key-padding mask is thus (Bm, 1, M).
///
/// Two implementations (Backend): `reference` materialises each (N, M) score matrix with BLAS
/// GEMMs, the oracle; `flash` is the fused, multithreaded CPU kernel (online softmax over
/// 64 x 64 tiles, O(N) memory, backward by recomputation from lse). `automatic` picks by size.
/// When B x ceil(N / 64) is small (a decode step: one query against a long KV cache) the fused
/// forward also splits the keys into chunks, computed in parallel and merged by their
/// log-sum-exp, so that batch 1 with one head still uses every core; with N <= 64 it transposes
/// each key block as it uses it instead of all of K first.
///
/// Numerics (both backends): the softmax subtracts the row max, so large scores do not
/// overflow. A row with no visible key (all -inf) gives P = 0, O = 0, lse = -inf, zero
/// gradients. A NaN score makes its whole row NaN; a +inf score gives NaN, as in PyTorch. The
/// two backends agree to about 1e-6 relative; `flash` gives bitwise the same forward for any
/// thread count (the key split depends on the shape only), and a backward whose dq may differ
/// in the last bits between thread counts (per-thread partial sums are added in a fixed order,
/// but the split depends on the count).
///
/// Example:
/// \code
///   llm_utils::Tensor out({6, 2}), lse({6});
///   llm_utils::attention_forward(q, k, v, out, lse, {.causal = true});
/// \endcode

#include <cstdint>
#include <optional>
#include <string>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// Which implementation runs a kernel: `reference` materialises the (N, M) scores with BLAS,
/// `flash` is the fused CPU kernel that never does, `automatic` picks by shape.
enum class Backend { reference, flash, automatic };

/// "reference", "flash" or "auto".
const char* backend_name(Backend backend);
/// Parses "reference", "flash" or "auto"; throws ArgumentError naming the value otherwise.
Backend parse_backend(const std::string& name);

struct AttentionOptions {
  /// Scores are divided by this. Default: sqrt(d), the head dimension of q and k, which is what
  /// the original's `attn_scores / keys.shape[-1]**0.5` does.
  std::optional<float> scale_divisor;
  /// Hide key j from query i when j > i + query_offset. With the default offset 0 this is
  /// top-left aligned, as PyTorch's `is_causal`.
  bool causal = false;
  /// The key position of query 0 under the causal mask (>= 0): with a KV cache holding P earlier
  /// tokens, the N new queries against M = P + N keys use query_offset = P (bottom-right
  /// alignment).
  int64_t query_offset = 0;
  /// Added to the scaled scores, broadcast as the file comment says; -inf hides a key. Empty
  /// for none.
  ConstTensorView additive_mask;
  Backend backend = Backend::automatic;
};

/// The backend `automatic` resolves to for queries N, keys M and head dim d.
Backend choose_backend(Backend requested, int64_t n, int64_t m, int64_t d);

/// Forward pass: out (O) and lse, the per-row log-sum-exp that backward and
/// attention_probabilities need.
void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView lse, const AttentionOptions& options);

/// Backward pass by recomputation from the forward's `out` and `lse`. `dq` and `dk` may be
/// empty views (data() == nullptr) when not needed, which skips most of the work; `dv` is
/// required. Each given gradient is overwritten. Shapes: dout as out, dq as q, dk as k, dv as v;
/// with grouped k/v (Bk < B), dk and dv sum the gradients of every query head of the group.
void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv,
                        const AttentionOptions& options);

/// The attention weights P (N, M) or (B, N, M), recomputed from a forward's lse.
void attention_probabilities(ConstTensorView q, ConstTensorView k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options);

/// Row-wise stable softmax in place over a (rows, cols) matrix. Rows that are entirely -inf
/// become zeros.
void softmax_rows_inplace(TensorView scores);

}  // namespace llm_utils
