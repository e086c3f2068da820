// Prints the book's first context vector; the test checks it.
#include <cstdio>
#include <llm_utils/llm_utils.hpp>

int main() {
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear sa(3, 2);
  const llm_utils::Tensor x(
      {6, 3}, {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f, 0.22f, 0.58f, 0.33f,
               0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f});
  const llm_utils::Tensor ctx = sa(x);
  std::printf("%.4f %.4f\n", static_cast<double>(ctx.at({0, 0})),
              static_cast<double>(ctx.at({0, 1})));
  return 0;
}
