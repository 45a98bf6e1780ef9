// Where the data lives: blocks and Maps (outer and inner strides) as inputs and outputs, mixed
// storage orders, aliasing (in place and partial overlaps), destinations of the wrong shape, and
// the other Eigen expressions the contract accepts. Results are checked against the reference
// with the budgets of reference.hpp, and writes outside the destination are checked not to happen.
#include "reference.hpp"

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using Catch::Matchers::Contains;
using Eigen::Dynamic;
using ref::Index;
using ref::ld;
template <class T, int Storage>
using M = Eigen::Matrix<T, Dynamic, Dynamic, Storage>;
template <class T>
using RowMatX = ref::Mat<T>;

template <class F>
void with_storage(bool row_major, F&& f) {
  if (row_major)
    f(std::integral_constant<int, Eigen::RowMajor>{});
  else
    f(std::integral_constant<int, Eigen::ColMajor>{});
}

/// The message of the std::invalid_argument that f throws, or a description of what happened
/// instead.
template <class F>
std::string invalid_argument_from(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<another exception: ") + e.what() + ">";
  }
  return "<no exception>";
}

enum class stride_kind { none, outer, inner, both };
const char* name(stride_kind s) {
  switch (s) {
    case stride_kind::none:
      return "unit strides";
    case stride_kind::outer:
      return "padded outer stride";
    case stride_kind::inner:
      return "inner stride 2";
    case stride_kind::both:
      return "outer and inner stride 3";
  }
  return "?";
}

/// The strides of a Map of `kind` over inner_size x outer_size elements, and the elements it
/// spans. One Map type (run-time strides) serves every kind, which keeps the compile short; the
/// typed OuterStride<> and InnerStride<> Maps have their own test below.
using DynStride = Eigen::Stride<Dynamic, Dynamic>;
DynStride stride_of(stride_kind kind, Index inner_size) {
  switch (kind) {
    case stride_kind::none:
      return DynStride(inner_size, 1);
    case stride_kind::outer:
      return DynStride(inner_size + 3, 1);
    case stride_kind::inner:
      return DynStride(2 * inner_size, 2);
    case stride_kind::both:
      return DynStride(3 * inner_size + 5, 3);
  }
  return DynStride(inner_size, 1);
}
Index map_extent(stride_kind kind, Index inner_size, Index outer_size) {
  const DynStride s = stride_of(kind, inner_size);
  return (outer_size - 1) * s.outer() + (inner_size - 1) * s.inner() + 1;
}
template <class Mt, class P>
Eigen::Map<Mt, Eigen::Unaligned, DynStride> map_of(stride_kind kind, P* buf, Index rows,
                                                   Index cols) {
  const Index inner_size = std::remove_const_t<Mt>::IsRowMajor ? cols : rows;
  return {buf, rows, cols, stride_of(kind, inner_size)};
}

/// Checks that every element of buf outside the view `m` still holds `sentinel`.
template <class T, class View>
bool untouched_outside(const std::vector<T>& buf, const View& m, T sentinel) {
  std::vector<bool> inside(buf.size(), false);
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j)
      inside[static_cast<std::size_t>(&m.coeffRef(i, j) - buf.data())] = true;
  for (std::size_t e = 0; e < buf.size(); ++e)
    if (!inside[e] && !(buf[e] == sentinel)) return false;
  return true;
}

template <class T, class Derived>
ref::LMat logical(const Eigen::DenseBase<Derived>& m, bool colwise) {
  return ref::to_ld(m, colwise);
}

}  // namespace

