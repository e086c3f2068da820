#pragma once
/// \file value_ptr.hpp
/// An owning pointer that copies what it points to: how a module holds its implementation (a
/// type the public headers only declare) and still copies as a value. Declare the owner's copy
/// constructor and destructor in its header and define them `= default` where T is complete.

#include <memory>
#include <utility>

namespace llm_utils::detail {

template <typename T>
class ValuePtr {
 public:
  ValuePtr() = default;
  explicit ValuePtr(std::unique_ptr<T> p) : p_(std::move(p)) {}
  ValuePtr(const ValuePtr& other) : p_(other.p_ ? std::make_unique<T>(*other.p_) : nullptr) {}
  ValuePtr(ValuePtr&&) noexcept = default;
  ValuePtr& operator=(const ValuePtr& other) {
    if (this != &other) p_ = other.p_ ? std::make_unique<T>(*other.p_) : nullptr;
    return *this;
  }
  ValuePtr& operator=(ValuePtr&&) noexcept = default;
  ~ValuePtr() = default;

  T& operator*() const { return *p_; }
  T* operator->() const { return p_.get(); }

 private:
  std::unique_ptr<T> p_;
};

}  // namespace llm_utils::detail
