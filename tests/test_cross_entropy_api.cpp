// smax::cross_entropy_per_row (Reduction::none), the special values of CONTRACT.md, and bad input:
// every error of the right type, with a message that names the argument and its sizes or
// value, and nothing written (grad and losses keep their sentinels).
#include "ce_reference.hpp"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using Catch::Matchers::Contains;
using ce_ref::Index;
using ce_ref::ld;
using ce_ref::Mode;
using ce_ref::RowMat;
using ce_ref::Vec;
template <class T>
using ColMat = ce_ref::ColMat<T>;

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();
template <class T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();
constexpr double kSentinel = 7.25;

/// The message of the E that f throws, or a description of what happened instead.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<wrong exception type: ") + e.what() + ">";
  }
  return "<no exception>";
}

template <class M>
bool untouched(const M& m) {
  return (m.array() == static_cast<typename M::Scalar>(kSentinel)).all();
}

}  // namespace

// ---- per-row losses -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("per-row losses: ignored rows 0, every destination", "[cross_entropy][per_row]",
                   float, double) {
  using T = TestType;
  const Index n = GENERATE(Index(1), Index(10), Index(19));
  const Index k = 13;
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << ", N = " << n << (row_major ? ", row-major" : ", column-major"));
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(30, n, sizeof(T)));
  const ce_ref::Labels y = ce_ref::labels(n, k, ce_ref::seed_of(31, n), 0.3);
  const auto yv = ce_ref::to_eigen(y);
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.z_loss = 1e-3;
  const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, Mode::sum);

  const auto run = [&](auto& losses) {
    if (row_major) {
      smax::cross_entropy_per_row(x, yv, losses, o);
    } else {
      const ColMat<T> xc = x;
      smax::cross_entropy_per_row(xc, yv, losses, o);
    }
  };
  Vec<T> base = Vec<T>::Constant(n, T(kSentinel));
  run(base);
  CE_CHECK(ce_ref::check_row_losses<T>(ref, base));
  for (Index i = 0; i < n; ++i)
    if (!ref.valid[i]) CHECK(base(i) == T(0));
  // The sum of the per-row losses is the sum reduction.
  T sum_loss;
  if (row_major) {
    sum_loss = smax::cross_entropy(x, yv, [&] {
      smax::CrossEntropyOptions s = o;
      s.reduction = smax::Reduction::sum;
      return s;
    }());
  } else {
    smax::CrossEntropyOptions s = o;
    s.reduction = smax::Reduction::sum;
    sum_loss = smax::cross_entropy(ColMat<T>(x), yv, s);
  }
  CHECK(std::fabs(static_cast<ld>(sum_loss) - base.template cast<ld>().sum()) <=
        4 * ce_ref::eps<T> * std::fabs(static_cast<ld>(sum_loss)));

  SECTION("a RowVector") {
    Eigen::Matrix<T, 1, Eigen::Dynamic> r = Eigen::Matrix<T, 1, Eigen::Dynamic>::Constant(n, 0);
    run(r);
    CHECK(ce_ref::same_bits(r.transpose(), base));
  }
  SECTION("an empty VectorX is resized") {
    Vec<T> e;
    run(e);
    CHECK(ce_ref::same_bits(e, base));
  }
  SECTION("an empty RowVectorX is resized") {
    Eigen::Matrix<T, 1, Eigen::Dynamic> e;
    run(e);
    REQUIRE(e.size() == n);
    CHECK(ce_ref::same_bits(e.transpose(), base));
  }
  SECTION("an Array") {
    Eigen::Array<T, Eigen::Dynamic, 1> a(n);
    run(a);
    CHECK(ce_ref::same_bits(a.matrix(), base));
  }
  SECTION("a Map over a buffer, and a strided column of a row-major matrix") {
    std::vector<T> buf(static_cast<std::size_t>(n) + 2, T(kSentinel));
    Eigen::Map<Vec<T>> m(buf.data() + 1, n);
    run(m);
    CHECK(ce_ref::same_bits(m, base));
    CHECK(buf.front() == T(kSentinel));
    CHECK(buf.back() == T(kSentinel));
    RowMat<T> two = RowMat<T>::Constant(n, 3, T(kSentinel));
    auto col = two.col(1);
    run(col);
    CHECK(ce_ref::same_bits(two.col(1), base));
    CHECK(untouched(two.col(0)));
    CHECK(untouched(two.col(2)));
  }
  SECTION("the loss-only overload and the one with a gradient agree") {
    Vec<T> l2(n);
    RowMat<T> g(n, k);
    const Vec<T> ones = Vec<T>::Ones(n);
    if (row_major) {
      smax::cross_entropy_per_row(x, yv, l2, ones, g, o);
    } else {
      smax::cross_entropy_per_row(ColMat<T>(x), yv, l2, ones, g, o);
    }
    CHECK(ce_ref::same_bits(l2, base));
  }
}

