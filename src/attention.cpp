// Public attention entry points: check every shape, build the problem, pick the backend.

#include "llm_utils/attention.hpp"

#include <cmath>
#include <string>

#include "attention_dispatch.hpp"
#include "attention_problem.hpp"
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

AttentionProblem make_problem(const char* fn, ConstTensorView q, ConstTensorView k,
                              ConstTensorView v, const AttentionOptions& options) {
  const Shape qs = as_batched(fn, "q", q.shape());
  const bool batched = q.dim() == 3;
  AttentionProblem p;
  p.batch = qs[0];
  p.n = qs[1];
  p.d = qs[2];
  if (k.dim() != q.dim() || v.dim() != q.dim()) {
    throw ArgumentError(std::string(fn) + ": q, k and v must have the same rank, got shapes " +
                        shape_to_string(q.shape()) + ", " + shape_to_string(k.shape()) + ", " +
                        shape_to_string(v.shape()));
  }
  const Shape ks = as_batched(fn, "k", k.shape());
  p.m = ks[1];
  expect_shape(fn, "k", k.shape(), with_rank_of_q(batched, p.batch, {p.m, p.d}));
  const Shape vs = as_batched(fn, "v", v.shape());
  p.dv = vs[2];
  expect_shape(fn, "v", v.shape(), with_rank_of_q(batched, p.batch, {p.m, p.dv}));
  const ConstTensorView& mask = options.additive_mask;
  if (mask.data() != nullptr && mask.shape() != Shape{p.n, p.m} &&
      mask.shape() != Shape{p.batch, p.n, p.m}) {
    throw ArgumentError(
        std::string(fn) + ": additive_mask must have shape " + shape_to_string({p.n, p.m}) +
        " or " + shape_to_string({p.batch, p.n, p.m}) + ", got " + shape_to_string(mask.shape()));
  }
  const float divisor =
      options.scale_divisor.value_or(static_cast<float>(std::sqrt(static_cast<double>(p.d))));
  if (!(divisor > 0.0f) || !std::isfinite(divisor)) {
    throw ArgumentError(std::string(fn) + ": scale_divisor must be positive and finite, got " +
                        std::to_string(divisor));
  }
  return detail::make_attention_problem(q.data(), k.data(), v.data(), p.batch, p.n, p.m, p.d, p.dv,
                                        options);
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
  // The original divides by keys.shape[-1]**0.5, a double rounded to float by the division.
  p.divisor = options.scale_divisor.value_or(static_cast<float>(std::sqrt(static_cast<double>(d))));
  p.scale = 1.0f / p.divisor;
  p.causal = options.causal;
  const ConstTensorView& mask = options.additive_mask;
  if (mask.data() != nullptr) {
    p.mask = mask.data();
    p.mask_batch_stride = mask.dim() == 3 ? n * m : 0;
  }
  return p;
}

void attention_forward(const AttentionProblem& p, Backend backend, float* out, float* lse) {
  if (use_flash(p, backend)) {
    cpu::flash_forward(p, out, lse);
  } else {
    reference::attention_forward(p, out, lse);
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
  if (use_flash(p, options.backend)) {
    cpu::flash_backward(p, out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  } else {
    reference::attention_backward(p, dout.data(), dq.data(), dk.data(), dv.data());
  }
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
  if (use_flash(p, options.backend)) {
    cpu::flash_probabilities(p, lse.data(), probs.data());
  } else {
    reference::attention_probabilities(p, probs.data());
  }
}

}  // namespace llm_utils
