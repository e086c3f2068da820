// SGD and AdamW against torch.optim: a few steps on three classes, to 1e-6
// (tests/golden/make_golden.py, optimizer_fixtures).

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::Golden;

const Golden& optim_golden() {
  static const Golden g = testing::load_golden("optim.safetensors");
  return g;
}

struct OptimCase {
  std::string module;
  std::string optimizer;
};

void PrintTo(const OptimCase& c, std::ostream* os) {
  *os << c.module << "/" << c.optimizer;
}

class OptimizerParity : public ::testing::TestWithParam<OptimCase> {};

// How a step's gradients are obtained.
enum class Gradients {
  // PyTorch's gradients of that step are copied in before the optimizer runs, so the
  // comparison isolates the optimizer's arithmetic: it must match to 1e-6.
  pytorchs,
  // Our own backward: training end to end, where gradient rounding differences (~1e-7
  // relative) accumulate over the steps; compared at the parity tolerance.
  ours,
};

template <typename Optimizer, typename Options>
void run_steps(SelfAttentionBase& m, Options options, const std::string& prefix, Gradients source) {
  const Golden& g = optim_golden();
  Optimizer opt(m.named_parameters(), options);
  for (int step = 1; step <= g.meta_int("steps"); ++step) {
    const std::string at = prefix + ".step" + std::to_string(step) + ".";
    opt.zero_grad();
    m.forward(g["x"]);
    m.backward(g["grad_out"]);
    for (auto& [name, p] : m.named_parameters()) {
      ASSERT_EQ(p.has_grad(), g.has(at + "grad." + name)) << at << name;
      if (source == Gradients::pytorchs && p.has_grad()) {
        p.zero_grad();
        p.accumulate_grad(g[at + "grad." + name]);
      }
    }
    opt.step();
    for (auto& [name, p] : m.named_parameters()) {
      const Tensor& expected = g[at + name];
      if (source == Gradients::pytorchs) {
        EXPECT_TRUE(testing::all_close(p.data(), expected, 0.0, 1e-6)) << at << name;
      } else if (p.has_grad() && name == "W_key.bias" &&
                 prefix.find("adamw") != std::string::npos) {
        // The exact gradient of the key bias is zero (a per-row constant added to the scores
        // leaves the softmax unchanged), so both frameworks compute rounding noise, which
        // Adam's normalisation scales up to +-lr. Only that the noise is tiny is comparable.
        EXPECT_LT(testing::max_abs(p.grad()), 1e-5) << at << name;
      } else {
        EXPECT_TRUE(testing::parity(p.data(), expected)) << at << name;
      }
    }
  }
}

void run_case(const OptimCase& c, Gradients source) {
  manual_seed(static_cast<uint64_t>(optim_golden().meta_int("seed")));
  auto m = make_self_attention(c.module, 4, 3, c.module != "SelfAttention_Params");
  const std::string prefix = c.module + "." + c.optimizer;
  if (c.optimizer == "sgd_plain") {
    run_steps<SGD>(*m, SGDOptions{.lr = 0.1}, prefix, source);
  } else if (c.optimizer == "sgd_momentum") {
    run_steps<SGD>(*m,
                   SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01},
                   prefix, source);
  } else if (c.optimizer == "sgd_nesterov") {
    run_steps<SGD>(*m,
                   SGDOptions{.lr = 0.01, .momentum = 0.9, .weight_decay = 0.001, .nesterov = true},
                   prefix, source);
  } else if (c.optimizer == "adamw_default") {
    run_steps<AdamW>(*m, AdamWOptions{}, prefix, source);
  } else if (c.optimizer == "adamw_amsgrad") {
    run_steps<AdamW>(*m,
                     AdamWOptions{.lr = 0.05,
                                  .beta1 = 0.8,
                                  .beta2 = 0.99,
                                  .eps = 1e-6,
                                  .weight_decay = 0.1,
                                  .amsgrad = true},
                     prefix, source);
  } else {
    FAIL() << "unknown optimizer " << c.optimizer;
  }
}

TEST_P(OptimizerParity, StepsMatchTorchOptimOnTheSameGradients) {
  run_case(GetParam(), Gradients::pytorchs);
}

TEST_P(OptimizerParity, TrainingWithOurGradientsFollowsPyTorch) {
  run_case(GetParam(), Gradients::ours);
}

std::vector<OptimCase> optim_cases() {
  std::vector<OptimCase> out;
  for (const char* m : {"SelfAttention_Linear", "SelfAttention_Linear4", "SelfAttention_Params"}) {
    for (const char* o :
         {"sgd_plain", "sgd_momentum", "sgd_nesterov", "adamw_default", "adamw_amsgrad"}) {
      out.push_back({m, o});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Golden, OptimizerParity, ::testing::ValuesIn(optim_cases()),
                         [](const auto& info) {
                           return info.param.module + "_" + info.param.optimizer;
                         });

TEST(Optimizer, SkipsParametersWithoutGradientEvenWithWeightDecay) {
  manual_seed(1);
  SelfAttention_Linear4 m(3, 2);
  const Tensor w_query = Tensor::from_view(m.W_query.weight.data());
  AdamW opt(m.named_parameters(), AdamWOptions{.lr = 0.1, .weight_decay = 0.5});
  m.forward(Tensor({4, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3}));
  m.backward(Tensor::full({4, 2}, 1.0f));
  opt.step();
  EXPECT_TRUE(testing::bit_equal(m.W_query.weight.data(), w_query));
}

TEST(Optimizer, RejectsBadHyperparameters) {
  manual_seed(1);
  SelfAttention_Linear m(3, 2);
  EXPECT_THROW(SGD(m.named_parameters(), SGDOptions{.lr = -1}), ArgumentError);
  EXPECT_THROW(SGD(m.named_parameters(), SGDOptions{.lr = 0.1, .nesterov = true}), ArgumentError);
  EXPECT_THROW(AdamW(m.named_parameters(), AdamWOptions{.beta1 = 1.0}), ArgumentError);
  EXPECT_THROW(AdamW(m.named_parameters(), AdamWOptions{.eps = -1}), ArgumentError);
}

}  // namespace
}  // namespace llm_utils
