// The public kernels' argument checks (attention_checks.hpp).

#include "kernels/attention_checks.hpp"

#include <cmath>

#include "kernels/attention_dispatch.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::detail {

std::string describe(const MemoryExtent& t) {
  return shape_to_string(t.shape) + " (strides " + shape_to_string(t.strides) + ")";
}

namespace {
// No elements: any strides will do (numpy gives empty arrays zero strides).
bool empty(const MemoryExtent& t) {
  for (const int64_t size : t.shape) {
    if (size == 0) return true;
  }
  return false;
}
}  // namespace

void expect_matrices(const char* fn, const char* name, const MemoryExtent& t, Rank rank) {
  if (static_cast<int64_t>(t.shape.size()) != rank.value) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have rank " +
                        std::to_string(rank.value) + " as q, got shape " +
                        shape_to_string(t.shape));
  }
  if (t.shape.back() > 1 && t.strides.back() != 1 && !empty(t)) {
    throw ArgumentError(std::string(fn) + ": " + name +
                        " must have contiguous rows (stride 1 in its last dimension), got " +
                        describe(t));
  }
}

void expect_shape(const char* fn, const char* name, const Shape& actual, const Shape& expected) {
  if (actual != expected) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have shape " +
                        shape_to_string(expected) + ", got " + shape_to_string(actual));
  }
}

