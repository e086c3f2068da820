#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "llm_utils/error.hpp"
#include "llm_utils/io/files.hpp"
#include "llm_utils/io/npy.hpp"

namespace llm_utils::io {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed with everything in it afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("llm_utils_npy_" + std::string(info->name()) + "_" +
                                         std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `f` and checks it throws exactly `Expected` (not a subclass: FormatError is an IoError)
// with `phrase` in the message.
template <typename Expected>
void expect_error(const std::function<void()>& f, std::string_view phrase) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(typeid(e), typeid(Expected)) << "message: " << e.what();
    EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos)
        << "message '" << e.what() << "' lacks '" << phrase << "'";
    return;
  }
  ADD_FAILURE() << "no exception; expected one containing '" << phrase << "'";
}

std::string float_bytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// An .npy file with the given header dict, laid out as numpy does (padded, '\n'-terminated).
std::string npy_bytes(std::string_view dict, std::string_view data, int major = 1) {
  const size_t len_width = major == 1 ? 2 : 4;
  std::string header(dict);
  const size_t unpadded = 8 + len_width + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < len_width; ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data);
}

std::string dict_for(std::string_view shape, std::string_view descr = "<f4",
                     std::string_view fortran = "False") {
  return "{'descr': '" + std::string(descr) + "', 'fortran_order': " + std::string(fortran) +
         ", 'shape': " + std::string(shape) + ", }";
}

uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

void expect_bit_equal(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i) {
    EXPECT_EQ(bits(got[i]), bits(want[i])) << "element " << i;
  }
}

Tensor round_trip(const Tensor& t) {
  return parse_npy(serialize_npy(t), "memory");
}

// Values whose bits must survive unchanged, NaN payload included.
std::vector<float> special_values() {
  return {0.0f,
          -0.0f,
          1.0f,
          -2.5f,
          std::numeric_limits<float>::denorm_min(),
          -std::numeric_limits<float>::denorm_min(),
          std::numeric_limits<float>::min(),
          std::numeric_limits<float>::max(),
          std::numeric_limits<float>::lowest(),
          std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity(),
          std::bit_cast<float>(uint32_t{0x7fc00001}),
          std::bit_cast<float>(uint32_t{0xff800123})};
}

// --- round trips -----------------------------------------------------------------------------

TEST(Npy, RoundTripRank0) {
  const Tensor t(Shape{}, {3.25f});
  const Tensor back = round_trip(t);
  EXPECT_EQ(back.dim(), 0);
  expect_bit_equal(back, t);
}

TEST(Npy, RoundTripRank1WithSpecialValuesBitExact) {
  const std::vector<float> values = special_values();
  const Tensor t({static_cast<int64_t>(values.size())}, values);
  expect_bit_equal(round_trip(t), t);
}

TEST(Npy, RoundTripRank2) {
  const Tensor t({2, 3}, {1, -2, 3, -4, 5, -6});
  expect_bit_equal(round_trip(t), t);
}

TEST(Npy, RoundTripRank3) {
  Tensor t({2, 3, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i) * 0.1f - 1.0f;
  expect_bit_equal(round_trip(t), t);
}

TEST(Npy, RoundTripZeroSizeDims) {
  for (const Shape& shape : {Shape{0}, Shape{2, 0, 3}, Shape{0, 5}}) {
    const Tensor back = round_trip(Tensor(shape));
    EXPECT_EQ(back.shape(), shape);
    EXPECT_EQ(back.numel(), 0);
  }
}

TEST(Npy, RoundTripThroughAFile) {
  ScratchDir dir;
  const Tensor t({3, 2}, {0.5f, -0.5f, 1e-30f, 1e30f, 7, 8});
  save_npy(dir.file("t.npy"), t);
  expect_bit_equal(load_npy(dir.file("t.npy")), t);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"t.npy"});
}

TEST(Npy, WritesVersion1HeaderLikeNumpy) {
  const std::string bytes = serialize_npy(Tensor({2, 3}));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) |
                            (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
  const size_t data_start = 10 + header_len;
  EXPECT_EQ(data_start % 64, 0u);
  EXPECT_EQ(bytes.size(), data_start + 6 * sizeof(float));
  EXPECT_EQ(bytes[data_start - 1], '\n');
  const std::string header = bytes.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u)
      << header;
}

