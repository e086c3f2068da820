// Public attention entry points: check every shape, stride and overlap, build the problem, pick
// the backend.

#include "llm_utils/attention.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "cpu/flash_attention.hpp"
#include "detail/attention_problem.hpp"
#include "kernels/attention_dispatch.hpp"
#include "kernels/memory_overlap.hpp"
#include "llm_utils/error.hpp"
#include "reference/attention_reference.hpp"

namespace llm_utils {
namespace {

using detail::AttentionProblem;
using detail::Strided;

std::string describe(const ConstTensorView& t) {
  return shape_to_string(t.shape()) + " (strides " + shape_to_string(t.strides()) + ")";
}

// How the rank of q lays out the (batch, heads) of the kernels:
//   rank 2: (N, X), one head;  rank 3: (B, N, X), B heads of one batch element (k/v may have
//   a divisor of B heads);  rank 4: (B, H, N, X), k/v (B, G, M, X) with G dividing H.
struct Rank {
  int64_t value;
  // The (batch, heads) a (.., rows, cols) tensor of this rank holds.
  int64_t batch_of(const Shape& s) const { return value == 4 ? s[0] : 1; }
  int64_t heads_of(const Shape& s) const { return value == 4 ? s[1] : (value == 3 ? s[0] : 1); }
};

// t's leading (batch, heads) strides as the rank lays them out, with the given row stride.
template <typename T>
Strided<T> with_heads(const BasicTensorView<T>& t, int64_t row_stride, Rank rank) {
  Strided<T> out{t.data(), 0, 0, row_stride};
  if (rank.value == 4) {
    out.batch_stride = t.stride(0);
    out.head_stride = t.stride(1);
  } else if (rank.value == 3) {
    out.head_stride = t.stride(0);
  }
  return out;
}

// A (.., rows, cols) matrix set of the given rank as the kernels' Strided, its rows required to
// be contiguous (stride 1 along the last dimension, when it has more than one element).
template <typename T>
Strided<T> matrices(const char* fn, const char* name, const BasicTensorView<T>& t, Rank rank) {
  if (t.dim() != rank.value) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have rank " +
                        std::to_string(rank.value) + " as q, got shape " +
                        shape_to_string(t.shape()));
  }
  if (t.size(-1) > 1 && t.stride(-1) != 1) {
    throw ArgumentError(std::string(fn) + ": " + name +
                        " must have contiguous rows (stride 1 in its last dimension), got " +
                        describe(t));
  }
  return with_heads(t, t.stride(-2), rank);
}

// lse-like (.., N) arrays, one rank below q: any strides.
template <typename T>
Strided<T> row_values(const BasicTensorView<T>& t, Rank rank) {
  return with_heads(t, t.stride(-1), rank);
}

void expect_shape(const char* fn, const char* name, const Shape& actual, const Shape& expected) {
  if (actual != expected) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have shape " +
                        shape_to_string(expected) + ", got " + shape_to_string(actual));
  }
}

