#include "llm_utils/io/npy.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "io/atomic_file.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::io {
namespace {

// Both formats store little-endian floats, and the data is copied with memcpy.
static_assert(std::endian::native == std::endian::little,
              "npy I/O assumes a little-endian host; a big-endian port needs byte swaps here");

constexpr std::string_view kMagic("\x93NUMPY", 6);
constexpr size_t kVersionOffset = kMagic.size();  // major, minor
constexpr size_t kHeaderLenOffset = kVersionOffset + 2;
constexpr size_t kAlignment = 64;  // numpy aligns the data so it can be memory-mapped
constexpr std::string_view kFloat32Descr = "<f4";

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError("npy '" + source + "': " + what);
}

// Header text comes from the file: show it escaped and shortened in messages.
std::string excerpt(std::string_view text) {
  constexpr size_t kMaxShown = 120;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out;
}

uint64_t read_le(std::string_view bytes, size_t offset, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    v |= uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
  }
  return v;
}

void append_le(std::string& out, uint64_t v, size_t width) {
  for (size_t i = 0; i < width; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

struct Header {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// Parses the Python dict literal numpy writes, e.g.
// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", by hand: keys in any order,
// optional trailing comma, any whitespace. Only the literal forms numpy can produce are accepted.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  Header parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortran_order;
    std::optional<Shape> shape;
    expect('{');
    while (!consume('}')) {
      const std::string key = parse_string();
      expect(':');
      if (key == "descr" && !descr) {
        descr = parse_string();
      } else if (key == "fortran_order" && !fortran_order) {
        fortran_order = parse_bool();
      } else if (key == "shape" && !shape) {
        shape = parse_shape();
      } else if (key == "descr" || key == "fortran_order" || key == "shape") {
        error("key '" + key + "' appears twice");
      } else {
        error("unexpected key '" + excerpt(key) + "'");
      }
      if (!consume(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the closing '}'");
    if (!descr) error("no 'descr' key");
    if (!fortran_order) error("no 'fortran_order' key");
    if (!shape) error("no 'shape' key");
    return {*descr, *fortran_order, *shape};
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    // The padding says nothing; leave it out of the message.
    std::string_view shown = text_;
    while (!shown.empty() && is_space(shown.back())) shown.remove_suffix(1);
    fail(source_, "malformed header \"" + excerpt(shown) + "\": " + what);
  }

  static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  // Skips whitespace, then consumes `c` if it comes next.
  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!consume(c)) error(std::string("expected '") + c + "' at offset " + std::to_string(pos_));
  }

  // A quoted Python string without escapes (numpy never writes any in these keys and values).
  std::string parse_string() {
    skip_space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      error("expected a quoted string at offset " + std::to_string(pos_));
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) error("unterminated string");
    std::string_view value = text_.substr(pos_, end - pos_);
    if (value.find('\\') != std::string_view::npos) error("escapes in strings are not supported");
    pos_ = end + 1;
    return std::string(value);
  }

  bool parse_bool() {
    skip_space();
    for (const auto& [word, value] :
         {std::pair{std::string_view("True"), true}, std::pair{std::string_view("False"), false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    error("'fortran_order' must be True or False");
  }

  // A tuple of ints: "()", "(5,)" or "(2, 3)". "(5)" is an int in Python, not a tuple.
  Shape parse_shape() {
    expect('(');
    Shape shape;
    bool trailing_comma = false;
    while (!consume(')')) {
      shape.push_back(parse_dim());
      trailing_comma = consume(',');
      if (!trailing_comma) {
        expect(')');
        break;
      }
    }
    if (shape.size() == 1 && !trailing_comma) error("'shape' must be a tuple, e.g. (5,)");
    return shape;
  }

  // Negative values are kept: shape_numel rejects them with the whole shape in the message.
  int64_t parse_dim() {
    skip_space();
    const bool negative = pos_ < text_.size() && text_[pos_] == '-';
    if (negative) ++pos_;
    if (pos_ >= text_.size() || !is_digit(text_[pos_])) {
      error("expected an integer in 'shape' at offset " + std::to_string(pos_));
    }
    int64_t value = 0;
    while (pos_ < text_.size() && is_digit(text_[pos_])) {
      const int digit = text_[pos_++] - '0';
      if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
        error("a dimension in 'shape' does not fit in int64");
      }
      value = value * 10 + digit;
    }
    // Files written by numpy under Python 2 may spell dimensions as longs: "(3L, 4L)".
    if (pos_ < text_.size() && (text_[pos_] == 'L' || text_[pos_] == 'l')) ++pos_;
    return negative ? -value : value;
  }

  std::string_view text_;
  size_t pos_ = 0;
  const std::string& source_;
};

// Splits off the header text and returns it with the offset where the data starts.
std::string_view header_text(std::string_view bytes, const std::string& source,
                             size_t* data_start) {
  if (bytes.empty()) fail(source, "file is empty");
  if (bytes.substr(0, kMagic.size()) != kMagic) {
    fail(source, "not a .npy file (the first bytes are not \\x93NUMPY)");
  }
  if (bytes.size() < kHeaderLenOffset) fail(source, "file ends inside the format version");
  const int major = static_cast<unsigned char>(bytes[kVersionOffset]);
  const int minor = static_cast<unsigned char>(bytes[kVersionOffset + 1]);
  if (minor != 0 || major < 1 || major > 3) {
    fail(source, "unsupported format version " + std::to_string(major) + "." +
                     std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  }
  // Version 1.0 stores the header length in 2 bytes; 2.0 and 3.0 (UTF-8 header) in 4.
  const size_t len_width = major == 1 ? 2 : 4;
  const size_t header_start = kHeaderLenOffset + len_width;
  if (bytes.size() < header_start) fail(source, "file ends inside the header length");
  const uint64_t header_len = read_le(bytes, kHeaderLenOffset, len_width);
  if (header_len > bytes.size() - header_start) {
    fail(source, "header length " + std::to_string(header_len) +
                     " goes beyond the end of the file (" + std::to_string(bytes.size()) +
                     " bytes)");
  }
  *data_start = header_start + static_cast<size_t>(header_len);
  return bytes.substr(header_start, static_cast<size_t>(header_len));
}

void check_header(const Header& header, const std::string& source) {
  if (header.descr != kFloat32Descr) {
    fail(source, "dtype '" + excerpt(header.descr) + "' is not supported; only float32 ('" +
                     std::string(kFloat32Descr) + "') is");
  }
  if (header.fortran_order) {
    fail(source, "fortran_order is True; only C-order (row-major) arrays are supported");
  }
}

// Byte size of the data with overflow checks, computed before anything is allocated.
uint64_t checked_data_bytes(const Shape& shape, const std::string& source) {
  int64_t numel = 0;
  try {
    numel = shape_numel(shape);
  } catch (const ArgumentError& e) {
    fail(source, e.what());
  }
  if (numel > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(float))) {
    fail(source, "shape " + shape_to_string(shape) + " has " + std::to_string(numel) +
                     " elements, more bytes than int64 can count");
  }
  return static_cast<uint64_t>(numel) * sizeof(float);
}

std::string shape_repr(const Shape& shape) {
  if (shape.size() == 1) return "(" + std::to_string(shape[0]) + ",)";
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + ")";
}

// For read_file: the file's size once `prefix` holds the whole header, nullopt before. Throws
// what parse_npy would for a preamble or header that is already wrong.
std::optional<uint64_t> npy_file_size(std::string_view prefix, const std::string& source) {
  const size_t seen = std::min(prefix.size(), kMagic.size());
  if (prefix.substr(0, seen) == kMagic.substr(0, seen)) {
    if (prefix.size() < kHeaderLenOffset) return std::nullopt;
    const int major = static_cast<unsigned char>(prefix[kVersionOffset]);
    const int minor = static_cast<unsigned char>(prefix[kVersionOffset + 1]);
    if (minor == 0 && major >= 1 && major <= 3) {
      const size_t header_start = kHeaderLenOffset + (major == 1 ? 2 : 4);
      if (prefix.size() < header_start) return std::nullopt;
      const uint64_t header_len =
          read_le(prefix, kHeaderLenOffset, header_start - kHeaderLenOffset);
      if (header_len > prefix.size() - header_start) return std::nullopt;
    }
  }
  size_t data_start = 0;
  const Header header = HeaderParser(header_text(prefix, source, &data_start), source).parse();
  check_header(header, source);
  return data_start + checked_data_bytes(header.shape, source);
}

}  // namespace

Tensor parse_npy(const std::string& bytes, const std::string& source) {
  size_t data_start = 0;
  const std::string_view text = header_text(bytes, source, &data_start);
  const Header header = HeaderParser(text, source).parse();
  check_header(header, source);
  const uint64_t need = checked_data_bytes(header.shape, source);
  const uint64_t have = bytes.size() - data_start;
  if (have < need) {
    fail(source, "truncated: header promises " + std::to_string(need) +
                     " bytes of data, file has " + std::to_string(have));
  }
  if (have > need) {
    fail(source, std::to_string(have - need) + " bytes of trailing data: header promises " +
                     std::to_string(need) + " bytes of data, file has " + std::to_string(have));
  }

  Tensor tensor(header.shape);
  if (need > 0) std::memcpy(tensor.data(), bytes.data() + data_start, static_cast<size_t>(need));
  return tensor;
}

Tensor load_npy(const std::string& path) {
  return parse_npy(
      detail::read_file(path,
                        [&path](std::string_view prefix) { return npy_file_size(prefix, path); }),
      path);
}

// The view is taken by value because that is the public signature.
std::string serialize_npy(ConstTensorView tensor) {  // NOLINT(performance-unnecessary-value-param)
  const int64_t numel = tensor.numel();              // ArgumentError on a bad shape
  if (static_cast<uint64_t>(numel) > std::string().max_size() / sizeof(float)) {
    throw ArgumentError("save_npy: shape " + shape_to_string(tensor.shape()) +
                        " is too large to serialize");
  }
  if (numel > 0 && tensor.data() == nullptr) {
    throw ArgumentError("save_npy: view of shape " + shape_to_string(tensor.shape()) +
                        " has no data");
  }
  Tensor contiguous_copy;  // a strided view is written in row-major order
  tensor = contiguous(tensor, contiguous_copy);

  // The dict exactly as numpy spells it, trailing ", " included.
  const std::string dict = "{'descr': '" + std::string(kFloat32Descr) +
                           "', 'fortran_order': False, 'shape': " + shape_repr(tensor.shape()) +
                           ", }";
  // Pad with spaces and end with '\n' so the data starts at a multiple of 64 bytes. Like numpy,
  // fall back to version 2.0 only when the header outgrows version 1.0's 2-byte length.
  int major = 1;
  size_t len_width = 2;
  auto padded_header_len = [&] {
    const size_t unpadded = kHeaderLenOffset + len_width + dict.size() + 1;
    return (unpadded + kAlignment - 1) / kAlignment * kAlignment - kHeaderLenOffset - len_width;
  };
  if (padded_header_len() > std::numeric_limits<uint16_t>::max()) {
    major = 2;
    len_width = 4;
  }
  const size_t header_len = padded_header_len();
  if (header_len > std::numeric_limits<uint32_t>::max()) {
    throw ArgumentError("save_npy: rank " + std::to_string(tensor.shape().size()) +
                        " is too large for an npy header");
  }
  const size_t data_bytes = static_cast<size_t>(numel) * sizeof(float);

  std::string out;
  out.reserve(kHeaderLenOffset + len_width + header_len + data_bytes);
  out += kMagic;
  out += static_cast<char>(major);
  out += '\0';
  append_le(out, header_len, len_width);
  out += dict;
  out.append(header_len - dict.size() - 1, ' ');
  out += '\n';
  if (data_bytes > 0) out.append(reinterpret_cast<const char*>(tensor.data()), data_bytes);
  return out;
}

void save_npy(const std::string& path, ConstTensorView tensor) {
  detail::write_file_atomic(path, serialize_npy(std::move(tensor)));
}

}  // namespace llm_utils::io
