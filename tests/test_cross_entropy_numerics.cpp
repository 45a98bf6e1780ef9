// The numerics of smax::cross_entropy (ce_reference.hpp states the budgets): the gradient is the
// derivative of the returned loss (double-precision central differences, every option and
// combination); the reference is the derivative of its own loss; agreement with the composition
// of smax::log_softmax and smax::softmax with a plain gather and mean on adversarial logits; the
// tiny gradients of confident predictions; reductions over a million rows.
#include "ce_reference.hpp"

#include <cfloat>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace {

using ce_ref::Combo;
using ce_ref::Index;
using ce_ref::ld;
using ce_ref::Mode;
using ce_ref::RowMat;
using ce_ref::Vec;
template <class T>
using ColMat = ce_ref::ColMat<T>;

/// The loss that smax returns for x (stored as X), or Σ dloss_i·l_i for per-row losses.
template <class X, class Target>
ld loss_of(const X& x, const Target& target, const smax::CrossEntropyOptions& o, Mode mode,
           const Vec<double>& dl) {
  if (mode != Mode::per_row) return smax::cross_entropy(x, target, o);
  Vec<double> l(x.rows());
  smax::cross_entropy_per_row(x, target, l, o);
  ce_ref::exact_sum s;
  for (Index i = 0; i < x.rows(); ++i) s.add(static_cast<ld>(dl(i)) * l(i));
  return s.value();
}

}  // namespace

// ---- the gradient is the derivative of the loss -------------------------------------------------

TEST_CASE("the gradient is the central difference of the returned loss, every option",
          "[cross_entropy][gradcheck]") {
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;  // ignore_index concerns labels only
  const Mode mode = GENERATE(Mode::mean, Mode::sum, Mode::per_row);
  // Column-major (rows side by side, with a remainder) and row-major (contiguous, K tail).
  const bool row_major = GENERATE(false, true);
  const Index n = row_major ? 3 : 5, k = row_major ? 9 : 3;
  INFO(c.describe() << (probs ? ", probability targets" : "") << ", " << ce_ref::name(mode)
                    << (row_major ? ", row-major" : ", column-major"));
  const std::uint64_t seed = ce_ref::seed_of(20, static_cast<std::uint64_t>(row_major));
  const RowMat<double> x0 = ce_ref::logits<double>(n, k, seed, c.capped ? 6.0 : 2.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const Vec<double> dl = ce_ref::dloss<double>(n, seed + 1);
  const RowMat<double> t = ce_ref::probs<double>(n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(ce_ref::labels_of(c, n, k, seed + 2));

  const auto check = [&](auto storage, const auto& target) {
    using M = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, decltype(storage)::value>;
    const ce_ref::Output<double> out =
        ce_ref::call<decltype(storage)::value>(x0, target, o, mode, dl);
    M x = x0;
    const ld f0 = loss_of(x, target, o, mode, dl);
    if (std::isnan(f0)) {  // every row ignored
      CHECK(out.grad.isZero(0.0));
      return;
    }
    const double h = ce_ref::fd_h;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < k; ++j) {
        const double keep = x(i, j);
        x(i, j) = keep + h;
        const ld up = loss_of(x, target, o, mode, dl);
        x(i, j) = keep - h;
        const ld down = loss_of(x, target, o, mode, dl);
        x(i, j) = keep;
        const ld fd = (up - down) / (2 * h), g = out.grad(i, j);
        INFO("grad(" << i << ", " << j << ") = " << g << ", central difference " << fd);
        CHECK(std::fabs(g - fd) <= ce_ref::fd_atol + ce_ref::fd_rtol * std::fabs(g));
      }
  };
  if (row_major) {
    if (probs) {
      check(std::integral_constant<int, Eigen::RowMajor>{}, t);
    } else {
      check(std::integral_constant<int, Eigen::RowMajor>{}, yv);
    }
  } else if (probs) {
    check(std::integral_constant<int, Eigen::ColMajor>{}, t);
  } else {
    check(std::integral_constant<int, Eigen::ColMajor>{}, yv);
  }
}

TEST_CASE("the reference's gradient is the derivative of its own loss",
          "[cross_entropy][gradcheck][reference]") {
  // Checks the oracle itself: long double central differences of ce_ref's loss.
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const Mode mode = GENERATE(Mode::mean, Mode::sum, Mode::per_row);
  INFO(c.describe() << (probs ? ", probability targets" : "") << ", " << ce_ref::name(mode));
  const Index n = 4, k = 5;
  const std::uint64_t seed = ce_ref::seed_of(21);
  ce_ref::LMat x = ce_ref::to_ld(ce_ref::logits<double>(n, k, seed, c.capped ? 6.0 : 2.0));
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const ce_ref::LVec dl = ce_ref::to_ld(ce_ref::dloss<double>(n, seed + 1));
  const ce_ref::LMat t = ce_ref::to_ld(ce_ref::probs<double>(n, k, seed + 2));
  const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
  const auto f = [&](const ce_ref::LMat& xx) {
    return probs ? ce_ref::cross_entropy(xx, t, o, mode, dl)
                 : ce_ref::cross_entropy(xx, y, o, mode, dl);
  };
  const ce_ref::Result r = f(x);
  const ld h = 1e-5L;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) {
      const ld keep = x(i, j);
      x(i, j) = keep + h;
      const ld up = f(x).loss;
      x(i, j) = keep - h;
      const ld down = f(x).loss;
      x(i, j) = keep;
      const ld fd = (up - down) / (2 * h);
      INFO("grad(" << i << ", " << j << ") = " << r.grad(i, j) << ", central difference " << fd);
      CHECK(std::fabs(r.grad(i, j) - fd) <= 1e-9L * (1 + std::fabs(fd)));
    }
  // The per-row losses add up to the reduced loss.
  if (mode == Mode::sum) CHECK(std::fabs(r.row_loss.sum() - r.loss) <= 1e-15L * r.loss);
}