// Checks the mask's broadcast shape against the problem and points p at it. q rank 2 or 3:
// (N|1, M|1) or (Bm, N|1, M|1) with Bm dividing the B heads; q rank 4: broadcast to (B, H, N,
// M), rank 2 to 4 aligned right, each dimension full or 1.
void set_mask(const char* fn, const ConstTensorView& mask, Rank rank, AttentionProblem& p) {
  const Shape& s = mask.shape();
  const Shape st = mask.strides();
  const auto fits = [](int64_t size, int64_t full) { return size == 1 || size == full; };
  const auto stride_of = [&](size_t i) { return s[i] == 1 ? 0 : st[i]; };
  const size_t r = s.size();
  if (rank.value == 4) {
    const Shape full = {p.batch, p.heads, p.n, p.m};
    bool ok = r >= 2 && r <= 4;
    for (size_t i = 0; ok && i < r; ++i) ok = fits(s[i], full[4 - r + i]);
    if (!ok) {
      throw ArgumentError(
          std::string(fn) + ": additive_mask must broadcast to " + shape_to_string(full) +
          " (rank 2 to 4 aligned right, each dimension full or 1), got " + shape_to_string(s));
    }
    p.mask_heads = p.heads;
    p.mask_stride_outer = r == 4 ? stride_of(0) : 0;
    p.mask_stride_head = r >= 3 ? stride_of(r - 3) : 0;
  } else {
    const bool ok = (r == 2 || r == 3) && fits(s[r - 2], p.n) && fits(s[r - 1], p.m) &&
                    (r == 2 || (s[0] >= 1 && p.heads % s[0] == 0));
    if (!ok) {
      throw ArgumentError(std::string(fn) + ": additive_mask must broadcast to " +
                          shape_to_string({p.heads, p.n, p.m}) +
                          " ((N, M) or (Bm, N, M), each dimension full or 1, Bm dividing B), got " +
                          shape_to_string(s));
    }
    const int64_t outer = r == 3 ? s[0] : 1;
    p.mask_heads = outer == 1 ? 1 : p.heads / outer;
    p.mask_stride_outer = r == 3 ? stride_of(0) : 0;
    p.mask_stride_head = 0;
  }
  p.mask = mask.data();
  p.mask_stride_row = stride_of(r - 2);
  p.mask_stride_col = stride_of(r - 1);
}

AttentionProblem make_problem(const char* fn, ConstTensorView q, ConstTensorView k,
                              ConstTensorView v, const AttentionOptions& options) {
  if (q.dim() < 2 || q.dim() > 4) {
    throw ArgumentError(std::string(fn) + ": q must be (N, d), (B, N, d) or (B, H, N, d), got " +
                        "shape " + shape_to_string(q.shape()));
  }
  if (k.dim() != q.dim() || v.dim() != q.dim()) {
    throw ArgumentError(std::string(fn) + ": q, k and v must have the same rank, got shapes " +
                        shape_to_string(q.shape()) + ", " + shape_to_string(k.shape()) + ", " +
                        shape_to_string(v.shape()));
  }
  const Rank rank{q.dim()};
  const Shape& qs = q.shape();
  const Shape& ks = k.shape();
  const int64_t batch = rank.batch_of(qs), heads = rank.heads_of(qs);
  const int64_t kv_heads = rank.heads_of(ks);
  const int64_t n = qs[qs.size() - 2], d = qs.back(), m = ks[ks.size() - 2];
  if (rank.value == 3 && heads > 0 && (kv_heads < 1 || heads % kv_heads != 0)) {
    throw ArgumentError(std::string(fn) + ": k's batch " + std::to_string(kv_heads) +
                        " must divide q's batch " + std::to_string(heads) + " (q " +
                        shape_to_string(qs) + ", k " + shape_to_string(ks) + ")");
  }
  if (rank.value == 4 && heads > 0 && (kv_heads < 1 || heads % kv_heads != 0)) {
    throw ArgumentError(std::string(fn) + ": k's heads " + std::to_string(kv_heads) +
                        " must divide q's heads " + std::to_string(heads) + " (q " +
                        shape_to_string(qs) + ", k " + shape_to_string(ks) + ")");
  }
  Shape k_expected = {m, d}, v_prefix;
  if (rank.value == 3) k_expected.insert(k_expected.begin(), kv_heads);
  if (rank.value == 4) k_expected.insert(k_expected.begin(), {batch, kv_heads});
  expect_shape(fn, "k", ks, k_expected);
  const int64_t dv = v.shape().back();
  Shape v_expected = k_expected;
  v_expected.back() = dv;
  expect_shape(fn, "v", v.shape(), v_expected);
  const float divisor = options.scale_divisor.value_or(detail::default_divisor(d));
  if (!(divisor > 0.0f) || !std::isfinite(divisor)) {
    throw ArgumentError(std::string(fn) + ": scale_divisor must be positive and finite, got " +
                        std::to_string(divisor));
  }
  if (options.query_offset < 0) {
    throw ArgumentError(std::string(fn) + ": query_offset must be >= 0, got " +
                        std::to_string(options.query_offset));
  }
  AttentionProblem p = detail::make_attention_problem(
      matrices(fn, "q", q, rank), matrices(fn, "k", k, rank), matrices(fn, "v", v, rank), batch,
      heads, kv_heads, n, m, d, dv, options);
  if (options.additive_mask.data() != nullptr) set_mask(fn, options.additive_mask, rank, p);
  return p;
}

