// Outputs of 16 MiB or more whose rows are whole aligned vectors are written with streaming
// (non-temporal) stores, and rows that fit a 16 KiB stack buffer keep their exps there instead of
// in the output: another code path for the same arithmetic. Each row of such a large call must
// equal, bit for bit, the same row computed by a small call (which streams nothing), with rows on
// cache lines (streamed) and at every other alignment (not streamed). Problems this large also
// run short rows one at a time where a small batch would transpose them into tiles (softmax and
// log_softmax beyond 48 classes, cross-entropy beyond 100): the bits of a one-row call too; and
// their tiles of rows longer than a vector are staged (read and written in address order, not a
// block of vectors at a time): the bits of the same rows in a small batch's tiles.
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using Index = Eigen::Index;
template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
RowMat<T> logits(Index n, Index k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 3.0);
  RowMat<T> x(n, k);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(normal(rng));
  x(1, 3) = -std::numeric_limits<T>::infinity();  // a masked class
  x.row(2).setConstant(-std::numeric_limits<T>::infinity());  // a fully masked row
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("large outputs stream, with the bits of small calls", "[streaming]", float,
                   double) {
  using T = TestType;
  constexpr Index min_elements = (Index{16} << 20) / Index(sizeof(T)) + 1;
  // K within the stack buffer (exps kept there) and beyond it (exps in the output): rows of a
  // whole number of cache lines in a 64-byte aligned destination (these stream), and odd K in a
  // destination one element off alignment, so that rows start at every alignment.
  const Index k =
      GENERATE(Index(1024), Index(8192), Index(1031), Index(5003), Index(56), Index(128));
  const bool lines = k % 64 == 0;
  const Index n = min_elements / k + 1;
  INFO((sizeof(T) == 4 ? "float" : "double") << ", N = " << n << ", K = " << k);
  RowMat<T> x = logits<T>(n, k, 17 + std::uint64_t(k));
  std::vector<T> buf(static_cast<std::size_t>(n * k + 64));
  T* start = buf.data() + 1;
  if (lines) {
    while (reinterpret_cast<std::uintptr_t>(start) % 64 != 0) ++start;
  }
  Eigen::Map<RowMat<T>> y(start, n, k);

  const auto same_rows = [&](const auto& small_call) {
    // Rows near the start, the masked ones, some in the middle, the last.
    for (Index i : {Index(0), Index(1), Index(2), Index(3), n / 2, n / 2 + 1, n - 1}) {
      INFO("row " << i);
      const RowMat<T> one = small_call(x.row(i));
      CHECK(RowMat<T>(y.row(i)) == one);
    }
  };
  y = smax::softmax(x);
  same_rows([](const auto& r) { return RowMat<T>(smax::softmax(r)); });
  y = smax::log_softmax(x);
  same_rows([](const auto& r) { return RowMat<T>(smax::log_softmax(r)); });

  // The fused cross-entropy's gradient (sum reduction: each row's gradient is its own).
  Eigen::VectorXi labels(n);
  for (Index i = 0; i < n; ++i) labels(i) = static_cast<int>((i * 7) % k);
  labels(1) = 4;  // not the masked class
  labels(2) = -100;
  smax::CrossEntropyOptions o;
  o.reduction = smax::Reduction::sum;
  o.label_smoothing = 0.05;
  o.z_loss = 1e-4;
  // Up to 100 classes the large cross-entropy still runs in tiles, whose sums differ in their
  // last bits from a row's.
  for (const bool smooth : {false, true}) {
    if (k <= 100) break;
    o.label_smoothing = smooth ? 0.05 : 0.0;
    if (smooth) x(1, 3) = 0;  // smoothing gives the masked class a target: loss +inf
    INFO((smooth ? "with" : "without") << " label smoothing");
    const T loss = smax::cross_entropy(x, labels, y, o);
    CHECK(std::isfinite(loss));
    for (Index i : {Index(0), Index(1), Index(2), n / 2, n - 1}) {
      INFO("row " << i);
      RowMat<T> g(1, k);
      smax::cross_entropy(x.row(i), labels.segment(i, 1), g, o);
      CHECK(RowMat<T>(y.row(i)) == g);
    }
  }
}

TEMPLATE_TEST_CASE("large tiles of rows longer than a vector, staged, have the bits of small ones",
                   "[streaming][tiles]", float, double) {
  using T = TestType;
  constexpr Index min_elements = (Index{16} << 20) / Index(sizeof(T)) + 1;
  // Classes either side of one vector's lanes (16 floats or 8 doubles with AVX-512, 8 or 4 with
  // AVX2, 4 or 2 with SSE2), whole and partial last vectors, up to the largest tiled K; with the
  // rows packed (row stride K) or inside a wider matrix (gaps between the rows).
  const Index k = GENERATE(Index(5), Index(9), Index(17), Index(20), Index(32), Index(33),
                           Index(48), Index(64), Index(100));  // cross-entropy: up to 100
  const Index gap = GENERATE(Index(0), Index(3));
  // Rows of a small call in whole vectors of rows (so in tiles): 2 x 16 covers every lane count.
  constexpr Index batch = 32;
  const Index n = min_elements / k + 1;
  INFO((sizeof(T) == 4 ? "float" : "double") << ", N = " << n << ", K = " << k << ", gap " << gap);
  const RowMat<T> wide = logits<T>(n, k + gap, 29 + std::uint64_t(k));
  const auto x = wide.leftCols(k);
  RowMat<T> y_wide = RowMat<T>::Constant(n, k + gap, T(7));
  auto y = y_wide.leftCols(k);
  // Batches at the start (with the masked rows), in the middle and the last whole one before the
  // n mod batch rows of the end (which a large call runs one at a time or in its own tiles).
  const Index last = (n / batch - 1) * batch;
  const auto same_batches = [&](const auto& small_call) {
    for (Index s : {Index(0), (n / 2) / batch * batch, last}) {
      INFO("rows " << s << " + " << batch);
      const RowMat<T> small = small_call(s);
      CHECK(RowMat<T>(y.middleRows(s, batch)) == small);
    }
    // Nothing written in the gaps between the rows.
    if (gap > 0) CHECK((y_wide.rightCols(gap).array() == T(7)).all());
  };
  if (k <= 48) {  // larger K: a large softmax runs one row at a time (the test above)
    y = smax::softmax(x);
    same_batches([&](Index s) { return RowMat<T>(smax::softmax(x.middleRows(s, batch))); });
    y = smax::log_softmax(x);
    same_batches([&](Index s) { return RowMat<T>(smax::log_softmax(x.middleRows(s, batch))); });
  }
  Eigen::VectorXi labels(n);
  for (Index i = 0; i < n; ++i) labels(i) = static_cast<int>((i * 7) % k);
  labels(1) = 4;  // not the masked class
  labels(2) = -100;
  smax::CrossEntropyOptions o;
  o.reduction = smax::Reduction::sum;  // each row's gradient is its own
  const T loss = smax::cross_entropy(x, labels, y, o);
  CHECK(std::isfinite(loss));
  same_batches([&](Index s) {
    RowMat<T> g(batch, k);
    smax::cross_entropy(x.middleRows(s, batch), labels.segment(s, batch), g, o);
    return g;
  });
}