// ---- adversarial logits against the composition of smax's own softmax family -----------------

namespace {

enum class Adversary { masked, near_max, near_lowest, plus_minus_max, offset_1e30, one_hot };

const char* name(Adversary a) {
  switch (a) {
    case Adversary::masked:
      return "-inf entries (masked classes)";
    case Adversary::near_max:
      return "rows near +max/2";
    case Adversary::near_lowest:
      return "rows near -max/2";
    case Adversary::plus_minus_max:
      return "+max/2 and -max/2 in one row";
    case Adversary::offset_1e30:
      return "offsets of +-1e30";
    case Adversary::one_hot:
      return "one logit 50 to 100 above the rest";
  }
  return "";
}

/// Adversarial logits and labels; labels never sit on a -inf class.
template <class T>
std::pair<RowMat<T>, ce_ref::Labels> adversarial(Adversary a, Index n, Index k,
                                                 std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 3.0);
  std::uniform_int_distribution<Index> cls(0, k - 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const ld half = static_cast<ld>(FLT_MAX) / 2;  // near overflow in float; in double, too
  RowMat<T> x(n, k);
  ce_ref::Labels y(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    y[i] = cls(rng);
    // float: 50..80 (exp(-80) is still normal), double: 50..100
    const ld margin = 50 + (sizeof(T) == 4 ? 30 : 50) * u(rng);
    for (Index j = 0; j < k; ++j) {
      ld v = 0;
      switch (a) {
        case Adversary::masked:
          v = u(rng) < 0.3 && j != y[i] ? -ce_ref::inf : normal(rng);
          break;
        case Adversary::near_max:  // ties and gaps of max/2^12: one-hot with exact ties
          v = half * (1 - std::ldexp(1.0L, -12) * static_cast<int>(4 * u(rng)));
          break;
        case Adversary::near_lowest:
          v = -half * (1 + std::ldexp(1.0L, -12) * static_cast<int>(4 * u(rng)));
          break;
        case Adversary::plus_minus_max:
          v = u(rng) < 0.5 ? half : -half;
          break;
        case Adversary::offset_1e30:
          v = (i % 2 ? -1e30L : 1e30L) + normal(rng);
          break;
        case Adversary::one_hot:  // exact differences: multiples of 1/16
          v = std::round(16 * normal(rng) / 3) / 16 + (j == y[i] ? std::round(margin) : 0);
          break;
      }
      x(i, j) = static_cast<T>(v);
    }
  }
  return {x, y};
}

}  // namespace