TEST(Npy, ShapeSpellingMatchesPythonTuples) {
  EXPECT_NE(serialize_npy(Tensor(Shape{})).find("'shape': (), }"), std::string::npos);
  EXPECT_NE(serialize_npy(Tensor(Shape{5})).find("'shape': (5,), }"), std::string::npos);
}

TEST(Npy, HugeRankFallsBackToVersion2) {
  // 25000 dims of 1 spell a header longer than version 1.0's 65535-byte limit.
  const Tensor t(Shape(25000, 1), {4.5f});
  const std::string bytes = serialize_npy(t);
  EXPECT_EQ(bytes[6], '\x02');
  expect_bit_equal(parse_npy(bytes, "memory"), t);
}

TEST(Npy, SaveRejectsViewWithoutData) {
  expect_error<ArgumentError>([] { serialize_npy(ConstTensorView(nullptr, {2})); }, "no data");
}

// --- files written by numpy ------------------------------------------------------------------

TEST(Npy, ReadsNumpyWritten2x3) {
  const Tensor t = load_npy(std::string(LLM_UTILS_GOLDEN_DIR) + "/npy/numpy_written_2x3.npy");
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.to_vector(), (std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f}));
}

TEST(Npy, ReadsNumpyWrittenScalar) {
  const Tensor t = load_npy(std::string(LLM_UTILS_GOLDEN_DIR) + "/npy/numpy_written_scalar.npy");
  EXPECT_EQ(t.dim(), 0);
  ASSERT_EQ(t.numel(), 1);
  EXPECT_EQ(t[0], 3.25f);
}

// --- header variants numpy or other writers produce ------------------------------------------

TEST(Npy, AcceptsVersions2And3) {
  for (int major : {2, 3}) {
    const Tensor t = parse_npy(npy_bytes(dict_for("(2,)"), float_bytes({1, 2}), major), "v");
    EXPECT_EQ(t.to_vector(), (std::vector<float>{1, 2})) << "version " << major;
  }
}

TEST(Npy, AcceptsHeaderSpellings) {
  const std::string data = float_bytes({1, 2, 3, 4, 5, 6});
  for (const char* dict : {
           "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
           "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",
           "{ 'descr' : '<f4' ,\n 'fortran_order' : False ,\t'shape' : ( 2 , 3 , ) , }",
           "{'descr':'<f4','fortran_order':False,'shape':(2L, 3L)}",
       }) {
    const Tensor t = parse_npy(npy_bytes(dict, data), "spelling");
    EXPECT_EQ(t.shape(), (Shape{2, 3})) << dict;
  }
}

TEST(Npy, AcceptsUnpaddedHeader) {
  const std::string dict = dict_for("(1,)");
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(dict.size());
  bytes += '\0';
  bytes += dict + float_bytes({9});
  EXPECT_EQ(parse_npy(bytes, "unpadded")[0], 9.0f);
}

// --- malformed files -------------------------------------------------------------------------

TEST(NpyErrors, MissingFileIsIoError) {
  ScratchDir dir;
  const std::string path = dir.file("missing.npy");
  expect_error<IoError>([&] { load_npy(path); }, "cannot open '" + path + "'");
  expect_error<IoError>([&] { load_npy(path); }, "No such file or directory");
}

TEST(NpyErrors, DirectoryIsIoError) {
  ScratchDir dir;
  fs::create_directory(dir.file("d.npy"));
  expect_error<IoError>([&] { load_npy(dir.file("d.npy")); }, "is a directory");
}

TEST(NpyErrors, EmptyFile) {
  ScratchDir dir;
  const std::string path = dir.file("empty.npy");
  write_bytes(path, "");
  expect_error<FormatError>([&] { load_npy(path); }, "npy '" + path + "': file is empty");
}

TEST(NpyErrors, WrongMagic) {
  std::string bytes = npy_bytes(dict_for("(1,)"), float_bytes({1}));
  bytes[5] = 'X';
  expect_error<FormatError>([&] { parse_npy(bytes, "m"); }, "npy 'm': not a .npy file");
  expect_error<FormatError>([&] { parse_npy("PK\x03\x04", "zip"); }, "not a .npy file");
}

