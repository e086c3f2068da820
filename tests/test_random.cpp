// The generator against draws PyTorch wrote (tests/golden/make_golden.py): bit for bit.

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::bit_equal;
using testing::load_golden;

class GeneratorParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    golden_ = new testing::Golden(load_golden("generator.safetensors"));
  }
  static void TearDownTestSuite() { delete golden_; }
  static const testing::Golden& golden() { return *golden_; }

 private:
  static testing::Golden* golden_;
};
testing::Golden* GeneratorParity::golden_ = nullptr;

TEST_F(GeneratorParity, RandMatchesTorchForSeveralSeeds) {
  for (uint64_t seed : {0ULL, 1ULL, 42ULL, 123ULL, 789ULL, (1ULL << 32) + 5, 67280421310721ULL}) {
    Generator g(seed);
    EXPECT_TRUE(bit_equal(g.rand({1000}), golden()["rand.seed" + std::to_string(seed)]))
        << "seed " << seed;
  }
}

TEST_F(GeneratorParity, LongStreamStaysInStep) {
  Generator g(42);
  g.discard(999000);
  EXPECT_TRUE(bit_equal(g.rand({1000}), golden()["rand.seed42.tail_of_1000000"]));
}

TEST_F(GeneratorParity, UniformWithOddBounds) {
  Generator g(7);
  EXPECT_TRUE(bit_equal(g.uniform({500}, -0.37, 2.5), golden()["uniform.seed7.-0.37_2.5"]));
}

TEST_F(GeneratorParity, DefaultGeneratorAndManualSeed) {
  manual_seed(123);
  EXPECT_TRUE(bit_equal(rand({3, 2}), golden()["rand.seed123.3x2"]));
  EXPECT_EQ(default_generator().initial_seed(), 123u);
}

TEST_F(GeneratorParity, LinearInitMatchesTorch) {
  struct Case {
    uint64_t seed;
    int64_t fan_in, fan_out;
  };
  for (const Case& c : {Case{789, 3, 2}, Case{0, 7, 5}, Case{5, 768, 64}, Case{11, 1, 3}}) {
    Generator g(c.seed);
    Linear layer(c.fan_in, c.fan_out, true, &g);
    const std::string key = "linear.seed" + std::to_string(c.seed) + "." +
                            std::to_string(c.fan_in) + "x" + std::to_string(c.fan_out);
    EXPECT_TRUE(bit_equal(layer.weight.data(), golden()[key + ".weight"])) << key;
    EXPECT_TRUE(bit_equal(layer.bias->data(), golden()[key + ".bias"])) << key;
  }
}

TEST(Generator, SeedUsesLow32Bits) {
  Generator a((1ULL << 32) + 9), b(9);
  EXPECT_EQ(a.next_u32(), b.next_u32());
  EXPECT_EQ(a.initial_seed(), (1ULL << 32) + 9);
}

TEST(Generator, DiscardEqualsDrawing) {
  Generator a(3), b(3);
  a.rand({777});
  b.discard(777);
  EXPECT_EQ(a.next_u32(), b.next_u32());
}

TEST(Generator, DrawsStayInRange) {
  Generator g(1);
  Tensor t = g.uniform({10000}, -2.0, 3.0);
  for (float v : t) {
    EXPECT_GE(v, -2.0f);
    EXPECT_LT(v, 3.0f);
  }
}

}  // namespace
}  // namespace llm_utils
