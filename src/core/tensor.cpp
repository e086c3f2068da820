#include "llm_utils/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "llm_utils/bfloat16.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils {

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0) throw ArgumentError("shape " + shape_to_string(shape) + " has a negative size");
    if (s != 0 && n > std::numeric_limits<int64_t>::max() / s) {
      throw ArgumentError("shape " + shape_to_string(shape) +
                          " has more elements than int64 can count");
    }
    n *= s;
  }
  return n;
}

template <typename T>
BasicTensorView<T>::BasicTensorView(T* data, Shape shape, Shape strides)
    : data_(data), shape_(std::move(shape)), strides_(std::move(strides)) {
  if (strides_.size() != shape_.size()) {
    throw ArgumentError("tensor view: " + std::to_string(strides_.size()) + " strides " +
                        shape_to_string(strides_) + " for a shape of rank " +
                        std::to_string(shape_.size()) + " " + shape_to_string(shape_));
  }
  for (int64_t s : strides_) {
    if (s < 0) {
      throw ArgumentError("tensor view: strides must be >= 0, got " + shape_to_string(strides_) +
                          " for shape " + shape_to_string(shape_));
    }
  }
  shape_numel(shape_);  // checks the sizes
}

template <typename T>
int64_t BasicTensorView<T>::checked_dim(const char* fn, int64_t d) const {
  const int64_t rank = dim();
  const int64_t k = d < 0 ? d + rank : d;
  if (k < 0 || k >= rank) {
    throw ArgumentError(std::string(fn) + ": dimension " + std::to_string(d) +
                        " is out of range for shape " + shape_to_string(shape_));
  }
  return k;
}

template <typename T>
int64_t BasicTensorView<T>::size(int64_t d) const {
  return shape_[static_cast<size_t>(checked_dim("size", d))];
}

template <typename T>
int64_t BasicTensorView<T>::numel() const {
  return shape_numel(shape_);
}

template <typename T>
Shape BasicTensorView<T>::strides() const {
  if (!strides_.empty() || shape_.empty()) return strides_;
  Shape out(shape_.size());
  int64_t step = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    out[i] = step;
    step *= shape_[i];
  }
  return out;
}

template <typename T>
int64_t BasicTensorView<T>::stride(int64_t d) const {
  const auto k = static_cast<size_t>(checked_dim("stride", d));
  if (!strides_.empty()) return strides_[k];
  int64_t step = 1;
  for (size_t i = shape_.size(); --i > k;) step *= shape_[i];
  return step;
}

template <typename T>
bool BasicTensorView<T>::is_contiguous() const {
  if (strides_.empty()) return true;
  // No elements: any layout is contiguous.
  if (std::find(shape_.begin(), shape_.end(), 0) != shape_.end()) return true;
  int64_t step = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] != 1 && strides_[i] != step) return false;
    step *= shape_[i];
  }
  return true;
}

template <typename T>
T& BasicTensorView<T>::at(std::initializer_list<int64_t> index) const {
  if (index.size() != shape_.size()) {
    throw ArgumentError("at: index has " + std::to_string(index.size()) +
                        " coordinates, view has rank " + std::to_string(shape_.size()) +
                        " (shape = " + shape_to_string(shape_) + ")");
  }
  const Shape strides = this->strides();
  int64_t offset = 0;
  size_t d = 0;
  for (int64_t i : index) {
    if (i < 0 || i >= shape_[d]) {
      throw ArgumentError("at: coordinate " + std::to_string(i) + " of dimension " +
                          std::to_string(d) +
                          " is out of range (shape = " + shape_to_string(shape_) + ")");
    }
    offset += i * strides[d];
    ++d;
  }
  return data_[offset];
}

template <typename T>
BasicTensorView<T> BasicTensorView<T>::select(int64_t i) const {
  if (shape_.empty()) throw ArgumentError("select: cannot select from a rank-0 view");
  if (i < 0 || i >= shape_[0]) {
    throw ArgumentError("select: index " + std::to_string(i) + " is out of range for shape " +
                        shape_to_string(shape_));
  }
  Shape inner(shape_.begin() + 1, shape_.end());
  if (strides_.empty()) {
    const int64_t stride = shape_numel(inner);
    return BasicTensorView<T>(data_ + i * stride, std::move(inner));
  }
  return BasicTensorView<T>(data_ + i * strides_[0], std::move(inner),
                            Shape(strides_.begin() + 1, strides_.end()));
}

template <typename T>
BasicTensorView<T> BasicTensorView<T>::narrow(int64_t d, int64_t start, int64_t length) const {
  const auto k = static_cast<size_t>(checked_dim("narrow", d));
  if (start < 0 || length < 0 || start > shape_[k] - length) {
    throw ArgumentError("narrow: elements [" + std::to_string(start) + ", " +
                        std::to_string(start) + " + " + std::to_string(length) +
                        ") are out of range for dimension " + std::to_string(d) + " of shape " +
                        shape_to_string(shape_));
  }
  Shape shape = shape_;
  shape[k] = length;
  const Shape strides = this->strides();
  return BasicTensorView<T>(data_ + (length > 0 ? start * strides[k] : 0), std::move(shape),
                            strides);
}

template <typename T>
BasicTensorView<T> BasicTensorView<T>::transpose(int64_t d0, int64_t d1) const {
  const auto a = static_cast<size_t>(checked_dim("transpose", d0));
  const auto b = static_cast<size_t>(checked_dim("transpose", d1));
  Shape shape = shape_, strides = this->strides();
  std::swap(shape[a], shape[b]);
  std::swap(strides[a], strides[b]);
  return BasicTensorView<T>(data_, std::move(shape), std::move(strides));
}

