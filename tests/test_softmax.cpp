// softmax, log_softmax and logsumexp against the long double reference (reference.hpp states the
// budgets): every K that hits a SIMD tail or a summation block, batches N that do and do not fill
// a vector (column-major rows are vectorized across rows), both storage orders, both axes, and
// the adversarial inputs of the special-value policy.
#include "reference.hpp"

#include <limits>
#include <vector>

namespace {

using ref::Index;
using ref::ld;
template <class T>
using MatX = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
template <class T>
using RowMatX = ref::Mat<T>;

/// softmax, log_softmax and logsumexp of `logical` (rows are distributions) in one storage order
/// and along one axis, each checked against the reference.
template <class T, int Storage, class Axis>
void check_family(const RowMatX<T>& logical, Axis axis) {
  constexpr bool colwise = !Axis::by_rows;
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Storage>;
  const M x = ref::stored<Storage>(logical, colwise);
  const ref::LMat xl = ref::to_ld(logical);

  const M p = smax::softmax(x, axis);
  REF_CHECK(ref::check_softmax<T>(xl, ref::to_ld(p, colwise)));

  const M lp = smax::log_softmax(x, axis);
  REF_CHECK(ref::check_log_softmax<T>(xl, ref::to_ld(lp, colwise)));

  const MatX<T> lse = smax::logsumexp(x, axis);
  CHECK(lse.rows() == (colwise ? 1 : logical.rows()));
  CHECK(lse.cols() == (colwise ? logical.rows() : 1));
  REF_CHECK(ref::check_logsumexp<T>(xl, ref::to_ld(lse)));
}

}  // namespace

TEMPLATE_TEST_CASE("softmax, log_softmax and logsumexp match the long double reference",
                   "[softmax]", float, double) {
  using T = TestType;
  const Index k = GENERATE(from_range(ref::class_counts<T>()));
  const Index n = GENERATE_COPY(from_range(ref::batch_sizes<T>(k)));
  const bool row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  const ref::scenario s = GENERATE(from_range(ref::all_scenarios()));
  INFO("K = " << k << ", N = " << n << (row_major ? ", row-major" : ", column-major")
              << (colwise ? ", colwise" : ", rowwise") << ", inputs: " << ref::name(s)
              << ", lanes = " << ref::lanes<T>);
  const RowMatX<T> logical =
      ref::logits<T>(s, n, k, ref::seed_of(static_cast<std::uint64_t>(s), n, k, sizeof(T)));
  ref::for_layout(row_major, colwise, [&](auto storage, auto axis) {
    check_family<T, decltype(storage)::value>(logical, axis);
  });
}

TEMPLATE_TEST_CASE("a row of 50257 equal logits sums to 1 within 4 ulp", "[softmax][sum]", float,
                   double) {
  using T = TestType;
  const Index k = 50257;
  const T big = std::numeric_limits<T>::max();
  const T c = GENERATE_COPY(values<T>({0, T(3.5), T(-1e4), T(1e30), big, -big}));
  // One distribution alone, and lanes + 1 of them in a column-major matrix: rowwise, vectorized
  // across rows with a remainder; colwise, one contiguous column each.
  const Index n = GENERATE(Index(1), ref::lanes<T> + 1);
  const bool colwise = GENERATE(false, true);
  INFO("logit " << c << ", N = " << n << (colwise ? ", colwise" : ", rowwise"));
  const RowMatX<T> logical = RowMatX<T>::Constant(n, k, c);
  const MatX<T> x = ref::stored<Eigen::ColMajor>(logical, colwise);
  MatX<T> p, lp;
  if (colwise) {
    p = smax::softmax(x, smax::colwise);
    lp = smax::log_softmax(x, smax::colwise);
  } else {
    p = smax::softmax(x);
    lp = smax::log_softmax(x);
  }
  const ref::LMat pl = ref::to_ld(p, colwise);
  REF_CHECK(ref::check_softmax<T>(ref::to_ld(logical), pl));
  REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(logical), ref::to_ld(lp, colwise)));
  for (Index i = 0; i < n; ++i) {
    ref::exact_sum sum;
    for (Index j = 0; j < k; ++j) sum.add(pl(i, j));
    INFO("row " << i << " sums to 1 + " << static_cast<double>(sum.value() - 1));
    CHECK(std::fabs(sum.value() - 1) <= ref::equal_logits_sum_ulps * ref::eps<T>);
  }
}

