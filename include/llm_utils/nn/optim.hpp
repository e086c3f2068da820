#pragma once
/// \file optim.hpp
/// `torch.optim.SGD` and `torch.optim.AdamW` with PyTorch's update formulas (the single-tensor
/// code paths of PyTorch 1.13) and defaults. Parameters whose gradient is None
/// (`has_grad() == false`) are skipped entirely, weight decay included, as in PyTorch.
///
/// An optimizer keeps ParameterRefs (parameter.hpp): it stays valid when the module it was
/// built from is moved, and keeps the parameters alive if the module is destroyed.
///
/// Example:
/// \code
///   llm_utils::AdamW opt(module.named_parameters(), {.lr = 1e-2});
///   for (int step = 0; step < 100; ++step) {
///     opt.zero_grad();
///     llm_utils::Tensor y = module(x);
///     module.backward(loss_gradient(y));
///     opt.step();
///   }
/// \endcode

#include <vector>

#include "llm_utils/nn/parameter.hpp"

namespace llm_utils {

struct SGDOptions {
  double lr = 1e-3;  ///< PyTorch has no default; pass one.
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
};

class SGD {
 public:
  /// Throws ArgumentError on lr < 0, momentum < 0, weight_decay < 0, nesterov without
  /// momentum > 0 and dampening == 0 (PyTorch's checks), or a parameter given twice.
  SGD(const NamedParameters& params, SGDOptions options);
  void step();
  void zero_grad(bool set_to_none = true);
  const SGDOptions& options() const { return options_; }

 private:
  std::vector<ParameterRef> params_;
  std::vector<Tensor> momentum_buffers_;  // per parameter, empty until its first step
  SGDOptions options_;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
};

class AdamW {
 public:
  /// Throws ArgumentError on lr < 0, eps < 0, betas outside [0, 1), weight_decay < 0, or a
  /// parameter given twice.
  AdamW(const NamedParameters& params, AdamWOptions options);
  void step();
  void zero_grad(bool set_to_none = true);
  const AdamWOptions& options() const { return options_; }

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg;         // same shape as the parameter
    Tensor exp_avg_sq;      // same shape as the parameter
    Tensor max_exp_avg_sq;  // amsgrad only
  };
  std::vector<ParameterRef> params_;
  std::vector<State> state_;
  AdamWOptions options_;
};

}  // namespace llm_utils