TEMPLATE_TEST_CASE("agrees with log_softmax + gather + mean on adversarial logits",
                   "[cross_entropy][adversarial]", float, double) {
  using T = TestType;
  const Adversary a =
      GENERATE(Adversary::masked, Adversary::near_max, Adversary::near_lowest,
               Adversary::plus_minus_max, Adversary::offset_1e30, Adversary::one_hot);
  const auto shape = GENERATE(values<std::pair<Index, Index>>({{1, 7}, {11, 9}, {13, 40}}));
  const bool row_major = GENERATE(false, true);
  const Index n = shape.first, k = shape.second;
  INFO(ce_ref::type_name<T>() << ", " << name(a) << ", N = " << n << ", K = " << k
                              << (row_major ? ", row-major" : ", column-major"));
  const auto [x, y] = adversarial<T>(a, n, k, ce_ref::seed_of(22, n, k, sizeof(T)));
  const auto yv = ce_ref::to_eigen(y);

  T loss;
  RowMat<T> g, lp, p;
  if (row_major) {
    RowMat<T> gs(n, k);
    loss = smax::cross_entropy(x, yv, gs);
    g = gs;
    lp = smax::log_softmax(x);
    p = smax::softmax(x);
  } else {
    const ColMat<T> xc = x;
    ColMat<T> gs(n, k), lps, ps;
    loss = smax::cross_entropy(xc, yv, gs);
    lps = smax::log_softmax(xc);
    ps = smax::softmax(xc);
    g = gs;
    lp = lps;
    p = ps;
  }
  // The composition: gather −log_softmax at the labels and average; (softmax − onehot)/N with
  // the label's entry as −Σ_{j≠y} softmax_j.
  ce_ref::exact_sum nll;
  for (Index i = 0; i < n; ++i) nll.add(-static_cast<ld>(lp(i, y[i])));
  const ld composed = nll.value() / n;
  const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, {});
  CE_CHECK(ce_ref::check_loss<T>(ref.loss, loss, ref.loss_scale));
  INFO("smax " << loss << ", composition " << composed);
  CHECK(std::isfinite(loss));
  // log_softmax is within 8 (float) / 16 (double) ulp of max(|lp|, 1) (reference.hpp).
  ld allowed = 0;
  for (Index i = 0; i < n; ++i)
    allowed += 32 * ce_ref::eps<T> * std::max(std::fabs(static_cast<ld>(lp(i, y[i]))), 1.0L);
  CHECK(std::fabs(static_cast<ld>(loss) - composed) <= allowed / n);

  CE_CHECK(ce_ref::check_grad<T>(ref, g));
  ld worst_tiny = 0;
  for (Index i = 0; i < n; ++i) {
    ce_ref::exact_sum other;
    for (Index j = 0; j < k; ++j) {
      const ld pj = p(i, j);
      if (j != y[i]) other.add(pj);
      const ld expected = j == y[i] ? 0 : pj / n;
      if (j != y[i]) {
        INFO("grad(" << i << ", " << j << ") = " << g(i, j) << ", softmax / N = " << expected);
        CHECK(std::fabs(g(i, j) - expected) <=
              std::max(ce_ref::grad_eps * ce_ref::eps<T> / n, ce_ref::tiny_rtol<T> * expected));
      }
    }
    const ld gy = -other.value() / n;
    INFO("row " << i << ": grad at the label " << g(i, y[i]) << ", -sum_{j != y} p_j / N = " << gy);
    CHECK(std::fabs(g(i, y[i]) - gy) <=
          std::max(ce_ref::grad_eps * ce_ref::eps<T> / n, ce_ref::tiny_rtol<T> * std::fabs(gy)));
    if (a == Adversary::one_hot) {  // confident: the tiny gradient must be kept, relatively
      CHECK(g(i, y[i]) < 0);
      const ld rel = std::fabs(g(i, y[i]) - gy) / std::fabs(gy);
      worst_tiny = std::max(worst_tiny, rel);
      CHECK(rel <= ce_ref::tiny_rtol<T>);
    }
    CHECK(g.row(i).allFinite());
    if (a == Adversary::masked)
      for (Index j = 0; j < k; ++j)
        if (x(i, j) == -std::numeric_limits<T>::infinity()) CHECK(g(i, j) == 0);
  }
  ld& w = ce_ref::worst.tiny_rel[ce_ref::worst_errors::slot<T>()];
  w = std::max(w, worst_tiny);
}

TEMPLATE_TEST_CASE("50257 equal logits: loss log K, gradient (1/K - onehot) / N",
                   "[cross_entropy][adversarial]", float, double) {
  using T = TestType;
  const Index k = 50257;
  const T big = std::numeric_limits<T>::max();
  const T c = GENERATE_COPY(values<T>({0, T(-1e4), T(1e30), big, -big}));
  const Index n = GENERATE(Index(1), ce_ref::lanes<T> + 1);
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << ", logit " << c << ", N = " << n
                              << (row_major ? ", row-major" : ", column-major"));
  const RowMat<T> x = RowMat<T>::Constant(n, k, c);
  Eigen::VectorXi y(n);
  for (Index i = 0; i < n; ++i) y(i) = static_cast<int>((i * 7919) % k);
  T loss;
  RowMat<T> g;
  if (row_major) {
    RowMat<T> gs(n, k);
    loss = smax::cross_entropy(x, y, gs);
    g = gs;
  } else {
    const ColMat<T> xc = x;
    ColMat<T> gs(n, k);
    loss = smax::cross_entropy(xc, y, gs);
    g = gs;
  }
  CE_CHECK(ce_ref::check_loss<T>(std::log(static_cast<ld>(k)), loss));
  const ld bound = ce_ref::grad_eps * ce_ref::eps<T> / n;
  ld worst = 0;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) {
      const ld e = (1.0L / k - (j == y(i) ? 1 : 0)) / n;
      worst = std::max(worst, std::fabs(g(i, j) - e));
    }
  INFO("worst gradient error " << worst << ", bound " << bound);
  CHECK(worst <= bound);
}

