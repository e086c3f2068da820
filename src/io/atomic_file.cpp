#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <system_error>
#include <vector>

#include "llm_utils/error.hpp"
#include "llm_utils/io/files.hpp"

namespace llm_utils::io::detail {
namespace {

// Linux transfers at most ~2 GiB per read/write call; asking for less keeps the loops simple.
constexpr size_t kMaxIoChunk = size_t{1} << 30;

// strerror is not thread-safe; the standard category message is.
std::string os_reason(int err) {
  return std::generic_category().message(err);
}

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

// Owns a file descriptor so that every early throw closes it.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and returns 0 or the errno of close(); the descriptor is released either way
  // (on Linux a failed close must not be retried).
  int close_now() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

int open_retrying(const char* path, int flags, mode_t mode = 0) {
  int fd = -1;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Removes the temporary file unless the write got as far as renaming it into place.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!committed_) ::unlink(path_.c_str());
  }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  bool committed_ = false;
};

std::string random_suffix() {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 engine = [] {
    // The clock and pid keep names apart even where random_device is deterministic.
    std::random_device device;
    std::seed_seq seed{
        device(), device(), static_cast<unsigned>(::getpid()),
        static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count())};
    return std::mt19937_64(seed);
  }();
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 2);
  std::string out(6, ' ');
  for (char& c : out) c = kAlphabet[pick(engine)];
  return out;
}

struct TempFile {
  int fd;
  std::string path;
};

// Like mkstemp on "PATH.tmp-XXXXXX", but with mode 0666 so the umask decides the permissions of
// the final file, as for any newly created file (mkstemp would make it 0600).
TempFile create_temp_beside(const std::string& path) {
  constexpr int kAttempts = 100;
  int err = 0;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::string tmp = path + ".tmp-" + random_suffix();
    const int fd = open_retrying(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return {fd, std::move(tmp)};
    err = errno;
    if (err != EEXIST) break;
  }
  throw IoError("cannot write " + quoted(path) +
                ": cannot create a temporary file in its folder: " + os_reason(err));
}

// Replacing a file should not silently change who may read it.
void copy_mode_of_existing(const std::string& path, int fd) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    // Best effort: failing to copy the mode is no reason to fail the write.
    (void)::fchmod(fd, st.st_mode & 07777);
  }
}

void write_all(int fd, const std::string& bytes, const std::string& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, std::min(left, kMaxIoChunk));
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      throw IoError("cannot write " + quoted(path) + ": " + os_reason(err));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Makes the rename itself survive a power cut. Best effort: the new file is already in place, so
// a failure here is not reported as a failed write.
void sync_parent_folder(const std::string& path) {
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) folder = ".";
  const int fd = open_retrying(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

std::string read_file(const std::string& path, const SizeFromHeader& size_from_header) {
  const int raw_fd = open_retrying(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw_fd < 0) {
    const int err = errno;
    throw IoError("cannot open " + quoted(path) + ": " + os_reason(err));
  }
  FileDescriptor fd(raw_fd);

  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    throw IoError("cannot stat " + quoted(path) + ": " + os_reason(err));
  }
  if (S_ISDIR(st.st_mode)) {
    throw IoError("cannot read " + quoted(path) + ": it is a directory, not a file");
  }

  // Read straight into the result when the size is known; pipes and files that grow are
  // handled by appending whatever comes after the expected end.
  const bool regular = S_ISREG(st.st_mode);
  size_t expected = 0;
  if (regular && st.st_size > 0) {
    if (static_cast<uintmax_t>(st.st_size) > std::string().max_size()) {
      throw IoError("cannot read " + quoted(path) + ": file is too large to hold in memory");
    }
    expected = static_cast<size_t>(st.st_size);
  }
  std::string out(expected, '\0');
  size_t filled = 0;
  std::array<char, 65536> chunk{};
  // Until the header has been checked, read a chunk at a time: a file of the wrong kind fails
  // on its first bytes, however large. Then a pipe or device, whose size nothing else bounds
  // (/dev/zero never ends), is read only as far as its header says, plus one byte so that
  // trailing data is still reported. A regular file is read whole, for exact messages.
  std::optional<uint64_t> size;
  uint64_t stop = std::numeric_limits<uint64_t>::max();
  while (filled < stop) {
    const bool into_out = filled < out.size();
    char* dst = into_out ? out.data() + filled : chunk.data();
    size_t cap = into_out ? std::min(out.size() - filled, kMaxIoChunk) : chunk.size();
    if (size_from_header && !size) cap = std::min(cap, chunk.size());
    cap = static_cast<size_t>(std::min<uint64_t>(cap, stop - filled));
    const ssize_t n = ::read(fd.get(), dst, cap);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      throw IoError("cannot read " + quoted(path) + ": " + os_reason(err));
    }
    if (n == 0) break;
    if (into_out) {
      filled += static_cast<size_t>(n);
    } else {
      out.append(chunk.data(), static_cast<size_t>(n));
      filled = out.size();
    }
    if (size_from_header && !size) {
      size = size_from_header(std::string_view(out.data(), filled));
      if (size && !regular) stop = *size == stop ? stop : *size + 1;
    }
  }
  out.resize(filled);
  return out;
}

namespace {

// A complete, flushed temporary file beside its destination, removed unless moved into place.
class StagedFile {
 public:
  StagedFile(const std::string& path, const std::string& bytes) : path_(path) {
    if (path.empty()) throw IoError("cannot write '': the path is empty");
    TempFile tmp = create_temp_beside(path);
    FileDescriptor fd(tmp.fd);
    guard_ = std::make_unique<TempFileGuard>(tmp.path);
    tmp_path_ = tmp.path;
    copy_mode_of_existing(path, fd.get());
    write_all(fd.get(), bytes, path);
    // Without fsync a crash after the rename could leave PATH empty on some file systems.
    if (::fsync(fd.get()) != 0) {
      const int err = errno;
      throw IoError("cannot write " + quoted(path) +
                    ": flushing to disk failed: " + os_reason(err));
    }
    if (const int err = fd.close_now(); err != 0) {
      throw IoError("cannot write " + quoted(path) + ": closing failed: " + os_reason(err));
    }
  }

  void move_into_place() {
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      const std::string& path = path_;  // our quoted(), not std::quoted found by ADL
      throw IoError("cannot write " + quoted(path) +
                    ": cannot move the temporary file into place: " + os_reason(err));
    }
    guard_->commit();
    sync_parent_folder(path_);
  }

 private:
  std::string path_;
  std::string tmp_path_;
  std::unique_ptr<TempFileGuard> guard_;
};

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  StagedFile(path, bytes).move_into_place();
}

void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files) {
  // Every file written and flushed first: a failure here removes the temporary files and
  // leaves every destination as it was.
  std::vector<StagedFile> staged;
  staged.reserve(files.size());
  for (const auto& [path, bytes] : files) staged.emplace_back(path, bytes);
  for (StagedFile& file : staged) file.move_into_place();
}

}  // namespace llm_utils::io::detail

namespace llm_utils::io {

void write_files(const std::vector<std::pair<std::string, std::string>>& files) {
  detail::write_files_atomic(files);
}

}  // namespace llm_utils::io
