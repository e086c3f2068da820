// Bad arguments and calls in the wrong state give one clear, typed error naming what was wrong.

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace llm_utils {
namespace {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_CONTAINS(type, statement, text)                            \
  do {                                                                          \
    EXPECT_THROW(statement, type);                                              \
    const std::string message = error_of([&] { statement; });                   \
    EXPECT_NE(message.find(text), std::string::npos) << "message: " << message; \
  } while (0)

TEST(ModuleErrors, NonPositiveSizes) {
  EXPECT_ERROR_CONTAINS(ArgumentError, SelfAttention_Params(0, 2), "d_in=0");
  EXPECT_ERROR_CONTAINS(ArgumentError, SelfAttention_Linear(3, -1), "d_out=-1");
  EXPECT_ERROR_CONTAINS(ArgumentError, SelfAttention_Linear4(-3, 2), "must be positive");
  EXPECT_ERROR_CONTAINS(ArgumentError, SelfAttention_Linear5(3, 0), "must be positive");
  EXPECT_ERROR_CONTAINS(ArgumentError, Linear(0, 2), "in_features=0");
}

TEST(ModuleErrors, WrongInput) {
  manual_seed(0);
  SelfAttention_Linear m(3, 2);
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({6, 4})),
                        "SelfAttention_Linear.forward: x has d_in=4, module expects d_in=3 "
                        "(x.shape = [6, 4])");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({3})), "got 1-D input");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({1, 2, 2, 3})), "got 4-D input");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({0, 3})), "zero-length sequence");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({2, 0, 3})), "zero-length sequence");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.forward(Tensor({0, 4, 3})), "empty batch");
  EXPECT_FALSE(m.has_forward());  // failed forwards leave no state behind
}

TEST(ModuleErrors, BackwardBeforeForwardAndWithTheWrongShape) {
  manual_seed(0);
  SelfAttention_Params m(3, 2);
  EXPECT_ERROR_CONTAINS(StateError, m.backward(Tensor({6, 2})), "before any forward");
  m.forward(Tensor({6, 3}));
  EXPECT_ERROR_CONTAINS(ArgumentError, m.backward(Tensor({6, 3})),
                        "grad_output has shape [6, 3], the forward output had shape [6, 2]");
  EXPECT_ERROR_CONTAINS(ArgumentError, m.backward(Tensor({1, 6, 2})), "grad_output has shape");
}

TEST(ModuleErrors, InspectionBeforeForward) {
  manual_seed(0);
  SelfAttention_Linear5 m(3, 2);
  EXPECT_ERROR_CONTAINS(StateError, m.attn_weights(), "no forward has run yet");
  EXPECT_ERROR_CONTAINS(StateError, m.values(), "no forward has run yet");
  EXPECT_ERROR_CONTAINS(StateError, m.attnValues2ContextL(), "no forward has run yet");
  EXPECT_ERROR_CONTAINS(StateError, m.attnQueries2ScoresL(), "no forward has run yet");
  m.forward(Tensor({2, 4, 3}));
  EXPECT_ERROR_CONTAINS(ArgumentError, m.attnValues2ContextL(2), "batch index 2 is out of range");
  EXPECT_EQ(m.attnValues2ContextL(1).weight.shape(), (Shape{4, 4}));
  EXPECT_EQ(&m.model(1), &m.attnValues2ContextL(1));
  EXPECT_FALSE(m.attnValues2ContextL(0).weight.requires_grad());
}

TEST(ModuleErrors, GradIsNoneUntilReached) {
  manual_seed(0);
  SelfAttention_Linear4 m(3, 2, true);
  EXPECT_ERROR_CONTAINS(StateError, m.W_value.weight.grad(), "None");
  m.forward(Tensor({2, 3}, {1, 2, 3, 4, 5, 6}));
  m.backward(Tensor::full({2, 2}, 1.0f));
  EXPECT_TRUE(m.W_value.weight.has_grad());
  EXPECT_TRUE(m.W_value.bias->has_grad());
  EXPECT_FALSE(m.W_query.weight.has_grad());
  EXPECT_FALSE(m.W_key.bias->has_grad());
}

TEST(ModuleErrors, FactoryNames) {
  EXPECT_ERROR_CONTAINS(ArgumentError, make_self_attention("linear7", 3, 2), "unknown module");
  EXPECT_ERROR_CONTAINS(ArgumentError, make_self_attention("params", 3, 2, true), "qkv_bias");
  EXPECT_EQ(make_self_attention("linear5", 3, 2)->class_name(), "SelfAttention_Linear5");
}

TEST(ModuleGradients, AccumulateAndZero) {
  manual_seed(0);
  SelfAttention_Linear m(3, 2, true);
  Tensor x({3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor g = Tensor::full({3, 2}, 0.5f);
  m.forward(x);
  m.backward(g);
  const Tensor once = Tensor::from_view(m.W_key.weight.grad());
  m.backward(g);
  for (int64_t i = 0; i < once.numel(); ++i) {
    EXPECT_FLOAT_EQ(m.W_key.weight.grad().data()[i], 2.0f * once[i]);
  }
  m.zero_grad(/*set_to_none=*/false);
  EXPECT_TRUE(m.W_key.weight.has_grad());
  for (float v : Tensor::from_view(m.W_key.weight.grad())) EXPECT_EQ(v, 0.0f);
  m.zero_grad();
  EXPECT_FALSE(m.W_key.weight.has_grad());
}

TEST(ModuleNumerics, HugeInputsDoNotOverflowTheSoftmax) {
  manual_seed(0);
  SelfAttention_Params m(3, 2);
  Tensor x({4, 3}, {1e4f, -1e4f, 5e3f, 2e3f, 1e4f, -3e3f, -1e4f, 1e4f, 1e4f, 0, 0, 1e4f});
  Tensor y = m(x);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  ConstTensorView w = m.attn_weights();
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_TRUE(std::isfinite(w.data()[i]));
}

TEST(ModuleNumerics, NanInputGivesNanRowsNotACrash) {
  manual_seed(0);
  SelfAttention_Linear m(3, 2);
  Tensor x({3, 3}, {1, 2, 3, NAN, 5, 6, 7, 8, 9});
  Tensor y = m(x);
  // A NaN token poisons its own key, so every query's scores, hence every row, is NaN: the
  // same as PyTorch, which the docs state.
  for (float v : y) EXPECT_TRUE(std::isnan(v));
}

TEST(Softmax, FullyMaskedRowsGiveZeros) {
  const float inf = std::numeric_limits<float>::infinity();
  Tensor s({2, 3}, {-inf, -inf, -inf, 0.0f, -inf, 1.0f});
  softmax_rows_inplace(s);
  EXPECT_EQ(s.at({0, 0}), 0.0f);
  EXPECT_EQ(s.at({0, 2}), 0.0f);
  EXPECT_EQ(s.at({1, 1}), 0.0f);
  EXPECT_NEAR(s.at({1, 0}) + s.at({1, 2}), 1.0f, 1e-7);
}

}  // namespace
}  // namespace llm_utils
