// The C++ API in one sitting: the book's running example, a few training steps, and weights
// saved and loaded in PyTorch's format. Built by CMake and run by `make test` (CTest), so it
// fails loudly, with a non-zero exit status, if the library stops doing what it shows.
//
//   build/bin/example_book_attention [OUTPUT_FOLDER]    (writes example_weights.safetensors)

#include <cmath>
#include <cstdio>
#include <llm_utils/llm_utils.hpp>
#include <string>

namespace {

int failures = 0;

// Like assert(), but it also runs in Release builds and reports instead of aborting.
void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("CHECK FAILED: %s\n", what.c_str());
    ++failures;
  }
}

// The book's six tokens "Your journey starts with one step", each a 3-d embedding: (6, 3).
llm_utils::Tensor book_inputs() {
  return llm_utils::Tensor({6, 3}, {0.43f, 0.15f, 0.89f,    // Your
                                    0.55f, 0.87f, 0.66f,    // journey
                                    0.57f, 0.85f, 0.64f,    // starts
                                    0.22f, 0.58f, 0.33f,    // with
                                    0.77f, 0.25f, 0.10f,    // one
                                    0.05f, 0.80f, 0.55f});  // step
}

void print_rows(const char* title, llm_utils::ConstTensorView m) {
  std::printf("%s %s\n", title, llm_utils::shape_to_string(m.shape()).c_str());
  for (int64_t i = 0; i < m.size(0); ++i) {
    std::printf("   ");
    for (int64_t j = 0; j < m.size(1); ++j) {
      std::printf(" %8.4f", static_cast<double>(m.data()[i * m.size(1) + j]));
    }
    std::printf("\n");
  }
}