TEMPLATE_TEST_CASE("blocks as input and output, in any storage order", "[layouts][block]", float,
                   double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const bool in_row_major = GENERATE(false, true);
  const bool out_row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  INFO("input " << (in_row_major ? "row" : "column") << "-major, output "
                << (out_row_major ? "row" : "column") << "-major, "
                << (colwise ? "colwise" : "rowwise"));
  const Index n = 2 * l + 1, k = l + 3;
  const RowMatX<T> x_logical = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(1, n, k));
  const auto bw = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(2, k));
  const Index rows = colwise ? k : n, cols = colwise ? n : k;
  const ref::LMat xl = ref::to_ld(x_logical);

  ref::for_layout(in_row_major, colwise, [&](auto in_storage, auto axis) {
    constexpr int S = decltype(in_storage)::value;
    using In = M<T, S>;
    // Each input sits inside a larger matrix of another value, read through a Block.
    auto embed = [&](const RowMatX<T>& a) {
      In big = In::Constant(rows + 4, cols + 5, T(99));
      big.block(1, 2, rows, cols) = ref::stored<S>(a, colwise);
      return big;
    };
    const In xb = embed(x_logical), yb = embed(bw.y), dyb = embed(bw.dy), lpb = embed(bw.logp),
             dlpb = embed(bw.dlogp);
    auto x = xb.block(1, 2, rows, cols);

    with_storage(out_row_major, [&](auto out_storage) {
      using Out = M<T, decltype(out_storage)::value>;
      const Out sentinel = Out::Constant(rows + 3, cols + 2, T(-7));
      Out dst = sentinel;
      auto y = dst.block(2, 1, rows, cols);
      // Everything but the destination block still holds the sentinel.
      auto rest_untouched = [&](Out d) {
        d.block(2, 1, rows, cols).setConstant(T(-7));
        return d == sentinel;
      };

      y = smax::softmax(x, axis);
      REF_CHECK(ref::check_softmax<T>(xl, logical<T>(y, colwise)));
      CHECK(rest_untouched(dst));

      y = smax::log_softmax(x, axis);
      REF_CHECK(ref::check_log_softmax<T>(xl, logical<T>(y, colwise)));
      CHECK(rest_untouched(dst));

      y = smax::softmax_backward(yb.block(1, 2, rows, cols), dyb.block(1, 2, rows, cols), axis);
      REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(bw.y), ref::to_ld(bw.dy),
                                               logical<T>(y, colwise)));
      CHECK(rest_untouched(dst));

      y = smax::log_softmax_backward(lpb.block(1, 2, rows, cols), dlpb.block(1, 2, rows, cols),
                                     axis);
      REF_CHECK(ref::check_log_softmax_backward<T>(ref::to_ld(bw.logp), ref::to_ld(bw.dlogp),
                                                   logical<T>(y, colwise)));
      CHECK(rest_untouched(dst));

      // logsumexp into a column block (rowwise) or a row block (colwise) of dst.
      Out dst2 = sentinel;
      auto lse = colwise ? dst2.block(0, 1, 1, n) : dst2.block(1, 0, n, 1);
      lse = smax::logsumexp(x, axis);
      REF_CHECK(ref::check_logsumexp<T>(xl, ref::to_ld(lse)));
      lse.setConstant(T(-7));
      CHECK(dst2 == sentinel);
    });
  });
}

