// softmax_backward and log_softmax_backward: against the long double formula for every K, N,
// layout and axis; against double-precision central differences of smax's own forward pass for
// small K; and the identities (each row of dx sums to 0; the Jacobian is symmetric). Budgets and
// the finite-difference tolerance are stated in reference.hpp.
#include "reference.hpp"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace {

using Eigen::Dynamic;
using ref::Index;
using ref::ld;
template <class T>
using RowMatX = ref::Mat<T>;

/// Both backward passes on `in` (rows are distributions) in one storage order and axis, each
/// checked against the reference and the row-sum identity.
template <class T, int Storage, class Axis>
void check_backward(const ref::backward_inputs<T>& in, Axis axis) {
  constexpr bool colwise = !Axis::by_rows;
  using M = Eigen::Matrix<T, Dynamic, Dynamic, Storage>;
  const ref::LMat y = ref::to_ld(in.y), dy = ref::to_ld(in.dy);
  const ref::LMat logp = ref::to_ld(in.logp), dlogp = ref::to_ld(in.dlogp);

  const M dx = smax::softmax_backward(ref::stored<Storage>(in.y, colwise),
                                      ref::stored<Storage>(in.dy, colwise), axis);
  const ref::LMat got = ref::to_ld(dx, colwise);
  const ref::backward_ref r = ref::softmax_backward(y, dy);
  REF_CHECK(ref::check_backward<T>("softmax_backward", r, got));
  REF_CHECK(ref::check_rows_sum_to_zero<T>("softmax_backward", r, y, dy, true, got));

  const M dxl = smax::log_softmax_backward(ref::stored<Storage>(in.logp, colwise),
                                           ref::stored<Storage>(in.dlogp, colwise), axis);
  const ref::LMat gotl = ref::to_ld(dxl, colwise);
  const ref::backward_ref rl = ref::log_softmax_backward(logp, dlogp);
  REF_CHECK(ref::check_backward<T>("log_softmax_backward", rl, gotl));
  const ref::LMat p = logp.array().exp();
  REF_CHECK(ref::check_rows_sum_to_zero<T>("log_softmax_backward", rl, p, dlogp, false, gotl));
}

/// sum_c w_c f(x)_c in long double, with f = smax's softmax or log_softmax in double.
template <class Forward>
ld weighted(const Eigen::RowVectorXd& x, const Eigen::RowVectorXd& w, Forward&& forward) {
  const Eigen::RowVectorXd f = forward(x);
  ref::exact_sum s;
  for (Index c = 0; c < x.size(); ++c) s.add(static_cast<ld>(w(c)) * f(c));
  return s.value();
}

/// Central difference of x -> sum_c w_c f(x)_c along class j, in double.
template <class Forward>
ld central_difference(const Eigen::RowVectorXd& x, const Eigen::RowVectorXd& w, Index j,
                      Forward&& forward) {
  const double h = ref::fd_step;  // exact steps for |x| < 2^36
  Eigen::RowVectorXd xp = x, xm = x;
  xp(j) += h;
  xm(j) -= h;
  return (weighted(xp, w, forward) - weighted(xm, w, forward)) / (xp(j) - xm(j));
}

}  // namespace

TEMPLATE_TEST_CASE("backward passes match the long double reference", "[backward]", float, double) {
  using T = TestType;
  const Index k = GENERATE(from_range(ref::class_counts<T>()));
  const Index n = GENERATE_COPY(from_range(ref::batch_sizes<T>(k)));
  const bool row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  // Probabilities of ordinary logits, down to subnormal and 0, and with masked classes and rows.
  const ref::scenario s =
      GENERATE(ref::scenario::standard, ref::scenario::spread, ref::scenario::masked);
  INFO("K = " << k << ", N = " << n << (row_major ? ", row-major" : ", column-major")
              << (colwise ? ", colwise" : ", rowwise") << ", logits: " << ref::name(s));
  const auto in = ref::make_backward_inputs<T>(
      s, n, k, ref::seed_of(static_cast<std::uint64_t>(s), n, k, 100 + sizeof(T)));
  ref::for_layout(row_major, colwise, [&](auto storage, auto axis) {
    check_backward<T, decltype(storage)::value>(in, axis);
  });
}