TEST(NpyErrors, UnsupportedVersion) {
  std::string bytes = npy_bytes(dict_for("(1,)"), float_bytes({1}));
  bytes[6] = '\x04';
  expect_error<FormatError>([&] { parse_npy(bytes, "v"); }, "unsupported format version 4.0");
  bytes[6] = '\x01';
  bytes[7] = '\x01';
  expect_error<FormatError>([&] { parse_npy(bytes, "v"); }, "unsupported format version 1.1");
}

TEST(NpyErrors, FileEndsInsidePreamble) {
  expect_error<FormatError>([] { parse_npy(std::string("\x93NUMPY\x01", 7), "p"); },
                            "ends inside the format version");
  expect_error<FormatError>([] { parse_npy(std::string("\x93NUMPY\x02\x00\x10\x00", 10), "p"); },
                            "ends inside the header length");
}

TEST(NpyErrors, HeaderLengthBeyondFile) {
  std::string bytes = npy_bytes(dict_for("(1,)"), "");
  bytes[8] = '\xff';
  bytes[9] = '\x7f';
  expect_error<FormatError>([&] { parse_npy(bytes, "h"); },
                            "header length 32767 goes beyond the end of the file");
}

TEST(NpyErrors, BadHeaderDict) {
  const std::string data = float_bytes({1, 2});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1, 2]", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"},
      {"{'descr': '<f4', 'shape': (2,)}", "no 'fortran_order' key"},
      {"{'fortran_order': False, 'shape': (2,)}", "no 'descr' key"},
      {dict_for("(2,)").substr(0, 40), "expected"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "unexpected key 'x'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
       "key 'descr' appears twice"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", "expected ':'"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", "expected '}' at offset 17"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'descr", "unterminated string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "expected '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", "after the closing '}'"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "must be True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", "must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "expected '('"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", "expected ')'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (x,)}", "expected an integer"},
      {"{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2,)}", "escapes"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
       "expected a quoted string"},
  };
  for (const auto& [dict, phrase] : cases) {
    SCOPED_TRACE(dict);
    // Named copy: Clang 14 (the sanitizer stages) cannot capture a structured binding.
    const std::string header = dict;
    expect_error<FormatError>([&] { parse_npy(npy_bytes(header, data), "bad"); },
                              "npy 'bad': malformed header");
    expect_error<FormatError>([&] { parse_npy(npy_bytes(header, data), "bad"); }, phrase);
  }
}

TEST(NpyErrors, HeaderWithBinaryBytesGivesPrintableMessage) {
  const std::string dict = "{'descr': '<f4', \x01\xff}";
  try {
    parse_npy(npy_bytes(dict, ""), "bin");
    ADD_FAILURE() << "no exception";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("\\x01\\xff"), std::string::npos) << msg;
    for (char c : msg) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << msg;
  }
}

TEST(NpyErrors, WrongDtype) {
  for (const char* descr : {"<f8", ">f4", "|f4", "=f4", "<i4", "<f2"}) {
    expect_error<FormatError>(
        [&] { parse_npy(npy_bytes(dict_for("(1,)", descr), float_bytes({1})), "d"); },
        "dtype '" + std::string(descr) + "' is not supported; only float32 ('<f4') is");
  }
}

TEST(NpyErrors, FortranOrder) {
  expect_error<FormatError>(
      [] {
        parse_npy(npy_bytes(dict_for("(2, 2)", "<f4", "True"), float_bytes({1, 2, 3, 4})), "f");
      },
      "fortran_order is True");
}

TEST(NpyErrors, NegativeShape) {
  expect_error<FormatError>([] { parse_npy(npy_bytes(dict_for("(3, -1)"), ""), "n"); },
                            "npy 'n': shape [3, -1] has a negative size");
}

TEST(NpyErrors, OverflowingShape) {
  expect_error<FormatError>(
      [] { parse_npy(npy_bytes(dict_for("(4611686018427387904, 4)"), ""), "o"); },
      "more elements than int64 can count");
  // 2^62 elements fit int64, their 2^64 bytes do not.
  expect_error<FormatError>(
      [] { parse_npy(npy_bytes(dict_for("(4611686018427387904,)"), ""), "o"); },
      "more bytes than int64 can count");
  expect_error<FormatError>(
      [] { parse_npy(npy_bytes(dict_for("(99999999999999999999,)"), ""), "o"); },
      "does not fit in int64");
}