// Mean squared error and its gradient dL/dy = 2 (y - target) / n: the loss is the caller's,
// the library only needs dL/dy to run backward.
double mse(const llm_utils::Tensor& y, const llm_utils::Tensor& target, llm_utils::Tensor& grad) {
  grad = llm_utils::Tensor(y.shape());
  double sum = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double d = static_cast<double>(y[i]) - target[i];
    sum += d * d;
    grad[i] = static_cast<float>(2 * d / static_cast<double>(y.numel()));
  }
  return sum / static_cast<double>(y.numel());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string folder = argc > 1 ? argv[1] : ".";
  const llm_utils::Tensor x = book_inputs();

  // 1. The book's SelfAttention_Linear: torch.manual_seed(789) and then the module, so the
  //    weights (and every number below) are the ones the book prints.
  llm_utils::manual_seed(789);
  llm_utils::SelfAttention_Linear sa(/*d_in=*/3, /*d_out=*/2);  // qkv_bias = false
  const llm_utils::Tensor context = sa(x);                      // (6, 3) -> (6, 2)
  print_rows("context vectors", context);
  print_rows("attention weights (row: query token, column: key token)", sa.attn_weights());
  // The book prints tensor([[-0.0739, 0.0713], ...]).
  check(std::fabs(context.at({0, 0}) - -0.0739f) < 5e-5f, "book value context[0, 0] = -0.0739");
  check(std::fabs(context.at({0, 1}) - 0.0713f) < 5e-5f, "book value context[0, 1] = 0.0713");

  // The same forward on a batch of two copies, (2, 6, 3): each batch element attends within
  // itself (the original's code fails on 3-D input, though its docs promise it).
  llm_utils::Tensor batch({2, 6, 3});
  for (int64_t i = 0; i < batch.numel(); ++i) batch[i] = x[i % x.numel()];
  const llm_utils::Tensor batched = sa(batch);
  check(batched.shape() == llm_utils::Shape({2, 6, 2}), "batched output is (2, 6, 2)");
  check(batched.at({1, 0, 0}) == context.at({0, 0}), "both batch elements match the 2-D run");

  // 2. A few training steps: pull the output towards a target (here: the context vectors
  //    scaled by 2) with AdamW. backward() returns dL/dx and accumulates parameter gradients;
  //    the optimizer reads them from the parameters it was given.
  llm_utils::Tensor target = context;
  for (float& v : target) v *= 2.0f;
  llm_utils::AdamW opt(sa.named_parameters(), {.lr = 0.002});
  llm_utils::Tensor grad;
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    const double loss = mse(sa(x), target, grad);
    sa.backward(grad);
    opt.step();
    if (step == 0) first = loss;
    last = loss;
    if (step % 5 == 0 || step == 19) std::printf("step %2d  loss %.6f\n", step, loss);
  }
  check(last < first, "training lowers the loss");
  // Every parameter received a gradient (in Linear4/Linear5 only W_value would).
  for (const auto& [name, p] : sa.named_parameters()) check(p.has_grad(), name + " has a grad");

  // 3. Weights under PyTorch's names, in a safetensors file that
  //    `SelfAttention_Linear(3, 2).load_state_dict(safetensors.torch.load_file(path))` reads.
  const std::string path = folder + "/example_weights.safetensors";
  llm_utils::io::save_safetensors(path, sa.state_dict(), {{"format", "pt"}});
  for (const std::string& key : sa.state_dict().keys()) std::printf("saved %s\n", key.c_str());

  llm_utils::manual_seed(0);  // other weights, about to be replaced
  llm_utils::SelfAttention_Linear restored(3, 2);
  restored.load_state_dict(llm_utils::io::load_safetensors(path));
  const llm_utils::Tensor a = sa(x), b = restored(x);
  check(a.to_vector() == b.to_vector(), "the loaded module computes exactly the same output");

  // Mistakes are exceptions whose message says what was expected and what came.
  try {
    sa(llm_utils::Tensor({6, 4}));
    check(false, "a (6, 4) input should be refused");
  } catch (const llm_utils::ArgumentError& e) {
    std::printf("as expected: %s\n", e.what());
  }

  // 4. The variants of later models in MultiHeadAttention (docs/variants.md): grouped-query
  //    attention, RoPE, a sliding window and learnable sinks; two sequences packed into one
  //    input (each attends within itself), then decoded together through a paged KV cache.
  llm_utils::manual_seed(123);
  llm_utils::MultiHeadAttention mha(
      3, 4, /*context_length=*/16, /*dropout=*/0.0,
      /*num_heads=*/2, /*qkv_bias=*/false,
      {.num_kv_groups = 1, .window_left = 3, .sinks = true, .rope = llm_utils::RopeOptions{}});
  const int64_t cu[] = {0, 4, 6};  // rows 0-3 and 4-5 of x: two sequences
  const llm_utils::Tensor packed = mha.forward(x, {.cu_seqlens = cu});
  mha.backward(llm_utils::Tensor::full({6, 4}, 1.0f));  // gradients for every parameter
  check(mha.sinks->has_grad(), "the sinks get a gradient");
  // The second sequence alone gives its rows of the packed forward.
  const llm_utils::Tensor alone = mha.forward(llm_utils::ConstTensorView(x.data() + 4 * 3, {2, 3}));
  check(std::fabs(alone.at({1, 2}) - packed.at({5, 2})) < 1e-6f, "packed rows = separate rows");

  mha.eval();
  llm_utils::PagedKVCache cache(/*num_pages=*/8, /*page_size=*/2, mha.num_kv_groups(),
                                mha.head_dim());
  const std::vector<int64_t> ids = {cache.add_sequence(), cache.add_sequence()};
  mha.forward(x, {.cu_seqlens = cu, .paged_cache = &cache, .sequence_ids = ids});  // prefill
  llm_utils::Tensor tokens({2, 1, 3});  // one new token for each sequence
  const llm_utils::Tensor next = mha.forward(tokens, {.paged_cache = &cache, .sequence_ids = ids});
  check(next.shape() == llm_utils::Shape({2, 1, 4}) && cache.length(ids[0]) == 5,
        "a decode step appends one token to each sequence");

  std::printf(failures == 0 ? "all checks passed\n" : "%d checks failed\n", failures);
  return failures == 0 ? 0 : 1;
}