TEMPLATE_TEST_CASE("huge spreads give subnormal probabilities, rounded and not flushed",
                   "[softmax][subnormal]", float, double) {
  using T = TestType;
  const bool is_float = sizeof(T) == 4;
  // Gaps below the maximum whose probabilities exp(-gap) are subnormal (at least 3 times the
  // smallest one, so that no result within budget is 0), then two that underflow to 0.
  const std::vector<T> gaps = is_float ? std::vector<T>{T(87.5), 90, T(95.25), 100, 102, 200, 1000}
                                       : std::vector<T>{T(708.5), 720, T(737.75), 743, 1000, 1e4};
  const Index k = static_cast<Index>(gaps.size()) + 1;
  RowMatX<T> logical(1, k);
  logical(0, 0) = 0;
  for (Index j = 1; j < k; ++j) logical(0, j) = -gaps[static_cast<std::size_t>(j - 1)];
  // The same row lanes + 1 times, so that the column-major layout runs the vector path too.
  const RowMatX<T> rows = logical.replicate(ref::lanes<T> + 1, 1);
  const MatX<T> across = rows;
  const RowMatX<T> contiguous = rows;
  for (const MatX<T>& p : {MatX<T>(smax::softmax(across)), MatX<T>(smax::softmax(contiguous))}) {
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(rows), ref::to_ld(p)));
    for (Index i = 0; i < p.rows(); ++i) {
      CHECK(p(i, 0) == 1);
      for (Index j = 1; j < k - 2; ++j) {
        INFO("row " << i << ", x = " << logical(0, j) << ": p = " << p(i, j));
        CHECK(p(i, j) > 0);
        CHECK(p(i, j) < std::numeric_limits<T>::min());
      }
      CHECK(p(i, k - 2) == 0);
      CHECK(p(i, k - 1) == 0);
    }
  }
}

