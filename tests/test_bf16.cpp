// bfloat16: the rounding (PyTorch's), every ISA's bfloat16 microkernels against a scalar model of
// vdpbf16ps bit for bit, the operand layouts, and the fused bfloat16 kernels against the oracle
// (the float32 reference on the widened inputs) on every ISA, with the tolerances
// docs/numerics.md states.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "amx_emulator.hpp"
#include "cpu/amx_gemm.hpp"
#include "cpu/bf16_microkernels.hpp"
#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(BFloat16, RoundsToNearestEvenAsPyTorch) {
  // Values whose bfloat16 bits torch.tensor(x, dtype=torch.float32).to(torch.bfloat16) gives.
  EXPECT_EQ(bfloat16(1.0f).bits, 0x3F80);
  EXPECT_EQ(bfloat16(-2.0f).bits, 0xC000);
  EXPECT_EQ(bfloat16(from_bits(0x3F808000)).bits, 0x3F80);  // tie, even below
  EXPECT_EQ(bfloat16(from_bits(0x3F818000)).bits, 0x3F82);  // tie, even above
  EXPECT_EQ(bfloat16(from_bits(0x3F808001)).bits, 0x3F81);  // above the tie
  EXPECT_EQ(bfloat16(from_bits(0x3F807FFF)).bits, 0x3F80);  // below the tie
  EXPECT_EQ(bfloat16(3.14159265f).bits, 0x4049);
  EXPECT_EQ(bfloat16(kInf).bits, 0x7F80);
  EXPECT_EQ(bfloat16(-kInf).bits, 0xFF80);
  EXPECT_EQ(bfloat16(std::numeric_limits<float>::max()).bits, 0x7F80);  // overflows to inf
  EXPECT_EQ(bfloat16(std::numeric_limits<float>::quiet_NaN()).bits, 0x7FC0);
  EXPECT_EQ(bfloat16(from_bits(0xFFC00001)).bits, 0x7FC0);  // any NaN
  EXPECT_EQ(bfloat16(from_bits(0x00018000)).bits, 0x0002);  // subnormal tie: kept, not flushed
  EXPECT_EQ(bfloat16(-0.0f).bits, 0x8000);
  EXPECT_EQ(static_cast<float>(bfloat16::from_bits(0x4049)), 3.140625f);
  EXPECT_EQ(round_to_bfloat16(0.1f), 0.10009765625f);
}

TEST(BFloat16, TensorsRoundAndWiden) {
  const Tensor x({2, 3}, {1.0f, 0.1f, -3.0f, 1e-3f, 65504.0f, 7.0f});
  const BFloat16Tensor b = BFloat16Tensor::from_float(x);
  ASSERT_EQ(b.shape(), x.shape());
  const Tensor back = b.to_float();
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(back[i], round_to_bfloat16(x[i]));
  // A strided view is read through its strides: the transpose.
  const BFloat16Tensor t = BFloat16Tensor::from_float(x.view().transpose(0, 1));
  ASSERT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(static_cast<float>(t[1]), round_to_bfloat16(1e-3f));
  EXPECT_EQ(static_cast<float>(t[2]), round_to_bfloat16(0.1f));
}

// Random floats of every kind: normal over a wide range, subnormal, zero, inf, NaN.
std::vector<float> mixed_floats(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> out(static_cast<size_t>(n));
  for (float& x : out) x = from_bits(static_cast<uint32_t>(gen()));
  return out;
}