TEMPLATE_TEST_CASE("backward passes agree with central differences of the forward pass",
                   "[backward][fd]", float, double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const Index k = GENERATE_COPY(values<Index>({1, 2, 3, 5, 8, l + 1, 2 * l + 1}));
  const Index n = 4;
  INFO("K = " << k);
  const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(200, k));
  const auto up = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(201, k));
  const RowMatX<T>&dy = up.dy, &dlogp = up.dlogp;

  // The analytic gradients in T, from smax's own forward outputs in T.
  const RowMatX<T> y = smax::softmax(x), logp = smax::log_softmax(x);
  const RowMatX<T> dx = smax::softmax_backward(y, dy),
                   dxl = smax::log_softmax_backward(logp, dlogp);
  // Magnitudes from the reference at the exact forward values.
  const ref::LMat xl = ref::to_ld(x);
  const ref::backward_ref r = ref::softmax_backward(ref::softmax(xl), ref::to_ld(dy));
  const ref::backward_ref rl = ref::log_softmax_backward(ref::log_softmax(xl), ref::to_ld(dlogp));

  auto softmax_d = [](const Eigen::RowVectorXd& v) { return Eigen::RowVectorXd(smax::softmax(v)); };
  auto log_softmax_d = [](const Eigen::RowVectorXd& v) {
    return Eigen::RowVectorXd(smax::log_softmax(v));
  };
  ref::verdict v("softmax_backward vs finite differences", ref::type_name<T>());
  ref::verdict vl("log_softmax_backward vs finite differences", ref::type_name<T>());
  for (Index i = 0; i < n; ++i) {
    const Eigen::RowVectorXd xi = x.row(i).template cast<double>();
    for (Index j = 0; j < k; ++j) {
      const ld fd = central_difference(xi, dy.row(i).template cast<double>(), j, softmax_d);
      const ld fdl = central_difference(xi, dlogp.row(i).template cast<double>(), j, log_softmax_d);
      const ld mag = r.mag(i, j), magl = rl.mag(i, j);
      v.add<T>(i, j, dx(i, j), fd, ref::eps<T> * mag,
               ref::fd_eps * ref::eps<T> * mag + ref::fd_abs * (1 + mag));
      vl.add<T>(i, j, dxl(i, j), fdl, ref::eps<T> * magl,
                ref::fd_eps * ref::eps<T> * magl + ref::fd_abs * (1 + magl));
    }
  }
  REF_CHECK(v);
  REF_CHECK(vl);
  // A wrong formula is off by O(1); the gradients are O(0.1) here, so the check has teeth (with
  // one class they are exactly 0: softmax is constant).
  if (k > 1) {
    CHECK(dx.cwiseAbs().maxCoeff() > T(0.01));
    CHECK(dxl.cwiseAbs().maxCoeff() > T(0.01));
  } else {
    CHECK(dx.isZero(0));
    CHECK(dxl.isZero(0));
  }
}

TEMPLATE_TEST_CASE("softmax_backward is also the JVP: <w, J v> = <J w, v>", "[backward]", float,
                   double) {
  using T = TestType;
  const Index l = ref::lanes<T>;
  const Index k = GENERATE_COPY(values<Index>({2, l + 1, 16 * l - 1}));
  const Index n = l + 1;
  const auto a = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(300, k));
  const auto b = ref::make_backward_inputs<T>(ref::scenario::standard, n, k, ref::seed_of(301, k));
  const RowMatX<T>&y = a.y, &v = a.dy, &w = b.dy;
  const RowMatX<T> jv = smax::softmax_backward(y, v), jw = smax::softmax_backward(y, w);
  for (Index i = 0; i < n; ++i) {
    ref::exact_sum lhs, rhs, scale;
    for (Index j = 0; j < k; ++j) {
      lhs.add(static_cast<ld>(w(i, j)) * jv(i, j));
      rhs.add(static_cast<ld>(jw(i, j)) * v(i, j));
      // Each side's error: sum_j |w_j| 16 eps |y_j| (|v_j| + sum_c |y_c v_c|) <= 16 eps 2 |y_j|.
      scale.add(2 * std::fabs(static_cast<ld>(y(i, j))));
    }
    INFO("row " << i << ": " << static_cast<double>(lhs.value()) << " vs "
                << static_cast<double>(rhs.value()));
    CHECK(std::fabs(lhs.value() - rhs.value()) <=
          2 * ref::backward_eps * ref::eps<T> * scale.value());
  }
}