TEMPLATE_TEST_CASE("Maps with outer and inner strides as input and output", "[layouts][map]", float,
                   double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const auto kinds = {stride_kind::none, stride_kind::outer, stride_kind::inner, stride_kind::both};
  const stride_kind in_kind = GENERATE_COPY(values(kinds));
  const stride_kind out_kind = GENERATE_COPY(values(kinds));
  const bool row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  INFO("input: Map with " << name(in_kind) << ", output: Map with " << name(out_kind) << ", "
                          << (row_major ? "row" : "column") << "-major, "
                          << (colwise ? "colwise" : "rowwise"));
  const Index n = 2 * l + 3, k = 3 * l + 1;
  const RowMatX<T> x_logical = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(3, n, k));
  const auto bw = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(4, k));
  const Index rows = colwise ? k : n, cols = colwise ? n : k;
  const T sentinel = T(12345);

  ref::for_layout(row_major, colwise, [&](auto storage, auto axis) {
    constexpr int S = decltype(storage)::value;
    using Mt = M<T, S>;
    const Index inner_size = Mt::IsRowMajor ? cols : rows;
    const Index outer_size = Mt::IsRowMajor ? rows : cols;
    // Raw buffers holding the inputs in the input Map's layout (NaN in the gaps).
    auto buffer_of = [&](const RowMatX<T>& a) {
      std::vector<T> buf(static_cast<std::size_t>(map_extent(in_kind, inner_size, outer_size)),
                         std::numeric_limits<T>::quiet_NaN());
      map_of<Mt>(in_kind, buf.data(), rows, cols) = ref::stored<S>(a, colwise);
      return buf;
    };
    const std::vector<T> xbuf = buffer_of(x_logical), ybuf = buffer_of(bw.y),
                         dybuf = buffer_of(bw.dy), lpbuf = buffer_of(bw.logp),
                         dlpbuf = buffer_of(bw.dlogp);
    auto in = [&](const std::vector<T>& buf) {
      return map_of<const Mt>(in_kind, buf.data(), rows, cols);
    };
    const auto x = in(xbuf), y = in(ybuf), dy = in(dybuf), lp = in(lpbuf), dlp = in(dlpbuf);

    std::vector<T> out(static_cast<std::size_t>(map_extent(out_kind, inner_size, outer_size)),
                       sentinel);
    auto dst = map_of<Mt>(out_kind, out.data(), rows, cols);
    auto got = [&] { return logical<T>(dst, colwise); };
    const ref::LMat xl = ref::to_ld(x_logical);

    dst = smax::softmax(x, axis);
    REF_CHECK(ref::check_softmax<T>(xl, got()));
    CHECK(untouched_outside(out, dst, sentinel));
    dst = smax::log_softmax(x, axis);
    REF_CHECK(ref::check_log_softmax<T>(xl, got()));
    CHECK(untouched_outside(out, dst, sentinel));
    dst = smax::softmax_backward(y, dy, axis);
    REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(bw.y), ref::to_ld(bw.dy), got()));
    CHECK(untouched_outside(out, dst, sentinel));
    dst = smax::log_softmax_backward(lp, dlp, axis);
    REF_CHECK(ref::check_log_softmax_backward<T>(ref::to_ld(bw.logp), ref::to_ld(bw.dlogp), got()));
    CHECK(untouched_outside(out, dst, sentinel));

    // logsumexp into a strided Map of one value per distribution.
    std::vector<T> lse_buf(static_cast<std::size_t>(3 * n + 2), sentinel);
    using V = std::conditional_t<decltype(axis)::by_rows, Eigen::Matrix<T, Dynamic, 1>,
                                 Eigen::Matrix<T, 1, Dynamic>>;
    Eigen::Map<V, Eigen::Unaligned, Eigen::InnerStride<>> lse(lse_buf.data() + 1, n,
                                                              Eigen::InnerStride<>(3));
    lse = smax::logsumexp(x, axis);
    REF_CHECK(ref::check_logsumexp<T>(xl, ref::to_ld(lse)));
    CHECK(untouched_outside(lse_buf, lse, sentinel));
  });
}

TEMPLATE_TEST_CASE("Maps typed with OuterStride<> and InnerStride<>", "[layouts][map]", float,
                   double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const Index n = 2 * l + 1, k = 2 * l + 3;
  const RowMatX<T> x = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(17, n, k));
  const T sentinel = T(-3);
  using Outer = Eigen::OuterStride<>;
  using Inner = Eigen::InnerStride<>;
  using Mt = M<T, Eigen::ColMajor>;
  // Column-major n x k with padded columns (outer stride n + 2), and with inner stride 2.
  std::vector<T> a(static_cast<std::size_t>((n + 2) * k), sentinel);
  std::vector<T> b(static_cast<std::size_t>(2 * n * k), sentinel);
  Eigen::Map<Mt, Eigen::Unaligned, Outer> padded(a.data(), n, k, Outer(n + 2));
  Eigen::Map<Mt, Eigen::Unaligned, Inner> spaced(b.data(), n, k, Inner(2));

  padded = x;
  spaced = smax::softmax(padded);
  REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(spaced)));
  CHECK(untouched_outside(b, spaced, sentinel));
  std::fill(a.begin(), a.end(), sentinel);
  padded = smax::log_softmax(spaced, smax::colwise);
  const ref::LMat p = ref::to_ld(spaced, true);
  REF_CHECK(ref::check_log_softmax<T>(p, ref::to_ld(padded, true)));
  CHECK(untouched_outside(a, padded, sentinel));
}