template class BasicTensorView<float>;
template class BasicTensorView<const float>;
template class BasicTensorView<bfloat16>;
template class BasicTensorView<const bfloat16>;

namespace {
constexpr size_t kAlignment = 64;

// calloc plus manual alignment: glibc's aligned_alloc (memalign) costs several times a malloc,
// which shows on small tensors (the book's 6 x 3 example allocates a dozen), and calloc skips
// the zeroing of a large block the kernel has just mapped (already zero), a pass over memory
// that a separate memset would make (0.4 ms for a 25 MB output on Zen 5). The pointer calloc
// returned is stored just before the aligned block.
float* allocate_zeroed_floats(int64_t n) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  void* raw = std::calloc(1, bytes + kAlignment + sizeof(void*));
  if (raw == nullptr) throw std::bad_alloc();
  const auto base = reinterpret_cast<uintptr_t>(raw) + sizeof(void*);
  const uintptr_t aligned = (base + kAlignment - 1) & ~(uintptr_t{kAlignment} - 1);
  reinterpret_cast<void**>(aligned)[-1] = raw;
  return reinterpret_cast<float*>(aligned);
}
}  // namespace

void Tensor::FreeDeleter::operator()(float* p) const noexcept {
  if (p != nullptr) std::free(reinterpret_cast<void**>(p)[-1]);
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), numel_(shape_numel(shape_)) {
  // Leave room for rounding the byte count up to the alignment without wrapping around.
  constexpr uint64_t kMaxElements =
      (std::numeric_limits<size_t>::max() - 2 * kAlignment) / sizeof(float);
  if (static_cast<uint64_t>(numel_) > kMaxElements) {
    throw ArgumentError("Tensor: shape " + shape_to_string(shape_) + " is too large to allocate");
  }
  data_.reset(allocate_zeroed_floats(numel_));
}

Tensor::Tensor(Shape shape, const std::vector<float>& values) : Tensor(std::move(shape)) {
  if (static_cast<int64_t>(values.size()) != numel_) {
    throw ArgumentError("Tensor: shape " + shape_to_string(shape_) + " needs " +
                        std::to_string(numel_) + " values, got " + std::to_string(values.size()));
  }
  std::memcpy(data_.get(), values.data(), values.size() * sizeof(float));
}

namespace {
// Copies the strided `src` (its dimensions from `d` on) to contiguous `dst`, row-major.
void copy_strided(const float* src, const Shape& shape, const Shape& strides, size_t d,
                  float*& dst) {
  const int64_t size = shape[d], stride = strides[d];
  if (d + 1 == shape.size()) {
    for (int64_t i = 0; i < size; ++i) *dst++ = src[i * stride];
    return;
  }
  for (int64_t i = 0; i < size; ++i) copy_strided(src + i * stride, shape, strides, d + 1, dst);
}
}  // namespace

Tensor Tensor::from_view(ConstTensorView view) {
  Tensor t(view.shape());
  if (t.numel_ == 0) return t;
  if (view.is_contiguous()) {
    std::memcpy(t.data(), view.data(), static_cast<size_t>(t.numel_) * sizeof(float));
  } else {
    float* dst = t.data();
    copy_strided(view.data(), view.shape(), view.strides(), 0, dst);
  }
  return t;
}

ConstTensorView contiguous(ConstTensorView view, Tensor& storage) {
  if (view.is_contiguous()) return view;
  storage = Tensor::from_view(view);
  return storage.view();
}

Tensor Tensor::full(Shape shape, float value) {
  Tensor t(std::move(shape));
  for (float& x : t) x = value;
  return t;
}

Tensor::Tensor(const Tensor& other)
    : Tensor(other.data_ == nullptr ? Tensor() : Tensor::from_view(other.view())) {}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

namespace {
int64_t flat_index(const Shape& shape, std::initializer_list<int64_t> index) {
  if (index.size() != shape.size()) {
    throw ArgumentError("at: index has " + std::to_string(index.size()) +
                        " coordinates, tensor has rank " + std::to_string(shape.size()) +
                        " (shape = " + shape_to_string(shape) + ")");
  }
  int64_t flat = 0;
  size_t d = 0;
  for (int64_t i : index) {
    if (i < 0 || i >= shape[d]) {
      throw ArgumentError("at: coordinate " + std::to_string(i) + " of dimension " +
                          std::to_string(d) +
                          " is out of range (shape = " + shape_to_string(shape) + ")");
    }
    flat = flat * shape[d] + i;
    ++d;
  }
  return flat;
}
}  // namespace

float& Tensor::at(std::initializer_list<int64_t> index) {
  return data()[flat_index(shape_, index)];
}
float Tensor::at(std::initializer_list<int64_t> index) const {
  return data()[flat_index(shape_, index)];
}

Tensor Tensor::reshape(Shape shape) const& {
  return Tensor(*this).reshape(std::move(shape));
}

Tensor Tensor::reshape(Shape shape) && {
  if (shape_numel(shape) != numel_) {
    throw ArgumentError("reshape: cannot view shape " + shape_to_string(shape_) + " as " +
                        shape_to_string(shape));
  }
  Tensor t = std::move(*this);
  t.shape_ = std::move(shape);
  return t;
}

void Tensor::zero() {
  if (numel_ > 0) std::memset(data(), 0, static_cast<size_t>(numel_) * sizeof(float));
}

}  // namespace llm_utils
