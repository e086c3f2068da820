#include "llm_utils/nn/state_dict.hpp"

#include "llm_utils/error.hpp"

namespace llm_utils {

void StateDict::insert(std::string name, Tensor tensor) {
  if (contains(name)) throw ArgumentError("state dict: duplicate key '" + name + "'");
  entries_.emplace_back(std::move(name), std::move(tensor));
}

void StateDict::insert_or_assign(std::string name, Tensor tensor) {
  for (auto& [key, value] : entries_) {
    if (key == name) {
      value = std::move(tensor);
      return;
    }
  }
  entries_.emplace_back(std::move(name), std::move(tensor));
}

const Tensor* StateDict::find(const std::string& name) const {
  for (const auto& [key, value] : entries_) {
    if (key == name) return &value;
  }
  return nullptr;
}

const Tensor& StateDict::at(const std::string& name) const {
  const Tensor* t = find(name);
  if (t == nullptr) throw ArgumentError("state dict: no key '" + name + "'");
  return *t;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& entry : entries_) out.push_back(entry.first);
  return out;
}

}  // namespace llm_utils
