// The four classes: how each projects x to queries, keys and values, how gradients flow back
// through those projections, and Linear4/5's derived layers.

#include "llm_utils/nn/self_attention.hpp"

#include <algorithm>
#include <string>

#include "llm_utils/error.hpp"
#include "kernels/gemm.hpp"

namespace llm_utils {

using kernels::Trans;

// ---------------------------------------------------------------- SelfAttention_Params

SelfAttention_Params::SelfAttention_Params(int64_t d_in, int64_t d_out, Generator* generator)
    : SelfAttentionBase("SelfAttention_Params", d_in, d_out) {
  Generator& gen = generator != nullptr ? *generator : default_generator();
  // The original: W_query, W_key, W_value = nn.Parameter(torch.rand(d_in, d_out)), in order.
  W_query = Parameter(gen.rand({d_in, d_out}));
  W_key = Parameter(gen.rand({d_in, d_out}));
  W_value = Parameter(gen.rand({d_in, d_out}));
}

NamedParameters SelfAttention_Params::named_parameters() {
  return {{"W_query", &W_query}, {"W_key", &W_key}, {"W_value", &W_value}};
}

void SelfAttention_Params::project(ConstTensorView x, Tensor& q, Tensor& k, Tensor& v) const {
  const int64_t rows = x.size(0);
  const auto matmul = [&](const Parameter& w, Tensor& out) {
    // out (B*N, d_out) = x (B*N, d_in) @ W (d_in, d_out)
    kernels::gemm(Trans::no, Trans::no, rows, d_out(), d_in(), 1.0f, x.data(), d_in(), w.data.data(),
               d_out(), 0.0f, out.data(), d_out());
  };
  matmul(W_key, k);
  matmul(W_query, q);
  matmul(W_value, v);
}

Tensor SelfAttention_Params::project_backward(ConstTensorView x, ConstTensorView dq,
                                              ConstTensorView dk, ConstTensorView dv) {
  const int64_t rows = x.size(0);
  Tensor dx({rows, d_in()});  // (B*N, d_in)
  const auto accumulate = [&](Parameter& w, ConstTensorView dy) {
    if (dy.data() == nullptr) return;
    // forward was `y = x @ W`, so dW (d_in, d_out) = x^T dy and dx += dy W^T.
    Tensor dw({d_in(), d_out()});
    kernels::gemm(Trans::yes, Trans::no, d_in(), d_out(), rows, 1.0f, x.data(), d_in(), dy.data(),
               d_out(), 0.0f, dw.data(), d_out());
    w.accumulate_grad(dw);
    kernels::gemm(Trans::no, Trans::yes, rows, d_in(), d_out(), 1.0f, dy.data(), d_out(),
               w.data.data(), d_out(), 1.0f, dx.data(), d_in());
  };
  accumulate(W_query, dq);
  accumulate(W_key, dk);
  accumulate(W_value, dv);
  return dx;
}

// ---------------------------------------------------------------- linear projections

SelfAttentionLinearProjections::SelfAttentionLinearProjections(std::string class_name, int64_t d_in,
                                                               int64_t d_out, bool qkv_bias,
                                                               Generator* generator)
    : SelfAttentionBase(std::move(class_name), d_in, d_out),
      // Member initialisation follows declaration order: query, key, value, as the original.
      W_query(d_in, d_out, qkv_bias, generator),
      W_key(d_in, d_out, qkv_bias, generator),
      W_value(d_in, d_out, qkv_bias, generator) {}

NamedParameters SelfAttentionLinearProjections::named_parameters() {
  NamedParameters out;
  const auto add = [&out](const std::string& prefix, Linear& layer) {
    out.emplace_back(prefix + ".weight", &layer.weight);
    if (layer.bias) out.emplace_back(prefix + ".bias", &*layer.bias);
  };
  add("W_query", W_query);
  add("W_key", W_key);
  add("W_value", W_value);
  return out;
}

namespace {
// One GEMM against the packed weight reads x once instead of three times. Measured with
// OpenBLAS on 2 threads (this project's machine): 13.2 -> 11.1 ms at 4096 rows, d_in 768,
// d_out 64, and 25.7 -> 16.8 ms at 8192 rows, packing and splitting included; no gain at
// d_in = 64 (21.5 vs 21.9 ms at 65536 rows), and below ~1 MFLOP the copies dominate.
constexpr int64_t kPackedMinDin = 256;
constexpr int64_t kPackedMinRows = 256;
}  // namespace

bool SelfAttentionLinearProjections::use_packed(int64_t rows) const {
  return d_in() >= kPackedMinDin && rows >= kPackedMinRows;
}

void SelfAttentionLinearProjections::pack_weights() const {
  const int64_t d = d_out();
  const Linear* layers[3] = {&W_query, &W_key, &W_value};
  if (packed_weight_.shape() != Shape{3 * d, d_in()}) packed_weight_ = Tensor({3 * d, d_in()});
  for (int i = 0; i < 3; ++i) {
    const Tensor& w = layers[i]->weight.data;  // (d_out, d_in)
    std::copy(w.begin(), w.end(), packed_weight_.data() + i * d * d_in());
  }
}

void SelfAttentionLinearProjections::project(ConstTensorView x, Tensor& q, Tensor& k,
                                             Tensor& v) const {
  const int64_t rows = x.size(0);
  if (use_packed(rows)) {
    project_packed(x, q, k, v);
    return;
  }
  W_key.forward_into(x.data(), rows, k.data());
  W_query.forward_into(x.data(), rows, q.data());
  W_value.forward_into(x.data(), rows, v.data());
}

void SelfAttentionLinearProjections::project_packed(ConstTensorView x, Tensor& q, Tensor& k,
                                                    Tensor& v) const {
  const int64_t rows = x.size(0), d = d_out(), width = 3 * d;
  const Linear* layers[3] = {&W_query, &W_key, &W_value};
  Tensor* outs[3] = {&q, &k, &v};
  // Packed every call: the weights are public and optimizers change them in place.
  pack_weights();
  if (packed_out_.shape() != Shape{rows, width}) packed_out_ = Tensor({rows, width});
  const bool bias = W_query.bias.has_value();
  float* y = packed_out_.data();  // (rows, 3*d_out)
  if (bias) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int i = 0; i < 3; ++i) {
        const Tensor& b = layers[i]->bias->data;
        std::copy(b.begin(), b.end(), y + r * width + i * d);
      }
    }
  }
  // y (rows, 3*d_out) = x (rows, d_in) W_packed^T (+ y, the biases), as each Linear does.
  kernels::gemm(Trans::no, Trans::yes, rows, width, d_in(), 1.0f, x.data(), d_in(),
             packed_weight_.data(), d_in(), bias ? 1.0f : 0.0f, y, width);
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < 3; ++i) {
      std::copy(y + r * width + i * d, y + r * width + (i + 1) * d, outs[i]->data() + r * d);
    }
  }
}