TEST(NpyErrors, HugeShapeInTinyFileFailsWithoutAllocating) {
  // 10^12 floats would be 4 TB: the length check must come before any allocation.
  expect_error<FormatError>(
      [] { parse_npy(npy_bytes(dict_for("(1000000, 1000000)"), float_bytes({1})), "big"); },
      "truncated: header promises 4000000000000 bytes of data, file has 4");
}

TEST(NpyErrors, TruncatedData) {
  ScratchDir dir;
  const std::string path = dir.file("short.npy");
  write_bytes(path, npy_bytes(dict_for("(2, 3)"), float_bytes({1, 2, 3, 4, 5})));
  expect_error<FormatError>(
      [&] { load_npy(path); },
      "npy '" + path + "': truncated: header promises 24 bytes of data, file has 20");
}

TEST(NpyErrors, TrailingData) {
  expect_error<FormatError>(
      [] {
        parse_npy(npy_bytes(dict_for("(2,)"), float_bytes({1, 2, 3})), "t");
      },
      "4 bytes of trailing data");
}

// --- writing ---------------------------------------------------------------------------------

TEST(NpySave, UnwritablePathIsIoErrorAndLeavesNothing) {
  const std::string path = "/nonexistent-dir/x.npy";
  expect_error<IoError>([&] { save_npy(path, Tensor({1}, {1})); },
                        "cannot write '/nonexistent-dir/x.npy'");
  expect_error<IoError>([&] { save_npy(path, Tensor({1}, {1})); }, "No such file or directory");
  EXPECT_FALSE(fs::exists("/nonexistent-dir"));
}

TEST(NpySave, FailedRenameRemovesTemporaryFile) {
  // The temporary file is created fine, but a folder with content cannot be replaced by a file.
  ScratchDir dir;
  fs::create_directory(dir.file("target.npy"));
  write_bytes(dir.file("target.npy/keep"), "x");
  expect_error<IoError>([&] { save_npy(dir.file("target.npy"), Tensor({1}, {1})); },
                        "cannot move the temporary file into place");
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"target.npy"});
  EXPECT_EQ(read_bytes(dir.file("target.npy/keep")), "x");
}

TEST(NpySave, OverwritesAtomicallyAndLeavesNoTemporaryFiles) {
  ScratchDir dir;
  const std::string path = dir.file("w.npy");
  write_bytes(path, "old content that is not an npy file");
  const Tensor t({2}, {1.5f, -1.5f});
  save_npy(path, t);
  expect_bit_equal(load_npy(path), t);
  save_npy(path, Tensor({1}, {2.0f}));
  EXPECT_EQ(load_npy(path).to_vector(), std::vector<float>{2.0f});
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"w.npy"});
}

TEST(WriteFiles, OneUnwritablePathLeavesEveryPathAsItWas) {
  ScratchDir dir;
  write_bytes(dir.file("a.npy"), "old a");
  const std::string b = dir.file("b.npy"), bad = dir.file("missing/c.npy");
  expect_error<IoError>(
      [&] {
        write_files({{dir.file("a.npy"), "new a"}, {b, "new b"}, {bad, "new c"}});
      },
      "cannot write '" + bad + "'");
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"a.npy"});  // no b, no temporary files
  EXPECT_EQ(read_bytes(dir.file("a.npy")), "old a");
  write_files({{dir.file("a.npy"), "new a"}, {b, "new b"}});
  EXPECT_EQ(read_bytes(dir.file("a.npy")), "new a");
  EXPECT_EQ(read_bytes(b), "new b");
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"a.npy", "b.npy"}));
}

TEST(NpySave, ReplacingKeepsThePermissionsOfTheOldFile) {
  ScratchDir dir;
  const std::string path = dir.file("p.npy");
  write_bytes(path, "old");
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  save_npy(path, Tensor({1}, {1}));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

}  // namespace
}  // namespace llm_utils::io
