// What every smax benchmark shares: the sweep of shapes, inputs made outside the timed loop, the
// counters and label that bench/table.py and bench/plot.py group by, and a one-off check of each
// implementation against a double-precision reference so that no peer is timed doing the wrong
// thing.
//
// A benchmark family lives in its own bench_<family>.cpp (the build globs them into one binary)
// and writes each implementation as
//
//   const Shape s = shape_of(st);            // K, N and the regime from the sweep's arguments
//   const auto x = logits<RowMat>(s);        // the same logical values in every layout
//   RowMat y(s.n, s.k);
//   measure(st, {s, "softmax", "smax", "row"}, y, [&] { y = smax::softmax(x); },
//           [&] { return compare_relative(y, reference(x), tolerance(s.k)); });
#pragma once

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace smax_bench {

using Index = Eigen::Index;
template <int Layout>
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Layout>;
using RowMat = Mat<Eigen::RowMajor>;
using ColMat = Mat<Eigen::ColMajor>;
/// References are computed in double, row-major.
using RefMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---- the sweep ----------------------------------------------------------------------------------

/// Classes per distribution: tiny heads (2..16), powers of two and their decimal neighbours
/// (vector tails), and vocabulary sizes: GPT-2 (50257), Llama 3 (128000), Gemma (262144 = 2^18).
inline const std::vector<int64_t> kClasses = {2,    4,    10,    16,    32,    100,    128,   1000,
                                              1024, 4096, 10000, 32000, 50257, 128000, 262144};

/// Total elements per call: 2^16 floats are 256 KiB per buffer, so x and y (512 KiB) stay in a
/// 1 MiB L2; 2^24 floats are 64 MiB per buffer, far beyond any L3. N = max(1, total / K), so
/// K > total runs one row of K (still cache-resident for K <= 128000 in L2 + L3).
inline const std::vector<int64_t> kTotals = {int64_t{1} << 16, int64_t{1} << 24};

/// The sweep's arguments, named so that results read `BM_softmax_smax_row/K:1000/total:65536`.
inline void sweep(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "total"})->ArgsProduct({kClasses, kTotals})->Unit(benchmark::kMicrosecond);
}

/// The other class counts below 17, cache-resident only: with kClasses, every K = 2..16, where
/// rows run in SIMD lanes, for the row-major softmax, log_softmax and cross-entropy of smax and
/// of the peers they are compared with (each K is its own loop in smax).
inline const std::vector<int64_t> kSmallClasses = {3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15};
inline void small_k(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "total"})
      ->ArgsProduct({kSmallClasses, {kTotals.front()}})
      ->Unit(benchmark::kMicrosecond);
}

struct Shape {
  Index n;             ///< distributions (rows)
  Index k;             ///< classes per distribution
  const char* regime;  ///< "cache" (about 2^16 elements) or "memory" (about 2^24)
  Index size() const noexcept { return n * k; }
};

inline Shape shape_of(const benchmark::State& st) {
  const Index k = st.range(0), total = st.range(1);
  return {std::max<Index>(1, total / k), k, total <= (Index{1} << 20) ? "cache" : "memory"};
}

// ---- inputs -------------------------------------------------------------------------------------

/// The first `count` values of one fixed stream of standard normal logits (seeded, grown on
/// demand, so a prefix never changes): every implementation, layout and run sees the same data.
inline const float* normal_logits(Index count) {
  static std::mt19937 gen(20240607u);
  static std::normal_distribution<float> normal(0.0f, 1.0f);
  static std::vector<float> pool;
  if (static_cast<Index>(pool.size()) < count) {
    pool.reserve(static_cast<std::size_t>(count));
    while (static_cast<Index>(pool.size()) < count) pool.push_back(normal(gen));
  }
  return pool.data();
}

/// An N x K matrix of logits in M's layout; element (i, j) is the same in every layout.
template <class M>
M logits(const Shape& s) {
  M x(s.n, s.k);
  x = Eigen::Map<const RowMat>(normal_logits(s.size()), s.n, s.k);
  return x;
}

/// Class labels of the cross-entropy benchmarks: one fixed pseudo-random class per row.
inline Eigen::VectorXi labels(const Shape& s) {
  Eigen::VectorXi y(s.n);
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  for (Index i = 0; i < s.n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    y(i) = static_cast<int>((state >> 33) % static_cast<std::uint64_t>(s.k));
  }
  return y;
}

// ---- what a run records -------------------------------------------------------------------------

/// Which measurement a run is: table.py and plot.py group by these (they travel in the label as
/// `op=... impl=... layout=... regime=...`, plus `extra`) and by the K and N counters.
struct Case {
  Shape shape;
  const char* op;      ///< softmax, log_softmax, copy, exp, ...
  const char* impl;    ///< smax, eigen_loop, eigen_expr, dnnl, memcpy, ...
  const char* layout;  ///< row (N x K row-major) or col (N x K column-major)
  /// Bytes read and written per element (softmax: read x, write y).
  int bytes_per_element = 2 * static_cast<int>(sizeof(float));
  std::string extra = {};  ///< further `key=value` pairs for the label
};