TEMPLATE_TEST_CASE("per-row gradient: scaled by dloss; sum's gradient for dloss = 1; 0 for 0",
                   "[cross_entropy][per_row]", float, double) {
  using T = TestType;
  const ce_ref::Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const bool row_major = GENERATE(false, true);
  const Index n = 11, k = 9;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << (row_major ? ", row-major" : ", column-major"));
  const std::uint64_t seed = ce_ref::seed_of(32, sizeof(T));
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, Mode::sum);
  const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
  const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(y);
  const auto each = [&](const auto& target, const auto& ref_target) {
    using ce_ref::call;
    const auto run = [&](Mode mode, const Vec<T>& dl) {
      return row_major ? call<Eigen::RowMajor>(x, target, o, mode, dl)
                       : call<Eigen::ColMajor>(x, target, o, mode, dl);
    };
    // dloss = 1 is the sum reduction's gradient, bit for bit.
    const ce_ref::Output<T> ones = run(Mode::per_row, Vec<T>::Ones(n));
    const ce_ref::Output<T> sum = run(Mode::sum, Vec<T>());
    CHECK(ce_ref::same_bits(ones.grad, sum.grad));
    // dloss = 0: a zero gradient, every entry (the label's too); the losses are still there.
    const ce_ref::Output<T> zeros = run(Mode::per_row, Vec<T>::Zero(n));
    CHECK(zeros.grad.isZero(0));
    CHECK(ce_ref::same_bits(zeros.losses, ones.losses));
    // Any dloss: row i scaled by dloss_i (against the reference), whatever dloss is made of.
    const Vec<T> dl = ce_ref::dloss<T>(n, seed + 5);
    const ce_ref::Output<T> scaled = run(Mode::per_row, dl);
    const ce_ref::Result ref =
        ce_ref::cross_entropy(ce_ref::to_ld(x), ref_target, o, Mode::per_row, ce_ref::to_ld(dl));
    CE_CHECK(ce_ref::check_grad<T>(ref, scaled.grad));
    CE_CHECK(ce_ref::check_row_losses<T>(ref, scaled.losses));
  };
  if (probs) {
    each(t, ce_ref::to_ld(t));
  } else {
    each(yv, y);
  }
}

TEMPLATE_TEST_CASE("per-row dloss as a view or an expression gives the same bits",
                   "[cross_entropy][per_row]", float, double) {
  using T = TestType;
  const Index n = 12, k = 7;
  const bool row_major = GENERATE(false, true);
  // An empty losses vector, resized by the call: its N values come from the allocator right
  // after any temporary the call made of an N-value dloss expression (the same size), so a
  // dangling dloss temporary would be overwritten by the losses.
  const bool empty_losses = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << (row_major ? ", row-major" : ", column-major")
                              << (empty_losses ? ", empty losses" : ""));
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(33, sizeof(T)));
  const auto yv = ce_ref::to_eigen(ce_ref::labels(n, k, 34, 0.2));
  smax::CrossEntropyOptions o;
  o.class_weights = ce_ref::weights(k, 35);
  o.label_smoothing = 0.1;
  const Vec<T> dl = ce_ref::dloss<T>(n, 36);
  const auto run = [&](const auto& d) {
    std::pair<Vec<T>, RowMat<T>> r;
    if (!empty_losses) r.first = Vec<T>::Constant(n, T(kSentinel));
    if (row_major) {
      RowMat<T> g = RowMat<T>::Constant(n, k, T(kSentinel));
      smax::cross_entropy_per_row(x, yv, r.first, d, g, o);
      r.second = g;
    } else {
      const ColMat<T> xc = x;
      ColMat<T> g = ColMat<T>::Constant(n, k, T(kSentinel));
      smax::cross_entropy_per_row(xc, yv, r.first, d, g, o);
      r.second = g;
    }
    return r;
  };
  const auto base = run(dl);
  const auto same = [&](const std::pair<Vec<T>, RowMat<T>>& r) {
    CHECK(ce_ref::same_bits(r.first, base.first));
    CHECK(ce_ref::same_bits(r.second, base.second));
  };
  SECTION("a RowVector") {
    const Eigen::Matrix<T, 1, Eigen::Dynamic> d = dl.transpose();
    same(run(d));
  }
  SECTION("a strided Map") {
    std::vector<T> buf(static_cast<std::size_t>(3 * n), T(99));
    for (Index i = 0; i < n; ++i) buf[static_cast<std::size_t>(3 * i)] = dl(i);
    same(run(Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<3>>(buf.data(), n)));
  }
  SECTION("an expression") { same(run(dl * T(1))); }
  SECTION("a product that Eigen evaluates") {
    const ColMat<T> eye = ColMat<T>::Identity(n, n);
    same(run(eye * dl));
  }
  SECTION("a constant expression") {
    const auto c = run(Vec<T>::Constant(n, T(0.75)));
    const auto c_plain = run(Vec<T>(Vec<T>::Constant(n, T(0.75))));
    CHECK(ce_ref::same_bits(c.first, c_plain.first));
    CHECK(ce_ref::same_bits(c.second, c_plain.second));
  }
}

