#include "validators.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace selfattn {
namespace {

std::string in_quotes(const std::string& s) {
  return "'" + s + "'";
}

bool all_digits(const std::string& s, size_t from) {
  if (from >= s.size()) return false;
  for (size_t i = from; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

// The text as a finite double, or an error message.
std::string parse_real(const std::string& text, double& value) {
  if (text.empty()) return "must be a number, got an empty value";
  errno = 0;
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return "must be a number, got " + in_quotes(text);
  if (!std::isfinite(value) || errno == ERANGE) {
    return "must be a finite number, got " + in_quotes(text);
  }
  return "";
}

}  // namespace

CLI::Validator positive_integer(int64_t max) {
  return CLI::Validator(
      [max](std::string& text) -> std::string {
        const size_t from = !text.empty() && text[0] == '+' ? 1 : 0;
        if (!all_digits(text, from)) return "must be a positive integer, got " + in_quotes(text);
        int64_t value = 0;
        const auto [end, ec] =
            std::from_chars(text.data() + from, text.data() + text.size(), value);
        if (ec == std::errc::result_out_of_range || value > max) {
          return "must be at most " + std::to_string(max) + ", got " + in_quotes(text);
        }
        if (value < 1) return "must be a positive integer, got " + in_quotes(text);
        return "";
      },
      "POSITIVE INTEGER");
}

CLI::Validator positive_real() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (std::string error = parse_real(text, value); !error.empty()) return error;
        return value > 0 ? "" : "must be positive, got " + in_quotes(text);
      },
      "POSITIVE NUMBER");
}

CLI::Validator non_negative_real() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (std::string error = parse_real(text, value); !error.empty()) return error;
        return value >= 0 ? "" : "must not be negative, got " + in_quotes(text);
      },
      "NON-NEGATIVE NUMBER");
}

CLI::Validator seed_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const bool negative = !text.empty() && text[0] == '-';
        const size_t from = !text.empty() && (text[0] == '-' || text[0] == '+') ? 1 : 0;
        const std::string range = "an integer from -9223372036854775808 to 18446744073709551615";
        if (!all_digits(text, from)) return "must be " + range + ", got " + in_quotes(text);
        uint64_t magnitude = 0;
        const auto [end, ec] =
            std::from_chars(text.data() + from, text.data() + text.size(), magnitude);
        const bool too_large =
            ec == std::errc::result_out_of_range || (negative && magnitude > (uint64_t{1} << 63));
        if (too_large) return "must be " + range + ", got " + in_quotes(text);
        return "";
      },
      "SEED");
}

CLI::Option* add_dtype_option(CLI::App* cmd, std::string& dtype) {
  return cmd
      ->add_option("--dtype", dtype,
                   "Storage of the projections and q, k, v: fp32, or bf16 (bfloat16 with float32 "
                   "accumulation and softmax)")
      ->check(CLI::IsMember({"fp32", "float32", "bf16", "bfloat16"}))
      ->capture_default_str();
}

}  // namespace selfattn