TEMPLATE_TEST_CASE("aliasing: in place and partially overlapping destinations", "[layouts][alias]",
                   float, double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const bool row_major = GENERATE(false, true);
  INFO((row_major ? "row-major" : "column-major"));
  with_storage(row_major, [&](auto storage) {
    using Mt = M<T, decltype(storage)::value>;
    const Index n = 2 * l + 1;

    SECTION("y = softmax(y) and friends, rowwise and colwise") {
      const Mt x = ref::stored<decltype(storage)::value>(
          ref::logits<T>(ref::scenario::mixed, n, l + 2, ref::seed_of(5, n)), false);
      Mt y = x;
      y = smax::softmax(y);
      REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(y)));
      y = x;
      y = smax::log_softmax(y, smax::colwise);
      REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(x, true), ref::to_ld(y, true)));
      // A block in place: the very same view as input and output.
      Mt big = Mt::Constant(n + 2, l + 5, T(3));
      big.block(1, 2, n, l + 2) = x;
      big.block(1, 2, n, l + 2) = smax::softmax(big.block(1, 2, n, l + 2));
      REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(big.block(1, 2, n, l + 2))));
      CHECK((big.col(0).array() == T(3)).all());
      CHECK((big.row(0).array() == T(3)).all());
    }
    SECTION("backward passes in place: dx overwrites dy or y") {
      const auto bw =
          ref::make_backward_inputs<T>(ref::scenario::standard, n, 2 * l + 3, ref::seed_of(6, n));
      const Mt y = bw.y, dy = bw.dy, lp = bw.logp, dlp = bw.dlogp;
      Mt a = dy;
      a = smax::softmax_backward(y, a);
      REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(y), ref::to_ld(dy), ref::to_ld(a)));
      a = y;
      a = smax::softmax_backward(a, dy);
      REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(y), ref::to_ld(dy), ref::to_ld(a)));
      a = dlp;
      a = smax::log_softmax_backward(lp, a, smax::colwise);
      REF_CHECK(ref::check_log_softmax_backward<T>(ref::to_ld(lp, true), ref::to_ld(dlp, true),
                                                   ref::to_ld(a, true)));
      a = lp;
      a = smax::log_softmax_backward(a, dlp);
      REF_CHECK(ref::check_log_softmax_backward<T>(ref::to_ld(lp), ref::to_ld(dlp), ref::to_ld(a)));
    }
    SECTION("m.rightCols(3) = softmax(m.leftCols(3)) and other partial overlaps") {
      const Index cols = GENERATE(4, 5);  // overlap of 2 columns, then 1
      const bool colwise = GENERATE(false, true);
      INFO(cols << " columns, " << (colwise ? "colwise" : "rowwise"));
      const Mt m0 = ref::stored<decltype(storage)::value>(
          ref::logits<T>(ref::scenario::standard, n, cols, ref::seed_of(7, cols)), false);
      const Mt left = m0.leftCols(3);
      Mt m = m0;
      if (colwise)
        m.rightCols(3) = smax::softmax(m.leftCols(3), smax::colwise);
      else
        m.rightCols(3) = smax::softmax(m.leftCols(3));
      REF_CHECK(
          ref::check_softmax<T>(ref::to_ld(left, colwise), ref::to_ld(m.rightCols(3), colwise)));
      CHECK(m.leftCols(cols - 3) == m0.leftCols(cols - 3));

      m = m0;  // the other direction, through log_softmax
      if (colwise)
        m.leftCols(3) = smax::log_softmax(m.rightCols(3), smax::colwise);
      else
        m.leftCols(3) = smax::log_softmax(m.rightCols(3));
      const Mt right = m0.rightCols(3);
      REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(right, colwise),
                                          ref::to_ld(m.leftCols(3), colwise)));

      m = m0;  // rows overlapping rows
      const Index r = n - 1;
      const Mt top = m0.topRows(r);
      if (colwise)
        m.bottomRows(r) = smax::softmax(m.topRows(r), smax::colwise);
      else
        m.bottomRows(r) = smax::softmax(m.topRows(r));
      REF_CHECK(
          ref::check_softmax<T>(ref::to_ld(top, colwise), ref::to_ld(m.bottomRows(r), colwise)));

      m = m0;  // a backward pass writing over part of both its inputs
      const Mt y = smax::softmax(m0.leftCols(3));
      m.leftCols(3) = y;
      const Mt dy = m.middleCols(1, 3);
      m.rightCols(3) = smax::softmax_backward(m.leftCols(3), m.middleCols(1, 3));
      REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(y), ref::to_ld(dy),
                                               ref::to_ld(m.rightCols(3))));
    }
    SECTION("a Map over the same buffer shifted by one element") {
      const Index k = l + 2;
      const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(8, n));
      std::vector<T> buf(static_cast<std::size_t>(n * k + 1));
      Eigen::Map<Mt> a(buf.data(), n, k), b(buf.data() + 1, n, k);
      a = x;
      b = smax::softmax(a);
      REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(b)));
      b = x;
      a = smax::log_softmax(b, smax::colwise);  // and backwards
      REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(x, true), ref::to_ld(a, true)));
    }
    SECTION("a square matrix from its own transpose: a = softmax(a.transpose())") {
      const Index k = l + 3;
      const Mt a0 = ref::stored<decltype(storage)::value>(
          ref::logits<T>(ref::scenario::standard, k, k, ref::seed_of(9, k)), false);
      Mt a = a0;
      a = smax::softmax(a.transpose());
      const Mt t = a0.transpose();
      REF_CHECK(ref::check_softmax<T>(ref::to_ld(t), ref::to_ld(a)));
    }
    SECTION("logsumexp into a column of its own input") {
      const Mt m0 = ref::stored<decltype(storage)::value>(
          ref::logits<T>(ref::scenario::mixed, n, l + 2, ref::seed_of(10, n)), false);
      Mt m = m0;
      m.col(0) = smax::logsumexp(m);
      REF_CHECK(ref::check_logsumexp<T>(ref::to_ld(m0), ref::to_ld(m.col(0))));
      const auto kept = m.rightCols(l + 1).array();
      const auto before = m0.rightCols(l + 1).array();
      CHECK(((kept == before) || (kept.isNaN() && before.isNaN())).all());  // NaN input kept
      m = m0;
      m.row(1).head(l + 2) = smax::logsumexp(m.topRows(l + 2), smax::colwise);
      const Mt top = m0.topRows(l + 2);
      REF_CHECK(ref::check_logsumexp<T>(ref::to_ld(top, true), ref::to_ld(m.row(1))));
    }
  });
}