TEMPLATE_TEST_CASE("per-row losses written over dloss: refused, or computed with the old dloss",
                   "[cross_entropy][per_row][aliasing]", float, double) {
  // Every other output/input overlap throws; losses over dloss is not checked. The kernel writes
  // row i's loss before it reads dloss_i for row i's gradient, so if this is accepted the
  // gradient must still be that of the dloss passed in.
  using T = TestType;
  const Index n = 9, k = 5;
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << (row_major ? ", row-major" : ", column-major"));
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(37, sizeof(T)));
  const auto yv = ce_ref::to_eigen(ce_ref::labels(n, k, 38));
  const Vec<T> dl = ce_ref::dloss<T>(n, 39);
  const auto run = [&](Vec<T>& losses, const Vec<T>& d, RowMat<T>& grad) {
    if (row_major) {
      smax::cross_entropy_per_row(x, yv, losses, d, grad, {});
    } else {
      const ColMat<T> xc = x;
      ColMat<T> g(n, k);
      smax::cross_entropy_per_row(xc, yv, losses, d, g, {});
      grad = g;
    }
  };
  Vec<T> l(n);
  RowMat<T> g(n, k);
  run(l, dl, g);
  Vec<T> shared = dl;
  RowMat<T> g2 = RowMat<T>::Constant(n, k, T(kSentinel));
  bool threw = false;
  try {
    run(shared, shared, g2);
  } catch (const std::invalid_argument& e) {
    threw = true;
    CHECK_THAT(e.what(), Contains("dloss"));
  }
  if (threw) {
    CHECK(untouched(g2));
  } else {
    CHECK(ce_ref::same_bits(shared, l));
    CHECK(ce_ref::same_bits(g2, g));
  }
}

// ---- special values -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("special values: -inf labels, NaN and +inf rows, masked rows",
                   "[cross_entropy][special]", float, double) {
  using T = TestType;
  const bool row_major = GENERATE(false, true);
  // Column-major, 5 and 9 rows are fewer than a vector holds with AVX2 and AVX-512 (interleaved),
  // or a vector and a partial one.
  const Index n = GENERATE(Index(5), Index(9)), k = 6;
  INFO(ce_ref::type_name<T>() << (row_major ? ", row-major" : ", column-major") << ", N = " << n);
  const RowMat<T> x0 = ce_ref::logits<T>(n, k, ce_ref::seed_of(40, sizeof(T)));
  const ce_ref::Labels y = ce_ref::labels(n, k, 41);
  const auto yv = ce_ref::to_eigen(y);
  const auto run = [&](const RowMat<T>& x, const smax::CrossEntropyOptions& o, Mode mode) {
    return row_major ? ce_ref::call<Eigen::RowMajor>(x, yv, o, mode, Vec<T>::Ones(n))
                     : ce_ref::call<Eigen::ColMajor>(x, yv, o, mode, Vec<T>::Ones(n));
  };
  const Index bad = 4;  // the row that gets the special value
  const auto others_match = [&](const RowMat<T>& x, const smax::CrossEntropyOptions& o) {
    // The other rows: per-row losses and gradient rows as the reference's.
    const ce_ref::Output<T> pr = run(x, o, Mode::per_row);
    ce_ref::Result ref =
        ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, Mode::per_row, ce_ref::LVec::Ones(n));
    for (Index i = 0; i < n; ++i) {
      if (i == bad) continue;
      INFO("row " << i);
      CE_CHECK(ce_ref::check_loss<T>(ref.row_loss(i), pr.losses(i), ref.row_scale(i)));
    }
    ref.bound(bad) = ce_ref::nan;  // not checked entry-wise
    CE_CHECK(ce_ref::check_grad<T>(ref, pr.grad));
    return pr;
  };
  smax::CrossEntropyOptions plain, smoothed;
  smoothed.label_smoothing = 0.1;
  smoothed.z_loss = 1e-3;

  SECTION("the label on a -inf class: +inf, with a finite gradient") {
    for (const auto& o : {plain, smoothed}) {
      RowMat<T> x = x0;
      x(bad, y[bad]) = -kInf<T>;
      CHECK(run(x, o, Mode::mean).loss == kInf<T>);
      CHECK(run(x, o, Mode::sum).loss == kInf<T>);
      const ce_ref::Output<T> pr = others_match(x, o);
      CHECK(pr.losses(bad) == kInf<T>);
      // p_y = 0: the exact gradient of that row is (p − onehot) for the defaults.
      const ce_ref::Result ref =
          ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, Mode::per_row, ce_ref::LVec::Ones(n));
      CHECK(pr.grad.row(bad).allFinite());
      CE_CHECK(ce_ref::check_grad<T>(ref, pr.grad));
    }
  }
  SECTION("-inf on other classes: probability 0, gradient exactly 0 there (no smoothing)") {
    RowMat<T> x = x0;
    for (Index j = 0; j < k; ++j)
      if (j != y[bad] && j % 2 == 0) x(bad, j) = -kInf<T>;
    const ce_ref::Output<T> pr = others_match(x, plain);
    CE_CHECK(ce_ref::check_loss<T>(
        ce_ref::cross_entropy(ce_ref::to_ld(x), y, plain, Mode::per_row, ce_ref::LVec::Ones(n))
            .row_loss(bad),
        pr.losses(bad)));
    for (Index j = 0; j < k; ++j)
      if (x(bad, j) == -kInf<T>) CHECK(pr.grad(bad, j) == 0);
    // With smoothing every class is in the target: −log 0 makes the loss +inf.
    CHECK(run(x, smoothed, Mode::per_row).losses(bad) == kInf<T>);
  }
  SECTION("a NaN in a valid row: that row's loss is NaN, the others are untouched") {
    for (const auto& o : {plain, smoothed}) {
      RowMat<T> x = x0;
      x(bad, (y[bad] + 1) % k) = kNaN<T>;
      CHECK(std::isnan(run(x, o, Mode::mean).loss));
      CHECK(std::isnan(run(x, o, Mode::sum).loss));
      const ce_ref::Output<T> pr = others_match(x, o);
      CHECK(std::isnan(pr.losses(bad)));
    }
  }
  SECTION("+inf in a valid row: NaN loss") {
    RowMat<T> x = x0;
    x(bad, 0) = kInf<T>;
    CHECK(std::isnan(run(x, plain, Mode::mean).loss));
    const ce_ref::Output<T> pr = others_match(x, plain);
    CHECK(std::isnan(pr.losses(bad)));
  }
  SECTION("a fully masked valid row: +inf, other rows untouched, no NaN gradient") {
    RowMat<T> x = x0;
    x.row(bad).setConstant(-kInf<T>);
    CHECK(run(x, plain, Mode::mean).loss == kInf<T>);
    const ce_ref::Output<T> pr = others_match(x, plain);
    CHECK(pr.losses(bad) == kInf<T>);
    CHECK(pr.grad.row(bad).allFinite());
  }
  SECTION("softcap maps +-inf to +-cap: finite, as the reference; NaN stays NaN") {
    smax::CrossEntropyOptions capped;
    capped.softcap = 4;
    RowMat<T> x = x0;
    x(bad, (y[bad] + 1) % k) = kInf<T>;
    x(bad, (y[bad] + 2) % k) = -kInf<T>;
    const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, capped, Mode::mean);
    const ce_ref::Output<T> out = run(x, capped, Mode::mean);
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, out.loss, ref.loss_scale));
    CE_CHECK(ce_ref::check_grad<T>(ref, out.grad));
    x(bad, y[bad]) = kNaN<T>;
    CHECK(std::isnan(run(x, capped, Mode::mean).loss));
  }
}