TEST(Bf16Microkernels, ConversionsMatchTheScalarRounding) {
  testing::KernelEnvironment restore;
  const int64_t n = 1000;  // not a multiple of any vector width
  const std::vector<float> a = mixed_floats(n, 1), b = mixed_floats(n, 2);
  for (cpu::Isa isa : testing::available_bf16_isas()) {
    SCOPED_TRACE(cpu::isa_name(isa));
    cpu::force_isa(isa);
    const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
    std::vector<bfloat16> r(n + 1, bfloat16::from_bits(0xABCD));
    mk.round(a.data(), n, r.data());
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(r[j].bits, bfloat16(a[j]).bits) << j;
    EXPECT_EQ(r[n].bits, 0xABCD);  // nothing written past n
    std::vector<bfloat16> pairs(2 * n + 2, bfloat16::from_bits(0xABCD));
    mk.round_pairs(a.data(), b.data(), n, pairs.data());
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(pairs[2 * j].bits, bfloat16(a[j]).bits) << j;
      ASSERT_EQ(pairs[2 * j + 1].bits, bfloat16(b[j]).bits) << j;
    }
    EXPECT_EQ(pairs[2 * n].bits, 0xABCD);
    mk.round_pairs(a.data(), nullptr, n, pairs.data());
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(pairs[2 * j + 1].bits, 0) << j;
    std::vector<bfloat16> rb(n);
    mk.round(b.data(), n, rb.data());
    std::vector<bfloat16> mixed(2 * n);
    mk.interleave(r.data(), rb.data(), n, mixed.data());
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(mixed[2 * j], r[j]);
      ASSERT_EQ(mixed[2 * j + 1], rb[j]);
    }
    std::vector<float> wide(n);
    mk.widen(r.data(), n, wide.data());
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t want = static_cast<uint32_t>(r[j].bits) << 16;
      uint32_t got;
      std::memcpy(&got, &wide[j], sizeof got);
      ASSERT_EQ(got, want) << j;
    }
  }
}

// The documented sum: per element, from zero, pair after pair, the second product then the
// first, each added in float32 (the product exact), then times alpha.
std::vector<float> model_gemm(int64_t m, int64_t n, int64_t k, float alpha,
                              const std::vector<bfloat16>& a, const std::vector<bfloat16>& b,
                              int64_t ldb) {
  std::vector<float> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; 2 * p < k; ++p) {
        if (2 * p + 1 < k) {
          acc +=
              static_cast<float>(a[i * k + 2 * p + 1]) * static_cast<float>(b[p * ldb + 2 * j + 1]);
        }
        acc += static_cast<float>(a[i * k + 2 * p]) * static_cast<float>(b[p * ldb + 2 * j]);
      }
      c[i * n + j] = acc * alpha;
    }
  }
  return c;
}

TEST(Bf16Microkernels, GemmIsTheDocumentedSumOnEveryIsa) {
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_bf16_isas()) {
    // AMX adds in an order of its own: test_amx.cpp bounds its error instead.
    if (isa == cpu::Isa::amx) continue;
    SCOPED_TRACE(cpu::isa_name(isa));
    cpu::force_isa(isa);
    const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
    for (int64_t m : {1, 4, 7, 13}) {
      for (int64_t n : {1, 9, 17, 64, 70}) {
        for (int64_t k : {1, 2, 7, 64, 65}) {
          SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
          const int64_t ldb = 2 * n + 6;  // padded pair rows
          const std::vector<bfloat16> a = testing::normal_bf16(m * k, 3);
          std::vector<bfloat16> b = testing::normal_bf16(((k + 1) / 2) * ldb, 4);
          if (k % 2 == 1) {  // the last pair row's second elements must be zero
            for (int64_t j = 0; j < n; ++j) b[(k / 2) * ldb + 2 * j + 1] = bfloat16();
          }
          const std::vector<float> want = model_gemm(m, n, k, 0.5f, a, b, ldb);
          std::vector<float> c(static_cast<size_t>(m * n), 1.0f);
          mk.gemm(m, n, k, 0.5f, a.data(), k, b.data(), ldb, c.data(), n, false);
          for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(c[i], want[i]) << i;
          mk.gemm(m, n, k, 0.5f, a.data(), k, b.data(), ldb, c.data(), n, true);
          for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(c[i], 2.0f * want[i]) << i;
        }
      }
    }
  }
}

