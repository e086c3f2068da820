// llm_utils::dist under mpirun (tests/CMakeLists.txt runs this binary on 1, 2, 3 and 4 ranks):
// ring and Ulysses attention, forward and every gradient, against the single-process fused
// kernels on the whole tensors; causal and not, N not divisible by the ranks, GQA, masks, both
// layouts; the shared argument check, a stuck rank, data-parallel gradient averaging.
//
// Every rank computes the whole problem itself (same seed, same inputs), so each can compare
// its gathered result with the single-process one. Tests must make the same collective calls
// on every rank in the same order: they use EXPECT (not ASSERT) before any collective.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>

#include "llm_utils/dist.hpp"
#include "llm_utils/llm_utils.hpp"

namespace llm_utils {
namespace {

using dist::Communicator;
using dist::SequenceLayout;
using dist::SequenceStrategy;

Communicator& world() {
  static Communicator comm = Communicator::world();
  return comm;
}

// max |a - e| / max(1, max |e|), infinities equal (lse of hidden rows): the parity measure.
double parity_error(ConstTensorView actual, ConstTensorView expected) {
  const Tensor a = Tensor::from_view(actual), e = Tensor::from_view(expected);
  if (a.shape() != e.shape()) return INFINITY;
  double scale = 1.0, worst = 0.0;
  for (int64_t i = 0; i < e.numel(); ++i) {
    if (std::isinf(e[i]) || std::isinf(a[i])) {
      if (a[i] != e[i]) return INFINITY;
      continue;
    }
    if (std::isnan(e[i]) != std::isnan(a[i])) return INFINITY;
    scale = std::max(scale, static_cast<double>(std::fabs(e[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - e[i]));
  }
  return worst / scale;
}

struct Case {
  std::string name;
  Shape q, k, v;  // whole shapes; the sequence dimension is the second last
  bool causal = false;
  int64_t query_offset = 0;
  enum Mask { none, key_padding, full } mask = none;
};

Tensor make_mask(const Case& c, int64_t n, int64_t m) {
  Generator g(11);
  if (c.mask == Case::key_padding) {  // (.., 1, M): the last quarter of the keys hidden
    Shape s(c.q.size() == 4 ? 4 : 2, 1);
    s.back() = m;
    Tensor mask(s);
    for (int64_t j = m - m / 4; j < m; ++j) mask[j] = -INFINITY;
    return mask;
  }
  Tensor mask = g.uniform({n, m}, -2.0, 2.0);  // (N, M), some keys hidden from some queries
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      if ((i * 7 + j * 3) % 11 == 0) mask[i * m + j] = -INFINITY;
    }
  }
  return mask;
}

constexpr double kTolerance = 1e-5;

void expect_matches_single_process(const Case& c, SequenceStrategy strategy,
                                   SequenceLayout layout) {
  SCOPED_TRACE(c.name + " " + dist::strategy_name(strategy) + " " + dist::layout_name(layout));
  const int P = world().size(), me = world().rank();
  const int64_t sd = static_cast<int64_t>(c.q.size()) - 2;
  const int64_t n = c.q[sd], m = c.k[sd];
  Generator g(7);
  const Tensor q = g.uniform(c.q, -1.0, 1.0), k = g.uniform(c.k, -1.0, 1.0),
               v = g.uniform(c.v, -1.0, 1.0);
  Shape out_shape = c.q;
  out_shape.back() = c.v.back();
  const Tensor dout = g.uniform(out_shape, -1.0, 1.0);
  Tensor mask;
  AttentionOptions opts;
  opts.causal = c.causal;
  opts.query_offset = c.query_offset;
  opts.backend = Backend::flash;
  if (c.mask != Case::none) {
    mask = make_mask(c, n, m);
    opts.additive_mask = mask.view();
  }
  // The single-process run.
  Shape lse_shape(c.q.begin(), c.q.end() - 1);
  Tensor out(out_shape), lse(lse_shape), dq(c.q), dk(c.k), dv(c.v);
  attention_forward(q, k, v, out, lse, opts);
  attention_backward(q, k, v, out, lse, dout, dq, dk, dv, opts);

  // The distributed run on this rank's shards.
  const auto shard = [&](const Tensor& t, int64_t dim) {
    return dist::shard_sequence(t, dim, P, me, layout);
  };
  const Tensor q_l = shard(q, sd), k_l = shard(k, sd), v_l = shard(v, sd), dout_l = shard(dout, sd);
  Tensor out_l(q_l.shape()), lse_l(shard(lse, sd).shape());
  Shape out_l_shape = q_l.shape();
  out_l_shape.back() = c.v.back();
  out_l = Tensor(out_l_shape);
  Tensor dq_l(q_l.shape()), dk_l(k_l.shape()), dv_l(v_l.shape());
  // The distributed calls with the default backend: their blocks are small enough for
  // `automatic` to pick the reference, whose backward must not be used on part of the keys.
  AttentionOptions dist_opts = opts;
  dist_opts.backend = Backend::automatic;
  dist::sequence_parallel_forward(strategy, world(), q_l, k_l, v_l, out_l, lse_l, dist_opts,
                                  layout);
  dist::sequence_parallel_backward(strategy, world(), q_l, k_l, v_l, out_l, lse_l, dout_l, dq_l,
                                   dk_l, dv_l, dist_opts, layout);
  const auto whole = [&](const Tensor& t, int64_t dim) {
    return dist::gather_sequence(world(), t, dim, layout);
  };
  EXPECT_LE(parity_error(whole(out_l, sd), out), kTolerance) << "out";
  EXPECT_LE(parity_error(whole(lse_l, sd), lse), kTolerance) << "lse";
  EXPECT_LE(parity_error(whole(dq_l, sd), dq), kTolerance) << "dq";
  EXPECT_LE(parity_error(whole(dk_l, sd), dk), kTolerance) << "dk";
  EXPECT_LE(parity_error(whole(dv_l, sd), dv), kTolerance) << "dv";
}

// Heads: 4 key/value heads (so Ulysses runs on up to 4 ranks); N = 37 and 130 are divisible by
// none of 2, 3, 4 (and by 2P only by chance).
std::vector<Case> cases() {
  return {
      {"rank4 N=130 causal", {1, 4, 130, 16}, {1, 4, 130, 16}, {1, 4, 130, 16}, true},
      {"rank4 N=130", {2, 4, 130, 16}, {2, 4, 130, 16}, {2, 4, 130, 8}, false},
      {"rank4 GQA 8/4 causal", {1, 8, 96, 16}, {1, 4, 96, 16}, {1, 4, 96, 16}, true},
      {"rank4 key padding",
       {1, 4, 70, 8},
       {1, 4, 70, 8},
       {1, 4, 70, 8},
       false,
       0,
       Case::key_padding},
      {"rank4 full mask causal", {1, 4, 37, 8}, {1, 4, 37, 8}, {1, 4, 37, 8}, true, 0, Case::full},
      {"rank3 GQA 8/4 N=200 causal", {8, 200, 16}, {4, 200, 16}, {4, 200, 16}, true},
      {"rank4 cross N=37 M=90", {1, 4, 37, 8}, {1, 4, 90, 8}, {1, 4, 90, 8}, false},
      {"rank4 cross causal offset", {1, 4, 37, 8}, {1, 4, 90, 8}, {1, 4, 90, 8}, true, 53},
  };
}

TEST(RingAttention, MatchesTheSingleProcessKernels) {
  for (const Case& c : cases()) {
    for (SequenceLayout layout : {SequenceLayout::zigzag, SequenceLayout::contiguous}) {
      expect_matches_single_process(c, SequenceStrategy::ring, layout);
    }
  }
  // One head (rank 2): only the ring can split it.
  expect_matches_single_process({"rank2 N=37 causal", {37, 8}, {37, 8}, {37, 8}, true},
                                SequenceStrategy::ring, SequenceLayout::zigzag);
}

TEST(UlyssesAttention, MatchesTheSingleProcessKernels) {
  for (const Case& c : cases()) {
    expect_matches_single_process(c, SequenceStrategy::ulysses, SequenceLayout::zigzag);
  }
  expect_matches_single_process(cases()[0], SequenceStrategy::ulysses, SequenceLayout::contiguous);
}

TEST(SequenceShards, ZigzagBalancesTheCausalWork) {
  // Rank r holds chunks r and 2P-1-r: the unmasked pairs of its queries are equal for all r.
  const int P = 4;
  const int64_t n = 64;
  std::vector<int64_t> work;
  for (int r = 0; r < P; ++r) {
    int64_t pairs = 0;
    for (const dist::SequenceChunk& c : dist::sequence_chunks(n, P, r, SequenceLayout::zigzag)) {
      for (int64_t i = c.start; i < c.start + c.length; ++i) pairs += i + 1;
    }
    work.push_back(pairs);
  }
  for (int r = 1; r < P; ++r) EXPECT_EQ(work[r], work[0]);
  EXPECT_EQ(dist::shard_length(37, 4, 0, SequenceLayout::zigzag) +
                dist::shard_length(37, 4, 1, SequenceLayout::zigzag) +
                dist::shard_length(37, 4, 2, SequenceLayout::zigzag) +
                dist::shard_length(37, 4, 3, SequenceLayout::zigzag),
            37);
  EXPECT_THROW(dist::parse_layout("stripes"), ArgumentError);
  EXPECT_THROW(dist::parse_strategy("tree"), ArgumentError);
}

// A bad argument on one rank: every rank throws the same ArgumentError naming that rank.
TEST(DistErrors, ABadArgumentOnOneRankFailsEveryRank) {
  const int P = world().size(), me = world().rank();
  const int bad = P - 1;
  const int64_t n_local = dist::shard_length(40, P, me, SequenceLayout::zigzag);
  Tensor q({4, n_local, me == bad ? int64_t{9} : int64_t{8}}), k({4, n_local, 8}),
      v({4, n_local, 8});
  Tensor out({4, n_local, 8}), lse({4, n_local});
  try {
    dist::ring_attention_forward(world(), q, k, v, out, lse, {});
    ADD_FAILURE() << "no error";
  } catch (const ArgumentError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank " + std::to_string(bad) + ":"), std::string::npos) << what;
    EXPECT_NE(what.find("k must have shape"), std::string::npos) << what;
  }
}

TEST(DistErrors, ShardsThatDoNotFitTheLayoutAreNamed) {
  const int P = world().size(), me = world().rank();
  if (P == 1) GTEST_SKIP() << "one rank holds any length";
  // 10P + 1 rows with the extra one on the last rank: the contiguous layout gives it to rank 0.
  const int64_t rows = me == P - 1 ? 11 : 10;
  Tensor q({2, rows, 4}), out({2, rows, 4}), lse({2, rows});
  try {
    dist::ring_attention_forward(world(), q, Tensor(q), Tensor(q), out, lse, {},
                                 SequenceLayout::contiguous);
    ADD_FAILURE() << "no error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("the contiguous layout of"), std::string::npos)
        << e.what();
  }
}

TEST(DistErrors, UlyssesNeedsAKeyValueHeadPerRank) {
  const int P = world().size(), me = world().rank();
  const int64_t n_local = dist::shard_length(32, P, me, SequenceLayout::zigzag);
  Tensor q({1, 4, n_local, 8}), k({1, 1, n_local, 8}), v({1, 1, n_local, 8});
  Tensor out({1, 4, n_local, 8}), lse({1, 4, n_local});
  if (P == 1) {
    EXPECT_NO_THROW(dist::ulysses_attention_forward(world(), q, k, v, out, lse, {}));
  } else {
    EXPECT_THROW(dist::ulysses_attention_forward(world(), q, k, v, out, lse, {}), ArgumentError);
  }
}

// A rank that arrives late (stuck): the others give up after the timeout, and so does it
// when its peers have moved on. Run alone (its communicator is left broken).
TEST(DistStuckRank, WaitsAreBounded) {
  Communicator comm = Communicator::world();
  comm.set_timeout(0.5);
  const int P = comm.size(), me = comm.rank();
  if (P == 1) GTEST_SKIP() << "needs two ranks";
  const int64_t n_local = dist::shard_length(64, P, me, SequenceLayout::zigzag);
  Tensor q({2, n_local, 8}), out({2, n_local, 8}), lse({2, n_local});
  if (me == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(dist::ring_attention_forward(comm, q, Tensor(q), Tensor(q), out, lse, {}),
               dist::CommError);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(s, 5.0);
  EXPECT_THROW(comm.barrier(), dist::CommError) << "a broken communicator refuses more work";
}

TEST(DataParallel, AveragedGradientsEqualTheWholeBatch) {
  const int P = world().size(), me = world().rank();
  MultiHeadAttention whole(16, 16, 64, 0.0f, 4, true), part(16, 16, 64, 0.0f, 4, true);
  // Different starting weights on each rank: broadcast makes them rank 0's.
  Generator init(100 + me);
  for (auto [name, p] : part.named_parameters()) init.uniform_(p.data(), -0.3, 0.3);
  Generator init0(100);
  for (auto [name, p] : whole.named_parameters()) init0.uniform_(p.data(), -0.3, 0.3);
  dist::broadcast_parameters(world(), part.named_parameters());
  // The summed batch: 2P sequences, rank r holding sequences 2r and 2r + 1. The loss is a
  // mean over the batch, so the whole batch's dL/dy is g / 2P and rank r's (the mean over its
  // part) g_r / 2: the average over the ranks of their gradients is the whole batch's.
  Generator gx(5);
  const Tensor x = gx.uniform({2 * P, 12, 16}, -1.0, 1.0), g = gx.uniform({2 * P, 12, 16}, -1, 1);
  Tensor dy_whole = g;
  for (float& e : dy_whole) e /= static_cast<float>(2 * P);
  whole.forward(x);
  whole.backward(dy_whole);
  Tensor x_part({2, 12, 16}), dy_part({2, 12, 16});
  std::copy(x.data() + me * 2 * 12 * 16, x.data() + (me + 1) * 2 * 12 * 16, x_part.data());
  std::copy(g.data() + me * 2 * 12 * 16, g.data() + (me + 1) * 2 * 12 * 16, dy_part.data());
  for (float& e : dy_part) e /= 2.0f;
  part.forward(x_part);
  dist::GradientAverager averager(world(), part.named_parameters(), /*bucket_bytes=*/1024);
  EXPECT_GT(averager.bucket_count(), 1);
  // The sums start during backward: out_proj's buckets when its gradients are final, before
  // the attention's backward; the rest when backward ends.
  std::vector<int64_t> started;
  part.set_gradient_hook([&] {
    averager.start();
    started.push_back(averager.buckets_started());
  });
  part.backward(dy_part);
  ASSERT_EQ(started.size(), 2u);
  EXPECT_GT(started[0], 0);
  EXPECT_LT(started[0], averager.bucket_count());
  EXPECT_EQ(started[1], averager.bucket_count());
  averager.finish();
  auto pw = whole.named_parameters(), pp = part.named_parameters();
  for (size_t i = 0; i < pw.size(); ++i) {
    EXPECT_LE(parity_error(pp[i].second.data(), pw[i].second.data()), 0.0) << pw[i].first;
    EXPECT_LE(parity_error(pp[i].second.grad(), pw[i].second.grad()), kTolerance) << pw[i].first;
  }
}

TEST(DataParallel, AGradientNoRankGaveStaysNone) {
  const int P = world().size(), me = world().rank();
  Parameter a(Tensor({3}, {1, 2, 3})), b(Tensor({2}, {4, 5})), c(Tensor({2}, {6, 7}));
  a.accumulate_grad(Tensor({3}, {1.0f * me, 2, 3}));                      // every rank
  if (me == P - 1) b.accumulate_grad(Tensor({2}, {float(P), float(P)}));  // the last rank only
  dist::GradientAverager averager(world(), {{"a", a}, {"b", b}, {"c", c}});
  averager.average();
  EXPECT_FLOAT_EQ(a.grad().data()[0], (P - 1) / 2.0f);  // mean of 0 .. P-1
  EXPECT_FLOAT_EQ(a.grad().data()[1], 2.0f);
  ASSERT_TRUE(b.has_grad());
  EXPECT_FLOAT_EQ(b.grad().data()[0], 1.0f);  // P / P: the others count as zeros
  EXPECT_FALSE(c.has_grad()) << "no rank gave c a gradient: it stays None";
}

// MultiHeadAttention over a split sequence: each rank's output rows, dx and its share of the
// parameter gradients (summed over the ranks) equal one process's on the whole sequence.
void expect_sequence_parallel_mha(SequenceStrategy strategy, int64_t kv_groups) {
  SCOPED_TRACE(std::string(dist::strategy_name(strategy)) + " kv_groups " +
               std::to_string(kv_groups));
  const int P = world().size(), me = world().rank();
  MultiHeadAttentionOptions mo;
  mo.num_kv_groups = kv_groups;
  Generator g_whole(21), g_split(21);
  MultiHeadAttention whole(16, 32, 64, 0.0, 8, true, mo, &g_whole),
      split(16, 32, 64, 0.0, 8, true, mo, &g_split);
  const auto layout = SequenceLayout::zigzag;
  split.set_attention_executor(dist::sequence_parallel_executor(world(), strategy, layout));
  Generator gx(8);
  const Tensor x = gx.uniform({2, 45, 16}, -1.0, 1.0), dy = gx.uniform({2, 45, 32}, -1.0, 1.0);
  const Tensor y = whole.forward(x), dx = whole.backward(dy);
  const Tensor y_l = split.forward(dist::shard_sequence(x, 1, P, me, layout));
  const Tensor dx_l = split.backward(dist::shard_sequence(dy, 1, P, me, layout));
  dist::GradientAverager(world(), split.named_parameters(), dist::GradientReduction::sum).average();
  EXPECT_LE(parity_error(dist::gather_sequence(world(), y_l, 1, layout), y), kTolerance);
  EXPECT_LE(parity_error(dist::gather_sequence(world(), dx_l, 1, layout), dx), kTolerance);
  auto pw = whole.named_parameters(), ps = split.named_parameters();
  for (size_t i = 0; i < pw.size(); ++i) {
    EXPECT_LE(parity_error(ps[i].second.grad(), pw[i].second.grad()), kTolerance) << pw[i].first;
  }
  EXPECT_THROW(split.attn_weights(), StateError);
}

TEST(SequenceParallelModule, MultiHeadAttentionMatchesOneProcess) {
  expect_sequence_parallel_mha(SequenceStrategy::ring, 8);
  expect_sequence_parallel_mha(SequenceStrategy::ring, 2);
  expect_sequence_parallel_mha(SequenceStrategy::ulysses, 4);
}

TEST(SequenceParallelModule, WhatTheExecutorCannotRunIsRefused) {
  MultiHeadAttention m(8, 8, 16, 0.5, 2);
  m.set_attention_executor(dist::sequence_parallel_executor(world()));
  const Tensor x({1, 4, 8});
  EXPECT_THROW(m.forward(x), ArgumentError);  // dropout in training mode
  m.eval();
  AttentionForwardOptions cached;
  cached.use_cache = true;
  EXPECT_THROW(m.forward(x, cached), ArgumentError);
  m.set_attention_executor(nullptr);
  EXPECT_NO_THROW(m.forward(x, cached));
}

}  // namespace
}  // namespace llm_utils

int main(int argc, char** argv) {
  llm_utils::dist::Environment mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
