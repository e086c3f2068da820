#include "progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace selfattn {

bool stdout_is_terminal() {
  return ::isatty(STDOUT_FILENO) == 1;
}

Progress::Progress(std::ostream& out, bool bar, int64_t total_steps, int64_t every)
    : out_(out),
      bar_(bar),
      total_(total_steps),
      every_(every < 1 ? 1 : every),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::steps_per_second(int64_t steps) const {
  const double s = elapsed_seconds();
  return s > 0 ? static_cast<double>(steps) / s : 0.0;
}

void Progress::update(int64_t step, double loss) {
  window_sum_ += loss;
  ++window_n_;
  if (bar_) {
    // Redraw at most ~20 times a second: a terminal is slower than a small training step.
    const auto now = std::chrono::steady_clock::now();
    if (step == total_ || !drawn_ || now - last_draw_ >= std::chrono::milliseconds(50)) {
      draw_bar(step, loss);
      last_draw_ = now;
    }
    return;
  }
  if (step % every_ != 0 && step != total_) return;
  char line[160];
  std::snprintf(line, sizeof line,
                "step %*lld/%lld  loss %.4e  (mean of last %lld: %.4e)  %.0f steps/s\n",
                static_cast<int>(std::to_string(total_).size()), static_cast<long long>(step),
                static_cast<long long>(total_), loss, static_cast<long long>(window_n_),
                window_sum_ / static_cast<double>(window_n_), steps_per_second(step));
  out_ << line << std::flush;
  window_sum_ = 0;
  window_n_ = 0;
}

void Progress::draw_bar(int64_t step, double loss) {
  constexpr int64_t kWidth = 30;
  const int64_t filled = total_ > 0 ? step * kWidth / total_ : kWidth;
  std::string bar(static_cast<size_t>(kWidth), ' ');
  for (int64_t i = 0; i < filled; ++i) bar[static_cast<size_t>(i)] = '=';
  if (filled < kWidth) bar[static_cast<size_t>(filled)] = '>';
  const double rate = steps_per_second(step);
  const double eta = rate > 0 ? static_cast<double>(total_ - step) / rate : 0.0;
  char line[200];
  // \r returns to the line start; trailing spaces wipe a longer previous line.
  std::snprintf(line, sizeof line, "\r[%s] %lld/%lld  loss %.4e  %.0f steps/s  eta %.1fs   ",
                bar.c_str(), static_cast<long long>(step), static_cast<long long>(total_), loss,
                rate, eta);
  out_ << line << std::flush;
  drawn_ = true;
}

void Progress::finish() {
  if (bar_ && drawn_) out_ << "\n";
}

}  // namespace selfattn