TEMPLATE_TEST_CASE("a NaN in an ignored row changes nothing", "[cross_entropy][special]", float,
                   double) {
  using T = TestType;
  const ce_ref::Combo c = GENERATE(from_range(ce_ref::all_combos()));
  if (c.ignore == 0) return;
  const Mode mode = GENERATE(Mode::mean, Mode::sum, Mode::per_row);
  const bool row_major = GENERATE(false, true);
  const Index n = 13, k = 7;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << ", " << ce_ref::name(mode)
                              << (row_major ? ", row-major" : ", column-major"));
  const std::uint64_t seed = ce_ref::seed_of(42, sizeof(T));
  RowMat<T> x = ce_ref::logits<T>(n, k, seed);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(y);
  const Vec<T> dl = ce_ref::dloss<T>(n, seed + 3);
  const Index ignored = n / 2;  // labels() always ignores the middle row
  REQUIRE(y[ignored] == o.ignore_index);
  const auto run = [&](const RowMat<T>& xx) {
    return row_major ? ce_ref::call<Eigen::RowMajor>(xx, yv, o, mode, dl)
                     : ce_ref::call<Eigen::ColMajor>(xx, yv, o, mode, dl);
  };
  x.row(ignored).setZero();
  const ce_ref::Output<T> clean = run(x);
  x(ignored, 1) = kNaN<T>;
  x(ignored, 3) = kInf<T>;
  x(ignored, 4) = -kInf<T>;
  const ce_ref::Output<T> poisoned = run(x);
  CHECK(ce_ref::same_bits_scalar(poisoned.loss, clean.loss));
  CHECK(ce_ref::same_bits(poisoned.losses, clean.losses));
  CHECK(ce_ref::same_bits(poisoned.grad, clean.grad));
  CHECK(poisoned.grad.row(ignored).isZero(0));
  if (mode == Mode::per_row) CHECK(poisoned.losses(ignored) == 0);
  if (!std::isnan(clean.loss)) CHECK(!std::isnan(poisoned.loss));
}

