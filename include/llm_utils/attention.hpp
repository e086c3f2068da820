#pragma once
/// \file attention.hpp
/// The attention kernels: free functions over non-owning views, inputs first, then outputs,
/// then options. Per batch element (and head):
///
///   S = (Q K^T) / scale_divisor (+ additive_mask),  key j hidden from query i when causal and
///   j > i + query_offset;  P = softmax_rows(S);  O = P V;  lse_i = log(sum_j exp(S_ij)).
///
/// Shapes: q, k, v, out (and dout, dq, dk, dv) all have the same rank, lse one less:
///
///   rank 2   q (N, d)        k (M, d)        v (M, d_v)        out (N, d_v)        lse (N)
///   rank 3   q (B, N, d)     k (Bk, M, d)    v (Bk, M, d_v)    out (B, N, d_v)     lse (B, N)
///   rank 4   q (B, H, N, d)  k (B, G, M, d)  v (B, G, M, d_v)  out (B, H, N, d_v)  lse (B, H, N)
///
/// probs (N, M), (B, N, M) or (B, H, N, M). Rank 4 is PyTorch SDPA's layout: G key/value heads,
/// G dividing H, query head h attending to key/value head h / (H / G) (`enable_gqa`). In rank 3,
/// Bk = B or a divisor of B: query batch element b attends to k/v element b / (B / Bk), so
/// B / Bk consecutive query heads share one key/value head (PyTorch's `repeat_interleave`).
///
/// Strides: every tensor may be a strided view (tensor.hpp) as long as its rows are contiguous
/// (stride 1 along the last dimension); lse and the mask may have any strides. So a module can
/// read the q, k and v heads of one packed (B, N, (H + 2G) * hd) projection in place, as
/// (B, H, N, hd) views with strides (N * W, hd, W, 1), and write out straight into a merged
/// (B, N, H * hd) buffer. Outputs must not share memory with any input or with each other
/// (ArgumentError naming both); disjoint heads of one buffer are fine.
///
/// `additive_mask` broadcasts. Rank 2 and 3: (N, M), or (Bm, N, M), where each of Bm, N, M may
/// also be 1, and Bm is B or a divisor of B (batch element b uses mask element b / (B / Bm), as
/// when B flattens (batch, heads) and the mask is per batch); a key-padding mask is thus
/// (Bm, 1, M). Rank 4: anything that broadcasts to (B, H, N, M), rank 2 to 4 aligned right,
/// each dimension full or 1 (an expanded view with stride 0 costs no copy).
///
/// Empty sizes are allowed: B, H, N = 0 compute nothing (keys and values then get zero
/// gradients); M = 0 gives out = 0, lse = -inf and dq = 0, as a fully masked row; d = 0 makes
/// every score 0 (uniform weights); d_v = 0 gives an empty out and the real lse.
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
/// thread count (the key split depends on the shape only). Its backward shares key/value heads
/// out whole when there are at least 4 per thread (then dq, dk, dv are the same bits for any
/// thread count); with fewer heads it shares out the key blocks of one head at a time, and dq,
/// summed from per-thread partials in a fixed order, may differ in the last bits between thread
/// counts. Either way the backward's extra memory is one key/value head's dq per thread.
///
/// Example:
/// \code
///   llm_utils::Tensor out({6, 2}), lse({6});
///   llm_utils::attention_forward(q, k, v, out, lse, {.causal = true});
/// \endcode

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "llm_utils/bfloat16.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// Which implementation runs a kernel: `reference` materialises the (N, M) scores with BLAS,
/// `flash` is the fused CPU kernel that never does, `automatic` picks between those two by
/// shape, and `cuda` runs FlashAttention-2 kernels on an NVIDIA GPU, copying the host tensors
/// there and back (llm_utils/cuda.hpp: builds with CUDA only; causal, masks and grouped heads,
/// not the modern variants).
enum class Backend { reference, flash, automatic, cuda };