Tensor SelfAttentionLinearProjections::project_backward(ConstTensorView x, ConstTensorView dq,
                                                        ConstTensorView dk, ConstTensorView dv) {
  const bool all_trainable =
      W_query.weight.requires_grad && W_key.weight.requires_grad && W_value.weight.requires_grad;
  if (dq.data() != nullptr && dk.data() != nullptr && all_trainable && use_packed(x.size(0))) {
    return project_backward_packed(x, dq, dk, dv);
  }
  Tensor dx = W_value.backward(x, dv);  // (B*N, d_in)
  const auto add_into_dx = [&dx](const Tensor& part) {
    for (int64_t i = 0; i < dx.numel(); ++i) dx[i] += part[i];
  };
  if (dq.data() != nullptr) add_into_dx(W_query.backward(x, dq));
  if (dk.data() != nullptr) add_into_dx(W_key.backward(x, dk));
  return dx;
}

Tensor SelfAttentionLinearProjections::project_backward_packed(ConstTensorView x,
                                                               ConstTensorView dq,
                                                               ConstTensorView dk,
                                                               ConstTensorView dv) {
  const int64_t rows = x.size(0), d = d_out(), width = 3 * d;
  Linear* layers[3] = {&W_query, &W_key, &W_value};
  const ConstTensorView grads[3] = {dq, dk, dv};  // (rows, d_out) each
  // dy (rows, 3*d_out) = [dq | dk | dv] of each row: the gradient of project_packed's y.
  Tensor dy({rows, width});
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < 3; ++i) {
      const float* g = grads[i].data() + r * d;
      std::copy(g, g + d, dy.data() + r * width + i * d);
    }
  }
  pack_weights();
  // project_packed was y = x W_packed^T (+ b): dW_packed (3*d_out, d_in) = dy^T x, each Linear's
  // dW its d_out rows of it; db = column sums of dy; dx (rows, d_in) = dy W_packed.
  Tensor dw({width, d_in()});
  kernels::gemm(Trans::yes, Trans::no, width, d_in(), rows, 1.0f, dy.data(), width, x.data(), d_in(),
             0.0f, dw.data(), d_in());
  for (int i = 0; i < 3; ++i) {
    layers[i]->weight.accumulate_grad(ConstTensorView(dw.data() + i * d * d_in(), {d, d_in()}));
    if (layers[i]->bias && layers[i]->bias->requires_grad) {
      Tensor db({d});  // (d_out) column sums, in row order as Linear::backward adds them
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < d; ++j) db[j] += grads[i].data()[r * d + j];
      }
      layers[i]->bias->accumulate_grad(db);
    }
  }
  Tensor dx({rows, d_in()});
  kernels::gemm(Trans::no, Trans::no, rows, d_in(), width, 1.0f, dy.data(), width,
             packed_weight_.data(), d_in(), 0.0f, dx.data(), d_in());
  return dx;
}

