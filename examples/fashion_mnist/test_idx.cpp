// The IDX reader and the Fashion-MNIST loader on small files written here, good and bad, plain
// and gzip-compressed: the bad ones must fail with a message that says what is wrong.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "dataset.hpp"
#include "idx.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;

/// The bytes of an IDX file: magic 0 0 <type> <rank>, big-endian dimensions, then the data.
Bytes idx_bytes(const std::vector<std::uint32_t>& dims, const Bytes& data,
                std::uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(std::uint8_t(d >> shift));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

Bytes random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = std::uint8_t(rng());
  return b;
}

/// A fresh folder under the system's temporary one, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("smax_idx_test_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// Writes the bytes to `name`, gzip-compressed when the name ends in ".gz"; returns the path.
  std::string write(const std::string& name, const Bytes& bytes) const {
    const std::string p = (path_ / name).string();
    if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) {
      gzFile f = gzopen(p.c_str(), "wb");
      REQUIRE(f != nullptr);
      REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
      REQUIRE(gzclose(f) == Z_OK);
    } else {
      std::ofstream(p, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    }
    return p;
  }

  /// The raw bytes of a file written before (compressed ones as stored).
  Bytes read_raw(const std::string& name) const {
    std::ifstream in(path_ / name, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

}  // namespace

TEST_CASE("IDX: good files read back, plain and gzip-compressed", "[idx]") {
  TempDir dir;
  const Bytes data = random_bytes(2 * 3 * 4, 1);
  for (const char* name : {"a.idx", "a.idx.gz"}) {
    const idx::Array a = idx::read(dir.write(name, idx_bytes({2, 3, 4}, data)));
    CHECK(a.dims == std::vector<std::size_t>{2, 3, 4});
    CHECK(a.data == data);
  }
  const idx::Array empty = idx::read(dir.write("empty.gz", idx_bytes({0, 28, 28}, {})));
  CHECK(empty.dims == std::vector<std::size_t>{0, 28, 28});
  CHECK(empty.data.empty());
}

TEST_CASE("IDX: bad files fail with a message naming the file and the problem", "[idx]") {
  TempDir dir;
  const Bytes data = random_bytes(2 * 28 * 28, 2);
  const Bytes good = idx_bytes({2, 28, 28}, data);

  SECTION("missing") {
    const std::string p = dir.path() + "/nothing-here.gz";
    CHECK_THROWS_WITH(idx::read(p), Contains(p) && Contains("cannot open"));
  }
  SECTION("not an IDX file") {
    const std::string p = dir.write("text.gz", {'h', 'e', 'l', 'l', 'o', '\n'});
    CHECK_THROWS_WITH(idx::read(p), Contains(p) && Contains("not an IDX file") &&
                                        Contains("magic number 104 101 108 108"));
    CHECK_THROWS_WITH(idx::read(dir.write("rank0", {0, 0, 8, 0})), Contains("not an IDX file"));
  }
  SECTION("a type other than unsigned bytes") {
    CHECK_THROWS_WITH(idx::read(dir.write("floats", idx_bytes({1}, {0, 0, 0, 0}, 0x0D))),
                      Contains("type code 13 is not supported"));
  }
  SECTION("shorter than the magic number") {
    CHECK_THROWS_WITH(idx::read(dir.write("short.gz", {0, 0, 8})),
                      Contains("truncated: 3 bytes, shorter than the 4-byte IDX magic number"));
  }
  SECTION("truncated in the header") {
    const Bytes cut(good.begin(), good.begin() + 10);
    CHECK_THROWS_WITH(idx::read(dir.write("header.gz", cut)),
                      Contains("truncated in the header (dimension 2 of 3)"));
  }
  SECTION("truncated in the data") {
    const Bytes cut(good.begin(), good.end() - 568);
    for (const char* name : {"data", "data.gz"})
      CHECK_THROWS_WITH(idx::read(dir.write(name, cut)),
                        Contains("truncated: the header announces 2x28x28 = 1568 bytes of data, "
                                 "the file has 1000"));
  }
  SECTION("bytes after the data") {
    Bytes longer = good;
    longer.push_back(0);
    CHECK_THROWS_WITH(idx::read(dir.write("long.gz", longer)),
                      Contains("unexpected bytes after the 1568 bytes of data"));
  }
  SECTION("a gzip stream cut short") {
    dir.write("full.gz", good);
    Bytes gz = dir.read_raw("full.gz");
    gz.resize(gz.size() / 2);
    CHECK_THROWS_WITH(idx::read(dir.write("cut", gz)),
                      Contains("corrupt or truncated gzip data (zlib: unexpected end of file)"));
  }
  SECTION("a gzip stream with a wrong checksum") {
    dir.write("full.gz", good);
    Bytes gz = dir.read_raw("full.gz");
    gz[gz.size() - 8] ^= 0xFF;  // the trailer: CRC-32, then the length
    CHECK_THROWS_WITH(idx::read(dir.write("crc", gz)),
                      Contains("corrupt or truncated gzip data (zlib: incorrect data check)"));
  }
}

TEST_CASE("Fashion-MNIST loader: shapes, labels and pixel scaling", "[idx]") {
  TempDir dir;
  Bytes pixels(2 * 784, 0);
  pixels[0] = 255;
  pixels[784 + 783] = 51;
  const std::string images = dir.write("images.gz", idx_bytes({2, 28, 28}, pixels));
  const std::string labels = dir.write("labels.gz", idx_bytes({2}, {9, 0}));

  SECTION("good files") {
    const fmnist::Split s = fmnist::load_split(images, labels);
    REQUIRE(s.size() == 2);
    CHECK(s.images.rows() == 2);
    CHECK(s.images.cols() == 784);
    CHECK(s.images(0, 0) == 1.0f);
    CHECK(s.images(1, 783) == 0.2f);
    CHECK(s.images.sum() == Approx(1.2f));
    CHECK(s.labels(0) == 9);
    CHECK(s.labels(1) == 0);
  }
  SECTION("labels where images belong, and images of another size") {
    CHECK_THROWS_WITH(
        fmnist::load_split(labels, labels),
        Contains(labels) && Contains("expected images of N x 28 x 28 pixels, found 2"));
    const std::string small = dir.write("small.gz", idx_bytes({2, 27, 27}, Bytes(2 * 27 * 27)));
    CHECK_THROWS_WITH(fmnist::load_split(small, labels), Contains("found 2x27x27"));
  }
  SECTION("images where labels belong") {
    CHECK_THROWS_WITH(fmnist::load_split(images, images),
                      Contains("expected a vector of labels, found 2x28x28"));
  }
  SECTION("as many labels as images") {
    const std::string three = dir.write("three.gz", idx_bytes({3}, {1, 2, 3}));
    CHECK_THROWS_WITH(fmnist::load_split(images, three),
                      Contains(three) && Contains("3 labels for the 2 images of " + images));
  }
  SECTION("labels in [0, 10)") {
    const std::string bad = dir.write("bad.gz", idx_bytes({2}, {3, 10}));
    CHECK_THROWS_WITH(fmnist::load_split(images, bad),
                      Contains("label 10 of sample 1 is outside [0, 10)"));
  }
  SECTION("a folder without the files") {
    CHECK_FALSE(fmnist::available(dir.path()));
    CHECK_THROWS_WITH(fmnist::load(dir.path()),
                      Contains(dir.path()) && Contains("no train-images-idx3-ubyte(.gz)"));
  }
}