TEMPLATE_TEST_CASE("a destination of the wrong shape that cannot be resized throws",
                   "[layouts][shape]", float, double) {
  using T = TestType;
  const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, 3, 4, ref::seed_of(11));
  using Mt = M<T, Eigen::ColMajor>;
  const Mt before = Mt::Constant(6, 6, T(5));
  Mt big = before;

  SECTION("a Block") {
    const std::string msg =
        invalid_argument_from([&] { big.block(0, 0, 4, 3) = smax::softmax(x); });
    CHECK_THAT(msg, Contains("smax::softmax") && Contains("the destination is 4x3") &&
                        Contains("the result is 3x4"));
    const std::string msg2 =
        invalid_argument_from([&] { big.block(1, 1, 3, 5) = smax::log_softmax(x); });
    CHECK_THAT(msg2, Contains("smax::log_softmax") && Contains("3x5") && Contains("3x4"));
    const std::string msg3 =
        invalid_argument_from([&] { big.block(0, 0, 4, 3) = smax::softmax(x, smax::colwise); });
    CHECK_THAT(msg3, Contains("4x3") && Contains("3x4"));
    CHECK(big == before);  // nothing written
  }
  SECTION("a Map") {
    std::vector<T> buf(12, T(5));
    Eigen::Map<RowMatX<T>> m(buf.data(), 2, 6);
    const std::string msg = invalid_argument_from([&] { m = smax::softmax(x); });
    CHECK_THAT(msg, Contains("2x6") && Contains("3x4"));
    CHECK(std::all_of(buf.begin(), buf.end(), [](T v) { return v == T(5); }));
  }
  SECTION("one value per distribution into a block of the wrong length") {
    const std::string msg = invalid_argument_from([&] { big.col(0).head(2) = smax::logsumexp(x); });
    CHECK_THAT(msg, Contains("smax::logsumexp") && Contains("2x1") && Contains("3x1"));
    const std::string msg2 =
        invalid_argument_from([&] { big.row(0).head(3) = smax::logsumexp(x, smax::colwise); });
    CHECK_THAT(msg2, Contains("1x3") && Contains("1x4"));
    CHECK(big == before);
  }
  SECTION("backward passes whose two inputs differ in shape name both") {
    const RowMatX<T> dy = RowMatX<T>::Ones(4, 3);
    const std::string msg = invalid_argument_from([&] { (void)smax::softmax_backward(x, dy); });
    CHECK_THAT(msg,
               Contains("smax::softmax_backward") && Contains("dy is 4x3") && Contains("y is 3x4"));
    const std::string msg2 = invalid_argument_from(
        [&] { big.block(0, 0, 3, 4) = smax::log_softmax_backward(x, dy.transpose().leftCols(3)); });
    CHECK_THAT(msg2, Contains("smax::log_softmax_backward") && Contains("dy is 3x3") &&
                         Contains("y is 3x4"));
    CHECK(big == before);
  }
  SECTION("a plain matrix is resized instead") {
    Mt y(1, 1);
    y = smax::softmax(x);
    CHECK(y.rows() == 3);
    CHECK(y.cols() == 4);
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(y)));
  }
}