TEMPLATE_TEST_CASE("every row ignored, and empty batches", "[cross_entropy][special]", float,
                   double) {
  using T = TestType;
  const bool row_major = GENERATE(false, true);
  const bool z = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << (row_major ? ", row-major" : ", column-major")
                              << (z ? ", z-loss" : ""));
  smax::CrossEntropyOptions o;
  o.z_loss = z ? 1e-3 : 0;
  o.label_smoothing = 0.1;
  const auto run = [&](const RowMat<T>& x, const auto& target, Mode mode) {
    return row_major ? ce_ref::call<Eigen::RowMajor>(x, target, o, mode, Vec<T>::Ones(x.rows()))
                     : ce_ref::call<Eigen::ColMajor>(x, target, o, mode, Vec<T>::Ones(x.rows()));
  };
  SECTION("every row ignored: mean NaN, sum 0, zero gradient, per-row zeros") {
    const Index n = 11, k = 5;
    const RowMat<T> x = ce_ref::logits<T>(n, k, 43);
    const Eigen::VectorXi none = Eigen::VectorXi::Constant(n, -100);
    const ce_ref::Output<T> mean = run(x, none, Mode::mean);
    CHECK(std::isnan(mean.loss));
    CHECK(mean.grad.isZero(0));
    const ce_ref::Output<T> sum = run(x, none, Mode::sum);
    CHECK(sum.loss == T(0));
    CHECK(sum.grad.isZero(0));
    const ce_ref::Output<T> rows = run(x, none, Mode::per_row);
    CHECK(rows.losses.isZero(0));
    CHECK(rows.grad.isZero(0));
    CHECK(std::isnan(smax::cross_entropy(x, none, o)));
  }
  SECTION("N = 0: mean NaN, sum 0, empty per-row losses and gradient") {
    const Index k = GENERATE(Index(1), Index(5));
    const RowMat<T> x(0, k);
    const Eigen::VectorXi y(0);
    const RowMat<T> t(0, k);
    CHECK(std::isnan(run(x, y, Mode::mean).loss));
    CHECK(std::isnan(run(x, t, Mode::mean).loss));
    CHECK(run(x, y, Mode::sum).loss == T(0));
    CHECK(run(x, t, Mode::sum).loss == T(0));
    const ce_ref::Output<T> rows = run(x, y, Mode::per_row);
    CHECK(rows.losses.size() == 0);
    CHECK(rows.grad.rows() == 0);
    CHECK(rows.grad.cols() == k);
    ColMat<T> g;  // an empty plain grad is resized to 0 x K
    CHECK(std::isnan(smax::cross_entropy(x, y, g)));
    CHECK(g.rows() == 0);
    CHECK(g.cols() == k);
  }
  SECTION("an empty plain grad is resized to N x K") {
    const Index n = 6, k = 4;
    const RowMat<T> x = ce_ref::logits<T>(n, k, 44);
    const Eigen::VectorXi y = Eigen::VectorXi::LinSpaced(n, 0, k - 1);
    RowMat<T> g0(n, k);
    const T l0 = smax::cross_entropy(x, y, g0, o);
    RowMat<T> g;
    CHECK(ce_ref::same_bits_scalar(smax::cross_entropy(x, y, g, o), l0));
    CHECK(ce_ref::same_bits(g, g0));
  }
  SECTION("one class: loss 0 (plus the z-loss), gradient 0 (plus its z part)") {
    const Index n = 9;
    const RowMat<T> x = ce_ref::logits<T>(n, 1, 45);
    const Eigen::VectorXi y = Eigen::VectorXi::Zero(n);
    const ce_ref::Output<T> out = run(x, y, Mode::sum);
    const ce_ref::Result ref =
        ce_ref::cross_entropy(ce_ref::to_ld(x), ce_ref::Labels(n, 0), o, Mode::sum);
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, out.loss));
    CE_CHECK(ce_ref::check_grad<T>(ref, out.grad));
    if (!z) {
      CHECK(out.loss == T(0));
      CHECK(out.grad.isZero(0));
    }
  }
  SECTION("probability targets: a zero target on a -inf logit contributes nothing") {
    const Index n = 7, k = 5;
    RowMat<T> x = ce_ref::logits<T>(n, k, 46);
    RowMat<T> t = ce_ref::probs<T>(n, k, 47);
    for (Index i = 0; i < n; ++i) {
      x(i, i % k) = -kInf<T>;
      t(i, i % k) = 0;
    }
    const ce_ref::Output<T> out = run(x, t, Mode::mean);
    smax::CrossEntropyOptions plain;
    const ce_ref::Output<T> p = row_major ? ce_ref::call<Eigen::RowMajor>(x, t, plain, Mode::mean)
                                          : ce_ref::call<Eigen::ColMajor>(x, t, plain, Mode::mean);
    const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), ce_ref::to_ld(t), plain);
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, p.loss, ref.loss_scale));
    CE_CHECK(ce_ref::check_grad<T>(ref, p.grad));
    for (Index i = 0; i < n; ++i) CHECK(p.grad(i, i % k) == 0);
    CHECK(out.loss == kInf<T>);  // with smoothing, that class has a nonzero target
  }
}

