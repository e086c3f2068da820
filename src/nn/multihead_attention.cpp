// MultiHeadAttentionWrapper (heads side by side) and MultiHeadAttention (one packed projection
// split into heads in place, then out_proj), the book's chapter 3.6.

#include "llm_utils/nn/multihead_attention.hpp"

#include <cmath>
#include <cstring>

#include "kernels/attention_cuda.hpp"
#include "llm_utils/error.hpp"
#include "nn/attention_layer.hpp"
#include "nn/attention_module_util.hpp"
#include "nn/broadcast_mask.hpp"

namespace llm_utils {

// ---------------------------------------------------------------- MultiHeadAttentionWrapper

namespace {
const std::string kWrapper = "MultiHeadAttentionWrapper";
const std::string kMha = "MultiHeadAttention";

std::string head_prefix(size_t h) {
  return "heads." + std::to_string(h) + ".";
}

// Validates before the first head draws anything, so a bad call leaves the generator as is.
int64_t checked_wrapper_d_in(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                             int64_t num_heads) {
  detail::check_module_args(kWrapper, d_in, d_out, context_length, dropout, num_heads, false);
  return d_in;
}
}  // namespace

MultiHeadAttentionWrapper::MultiHeadAttentionWrapper(int64_t d_in, int64_t d_out,
                                                     int64_t context_length, double dropout,
                                                     int64_t num_heads, bool qkv_bias,
                                                     Generator* generator)
    : Module(kWrapper, checked_wrapper_d_in(d_in, d_out, context_length, dropout, num_heads),
             d_out * num_heads, context_length) {
  heads.reserve(static_cast<size_t>(num_heads));
  // nn.ModuleList([CausalAttention(...) for _ in range(num_heads)]): built, and drawn, in order.
  for (int64_t h = 0; h < num_heads; ++h) {
    heads.emplace_back(d_in, d_out, context_length, dropout, qkv_bias, generator);
  }
}

void MultiHeadAttentionWrapper::train(bool mode) {
  Module::train(mode);
  for (auto& head : heads) head.train(mode);
}

void MultiHeadAttentionWrapper::set_backend(Backend backend) {
  Module::set_backend(backend);
  for (auto& head : heads) head.set_backend(backend);
}

void MultiHeadAttentionWrapper::set_dtype(DType dtype) {
  Module::set_dtype(dtype);
  for (auto& head : heads) head.set_dtype(dtype);
}

Tensor MultiHeadAttentionWrapper::forward_rows(ConstTensorView x, const Input& in) {
  const int64_t d = heads.front().d_out(), width = out_features(), rows = in.batch * in.seq;
  const ConstTensorView x3(x.data(), {in.batch, in.seq, in_features()});  // (B, N, d_in)
  Tensor out({rows, width});                                              // (B*N, d_out * H)
  // torch.cat(dim=-1): head h fills columns [h*d, (h+1)*d) of each row.
  for (size_t h = 0; h < heads.size(); ++h) {
    const Tensor y = heads[h].forward(x3);  // (B, N, d_out)
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(out.data() + r * width + static_cast<int64_t>(h) * d, y.data() + r * d,
                  sizeof(float) * d);
    }
  }
  return out;
}

Tensor MultiHeadAttentionWrapper::backward_rows(ConstTensorView dy) {
  const Input& in = saved_input();
  const int64_t d = heads.front().d_out(), width = out_features();
  // forward `cat(dim=-1)`: each head's gradient is its column block; dx sums the heads'.
  Tensor dx;
  for (size_t h = 0; h < heads.size(); ++h) {
    const ConstTensorView dy_h(dy.data() + static_cast<int64_t>(h) * d, {in.batch, in.seq, d},
                               {in.seq * width, width, 1});
    Tensor dx_h = heads[h].backward(dy_h);  // (B, N, d_in)
    if (h == 0) {
      dx = std::move(dx_h);
    } else {
      for (int64_t i = 0; i < dx.numel(); ++i) dx[i] += dx_h[i];
    }
  }
  return std::move(dx).reshape({in.batch * in.seq, in_features()});
}

