// Module: the checks, saved state, parameters and state dicts every attention module shares.

#include "llm_utils/nn/module.hpp"

#include <algorithm>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {

Module::Module(std::string class_name, int64_t in_features, int64_t out_features,
               int64_t max_seq_len)
    : class_name_(std::move(class_name)),
      in_features_(in_features),
      out_features_(out_features),
      max_seq_len_(max_seq_len) {}

Module::Input Module::check_input(ConstTensorView& x, Tensor& copy, bool packed) const {
  // The messages are built only on failure: a forward of the book's 6 x 3 example takes ~1 us.
  const auto fail = [&](const std::string& what) {
    throw ArgumentError(class_name_ + ".forward: " + what +
                        " (x.shape = " + shape_to_string(x.shape()) + ")");
  };
  if (x.dim() != 2 && x.dim() != 3) {
    fail("x must be (seq_len, d_in) or (batch, seq_len, d_in), got " + std::to_string(x.dim()) +
         "-D input");
  }
  if (x.size(-1) != in_features_) {
    fail("x has d_in=" + std::to_string(x.size(-1)) +
         ", module expects d_in=" + std::to_string(in_features_));
  }
  const Input in{x.dim() == 3 ? x.size(0) : 1, x.size(-2), x.dim() == 2};
  if (in.seq == 0) fail("x has a zero-length sequence");
  if (in.batch == 0) fail("x has an empty batch");
  if (max_seq_len_ > 0 && in.seq > max_seq_len_ && !packed) {
    fail("x has seq_len=" + std::to_string(in.seq) +
         " tokens, more than context_length=" + std::to_string(max_seq_len_));
  }
  x = contiguous(x, copy);
  x = ConstTensorView(x.data(), {in.batch * in.seq, in_features_});
  return in;
}

Tensor Module::finish_forward(Tensor y, const Input& in) {
  saved_.input = in;
  saved_.no_backward_reason = std::move(pending_no_backward_);
  pending_no_backward_.clear();
  Shape shape = {in.batch, in.seq, out_features_};
  if (in.was_2d) shape = {in.seq, out_features_};
  return std::move(y).reshape(shape);
}

Tensor Module::forward(ConstTensorView x) {
  return forward_with(
      x, [this](ConstTensorView rows, const Input& in) { return forward_rows(rows, in); });
}

Tensor Module::backward(ConstTensorView grad_output) {
  const std::string where = class_name_ + ".backward";
  if (!has_forward()) throw StateError(where + ": called before any forward");
  if (!saved_.no_backward_reason.empty()) {
    throw StateError(where + ": " + saved_.no_backward_reason);
  }
  const Input& in = saved_.input;
  const Shape expected =
      in.was_2d ? Shape{in.seq, out_features_} : Shape{in.batch, in.seq, out_features_};
  if (grad_output.shape() != expected) {
    throw ArgumentError(where + ": grad_output has shape " + shape_to_string(grad_output.shape()) +
                        ", the forward output had shape " + shape_to_string(expected));
  }
  Tensor copy;
  const ConstTensorView dy = contiguous(grad_output, copy);
  Tensor dx = backward_rows(ConstTensorView(dy.data(), {in.batch * in.seq, out_features_}));
  gradients_ready();  // every gradient is final
  Shape x_shape = {in.batch, in.seq, in_features_};
  if (in.was_2d) x_shape = {in.seq, in_features_};
  return std::move(dx).reshape(x_shape);
}

NamedParameters Module::named_parameters() const {
  NamedParameters out;
  for (StateEntry& e : state_entries()) {
    if (e.parameter.defined()) out.emplace_back(std::move(e.name), std::move(e.parameter));
  }
  return out;
}

StateDict Module::state_dict() const {
  StateDict out;
  for (const StateEntry& e : state_entries()) {
    out.insert(e.name, e.buffer != nullptr ? *e.buffer : Tensor::from_view(e.parameter.data()));
  }
  return out;
}

void Module::zero_grad(bool set_to_none) {
  for (auto& [name, p] : named_parameters()) p.zero_grad(set_to_none);
}

LoadResult Module::load_state_dict(const StateDict& state, bool strict) {
  const std::string where = class_name_ + ".load_state_dict";
  const std::vector<StateEntry> entries = state_entries();
  LoadResult result;
  // Check everything before changing anything: loading is all or nothing.
  std::vector<std::pair<ParameterRef, const Tensor*>> copies;
  for (const StateEntry& e : entries) {
    const Tensor* t = state.find(e.name);
    if (t == nullptr) {
      // A missing buffer is fine even when strict: it follows from the configuration.
      if (e.buffer == nullptr && strict) {
        throw ArgumentError(where + ": missing key '" + e.name + "'");
      }
      if (!strict) result.missing_keys.push_back(e.name);
      continue;
    }
    const Shape& expected = e.buffer != nullptr ? e.buffer->shape() : e.parameter.shape();
    if (t->shape() != expected) {
      throw ArgumentError(where + ": key '" + e.name + "' has shape " +
                          shape_to_string(t->shape()) + ", expected " + shape_to_string(expected));
    }
    if (e.buffer != nullptr) {
      if (!std::equal(t->begin(), t->end(), e.buffer->begin())) {
        throw ArgumentError(where + ": key '" + e.name +
                            "' is not the causal mask triu(ones(n, n), diagonal=1); other masks "
                            "are not supported");
      }
      continue;
    }
    copies.emplace_back(e.parameter, t);
  }
  for (const auto& [key, t] : state) {
    const bool known = std::any_of(entries.begin(), entries.end(),
                                   [&name = key](const StateEntry& e) { return e.name == name; });
    if (known) continue;
    if (is_derived_key(key)) {
      // Derived from the next forward's input; only its rank can be checked.
      if (t.dim() != 2) {
        throw ArgumentError(where + ": derived key '" + key + "' must be a matrix, got shape " +
                            shape_to_string(t.shape()));
      }
      continue;
    }
    if (strict) throw ArgumentError(where + ": unexpected key '" + key + "'");
    result.unexpected_keys.push_back(key);
  }
  for (auto& [p, t] : copies) p.copy_from(*t);
  if (has_forward()) {
    saved_.no_backward_reason = "the weights were loaded after the last forward; run forward again";
  }
  after_load();
  return result;
}

}  // namespace llm_utils
