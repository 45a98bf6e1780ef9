// smax has no global mutable state: calls from several std::threads at once, on shared inputs
// and separate outputs, give each thread exactly the result of the same call made alone. Built
// in every configuration; the ThreadSanitizer preset (CMakePresets.json: tsan) is where it
// proves the absence of data races.
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace {

using Index = Eigen::Index;
template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

template <class M>
M normal_matrix(Index n, Index k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 2.0);
  M x(n, k);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) x(i, j) = static_cast<typename M::Scalar>(normal(rng));
  return x;
}

/// Everything one thread computes from the shared inputs.
template <class T, class M>
struct outputs {
  M p, lp, dx, g, gp;
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse, losses;
  T loss = 0, loss_probs = 0;

  bool operator==(const outputs& o) const {
    // Bit for bit: the same kernels on the same data (NaN never occurs here).
    return p == o.p && lp == o.lp && dx == o.dx && g == o.g && gp == o.gp && lse == o.lse &&
           losses == o.losses && loss == o.loss && loss_probs == o.loss_probs;
  }
};

template <class T, class M>
outputs<T, M> compute(const M& x, const M& dy, const M& targets, const Eigen::VectorXi& labels,
                      const smax::CrossEntropyOptions& o) {
  outputs<T, M> r;
  r.p = smax::softmax(x);
  r.lp = smax::log_softmax(x);
  r.lse = smax::logsumexp(x);
  r.dx = smax::softmax_backward(r.p, dy);
  r.g.resize(x.rows(), x.cols());
  r.loss = smax::cross_entropy(x, labels, r.g, o);
  r.gp.resize(x.rows(), x.cols());
  r.loss_probs = smax::cross_entropy(x, targets, r.gp, o);
  r.losses.resize(x.rows());
  smax::cross_entropy_per_row(x, labels, r.losses, o);
  return r;
}

}  // namespace

TEMPLATE_PRODUCT_TEST_CASE("calls from several std::threads at once give the single-thread results",
                           "[concurrency]", (RowMat, ColMat), (float, double)) {
  using M = TestType;
  using T = typename M::Scalar;
  // Shapes on every kernel path: tiles of short rows, vectors across rows, long rows.
  const auto shape = GENERATE(std::make_pair(Index(257), Index(7)), std::make_pair(33, 1000),
                              std::make_pair(3, 40000));
  const Index n = shape.first, k = shape.second;
  INFO("N = " << n << ", K = " << k);
  const M x = normal_matrix<M>(n, k, 11), dy = normal_matrix<M>(n, k, 12);
  M targets = normal_matrix<M>(n, k, 13).array().abs();
  for (Index i = 0; i < n; ++i) targets.row(i) /= targets.row(i).sum();
  Eigen::VectorXi labels(n);
  for (Index i = 0; i < n; ++i) labels(i) = i % 9 == 4 ? -100 : static_cast<int>((i * 31) % k);
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.z_loss = 1e-4;
  o.class_weights = Eigen::VectorXd::LinSpaced(k, 0.5, 1.5);

  const outputs<T, M> alone = compute<T>(x, dy, targets, labels, o);

  constexpr int kThreads = 4;
  std::vector<outputs<T, M>> results(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      // Start together, so that the calls overlap.
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      for (int rep = 0; rep < 3; ++rep) results[static_cast<std::size_t>(t)] =
          compute<T>(x, dy, targets, labels, o);
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t);
    CHECK(results[static_cast<std::size_t>(t)] == alone);
  }
}