void MultiHeadAttentionWrapper::after_load() {
  // The wrapper's load wrote the heads' parameters; a head loading what it now holds marks its
  // own saved forward stale (no head is changed by it).
  for (auto& head : heads) head.load_state_dict(head.state_dict());
}

std::vector<StateEntry> MultiHeadAttentionWrapper::state_entries() const {
  std::vector<StateEntry> out;
  for (size_t h = 0; h < heads.size(); ++h) {
    // Each head's entries, in its own order (mask first), under heads.<h>.
    for (StateEntry& e : heads[h].state_entries()) {
      e.name = head_prefix(h) + e.name;
      out.push_back(std::move(e));
    }
  }
  return out;
}

// ---------------------------------------------------------------- MultiHeadAttention

namespace {
int64_t kv_groups_of(int64_t num_heads, const MultiHeadAttentionOptions& options) {
  return options.num_kv_groups == 0 ? num_heads : options.num_kv_groups;
}

// Validates before the first Linear draws anything, so a bad call leaves the generator as is.
int64_t checked_d_in(int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                     int64_t num_heads, const MultiHeadAttentionOptions& options) {
  detail::check_module_args(kMha, d_in, d_out, context_length, dropout, num_heads, true);
  const int64_t groups = kv_groups_of(num_heads, options);
  if (groups < 1 || num_heads % groups != 0) {
    throw ArgumentError(kMha + ": num_heads must be a multiple of num_kv_groups, got num_heads=" +
                        std::to_string(num_heads) +
                        ", num_kv_groups=" + std::to_string(options.num_kv_groups));
  }
  if (options.scale && !(*options.scale > 0.0 && std::isfinite(*options.scale))) {
    throw ArgumentError(kMha + ": scale must be positive and finite, got " +
                        std::to_string(*options.scale));
  }
  if (options.window_left < -1) {
    throw ArgumentError(kMha + ": window_left must be >= 0, or -1 for no window, got " +
                        std::to_string(options.window_left));
  }
  if (!(options.softcap >= 0.0f && std::isfinite(options.softcap))) {
    throw ArgumentError(kMha + ": softcap must be positive and finite, or 0 for none, got " +
                        std::to_string(options.softcap));
  }
  if (options.rope && (d_out / num_heads) % 2 != 0) {
    throw ArgumentError(kMha + ": rope needs an even head_dim, got d_out / num_heads = " +
                        std::to_string(d_out / num_heads));
  }
  if (options.rope) {
    try {
      RopeTable(2, 0, *options.rope);  // checks theta and the scaling
    } catch (const ArgumentError& e) {
      throw ArgumentError(kMha + ": rope: " + e.what());
    }
  }
  return d_in;
}

std::optional<float> divisor_of(const MultiHeadAttentionOptions& options) {
  if (!options.scale) return std::nullopt;
  return static_cast<float>(1.0 / *options.scale);
}
}  // namespace

MultiHeadAttention::MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length,
                                       double dropout, int64_t num_heads, bool qkv_bias,
                                       Generator* generator)
    : MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias,
                         MultiHeadAttentionOptions{}, generator) {}

MultiHeadAttention::MultiHeadAttention(int64_t d_in, int64_t d_out, int64_t context_length,
                                       double dropout, int64_t num_heads, bool qkv_bias,
                                       const MultiHeadAttentionOptions& options,
                                       Generator* generator)
    : Module(kMha, checked_d_in(d_in, d_out, context_length, dropout, num_heads, options), d_out,
             context_length),
      W_query(d_in, d_out, qkv_bias, generator),
      W_key(d_in, kv_groups_of(num_heads, options) * (d_out / num_heads), qkv_bias, generator),
      W_value(d_in, kv_groups_of(num_heads, options) * (d_out / num_heads), qkv_bias, generator),
      out_proj(d_out, d_out, /*bias=*/true, generator),
      mask(detail::causal_mask_buffer(context_length)),
      num_heads_(num_heads),
      num_kv_groups_(kv_groups_of(num_heads, options)),
      dropout_(dropout),
      scale_divisor_(divisor_of(options)),
      causal_(options.causal),
      window_left_(options.window_left),
      softcap_(options.softcap),
      alibi_slopes_(options.alibi ? llm_utils::alibi_slopes(num_heads) : Tensor()),
      rope_(options.rope ? std::make_shared<const RopeTable>(d_out / num_heads, context_length,
                                                             *options.rope)
                         : nullptr),
      generator_(generator),
      layer_(std::make_unique<detail::AttentionLayer>(
          detail::LayerShape{d_in, num_heads, num_kv_groups_, d_out / num_heads})) {
  if (options.sinks) sinks.emplace(Tensor({num_heads}));
}

