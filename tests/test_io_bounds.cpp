// Resource bounds of the readers: a header claiming far more data than the file holds fails at
// once without allocating it, and a pipe or device is read no further than its header says, so
// /dev/zero, /dev/urandom or an endless stream behind a valid header cannot hang a load or eat
// the machine's memory.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "llm_utils/llm_utils.hpp"

namespace llm_utils {
namespace {

namespace fs = std::filesystem;

std::string npy_header(const std::string& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  dict.append(63 - (10 + dict.size()) % 64, ' ');
  dict += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

std::string safetensors_file(const std::string& json, const std::string& data) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((json.size() >> (8 * i)) & 0xff);
  return out + json + data;
}

// A FIFO whose writer sends `head`, then zeros until the reader closes its end (or, with
// `endless` false, closes after `head`).
class Fifo {
 public:
  Fifo(const std::string& head, bool endless) {
    path_ = (fs::temp_directory_path() /
             ("llm_utils_fifo_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++)))
                .string();
    EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0);
    writer_ = std::thread([this, head, endless] {
      const int fd = ::open(path_.c_str(), O_WRONLY);
      if (fd < 0) return;
      bool ok = write_all(fd, head.data(), head.size());
      const std::string zeros(65536, '\0');
      while (ok && endless) {
        ok = write_all(fd, zeros.data(), zeros.size());
        written_ += zeros.size();
      }
      ::close(fd);
    });
  }
  ~Fifo() {
    // A writer still waiting for a reader (the load failed before opening) is let go.
    const int fd = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
    writer_.join();
    ::unlink(path_.c_str());
  }
  Fifo(const Fifo&) = delete;
  Fifo& operator=(const Fifo&) = delete;
  const std::string& path() const { return path_; }
  uint64_t zeros_written() const { return written_; }

 private:
  static bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w <= 0) return false;  // EPIPE once the reader is gone
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  static inline int counter_ = 0;
  std::string path_;
  std::thread writer_;
  uint64_t written_ = 0;
};

class IoBounds : public ::testing::Test {
 protected:
  // The writer must see EPIPE when the reader gives up, not die of SIGPIPE.
  void SetUp() override { old_ = ::signal(SIGPIPE, SIG_IGN); }
  void TearDown() override { ::signal(SIGPIPE, old_); }

 private:
  sighandler_t old_ = SIG_DFL;
};

template <typename F>
double seconds(F f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST_F(IoBounds, DevZeroAndUrandomFailAtOnce) {
  for (const char* device : {"/dev/zero", "/dev/urandom"}) {
    if (!fs::exists(device)) continue;
    const double t = seconds([&] {
      EXPECT_THROW(io::load_npy(device), FormatError) << device;
      EXPECT_THROW(io::load_safetensors(device), FormatError) << device;
    });
    EXPECT_LT(t, 5.0) << device;
  }
}

TEST_F(IoBounds, NpyFromAPipeLoads) {
  const std::string data(6 * sizeof(float), '\0');
  Fifo fifo(npy_header("(2, 3)") + data, /*endless=*/false);
  const Tensor t = io::load_npy(fifo.path());
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
}

TEST_F(IoBounds, SafetensorsFromAPipeLoads) {
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  Fifo fifo(safetensors_file(json, std::string(8, '\0')), /*endless=*/false);
  const StateDict sd = io::load_safetensors(fifo.path());
  EXPECT_EQ(sd.at("w").shape(), (Shape{2}));
}

// A valid header followed by data that never ends: read one byte past what the header promises,
// then report the trailing data.
TEST_F(IoBounds, EndlessNpyStreamStopsAfterTheHeadersSize) {
  Fifo fifo(npy_header("(2, 3)"), /*endless=*/true);
  try {
    io::load_npy(fifo.path());
    ADD_FAILURE() << "an endless stream loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("trailing data"), std::string::npos) << e.what();
  }
}

TEST_F(IoBounds, EndlessSafetensorsStreamStopsAfterTheHeadersSize) {
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  Fifo fifo(safetensors_file(json, ""), /*endless=*/true);
  try {
    io::load_safetensors(fifo.path());
    ADD_FAILURE() << "an endless stream loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("gap"), std::string::npos) << e.what();
  }
}

// 10^12 elements (4 TB) claimed by a tiny file: refused before any allocation, so at once.
TEST_F(IoBounds, TrillionElementClaimsFailAtOnce) {
  const fs::path dir =
      fs::temp_directory_path() / ("llm_utils_bounds_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string npy = (dir / "huge.npy").string();
  const std::string st = (dir / "huge.safetensors").string();
  std::ofstream(npy, std::ios::binary) << npy_header("(1000000, 1000000)");
  std::ofstream(st, std::ios::binary) << safetensors_file(
      R"({"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}})", "");
  const double t = seconds([&] {
    EXPECT_THROW(io::load_npy(npy), FormatError);
    EXPECT_THROW(io::load_safetensors(st), FormatError);
  });
  EXPECT_LT(t, 5.0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llm_utils