TEMPLATE_TEST_CASE("mismatched storage orders between inputs and outputs", "[layouts][mixed]",
                   float, double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const Index n = 2 * l + 3, k = 2 * l + 1;
  const bool colwise = GENERATE(false, true);
  INFO((colwise ? "colwise" : "rowwise"));
  const RowMatX<T> xl = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(12, n));
  const auto bw = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(13));
  using Row = M<T, Eigen::RowMajor>;
  using Col = M<T, Eigen::ColMajor>;
  ref::for_layout(true, colwise, [&](auto, auto axis) {
    const Row xr = ref::stored<Eigen::RowMajor>(xl, colwise);
    const Col xc = ref::stored<Eigen::ColMajor>(xl, colwise);
    const Col from_row = smax::softmax(xr, axis);  // row-major input, column-major output
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(xl), ref::to_ld(from_row, colwise)));
    const Row from_col = smax::log_softmax(xc, axis);
    REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(xl), ref::to_ld(from_col, colwise)));

    // Backward passes with y and dy in different orders, and the output in either.
    const Row yr = ref::stored<Eigen::RowMajor>(bw.y, colwise);
    const Col dyc = ref::stored<Eigen::ColMajor>(bw.dy, colwise);
    const Col dx1 = smax::softmax_backward(yr, dyc, axis);
    const Row dx2 = smax::softmax_backward(yr, dyc, axis);
    for (const ref::LMat& got : {ref::to_ld(dx1, colwise), ref::to_ld(dx2, colwise)})
      REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(bw.y), ref::to_ld(bw.dy), got));
    const Col lpc = ref::stored<Eigen::ColMajor>(bw.logp, colwise);
    const Row dlpr = ref::stored<Eigen::RowMajor>(bw.dlogp, colwise);
    const Row dx3 = smax::log_softmax_backward(lpc, dlpr, axis);
    REF_CHECK(ref::check_log_softmax_backward<T>(ref::to_ld(bw.logp), ref::to_ld(bw.dlogp),
                                                 ref::to_ld(dx3, colwise)));
  });
}