MultiHeadAttention::MultiHeadAttention(const MultiHeadAttention& other) = default;
MultiHeadAttention::MultiHeadAttention(MultiHeadAttention&& other) noexcept = default;
MultiHeadAttention::~MultiHeadAttention() = default;

Tensor MultiHeadAttention::forward(ConstTensorView x, const AttentionForwardOptions& options) {
  return forward_with(
      x,
      [&](ConstTensorView rows, const Input& in) {
        if (options.paged_cache != nullptr) return forward_paged(rows, in, options);
        return options.use_cache ? forward_cached(rows, in, options)
                                 : forward_uncached(rows, in, options);
      },
      /*packed=*/!options.cu_seqlens.empty());
}

void MultiHeadAttention::check_call(const std::string& where,
                                    const AttentionForwardOptions& options) const {
  // The parameter is an optional a caller may reset or emplace: it must still be (H).
  if (sinks && sinks->shape() != Shape{num_heads_}) {
    throw ArgumentError(where + ": sinks must have shape [" + std::to_string(num_heads_) +
                        "] (one per head), got " + shape_to_string(sinks->shape()));
  }
  if (options.paged_cache == nullptr && !options.sequence_ids.empty()) {
    throw ArgumentError(where + ": sequence_ids are for a paged_cache, and none is given");
  }
  if (backend() == Backend::cuda) {
    if (options.paged_cache != nullptr || !options.cu_seqlens.empty()) {
      throw ArgumentError(where + ": Backend::cuda takes no paged_cache or cu_seqlens");
    }
    detail::cuda_check_available(
        where, window_left_ >= 0 || softcap_ != 0.0f || !alibi_slopes_.empty() || sinks.has_value(),
        head_dim());
  }
  for (const Linear* layer : {&W_query, &W_key, &W_value, &out_proj}) layer->check_bias();
}

void MultiHeadAttention::set_variants(detail::LayerCall& call) const {
  call.window_left = window_left_;
  call.softcap = softcap_;
  call.alibi_slopes = alibi_slopes_;
  if (sinks) call.sinks = Tensor::from_view(sinks->data());
  call.rope = rope_;
}

AttentionOptions MultiHeadAttention::variant_options() const {
  AttentionOptions o;
  o.causal = causal_;
  o.scale_divisor = scale_divisor_;
  o.window_left = window_left_;
  o.softcap = softcap_;
  o.alibi_slopes = alibi_slopes_;
  if (sinks) o.sinks = sinks->data();
  return o;
}

Tensor MultiHeadAttention::forward_rows(ConstTensorView x, const Input& in) {
  return forward_uncached(x, in, AttentionForwardOptions{});
}

