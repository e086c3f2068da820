// Public attention entry points: check every shape, stride and overlap, build the problem, pick
// the backend.

#include "llm_utils/attention.hpp"

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/flash_attention.hpp"
#include "detail/attention_problem.hpp"
#include "kernels/attention_checks.hpp"
#include "kernels/attention_cuda.hpp"
#include "kernels/attention_dispatch.hpp"
#include "llm_utils/error.hpp"
#include "reference/attention_reference.hpp"

namespace llm_utils {
using detail::AttentionProblem;
using detail::check_no_overlap;
using detail::expect_shape;
using detail::matrices;
using detail::Rank;
using detail::row_values;
using detail::Strided;
using detail::with_leading_of;
using detail::with_mask;

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::reference:
      return "reference";
    case Backend::flash:
      return "flash";
    case Backend::automatic:
      return "auto";
    case Backend::cuda:
      return "cuda";
  }
  return "?";
}

Backend parse_backend(const std::string& name) {
  if (name == "reference") return Backend::reference;
  if (name == "flash") return Backend::flash;
  if (name == "auto") return Backend::automatic;
  if (name == "cuda") return Backend::cuda;
  throw ArgumentError("unknown backend '" + name + "' (expected reference, flash, auto or cuda)");
}

Backend choose_backend(Backend requested, int64_t n, int64_t m, int64_t /*d*/) {
  if (requested != Backend::automatic) return requested;
  // Below one 64 x 64 tile the fused kernel's thread start-up costs more than it saves.
  return n * m >= 64 * 64 ? Backend::flash : Backend::reference;
}

namespace detail {

float default_divisor(int64_t d) {
  // The original divides by keys.shape[-1]**0.5, a double rounded to float by the division.
  // With d = 0 every score is an empty sum, 0, whatever it is divided by: 1 keeps it 0 rather
  // than the 0 / 0 = NaN of the formula.
  return d == 0 ? 1.0f : static_cast<float>(std::sqrt(static_cast<double>(d)));
}

AttentionShape make_attention_shape(int64_t batch, int64_t heads, int64_t kv_heads, int64_t n,
                                    int64_t m, int64_t d, int64_t dv,
                                    const AttentionOptions& options) {
  AttentionShape p;
  p.batch = batch;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.n = n;
  p.m = m;
  p.d = d;
  p.dv = dv;
  p.divisor = options.scale_divisor.value_or(default_divisor(d));
  p.scale = 1.0f / p.divisor;
  p.causal = options.causal;
  p.query_offset = options.query_offset;
  return p;
}

AttentionProblem make_attention_problem(Strided<const float> q, Strided<const float> k,
                                        Strided<const float> v, int64_t batch, int64_t heads,
                                        int64_t kv_heads, int64_t n, int64_t m, int64_t d,
                                        int64_t dv, const AttentionOptions& options) {
  AttentionProblem p;
  static_cast<AttentionShape&>(p) =
      make_attention_shape(batch, heads, kv_heads, n, m, d, dv, options);
  p.q = q;
  p.k = k;
  p.v = v;
  return p;
}

AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options) {
  return make_attention_problem(
      Strided<const float>::contiguous(q, 1, n, d), Strided<const float>::contiguous(k, 1, m, d),
      Strided<const float>::contiguous(v, 1, m, dv), batch, 1, 1, n, m, d, dv, options);
}

Backend resolve_backend(const AttentionShape& p, Backend requested) {
  return choose_backend(requested, p.n, p.m, p.d);
}

Backend attention_forward(const AttentionProblem& p, Backend backend, const ForwardOutputs& o) {
  switch (resolve_backend(p, backend)) {
    case Backend::flash:
      cpu::flash_forward(p, o);
      return Backend::flash;
    case Backend::cuda:
      cuda_attention_forward(p, o);  // no row statistics: the caller's stay unwritten
      return Backend::cuda;
    default:
      reference::attention_forward(p, o);
      return Backend::reference;
  }
}

void attention_backward(const AttentionProblem& p, Backend backend, const BackwardTensors& t) {
  switch (resolve_backend(p, backend)) {
    case Backend::flash:
      cpu::flash_backward(p, t);
      return;
    case Backend::cuda:
      cuda_attention_backward(p, t);
      return;
    default:
      reference::attention_backward(p, t);
  }
}

void attention_probabilities(const AttentionProblem& p, Backend backend, Strided<const float> lse,
                             RowStats stats, Strided<float> probs) {
  // The weights of a CUDA forward are recomputed on the CPU from its lse.
  if (resolve_backend(p, backend) == Backend::flash || backend == Backend::cuda) {
    cpu::flash_probabilities(p, lse, stats, probs);
  } else {
    reference::attention_probabilities(p, probs);
  }
}

}  // namespace detail

