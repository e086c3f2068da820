#include "llm_utils/io/safetensors.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "io/atomic_file.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::io {
namespace {

// The format stores little-endian floats, and the data is copied with memcpy.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host; a big-endian port needs byte swaps");

using Json = nlohmann::json;

constexpr size_t kLengthBytes = 8;
// The reference implementation refuses larger headers; so do we, before parsing anything.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Header, tensor entry, shape/offsets array: nothing valid nests deeper.
constexpr int kMaxNesting = 2;
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kFloat32 = "F32";
// Dtypes of the safetensors spec, to tell "not supported" apart from "not a dtype".
constexpr std::array<std::string_view, 20> kKnownDtypes = {
    "BOOL", "U8",  "I8",   "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "I16",
    "U16",  "F16", "BF16", "I32",     "U32",     "F32",     "F64", "I64",     "U64",     "C64"};

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw FormatError("safetensors '" + source + "': " + what);
}

// Names and JSON errors come from the file: escape everything but printable ASCII, so a message
// is always valid UTF-8 and one line, and keep it short.
std::string printable(std::string_view text) {
  constexpr size_t kMaxShown = 200;
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

std::string tensor_label(const std::string& name) {
  return "tensor '" + printable(name) + "'";
}

std::string offsets_to_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// A tensor entry whose every field has been checked against the file.
struct Entry {
  std::string name;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// Rejects duplicate keys (nlohmann would silently keep the last one, other readers may keep the
// first) and nesting no valid header has, before the DOM for it is built.
Json parse_header_json(std::string_view text, const std::string& source) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{') {
    fail(source, "header is not a JSON object");
  }
  // nlohmann stops at a NUL byte as if the input ended there, so "{}\0junk" would pass.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    fail(source, "header is not valid JSON: NUL byte at offset " + std::to_string(nul));
  }
  std::vector<std::set<std::string>> open_objects;
  const Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth > kMaxNesting) fail(source, "header JSON is nested deeper than a header can be");
        if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case Json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_objects.back().insert(key).second) {
          fail(source, "header JSON has the key '" + printable(key) + "' twice");
        }
        break;
      }
      case Json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check);
  } catch (const Json::exception& e) {
    // Not only parse_error: a number too large for a double ("1e99999") is out_of_range, which
    // must not escape as anything but a FormatError.
    fail(source, "header is not valid JSON: " + printable(e.what()));
  }
}

// A JSON integer in [0, int64 max]; nlohmann stores non-negative integers as unsigned.
bool is_size(const Json& v) {
  return v.is_number_unsigned() &&
         v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

void check_fields(const std::string& name, const Json& info, const std::string& source) {
  if (!info.is_object()) {
    fail(source, tensor_label(name) + " is a JSON " + info.type_name() +
                     ", expected an object with dtype, shape and data_offsets");
  }
  for (const auto& [field, value] : info.items()) {
    if (field != "dtype" && field != "shape" && field != "data_offsets") {
      fail(source, tensor_label(name) + " has the unexpected field '" + printable(field) + "'");
    }
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!info.contains(field)) {
      fail(source, tensor_label(name) + " has no '" + field + "' field");
    }
  }
}

void check_dtype(const std::string& name, const Json& dtype, const std::string& source) {
  if (!dtype.is_string()) {
    fail(source,
         tensor_label(name) + ": 'dtype' is a JSON " + dtype.type_name() + ", expected a string");
  }
  const auto& value = dtype.get_ref<const std::string&>();
  if (value == kFloat32) return;
  const bool known =
      std::find(kKnownDtypes.begin(), kKnownDtypes.end(), value) != kKnownDtypes.end();
  fail(source, tensor_label(name) + (known ? " has dtype " : " has unknown dtype ") +
                   printable(value) + "; only F32 is supported");
}

Shape parse_shape(const std::string& name, const Json& shape, const std::string& source) {
  if (!shape.is_array()) {
    fail(source, tensor_label(name) + ": 'shape' is a JSON " + shape.type_name() +
                     ", expected an array of non-negative integers");
  }
  Shape out;
  out.reserve(shape.size());
  for (const Json& dim : shape) {
    if (!is_size(dim)) {
      fail(source, tensor_label(name) + ": 'shape' " + printable(shape.dump()) +
                       " must hold non-negative integers");
    }
    out.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }
  return out;
}