Tensor MultiHeadAttention::forward_uncached(ConstTensorView x, const Input& in,
                                            const AttentionForwardOptions& options) {
  const int64_t b = in.batch, n = in.seq;
  const std::string where = kMha + ".forward";
  detail::LayerCall call;
  call.causal = causal_;
  call.scale_divisor = scale_divisor_;
  const bool packed = !options.cu_seqlens.empty();
  if (packed) {
    if (!in.was_2d) {
      throw ArgumentError(where + ": with cu_seqlens x must be (T, d_in), got batch " +
                          std::to_string(b));
    }
    if (!options.attn_mask.empty() || !options.key_padding_mask.empty()) {
      throw ArgumentError(where +
                          ": cu_seqlens takes no attn_mask or key_padding_mask (each "
                          "sequence sees only itself)");
    }
    detail::check_cu_seqlens(where, options.cu_seqlens, n, context_length());
    call.cu_seqlens.assign(options.cu_seqlens.begin(), options.cu_seqlens.end());
  }
  call.mask = detail::merge_masks(where, options.attn_mask, options.key_padding_mask,
                                  {b, num_heads_, n, n});
  check_call(where, options);  // every check before the layer's state changes
  call.dropout = training() ? dropout_ : 0.0;
  call.generator = generator_;
  call.backend = backend();
  call.bf16 = dtype() == DType::bfloat16;
  set_variants(call);
  if (call.dropout > 0.0 && (softcap_ != 0.0f || sinks)) {
    throw ArgumentError(where + ": dropout on the attention weights does not combine with " +
                        (sinks ? "sinks" : "softcap") + " (call eval() or build with dropout 0)");
  }
  if (executor_) {
    const auto refuse = [&](const std::string& what) {
      throw ArgumentError(where + ": " + executor_->describe() + " takes " + what);
    };
    if (!options.attn_mask.empty() || !options.key_padding_mask.empty()) {
      refuse("no attn_mask or key_padding_mask (the causal mask only)");
    }
    if (call.dropout > 0.0) refuse("no dropout (call eval() or build with dropout 0)");
    if (call.bf16) refuse("float32 only");
    if (packed || window_left_ >= 0 || softcap_ != 0.0f || !alibi_slopes_.empty() || sinks ||
        rope_) {
      refuse("none of cu_seqlens, window_left, softcap, alibi, sinks or rope");
    }
    call.executor = executor_;
  }
  layer_->forward(x, b, n, detail::linear_qkv_weights(W_query, W_key, W_value), std::move(call));
  Tensor out({b * n, d_out()});  // (B*N, d_out) = out_proj(context)
  if (layer_->ran_bf16()) {
    out_proj.forward_into_bf16(layer_->context_bf16().data(), b * n, out.data());
  } else {
    out_proj.forward_into(layer_->context().data(), b * n, out.data());
  }
  return out;
}

Tensor MultiHeadAttention::backward_rows(ConstTensorView dy) {
  // forward `out = out_proj(context)`.
  const Tensor dcontext =  // (B*N, H*hd)
      layer_->ran_bf16() ? out_proj.backward_bf16(layer_->context_bf16().data(),
                                                  layer_->batch() * layer_->seq(), dy)
                         : out_proj.backward(layer_->context(), dy);
  gradients_ready();  // out_proj's are final: their sum can run during the attention's backward
  // forward `context = attention(x W_packed^T + b)` (with sinks: in the softmax's denominator).
  Tensor dx = layer_->backward(dcontext, detail::linear_qkv_weights(W_query, W_key, W_value), true);
  if (sinks && !layer_->sink_gradient().empty()) {
    ParameterRef(*sinks).accumulate_grad(layer_->sink_gradient());
  }
  return dx;
}

std::vector<StateEntry> MultiHeadAttention::state_entries() const {
  std::vector<StateEntry> out;
  if (sinks) out.push_back(StateEntry{"sinks", *sinks, nullptr});
  out.push_back(StateEntry{"mask", {}, &mask});
  detail::add_linear_entries(out, "W_query", W_query);
  detail::add_linear_entries(out, "W_key", W_key);
  detail::add_linear_entries(out, "W_value", W_value);
  detail::add_linear_entries(out, "out_proj", out_proj);
  return out;
}

ConstTensorView MultiHeadAttention::attn_weights() const {
  if (!has_forward() || layer_->batch() == 0) {
    throw StateError(kMha + ".attn_weights: no forward without the KV cache has run yet");
  }
  const Tensor& w = layer_->attention_weights();  // (B, H, N, N)
  return saved_input().was_2d ? w.select(0) : w.view();
}

const Tensor& MultiHeadAttention::dropout_mask() const {
  return layer_->dropout_mask();
}

}  // namespace llm_utils
