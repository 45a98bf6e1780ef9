// The OpenMP path (built with -fopenmp): with Eigen::setNbThreads(t), t = 1, 2, 3, every function
// gives the one-thread result. Rows split into chunks of whole rows run the same code per row, so
// their results are identical bit for bit; a row split across threads (fewer rows than threads,
// K >= 16384) combines per-thread partial max and sums in thread order, so its results differ from
// the one-thread ones by the rounding of those sums only:
//   softmax, logsumexp, log_softmax, backward passes, gradients: within (4 + log2 K) eps of the
//   one-thread value, relative to max(|value|, the row's largest |value|) — a pairwise sum of K
//   terms cut into t slices rounds at most log2 K more times;
//   losses: within 1e-6 (float) / 1e-13 (double) relative.
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

namespace {

using Index = Eigen::Index;
template <class T, int Layout>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Layout>;

template <class T, int Layout>
Mat<T, Layout> random_logits(Index n, Index k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 3.0);
  Mat<T, Layout> x(n, k);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) x(i, j) = static_cast<T>(normal(rng));
  // A masked entry and a masked row, so the special-value policy is exercised on every path.
  x(0, k / 2) = -std::numeric_limits<T>::infinity();
  if (n > 2) x.row(n - 1).setConstant(-std::numeric_limits<T>::infinity());
  return x;
}

/// Eigen::setNbThreads(t) for the scope.
struct threads {
  explicit threads(int t) { Eigen::setNbThreads(t); }
  ~threads() { Eigen::setNbThreads(1); }
};

/// got equals want within (4 + log2 K) eps of each row's scale (exactly when `exact`).
template <class A, class B>
bool agree(const A& got, const B& want, bool exact) {
  using T = typename A::Scalar;
  if (got.rows() != want.rows() || got.cols() != want.cols()) return false;
  const double units = 4 + std::log2(static_cast<double>(want.cols()));
  for (Index i = 0; i < want.rows(); ++i) {
    double scale = 1e-300;
    for (Index j = 0; j < want.cols(); ++j)
      if (std::isfinite(want(i, j))) scale = std::max(scale, std::abs(double(want(i, j))));
    for (Index j = 0; j < want.cols(); ++j) {
      const double g = got(i, j), w = want(i, j);
      if (std::isnan(w) || std::isnan(g) || std::isinf(w) || std::isinf(g) || exact) {
        if (!(g == w || (std::isnan(g) && std::isnan(w)))) return false;
        continue;
      }
      const double tol = units * std::numeric_limits<T>::epsilon() * std::max(std::abs(w), scale);
      if (!(std::abs(g - w) <= tol)) return false;
    }
  }
  return true;
}

template <class T>
bool loss_agrees(T got, T want) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  const double rtol = sizeof(T) == 4 ? 1e-6 : 1e-13;
  return std::abs(double(got) - double(want)) <= rtol * std::abs(double(want));
}

}  // namespace

TEST_CASE("OpenMP is on, and Eigen::nbThreads() follows setNbThreads", "[threads]") {
  REQUIRE(omp_get_max_threads() >= 1);
  for (int t : {1, 2, 3}) {
    threads scope(t);
    CHECK(Eigen::nbThreads() == t);
  }
}

TEMPLATE_TEST_CASE("every function gives the one-thread result on 1, 2 and 3 threads",
                   "[threads]", float, double) {
  using T = TestType;
  // (N, K): many rows (chunks of rows per thread); a single long row and a few long rows (each
  // row split across the threads); fewer long rows than a vector, but enough to go round (whole
  // rows per thread); small problems that stay on one thread; short rows in tiles.
  const auto shape = GENERATE(std::make_pair(Index(1), Index(262144)), std::make_pair(2, 100003),
                              std::make_pair(3, 50257), std::make_pair(5, 20000),
                              std::make_pair(700, 300), std::make_pair(4096, 7),
                              std::make_pair(33, 40), std::make_pair(1, 16384 + 5));
  const Index n = shape.first, k = shape.second;
  const bool row_major = GENERATE(true, false);
  INFO((sizeof(T) == 4 ? "float" : "double") << ", N = " << n << ", K = " << k
                                             << (row_major ? ", row-major" : ", column-major"));
  // A row is split across threads only when it is contiguous and the rows are fewer than twice
  // the threads: then the results are within tolerance; otherwise, identical.
  const bool may_split = (row_major || n == 1) && k >= 16384;

  const auto run = [&](auto layout_tag) {
    constexpr int Layout = decltype(layout_tag)::value;
    const Mat<T, Layout> x = random_logits<T, Layout>(n, k, 7 + std::uint64_t(n) * 31 + k);
    Mat<T, Layout> dy = random_logits<T, Layout>(n, k, 99 + std::uint64_t(k));
    dy = dy.array().isFinite().select(dy, Mat<T, Layout>::Zero(n, k));
    Eigen::VectorXi labels(n);
    for (Index i = 0; i < n; ++i) labels(i) = static_cast<int>((i * 7919) % k);
    if (n > 3) labels(1) = -100;
    labels(0) = static_cast<int>((k / 2 + 1) % k);  // not the masked class: a finite loss
    if (n > 2) labels(n - 1) = -100;                 // the masked row is ignored: likewise
    // No label smoothing: it gives the masked class a target, and the loss +inf.
    smax::CrossEntropyOptions o;
    o.z_loss = 1e-4;

    struct results {
      Mat<T, Layout> p, lp, dx, dl, g;
      Eigen::Matrix<T, Eigen::Dynamic, 1> lse;
      T loss, loss_only;
    };
    const auto compute = [&](int t) {
      threads scope(t);
      results r;
      r.p = smax::softmax(x);
      r.lp = smax::log_softmax(x);
      r.lse = smax::logsumexp(x);
      r.dx = smax::softmax_backward(r.p, dy);
      r.dl = smax::log_softmax_backward(r.lp, dy);
      r.g.resize(n, k);
      r.loss = smax::cross_entropy(x, labels, r.g, o);
      r.loss_only = smax::cross_entropy(x, labels, o);
      return r;
    };
    const results one = compute(1);
    CHECK(std::isfinite(one.loss));
    for (int t : {2, 3}) {
      INFO(t << " threads");
      const results r = compute(t);
      const bool exact = !may_split;
      CHECK(agree(r.p, one.p, exact));
      CHECK(agree(r.lp, one.lp, exact));
      CHECK(agree(r.lse, one.lse, exact));
      CHECK(agree(r.dx, one.dx, exact));
      CHECK(agree(r.dl, one.dl, exact));
      CHECK(agree(r.g, one.g, exact));
      CHECK(loss_agrees(r.loss, one.loss));
      CHECK(loss_agrees(r.loss_only, one.loss));
    }
  };
  if (row_major) {
    run(std::integral_constant<int, Eigen::RowMajor>{});
  } else {
    run(std::integral_constant<int, Eigen::ColMajor>{});
  }
}

