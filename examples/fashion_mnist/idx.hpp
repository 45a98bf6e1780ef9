// A reader for IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
//
// Format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number 0x00 0x00 <type> <rank>,
// then <rank> big-endian uint32 dimensions, then the row-major data. Only the unsigned-byte type
// (0x08), the one MNIST uses, is read. Every failure throws std::runtime_error with a message that
// starts with the file name and says what was expected and what was found.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace idx {

/// An IDX array of unsigned bytes: its dimensions and its row-major data.
struct Array {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> data;
};

namespace detail {

inline std::string dims_text(const std::vector<std::size_t>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s.empty() ? "a scalar" : s;
}

/// A gzFile that closes itself. zlib reads files without a gzip header as they are, so one reader
/// serves both `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz`.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) throw std::runtime_error(path + ": cannot open the file");
    gzbuffer(file_.get(), 1u << 17);
  }

  /// Reads up to n bytes; fewer only at the end of the file. Throws on a corrupt gzip stream.
  std::size_t read(void* out, std::size_t n) {
    auto* p = static_cast<unsigned char*>(out);
    std::size_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
      const int got = gzread(file_.get(), p + done, chunk);
      if (got < 0) fail();
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    // zlib reports a gzip stream cut short as a clean end of file plus this error.
    int code = Z_OK;
    gzerror(file_.get(), &code);
    if (code != Z_OK && code != Z_STREAM_END) fail();
    return done;
  }

 private:
  [[noreturn]] void fail() {
    int code = Z_OK;
    std::string message = gzerror(file_.get(), &code);
    if (message.compare(0, path_.size() + 2, path_ + ": ") == 0)  // zlib names the file too
      message.erase(0, path_.size() + 2);
    throw std::runtime_error(path_ + ": corrupt or truncated gzip data (zlib: " + message + ")");
  }

  struct Close {
    void operator()(gzFile f) const noexcept { gzclose(f); }
  };
  std::string path_;
  std::unique_ptr<gzFile_s, Close> file_;
};

}  // namespace detail

/// Reads an IDX file of unsigned bytes (gzip-compressed or not).
/// Throws std::runtime_error, naming the file, when it cannot be opened, its magic number is not
/// that of an IDX file of unsigned bytes, it ends before the header or the data that the header
/// announces, or it holds bytes after them.
inline Array read(const std::string& path) {
  detail::GzReader in(path);
  unsigned char magic[4];
  const std::size_t got = in.read(magic, 4);
  if (got < 4)
    throw std::runtime_error(path + ": truncated: " + std::to_string(got) +
                             " bytes, shorter than the 4-byte IDX magic number");
  if (magic[0] != 0 || magic[1] != 0 || magic[3] == 0)
    throw std::runtime_error(path + ": not an IDX file (magic number " + std::to_string(magic[0]) +
                             " " + std::to_string(magic[1]) + " " + std::to_string(magic[2]) + " " +
                             std::to_string(magic[3]) + ", expected 0 0 <type> <rank >= 1>)");
  if (magic[2] != 0x08)
    throw std::runtime_error(path + ": IDX type code " + std::to_string(magic[2]) +
                             " is not supported (only 8, unsigned bytes)");

  Array a;
  a.dims.resize(magic[3]);
  std::size_t size = 1;
  for (std::size_t i = 0; i < a.dims.size(); ++i) {
    unsigned char b[4];
    if (in.read(b, 4) < 4)
      throw std::runtime_error(path + ": truncated in the header (dimension " +
                               std::to_string(i + 1) + " of " + std::to_string(a.dims.size()) +
                               ")");
    a.dims[i] = std::size_t{b[0]} << 24 | std::size_t{b[1]} << 16 | std::size_t{b[2]} << 8 | b[3];
    if (a.dims[i] != 0 && size > std::numeric_limits<std::size_t>::max() / a.dims[i])
      throw std::runtime_error(path + ": dimensions too large");
    size *= a.dims[i];
  }

  // Grow while reading rather than trusting the header for one allocation: a corrupt header must
  // not make us allocate gigabytes before we find out that the file is short.
  const std::size_t step = std::size_t{1} << 24;
  while (a.data.size() < size) {
    const std::size_t old = a.data.size();
    const std::size_t want = std::min(size - old, step);
    a.data.resize(old + want);
    const std::size_t n = in.read(a.data.data() + old, want);
    if (n < want)
      throw std::runtime_error(path + ": truncated: the header announces " +
                               detail::dims_text(a.dims) + " = " + std::to_string(size) +
                               " bytes of data, the file has " + std::to_string(old + n));
  }
  unsigned char extra;
  if (in.read(&extra, 1) != 0)
    throw std::runtime_error(path + ": unexpected bytes after the " + std::to_string(size) +
                             " bytes of data announced by the header (" +
                             detail::dims_text(a.dims) + ")");
  return a;
}

}  // namespace idx