namespace {

// Checks the mask's broadcast shape against the problem and points p at it. q rank 2 or 3:
// (N|1, M|1) or (Bm, N|1, M|1) with Bm dividing the B heads; q rank 4: broadcast to (B, H, N,
// M), rank 2 to 4 aligned right, each dimension full or 1.
void set_mask(const char* fn, const ConstTensorView& mask, Rank rank, AttentionShape& p) {
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

// A per-head vector option (alibi_slopes, sinks): rank 1 with one element per query head.
const float* per_head(const char* fn, const char* name, const ConstTensorView& t, int64_t heads) {
  if (t.data() == nullptr) return nullptr;
  if (t.dim() != 1 || t.size(0) != heads || (heads > 1 && t.stride(0) != 1)) {
    throw ArgumentError(std::string(fn) + ": " + name + " must have shape [" +
                        std::to_string(heads) + "] (one per query head) and stride 1, got " +
                        describe(t));
  }
  return t.data();
}

}  // namespace

void check_divisor(const char* fn, float divisor) {
  if (!(divisor > 0.0f) || !std::isfinite(divisor)) {
    throw ArgumentError(std::string(fn) + ": scale_divisor must be positive and finite, got " +
                        std::to_string(divisor));
  }
}

void check_dsinks(const char* fn, const MemoryExtent& dsinks, const AttentionShape& p) {
  if (p.sinks == nullptr) throw ArgumentError(std::string(fn) + ": dsinks given without sinks");
  expect_shape(fn, "dsinks", dsinks.shape, {p.heads});
  if (p.heads > 1 && dsinks.strides[0] != 1) {
    throw ArgumentError(std::string(fn) + ": dsinks must be contiguous, got " + describe(dsinks));
  }
}

void set_variants(const char* fn, const AttentionOptions& options, AttentionShape& p) {
  if (options.window_left < -1) {
    throw ArgumentError(std::string(fn) + ": window_left must be >= 0, or -1 for no window, got " +
                        std::to_string(options.window_left));
  }
  if (!(options.softcap >= 0.0f) || !std::isfinite(options.softcap)) {
    throw ArgumentError(std::string(fn) + ": softcap must be positive and finite, or 0 for none, " +
                        "got " + std::to_string(options.softcap));
  }
  p.window_left = options.window_left;
  p.softcap = options.softcap;
  p.alibi_slopes = per_head(fn, "alibi_slopes", options.alibi_slopes, p.heads);
  p.sinks = per_head(fn, "sinks", options.sinks, p.heads);
}

AttentionShape checked_shape(const char* fn, const MemoryExtent& q, const MemoryExtent& k,
                             const MemoryExtent& v, const AttentionOptions& options) {
  const auto rank_of = [](const MemoryExtent& t) { return static_cast<int64_t>(t.shape.size()); };
  if (rank_of(q) < 2 || rank_of(q) > 4) {
    throw ArgumentError(std::string(fn) + ": q must be (N, d), (B, N, d) or (B, H, N, d), got " +
                        "shape " + shape_to_string(q.shape));
  }
  if (rank_of(k) != rank_of(q) || rank_of(v) != rank_of(q)) {
    throw ArgumentError(std::string(fn) + ": q, k and v must have the same rank, got shapes " +
                        shape_to_string(q.shape) + ", " + shape_to_string(k.shape) + ", " +
                        shape_to_string(v.shape));
  }
  const Rank rank{rank_of(q)};
  const Shape& qs = q.shape;
  const Shape& ks = k.shape;
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
  const int64_t dv = v.shape.back();
  Shape v_expected = k_expected;
  v_expected.back() = dv;
  expect_shape(fn, "v", v.shape, v_expected);
  check_divisor(fn, options.scale_divisor.value_or(default_divisor(d)));
  if (options.query_offset < 0) {
    throw ArgumentError(std::string(fn) + ": query_offset must be >= 0, got " +
                        std::to_string(options.query_offset));
  }
  expect_matrices(fn, "q", q, rank);
  expect_matrices(fn, "k", k, rank);
  expect_matrices(fn, "v", v, rank);
  AttentionShape p = make_attention_shape(batch, heads, kv_heads, n, m, d, dv, options);
  if (options.additive_mask.data() != nullptr) set_mask(fn, options.additive_mask, rank, p);
  set_variants(fn, options, p);
  return p;
}

Shape with_leading_of(const Shape& q_shape, std::vector<int64_t> tail) {
  Shape out(q_shape.begin(), q_shape.end() - 2);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

void check_no_overlap(const char* fn, const NamedExtents& inputs, const NamedExtents& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    // Not a structured binding: Clang 14 (the sanitizer stages) cannot capture one.
    const char* const out_name = outputs[i].first;
    const MemoryExtent& out = outputs[i].second;
    const auto fail = [&](const char* other) {
      throw ArgumentError(std::string(fn) + ": " + out_name + " overlaps " + other +
                          " in memory (an output may share memory with no input and no other "
                          "output)");
    };
    for (const auto& [in_name, in] : inputs) {
      if (may_overlap(out, in)) fail(in_name);
    }
    for (size_t j = i + 1; j < outputs.size(); ++j) {
      if (may_overlap(out, outputs[j].second)) fail(outputs[j].first);
    }
  }
}

NamedExtents with_mask(NamedExtents inputs, const AttentionOptions& options) {
  if (options.additive_mask.data() != nullptr) {
    inputs.emplace_back("additive_mask", options.additive_mask);
  }
  if (options.alibi_slopes.data() != nullptr) {
    inputs.emplace_back("alibi_slopes", options.alibi_slopes);
  }
  if (options.sinks.data() != nullptr) inputs.emplace_back("sinks", options.sinks);
  return inputs;
}

void expect_packed(const char* fn, const char* name, const MemoryExtent& t) {
  if (t.shape.size() != 3 || (t.shape[2] > 1 && t.strides[2] != 1 && !empty(t))) {
    throw ArgumentError(std::string(fn) + ": " + name +
                        " must be (T, heads, dim) with stride 1 in its last dimension, got " +
                        describe(t));
  }
}

void check_offsets(const char* fn, const char* name, std::span<const int64_t> cu, int64_t total) {
  if (cu.empty() || cu.front() != 0 || cu.back() != total) {
    throw ArgumentError(
        std::string(fn) + ": " + name + " must run from 0 to " + std::to_string(total) +
        " (the packed length), got " + std::to_string(cu.size()) + " entries" +
        (cu.empty() ? std::string()
                    : " from " + std::to_string(cu.front()) + " to " + std::to_string(cu.back())));
  }
  for (size_t s = 1; s < cu.size(); ++s) {
    if (cu[s] < cu[s - 1]) {
      throw ArgumentError(std::string(fn) + ": " + name + " must be nondecreasing, got " +
                          std::to_string(cu[s - 1]) + " then " + std::to_string(cu[s]) +
                          " at entry " + std::to_string(s));
    }
  }
}

}  // namespace llm_utils::detail