// ---- bad input ----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("bad input: the right exception, a precise message, nothing written",
                   "[cross_entropy][errors]", float, double) {
  using T = TestType;
  using M = ColMat<T>;
  const Index n = 4, k = 3;
  const M x = ce_ref::logits<T>(n, k, 48);
  Eigen::VectorXi y(n);
  y << 1, 2, -100, 0;
  const M t = ce_ref::probs<T>(n, k, 49);
  M g = M::Constant(n, k, T(kSentinel));
  Vec<T> losses = Vec<T>::Constant(n, T(kSentinel));
  const Vec<T> dl = Vec<T>::Ones(n);
  const auto nothing_written = [&] {
    CHECK(untouched(g));
    CHECK(untouched(losses));
  };
  // Every entry point with the same bad arguments.
  const auto all_calls = [&](const auto& logits, const auto& target, const auto& o) {
    return std::vector<std::function<void()>>{
        [&] { smax::cross_entropy(logits, target, o); },
        [&] { smax::cross_entropy(logits, target, g, o); },
        [&] { smax::cross_entropy_per_row(logits, target, losses, o); },
        [&] { smax::cross_entropy_per_row(logits, target, losses, dl, g, o); }};
  };
  const smax::CrossEntropyOptions defaults;

  SECTION("a label equal to K") {
    Eigen::VectorXi bad = y;
    bad(1) = 3;
    for (const auto& call : all_calls(x, bad, defaults)) {
      const std::string m = message_of<std::out_of_range>(call);
      CHECK_THAT(
          m, Contains("target(1) = 3") && Contains("[0, 3)") && Contains("ignore_index (-100)"));
      nothing_written();
    }
  }
  SECTION("a label of -1 that is not ignore_index") {
    Eigen::VectorXi bad = y;
    bad(1) = -1;
    for (const auto& call : all_calls(x, bad, defaults)) {
      CHECK_THAT(message_of<std::out_of_range>(call), Contains("target(1) = -1"));
      nothing_written();
    }
    smax::CrossEntropyOptions o;
    o.ignore_index = -1;  // now it is, and row 2's -100 is no longer ignored: make it a class
    bad(2) = 0;
    CHECK_NOTHROW(smax::cross_entropy(x, bad, o));
  }
  SECTION("a bad label only in the last row: no row written") {
    Eigen::VectorXi bad = y;
    bad(n - 1) = 5;
    for (const auto& call : all_calls(x, bad, defaults)) {
      CHECK_THAT(message_of<std::out_of_range>(call), Contains("target(3) = 5"));
      nothing_written();
    }
    // Column-major with more rows than a vector holds, and the last one bad.
    const Index big_n = 4 * ce_ref::lanes<T> + 3;
    const M xb = ce_ref::logits<T>(big_n, 40, 50);
    Eigen::VectorXi yb = Eigen::VectorXi::Zero(big_n);
    yb(big_n - 1) = 40;
    M gb = M::Constant(big_n, 40, T(kSentinel));
    CHECK_THROWS_AS(smax::cross_entropy(xb, yb, gb), std::out_of_range);
    CHECK(untouched(gb));
  }
  SECTION("bad labels among many rows: int and int64 labels, an ignore_index no int equals") {
    // More rows than a vector of labels holds on any instruction set: the labels are checked a
    // vector at a time, and the message still names the first bad one.
    const Index big_n = 4 * 16 + 5;
    const M xb = ce_ref::logits<T>(big_n, 7, 51);
    Eigen::VectorXi yi = Eigen::VectorXi::Zero(big_n);
    for (Index i = 0; i < big_n; ++i) yi(i) = static_cast<int>(i % 7);
    yi(9) = -100;  // ignored
    yi(21) = 7;    // K
    yi(40) = -1;
    Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> yl = yi.cast<std::int64_t>();
    M gb = M::Constant(big_n, 7, T(kSentinel));
    CHECK_THAT(message_of<std::out_of_range>([&] { smax::cross_entropy(xb, yi, gb); }),
               Contains("target(21) = 7"));
    CHECK_THAT(message_of<std::out_of_range>([&] { smax::cross_entropy(xb, yl, gb); }),
               Contains("target(21) = 7"));
    CHECK(untouched(gb));
    yi(21) = 6;
    yl(21) = 6;
    CHECK_THAT(message_of<std::out_of_range>([&] { smax::cross_entropy(xb, yi); }),
               Contains("target(40) = -1"));
    CHECK_THAT(message_of<std::out_of_range>([&] { smax::cross_entropy(xb, yl); }),
               Contains("target(40) = -1"));
    yi(40) = 0;
    yl(40) = 0;
    // The mean over the 68 rows that count, from the per-row losses (row 9 gets 0).
    Vec<T> rows(big_n);
    smax::cross_entropy_per_row(xb, yi, rows);
    CHECK(rows(9) == T(0));
    const double mean = static_cast<double>(rows.sum()) / static_cast<double>(big_n - 1);
    CHECK(std::abs(static_cast<double>(smax::cross_entropy(xb, yi)) - mean) <=
          1e-5 * std::abs(mean));
    CHECK(smax::cross_entropy(xb, yl) == smax::cross_entropy(xb, yi));
    // No int equals this ignore_index: row 9's -100 is then a bad label; an int64 label can.
    smax::CrossEntropyOptions o;
    o.ignore_index = std::int64_t{1} << 40;
    CHECK_THAT(message_of<std::out_of_range>([&] { smax::cross_entropy(xb, yi, o); }),
               Contains("target(9) = -100"));
    yl(9) = o.ignore_index;
    CHECK(smax::cross_entropy(xb, yl, o) == smax::cross_entropy(xb, yi));
  }
  SECTION("labels of the wrong length or shape") {
    Eigen::VectorXi short_labels(3);
    short_labels << 0, 1, 2;
    for (const auto& call : all_calls(x, short_labels, defaults)) {
      CHECK_THAT(message_of<std::invalid_argument>(call),
                 Contains("target is 3x1") && Contains("4x3") && Contains("N = 4"));
      nothing_written();
    }
    const Eigen::MatrixXi square = Eigen::MatrixXi::Zero(2, 2);
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(x, square); }),
               Contains("target is 2x2"));
  }
  SECTION("a grad of the wrong shape that cannot be resized") {
    M big = M::Constant(n, k + 1, T(kSentinel));
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy(x, y, big.block(0, 0, n, k - 1)); }),
               Contains("grad is 4x2 but must be 4x3"));
    CHECK(untouched(big));
    M wrong = M::Constant(n, k - 1, T(kSentinel));  // a non-empty plain matrix is not resized
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(x, y, wrong); }),
               Contains("grad is 4x2 but must be 4x3"));
    CHECK(untouched(wrong));
    CHECK(wrong.cols() == k - 1);
    CHECK_THAT(message_of<std::invalid_argument>([&] {
                 smax::cross_entropy_per_row(x, y, losses, dl, big.block(0, 0, n - 1, k));
               }),
               Contains("grad is 3x3 but must be 4x3"));
    CHECK(untouched(big));
    CHECK(untouched(losses));
  }
  SECTION("label_smoothing outside [0, 1] or NaN") {
    for (const double v : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
      smax::CrossEntropyOptions o;
      o.label_smoothing = v;
      for (const auto& call : all_calls(x, y, o)) {
        CHECK_THAT(message_of<std::invalid_argument>(call),
                   Contains("options.label_smoothing") && Contains("[0, 1]"));
        nothing_written();
      }
    }
    smax::CrossEntropyOptions edge;
    edge.label_smoothing = 1.0;  // the closed interval's ends are fine
    CHECK_NOTHROW(smax::cross_entropy(x, y, edge));
  }
  SECTION("z_loss negative, NaN or infinite") {
    for (const double v : {-1e-4, std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity()}) {
      smax::CrossEntropyOptions o;
      o.z_loss = v;
      for (const auto& call : all_calls(x, y, o)) {
        CHECK_THAT(message_of<std::invalid_argument>(call), Contains("options.z_loss"));
        nothing_written();
      }
    }
  }
  SECTION("softcap negative, NaN or infinite") {
    for (const double v : {-1.0, std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity()}) {
      smax::CrossEntropyOptions o;
      o.softcap = v;
      for (const auto& call : all_calls(x, y, o)) {
        CHECK_THAT(message_of<std::invalid_argument>(call), Contains("options.softcap"));
        nothing_written();
      }
    }
  }
  SECTION("softcap and z_loss outside the logits' type (fuzzing found them giving NaN)") {
    // float: 1e-40 is subnormal (1/c overflows), 1e300 overflows; double: 5e-324 has 1/c = inf.
    const std::vector<double> caps =
        sizeof(T) == 4 ? std::vector<double>{1e-40, 1e300} : std::vector<double>{5e-324};
    for (const double v : caps) {
      smax::CrossEntropyOptions o;
      o.softcap = v;
      for (const auto& call : all_calls(x, y, o)) {
        CHECK_THAT(message_of<std::invalid_argument>(call),
                   Contains("options.softcap = ") && Contains("outside the range of"));
        nothing_written();
      }
    }
    smax::CrossEntropyOptions o;
    if (sizeof(T) == 4) {  // every positive finite double is a double
      o.z_loss = 1e300;
      for (const auto& call : all_calls(x, y, o)) {
        CHECK_THAT(message_of<std::invalid_argument>(call),
                   Contains("options.z_loss = 1e+300 is outside the range of float"));
        nothing_written();
      }
    }
    o.z_loss = 0;
    o.softcap = sizeof(T) == 4 ? 1e-30 : 1e-300;  // tiny but in range: accepted
    CHECK_NOTHROW(smax::cross_entropy(x, y, o));
  }
  SECTION("class_weights of the wrong size") {
    smax::CrossEntropyOptions o;
    o.class_weights = Eigen::VectorXd::Ones(2);
    for (const auto& call : all_calls(x, y, o)) {
      CHECK_THAT(message_of<std::invalid_argument>(call),
                 Contains("options.class_weights has 2 entries") && Contains("K = 3"));
      nothing_written();
    }
    for (const auto& call : all_calls(x, t, o)) {  // probability targets too
      CHECK_THAT(message_of<std::invalid_argument>(call), Contains("options.class_weights"));
      nothing_written();
    }
  }
  SECTION("probability targets of the wrong shape") {
    const M wrong = M::Constant(n, k - 1, T(0.5));
    for (const auto& call : all_calls(x, wrong, defaults)) {
      CHECK_THAT(message_of<std::invalid_argument>(call),
                 Contains("target is 4x2") && Contains("logits are 4x3"));
      nothing_written();
    }
    const M transposed = M::Constant(k, n, T(0.25));
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(x, transposed); }),
               Contains("target is 3x4"));
  }
  SECTION("K == 0") {
    const M none(n, 0);
    M g0 = M::Constant(n, 0, T(0));
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(none, y); }),
               Contains("4x0") && Contains("K must be at least 1"));
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(none, y, g0); }),
               Contains("K must be at least 1"));
    CHECK_THAT(
        message_of<std::invalid_argument>([&] { smax::cross_entropy_per_row(none, y, losses); }),
        Contains("K must be at least 1"));
    CHECK(untouched(losses));
  }
  SECTION("Reduction::none passed to cross_entropy") {
    smax::CrossEntropyOptions o;
    o.reduction = smax::Reduction::none;
    const std::string m1 = message_of<std::invalid_argument>([&] { smax::cross_entropy(x, y, o); });
    const std::string m2 =
        message_of<std::invalid_argument>([&] { smax::cross_entropy(x, y, g, o); });
    for (const auto& m : {m1, m2})
      CHECK_THAT(m, Contains("Reduction::none") && Contains("cross_entropy_per_row"));
    nothing_written();
    // per_row does not look at the reduction
    CHECK_NOTHROW(smax::cross_entropy_per_row(x, y, losses, o));
  }
  SECTION("grad overlapping the target") {
    M tt = t;
    const M keep = tt;
    CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(x, tt, tt); }),
               Contains("grad overlaps target"));
    CHECK(tt == keep);
    M big = M::Constant(n + 1, k, T(0.25));
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy(x, big.topRows(n), big.bottomRows(n)); }),
               Contains("grad overlaps target"));
    CHECK((big.array() == T(0.25)).all());
  }
  SECTION("grad partially overlapping the logits (a shifted block)") {
    for (const bool row_major : {false, true}) {
      INFO((row_major ? "row-major" : "column-major"));
      const auto check = [&](auto& big) {
        big.topRows(n) = x;
        big.row(n).setConstant(T(kSentinel));
        const auto before = big.eval();
        const auto logits = big.topRows(n);
        auto grad = big.bottomRows(n);
        CHECK_THAT(message_of<std::invalid_argument>([&] { smax::cross_entropy(logits, y, grad); }),
                   Contains("grad overlaps the logits"));
        CHECK(big == before);
        const auto shifted = big.block(0, 1, n, k - 1);
        auto grad2 = big.block(0, 0, n, k - 1);
        const Eigen::VectorXi y_shifted = y.cwiseMin(int(k - 2));  // labels of k - 1 classes
        CHECK_THAT(message_of<std::invalid_argument>(
                       [&] { smax::cross_entropy_per_row(shifted, y_shifted, losses, dl, grad2); }),
                   Contains("grad overlaps the logits"));
        CHECK(big == before);
        CHECK(untouched(losses));
      };
      if (row_major) {
        RowMat<T> big(n + 1, k);
        check(big);
      } else {
        M big(n + 1, k);
        check(big);
      }
    }
  }
  SECTION("dloss and losses of the wrong length, and overlapping outputs") {
    const Vec<T> short_dl = Vec<T>::Ones(n - 1);
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy_per_row(x, y, losses, short_dl, g); }),
               Contains("dloss is 3x1") && Contains("N = 4"));
    nothing_written();
    Vec<T> short_losses = Vec<T>::Constant(n - 1, T(kSentinel));
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy_per_row(x, y, short_losses, dl, g); }),
               Contains("losses is 3x1") && Contains("N = 4"));
    nothing_written();
    CHECK(untouched(short_losses));
    // losses inside the grad, grad over dloss, losses over the logits
    M big = M::Constant(n, k, T(kSentinel));
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy_per_row(x, y, big.col(0), dl, big); }),
               Contains("losses overlaps"));
    CHECK(untouched(big));
    M gd = M::Constant(n, k, T(kSentinel));
    CHECK_THAT(message_of<std::invalid_argument>(
                   [&] { smax::cross_entropy_per_row(x, y, losses, gd.col(1), gd); }),
               Contains("grad overlaps dloss"));
    CHECK(untouched(gd));
    nothing_written();
    M xl = x;
    CHECK_THAT(
        message_of<std::invalid_argument>([&] { smax::cross_entropy_per_row(xl, y, xl.col(2)); }),
        Contains("losses overlaps"));
    CHECK(xl == x);
  }
}
