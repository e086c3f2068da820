// RoPE tables, the rotation forward and backward, and the ALiBi slopes (llm_utils/rope.hpp).

#include "kernels/rope.hpp"

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "llm_utils/error.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils {
namespace {

void check_options(int64_t head_dim, int64_t max_positions, const RopeOptions& o) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    throw ArgumentError("RopeTable: head_dim must be positive and even, got " +
                        std::to_string(head_dim));
  }
  if (max_positions < 0) {
    throw ArgumentError("RopeTable: max_positions must be >= 0, got " +
                        std::to_string(max_positions));
  }
  if (!(o.theta > 0.0 && std::isfinite(o.theta))) {
    throw ArgumentError("RopeTable: theta must be positive and finite, got " +
                        std::to_string(o.theta));
  }
  if (o.scaling) {
    const RopeScaling& s = *o.scaling;
    if (!(s.factor >= 1.0 && std::isfinite(s.factor)) || !(s.low_freq_factor > 0.0) ||
        !(s.high_freq_factor > s.low_freq_factor && std::isfinite(s.high_freq_factor)) ||
        s.original_context_length <= 0) {
      throw ArgumentError(
          "RopeTable: scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
          "original_context_length > 0, got factor=" +
          std::to_string(s.factor) + ", low_freq_factor=" + std::to_string(s.low_freq_factor) +
          ", high_freq_factor=" + std::to_string(s.high_freq_factor) +
          ", original_context_length=" + std::to_string(s.original_context_length));
    }
  }
}

// The book's float32 steps: inv_freq = 1.0 / (theta ** (arange(0, hd, 2).float() / hd)).
std::vector<float> inverse_frequencies(int64_t head_dim, const RopeOptions& o) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(o.theta), exponent);
  }
  if (!o.scaling) return inv;
  // Llama 3.1: long wavelengths divided by `factor`, short ones kept, the band between
  // interpolated, each step in float32 as the book's code runs it.
  const RopeScaling& s = *o.scaling;
  const float original = static_cast<float>(s.original_context_length);
  const float low_wavelen = original / static_cast<float>(s.low_freq_factor);
  const float high_wavelen = original / static_cast<float>(s.high_freq_factor);
  const float factor = static_cast<float>(s.factor);
  for (float& f : inv) {
    const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
    if (wavelen > low_wavelen) {
      f = f / factor;
    } else if (wavelen >= high_wavelen) {
      const float smooth = (original / wavelen - static_cast<float>(s.low_freq_factor)) /
                           static_cast<float>(s.high_freq_factor - s.low_freq_factor);
      f = (1.0f - smooth) * (f / factor) + smooth * f;
    }
  }
  return inv;
}

// The rotation of one head vector x (hd) at one position: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s),
// with s negated for the inverse. Elements are widened to float and rounded back on store.
template <typename T>
void rotate(T* x, const float* cos, const float* sin, int64_t half, bool inverse) {
  const float sign = inverse ? -1.0f : 1.0f;
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = static_cast<float>(x[i]), x2 = static_cast<float>(x[i + half]);
    const float c = cos[i], s = sign * sin[i];
    x[i] = T(x1 * c - x2 * s);
    x[i + half] = T(x2 * c + x1 * s);
  }
}

template <typename T>
void rope_rows_impl(T* data, int64_t rows, int64_t row_stride, int64_t heads,
                    const int64_t* positions, const RopeTable& table, bool inverse) {
  const int64_t hd = table.head_dim(), half = hd / 2;
  // Under ~64k elements a parallel region costs more than it saves.
  const bool parallel = rows * heads * hd >= (int64_t{1} << 16);
#pragma omp parallel for schedule(static) if (parallel) num_threads(get_num_threads())
  for (int64_t r = 0; r < rows; ++r) {
    const float* cos = table.cos(positions[r]);
    const float* sin = table.sin(positions[r]);
    for (int64_t h = 0; h < heads; ++h)
      rotate(data + r * row_stride + h * hd, cos, sin, half, inverse);
  }
}

