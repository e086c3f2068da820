// Public attention entry points: check every shape, build the problem, pick the backend.

#include "llm_utils/attention.hpp"

#include <cmath>
#include <string>

#include "kernels/attention_dispatch.hpp"
#include "detail/attention_problem.hpp"
#include "cpu/flash_attention.hpp"
#include "llm_utils/error.hpp"
#include "reference/attention_reference.hpp"

namespace llm_utils {
namespace {

using detail::AttentionProblem;

// Batch-rank view: (N, X) -> (1, N, X); (B, N, X) stays.
Shape as_batched(const char* fn, const char* name, const Shape& shape) {
  if (shape.size() == 2) return {1, shape[0], shape[1]};
  if (shape.size() == 3) return shape;
  throw ArgumentError(std::string(fn) + ": " + name + " must be (N, X) or (B, N, X), got shape " +
                      shape_to_string(shape));
}

void expect_shape(const char* fn, const char* name, const Shape& actual, const Shape& expected) {
  if (actual != expected) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have shape " +
                        shape_to_string(expected) + ", got " + shape_to_string(actual));
  }
}

// Shape of `t` given the rank of q: (B, ...) when q was 3-D, (...) when 2-D.
Shape with_rank_of_q(bool batched, int64_t b, Shape rest) {
  if (batched) rest.insert(rest.begin(), b);
  return rest;
}

// Checks the mask's broadcast shape against the problem (see attention.hpp).
void check_mask_shape(const char* fn, const ConstTensorView& mask, const AttentionProblem& p) {
  const Shape& s = mask.shape();
  const auto fits = [](int64_t size, int64_t full) { return size == 1 || size == full; };
  const bool rank_ok = s.size() == 2 || s.size() == 3;
  const bool ok = rank_ok && fits(s[s.size() - 2], p.n) && fits(s.back(), p.m) &&
                  (s.size() == 2 || (s[0] >= 1 && p.batch % s[0] == 0));
  if (!ok) {
    throw ArgumentError(std::string(fn) + ": additive_mask must broadcast to " +
                        shape_to_string({p.batch, p.n, p.m}) +
                        " ((N, M) or (Bm, N, M), each dimension full or 1, Bm dividing B), got " +
                        shape_to_string(s));
  }
}

AttentionProblem make_problem(const char* fn, ConstTensorView q, ConstTensorView k,
                              ConstTensorView v, const AttentionOptions& options) {
  const Shape qs = as_batched(fn, "q", q.shape());
  const bool batched = q.dim() == 3;
  if (k.dim() != q.dim() || v.dim() != q.dim()) {
    throw ArgumentError(std::string(fn) + ": q, k and v must have the same rank, got shapes " +
                        shape_to_string(q.shape()) + ", " + shape_to_string(k.shape()) + ", " +
                        shape_to_string(v.shape()));
  }
  const int64_t batch = qs[0], n = qs[1], d = qs[2];
  const Shape ks = as_batched(fn, "k", k.shape());
  const int64_t kv_batch = ks[0], m = ks[1];
  if (kv_batch < 1 || batch % kv_batch != 0) {
    throw ArgumentError(std::string(fn) + ": k's batch " + std::to_string(kv_batch) +
                        " must divide q's batch " + std::to_string(batch) + " (q " +
                        shape_to_string(q.shape()) + ", k " + shape_to_string(k.shape()) + ")");
  }
  expect_shape(fn, "k", k.shape(), with_rank_of_q(batched, kv_batch, {m, d}));
  const Shape vs = as_batched(fn, "v", v.shape());
  const int64_t dv = vs[2];
  expect_shape(fn, "v", v.shape(), with_rank_of_q(batched, kv_batch, {m, dv}));
  const float divisor =
      options.scale_divisor.value_or(static_cast<float>(std::sqrt(static_cast<double>(d))));
  if (!(divisor > 0.0f) || !std::isfinite(divisor)) {
    throw ArgumentError(std::string(fn) + ": scale_divisor must be positive and finite, got " +
                        std::to_string(divisor));
  }
  if (options.query_offset < 0) {
    throw ArgumentError(std::string(fn) + ": query_offset must be >= 0, got " +
                        std::to_string(options.query_offset));
  }
  AttentionOptions unmasked = options;
  unmasked.additive_mask = ConstTensorView();
  AttentionProblem p =
      detail::make_attention_problem(q.data(), k.data(), v.data(), batch, n, m, d, dv, unmasked);
  p.kv_group = batch / kv_batch;
  if (options.additive_mask.data() != nullptr) {
    check_mask_shape(fn, options.additive_mask, p);
    detail::set_broadcast_mask(p, options.additive_mask);
  }
  return p;
}

bool use_flash(const AttentionProblem& p, Backend requested) {
  return choose_backend(requested, p.n, p.m, p.d) == Backend::flash;
}

}  // namespace

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::reference:
      return "reference";
    case Backend::flash:
      return "flash";
    case Backend::automatic:
      return "auto";
  }
  return "?";
}

Backend parse_backend(const std::string& name) {
  if (name == "reference") return Backend::reference;
  if (name == "flash") return Backend::flash;
  if (name == "auto") return Backend::automatic;
  throw ArgumentError("unknown backend '" + name + "' (expected reference, flash or auto)");
}