TEST(Bf16Microkernels, TransposeToPairs) {
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_isas()) {
    SCOPED_TRACE(cpu::isa_name(isa));
    cpu::force_isa(isa);
    for (int64_t rows : {1, 16, 37, 64}) {
      for (int64_t cols : {1, 2, 31, 64}) {
        for (int64_t lds : {cols, cols + 1, cols + 8}) {
          const std::vector<bfloat16> src = testing::normal_bf16(rows * lds, 5);
          const int64_t ldd = 2 * rows + 4;
          std::vector<bfloat16> dst(static_cast<size_t>(((cols + 1) / 2) * ldd),
                                    bfloat16::from_bits(0xABCD));
          cpu::transpose_to_pairs(src.data(), rows, cols, lds, dst.data(), ldd);
          for (int64_t c = 0; c < cols; ++c) {
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(dst[(c / 2) * ldd + 2 * r + c % 2], src[r * lds + c])
                  << rows << "x" << cols << " lds " << lds;
            }
          }
          if (cols % 2 == 1) {
            for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(dst[(cols / 2) * ldd + 2 * r + 1].bits, 0);
          }
        }
      }
    }
  }
}

// The largest |actual - expected| over the largest |expected| (infinities equal, compared
// apart).
double relative_error(const Tensor& actual, const Tensor& expected) {
  double worst = 0.0, scale = 0.0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (std::isinf(expected[i])) {
      if (actual[i] != expected[i]) return kInf;
      continue;
    }
    scale = std::max(scale, std::fabs(static_cast<double>(expected[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(actual[i]) - expected[i]));
  }
  return scale == 0.0 ? worst : worst / scale;
}

struct Case {
  Shape q, k, v;  // rank 3 or 4
  AttentionOptions options;
  std::string name;
};

struct Results {
  Tensor out, lse, probs, dq, dk, dv;
};

Results run_bf16(const BFloat16Tensor& q, const BFloat16Tensor& k, const BFloat16Tensor& v,
                 const BFloat16Tensor& dout, const AttentionOptions& o) {
  Shape lse_shape(q.shape().begin(), q.shape().end() - 1);
  Shape probs_shape = lse_shape;
  probs_shape.push_back(k.shape()[k.shape().size() - 2]);
  BFloat16Tensor out(dout.shape()), dq(q.shape()), dk(k.shape()), dv(v.shape());
  Tensor lse(lse_shape), probs(probs_shape);
  attention_forward(q, k, v, out, lse, o);
  attention_probabilities(q, k, lse, probs, o);
  attention_backward(q, k, v, out, lse, dout, dq, dk, dv, o);
  return {out.to_float(), lse, probs, dq.to_float(), dk.to_float(), dv.to_float()};
}

// The bounds docs/numerics.md states for the bfloat16 flash kernels against the oracle, relative
// to the largest |oracle| element: outputs within 2^-7 (the oracle's own rounding of O is up to
// 2^-9 of it, flash's rounding of P adds about as much); gradients within 2^-6 (dS is rounded
// too); lse and probs, computed in float32 from the same bfloat16 q and k, within 1e-6.
constexpr double kOutBound = 1.0 / 128, kGradBound = 1.0 / 64, kStatsBound = 1e-6;

void expect_within_bounds(const Results& got, const Results& want) {
  EXPECT_LE(relative_error(got.out, want.out), kOutBound) << "out";
  EXPECT_LE(relative_error(got.lse, want.lse), kStatsBound) << "lse";
  EXPECT_LE(relative_error(got.probs, want.probs), kStatsBound) << "probs";
  EXPECT_LE(relative_error(got.dq, want.dq), kGradBound) << "dq";
  EXPECT_LE(relative_error(got.dk, want.dk), kGradBound) << "dk";
  EXPECT_LE(relative_error(got.dv, want.dv), kGradBound) << "dv";
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// A padding-style additive mask: the last keys hidden from every query, some from a few.
Tensor padding_mask() {
  Tensor mask({130, 130});
  for (int64_t i = 0; i < 130; ++i) {
    for (int64_t j = 0; j < 130; ++j)
      mask.at({i, j}) = j >= 120 || (i % 7 == 0 && j % 5 == 0) ? -kInf : 0.0f;
  }
  return mask;
}

// The shapes and options the fused bfloat16 kernels are checked on against the oracle (the
// options view the mask, which lives as long as the process).
std::vector<Case> oracle_cases() {
  static const Tensor mask = padding_mask();
  return {
      {{2, 130, 64}, {2, 130, 64}, {2, 130, 64}, {}, "rank 3"},
      {{2, 130, 64}, {2, 130, 64}, {2, 130, 64}, {.additive_mask = mask}, "additive mask"},
      {{1, 200, 64}, {1, 200, 64}, {1, 200, 64}, {.causal = true}, "causal"},
      {{1, 4, 70, 33},
       {1, 2, 150, 33},
       {1, 2, 150, 17},
       {.causal = true, .query_offset = 80},
       "GQA, odd d, offset"},
      {{1, 1, 1, 64}, {1, 1, 2000, 64}, {1, 1, 2000, 64}, {}, "decode (key split)"},
  };
}

struct Inputs {
  BFloat16Tensor q, k, v, dout;
};

// Scores of a few units: softmax rows neither uniform nor one-hot.
Inputs oracle_inputs(const Case& c) {
  Shape dout_shape = c.q;
  dout_shape.back() = c.v.back();
  Generator gen(11);
  Inputs in{BFloat16Tensor::from_float(gen.uniform(c.q, -2, 2)),
            BFloat16Tensor::from_float(gen.uniform(c.k, -2, 2)),
            BFloat16Tensor::from_float(gen.uniform(c.v, -1, 1)), BFloat16Tensor()};
  in.dout = BFloat16Tensor::from_float(gen.uniform(dout_shape, -1, 1));
  return in;
}

Results run_bf16(const Inputs& in, const AttentionOptions& o) {
  return run_bf16(in.q, in.k, in.v, in.dout, o);
}

// One oracle case ready to run: its inputs, the reference backend's results, and its options
// with the flash backend.
struct OracleRun {
  Inputs in;
  Results want;
  AttentionOptions flash;
};

OracleRun oracle_run(const Case& c) {
  OracleRun run{oracle_inputs(c), {}, c.options};
  run.flash.backend = Backend::reference;
  run.want = run_bf16(run.in, run.flash);
  run.flash.backend = Backend::flash;
  return run;
}

TEST(Bf16Kernels, FlashMatchesTheOracleOnEveryIsa) {
  testing::KernelEnvironment restore;
  for (const Case& c : oracle_cases()) {
    SCOPED_TRACE(c.name);
    const OracleRun run = oracle_run(c);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      // avx512's, which avx512_bf16 (the same float32 table, vdpbf16ps for its emulation)
      // must repeat bit for bit.
      std::optional<Results> emulated;
      for (cpu::Isa isa : testing::available_bf16_isas()) {
        SCOPED_TRACE(std::string(cpu::isa_name(isa)) + ", threads " + std::to_string(threads));
        cpu::force_isa(isa);
        const Results got = run_bf16(run.in, run.flash);
        expect_within_bounds(got, run.want);
        if (isa == cpu::Isa::avx512) emulated = got;
        if (isa != cpu::Isa::avx512_bf16 || !emulated) continue;
        EXPECT_TRUE(same_bits(got.out, emulated->out)) << "out";
        EXPECT_TRUE(same_bits(got.lse, emulated->lse)) << "lse";
        EXPECT_TRUE(same_bits(got.dq, emulated->dq)) << "dq";
        EXPECT_TRUE(same_bits(got.dk, emulated->dk)) << "dk";
        EXPECT_TRUE(same_bits(got.dv, emulated->dv)) << "dv";
      }
    }
  }
}

// The AMX table's blocking inside the fused kernels, on any CPU: the best table this CPU runs
// with its GEMM replaced by amx_gemm.hpp over emulated tiles (amx_emulator.hpp), as the amx
// table replaces avx512_bf16's. Every GEMM shape the kernels make (64 x 64 tiles, odd d, the
// 1 x 1 dot of the backward's D, the decode's key split) goes through the tile edges.
TEST(Bf16Kernels, FlashMatchesTheOracleWithEmulatedAmxTiles) {
  testing::KernelEnvironment restore;
  struct RestoreTable {
    ~RestoreTable() { cpu::override_bf16_microkernels_for_testing(nullptr); }
  } restore_table;
  cpu::Bf16Microkernels table = cpu::bf16_microkernels();
  table.gemm = cpu::amx::gemm<testing::EmulatedTiles>;
  for (const Case& c : oracle_cases()) {
    SCOPED_TRACE(c.name);
    const OracleRun run = oracle_run(c);
    for (int threads : {1, 2}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      set_num_threads(threads);
      const int64_t dots_before = testing::EmulatedTiles::dots_run();
      cpu::override_bf16_microkernels_for_testing(&table);
      const Results got = run_bf16(run.in, run.flash);
      cpu::override_bf16_microkernels_for_testing(nullptr);
      EXPECT_GT(testing::EmulatedTiles::dots_run(), dots_before);  // it did run on the tiles
      expect_within_bounds(got, run.want);
    }
  }
}

// Every class in bfloat16 against itself in float32 on the same parameters and input: the output
// within 2^-5 of its largest element, every gradient (of x and of each parameter) within 2^-4
// of its largest (x, the weights, q, k, v, P, the context and dS each rounded once; the float32
// run is the reference, not an oracle of the rounded computation: the PyTorch comparison in
// python/tests/test_bf16.py is). And the bfloat16 run itself must differ from float32's (it
// did round).
TEST(Bf16Modules, EveryClassTracksItsFloat32Self) {
  const int64_t b = 2, n = 80, d_in = 48;
  for (const std::string& name : module_names()) {
    SCOPED_TRACE(name);
    ModuleSpec spec{.name = name,
                    .d_in = d_in,
                    .d_out = 32,
                    .qkv_bias = name != "params",
                    .context_length = n,
                    .num_heads = name.rfind("mha", 0) == 0 ? 4 : 1};
    if (name == "mha") spec.num_kv_groups = 2;
    Generator g(5);
    std::unique_ptr<Module> fp32 = make_module(spec, &g);
    Generator g2(5);
    std::unique_ptr<Module> bf16 = make_module(spec, &g2);
    bf16->set_dtype(DType::bfloat16);
    EXPECT_EQ(bf16->dtype(), DType::bfloat16);
    Generator data(9);
    const Tensor x = data.uniform({b, n, d_in}, -1, 1);
    const Tensor out32 = fp32->forward(x), out16 = bf16->forward(x);
    const Tensor dy = data.uniform(out32.shape(), -1, 1);
    const Tensor dx32 = fp32->backward(dy), dx16 = bf16->backward(dy);
    const double out_error = relative_error(out16, out32);
    EXPECT_LE(out_error, 1.0 / 32);
    EXPECT_GT(out_error, 0.0);
    EXPECT_LE(relative_error(dx16, dx32), 1.0 / 16);
    const NamedParameters p32 = fp32->named_parameters(), p16 = bf16->named_parameters();
    ASSERT_EQ(p32.size(), p16.size());
    double largest = 0.0;  // the largest gradient element of any parameter
    for (const auto& [key, p] : p32) {
      if (p.has_grad()) largest = std::max(largest, testing::max_abs(Tensor::from_view(p.grad())));
    }
    for (size_t i = 0; i < p32.size(); ++i) {
      const std::string& key = p32[i].first;
      ASSERT_EQ(p16[i].second.has_grad(), p32[i].second.has_grad()) << key;
      if (!p32[i].second.has_grad()) continue;  // Linear4/5's queries and keys
      const Tensor want = Tensor::from_view(p32[i].second.grad());
      const Tensor got = Tensor::from_view(p16[i].second.grad());
      if (key.size() >= 10 && key.compare(key.size() - 10, 10, "W_key.bias") == 0) {
        // 0 in exact arithmetic (softmax ignores a shift shared by every key): rounding noise
        // in both, bounded against the other gradients' scale.
        EXPECT_LE(testing::max_abs(got), largest / 64) << key;
        continue;
      }
      EXPECT_LE(relative_error(got, want), 1.0 / 16) << key;
    }
  }
}

}  // namespace
}  // namespace llm_utils