TEMPLATE_TEST_CASE("vectors, arrays, fixed sizes and other expressions", "[layouts][expr]", float,
                   double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const Index k = 2 * l + 3;
  const RowMatX<T> row = ref::logits<T>(ref::scenario::standard, 1, k, ref::seed_of(14));
  const ref::LMat rl = ref::to_ld(row);

  SECTION("a compile-time vector is one distribution whatever the axis") {
    const Eigen::Matrix<T, Dynamic, 1> v = row.transpose();
    const Eigen::Matrix<T, 1, Dynamic> r = row;
    const Eigen::Matrix<T, Dynamic, 1> pv = smax::softmax(v), pv2 = smax::softmax(v, smax::rowwise);
    const Eigen::Matrix<T, 1, Dynamic> pr = smax::softmax(r), pr2 = smax::softmax(r, smax::colwise);
    for (const ref::LMat& got :
         {ref::to_ld(pv, true), ref::to_ld(pv2, true), ref::to_ld(pr), ref::to_ld(pr2)})
      REF_CHECK(ref::check_softmax<T>(rl, got));
    static_assert(std::is_same<decltype(smax::logsumexp(v)), T>::value,
                  "logsumexp of a vector is a scalar");
    const T lse_v = smax::logsumexp(v), lse_r = smax::logsumexp(r, smax::colwise);
    REF_CHECK(ref::check_logsumexp<T>(rl, ref::LMat::Constant(1, 1, lse_v)));
    REF_CHECK(ref::check_logsumexp<T>(rl, ref::LMat::Constant(1, 1, lse_r)));
    // A fixed-size vector, and a strided one: a column of a row-major matrix.
    const Eigen::Matrix<T, 4, 1> f4(T(1), T(-2), T(0.5), T(3));
    const Eigen::Matrix<T, 4, 1> p4 = smax::log_softmax(f4);
    REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(f4, true), ref::to_ld(p4, true)));
    const RowMatX<T> m = row.transpose().replicate(1, 3);
    const Eigen::Matrix<T, Dynamic, 1> pc = smax::softmax(m.col(1));
    REF_CHECK(ref::check_softmax<T>(rl, ref::to_ld(pc, true)));
  }
  SECTION("arrays, products, sums, fixed-size matrices, Transpose and Ref") {
    const Index n = l + 1;
    const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(15));
    const ref::LMat xl = ref::to_ld(x);
    const Eigen::Array<T, Dynamic, Dynamic> a = x.array();
    const Eigen::Array<T, Dynamic, Dynamic> pa = smax::softmax(a);
    REF_CHECK(ref::check_softmax<T>(xl, ref::to_ld(pa)));
    const Eigen::Array<T, Dynamic, 1> lse_a = smax::logsumexp(a);
    REF_CHECK(ref::check_logsumexp<T>(xl, ref::to_ld(lse_a)));
    // A product (evaluated once) and a sum expression.
    const M<T, Eigen::ColMajor> id = M<T, Eigen::ColMajor>::Identity(k, k);
    const M<T, Eigen::ColMajor> pp = smax::softmax(x * id);
    REF_CHECK(ref::check_softmax<T>(xl, ref::to_ld(pp)));
    const M<T, Eigen::ColMajor> ps = smax::log_softmax(x + RowMatX<T>::Zero(n, k));
    REF_CHECK(ref::check_log_softmax<T>(xl, ref::to_ld(ps)));
    // Transpose as input: the distributions are its rows.
    const M<T, Eigen::ColMajor> xt = x.transpose();
    const RowMatX<T> pt = smax::softmax(xt.transpose());
    REF_CHECK(ref::check_softmax<T>(xl, ref::to_ld(pt)));
    // Ref.
    const Eigen::Ref<const M<T, Eigen::ColMajor>> xr(xt);
    const M<T, Eigen::ColMajor> pref = smax::softmax(xr, smax::colwise);
    REF_CHECK(ref::check_softmax<T>(xl, ref::to_ld(pref, true)));
    // Fixed size.
    const Eigen::Matrix<T, 3, 5> f = x.topLeftCorner(3, 5);
    const Eigen::Matrix<T, 3, 5> pf = smax::softmax(f);
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(f), ref::to_ld(pf)));
    const Eigen::Matrix<T, 1, 5> lf = smax::logsumexp(f, smax::colwise);
    REF_CHECK(ref::check_logsumexp<T>(ref::to_ld(f, true), ref::to_ld(lf)));
  }
  SECTION("other destinations: transpose() and (without direct access) reverse()") {
    const Index n = l + 1;
    const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(16));
    RowMatX<T> y(n, k);
    y.reverse() = smax::softmax(x);
    const RowMatX<T> back = y.reverse();
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(back)));
    RowMatX<T> t(k, n);
    t.transpose() = smax::log_softmax(x);
    REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(x), ref::to_ld(t, true)));
  }
}
