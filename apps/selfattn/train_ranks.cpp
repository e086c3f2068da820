// train_ranks (train_ranks.hpp): MPI ranks with llm_utils::dist in a build with MPI.

#include "train_ranks.hpp"

#if SELFATTN_HAVE_MPI
#include <optional>

#include "llm_utils/dist.hpp"
#include "mpi_ranks.hpp"
#endif

namespace selfattn {

#if SELFATTN_HAVE_MPI
namespace {

class MpiTrainRanks : public TrainRanks {
 public:
  MpiTrainRanks() : mpi_(nullptr, nullptr), world_(llm_utils::dist::Communicator::world()) {}
  int rank() const override { return world_.rank(); }
  int size() const override { return world_.size(); }
  void start(const llm_utils::NamedParameters& parameters) override {
    llm_utils::dist::broadcast_parameters(world_, parameters);
    averager_.emplace(world_, parameters);
  }
  void average_gradients() override { averager_->average(); }
  double mean(double value) override {
    float v = static_cast<float>(value);
    world_.allreduce_sum({&v, 1});
    return static_cast<double>(v) / world_.size();
  }
  void run(const std::function<void()>& body) override { run_on_every_rank(body); }

 private:
  llm_utils::dist::Environment mpi_;
  llm_utils::dist::Communicator world_;
  std::optional<llm_utils::dist::GradientAverager> averager_;
};

}  // namespace

std::unique_ptr<TrainRanks> train_ranks() {
  if (launched_by_mpirun()) return std::make_unique<MpiTrainRanks>();
  return std::make_unique<TrainRanks>();
}
#else
std::unique_ptr<TrainRanks> train_ranks() {
  return std::make_unique<TrainRanks>();
}
#endif

}  // namespace selfattn