/// "reference", "flash", "auto" or "cuda".
const char* backend_name(Backend backend);
/// Parses "reference", "flash", "auto" or "cuda"; throws ArgumentError naming the value
/// otherwise.
Backend parse_backend(const std::string& name);

struct AttentionOptions {
  /// Scores are divided by this. Default: sqrt(d), the head dimension of q and k, which is what
  /// the original's `attn_scores / keys.shape[-1]**0.5` does (1 when d = 0, where every score
  /// is 0).
  std::optional<float> scale_divisor{};
  /// Hide key j from query i when j > i + query_offset. With the default offset 0 this is
  /// top-left aligned, as PyTorch's `is_causal`.
  bool causal = false;
  /// The key position of query 0 under the causal mask (>= 0): with a KV cache holding P earlier
  /// tokens, the N new queries against M = P + N keys use query_offset = P (bottom-right
  /// alignment).
  int64_t query_offset = 0;
  /// Added to the scaled scores, broadcast as the file comment says; -inf hides a key. Empty
  /// for none.
  ConstTensorView additive_mask{};
  Backend backend = Backend::automatic;

  // Modern variants (docs/variants.md). With any of the last three, scores are scaled before
  // the exponent, as with a mask. "Position" below: query i sits at key position
  // pos_i = i + query_offset (in packed sequences, as far from its sequence's last key as from
  // its last query: bottom-right aligned, as FlashAttention's varlen kernels).

  /// Sliding window (Mistral, Gemma): hide key j from query i when j < pos_i - window_left, so
  /// a query sees at most window_left + 1 keys with `causal`. -1: no window. Key blocks that no
  /// query of a block sees are skipped.
  int64_t window_left = -1;
  /// Logit softcap (Gemma 2): the scaled scores become softcap * tanh(s / softcap), before
  /// ALiBi and the mask. 0: none; otherwise positive and finite.
  float softcap = 0.0f;
  /// ALiBi: slopes (H) per query head (rank 4; rank 3: per element of q's first dimension;
  /// rank 2: one), adding -slope_h * |pos_i - j| to the capped scores. Empty for none.
  ConstTensorView alibi_slopes{};
  /// Attention sinks (gpt-oss, StreamingLLM): one logit (H) per query head, in scaled-score
  /// units, that joins each row's softmax denominator with no value: P_ij = exp(s_ij - lse_i),
  /// lse_i = log(exp(sink_h) + sum_j exp(s_ij)), and rows sum to less than 1. Its gradient comes
  /// from the attention_backward overload with `dsinks`. Empty for none.
  ConstTensorView sinks{};
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

/// The same, also writing the sinks' gradient dsinks (H) (overwritten), shape of
/// options.sinks: dsinks_h = -sum over rows of head h of P_sink * (dout . out), P_sink =
/// exp(sink_h - lse).
void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv, TensorView dsinks,
                        const AttentionOptions& options);

/// The attention weights P (N, M), (B, N, M) or (B, H, N, M), recomputed from a forward's lse.
void attention_probabilities(ConstTensorView q, ConstTensorView k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options);

/// Variable-length packed sequences (FlashAttention's varlen layout): S sequences concatenated
/// without padding, q (T_q, H, d), k (T_k, G, d), v (T_k, G, d_v), out (T_q, H, d_v),
/// lse (H, T_q); sequence s holds queries [cu_seqlens_q[s], cu_seqlens_q[s + 1]) and keys
/// [cu_seqlens_k[s], cu_seqlens_k[s + 1]) and attends within itself only. Each cu_seqlens has
/// S + 1 nondecreasing entries from 0 to T_q (T_k). Every option applies per sequence (causal
/// and the window bottom-right aligned, see above); an additive_mask is not accepted (one
/// (T_q, T_k) mask would defeat packing), and query_offset must be 0. Rows of a sequence
/// without keys give out = 0, lse = -inf, as a masked row. Rows must be contiguous; any other
/// strides.
void attention_forward_varlen(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                              std::span<const int64_t> cu_seqlens_q,
                              std::span<const int64_t> cu_seqlens_k, TensorView out, TensorView lse,
                              const AttentionOptions& options);