// ---- confident predictions ----------------------------------------------------------------------

TEST_CASE("the contract's confident predictions", "[cross_entropy][precision]") {
  RowMat<double> x(1, 2);
  x << 37.42994775023705, 0.0;
  Eigen::VectorXi y(1);
  y << 0;
  RowMat<double> g(1, 2);
  smax::cross_entropy(x, y, g);
  const double tail = 5.551115123125776e-17;
  CHECK(std::fabs(g(0, 1) - tail) <= 1e-13 * tail);
  CHECK(std::fabs(g(0, 0) + tail) <= 1e-13 * tail);
  // Column-major, lanes + 1 rows: the vector path across rows and its scalar remainder.
  const Index n = ce_ref::lanes<double> + 1;
  ColMat<double> xc = x.replicate(n, 1), gc(n, 2);
  smax::cross_entropy(xc, Eigen::VectorXi::Zero(n), gc);
  for (Index i = 0; i < n; ++i) {
    CHECK(std::fabs(gc(i, 1) - tail / n) <= 1e-13 * tail / n);
    CHECK(std::fabs(gc(i, 0) + tail / n) <= 1e-13 * tail / n);
  }
  RowMat<double> x10 = RowMat<double>::Zero(1, 10);
  x10(0, 3) = 40.0;
  y << 3;
  RowMat<double> g10(1, 10);
  smax::cross_entropy(x10, y, g10);
  CHECK(std::fabs(g10(0, 3) + 3.8235188297624297e-17) <= 1e-12 * 3.8235188297624297e-17);
  CHECK(std::fabs(g10(0, 0) - 4.248354255291589e-18) <= 1e-12 * 4.248354255291589e-18);
}

TEMPLATE_TEST_CASE("confident predictions keep their tiny gradients", "[cross_entropy][precision]",
                   float, double) {
  using T = TestType;
  const Index k = GENERATE(values<Index>({2, 3, 9, 100, 1000}));
  const int m = GENERATE(0, 1, 2, 3, 4);
  const int margin = sizeof(T) == 4 ? std::vector<int>{10, 20, 40, 60, 80}[m]
                                    : std::vector<int>{20, 37, 50, 75, 100}[m];
  const int variant = GENERATE(0, 1, 2, 3);  // defaults, weights, sum, per row with dloss
  const bool row_major = GENERATE(false, true);
  const Index n = 9;
  INFO(ce_ref::type_name<T>() << ", K = " << k << ", margin " << margin << ", variant " << variant
                              << (row_major ? ", row-major" : ", column-major"));
  // The other logits are multiples of 1/16 in [-3, 3], the label's is theirs + margin: every
  // x_c − max is exact in T (see tiny_rtol in ce_reference.hpp).
  std::mt19937_64 rng(ce_ref::seed_of(23, k, static_cast<std::uint64_t>(margin), sizeof(T)));
  std::uniform_int_distribution<int> q(-48, 48);
  std::uniform_int_distribution<Index> cls(0, k - 1);
  RowMat<T> x(n, k);
  ce_ref::Labels y(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    y[i] = cls(rng);
    for (Index j = 0; j < k; ++j) x(i, j) = static_cast<T>(q(rng) / 16.0);
    x(i, y[i]) = static_cast<T>(3 + margin);
  }
  smax::CrossEntropyOptions o;
  Mode mode = Mode::mean;
  if (variant == 1) o.class_weights = ce_ref::weights(k, 24);
  if (variant == 2) mode = Mode::sum;
  if (variant == 3) mode = Mode::per_row;
  const Vec<T> dl = Vec<T>::LinSpaced(n, T(-1.5), T(2.5));
  const auto yv = ce_ref::to_eigen(y);
  const ce_ref::Output<T> out = row_major ? ce_ref::call<Eigen::RowMajor>(x, yv, o, mode, dl)
                                          : ce_ref::call<Eigen::ColMajor>(x, yv, o, mode, dl);
  const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, mode, ce_ref::to_ld(dl));
  ld worst = 0;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) {
      const ld e = ref.grad(i, j), g = out.grad(i, j);
      const ld rel = e == 0 ? std::fabs(g) : std::fabs(g - e) / std::fabs(e);
      if (rel > worst) {
        INFO("grad(" << i << ", " << j << ") = " << g << ", exact " << e << ", relative error "
                     << rel);
        CHECK(rel <= ce_ref::tiny_rtol<T>);
      }
      worst = std::max(worst, rel);
    }
  ld& w = ce_ref::worst.tiny_rel[ce_ref::worst_errors::slot<T>()];
  w = std::max(w, worst);
}

