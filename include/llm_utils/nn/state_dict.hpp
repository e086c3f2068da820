#pragma once
/// \file state_dict.hpp
/// An ordered name -> tensor map, the C++ form of PyTorch's `state_dict()`.
///
/// Example:
/// \code
///   llm_utils::StateDict sd = module.state_dict();
///   const llm_utils::Tensor& w = sd.at("W_query.weight");
/// \endcode

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// Keeps insertion order (as PyTorch's OrderedDict does); names are unique.
class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  /// Adds `name`; throws ArgumentError if it is already present.
  void insert(std::string name, Tensor tensor);
  /// Adds or replaces `name`.
  void insert_or_assign(std::string name, Tensor tensor);
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  /// nullptr when absent.
  const Tensor* find(const std::string& name) const;
  /// Throws ArgumentError naming the key when absent.
  const Tensor& at(const std::string& name) const;
  std::vector<std::string> keys() const;
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
};

}  // namespace llm_utils