// x (..., N, hd) in place: the leading dimensions walked as one index, rows at
// first_position + n.
void rope_view(const char* fn, TensorView x, const RopeTable& table, int64_t first_position,
               bool inverse) {
  const int64_t hd = table.head_dim();
  if (x.dim() < 2 || x.size(-1) != hd || (hd > 1 && x.stride(-1) != 1)) {
    throw ArgumentError(std::string(fn) + ": x must be (..., N, " + std::to_string(hd) +
                        ") with contiguous rows, got shape " + shape_to_string(x.shape()));
  }
  const int64_t n = x.size(-2);
  if (first_position < 0 || first_position + n > table.max_positions()) {
    throw ArgumentError(std::string(fn) + ": positions [" + std::to_string(first_position) + ", " +
                        std::to_string(first_position + n) + ") fall outside the table's [0, " +
                        std::to_string(table.max_positions()) + ")");
  }
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = first_position + i;
  // Every (..., N, hd) matrix of x, its leading index unravelled through the strides.
  int64_t matrices = 1;
  for (int64_t a = 0; a + 2 < x.dim(); ++a) matrices *= x.size(a);
  for (int64_t m = 0; m < matrices; ++m) {
    int64_t offset = 0, rest = m;
    for (int64_t a = x.dim() - 3; a >= 0; --a) {
      offset += (rest % x.size(a)) * x.stride(a);
      rest /= x.size(a);
    }
    detail::rope_rows(x.data() + offset, n, x.stride(-2), 1, positions.data(), table, inverse);
  }
}

}  // namespace

RopeTable::RopeTable(int64_t head_dim, int64_t max_positions, RopeOptions options)
    : head_dim_(head_dim), max_positions_(max_positions), options_(options) {
  check_options(head_dim, max_positions, options);
  inv_freq_ = inverse_frequencies(head_dim, options);
  const int64_t half = head_dim / 2;
  cos_.resize(static_cast<size_t>(max_positions * half));
  sin_.resize(cos_.size());
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // angles = positions[:, None] * inv_freq[None, :], a float32 product
      const float angle = static_cast<float>(p) * inv_freq_[static_cast<size_t>(i)];
      cos_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(double{angle}));
      sin_[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(double{angle}));
    }
  }
}

void rope_forward(TensorView x, const RopeTable& table, int64_t first_position) {
  rope_view("rope_forward", x, table, first_position, false);
}

void rope_backward(TensorView dy, const RopeTable& table, int64_t first_position) {
  rope_view("rope_backward", dy, table, first_position, true);
}

Tensor alibi_slopes(int64_t heads) {
  if (heads < 1)
    throw ArgumentError("alibi_slopes: heads must be >= 1, got " + std::to_string(heads));
  // slopes of a power of two n: 2^(-8 (h + 1) / n), h = 0 .. n - 1
  const auto power_of_two_slopes = [](int64_t n, int64_t h) {
    return static_cast<float>(
        std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(n)));
  };
  int64_t n = 1;
  while (n * 2 <= heads) n *= 2;
  Tensor out({heads});
  for (int64_t h = 0; h < n; ++h) out[h] = power_of_two_slopes(n, h);
  // The rest: slopes 0, 2, 4, ... of 2n (those that fall between the first n).
  for (int64_t h = n; h < heads; ++h) out[h] = power_of_two_slopes(2 * n, 2 * (h - n));
  return out;
}

namespace detail {

void rope_rows(float* data, int64_t rows, int64_t row_stride, int64_t heads,
               const int64_t* positions, const RopeTable& table, bool inverse) {
  rope_rows_impl(data, rows, row_stride, heads, positions, table, inverse);
}

void rope_rows(bfloat16* data, int64_t rows, int64_t row_stride, int64_t heads,
               const int64_t* positions, const RopeTable& table, bool inverse) {
  rope_rows_impl(data, rows, row_stride, heads, positions, table, inverse);
}

}  // namespace detail
}  // namespace llm_utils