TEMPLATE_TEST_CASE("backward passes: masked classes, NaN rows and vectors", "[backward][special]",
                   float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity();
  const Index l = ref::lanes<T>;
  const Index n = 2 * l + 1, k = 2 * l + 3;
  const auto in = ref::make_backward_inputs<T>(ref::scenario::masked, n, k, ref::seed_of(400));
  const bool row_major = GENERATE(false, true);
  const bool colwise = GENERATE(false, true);
  INFO((row_major ? "row-major" : "column-major") << (colwise ? ", colwise" : ", rowwise"));

  RowMatX<T> dy = in.dy, dlogp = in.dlogp;
  dy(1, 2) = std::numeric_limits<T>::quiet_NaN();  // poisons row 1 only
  dlogp(n - 1, k - 1) = std::numeric_limits<T>::quiet_NaN();
  RowMatX<T> dx, dxl;
  ref::for_layout(row_major, colwise, [&](auto storage, auto axis) {
    constexpr int S = decltype(storage)::value;
    using M = Eigen::Matrix<T, Dynamic, Dynamic, S>;
    const M a =
        smax::softmax_backward(ref::stored<S>(in.y, colwise), ref::stored<S>(dy, colwise), axis);
    const M b = smax::log_softmax_backward(ref::stored<S>(in.logp, colwise),
                                           ref::stored<S>(dlogp, colwise), axis);
    dx = colwise ? RowMatX<T>(a.transpose()) : RowMatX<T>(a);
    dxl = colwise ? RowMatX<T>(b.transpose()) : RowMatX<T>(b);
  });
  for (Index i = 0; i < n; ++i) {
    INFO("row " << i);
    if (i == 1) {
      CHECK(dx.row(i).array().isNaN().all());
    } else {
      CHECK(dx.row(i).allFinite());
    }
    if (i == n - 1) {
      CHECK(dxl.row(i).array().isNaN().all());
      continue;
    }
    CHECK(dxl.row(i).allFinite());
    for (Index j = 0; j < k; ++j) {
      if (in.logp(i, j) == -inf) {  // a masked class: p = 0, so dx = dlogp exactly
        CHECK(dxl(i, j) == dlogp(i, j));
        if (i != 1) CHECK(dx(i, j) == 0);
      }
    }
  }
  // And all of it against the reference (which has the same NaN rows).
  const ref::backward_ref r = ref::softmax_backward(ref::to_ld(in.y), ref::to_ld(dy));
  const ref::backward_ref rl = ref::log_softmax_backward(ref::to_ld(in.logp), ref::to_ld(dlogp));
  REF_CHECK(ref::check_backward<T>("softmax_backward", r, ref::to_ld(dx)));
  REF_CHECK(ref::check_backward<T>("log_softmax_backward", rl, ref::to_ld(dxl)));

  SECTION("a vector is one distribution") {
    const Eigen::Matrix<T, Dynamic, 1> yv = in.y.row(2).transpose(), dyv = in.dy.row(2).transpose();
    const Eigen::Matrix<T, Dynamic, 1> dxv = smax::softmax_backward(yv, dyv, smax::rowwise);
    REF_CHECK(ref::check_softmax_backward<T>(ref::to_ld(yv, true), ref::to_ld(dyv, true),
                                             ref::to_ld(dxv, true)));
  }
}

TEMPLATE_TEST_CASE("log_softmax_backward: a subnormal exp(logp) times a large sum keeps its digits",
                   "[backward][special]", float, double) {
  // Fuzzing found it: exp(logp_j) subnormal (or 0) has only an absolute accuracy, which the
  // product with sum(dlogp) magnifies far beyond the budget (13 149 eps in double at logp = -720
  // and sum 1e20; at logp = -960 and sum -4.6e300, exp underflows to 0 while the product is
  // -1.1e-114). The product is formed as (e^logp 2^e)(sum 2^-e), sum's exponent e. Every lane
  // of a vector and the tail, along memory (row-major) and across it (column-major, colwise).
  using T = TestType;
  const bool f = sizeof(T) == 4;
  const auto depth_and_sum = GENERATE(std::pair<double, double>{-95, 1e30},
                                      std::pair<double, double>{-720, 1e20},
                                      std::pair<double, double>{-120, -3e37},
                                      std::pair<double, double>{-960, -4.6e300});
  if (f != (depth_and_sum.first > -200)) return;  // the first and third are float's cases
  const Index k = 2 * ref::lanes<T> + 3;
  RowMatX<T> logp = RowMatX<T>::Zero(1, k), dlogp = RowMatX<T>::Zero(1, k);
  const T deep = static_cast<T>(depth_and_sum.first);
  for (Index j = 0; j + 1 < k; ++j) logp(0, j) = deep + T(j) / 4;  // subnormal exps, and normal
  dlogp(0, k - 1) = static_cast<T>(depth_and_sum.second);
  INFO(ref::type_name<T>() << ", logp from " << deep << ", sum " << dlogp(0, k - 1));
  const ref::backward_ref r = ref::log_softmax_backward(ref::to_ld(logp), ref::to_ld(dlogp));
  const RowMatX<T> dx = smax::log_softmax_backward(logp, dlogp);
  REF_CHECK(ref::check_backward<T>("log_softmax_backward", r, ref::to_ld(dx)));
  // The same distribution as a column of a row-major matrix (vectorized across the columns),
  // beside scaled copies of itself.
  Eigen::Matrix<T, Dynamic, Dynamic, Eigen::RowMajor> lc(k, 5), dc(k, 5);
  for (Index c = 0; c < 5; ++c) {
    lc.col(c) = logp.row(0).transpose();
    dc.col(c) = dlogp.row(0).transpose() * T(c + 1);
  }
  const Eigen::Matrix<T, Dynamic, Dynamic, Eigen::RowMajor> dxc =
      smax::log_softmax_backward(lc, dc, smax::colwise);
  const RowMatX<T> col0 = dxc.col(0).transpose();
  REF_CHECK(ref::check_backward<T>("log_softmax_backward, colwise", r, ref::to_ld(col0)));
}
