#pragma once
/// \file tensor.hpp
/// An owning float32 tensor of any rank with contiguous row-major storage, and non-owning (possibly
/// strided) views.
///
/// Example:
/// \code
///   llm_utils::Tensor x({2, 3}, {1, 2, 3, 4, 5, 6});
///   float v = x.at({1, 2});          // 6
///   llm_utils::ConstTensorView row = x.select(1);   // shape [3], values 4 5 6
/// \endcode

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace llm_utils {

using Shape = std::vector<int64_t>;

/// Number of elements of a shape; throws ArgumentError on a negative size or int64 overflow.
int64_t shape_numel(const Shape& shape);

/// A non-owning view of float32 data with a shape and strides, as a PyTorch tensor is: element
/// (i0, i1, ...) lives at data()[i0 * stride(0) + i1 * stride(1) + ...]. Strides count elements
/// and are >= 0 (0 repeats a dimension, as `expand` does). A view built from a pointer and a
/// shape alone is contiguous (row-major). Does not keep the data alive.
///
/// Functions that take a view say whether they need it contiguous; most copy a strided one
/// first (Tensor::from_view), the attention kernels read strided q, k, v, masks and write strided
/// outputs in place, as long as each row (the last dimension) is contiguous.
///
/// Example:
/// \code
///   // Heads read in place from a packed (N, 3 * H * hd) projection: q is (H, N, hd).
///   llm_utils::ConstTensorView q(qkv.data(), {H, N, hd}, {hd, 3 * H * hd, 1});
/// \endcode
template <typename T>
class BasicTensorView {
 public:
  BasicTensorView() = default;
  /// A contiguous view.
  BasicTensorView(T* data, Shape shape) : data_(data), shape_(std::move(shape)) {}
  /// A strided view; throws ArgumentError unless there is one stride >= 0 per dimension.
  BasicTensorView(T* data, Shape shape, Shape strides);
  /// A mutable view converts to a const one.
  template <typename U>
  BasicTensorView(const BasicTensorView<U>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()), shape_(other.shape()), strides_(other.explicit_strides()) {}

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  /// Size of dimension `d`; negative `d` counts from the end as in PyTorch.
  int64_t size(int64_t d) const;
  int64_t numel() const;
  /// The strides, in elements (computed for a contiguous view).
  Shape strides() const;
  /// Stride of dimension `d` (negative counts from the end).
  int64_t stride(int64_t d) const;
  /// Whether the elements lie row-major, one after another (sizes 0 and 1 ignore their stride).
  bool is_contiguous() const;
  /// Element access by multi-index through the strides, bounds-checked (throws ArgumentError).
  T& at(std::initializer_list<int64_t> index) const;
  /// The `i`-th slice along the first dimension (a batch element), as a view of rank dim()-1.
  BasicTensorView select(int64_t i) const;
  /// Elements [start, start + length) of dimension `d`, as PyTorch's `narrow`.
  BasicTensorView narrow(int64_t d, int64_t start, int64_t length) const;
  /// Dimensions d0 and d1 swapped, as PyTorch's `transpose` (no copy).
  BasicTensorView transpose(int64_t d0, int64_t d1) const;

  /// The strides as given when the view was built strided; empty for a contiguous-built view.
  const Shape& explicit_strides() const { return strides_; }

 private:
  int64_t checked_dim(const char* fn, int64_t d) const;
  T* data_ = nullptr;
  Shape shape_;
  Shape strides_;  // empty: contiguous
};

using TensorView = BasicTensorView<float>;
using ConstTensorView = BasicTensorView<const float>;

/// Owning float32 tensor. Storage is 64-byte aligned and contiguous (row-major).
/// Copying copies the data; moving is cheap.
class Tensor {
 public:
  /// An empty tensor of shape [0], with no storage (data() is null): cheap to make, as the
  /// placeholder of a tensor not computed yet.
  Tensor() : shape_{0} {}
  /// A tensor of the given shape filled with zeros.
  explicit Tensor(Shape shape);
  /// A tensor of the given shape holding `values` (row-major); sizes must agree.
  Tensor(Shape shape, const std::vector<float>& values);
  Tensor(Shape shape, std::initializer_list<float> values)
      : Tensor(std::move(shape), std::vector<float>(values)) {}
  /// Copies the data of a view (strided or not) into a new contiguous tensor.
  static Tensor from_view(ConstTensorView view);
  static Tensor zeros(Shape shape) { return Tensor(std::move(shape)); }
  static Tensor full(Shape shape, float value);

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  ~Tensor() = default;

  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return view().size(d); }
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float* begin() { return data(); }
  float* end() { return data() + numel_; }
  const float* begin() const { return data(); }
  const float* end() const { return data() + numel_; }

  /// Element access by multi-index, bounds-checked (throws ArgumentError).
  float& at(std::initializer_list<int64_t> index);
  float at(std::initializer_list<int64_t> index) const;
  /// Flat element access, unchecked.
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  TensorView view() { return {data(), shape_}; }
  ConstTensorView view() const { return {data(), shape_}; }
  operator TensorView() { return view(); }             // NOLINT(google-explicit-constructor)
  operator ConstTensorView() const { return view(); }  // NOLINT(google-explicit-constructor)
  /// View of the `i`-th slice along dimension 0 (a batch element).
  TensorView select(int64_t i) { return view().select(i); }
  ConstTensorView select(int64_t i) const { return view().select(i); }
  /// The same data with another shape of equal element count (a copy; from an rvalue, a move).
  Tensor reshape(Shape shape) const&;
  Tensor reshape(Shape shape) &&;
  /// Sets every element to zero.
  void zero();
  std::vector<float> to_vector() const { return {begin(), end()}; }

 private:
  struct FreeDeleter {
    void operator()(float* p) const noexcept;
  };
  Shape shape_;
  int64_t numel_ = 0;
  std::unique_ptr<float[], FreeDeleter> data_;
};

/// `view` itself when it is contiguous, else a contiguous copy of it held in `storage`.
ConstTensorView contiguous(ConstTensorView view, Tensor& storage);

}  // namespace llm_utils