// Byte size of the tensor with overflow checks, before anything is allocated.
uint64_t checked_data_bytes(const std::string& name, const Shape& shape,
                            const std::string& source) {
  int64_t numel = 0;
  try {
    numel = shape_numel(shape);
  } catch (const ArgumentError& e) {
    fail(source, tensor_label(name) + ": " + e.what());
  }
  if (numel > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(float))) {
    fail(source, tensor_label(name) + ": shape " + shape_to_string(shape) + " has " +
                     std::to_string(numel) + " elements, more bytes than int64 can count");
  }
  return static_cast<uint64_t>(numel) * sizeof(float);
}

Entry parse_entry(const std::string& name, const Json& info, uint64_t data_size,
                  const std::string& source) {
  check_fields(name, info, source);
  check_dtype(name, info.at("dtype"), source);
  Entry entry{name, parse_shape(name, info.at("shape"), source), 0, 0};
  const uint64_t bytes = checked_data_bytes(name, entry.shape, source);

  const Json& offsets = info.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !is_size(offsets[0]) || !is_size(offsets[1])) {
    fail(source, tensor_label(name) + ": 'data_offsets' " + printable(offsets.dump()) +
                     " must be two non-negative integers [begin, end]");
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  const std::string where =
      tensor_label(name) + " has data_offsets " + offsets_to_string(entry.begin, entry.end);
  if (entry.begin > entry.end) fail(source, where + ": begin is after end");
  if (entry.end > data_size) {
    fail(source,
         where + ", beyond the end of the data section (" + std::to_string(data_size) + " bytes)");
  }
  if (entry.end - entry.begin != bytes) {
    fail(source, where + " (" + std::to_string(entry.end - entry.begin) + " bytes), but shape " +
                     shape_to_string(entry.shape) + " needs " + std::to_string(bytes) + " bytes");
  }
  return entry;
}

Metadata parse_metadata(const Json& value, const std::string& source) {
  if (!value.is_object()) {
    fail(source, "__metadata__ is a JSON " + std::string(value.type_name()) +
                     ", expected an object of strings");
  }
  Metadata out;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      fail(source, "__metadata__ entry '" + printable(key) + "' is a JSON " + item.type_name() +
                       ", expected a string");
    }
    out.emplace(key, item.get<std::string>());
  }
  return out;
}

// The spec's rule: in offset order, each tensor starts where the previous one ended and the last
// one ends at the end of the file. So no byte is shared by two tensors or belongs to none.
void check_layout(const std::vector<Entry>& sorted, uint64_t data_size, const std::string& source) {
  uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : sorted) {
    const std::string where = tensor_label(entry.name) + " (data_offsets " +
                              offsets_to_string(entry.begin, entry.end) + ")";
    if (entry.begin < expected) {
      fail(source, where + " overlaps " + tensor_label(previous->name) + " (data_offsets " +
                       offsets_to_string(previous->begin, previous->end) + ")");
    }
    if (entry.begin > expected) {
      fail(source, "gap of " + std::to_string(entry.begin - expected) + " bytes before " + where +
                       ": no tensor uses bytes " + offsets_to_string(expected, entry.begin));
    }
    expected = entry.end;
    previous = &entry;
  }
  if (expected != data_size) {
    fail(source, "gap of " + std::to_string(data_size - expected) +
                     " bytes at the end of the data section: no tensor uses bytes " +
                     offsets_to_string(expected, data_size));
  }
}