TEMPLATE_TEST_CASE("the loss of a confident prediction keeps its relative precision",
                   "[cross_entropy][precision][loss]", float, double) {
  // The documented accuracy of the loss is relative (1e-5 float, 1e-12 double), also for a row
  // whose label holds nearly all the probability: log(s) − (x_y − max) with s = 1 + Σ_{c≠y}
  // rounded first would keep 3 digits in float at 1e-4 and none below eps; smax computes
  // log1p(Σ_{c≠y} e_c / e_y).
  using T = TestType;
  const int m = GENERATE(0, 1, 2);
  const int margin =
      sizeof(T) == 4 ? std::vector<int>{5, 10, 16}[m] : std::vector<int>{10, 20, 37}[m];
  const Index k = GENERATE(Index(2), Index(10));
  INFO(ce_ref::type_name<T>() << ", K = " << k << ", margin " << margin);
  RowMat<T> x = RowMat<T>::Zero(1, k);
  x(0, 0) = static_cast<T>(margin);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(1);
  const ld exact = std::log1p((k - 1) * std::exp(-static_cast<ld>(margin)));
  CE_CHECK(ce_ref::check_loss<T>(exact, smax::cross_entropy(x, y)));
  Vec<T> l(1);
  smax::cross_entropy_per_row(x, y, l);
  CE_CHECK(ce_ref::check_loss<T>(exact, l(0), 0, "row loss"));
}

// ---- reductions over many rows ------------------------------------------------------------------

TEMPLATE_TEST_CASE("reductions over a million rows keep their digits", "[cross_entropy][sum]",
                   float, double) {
  using T = TestType;
  const Index n = 1000000, k = 2;
  const bool row_major = GENERATE(false, true);
  const bool random = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << (row_major ? ", row-major" : ", column-major")
                              << (random ? ", random rows" : ", rows [0, 0]: loss log 2 each"));
  RowMat<T> x = RowMat<T>::Zero(n, k);
  Eigen::VectorXi y = Eigen::VectorXi::Zero(n);
  ce_ref::exact_sum exact;
  if (random) {
    std::mt19937_64 rng(ce_ref::seed_of(25, sizeof(T)));
    std::normal_distribution<double> normal(0.0, 3.0);
    for (Index i = 0; i < n; ++i) {
      x(i, 0) = static_cast<T>(normal(rng));
      x(i, 1) = static_cast<T>(normal(rng));
      y(i) = static_cast<int>(rng() & 1);
      // −log p_y = log(1 + exp(x_other − x_y))
      const ld d = static_cast<ld>(x(i, 1 - y(i))) - static_cast<ld>(x(i, y(i)));
      exact.add(d > 0 ? d + std::log1p(std::exp(-d)) : std::log1p(std::exp(d)));
    }
  } else {
    for (Index i = 0; i < n; ++i) exact.add(std::log(2.0L));
  }
  smax::CrossEntropyOptions o_sum;
  o_sum.reduction = smax::Reduction::sum;
  T mean, sum;
  if (row_major) {
    mean = smax::cross_entropy(x, y);
    sum = smax::cross_entropy(x, y, o_sum);
  } else {
    const ColMat<T> xc = x;
    mean = smax::cross_entropy(xc, y);
    sum = smax::cross_entropy(xc, y, o_sum);
  }
  // Each row's loss is within a few ulps; summed in double with compensation, the result is
  // within a few ulps too (a float accumulator would be off by ~1e-3 after 10^6 rows).
  const ld e_sum = exact.value(), e_mean = e_sum / n;
  const ld rel_mean = std::fabs(mean - e_mean) / e_mean, rel_sum = std::fabs(sum - e_sum) / e_sum;
  INFO("mean " << mean << " vs " << e_mean << " (relative " << rel_mean << "), sum " << sum
               << " vs " << e_sum << " (relative " << rel_sum << ")");
  CHECK(rel_mean <= 4 * ce_ref::eps<T>);
  CHECK(rel_sum <= 4 * ce_ref::eps<T>);
}