/// Its backward, as attention_backward; dsinks may be empty.
void attention_backward_varlen(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                               std::span<const int64_t> cu_seqlens_q,
                               std::span<const int64_t> cu_seqlens_k, ConstTensorView out,
                               ConstTensorView lse, ConstTensorView dout, TensorView dq,
                               TensorView dk, TensorView dv, TensorView dsinks,
                               const AttentionOptions& options);

/// Keys and values in pages (PagedKVCache's layout; vLLM's and FlashAttention's block tables):
/// k_pages (P, page_size, G, d) and v_pages (P, page_size, G, d_v), rows contiguous (any other
/// strides). Sequence s holds seqlens_k[s] tokens, token t at row t % page_size of page
/// block_table[s * pages_per_sequence + t / page_size]; entries past a sequence's last page
/// are not read.
struct PagedKeys {
  ConstTensorView k_pages{};
  ConstTensorView v_pages{};
  std::span<const int64_t> block_table{};  ///< (S, pages_per_sequence), row-major
  int64_t pages_per_sequence = 0;
  std::span<const int64_t> seqlens_k{};  ///< (S)
};

/// Attention of packed queries over paged keys and values, for decoding and chunked prefill
/// (FlashAttention's flash_attn_with_kvcache with a block table): q (T_q, H, d) packed as in
/// attention_forward_varlen with cu_seqlens_q (S + 1 entries from 0 to T_q); the n_s queries
/// of sequence s are its last n_s tokens (n_s <= seqlens_k[s]), query i at position
/// seqlens_k[s] - n_s + i, so that with `causal` each sees its own and earlier tokens.
/// out (T_q, H, d_v), lse (H, T_q). Options as for attention_forward_varlen (no additive mask,
/// query_offset 0). Forward only: decoding needs no gradient. The fused kernel (`flash` and
/// `automatic`) reads the pages in place, one page-bounded step at a time; `reference` gathers
/// each sequence's pages.
void attention_forward_paged(ConstTensorView q, const PagedKeys& kv,
                             std::span<const int64_t> cu_seqlens_q, TensorView out, TensorView lse,
                             const AttentionOptions& options);

/// The three kernels on bfloat16 q, k, v (out, dout and the gradients bfloat16 too; lse, the
/// mask and probs stay float32), shapes and rules as above. Every product accumulates in
/// float32 and the softmax is float32; `flash` rounds P and dS to bfloat16 before their
/// products (as FlashAttention does) and rounds what it stores; `reference` widens the inputs
/// to float32, runs the float32 reference and rounds its outputs, the oracle. The flash
/// kernels run vdpbf16ps on CPUs with AVX512_BF16 and the same sums in float32 multiply-adds
/// elsewhere (bit for bit, but for subnormals, which AVX512_BF16 flushes to zero).
void attention_forward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                       BFloat16View out, TensorView lse, const AttentionOptions& options);
void attention_backward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                        ConstBFloat16View out, ConstTensorView lse, ConstBFloat16View dout,
                        BFloat16View dq, BFloat16View dk, BFloat16View dv,
                        const AttentionOptions& options);
/// With the sinks' float32 gradient dsinks (H), as the float32 overload.
void attention_backward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                        ConstBFloat16View out, ConstTensorView lse, ConstBFloat16View dout,
                        BFloat16View dq, BFloat16View dk, BFloat16View dv, TensorView dsinks,
                        const AttentionOptions& options);
void attention_probabilities(ConstBFloat16View q, ConstBFloat16View k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options);

/// Row-wise stable softmax in place over a (rows, cols) matrix whose rows are contiguous (any
/// row stride). Rows that are entirely -inf become zeros.
void softmax_rows_inplace(TensorView scores);

}  // namespace llm_utils
