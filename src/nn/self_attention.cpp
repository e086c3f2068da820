// The four classes: how each projects x to queries, keys and values, how gradients flow back
// through those projections, and Linear4/5's derived layers.

#include "llm_utils/nn/self_attention.hpp"

#include <algorithm>
#include <string>

#include "llm_utils/error.hpp"
#include "nn/attention_layer.hpp"
#include "nn/attention_module_util.hpp"

namespace llm_utils {

// ---------------------------------------------------------------- SelfAttention_Params

namespace {
// The original: nn.Parameter(torch.rand(d_in, d_out)); members draw in declaration order.
Parameter rand_parameter(int64_t d_in, int64_t d_out, Generator* generator) {
  Generator& gen = generator != nullptr ? *generator : default_generator();
  return Parameter(gen.rand({d_in, d_out}));
}

StateEntry parameter_entry(std::string name, const ParameterRef& p) {
  return StateEntry{std::move(name), p, nullptr};
}
}  // namespace

SelfAttention_Params::SelfAttention_Params(int64_t d_in, int64_t d_out, Generator* generator)
    : SelfAttentionBase("SelfAttention_Params", d_in, d_out),
      W_query(rand_parameter(d_in, d_out, generator)),
      W_key(rand_parameter(d_in, d_out, generator)),
      W_value(rand_parameter(d_in, d_out, generator)) {}

std::vector<StateEntry> SelfAttention_Params::state_entries() const {
  return {parameter_entry("W_query", W_query), parameter_entry("W_key", W_key),
          parameter_entry("W_value", W_value)};
}

detail::QkvWeights SelfAttention_Params::qkv_weights() const {
  return {false, {&W_query, &W_key, &W_value}, {}};
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

std::vector<StateEntry> SelfAttentionLinearProjections::state_entries() const {
  std::vector<StateEntry> out;
  detail::add_linear_entries(out, "W_query", W_query);
  detail::add_linear_entries(out, "W_key", W_key);
  detail::add_linear_entries(out, "W_value", W_value);
  return out;
}

detail::QkvWeights SelfAttentionLinearProjections::qkv_weights() const {
  return detail::linear_qkv_weights(W_query, W_key, W_value);
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
    : SelfAttentionLinearProjections(std::move(class_name), d_in, d_out, qkv_bias, generator),
      generator_(generator) {}

void SelfAttention_Linear4::after_forward(int64_t batch, int64_t seq) {
  context_layers_.clear();
  if (advance_generator_) {
    // The original builds nn.Linear(N, N) per call (N*N weight draws, no bias), after any layer
    // extra_draws_per_element accounts for; its weight is then replaced, so only the draws
    // matter.
    const auto n = static_cast<uint64_t>(seq);
    Generator& gen = generator_ != nullptr ? *generator_ : default_generator();
    gen.discard(static_cast<uint64_t>(batch) * (extra_draws_per_element(seq) + n * n));
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
  const Tensor w = Tensor::from_view(attnValues2ContextL(0).weight.data());
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
      {"attnQueries2ScoresL.weight", Tensor::from_view(attnQueries2ScoresL(0).weight.data())}};
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
