// broadcast_parameters and GradientAverager (data_parallel.hpp).

#include "llm_utils/dist/data_parallel.hpp"

#include <algorithm>
#include <climits>
#include <string>

#include "dist/communicator_impl.hpp"
#include "dist/view_ops.hpp"

namespace llm_utils::dist {
namespace {

// A fingerprint of the parameters' names and shapes, so that ranks passing different models
// are told so instead of summing unrelated numbers.
uint64_t fingerprint(const NamedParameters& parameters) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  const auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  for (const auto& [name, p] : parameters) {
    for (char ch : name) mix(static_cast<unsigned char>(ch));
    const ConstTensorView values = p.data();
    for (int64_t s : values.shape()) mix(static_cast<uint64_t>(s));
    mix(p.requires_grad() ? 1 : 2);
  }
  return h;
}

void check_same_parameters(Communicator::Impl& c, const NamedParameters& parameters,
                           const char* fn) {
  const auto reports = detail::checked_on_every_rank(c, fn, [&](detail::RankReport& mine) {
    mine.values[0] = static_cast<int64_t>(parameters.size());
    mine.values[1] = static_cast<int64_t>(fingerprint(parameters));
  });
  for (int r = 0; r < c.size; ++r) {
    if (reports[static_cast<size_t>(r)].values != reports[0].values) {
      detail::fail_everywhere(fn, "rank " + std::to_string(r) + "'s parameters (names or " +
                                      "shapes) differ from rank 0's");
    }
  }
}

}  // namespace

void broadcast_parameters(const Communicator& comm, const NamedParameters& parameters, int root) {
  constexpr const char* fn = "broadcast_parameters";
  Communicator::Impl& c = comm.impl();
  if (root < 0 || root >= c.size) {
    throw ArgumentError(std::string(fn) + ": root " + std::to_string(root) + " is not a rank of " +
                        std::to_string(c.size));
  }
  check_same_parameters(c, parameters, fn);
  int64_t total = 0;
  for (const auto& [name, p] : parameters) total += p.data().numel();
  if (total > INT_MAX) throw ArgumentError(std::string(fn) + ": too many values for one message");
  Tensor flat({total});  // every parameter's values, one after another
  int64_t at = 0;
  for (const auto& [name, p] : parameters) {
    const ConstTensorView v = p.data();
    if (c.rank == root) detail::copy_into(v, TensorView(flat.data() + at, v.shape()));
    at += v.numel();
  }
  MPI_Request r = MPI_REQUEST_NULL;
  c.check(MPI_Ibcast(flat.data(), static_cast<int>(total), MPI_FLOAT, root, c.comm, &r), fn,
          "MPI_Ibcast");
  c.wait_all({&r, 1}, fn, "rank " + std::to_string(root) + "'s parameters",
             Communicator::Impl::Kind::collective);
  at = 0;
  for (auto [name, p] : parameters) {
    TensorView v = p.data();
    detail::copy_into(ConstTensorView(flat.data() + at, v.shape()), v);
    at += v.numel();
  }
}

struct GradientAverager::Bucket {
  std::vector<size_t> members;  // indices into parameters_
  Tensor flat;                  // (sum of the members' numel): their gradients, then the sums
  MPI_Request request = MPI_REQUEST_NULL;
  bool started = false;
};

GradientAverager::GradientAverager(Communicator comm, NamedParameters parameters,
                                   int64_t bucket_bytes)
    : GradientAverager(std::move(comm), std::move(parameters), GradientReduction::mean,
                       bucket_bytes) {}

