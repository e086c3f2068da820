// The book's printed tensors (chapter 3, "Your journey starts with one step") come out of the
// port: the values below are the ones the book prints, to its 4 decimals.

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace llm_utils {
namespace {

const Tensor kInputs({6, 3}, {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f, 0.22f,
                              0.58f, 0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f});

TEST(Book, ParameterMatrixClassSeed123) {
  manual_seed(123);
  SelfAttention_Params sa(3, 2);
  const Tensor expected({6, 2}, {0.2996f, 0.8053f, 0.3061f, 0.8210f, 0.3058f, 0.8203f, 0.2948f,
                                 0.7939f, 0.2927f, 0.7891f, 0.2990f, 0.8040f});
  EXPECT_TRUE(testing::all_close(sa(kInputs), expected, 0.0, 0.5e-4));
}

TEST(Book, LinearLayerClassSeed789) {
  manual_seed(789);
  SelfAttention_Linear sa(3, 2);
  const Tensor expected({6, 2}, {-0.0739f, 0.0713f, -0.0748f, 0.0703f, -0.0749f, 0.0702f, -0.0760f,
                                 0.0685f, -0.0763f, 0.0679f, -0.0754f, 0.0693f});
  EXPECT_TRUE(testing::all_close(sa(kInputs), expected, 0.0, 0.5e-4));
}

TEST(Book, AttentionWeightRowsSumToOne) {
  manual_seed(789);
  SelfAttention_Linear sa(3, 2);
  sa(kInputs);
  ConstTensorView w = sa.attn_weights();
  for (int64_t i = 0; i < 6; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < 6; ++j) sum += w.data()[i * 6 + j];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

TEST(Book, BatchOfTwoCopiesGivesTheSameRowsTwice) {
  manual_seed(789);
  SelfAttention_Linear sa(3, 2);
  Tensor single = sa(kInputs);
  Tensor batch({2, 6, 3});
  std::copy(kInputs.begin(), kInputs.end(), batch.begin());
  std::copy(kInputs.begin(), kInputs.end(), batch.begin() + 18);
  Tensor out = sa(batch);
  ASSERT_EQ(out.shape(), (Shape{2, 6, 2}));
  EXPECT_TRUE(testing::bit_equal(out.select(0), single));
  EXPECT_TRUE(testing::bit_equal(out.select(1), single));
  EXPECT_EQ(sa.attn_weights().shape(), (Shape{2, 6, 6}));
}

}  // namespace
}  // namespace llm_utils
