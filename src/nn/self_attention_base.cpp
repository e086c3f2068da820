// SelfAttentionBase: input checks, the attention core per batch element, the state forward
// saves for backward and inspection, and state-dict handling shared by the four classes.

#include <algorithm>
#include <string>

#include "kernels/attention_dispatch.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/self_attention.hpp"

namespace llm_utils {

SelfAttentionBase::SelfAttentionBase(std::string class_name, int64_t d_in, int64_t d_out)
    : class_name_(std::move(class_name)), d_in_(d_in), d_out_(d_out) {
  if (d_in <= 0 || d_out <= 0) {
    throw ArgumentError(class_name_ + ": d_in and d_out must be positive, got d_in=" +
                        std::to_string(d_in) + ", d_out=" + std::to_string(d_out));
  }
}

namespace {
// Gives t the shape, reusing its storage when it already has it: repeated forwards of the same
// size then allocate nothing here (it shows on tiny inputs such as the book's example).
void ensure_shape(Tensor& t, int64_t d0, int64_t d1, int64_t d2 = -1) {
  const Shape& s = t.shape();
  const bool same = d2 < 0 ? (s.size() == 2 && s[0] == d0 && s[1] == d1)
                           : (s.size() == 3 && s[0] == d0 && s[1] == d1 && s[2] == d2);
  if (!same) t = d2 < 0 ? Tensor({d0, d1}) : Tensor({d0, d1, d2});
}
}  // namespace

Tensor SelfAttentionBase::forward(ConstTensorView x_view) {
  Tensor x_copy;
  const ConstTensorView x = contiguous(x_view, x_copy);
  const auto where = [this] { return class_name_ + ".forward"; };
  if (x.dim() != 2 && x.dim() != 3) {
    throw ArgumentError(where() + ": x must be (seq_len, d_in) or (batch, seq_len, d_in), got " +
                        std::to_string(x.dim()) +
                        "-D input (x.shape = " + shape_to_string(x.shape()) + ")");
  }
  if (x.size(-1) != d_in_) {
    throw ArgumentError(where() + ": x has d_in=" + std::to_string(x.size(-1)) +
                        ", module expects d_in=" + std::to_string(d_in_) +
                        " (x.shape = " + shape_to_string(x.shape()) + ")");
  }
  const int64_t batch = x.dim() == 3 ? x.size(0) : 1;
  const int64_t seq = x.size(-2);
  if (seq == 0) {
    throw ArgumentError(
        where() + ": x has a zero-length sequence (x.shape = " + shape_to_string(x.shape()) + ")");
  }
  if (batch == 0) {
    throw ArgumentError(where() +
                        ": x has an empty batch (x.shape = " + shape_to_string(x.shape()) + ")");
  }

  // The input is valid, so nothing below throws (short of memory): the saved state is
  // overwritten in place, reusing its buffers when the sizes repeat.
  ensure_shape(input_, batch * seq, d_in_);  // (B*N, d_in)
  std::copy(x.data(), x.data() + batch * seq * d_in_, input_.data());
  ensure_shape(queries_, batch, seq, d_out_);  // (B, N, d_out)
  ensure_shape(keys_, batch, seq, d_out_);     // (B, N, d_out)
  ensure_shape(values_, batch, seq, d_out_);   // (B, N, d_out)
  ensure_shape(context_, batch, seq, d_out_);  // (B, N, d_out)
  ensure_shape(lse_, batch, seq);              // (B, N)
  ensure_shape(row_max_, batch, seq);          // (B, N)
  ensure_shape(log_sum_, batch, seq);          // (B, N)
  project(input_, queries_, keys_, values_);
  const detail::AttentionProblem problem = detail::make_attention_problem(
      queries_.data(), keys_.data(), values_.data(), batch, seq, seq, d_out_, d_out_, options_);
  have_row_stats_ = detail::attention_forward(
                        problem, options_.backend,
                        {detail::Strided<float>::contiguous(context_.data(), 1, seq, d_out_),
                         detail::Strided<float>::contiguous(lse_.data(), 1, seq, 1),
                         {row_max_.data(), log_sum_.data()}}) == Backend::flash;

  batch_ = batch;
  seq_ = seq;
  input_was_2d_ = x.dim() == 2;
  backward_ready_ = true;
  probs_.reset();
  after_forward(batch, seq);
  Tensor out(input_was_2d_ ? Shape{seq, d_out_} : Shape{batch, seq, d_out_});
  std::copy(context_.begin(), context_.end(), out.data());
  return out;
}

Tensor SelfAttentionBase::backward(ConstTensorView grad_output_view) {
  Tensor grad_copy;
  const ConstTensorView grad_output = contiguous(grad_output_view, grad_copy);
  const std::string where = class_name_ + ".backward";
  if (!has_forward()) throw StateError(where + ": called before any forward");
  if (!backward_ready_) {
    throw StateError(where + ": the weights were loaded after the last forward; run forward again");
  }
  const Shape expected = as_input_rank(context_).shape();
  if (grad_output.shape() != expected) {
    throw ArgumentError(where + ": grad_output has shape " + shape_to_string(grad_output.shape()) +
                        ", the forward output had shape " + shape_to_string(expected));
  }
  const bool qk = gradient_reaches_queries_and_keys();
  Tensor dq, dk;  // (B, N, d_out) each, or empty when no gradient reaches Q and K
  if (qk) {
    dq = Tensor({batch_, seq_, d_out_});
    dk = Tensor({batch_, seq_, d_out_});
  }
  Tensor dv({batch_, seq_, d_out_});                                       // (B, N, d_out)
  const ConstTensorView dout(grad_output.data(), {batch_, seq_, d_out_});  // (B, N, d_out)
  using detail::Strided;
  detail::BackwardTensors t;
  t.out = Strided<const float>::contiguous(context_.data(), 1, seq_, d_out_);
  t.lse = Strided<const float>::contiguous(lse_.data(), 1, seq_, 1);
  t.stats = row_stats();
  t.dout = Strided<const float>::contiguous(dout.data(), 1, seq_, d_out_);
  if (qk) {
    t.dq = Strided<float>::contiguous(dq.data(), 1, seq_, d_out_);
    t.dk = Strided<float>::contiguous(dk.data(), 1, seq_, d_out_);
  }
  t.dv = Strided<float>::contiguous(dv.data(), 1, seq_, d_out_);
  detail::attention_backward(saved_problem(), options_.backend, t);
  const Shape flat = {batch_ * seq_, d_out_};
  const ConstTensorView none;
  Tensor dx = project_backward(input_, qk ? ConstTensorView(dq.data(), flat) : none,
                               qk ? ConstTensorView(dk.data(), flat) : none,
                               ConstTensorView(dv.data(), flat));
  Shape x_shape = {batch_, seq_, d_in_};
  if (input_was_2d_) x_shape = {seq_, d_in_};
  return std::move(dx).reshape(x_shape);
}

void SelfAttentionBase::zero_grad(bool set_to_none) {
  for (auto& [name, p] : named_parameters()) p->zero_grad(set_to_none);
}

StateDict SelfAttentionBase::state_dict(bool include_derived) const {
  StateDict out;
  // named_parameters() is non-const only because it hands out mutable pointers; we only read.
  for (const auto& [name, p] : const_cast<SelfAttentionBase*>(this)->named_parameters()) {
    out.insert(name, p->data);
  }
  if (include_derived) {
    if (has_forward() && batch_ > 1) {
      throw ArgumentError(class_name_ +
                          ".state_dict: derived layers exist once per batch element after a 3-D "
                          "forward; include_derived needs the last forward to be 2-D");
    }
    for (auto& [name, t] : derived_state()) out.insert(name, std::move(t));
  }
  return out;
}

void SelfAttentionBase::load_state_dict(const StateDict& state, bool strict) {
  const std::string where = class_name_ + ".load_state_dict";
  NamedParameters params = named_parameters();
  // Check everything before changing anything: loading is all or nothing.
  std::vector<std::pair<Parameter*, const Tensor*>> assignments;
  for (const auto& [name, p] : params) {
    const Tensor* t = state.find(name);
    if (t == nullptr) {
      if (strict) throw ArgumentError(where + ": missing key '" + name + "'");
      continue;
    }
    if (t->shape() != p->data.shape()) {
      throw ArgumentError(where + ": key '" + name + "' has shape " + shape_to_string(t->shape()) +
                          ", expected " + shape_to_string(p->data.shape()));
    }
    assignments.emplace_back(p, t);
  }
  for (const auto& [name, t] : state) {
    bool known = false;
    for (const auto& entry : params) known = known || entry.first == name;
    if (known) continue;
    if (is_derived_key(name)) {
      // Derived from the next forward's input; only its rank and width can be checked.
      if (t.dim() != 2) {
        throw ArgumentError(where + ": derived key '" + name + "' must be a matrix, got shape " +
                            shape_to_string(t.shape()));
      }
      continue;
    }
    if (strict) throw ArgumentError(where + ": unexpected key '" + name + "'");
  }
  for (auto& [p, t] : assignments) p->data = *t;
  backward_ready_ = false;
}

detail::AttentionProblem SelfAttentionBase::saved_problem() const {
  return detail::make_attention_problem(queries_.data(), keys_.data(), values_.data(), batch_, seq_,
                                        seq_, d_out_, d_out_, options_);
}

detail::RowStats SelfAttentionBase::row_stats() const {
  return detail::saved_row_stats(row_max_.data(), log_sum_.data(), have_row_stats_);
}

ConstTensorView SelfAttentionBase::as_input_rank(const Tensor& t) const {
  if (!input_was_2d_) return t.view();
  return t.select(0);
}

ConstTensorView SelfAttentionBase::values() const {
  if (!has_forward()) throw StateError(class_name_ + ".values: no forward has run yet");
  return as_input_rank(values_);
}

const Tensor& SelfAttentionBase::all_attn_weights() const {
  if (!probs_) {
    Tensor probs({batch_, seq_, seq_});  // (B, N, N)
    detail::attention_probabilities(
        saved_problem(), options_.backend,
        detail::Strided<const float>::contiguous(lse_.data(), 1, seq_, 1), row_stats(),
        detail::Strided<float>::contiguous(probs.data(), 1, seq_, seq_));
    probs_ = std::move(probs);
  }
  return *probs_;
}

ConstTensorView SelfAttentionBase::attn_weights() const {
  if (!has_forward()) throw StateError(class_name_ + ".attn_weights: no forward has run yet");
  return as_input_rank(all_attn_weights());
}

ConstTensorView SelfAttentionBase::context_vec() const {
  if (!has_forward()) throw StateError(class_name_ + ".context_vec: no forward has run yet");
  return as_input_rank(context_);
}

}  // namespace llm_utils