TEMPLATE_TEST_CASE("the special-value policy holds exactly in every layout", "[softmax][special]",
                   float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity();
  const T big = std::numeric_limits<T>::max();
  const Index l = ref::lanes<T>;
  const bool row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  INFO((row_major ? "row-major" : "column-major") << (colwise ? ", colwise" : ", rowwise"));

  // Runs softmax, log_softmax and logsumexp on `logical` in the layout of this run and returns
  // them in the logical orientation (logsumexp as an n x 1 column).
  struct results {
    RowMatX<T> p, lp, lse;
  };
  auto run = [&](const RowMatX<T>& logical) {
    results r;
    ref::for_layout(row_major, colwise, [&](auto storage, auto axis) {
      constexpr int S = decltype(storage)::value;
      using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, S>;
      const M x = ref::stored<S>(logical, colwise);
      const M p = smax::softmax(x, axis), lp = smax::log_softmax(x, axis);
      const MatX<T> lse = smax::logsumexp(x, axis);
      r.p = colwise ? RowMatX<T>(p.transpose()) : RowMatX<T>(p);
      r.lp = colwise ? RowMatX<T>(lp.transpose()) : RowMatX<T>(lp);
      r.lse = colwise ? RowMatX<T>(lse.transpose()) : RowMatX<T>(lse);
    });
    return r;
  };

  SECTION("-inf entries next to finite ones get probability exactly 0, log-probability -inf") {
    const Index k = 2 * l + 3;
    RowMatX<T> x = RowMatX<T>::Zero(l + 2, k);
    for (Index i = 0; i < x.rows(); ++i)
      for (Index j = 0; j < k; ++j)
        if ((i + j) % 3 == 0 || j == k - 1) x(i, j) = -inf;  // in vector bodies and tails
    const results r = run(x);
    for (Index i = 0; i < x.rows(); ++i) {
      const Index finite = (x.row(i).array() > -inf).count();
      for (Index j = 0; j < k; ++j) {
        INFO("(" << i << ", " << j << ")");
        if (x(i, j) == -inf) {
          CHECK(r.p(i, j) == 0);
          CHECK(r.lp(i, j) == -inf);
        } else {
          CHECK(r.p(i, j) == Approx(1.0 / static_cast<double>(finite)));
          CHECK(std::isfinite(r.lp(i, j)));
        }
      }
      CHECK(r.lse(i, 0) == Approx(std::log(static_cast<double>(finite))));
    }
  }
  SECTION("fully masked rows give 0, -inf and -inf, and leave their neighbours alone") {
    RowMatX<T> x(l + 2, 5);
    for (Index i = 0; i < x.rows(); ++i)
      for (Index j = 0; j < 5; ++j) x(i, j) = i % 2 == 0 ? -inf : T(j);
    const results r = run(x);
    for (Index i = 0; i < x.rows(); ++i) {
      INFO("row " << i);
      if (i % 2 == 0) {
        CHECK((r.p.row(i).array() == 0).all());
        CHECK((r.lp.row(i).array() == -inf).all());
        CHECK(r.lse(i, 0) == -inf);
      } else {
        CHECK(r.p(i, 4) == Approx(0.6364086465588309));
        CHECK(r.lse(i, 0) == Approx(4.451914395937593));
      }
    }
  }
  SECTION("a NaN or +inf poisons its own row only; logsumexp gives NaN resp. +inf") {
    // Rows 0 and 6 to n - 2 stay clean; row n - 1 is in the remainder of the vectors across rows.
    const Index n = std::max<Index>(2 * l + 3, 8);
    RowMatX<T> x(n, 2 * l + 1);
    for (Index i = 0; i < x.rows(); ++i)
      for (Index j = 0; j < x.cols(); ++j) x(i, j) = T(0.25) * T(j);
    x(1, 0) = std::numeric_limits<T>::quiet_NaN();  // first element
    x(2, x.cols() - 1) = inf;                       // in the tail
    x(3, 1) = inf;                                  // NaN and +inf
    x(3, l) = -std::numeric_limits<T>::quiet_NaN();
    x(n - 1, l) = std::numeric_limits<T>::signaling_NaN();
    // NaN and +inf in an order where the running maximum keeps the +inf (the vector max drops
    // a NaN met after a +inf in the same lane; across lanes, the first lane wins): the NaN
    // must still make logsumexp NaN, not +inf. Row 4 for vectors across rows, row 5 along one.
    x(4, 0) = std::numeric_limits<T>::quiet_NaN();
    x(4, 1) = inf;
    x(5, 0) = inf;
    x(5, 1) = std::numeric_limits<T>::quiet_NaN();
    const results r = run(x);
    for (Index i = 0; i < x.rows(); ++i) {
      INFO("row " << i);
      const bool has_nan = i == 1 || i == 3 || i == 4 || i == 5 || i == n - 1;
      const bool has_inf = i == 2 || i == 3 || i == 4 || i == 5;
      if (has_nan || has_inf) {
        CHECK(r.p.row(i).array().isNaN().all());
        CHECK(r.lp.row(i).array().isNaN().all());
      } else {
        CHECK(r.p.row(i).allFinite());
        CHECK(r.lp.row(i).allFinite());
      }
      if (has_nan)
        CHECK(std::isnan(r.lse(i, 0)));
      else if (has_inf)
        CHECK(r.lse(i, 0) == inf);
      else
        CHECK(std::isfinite(r.lse(i, 0)));
    }
  }
  SECTION("one class: probability 1, log-probability 0, logsumexp the logit itself") {
    RowMatX<T> x(l + 1, 1);
    for (Index i = 0; i < x.rows(); ++i) x(i, 0) = T(i) * T(7.25) - T(3);
    x(0, 0) = big;
    x(1, 0) = -big;
    const results r = run(x);
    CHECK((r.p.array() == 1).all());
    CHECK((r.lp.array() == 0).all());
    CHECK(r.lse == x);
  }
  SECTION("an empty batch gives an empty result; zero classes give logsumexp -inf") {
    const results empty = run(RowMatX<T>(0, 7));
    CHECK(empty.p.rows() == 0);
    CHECK(empty.p.cols() == 7);
    CHECK(empty.lse.size() == 0);
    const results none = run(RowMatX<T>(l + 1, 0));
    CHECK(none.p.rows() == l + 1);
    CHECK(none.p.cols() == 0);
    REQUIRE(none.lse.rows() == l + 1);
    CHECK((none.lse.array() == -inf).all());
  }
  SECTION("huge finite logits are exact: log_softmax([max, 1, 2, 3]) = [0, -max, -max, -max]") {
    RowMatX<T> x(4, 4);
    x << big, 1, 2, 3,           //
        big, big, -big, 0,       //
        -big, -big, -big, -big,  //
        big, T(0.5) * big, -big, big;
    const results r = run(x);
    CHECK(r.lp(0, 0) == 0);
    CHECK(r.lp(0, 1) == -big);
    CHECK(r.lp(0, 3) == -big);
    CHECK(r.p(0, 0) == 1);
    CHECK(r.p(0, 1) == 0);
    CHECK(r.p(1, 0) == T(0.5));
    CHECK(r.p(1, 1) == T(0.5));
    CHECK(r.p(1, 2) == 0);
    CHECK(r.lp(1, 2) == -inf);  // -2 max overflows
    CHECK(r.lse(1, 0) == big);  // max + log 2 rounds to max
    CHECK((r.p.row(2).array() == T(0.25)).all());
    CHECK(r.lse(2, 0) == -big);  // -max + log 4 rounds to -max
    CHECK(r.p(3, 0) == T(0.5));
    CHECK(r.p(3, 1) == 0);
    CHECK(r.p(3, 3) == T(0.5));
    REF_CHECK(ref::check_softmax<T>(ref::to_ld(x), ref::to_ld(r.p)));
    REF_CHECK(ref::check_log_softmax<T>(ref::to_ld(x), ref::to_ld(r.lp)));
    REF_CHECK(ref::check_logsumexp<T>(ref::to_ld(x), ref::to_ld(r.lse)));
  }
}