namespace {

// The public entry points for either element type T (float or bfloat16): every check, then
// the dispatch.
template <typename T>
void checked_forward(BasicTensorView<const T> q, BasicTensorView<const T> k,
                     BasicTensorView<const T> v, BasicTensorView<T> out, TensorView lse,
                     const AttentionOptions& options) {
  constexpr const char* fn = "attention_forward";
  const detail::BasicAttentionProblem<T> p = detail::make_problem<T>(fn, q, k, v, options);
  const Rank rank{q.dim()};
  expect_shape(fn, "out", out.shape(), with_leading_of(q.shape(), {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  check_no_overlap(fn, with_mask({{"q", q}, {"k", k}, {"v", v}}, options),
                   {{"out", out}, {"lse", lse}});
  detail::attention_forward(
      p, options.backend,
      detail::BasicForwardOutputs<T>{matrices(fn, "out", out, rank), row_values(lse, rank), {}});
}

template <typename T>
void checked_backward(BasicTensorView<const T> q, BasicTensorView<const T> k,
                      BasicTensorView<const T> v, BasicTensorView<const T> out, ConstTensorView lse,
                      BasicTensorView<const T> dout, BasicTensorView<T> dq, BasicTensorView<T> dk,
                      BasicTensorView<T> dv, TensorView dsinks, const AttentionOptions& options) {
  constexpr const char* fn = "attention_backward";
  const detail::BasicAttentionProblem<T> p = detail::make_problem<T>(fn, q, k, v, options);
  const Rank rank{q.dim()};
  expect_shape(fn, "out", out.shape(), with_leading_of(q.shape(), {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  expect_shape(fn, "dout", dout.shape(), out.shape());
  if (dv.data() == nullptr) throw ArgumentError(std::string(fn) + ": dv is required");
  expect_shape(fn, "dv", dv.shape(), v.shape());
  if (dq.data() != nullptr) expect_shape(fn, "dq", dq.shape(), q.shape());
  if (dk.data() != nullptr) expect_shape(fn, "dk", dk.shape(), k.shape());
  detail::NamedExtents outputs = {{"dv", dv}};
  if (dq.data() != nullptr) outputs.emplace_back("dq", dq);
  if (dk.data() != nullptr) outputs.emplace_back("dk", dk);
  if (dsinks.data() != nullptr) {
    detail::check_dsinks(fn, dsinks, p);
    outputs.emplace_back("dsinks", dsinks);
  }
  check_no_overlap(
      fn,
      with_mask({{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}, {"dout", dout}},
                options),
      outputs);
  detail::BasicBackwardTensors<T> t;
  t.out = matrices(fn, "out", out, rank);
  t.lse = row_values(lse, rank);
  t.dout = matrices(fn, "dout", dout, rank);
  t.dv = matrices(fn, "dv", dv, rank);
  if (dq.data() != nullptr) t.dq = matrices(fn, "dq", dq, rank);
  if (dk.data() != nullptr) t.dk = matrices(fn, "dk", dk, rank);
  detail::attention_backward(p, options.backend, t);
  if (dsinks.data() != nullptr) detail::sink_gradients(p, t.out, t.lse, t.dout, dsinks.data());
}

template <typename T>
void checked_probabilities(BasicTensorView<const T> q, BasicTensorView<const T> k,
                           ConstTensorView lse, TensorView probs, const AttentionOptions& options) {
  constexpr const char* fn = "attention_probabilities";
  // v plays no part; give make_problem a (.., M, 0) stand-in so it checks the rest.
  Shape no_values_shape = k.shape();
  if (!no_values_shape.empty()) no_values_shape.back() = 0;
  const BasicTensorView<const T> no_values(k.data(), no_values_shape);
  const detail::BasicAttentionProblem<T> p = detail::make_problem<T>(fn, q, k, no_values, options);
  const Rank rank{q.dim()};
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  expect_shape(fn, "probs", probs.shape(), with_leading_of(q.shape(), {p.n, p.m}));
  check_no_overlap(fn, with_mask({{"q", q}, {"k", k}, {"lse", lse}}, options), {{"probs", probs}});
  detail::attention_probabilities(p, options.backend, row_values(lse, rank), {},
                                  matrices(fn, "probs", probs, rank));
}

}  // namespace

void attention_forward(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out,
                       TensorView lse, const AttentionOptions& options) {
  checked_forward<float>(q, k, v, out, lse, options);
}

void attention_forward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                       BFloat16View out, TensorView lse, const AttentionOptions& options) {
  checked_forward<bfloat16>(q, k, v, out, lse, options);
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv,
                        const AttentionOptions& options) {
  checked_backward<float>(q, k, v, out, lse, dout, dq, dk, dv, {}, options);
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv, TensorView dsinks,
                        const AttentionOptions& options) {
  checked_backward<float>(q, k, v, out, lse, dout, dq, dk, dv, dsinks, options);
}

void attention_backward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                        ConstBFloat16View out, ConstTensorView lse, ConstBFloat16View dout,
                        BFloat16View dq, BFloat16View dk, BFloat16View dv,
                        const AttentionOptions& options) {
  checked_backward<bfloat16>(q, k, v, out, lse, dout, dq, dk, dv, {}, options);
}

void attention_backward(ConstBFloat16View q, ConstBFloat16View k, ConstBFloat16View v,
                        ConstBFloat16View out, ConstTensorView lse, ConstBFloat16View dout,
                        BFloat16View dq, BFloat16View dk, BFloat16View dv, TensorView dsinks,
                        const AttentionOptions& options) {
  checked_backward<bfloat16>(q, k, v, out, lse, dout, dq, dk, dv, dsinks, options);
}

void attention_probabilities(ConstTensorView q, ConstTensorView k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options) {
  checked_probabilities<float>(q, k, lse, probs, options);
}

void attention_probabilities(ConstBFloat16View q, ConstBFloat16View k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options) {
  checked_probabilities<bfloat16>(q, k, lse, probs, options);
}

}  // namespace llm_utils
