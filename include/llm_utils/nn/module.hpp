#pragma once
/// \file module.hpp
/// What every attention module shares, PyTorch's `nn.Module` conventions in one base class:
/// forward and backward with their shape checks and saved state, parameters under PyTorch's
/// names, state dicts, gradients, train/eval and the kernel backend.
///
/// - `forward(x)`: x is (N, d_in) or (B, N, d_in), B >= 1, 1 <= N (<= context_length where the
///   class has one); a strided view is copied in. Returns (N, out) or (B, N, out).
/// - `backward(dy)`: dy shaped as forward's result; returns dL/dx and accumulates parameter
///   gradients (`+=`). StateError before any forward, after load_state_dict, or after a forward
///   that cannot be differentiated (a KV-cache step).
/// - `named_parameters()`: (name, ParameterRef) in PyTorch's order; `state_dict()` adds the
///   buffers (the book's `mask`) where PyTorch has them; `load_state_dict()` copies into the
///   existing storage, all or nothing.
///
/// Copying a module copies its parameters, gradients and saved forward (an independent module);
/// moving one keeps its parameters, so optimizers and other ParameterRefs stay valid.
///
/// Example:
/// \code
///   std::unique_ptr<llm_utils::Module> m = llm_utils::make_module({.name = "mha", .d_in = 768,
///       .d_out = 768, .context_length = 1024, .num_heads = 12});
///   llm_utils::Tensor y = m->forward(x);
///   llm_utils::Tensor dx = m->backward(dy);
///   llm_utils::AdamW opt(m->named_parameters(), {});
/// \endcode
///
/// Thread safety: one module must not be used from two threads at once; separate modules may
/// run concurrently.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llm_utils/attention.hpp"
#include "llm_utils/nn/parameter.hpp"
#include "llm_utils/nn/state_dict.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/rope.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {

/// One entry of a module's state dict: a parameter, or a buffer that the module's configuration
/// fixes (the book's causal `mask`), which a load may carry but must not change.
struct StateEntry {
  std::string name;
  ParameterRef parameter;          ///< set for a parameter
  const Tensor* buffer = nullptr;  ///< set for a buffer
};

