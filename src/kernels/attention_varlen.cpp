// Packed variable-length sequences (attention.hpp, attention_forward_varlen): the packed
// tensors are one batch element of T rows per head, q (T_q, H, d) read as the Strided
// (1, H, T_q, d) with head stride d and row stride H d, and the kernels keep each query to its
// own sequence's keys through the problem's seq_starts (attention_problem.hpp, key_range).

#include <cmath>
#include <string>

#include "detail/attention_problem.hpp"
#include "kernels/attention_checks.hpp"
#include "kernels/attention_cuda.hpp"
#include "kernels/attention_dispatch.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {

using detail::AttentionProblem;
using detail::check_offsets;
using detail::expect_shape;
using detail::packed;
using detail::Strided;

// Every check, then the problem over the packed q, k, v.
AttentionProblem varlen_problem(const char* fn, ConstTensorView q, ConstTensorView k,
                                ConstTensorView v, std::span<const int64_t> cu_q,
                                std::span<const int64_t> cu_k, const AttentionOptions& options) {
  const Strided<const float> qs = packed(fn, "q", q), ks = packed(fn, "k", k),
                             vs = packed(fn, "v", v);
  const int64_t heads = q.size(1), kv_heads = k.size(1), d = q.size(2), dv = v.size(2);
  if (heads > 0 && (kv_heads < 1 || heads % kv_heads != 0)) {
    throw ArgumentError(std::string(fn) + ": k's heads " + std::to_string(kv_heads) +
                        " must divide q's heads " + std::to_string(heads) + " (q " +
                        shape_to_string(q.shape()) + ", k " + shape_to_string(k.shape()) + ")");
  }
  expect_shape(fn, "k", k.shape(), {k.size(0), kv_heads, d});
  expect_shape(fn, "v", v.shape(), {k.size(0), kv_heads, dv});
  if (options.additive_mask.data() != nullptr) {
    throw ArgumentError(std::string(fn) + ": additive_mask is not accepted with packed sequences");
  }
  if (options.query_offset != 0) {
    throw ArgumentError(std::string(fn) + ": query_offset must be 0 with packed sequences (each " +
                        "sequence is bottom-right aligned), got " +
                        std::to_string(options.query_offset));
  }
  if (cu_q.size() != cu_k.size()) {
    throw ArgumentError(std::string(fn) + ": cu_seqlens_q and cu_seqlens_k must have the same " +
                        "length (sequences + 1), got " + std::to_string(cu_q.size()) + " and " +
                        std::to_string(cu_k.size()));
  }
  check_offsets(fn, "cu_seqlens_q", cu_q, q.size(0));
  check_offsets(fn, "cu_seqlens_k", cu_k, k.size(0));
  AttentionOptions kernel_options = options;
  kernel_options.additive_mask = {};
  AttentionProblem p = detail::make_attention_problem(qs, ks, vs, 1, heads, kv_heads, q.size(0),
                                                      k.size(0), d, dv, kernel_options);
  detail::check_divisor(fn, p.divisor);
  detail::set_variants(fn, options, p);
  p.seq_starts_q = cu_q.data();
  p.seq_starts_k = cu_k.data();
  p.sequences = static_cast<int64_t>(cu_q.size()) - 1;
  return p;
}

// lse (H, T_q) as the kernels' (1, H, T_q).
template <typename T>
Strided<T> packed_lse(const char* fn, const BasicTensorView<T>& lse, const AttentionProblem& p) {
  expect_shape(fn, "lse", lse.shape(), {p.heads, p.n});
  return {lse.data(), 0, lse.stride(0), lse.stride(1)};
}

}  // namespace

void attention_forward_varlen(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                              std::span<const int64_t> cu_seqlens_q,
                              std::span<const int64_t> cu_seqlens_k, TensorView out, TensorView lse,
                              const AttentionOptions& options) {
  constexpr const char* fn = "attention_forward_varlen";
  detail::refuse_cuda(fn, options.backend);
  const AttentionProblem p = varlen_problem(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, options);
  expect_shape(fn, "out", out.shape(), {p.n, p.heads, p.dv});
  const Strided<float> lse_s = packed_lse(fn, lse, p);
  detail::check_no_overlap(fn, detail::with_mask({{"q", q}, {"k", k}, {"v", v}}, options),
                           {{"out", out}, {"lse", lse}});
  detail::attention_forward(p, options.backend,
                            detail::ForwardOutputs{packed(fn, "out", out), lse_s, {}});
}

void attention_backward_varlen(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                               std::span<const int64_t> cu_seqlens_q,
                               std::span<const int64_t> cu_seqlens_k, ConstTensorView out,
                               ConstTensorView lse, ConstTensorView dout, TensorView dq,
                               TensorView dk, TensorView dv, TensorView dsinks,
                               const AttentionOptions& options) {
  constexpr const char* fn = "attention_backward_varlen";
  detail::refuse_cuda(fn, options.backend);
  const AttentionProblem p = varlen_problem(fn, q, k, v, cu_seqlens_q, cu_seqlens_k, options);
  expect_shape(fn, "out", out.shape(), {p.n, p.heads, p.dv});
  expect_shape(fn, "dout", dout.shape(), out.shape());
  if (dv.data() == nullptr) throw ArgumentError(std::string(fn) + ": dv is required");
  expect_shape(fn, "dv", dv.shape(), v.shape());
  detail::NamedExtents outputs = {{"dv", dv}};
  detail::BackwardTensors t;
  t.out = packed(fn, "out", out);
  t.lse = packed_lse(fn, lse, p);
  t.dout = packed(fn, "dout", dout);
  t.dv = packed(fn, "dv", dv);
  if (dq.data() != nullptr) {
    expect_shape(fn, "dq", dq.shape(), q.shape());
    t.dq = packed(fn, "dq", dq);
    outputs.emplace_back("dq", dq);
  }
  if (dk.data() != nullptr) {
    expect_shape(fn, "dk", dk.shape(), k.shape());
    t.dk = packed(fn, "dk", dk);
    outputs.emplace_back("dk", dk);
  }
  if (dsinks.data() != nullptr) {
    detail::check_dsinks(fn, dsinks, p);
    outputs.emplace_back("dsinks", dsinks);
  }
  detail::check_no_overlap(
      fn,
      detail::with_mask({{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}, {"dout", dout}},
                        options),
      outputs);
  detail::attention_backward(p, options.backend, t);
  if (dsinks.data() != nullptr) detail::sink_gradients(p, t.out, t.lse, t.dout, dsinks.data());
}

}  // namespace llm_utils