GradientAverager::GradientAverager(Communicator comm, NamedParameters parameters,
                                   GradientReduction reduction, int64_t bucket_bytes)
    : comm_(std::move(comm)), parameters_(std::move(parameters)), reduction_(reduction) {
  constexpr const char* fn = "GradientAverager";
  if (bucket_bytes < 1) {
    throw ArgumentError(std::string(fn) + ": bucket_bytes must be >= 1, got " +
                        std::to_string(bucket_bytes));
  }
  check_same_parameters(comm_.impl(), parameters_, fn);
  // Buckets from the last parameter to the first, the order in which a backward finishes
  // them (out_proj before the projections), as PyTorch's DDP does.
  int64_t bytes = 0;
  for (size_t i = parameters_.size(); i-- > 0;) {
    if (!parameters_[i].second.requires_grad()) continue;
    const int64_t size = parameters_[i].second.data().numel() * int64_t{sizeof(float)};
    if (buckets_.empty() || bytes + size > bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().members.push_back(i);
    bytes += size;
  }
}

int64_t GradientAverager::bucket_count() const {
  return static_cast<int64_t>(buckets_.size());
}

GradientAverager::~GradientAverager() {
  // Sums still in flight write into their buckets: wait for them (bounded) before freeing; on
  // a broken communicator they may never end, so their buffers are left to them (leaked).
  for (Bucket& b : buckets_) {
    if (b.request == MPI_REQUEST_NULL) continue;
    if (!comm_.impl().broken) {
      try {
        comm_.impl().wait_all({&b.request, 1}, "~GradientAverager", "a gradient sum",
                              Communicator::Impl::Kind::collective);
        continue;
      } catch (const Error&) {
      }
    }
    new Tensor(std::move(b.flat));  // NOLINT: deliberately leaked, see above
  }
}

void GradientAverager::launch(Bucket& bucket) {
  constexpr const char* fn = "GradientAverager::start";
  Communicator::Impl& c = comm_.impl();
  int64_t total = 0;
  for (size_t i : bucket.members) total += parameters_[i].second.data().numel();
  total += static_cast<int64_t>(bucket.members.size());  // and one "has a gradient" flag each
  if (total > INT_MAX) throw ArgumentError(std::string(fn) + ": a bucket beyond MPI's int count");
  bucket.flat = Tensor({total});  // zeros where a parameter has no gradient on this rank
  int64_t at = 0;
  float* flags = bucket.flat.data() + total - static_cast<int64_t>(bucket.members.size());
  for (size_t m = 0; m < bucket.members.size(); ++m) {
    const ParameterRef& p = parameters_[bucket.members[m]].second;
    const int64_t n = p.data().numel();
    if (p.has_grad()) {
      const ConstTensorView grad = p.grad();
      detail::copy_into(grad, TensorView(bucket.flat.data() + at, grad.shape()));
      flags[m] = 1.0f;
    }
    at += n;
  }
  c.check(MPI_Iallreduce(MPI_IN_PLACE, bucket.flat.data(), static_cast<int>(total), MPI_FLOAT,
                         MPI_SUM, c.comm, &bucket.request),
          fn, "MPI_Iallreduce");
  bucket.started = true;
}

void GradientAverager::start() {
  constexpr const char* fn = "GradientAverager::start";
  Communicator::Impl& c = comm_.impl();
  c.expect_usable(fn);
  // Collectives must start in the same order on every rank: buckets in their order, up to the
  // first that is not ready.
  bool launching = true;
  for (Bucket& b : buckets_) {
    if (b.started) {
      int done = 0;  // progress only: finish() waits
      if (b.request != MPI_REQUEST_NULL) {
        c.check(MPI_Test(&b.request, &done, MPI_STATUS_IGNORE), fn, "MPI_Test");
      }
      continue;
    }
    for (size_t i : b.members) launching = launching && parameters_[i].second.has_grad();
    if (launching) launch(b);
  }
}

int64_t GradientAverager::buckets_started() const {
  return std::count_if(buckets_.begin(), buckets_.end(), [](const Bucket& b) { return b.started; });
}

void GradientAverager::finish() {
  constexpr const char* fn = "GradientAverager::finish";
  Communicator::Impl& c = comm_.impl();
  c.expect_usable(fn);
  for (Bucket& b : buckets_) {
    if (!b.started) launch(b);
  }
  const float inv = reduction_ == GradientReduction::sum ? 1.0f : 1.0f / static_cast<float>(c.size);
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = buckets_[k];
    c.wait_all({&b.request, 1}, fn, "the gradient sums of bucket " + std::to_string(k),
               Communicator::Impl::Kind::collective);
    const float* flags = b.flat.end() - b.members.size();  // how many ranks had each gradient
    for (float& x : b.flat) x *= inv;                      // the sums -> the averages
    int64_t at = 0;
    for (size_t m = 0; m < b.members.size(); ++m) {
      ParameterRef& p = parameters_[b.members[m]].second;
      const Shape shape = p.data().shape();
      if (flags[m] == 0.0f) {  // no rank had one: it stays None, as without ranks
        at += shape_numel(shape);
        continue;
      }
      if (!p.has_grad()) p.accumulate_grad(Tensor(shape));
      detail::copy_into(ConstTensorView(b.flat.data() + at, shape), p.grad());
      at += shape_numel(shape);
    }
    b.started = false;
    b.flat = Tensor();
  }
}

}  // namespace llm_utils::dist