/// The outcome of comparing a result with its reference: the worst error (in the comparison's
/// own scale, see compare) and, when it is beyond the tolerance, what went wrong.
struct Verdict {
  double worst = 0;
  std::string failure = {};
};

/// How many implementations disagreed with their reference; main() exits non-zero if any did.
inline int& failures() {
  static int count = 0;
  return count;
}

/// Runs `check` (returning a Verdict) the first time this case is met and remembers it; a
/// failure skips the benchmark with its message, now and on every later invocation. Returns
/// the verdict, or nullptr when the case must not be timed.
template <class Check>
const Verdict* verified(benchmark::State& st, const Case& c, Check&& check) {
  static std::map<std::string, Verdict> seen;
  const std::string key = std::string(c.op) + " " + c.impl + " " + c.layout + " " +
                          std::to_string(c.shape.n) + "x" + std::to_string(c.shape.k);
  auto it = seen.find(key);
  if (it == seen.end()) {
    Verdict v = check();
    if (!v.failure.empty()) {
      v.failure = key + ": " + v.failure;
      ++failures();
      std::fprintf(stderr, "smax_bench: %s\n", v.failure.c_str());
    }
    it = seen.emplace(key, std::move(v)).first;
  }
  if (!it->second.failure.empty()) {
    st.SkipWithError(it->second.failure.c_str());
    return nullptr;
  }
  return &it->second;
}

/// The timed part shared by every implementation: `once()` computes into `out`. It is checked
/// once (`check()` returns a Verdict), run once more untimed so that the output's pages are
/// faulted in, then timed. Items are elements (N * K), bytes the compulsory traffic; the
/// counters K, N and max_err (the check's worst error) go with the label.
template <class Out, class Once, class Check>
void measure(benchmark::State& st, const Case& c, const Out& out, Once&& once, Check&& check) {
  const Verdict* verdict = verified(st, c, [&] {
    once();
    return check();
  });
  if (verdict == nullptr) return;
  once();
  for (auto _ : st) {
    once();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const Index n = c.shape.size();
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()) * n);
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * n * c.bytes_per_element);
  st.counters["K"] = static_cast<double>(c.shape.k);
  st.counters["N"] = static_cast<double>(c.shape.n);
  st.counters["max_err"] = verdict->worst;
  std::string label = std::string("op=") + c.op + " impl=" + c.impl + " layout=" + c.layout +
                      " regime=" + c.shape.regime;
  if (!c.extra.empty()) label += " " + c.extra;
  st.SetLabel(label);
}

/// Keeps a loss alive without benchmark::DoNotOptimize: its "+m,r" constraint on a float local
/// lets g++ 12 read a stale value afterwards (google/benchmark#903, GCC bug 92597), which made the
/// one-off checks see a loss of 0. A volatile store cannot be optimized away.
inline void sink(float loss) {
  static volatile float keep;
  keep = loss;
  (void)keep;
}

// ---- comparing with a reference -----------------------------------------------------------------

/// The tolerance of the one-off check: 1e-5, widened as sqrt(K) beyond K = 1024 because a
/// plain running sum (Eigen's reductions along a non-contiguous axis) rounds like a random walk
/// of K steps: 1.6e-4 at K = 262144. A peer computing the wrong thing is off by far more.
inline double tolerance(Index k) {
  return 1e-5 * std::max(1.0, std::sqrt(static_cast<double>(k) / 1024.0));
}

/// Elementwise |got - ref| / scale(ref) over a logical N x K result (any layout) against rtol:
/// the worst error, and a failure naming the worst element when it exceeds rtol (NaN always
/// does).
template <class Got, class Scale>
Verdict compare(const Got& got, const RefMat& ref, double rtol, Scale&& scale) {
  if (got.rows() != ref.rows() || got.cols() != ref.cols()) return {0, "wrong shape"};
  Verdict v;
  Index wi = -1, wj = -1;
  for (Index i = 0; i < ref.rows(); ++i) {
    for (Index j = 0; j < ref.cols(); ++j) {
      const double r = ref(i, j), g = got(i, j);
      const double err = std::abs(g - r) / scale(r);
      if (wi < 0 || err > v.worst || (err != err && v.worst == v.worst)) {
        v.worst = err;
        wi = i;
        wj = j;
      }
    }
  }
  if (wi < 0 || v.worst <= rtol) return v;
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "element (%td, %td) is %.9g, the reference %.9g (error %.3g > %.3g)", wi, wj,
                static_cast<double>(got(wi, wj)), ref(wi, wj), v.worst, rtol);
  v.failure = buf;
  return v;
}

/// Relative error, for results that are never near zero by cancellation (probabilities, exp).
template <class Got>
Verdict compare_relative(const Got& got, const RefMat& ref, double rtol) {
  // 1e-37 (about FLT_MIN) absorbs the rounding of results that are subnormal in float.
  return compare(got, ref, rtol, [](double r) { return std::max(std::abs(r), 1e-37); });
}

/// Error relative to max(|ref|, 1), for log-probabilities (x - lse can cancel to near 0).
template <class Got>
Verdict compare_log(const Got& got, const RefMat& ref, double rtol) {
  return compare(got, ref, rtol, [](double r) { return std::max(std::abs(r), 1.0); });
}

}  // namespace smax_bench
