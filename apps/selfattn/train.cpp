// selfattn train: fit a module to a teacher or a recall task with SGD or AdamW, show progress,
// plot the loss curve and save the trained weights.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "commands.hpp"
#include "llm_utils/llm_utils.hpp"
#include "pictures.hpp"
#include "progress.hpp"
#include "train_ranks.hpp"
#include "train_task.hpp"
#include "validators.hpp"

namespace selfattn {
namespace {

struct TrainFlags {
  std::string module = "linear";
  std::string dtype = "fp32";  // the student's
  int64_t d_in = 3;
  int64_t d_out = 2;
  bool qkv_bias = false;
  std::optional<uint64_t> seed;
  std::optional<uint64_t> teacher_seed;
  std::string task = "teacher";
  std::string optimizer = "adamw";
  std::optional<double> lr;
  std::optional<double> momentum;
  std::optional<double> weight_decay;
  int64_t steps = 300;
  int64_t batch = 16;
  int64_t seq = 6;
  uint64_t data_seed = 0;
  std::string loss_plot;
  std::string save_weights;
  int64_t log_every = 0;
  int threads = 0;
};

const char* kFrozenNote =
    "SelfAttention_Linear4 and SelfAttention_Linear5 train only W_value (and its bias): as in the "
    "original,\n  their attention weights reach the output through frozen layers, so W_query and "
    "W_key get no gradient";

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The optimizer the flags ask for, over the student's parameters.
using Optimizer = std::variant<llm_utils::SGD, llm_utils::AdamW>;

Optimizer make_optimizer(const TrainFlags& o, llm_utils::SelfAttentionBase& m, std::string* desc) {
  if (o.optimizer == "sgd") {
    llm_utils::SGDOptions opt{.lr = o.lr.value_or(0.1),
                              .momentum = o.momentum.value_or(0.0),
                              .weight_decay = o.weight_decay.value_or(0.0)};
    *desc = "sgd (lr " + fmt("%g", opt.lr) + ", momentum " + fmt("%g", opt.momentum) +
            ", weight decay " + fmt("%g", opt.weight_decay) + ")";
    return llm_utils::SGD(m.named_parameters(), opt);
  }
  if (o.momentum) {
    throw llm_utils::ArgumentError("--momentum applies to --optimizer sgd only (adamw has betas)");
  }
  llm_utils::AdamWOptions opt{.lr = o.lr.value_or(0.01)};
  opt.weight_decay = o.weight_decay.value_or(opt.weight_decay);
  *desc = "adamw (lr " + fmt("%g", opt.lr) + ", weight decay " + fmt("%g", opt.weight_decay) + ")";
  return llm_utils::AdamW(m.named_parameters(), opt);
}

// Linear4/5's forward draws from the default generator (to mirror PyTorch); training needs no
// such parity and should not pay B*N*N draws per step.
void stop_generator_advance(llm_utils::SelfAttentionBase& m) {
  if (auto* l4 = dynamic_cast<llm_utils::SelfAttention_Linear4*>(&m)) {
    l4->set_advance_generator(false);
  }
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (const std::string& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

double mean(const std::vector<double>& v, size_t first, size_t last) {
  double s = 0;
  for (size_t i = first; i < last; ++i) s += v[i];
  return s / static_cast<double>(last - first);
}

void check_flags(const TrainFlags& o, uint64_t seed, uint64_t teacher_seed) {
  // A batch's attention weights are batch * seq * seq floats; keep a typo from eating the RAM.
  // Each size is checked alone first, so the products below cannot overflow.
  constexpr int64_t kMax = int64_t{1} << 24;
  if (o.batch > kMax || o.seq > kMax || o.batch * o.seq > kMax ||
      o.batch * o.seq * o.seq > (int64_t{1} << 28)) {
    throw llm_utils::ArgumentError("--batch " + std::to_string(o.batch) + " x --seq " +
                                   std::to_string(o.seq) + " is too large for a training demo");
  }
  if (o.task == "teacher" && seed == teacher_seed) {
    throw llm_utils::ArgumentError("--teacher-seed equals --seed (" + std::to_string(seed) +
                                   "): the student would start at its target");
  }
  if (o.task != "teacher" && o.teacher_seed) {
    throw llm_utils::ArgumentError("--teacher-seed applies to --task teacher only");
  }
  check_output_folder(o.loss_plot, "--loss-plot");
  check_output_folder(o.save_weights, "--save-weights");
}

// Rank r of P trains on rows [r B / P, (r + 1) B / P) of every batch.
llm_utils::Tensor rows_of(const llm_utils::Tensor& t, const TrainRanks& ranks) {
  const int64_t part = t.size(0) / ranks.size();
  return llm_utils::Tensor::from_view(t.view().narrow(0, ranks.rank() * part, part));
}

void train_on(const TrainFlags& o, std::ostream& rank0_out, TrainRanks& ranks) {
  // Only rank 0 prints and writes files.
  std::ostream null_stream(nullptr);
  std::ostream& out = ranks.rank() == 0 ? rank0_out : null_stream;
  if (o.batch % ranks.size() != 0) {
    throw llm_utils::ArgumentError("--batch " + std::to_string(o.batch) +
                                   " must be divisible by the " + std::to_string(ranks.size()) +
                                   " ranks (each trains on an equal part of every batch)");
  }
  const uint64_t seed = o.seed.value_or(llm_utils::Generator::kDefaultSeed);
  const uint64_t teacher_seed = o.teacher_seed.value_or(seed + 1);
  check_flags(o, seed, teacher_seed);
  const Task task = parse_task(o.task);

  std::unique_ptr<llm_utils::SelfAttentionBase> teacher;
  if (task == Task::teacher) {
    llm_utils::manual_seed(teacher_seed);
    teacher = llm_utils::make_self_attention(o.module, o.d_in, o.d_out, o.qkv_bias);
    stop_generator_advance(*teacher);
  }
  // Seeded last, so the student's initial weights are PyTorch's for --seed.
  llm_utils::manual_seed(seed);
  auto student = llm_utils::make_self_attention(o.module, o.d_in, o.d_out, o.qkv_bias);
  student->set_dtype(llm_utils::parse_dtype(o.dtype));
  stop_generator_advance(*student);
  TaskSampler sampler(task, teacher.get(), o.batch, o.seq, o.d_in, o.d_out, o.data_seed);
  std::string opt_desc;
  Optimizer opt = make_optimizer(o, *student, &opt_desc);
  ranks.start(student->named_parameters());

  const std::string name = student->class_name() + "(d_in=" + std::to_string(o.d_in) +
                           ", d_out=" + std::to_string(o.d_out) +
                           (o.qkv_bias ? ", qkv_bias=True" : "") + ")";
  const std::string target =
      task == Task::teacher
          ? "a teacher " + student->class_name() + " (seed " + std::to_string(teacher_seed) + ")"
          : "the recall task (copy the marked token)";
  out << "training " << name << " (seed " << seed << ") to match " << target << "\n"
      << "  " << opt_desc << ", " << o.steps << " steps of batch " << o.batch << " x seq " << o.seq
      << ", MSE loss\n";
  if (ranks.size() > 1) {
    out << "  data parallel over " << ranks.size() << " ranks: " << o.batch / ranks.size()
        << " sequences each, gradients averaged\n";
  }
  const bool frozen_qk = o.module == "linear4" || o.module == "linear5";
  if (frozen_qk) out << "  note: " << kFrozenNote << ".\n";

  Progress progress(out, stdout_is_terminal(), o.steps,
                    o.log_every > 0 ? o.log_every : std::max<int64_t>(1, o.steps / 10));
  std::vector<double> losses;
  losses.reserve(static_cast<size_t>(o.steps));
  llm_utils::Tensor grad;
  for (int64_t step = 1; step <= o.steps; ++step) {
    Batch batch = sampler.next();
    if (ranks.size() > 1) batch = {rows_of(batch.x, ranks), rows_of(batch.target, ranks)};
    std::visit([](auto& opt) { opt.zero_grad(); }, opt);
    const llm_utils::Tensor y = student->forward(batch.x);
    // The mean over equal parts is the whole batch's loss; every rank checks the same value.
    const double loss = ranks.mean(mse_loss(y, batch.target, &grad));
    if (!std::isfinite(loss)) {
      progress.finish();
      throw llm_utils::Error("training diverged at step " + std::to_string(step) + " (loss " +
                             fmt("%g", loss) + "); try a smaller --lr");
    }
    student->backward(grad);
    ranks.average_gradients();
    std::visit([](auto& opt) { opt.step(); }, opt);
    losses.push_back(loss);
    progress.update(step, loss);
  }
  progress.finish();

  const size_t k = std::min<size_t>(10, losses.size());
  out << "loss " << fmt("%.4e", mean(losses, 0, k)) << " -> "
      << fmt("%.4e", mean(losses, losses.size() - k, losses.size())) << " (mean of the first and "
      << "last " << k << " steps), " << fmt("%.2f", progress.elapsed_seconds()) << " s, "
      << fmt("%.0f", progress.steps_per_second(o.steps)) << " steps/s\n";
  std::vector<std::string> trained, untouched;
  for (const auto& [pname, p] : student->named_parameters()) {
    (p.has_grad() ? trained : untouched).push_back(pname);
  }
  out << "  trained: " << join(trained) << "\n";
  if (!untouched.empty()) out << "  no gradient, unchanged: " << join(untouched) << "\n";

  if (ranks.rank() != 0) return;
  if (!o.loss_plot.empty()) {
    plot::LinePlotOptions lp;
    lp.title = name + (task == Task::teacher ? " fitted to a teacher" : " on the recall task") +
               " (" + o.optimizer + ", lr " +
               fmt("%g", o.lr.value_or(o.optimizer == "sgd" ? 0.1 : 0.01)) + ", batch " +
               std::to_string(o.batch) + " x seq " + std::to_string(o.seq) + ")";
    lp.y_title = "MSE loss (log scale)";
    lp.x_title = "training step";
    lp.series_label = "loss of each step's batch";
    write_line_plot(o.loss_plot, losses, lp);
    out << "  wrote the loss curve to " << o.loss_plot << "\n";
  }
  if (!o.save_weights.empty()) {
    llm_utils::io::save_safetensors(o.save_weights, student->state_dict(),
                                    {{"format", "pt"},
                                     {"module", student->class_name()},
                                     {"task", o.task},
                                     {"steps", std::to_string(o.steps)}});
    out << "  wrote the trained weights to " << o.save_weights << " (PyTorch names)\n";
  }
}

void train(const TrainFlags& o, std::ostream& out) {
  if (o.threads > 0) llm_utils::set_num_threads(o.threads);
  const std::unique_ptr<TrainRanks> ranks = train_ranks();
  ranks->run([&] { train_on(o, out, *ranks); });
}

}  // namespace

Command add_train_command(CLI::App& app, std::ostream& out) {
  auto f = std::make_shared<TrainFlags>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Fit a module to a teacher module or a recall task with SGD or AdamW.");
  cmd->add_option("--module", f->module, "Which class: params, linear, linear4 or linear5")
      ->check(CLI::IsMember({"params", "linear", "linear4", "linear5"}))
      ->capture_default_str();
  cmd->add_option("--d-in", f->d_in, "Input width")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--d-out", f->d_out, "Output width")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_flag("--qkv-bias", f->qkv_bias, "Give the linear projections a bias");
  cmd->add_option("--seed", f->seed,
                  "Seed of the student's initial weights, as torch.manual_seed(S) (default: "
                  "PyTorch's default seed 67280421310721)")
      ->check(seed_integer());
  cmd->add_option("--task", f->task,
                  "teacher: match the outputs of a module of the same class with other weights; "
                  "recall: every token outputs the first d_out features of the token whose last "
                  "feature is 1 (needs d_in > d_out)")
      ->check(CLI::IsMember({"teacher", "recall"}))
      ->capture_default_str();
  cmd->add_option("--teacher-seed", f->teacher_seed,
                  "Seed of the teacher's weights (default: seed + 1)")
      ->check(seed_integer());
  cmd->add_option("--optimizer", f->optimizer, "sgd or adamw")
      ->check(CLI::IsMember({"sgd", "adamw"}))
      ->capture_default_str();
  cmd->add_option("--lr", f->lr, "Learning rate (default: 0.01 for adamw, 0.1 for sgd)")
      ->check(positive_real());
  cmd->add_option("--momentum", f->momentum, "SGD momentum (default: 0)")
      ->check(non_negative_real());
  cmd->add_option("--weight-decay", f->weight_decay,
                  "Weight decay (default: 0.01 for adamw, 0 for sgd, PyTorch's defaults)")
      ->check(non_negative_real());
  cmd->add_option("--steps", f->steps, "Optimizer steps")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--batch", f->batch, "Sequences per step")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--seq", f->seq, "Tokens per sequence")
      ->check(positive_integer())
      ->capture_default_str();
  cmd->add_option("--data-seed", f->data_seed, "Seed of the random inputs")
      ->capture_default_str()
      ->check(seed_integer());
  cmd->add_option("--loss-plot", f->loss_plot, "Write the loss curve as a PNG (log-scale loss)");
  cmd->add_option("--save-weights", f->save_weights,
                  "Write the trained weights (safetensors, PyTorch names)");
  cmd->add_option("--log-every", f->log_every,
                  "Steps between progress lines when the output is not a terminal (default: "
                  "steps / 10)")
      ->check(positive_integer(std::numeric_limits<int>::max()));
  cmd->add_option("--threads", f->threads, "Threads for the computation (default: all cores)")
      ->check(positive_integer(std::numeric_limits<int>::max()));
  add_dtype_option(cmd, f->dtype);
  cmd->footer(
      std::string(
          "Each step draws a fresh batch of inputs with features in [0, 1), computes the MSE "
          "loss\nagainst the target and its gradient, runs backward and one optimizer step. On "
          "a terminal\na progress bar shows the loss and steps/s; otherwise a line every "
          "--log-every steps.\n\nNote: ") +
      kFrozenNote +
      ".\n\n"
      "Examples:\n"
      "  selfattn train --module linear --steps 300 --loss-plot loss.png --save-weights "
      "w.safetensors\n"
      "  selfattn train --module params --optimizer sgd --lr 0.05 --momentum 0.9 --steps 200\n"
      "  selfattn train --module linear --qkv-bias --task recall --d-in 4 --d-out 2 --steps 1000 "
      "\\\n      --loss-plot recall.png\n"
      "  selfattn run --module linear --weights w.safetensors --input x.npy --output y.npy\n"
      "  mpirun -np 2 selfattn train --module linear --batch 16 --steps 300   # data parallel");
  return [f, &out] { train(*f, out); };
}

}  // namespace selfattn
