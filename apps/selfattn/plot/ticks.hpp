#pragma once
// Where to put labelled ticks on an axis and how to print their values.

#include <string>
#include <vector>

namespace selfattn::plot {

struct Ticks {
  std::vector<double> values;  // inside [lo, hi], increasing
  std::vector<std::string> labels;
};

/// "Nice" linear ticks (steps of 1, 2 or 5 times a power of ten), about `target` of them, all
/// inside [lo, hi]; labels carry just enough decimals to tell neighbours apart.
Ticks linear_ticks(double lo, double hi, int target = 5);

/// Ticks for a log axis over [lo, hi] (both > 0): powers of ten, and 2x and 5x multiples too
/// when the range spans less than three decades, so there are always at least two labels.
Ticks log_ticks(double lo, double hi);

/// A compact number: "0.25", "3", "1e-05" becomes "1e-5", "2.5e+03" becomes "2.5e3".
std::string format_number(double v, int significant = 3);

}  // namespace selfattn::plot