/// What a load found, as PyTorch's `_IncompatibleKeys`: parameters the state lacked and keys the
/// module does not know. Both empty after a strict load (which throws instead).
struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module {
 public:
  virtual ~Module() = default;
  Module& operator=(const Module&) = delete;
  Module& operator=(Module&&) = delete;

  /// The class name of the original, e.g. "SelfAttention_Linear".
  const std::string& class_name() const { return class_name_; }
  /// Features per input token.
  int64_t in_features() const { return in_features_; }
  /// Features per output token.
  int64_t out_features() const { return out_features_; }

  Tensor forward(ConstTensorView x);
  Tensor operator()(ConstTensorView x) { return forward(x); }
  Tensor backward(ConstTensorView grad_output);
  /// True once forward has run.
  bool has_forward() const { return saved_.input.batch > 0; }

  /// Learnable parameters with PyTorch's names, in PyTorch's order.
  NamedParameters named_parameters() const;
  /// Parameters and buffers under PyTorch's names, in PyTorch's order (copies).
  StateDict state_dict() const;
  /// Copies every parameter from `state`, all or nothing: a missing key (when `strict`), an
  /// unknown key (when `strict`), a wrong shape, or a buffer that differs from the module's
  /// throws ArgumentError naming the key and changes nothing. Copies go into the existing
  /// storage, so views of the parameters see the new values. Drops the saved forward (and the
  /// KV cache), which the old weights made.
  LoadResult load_state_dict(const StateDict& state, bool strict = true);
  /// Clears every parameter gradient (to None by default, as PyTorch >= 2.0 does).
  void zero_grad(bool set_to_none = true);
  /// Every parameter and buffer, in PyTorch's state_dict order: the class's one list of them,
  /// from which named_parameters, state_dict and load_state_dict are made.
  virtual std::vector<StateEntry> state_entries() const = 0;

  /// Training mode (the default, as in PyTorch) applies dropout; eval mode does not.
  virtual void train(bool mode = true) { training_ = mode; }
  void eval() { train(false); }
  bool training() const { return training_; }
  /// Which attention kernel forward and backward use (default: automatic).
  virtual void set_backend(Backend backend) { backend_ = backend; }
  Backend backend() const { return backend_; }
  /// The storage the next forward (and its backward) computes in (default: float32). With
  /// bfloat16, x and the projection weights are rounded to bfloat16 for the projections, q, k,
  /// v and the context are stored in bfloat16, and every product accumulates in float32, the
  /// softmax too (the bfloat16 kernels of attention.hpp); parameters, their gradients, the
  /// module's input and output stay float32 (mixed precision: the float32 parameters are the
  /// master copy an optimizer updates). The KV cache (MultiHeadAttention's use_cache) and
  /// dropout run in float32 on the bfloat16-rounded projections.
  virtual void set_dtype(DType dtype) { dtype_ = dtype; }
  DType dtype() const { return dtype_; }

  /// Called during backward whenever some parameter gradients have become final (for
  /// MultiHeadAttention: after out_proj's, before the attention's backward; for every module: at
  /// the end), so that a caller can start summing them over ranks while the rest of backward
  /// runs (dist::GradientAverager::start). Empty: none. Not copied with the module.
  void set_gradient_hook(std::function<void()> hook) { gradient_hook_.fn = std::move(hook); }

 protected:
  /// Runs the gradient hook, if any (subclasses call it where some gradients are final).
  void gradients_ready() const {
    if (gradient_hook_.fn) gradient_hook_.fn();
  }
  /// `max_seq_len` 0: no limit on N.
  Module(std::string class_name, int64_t in_features, int64_t out_features,
         int64_t max_seq_len = 0);
  Module(const Module&) = default;
  Module(Module&&) = default;

  /// The shape of a checked input.
  struct Input {
    int64_t batch;
    int64_t seq;
    bool was_2d;
  };
  /// x (B*N, in_features), contiguous -> y (B*N, out_features). Runs after the checks; saves
  /// what backward_rows needs.
  virtual Tensor forward_rows(ConstTensorView x, const Input& in) = 0;
  /// dy (B*N, out_features) for the last forward -> dx (B*N, in_features).
  virtual Tensor backward_rows(ConstTensorView dy) = 0;
  /// Keys load_state_dict accepts and ignores: state a forward derives (Linear4/5's layers).
  /// Only their rank is checked.
  virtual bool is_derived_key(const std::string& /*key*/) const { return false; }
  /// After a load changed the weights: drop what the old ones produced (beyond the saved
  /// forward, which the base drops).
  virtual void after_load() {}

  /// forward(x) with another body: checks x as forward does, then runs `rows` as forward_rows.
  /// `packed`: x holds several sequences one after the other, which the body checks against
  /// the context length one by one (so the total may exceed it).
  template <typename Rows>
  Tensor forward_with(ConstTensorView x, Rows&& rows, bool packed = false) {
    Tensor x_copy;
    const Input in = check_input(x, x_copy, packed);
    pending_no_backward_.clear();
    return finish_forward(rows(x, in), in);
  }
  /// Called from a forward: backward may not follow it, for the reason given (its message).
  void forbid_backward(std::string reason) { pending_no_backward_ = std::move(reason); }
  /// The last (successful) forward's input shape; batch 0 before any.
  const Input& saved_input() const { return saved_.input; }

 private:
  /// Checks x; `x` becomes its contiguous (B*N, in_features) rows (copied into `copy` if it
  /// was strided). `packed`: N is not checked against the context length.
  Input check_input(ConstTensorView& x, Tensor& copy, bool packed) const;
  Tensor finish_forward(Tensor y, const Input& in);

  std::string class_name_;
  int64_t in_features_;
  int64_t out_features_;
  int64_t max_seq_len_;
  bool training_ = true;
  // A copy starts without the hook (it would act on the original's gradients); a move keeps it.
  struct GradientHook {
    std::function<void()> fn;
    GradientHook() = default;
    GradientHook(const GradientHook&) {}
    GradientHook(GradientHook&&) noexcept = default;
    GradientHook& operator=(const GradientHook&) { return *this; }
    GradientHook& operator=(GradientHook&&) noexcept = default;
    ~GradientHook() = default;
  };
  GradientHook gradient_hook_;
  Backend backend_ = Backend::automatic;
  DType dtype_ = DType::float32;
  // What the last successful forward left; a forward that throws leaves it as it was.
  struct Saved {
    Input input{0, 0, false};        // batch 0: no forward yet (or the weights were loaded)
    std::string no_backward_reason;  // non-empty: backward throws StateError with it
  } saved_;
  std::string pending_no_backward_;  // set during a forward, committed when it succeeds
};

/// How make_module builds a module: the class by name and the constructor arguments of the
/// book's classes (each class reads those it has).
struct ModuleSpec {
  /// The class name ("SelfAttention_Linear4", "MultiHeadAttention", ...) or the CLI's short
  /// name: params, linear, linear4, linear5, causal, mha-wrapper, mha.
  std::string name;
  int64_t d_in = 0;
  int64_t d_out = 0;
  bool qkv_bias = false;
  int64_t context_length = 0;   ///< causal, mha-wrapper, mha
  double dropout = 0.0;         ///< causal, mha-wrapper, mha
  int64_t num_heads = 1;        ///< mha-wrapper, mha
  int64_t num_kv_groups = 0;    ///< mha: key/value heads; 0 = num_heads
  std::optional<double> scale;  ///< mha: scores multiplied by this; default 1 / sqrt(head_dim)
  bool causal = true;           ///< mha
  // mha: the variants of MultiHeadAttentionOptions (multihead_attention.hpp).
  int64_t window_left = -1;
  float softcap = 0.0f;
  bool alibi = false;
  bool sinks = false;
  std::optional<RopeOptions> rope;
};

/// Builds one of the seven classes, drawing its parameters from `generator` (the default
/// generator when null) exactly as the class's constructor does. Throws ArgumentError on an
/// unknown name or arguments the class rejects (qkv_bias for SelfAttention_Params, ...).
std::unique_ptr<Module> make_module(const ModuleSpec& spec, Generator* generator = nullptr);

/// The short names make_module knows, in the order the CLI lists them.
const std::vector<std::string>& module_names();

}  // namespace llm_utils
