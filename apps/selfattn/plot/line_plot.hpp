#pragma once
// A line plot of one series against its index, e.g. a loss curve, optionally on a log y axis.

#include <string>
#include <vector>

#include "plot/canvas.hpp"
#include "plot/font.hpp"

namespace selfattn::plot {

struct LinePlotOptions {
  std::string title;
  std::string x_title = "step";
  std::string y_title = "loss";
  /// Name of the raw series in the legend.
  std::string series_label = "loss of each step";
  bool log_y = true;
  /// Also draw the mean of the last `smooth_window` points (0: pick from the length; 1: none).
  int64_t smooth_window = 0;
  int64_t width = 820, height = 500;
};

/// Plots y[i] at x = i + 1. On a log axis, values <= 0 or non-finite are left out (a gap).
/// Throws std::invalid_argument when `y` has no value that can be plotted.
Canvas render_line_plot(const Font& font, const std::vector<double>& y,
                        const LinePlotOptions& options);

}  // namespace selfattn::plot
