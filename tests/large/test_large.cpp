// Index arithmetic is 64-bit everywhere: a single row of more than 2^31 floats (8 GiB) through
// logsumexp, and softmax over N x K > 2^31 elements read through a strided Map. Labelled "large"
// (about 17 GiB of memory, a minute): excluded from the test preset, run by `ctest --preset large`.
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <vector>

namespace {
using Index = Eigen::Index;
constexpr Index kBeyond32 = (Index{1} << 31) + 37;  // past every 32-bit index, and a SIMD tail
}  // namespace

TEST_CASE("logsumexp of one row of more than 2^31 floats", "[large]") {
  std::vector<float> buf;
  try {
    buf.assign(static_cast<std::size_t>(kBeyond32), 0.0f);
  } catch (const std::bad_alloc&) {
    FAIL("8 GiB for the row could not be allocated");
  }
  // Ones everywhere and one larger value at the very end: the max must be found past 2^31 and the
  // sum of 2^31 exps must keep its digits (pairwise blocks, not one running sum per lane).
  std::fill(buf.begin(), buf.end(), 1.0f);
  buf.back() = 30.0f;
  const Eigen::Map<const Eigen::RowVectorXf> row(buf.data(), kBeyond32);
  const double exact = 30.0 + std::log1p(static_cast<double>(kBeyond32 - 1) * std::exp(1.0 - 30.0));
  const float got = smax::logsumexp(row);
  INFO("logsumexp = " << got << ", exact " << exact);
  CHECK(std::abs(static_cast<double>(got) - exact) <= 8 * std::numeric_limits<float>::epsilon() *
                                                          std::abs(exact));

  // The same buffer as a column-major 2 x (2^30 + 18) matrix: per-row results across memory.
  const Index cols = kBeyond32 / 2;
  const Eigen::Map<const Eigen::MatrixXf> m(buf.data(), 2, cols);
  const Eigen::VectorXf lse = smax::logsumexp(m);
  // Row 0 holds the even entries (all 1), row 1 the odd ones (the last entry is odd: 30).
  const double row0 = 1.0 + std::log(static_cast<double>(cols));
  const double row1 = (kBeyond32 % 2 == 0) ? 30.0 + std::log1p((cols - 1) * std::exp(-29.0))
                                           : row0;
  CHECK(std::abs(lse(0) - row0) <= 8 * std::numeric_limits<float>::epsilon() * row0);
  CHECK(std::abs(lse(1) - row1) <= 8 * std::numeric_limits<float>::epsilon() * row1);
}

TEST_CASE("softmax of N x K > 2^31 elements through a strided Map", "[large]") {
  // The input: one row of K logits repeated N times by an outer stride of 0 (a few KiB of
  // memory); the output: a real N x K buffer of 8 GiB. Every row must equal the softmax of the
  // row, including the last ones, whose offsets i * K exceed 2^31.
  const Index k = 1000, n = kBeyond32 / k + 1;
  std::vector<float> logits(static_cast<std::size_t>(k));
  for (Index j = 0; j < k; ++j) logits[static_cast<std::size_t>(j)] = std::sin(0.37f * j) * 4.0f;
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> x(logits.data(), n, k,
                                                             Eigen::OuterStride<>(0));
  std::vector<float> out;
  try {
    out.assign(static_cast<std::size_t>(n * k), -1.0f);
  } catch (const std::bad_alloc&) {
    FAIL("8 GiB for the output could not be allocated");
  }
  Eigen::Map<RowMat> y(out.data(), n, k);
  y = smax::softmax(x);

  const Eigen::Map<const Eigen::RowVectorXf> one(logits.data(), k);
  const Eigen::RowVectorXf expected = smax::softmax(one);
  for (Index i : {Index(0), n / 2, n - 2, n - 1}) {
    INFO("row " << i << " at offset " << i * k);
    CHECK(y.row(i) == expected);
  }
}
