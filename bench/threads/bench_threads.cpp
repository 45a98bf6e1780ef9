// smax on 1 and 2 threads: its own binary (smax_bench_threads), compiled with -fopenmp, because
// smax splits work across Eigen::nbThreads() threads only when its user compiles with OpenMP
// (and one binary cannot hold both builds of the same inline functions).
//
//   BM_softmax_smax_row_t<T>, BM_log_softmax_smax_row_t<T>, BM_ce_fwdbwd_smax_row_t<T>, and
//   BM_copy_memcpy_t<T> (each thread copies its share) for T = 1, 2,
//
// over K = 2 .. 262144 and 2^20 (L3-resident: 4 MiB per buffer) and 2^24 (64 MiB) elements per
// call, and a single row of 262144 (a language-model head at batch 1: the row is split). Labels
// carry impl=smax_t<T> / memcpy_t<T> so that bench/table.py --threads reads them.
#include "common.hpp"

#include <smax/smax.hpp>

#include <omp.h>

#include <cstring>
#include <string>

namespace smax_bench {
namespace {

void sweep_threads(benchmark::internal::Benchmark* b) {
  b->ArgNames({"K", "total"})
      ->ArgsProduct({kClasses, {int64_t{1} << 20, int64_t{1} << 24}})
      ->Args({262144, 262144})  // one row of 262144 classes: the row split across the threads
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
}

const char* impl_name(bool copy, int threads) {
  if (copy) return threads == 1 ? "memcpy_t1" : "memcpy_t2";
  return threads == 1 ? "smax_t1" : "smax_t2";
}

/// smax with `threads` threads; checked against its own single-thread result (the threaded
/// path's tests hold both to the same budgets; here only agreement matters).
template <int Op>
void BM_smax_threads(benchmark::State& st, int threads) {
  const Shape s = shape_of(st);
  const RowMat x = logits<RowMat>(s);
  RowMat y(s.n, s.k), ref(s.n, s.k);
  const Eigen::VectorXi y_labels = labels(s);
  const auto run = [&](RowMat& out) {
    if constexpr (Op == 0) {
      out = smax::softmax(x);
    } else if constexpr (Op == 1) {
      out = smax::log_softmax(x);
    } else {
      sink(smax::cross_entropy(x, y_labels, out));
    }
  };
  const char* op = Op == 0 ? "softmax" : Op == 1 ? "log_softmax" : "ce_fwdbwd";
  Eigen::setNbThreads(1);
  run(ref);
  Eigen::setNbThreads(threads);
  measure(
      st, {s, op, impl_name(false, threads), "row", 8}, y, [&] { run(y); },
      [&] {
        // Row sums and maxima may combine in another order across threads: 1e-5 relative to
        // each entry's magnitude (log_softmax: to max(|entry|, 1)), as the sweep's checks.
        const RefMat r = ref.cast<double>();
        return Op == 1 ? compare_log(y, r, 1e-5)
                       : compare(y, r, 1e-5, [&](double v) { return std::max(std::abs(v), 1e-30); });
      });
  Eigen::setNbThreads(1);
}

void BM_memcpy_threads(benchmark::State& st, int threads) {
  const Shape s = shape_of(st);
  const RowMat x = logits<RowMat>(s);
  RowMat y(s.n, s.k);
  const std::size_t total = static_cast<std::size_t>(s.size());
  measure(
      st, {s, "copy", impl_name(true, threads), "flat"}, y,
      [&] {
#pragma omp parallel num_threads(threads)
        {
          const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
          const std::size_t nt = static_cast<std::size_t>(omp_get_num_threads());
          const std::size_t b = total * t / nt, e = total * (t + 1) / nt;
          std::memcpy(y.data() + b, x.data() + b, (e - b) * sizeof(float));
        }
      },
      [&] { return y == x ? Verdict{} : Verdict{1, "the copy differs"}; });
}

[[maybe_unused]] const bool registered = [] {
  for (const int t : {1, 2}) {
    const std::string suffix = "_row_t" + std::to_string(t);
    benchmark::RegisterBenchmark(("BM_softmax_smax" + suffix).c_str(), BM_smax_threads<0>, t)
        ->Apply(sweep_threads);
    benchmark::RegisterBenchmark(("BM_log_softmax_smax" + suffix).c_str(), BM_smax_threads<1>, t)
        ->Apply(sweep_threads);
    benchmark::RegisterBenchmark(("BM_ce_fwdbwd_smax" + suffix).c_str(), BM_smax_threads<2>, t)
        ->Apply(sweep_threads);
    benchmark::RegisterBenchmark(("BM_copy_memcpy_t" + std::to_string(t)).c_str(),
                                 BM_memcpy_threads, t)
        ->Apply(sweep_threads);
  }
  return true;
}();

}  // namespace
}  // namespace smax_bench
