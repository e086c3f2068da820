// Checks and tensor shuffles shared by the causal and multi-head attention modules.

#include "nn/attention_module_util.hpp"

#include <algorithm>
#include <cstring>

#include "llm_utils/error.hpp"

namespace llm_utils::detail {

void check_module_args(const std::string& cls, int64_t d_in, int64_t d_out, int64_t context_length,
                       double dropout, int64_t num_heads, bool heads_split_d_out) {
  if (d_in <= 0 || d_out <= 0 || context_length <= 0 || num_heads <= 0) {
    throw ArgumentError(cls + ": d_in, d_out, context_length and num_heads must be positive, got " +
                        "d_in=" + std::to_string(d_in) + ", d_out=" + std::to_string(d_out) +
                        ", context_length=" + std::to_string(context_length) +
                        ", num_heads=" + std::to_string(num_heads));
  }
  if (heads_split_d_out && d_out % num_heads != 0) {
    throw ArgumentError(cls + ": d_out must be divisible by num_heads, got d_out=" +
                        std::to_string(d_out) + ", num_heads=" + std::to_string(num_heads));
  }
  // Written so that NaN fails too.
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw ArgumentError(cls + ": dropout must be in [0, 1), got " + std::to_string(dropout));
  }
}

Tensor causal_mask_buffer(int64_t n) {
  Tensor mask({n, n});  // (n, n)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) mask[i * n + j] = 1.0f;
  }
  return mask;
}

InputShape check_input(const std::string& where, ConstTensorView x, int64_t d_in,
                       int64_t context_length) {
  const std::string shape = " (x.shape = " + shape_to_string(x.shape()) + ")";
  if (x.dim() != 2 && x.dim() != 3) {
    throw ArgumentError(where + ": x must be (seq_len, d_in) or (batch, seq_len, d_in), got " +
                        std::to_string(x.dim()) + "-D input" + shape);
  }
  if (x.size(-1) != d_in) {
    throw ArgumentError(where + ": x has d_in=" + std::to_string(x.size(-1)) +
                        ", module expects d_in=" + std::to_string(d_in) + shape);
  }
  const InputShape in{x.dim() == 3 ? x.size(0) : 1, x.size(-2), x.dim() == 2};
  if (in.batch == 0) throw ArgumentError(where + ": x has an empty batch" + shape);
  if (in.seq == 0) throw ArgumentError(where + ": x has a zero-length sequence" + shape);
  if (in.seq > context_length) {
    throw ArgumentError(where + ": x has seq_len=" + std::to_string(in.seq) +
                        " tokens, more than context_length=" + std::to_string(context_length) +
                        shape);
  }
  return in;
}

Tensor split_heads(ConstTensorView x, int64_t batch, int64_t seq, int64_t heads) {
  const int64_t width = x.size(-1), hd = width / heads;
  Tensor out({batch * heads, seq, hd});  // (B*H, N, hd)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t n = 0; n < seq; ++n) {
      const float* row = x.data() + (b * seq + n) * width;
      for (int64_t h = 0; h < heads; ++h) {
        std::memcpy(out.data() + ((b * heads + h) * seq + n) * hd, row + h * hd,
                    sizeof(float) * hd);
      }
    }
  }
  return out;
}

Tensor merge_heads(ConstTensorView x, int64_t batch, int64_t seq, int64_t heads) {
  const int64_t hd = x.size(-1), width = hd * heads;
  Tensor out({batch * seq, width});  // (B*N, H*hd)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t n = 0; n < seq; ++n) {
      float* row = out.data() + (b * seq + n) * width;
      for (int64_t h = 0; h < heads; ++h) {
        std::memcpy(row + h * hd, x.data() + ((b * heads + h) * seq + n) * hd, sizeof(float) * hd);
      }
    }
  }
  return out;
}

namespace {
bool is_mask_name(const std::string& name) {
  return name == "mask" || (name.size() > 5 && name.compare(name.size() - 5, 5, ".mask") == 0);
}
}  // namespace

void load_named(const std::string& where, const StateDict& state, bool strict,
                const NamedTensors& targets) {
  // Check everything before changing anything.
  std::vector<std::pair<Tensor*, const Tensor*>> assignments;
  for (const auto& [name, target] : targets) {
    const Tensor* t = state.find(name);
    if (t == nullptr) {
      if (strict && !is_mask_name(name))
        throw ArgumentError(where + ": missing key '" + name + "'");
      continue;
    }
    if (t->shape() != target->shape()) {
      throw ArgumentError(where + ": key '" + name + "' has shape " + shape_to_string(t->shape()) +
                          ", expected " + shape_to_string(target->shape()));
    }
    if (is_mask_name(name)) {
      // Masking runs through the kernels' causal option, so only the causal buffer can load.
      if (!std::equal(t->begin(), t->end(), target->begin())) {
        throw ArgumentError(where + ": key '" + name +
                            "' is not the causal mask triu(ones(n, n), diagonal=1); other masks "
                            "are not supported");
      }
      continue;
    }
    assignments.emplace_back(target, t);
  }
  if (strict) {
    for (const auto& [name, t] : state) {
      // Clang 14 (the TSan and fuzz stages) cannot capture a structured binding implicitly.
      const bool known =
          std::any_of(targets.begin(), targets.end(),
                      [&key = name](const auto& entry) { return entry.first == key; });
      if (!known) throw ArgumentError(where + ": unexpected key '" + name + "'");
    }
  }
  for (auto& [target, t] : assignments) *target = *t;
}

}  // namespace llm_utils::detail
