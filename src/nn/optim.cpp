// SGD and AdamW, following PyTorch 1.13's _single_tensor_sgd / _single_tensor_adamw line by line
// (float32 tensors, scalars rounded to float where PyTorch's kernels round them).

#include "llm_utils/nn/optim.hpp"

#include <cmath>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {

std::vector<ParameterRef> references(const NamedParameters& params, const char* who) {
  std::vector<ParameterRef> out;
  out.reserve(params.size());
  for (const auto& [name, p] : params) {
    for (const ParameterRef& seen : out) {
      if (seen.same_as(p)) {
        throw ArgumentError(std::string(who) + ": parameter '" + name + "' appears more than once");
      }
    }
    out.push_back(p);
  }
  return out;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw ArgumentError(message);
}

}  // namespace

SGD::SGD(const NamedParameters& params, SGDOptions options)
    : params_(references(params, "SGD")), momentum_buffers_(params_.size()), options_(options) {
  require(options.lr >= 0.0, "SGD: invalid learning rate lr=" + std::to_string(options.lr));
  require(options.momentum >= 0.0,
          "SGD: invalid momentum value " + std::to_string(options.momentum));
  require(options.weight_decay >= 0.0,
          "SGD: invalid weight_decay value " + std::to_string(options.weight_decay));
  require(!options.nesterov || (options.momentum > 0.0 && options.dampening == 0.0),
          "SGD: nesterov momentum requires a momentum and zero dampening");
}

void SGD::step() {
  const auto wd = static_cast<float>(options_.weight_decay);
  const auto momentum = static_cast<float>(options_.momentum);
  const auto one_minus_dampening = static_cast<float>(1.0 - options_.dampening);
  const auto neg_lr = static_cast<float>(-options_.lr);
  for (size_t i = 0; i < params_.size(); ++i) {
    ParameterRef& p = params_[i];
    if (!p.has_grad()) continue;
    const int64_t n = p.numel();
    float* w = p.data().data();
    const float* g = p.grad().data();
    Tensor d_p({n});  // d_p = grad (negated if maximize) + weight_decay * param
    for (int64_t j = 0; j < n; ++j) {
      const float grad = options_.maximize ? -g[j] : g[j];
      d_p[j] = wd != 0.0f ? grad + wd * w[j] : grad;
    }
    if (momentum != 0.0f) {
      Tensor& buf = momentum_buffers_[i];
      if (buf.numel() != n) {
        buf = d_p;  // first step: buf = clone(d_p)
      } else {
        for (int64_t j = 0; j < n; ++j) buf[j] = buf[j] * momentum + one_minus_dampening * d_p[j];
      }
      for (int64_t j = 0; j < n; ++j)
        d_p[j] = options_.nesterov ? d_p[j] + momentum * buf[j] : buf[j];
    }
    for (int64_t j = 0; j < n; ++j) w[j] = w[j] + neg_lr * d_p[j];
  }
}

void SGD::zero_grad(bool set_to_none) {
  for (ParameterRef& p : params_) p.zero_grad(set_to_none);
}

AdamW::AdamW(const NamedParameters& params, AdamWOptions options)
    : params_(references(params, "AdamW")), state_(params_.size()), options_(options) {
  require(options.lr >= 0.0, "AdamW: invalid learning rate lr=" + std::to_string(options.lr));
  require(options.eps >= 0.0, "AdamW: invalid epsilon value eps=" + std::to_string(options.eps));
  require(options.beta1 >= 0.0 && options.beta1 < 1.0,
          "AdamW: invalid beta parameter at index 0: " + std::to_string(options.beta1));
  require(options.beta2 >= 0.0 && options.beta2 < 1.0,
          "AdamW: invalid beta parameter at index 1: " + std::to_string(options.beta2));
  require(options.weight_decay >= 0.0,
          "AdamW: invalid weight_decay value " + std::to_string(options.weight_decay));
}

void AdamW::step() {
  const AdamWOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    ParameterRef& p = params_[i];
    if (!p.has_grad()) continue;
    const int64_t n = p.numel();
    State& s = state_[i];
    if (s.step == 0) {
      s.exp_avg = Tensor({n});
      s.exp_avg_sq = Tensor({n});
      if (o.amsgrad) s.max_exp_avg_sq = Tensor({n});
    }
    s.step += 1;
    float* w = p.data().data();
    const float* g = p.grad().data();
    // Python computes these scalars in double; the tensor kernels round them to float.
    const auto decay = static_cast<float>(1.0 - o.lr * o.weight_decay);
    const auto beta1 = static_cast<float>(o.beta1);
    const auto one_minus_beta1 = static_cast<float>(1.0 - o.beta1);
    const auto beta2 = static_cast<float>(o.beta2);
    const auto one_minus_beta2 = static_cast<float>(1.0 - o.beta2);
    const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(s.step));
    const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(s.step));
    const auto neg_step_size = static_cast<float>(-(o.lr / bias_correction1));
    const auto bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const auto eps = static_cast<float>(o.eps);
    for (int64_t j = 0; j < n; ++j) {
      const float grad = o.maximize ? -g[j] : g[j];
      w[j] = w[j] * decay;                                           // param.mul_
      s.exp_avg[j] = s.exp_avg[j] * beta1 + one_minus_beta1 * grad;  // exp_avg update
      s.exp_avg_sq[j] = s.exp_avg_sq[j] * beta2 + one_minus_beta2 * grad * grad;
      float second = s.exp_avg_sq[j];
      if (o.amsgrad) {
        s.max_exp_avg_sq[j] = std::fmax(s.max_exp_avg_sq[j], s.exp_avg_sq[j]);
        second = s.max_exp_avg_sq[j];
      }
      const float denom = std::sqrt(second) / bias_correction2_sqrt + eps;
      w[j] = w[j] + neg_step_size * (s.exp_avg[j] / denom);  // param.addcdiv_
    }
  }
}

void AdamW::zero_grad(bool set_to_none) {
  for (ParameterRef& p : params_) p.zero_grad(set_to_none);
}

}  // namespace llm_utils