void append_le64(std::string& out, uint64_t v) {
  for (size_t i = 0; i < kLengthBytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t read_le64(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) {
    v |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  return v;
}

void check_header_size(uint64_t header_size, size_t file_size, const std::string& source) {
  if (header_size > kMaxHeaderBytes) {
    fail(source, "header length " + std::to_string(header_size) + " exceeds the limit of " +
                     std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_size > file_size - kLengthBytes) {
    fail(source, "header length " + std::to_string(header_size) +
                     " goes beyond the end of the file (" + std::to_string(file_size) + " bytes)");
  }
}

// For read_file: the file's size once `prefix` holds the whole header, nullopt before. Throws
// what parse_safetensors would for a header that is already wrong.
std::optional<uint64_t> safetensors_file_size(std::string_view prefix, const std::string& source) {
  if (prefix.size() < kLengthBytes) return std::nullopt;
  const uint64_t header_size = read_le64(prefix);
  if (header_size > kMaxHeaderBytes) check_header_size(header_size, prefix.size(), source);
  if (header_size > prefix.size() - kLengthBytes) return std::nullopt;
  const Json header = parse_header_json(prefix.substr(kLengthBytes, header_size), source);
  // The data's size is not known yet: the largest end offset is what the header asks for.
  uint64_t data_size = 0;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) continue;
    const Entry entry = parse_entry(name, info, std::numeric_limits<uint64_t>::max(), source);
    data_size = std::max(data_size, entry.end);
  }
  return kLengthBytes + header_size + data_size;
}

}  // namespace

StateDict parse_safetensors(const std::string& bytes, const std::string& source,
                            Metadata* metadata) {
  if (bytes.empty()) fail(source, "file is empty");
  if (bytes.size() < kLengthBytes) {
    fail(source, "file is " + std::to_string(bytes.size()) +
                     " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_size = read_le64(bytes);
  check_header_size(header_size, bytes.size(), source);
  const size_t data_start = kLengthBytes + static_cast<size_t>(header_size);
  const uint64_t data_size = bytes.size() - data_start;
  const Json header =
      parse_header_json(std::string_view(bytes).substr(kLengthBytes, header_size), source);

  // Validate everything before allocating any tensor, so a bad file costs no memory.
  Metadata found_metadata;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      found_metadata = parse_metadata(info, source);
    } else {
      entries.push_back(parse_entry(name, info, data_size, source));
    }
  }
  // Ties (only zero-size tensors can tie) keep the header's key order, so loading is
  // deterministic.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  check_layout(entries, data_size, source);

  StateDict out;
  for (Entry& entry : entries) {
    Tensor tensor(std::move(entry.shape));
    if (entry.end > entry.begin) {
      std::memcpy(tensor.data(), bytes.data() + data_start + entry.begin,
                  static_cast<size_t>(entry.end - entry.begin));
    }
    out.insert(std::move(entry.name), std::move(tensor));
  }
  if (metadata != nullptr) *metadata = std::move(found_metadata);
  return out;
}

StateDict load_safetensors(const std::string& path, Metadata* metadata) {
  const std::string bytes = detail::read_file(
      path, [&path](std::string_view prefix) { return safetensors_file_size(prefix, path); });
  return parse_safetensors(bytes, path, metadata);
}

std::string serialize_safetensors(const StateDict& tensors, const Metadata& metadata) {
  // ordered_json keeps the header in file order: metadata first, then tensors by offset, as the
  // reference implementation writes it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey) {
      throw ArgumentError("save_safetensors: a tensor cannot be named '__metadata__'");
    }
    const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * sizeof(float);
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = kFloat32;
    info["shape"] = tensor.shape();
    info["data_offsets"] = nlohmann::ordered_json::array({offset, offset + bytes});
    header[name] = std::move(info);
    offset += bytes;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::type_error& e) {
    throw ArgumentError("save_safetensors: tensor names and metadata must be valid UTF-8 (" +
                        printable(e.what()) + ")");
  }
  // Pad with spaces to a multiple of 8 bytes, as the reference implementation does, so the data
  // section starts aligned.
  text.append((kLengthBytes - text.size() % kLengthBytes) % kLengthBytes, ' ');

  std::string out;
  out.reserve(kLengthBytes + text.size() + offset);
  append_le64(out, text.size());
  out += text;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.empty()) {
      out.append(reinterpret_cast<const char*>(tensor.data()),
                 static_cast<size_t>(tensor.numel()) * sizeof(float));
    }
  }
  return out;
}

void save_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata) {
  detail::write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

}  // namespace llm_utils::io
