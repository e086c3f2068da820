#include "plot/png.hpp"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace selfattn::plot {

std::string encode_png(const Canvas& canvas) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(canvas.width());
  image.height = static_cast<png_uint_32>(canvas.height());
  image.format = PNG_FORMAT_RGB;
  const png_int_32 stride = static_cast<png_int_32>(canvas.width() * 3);
  // First call sizes the buffer, second fills it (libpng's simplified write-to-memory API).
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, canvas.pixels().data(), stride,
                                 nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    throw std::runtime_error("PNG encoding failed: " + why);
  }
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, canvas.pixels().data(), stride,
                                 nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    throw std::runtime_error("PNG encoding failed: " + why);
  }
  bytes.resize(size);
  return bytes;
}

namespace {

std::string os_error(const std::string& what, const std::string& path) {
  return "cannot " + what + " '" + path + "': " + std::strerror(errno);
}

}  // namespace

void write_png(const std::string& path, const Canvas& canvas) {
  const std::string bytes = encode_png(canvas);
  std::string tmpl = path + ".tmp-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = mkstemp(name.data());
  if (fd < 0) throw std::runtime_error(os_error("write", path));
  const std::string tmp(name.data());
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string msg = os_error("write", path);
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error(msg);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  // mkstemp creates 0600; a picture is for sharing, so give it the usual 0644 (before umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  if (::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string msg = os_error("write", path);
    ::unlink(tmp.c_str());
    throw std::runtime_error(msg);
  }
}

}  // namespace selfattn::plot