Backend choose_backend(Backend requested, int64_t n, int64_t m, int64_t /*d*/) {
  if (requested != Backend::automatic) return requested;
  // Below one 64 x 64 tile the fused kernel's thread start-up costs more than it saves.
  return n * m >= 64 * 64 ? Backend::flash : Backend::reference;
}

namespace detail {

AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options) {
  AttentionProblem p;
  p.batch = batch;
  p.n = n;
  p.m = m;
  p.d = d;
  p.dv = dv;
  p.q = q;
  p.k = k;
  p.v = v;
  p.k_stride = m * d;
  p.v_stride = m * dv;
  // The original divides by keys.shape[-1]**0.5, a double rounded to float by the division.
  p.divisor = options.scale_divisor.value_or(static_cast<float>(std::sqrt(static_cast<double>(d))));
  p.scale = 1.0f / p.divisor;
  p.causal = options.causal;
  p.query_offset = options.query_offset;
  if (options.additive_mask.data() != nullptr) set_broadcast_mask(p, options.additive_mask);
  return p;
}

void set_broadcast_mask(AttentionProblem& p, const ConstTensorView& mask) {
  // A contiguous (Bm, Nm, Mm) or (Nm, Mm) tensor; a dimension of size 1 gets stride 0.
  const Shape& s = mask.shape();
  const int64_t rows = s[s.size() - 2], cols = s.back();
  const int64_t outer = s.size() == 3 ? s[0] : 1;
  p.mask = mask.data();
  p.mask_stride_col = cols == 1 ? 0 : 1;
  p.mask_stride_row = rows == 1 ? 0 : cols;
  p.mask_stride_head = 0;
  p.mask_stride_outer = outer == 1 ? 0 : rows * cols;
  p.mask_heads = outer == 1 ? 1 : p.batch / outer;
}

Backend attention_forward(const AttentionProblem& p, Backend backend, float* out, float* lse,
                          RowStats stats) {
  if (use_flash(p, backend)) {
    cpu::flash_forward(p, out, lse, stats);
    return Backend::flash;
  }
  reference::attention_forward(p, out, lse);
  return Backend::reference;
}

void attention_backward(const AttentionProblem& p, Backend backend, const float* out,
                        const float* lse, RowStats stats, const float* dout, float* dq, float* dk,
                        float* dv) {
  if (use_flash(p, backend)) {
    cpu::flash_backward(p, out, lse, stats, dout, dq, dk, dv);
  } else {
    reference::attention_backward(p, dout, dq, dk, dv);
  }
}

void attention_probabilities(const AttentionProblem& p, Backend backend, const float* lse,
                             RowStats stats, float* probs) {
  if (use_flash(p, backend)) {
    cpu::flash_probabilities(p, lse, stats, probs);
  } else {
    reference::attention_probabilities(p, probs);
  }
}

}  // namespace detail

void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView lse, const AttentionOptions& options) {
  constexpr const char* fn = "attention_forward";
  const AttentionProblem p = make_problem(fn, q, k, v, options);
  const bool batched = q.dim() == 3;
  expect_shape(fn, "out", out.shape(), with_rank_of_q(batched, p.batch, {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_rank_of_q(batched, p.batch, {p.n}));
  detail::attention_forward(p, options.backend, out.data(), lse.data());
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv,
                        const AttentionOptions& options) {
  constexpr const char* fn = "attention_backward";
  const AttentionProblem p = make_problem(fn, q, k, v, options);
  const bool batched = q.dim() == 3;
  expect_shape(fn, "out", out.shape(), with_rank_of_q(batched, p.batch, {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_rank_of_q(batched, p.batch, {p.n}));
  expect_shape(fn, "dout", dout.shape(), out.shape());
  if (dv.data() == nullptr) throw ArgumentError(std::string(fn) + ": dv is required");
  expect_shape(fn, "dv", dv.shape(), v.shape());
  if (dq.data() != nullptr) expect_shape(fn, "dq", dq.shape(), q.shape());
  if (dk.data() != nullptr) expect_shape(fn, "dk", dk.shape(), k.shape());
  detail::attention_backward(p, options.backend, out.data(), lse.data(), {}, dout.data(), dq.data(),
                             dk.data(), dv.data());
}

void attention_probabilities(ConstTensorView q, ConstTensorView k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options) {
  constexpr const char* fn = "attention_probabilities";
  // v plays no part; give make_problem a (.., M, 0) stand-in so it checks the rest.
  const bool batched = q.dim() == 3;
  const Shape kb = as_batched(fn, "k", k.shape());
  const ConstTensorView no_values(k.data(), with_rank_of_q(batched, kb[0], {kb[1], 0}));
  const AttentionProblem p = make_problem(fn, q, k, no_values, options);
  expect_shape(fn, "lse", lse.shape(), with_rank_of_q(batched, p.batch, {p.n}));
  expect_shape(fn, "probs", probs.shape(), with_rank_of_q(batched, p.batch, {p.n, p.m}));
  detail::attention_probabilities(p, options.backend, lse.data(), {}, probs.data());
}

}  // namespace llm_utils