// The shape of an output with q's leading dimensions and `tail` after them.
Shape with_leading_of(const Shape& q_shape, std::vector<int64_t> tail) {
  Shape out(q_shape.begin(), q_shape.end() - 2);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

// Throws if any output shares memory with an input or with another output.
void check_no_overlap(const char* fn,
                      const std::vector<std::pair<const char*, ConstTensorView>>& inputs,
                      const std::vector<std::pair<const char*, ConstTensorView>>& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    // Not a structured binding: Clang 14 (the sanitizer stages) cannot capture one.
    const char* const out_name = outputs[i].first;
    const ConstTensorView& out = outputs[i].second;
    const auto fail = [&](const char* other) {
      throw ArgumentError(std::string(fn) + ": " + out_name + " overlaps " + other +
                          " in memory (an output may share memory with no input and no other "
                          "output)");
    };
    for (const auto& [in_name, in] : inputs) {
      if (detail::may_overlap(out, in)) fail(in_name);
    }
    for (size_t j = i + 1; j < outputs.size(); ++j) {
      if (detail::may_overlap(out, outputs[j].second)) fail(outputs[j].first);
    }
  }
}

std::vector<std::pair<const char*, ConstTensorView>> with_mask(
    std::vector<std::pair<const char*, ConstTensorView>> inputs, const AttentionOptions& options) {
  if (options.additive_mask.data() != nullptr) {
    inputs.emplace_back("additive_mask", options.additive_mask);
  }
  return inputs;
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

float default_divisor(int64_t d) {
  // The original divides by keys.shape[-1]**0.5, a double rounded to float by the division.
  // With d = 0 every score is an empty sum, 0, whatever it is divided by: 1 keeps it 0 rather
  // than the 0 / 0 = NaN of the formula.
  return d == 0 ? 1.0f : static_cast<float>(std::sqrt(static_cast<double>(d)));
}

AttentionProblem make_attention_problem(Strided<const float> q, Strided<const float> k,
                                        Strided<const float> v, int64_t batch, int64_t heads,
                                        int64_t kv_heads, int64_t n, int64_t m, int64_t d,
                                        int64_t dv, const AttentionOptions& options) {
  AttentionProblem p;
  p.batch = batch;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.n = n;
  p.m = m;
  p.d = d;
  p.dv = dv;
  p.q = q;
  p.k = k;
  p.v = v;
  p.divisor = options.scale_divisor.value_or(default_divisor(d));
  p.scale = 1.0f / p.divisor;
  p.causal = options.causal;
  p.query_offset = options.query_offset;
  return p;
}

AttentionProblem make_attention_problem(const float* q, const float* k, const float* v,
                                        int64_t batch, int64_t n, int64_t m, int64_t d, int64_t dv,
                                        const AttentionOptions& options) {
  return make_attention_problem(
      Strided<const float>::contiguous(q, 1, n, d), Strided<const float>::contiguous(k, 1, m, d),
      Strided<const float>::contiguous(v, 1, m, dv), batch, 1, 1, n, m, d, dv, options);
}

Backend resolve_backend(const AttentionProblem& p, Backend requested) {
  return choose_backend(requested, p.n, p.m, p.d);
}

Backend attention_forward(const AttentionProblem& p, Backend backend, const ForwardOutputs& o) {
  if (resolve_backend(p, backend) == Backend::flash) {
    cpu::flash_forward(p, o);
    return Backend::flash;
  }
  reference::attention_forward(p, o);
  return Backend::reference;
}

void attention_backward(const AttentionProblem& p, Backend backend, const BackwardTensors& t) {
  if (resolve_backend(p, backend) == Backend::flash) {
    cpu::flash_backward(p, t);
  } else {
    reference::attention_backward(p, t);
  }
}

void attention_probabilities(const AttentionProblem& p, Backend backend, Strided<const float> lse,
                             RowStats stats, Strided<float> probs) {
  if (resolve_backend(p, backend) == Backend::flash) {
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
  const Rank rank{q.dim()};
  expect_shape(fn, "out", out.shape(), with_leading_of(q.shape(), {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  check_no_overlap(fn, with_mask({{"q", q}, {"k", k}, {"v", v}}, options),
                   {{"out", out}, {"lse", lse}});
  detail::attention_forward(p, options.backend,
                            {matrices(fn, "out", out, rank), row_values(lse, rank), {}});
}

void attention_backward(ConstTensorView q, ConstTensorView k, ConstTensorView v,
                        ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                        TensorView dq, TensorView dk, TensorView dv,
                        const AttentionOptions& options) {
  constexpr const char* fn = "attention_backward";
  const AttentionProblem p = make_problem(fn, q, k, v, options);
  const Rank rank{q.dim()};
  expect_shape(fn, "out", out.shape(), with_leading_of(q.shape(), {p.n, p.dv}));
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  expect_shape(fn, "dout", dout.shape(), out.shape());
  if (dv.data() == nullptr) throw ArgumentError(std::string(fn) + ": dv is required");
  expect_shape(fn, "dv", dv.shape(), v.shape());
  if (dq.data() != nullptr) expect_shape(fn, "dq", dq.shape(), q.shape());
  if (dk.data() != nullptr) expect_shape(fn, "dk", dk.shape(), k.shape());
  std::vector<std::pair<const char*, ConstTensorView>> outputs = {{"dv", dv}};
  if (dq.data() != nullptr) outputs.emplace_back("dq", dq);
  if (dk.data() != nullptr) outputs.emplace_back("dk", dk);
  check_no_overlap(
      fn,
      with_mask({{"q", q}, {"k", k}, {"v", v}, {"out", out}, {"lse", lse}, {"dout", dout}},
                options),
      outputs);
  detail::BackwardTensors t;
  t.out = matrices(fn, "out", out, rank);
  t.lse = row_values(lse, rank);
  t.dout = matrices(fn, "dout", dout, rank);
  t.dv = matrices(fn, "dv", dv, rank);
  if (dq.data() != nullptr) t.dq = matrices(fn, "dq", dq, rank);
  if (dk.data() != nullptr) t.dk = matrices(fn, "dk", dk, rank);
  detail::attention_backward(p, options.backend, t);
}

void attention_probabilities(ConstTensorView q, ConstTensorView k, ConstTensorView lse,
                             TensorView probs, const AttentionOptions& options) {
  constexpr const char* fn = "attention_probabilities";
  // v plays no part; give make_problem a (.., M, 0) stand-in so it checks the rest.
  Shape no_values_shape = k.shape();
  if (!no_values_shape.empty()) no_values_shape.back() = 0;
  const ConstTensorView no_values(k.data(), no_values_shape);
  const AttentionProblem p = make_problem(fn, q, k, no_values, options);
  const Rank rank{q.dim()};
  expect_shape(fn, "lse", lse.shape(), with_leading_of(q.shape(), {p.n}));
  expect_shape(fn, "probs", probs.shape(), with_leading_of(q.shape(), {p.n, p.m}));
  check_no_overlap(fn, with_mask({{"q", q}, {"k", k}, {"lse", lse}}, options), {{"probs", probs}});
  detail::attention_probabilities(p, options.backend, row_values(lse, rank), {},
                                  matrices(fn, "probs", probs, rank));
}

}  // namespace llm_utils
