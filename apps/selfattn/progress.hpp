#pragma once
// Training progress: a bar redrawn in place on a terminal, plain periodic lines otherwise (logs,
// pipes, CI), both with the loss and the speed in steps per second.

#include <chrono>
#include <cstdint>
#include <ostream>

namespace selfattn {

class Progress {
 public:
  /// `bar`: draw a bar (the output is a terminal). `every`: steps between plain lines.
  Progress(std::ostream& out, bool bar, int64_t total_steps, int64_t every);

  /// After step `step` (1-based) with that step's loss.
  void update(int64_t step, double loss);
  /// Ends the bar's line; call once after the last update.
  void finish();

  double elapsed_seconds() const;
  double steps_per_second(int64_t steps) const;

 private:
  void draw_bar(int64_t step, double loss);

  std::ostream& out_;
  bool bar_;
  int64_t total_, every_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  double window_sum_ = 0;  // losses since the last plain line
  int64_t window_n_ = 0;
  bool drawn_ = false;
};

/// Whether standard output is a terminal.
bool stdout_is_terminal();

}  // namespace selfattn
