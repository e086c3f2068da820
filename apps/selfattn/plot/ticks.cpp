#include "plot/ticks.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace selfattn::plot {

Ticks linear_ticks(double lo, double hi, int target) {
  Ticks t;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) {
    t.values = {lo};
    t.labels = {format_number(lo)};
    return t;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  }
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  // Tolerances keep ticks that sit on the ends despite rounding (0.1 + 0.2 != 0.3).
  const double eps = step * 1e-6;
  for (double k = std::ceil((lo - eps) / step); k * step <= hi + eps; k += 1) {
    double v = k * step;
    if (std::fabs(v) < eps) v = 0.0;  // no "-0.00"
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    t.values.push_back(v);
    t.labels.emplace_back(buf);
  }
  return t;
}

namespace {

// 2e-5, 1e6: the mantissa and exponent of a round number, without padding.
std::string exp_label(double v) {
  const int e = static_cast<int>(std::floor(std::log10(v) + 1e-9));
  const long m = std::lround(v / std::pow(10.0, e));
  return std::to_string(m) + "e" + std::to_string(e);
}

}  // namespace

Ticks log_ticks(double lo, double hi) {
  Ticks t;
  if (!(lo > 0) || !(hi >= lo)) return t;
  const int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  const int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  const int decades = e1 - e0;
  std::vector<double> mults = {1.0};
  if (decades < 3) mults = {1.0, 2.0, 5.0};
  if (decades < 1) mults = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0};
  for (int e = e0; e <= e1; ++e) {
    for (double m : mults) {
      const double v = m * std::pow(10.0, e);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) {
        t.values.push_back(v);
        // Plain decimals where they are short (0.001 .. 1000), 1e-5 style beyond.
        t.labels.push_back(v >= 1e-3 && v < 1e4 ? format_number(v, 1) : exp_label(v));
      }
    }
  }
  // Inside a narrow range (0.012 .. 0.018) no round multiple may fall: use linear ones.
  if (t.values.size() < 2) {
    Ticks lin = linear_ticks(lo, hi, 4);
    t = {};
    for (size_t i = 0; i < lin.values.size(); ++i) {
      if (lin.values[i] > 0) {
        t.values.push_back(lin.values[i]);
        t.labels.push_back(lin.labels[i]);
      }
    }
  }
  return t;
}

std::string format_number(double v, int significant) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", significant, v);
  std::string s = buf;
  // %g writes exponents as e-05 / e+03; drop the padding and the plus sign.
  const size_t e = s.find('e');
  if (e == std::string::npos) return s;
  std::string mant = s.substr(0, e), exp = s.substr(e + 1);
  const bool neg = !exp.empty() && exp[0] == '-';
  if (!exp.empty() && (exp[0] == '-' || exp[0] == '+')) exp.erase(0, 1);
  exp.erase(0, std::min(exp.find_first_not_of('0'), exp.size() - 1));
  return mant + "e" + (neg ? "-" : "") + exp;
}

}  // namespace selfattn::plot