SelfAttention_Linear::SelfAttention_Linear(int64_t d_in, int64_t d_out, bool qkv_bias,
                                           Generator* generator)
    : SelfAttentionLinearProjections("SelfAttention_Linear", d_in, d_out, qkv_bias, generator) {}

// ---------------------------------------------------------------- SelfAttention_Linear4

SelfAttention_Linear4::SelfAttention_Linear4(int64_t d_in, int64_t d_out, bool qkv_bias,
                                             Generator* generator)
    : SelfAttention_Linear4("SelfAttention_Linear4", d_in, d_out, qkv_bias, generator) {}

SelfAttention_Linear4::SelfAttention_Linear4(std::string class_name, int64_t d_in, int64_t d_out,
                                             bool qkv_bias, Generator* generator)
    : SelfAttentionLinearProjections(std::move(class_name), d_in, d_out, qkv_bias, generator) {}

void SelfAttention_Linear4::after_forward(int64_t batch, int64_t seq) {
  context_layers_.clear();
  if (advance_generator_) {
    // The original builds nn.Linear(N, N) per call (N*N weight draws, no bias), after any layer
    // extra_draws_per_element accounts for; its weight is then replaced, so only the draws
    // matter.
    const auto n = static_cast<uint64_t>(seq);
    default_generator().discard(static_cast<uint64_t>(batch) *
                                (extra_draws_per_element(seq) + n * n));
  }
}

const Linear& SelfAttention_Linear4::attnValues2ContextL(int64_t b) const {
  if (!has_forward()) {
    throw StateError(class_name() + ".attnValues2ContextL: no forward has run yet");
  }
  if (b < 0 || b >= saved_batch()) {
    throw ArgumentError(class_name() + ".attnValues2ContextL: batch index " + std::to_string(b) +
                        " is out of range for a batch of " + std::to_string(saved_batch()));
  }
  if (context_layers_.empty()) {
    for (int64_t i = 0; i < saved_batch(); ++i) {
      // weight (N, N) = attention weights; applied to values^T (d_out, N) it gives context^T.
      context_layers_.push_back(
          Linear::from_weight(Tensor::from_view(saved_attn_weights(i)), /*requires_grad=*/false));
    }
  }
  return context_layers_[static_cast<size_t>(b)];
}