TEMPLATE_TEST_CASE("a row split across threads: per-row losses and dloss, in place", "[threads]",
                   float, double) {
  using T = TestType;
  const Index n = 2, k = 65536 + 17;
  const Mat<T, Eigen::RowMajor> x = random_logits<T, Eigen::RowMajor>(n, k, 5);
  Eigen::VectorXi labels(n);
  labels << 3, static_cast<int>(k - 1);
  Eigen::Matrix<T, Eigen::Dynamic, 1> dloss(n);
  dloss << T(0.5), T(-2);
  const auto compute = [&](int t) {
    threads scope(t);
    Mat<T, Eigen::RowMajor> g = x;  // in place: the gradient overwrites the logits
    Eigen::Matrix<T, Eigen::Dynamic, 1> losses = dloss;  // losses written over dloss
    smax::cross_entropy_per_row(g, labels, losses, losses, g);
    return std::make_pair(losses, g);
  };
  const auto one = compute(1);
  for (int t : {2, 3}) {
    INFO(t << " threads");
    const auto r = compute(t);
    CHECK(loss_agrees(r.first(0), one.first(0)));
    CHECK(loss_agrees(r.first(1), one.first(1)));
    CHECK(agree(r.second, one.second, false));
  }
}

TEST_CASE("bfloat16 logits on 1, 2 and 3 threads give the one-thread result", "[threads][half]") {
  // As above: identical unless a row is split (then float results within (4 + log2 K) eps,
  // bfloat16 results within one bfloat16 ulp: the float difference may cross a rounding point).
  using BF = Eigen::bfloat16;
  using MB = Eigen::Matrix<BF, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto shape = GENERATE(std::make_pair(Index(1), Index(262144)), std::make_pair(3, 50257),
                              std::make_pair(700, 300), std::make_pair(4096, 7));
  const Index n = shape.first, k = shape.second;
  INFO("N = " << n << ", K = " << k);
  const bool may_split = k >= 16384;
  const MB x = random_logits<float, Eigen::RowMajor>(n, k, 5 + std::uint64_t(k)).cast<BF>();
  Eigen::VectorXi labels(n);
  for (Index i = 0; i < n; ++i) labels(i) = static_cast<int>((i * 7919 + k / 2 + 1) % k);
  if (n > 2) labels(n - 1) = -100;  // the masked row

  struct results {
    MF p;
    MB p16, g16;
    Eigen::VectorXf lse;
    float loss;
  };
  const auto compute = [&](int t) {
    threads scope(t);
    results r;
    r.p = smax::softmax(x);
    r.p16 = smax::softmax(x);
    r.lse = smax::logsumexp(x);
    r.g16.resize(n, k);
    r.loss = smax::cross_entropy(x, labels, r.g16);
    return r;
  };
  // Identical, or within one bfloat16 ulp (2^-7 relative) plus 32 float eps of the row's scale
  // (the label's gradient entry, a sum of the others).
  const auto agree16 = [&](const MB& got, const MB& want) {
    if (!may_split) return MF(got.cast<float>()) == MF(want.cast<float>());
    for (Index i = 0; i < n; ++i) {
      const float scale = want.row(i).cast<float>().cwiseAbs().maxCoeff();
      for (Index j = 0; j < k; ++j) {
        const float g = static_cast<float>(got(i, j)), w = static_cast<float>(want(i, j));
        const float tol = 0x1p-7f * std::abs(w) + 32 * std::numeric_limits<float>::epsilon() * scale;
        if (!(std::abs(g - w) <= tol)) return false;
      }
    }
    return true;
  };
  const results one = compute(1);
  for (int t : {2, 3}) {
    INFO(t << " threads");
    const results r = compute(t);
    CHECK(agree(r.p, one.p, !may_split));
    CHECK(agree(r.lse, one.lse, !may_split));
    CHECK(agree16(r.p16, one.p16));
    // On every thread count, the 16-bit result is the float one rounded once.
    CHECK(MF(r.p16.cast<float>()) == MF(r.p.cast<BF>().cast<float>()));
    CHECK(agree16(r.g16, one.g16));
    CHECK(loss_agrees(r.loss, one.loss));
  }
}