std::vector<std::pair<std::string, Tensor>> SelfAttention_Linear4::derived_state() const {
  if (!has_forward()) return {};
  const Tensor& w = attnValues2ContextL(0).weight.data;
  // The original registers one layer under two names, so its state dict holds it twice.
  return {{"attnValues2ContextL.weight", w}, {"model.weight", w}};
}

bool SelfAttention_Linear4::is_derived_key(const std::string& key) const {
  return key == "attnValues2ContextL.weight" || key == "model.weight";
}

// ---------------------------------------------------------------- SelfAttention_Linear5

SelfAttention_Linear5::SelfAttention_Linear5(int64_t d_in, int64_t d_out, bool qkv_bias,
                                             Generator* generator)
    : SelfAttention_Linear4("SelfAttention_Linear5", d_in, d_out, qkv_bias, generator) {}

uint64_t SelfAttention_Linear5::extra_draws_per_element(int64_t seq) const {
  // nn.Linear(d_out, N, bias=False) for the scores layer: N*d_out weight draws.
  return static_cast<uint64_t>(seq) * static_cast<uint64_t>(d_out());
}

void SelfAttention_Linear5::after_forward(int64_t batch, int64_t seq) {
  score_layers_.clear();
  SelfAttention_Linear4::after_forward(batch, seq);
}

const Linear& SelfAttention_Linear5::attnQueries2ScoresL(int64_t b) const {
  if (!has_forward()) {
    throw StateError(class_name() + ".attnQueries2ScoresL: no forward has run yet");
  }
  if (b < 0 || b >= saved_batch()) {
    throw ArgumentError(class_name() + ".attnQueries2ScoresL: batch index " + std::to_string(b) +
                        " is out of range for a batch of " + std::to_string(saved_batch()));
  }
  if (score_layers_.empty()) {
    for (int64_t i = 0; i < saved_batch(); ++i) {
      // weight (N, d_out) = keys; applied to queries (N, d_out) it gives the scores (N, N).
      score_layers_.push_back(
          Linear::from_weight(Tensor::from_view(saved_keys(i)), /*requires_grad=*/false));
    }
  }
  return score_layers_[static_cast<size_t>(b)];
}

std::vector<std::pair<std::string, Tensor>> SelfAttention_Linear5::derived_state() const {
  if (!has_forward()) return {};
  std::vector<std::pair<std::string, Tensor>> out = {
      {"attnQueries2ScoresL.weight", attnQueries2ScoresL(0).weight.data}};
  for (auto& entry : SelfAttention_Linear4::derived_state()) out.push_back(std::move(entry));
  return out;
}

bool SelfAttention_Linear5::is_derived_key(const std::string& key) const {
  return key == "attnQueries2ScoresL.weight" || SelfAttention_Linear4::is_derived_key(key);
}

// ---------------------------------------------------------------- factory

std::unique_ptr<SelfAttentionBase> make_self_attention(std::string_view name, int64_t d_in,
                                                       int64_t d_out, bool qkv_bias,
                                                       Generator* generator) {
  if (name == "params" || name == "SelfAttention_Params") {
    if (qkv_bias) {
      throw ArgumentError(
          "SelfAttention_Params has no qkv_bias option (its weights are bare "
          "matrices); use linear, linear4 or linear5");
    }
    return std::make_unique<SelfAttention_Params>(d_in, d_out, generator);
  }
  if (name == "linear" || name == "SelfAttention_Linear") {
    return std::make_unique<SelfAttention_Linear>(d_in, d_out, qkv_bias, generator);
  }
  if (name == "linear4" || name == "SelfAttention_Linear4") {
    return std::make_unique<SelfAttention_Linear4>(d_in, d_out, qkv_bias, generator);
  }
  if (name == "linear5" || name == "SelfAttention_Linear5") {
    return std::make_unique<SelfAttention_Linear5>(d_in, d_out, qkv_bias, generator);
  }
  throw ArgumentError("unknown module '" + std::string(name) +
                      "' (expected params, linear, linear4 or linear5)");
}

}  // namespace llm_utils
